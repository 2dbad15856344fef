"""convnet.nn against an independent NumPy reference (tests/reference.py), hand-computed cases,
gradients, accepted input kinds and the error messages."""
from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet.nn
from convnet import nn
from convnet._internal import kernels

from .reference import (
    avg_pool_ref,
    conv2d_ref,
    depth_max_pool_ref,
    max_pool_ref,
    pads_and_out,
    same_pads,
)

ATOL, RTOL = 1e-5, 1e-5  # float32 results against a float64 reference


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_matches(out, expected):
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == expected.shape
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=RTOL, atol=ATOL)


def explicit(top, bottom, left, right):
    return [[0, 0], [top, bottom], [left, right], [0, 0]]


# Parameterised grids against the reference

KERNELS = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (2, 3), (3, 1), (1, 4), (5, 2)]
STRIDES = [1, 2, 3, (1, 2), (3, 2), [1, 2, 1, 1]]
PADDINGS = ["SAME", "valid", explicit(1, 2, 0, 1)]


@pytest.mark.parametrize("padding", PADDINGS, ids=["same", "valid", "explicit"])
@pytest.mark.parametrize("strides", STRIDES, ids=str)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_conv2d_kernels_strides(kernel, strides, padding):
    x, w = rand(2, 7, 6, 3), rand(*kernel, 3, 2, seed=1)
    assert_matches(nn.conv2d(x, w, strides, padding), conv2d_ref(x, w, strides, padding))


@pytest.mark.parametrize("size", [5, 6, 7])
@pytest.mark.parametrize("kernel", [2, 3, 4])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv2d_same_asymmetric(size, kernel, stride):
    x, w = rand(1, size, size + 1, 2), rand(kernel, kernel, 2, 3, seed=1)
    out = nn.conv2d(x, w, stride, "SAME")
    assert out.shape[1:3] == (-(-size // stride), -(-(size + 1) // stride))
    assert_matches(out, conv2d_ref(x, w, stride, "SAME"))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2, (1, 3)], ids=str)
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3)], ids=str)
@pytest.mark.parametrize("dilations", [1, 2, 3, (1, 2), [1, 3, 1, 1]], ids=str)
def test_conv2d_dilations(dilations, kernel, strides, padding):
    x, w = rand(1, 9, 8, 2), rand(*kernel, 2, 2, seed=1)
    assert_matches(nn.conv2d(x, w, strides, padding, dilations),
                   conv2d_ref(x, w, strides, padding, dilations))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("c_in, in_depth, c_out", [
    (1, 1, 1), (1, 1, 4), (3, 3, 2), (5, 5, 1),
    (4, 2, 2), (4, 2, 6), (6, 3, 4), (6, 2, 3),  # grouped
    (4, 1, 4), (3, 1, 6),  # depthwise
])
def test_conv2d_channels_and_groups(c_in, in_depth, c_out, padding):
    x, w = rand(2, 5, 6, c_in), rand(3, 2, in_depth, c_out, seed=1)
    assert_matches(nn.conv2d(x, w, (2, 1), padding), conv2d_ref(x, w, (2, 1), padding))


POOL_KSIZES = [1, 2, 3, (2, 3), (3, 1), [1, 2, 2, 1]]
POOL_STRIDES = [1, 2, 3, (1, 2), (2, 1)]


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", POOL_STRIDES, ids=str)
@pytest.mark.parametrize("ksize", POOL_KSIZES, ids=str)
@pytest.mark.parametrize("op, ref", [(nn.max_pool, max_pool_ref), (nn.avg_pool, avg_pool_ref)], ids=["max", "avg"])
def test_pool_grid(op, ref, ksize, strides, padding):
    x = rand(2, 7, 6, 3)
    assert_matches(op(x, ksize, strides, padding), ref(x, ksize, strides, padding))


