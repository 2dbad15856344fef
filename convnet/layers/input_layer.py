"""`Input`: where a model's data comes in, with its shape without the batch axis, as `keras.Input`.

    >>> from convnet import layers
    >>> layers.Input(shape=(28, 28, 1)).shape
    (28, 28, 1)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from convnet._internal.checks import check_int
from convnet.layers.base import Layer, check_input_shape, register


@register
class Input(Layer):
    """Declares the input shape of a Sequential model (no batch axis): `Input(shape=(28, 28, 1))`."""

    def __init__(self, shape: Sequence[int | None], batch_size: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.shape = check_input_shape("shape", shape)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, minimum=1)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "batch_size": self.batch_size, "name": self.name}


InputLayer = Input
