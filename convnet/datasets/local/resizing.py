"""`tf.image.resize` (TensorFlow 2, `antialias=False`, as Keras's `image_dataset_from_directory` calls it),
`tf.image.resize_with_pad` and Keras's `smart_resize` crop, in NumPy.

Every method is separable: along each axis, output pixel i is a weighted sum of a few input pixels,
`out[i] = sum_k weights[i, k] * in[indices[i, k]]`. `axis_taps` gives (indices, weights) for one axis,
written from TensorFlow's kernels (tensorflow/core/kernels/image/):

    bilinear      resize_bilinear_op.cc, half-pixel centres: x = (i + 0.5) * in / out - 0.5, the two
                  neighbours floor(x) and ceil(x) clamped to the image, weights 1 - frac(x) and frac(x)
    nearest       resize_nearest_neighbor_op.cc, half-pixel: min(floor((i + 0.5) * in / out), in - 1)
    bicubic       resize_bicubic_op.cc, half-pixel: Keys's cubic (a = -0.5) at four neighbours, its weights
                  read from a 1024-entry table, taps outside the image dropped and the rest renormalised
    area          resize_area_op.cc: output pixel i averages the input span [i * s, (i + 1) * s), s = in / out,
                  partly covered pixels by the covered fraction
    lanczos3, lanczos5, gaussian, mitchellcubic
                  scale_and_translate_op.cc with sampling_kernels.h: the kernel, unscaled (no antialias),
                  at every input pixel within its radius of the sample point, weights normalised to sum to 1

Sizes and scales are computed in float32, as TensorFlow does, so that the same taps are chosen.

    >>> image = np.arange(4, dtype=np.float32).reshape(1, 4, 1)  # (1, 4, 1): one row 0, 1, 2, 3
    >>> resize(image, (1, 2), "bilinear")[0, :, 0].tolist()  # samples at x = 0.5 and 2.5
    [0.5, 2.5]
    >>> resize(image, (1, 8), "nearest")[0, :, 0].tolist()
    [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["INTERPOLATIONS", "EXACT_AT_SAME_SIZE", "axis_taps", "resize", "crop_box", "pad_box", "fit_image"]

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
# methods that return the input unchanged when the size does not change (the others blur a little)
EXACT_AT_SAME_SIZE = ("bilinear", "nearest", "bicubic", "area")

_F32 = np.float32
_TABLE_SIZE = 1024  # resize_bicubic_op.cc: kTableSize
_KEYS_A = -0.5  # Keys's cubic with a = -0.5, TensorFlow's choice with half-pixel centres


def _lanczos(radius: float):
    def kernel(x: np.ndarray) -> np.ndarray:
        x = np.abs(x).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius) / (np.pi ** 2 * x * x)
        return np.where(x > radius, 0.0, np.where(x <= 1e-3, 1.0, value))
    return kernel, radius


def _gaussian(x: np.ndarray) -> np.ndarray:  # radius 1.5, sigma = radius / 3
    x = np.abs(x).astype(np.float64)
    sigma = 1.5 / 3.0
    return np.where(x >= 1.5, 0.0, np.exp(-x * x / (2.0 * sigma * sigma)))


def _mitchell(x: np.ndarray) -> np.ndarray:  # Mitchell-Netravali with B = C = 1/3, radius 2
    x = np.abs(x).astype(np.float64)
    near = ((7.0 / 6.0 * x - 2.0) * x) * x + 8.0 / 9.0
    far = ((-7.0 / 18.0 * x + 2.0) * x - 10.0 / 3.0) * x + 16.0 / 9.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


_KERNELS = {"lanczos3": _lanczos(3.0), "lanczos5": _lanczos(5.0), "gaussian": (_gaussian, 1.5),
            "mitchellcubic": (_mitchell, 2.0)}


@functools.lru_cache(maxsize=256)
def axis_taps(method: str, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights) of one axis, each (out_size, K): output i = sum_k weights[i, k] * input[indices[i, k]].

    Unused taps have weight 0 (and index 0). Cached: a folder's images share a few sizes.

        >>> indices, weights = axis_taps("bilinear", 4, 2)
        >>> indices.tolist(), weights.tolist()
        ([[0, 1], [2, 3]], [[0.5, 0.5], [0.5, 0.5]])
    """
    scale = _F32(in_size) / _F32(out_size)  # CalculateResizeScale, without align_corners
    i = np.arange(out_size, dtype=_F32)
    if method == "nearest":
        index = np.minimum(np.floor((i + _F32(0.5)) * scale).astype(np.int64), in_size - 1)
        return _frozen(index[:, None], np.ones((out_size, 1), _F32))
    if method == "bilinear":
        x = (i + _F32(0.5)) * scale - _F32(0.5)  # HalfPixelScaler
        low = np.floor(x)
        lerp = (x - low).astype(_F32)
        lower = np.maximum(low.astype(np.int64), 0)
        upper = np.minimum(np.ceil(x).astype(np.int64), in_size - 1)
        return _frozen(np.stack([lower, upper], 1), np.stack([_F32(1) - lerp, lerp], 1))
    if method == "bicubic":
        return _frozen(*_bicubic(i, scale, in_size))
    if method == "area":
        return _frozen(*_area(in_size, out_size, scale))
    if method in _KERNELS:
        return _frozen(*_scale_and_translate(method, in_size, out_size))
    raise ValueError(f"`interpolation` must be one of {INTERPOLATIONS}. Received: interpolation={method!r}")


