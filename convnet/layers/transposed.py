"""The transposed convolution (a learned upsampling), as `keras.layers.Conv2DTranspose` with TensorFlow's
output-size and padding rules.

Keras's output size along an axis of input size n, kernel span k' = (k - 1) * d + 1 and stride s
(keras/src/backend/common/backend_utils.py, `_get_output_shape_given_tf_padding`):
"valid": (n - 1) * s + k' + output_padding, output_padding defaulting to max(k', s) - k';
"same": n * s without output_padding, else (n - 1) * s + k' % 2 + output_padding.
TensorFlow then computes the gradient of a convolution whose input has that size: the output pixel o
collects input pixel i through kernel tap t where o = i * s + t * d - before, `before` being the padding
TensorFlow's SAME rule gives that convolution (0 for "valid").

    >>> import torch
    >>> from convnet import layers
    >>> up = layers.Conv2DTranspose(8, 3, strides=2, padding="same")
    >>> tuple(up(torch.zeros(1, 7, 5, 4)).shape)                      # n * s
    (1, 14, 10, 8)
    >>> [w.shape for w in up.get_weights()]                           # Keras's (kh, kw, filters, in)
    [(3, 3, 8, 4), (8,)]
    >>> layers.Conv2DTranspose(8, 3, strides=2).build_for((7, 5, 4)) # (n - 1) * s + max(k, s)
    (15, 11, 8)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convnet import initializers, regularizers
from convnet import nn as ops
from convnet._internal.checks import check_bool, check_choice, check_int, int_tuple
from convnet._internal.kernels import oihw_to_hwio, to_nchw, to_nhwc
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
)

# Per spatial size (H, W): the output size, TensorFlow's padding before (top, left), and the output_padding
# PyTorch needs on top of its symmetric padding (None where PyTorch's arguments cannot say it)
Plan = tuple[tuple[int, int], tuple[int, int], tuple[int, int] | None]


def _output_length(size: int | None, kernel: int, stride: int, padding: str, output_padding: int | None,
                           dilation: int = 1) -> int | None:
    """Keras's output length of a transposed convolution along one axis; None for an unknown size."""
    if size is None:
        return None
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        extra = max(span, stride) - span if output_padding is None else output_padding
        return (size - 1) * stride + span + extra
    if output_padding is None:
        return size * stride
    return (size - 1) * stride + span % 2 + output_padding


