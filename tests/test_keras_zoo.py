"""The zoo against real Keras 3 (`-m keras`; skipped unless Keras imports): each preset written again here
with Keras's own layers, one small builder per preset mirroring convnet/zoo.py, has the same layers, the same
`count_params()`, the same weight shapes in the same order, and gives the same predictions once its weights
(batch normalisation's moving statistics included, made non-trivial) are copied layer by layer, by name.

Run: KERAS_BACKEND=tensorflow python -m pytest tests/test_keras_zoo.py -m keras -o addopts=""
"""
from __future__ import annotations

import numpy as np
import pytest

from convnet import zoo

pytestmark = pytest.mark.keras


def seed_trunk(keras, input_shape):
    L = keras.layers
    return [keras.Input(shape=input_shape),
            L.Conv2D(64, 7, activation="relu", padding="same"), L.MaxPooling2D(2),
            L.Conv2D(128, 3, activation="relu", padding="same"), L.Conv2D(128, 3, activation="relu", padding="same"),
            L.MaxPooling2D(2),
            L.Conv2D(256, 3, activation="relu", padding="same"), L.Conv2D(256, 3, activation="relu", padding="same"),
            L.MaxPooling2D(2), L.Flatten()]


def keras_seed(keras, input_shape, num_classes):
    L = keras.layers
    return keras.Sequential([*seed_trunk(keras, input_shape), L.Dense(128, activation="relu"), L.Dropout(0.5),
                             L.Dense(num_classes, activation="softmax")])


def keras_homl(keras, input_shape, num_classes):
    L = keras.layers
    return keras.Sequential([*seed_trunk(keras, input_shape), L.Dense(128, activation="relu"), L.Dropout(0.5),
                             L.Dense(64, activation="relu"), L.Dropout(0.5),
                             L.Dense(num_classes, activation="softmax")])


def keras_lenet5(keras, input_shape, num_classes):
    L = keras.layers
    return keras.Sequential([
        keras.Input(shape=input_shape),
        L.Conv2D(6, 5, activation="tanh", padding="same", name="c1"), L.AveragePooling2D(2, name="s2"),
        L.Conv2D(16, 5, activation="tanh", name="c3"), L.AveragePooling2D(2, name="s4"),
        L.Conv2D(120, 5, activation="tanh", name="c5"), L.Flatten(),
        L.Dense(84, activation="tanh", name="f6"), L.Dense(num_classes, activation="softmax", name="output")])


def keras_resnet20(keras, input_shape, num_classes):
    """He et al.'s CIFAR ResNet-20 with option A shortcuts, in Keras's functional API."""
    L = keras.layers

    def conv(filters, strides, name):
        return L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=name)

    inputs = keras.Input(shape=input_shape, name="image")
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(conv(16, 1, "stem_conv")(inputs)))
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            name, strides = f"stage{stage}_block{block}", 2 if stage > 1 and block == 1 else 1
            y = L.ReLU(name=f"{name}_relu1")(L.BatchNormalization(name=f"{name}_bn1")(
                conv(filters, strides, f"{name}_conv1")(x)))
            y = L.BatchNormalization(name=f"{name}_bn2")(conv(filters, 1, f"{name}_conv2")(y))
            shortcut = x
            if strides == 2:
                shortcut = L.MaxPooling2D(1, strides=2, name=f"{name}_subsample")(x)
                shortcut = L.Concatenate(name=f"{name}_pad")(
                    [shortcut, L.Subtract(name=f"{name}_zeros")([shortcut, shortcut])])
            x = L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, y]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="resnet20")


