"""convnet.layers against independent references: the NumPy loops of tests/reference.py, NumPy formulas
written here from Keras's documentation, and Keras's weight layouts and conventions. Parameterised over
the layer and activation registries, so a newly registered one is tested (or the test asks for an example).
"""
from __future__ import annotations

import doctest
import importlib
import inspect
import math
import os
import pkgutil

import numpy as np
import pytest
import torch

import convnet.activations
import convnet.initializers
import convnet.layers
from convnet import augment, initializers, layers, models, nn, schedules
from convnet._internal import kernels

from .reference import avg_pool_ref, conv2d_ref, depth_max_pool_ref, max_pool_ref

ATOL, RTOL = 1e-5, 1e-5  # float32 results against float64 references


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run(layer, x, training=False):
    """The layer's output on a NumPy batch, as a float64 NumPy array."""
    layer.train(training)
    with torch.no_grad():
        return layer(torch.from_numpy(x)).numpy().astype(np.float64)


def assert_close(out, expected, atol=ATOL, rtol=RTOL):
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=atol, rtol=rtol)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def with_random_bias(layer, seed=3):
    """Replace the (zero-initialised) bias with random values through set_weights, so it shows."""
    weights = layer.get_weights()
    weights[-1] = rand(*weights[-1].shape, seed=seed)
    layer.set_weights(weights)
    return weights


LAYER_MODULES = [importlib.import_module(f"convnet.layers.{info.name}")
                 for info in pkgutil.iter_modules(convnet.layers.__path__)]


@pytest.mark.parametrize("module", [convnet.layers, *LAYER_MODULES, kernels, convnet.activations,
                                    convnet.initializers], ids=lambda module: module.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, module.__name__
    if module is not convnet.layers.base:  # base documents in prose; each layer module shows its layers
        assert result.attempted > 0, module.__name__


def test_layers_package_re_exports_every_public_layer():
    exported = convnet.layers.__all__
    assert len(exported) == len(set(exported)) and all(hasattr(convnet.layers, name) for name in exported)
    registered_here = {name for name in layers.list_layers()
                       if layers.get_layer_class(name).__module__.startswith("convnet.layers.")}
    assert registered_here and registered_here <= set(exported)
    for module in LAYER_MODULES:  # and every public layer class of a family module, registered or not
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, layers.Layer) and value.__module__ == module.__name__ \
                    and not name.startswith("_"):
                assert name in exported and getattr(convnet.layers, name) is value, name


# Conv2D

@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2, (2, 1), (1, 3)], ids=str)
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, (2, 3), (3, 1)], ids=str)
def test_conv2d_matches_reference(kernel, strides, padding):
    x = rand(2, 7, 6, 3)
    conv = layers.Conv2D(4, kernel, strides=strides, padding=padding, activation="relu")
    out = run(conv, x)
    kernel_hwio, bias = with_random_bias(conv)
    expected = np.maximum(conv2d_ref(x, kernel_hwio, strides, padding.upper()) + bias, 0)
    assert_close(run(conv, x), expected)
    assert out.shape == expected.shape


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("dilation", [2, (1, 2), (3, 1)], ids=str)
@pytest.mark.parametrize("kernel, strides", [(2, 1), (3, 1), (3, 2), ((2, 3), 1)], ids=str)
def test_conv2d_dilation_matches_reference(kernel, strides, dilation, padding):
    x = rand(1, 9, 8, 2)
    conv = layers.Conv2D(3, kernel, strides=strides, padding=padding, dilation_rate=dilation, activation="tanh")
    conv.build_for(x.shape[1:])
    kernel_hwio, bias = with_random_bias(conv)
    expected = np.tanh(conv2d_ref(x, kernel_hwio, strides, padding.upper(), dilation) + bias)
    assert_close(run(conv, x), expected)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("channels, groups, filters", [(4, 2, 2), (4, 2, 6), (6, 3, 3), (4, 4, 4), (3, 3, 6)])
