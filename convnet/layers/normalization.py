"""BatchNormalization with Keras's conventions (momentum, biased moving variance, weight order).

    >>> import torch
    >>> from convnet import layers
    >>> bn = layers.BatchNormalization()
    >>> bn.train(True) and None
    >>> out = bn(torch.tensor([[0.0], [2.0]]))      # batch mean 1, variance 1
    >>> [round(v, 3) for v in out[:, 0].tolist()], [round(float(bn.moving_mean[0]), 3)]
    ([-1.0, 1.0], [0.01])
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from convnet._internal.checks import check_bool, check_float
from convnet._internal.kernels import channels_first, channels_last
from convnet.layers.base import Layer, Shape, register


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
        if not self.built:
            return []
        variables: list[tuple[str, torch.Tensor, str]] = []
        if self.gamma is not None:
            variables.append(("gamma", self.gamma, "same"))
        if self.beta is not None:
            variables.append(("beta", self.beta, "same"))
        return [*variables, ("moving_mean", self.moving_mean, "same"), ("moving_variance", self.moving_variance, "same")]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": -1, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}
