"""The functional API against real Keras 3 (`-m keras`; skipped unless Keras imports): the same graphs built
in both, with the same layer names, give the same layer order, the same `get_weights()` order and shapes,
and the same predictions after weights are copied by layer name, both ways.

Run: KERAS_BACKEND=tensorflow python -m pytest tests/test_keras_functional.py -m keras -o addopts=""
"""
from __future__ import annotations

import numpy as np
import pytest

import convnet
from convnet import layers

pytestmark = pytest.mark.keras


def keras_or_skip():
    return pytest.importorskip("keras")


def build(L, Input, Model):
    """A ResNet-style graph (stem, a residual block with a projection shortcut, an identity block, a
    branch with concatenation, pooling, a softmax head), written once for both libraries."""
    inputs = Input(shape=(12, 12, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    y = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="b1_conv1")(x)
    y = L.Conv2D(16, 3, padding="same", name="b1_conv2")(y)
    shortcut = L.Conv2D(16, 1, strides=2, name="b1_proj")(x)
    x = L.Activation("relu", name="b1_out")(L.Add(name="b1_add")([shortcut, y]))
    y = L.Conv2D(16, 3, padding="same", activation="relu", name="b2_conv1")(x)
    y = L.Conv2D(16, 3, padding="same", name="b2_conv2")(y)
    x = L.Activation("relu", name="b2_out")(L.Add(name="b2_add")([x, y]))
    left = L.Conv2D(4, 1, name="left")(x)
    right = L.MaxPooling2D(3, strides=1, padding="same", name="right")(x)
    x = L.Concatenate(name="mix")([left, right])
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(5, activation="softmax", name="head")(x)
    return Model(inputs, outputs, name="resnet_like")


def both():
    keras = keras_or_skip()
    theirs = build(keras.layers, keras.Input, keras.Model)
    ours = build(layers, convnet.Input, convnet.Model)
    return keras, theirs, ours


def test_layer_order_and_weight_order_match_keras():
    _, theirs, ours = both()
    assert [layer.name for layer in ours.layers] == [layer.name for layer in theirs.layers]
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]
    assert ours.count_params() == theirs.count_params()


def test_predictions_match_after_copying_weights_both_ways():
    _, theirs, ours = both()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 12, 12, 3)).astype(np.float32)
    for layer in theirs.layers:  # random BN statistics too, so inference mode is checked
        weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in layer.get_weights()]
        if type(layer).__name__ == "BatchNormalization":
            weights[3] = np.abs(weights[3]) + 0.5
        layer.set_weights(weights)
    for layer in ours.layers:  # Keras -> convnet, by layer name
        ours.get_layer(layer.name).set_weights(theirs.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    _, fresh_theirs, _ = both()
    fresh_theirs.set_weights(ours.get_weights())  # convnet -> Keras, the whole list in order
    np.testing.assert_allclose(fresh_theirs.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_shared_layer_and_two_outputs_match_keras():
    keras = keras_or_skip()

    def graph(L, Input, Model):
        a, b = Input(shape=(6, 6, 2), name="a"), Input(shape=(6, 6, 2), name="b")
        shared = L.Conv2D(3, 3, padding="same", name="shared")
        xa, xb = shared(a), shared(b)
        first = L.Dense(4, name="first")(L.Flatten(name="flat")(L.Concatenate(name="mix")([xa, xb])))
        second = L.GlobalMaxPooling2D(name="gmp")(L.Subtract(name="diff")([xa, xb]))
        return Model([a, b], [first, second])
    theirs = graph(keras.layers, keras.Input, keras.Model)
    ours = graph(layers, convnet.Input, convnet.Model)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in theirs.layers]
    ours.set_weights(theirs.get_weights())
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((3, 6, 6, 2)).astype(np.float32) for _ in range(2)]
    for mine, keras_out in zip(ours.predict(xs, verbose=0), theirs.predict(xs, verbose=0)):
        np.testing.assert_allclose(mine, keras_out, rtol=1e-4, atol=1e-5)


def test_feature_extraction_as_in_the_book():
    """`keras.Model(inputs=model.input, outputs=[layer.output for layer in model.layers])` on a Sequential."""
    keras = keras_or_skip()

    def stack(L, Input, Sequential):
        return Sequential([Input(shape=(10, 10, 1)), L.Conv2D(4, 3, activation="relu", name="c1"),
                           L.MaxPooling2D(2, name="p1"), L.Flatten(name="f"), L.Dense(3, name="d")])
    theirs = stack(keras.layers, keras.Input, keras.Sequential)
    ours = stack(layers, convnet.Input, convnet.Sequential)
    ours.set_weights(theirs.get_weights())
    x = np.random.default_rng(2).standard_normal((2, 10, 10, 1)).astype(np.float32)
    # Keras 3's Sequential has `inputs` (its `input` is the unset Operation one); convnet has both
    keras_maps = keras.Model(inputs=theirs.inputs, outputs=[l.output for l in theirs.layers]).predict(x, verbose=0)
    our_maps = convnet.Model(inputs=ours.input, outputs=[l.output for l in ours.layers]).predict(x, verbose=0)
    for mine, keras_map in zip(our_maps, keras_maps):
        np.testing.assert_allclose(mine, keras_map, rtol=1e-4, atol=1e-5)
