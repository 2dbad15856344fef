"""Low-level ops with TensorFlow's semantics: NHWC images, HWIO filters, TF's SAME padding rule.

    >>> import numpy as np
    >>> from convnet import nn
    >>> images = np.ones((1, 5, 5, 1), dtype=np.float32)
    >>> filters = np.ones((3, 3, 1, 1), dtype=np.float32)
    >>> out = nn.conv2d(images, filters, strides=2, padding="SAME")
    >>> tuple(out.shape)
    (1, 3, 3, 1)
    >>> np.asarray(out)[0, :, :, 0].tolist()   # corners see 4 real pixels, edges 6, the centre 9
    [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]

The ops accept NumPy arrays (computed in float32) and torch tensors (dtype and device kept, autograd
flows through), and return a torch.Tensor; `np.asarray(out)` and `plt.imshow(out[0, :, :, 0])` take a
CPU result directly.

This module checks arguments and resolves TensorFlow's padding; the computing happens in
`convnet._internal.kernels`, the one place where NHWC becomes PyTorch's NCHW (a channels_last view, no
copy) and back. `convnet.layers` uses the same kernels and padding rule.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from convnet._internal.checks import is_int, nhwc_ints, shape_str
from convnet._internal.kernels import (
    Pads,
    as_tensor,
    conv2d_nchw,
    depth_max_pool_nhwc,
    hwio_to_oihw,
    spatial_pool_nchw,
    to_nchw,
    to_nhwc,
)

__all__ = ["conv2d", "max_pool", "avg_pool", "max_pool2d", "avg_pool2d", "same_padding", "output_size"]

NHWCInts = tuple[int, int, int, int]  # (batch, height, width, depth) entries of strides, ksize, dilations
Padding = str | Sequence[Sequence[int]]  # "SAME", "VALID" or explicit NHWC [before, after] pairs


def same_padding(size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis, as (before, after).

    out = ceil(size / stride); total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0);
    before = total // 2 and the extra pixel, if any, goes after (bottom/right). Source: TensorFlow's
    "Padding" guide (tf.nn, "Notes on padding").

        >>> same_padding(28, 7)
        (3, 3)
        >>> same_padding(28, 2, stride=2)   # even kernel: nothing needed
        (0, 0)
        >>> same_padding(5, 4, stride=2)    # asymmetric: the extra pixel goes after
        (1, 2)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def output_size(size: int, kernel_size: int, stride: int = 1, padding: str = "valid", dilation: int = 1) -> int:
    """Output length along one axis: ceil(size / stride) for SAME,
    ceil((size - (kernel_size - 1) * dilation) / stride) for VALID (0 when the kernel does not fit).

        >>> output_size(28, 7, padding="same"), output_size(28, 7, padding="valid")
        (28, 22)
    """
    if padding.lower() == "same":
        return -(-size // stride)
    span = (kernel_size - 1) * dilation + 1
    return max(-(-(size - span + 1) // stride), 0)


def _as_pair(op: str, x: Any, w: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert `input` and `filters` together: a NumPy side follows the tensor side's dtype and device."""
    if isinstance(w, torch.Tensor) and not isinstance(x, torch.Tensor):
        w_t = as_tensor("filters", w)
        return as_tensor("input", x, like=w_t), w_t
    x_t = as_tensor("input", x)
    w_t = as_tensor("filters", w, like=x_t if not isinstance(w, torch.Tensor) else None)
    if x_t.dtype != w_t.dtype:
        raise TypeError(f"{op}: `input` and `filters` must have the same dtype. "
                        f"Received: input dtype {x_t.dtype}, filters dtype {w_t.dtype}")
    if x_t.device != w_t.device:
        raise ValueError(f"{op}: `input` and `filters` must be on the same device. "
                         f"Received: input on {x_t.device}, filters on {w_t.device}")
    return x_t, w_t