def test_conv2d_groups_match_reference(channels, groups, filters, padding):
    x = rand(2, 5, 6, channels)
    conv = layers.Conv2D(filters, (3, 2), strides=(2, 1), padding=padding, groups=groups)
    conv.build_for(x.shape[1:])
    kernel_hwio, bias = with_random_bias(conv)
    assert kernel_hwio.shape == (3, 2, channels // groups, filters)
    # the reference reads groups from C_in / in-depth, as tf.nn.conv2d does
    assert_close(run(conv, x), conv2d_ref(x, kernel_hwio, (2, 1), padding.upper()) + bias)


def test_conv2d_without_bias():
    conv = layers.Conv2D(2, 3, use_bias=False)
    x = rand(1, 5, 5, 2)
    out = run(conv, x)
    (kernel_hwio,) = conv.get_weights()
    assert conv.weight_names() == ["kernel"]
    assert_close(out, conv2d_ref(x, kernel_hwio, 1, "VALID"))


def test_conv2d_hand_computed_vertical_line_detector():
    # the seed's vertical-line filter, written in HWIO: column 1 of a 3x3 kernel is ones
    conv = layers.Conv2D(1, 3, use_bias=False)
    conv.build_for((4, 4, 1))
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[:, 1, 0, 0] = 1
    conv.set_weights([kernel])
    image = np.zeros((1, 4, 4, 1), np.float32)
    image[0, :, 2, 0] = 1
    assert run(conv, image)[0, :, :, 0].tolist() == [[0.0, 3.0], [0.0, 3.0]]


@pytest.mark.parametrize("size", [5, 6, 7, 28])
@pytest.mark.parametrize("kernel, stride, dilation", [(3, 1, 1), (3, 2, 1), (4, 2, 1), (7, 3, 1), (3, 1, 2),
                                                       (2, 2, 3)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv2d_output_shape_formula(size, kernel, stride, dilation, padding):
    conv = layers.Conv2D(5, kernel, strides=stride, padding=padding, dilation_rate=dilation)
    span = (kernel - 1) * dilation + 1
    if padding == "valid" and span > size:
        with pytest.raises(ValueError, match=r"does not fit the padded input along height"):
            conv.compute_output_shape((size, size + 1, 2))
        return
    # TF: ceil(H / s) for SAME, ceil((H - (k - 1) d) / s) for VALID
    expected = math.ceil(size / stride) if padding == "same" else math.ceil((size - span + 1) / stride)
    expected_w = math.ceil((size + 1) / stride) if padding == "same" else math.ceil((size + 1 - span + 1) / stride)
    assert conv.compute_output_shape((size, size + 1, 2)) == (expected, expected_w, 5)
    out = conv(torch.zeros(2, size, size + 1, 2))
    assert tuple(out.shape) == (2, expected, expected_w, 5)
    assert conv.output_shape == (expected, expected_w, 5)


def test_conv2d_output_shape_with_unknown_sizes():
    assert layers.Conv2D(4, 3).compute_output_shape((None, 10, 3)) == (None, 8, 4)
    assert layers.Conv2D(4, 3, padding="same", strides=2).compute_output_shape((None, None, 3)) == (None, None, 4)
    # an unknown size must not hide the known axis that is too small (regression: this was a TypeError)
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d': the kernel of size 3 does not fit the padded input "
                                         r"along width \(2 \+ 0 padding\)"):
        layers.Conv2D(4, 3).compute_output_shape((None, 2, 3))
    with pytest.raises(ValueError, match=r"MaxPooling2D 'max_pooling2d': the kernel of size 3 does not fit"):
        layers.MaxPooling2D(3).compute_output_shape((2, None, 3))


def test_conv2d_kernel_layout_is_keras_hwio():
    conv = layers.Conv2D(8, (3, 5), input_shape=(10, 10, 4))
    model = models.Sequential([conv])
    assert model.built
    kernel, bias = conv.get_weights()
    assert kernel.shape == (3, 5, 4, 8) and bias.shape == (8,)
    assert conv.keras_weight_shapes() == [(3, 5, 4, 8), (8,)]
    assert conv.weight_names() == ["kernel", "bias"]
    assert conv.count_params() == 3 * 5 * 4 * 8 + 8
    # a single non-zero tap at (row 0, column 4, in 2, out 5) reads the input at offset (0, 4), channel 2
    one_tap = np.zeros_like(kernel)
    one_tap[0, 4, 2, 5] = 1
    conv.set_weights([one_tap, np.zeros(8, np.float32)])
    x = rand(1, 10, 10, 4)
    np.testing.assert_allclose(run(conv, x)[0, :, :, 5], x[0, 0:8, 4:10, 2], atol=1e-6)


def test_conv2d_set_weights_round_trip():
    conv = layers.Conv2D(3, 2)
    conv(torch.zeros(1, 4, 4, 2))
    new = [rand(2, 2, 2, 3, seed=1), rand(3, seed=2)]
    conv.set_weights(new)
    for got, expected in zip(conv.get_weights(), new):
        np.testing.assert_array_equal(got, expected)
    conv.set_weights([torch.from_numpy(new[0] * 2), new[1].astype(np.float64)])  # tensors and float64 accepted
    np.testing.assert_array_equal(conv.get_weights()[0], new[0] * 2)
    assert conv.kernel.dtype == torch.float32


def test_conv2d_set_weights_errors():
    conv = layers.Conv2D(8, 3)
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d': the layer has no weights yet; build it first"):
        conv.set_weights([np.zeros((3, 3, 1, 8)), np.zeros(8)])
    conv(torch.zeros(1, 5, 5, 1))
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d': set_weights expected 2 arrays \(kernel \(3, 3, 1, 8\), "
                                         r"bias \(8,\)\), received 1"):
        conv.set_weights([np.zeros((3, 3, 1, 8))])
    with pytest.raises(ValueError, match=r"weight 'kernel' must have shape \(3, 3, 1, 8\) \(Keras layout\), "
                                         r"received \(8, 1, 3, 3\)"):
        conv.set_weights([np.zeros((8, 1, 3, 3)), np.zeros(8)])  # PyTorch's OIHW layout is refused
    with pytest.raises(ValueError, match=r"weight 'bias' must have shape \(8,\) \(Keras layout\), received \(4,\)"):
        conv.set_weights([np.zeros((3, 3, 1, 8)), np.zeros(4)])
    with pytest.raises(TypeError, match=r"set_weights expects a list of arrays. Received: a NumPy array"):
        conv.set_weights(np.zeros((3, 3, 1, 8)))
    with pytest.raises(TypeError, match=r"weight 'bias' must be numeric"):
        conv.set_weights([np.zeros((3, 3, 1, 8)), np.array(["a"] * 8)])


def test_conv2d_input_errors():
    conv = layers.Conv2D(8, 3)
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d': expected a 4-D batch \(N, H, W, C\), received shape "
                                         r"\(28, 28, 1\); add a batch axis with x\[None\]"):
        conv(torch.zeros(28, 28, 1))
    conv(torch.zeros(1, 28, 28, 1))
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d': expected inputs with 1 channels \(last axis\), "
                                         r"received shape \(1, 28, 28, 3\)"):
        conv(torch.zeros(1, 28, 28, 3))
    with pytest.raises(ValueError, match=r"a 2-D image needs a channel axis, e.g. input_shape=\(28, 28, 1\)"):
        layers.Conv2D(8, 3).build_for((28, 28))
    with pytest.raises(ValueError, match=r"the kernel of size 3 does not fit the padded input along height"):
        layers.Conv2D(8, 3)(torch.zeros(1, 2, 5, 1))


def test_conv2d_argument_errors():
    with pytest.raises(ValueError, match=r"convnet layers are NHWC only: `data_format` must be 'channels_last' or "
                                         r"None. Received: data_format='channels_first'"):
        layers.Conv2D(8, 3, data_format="channels_first")
    layers.Conv2D(8, 3, data_format="channels_last")
    with pytest.raises(ValueError, match=r"`filters` \(=8\) must be divisible by `groups` \(=3\)"):
        layers.Conv2D(8, 3, groups=3)
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d': the input channels \(3\) must be divisible by `groups` "
                                         r"\(=2\). Received input shape \(None, 5, 5, 3\)"):
        layers.Conv2D(4, 3, groups=2)(torch.zeros(1, 5, 5, 3))
    with pytest.raises(TypeError, match=r"Conv2D: unexpected keyword argument 'paddng'. Did you mean 'padding'\? "
                                        r"Accepted: filters, kernel_size"):
        layers.Conv2D(8, 3, paddng="same")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'stride'. Did you mean 'strides'"):
        layers.Conv2D(8, 3, stride=2)
    with pytest.raises(ValueError, match=r"`padding`: unknown padding 'full'"):
        layers.Conv2D(8, 3, padding="full")
    with pytest.raises(ValueError, match=r"`kernel_size` must be an integer or a sequence of 2 integers. "
                                         r"Received: kernel_size=\(3, 3, 3\)"):
        layers.Conv2D(8, (3, 3, 3))
    with pytest.raises(ValueError, match=r"`strides` values must be >= 1. Received: strides=0"):
        layers.Conv2D(8, 3, strides=0)
    with pytest.raises(TypeError, match=r"`filters` must be an integer. Received: filters=8.0"):
        layers.Conv2D(8.0, 3)
    assert layers.Conv2D(8, 3, padding="SAME").padding == "same"  # case-insensitive, as Keras


