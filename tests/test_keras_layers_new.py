"""The functional-API layers against real Keras 3 (`-m keras`; skipped unless Keras 3 imports): each layer
built in Keras and in convnet with the same arguments, Keras's `get_weights()` copied with `set_weights`,
the outputs equal within 1e-4 on random inputs (odd and even sizes, strides 1 and 2, "same" and "valid"),
the same parameter counts, weight names and shapes, and the same argument names and defaults.

Run: KERAS_BACKEND=tensorflow python -m pytest tests/test_keras_layers_new.py -m keras -o addopts=""
"""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch

from convnet import layers

ATOL = 1e-4


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ours(layer, inputs, training=False):
    layer.train(training)
    with torch.no_grad():
        batch = [torch.from_numpy(x) for x in inputs] if isinstance(inputs, list) else torch.from_numpy(inputs)
        return layer(batch).numpy()


def theirs(keras, layer, inputs, training=False):
    return keras.ops.convert_to_numpy(layer(inputs, training=training))


def compare(keras, keras_layer, layer, inputs, randomise=True, atol=ATOL):
    """Build both on `inputs`, give the Keras layer random weights, copy them into ours, compare outputs."""
    keras_layer(inputs)  # builds it
    shapes = [tuple(x.shape[1:]) for x in inputs] if isinstance(inputs, list) else tuple(inputs.shape[1:])
    layer.build_for(shapes)
    if randomise and keras_layer.weights:
        keras_layer.set_weights([rand(*w.shape, seed=i + 7) * 0.5 for i, w in enumerate(keras_layer.get_weights())])
    if keras_layer.weights:
        layer.set_weights(keras_layer.get_weights())
    assert layer.weight_names() == [w.name for w in keras_layer.weights]
    assert [w.shape for w in layer.get_weights()] == [w.shape for w in keras_layer.get_weights()]
    assert layer.count_params() == keras_layer.count_params()
    expected = theirs(keras, keras_layer, inputs)
    out = ours(layer, inputs)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=atol, rtol=1e-4)
    return out


# Merging

@pytest.mark.keras
@pytest.mark.parametrize("name", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
@pytest.mark.parametrize("shapes", [[(5, 6, 3), (5, 6, 3)], [(5, 6, 3), (3,)], [(5, 1, 3), (1, 6, 3)]], ids=str)
def test_keras_elementwise_merges(keras, name, shapes):
    inputs = [rand(2, *shape, seed=i) for i, shape in enumerate(shapes)]
    layer = getattr(layers, name)()
    compare(keras, getattr(keras.layers, name)(), layer, inputs)
    assert layer.output_shape == tuple(getattr(keras.layers, name)().compute_output_shape(
        [(None, *shape) for shape in shapes]))[1:]


@pytest.mark.keras
@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_keras_concatenate(keras, axis):
    shapes = [[5, 6, 3], [5, 6, 3], [5, 6, 3]]
    for index, size in enumerate((2, 4, 1)):
        shapes[index][axis % 4 - 1] = size
    inputs = [rand(2, *shape, seed=i) for i, shape in enumerate(shapes)]
    compare(keras, keras.layers.Concatenate(axis=axis), layers.Concatenate(axis=axis), inputs)


# Reshaping

@pytest.mark.keras
@pytest.mark.parametrize("padding", [1, (2, 0), ((1, 2), (3, 0))], ids=str)
def test_keras_zero_padding(keras, padding):
    compare(keras, keras.layers.ZeroPadding2D(padding), layers.ZeroPadding2D(padding), rand(2, 5, 4, 3))


@pytest.mark.keras
@pytest.mark.parametrize("cropping", [1, (0, 2), ((1, 0), (2, 1))], ids=str)
def test_keras_cropping(keras, cropping):
    compare(keras, keras.layers.Cropping2D(cropping), layers.Cropping2D(cropping), rand(2, 5, 6, 3))


@pytest.mark.keras
@pytest.mark.parametrize("size", [2, (3, 2), (1, 4)], ids=str)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("spatial", [(5, 4), (3, 7)], ids=str)
def test_keras_upsampling(keras, size, interpolation, spatial):
    x = rand(2, *spatial, 3)
    compare(keras, keras.layers.UpSampling2D(size, interpolation=interpolation),
            layers.UpSampling2D(size, interpolation=interpolation), x)


@pytest.mark.keras
@pytest.mark.parametrize("target", [(20, 3), (-1, 3), (5, -1), (60,)], ids=str)
def test_keras_reshape(keras, target):
    compare(keras, keras.layers.Reshape(target), layers.Reshape(target), rand(2, 4, 5, 3))


# Activations

@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [{}, {"max_value": 6.0}, {"negative_slope": 0.1}, {"threshold": 0.5},
                                    {"max_value": 1.0, "negative_slope": 0.2, "threshold": 0.3}], ids=str)
