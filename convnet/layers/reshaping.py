"""Reshaping layers: ZeroPadding2D, Cropping2D, UpSampling2D and Reshape, as Keras's (NHWC batches).

    >>> import torch
    >>> from convnet import layers
    >>> x = torch.ones(1, 4, 5, 3)
    >>> tuple(layers.ZeroPadding2D(((1, 2), (0, 1)))(x).shape)    # ((top, bottom), (left, right))
    (1, 7, 6, 3)
    >>> tuple(layers.Cropping2D(1)(x).shape)
    (1, 2, 3, 3)
    >>> tuple(layers.UpSampling2D(2)(x).shape)
    (1, 8, 10, 3)
    >>> layers.Reshape((-1, 3)).build_for((4, 5, 3))               # -1: inferred, as Keras
    (20, 3)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convnet._internal.checks import check_choice, describe, is_int, shape_str
from convnet._internal.kernels import to_nchw, to_nhwc
from convnet.layers.base import Geometry, Layer, Shape, check_data_format, int_pair, register

Pairs = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)) in pixels


def _pixel_pairs(name: str, value: Any) -> Pairs:
    """Keras's ZeroPadding2D/Cropping2D argument: an int (all four sides), two ints (height, width: each
    on both sides) or two pairs ((top, bottom), (left, right)); every number an int >= 0."""
    message = (f"`{name}` must be an int, a tuple of 2 ints (symmetric height, symmetric width) or a tuple of "
               f"2 tuples of 2 ints ((top, bottom), (left, right)), all >= 0. Received: {name}={value!r}")
    if is_int(value):
        if value < 0:
            raise ValueError(message)
        return (int(value), int(value)), (int(value), int(value))
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise (TypeError if not isinstance(value, Sequence) or isinstance(value, str) else ValueError)(message)
    pairs = []
    for entry in value:
        if is_int(entry):
            entry = (entry, entry)
        if (not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 2
                or not all(is_int(v) and v >= 0 for v in entry)):
            raise ValueError(message)
        pairs.append((int(entry[0]), int(entry[1])))
    return pairs[0], pairs[1]


@register
class ZeroPadding2D(Layer):
    """Rows and columns of zeros around each image, as `keras.layers.ZeroPadding2D`.

    Output shape: (N, H + top + bottom, W + left + right, C).
    """

    input_ndim = 4

    def __init__(self, padding: int | Sequence[Any] = (1, 1), data_format: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.padding = _pixel_pairs("padding", padding)
        check_data_format(data_format)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.padding
        return F.pad(x, (0, 0, left, right, top, bottom))  # pairs from the last axis: C, W, H

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        (top, bottom), (left, right) = self.padding
        h, w, c = input_shape
        return (None if h is None else h + top + bottom, None if w is None else w + left + right, c)

    def geometry(self, input_shape: Shape) -> Geometry:
        return ((1, 1, self.padding[0][0]), (1, 1, self.padding[1][0]))  # a 1x1 window, shifted by the padding

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": [list(pair) for pair in self.padding]}


@register
class Cropping2D(Layer):
    """Rows and columns cut off each image's borders, as `keras.layers.Cropping2D`.

    Output shape: (N, H - top - bottom, W - left - right, C); the cropping must leave at least one pixel.
    """

    input_ndim = 4

    def __init__(self, cropping: int | Sequence[Any] = ((0, 0), (0, 0)), data_format: str | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.cropping = _pixel_pairs("cropping", cropping)
        check_data_format(data_format)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.cropping
        height, width = x.shape[1], x.shape[2]
        if top + bottom >= height or left + right >= width:
            self.compute_output_shape(tuple(x.shape[1:]))  # raises the message
        # a copy in NHWC order, so that the next convolution sees channels_last memory, not a strided view
        return x[:, top:height - bottom, left:width - right, :].contiguous()  # (N, H', W', C)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        (top, bottom), (left, right) = self.cropping
        h, w, c = input_shape
        if (h is not None and top + bottom >= h) or (w is not None and left + right >= w):
            raise ValueError(f"{self.label}: cropping=({(top, bottom)}, {(left, right)}) must leave at least one "
                             f"row and column of the input; received input shape {shape_str((None, *input_shape))}")
        return (None if h is None else h - top - bottom, None if w is None else w - left - right, c)

    def geometry(self, input_shape: Shape) -> Geometry:
        return ((1, 1, -self.cropping[0][0]), (1, 1, -self.cropping[1][0]))  # cropping: a negative padding

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cropping": [list(pair) for pair in self.cropping]}


@register
class UpSampling2D(Layer):
    """Each image enlarged `size` times, as `keras.layers.UpSampling2D`: (N, H, W, C) -> (N, H*sh, W*sw, C).

    "nearest" repeats each row `sh` times and each column `sw` times (Keras's `ops.repeat`). "bilinear"
    interpolates with half-pixel centres, as TensorFlow's `tf.image.resize` (Keras's `ops.image.resize`,
    no antialiasing): output pixel i samples input position (i + 0.5) / s - 0.5, clamped to the image.
    """

    input_ndim = 4

    def __init__(self, size: int | Sequence[int] = (2, 2), data_format: str | None = None,
                 interpolation: str = "nearest", **kwargs: Any):
        super().__init__(**kwargs)
        self.size = int_pair("size", size)
        check_data_format(data_format)
        self.interpolation = check_choice("interpolation", interpolation, ("nearest", "bilinear"))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        sh, sw = self.size
        if self.interpolation == "nearest":
            repeated = x[:, :, None, :, None, :].expand(n, h, sh, w, sw, c)  # (N, H, sh, W, sw, C), a view
            return repeated.reshape(n, h * sh, w * sw, c)  # (N, H*sh, W*sw, C)
        # torch's align_corners=False is the half-pixel rule; channels_last memory is kept
        out = F.interpolate(to_nchw(x), size=(h * sh, w * sw), mode="bilinear", align_corners=False)
        return to_nhwc(out)  # (N, C, H*sh, W*sw) -> (N, H*sh, W*sw, C)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = input_shape
        return (None if h is None else h * self.size[0], None if w is None else w * self.size[1], c)

    def geometry(self, input_shape: Shape) -> Geometry | None:
        """None (unknown) unless size is (1, 1): upsampling is a fractional stride, which the receptive-field
        arithmetic (integer kernel span, stride and padding) cannot express."""
        return ((1, 1, 0), (1, 1, 0)) if self.size == (1, 1) else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": list(self.size), "interpolation": self.interpolation}


@register
class Reshape(Layer):
    """Each sample reshaped to `target_shape` (no batch axis), in row-major (H, W, C) order, as
    `keras.layers.Reshape`. One entry may be -1: it is inferred from the input's size.
    """

    def __init__(self, target_shape: Sequence[int], **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(target_shape, Sequence) or isinstance(target_shape, str):
            raise TypeError(f"`target_shape` must be a tuple of ints without the batch axis, e.g. (7, 7, 64). "
                            f"Received: target_shape={describe(target_shape)}")
        shape = tuple(target_shape)
        if not shape or not all(is_int(d) and (d >= 1 or d == -1) for d in shape) or shape.count(-1) > 1:
            raise ValueError(f"`target_shape` entries must be positive ints, with at most one -1 (inferred). "
                             f"Received: target_shape={shape!r}")
        self.target_shape: tuple[int, ...] = tuple(int(d) for d in shape)
        self._resolved: tuple[Shape, Shape] | None = None  # (input shape, output shape) of the last call

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if any(d is None for d in input_shape):  # the -1 cannot be inferred: unknown, as Keras
            return tuple(None if d == -1 else d for d in self.target_shape)
        size = math.prod(input_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        if (-1 in self.target_shape and size % known) or (-1 not in self.target_shape and size != known):
            raise ValueError(f"{self.label}: cannot reshape an input of shape {shape_str((None, *input_shape))} "
                             f"({size} values per sample) to target_shape={self.target_shape}")
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[1:])
        if self._resolved is None or self._resolved[0] != shape:
            self._resolved = (shape, self.compute_output_shape(shape))
        return x.reshape(x.shape[0], *self._resolved[1])  # (N, *target_shape)

    def geometry(self, input_shape: Shape) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}
