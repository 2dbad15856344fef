"""Model presets, by name: a registry, as timm's (`list_models("res*")`, `get(name, input_shape=...,
num_classes=...)`). Each preset takes the input shape and the class count (defaults: Fashion-MNIST,
28x28x1 and 10 classes) and `augmentation`, layers placed right after the input.

    >>> from convnet import zoo
    >>> zoo.list_models()
    ['fast', 'homl', 'lenet5', 'mobilenet', 'resnet20', 'seed']
    >>> zoo.get("seed").count_params()
    1406218
    >>> zoo.get("resnet20", input_shape=(32, 32, 3)).count_trainable_params()
    269722

The presets: `seed` (the seed's CNN), `homl` (the book's variant), `lenet5`, `resnet20` (He et al. 2016's
CIFAR ResNet, a functional graph), `mobilenet` (a small MobileNet of depthwise separable blocks) and `fast`
(designed for time to accuracy on Fashion-MNIST; `convnet train --model fast` trains it with the "fast"
recipe of `convnet.runs.config.RECIPES`). Stacks are `Sequential`; a network that branches is a `Model`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convnet import layers as L
from convnet._internal.checks import check_int, describe, is_int
from convnet._internal.registry import Registry
from convnet.layers.node import SymbolicTensor
from convnet.models.model import Model
from convnet.models.sequential import Sequential

__all__ = ["list_models", "get", "get_model", "seed_trunk", "seed_cnn", "homl_cnn", "lenet5", "resnet20",
           "mobilenet", "fast", "MODELS"]


def check_image_shape(input_shape: Any) -> tuple[int, int, int]:
    """`input_shape` as (height, width, channels), three positive ints.

    Raises:
        TypeError / ValueError: anything else, naming `input_shape` and what was received.
    """
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"`input_shape` must be a tuple (height, width, channels), e.g. (28, 28, 1). "
                        f"Received: input_shape={describe(input_shape)}")
    if len(input_shape) != 3 or not all(is_int(size) and size >= 1 for size in input_shape):
        raise ValueError(f"`input_shape` must be three positive ints (height, width, channels), without the batch "
                         f"axis, e.g. (28, 28, 1). Received: input_shape={tuple(input_shape)!r}")
    height, width, channels = (int(size) for size in input_shape)
    return height, width, channels


def seed_trunk(input_shape: Sequence[int], augmentation: Sequence[L.Layer] = ()) -> list[L.Layer]:
    """The seed's convolutional part, from its Input to its Flatten: 64 7x7 filters, then two blocks of two
    3x3 convolutions, each block doubling the filters after a 2x2 max pool; `augmentation` layers go right
    after the Input. The presets below add their heads; experiments build variants on it."""
    return [
        L.InputLayer(shape=input_shape),
        *augmentation,
        L.Conv2D(64, 7, activation="relu", padding="same"),
        L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu", padding="same"),
        L.Conv2D(128, 3, activation="relu", padding="same"),
        L.MaxPooling2D(2),
        L.Conv2D(256, 3, activation="relu", padding="same"),
        L.Conv2D(256, 3, activation="relu", padding="same"),
        L.MaxPooling2D(2),
        L.Flatten(),
    ]


def seed_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
             augmentation: Sequence[L.Layer] = ()) -> Sequential:
    """The seed's Fashion-MNIST CNN, exactly: 1,406,218 parameters for 28x28x1 inputs and 10 classes."""
    input_shape = check_image_shape(input_shape)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    return Sequential([*seed_trunk(input_shape, augmentation),
                       L.Dense(128, activation="relu"),
                       L.Dropout(0.5),
                       L.Dense(num_classes, activation="softmax")], name="seed_cnn")


def homl_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
             augmentation: Sequence[L.Layer] = ()) -> Sequential:
    """The book's version of the seed CNN, with one more Dense(64) + Dropout(0.5): 1,413,834 parameters."""
    input_shape = check_image_shape(input_shape)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    return Sequential([*seed_trunk(input_shape, augmentation),
                       L.Dense(128, activation="relu"),
                       L.Dropout(0.5),
                       L.Dense(64, activation="relu"),
                       L.Dropout(0.5),
                       L.Dense(num_classes, activation="softmax")], name="homl_cnn")


