"""BatchNormalization and LayerNormalization with Keras's conventions (momentum, biased moving variance,
epsilon 1e-3, weight order).

    >>> import torch
    >>> from convnet import layers
    >>> bn = layers.BatchNormalization()
    >>> bn.train(True) and None
    >>> out = bn(torch.tensor([[0.0], [2.0]]))      # batch mean 1, variance 1
    >>> [round(v, 3) for v in out[:, 0].tolist()], [round(float(bn.moving_mean[0]), 3)]
    ([-1.0, 1.0], [0.01])
    >>> ln = layers.LayerNormalization(epsilon=1e-6)
    >>> [round(v, 3) for v in ln(torch.tensor([[0.0, 2.0], [5.0, 7.0]])).flatten().tolist()]   # per sample
    [-1.0, 1.0, -1.0, 1.0]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convnet import initializers
from convnet._internal.checks import check_bool, check_float, int_or_ints, shape_str
from convnet._internal.kernels import channels_first, channels_last
from convnet.layers.base import Geometry, Layer, Shape, existing_weights, register


@register
class BatchNormalization(Layer):
    """Batch normalization over the last (channel) axis, as `keras.layers.BatchNormalization`.

    Keras's conventions: momentum 0.99 means moving = moving * 0.99 + batch * 0.01, and the moving
    variance tracks the biased batch variance. Weights in Keras's order: gamma, beta, moving_mean,
    moving_variance. A non-trainable layer normalises with its moving statistics, as in Keras 3.
    """

    moving_mean: torch.Tensor  # buffers, registered by build
    moving_variance: torch.Tensor

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if axis != -1:
            raise ValueError(f"convnet layers are NHWC: BatchNormalization normalises the last axis; `axis` must "
                             f"be -1. Received: axis={axis!r}")
        self.momentum = check_float("momentum", momentum, minimum=0.0, maximum=1.0)
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, include_min=False)
        self.center = check_bool("center", center)
        self.scale = check_bool("scale", scale)
        self.gamma: torch.nn.Parameter | None = None
        self.beta: torch.nn.Parameter | None = None

    def build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        if self.scale:
            self.gamma = torch.nn.Parameter(torch.ones(channels))
        if self.center:
            self.beta = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("moving_mean", torch.zeros(channels))
        self.register_buffer("moving_variance", torch.ones(channels))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        nc = channels_first(x)  # (N, ..., C) -> (N, C, ...): a view, channels_last memory for images
        if not (self.training and self._trainable):
            out = F.batch_norm(nc, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                               False, 0.0, self.epsilon)
            return channels_last(out)  # (N, C, ...) -> (N, ..., C)
        dims = tuple(range(x.dim() - 1))
        if math.prod(x.shape[:-1]) == 0:  # an empty batch: nothing to normalise or learn from
            return x.clone()
        if math.prod(x.shape[:-1]) > 1:
            out = channels_last(F.batch_norm(nc, None, None, self.gamma, self.beta, True, 0.0, self.epsilon))
        else:  # one value per channel: F.batch_norm refuses it, Keras normalises it (to beta)
            variance, mean = torch.var_mean(x, dim=dims, unbiased=False)
            out = (x - mean) / torch.sqrt(variance + self.epsilon)
            out = out * (1 if self.gamma is None else self.gamma) + (0 if self.beta is None else self.beta)
        with torch.no_grad():
            variance, mean = torch.var_mean(x.detach().float(), dim=dims, unbiased=False)
            self.moving_mean.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)
            self.moving_variance.mul_(self.momentum).add_(variance, alpha=1 - self.momentum)
        return out

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        if not self.built:  # the moving statistics are registered by build
            return []
        return existing_weights(("gamma", self.gamma, "same"), ("beta", self.beta, "same"),
                                ("moving_mean", self.moving_mean, "same"), ("moving_variance", self.moving_variance, "same"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": -1, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}


@register
class LayerNormalization(Layer):
    """Normalisation of each sample over `axis`, as `keras.layers.LayerNormalization`:
    (x - mean) / sqrt(variance + epsilon) * gamma + beta, the mean and (biased) variance taken over the
    axes in `axis` of each sample on its own, in training and at inference alike.

    `axis` counts the batch axis, as in Keras: -1 (the default) normalises each pixel's channels; [1, 2, 3]
    a whole NHWC image. gamma and beta have the sizes of those axes (Keras's weight shapes), in the order
    gamma, beta. Keras 3's default epsilon is 1e-3.
    """

    def __init__(self, axis: int | Sequence[int] = -1, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: Any = "zeros", gamma_initializer: Any = "ones",
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.axis: int | list[int] = int_or_ints("axis", axis)
        if 0 in ([self.axis] if isinstance(self.axis, int) else self.axis):
            raise ValueError(f"`axis` counts the batch axis (0), which a layer normalisation does not normalise "
                             f"over (each sample is normalised on its own); use 1, 2, ... or -1. "
                             f"Received: axis={axis!r}")
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, include_min=False)
        self.center = check_bool("center", center)
        self.scale = check_bool("scale", scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.gamma: torch.nn.Parameter | None = None
        self.beta: torch.nn.Parameter | None = None
        self._dims: tuple[int, ...] = ()  # the normalised axes of a batch, ascending and non-negative

    def _axes_for(self, input_shape: Shape) -> tuple[int, ...]:
        """`axis` as ascending non-negative axes of a batch of samples of `input_shape`."""
        rank = len(input_shape) + 1
        axes = [self.axis] if isinstance(self.axis, int) else self.axis
        if not all(-rank < a < rank for a in axes):
            raise ValueError(f"{self.label}: axis={self.axis!r} is out of range for inputs of rank {rank} (batch "
                             f"axis included); received shape {shape_str((None, *input_shape))}")
        dims = tuple(sorted({a % rank for a in axes}))
        if any(input_shape[d - 1] is None for d in dims):
            raise ValueError(f"{self.label}: the normalised axes (axis={self.axis!r}) must have known sizes, "
                             f"as gamma and beta are built for them; received shape {shape_str((None, *input_shape))}")
        return dims

    def build(self, input_shape: Shape) -> None:
        self._dims = self._axes_for(input_shape)
        shape = tuple(input_shape[d - 1] for d in self._dims)  # Keras's weight shape
        if self.scale:
            self.gamma = torch.nn.Parameter(self.gamma_initializer(shape))
        if self.center:
            self.beta = torch.nn.Parameter(self.beta_initializer(shape))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        dims = self._dims
        rank = x.dim()
        if dims == tuple(range(rank - len(dims), rank)):  # trailing axes: PyTorch's fused kernel
            return F.layer_norm(x, tuple(x.shape[rank - len(dims):]), self.gamma, self.beta, self.epsilon)
        variance, mean = torch.var_mean(x, dim=dims, keepdim=True, unbiased=False)
        out = (x - mean) * torch.rsqrt(variance + self.epsilon)
        broadcast = [x.shape[d] if d in dims else 1 for d in range(rank)]  # e.g. (1, H, 1, C) for axis=[1, 3]
        if self.gamma is not None:
            out = out * self.gamma.reshape(broadcast)
        if self.beta is not None:
            out = out + self.beta.reshape(broadcast)
        return out

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self._axes_for(input_shape)  # raises for an axis out of range
        return input_shape

    def geometry(self, input_shape: Shape) -> Geometry | None:
        """A 1x1 window when normalising channels only; None when the statistics span height or width."""
        if len(input_shape) != 3:
            return None
        return ((1, 1, 0), (1, 1, 0)) if self._axes_for(input_shape) == (3,) else None

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        return existing_weights(("gamma", self.gamma, "same"), ("beta", self.beta, "same"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer)}
