"""The core layers: Dense, Flatten, Dropout, Activation, Rescaling and Lambda, as Keras's.

    >>> import torch
    >>> from convnet import layers
    >>> dense = layers.Dense(3, activation="softmax")
    >>> out = dense(torch.zeros(2, 5))
    >>> tuple(out.shape), [w.shape for w in dense.get_weights()]   # kernel in Keras's (in, units) layout
    ((2, 3), [(5, 3), (3,)])
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convnet import initializers
from convnet._internal.checks import check_bool, check_float, check_int, describe, shape_str
from convnet.layers.base import (
    ActivationMixin,
    Layer,
    Shape,
    activation_config,
    check_input_shape,
    register,
)


@register
class Flatten(Layer):
    """(N, H, W, C) -> (N, H * W * C) in (H, W, C) order, as Keras (so Dense weights carry over)."""

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # (N, H, W, C) -> (N, H*W*C); also for N = 0

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if any(d is None for d in input_shape):
            raise ValueError(f"{self.label}: cannot flatten an input of unknown size "
                             f"{shape_str((None, *input_shape))}; give the model a fixed input shape, or use "
                             f"GlobalAveragePooling2D")
        return (int(np.prod(input_shape)),)

    def geometry(self, input_shape: Shape) -> None:
        return None


@register
class Dense(ActivationMixin, Layer):
    """Fully connected layer on the last axis, as `keras.layers.Dense`: (..., in) -> (..., units).
    Kernel in Keras layout: (in, units)."""

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros", **kwargs: Any):
        super().__init__(**kwargs)
        self.units = check_int("units", units, minimum=1)
        self._set_activation(activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None

    def build(self, input_shape: Shape) -> None:
        features = input_shape[-1]
        self.kernel = torch.nn.Parameter(self.kernel_initializer((features, self.units)).t().contiguous())
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((self.units,)))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        assert self.kernel is not None, "built on first call"
        return F.linear(x, self.kernel, self.bias)  # (..., in) @ (in, units) + bias, kernel stored (units, in)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        if self.kernel is None:
            return []
        variables: list[tuple[str, torch.Tensor, str]] = [("kernel", self.kernel, "io")]
        if self.bias is not None:
            variables.append(("bias", self.bias, "same"))
        return variables

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "activation": activation_config(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


@register
class Dropout(Layer):
    """Sets a fraction `rate` of inputs to 0 during training and scales the rest by 1 / (1 - rate)."""

    def __init__(self, rate: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.rate = check_float("rate", rate, minimum=0.0, maximum=1.0, include_max=False)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.rate, self.training) if self.rate > 0 else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}


@register
class Activation(ActivationMixin, Layer):
    """Applies an activation by name ("relu", "softmax", ...) or callable."""

    def __init__(self, activation: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self._set_activation(activation)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": activation_config(self.activation)}


@register
class Rescaling(Layer):
    """x * scale + offset, as `keras.layers.Rescaling` (e.g. scale=1/255 for uint8 images)."""

    def __init__(self, scale: float, offset: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.scale = check_float("scale", scale)
        self.offset = check_float("offset", offset)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@register
class Lambda(Layer):
    """Wraps a function of an NHWC batch: `Lambda(lambda x: x / 255)`.

    A Lambda holds Python code, so a model containing one cannot be saved to a .convnet file (files
    never carry code); write a registered Layer subclass instead.
    """

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor],
                 output_shape: Sequence[int | None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"`function` must be callable. Received: function={describe(function)}")
        self.function = function
        self.output_shape_arg = None if output_shape is None else check_input_shape("output_shape", output_shape)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self.output_shape_arg is not None:
            return self.output_shape_arg
        if any(d is None for d in input_shape):
            return input_shape
        with torch.no_grad():
            out = self.function(torch.zeros((1, *input_shape)))  # dry run on one dummy sample
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self.label}: the function must return a torch.Tensor. Received: {describe(out)}")
        return tuple(out.shape[1:])

    def geometry(self, input_shape: Shape) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        raise ValueError(f"{self.label}: a Lambda layer holds Python code and cannot be saved "
                         f"(convnet files never carry code). Write a Layer subclass decorated with "
                         f"@convnet.layers.register instead.")
