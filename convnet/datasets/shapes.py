"""A synthetic shapes dataset, drawn offline and deterministically with NumPy: no files, no download.

Seven classes of white-on-black line drawings (outlined square, circle and triangle; a plus-shaped cross,
a diagonal cross, a horizontal and a vertical bar), each with a random size, position, stroke width and
brightness, anti-aliased, with light Gaussian noise. The same seed gives the same arrays on every machine.

    >>> from convnet.datasets import shapes
    >>> shapes.name, shapes.num_classes, shapes.input_shape
    ('shapes', 7, (28, 28, 1))
    >>> (x_train, y_train), (x_test, y_test) = shapes.load_data(train_size=70, test_size=14)
    >>> x_train.shape, x_train.dtype, y_train.dtype, sorted(set(y_test.tolist()))
    ((70, 28, 28), dtype('uint8'), dtype('uint8'), [0, 1, 2, 3, 4, 5, 6])

It is registered with the other datasets (`convnet.datasets.get_dataset("shapes")`), so
`convnet train --dataset shapes` trains on it; `data_dir` is accepted and ignored, as nothing is read.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convnet._internal.checks import check_int, describe, unknown_name
from convnet.datasets.base import ImageClassDataset

__all__ = ["ShapesDataset", "CLASS_NAMES", "draw_shapes"]

CLASS_NAMES = ("square", "circle", "triangle", "cross", "diagonal cross", "horizontal bar", "vertical bar")
_OUTLINES = {"square", "circle", "triangle"}  # drawn as a stroke along the boundary; the others are filled
MIN_IMAGE_SIZE = 12

# Ranges of the random drawing parameters; sizes are for a 28x28 image and scale with the image side.
SIZE = (0.22, 0.36)  # half-extent of a shape (circumradius, half side, arm length), as a fraction of the side
STROKE = (1.6, 3.2)  # stroke width in pixels at 28x28 (at least 1.2 px at any size)
BRIGHTNESS = (0.55, 1.0)  # peak intensity, as a fraction of 255
NOISE = 0.04  # standard deviation of the additive Gaussian noise, as a fraction of 255


def _box(dx: np.ndarray, dy: np.ndarray, hx: np.ndarray, hy: np.ndarray) -> np.ndarray:
    """Signed distance to an axis-aligned box of half-sizes (hx, hy) centred at the origin (Quilez's box SDF)."""
    qx, qy = np.abs(dx) - hx, np.abs(dy) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _distance(name: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) to shape `name` of half-extent r and half-stroke w,
    centred at the origin; dx, dy are (n, H, W) offsets of pixel centres, r and w are (n, 1, 1)."""
    if name == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.8 * r  # half side 0.8 r: about the circle's area
    if name == "circle":
        return np.hypot(dx, dy) - r
    if name == "triangle":  # equilateral, apex up; the max over the three edges' outward normals
        inradius = r / 2
        down = dy
        left = -0.8660254 * dx - 0.5 * dy
        right = 0.8660254 * dx - 0.5 * dy
        return np.maximum(np.maximum(down, left), right) - inradius
    if name == "diagonal cross":  # the cross in coordinates turned by 45 degrees
        dx, dy = (dx + dy) * 0.70710678, (dy - dx) * 0.70710678
        name = "cross"
    if name == "cross":
        return np.minimum(_box(dx, dy, r, w), _box(dx, dy, w, r))
    if name == "horizontal bar":
        return _box(dx, dy, r, w)
    if name == "vertical bar":
        return _box(dx, dy, w, r)
    raise AssertionError(name)


def draw_shapes(labels: np.ndarray, image_size: int, rng: np.random.Generator,
                classes: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Draw one random shape per label: uint8 images (N, image_size, image_size).

    Args:
        labels: (N,) ints indexing `classes`.
        image_size: the side of each image, >= 12.
        rng: the generator all randomness comes from (sizes, positions, strokes, brightness, noise).
        classes: the class name of each label value.
    """
    n, side = len(labels), image_size
    scale = side / 28
    r = rng.uniform(*SIZE, n) * side  # (N,)
    stroke = np.maximum(rng.uniform(*STROKE, n) * scale, 1.2)  # (N,)
    margin = r + stroke / 2
    free = np.maximum(side - 1 - 2 * margin, 0)  # room left for the centre to move in
    cx = margin + rng.uniform(0, 1, n) * free
    cy = margin + rng.uniform(0, 1, n) * free
    brightness = rng.uniform(*BRIGHTNESS, n)
    coords = np.arange(side, dtype=np.float32)
    images = np.zeros((n, side, side), np.float32)
    for label, name in enumerate(classes):
        index = np.flatnonzero(labels == label)
        if index.size == 0:
            continue
        column = lambda v, index=index: v[index, None, None].astype(np.float32)  # (N,) -> (k, 1, 1)
        dx = coords[None, None, :] - column(cx)  # (k, 1, W)
        dy = coords[None, :, None] - column(cy)  # (k, H, 1)
        dx, dy = np.broadcast_arrays(dx, dy)  # (k, H, W) each
        if name in _OUTLINES:
            d = np.abs(_distance(name, dx, dy, column(r), column(stroke) / 2)) - column(stroke) / 2
        else:
            d = _distance(name, dx, dy, column(r), column(stroke) * 0.75)  # filled: 1.5 strokes wide
        images[index] = np.clip(0.5 - d, 0, 1) * column(brightness)  # 1-pixel anti-aliased edge
    images += rng.standard_normal(images.shape, dtype=np.float32) * NOISE
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False, repr=False)  # eq=False: hashable by identity, as a registry entry
class ShapesDataset(ImageClassDataset):
    """The synthetic shapes dataset as a registry entry: `name`, `class_names`, `num_classes`, `input_shape`
    and `load_data`, like the IDX datasets.

    Default sizes: 12,000 training and 2,000 test images (Fashion-MNIST's 60,000 / 10,000 would make a
    CPU run of the seed CNN five times longer for a problem this easy).
    """

    name: str = "shapes"
    class_names: tuple[str, ...] = CLASS_NAMES
    train_size: int = 12000
    test_size: int = 2000
    image_size: tuple[int, int] = (28, 28)

    repr_note = ", drawn on demand"

    def load_data(self, data_dir: Any = None, *, image_size: int = 28, train_size: int | None = None,
                  test_size: int | None = None, seed: int = 0, classes: Sequence[str] | None = None
                  ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Draw the train and test splits, as `keras.datasets.<name>.load_data()`.

        Args:
            data_dir: ignored (nothing is read); accepted so that every registered dataset loads alike.
            image_size: the side of the square images, >= 12.
            train_size: training images (default 12,000).
            test_size: test images (default 2,000).
            seed: the same seed gives the same arrays; the test split does not depend on `train_size`.
            classes: a subset of `class_names`, in the order that labels should number them.

        Returns:
            ((x_train, y_train), (x_test, y_test)): images uint8 (N, image_size, image_size), labels uint8
            (N,), each class equally often (to within one image).

        Raises:
            TypeError / ValueError: a bad size, seed or class name (with close-match suggestions).
        """
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"`data_dir` must be a path or None (and is ignored: shapes are drawn, not read); "
                            f"pass the other settings by keyword, e.g. load_data(image_size=32). "
                            f"Received: data_dir={describe(data_dir)}")
        image_size = check_int("image_size", image_size, minimum=MIN_IMAGE_SIZE)
        train_size = check_int("train_size", self.train_size if train_size is None else train_size, minimum=0)
        test_size = check_int("test_size", self.test_size if test_size is None else test_size, minimum=0)
        seed = check_int("seed", seed, minimum=0)
        names = self.class_names if classes is None else self._check_classes(classes)
        splits = []
        for split, size in enumerate((train_size, test_size)):
            rng = np.random.default_rng([seed, split])  # one stream per split
            labels = rng.permutation(np.arange(size) % len(names)).astype(np.uint8)  # balanced
            splits.append((draw_shapes(labels, image_size, rng, names), labels))
        return splits[0], splits[1]

    def _check_classes(self, classes: Sequence[str]) -> tuple[str, ...]:
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise TypeError(f"`classes` must be a sequence of class names. Received: classes={describe(classes)}")
        for name in classes:
            if name not in self.class_names:
                raise unknown_name("shape class", name, self.class_names, argument="classes", sort=False)
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(f"`classes` must hold at least 2 distinct names. Received: classes={list(classes)}")
        return tuple(classes)
