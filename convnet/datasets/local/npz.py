"""`load_npz`: a dataset saved with `np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)`
(optionally `class_names=[...]`), as `keras.datasets.mnist.load_data(path)` reads its own mnist.npz.

Every array's shape and dtype is read from its header and checked before any pixel is read, so that a
wrong file fails at once, naming the array, what was expected and what was found; nothing is unpickled.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.npz")
    >>> x = np.zeros((6, 8, 8), np.uint8)
    >>> np.savez(path, x_train=x, y_train=np.arange(6) % 2, x_test=x[:2], y_test=np.array([0, 1]),
    ...          class_names=np.array(["off", "on"]))
    >>> data = load_npz(path)
    >>> data
    ArrayDataset('tiny': 2 classes, 6 train and 2 test images of 8x8)
    >>> (x_train, y_train), (x_test, y_test) = data.load_data()
    >>> x_train.shape, y_train.dtype, data.class_names, data.input_shape
    ((6, 8, 8), dtype('int64'), ('off', 'on'), (8, 8, 1))
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convnet._internal.checks import describe
from convnet.datasets.base import ImageClassDataset

__all__ = ["ArrayDataset", "load_npz", "REQUIRED_KEYS"]

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
Splits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, eq=False, repr=False)
class ArrayDataset(ImageClassDataset):
    """Arrays loaded from an .npz file, with the fields and `load_data()` of the registered datasets.

    x arrays are (N, H, W) or (N, H, W, C) with C in 1, 3, 4, of an integer or floating dtype, the same
    image shape in both splits; y arrays are integer class indices (N,), or (N, 1) as CIFAR's (flattened).
    """

    name: str
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    image_size: tuple[int, int]
    channels: int = 1
    arrays: tuple[np.ndarray, ...] = field(default=(), repr=False)  # x_train, y_train, x_test, y_test

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def load_data(self, data_dir: Any = None) -> Splits:
        """((x_train, y_train), (x_test, y_test)), the arrays as loaded (y flattened to (N,)); `data_dir` is
        ignored (the file was read already)."""
        x_train, y_train, x_test, y_test = self.arrays
        return (x_train, y_train), (x_test, y_test)


def _headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each array in the .npz at `path`, read from the .npy headers inside the zip."""
    found = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            found[member[:-4]] = (tuple(shape), np.dtype(dtype))
    return found


def _check(name: str, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Shapes and dtypes from the headers: ValueError naming the file, the array and what is wrong."""
    missing = [key for key in REQUIRED_KEYS if key not in headers]
    if missing:
        raise ValueError(f"{name}: missing {', '.join(missing)}; an image dataset .npz holds x_train, y_train, "
                         f"x_test and y_test (and optionally class_names). Found: {', '.join(sorted(headers)) or 'none'}")
    for key, (_, dtype) in headers.items():
        if dtype.hasobject:
            raise ValueError(f"{name}: {key} holds Python objects (dtype {dtype}), which are not loaded (unpickling "
                             f"runs code); save plain arrays: numbers, or strings for class_names")
    image_shapes = []
    for split in ("train", "test"):
        (x_shape, x_dtype), (y_shape, y_dtype) = headers[f"x_{split}"], headers[f"y_{split}"]
        if len(x_shape) not in (3, 4) or (len(x_shape) == 4 and x_shape[3] not in (1, 3, 4)):
            raise ValueError(f"{name}: x_{split} must be images (N, height, width) or (N, height, width, channels) "
                             f"with 1, 3 or 4 channels. Received: shape {x_shape}")
        if x_dtype.kind not in "uif":
            raise ValueError(f"{name}: x_{split} must hold numbers (uint8 pixels, or floats). Received: dtype {x_dtype}")
        if not (len(y_shape) == 1 or (len(y_shape) == 2 and y_shape[1] == 1)):
            raise ValueError(f"{name}: y_{split} must be class indices of shape (N,) or (N, 1). "
                             f"Received: shape {y_shape}")
        if y_dtype.kind not in "ui":
            raise ValueError(f"{name}: y_{split} must be integer class indices. Received: dtype {y_dtype}")
        if y_shape[0] != x_shape[0]:
            raise ValueError(f"{name}: x_{split} holds {x_shape[0]} images but y_{split} {y_shape[0]} labels")
        image_shapes.append(x_shape[1:] if len(x_shape) == 4 else (*x_shape[1:], 1))
    if image_shapes[0] != image_shapes[1]:
        raise ValueError(f"{name}: x_train's images are {image_shapes[0]} but x_test's {image_shapes[1]}; "
                         f"both splits need the same (height, width, channels)")
    if headers["x_train"][0][0] == 0:
        raise ValueError(f"{name}: x_train holds no images")
    if "class_names" in headers:
        shape, dtype = headers["class_names"]
        if len(shape) != 1 or dtype.kind not in "US":
            raise ValueError(f"{name}: class_names must be a 1-D array of strings. Received: shape {shape}, "
                             f"dtype {dtype}")


def load_npz(path: str | os.PathLike[str]) -> ArrayDataset:
    """The dataset in the .npz file at `path`, checked: see the module docstring for the layout.

    Class names: the file's `class_names`, else "0", "1", ... up to the largest label.

    Raises:
        FileNotFoundError: no such file.
        TypeError: `path` is not a path.
        ValueError: naming the file: not an .npz archive, a missing array, a wrong shape or dtype, labels
            that are negative or not below the number of class names, non-finite float pixels.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be the path of an .npz file. Received: path={describe(path)}")
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"load_npz: no such file: {name!r}")
    try:
        headers = _headers(name)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as error:
        raise ValueError(f"{name}: not an .npz archive of arrays (as np.savez writes) ({type(error).__name__}: "
                         f"{error})") from None
    _check(name, headers)
    with np.load(name, allow_pickle=False) as archive:
        x_train, y_train, x_test, y_test = (archive[key] for key in REQUIRED_KEYS)
        names = archive["class_names"] if "class_names" in headers else None
    y_train, y_test = y_train.reshape(-1), y_test.reshape(-1)  # (N, 1) -> (N,)
    for key, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError(f"{name}: {key} holds NaN or infinite values")
    labels = np.concatenate([y_train, y_test])
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: labels must be class indices >= 0. Received: a label {int(labels.min())}")
    top = int(labels.max()) if labels.size else 0
    class_names = tuple(str(item) for item in names) if names is not None else tuple(str(i) for i in range(top + 1))
    if top >= len(class_names):
        raise ValueError(f"{name}: a label {top} but only {len(class_names)} class_names; labels index class_names")
    height, width = x_train.shape[1:3]
    channels = x_train.shape[3] if x_train.ndim == 4 else 1
    stem = os.path.splitext(os.path.basename(name))[0]
    return ArrayDataset(stem, class_names, len(x_train), len(x_test), (height, width), channels,
                        (x_train, y_train, x_test, y_test))