def lenet5(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
           augmentation: Sequence[L.Layer] = ()) -> Sequential:
    """LeNet-5 (LeCun et al., 1998) in its common modern form: tanh, average pooling, a softmax output
    instead of RBF units; SAME padding in C1 stands in for the original 32x32 input. 61,706 parameters."""
    input_shape = check_image_shape(input_shape)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    return Sequential([
        L.InputLayer(shape=input_shape),
        *augmentation,
        L.Conv2D(6, 5, activation="tanh", padding="same", name="c1"),
        L.AveragePooling2D(2, name="s2"),
        L.Conv2D(16, 5, activation="tanh", name="c3"),
        L.AveragePooling2D(2, name="s4"),
        L.Conv2D(120, 5, activation="tanh", name="c5"),
        L.Flatten(),
        L.Dense(84, activation="tanh", name="f6"),
        L.Dense(num_classes, activation="softmax", name="output"),
    ], name="lenet5")


def _basic_block(x: SymbolicTensor, filters: int, strides: int, name: str) -> SymbolicTensor:
    """He et al.'s basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU. Where the block
    halves the size and doubles the filters, the shortcut is option A (section 4.2): the identity taken at
    stride 2 (a 1x1 max pool), its new channels zeros, so the shortcuts add no parameters."""
    y = L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, kernel_initializer="he_normal",
                 name=f"{name}_conv1")(x)
    y = L.ReLU(name=f"{name}_relu1")(L.BatchNormalization(name=f"{name}_bn1")(y))
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv2")(y)
    y = L.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if strides != 1:
        assert filters == 2 * x.shape[-1], "option A pads the channels to exactly twice their number"
        shortcut = L.MaxPooling2D(1, strides=strides, name=f"{name}_subsample")(x)  # x[:, ::2, ::2, :]
        # Keras has no layer that pads channels: x - x gives the zeros, the same shape as x (and no Lambda,
        # so the model saves as data)
        zeros = L.Subtract(name=f"{name}_zeros")([shortcut, shortcut])
        shortcut = L.Concatenate(name=f"{name}_pad")([shortcut, zeros])  # (N, H/2, W/2, 2C): [x, 0]
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, y]))


def resnet20(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
             augmentation: Sequence[L.Layer] = ()) -> Model:
    """ResNet-20 for CIFAR (He et al., "Deep Residual Learning for Image Recognition", 2016, section 4.2):
    a 3x3 convolution with 16 filters, then three stages of three basic blocks with 16, 32 and 64 filters
    (each later stage starts at stride 2), global average pooling and the classifier; batch normalisation
    after every convolution, He-normal weights, and the paper's option A shortcuts (identity, zero-padded
    channels), so 19 weighted layers plus the classifier and 269,722 trainable parameters for 32x32x3 inputs
    and 10 classes (the paper's 0.27 M; count_params() adds the 1,376 moving statistics of batch
    normalisation, as Keras counts them). The spatial size halves twice: 32 -> 16 -> 8, 28 -> 14 -> 7."""
    input_shape = check_image_shape(input_shape)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    inputs = L.Input(shape=input_shape, name="image")
    x = inputs
    for layer in augmentation:
        x = layer(x)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem_conv")(x)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, strides, name=f"stage{stage}_block{block}")
    x = L.GlobalAveragePooling2D(name="pool")(x)  # (N, 64)
    outputs = L.Dense(num_classes, activation="softmax", name="predictions")(x)
    return Model(inputs, outputs, name="resnet20")


def mobilenet(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
              augmentation: Sequence[L.Layer] = ()) -> Sequential:
    """A small MobileNet (Howard et al., 2017) for 28x28 and 32x32 images: a 3x3 convolution with 32 filters
    at stride 1 (the original's stride 2 is for 224x224), then five depthwise separable blocks (a 3x3
    depthwise convolution, BN, ReLU6, a 1x1 pointwise convolution, BN, ReLU6) with 64, 128, 128, 256 and 256
    filters, the 128 and first 256 at stride 2, global average pooling and the classifier. Keras's layer
    names (conv1, conv_dw_1, conv_pw_1_bn, ...). 136,202 trainable parameters for 28x28x1 and 10 classes
    (count_params() adds BN's 2,944 moving statistics), 12.2 M multiply-adds per image."""
    input_shape = check_image_shape(input_shape)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    stack: list[L.Layer] = [
        L.InputLayer(shape=input_shape),
        *augmentation,
        L.Conv2D(32, 3, padding="same", use_bias=False, name="conv1"),
        L.BatchNormalization(name="conv1_bn"),
        L.ReLU(6.0, name="conv1_relu"),
    ]
    for block, (filters, strides) in enumerate(((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)), start=1):
        stack += [
            L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"conv_dw_{block}"),
            L.BatchNormalization(name=f"conv_dw_{block}_bn"),
            L.ReLU(6.0, name=f"conv_dw_{block}_relu"),
            L.Conv2D(filters, 1, use_bias=False, name=f"conv_pw_{block}"),
            L.BatchNormalization(name=f"conv_pw_{block}_bn"),
            L.ReLU(6.0, name=f"conv_pw_{block}_relu"),
        ]
    stack += [L.GlobalAveragePooling2D(name="global_average_pooling"),
              L.Dense(num_classes, activation="softmax", name="predictions")]
    return Sequential(stack, name="mobilenet")


