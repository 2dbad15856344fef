"""The registered datasets, by name: Fashion-MNIST and MNIST (IDX files, downloaded and verified) and the
synthetic shapes (drawn, no files).

    >>> list_datasets()
    ['fashion-mnist', 'mnist', 'shapes']
    >>> fashion_mnist.class_names[:3], fashion_mnist.input_shape
    (('T-shirt/top', 'Trouser', 'Pullover'), (28, 28, 1))
    >>> (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, y_train.shape, x_train.dtype                       # doctest: +SKIP
    ((60000, 28, 28), (60000,), dtype('uint8'))
"""
from __future__ import annotations

import os
from typing import Protocol, Union

import numpy as np

from convnet._internal.registry import Registry
from convnet.datasets.idx_dataset import IdxDataset
from convnet.datasets.shapes import ShapesDataset

__all__ = ["Dataset", "list_datasets", "get_dataset", "fashion_mnist", "mnist", "shapes"]

PathLike = Union[str, "os.PathLike[str]"]


class Dataset(Protocol):
    """What a registered dataset provides: IdxDataset (files) and shapes.ShapesDataset (drawn) both do."""

    @property
    def name(self) -> str: ...

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def load_data(self, data_dir: PathLike | None = None
                  ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]: ...


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-")  # "Fashion_MNIST" is "fashion-mnist", as Keras spells the module


_DATASETS: Registry[Dataset] = Registry("dataset", normalise=_normalise)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell-style `pattern`, sorted.

        >>> list_datasets("*mnist")
        ['fashion-mnist', 'mnist']
    """
    return _DATASETS.names(pattern)


def get_dataset(name: str, argument: str = "name") -> Dataset:
    """The registered dataset called `name` (case-insensitive; "fashion_mnist" works too); `argument`
    names the caller's argument in errors.

    Raises:
        ValueError: unknown name; the message suggests the closest names.

        >>> get_dataset("MNIST").num_classes
        10
    """
    return _DATASETS.get(name, argument)


fashion_mnist = IdxDataset(
    "fashion-mnist",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    sha256={"train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"},
    mirrors=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
             "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
)

mnist = IdxDataset(
    "mnist",
    tuple(str(digit) for digit in range(10)),
    sha256={"train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
    mirrors=("https://storage.googleapis.com/cvdf-datasets/mnist/",),
)

shapes = ShapesDataset()  # drawn on demand (shapes.py); data_dir is ignored

_DATASETS.register(fashion_mnist.name, fashion_mnist)
_DATASETS.register(mnist.name, mnist)
_DATASETS.register(shapes.name, shapes)
