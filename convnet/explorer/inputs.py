"""The explorer's images: an uploaded file, a test image of the run's dataset or a sample photo, each
converted for the model exactly as `convnet predict` converts a file (`convnet.cli.common.image_input`: resized
and converted to the model's size and channels, times its preprocessing scale), and arrays packed for JSON.

Uploads are decoded by `convnet.datasets.load_image`, which refuses an image declaring more than
`max_pixels` pixels before decoding it (a decompression bomb); the byte limit is checked earlier, while the
request is read (`convnet.explorer.app`).

    >>> import numpy as np
    >>> image = ArrayImage(np.full((4, 6, 1), 255, np.uint8), "test-0")
    >>> image.pixels(size=(2, 3), channels=3).shape, image.original_shape
    ((2, 3, 3), (4, 6, 1))
    >>> pack_uint8(np.arange(4, dtype=np.uint8).reshape(2, 2))
    {'shape': [2, 2], 'data': 'AAECAw=='}
"""
from __future__ import annotations

import base64
import dataclasses
import io
from typing import Any

import numpy as np

from convnet.cli.common import CommandImage, image_input

__all__ = ["UploadImage", "ArrayImage", "Converted", "convert", "pack_uint8", "pack_float32", "normalised_maps",
           "display_pixels"]


class UploadImage(CommandImage):
    """An uploaded file: its bytes, named by the file name the browser sent (used in notes and errors only)."""

    def __init__(self, data: bytes, filename: str, max_pixels: int):
        super().__init__(path=filename)  # the label a note shows, as `convnet predict` shows the path it was given
        self.data, self.max_pixels = data, max_pixels
        self.original_shape: tuple[int, ...] | None = None

    def pixels(self, size: tuple[int, int] | None = None, channels: int | None = None) -> np.ndarray:
        """uint8 (H, W, C), decoded safely from the upload (`load_image` with this server's `max_pixels`)."""
        from convnet.datasets import load_image
        source = io.BytesIO(self.data)
        source.name = self.name  # load_image's errors name the uploaded file
        pixels = load_image(source, size=size, channels=channels, max_pixels=self.max_pixels)
        if size is None and channels is None:
            self.original_shape = tuple(pixels.shape)
        return pixels


class ArrayImage(CommandImage):
    """An image held in memory as uint8 (H, W) or (H, W, C): a test image of the run's dataset, or a sample photo
    loaded once."""

    def __init__(self, array: np.ndarray, label: str):
        super().__init__(sample=label)
        self.label = label
        self.array = array[:, :, None] if array.ndim == 2 else array  # (H, W) -> (H, W, 1)
        self.original_shape: tuple[int, ...] | None = tuple(self.array.shape)

    def pixels(self, size: tuple[int, int] | None = None, channels: int | None = None) -> np.ndarray:
        """uint8 (H, W, C); converted through a lossless PNG by `load_image`, as `CommandImage` converts a sample."""
        if size is None and channels is None:
            return self.array
        from PIL import Image

        from convnet.datasets import load_image
        buffer = io.BytesIO()
        Image.fromarray(self.array[:, :, 0] if self.array.shape[2] == 1 else self.array).save(buffer, format="PNG")
        return load_image(buffer.getvalue(), size=size, channels=channels)


@dataclasses.dataclass
class Converted:
    """An image as the model takes it, and what was done to it."""

    pixels: np.ndarray  # float32 (H, W, C), times the model's preprocessing scale
    note: str | None  # `convnet predict`'s note ("... (note: resized from 640x427 to 28x28 ...)"), None if unchanged
    original_shape: tuple[int, ...]  # (H, W, C) of the image before conversion
    label: str  # the file name, the test image's id or the photo's name
    scale: float  # the model's preprocessing scale

    def describe(self) -> dict[str, Any]:
        """The conversion for the page: original and model shapes, the note, the pixels the model sees."""
        height, width, channels = self.original_shape
        return {"label": self.label, "note": self.note,
                "original": {"height": height, "width": width, "channels": channels},
                "converted": {"height": self.pixels.shape[0], "width": self.pixels.shape[1],
                              "channels": self.pixels.shape[2]},
                "scale": self.scale, "pixels": pack_uint8(display_pixels(self.pixels, self.scale))}


def convert(image: UploadImage | ArrayImage, shape: tuple | None, scale: float, model_name: str) -> Converted:
    """`image` converted for a model taking one-sample `shape`, as `convnet predict` converts a file."""
    pixels, note = image_input(shape, scale, model_name, image)
    original = image.original_shape or tuple(pixels.shape)
    return Converted(pixels=pixels, note=note, original_shape=original, label=image.label, scale=scale)


def display_pixels(pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8 (H, W, C) of an image as the model takes it: the pixels before the preprocessing scale."""
    values = pixels / scale if scale else pixels
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def pack_uint8(array: np.ndarray) -> dict[str, Any]:
    """{"shape", "data"}: a uint8 array's bytes in C order, base64 (the page reads them into a Uint8Array)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def pack_float32(array: np.ndarray) -> dict[str, Any]:
    """{"shape", "data"}: a float32 array's little-endian bytes in C order, base64 (a Float32Array on the page)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def normalised_maps(maps: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    """Feature maps (h, w, K) as uint8 (K, h, w), each map scaled from its own min..max to 0..255, with the
    ranges used (K minima, K maxima). A constant map (a 1x1 map, say) is scaled by the layer's range instead, so
    that 1x1 maps still show which units are strong; a constant layer is all 0.

        >>> planes, low, high = normalised_maps(np.array([[[0.0, 1.0], [2.0, 1.0]]]))   # (1, 2, 2): h=1, w=2, K=2
        >>> planes.tolist(), low, high
        ([[[0, 255]], [[128, 128]]], [0.0, 0.0], [2.0, 2.0])
    """
    planes = np.moveaxis(maps.astype(np.float32), -1, 0)  # (h, w, K) -> (K, h, w)
    low = planes.min(axis=(1, 2), keepdims=True)  # (K, 1, 1)
    high = planes.max(axis=(1, 2), keepdims=True)
    flat = high <= low
    low = np.where(flat, planes.min(), low)  # a constant map: the layer's range
    high = np.where(flat, planes.max(), high)
    span = high - low
    scaled = np.where(span > 0, (planes - low) * (255 / np.where(span > 0, span, 1)), 0)
    return np.round(scaled).astype(np.uint8), [float(v) for v in low.ravel()], [float(v) for v in high.ravel()]
