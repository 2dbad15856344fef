"""The IDX file format (MNIST's), read with every header field and length checked.

The parser is hand-written on purpose: the format is a 4-byte magic number, one uint32 per dimension and
the raw data, so a reader is a few lines of `struct` and NumPy; the readers that exist (inside
torchvision's and Keras's MNIST loaders, the unmaintained idx2numpy) check little, so a truncated or wrong
file ends in an assert, a reshape error or wrong arrays. This one names the file and the problem for each
kind of damage (tests/test_datasets.py and tests/test_fuzz.py spoil files in each way), and reads in
bounded chunks so that a header declaring huge dimensions allocates nothing.
"""
from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import zlib
from typing import BinaryIO, Union

import numpy as np

from convnet.datasets.streams import open_binary

__all__ = ["read_idx", "IDX_IMAGES", "IDX_LABELS", "FIX_ADVICE"]

PathLike = Union[str, "os.PathLike[str]"]
Readable = BinaryIO | gzip.GzipFile  # what the parser reads from: the file, or its decompressed stream

# IDX data types, from the format's description on Yann LeCun's MNIST page; big-endian on disk.
_IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IDX_IMAGES, IDX_LABELS = 0x0803, 0x0801  # magic numbers 2051 (ubyte, 3 dims) and 2049 (ubyte, 1 dim)
FIX_ADVICE = "; delete it or provide a good copy"  # ends every message about a malformed data file
_CHUNK = 1 << 20  # bytes per read while decompressing


def read_idx(source: PathLike | BinaryIO, *, magic: int | None = None, shape: tuple[int, ...] | None = None,
             what: str = "") -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, with its header checked.

    The header is two zero bytes, a data-type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a
    big-endian uint32; the data follows, exactly prod(dims) items long.

    Args:
        source: a path, or a binary file object. A gzip stream (by its magic bytes 1f 8b) is decompressed;
            a name ending in ".gz" must be one.
        magic: if given, the magic number the header must hold (IDX_IMAGES, IDX_LABELS).
        shape: if given, the dimensions the header must declare.
        what: what the file holds ("images"), for the messages of those two checks.

    Returns:
        An array of shape dims, in native byte order (uint8 for the common 0x08 type), writable.

    Raises:
        ValueError: naming the file, for a truncated or corrupt gzip stream, a malformed header, a magic
            number or shape other than the ones required, or a data length that does not match the header.
        FileNotFoundError: the path does not exist.

        >>> import io
        >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
        >>> read_idx(io.BytesIO(header + bytes(range(6)))).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    raw, name, owned = open_binary(source)
    compressed = False
    try:
        start = raw.tell()
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(start)
        if name.endswith(".gz") and not compressed:
            raise ValueError(f"{name}: not a gzip file (it does not start with the gzip magic bytes 1f 8b)"
                             f"{FIX_ADVICE}")
        with gzip.GzipFile(fileobj=raw, mode="rb") if compressed else contextlib.nullcontext(raw) as stream:
            return _parse(stream, name, compressed, magic, shape, what)
    except EOFError:
        raise ValueError(f"{name}: the gzip stream ends early (the file is truncated){FIX_ADVICE}") from None
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError; zlib.error is bad deflate data
        if not compressed:
            raise
        raise ValueError(f"{name}: corrupt gzip data ({error}){FIX_ADVICE}") from None
    finally:
        if owned:
            raw.close()


def _parse(stream: Readable, name: str, compressed: bool, magic: int | None,
           shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    """The array in a (decompressed) IDX stream: header, then exactly the data it declares."""
    after = " after decompression" if compressed else ""
    dtype, dims = _parse_header(stream, name, after, magic, shape, what)
    header_size = 4 + 4 * len(dims)
    size = math.prod(dims) * dtype.itemsize
    data = _read_at_most(stream, size + 1)  # one byte more than needed reveals trailing garbage
    if len(data) != size:
        found = f"more than {header_size + size}" if len(data) > size else f"{header_size + len(data)}"
        raise ValueError(f"{name}: expected {header_size + size} bytes{after}, found {found} "
                         f"(truncated or corrupt){FIX_ADVICE}")
    array = np.frombuffer(data, dtype).reshape(dims)  # a bytearray buffer, so the array is writable
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _parse_header(stream: Readable, name: str, after: str, magic: int | None,
                  shape: tuple[int, ...] | None, what: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(data type, dimensions) from the header, checked against `magic` and `shape` when given."""
    header = stream.read(4)
    if len(header) < 4:
        raise ValueError(f"{name}: expected at least a 4-byte IDX header{after}, found {len(header)} bytes "
                         f"(truncated or corrupt){FIX_ADVICE}")
    if header[:2] != b"\0\0" or header[2] not in _IDX_DTYPES or header[3] == 0:
        raise ValueError(f"{name}: not an IDX file: expected 0x0000, a data type among "
                         f"{', '.join(f'0x{t:02X}' for t in _IDX_DTYPES)} and at least 1 dimension, "
                         f"found header bytes 0x{header.hex().upper()}{FIX_ADVICE}")
    found_magic = int.from_bytes(header, "big")
    if magic is not None and found_magic != magic:
        raise ValueError(f"{name}: expected magic number {magic} (unsigned bytes in {magic & 0xFF} "
                         f"dimensions: {what}), found {found_magic}{FIX_ADVICE}")
    ndim = header[3]
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise ValueError(f"{name}: expected a {4 + 4 * ndim}-byte IDX header{after}, found "
                         f"{4 + len(dims_bytes)} bytes (truncated or corrupt){FIX_ADVICE}")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    if shape is not None and dims != shape:
        raise ValueError(f"{name}: expected {what} of shape {shape}, the header says {dims}{FIX_ADVICE}")
    return _IDX_DTYPES[header[2]], dims


def _read_at_most(stream: Readable, limit: int) -> bytearray:
    """Up to `limit` bytes, read in chunks, so that a header declaring huge dimensions allocates nothing.

    Reading to the end of a gzip stream is what makes GzipFile check its CRC and length.
    """
    data = bytearray()
    while len(data) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data
