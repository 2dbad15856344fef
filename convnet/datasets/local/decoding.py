"""Decoding an image file as Keras's `image_dataset_from_directory` does, through TensorFlow's
`tf.io.decode_image(contents, channels=C, expand_animations=False)`, with convnet's safe loader
(`read_pixels`: decompression bombs refused before decoding, truncation and PNG checksums checked).

TensorFlow's rules, measured against TensorFlow 2.21 (tests/test_keras_folders.py checks them):

- grayscale to RGB repeats the value; to RGBA also adds an opaque alpha (255);
- RGB to grayscale is libpng's `png_set_rgb_to_gray(0.299, 0.587)` in 15-bit fixed point, truncated:
  (9797 R + 19234 G + 3737 B) >> 15; a JPEG is decoded straight to its luma plane by libjpeg instead;
- alpha is dropped, not composited, when fewer channels are asked for (`load_image` composites onto
  black instead); an RGB image asked for 4 channels gets alpha 255;
- 16-bit samples keep their high byte (libpng's `png_set_strip_16`);
- a GIF is its first frame in RGB, its transparent pixels black;
- the EXIF orientation of a photo is ignored.

Where Keras fails (a BMP or GIF with `color_mode="grayscale"`, a GIF with "rgba") the same rules apply.
JPEG pixels may differ from TensorFlow's by a few levels: TensorFlow's libjpeg uses the fast integer
inverse DCT (JDCT_IFAST) where Pillow's uses the accurate one.

    >>> rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)  # (1, 3, 3)
    >>> to_channels(rgb, "PNG", 1)[0, :, 0].tolist()  # 9797 * 255 >> 15, 19234 * 255 >> 15, 3737 * 255 >> 15
    [76, 149, 29]
"""
from __future__ import annotations

import os

import numpy as np

from convnet.datasets.images import DEFAULT_MAX_PIXELS, read_pixels

__all__ = ["decode", "to_channels", "luma"]

_LUMA = (9797, 19234, 3737)  # libpng's 15-bit weights for 0.299, 0.587 and the rest (32768 in all)


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 1) from uint8 (H, W, 3): libpng's fixed-point grayscale, as TensorFlow's decode_png."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b) >> 15).astype(np.uint8)[:, :, None]


def to_channels(pixels: np.ndarray, file_format: str, channels: int) -> np.ndarray:
    """uint8 (H, W, channels) from `read_pixels`'s (H, W, 1 to 4) uint8 or uint16, by TensorFlow's rules."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)  # the high byte
    have = pixels.shape[2]
    if file_format == "GIF" and have == 4:
        pixels = np.where(pixels[..., 3:] == 0, np.uint8(0), pixels[..., :3])  # (H, W, 3), transparent black
        have = 3
    color = pixels[..., :3] if have >= 3 else pixels[..., :1]  # (H, W, 3) or (H, W, 1)
    if channels == 1:
        return luma(color) if color.shape[2] == 3 else np.ascontiguousarray(color)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    if channels == 3:
        return np.ascontiguousarray(color)
    alpha = pixels[..., -1:] if have in (2, 4) else np.full((*pixels.shape[:2], 1), 255, np.uint8)
    return np.concatenate([color, alpha], axis=2)  # (H, W, 4)


def decode(path: str | os.PathLike[str], channels: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, channels) of the image file at `path`, as `tf.io.decode_image(channels=channels)`.

    Raises:
        ValueError: naming the file, for a file that is empty, unreadable, not an image, truncated, corrupt,
            a possible decompression bomb or of an unsupported mode.
    """
    pixels, file_format = read_pixels(path, max_pixels=max_pixels, upright=False,
                                      draft="L" if channels == 1 else None)
    return to_channels(pixels, file_format, channels)
