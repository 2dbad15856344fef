"""Shared fixtures: seeded CPU runs, a small Fashion-MNIST subset, tiny models."""
from __future__ import annotations

import importlib.util
import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

# CI sets CONVNET_DATA=../shared/data, relative to the checkout; tests run commands in other folders.
if os.environ.get("CONVNET_DATA"):
    os.environ["CONVNET_DATA"] = os.path.abspath(os.environ["CONVNET_DATA"])

import convnet
from convnet import layers

_FASHION: dict = {}  # "data", or "missing": why it could not be had (tried once per session)


def fashion_or_skip():
    """Fashion-MNIST, ((x_train, y_train), (x_test, y_test)) uint8, found as `convnet train` finds it
    ($CONVNET_DATA, then the cache, then a download). The calling test is skipped, with the loader's reason,
    when CONVNET_DATA is not set or none of those has the files."""
    if not os.environ.get("CONVNET_DATA"):
        pytest.skip("CONVNET_DATA is not set (point it at the folder holding fashion-mnist/)")
    if not _FASHION:
        from convnet.datasets import DatasetNotFoundError, fashion_mnist
        try:
            _FASHION["data"] = fashion_mnist.load_data()
        except DatasetNotFoundError as error:
            _FASHION["missing"] = str(error).splitlines()[0]
    if "missing" in _FASHION:
        pytest.skip(f"Fashion-MNIST is not available: {_FASHION['missing']}")
    return _FASHION["data"]


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST as `fashion_or_skip` returns it."""
    return fashion_or_skip()


@pytest.fixture(scope="session")
def fashion_small(fashion):
    """3000 training and 1000 test images scaled to [0, 1] with a channel axis."""
    (x_train, y_train), (x_test, y_test) = fashion
    scale = lambda x: (x.astype(np.float32) / 255)[..., None]
    return (scale(x_train[:3000]), y_train[:3000].astype(np.int64)), (scale(x_test[:1000]), y_test[:1000].astype(np.int64))


def tiny_cnn(input_shape=(28, 28, 1), classes=10) -> convnet.Sequential:
    """A small CNN that trains in seconds on a CPU."""
    return convnet.Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dropout(0.25),
        layers.Dense(classes, activation="softmax"),
    ])


@pytest.fixture
def synthetic():
    """A learnable 3-class problem: which third of a 12x12 image holds a bright bar."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    images = rng.normal(0, 0.1, (600, 12, 12, 1)).astype(np.float32)
    for image, label in zip(images, labels):
        image[:, 4 * label:4 * label + 4, 0] += 1.0
    return images, labels


@pytest.fixture(scope="module")
def keras():
    """Real Keras 3, for the `-m keras` tests; skips where it is not installed."""
    if "KERAS_BACKEND" not in os.environ:  # Keras defaults to TensorFlow; use whichever backend is installed
        for backend in ("tensorflow", "jax", "torch"):
            if importlib.util.find_spec(backend) is not None:
                os.environ["KERAS_BACKEND"] = backend
                break
    module = pytest.importorskip("keras")
    if not module.__version__.startswith("3."):
        pytest.skip(f"needs Keras 3, found {module.__version__}")
    return module