def _frozen(indices: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cached arrays made read-only, so that no caller can change them for the next."""
    indices, weights = indices.astype(np.intp), weights.astype(_F32)
    indices.flags.writeable = False
    weights.flags.writeable = False
    return indices, weights


def _bicubic(i: np.ndarray, scale: np.float32, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    x = (i + _F32(0.5)) * scale - _F32(0.5)
    start = np.floor(x).astype(np.int64)
    offset = np.rint((x - start) * _TABLE_SIZE).astype(np.int64)  # lrintf: the table's row, 0..1024
    t = np.arange(_TABLE_SIZE + 1, dtype=np.float64) / _TABLE_SIZE  # the table, in float32 as TensorFlow
    near = (((_KEYS_A + 2) * t - (_KEYS_A + 3)) * t * t + 1).astype(_F32)  # |d| = t <= 1
    far = ((((_KEYS_A * (t + 1) - 5 * _KEYS_A) * (t + 1) + 8 * _KEYS_A) * (t + 1)) - 4 * _KEYS_A).astype(_F32)
    weights = np.stack([far[offset], near[offset], near[_TABLE_SIZE - offset], far[_TABLE_SIZE - offset]], 1)
    indices = start[:, None] + np.arange(-1, 3)  # (out, 4): floor(x) - 1 .. floor(x) + 2
    inside = (indices >= 0) & (indices < in_size)
    weights = np.where(inside, weights, _F32(0))
    weights = weights / weights.sum(1, keepdims=True, dtype=_F32)  # renormalise without the outside taps
    return np.clip(indices, 0, in_size - 1), weights


def _area(in_size: int, out_size: int, scale: np.float32) -> tuple[np.ndarray, np.ndarray]:
    width = math.ceil(float(scale)) + 2  # the most input pixels one output pixel can touch
    indices = np.zeros((out_size, width), np.int64)
    weights = np.zeros((out_size, width), _F32)
    for out in range(out_size):
        begin, end = _F32(out) * scale, _F32(out + 1) * scale
        first, stop = math.floor(begin), math.ceil(end)
        for k, src in enumerate(range(first, stop)):
            indices[out, k] = min(src, in_size - 1)
            weights[out, k] = _covered(src, begin, end, scale) / scale if src in (first, stop - 1) else 1 / scale
    return indices, weights


def _covered(src: int, begin: np.float32, end: np.float32, scale: np.float32) -> np.float32:
    """How much of input pixel [src, src + 1) lies in [begin, end), as resize_area_op.cc computes it for the
    first and last pixels of a span: `scale` itself when the span lies inside the pixel (end - begin would
    lose digits to cancellation)."""
    if src < begin:
        return scale if src + 1 > end else _F32(src + 1) - begin
    return end - _F32(src) if src + 1 > end else _F32(1)


def _scale_and_translate(method: str, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    kernel, radius = _KERNELS[method]
    inv_scale = _F32(1) / (_F32(out_size) / _F32(in_size))  # scale = out / in, as resize_images_v2 passes it
    span = min(2 * math.ceil(radius) + 1, in_size)
    indices = np.zeros((out_size, span), np.int64)
    weights = np.zeros((out_size, span), _F32)
    for out in range(out_size):
        sample = (_F32(out) + _F32(0.5)) * inv_scale  # the translation is 0
        start = min(max(math.ceil(sample - radius - 0.5), 0), in_size - 1)
        end = min(max(math.floor(sample + radius - 0.5), 0), in_size - 1) + 1
        source = np.arange(start, end)
        values = kernel(source.astype(_F32) + _F32(0.5) - sample).astype(_F32)
        total = values.sum(dtype=_F32)
        if abs(total) >= 1000 * np.finfo(_F32).tiny:
            indices[out, :len(source)] = source
            weights[out, :len(source)] = values / total
    return indices, weights


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """`tf.image.resize(image, size, method=interpolation)`: float32 (size[0], size[1], C) from (H, W, C);
    "nearest" keeps the input's dtype (its values are the input's).

    Along the height, then along the width: each a gather of the taps and a weighted sum.
    """
    height, width = image.shape[:2]
    rows, row_weights = axis_taps(interpolation, height, size[0])  # (h, K) each
    columns, column_weights = axis_taps(interpolation, width, size[1])  # (w, L) each
    if interpolation == "nearest":
        return image[rows[:, 0]][:, columns[:, 0]]  # (h, w, C), the input's own values and dtype
    pixels = image.astype(_F32, copy=False)
    tall = np.einsum("hkwc,hk->hwc", pixels[rows], row_weights)  # (h, K, W, C) -> (h, W, C)
    return np.einsum("hwlc,wl->hwc", tall[:, columns], column_weights)  # (h, w, L, C) -> (h, w, C)


def crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of Keras's `smart_resize`: the largest centred window with the
    target's aspect ratio, in float32 as Keras's TensorFlow backend computes it.

        >>> crop_box(100, 200, (50, 50))  # a 100x200 image cropped to its centred 100x100 square
        (0, 50, 100, 100)
    """
    target_height, target_width = size
    crop_height = max(min(height, int(_F32(width * target_height) / _F32(target_width))), 1)
    crop_width = max(min(width, int(_F32(height * target_width) / _F32(target_height))), 1)
    return (int(_F32(height - crop_height) / _F32(2)), int(_F32(width - crop_width) / _F32(2)),
            crop_height, crop_width)


