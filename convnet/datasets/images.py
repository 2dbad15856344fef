"""Loading images safely: a user's own files (`load_image`) and the two sample photos that ship with
scikit-learn (`load_sample_image`).

`load_image` runs in steps, each a function below: open the source (path, bytes or file object), open
the image with Pillow and refuse decompression bombs before decoding, decode it whole (and check a PNG's
integrity, png.py), bring its mode to grayscale, RGB or either with alpha (`read_pixels` stops here),
composite alpha onto black, then convert channels and resize.
"""
from __future__ import annotations

import importlib.util
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Union

import numpy as np

from convnet._internal.checks import check_bool, check_int, describe, int_tuple
from convnet._internal.registry import Registry
from convnet.datasets.png import check_png
from convnet.datasets.streams import seekable

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["DEFAULT_MAX_PIXELS", "load_image", "read_pixels", "load_sample_image", "list_sample_images"]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]

DEFAULT_MAX_PIXELS = 8192 * 8192  # load_image refuses larger images unless told otherwise (decompression bombs)

_SAMPLE_IMAGES: Registry[str] = Registry("sample image", normalise=str)  # exact names: they are file names
_SAMPLE_IMAGES.register("china.jpg", "china.jpg")  # name -> file name in sklearn/datasets/images/
_SAMPLE_IMAGES.register("flower.jpg", "flower.jpg")


def list_sample_images() -> list[str]:
    """Names accepted by `load_sample_image`.

        >>> list_sample_images()
        ['china.jpg', 'flower.jpg']
    """
    return _SAMPLE_IMAGES.names()