@pytest.mark.parametrize("size", [5, 6, 7])
@pytest.mark.parametrize("ksize", [2, 3, 4])
@pytest.mark.parametrize("op, ref", [(nn.max_pool, max_pool_ref), (nn.avg_pool, avg_pool_ref)], ids=["max", "avg"])
def test_pool_same_asymmetric(op, ref, ksize, size):
    x = rand(1, size, size + 1, 2) - 3  # mostly negative, so zero padding would show in max pooling
    assert_matches(op(x, ksize, 2, "same"), ref(x, ksize, 2, "same"))


@pytest.mark.parametrize("ksize, strides, padding", [
    (3, 1, explicit(1, 1, 1, 1)),  # symmetric, within PyTorch's implicit-padding limit
    (3, 2, explicit(2, 0, 1, 2)),  # asymmetric
    (2, 1, explicit(1, 1, 0, 1)),
    (3, 1, explicit(2, 2, 1, 1)),  # symmetric but beyond PyTorch's limit of half the window
    ((3, 4), 2, explicit(2, 2, 3, 3)),
    ((3, 2), (2, 1), explicit(0, 2, 1, 0)),
])
def test_max_pool_explicit_padding(ksize, strides, padding):
    x = rand(2, 5, 6, 2) - 3
    assert_matches(nn.max_pool(x, ksize, strides, padding), max_pool_ref(x, ksize, strides, padding))


@pytest.mark.parametrize("padding", ["SAME", "VALID", explicit(0, 0, 0, 0)], ids=["same", "valid", "zeros"])
@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_depth_max_pool(k, padding):
    x = rand(2, 3, 4, 6)
    out = nn.max_pool(x, (1, 1, 1, k), [1, 1, 1, k], padding)
    assert_matches(out, depth_max_pool_ref(x, k))


def test_same_padding_and_output_size_follow_the_formula():
    for size in range(1, 9):
        for k in range(1, 6):
            for s in range(1, 4):
                for d in range(1, 4):
                    assert nn.same_padding(size, k, s, d) == same_pads(size, k, s, d)
                assert nn.output_size(size, k, s, "SAME") == -(-size // s)
                assert nn.output_size(size, k, s, "VALID") == len(range(0, size - k + 1, s))  # window starts


# Tiny hand-computed cases

IMAGE_3X3 = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32)[None, :, :, None]  # (1, 3, 3, 1)
KERNEL_2X2 = np.array([[1, 2], [3, 4]], np.float32)[:, :, None, None]  # (2, 2, 1, 1)


def values(out):
    return np.asarray(out)[0, :, :, 0].tolist()


def test_hand_conv_valid():
    # out[i, j] = 1 x[i, j] + 2 x[i, j+1] + 3 x[i+1, j] + 4 x[i+1, j+1] (cross-correlation, no flip)
    assert values(nn.conv2d(IMAGE_3X3, KERNEL_2X2, 1, "VALID")) == [[37, 47], [67, 77]]


def test_hand_conv_same_pads_after():
    # total padding 1 per axis: none before, one zero row below and one zero column to the right
    assert values(nn.conv2d(IMAGE_3X3, KERNEL_2X2, 1, "SAME")) == [[37, 47, 21], [67, 77, 33], [23, 26, 9]]


def test_hand_conv_same_stride2_extra_padding_bottom_right():
    # 5x5 ones, 4x4 ones kernel, stride 2: out 3, total pad 3 = 1 before + 2 after. Windows start at
    # -1, 1, 3 and cover 3, 4, 2 real pixels; with the extra pixel before it would be 2, 4, 3.
    out = nn.conv2d(np.ones((1, 5, 5, 1)), np.ones((4, 4, 1, 1)), 2, "SAME")
    assert values(out) == [[9, 12, 6], [12, 16, 8], [6, 8, 4]]


def test_hand_conv_dilation():
    # dilation 2 turns the 2x2 kernel into taps at offsets (0, 0), (0, 2), (2, 0), (2, 2)
    assert values(nn.conv2d(IMAGE_3X3, KERNEL_2X2, 1, "VALID", dilations=2)) == [[1 + 6 + 21 + 36]]