def test_conv2d_casts_inputs_and_accepts_numpy():
    conv = layers.Conv2D(2, 3)
    assert conv(np.zeros((1, 5, 5, 1))).dtype == torch.float32
    assert conv(torch.zeros(1, 5, 5, 1, dtype=torch.float64)).dtype == torch.float32


# Pooling

POOLS = [(layers.MaxPooling2D, max_pool_ref), (layers.AveragePooling2D, avg_pool_ref)]


def test_pooling_aliases():
    assert layers.MaxPool2D is layers.MaxPooling2D
    assert layers.AvgPool2D is layers.AveragePooling2D


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("pool_size, strides", [(2, None), (3, None), (2, 1), (3, 2), ((2, 3), None),
                                                ((3, 2), (1, 2)), (4, 3)], ids=str)
@pytest.mark.parametrize("cls, ref", POOLS, ids=["max", "avg"])
def test_pooling_matches_reference(cls, ref, pool_size, strides, padding):
    x = rand(2, 7, 6, 3) - 2  # mostly negative: zero padding would win a max
    pool = cls(pool_size, strides=strides, padding=padding)
    expected = ref(x, pool_size, pool_size if strides is None else strides, padding.upper())
    out = run(pool, x)
    assert_close(out, expected)
    assert pool.compute_output_shape(x.shape[1:]) == out.shape[1:]
    assert pool.get_weights() == [] and pool.count_params() == 0


@pytest.mark.parametrize("size", [5, 6, 7])
@pytest.mark.parametrize("cls, ref", POOLS, ids=["max", "avg"])
def test_pooling_same_stride2_odd_even(cls, ref, size):
    # TF's subtle case: SAME with stride 2 pads the extra pixel after; the average counts real pixels only
    x = rand(1, size, size + 1, 2) - 3
    assert_close(run(cls(3, strides=2, padding="same"), x), ref(x, 3, 2, "SAME"))
    assert_close(run(cls(2, padding="same"), x), ref(x, 2, 2, "SAME"))


def test_pooling_defaults_and_errors():
    pool = layers.MaxPooling2D()
    assert pool.pool_size == (2, 2) and pool.strides == (2, 2) and pool.padding == "valid"
    assert layers.AveragePooling2D(3).strides == (3, 3)  # strides default to pool_size, as Keras
    with pytest.raises(ValueError, match=r"`data_format` must be 'channels_last' or None"):
        layers.MaxPooling2D(data_format="channels_first")
    with pytest.raises(ValueError, match=r"MaxPooling2D 'max_pooling2d': expected a 4-D batch \(N, H, W, C\), "
                                         r"received shape \(7, 7, 2\); add a batch axis with x\[None\]"):
        layers.MaxPooling2D()(torch.zeros(7, 7, 2))
    with pytest.raises(TypeError, match=r"AveragePooling2D: unexpected keyword argument 'pool'. "
                                        r"Did you mean 'pool_size'"):
        layers.AveragePooling2D(pool=2)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("cls, reduce", [(layers.GlobalAveragePooling2D, np.mean),
                                         (layers.GlobalMaxPooling2D, np.max)], ids=["avg", "max"])