def pad_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, resized height, resized width) of `tf.image.resize_with_pad`: the image is resized to
    fit inside `size` with its aspect ratio kept, then padded with zeros around it (float32, as TensorFlow).

        >>> pad_box(100, 200, (50, 50))  # a 100x200 image becomes 25x50, 12 rows of zeros above it
        (12, 0, 25, 50)
    """
    f_height, f_width = _F32(height), _F32(width)
    f_target_height, f_target_width = _F32(size[0]), _F32(size[1])
    ratio = max(f_width / f_target_width, f_height / f_target_height)
    resized_height, resized_width = f_height / ratio, f_width / ratio
    top = max(0, int(np.floor((f_target_height - resized_height) / _F32(2))))
    left = max(0, int(np.floor((f_target_width - resized_width) / _F32(2))))
    # at least one pixel: TensorFlow fails on a zero size (a 1x200 image padded into 50x50, say)
    return top, left, max(int(np.floor(resized_height)), 1), max(int(np.floor(resized_width)), 1)


def fit_image(pixels: np.ndarray, size: tuple[int, int], interpolation: str, crop_to_aspect_ratio: bool = False,
              pad_to_aspect_ratio: bool = False) -> np.ndarray:
    """Keras's resizing step of `image_dataset_from_directory`: uint8 (H, W, C) to (size[0], size[1], C),
    float32; uint8 when no value is resampled ("nearest", or the same size with a method exact there).

        >>> fit_image(np.zeros((4, 6, 1), np.uint8), (4, 4), "bilinear", crop_to_aspect_ratio=True).shape
        (4, 4, 1)
    """
    height, width = pixels.shape[:2]
    if crop_to_aspect_ratio:
        top, left, crop_height, crop_width = crop_box(height, width, size)
        pixels = pixels[top:top + crop_height, left:left + crop_width]  # (h, w, C), the centred window
    elif pad_to_aspect_ratio:
        top, left, inner_height, inner_width = pad_box(height, width, size)
        inner = fit_image(pixels, (inner_height, inner_width), interpolation)
        out = np.zeros((*size, pixels.shape[2]), inner.dtype)  # (size[0], size[1], C), zeros around
        out[top:top + inner_height, left:left + inner_width] = inner
        return out
    if pixels.shape[:2] == tuple(size) and interpolation in EXACT_AT_SAME_SIZE:
        return pixels
    return resize(pixels, size, interpolation)
