"""Property tests: random shapes, strides, dilations, paddings and dtypes for the ops in convnet.nn and
for the layers, against the NumPy reference in tests/reference.py.

Every case either agrees with the reference or raises ValueError / TypeError, and refuses exactly what
the reference refuses; never another exception (no PyTorch RuntimeError from inside), never a hang
(the inputs are at most 2 x 9 x 9 x 6). tests/test_nn.py covers the ops' argument forms in float32;
this file adds dtypes, empty batches, non-contiguous tensors and the layers. About 50 examples each.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet import layers, nn

from .reference import avg_pool_ref, conv2d_ref, depth_max_pool_ref, max_pool_ref

PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)

# dtype -> (rtol, atol) for results against the float64 reference; None: must be refused (TypeError)
NUMPY_DTYPES = {"float16": (1e-2, 1e-2), "float32": (1e-5, 1e-5), "float64": (1e-5, 1e-5), "int8": (1e-5, 1e-4),
                "uint8": (1e-5, 1e-4), "int64": (1e-5, 1e-4), "bool": (1e-5, 1e-5), "complex64": None,
                "str": None, "object": None}
TORCH_DTYPES = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2), torch.float32: (1e-5, 1e-5),
                torch.float64: (1e-10, 1e-10), torch.int32: (1e-5, 1e-4), torch.uint8: (1e-5, 1e-4),
                torch.bool: (1e-5, 1e-5), torch.complex64: None}


def values(shape: tuple[int, ...], seed: int, dtype: str) -> np.ndarray:
    """Small integers for integer dtypes (exact in every float type), normals for the others."""
    rng = np.random.default_rng(seed)
    if dtype in ("str", "object"):
        return np.full(shape, "x", dtype=dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype in ("int8", "uint8", "int64"):
        return rng.integers(0, 8, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def as_input(array: np.ndarray, kind: str, torch_dtype: torch.dtype | None) -> object:
    """The same values as a NumPy array, a torch tensor of `torch_dtype`, or a non-contiguous tensor view."""
    if kind == "numpy":
        return array
    tensor = torch.from_numpy(np.asarray(array, dtype=np.float64)).to(torch_dtype)
    if kind == "transposed":  # same values, permuted strides
        tensor = tensor.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    return tensor


def run(call):
    """(result, None) or (None, the ValueError / TypeError); any other exception fails the test."""
    try:
        return call(), None
    except (ValueError, TypeError) as error:
        return None, error


def compare(op_call, ref_call, tolerance) -> None:
    """The op agrees with the reference, or both refuse; a None tolerance means the op must refuse."""
    expected, ref_error = run(ref_call)
    out, error = run(op_call)
    if tolerance is None:
        assert error is not None, "accepted an input that is not real numbers"
        assert isinstance(error, TypeError), f"expected a TypeError, got {error!r}"
        return
    if error is not None:
        assert ref_error is not None, f"refused a valid case: {error}"
        return
    assert ref_error is None, f"accepted a case the reference refuses ({ref_error})"
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == expected.shape
    rtol, atol = tolerance
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=rtol, atol=atol)


def on_batch(ref, x: np.ndarray, *args):
    """`ref(x, *args)`, also for an empty batch (the reference pools need one sample to reshape)."""
    if x.shape[0] == 0:
        return ref(np.zeros((1, *x.shape[1:])), *args)[:0]
    return ref(x, *args)


def quantised(array: np.ndarray, dtype) -> np.ndarray:
    """The values the op actually sees: the input rounded to its dtype, for the reference to start from."""
    if isinstance(dtype, torch.dtype):
        if dtype.is_complex:
            return array
        return torch.from_numpy(np.asarray(array, np.float64)).to(dtype).double().numpy()
    if dtype in ("complex64", "str", "object"):
        return array
    return np.asarray(array).astype(np.float64)


SPATIAL = st.one_of(st.integers(1, 3), st.lists(st.integers(1, 3), min_size=2, max_size=2))
PADDINGS = st.one_of(st.sampled_from(["SAME", "VALID", "same", "valid"]),
                     st.lists(st.integers(0, 2), min_size=2, max_size=2).map(
                         lambda p: [[0, 0], [p[0], p[1]], [p[1], p[0]], [0, 0]]))
INPUT_KIND = st.sampled_from(["numpy", "tensor", "transposed"])


def dtype_for(kind: str):
    return st.sampled_from(list(NUMPY_DTYPES)) if kind == "numpy" else st.sampled_from(list(TORCH_DTYPES))


@PROPERTY
@given(data=st.data(), n=st.integers(0, 2), h=st.integers(1, 8), w=st.integers(1, 8), c=st.integers(1, 3),
       out=st.integers(1, 3), kh=st.integers(1, 4), kw=st.integers(1, 4), strides=SPATIAL, dilations=SPATIAL,
       padding=PADDINGS, kind=INPUT_KIND)
def test_conv2d_any_dtype(data, n, h, w, c, out, kh, kw, strides, dilations, padding, kind):
    dtype = data.draw(dtype_for(kind))
    tolerance = (NUMPY_DTYPES if kind == "numpy" else TORCH_DTYPES)[dtype]
    x = values((n, h, w, c), data.draw(st.integers(0, 99)), "float64" if kind != "numpy" else dtype)
    f = values((kh, kw, c, out), 1, "float64")
    inputs = as_input(x, kind, None if kind == "numpy" else dtype)
    filters = f if kind == "numpy" else torch.from_numpy(f).to(dtype)  # same dtype as a tensor input
    compare(lambda: nn.conv2d(inputs, filters, strides, padding, dilations),
            lambda: conv2d_ref(quantised(x, dtype), quantised(f, dtype), strides, padding, dilations),
            None if tolerance is None else (tolerance[0], tolerance[1] * kh * kw * c))  # the error grows with the sum


@PROPERTY
@given(data=st.data(), n=st.integers(0, 2), h=st.integers(1, 8), w=st.integers(1, 8), c=st.integers(1, 3),
       ksize=SPATIAL, strides=SPATIAL, padding=PADDINGS, kind=INPUT_KIND, op=st.sampled_from(["max", "avg"]))
def test_pooling_any_dtype(data, n, h, w, c, ksize, strides, padding, kind, op):
    dtype = data.draw(dtype_for(kind))
    tolerance = (NUMPY_DTYPES if kind == "numpy" else TORCH_DTYPES)[dtype]
    x = values((n, h, w, c), data.draw(st.integers(0, 99)), "float64" if kind != "numpy" else dtype)
    inputs = as_input(x, kind, None if kind == "numpy" else dtype)
    pool, ref = (nn.max_pool, max_pool_ref) if op == "max" else (nn.avg_pool, avg_pool_ref)
    compare(lambda: pool(inputs, ksize, strides, padding),
            lambda: on_batch(ref, quantised(x, dtype), ksize, strides, padding), tolerance)


@PROPERTY
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=6), kind=st.sampled_from(["conv", "max", "avg"]),
       dtype=st.sampled_from(["float32", "int64", "bool"]))
def test_ops_on_any_rank_refuse_cleanly(shape, kind, dtype):
    """Ranks 0 to 6 and empty axes: rank-4 inputs with non-empty H, W, C work, the rest raise ValueError."""
    x = values(tuple(shape), 0, dtype)
    call = {"conv": lambda: nn.conv2d(x, np.ones((1, 1, max(shape[-1:] or [1]) or 1, 2), np.float32), 1, "SAME"),
            "max": lambda: nn.max_pool(x, 2, 2, "SAME"), "avg": lambda: nn.avg_pool(x, 2, 2, "VALID")}[kind]
    _, error = run(call)
    valid = len(shape) == 4 and min(shape[1:]) >= 1 and (kind != "avg" or min(shape[1:3]) >= 2)
    assert (error is None) == valid, f"shape {shape}: {error!r}"
    if error is not None:
        assert isinstance(error, ValueError), repr(error)


# Layers against the reference

LAYER_INPUT = st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 6))
LAYER_DTYPE = st.sampled_from([np.float32, np.float64, np.uint8, torch.float64, torch.float32])


def layer_input(shape: tuple[int, ...], seed: int, dtype) -> tuple[object, np.ndarray]:
    """(what the layer is called with, its values as float64)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 4, shape).astype(np.uint8) if dtype is np.uint8 else rng.standard_normal(shape)
    if isinstance(dtype, torch.dtype):
        tensor = torch.from_numpy(array).to(dtype)
        return tensor, tensor.double().numpy()
    array = array.astype(dtype)
    return array, array.astype(np.float32).astype(np.float64)  # NumPy inputs are computed in float32