def test_hand_avg_pool_same_divides_by_real_pixels():
    # windows hold 4, 2, 2 and 1 real pixels: (1+2+4+5)/4, (3+6)/2, (7+8)/2, 9/1
    assert values(nn.avg_pool(IMAGE_3X3, 2, 2, "SAME")) == [[3.0, 4.5], [7.5, 9.0]]


def test_hand_avg_pool_same_3x3_window():
    # ones image: every output is 1 whatever the count of real pixels (4, 6 or 9)
    assert values(nn.avg_pool(np.ones((1, 3, 3, 1)), 3, 1, "SAME")) == [[1.0] * 3] * 3


def test_hand_max_pool_same_negative_input_asymmetric():
    # zero padding would win every window that touches it; -inf padding never does
    assert values(nn.max_pool(-IMAGE_3X3, 2, 2, "SAME")) == [[-1, -3], [-7, -9]]


def test_hand_max_pool_same_negative_input_symmetric():
    assert values(nn.max_pool(-IMAGE_3X3, 3, 1, "SAME")) == [[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]]


def test_hand_depth_max_pool():
    x = np.array([3, 1, 4, 1, 5, 9], np.float32).reshape(1, 1, 1, 6)
    assert np.asarray(nn.max_pool(x, (1, 1, 1, 2), (1, 1, 1, 2), "VALID")).ravel().tolist() == [3, 4, 9]
    assert np.asarray(nn.max_pool(x, (1, 1, 1, 3), (1, 1, 1, 3), "SAME")).ravel().tolist() == [4, 9]


# Gradients (float64 gradcheck)

def leaf(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).requires_grad_()


@pytest.mark.parametrize("size, kernel, strides, padding, dilations", [
    (5, 4, 2, "SAME", 1),  # asymmetric SAME (1 before, 2 after)
    (6, 3, 2, "SAME", 1),
    (5, 3, 1, "SAME", 2),
    (7, 2, 2, "VALID", 2),
    (5, 3, 1, explicit(2, 0, 1, 1), 1),
])
def test_conv2d_gradcheck(size, kernel, strides, padding, dilations):
    x, w = leaf(2, size, size, 2), leaf(kernel, kernel, 2, 3, seed=1)
    assert torch.autograd.gradcheck(lambda a, b: nn.conv2d(a, b, strides, padding, dilations), (x, w))


def test_conv2d_gradcheck_grouped():
    x, w = leaf(1, 4, 5, 4), leaf(2, 3, 2, 4, seed=1)
    assert torch.autograd.gradcheck(lambda a, b: nn.conv2d(a, b, 1, "SAME"), (x, w))


@pytest.mark.parametrize("ksize, strides, padding", [
    (2, 2, "SAME"), (3, 2, "SAME"), (3, 1, "SAME"), (2, 1, "VALID"), (3, 2, explicit(2, 0, 1, 2)),
])
def test_max_pool_gradcheck(ksize, strides, padding):
    x = leaf(2, 5, 6, 2)  # continuous random values: no ties
    assert torch.autograd.gradcheck(lambda a: nn.max_pool(a, ksize, strides, padding), (x,))


@pytest.mark.parametrize("ksize, strides", [(2, 2), (3, 2), (3, 1), (4, 2)])
def test_avg_pool_same_gradcheck(ksize, strides):
    x = leaf(2, 5, 6, 2)
    assert torch.autograd.gradcheck(lambda a: nn.avg_pool(a, ksize, strides, "SAME"), (x,))


def test_depth_max_pool_gradcheck():
    x = leaf(2, 2, 3, 6)
    assert torch.autograd.gradcheck(lambda a: nn.max_pool(a, (1, 1, 1, 3), (1, 1, 1, 3), "VALID"), (x,))


# Input kinds

@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.float64, np.float32, bool])
def test_numpy_input_gives_float32(dtype):
    x = (np.arange(2 * 4 * 4 * 2) % 7).reshape(2, 4, 4, 2).astype(dtype)
    w = np.ones((2, 2, 2, 1), dtype=dtype)
    for out in (nn.conv2d(x, w, 1, "SAME"), nn.max_pool(x, 2, 2, "SAME"), nn.avg_pool(x, 2, 1, "VALID")):
        assert out.dtype == torch.float32
    assert_matches(nn.conv2d(x, w, 1, "SAME"), conv2d_ref(x, w, 1, "SAME"))