def test_keras_relu(keras, kwargs):
    x = rand(2, 4, 5, 3) * 2
    x[0, 0, 0, :3] = [0.0, 0.3, 0.5]  # exactly at the thresholds
    compare(keras, keras.layers.ReLU(**kwargs), layers.ReLU(**kwargs), x)


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [{}, {"negative_slope": 0.05}], ids=str)
def test_keras_leaky_relu(keras, kwargs):
    compare(keras, keras.layers.LeakyReLU(**kwargs), layers.LeakyReLU(**kwargs), rand(2, 4, 5, 3))


@pytest.mark.keras
@pytest.mark.parametrize("axis", [-1, 1, (1, 2)], ids=str)
def test_keras_softmax(keras, axis):
    compare(keras, keras.layers.Softmax(axis=axis), layers.Softmax(axis=axis), rand(2, 4, 5, 3) * 3)


# Depthwise, separable and transposed convolutions

CONV_CASES = [  # (input size, kernel, strides, padding, dilation)
    ((7, 6), 3, 1, "same", 1), ((7, 6), 3, 1, "valid", 1), ((7, 6), 3, 2, "same", 1), ((6, 7), 3, 2, "valid", 1),
    ((8, 8), 2, 2, "same", 1), ((9, 8), 4, 2, "same", 1), ((7, 7), (3, 2), (2, 1), "same", 1),
    ((9, 8), 3, 1, "same", 2), ((9, 9), 3, 2, "same", 2), ((10, 9), 2, 2, "valid", 2),
]


@pytest.mark.keras
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("size, kernel, strides, padding, dilation", CONV_CASES, ids=str)
def test_keras_depthwise_conv(keras, size, kernel, strides, padding, dilation, multiplier):
    kwargs = {"strides": strides, "padding": padding, "depth_multiplier": multiplier, "dilation_rate": dilation,
              "activation": "relu"}
    compare(keras, keras.layers.DepthwiseConv2D(kernel, **kwargs), layers.DepthwiseConv2D(kernel, **kwargs),
            rand(2, *size, 3))


@pytest.mark.keras
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("size, kernel, strides, padding, dilation", CONV_CASES, ids=str)
def test_keras_separable_conv(keras, size, kernel, strides, padding, dilation, multiplier):
    kwargs = {"strides": strides, "padding": padding, "depth_multiplier": multiplier, "dilation_rate": dilation}
    compare(keras, keras.layers.SeparableConv2D(5, kernel, **kwargs), layers.SeparableConv2D(5, kernel, **kwargs),
            rand(2, *size, 3))


TRANSPOSE_CASES = [  # (input size, kernel, strides, padding, output_padding, dilation)
    ((5, 4), 3, 1, "valid", None, 1), ((5, 4), 3, 1, "same", None, 1), ((5, 4), 4, 1, "same", None, 1),
    ((5, 4), 2, 1, "valid", None, 1), ((5, 4), 3, 2, "same", None, 1), ((4, 5), 3, 2, "valid", None, 1),
    ((5, 4), 2, 2, "same", None, 1), ((4, 5), 2, 2, "valid", None, 1), ((5, 5), 4, 2, "same", None, 1),
    ((5, 5), 4, 2, "valid", None, 1), ((5, 5), 1, 2, "valid", None, 1), ((5, 4), 3, 2, "same", (1, 0), 1),
    ((4, 5), 3, 2, "valid", (1, 1), 1), ((4, 4), 2, 2, "same", (1, 1), 1), ((3, 4), 5, 3, "same", (2, 1), 1),
    ((4, 5), 4, 3, "same", None, 1), ((5, 4), 3, 1, "same", None, 2), ((5, 4), 2, 1, "valid", None, 3),
    ((5, 6), (3, 2), (2, 1), "same", None, 1),
]


@pytest.mark.keras
@pytest.mark.parametrize("size, kernel, strides, padding, output_padding, dilation", TRANSPOSE_CASES, ids=str)
def test_keras_conv_transpose(keras, size, kernel, strides, padding, output_padding, dilation):
    kwargs = {"strides": strides, "padding": padding, "output_padding": output_padding, "dilation_rate": dilation}
    compare(keras, keras.layers.Conv2DTranspose(4, kernel, **kwargs), layers.Conv2DTranspose(4, kernel, **kwargs),
            rand(2, *size, 3))


