"""The core layers: Dense, Flatten, Dropout, Activation, Rescaling and Lambda, as Keras's.

    >>> import torch
    >>> from convnet import layers
    >>> dense = layers.Dense(3, activation="softmax")
    >>> out = dense(torch.zeros(2, 5))
    >>> tuple(out.shape), [w.shape for w in dense.get_weights()]   # kernel in Keras's (in, units) layout
    ((2, 3), [(5, 3), (3,)])
    >>> layers.Dense(4, kernel_regularizer="l2")   # the repr shows a regularizer only when one is set
    Dense(name='dense', units=4, activation='linear', kernel_regularizer={'class_name': 'L2', 'config': {'l2': 0.01}})
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from convnet import initializers, regularizers
from convnet._internal.checks import check_bool, check_float, check_int, describe, is_int, shape_str
from convnet.layers.base import (
    ActivationMixin,
    Layer,
    Shape,
    activation_config,
    check_input_shape,
    existing_weights,
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
class Dense(regularizers.Regularized, ActivationMixin, Layer):
    """Fully connected layer on the last axis, as `keras.layers.Dense`: (..., in) -> (..., units).
    Kernel in Keras layout: (in, units).

    `kernel_regularizer`, `bias_regularizer` and `activity_regularizer` take what `regularizers.get` takes
    ("l2", `regularizers.L2(1e-4)`, ...); `regularizers.penalty(model)` sums their terms, as Keras's
    `model.losses`: the activity penalty is computed on the output (after the activation) and divided by the
    batch size.
    """

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None, activity_regularizer: Any = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.units = check_int("units", units, minimum=1)
        self._set_activation(activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self._set_regularizers(activity_regularizer, kernel_regularizer=kernel_regularizer,
                               bias_regularizer=bias_regularizer)
        self.kernel: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None

    def build(self, input_shape: Shape) -> None:
        features = input_shape[-1]
        self.kernel = torch.nn.Parameter(self.kernel_initializer((features, self.units)).t().contiguous())
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((self.units,)))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        assert self.kernel is not None, "built on first call"
        z = F.linear(x, self.kernel, self.bias)  # (..., in) @ (in, units) + bias, kernel stored (units, in)
        self._record_activity(z, self.activation)
        return z

    def _regularized_weights(self) -> list[tuple[str, torch.Tensor]]:
        if self.kernel is None:
            return []
        weights = [("kernel", self.kernel.t())]  # (units, in) -> Keras's (in, units)
        if self.bias is not None:
            weights.append(("bias", self.bias))
        return weights

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        return existing_weights(("kernel", self.kernel, "io"), ("bias", self.bias, "same"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "activation": activation_config(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer), **self.regularizer_config()}


def _noise_shape(noise_shape: Any) -> tuple[int | None, ...] | None:
    """Keras's `noise_shape`: None, or a sequence of positive ints and None (None: the input's size)."""
    if noise_shape is None:
        return None
    if isinstance(noise_shape, (str, bytes)) or not isinstance(noise_shape, (Sequence, torch.Size, np.ndarray)):
        raise TypeError(f"`noise_shape` must be a tuple of sizes with the batch axis, None for the input's size, "
                        f"e.g. (None, 1, 1, None). Received: noise_shape={describe(noise_shape)}")
    dims = tuple(noise_shape)
    if len(dims) == 0 or not all(d is None or (is_int(d) and d > 0) for d in dims):
        raise ValueError(f"`noise_shape` entries must be positive integers or None. Received: noise_shape={dims!r}")
    return tuple(None if d is None else int(d) for d in dims)


@register
class Dropout(Layer):
    """Sets a fraction `rate` of inputs to 0 during training and scales the rest by 1 / (1 - rate), as
    `keras.layers.Dropout`.

    `noise_shape` (with the batch axis; None stands for the input's size) shapes the random keep/drop mask,
    which is broadcast along its size-1 axes: (None, 1, 1, None) on an NHWC batch drops whole channels
    (Keras's SpatialDropout2D). Each given size must be 1 or the input's. `seed` gives the layer its own
    generator, so its masks repeat from one construction to the next (they still differ from step to step);
    without it the masks come from torch's global generator (`utils.set_random_seed`).

    Raises:
        ValueError: at build or call, a `noise_shape` of the wrong rank or with a size that is neither 1 nor
            the input's.
    """

    def __init__(self, rate: float, noise_shape: Sequence[int | None] | None = None, seed: int | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.rate = check_float("rate", rate, minimum=0.0, maximum=1.0, include_max=False)
        self.noise_shape = _noise_shape(noise_shape)
        self.seed = None if seed is None else check_int("seed", seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def build(self, input_shape: Shape) -> None:
        if self.noise_shape is not None:
            self._mask_shape((None, *input_shape))

    def _mask_shape(self, shape: Sequence[int | None]) -> tuple[int, ...]:
        """The concrete mask shape for an input of `shape` (batch axis included; None: unknown)."""
        assert self.noise_shape is not None
        if len(self.noise_shape) != len(shape):
            raise ValueError(f"{self.label}: `noise_shape` {self.noise_shape} must have one entry per axis of the "
                             f"input, batch included ({len(shape)}); received input shape {shape_str(shape)}")
        for axis, (noise, size) in enumerate(zip(self.noise_shape, shape)):
            if noise is not None and noise != 1 and size is not None and noise != size:
                raise ValueError(f"{self.label}: `noise_shape` {self.noise_shape} does not broadcast to the input "
                                 f"shape {shape_str(shape)}: axis {axis} must be 1, None or {size}")
        return tuple(size if noise is None else noise for noise, size in zip(self.noise_shape, shape))  # type: ignore[misc]

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        if self.noise_shape is None and self.seed is None:
            return F.dropout(x, self.rate, True)
        mask_shape = tuple(x.shape) if self.noise_shape is None else self._mask_shape(tuple(x.shape))
        keep = torch.rand(mask_shape, generator=self._generator(x.device), device=x.device) >= self.rate
        return x * keep.to(x.dtype) / (1 - self.rate)  # the mask broadcasts along its size-1 axes

    def get_config(self) -> dict[str, Any]:
        noise_shape = None if self.noise_shape is None else list(self.noise_shape)
        return {**super().get_config(), "rate": self.rate, "noise_shape": noise_shape, "seed": self.seed}


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

    exportable: ClassVar[bool | None] = False  # it holds Python code, which an exported file cannot carry

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