def test_nested_lists_are_accepted():
    out = nn.conv2d(IMAGE_3X3.tolist(), KERNEL_2X2.tolist(), 1, "VALID")
    assert values(out) == [[37, 47], [67, 77]]


def test_torch_float64_keeps_float64():
    x = torch.from_numpy(rand(1, 5, 5, 2).astype(np.float64))
    w = torch.from_numpy(rand(3, 3, 2, 2, seed=1).astype(np.float64))
    assert nn.conv2d(x, w, 1, "SAME").dtype == torch.float64
    assert nn.max_pool(x, 2, 2, "SAME").dtype == torch.float64
    assert nn.avg_pool(x, 2, 2, "SAME").dtype == torch.float64


def test_numpy_filters_follow_the_tensor_dtype():
    x = torch.from_numpy(rand(1, 5, 5, 2).astype(np.float64))
    w = np.random.default_rng(1).standard_normal((3, 3, 2, 2))  # float64, not representable in float32
    out = nn.conv2d(x, w, 1, "SAME")
    assert out.dtype == torch.float64
    # float64 filters must not round through float32 on the way
    np.testing.assert_allclose(out.numpy(), conv2d_ref(x.numpy(), w, 1, "SAME"), rtol=1e-12, atol=1e-12)
    assert nn.conv2d(x.float(), w, 1, "SAME").dtype == torch.float32
    # and the other way round: NumPy images follow a tensor filter bank
    assert nn.conv2d(x.numpy(), torch.from_numpy(w), 1, "SAME").dtype == torch.float64


def test_integer_tensor_becomes_float32():
    x = torch.arange(16).reshape(1, 4, 4, 1)
    assert nn.max_pool(x, 2, 2, "VALID").dtype == torch.float32
    assert nn.conv2d(x, np.ones((1, 1, 1, 1)), 1, "VALID").dtype == torch.float32


def test_np_asarray_on_result():
    out = nn.conv2d(rand(1, 4, 4, 1), rand(2, 2, 1, 3), 1, "SAME")
    array = np.asarray(out)
    assert isinstance(array, np.ndarray) and array.shape == (1, 4, 4, 3) and array.dtype == np.float32


def test_requires_grad_flows():
    x = torch.from_numpy(rand(1, 5, 5, 2)).requires_grad_()
    w = torch.from_numpy(rand(3, 3, 2, 4, seed=1)).requires_grad_()
    out = nn.avg_pool(nn.max_pool(nn.conv2d(x, w, 1, "SAME"), 2, 1, "SAME"), 2, 2, "SAME")
    assert out.requires_grad
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert w.grad is not None and w.grad.shape == w.shape


def test_four_element_strides_and_case_insensitive_padding():
    x, w = rand(1, 7, 7, 2), rand(3, 3, 2, 2, seed=1)
    expected = conv2d_ref(x, w, 2, "SAME")
    for strides in (2, [2], (2, 2), [1, 2, 2, 1], np.array([1, 2, 2, 1])):
        for padding in ("SAME", "same", "Same", "sAmE"):
            assert_matches(nn.conv2d(x, w, strides, padding), expected)
    assert_matches(nn.max_pool(x, [1, 3, 3, 1], [1, 2, 2, 1], "valid"), max_pool_ref(x, 3, 2, "VALID"))
    assert_matches(nn.avg_pool(x, [1, 3, 3, 1], [1, 2, 2, 1], "Same"), avg_pool_ref(x, 3, 2, "SAME"))


def test_aliases():
    assert nn.max_pool2d is nn.max_pool and nn.avg_pool2d is nn.avg_pool


# The seed's snippet, adapted: a vertical- and a horizontal-line filter on two sample-like images

def line_filters():
    filters = np.zeros(shape=(7, 7, 3, 2), dtype=np.float32)
    filters[:, 3, :, 0] = 1  # vertical line
    filters[3, :, :, 1] = 1  # horizontal line
    return filters