def fast(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
         augmentation: Sequence[L.Layer] = ()) -> Sequential:
    """A small CNN designed for time to accuracy on Fashion-MNIST on a CPU (`convnet train --model fast` trains
    it with the "fast" recipe: 5 epochs of Nadam with a one-cycle schedule, batch 256, label smoothing, flips):
    3x3 convolutions with 32, 64 and 128 filters, a 2x2 max pool after the first two (28 -> 14 -> 7), batch
    normalisation after the second and third, and a linear classifier on the 7x7x128 features. 155,594
    trainable parameters for 28x28x1 and 10 classes (count_params() adds BN's 384 moving statistics), 7.5 M
    multiply-adds per image. Measured: 92.64% test accuracy (median of 3 seeds) after 68 s of training on 2
    CPU cores (benchmarks/fast_preset.py; the README has the table).

    Why this shape (each choice from single runs on that CPU): the 28x28 layer costs the most per filter, so it
    is narrow and has no batch normalisation (on one input channel BN gains little, and convnet's BN cost a
    third of the training step there); the 7x7x128 features go to the classifier without a last pool (92.5%
    against 92.2% after 6 epochs, at the same cost); BN's momentum is 0.9 rather than Keras's 0.99, so that the
    moving statistics keep up within a run of about a thousand steps (with 0.99, in two runs of a variant, the
    test accuracy after the first epoch was 12% and 34% while the training accuracy was 70% and 79%).
    """
    input_shape = check_image_shape(input_shape)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    return Sequential([
        L.InputLayer(shape=input_shape),
        *augmentation,
        L.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer="he_normal", name="conv1"),
        L.MaxPooling2D(2, name="pool1"),  # (N, H/2, W/2, 32)
        L.Conv2D(64, 3, padding="same", use_bias=False, name="conv2"),
        L.BatchNormalization(momentum=0.9, name="bn2"),
        L.ReLU(name="relu2"),
        L.MaxPooling2D(2, name="pool2"),  # (N, H/4, W/4, 64)
        L.Conv2D(128, 3, padding="same", use_bias=False, name="conv3"),
        L.BatchNormalization(momentum=0.9, name="bn3"),
        L.ReLU(name="relu3"),
        L.Flatten(name="flatten"),  # (N, H/4 * W/4 * 128)
        L.Dense(num_classes, activation="softmax", name="predictions"),
    ], name="fast")


MODELS: Registry[Callable[..., Model]] = Registry("model")
MODELS.register("seed", seed_cnn)
MODELS.register("homl", homl_cnn)
MODELS.register("lenet5", lenet5)
MODELS.register("resnet20", resnet20)
MODELS.register("mobilenet", mobilenet)
MODELS.register("fast", fast)


def list_models(pattern: str = "*") -> list[str]:
    """The preset names matching a shell-style `pattern` ("res*"), sorted."""
    return MODELS.names(pattern)


def get(name: str, input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, **kwargs: Any) -> Model:
    """A fresh preset by name (see `list_models()`), built for `input_shape` (height, width, channels) and
    `num_classes`; kwargs: `augmentation` (layers placed right after the input, such as
    convnet.augment.RandomFlip).

        >>> get("lenet5", input_shape=(32, 32, 3), num_classes=100).output_shape
        (None, 100)

    Raises:
        ValueError: an unknown name (with close matches), a bad input shape or class count.
        TypeError: a name that is not a string, an argument the presets do not take.
    """
    build = MODELS.get(name, argument="model")
    unknown = sorted(set(kwargs) - {"augmentation"})
    if unknown:
        raise TypeError(f"zoo.get() takes input_shape, num_classes and augmentation; received {', '.join(unknown)}")
    return build(input_shape=input_shape, num_classes=num_classes, **kwargs)


get_model = get  # the older name