@PROPERTY
@given(data=st.data(), shape=LAYER_INPUT, filters=st.integers(1, 4), kernel=SPATIAL, strides=SPATIAL,
       dilation=SPATIAL, padding=st.sampled_from(["same", "valid", "SAME", "full"]), groups=st.integers(1, 3),
       use_bias=st.booleans(), dtype=LAYER_DTYPE)
def test_conv2d_layer(data, shape, filters, kernel, strides, dilation, padding, groups, use_bias, dtype):
    layer, error = run(lambda: layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                             dilation_rate=dilation, groups=groups, use_bias=use_bias))
    if error is not None:
        assert padding == "full" or filters % groups, repr(error)
        return
    x, x64 = layer_input(shape, data.draw(st.integers(0, 99)), dtype)
    out, error = run(lambda: layer(x))
    channels = shape[3]
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if channels % groups:
        assert error is not None and "divisible by `groups`" in str(error)
        return
    weights = [np.asarray(w, np.float64) for w in layer.get_weights()] if layer.built else None
    if weights is None:  # refused before building: the kernel cannot fit
        expected, ref_error = run(lambda: conv2d_ref(x64, np.zeros((kh, kw, channels // groups, filters)), strides,
                                                     padding.upper(), dilation))
        assert error is not None and ref_error is not None, f"{error!r} / {ref_error!r}"
        return
    expected, ref_error = run(lambda: conv2d_ref(x64, weights[0], strides, padding.upper(), dilation))
    if ref_error is not None:
        assert error is not None, f"accepted a case the reference refuses ({ref_error})"
        return
    assert error is None, f"refused a valid case: {error}"
    if use_bias:
        expected = expected + weights[1]
    assert out.dtype == torch.float32 and tuple(out.shape) == expected.shape
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=1e-5, atol=1e-4)


@PROPERTY
@given(data=st.data(), shape=LAYER_INPUT, pool=SPATIAL, strides=st.one_of(st.none(), SPATIAL),
       padding=st.sampled_from(["same", "valid"]), kind=st.sampled_from(["max", "avg"]), dtype=LAYER_DTYPE)
def test_pooling_layers(data, shape, pool, strides, padding, kind, dtype):
    cls, ref = (layers.MaxPooling2D, max_pool_ref) if kind == "max" else (layers.AveragePooling2D, avg_pool_ref)
    layer = cls(pool, strides=strides, padding=padding)
    x, x64 = layer_input(shape, data.draw(st.integers(0, 99)), dtype)
    compare(lambda: layer(x), lambda: ref(x64, pool, pool if strides is None else strides, padding.upper()),
            (1e-5, 1e-5))


@PROPERTY
@given(data=st.data(), n=st.integers(1, 3), c=st.integers(1, 8), pool=st.integers(1, 4), dtype=LAYER_DTYPE,
       hw=st.tuples(st.integers(1, 4), st.integers(1, 4)))
def test_depth_max_pool_layer(data, n, c, pool, dtype, hw):
    layer = layers.DepthMaxPool(pool)
    x, x64 = layer_input((n, *hw, c), data.draw(st.integers(0, 99)), dtype)
    compare(lambda: layer(x), lambda: depth_max_pool_ref(x64, pool), (1e-6, 1e-6))


@PROPERTY
@given(data=st.data(), batch=st.integers(1, 3), inner=st.lists(st.integers(1, 4), min_size=0, max_size=2),
       features=st.integers(1, 6), units=st.integers(1, 5), use_bias=st.booleans(), dtype=LAYER_DTYPE)
def test_dense_layer(data, batch, inner, features, units, use_bias, dtype):
    """Dense on the last axis of a batch of any rank >= 2: x @ kernel + bias."""
    layer = layers.Dense(units, use_bias=use_bias)
    x, x64 = layer_input((batch, *inner, features), data.draw(st.integers(0, 99)), dtype)
    out = layer(x)
    weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
    expected = x64 @ weights[0] + (weights[1] if use_bias else 0)
    assert tuple(out.shape) == (batch, *inner, units)
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=1e-5, atol=1e-4)
    bad = np.zeros((batch, features + 1), np.float32)  # built for `features`, called with one more
    with pytest.raises(ValueError, match=f"expected inputs with {features} channels"):
        layer(bad)