def test_global_pooling(cls, reduce, keepdims):
    x = rand(3, 5, 4, 6)
    pool = cls(keepdims=keepdims)
    out = run(pool, x)
    assert_close(out, reduce(x.astype(np.float64), axis=(1, 2), keepdims=keepdims))
    assert pool.compute_output_shape((5, 4, 6)) == ((1, 1, 6) if keepdims else (6,))
    assert pool.compute_output_shape((None, None, 6)) == out.shape[1:]


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_depth_max_pool(k):
    x = rand(2, 3, 4, 6)
    pool = layers.DepthMaxPool(k)
    out = run(pool, x)
    assert_close(out, depth_max_pool_ref(x, k))
    np.testing.assert_array_equal(out, nn.max_pool(x, (1, 1, 1, k), (1, 1, 1, k), "VALID").numpy())
    assert pool.compute_output_shape((3, 4, 6)) == (3, 4, 6 // k)


def test_depth_max_pool_errors():
    with pytest.raises(ValueError, match=r"DepthMaxPool 'depth_max_pool': `pool_size` \(=4\) must divide the input "
                                         r"depth \(6\) evenly. Received input shape \(None, 2, 2, 6\)"):
        layers.DepthMaxPool(4)(torch.zeros(1, 2, 2, 6))
    pool = layers.DepthMaxPool(2)
    pool(torch.zeros(1, 2, 2, 6))
    with pytest.raises(ValueError, match=r"`pool_size` \(=2\) must divide the input depth \(5\)"):
        pool(torch.zeros(1, 2, 2, 5))
    with pytest.raises(ValueError, match=r"`pool_size` must be >= 1"):
        layers.DepthMaxPool(0)
    with pytest.raises(ValueError, match=r"DepthMaxPool 'depth_max_pool': `pool_size` \(=4\) must divide the input "
                                         r"depth \(6\) evenly"):
        models.Sequential([layers.Input((2, 2, 6)), layers.DepthMaxPool(4)])


# Flatten and Dense

def test_flatten_is_hwc_order():
    x = rand(2, 3, 4, 5)
    flatten = layers.Flatten()
    out = run(flatten, x)
    np.testing.assert_array_equal(out, np.reshape(x, (2, -1)))  # row-major over (H, W, C), as Keras
    assert out[0, 1] == x[0, 0, 0, 1]  # channels vary fastest
    assert flatten.compute_output_shape((3, 4, 5)) == (60,)
    with pytest.raises(ValueError, match=r"Flatten 'flatten': cannot flatten an input of unknown size "
                                         r"\(None, None, 4, 5\); give the model a fixed input shape, or use "
                                         r"GlobalAveragePooling2D"):
        flatten.compute_output_shape((None, 4, 5))


def test_dense_on_2d_input():
    x = rand(4, 6)
    dense = layers.Dense(3, activation="sigmoid")
    dense.build_for((6,))
    kernel, bias = with_random_bias(dense)
    assert kernel.shape == (6, 3) and bias.shape == (3,)  # Keras layout (in, units)
    assert dense.kernel.shape == (3, 6)  # stored as PyTorch's (out, in)
    assert_close(run(dense, x), sigmoid(x.astype(np.float64) @ kernel + bias))
    assert dense.count_params() == 6 * 3 + 3


def test_dense_on_4d_input_applies_to_last_axis():
    x = rand(2, 3, 4, 5)
    dense = layers.Dense(7)
    out = run(dense, x)
    kernel, bias = with_random_bias(dense)
    assert out.shape == (2, 3, 4, 7)
    assert dense.compute_output_shape((3, 4, 5)) == (3, 4, 7)
    assert_close(run(dense, x), np.einsum("nhwc,cu->nhwu", x.astype(np.float64), kernel) + bias)


def test_dense_without_bias_and_errors():
    dense = layers.Dense(2, use_bias=False)
    dense(torch.zeros(1, 3))
    assert dense.weight_names() == ["kernel"]
    with pytest.raises(ValueError, match=r"Dense 'dense': expected inputs with 3 channels \(last axis\), "
                                         r"received shape \(1, 4\)"):
        dense(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"Dense 'dense': expected a batch of rank >= 2, received shape \(None,\)"):
        layers.Dense(2).build_for(())
    with pytest.raises(ValueError, match=r"`units` must be >= 1"):
        layers.Dense(0)
    with pytest.raises(TypeError, match=r"Dense: unexpected keyword argument 'activaton'. Did you mean 'activation'"):
        layers.Dense(3, activaton="relu")


# Dropout

def test_dropout_is_identity_in_eval_mode():
    x = rand(8, 10)
    assert_close(run(layers.Dropout(0.5), x), x.astype(np.float64), atol=0, rtol=0)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_in_train_mode(rate):
    torch.manual_seed(0)
    x = np.ones((200, 500), np.float32)  # 100,000 entries: the zero fraction has std < 0.002
    out = run(layers.Dropout(rate), x, training=True)
    zeros = out == 0
    assert abs(zeros.mean() - rate) < 0.01
    np.testing.assert_allclose(out[~zeros], 1 / (1 - rate), rtol=1e-6)  # survivors scaled, as Keras


def test_dropout_rate_zero_and_bounds():
    x = rand(4, 4)
    assert_close(run(layers.Dropout(0.0), x, training=True), x.astype(np.float64), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"`rate` must be < 1.0. Received: rate=1.0"):
        layers.Dropout(1.0)
    with pytest.raises(ValueError, match=r"`rate` must be >= 0.0. Received: rate=-0.1"):
        layers.Dropout(-0.1)
    with pytest.raises(TypeError, match=r"`rate` must be a number. Received: rate='0.5'"):
        layers.Dropout("0.5")


def test_model_call_runs_dropout_as_identity():
    model = models.Sequential([layers.Input((6,)), layers.Dropout(0.9)])
    x = rand(3, 6)
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), x)


def test_layers_start_in_inference_mode():
    # as Keras's layer(x), which runs with training=False; regression: a layer added with model.add()
    # after construction stayed in PyTorch's default training mode, so model(x) dropped units
    assert not layers.Dropout(0.5).training and not layers.BatchNormalization().training
    np.testing.assert_array_equal(layers.Dropout(0.9)(torch.ones(2, 8)).numpy(), np.ones((2, 8)))
    model = models.Sequential([layers.Input((8,))])
    model.add(layers.Dropout(0.9))
    model.add(layers.BatchNormalization())
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.ones(2, 8)).numpy(), np.ones((2, 8)) / math.sqrt(1 + 1e-3), rtol=1e-6)
    assert model.layers[1].get_weights()[2].tolist() == [0.0] * 8  # moving mean untouched by inference


# Activations

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946  # Klambauer 2017
_erf = np.vectorize(math.erf)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


NUMPY_FORMULAS = {  # written from Keras 3's keras.activations documentation
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,  # over the last axis
    "log_softmax": lambda x: np.log(_softmax(x)),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),  # alpha 1
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),  # exact form, Keras's approximate=False
    "swish": lambda x: x * sigmoid(x),
    "silu": lambda x: x * sigmoid(x),
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),  # Keras's default negative_slope 0.2
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,  # Keras 3: relu6(x + 3) / 6
    "exponential": np.exp,
}


@pytest.mark.parametrize("name", convnet.activations.list_activations())
def test_activation_matches_numpy_formula(name):
    assert name in NUMPY_FORMULAS, f"add a NumPy formula for the new activation {name!r}"
    x = rand(3, 4, 5, 6) * 3
    x[0, 0, 0, :3] = [-10, 0, 10]
    layer = layers.Activation(name)
    assert_close(run(layer, x), NUMPY_FORMULAS[name](x.astype(np.float64)), atol=2e-5)
    config_name = layer.get_config()["activation"]  # an alias may be saved under its first name (silu: swish)
    assert convnet.activations.get(config_name) is layer.activation
    assert layers.Activation(name.upper()).activation is layer.activation  # names are case-insensitive


def test_softmax_is_over_the_last_axis():
    out = run(layers.Activation("softmax"), rand(2, 3, 4, 5))
    np.testing.assert_allclose(out.sum(axis=-1), 1, atol=1e-6)


def test_activation_errors():
    with pytest.raises(ValueError, match=r"`activation`: unknown activation 'rleu'. Did you mean 'relu'"):
        layers.Activation("rleu")
    with pytest.raises(ValueError, match=r"unknown activation 'softmx'. Did you mean 'softmax'"):
        layers.Dense(3, activation="softmx")
    with pytest.raises(TypeError, match=r"`activation` must be a name such as 'relu', a callable or None. "
                                        r"Received: activation=3"):
        layers.Conv2D(2, 3, activation=3)