@register
class Conv2DTranspose(regularizers.Regularized, ActivationMixin, Layer):
    """Transposed 2-D convolution over NHWC inputs, as `keras.layers.Conv2DTranspose`.

    Output shape: (N, H', W', filters), H' by Keras's rule (module docstring). Weights in Keras's order and
    layouts: kernel (kh, kw, filters, C) (PyTorch's (C, filters, kh, kw), read by "hwio"), bias (filters,).
    As Keras, strides > 1 cannot be combined with dilation_rate > 1, and each output_padding must be
    smaller than its stride.
    """

    input_ndim = 4

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = (1, 1),
                 padding: str = "valid", output_padding: int | Sequence[int] | None = None,
                 data_format: str | None = None, dilation_rate: int | Sequence[int] = (1, 1),
                 activation: Any = None, use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._set_regularizers(activity_regularizer, kernel_regularizer=kernel_regularizer,
                               bias_regularizer=bias_regularizer)
        self.filters = check_int("filters", filters, minimum=1)
        self.kernel_size = int_pair("kernel_size", kernel_size)
        self.strides = int_pair("strides", strides)
        self.padding = check_choice("padding", padding, ("valid", "same"))
        self.output_padding: tuple[int, int] | None = None
        if output_padding is not None:
            height, width = int_tuple("output_padding", output_padding, 2, minimum=0)
            self.output_padding = (height, width)
            if height >= self.strides[0] or width >= self.strides[1]:
                raise ValueError(f"`output_padding` must be strictly less than `strides` along each axis. "
                                 f"Received: output_padding={output_padding!r}, strides={strides!r}")
        check_data_format(data_format)
        self.dilation_rate = int_pair("dilation_rate", dilation_rate)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"`strides` > 1 cannot be combined with `dilation_rate` > 1 (as in Keras). "
                             f"Received: strides={strides!r}, dilation_rate={dilation_rate!r}")
        self._set_activation(activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None
        self._plans: dict[tuple[int, int], Plan] = {}

    def build(self, input_shape: Shape) -> None:
        kh, kw = self.kernel_size
        kernel = self.kernel_initializer((kh, kw, self.filters, input_shape[-1]))  # Keras's shape and fans
        self.kernel = torch.nn.Parameter(from_keras_layout(kernel, "hwio").contiguous())  # (C, filters, kh, kw)
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((self.filters,)))

    def _output_size(self, axis: int, size: int | None) -> int | None:
        """One axis's output size by Keras's rule, checked the way TensorFlow checks it: a convolution of the
        output size must give back the input size."""
        k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation_rate[axis]
        extra = None if self.output_padding is None else self.output_padding[axis]
        out = _output_length(size, k, s, self.padding, extra, d)
        if size is not None and out is not None and ops.output_size(out, k, s, self.padding, d) != size:
            back = ops.output_size(out, k, s, self.padding, d)
            raise ValueError(f"{self.label}: output_padding={self.output_padding} gives an output "
                             f"{('height', 'width')[axis]} of {out} for an input of {size}, and a "
                             f"'{self.padding}' convolution of {out} pixels (kernel {k}, stride {s}) gives "
                             f"{back}, not {size}; TensorFlow refuses this. Leave output_padding as None "
                             f"(an output of n * s for 'same'), or give one that TensorFlow can invert.")
        return out

    def _plan_for(self, height: int, width: int) -> Plan:
        plan = self._plans.get((height, width))
        if plan is None:
            outs, befores, extras = [], [], []
            for axis, size in enumerate((height, width)):
                out = self._output_size(axis, size)
                assert out is not None, "known input size"
                k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation_rate[axis]
                before = ops.same_padding(out, k, s, d)[0] if self.padding == "same" else 0
                full = (size - 1) * s + (k - 1) * d + 1  # every tap of every input pixel, before any cropping
                outs.append(out)
                befores.append(before)
                extras.append(out - (full - 2 * before))  # what PyTorch's output_padding must add on the right
            fits = all(0 <= e < max(s, d) for e, s, d in zip(extras, self.strides, self.dilation_rate))
            plan = ((outs[0], outs[1]), (befores[0], befores[1]), (extras[0], extras[1]) if fits else None)
            self._plans[(height, width)] = plan
        return plan

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        assert self.kernel is not None, "built on first call"
        (out_h, out_w), before, extra = self._plan_for(x.shape[1], x.shape[2])
        if extra is not None:  # PyTorch's symmetric crop plus output_padding says it exactly
            out = F.conv_transpose2d(to_nchw(x), self.kernel, self.bias, self.strides, before, extra, 1,
                                     self.dilation_rate)  # (N, C, H, W) -> (N, filters, H', W')
            out = to_nhwc(out)  # (N, H', W', filters)
            self._record_activity(out, self.activation)
            return out
        # otherwise crop `before` on both sides, then cut or zero-pad the bottom/right to TensorFlow's size
        out = F.conv_transpose2d(to_nchw(x), self.kernel, None, self.strides, before, 0, 1, self.dilation_rate)
        out = out[:, :, :out_h, :out_w]  # (N, filters, <= H', <= W')
        out = F.pad(out, (0, out_w - out.shape[3], 0, out_h - out.shape[2]))  # (N, filters, H', W')
        out = to_nhwc(out)  # (N, H', W', filters)
        out = out if self.bias is None else out + self.bias
        self._record_activity(out, self.activation)
        return out

    def _regularized_weights(self) -> list[tuple[str, torch.Tensor]]:
        weights = [] if self.kernel is None else [("kernel", oihw_to_hwio(self.kernel))]  # (kh, kw, filters, C)
        return weights + ([] if self.bias is None else [("bias", self.bias)])

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (self._output_size(0, input_shape[0]), self._output_size(1, input_shape[1]), self.filters)

    def geometry(self, input_shape: Shape) -> Geometry | None:
        """With stride 1, a convolution with the same kernel span and padding span - 1 - before; None with a
        larger stride, which is fractional (1 / s) and which the receptive-field arithmetic cannot express."""
        if self.strides != (1, 1):
            return None
        axes = []
        for k, d in zip(self.kernel_size, self.dilation_rate):
            span = (k - 1) * d + 1
            before = (span - 1) // 2 if self.padding == "same" else 0  # TensorFlow's SAME rule at stride 1
            axes.append((span, 1, span - 1 - before))
        return (axes[0], axes[1])

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """Multiply-adds per sample: every input value times every tap of its kernel slice."""
        if None in input_shape:
            return 0
        return math.prod(input_shape) * self.filters * math.prod(self.kernel_size)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        return existing_weights(("kernel", self.kernel, "hwio"), ("bias", self.bias, "same"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "output_padding": None if self.output_padding is None else list(self.output_padding),
                "dilation_rate": list(self.dilation_rate), "activation": activation_config(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer), **self.regularizer_config()}