@PROPERTY
@given(data=st.data(), shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), training=st.booleans(),
       momentum=st.floats(0, 1), epsilon=st.floats(1e-5, 1e-1), center=st.booleans(), scale=st.booleans(),
       dtype=LAYER_DTYPE)
def test_batch_normalization_layer(data, shape, training, momentum, epsilon, center, scale, dtype):
    """Keras's formulas: training normalises with the batch's mean and biased variance and moves the
    moving statistics by (1 - momentum); inference uses the moving statistics."""
    seed = data.draw(st.integers(0, 99))
    layer = layers.BatchNormalization(momentum=momentum, epsilon=epsilon, center=center, scale=scale)
    x, x64 = layer_input(tuple(shape), seed, dtype)
    channels = shape[-1]
    layer.build_for(tuple(shape[1:]))
    rng = np.random.default_rng(seed + 1)
    weights = ([rng.uniform(0.5, 2, channels)] if scale else []) + ([rng.normal(size=channels)] if center else [])
    moving = [rng.normal(size=channels), rng.uniform(0.5, 2, channels)]
    layer.set_weights(weights + moving)
    gamma = weights[0] if scale else 1.0
    beta = weights[-1] if center else 0.0
    layer.train(training)
    out = layer(x)
    axes = tuple(range(len(shape) - 1))
    if training:
        mean, variance = x64.mean(axis=axes), x64.var(axis=axes)
        expected_moving = [moving[0] * momentum + mean * (1 - momentum), moving[1] * momentum + variance * (1 - momentum)]
    else:
        (mean, variance), expected_moving = moving, moving
    expected = gamma * (x64 - mean) / np.sqrt(variance + epsilon) + beta
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.concatenate(layer.get_weights()[-2:]), np.concatenate(expected_moving),
                               rtol=1e-5, atol=1e-5)