def test_activation_callable_and_none():
    x = rand(2, 3)
    assert_close(run(layers.Activation(lambda t: t * 2), x), 2 * x.astype(np.float64))
    assert layers.Dense(2).activation_name == "linear"
    with pytest.raises(ValueError, match=r"Activation 'activation': a custom activation callable cannot be saved"):
        layers.serialize(layers.Activation(lambda t: t))


# BatchNormalization

def _bn_layer(channels=3, **kwargs):
    bn = layers.BatchNormalization(**kwargs)
    bn.build_for((4, 5, channels))
    gamma, beta = rand(channels, seed=1), rand(channels, seed=2)
    moving_mean, moving_variance = rand(channels, seed=3), np.abs(rand(channels, seed=4)) + 0.5
    bn.set_weights([gamma, beta, moving_mean, moving_variance])
    return bn, gamma, beta, moving_mean, moving_variance


def test_batch_norm_weights_order_and_counts():
    bn = layers.BatchNormalization()
    bn(torch.zeros(2, 4, 4, 3))
    assert bn.weight_names() == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [w.tolist() for w in bn.get_weights()] == [[1.0] * 3, [0.0] * 3, [0.0] * 3, [1.0] * 3]
    assert bn.count_params() == 12 and bn.count_trainable_params() == 6  # as Keras: moving stats not trainable
    assert bn.momentum == 0.99 and bn.epsilon == 1e-3  # Keras's defaults
    plain = layers.BatchNormalization(center=False, scale=False)
    plain(torch.zeros(2, 3))
    assert plain.weight_names() == ["moving_mean", "moving_variance"]


def test_batch_norm_training_uses_batch_statistics_and_updates_moving():
    bn, gamma, beta, moving_mean, moving_variance = _bn_layer(momentum=0.9, epsilon=1e-3)
    x = rand(6, 4, 5, 3) * 2 + 1
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))  # biased variance
    assert_close(run(bn, x, training=True), (x64 - mean) / np.sqrt(var + 1e-3) * gamma + beta, atol=1e-4)
    # Keras: moving = moving * momentum + batch * (1 - momentum), with the biased batch variance
    np.testing.assert_allclose(bn.get_weights()[2], moving_mean * 0.9 + mean * 0.1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.get_weights()[3], moving_variance * 0.9 + var * 0.1, rtol=1e-5, atol=1e-6)


def test_batch_norm_eval_uses_moving_statistics():
    bn, gamma, beta, moving_mean, moving_variance = _bn_layer()
    x = rand(2, 4, 5, 3)
    expected = (x.astype(np.float64) - moving_mean) / np.sqrt(moving_variance + 1e-3) * gamma + beta
    assert_close(run(bn, x), expected, atol=1e-5)
    np.testing.assert_array_equal(bn.get_weights()[2], moving_mean)  # eval does not update


def test_batch_norm_not_trainable_uses_moving_statistics_in_training():
    bn, gamma, beta, moving_mean, moving_variance = _bn_layer(trainable=False)
    x = rand(2, 4, 5, 3)
    expected = (x.astype(np.float64) - moving_mean) / np.sqrt(moving_variance + 1e-3) * gamma + beta
    assert_close(run(bn, x, training=True), expected, atol=1e-5)
    np.testing.assert_array_equal(bn.get_weights()[2], moving_mean)
    assert bn.count_trainable_params() == 0
    assert not any(p.requires_grad for p in bn.parameters())
    bn.trainable = True
    run(bn, x, training=True)
    assert not np.array_equal(bn.get_weights()[2], moving_mean)


