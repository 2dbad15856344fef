"""Convolution layers. Conv2D computes through `convnet._internal.kernels.conv2d_nchw` on an NCHW view of its
NHWC input (channels_last memory: no copy), with TensorFlow's SAME padding rule from `convnet.nn`.

    >>> import torch
    >>> from convnet import layers
    >>> conv = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")
    >>> tuple(conv(torch.zeros(2, 28, 28, 1)).shape)   # 28 / 2 = 14, as TensorFlow's SAME
    (2, 14, 14, 8)
    >>> [w.shape for w in conv.get_weights()]          # Keras's layout: (kh, kw, in, out)
    [(3, 3, 1, 8), (8,)]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from convnet import initializers, regularizers
from convnet import nn as ops
from convnet._internal.checks import check_bool, check_choice, check_int, shape_str
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


@register
class Conv2D(regularizers.Regularized, ActivationMixin, Layer):
    """2-D convolution over NHWC inputs, as `keras.layers.Conv2D`.

    Output shape: (N, H', W', filters), H' = ceil(H / s) for "same", ceil((H - (k - 1) * d) / s) for
    "valid" (TensorFlow's SAME rule: the extra padding pixel goes bottom/right). Kernel in Keras layout:
    (kh, kw, C / groups, filters).

    `kernel_regularizer`, `bias_regularizer` and `activity_regularizer` are Keras's, as on Dense: the kernel is
    penalised in Keras's (kh, kw, in, out) layout, the activity on the output, divided by the batch size;
    `regularizers.penalty(model)` sums them.
    """

    input_ndim = 4

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = 1,
                 padding: str = "valid", activation: Any = None, use_bias: bool = True,
                 dilation_rate: int | Sequence[int] = 1, groups: int = 1,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 data_format: str | None = None, kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters, minimum=1)
        self.kernel_size = int_pair("kernel_size", kernel_size)
        self.strides = int_pair("strides", strides)
        self.padding = check_choice("padding", padding, ("valid", "same"))
        self.dilation_rate = int_pair("dilation_rate", dilation_rate)
        self.groups = check_int("groups", groups, minimum=1)
        if self.filters % self.groups:
            raise ValueError(f"`filters` (={self.filters}) must be divisible by `groups` (={self.groups})")
        self._set_activation(activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self._set_regularizers(activity_regularizer, kernel_regularizer=kernel_regularizer,
                               bias_regularizer=bias_regularizer)
        check_data_format(data_format)
        self.kernel: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None
        self._pads: dict[tuple[int, int], Pads] = {}

    def build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"{self.label}: the input channels ({channels}) must be divisible by `groups` "
                             f"(={self.groups}). Received input shape {shape_str((None, *input_shape))}")
        kh, kw = self.kernel_size
        kernel = self.kernel_initializer((kh, kw, channels // self.groups, self.filters))
        self.kernel = torch.nn.Parameter(from_keras_layout(kernel, "hwio").contiguous())
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((self.filters,)))

    def _padding_for(self, height: int, width: int) -> Pads:
        pads = self._pads.get((height, width))
        if pads is None:
            pads = ops.resolve_padding(self.label, self.padding, (height, width), self.kernel_size,
                                       self.strides, self.dilation_rate)
            self._pads[(height, width)] = pads
        return pads

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        assert self.kernel is not None, "built on first call"
        pads = self._padding_for(x.shape[1], x.shape[2])
        out = conv2d_nchw(to_nchw(x), self.kernel, self.bias, self.strides, self.dilation_rate,
                          pads, self.groups)  # (N, C, H, W) -> (N, filters, H', W')
        out = to_nhwc(out)  # (N, H', W', filters)
        self._record_activity(out, self.activation)
        return out

    def _regularized_weights(self) -> list[tuple[str, torch.Tensor]]:
        if self.kernel is None:
            return []
        weights = [("kernel", oihw_to_hwio(self.kernel))]  # (O, I, kh, kw) -> Keras's (kh, kw, I, O), a view
        if self.bias is not None:
            weights.append(("bias", self.bias))
        return weights

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w = (spatial_output_size(size, k, s, self.padding, d) for size, k, s, d in
                zip(input_shape[:2], self.kernel_size, self.strides, self.dilation_rate))
        if (h is not None and h < 1) or (w is not None and w < 1):
            fit = [(k - 1) * d + 1 if size is None else size  # an unknown size stands in as one that fits
                   for size, k, d in zip(input_shape[:2], self.kernel_size, self.dilation_rate)]
            self._padding_for(fit[0], fit[1])  # raises the "does not fit" message
        return (h, w, self.filters)

    def geometry(self, input_shape: Shape) -> Geometry:
        return window_geometry(input_shape, self.kernel_size, self.strides, self.padding, self.dilation_rate)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        return existing_weights(("kernel", self.kernel, "hwio"), ("bias", self.bias, "same"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": activation_config(self.activation), "use_bias": self.use_bias,
                "dilation_rate": list(self.dilation_rate), "groups": self.groups,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer), **self.regularizer_config()}
