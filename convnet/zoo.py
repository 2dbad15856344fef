"""Model presets, by name: the seed's Fashion-MNIST CNN, the book's variant, and LeNet-5.

    >>> from convnet import zoo
    >>> zoo.list_models()
    ['homl', 'lenet5', 'seed']
    >>> zoo.seed_cnn().count_params()
    1406218
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convnet import layers as L
from convnet._internal.checks import check_int
from convnet._internal.registry import Registry
from convnet.models.sequential import Sequential


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
    num_classes = check_int("num_classes", num_classes, minimum=2)
    return Sequential([*seed_trunk(input_shape, augmentation),
                       L.Dense(128, activation="relu"),
                       L.Dropout(0.5),
                       L.Dense(num_classes, activation="softmax")], name="seed_cnn")


def homl_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
             augmentation: Sequence[L.Layer] = ()) -> Sequential:
    """The book's version of the seed CNN, with one more Dense(64) + Dropout(0.5): 1,413,834 parameters."""
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


MODELS: Registry[Callable[..., Sequential]] = Registry("model")
MODELS.register("seed", seed_cnn)
MODELS.register("homl", homl_cnn)
MODELS.register("lenet5", lenet5)


def list_models(pattern: str = "*") -> list[str]:
    """The preset names matching a shell-style `pattern` ("*cnn*"), sorted."""
    return MODELS.names(pattern)


def get_model(name: str, **kwargs: Any) -> Sequential:
    """A fresh preset by name ("seed", "homl", "lenet5"); kwargs: input_shape, num_classes, augmentation (layers
    placed right after the input, such as convnet.augment.RandomFlip).

    Raises:
        ValueError: an unknown name (with close matches).
    """
    return MODELS.get(name, argument="model")(**kwargs)
