"""Pooling layers: MaxPooling2D and AveragePooling2D (TensorFlow's padding: max pads with -inf, the
average counts real pixels only), the global poolings, and the seed's depth-wise max pooling.

    >>> import torch
    >>> from convnet import layers
    >>> tuple(layers.MaxPooling2D(2)(torch.zeros(1, 7, 7, 3)).shape)           # VALID: floor(7 / 2)
    (1, 3, 3, 3)
    >>> tuple(layers.MaxPooling2D(2, padding="same")(torch.zeros(1, 7, 7, 3)).shape)   # SAME: ceil(7 / 2)
    (1, 4, 4, 3)
    >>> tuple(layers.DepthMaxPool(3)(torch.zeros(1, 7, 7, 6)).shape)
    (1, 7, 7, 2)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from convnet import nn as ops
from convnet._internal.checks import check_bool, check_choice, check_int, shape_str
from convnet._internal.kernels import Pads, depth_max_pool_nhwc, spatial_pool_nchw, to_nchw, to_nhwc
from convnet.layers.base import (
    Geometry,
    Layer,
    Shape,
    check_data_format,
    int_pair,
    register,
    spatial_output_size,
    window_geometry,
)


class _Pooling2D(Layer):
    """What MaxPooling2D and AveragePooling2D share; `kind` picks the kernel ("max" or "avg")."""

    input_ndim = 4
    kind = "max"

    def __init__(self, pool_size: int | Sequence[int] = (2, 2), strides: int | Sequence[int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_size = int_pair("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else int_pair("strides", strides)
        self.padding = check_choice("padding", padding, ("valid", "same"))
        check_data_format(data_format)
        self._pads: dict[tuple[int, int], Pads] = {}

    def _padding_for(self, height: int, width: int) -> Pads:
        pads = self._pads.get((height, width))
        if pads is None:
            pads = ops.resolve_padding(self.label, self.padding, (height, width), self.pool_size, self.strides)
            self._pads[(height, width)] = pads
        return pads

    def call(self, x: torch.Tensor) -> torch.Tensor:
        pads = self._padding_for(x.shape[1], x.shape[2])
        out = spatial_pool_nchw(self.kind, to_nchw(x), self.pool_size, self.strides, pads)  # (N, C, H', W')
        return to_nhwc(out)  # (N, H', W', C)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w = (spatial_output_size(size, k, s, self.padding) for size, k, s in
                zip(input_shape[:2], self.pool_size, self.strides))
        if (h is not None and h < 1) or (w is not None and w < 1):
            fit = [k if size is None else size for size, k in zip(input_shape[:2], self.pool_size)]
            self._padding_for(fit[0], fit[1])  # raises the "does not fit" message
        return (h, w, input_shape[2])

    def geometry(self, input_shape: Shape) -> Geometry:
        return window_geometry(input_shape, self.pool_size, self.strides, self.padding)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


@register
class MaxPooling2D(_Pooling2D):
    """Max pooling, as `keras.layers.MaxPooling2D` (strides default to pool_size; SAME pads with -inf)."""

    kind = "max"


@register
class AveragePooling2D(_Pooling2D):
    """Average pooling, as `keras.layers.AveragePooling2D` (SAME averages over real pixels only)."""

    kind = "avg"


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D


@register
class GlobalAveragePooling2D(Layer):
    """Mean over height and width: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims=True."""

    input_ndim = 4
    reduce = staticmethod(lambda x, keepdim: x.mean(dim=(1, 2), keepdim=keepdim))

    def __init__(self, keepdims: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.keepdims = check_bool("keepdims", keepdims)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return type(self).reduce(x, self.keepdims)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (1, 1, input_shape[-1]) if self.keepdims else (input_shape[-1],)

    def geometry(self, input_shape: Shape) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "keepdims": self.keepdims}


@register
class GlobalMaxPooling2D(GlobalAveragePooling2D):
    """Max over height and width: (N, H, W, C) -> (N, C)."""

    reduce = staticmethod(lambda x, keepdim: x.amax(dim=(1, 2), keepdim=keepdim))


@register
class DepthMaxPool(Layer):
    """The seed's depth-wise max pooling as a layer: the max over each group of `pool_size` consecutive
    channels, (N, H, W, C) -> (N, H, W, C / pool_size), as
    `tf.nn.max_pool(x, ksize=(1, 1, 1, k), strides=(1, 1, 1, k), padding="VALID")`."""

    input_ndim = 4

    def __init__(self, pool_size: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_size = check_int("pool_size", pool_size, minimum=1)

    def build(self, input_shape: Shape) -> None:
        if input_shape[-1] % self.pool_size:
            raise ValueError(f"{self.label}: `pool_size` (={self.pool_size}) must divide the input depth "
                             f"({input_shape[-1]}) evenly. Received input shape {shape_str((None, *input_shape))}")

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.pool_size:
            self.build(tuple(x.shape[1:]))  # raises the message
        return depth_max_pool_nhwc(x, self.pool_size)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], input_shape[-1] // self.pool_size)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": self.pool_size}