def keras_mobilenet(keras, input_shape, num_classes):
    L = keras.layers
    stack = [keras.Input(shape=input_shape), L.Conv2D(32, 3, padding="same", use_bias=False, name="conv1"),
             L.BatchNormalization(name="conv1_bn"), L.ReLU(6.0, name="conv1_relu")]
    for block, (filters, strides) in enumerate(((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)), start=1):
        stack += [L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"conv_dw_{block}"),
                  L.BatchNormalization(name=f"conv_dw_{block}_bn"), L.ReLU(6.0, name=f"conv_dw_{block}_relu"),
                  L.Conv2D(filters, 1, use_bias=False, name=f"conv_pw_{block}"),
                  L.BatchNormalization(name=f"conv_pw_{block}_bn"), L.ReLU(6.0, name=f"conv_pw_{block}_relu")]
    stack += [L.GlobalAveragePooling2D(name="global_average_pooling"),
              L.Dense(num_classes, activation="softmax", name="predictions")]
    return keras.Sequential(stack, name="mobilenet")


def keras_fast(keras, input_shape, num_classes):
    L = keras.layers
    return keras.Sequential([
        keras.Input(shape=input_shape),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv1"), L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(64, 3, padding="same", use_bias=False, name="conv2"), L.BatchNormalization(momentum=0.9, name="bn2"),
        L.ReLU(name="relu2"), L.MaxPooling2D(2, name="pool2"),
        L.Conv2D(128, 3, padding="same", use_bias=False, name="conv3"),
        L.BatchNormalization(momentum=0.9, name="bn3"), L.ReLU(name="relu3"),
        L.Flatten(name="flatten"), L.Dense(num_classes, activation="softmax", name="predictions")], name="fast")


KERAS_BUILDERS = {"seed": keras_seed, "homl": keras_homl, "lenet5": keras_lenet5, "resnet20": keras_resnet20,
                  "mobilenet": keras_mobilenet, "fast": keras_fast}
SHAPES = [((28, 28, 1), 10), ((32, 32, 3), 100)]


def test_every_preset_has_a_keras_builder():
    assert sorted(KERAS_BUILDERS) == zoo.list_models()  # a new preset adds its Keras twin here


def weighted(model):
    return [layer for layer in model.layers if layer.get_weights()]


@pytest.mark.parametrize("input_shape, num_classes", SHAPES)
@pytest.mark.parametrize("name", zoo.list_models())
def test_parameter_counts_and_weight_shapes_equal_keras(keras, name, input_shape, num_classes):
    theirs = KERAS_BUILDERS[name](keras, input_shape, num_classes)
    ours = zoo.get(name, input_shape=input_shape, num_classes=num_classes)
    assert ours.count_params() == theirs.count_params()
    assert ours.count_trainable_params() == sum(int(np.prod(w.shape)) for w in theirs.trainable_weights)
    assert [w.shape for w in ours.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
    assert [type(layer).__name__ for layer in weighted(ours)] == [type(layer).__name__ for layer in weighted(theirs)]


@pytest.mark.parametrize("name", zoo.list_models())
def test_same_predictions_after_copying_weights_by_layer(keras, name):
    """Keras's initial weights with random BN statistics, copied into convnet layer by layer (by name where
    the preset names its layers, else in order: a Sequential's default names differ between the two)."""
    input_shape, num_classes = (32, 32, 3), 10
    theirs = KERAS_BUILDERS[name](keras, input_shape, num_classes)
    ours = zoo.get(name, input_shape=input_shape, num_classes=num_classes)
    rng = np.random.default_rng(0)
    for layer in weighted(theirs):
        if type(layer).__name__ == "BatchNormalization":
            channels = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels),
                               rng.normal(0, 0.1, channels), rng.uniform(0.5, 1.5, channels)])
    named = name in ("resnet20", "mobilenet", "fast", "lenet5")
    pairs = ([(ours.get_layer(layer.name), layer) for layer in weighted(theirs)] if named
             else list(zip(weighted(ours), weighted(theirs))))
    assert len(pairs) == len(weighted(ours))
    for mine, keras_layer in pairs:
        mine.set_weights(keras_layer.get_weights())
    x = rng.random((4, *input_shape), dtype=np.float32)
    expected = np.asarray(theirs.predict(x, verbose=0))
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, atol=2e-5)
