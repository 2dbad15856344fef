"""Opening what a reader is given (a path or a binary file object) as a seekable binary stream, with the
name its error messages use. Shared by the IDX parser and the image loader."""
from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

from convnet._internal.checks import describe


def seekable(stream: Any) -> bool:
    """Whether `stream` can seek (a pipe, a socket or an upload wrapper often cannot)."""
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def open_binary(source: Any) -> tuple[BinaryIO, str, bool]:
    """(a seekable binary stream, the name errors use, whether we opened it and so must close it) for a
    path or a binary file object; an unseekable stream is read into memory."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        return open(name, "rb"), name, True
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        return (source, name, False) if seekable(source) else (io.BytesIO(source.read()), name, True)
    raise TypeError(f"`source` must be a path or a binary file object. Received: source={describe(source)}")