def test_seed_snippet():
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 60, 3), dtype=np.uint8) / 255
    output = nn.conv2d(images, line_filters(), strides=1, padding="SAME")
    assert tuple(output.shape) == (2, 40, 60, 2) and output.dtype == torch.float32

    bar = np.zeros((1, 40, 60, 3))
    bar[0, :, 30, :] = 1  # one vertical bar
    response = np.asarray(nn.conv2d(bar, line_filters(), strides=1, padding="SAME"))
    assert response[0, 20, 30, 0] == 21  # 7 taps x 3 channels on the bar
    assert response[0, 20, 30, 1] == 3  # one tap x 3 channels
    assert response[0, 20, 30, 0] > response[0, 20, 30, 1]


# torch's Tensor.__array__ has no `copy` keyword yet; NumPy 2 warns when matplotlib passes one
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_seed_snippet_imshow_takes_the_tensor():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.random.default_rng(0).integers(0, 256, (2, 40, 60, 3), dtype=np.uint8) / 255
    output = nn.conv2d(images, line_filters(), strides=1, padding="SAME")
    try:
        image = plt.imshow(output[0, :, :, 1], cmap="gray")
        assert image.get_array().shape == (40, 60)
    finally:
        plt.close("all")


# Bad input: each error pinned by its message