def test_batch_norm_on_2d_input_and_errors():
    bn = layers.BatchNormalization(momentum=0.0)  # momentum 0: moving stats become the batch's
    x = rand(16, 4)
    out = run(bn, x, training=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(bn.get_weights()[3], x.astype(np.float64).var(axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match=r"BatchNormalization normalises the last axis; `axis` must be -1. "
                                         r"Received: axis=1"):
        layers.BatchNormalization(axis=1)
    with pytest.raises(ValueError, match=r"`epsilon` must be > 0.0"):
        layers.BatchNormalization(epsilon=0)
    with pytest.raises(ValueError, match=r"`momentum` must be <= 1.0"):
        layers.BatchNormalization(momentum=1.5)


# Rescaling, Lambda, Input

def test_rescaling():
    x = rand(2, 3, 3, 1)
    assert_close(run(layers.Rescaling(1 / 255, offset=-0.5), x), x.astype(np.float64) / 255 - 0.5)
    out = layers.Rescaling(1 / 255)(np.full((1, 2, 2, 1), 255, np.uint8))
    assert out.dtype == torch.float32 and out.tolist() == [[[[1.0], [1.0]], [[1.0], [1.0]]]]
    with pytest.raises(TypeError, match=r"`scale` must be a number. Received: scale='1/255'"):
        layers.Rescaling("1/255")


def test_lambda_infers_output_shape_by_dry_run():
    calls = []

    def first_two(x):
        calls.append(tuple(x.shape))
        return x[..., :2] * 2

    lam = layers.Lambda(first_two)
    assert lam.build_for((5, 4, 3)) == (5, 4, 2)
    assert calls == [(1, 5, 4, 3)]  # one dummy sample
    model = models.Sequential([layers.Input((5, 4, 3)), layers.Lambda(lambda x: x.mean(dim=(1, 2))),
                               layers.Dense(2)])
    assert model.output_shape == (None, 2)
    assert layers.Lambda(lambda x: x, output_shape=(7,)).compute_output_shape((3,)) == (7,)
    assert layers.Lambda(lambda x: x).compute_output_shape((None, None, 3)) == (None, None, 3)
    x = rand(2, 5, 4, 3)
    assert_close(run(lam, x), 2 * x[..., :2].astype(np.float64))


def test_lambda_errors():
    with pytest.raises(ValueError, match=r"Lambda 'lambda': a Lambda layer holds Python code and cannot be saved "
                                         r"\(convnet files never carry code\)"):
        layers.serialize(layers.Lambda(lambda x: x))
    with pytest.raises(TypeError, match=r"`function` must be callable. Received: function=3"):
        layers.Lambda(3)
    with pytest.raises(TypeError, match=r"Lambda 'lambda': the function must return a torch.Tensor. "
                                        r"Received: 3 \(type int\)"):
        layers.Lambda(lambda x: 3).build_for((4, 4, 1))
    assert repr(layers.Lambda(lambda x: x, name="scale")) == "Lambda(name='scale')"


def test_input():
    inp = layers.Input(shape=(28, 28, 1))  # a symbolic tensor, with the batch axis, as keras.Input
    assert inp.shape == (None, 28, 28, 1) and isinstance(inp.node.operation, layers.InputLayer)
    assert layers.Input(shape=[None, None, 3]).shape == (None, None, None, 3)
    assert layers.Input(shape=10).shape == (None, 10)
    assert layers.InputLayer(shape=(4, 4, 2)).shape == (4, 4, 2)
    model = models.Sequential([inp, layers.Flatten()])
    assert model.input_shape == (None, 28, 28, 1) and model.built and model.output_shape == (None, 784)
    with pytest.raises(ValueError, match=r"`shape` entries must be positive integers \(None allowed for spatial "
                                         r"sizes, not for channels\), without the batch axis. "
                                         r"Received: shape=\(28, 0, 1\)"):
        layers.Input(shape=(28, 0, 1))
    with pytest.raises(ValueError, match=r"not for channels"):
        layers.Input(shape=(28, 28, None))
    with pytest.raises(TypeError, match=r"`shape` must be a non-empty tuple of sizes without the batch axis, e.g. "
                                        r"\(28, 28, 1\). Received: shape='28x28'"):
        layers.Input(shape="28x28")
    with pytest.raises(ValueError, match=r"an Input layer must come first in a Sequential model"):
        models.Sequential([layers.Flatten(), layers.Input((4,))])


def test_layer_name_rules():
    assert layers.Conv2D(2, 3).name == "conv2d"
    assert layers.MaxPooling2D().name == "max_pooling2d"
    assert layers.GlobalAveragePooling2D().name == "global_average_pooling2d"
    assert layers.BatchNormalization().name == "batch_normalization"
    with pytest.raises(ValueError, match=r"`name` may hold letters, digits, '_', '.' and '-' only. "
                                         r"Received: name='my conv'"):
        layers.Conv2D(2, 3, name="my conv")


# Initializers

def test_compute_fans_conv_and_dense():
    assert initializers.compute_fans((3, 3, 16, 32)) == (3 * 3 * 16, 3 * 3 * 32)  # kh*kw*in, kh*kw*out
    assert initializers.compute_fans((20, 10)) == (20, 10)
    assert initializers.compute_fans((7,)) == (7, 7)


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform", "lecun_uniform"])
def test_uniform_initializer_bounds(name):
    torch.manual_seed(0)
    shape = (3, 3, 16, 32)
    fan_in, fan_out = 3 * 3 * 16, 3 * 3 * 32
    limit = {"glorot_uniform": math.sqrt(6 / (fan_in + fan_out)), "he_uniform": math.sqrt(6 / fan_in),
             "lecun_uniform": math.sqrt(3 / fan_in)}[name]
    w = initializers.get(name)(shape)
    assert tuple(w.shape) == shape and w.dtype == torch.float32
    assert w.abs().max().item() <= limit
    assert w.abs().max().item() > 0.99 * limit  # the whole interval is used
    assert abs(w.std().item() - limit / math.sqrt(3)) < 0.03 * limit


@pytest.mark.parametrize("name, variance", [("he_normal", lambda fi, fo: 2 / fi),
                                            ("glorot_normal", lambda fi, fo: 2 / (fi + fo)),
                                            ("lecun_normal", lambda fi, fo: 1 / fi)],
                         ids=["he_normal", "glorot_normal", "lecun_normal"])
def test_truncated_normal_initializer_keeps_the_variance(name, variance):
    torch.manual_seed(0)
    shape = (3, 3, 64, 128)  # 73,728 draws: the empirical std is within 1% with high probability
    fan_in, fan_out = 3 * 3 * 64, 3 * 3 * 128
    std = math.sqrt(variance(fan_in, fan_out))
    w = initializers.get(name)(shape)
    assert abs(w.std().item() / std - 1) < 0.03  # Keras widens by 1 / 0.8796 so the truncation keeps the std
    assert abs(w.mean().item()) < 0.02 * std
    assert w.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-7  # cut at two (widened) stds


def test_constant_initializers_and_layer_use():
    assert initializers.get("zeros")((2, 3)).tolist() == [[0.0] * 3] * 2
    assert initializers.get("ones")((4,)).tolist() == [1.0] * 4
    conv = layers.Conv2D(2, 3, kernel_initializer="ones", bias_initializer="zeros")
    conv.build_for((5, 5, 1))
    kernel, bias = conv.get_weights()
    assert (kernel == 1).all() and (bias == 0).all()
    torch.manual_seed(0)
    dense = layers.Dense(64, kernel_initializer="he_normal")
    dense.build_for((100,))
    assert dense.get_weights()[0].std() == pytest.approx(math.sqrt(2 / 100), rel=0.05)  # fan_in = 100, (in, out)


def test_initializer_errors_and_serialization():
    with pytest.raises(ValueError, match=r"`initializer`: unknown initializer 'glorot'. Did you mean "
                                         r"'glorot_normal' or 'glorot_uniform'\?"):
        initializers.get("glorot")
    with pytest.raises(ValueError, match=r"unknown initializer 'he_norml'. Did you mean 'he_normal'"):
        layers.Dense(2, kernel_initializer="he_norml")
    with pytest.raises(TypeError, match=r"an initializer must be a name such as 'glorot_uniform' or an Initializer"):
        initializers.get(3)
    custom = initializers.RandomNormal(stddev=0.1)
    assert initializers.get(initializers.serialize(custom)).get_config() == custom.get_config()
    assert initializers.serialize(initializers.get("HE_NORMAL")) == "he_normal"


def test_initializer_dicts_name_a_class():
    spec = {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_in", "distribution": "uniform"}}
    assert initializers.get(spec).get_config() == spec["config"]
    with pytest.raises(ValueError, match=r"`initializer`: unknown initializer class 'Variancescaling'\. "
                                         r"Did you mean 'VarianceScaling'\?"):
        initializers.get({"class_name": "Variancescaling", "config": {}})


def _keras_class_name(snake):
    return "".join(part.capitalize() for part in snake.split("_"))  # he_normal -> HeNormal, as Keras 3's classes


@pytest.mark.parametrize("name", initializers.list_initializers())
def test_initializer_keras3_class_spellings(name):
    # Keras 3's initializers.get accepts "HeNormal" as well as "he_normal" (to_snake_case of the class name)
    camel = _keras_class_name(name)
    assert initializers.serialize(initializers.get(camel)) == name
    assert initializers.get(camel).get_config() == initializers.get(name).get_config()
    assert repr(layers.Dense(2, kernel_initializer=camel)) == repr(layers.Dense(2, kernel_initializer=name))


@pytest.mark.keras
@pytest.mark.parametrize("name", initializers.list_initializers())
def test_initializers_match_real_keras_by_both_spellings(name):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    ours = initializers.get(name)
    for spelling in (name, _keras_class_name(name)):
        theirs = keras.initializers.get(spelling)
        if isinstance(ours, initializers.VarianceScaling):
            assert (theirs.scale, theirs.mode, theirs.distribution) == (ours.scale, ours.mode, ours.distribution)
        elif isinstance(ours, initializers.Constant):
            assert float(keras.ops.convert_to_numpy(theirs((1,)))[0]) == ours.value
        else:  # the random ones: same class name, same defaults
            assert type(theirs).__name__ == type(ours).__name__
            assert {k: v for k, v in theirs.get_config().items() if k != "seed"} == ours.get_config()


# Registries: list by shell pattern, refuse unknown names with suggestions

def test_registries_list_names_by_pattern():
    every_layer = layers.list_layers()
    assert every_layer == sorted(every_layer) and {"Conv2D", "Dense", "RandomFlip"} <= set(every_layer)
    assert layers.list_layers("*Pooling2D") == [n for n in every_layer if n.endswith("Pooling2D")]
    assert layers.list_layers("conv2d") == []  # class names are matched exactly, as Keras's class_name
    every_activation = convnet.activations.list_activations()
    assert convnet.activations.list_activations("*relu*") == [n for n in every_activation if "relu" in n]
    assert convnet.activations.list_activations("RELU") == ["relu"]  # activation names are case-insensitive
    every_initializer = initializers.list_initializers()
    assert initializers.list_initializers("he_*") == ["he_normal", "he_uniform"]
    assert initializers.list_initializers("*") == every_initializer == sorted(every_initializer)
    assert schedules.list_schedules() == ["constant", "cosine", "onecycle", "step"]  # the CLI's --schedule names
    assert schedules.list_schedules("*c*") == ["constant", "cosine", "onecycle"]
    with pytest.raises(TypeError, match=r"`pattern` must be a string"):
        layers.list_layers(3)
    with pytest.raises(ValueError, match=r"unknown schedule 'Cosine'\. Did you mean 'CosineDecay'\?"):
        schedules.get({"class_name": "Cosine", "config": {}})


def test_register_refuses_a_second_class_of_the_same_name():
    with pytest.raises(ValueError, match=r"register: a layer class named 'Conv2D' is already registered "
                                         r"\(convnet\.layers\.convolutional\.Conv2D\)"):
        @layers.register
        class Conv2D(layers.Layer):
            pass

    assert layers.get_layer_class("Conv2D") is layers.Conv2D
    assert layers.register(layers.Conv2D) is layers.Conv2D  # registering the same class again changes nothing


# Config round trip and repr, over the registry

EXAMPLES = {  # one instance per registered class, with non-default arguments where it has any
    "Activation": lambda: layers.Activation("tanh", name="act"),
    "Add": lambda: layers.Add(name="plus"),
    "Average": lambda: layers.Average(),
    "Concatenate": lambda: layers.Concatenate(axis=2),
    "Conv2DTranspose": lambda: layers.Conv2DTranspose(3, (2, 3), strides=(2, 1), padding="same",
                                                      output_padding=(1, 0), activation="elu"),
    "Cropping2D": lambda: layers.Cropping2D((1, 2)),
    "DepthwiseConv2D": lambda: layers.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=2,
                                                      activation="relu", use_bias=False,
                                                      depthwise_initializer="he_normal"),
    "LayerNormalization": lambda: layers.LayerNormalization(axis=[1, 2, 3], epsilon=1e-5, center=False),
    "LeakyReLU": lambda: layers.LeakyReLU(negative_slope=0.2),
    "Maximum": lambda: layers.Maximum(),
    "Minimum": lambda: layers.Minimum(),
    "Multiply": lambda: layers.Multiply(),
    "ReLU": lambda: layers.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.05),
    "Reshape": lambda: layers.Reshape((-1, 8)),
    "SeparableConv2D": lambda: layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, dilation_rate=2,
                                                      pointwise_initializer="he_uniform", bias_initializer="ones"),
    "Softmax": lambda: layers.Softmax(axis=[1, 2]),
    "SpatialDropout2D": lambda: layers.SpatialDropout2D(0.3, seed=1),
    "Subtract": lambda: layers.Subtract(),
    "UpSampling2D": lambda: layers.UpSampling2D((2, 3), interpolation="bilinear"),
    "ZeroPadding2D": lambda: layers.ZeroPadding2D(((1, 2), (0, 1))),
    "AveragePooling2D": lambda: layers.AveragePooling2D(3, strides=2, padding="same"),
    "BatchNormalization": lambda: layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False),
    "Conv2D": lambda: layers.Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="relu", groups=2,
                                    dilation_rate=1, use_bias=False, kernel_initializer="he_normal",
                                    input_shape=(6, 6, 4)),
    "Dense": lambda: layers.Dense(5, activation="softmax", kernel_initializer=initializers.RandomNormal(0.0, 0.1)),
    "DepthMaxPool": lambda: layers.DepthMaxPool(2),
    "Dropout": lambda: layers.Dropout(0.25, trainable=False),
    "Flatten": lambda: layers.Flatten(name="flat"),
    "GlobalAveragePooling2D": lambda: layers.GlobalAveragePooling2D(keepdims=True),
    "GlobalMaxPooling2D": lambda: layers.GlobalMaxPooling2D(),
    "InputLayer": lambda: layers.InputLayer(shape=(6, None, 4), batch_size=8, name="images"),
    "Lambda": lambda: layers.Lambda(lambda x: x * 2),
    "MaxPooling2D": lambda: layers.MaxPooling2D((2, 3), padding="same"),
    "Rescaling": lambda: layers.Rescaling(0.5, offset=1.0),
    "RandomFlip": lambda: augment.RandomFlip("horizontal"),
    "RandomTranslation": lambda: augment.RandomTranslation(0.1, (-0.2, 0.1), fill_mode="constant", fill_value=0.5),
    "RandomRotation": lambda: augment.RandomRotation(0.05, fill_mode="nearest"),
    "RandomCrop": lambda: augment.RandomCrop(4, 5),
    "RandomErasing": lambda: augment.RandomErasing(factor=(1.0, 1.0), scale=(0.1, 0.2), fill_value=0.5,
                                                   value_range=(0, 1), seed=3),
}
UNSERIALISABLE = {"Lambda"}  # holds code; files never carry code