def load_sample_image(name: str) -> np.ndarray:
    """One of the two photos that ship with scikit-learn, as uint8 (427, 640, 3); no network needed.

    scikit-learn is located, not imported (importing it takes seconds).

    Args:
        name: "china.jpg" or "flower.jpg".

    Raises:
        ValueError: unknown name (with the closest match).
        ImportError: scikit-learn is not installed.

        >>> load_sample_image("china.jpg").shape
        (427, 640, 3)
    """
    filename = _SAMPLE_IMAGES.get(name, "name")
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError(f"load_sample_image({name!r}) reads the photo that ships with scikit-learn, "
                          f"which is not installed: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "images" / filename
    if not path.is_file():
        raise FileNotFoundError(f"load_sample_image: scikit-learn is installed but {path} is missing; "
                                f"reinstall it: pip install --force-reinstall scikit-learn")
    return load_image(path, channels=3)


def load_image(source: ImageSource, size: int | Sequence[int] | None = None, channels: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A PNG, JPEG or any image Pillow reads, as a uint8 array (H, W, C), decoded safely.

    Palette images become RGB; 16-bit grayscale is scaled to 8 bits (value / 257); transparent pixels
    are composited onto black (a light object on a dark background, as in MNIST and Fashion-MNIST);
    a photo's EXIF orientation is applied.

    Args:
        source: a path, the file's bytes, or a binary file object (an upload, say).
        size: (height, width) to resize to (bilinear, Pillow's antialiased resampling), or one int for a
            square; None keeps the image's size.
        channels: 1 (grayscale, ITU-R 601-2 luma as Pillow) or 3 (RGB); None keeps grayscale images
            at 1 channel and makes everything else RGB.
        max_pixels: refuse images declaring more than this many pixels (width * height), checked before
            decoding: a small file can declare an enormous image (a decompression bomb). None disables
            this check; Pillow's own limit, 2 * PIL.Image.MAX_IMAGE_PIXELS, still applies.

    Returns:
        uint8 array (H, W, C) with C = channels; (size[0], size[1], C) when `size` is given.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, for bytes that are not an image, a truncated or corrupt image, an
            empty or zero-size image, a mode that cannot be converted, or more than `max_pixels` pixels.
        TypeError: an argument of the wrong type.

        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("RGBA", (4, 2), (255, 0, 0, 128)).save(buffer, "PNG")
        >>> image = load_image(buffer.getvalue(), size=(4, 8))
        >>> image.shape, image.dtype, image[0, 0].tolist()
        ((4, 8, 3), dtype('uint8'), [128, 0, 0])
    """
    size, channels, max_pixels = _check_options(size, channels, max_pixels)
    pixels, _ = read_pixels(source, max_pixels=max_pixels)  # (H, W, 1 to 4), uint8 or uint16
    return _shape(_over_black(pixels), size, channels)


def read_pixels(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, upright: bool = True,
                draft: str | None = None) -> tuple[np.ndarray, str]:
    """`load_image`'s safety steps, then the pixels in the image's own layout: nothing composited, mixed
    or resized, so that a caller can apply another library's conversion rules (datasets/local/decoding.py
    applies TensorFlow's).

    Palette images become RGB, or RGBA when they have a transparent colour; 1-bit images become 0 and 255;
    CMYK and YCbCr become RGB (Pillow's conversions).

    Args:
        source: as `load_image`.
        max_pixels: as `load_image`.
        upright: apply a photo's EXIF orientation (TensorFlow's decoders do not).
        draft: "L" asks a JPEG decoder for its luma plane directly (libjpeg's grayscale output, as
            `tf.io.decode_jpeg(channels=1)` does) instead of decoding colour; other formats ignore it.

    Returns:
        (pixels, format): pixels (H, W, C) with C = 1 (grayscale), 2 (grayscale and alpha), 3 (RGB) or
        4 (RGBA), uint8, or uint16 for 16- and 32-bit grayscale (clipped to 16 bits); format is Pillow's
        name of the file format ("PNG", "JPEG", "GIF", "BMP", "WEBP", ...).

    Raises:
        ValueError: as `load_image`, and for a file that cannot be read (naming it).
        TypeError: as `load_image`.

        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("LA", (3, 2), (200, 100)).save(buffer, "PNG")
        >>> pixels, file_format = read_pixels(buffer.getvalue())
        >>> pixels.shape, pixels.dtype, pixels[0, 0].tolist(), file_format
        ((2, 3, 2), dtype('uint8'), [200, 100], 'PNG')
    """
    max_pixels = None if max_pixels is None else check_int("max_pixels", max_pixels, minimum=1)
    upright = check_bool("upright", upright)
    if draft not in (None, "L"):
        raise ValueError(f"`draft` must be None or 'L'. Received: draft={draft!r}")
    stream, name = _open_source(source)
    start = stream.tell()
    with _open_image(stream, name, max_pixels) as opened:
        if draft is not None and opened.format == "JPEG":
            opened.draft(draft, None)  # libjpeg converts while decoding; a CMYK file stays CMYK
        image = _decode(opened, name, upright)  # `opened` itself, or an upright copy of it
        if opened.format == "PNG":
            check_png(_read_back(stream, start), name)
        return _native(image, name), opened.format or ""


def _check_options(size: int | Sequence[int] | None, channels: int | None, max_pixels: int | None
                   ) -> tuple[tuple[int, ...] | None, int | None, int | None]:
    """load_image's size (as (height, width)), channels and max_pixels, checked in that order."""
    hw = None if size is None else int_tuple("size", size, 2)
    if channels is not None and check_int("channels", channels) not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grayscale), 3 (RGB) or None. Received: channels={channels}")
    return hw, channels, None if max_pixels is None else check_int("max_pixels", max_pixels, minimum=1)


def _open_source(source: Any) -> tuple[BinaryIO, str]:
    """(a stream Image.open takes, the name errors use) for a path, bytes or a binary file object."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"load_image: no such file: {path!r}")
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a folder, not an image file")
        try:
            with open(path, "rb") as handle:
                data = handle.read()  # read once: Pillow decodes it and png.py checks it
        except OSError as error:  # a permission, or an I/O error of the disk
            raise ValueError(f"{path}: the file cannot be read ({error.strerror or error})") from None
        if not data:
            raise ValueError(f"{path}: the file is empty (0 bytes), not an image")
        return io.BytesIO(data), path
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"<{len(data)} bytes>"
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        if seekable(source):
            return source, name
        data = source.read()
        if not isinstance(data, bytes):
            raise TypeError(f"`source` must be opened in binary mode. Received: source={describe(source)}")
    else:
        raise TypeError(f"`source` must be a path, bytes or a binary file object. "
                        f"Received: source={describe(source)}")
    if not data:
        raise ValueError(f"{name}: empty input (0 bytes), not an image")
    return io.BytesIO(data), name


def _open_image(stream: BinaryIO, name: str, max_pixels: int | None) -> PILImage:
    """The PIL image, opened (its header read, nothing decoded) and refused if it is empty or a possible
    decompression bomb."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check below says more
            image = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{name}: refused as a possible decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:  # its message names our in-memory stream, not the file
        raise ValueError(f"{name}: not an image Pillow can read (UnidentifiedImageError: no image format "
                         f"recognised)") from None
    except Exception as error:  # whatever a malformed header makes a plugin raise
        raise ValueError(f"{name}: not an image Pillow can read ({type(error).__name__}: {error})") from None
    width, height = image.size
    if width == 0 or height == 0:
        image.close()
        raise ValueError(f"{name}: the image is empty ({width}x{height} pixels)")
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ValueError(f"{name}: the image declares {width}x{height} = {width * height} pixels, more than "
                         f"max_pixels={max_pixels} (a possible decompression bomb); pass a larger "
                         f"max_pixels if you trust the file")
    return image


def _decode(image: PILImage, name: str, upright: bool = True) -> PILImage:
    """The image decoded whole (a truncated file fails now, not later), turned upright by its EXIF tag
    when `upright`."""
    from PIL import ImageOps

    try:
        image.load()
        if upright and image.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag; 1 is upright
            image = ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, EOFError, struct.error...
        raise ValueError(f"{name}: corrupt or truncated image ({type(error).__name__}: {error})") from None
    return image


def _read_back(stream: BinaryIO, start: int) -> bytes:
    """The whole file that Image.open read, from `start` in its stream."""
    if isinstance(stream, io.BytesIO) and start == 0:
        return stream.getvalue()  # no copy of a file read whole
    position = stream.tell()
    stream.seek(start)
    data = stream.read()
    stream.seek(position)
    return data


def _native(image: PILImage, name: str) -> np.ndarray:
    """(H, W, C) pixels, C = 1, 2, 3 or 4 for L, LA, RGB and RGBA: uint8, or uint16 for the "I" modes."""
    mode = image.mode
    if mode.startswith("I"):  # 32-bit "I" and 16-bit "I;16*": assume 16-bit data
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)[:, :, None]  # (H, W) -> (H, W, 1)
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "RGBX"):
        image = image.convert("RGB")
    elif mode == "RGBa":  # premultiplied alpha
        image = image.convert("RGBA")
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"{name}: unsupported image mode {mode!r}; expected a grayscale, RGB, RGBA, "
                         f"palette, CMYK or 16-bit image")
    pixels = np.asarray(image)  # (H, W) for L, (H, W, C) otherwise
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _over_black(pixels: np.ndarray) -> np.ndarray:
    """load_image's rules: 16-bit values scaled to 8 bits (value / 257) and alpha composited onto black:
    uint8 (H, W, 1) or (H, W, 3)."""
    if pixels.dtype == np.uint16:
        return np.round(pixels / 257.0).astype(np.uint8)
    if pixels.shape[2] in (2, 4):
        color, alpha = pixels[..., :-1].astype(np.uint32), pixels[..., -1:].astype(np.uint32)
        return ((color * alpha + 127) // 255).astype(np.uint8)  # over black: (H, W, C - 1)
    return pixels


def _shape(pixels: np.ndarray, size: tuple[int, ...] | None, channels: int | None) -> np.ndarray:
    """(H, W, 1) or (H, W, 3) pixels as (size[0], size[1], channels): luma, resize, then the channel axis."""
    from PIL import Image

    if channels == 1 and pixels.shape[2] == 3:
        r, g, b = (pixels[..., i].astype(np.uint32) for i in range(3))
        pixels = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[:, :, None]  # Pillow's "L"
    if size is not None and pixels.shape[:2] != size:
        plane = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels  # Pillow takes (H, W) for grayscale
        resized = np.asarray(Image.fromarray(plane).resize((size[1], size[0]), Image.Resampling.BILINEAR))
        pixels = resized[:, :, None] if resized.ndim == 2 else resized  # (h, w) -> (h, w, 1)
    if channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    return np.ascontiguousarray(pixels)