X = rand(1, 5, 5, 3)
W = rand(3, 3, 3, 2, seed=1)


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.conv2d(X[0], W, 1, "SAME"), ValueError,
     r"rank 4 \(N, H, W, C\), received shape \(5, 5, 3\); add a batch axis with x\[None\]"),
    (lambda: nn.max_pool(X[0, :, :, 0], 2, 2, "SAME"), ValueError, r"add batch and channel axes with x\[None, :, :, None\]"),
    (lambda: nn.conv2d(X[None], W, 1, "SAME"), ValueError, r"rank 4 .*received shape \(1, 1, 5, 5, 3\)$"),
    (lambda: nn.conv2d(X, W[:, :, :, :, None], 1, "SAME"), ValueError, r"`filters` of rank 4"),
    (lambda: nn.conv2d(X, rand(3, 3, 2, 2), 1, "SAME"), ValueError,
     r"input depth \(3\) must equal the filters' in-depth \(2\)"),
    (lambda: nn.conv2d(rand(1, 5, 5, 4), rand(3, 3, 2, 3), 1, "SAME"), ValueError,
     r"\(2 groups\) the filters' out-depth \(3\) must be a multiple"),
    (lambda: nn.conv2d(X, W, [1, 2, 2], "SAME"), ValueError, r"`strides` must have 1, 2 or 4 elements .*\(3 elements\)"),
    (lambda: nn.conv2d(X, W, 0, "SAME"), ValueError, r"`strides` values must be >= 1. Received: strides=\[1, 0, 0, 1\]"),
    (lambda: nn.conv2d(X, W, (1, -2), "SAME"), ValueError, r"`strides` values must be >= 1"),
    (lambda: nn.conv2d(X, W, 1, "SAME", dilations=0), ValueError, r"`dilations` values must be >= 1"),
    (lambda: nn.conv2d(X, W, 1.5, "SAME"), TypeError, r"`strides` must be an integer or a list"),
    (lambda: nn.conv2d(X, W, [1, 2.0], "SAME"), TypeError, r"`strides` must contain integers"),
    (lambda: nn.conv2d(X, W, [2, 1, 1, 1], "SAME"), ValueError, r"`strides` in the batch and depth dimensions must be 1"),
    (lambda: nn.conv2d(X, W, [1, 1, 1, 2], "SAME"), ValueError, r"`strides` in the batch and depth dimensions must be 1"),
    (lambda: nn.conv2d(X, W, 1, "SAME", dilations=[1, 1, 1, 2]), ValueError, r"`dilations` in the batch and depth"),
    (lambda: nn.conv2d(X, W, 1, "FULL"), ValueError, r"`padding` must be 'SAME', 'VALID' .*Received: padding='FULL'"),
    (lambda: nn.max_pool(X, 2, 2, "causal"), ValueError, r"`padding` must be 'SAME', 'VALID'"),
    (lambda: nn.avg_pool(X, 2, 2, "full"), ValueError, r"`padding` must be 'SAME', 'VALID'"),
    (lambda: nn.conv2d(X, W, 1, [[1, 1], [1, 1]]), ValueError, r"explicit `padding` must be 4 \[before, after\] pairs"),
    (lambda: nn.conv2d(X, W, 1, [[1, 0], [1, 1], [1, 1], [0, 0]]), ValueError, r"explicit `padding` must be 4"),
    (lambda: nn.conv2d(X, W, 1, explicit(1, -1, 0, 0)), ValueError, r"explicit `padding` must be 4"),
    (lambda: nn.conv2d(X, W, 1, explicit(1, 1.5, 0, 0)), ValueError, r"explicit `padding` must be 4"),
    (lambda: nn.conv2d(X, W, 1, [[0, 0], [1, 1, 1], [0, 0], [0, 0]]), ValueError, r"explicit `padding` must be 4"),
    (lambda: nn.conv2d(X, W, 1, None), ValueError, r"explicit `padding` must be 4"),
    (lambda: nn.conv2d(X, rand(6, 2, 3, 1), 1, "VALID"), ValueError,
     r"kernel of size 6 does not fit the padded input along height \(5 \+ 0 padding\)"),
    (lambda: nn.conv2d(X, rand(2, 6, 3, 1), 1, "valid"), ValueError,
     r"kernel of size 6 does not fit the padded input along width"),
    (lambda: nn.conv2d(X, W, 1, "VALID", dilations=3), ValueError, r"dilated kernel \(span 7\) of size 3 does not fit"),
    (lambda: nn.max_pool(X, 6, 1, "VALID"), ValueError, r"kernel of size 6 does not fit"),
    (lambda: nn.max_pool(X, 3, 1, explicit(3, 0, 0, 0)), ValueError, r"explicit padding must be smaller than the window"),
    (lambda: nn.max_pool(rand(1, 2, 2, 6), (1, 1, 1, 4), (1, 1, 1, 4), "VALID"), ValueError,
     r"depth window \(4\) must divide the input depth \(6\)"),
    (lambda: nn.max_pool(rand(1, 2, 2, 6), (1, 1, 1, 2), (1, 1, 1, 3), "VALID"), ValueError,
     r"depth window to equal the depth stride"),
    (lambda: nn.max_pool(rand(1, 2, 2, 6), (1, 1, 1, 1), (1, 1, 1, 2), "VALID"), ValueError,
     r"depth window to equal the depth stride"),
    (lambda: nn.max_pool(rand(1, 4, 4, 6), (1, 2, 2, 2), (1, 2, 2, 2), "VALID"), ValueError,
     r"cannot be combined with spatial pooling"),
    (lambda: nn.max_pool(rand(1, 4, 4, 6), (1, 1, 1, 2), (1, 2, 2, 2), "VALID"), ValueError,
     r"cannot be combined with spatial pooling"),
    (lambda: nn.max_pool(rand(1, 2, 2, 6), (1, 1, 1, 2), (1, 1, 1, 2), explicit(1, 0, 0, 0)), ValueError,
     r"depth-wise pooling takes no spatial padding"),
    (lambda: nn.max_pool(rand(1, 2, 2, 6), (1, 1, 1, 2), (1, 1, 1, 2), "full"), ValueError,
     r"`padding` must be 'SAME', 'VALID'"),
    (lambda: nn.max_pool(X, (2, 2, 2, 1), (1, 2, 2, 1), "VALID"), ValueError,
     r"pooling across the batch axis is not supported"),
    (lambda: nn.avg_pool(X, (1, 2, 2, 1), (2, 2, 2, 1), "VALID"), ValueError,
     r"pooling across the batch axis is not supported"),
    (lambda: nn.avg_pool(rand(1, 2, 2, 6), (1, 1, 1, 2), (1, 1, 1, 2), "VALID"), ValueError,
     r"depth axis is supported by max_pool only"),
    (lambda: nn.avg_pool(X, 2, 2, explicit(1, 1, 1, 1)), ValueError,
     r"explicit padding is not supported for average pooling"),
    (lambda: nn.max_pool(X, [1, 2, 3], 1, "SAME"), ValueError, r"`ksize` must have 1, 2 or 4 elements"),
    (lambda: nn.conv2d("image", W, 1, "SAME"), TypeError,
     r"`input` must be a NumPy array or a torch.Tensor. Received: input='image' \(type str\)"),
    (lambda: nn.max_pool(None, 2, 2, "SAME"), TypeError, r"`input` must be a NumPy array or a torch.Tensor"),
    (lambda: nn.conv2d(X, "filters", 1, "SAME"), TypeError, r"`filters` must be a NumPy array or a torch.Tensor"),
    (lambda: nn.conv2d(X.astype(np.complex64), W, 1, "SAME"), TypeError,
     r"`input` must hold real numbers. Received: input=a NumPy array .*complex64"),
    (lambda: nn.max_pool(torch.zeros(1, 2, 2, 1, dtype=torch.complex64), 1, 1, "SAME"), TypeError,
     r"`input` must hold real numbers. Received: input=a torch.Tensor"),
    (lambda: nn.avg_pool(np.array([[["a"]]]), 1, 1, "SAME"), TypeError, r"`input` must hold real numbers"),
    (lambda: nn.conv2d(torch.from_numpy(X).double(), torch.from_numpy(W), 1, "SAME"), TypeError,
     r"`input` and `filters` must have the same dtype. Received: input dtype torch.float64, filters dtype torch.float32"),
    (lambda: nn.conv2d(np.zeros((1, 0, 5, 3)), W, 1, "SAME"), ValueError, r"empty height, width or depth axis"),
    (lambda: nn.conv2d(X, np.zeros((3, 0, 3, 2)), 1, "SAME"), ValueError, r"`filters` has an empty axis"),
], ids=lambda v: v.__name__ if isinstance(v, type) else re.sub(r"\W+", "-", v)[:40] if isinstance(v, str) else "")
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# Property test: the op equals the reference, or both refuse (and the op with ValueError/TypeError)

