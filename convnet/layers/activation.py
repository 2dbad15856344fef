"""Activation layers with arguments: ReLU, LeakyReLU and Softmax, as Keras's.

    >>> import torch
    >>> from convnet import layers
    >>> x = torch.tensor([[-10.0, -5.0, 0.0, 5.0, 10.0]])
    >>> layers.ReLU(max_value=10, negative_slope=0.5)(x).tolist()   # Keras's docstring example
    [[-5.0, -2.5, 0.0, 5.0, 10.0]]
    >>> layers.LeakyReLU()(x).tolist()                              # Keras 3's default slope is 0.3
    [[-3.0, -1.5, 0.0, 5.0, 10.0]]
    >>> [round(v, 4) for v in layers.Softmax()(torch.tensor([[1.0, 2.0, 1.0]]))[0].tolist()]
    [0.2119, 0.5761, 0.2119]

A model ending in `Softmax()` (axis -1) trains on its logits, exactly as one ending in
`Dense(..., activation="softmax")`: the layer names its activation ("softmax") and its `pre_activation`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convnet import activations
from convnet._internal.checks import check_float, int_or_ints, shape_str
from convnet.layers.base import Geometry, Layer, Shape, register


@register
class ReLU(Layer):
    """Keras's ReLU with its three arguments, as `keras.layers.ReLU`:

    f(x) = x where x > threshold, else 0 (exactly as Keras computes it, so f(threshold) = 0 for a threshold
    above 0), clipped to max_value; then, with a slope, negative_slope * (x - threshold) added where
    x < threshold. With the defaults it is max(x, 0).
    """

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.max_value = None if max_value is None else check_float("max_value", max_value, minimum=0.0)
        self.negative_slope = check_float("negative_slope", negative_slope, minimum=0.0)
        self.threshold = check_float("threshold", threshold, minimum=0.0)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self.threshold == 0.0:
            out = torch.relu(x)
        else:
            out = torch.where(x > self.threshold, x, torch.zeros((), dtype=x.dtype, device=x.device))
        if self.max_value is not None:
            out = out.clamp(max=self.max_value)
        if self.negative_slope != 0.0:
            out = out - self.negative_slope * torch.relu(self.threshold - x)  # slope * (x - threshold) below it
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


@register
class LeakyReLU(Layer):
    """f(x) = x for x >= 0, negative_slope * x otherwise, as `keras.layers.LeakyReLU` (Keras 3's default
    slope 0.3; Keras 2's argument name `alpha` is accepted as Keras 3 accepts it)."""

    def __init__(self, negative_slope: float = 0.3, **kwargs: Any):
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")  # Keras 3 still takes Keras 2's name (with a warning)
        super().__init__(**kwargs)
        self.negative_slope = check_float("negative_slope", negative_slope, minimum=0.0)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "negative_slope": self.negative_slope}


@register
class Softmax(Layer):
    """exp(x) / sum(exp(x)) along `axis`, as `keras.layers.Softmax`.

    `axis` counts the batch axis, as in Keras: -1 (the default) is the last axis; a list of axes takes one
    softmax over all of them (exp(x - logsumexp(x, axes))). The batch axis is refused: a sample's output
    would depend on the other samples of its batch.

    With axis=-1 the layer carries `activation_name = "softmax"`, `activation` and `pre_activation` (the
    identity), so a model that ends in it computes its cross-entropy from logits.
    """

    activation: Any
    activation_name: str | None

    def __init__(self, axis: int | Sequence[int] = -1, **kwargs: Any):
        super().__init__(**kwargs)
        self.axis: int | list[int] = int_or_ints("axis", axis)
        axes = [self.axis] if isinstance(self.axis, int) else self.axis
        if 0 in axes:
            raise ValueError(f"`axis` counts the batch axis (0), and a softmax across the batch would make each "
                             f"sample's output depend on the others; use 1, 2, ... or -1. Received: axis={axis!r}")
        self._axes = tuple(axes)
        if self.axis == -1:  # the final-softmax protocol of the training engine (see ActivationMixin)
            self.activation = activations.softmax
            self.activation_name = "softmax"

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The logits: the input itself."""
        return x

    def _check_axes(self, rank: int, shape: Sequence[int | None]) -> None:
        # the shape is formatted only for the message: reading a traced batch size (torch.export) fixes it
        if not all(-rank <= a < rank and a % rank != 0 for a in self._axes):
            raise ValueError(f"{self.label}: axis={self.axis!r} is out of range for inputs of rank {rank} (batch "
                             f"axis included); received shape {shape_str(shape)}")

    def call(self, x: torch.Tensor) -> torch.Tensor:
        self._check_axes(x.dim(), tuple(x.shape))
        if len(self._axes) == 1:
            return torch.softmax(x, dim=self._axes[0])
        return torch.exp(x - torch.logsumexp(x, dim=self._axes, keepdim=True))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self._check_axes(len(input_shape) + 1, (None, *input_shape))
        return input_shape

    def geometry(self, input_shape: Shape) -> Geometry | None:
        """A 1x1 window over the channels of an image; None when the softmax spans height or width."""
        rank = len(input_shape) + 1
        if rank != 4 or any(a % rank != 3 for a in self._axes):
            return None
        return ((1, 1, 0), (1, 1, 0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}