def _check_images(op: str, x: torch.Tensor) -> None:
    if x.dim() == 4:
        if min(x.shape[1:]) == 0:
            raise ValueError(f"{op}: `input` has an empty height, width or depth axis. "
                             f"Expected (N, H, W, C) with H, W, C >= 1. Received shape {shape_str(x.shape)}")
        return
    hint = ""
    if x.dim() == 3:
        hint = "; add a batch axis with x[None]"
    elif x.dim() == 2:
        hint = "; add batch and channel axes with x[None, :, :, None]"
    raise ValueError(f"{op}: expected `input` of rank 4 (N, H, W, C), received shape {shape_str(x.shape)}{hint}")


def _check_spatial_only(op: str, argument: str, values: tuple[int, int, int, int]) -> None:
    if values[0] != 1 or values[3] != 1:
        raise ValueError(f"{op}: `{argument}` in the batch and depth dimensions must be 1 "
                         f"(as in TensorFlow). Received: {argument}={list(values)}")


def resolve_padding(op: str, padding: Padding, size: tuple[int, int], kernel: tuple[int, int],
                    strides: tuple[int, int], dilations: tuple[int, int] = (1, 1)) -> Pads:
    """(top, bottom, left, right) for "SAME" / "VALID" (any case) or explicit NHWC pairs
    [[0, 0], [top, bottom], [left, right], [0, 0]]. Raises ValueError when the kernel cannot fit."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            return (*same_padding(size[0], kernel[0], strides[0], dilations[0]),
                    *same_padding(size[1], kernel[1], strides[1], dilations[1]))
        if mode != "VALID":
            raise ValueError(f"{op}: `padding` must be 'SAME', 'VALID' or a list of 4 [before, after] pairs. "
                             f"Received: padding={padding!r}")
        pads: Pads = (0, 0, 0, 0)
    else:
        pads = _explicit_pads(op, padding)
    for axis, (extent, k, d, before, after) in enumerate(
            zip(size, kernel, dilations, pads[0::2], pads[1::2])):
        span = (k - 1) * d + 1
        if extent + before + after < span:
            what = "kernel" if d == 1 else f"dilated kernel (span {span})"
            raise ValueError(f"{op}: the {what} of size {k} does not fit the padded input along "
                             f"{('height', 'width')[axis]} ({extent} + {before + after} padding). "
                             f"Use padding='SAME' or a larger input.")
    return pads


def _explicit_pads(op: str, padding: Any) -> Pads:
    message = (f"{op}: explicit `padding` must be 4 [before, after] pairs of non-negative integers in "
               f"NHWC order, with zeros for batch and depth: [[0, 0], [top, bottom], [left, right], [0, 0]]. "
               f"Received: padding={padding!r}")
    if not isinstance(padding, (Sequence, np.ndarray)) or len(padding) != 4:
        raise ValueError(message)
    pairs = []
    for pair in padding:
        if (not isinstance(pair, (Sequence, np.ndarray)) or isinstance(pair, str) or len(pair) != 2
                or not all(is_int(v) and v >= 0 for v in pair)):
            raise ValueError(message)
        pairs.append((int(pair[0]), int(pair[1])))
    if pairs[0] != (0, 0) or pairs[3] != (0, 0):
        raise ValueError(message)
    return pairs[1][0], pairs[1][1], pairs[2][0], pairs[2][1]


def conv2d(input: Any, filters: Any, strides: int | Sequence[int], padding: Padding,
           dilations: int | Sequence[int] | None = None) -> torch.Tensor:
    """2-D convolution of NHWC images with HWIO filters, as `tf.nn.conv2d`.

    Args:
        input: images (N, H, W, C_in).
        filters: (kh, kw, C_in / groups, C_out); C_in may be a multiple of the filters' in-depth,
            which makes a grouped convolution (as TensorFlow).
        strides: an int, or a list of 1, 2 or 4 ints (N, H, W, C order; N and C must be 1).
        padding: "SAME" or "VALID" (any case), or [[0, 0], [top, bottom], [left, right], [0, 0]].
        dilations: like `strides`; default 1.

    Returns:
        (N, H', W', C_out) with H' = ceil(H / s) for SAME, ceil((H - (kh - 1) * d) / s) for VALID.

    Raises:
        ValueError: wrong rank, channel mismatch, bad strides/dilations/padding, kernel larger than input.
        TypeError: non-numeric input, or `input` and `filters` tensors of different dtypes.

    Example (a vertical-line detector, as in the seed):
        >>> import numpy as np
        >>> filters = np.zeros((3, 3, 1, 1), np.float32); filters[:, 1, 0, 0] = 1
        >>> image = np.zeros((1, 4, 4, 1), np.float32); image[0, :, 2, 0] = 1
        >>> np.asarray(conv2d(image, filters, 1, "VALID"))[0, :, :, 0].tolist()
        [[0.0, 3.0], [0.0, 3.0]]
    """
    op = "conv2d"
    x, w = _as_pair(op, input, filters)
    _check_images(op, x)
    if w.dim() != 4:
        raise ValueError(f"{op}: expected `filters` of rank 4 (kh, kw, C_in, C_out), "
                         f"received shape {shape_str(w.shape)}")
    if min(w.shape) == 0:
        raise ValueError(f"{op}: `filters` has an empty axis. Received shape {shape_str(w.shape)}")
    stride4 = nhwc_ints("strides", strides)
    dilation4 = nhwc_ints("dilations", 1 if dilations is None else dilations)
    _check_spatial_only(op, "strides", stride4)
    _check_spatial_only(op, "dilations", dilation4)
    channels, in_depth, out_depth = x.shape[3], w.shape[2], w.shape[3]
    if channels % in_depth:
        raise ValueError(f"{op}: the input depth ({channels}) must equal the filters' in-depth ({in_depth}) "
                         f"or be a multiple of it (grouped convolution). Received: input shape "
                         f"{shape_str(x.shape)}, filters shape {shape_str(w.shape)}")
    groups = channels // in_depth
    if out_depth % groups:
        raise ValueError(f"{op}: for a grouped convolution ({groups} groups) the filters' out-depth "
                         f"({out_depth}) must be a multiple of the number of groups. Received filters shape "
                         f"{shape_str(w.shape)}")
    kernel = (w.shape[0], w.shape[1])
    pads = resolve_padding(op, padding, (x.shape[1], x.shape[2]), kernel, stride4[1:3], dilation4[1:3])
    out = conv2d_nchw(to_nchw(x), hwio_to_oihw(w), None, stride4[1:3], dilation4[1:3], pads, groups)
    return to_nhwc(out)


def _pool_args(op: str, x: torch.Tensor, ksize: Any, strides: Any) -> tuple[NHWCInts, NHWCInts]:
    k4 = nhwc_ints("ksize", ksize)
    s4 = nhwc_ints("strides", strides)
    if k4[0] != 1 or s4[0] != 1:
        raise ValueError(f"{op}: pooling across the batch axis is not supported (as in TensorFlow). "
                         f"Received: ksize={list(k4)}, strides={list(s4)}")
    return k4, s4


def _check_pool_padding(op: str, padding: Any, pads: Pads, kernel: tuple[int, int]) -> None:
    if not isinstance(padding, str) and (pads[0] >= kernel[0] or pads[1] >= kernel[0]
                                         or pads[2] >= kernel[1] or pads[3] >= kernel[1]):
        raise ValueError(f"{op}: explicit padding must be smaller than the window, or some windows would "
                         f"hold padding only. Received: padding={padding!r}, window {kernel[0]}x{kernel[1]}")


def max_pool(input: Any, ksize: int | Sequence[int], strides: int | Sequence[int],
             padding: Padding) -> torch.Tensor:
    """Max pooling of NHWC images, as `tf.nn.max_pool`: spatially, or across the depth axis.

    Spatial pooling: `ksize` and `strides` as an int or a list of 1, 2 or 4 ints; SAME pads with -inf,
    so padding never wins. Depth pooling, as in the seed: `ksize=(1, 1, 1, k)`, `strides=(1, 1, 1, k)`
    takes the max over each group of k consecutive channels; k must divide the depth and equal the
    depth stride, and depth and spatial pooling cannot be combined (TensorFlow's rules).

    Returns:
        (N, H', W', C) with H' as in `conv2d` (kernel `ksize`, dilation 1), or (N, H, W, C / k).

    Example:
        >>> import numpy as np
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 2, 2, 4)
        >>> np.asarray(max_pool(x, ksize=(1, 1, 1, 2), strides=(1, 1, 1, 2), padding="VALID"))[0, 0, 0].tolist()
        [1.0, 3.0]
    """
    op = "max_pool"
    x = as_tensor("input", input)
    _check_images(op, x)
    k4, s4 = _pool_args(op, x, ksize, strides)
    if k4[3] != 1 or s4[3] != 1:
        return _depth_pool(op, x, k4, s4, padding)
    pads = resolve_padding(op, padding, (x.shape[1], x.shape[2]), k4[1:3], s4[1:3])
    _check_pool_padding(op, padding, pads, k4[1:3])
    return to_nhwc(spatial_pool_nchw("max", to_nchw(x), k4[1:3], s4[1:3], pads))


def _depth_pool(op: str, x: torch.Tensor, k4: NHWCInts, s4: NHWCInts, padding: Any) -> torch.Tensor:
    if k4[1:3] != (1, 1) or s4[1:3] != (1, 1):
        raise ValueError(f"{op}: depth-wise pooling cannot be combined with spatial pooling (as in TensorFlow); "
                         f"pool in two steps. Received: ksize={list(k4)}, strides={list(s4)}")
    window, depth = k4[3], x.shape[3]
    if s4[3] != window:
        raise ValueError(f"{op}: depth-wise pooling needs the depth window to equal the depth stride "
                         f"(as in TensorFlow). Received: ksize={list(k4)}, strides={list(s4)}")
    if depth % window:
        raise ValueError(f"{op}: the depth window ({window}) must divide the input depth ({depth}) evenly "
                         f"(as in TensorFlow). Received input shape {shape_str(x.shape)}")
    if not isinstance(padding, str):
        if _explicit_pads(op, padding) != (0, 0, 0, 0):
            raise ValueError(f"{op}: depth-wise pooling takes no spatial padding. Received: padding={padding!r}")
    elif padding.upper() not in ("SAME", "VALID"):
        resolve_padding(op, padding, (1, 1), (1, 1), (1, 1))  # raises the usual message
    return depth_max_pool_nhwc(x, window)


def avg_pool(input: Any, ksize: int | Sequence[int], strides: int | Sequence[int],
             padding: str) -> torch.Tensor:
    """Average pooling of NHWC images, as `tf.nn.avg_pool`.

    SAME padding divides each window by the number of real (unpadded) pixels it covers, as TensorFlow
    does. Depth pooling and explicit padding are refused, as in TensorFlow.

    Example:
        >>> import numpy as np
        >>> x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
        >>> np.asarray(avg_pool(x, 2, 2, "SAME"))[0, :, :, 0].tolist()   # 2x2, 1x2, 2x1, 1x1 windows
        [[2.0, 3.5], [6.5, 8.0]]
    """
    op = "avg_pool"
    x = as_tensor("input", input)
    _check_images(op, x)
    k4, s4 = _pool_args(op, x, ksize, strides)
    if k4[3] != 1 or s4[3] != 1:
        raise ValueError(f"{op}: pooling across the depth axis is supported by max_pool only (as in TensorFlow). "
                         f"Received: ksize={list(k4)}, strides={list(s4)}")
    if not isinstance(padding, str):
        raise ValueError(f"{op}: `padding` must be 'SAME' or 'VALID' (explicit padding is not supported for "
                         f"average pooling, as in TensorFlow). Received: padding={padding!r}")
    pads = resolve_padding(op, padding, (x.shape[1], x.shape[2]), k4[1:3], s4[1:3])
    return to_nhwc(spatial_pool_nchw("avg", to_nchw(x), k4[1:3], s4[1:3], pads))


max_pool2d = max_pool
avg_pool2d = avg_pool