@pytest.mark.keras
def test_keras_and_convnet_refuse_the_same_transposed_convolutions(keras):
    x = rand(1, 5, 5, 3)
    with pytest.raises(Exception):  # noqa: B017 - TensorFlow's op aborts (its error type depends on the build)
        keras.layers.Conv2DTranspose(4, 2, strides=2, padding="same", output_padding=0)(x)
    with pytest.raises(ValueError, match=r"TensorFlow refuses this"):
        layers.Conv2DTranspose(4, 2, strides=2, padding="same", output_padding=0)(torch.from_numpy(x))
    with pytest.raises(ValueError, match=r"`strides > 1` not supported in conjunction with `dilation_rate > 1`"):
        keras.layers.Conv2DTranspose(4, 3, strides=2, dilation_rate=2)(x)
    with pytest.raises(ValueError, match=r"`strides` > 1 cannot be combined with `dilation_rate` > 1"):
        layers.Conv2DTranspose(4, 3, strides=2, dilation_rate=2)


# Normalization and regularization

@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [{}, {"axis": [1, 2, 3]}, {"axis": [1, 3], "epsilon": 1e-5},
                                    {"axis": 2, "center": False}, {"scale": False}], ids=str)
def test_keras_layer_normalization(keras, kwargs):
    compare(keras, keras.layers.LayerNormalization(**kwargs), layers.LayerNormalization(**kwargs),
            rand(2, 4, 5, 3) * 2 + 1)


@pytest.mark.keras
def test_keras_spatial_dropout(keras):
    x = np.abs(rand(8, 4, 5, 16)) + 1.0
    theirs_layer, ours_layer = keras.layers.SpatialDropout2D(0.25, seed=1), layers.SpatialDropout2D(0.25, seed=1)
    np.testing.assert_array_equal(theirs(keras, theirs_layer, x), x)  # inference: both the identity
    np.testing.assert_array_equal(ours(ours_layer, x), x)
    for out in (theirs(keras, theirs_layer, x, training=True), ours(ours_layer, x, training=True)):
        dropped = out == 0
        per_channel = dropped.all(axis=(1, 2))  # whole (sample, channel) maps, in both
        assert (dropped == per_channel[:, None, None, :]).all() and 0 < per_channel.mean() < 0.5
        np.testing.assert_allclose(out[~dropped], (x / 0.75)[~dropped], rtol=1e-6)  # the same scaling


# Names, arguments and defaults

NEW_CLASSES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "ZeroPadding2D",
               "Cropping2D", "UpSampling2D", "Reshape", "ReLU", "LeakyReLU", "Softmax", "DepthwiseConv2D",
               "SeparableConv2D", "Conv2DTranspose", "SpatialDropout2D", "LayerNormalization"]


def _normalised(value):
    return tuple(_normalised(v) for v in value) if isinstance(value, (list, tuple)) else value


@pytest.mark.keras
@pytest.mark.parametrize("name", NEW_CLASSES)
def test_keras_argument_names_and_defaults(keras, name):
    """Every argument convnet takes is Keras's, with Keras's default, in Keras's order."""
    keras_parameters = inspect.signature(getattr(keras.layers, name).__init__).parameters
    our_parameters = inspect.signature(getattr(layers, name).__init__).parameters
    ours_named = [p for p in our_parameters.values() if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    keras_order = [p for p in keras_parameters if p != "self"]
    assert [p.name for p in ours_named] == [p for p in keras_order if p in {q.name for q in ours_named}]
    for parameter in ours_named:
        assert _normalised(parameter.default) == _normalised(keras_parameters[parameter.name].default), parameter.name


@pytest.mark.keras
@pytest.mark.parametrize("name", NEW_CLASSES)
def test_keras_default_layer_names(keras, name):
    """A layer's default name is Keras's (the class name in snake case: ReLU -> re_lu), less Keras's _N suffix."""
    required = {"Reshape": ((4, 4),), "SpatialDropout2D": (0.5,), "DepthwiseConv2D": (3,),
                "SeparableConv2D": (2, 3), "Conv2DTranspose": (2, 3)}.get(name, ())
    keras_name = getattr(keras.layers, name)(*required).name
    assert re.sub(r"_\d+$", "", keras_name) == getattr(layers, name)(*required).name