def test_batch_normalization_batch_of_one():
    """Keras normalises a single value per channel in training (variance 0: the output is beta); a fit
    whose last batch holds one sample then trains on. F.batch_norm refuses it."""
    layer = layers.BatchNormalization()
    layer.build_for((3,))
    layer.set_weights([np.ones(3), np.full(3, 0.5), np.zeros(3), np.ones(3)])
    layer.train(True)
    out = layer(np.array([[1.0, 2.0, 3.0]], np.float32))
    np.testing.assert_allclose(out.detach().numpy(), [[0.5, 0.5, 0.5]])
    # the moving statistics move towards the batch's mean and its (biased, so zero) variance
    np.testing.assert_allclose(np.concatenate(layer.get_weights()[2:]),
                               np.concatenate([0.01 * np.array([1.0, 2.0, 3.0]), np.full(3, 0.99)]), rtol=1e-6)


def test_batch_normalization_without_weights_takes_float64():
    """center=False, scale=False leaves no parameter to take the input dtype from: the float32 moving
    statistics must still meet a float32 input."""
    layer = layers.BatchNormalization(center=False, scale=False)
    out = layer(torch.ones((2, 3), dtype=torch.float64))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), np.full((2, 3), 1 / np.sqrt(1 + 1e-3)), rtol=1e-6)


@PROPERTY
@given(data=st.data(), shape=st.lists(st.integers(0, 4), min_size=1, max_size=5), dtype=LAYER_DTYPE)
def test_flatten_layer(data, shape, dtype):
    """(N, ...) -> (N, prod(...)) in C order; a batch without feature axes is refused with ValueError."""
    x, x64 = layer_input(tuple(shape), data.draw(st.integers(0, 99)), dtype)
    out, error = run(lambda: layers.Flatten()(x))
    if len(shape) < 2:
        assert isinstance(error, ValueError), repr(error)
        return
    assert error is None, repr(error)
    np.testing.assert_array_equal(out.detach().double().numpy(), x64.reshape(shape[0], math.prod(shape[1:])))


JUNK = [0, -1, 1.5, "2", None, [1, 2, 3], [0, 1], (2, -2), True, np.int64(2), float("nan"), [[1, 1]], {}, object()]


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(layer=st.sampled_from(["Conv2D", "MaxPooling2D", "AveragePooling2D", "Dense", "DepthMaxPool",
                              "BatchNormalization", "Flatten"]),
       argument=st.sampled_from(["first", "kernel_size", "strides", "padding", "dilation_rate", "groups",
                                 "momentum", "epsilon", "name", "input_shape", "activation"]),
       value=st.sampled_from(JUNK))
def test_layers_refuse_bad_arguments_with_value_or_type_errors(layer, argument, value):
    """Junk in any constructor argument: a ValueError or TypeError naming it, or an accepted value that
    then works on a batch; never another exception."""
    positional = {"Conv2D": [2, 3], "MaxPooling2D": [], "AveragePooling2D": [], "Dense": [3], "DepthMaxPool": [2],
                  "BatchNormalization": [], "Flatten": []}[layer]
    kwargs: dict = {}
    if argument == "first":
        positional = [value, *positional[1:]] if positional else [value]
    elif argument == "kernel_size" and layer == "Conv2D":
        positional = [2, value]
    else:
        kwargs[argument] = value
    made, error = run(lambda: getattr(layers, layer)(*positional, **kwargs))
    if error is not None:
        return
    _, error = run(lambda: made(np.ones((1, 6, 6, 4), np.float32)))
    assert error is None or isinstance(error, (ValueError, TypeError))


def test_flatten_empty_batch():
    """An empty batch flattens to (0, H * W * C), as every other layer passes empty batches through."""
    out = layers.Flatten()(np.zeros((0, 2, 3, 4), np.float32))
    assert tuple(out.shape) == (0, 24)