def _example(name):
    assert name in EXAMPLES, f"add an example for the newly registered layer {name!r} to EXAMPLES"
    layer = EXAMPLES[name]()
    assert type(layer) is layers.get_layer_class(name)
    return layer


def _required_args(cls):
    return [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
            if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


@pytest.mark.parametrize("name", layers.list_layers())
def test_config_round_trip(name):
    layer = _example(name)
    if name in UNSERIALISABLE:
        with pytest.raises(ValueError, match=r"cannot be saved"):
            layers.serialize(layer)
        return
    spec = layers.serialize(layer)
    assert spec["class_name"] == name
    clone = layers.deserialize(spec)
    assert type(clone) is type(layer)
    assert clone.get_config() == spec["config"]
    assert repr(clone) == repr(layer)
    if not isinstance(layer, layers.InputLayer):  # building adds weights, not configuration
        layer.build_for([(6, 6, 4)] * 2 if getattr(layer, "multiple_inputs", False) else (6, 6, 4))
        assert layers.serialize(layer) == spec


@pytest.mark.parametrize("name", layers.list_layers())
def test_repr_shows_required_args(name):
    layer = _example(name)
    text = repr(layer)
    assert text.startswith(f"{name}(") and f"name={layer.name!r}" in text
    if name not in UNSERIALISABLE:
        for argument in _required_args(type(layer)):
            assert f"{argument}=" in text, (argument, text)


def test_repr_examples():
    assert repr(layers.Conv2D(8, 3, padding="same")).startswith("Conv2D(name='conv2d', filters=8, "
                                                                "kernel_size=(3, 3), padding='same'")
    assert repr(layers.Dense(10)).startswith("Dense(name='dense', units=10")
    assert repr(layers.DepthMaxPool(2)) == "DepthMaxPool(name='depth_max_pool', pool_size=2)"


def test_deserialize_errors():
    with pytest.raises(ValueError, match=r"unknown layer class 'Conv2d'. Did you mean 'Conv2D'"):
        layers.deserialize({"class_name": "Conv2d", "config": {}})
    with pytest.raises(ValueError, match=r"a layer entry must be \{'class_name': str, 'config': dict\}"):
        layers.deserialize(["Conv2D"])
    with pytest.raises(ValueError, match=r"layer 'Dense': invalid configuration \{'unitz': 3\}"):
        layers.deserialize({"class_name": "Dense", "config": {"unitz": 3}})

    class Unregistered(layers.Layer):
        pass

    with pytest.raises(ValueError, match=r"its class is not registered"):
        layers.serialize(Unregistered())
    with pytest.raises(TypeError, match=r"register expects a Layer subclass"):
        layers.register(int)


# Gradients

@pytest.mark.parametrize("name", layers.list_layers())
def test_gradients_flow(name):
    torch.manual_seed(0)
    layer = _example(name)
    layer.train(True)
    x = torch.randn(3, 6, 6, 4, requires_grad=True)
    out = layer([x, torch.randn(3, 6, 6, 4)] if getattr(layer, "multiple_inputs", False) else x)
    loss = (out * torch.randn_like(out)).sum()  # random weighting: a softmax's plain sum would have zero grads
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for parameter_name, parameter in layer.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
            assert parameter.grad.abs().sum() > 0, parameter_name


def test_gradients_flow_through_a_model():
    torch.manual_seed(0)
    model = models.Sequential([
        layers.Input((8, 8, 3)), layers.Rescaling(0.5), layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.BatchNormalization(), layers.MaxPooling2D(), layers.Conv2D(4, 3, padding="same", activation="elu"),
        layers.DepthMaxPool(2), layers.AveragePooling2D(padding="same"), layers.Flatten(), layers.Dropout(0.1),
        layers.Dense(5, activation="softmax")])
    model.train()
    out = model(torch.rand(4, 8, 8, 3))
    loss = -torch.log(out[:, 0]).mean()
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 + 2 + 2 + 2  # two convs, BN gamma/beta, dense
    for parameter_name, parameter in trainable:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name


def test_get_weights_returns_copies_that_training_does_not_change():
    """A bias's float32 CPU tensor and a channels_last kernel are already "contiguous" in Keras's layout:
    without a copy the arrays would share memory with the parameters and change as training goes on."""
    model = convnet.models.Sequential([layers.Input(shape=(6, 6, 1)), layers.Conv2D(2, 3), layers.Flatten(),
                                       layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse", device="cpu")
    before = model.get_weights()
    kept = [array.copy() for array in before]
    params = [p.detach().numpy() for p in model.parameters()]
    assert not any(np.shares_memory(array, param) for array in before for param in params)
    model.fit(np.ones((4, 6, 6, 1), np.float32), np.ones((4, 3), np.float32), epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, kept))
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), kept))


def test_registering_the_same_definition_again_replaces_it():
    """Re-running a notebook cell defines a new class object with the same module and name: it takes the
    old one's place, where a different class of that name is refused."""
    def define():
        @layers.register
        class Twice(layers.Layer):
            pass
        return Twice

    first, second = define(), define()
    assert first is not second and layers.get_layer_class("Twice") is second
