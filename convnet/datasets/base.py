"""What every registered dataset derives from its fields: the number of classes, the input shape a model
takes, and a readable repr."""
from __future__ import annotations

from typing import ClassVar


class ImageClassDataset:
    """Base of the dataset classes (`IdxDataset`, `ShapesDataset`): frozen dataclasses with these fields,
    declared `repr=False` so that the repr below serves them.

        >>> from convnet.datasets import fashion_mnist, shapes
        >>> fashion_mnist.num_classes, fashion_mnist.input_shape
        (10, (28, 28, 1))
        >>> shapes
        ShapesDataset('shapes': 7 classes, 12000 train and 2000 test images of 28x28, drawn on demand)
    """

    name: str
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    image_size: tuple[int, int]
    repr_note: ClassVar[str] = ""  # said after the sizes in the repr

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image as a model takes it: (28, 28, 1) by default."""
        return (*self.image_size, 1)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"{type(self).__name__}({self.name!r}: {self.num_classes} classes, {self.train_size} train and "
                f"{self.test_size} test images of {h}x{w}{self.repr_note})")