def spatial_arg(low, high):
    one = st.integers(low, high)
    return st.one_of(one, st.lists(one, min_size=1, max_size=2),
                     st.tuples(st.just(1), one, one, st.just(1)).map(list))


def sometimes(strategy, junk):
    """`strategy`, and 1 time in 8 a value from `junk` (malformed arguments)."""
    return st.tuples(st.integers(0, 7), strategy, st.sampled_from(junk)).map(lambda t: t[2] if t[0] == 5 else t[1])


def bad_or(strategy):
    return sometimes(strategy, [0, -1, [1, 2, 3], [2, 1, 1, 1], [1, 1, 1, 2], 1.5, "2"])


PADDING = sometimes(
    st.one_of(st.sampled_from(["SAME", "VALID", "same", "valid", "Same"]),
              st.lists(st.integers(0, 2), min_size=4, max_size=4).map(lambda p: explicit(*p))),
    ["full", [[1, 1]], explicit(-1, 0, 0, 0), [[1, 0], [0, 0], [0, 0], [0, 0]], None])


def ref_or_error(ref, *args):
    try:
        return ref(*args), None
    except (ValueError, TypeError) as error:
        return None, error


def check_against(op_call, ref_call):
    expected, ref_error = ref_or_error(ref_call)
    try:
        out = op_call()
    except (ValueError, TypeError) as error:
        assert ref_error is not None, f"refused a valid case: {error}"
        return
    assert ref_error is None, f"accepted a case TensorFlow refuses ({ref_error})"
    assert_matches(out, expected)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.data(), n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7),
       groups=st.integers(1, 3), in_depth=st.integers(1, 2), out_per_group=st.integers(1, 2),
       kh=st.integers(1, 4), kw=st.integers(1, 4), strides=bad_or(spatial_arg(1, 3)),
       dilations=bad_or(spatial_arg(1, 3)), padding=PADDING, extra_out=st.integers(0, 1))
