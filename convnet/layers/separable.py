"""Depthwise and depthwise-separable convolutions (MobileNet's blocks), as Keras's DepthwiseConv2D and
SeparableConv2D: NHWC in and out, TensorFlow's SAME padding rule, Keras's weight names and layouts.

A depthwise convolution filters each input channel c with its own `depth_multiplier` kernels; output
channel c * depth_multiplier + m comes from kernel[:, :, c, m] (TensorFlow's order). PyTorch computes it as
a grouped convolution with one group per input channel.

    >>> import torch
    >>> from convnet import layers
    >>> depthwise = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)
    >>> tuple(depthwise(torch.zeros(1, 8, 8, 4)).shape), [w.shape for w in depthwise.get_weights()]
    ((1, 8, 8, 8), [(3, 3, 4, 2), (8,)])
    >>> separable = layers.SeparableConv2D(16, 3, strides=2, padding="same")
    >>> tuple(separable(torch.zeros(1, 8, 8, 4)).shape), [w.shape for w in separable.get_weights()]
    ((1, 4, 4, 16), [(3, 3, 4, 1), (1, 1, 4, 16), (16,)])
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convnet import initializers, regularizers
from convnet import nn as ops
from convnet._internal.checks import check_bool, check_choice, check_int
from convnet._internal.kernels import Pads, conv2d_nchw, oihw_to_hwio, to_nchw, to_nhwc
from convnet.layers.base import (
    ActivationMixin,
    Geometry,
    Layer,
    Shape,
    activation_config,
    check_data_format,
    existing_weights,
    from_keras_layout,
    int_pair,
    register,
    spatial_output_size,
    window_geometry,
)


class _Depthwise(regularizers.Regularized, ActivationMixin, Layer):
    """What DepthwiseConv2D and SeparableConv2D share: the arguments of the depthwise step, its padding
    (resolved once per input size), its output size and its receptive-field geometry.

    The depthwise kernel is stored as (depth_multiplier, C, kh, kw), which the "hwio" layout turns into
    Keras's (kh, kw, C, depth_multiplier); `_depthwise_weight` views it as PyTorch's grouped-convolution
    weight (C * depth_multiplier, 1, kh, kw), row c * depth_multiplier + m holding Keras's kernel[:, :, c, m].
    """

    input_ndim = 4

    def __init__(self, kernel_size: int | Sequence[int], strides: int | Sequence[int], padding: str,
                 depth_multiplier: int, dilation_rate: int | Sequence[int], activation: Any, use_bias: bool,
                 depthwise_initializer: Any, bias_initializer: Any, data_format: str | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.kernel_size = int_pair("kernel_size", kernel_size)
        self.strides = int_pair("strides", strides)
        self.padding = check_choice("padding", padding, ("valid", "same"))
        self.depth_multiplier = check_int("depth_multiplier", depth_multiplier, minimum=1)
        self.dilation_rate = int_pair("dilation_rate", dilation_rate)
        self._set_activation(activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        check_data_format(data_format)
        self.bias: torch.nn.Parameter | None = None
        self._pads: dict[tuple[int, int], Pads] = {}

    def _new_depthwise_kernel(self, channels: int) -> torch.nn.Parameter:
        kh, kw = self.kernel_size
        kernel = self.depthwise_initializer((kh, kw, channels, self.depth_multiplier))  # Keras's shape and fans
        return torch.nn.Parameter(from_keras_layout(kernel, "hwio").contiguous())  # (dm, C, kh, kw)

    @staticmethod
    def _depthwise_weight(kernel: torch.Tensor) -> torch.Tensor:
        dm, channels, kh, kw = kernel.shape
        # (dm, C, kh, kw) -> (C, dm, kh, kw) -> (C * dm, 1, kh, kw): a view when dm = 1, a small copy otherwise
        return kernel.transpose(0, 1).reshape(channels * dm, 1, kh, kw)

    def _padding_for(self, height: int, width: int) -> Pads:
        pads = self._pads.get((height, width))
        if pads is None:
            pads = ops.resolve_padding(self.label, self.padding, (height, width), self.kernel_size,
                                       self.strides, self.dilation_rate)
            self._pads[(height, width)] = pads
        return pads

    def _depthwise(self, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The depthwise step on an NHWC batch, as an NCHW (channels_last) tensor (N, C * dm, H', W')."""
        pads = self._padding_for(x.shape[1], x.shape[2])
        return conv2d_nchw(to_nchw(x), self._depthwise_weight(kernel), bias, self.strides, self.dilation_rate,
                           pads, groups=x.shape[3])

    def _spatial_output(self, input_shape: Shape) -> tuple[int | None, int | None]:
        h, w = (spatial_output_size(size, k, s, self.padding, d) for size, k, s, d in
                zip(input_shape[:2], self.kernel_size, self.strides, self.dilation_rate))
        if (h is not None and h < 1) or (w is not None and w < 1):
            fit = [(k - 1) * d + 1 if size is None else size
                   for size, k, d in zip(input_shape[:2], self.kernel_size, self.dilation_rate)]
            self._padding_for(fit[0], fit[1])  # raises the "does not fit" message
        return h, w

    def geometry(self, input_shape: Shape) -> Geometry:
        return window_geometry(input_shape, self.kernel_size, self.strides, self.padding, self.dilation_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "depth_multiplier": self.depth_multiplier,
                "dilation_rate": list(self.dilation_rate), "activation": activation_config(self.activation),
                "use_bias": self.use_bias,
                "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


@register
class DepthwiseConv2D(_Depthwise):
    """Depthwise 2-D convolution, as `keras.layers.DepthwiseConv2D`.

    Output shape: (N, H', W', C * depth_multiplier), H' as Conv2D's (TensorFlow's SAME/VALID rule).
    Weights in Keras 3's order and layouts: kernel (kh, kw, C, depth_multiplier) (Keras 3 names it
    "kernel"), bias (C * depth_multiplier,).
    """

    def __init__(self, kernel_size: int | Sequence[int], strides: int | Sequence[int] = (1, 1),
                 padding: str = "valid", depth_multiplier: int = 1, data_format: str | None = None,
                 dilation_rate: int | Sequence[int] = (1, 1), activation: Any = None, use_bias: bool = True,
                 depthwise_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 depthwise_regularizer: Any = None, bias_regularizer: Any = None, activity_regularizer: Any = None,
                 **kwargs: Any):
        super().__init__(kernel_size, strides, padding, depth_multiplier, dilation_rate, activation, use_bias,
                         depthwise_initializer, bias_initializer, data_format, **kwargs)
        self._set_regularizers(activity_regularizer, depthwise_regularizer=depthwise_regularizer,
                               bias_regularizer=bias_regularizer)
        self.kernel: torch.nn.Parameter | None = None

    def build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        self.kernel = self._new_depthwise_kernel(channels)
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((channels * self.depth_multiplier,)))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        assert self.kernel is not None, "built on first call"
        out = to_nhwc(self._depthwise(x, self.kernel, self.bias))  # (N, H', W', C * dm)
        self._record_activity(out, self.activation)
        return out

    def _regularized_weights(self) -> list[tuple[str, torch.Tensor]]:
        weights = [] if self.kernel is None else [("depthwise", oihw_to_hwio(self.kernel))]  # (kh, kw, C, dm)
        return weights + ([] if self.bias is None else [("bias", self.bias)])

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*self._spatial_output(input_shape), input_shape[-1] * self.depth_multiplier)

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """Multiply-adds per sample: each output value sums kh * kw products."""
        return 0 if None in output_shape else math.prod(output_shape) * math.prod(self.kernel_size)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        return existing_weights(("kernel", self.kernel, "hwio"), ("bias", self.bias, "same"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.regularizer_config()}


@register
class SeparableConv2D(_Depthwise):
    """Depthwise-separable 2-D convolution, as `keras.layers.SeparableConv2D`: a depthwise convolution
    (strides, padding and dilation apply here) followed by a 1x1 convolution to `filters` channels.

    Output shape: (N, H', W', filters), H' as Conv2D's. Weights in Keras's order and layouts:
    depthwise_kernel (kh, kw, C, depth_multiplier), pointwise_kernel (1, 1, C * depth_multiplier, filters),
    bias (filters,).
    """

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = (1, 1),
                 padding: str = "valid", data_format: str | None = None,
                 dilation_rate: int | Sequence[int] = (1, 1), depth_multiplier: int = 1, activation: Any = None,
                 use_bias: bool = True, depthwise_initializer: Any = "glorot_uniform",
                 pointwise_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 depthwise_regularizer: Any = None, pointwise_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, **kwargs: Any):
        super().__init__(kernel_size, strides, padding, depth_multiplier, dilation_rate, activation, use_bias,
                         depthwise_initializer, bias_initializer, data_format, **kwargs)
        self._set_regularizers(activity_regularizer, depthwise_regularizer=depthwise_regularizer,
                               pointwise_regularizer=pointwise_regularizer, bias_regularizer=bias_regularizer)
        self.filters = check_int("filters", filters, minimum=1)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.depthwise_kernel: torch.nn.Parameter | None = None
        self.pointwise_kernel: torch.nn.Parameter | None = None

    def build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        self.depthwise_kernel = self._new_depthwise_kernel(channels)
        pointwise = self.pointwise_initializer((1, 1, channels * self.depth_multiplier, self.filters))
        self.pointwise_kernel = torch.nn.Parameter(from_keras_layout(pointwise, "hwio").contiguous())
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((self.filters,)))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        assert self.depthwise_kernel is not None and self.pointwise_kernel is not None, "built on first call"
        depthwise = self._depthwise(x, self.depthwise_kernel, None)  # (N, C * dm, H', W'), channels_last
        out = to_nhwc(F.conv2d(depthwise, self.pointwise_kernel, self.bias))  # (N, H', W', filters)
        self._record_activity(out, self.activation)
        return out

    def _regularized_weights(self) -> list[tuple[str, torch.Tensor]]:
        weights = []
        if self.depthwise_kernel is not None and self.pointwise_kernel is not None:
            weights = [("depthwise", oihw_to_hwio(self.depthwise_kernel)),  # (kh, kw, C, dm)
                       ("pointwise", oihw_to_hwio(self.pointwise_kernel))]  # (1, 1, C * dm, filters)
        return weights + ([] if self.bias is None else [("bias", self.bias)])

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*self._spatial_output(input_shape), self.filters)

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """Multiply-adds per sample: the depthwise step's kh * kw per value, then the 1x1 step's C * dm."""
        if None in output_shape:
            return 0
        positions = math.prod(output_shape[:2])
        depth = input_shape[-1] * self.depth_multiplier
        return positions * depth * (math.prod(self.kernel_size) + self.filters)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        return existing_weights(("depthwise_kernel", self.depthwise_kernel, "hwio"),
                                ("pointwise_kernel", self.pointwise_kernel, "hwio"), ("bias", self.bias, "same"))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        head: dict[str, Any] = {key: config.pop(key) for key in ("name", "trainable", "input_shape") if key in config}
        return {**head, "filters": self.filters, **config,  # Keras's argument order: filters first
                "pointwise_initializer": initializers.serialize(self.pointwise_initializer),
                **self.regularizer_config()}
