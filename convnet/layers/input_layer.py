"""`Input`: where a model's data comes in, as `keras.Input`: a symbolic tensor of a given shape (without
the batch axis) that layers are called on to define a graph, made by an `InputLayer`.

    >>> from convnet import layers
    >>> x = layers.Input(shape=(28, 28, 1))
    >>> x.shape
    (None, 28, 28, 1)
    >>> type(x.node.operation).__name__, x.node.operation.shape
    ('InputLayer', (28, 28, 1))
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from convnet._internal.checks import check_choice, check_int
from convnet.layers.base import Layer, Shape, check_input_shape, register
from convnet.layers.node import Node, SymbolicTensor


@register
class InputLayer(Layer):
    """The layer behind `Input`: it holds the shape (no batch axis) and produces the graph's input tensor
    (`input_layer.output`). In a Sequential it only declares the input shape."""

    def __init__(self, shape: Sequence[int | None], batch_size: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.shape = check_input_shape("shape", shape)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, minimum=1)
        self.built = True
        self.input_shape = self.output_shape = self.shape
        node = Node(self, [], listed=False)
        node.outputs.append(SymbolicTensor((None, *self.shape), node))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def build_for(self, input_shape: Shape) -> Shape:
        raise ValueError(f"{self.label} starts a graph and takes no inputs; call the layers after it on its "
                         f"output (layers.Input(shape=...) returns that output)")

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "batch_size": self.batch_size, "name": self.name}


def Input(shape: Sequence[int | None], batch_size: int | None = None, dtype: str | None = None,
          name: str | None = None) -> SymbolicTensor:
    """A symbolic input of `shape` (without the batch axis), as `keras.Input`: call layers on it, then make
    a `convnet.Model(inputs, outputs)`; or put it first in a `Sequential` to declare the input shape.

    Args:
        shape: the sizes without the batch axis, e.g. (28, 28, 1); None for a spatial size left open.
        batch_size: a fixed batch size (optional; recorded, not enforced).
        dtype: "float32" (the only input type layers compute in; images are converted when fed).
        name: the InputLayer's name (default "input_layer", made unique within a model).
    """
    if dtype is not None:
        check_choice("dtype", dtype, ("float32",))
    return InputLayer(shape=shape, batch_size=batch_size, name=name).output  # type: ignore[return-value]
