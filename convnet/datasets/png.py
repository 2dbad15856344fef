"""The PNG integrity checks that Pillow leaves out.

They stay hand-written because the image libraries leave them out: Pillow never checks the CRC of the
image data (IDAT) chunks, so a flipped bit there decodes without an error; and when the header declares
more rows than the data holds, it fills the missing rows with zeros, so the file becomes a picture with
black rows that a classifier scores as if it were real (tests/test_fuzz.py builds both). Checking
every CRC and the inflated size against the header costs one bounded pass of zlib over the file.
"""
from __future__ import annotations

import struct
import zlib

__all__ = ["check_png"]

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (PNG spec, 11.2.2)
# Adam7 passes as (x start, y start, x step, y step) (PNG spec, 8.2)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def check_png(data: bytes, name: str) -> None:
    """Refuse a PNG file whose chunks fail their CRC or whose image data does not inflate to exactly the
    size the header declares.

    Raises:
        ValueError: naming `name`, the chunk and the problem.
    """
    position, inflater, inflated, expected = 8, zlib.decompressobj(), 0, None
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        crc = data[position + 8 + length:position + 12 + length]
        if len(body) < length or len(crc) < 4 or zlib.crc32(kind + body) != int.from_bytes(crc, "big"):
            raise ValueError(f"{name}: corrupt PNG: the {kind.decode('latin-1')!r} chunk at byte {position} "
                             f"fails its CRC check{' (truncated)' if len(crc) < 4 else ''}")
        if kind == b"IHDR" and length == 13:
            expected = _image_data_size(body)
        elif kind == b"IDAT" and expected is not None:
            try:
                inflated += len(inflater.decompress(body, expected + 1 - inflated))  # bounded: no bomb
            except zlib.error as error:
                raise ValueError(f"{name}: corrupt PNG image data ({error})") from None
            if inflater.unconsumed_tail or inflated > expected:
                break
        elif kind == b"IEND":
            break
        position += 12 + length
    if expected is not None and (inflated != expected or not inflater.eof):
        raise ValueError(f"{name}: corrupt PNG: the image data holds {inflated if inflated <= expected else 'more'} "
                         f"bytes{'' if inflater.eof else ' and does not end properly'}, the header declares "
                         f"{expected}")


def _image_data_size(ihdr: bytes) -> int:
    """Bytes the image data inflates to, from the 13-byte IHDR body: per row of each pass, a filter byte
    and the row's bits rounded up to bytes."""
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    return sum(-(-(height - y) // dy) * (1 + (-(-(width - x) // dx) * bits + 7) // 8)
               for x, y, dx, dy in passes if width > x and height > y)
