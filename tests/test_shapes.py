"""The synthetic shapes dataset: determinism, content, registry and `convnet train --dataset shapes`."""
from __future__ import annotations

import doctest
import importlib
import json
import time

import numpy as np
import pytest

from convnet import datasets
from convnet.cli import main
from convnet.datasets.shapes import CLASS_NAMES
from convnet.runs import TrainConfig, load_split

shapes = datasets.shapes


@pytest.fixture(scope="module")
def small():
    return shapes.load_data(train_size=700, test_size=140)


def test_attributes_and_registry():
    assert shapes.name == "shapes" and shapes.num_classes == len(CLASS_NAMES) == 7
    assert shapes.input_shape == (28, 28, 1) and shapes.class_names == CLASS_NAMES
    assert (shapes.train_size, shapes.test_size) == (12000, 2000)
    assert datasets.get_dataset("shapes") is shapes and datasets.get_dataset("SHAPES") is shapes
    assert "shapes" in datasets.list_datasets() and datasets.list_datasets("sha*") == ["shapes"]
    assert repr(shapes) == ("ShapesDataset('shapes': 7 classes, 12000 train and 2000 test images of 28x28, "
                            "drawn on demand)")


def test_arrays(small):
    (x_train, y_train), (x_test, y_test) = small
    assert x_train.shape == (700, 28, 28) and x_test.shape == (140, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8 and y_test.shape == (140,)
    assert np.bincount(y_train).tolist() == [100] * 7 and np.bincount(y_test).tolist() == [20] * 7  # balanced
    assert x_train.reshape(700, -1).max(axis=1).min() > 100  # every image holds a bright shape
    assert np.median(x_train) < 25  # on a dark, lightly noisy background
    assert 0 < (x_train < 3).mean() < 0.9  # the noise is light: about half the background stays near black


def test_same_seed_same_arrays_and_different_seed_differs(small):
    (x_train, y_train), (x_test, _) = small
    (again, labels), (again_test, _) = shapes.load_data(train_size=700, test_size=140, seed=0)
    np.testing.assert_array_equal(again, x_train)
    np.testing.assert_array_equal(labels, y_train)
    np.testing.assert_array_equal(again_test, x_test)
    (other, other_labels), _ = shapes.load_data(train_size=700, test_size=140, seed=1)
    assert not np.array_equal(other, x_train) and not np.array_equal(other_labels, y_train)
    _, (bigger_train_test, _) = shapes.load_data(train_size=50, test_size=140)
    np.testing.assert_array_equal(bigger_train_test, x_test)  # the test split does not depend on train_size


def test_bars_are_horizontal_and_vertical(small):
    (x_train, y_train), _ = small

    def extents(images):  # (height, width) of the pixels brighter than the noise, per image
        mask = images > 60
        rows, cols = mask.any(axis=2), mask.any(axis=1)
        return (np.array([np.ptp(np.flatnonzero(r)) for r in rows]),
                np.array([np.ptp(np.flatnonzero(c)) for c in cols]))

    h, w = extents(x_train[y_train == CLASS_NAMES.index("horizontal bar")])
    assert (w > 2 * h).all()
    h, w = extents(x_train[y_train == CLASS_NAMES.index("vertical bar")])
    assert (h > 2 * w).all()
    h, w = extents(x_train[y_train == CLASS_NAMES.index("circle")])
    assert (abs(h - w) <= 2).all()


@pytest.mark.parametrize("size", [12, 20, 64])
def test_any_image_size_from_12(size):
    (x, y), _ = shapes.load_data(image_size=size, train_size=70, test_size=0)
    assert x.shape == (70, size, size) and x.reshape(70, -1).max(axis=1).min() > 100
    for label in range(7):  # every shape stays inside the frame: the border rows and columns stay dark
        images = x[y == label].astype(int)
        assert np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]]).mean() < 30


def test_class_subsets_number_labels_in_the_given_order():
    (x, y), _ = shapes.load_data(train_size=40, test_size=0, classes=("vertical bar", "circle"))
    assert x.shape == (40, 28, 28) and np.bincount(y).tolist() == [20, 20]
    bright = x > 60
    tall = bright.any(axis=2).sum(axis=1) > 2 * bright.any(axis=1).sum(axis=1)  # height > 2 * width
    assert tall[y == 0].all() and not tall[y == 1].any()  # label 0 is the vertical bar, 1 the circle


def test_fast():
    started = time.perf_counter()
    shapes.load_data(train_size=6000, test_size=1000)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("kwargs, error, message", [
    ({"image_size": 11}, ValueError, r"`image_size` must be >= 12\. Received: image_size=11"),
    ({"train_size": -1}, ValueError, r"`train_size` must be >= 0\. Received: train_size=-1"),
    ({"seed": 1.5}, TypeError, r"`seed` must be an integer\. Received: seed=1\.5 \(type float\)"),
    ({"classes": ("circle", "sqare")}, ValueError,
     r"`classes`: unknown shape class 'sqare'\. Did you mean 'square'\?"),
    ({"classes": ("circle",)}, ValueError, r"`classes` must hold at least 2 distinct names"),
    ({"classes": "circle"}, TypeError, r"`classes` must be a sequence of class names"),
])
def test_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        shapes.load_data(**kwargs)


def test_data_dir_is_ignored_but_checked(tmp_path):
    (x, _), _ = shapes.load_data(str(tmp_path), train_size=7, test_size=0)
    assert x.shape == (7, 28, 28)
    with pytest.raises(TypeError, match=r"`data_dir` must be a path or None .* load_data\(image_size=32\)"):
        shapes.load_data(32)


def test_load_split_holds_out_ten_percent():
    x_train, _, x_val, _, x_test, _ = load_split(TrainConfig(dataset="shapes", test_limit=100))
    assert x_train.shape == (10800, 28, 28, 1) and x_val.shape == (1200, 28, 28, 1)
    assert x_test.shape == (100, 28, 28, 1) and x_train.dtype == np.float32 and 0 <= x_train.min() < x_train.max() <= 1


def test_convnet_train_on_shapes(tmp_path, capsys):
    code = main(["train", "--dataset", "shapes", "--model", "lenet5", "--limit", "700", "--epochs", "2",
                 "--test-limit", "300", "--batch-size", "32", "--out", str(tmp_path), "--verbose", "0"])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["val_images"], metrics["test_images"]) == (630, 70, 300)
    assert metrics["test_accuracy"] > 0.3  # 7 classes: chance is 14%
    assert "Test accuracy" in capsys.readouterr().out


def test_doctests():
    module = importlib.import_module("convnet.datasets.shapes")  # the attribute `datasets.shapes` is the dataset
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