def test_conv2d_property(data, n, h, w, groups, in_depth, out_per_group, kh, kw, strides, dilations,
                         padding, extra_out):
    c_in, c_out = groups * in_depth, groups * out_per_group + (extra_out if groups > 1 else 0)
    x = rand(n, h, w, c_in, seed=data.draw(st.integers(0, 99)))
    f = rand(kh, kw, in_depth, c_out, seed=1)
    check_against(lambda: nn.conv2d(x, f, strides, padding, dilations),
                  lambda: conv2d_ref(x, f, strides, padding, dilations))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.data(), n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 3),
       ksize=bad_or(spatial_arg(1, 4)), strides=bad_or(spatial_arg(1, 3)), padding=PADDING,
       kind=st.sampled_from(["max", "avg"]))
def test_pool_property(data, n, h, w, c, ksize, strides, padding, kind):
    x = rand(n, h, w, c, seed=data.draw(st.integers(0, 99)))
    op = nn.max_pool if kind == "max" else nn.avg_pool
    check_against(lambda: op(x, ksize, strides, padding), lambda: pool_ref(kind, x, ksize, strides, padding))


def pool_ref(kind, x, ksize, strides, padding):
    """tf.nn.max_pool / avg_pool's rules: depth pooling is max only, window == stride, alone, unpadded."""
    depth = [v[3] for v in (ksize, strides) if isinstance(v, list) and len(v) == 4]
    if any(d != 1 for d in depth):
        if kind != "max" or ksize != [1, 1, 1, depth[0]] or strides != ksize:
            raise ValueError("not a valid depth pooling")
        pads, _ = pads_and_out(padding, x.shape[1:3], (1, 1), (1, 1))
        if pads != (0, 0, 0, 0):
            raise ValueError("depth pooling takes no padding")
        return depth_max_pool_ref(x, depth[0])
    return (max_pool_ref if kind == "max" else avg_pool_ref)(x, ksize, strides, padding)


# Docstring examples

def test_doctests():
    assert doctest.testmod(convnet.nn).failed == 0


# The layout conversion (convnet._internal.kernels): views, never copies; kernels keep channels_last

@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 1, 0, 1)], ids=["symmetric", "asymmetric"])
def test_layout_conversion_is_views_and_results_stay_channels_last(pads):
    x = torch.randn(2, 9, 9, 3)  # (N, H, W, C), contiguous
    nchw = kernels.to_nchw(x)
    assert tuple(nchw.shape) == (2, 3, 9, 9) and nchw.data_ptr() == x.data_ptr()  # a view
    assert nchw.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(kernels.to_nhwc(nchw), x) and kernels.to_nhwc(nchw).is_contiguous()
    weight = torch.randn(4, 3, 3, 3)  # (O, I, kh, kw)
    outputs = [kernels.conv2d_nchw(nchw, weight, None, (2, 2), (1, 1), pads),
               *(kernels.spatial_pool_nchw(kind, nchw, (2, 2), (2, 2), pads) for kind in ("max", "avg"))]
    for out in outputs:  # PyTorch's kernels keep channels_last, so viewing the result as NHWC costs nothing
        assert kernels.to_nhwc(out).is_contiguous()
    assert nn.conv2d(x, kernels.oihw_to_hwio(weight), 1, "SAME").is_contiguous()
    hwio = kernels.oihw_to_hwio(weight)
    assert tuple(hwio.shape) == (3, 3, 3, 4) and torch.equal(hwio[1, 2, 0, 3], weight[3, 0, 1, 2])
    assert torch.equal(kernels.hwio_to_oihw(hwio), weight)
    assert torch.equal(kernels.channels_last(kernels.channels_first(x)), x)
    assert tuple(kernels.channels_first(torch.zeros(2, 5)).shape) == (2, 5)  # rank 2: (N, C) already


def test_kernels_doctests():
    result = doctest.testmod(kernels)
    assert result.failed == 0 and result.attempted > 0
