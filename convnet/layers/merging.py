"""Merge layers: they take a LIST of tensors and return one, as Keras's `keras.layers.Add()([x, y])`.

`Add`, `Subtract`, `Multiply`, `Average`, `Maximum` and `Minimum` combine their inputs element by element
with Keras's broadcasting rule (sizes equal, or 1, compared from the right; an input of lower rank is
expanded after the batch axis); `Concatenate(axis=-1)` joins them along one axis, every other axis equal.

    >>> import torch
    >>> from convnet import layers
    >>> x, y = torch.ones(2, 4, 4, 8), torch.full((2, 4, 4, 8), 2.0)
    >>> layers.Add()([x, y])[0, 0, 0, :3].tolist()
    [3.0, 3.0, 3.0]
    >>> tuple(layers.Concatenate()([x, y]).shape)         # the channels of both
    (2, 4, 4, 16)
    >>> layers.Add().build_for([(8, 8, 16), (8, 8, 16)])  # shapes without the batch axis
    (8, 8, 16)
    >>> layers.Add(name="add").build_for([(8, 16), (8, 32)])
    Traceback (most recent call last):
    ...
    ValueError: Add 'add': inputs must have the same shape; input 0 has shape (None, 8, 16), input 1 has shape ...

The protocol a graph relies on: `multiple_inputs = True`, `forward(list_of_tensors)`,
`build_for(list_of_shapes) -> shape` and `compute_output_shape(list_of_shapes) -> shape` (shapes without
the batch axis); a mismatch is a ValueError naming the layer, each input's position and its shape.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from convnet._internal.checks import check_int, describe, is_int, shape_str
from convnet._internal.kernels import as_tensor
from convnet.layers.base import Geometry, Layer, Shape, register

IDENTITY: Geometry = ((1, 1, 0), (1, 1, 0))  # a merge looks at one position of each input: a 1x1 window


def _inputs_text(shapes: Sequence[Shape]) -> str:
    """"input 0 has shape (None, 8, 8, 16), input 1 has shape (None, 8, 8, 32)"."""
    return ", ".join(f"input {index} has shape {shape_str((None, *shape))}" for index, shape in enumerate(shapes))


class Merge(Layer):
    """Base of the layers that take a list of tensors (Keras's `Merge`).

    Subclasses define `_merge(tensors)`; the base checks the list (at least `min_inputs` tensors, at most
    `max_inputs`, one batch size, compatible shapes) and builds from a list of shapes.
    """

    multiple_inputs: ClassVar[bool] = True
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = None

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._checked: list[Shape] | None = None  # the input shapes last seen and found compatible

    # -- shapes -----------------------------------------------------------------------------------
    def _shape_list(self, input_shapes: Any) -> list[Shape]:
        """`input_shapes` as a list of tuples, checked for type and count (not yet for compatibility)."""
        if not isinstance(input_shapes, (list, tuple)) \
                or not all(isinstance(s, (list, tuple, torch.Size)) for s in input_shapes):
            raise TypeError(f"{self.label}: expects a list of input shapes (one per input, without the batch "
                            f"axis), e.g. [(8, 8, 16), (8, 8, 16)]. Received: {describe(input_shapes)}")
        shapes = [tuple(None if d is None else int(d) for d in s) for s in input_shapes]
        self._check_count(len(shapes))
        for index, shape in enumerate(shapes):
            if len(shape) == 0 or not all(d is None or (is_int(d) and d > 0) for d in shape):
                raise ValueError(f"{self.label}: input {index} has shape {shape!r}; a shape without the batch "
                                 f"axis holds positive sizes (None where unknown)")
        return shapes

    def _check_count(self, count: int) -> None:
        if self.max_inputs == self.min_inputs and count != self.min_inputs:
            raise ValueError(f"{self.label}: expects a list of exactly {self.min_inputs} tensors. "
                             f"Received: {count} input{'s' if count != 1 else ''}")
        if count < self.min_inputs:
            raise ValueError(f"{self.label}: expects a list of at least {self.min_inputs} tensors. "
                             f"Received: {count} input{'s' if count != 1 else ''}")

    def compute_output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        """Keras's elementwise rule: the shapes aligned from the right, each pair of sizes equal or one of
        them 1 (it broadcasts); an unknown size (None) gives an unknown size."""
        shapes = self._shape_list(input_shapes)
        output: Shape = shapes[0]
        for shape in shapes[1:]:
            longer, shorter = (output, shape) if len(output) >= len(shape) else (shape, output)
            merged = list(longer[:len(longer) - len(shorter)])
            for a, b in zip(longer[len(longer) - len(shorter):], shorter):
                if a is None or b is None:
                    merged.append(None)
                elif a == 1 or b == 1 or a == b:
                    merged.append(b if a == 1 else a)
                else:
                    raise ValueError(f"{self.label}: inputs must have the same shape; {_inputs_text(shapes)} "
                                     f"(a size of 1 broadcasts, as in Keras)")
            output = tuple(merged)
        return output

    def build_for(self, input_shapes: Sequence[Shape]) -> Shape:
        """Check the list of input shapes (no batch axis), build on the first call, return the output shape.

        Raises:
            TypeError: not a list of shapes.
            ValueError: too few (or, for Subtract, too many) inputs, or shapes that do not merge.
        """
        shapes = self._shape_list(input_shapes)
        output = self.compute_output_shape(shapes)
        if not self.built:
            self.built = True
            self.input_shape = list(shapes)  # type: ignore[assignment]
            self.output_shape = output
        return output

    # -- calling ----------------------------------------------------------------------------------
    def forward(self, inputs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self.label}: expects a list of tensors, e.g. {type(self).__name__}()([x, y]). "
                            f"Received: {describe(inputs)}")
        self._check_count(len(inputs))
        tensors = [t if isinstance(t, torch.Tensor) and t.is_floating_point() else as_tensor(f"inputs[{i}]", t)
                   for i, t in enumerate(inputs)]
        # compared pairwise, not through a set: under torch.export the batch size is a symbol, not hashable
        if any(t.dim() < 2 for t in tensors) or any(t.shape[0] != tensors[0].shape[0] for t in tensors[1:]):
            shown = ", ".join(f"input {i} has shape {shape_str(t.shape)}" for i, t in enumerate(tensors))
            raise ValueError(f"{self.label}: expects batches (N, ...) of one batch size N; {shown}")
        shapes = [tuple(t.shape[1:]) for t in tensors]
        if shapes != self._checked:  # a new combination of shapes: check it (once)
            if not self.built:
                self.build_for(shapes)
            else:
                self.compute_output_shape(shapes)
            self._checked = shapes
        return self._merge(self._aligned(tensors))

    @staticmethod
    def _aligned(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Inputs of lower rank expanded after the batch axis, as Keras does: (N, C) -> (N, 1, 1, C)."""
        rank = max(t.dim() for t in tensors)
        return [t if t.dim() == rank else t.reshape(t.shape[0], *(1,) * (rank - t.dim()), *t.shape[1:])
                for t in tensors]

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    # -- receptive fields ---------------------------------------------------------------------------
    def geometry(self, input_shape: Shape | Sequence[Shape]) -> Geometry | None:
        """A 1x1 window (each output position looks at the same position of every input) for spatial inputs;
        `input_shape` may be one input's shape or the list of them."""
        shape = input_shape[0] if input_shape and isinstance(input_shape[0], (list, tuple)) else input_shape
        return IDENTITY if len(shape) == 3 else None


@register
class Add(Merge):
    """The elementwise sum of the inputs, as `keras.layers.Add`."""

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = tensors[0]
        for tensor in tensors[1:]:  # a loop over the inputs (a few), not over pixels
            out = out + tensor
        return out


@register
class Subtract(Merge):
    """inputs[0] - inputs[1], as `keras.layers.Subtract` (exactly two inputs)."""

    max_inputs = 2

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return tensors[0] - tensors[1]


@register
class Multiply(Merge):
    """The elementwise product of the inputs, as `keras.layers.Multiply`."""

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = tensors[0]
        for tensor in tensors[1:]:
            out = out * tensor
        return out


@register
class Average(Merge):
    """The elementwise mean of the inputs, as `keras.layers.Average`: their sum divided by their number."""

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = tensors[0]
        for tensor in tensors[1:]:
            out = out + tensor
        return out / len(tensors)


@register
class Maximum(Merge):
    """The elementwise maximum of the inputs, as `keras.layers.Maximum`."""

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = tensors[0]
        for tensor in tensors[1:]:
            out = torch.maximum(out, tensor)
        return out


@register
class Minimum(Merge):
    """The elementwise minimum of the inputs, as `keras.layers.Minimum`."""

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = tensors[0]
        for tensor in tensors[1:]:
            out = torch.minimum(out, tensor)
        return out


@register
class Concatenate(Merge):
    """The inputs joined along `axis`, as `keras.layers.Concatenate`.

    `axis` counts the batch axis, as in Keras: -1 (the default) is the channel axis of NHWC images, 1 the
    height. Every other axis must agree (an unknown size, None, agrees with any); the inputs have one rank.
    Output size along `axis`: the sum of the inputs' sizes (None if one is unknown).
    """

    def __init__(self, axis: int = -1, **kwargs: Any):
        super().__init__(**kwargs)
        self.axis = check_int("axis", axis)
        if self.axis == 0:
            raise ValueError("Concatenate: `axis` counts the batch axis (axis 0), which cannot be concatenated "
                             "along; use 1, 2, ... or -1 for the last axis. Received: axis=0")

    def _axis_for(self, rank: int, shapes: Sequence[Shape]) -> int:
        """`axis` as an index into shapes of `rank` axes without the batch axis."""
        axis = self.axis + rank + 1 if self.axis < 0 else self.axis  # an index into the batched shape
        if not 1 <= axis <= rank:
            raise ValueError(f"{self.label}: axis={self.axis} is out of range for inputs of rank {rank + 1} "
                             f"(batch axis included); {_inputs_text(shapes)}")
        return axis - 1

    def compute_output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        shapes = self._shape_list(input_shapes)
        problem = f"{self.label}: inputs must have the same shape except along the concatenation axis " \
                  f"(axis={self.axis}); {_inputs_text(shapes)}"
        if len({len(s) for s in shapes}) > 1:
            raise ValueError(problem)
        axis = self._axis_for(len(shapes[0]), shapes)
        output: list[int | None] = []
        for index, sizes in enumerate(zip(*shapes)):
            known = {d for d in sizes if d is not None}
            if index == axis:
                output.append(None if None in sizes else sum(sizes))
            elif len(known) > 1:
                raise ValueError(problem)
            else:
                output.append(known.pop() if known else None)
        return tuple(output)

    def _merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors, dim=self.axis)  # channels_last inputs give a channels_last output for axis=-1

    @staticmethod
    def _aligned(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return tensors  # one rank, checked: nothing to expand

    def geometry(self, input_shape: Shape | Sequence[Shape]) -> Geometry | None:
        """A 1x1 window when joining channels; None when joining along height or width (positions move)."""
        shape = input_shape[0] if input_shape and isinstance(input_shape[0], (list, tuple)) else input_shape
        if len(shape) != 3:
            return None
        return IDENTITY if self.axis in (-1, 3) else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}
