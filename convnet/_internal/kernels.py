"""The PyTorch side of convnet: the one place where NHWC tensors and Keras's weight layouts become
PyTorch's NCHW tensors and (out, in, ...) weights, and the kernels that compute on them.

convnet's public API (`convnet.nn`, `convnet.layers`) speaks NHWC images and HWIO filters, as TensorFlow
and Keras do. PyTorch computes in NCHW. An NHWC tensor viewed through `permute(0, 3, 1, 2)` *is* an NCHW
tensor in channels_last memory format, so `to_nchw` costs no copy, and PyTorch's convolution and
pooling kernels keep channels_last through to their output, which `to_nhwc` views back as NHWC.

The kernels here take padding already resolved to (top, bottom, left, right) pixels by TensorFlow's
rule (`convnet.nn.resolve_padding`): TF's SAME padding puts the odd pixel after (bottom/right), which
PyTorch's symmetric `padding=` cannot say, so asymmetric padding is applied explicitly with `F.pad`.

    >>> x = torch.zeros(2, 28, 28, 3)             # (N, H, W, C)
    >>> tuple(to_nchw(x).shape), to_nchw(x).is_contiguous(memory_format=torch.channels_last)
    ((2, 3, 28, 28), True)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convnet._internal.checks import describe

__all__ = ["Pads", "as_tensor", "to_nchw", "to_nhwc", "channels_first", "channels_last", "hwio_to_oihw",
           "oihw_to_hwio", "conv2d_nchw", "spatial_pool_nchw", "depth_max_pool_nhwc"]

Pads = tuple[int, int, int, int]  # (top, bottom, left, right) in pixels


def as_tensor(name: str, value: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    """A float torch tensor from a NumPy array, a tensor or nested lists; `name` is the argument in errors.

    Tensors keep their floating dtype and device (integer tensors become float32); everything else becomes
    float32, or `like`'s dtype and device, so that a NumPy filter bank follows the image tensor it is
    applied to.

    Raises:
        TypeError: complex or non-numeric values, or an unsupported type.
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"`{name}` must hold real numbers. Received: {name}={describe(value)}")
        return value if value.is_floating_point() else value.float()
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)) and not isinstance(value, bool):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"`{name}` must hold real numbers. Received: {name}={describe(array)}")
        # float64 on the way to `like`: a float64 array following a float64 tensor must not round through float32
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32 if like is None else np.float64))
        if like is not None:
            tensor = tensor.to(device=like.device, dtype=like.dtype)
        return tensor
    raise TypeError(f"`{name}` must be a NumPy array or a torch.Tensor. Received: {name}={describe(value)}")


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """An NHWC batch as PyTorch's NCHW: a view in channels_last memory format, no copy."""
    return x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    """An NCHW batch (a kernel's output) back as NHWC: a view, no copy for channels_last memory."""
    return x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """`to_nchw` for any rank >= 2: the last (channel) axis moved to axis 1, as a view."""
    return x.movedim(-1, 1)  # (N, ..., C) -> (N, C, ...)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `channels_first`, as a view."""
    return x.movedim(1, -1)  # (N, C, ...) -> (N, ..., C)


def hwio_to_oihw(kernel: torch.Tensor) -> torch.Tensor:
    """A Keras/TensorFlow conv kernel as PyTorch's: a view."""
    return kernel.permute(3, 2, 0, 1)  # (kh, kw, I, O) -> (O, I, kh, kw)


def oihw_to_hwio(weight: torch.Tensor) -> torch.Tensor:
    """A PyTorch conv weight in Keras's layout: a view."""
    return weight.permute(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)


def conv2d_nchw(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, strides: tuple[int, int],
                dilations: tuple[int, int], pads: Pads, groups: int = 1) -> torch.Tensor:
    """Convolution of an NCHW batch with TF-style (possibly asymmetric) padding.

    Args:
        x: (N, C, H, W); weight: (O, C / groups, kh, kw); bias: (O,) or None.
        pads: (top, bottom, left, right), from `convnet.nn.resolve_padding`.

    Returns:
        (N, O, H', W'), H' = (H + top + bottom - (kh - 1) * d - 1) // s + 1.
    """
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, strides, (top, left), dilations, groups)
    x = F.pad(x, (left, right, top, bottom))  # asymmetric SAME: the extra pixel after, as TF
    return F.conv2d(x, weight, bias, strides, 0, dilations, groups)


def spatial_pool_nchw(kind: str, x: torch.Tensor, kernel: tuple[int, int], strides: tuple[int, int],
                      pads: Pads) -> torch.Tensor:
    """Max (`kind="max"`) or average (`"avg"`) pooling of an NCHW batch with TF's padding rules: max
    pooling pads with -inf (padding never wins), average pooling counts real pixels only.

    Returns:
        (N, C, H', W'), H' = (H + top + bottom - kh) // s + 1.
    """
    top, bottom, left, right = pads
    # PyTorch's implicit padding (-inf for max, excluded from the average count) is symmetric and at most k // 2
    symmetric = top == bottom and left == right and top <= kernel[0] // 2 and left <= kernel[1] // 2
    if kind == "max":
        if symmetric:
            return F.max_pool2d(x, kernel, strides, (top, left))
        return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=-math.inf), kernel, strides)
    if symmetric:
        return F.avg_pool2d(x, kernel, strides, (top, left), count_include_pad=False)
    sums = F.avg_pool2d(F.pad(x, (left, right, top, bottom)), kernel, strides)
    ones = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype, device=x.device)  # (1, 1, H, W)
    counts = F.avg_pool2d(F.pad(ones, (left, right, top, bottom)), kernel, strides)  # real pixels per window
    return sums / counts


def depth_max_pool_nhwc(x: torch.Tensor, window: int) -> torch.Tensor:
    """The max over each group of `window` consecutive channels of an NHWC batch; `window` divides C.

    Returns:
        (N, H, W, C / window).
    """
    n, h, w, c = x.shape
    return x.reshape(n, h, w, c // window, window).amax(dim=4)  # (N, H, W, C/k, k) -> (N, H, W, C/k)
