"""Fuzzing the readers of untrusted bytes: `read_idx`, `load_image` and `load_model`.

Valid files are mutated with a seeded RNG (bit flips, truncations, insertions, deletions, header fields
set to odd values); every mutant must either be read into a well-formed result that agrees with an
independent parse of the same bytes, or be refused with a ValueError. Never another exception, never a
hang (each case runs under an alarm), never garbage (an IDX file whose header and data disagree is
refused). 480 cases in all, about 10 s.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import pickle
import random
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convnet
from convnet import layers
from convnet.datasets import load_image, read_idx

SECONDS_PER_CASE = 10  # far above the few milliseconds a case takes: only a hang reaches it


@contextlib.contextmanager
def deadline(seconds: float, case: str):
    def expire(signum, frame):
        raise TimeoutError(f"{case}: still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Generic byte mutations

def bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        index = rng.randrange(len(out))
        out[index] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncation(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def insertion(data: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(data) + 1)
    return data[:index] + rng.randbytes(rng.randint(1, 16)) + data[index:]


def deletion(data: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(data))
    return data[:index] + data[index + rng.randint(1, 16):]


def duplication(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + data[start:start + rng.randint(1, 64)] + data[start:]


MUTATIONS = [bit_flips, truncation, insertion, deletion, duplication]


# IDX files: read_idx

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()


def expected_idx(data: bytes) -> np.ndarray | None:
    """What a correct reader returns for these bytes (gzip by its magic bytes), or None: it must refuse.
    Written from the format's description, independently of convnet.datasets."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES or data[3] == 0:
        return None
    ndim, dtype = data[3], IDX_TYPES[data[2]]
    start = 4 + 4 * ndim
    if len(data) < start:
        return None
    dims = struct.unpack(f">{ndim}I", data[4:start])
    if len(data) - start != math.prod(dims) * dtype.itemsize:  # the declared size must be the data's size
        return None
    return np.frombuffer(data[start:], dtype).reshape(dims)


def idx_header_change(data: bytes, rng: random.Random) -> bytes:
    """One header field set to an odd value: the zero bytes, the type, the rank or a dimension."""
    out = bytearray(data)
    field = rng.choice(["zeros", "type", "rank", "dim"])
    if field == "zeros":
        out[rng.randrange(2)] = rng.randrange(1, 256)
    elif field == "type":
        out[2] = rng.choice([0x00, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0xFF])
    elif field == "rank":
        out[3] = rng.choice([0, 1, 2, 3, 4, 5, 255])
    else:
        axis = rng.randrange(data[3])
        value = rng.choice([0, 1, 2, 3, 7, 255, 65536, 2**31, 2**32 - 1])
        out[4 + 4 * axis:8 + 4 * axis] = struct.pack(">I", value)
    return bytes(out)


def idx_sources() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    arrays = {
        "images-u8": (rng.integers(0, 256, (5, 6, 4)), 0x08),
        "labels-u8": (rng.integers(0, 10, 30), 0x08),
        "i8": (rng.integers(-128, 128, (3, 7)), 0x09),
        "i16": (rng.integers(-2**15, 2**15, (4, 5)), 0x0B),
        "i32": (rng.integers(-2**31, 2**31, (2, 3, 2)), 0x0C),
        "f32": (rng.normal(size=(6,)), 0x0D),
        "f64": (rng.normal(size=(2, 2, 2, 2)), 0x0E),
    }
    sources = {}
    for name, (array, code) in arrays.items():
        raw = idx_bytes(array, code)
        sources[name] = raw
        sources[name + ".gz"] = gzip.compress(raw, mtime=0)
    return sources


def check_idx(data: bytes, case: str, tmp_path: Path | None = None) -> None:
    expected = expected_idx(data)
    source: object = io.BytesIO(data)
    if tmp_path is not None:  # through a real file too: the name is what the errors quote
        source = tmp_path / "fuzzed.idx"
        source.write_bytes(data)
    with deadline(SECONDS_PER_CASE, case):
        try:
            array = read_idx(source)
        except ValueError:
            assert expected is None, f"{case}: refused a well-formed file"
            return
    assert expected is not None, f"{case}: accepted a malformed file as {array.dtype} {array.shape}"
    assert array.shape == expected.shape and array.dtype == expected.dtype.newbyteorder("=")
    assert np.array_equal(array, expected, equal_nan=True)


def test_read_idx_fuzzed(tmp_path):
    """7 IDX files, raw and gzip, 14 mutants each: 196 cases. A gzip file is mutated as compressed bytes
    half of the time, and as IDX bytes then recompressed the other half (to reach the IDX checks)."""
    rng = random.Random(5)
    refused = accepted = 0
    for name, data in idx_sources().items():
        compressed = name.endswith(".gz")
        for index in range(14):
            mutate = rng.choice([*MUTATIONS, idx_header_change, idx_header_change])
            if compressed and (index % 2 or mutate is idx_header_change):
                mutant = gzip.compress(mutate(gzip.decompress(data), rng), mtime=0)
            else:
                mutant = mutate(data, rng) if mutate is not idx_header_change or not compressed else data
            case = f"{name} #{index} {mutate.__name__}"
            check_idx(mutant, case, tmp_path if index % 3 == 0 else None)
            accepted_now = expected_idx(mutant) is not None
            accepted += accepted_now
            refused += not accepted_now
    assert refused > 150 and accepted >= 1  # most mutants are malformed; a few are valid IDX files still


@pytest.mark.parametrize("case", ["declared-larger", "declared-smaller", "trailing-byte", "missing-byte",
                                  "huge-dimension", "zero-dimension"])
def test_read_idx_refuses_a_size_mismatch(case):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = idx_bytes(array, 0x08)
    mutant = {
        "declared-larger": good[:4] + struct.pack(">3I", 2, 3, 5) + good[16:],
        "declared-smaller": good[:4] + struct.pack(">3I", 2, 3, 3) + good[16:],
        "trailing-byte": good + b"\0",
        "missing-byte": good[:-1],
        "huge-dimension": good[:4] + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + good[16:],
        "zero-dimension": good[:4] + struct.pack(">3I", 2, 0, 4) + good[16:],
    }[case]
    for data in (mutant, gzip.compress(mutant, mtime=0)):
        with pytest.raises(ValueError, match=r"expected \d+ bytes.*found"):
            read_idx(io.BytesIO(data))


def test_read_idx_accepts_a_zero_size_array_that_says_so():
    data = bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 3, 0)
    assert read_idx(io.BytesIO(data)).shape == (3, 0)


# Images: load_image

def image_bytes(mode: str, fmt: str, size: tuple[int, int] = (7, 5), **save: object) -> bytes:
    rng = np.random.default_rng(len(mode) + len(fmt))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, size[::-1], dtype=np.uint16))
    else:
        channels = len(Image.new(mode, (1, 1)).getbands())
        pixels = rng.integers(0, 256, (*size[::-1], channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, "L" if channels == 1 else None)
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def image_sources() -> dict[str, bytes]:
    return {
        "L.png": image_bytes("L", "PNG"),
        "RGB.png": image_bytes("RGB", "PNG"),
        "RGBA.png": image_bytes("RGBA", "PNG"),
        "P.png": image_bytes("P", "PNG"),
        "I16.png": image_bytes("I;16", "PNG"),
        "1.png": image_bytes("1", "PNG"),
        "interlaced.png": image_bytes("RGB", "PNG", interlace=1),
        "RGB.jpg": image_bytes("RGB", "JPEG", quality=90),
        "L.jpg": image_bytes("L", "JPEG"),
        "progressive.jpg": image_bytes("RGB", "JPEG", progressive=True),
        "CMYK.jpg": image_bytes("CMYK", "JPEG"),
    }


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_change(data: bytes, rng: random.Random) -> bytes:
    """An IHDR field (width, height, bit depth, colour type, interlace) set to an odd value, with the
    chunk's CRC recomputed so that the change reaches the decoder."""
    if not data.startswith(b"\x89PNG"):
        return bit_flips(data, rng)
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    field = rng.choice(["width", "height", "depth", "colour", "interlace", "compression"])
    odd = {"width": [0, 1, 6, 8, 1000, 2**31 - 1], "height": [0, 1, 4, 6, 1000, 2**31 - 1],
           "depth": [0, 1, 2, 3, 4, 8, 16, 32], "colour": [0, 1, 2, 3, 4, 5, 6, 7],
           "interlace": [0, 1, 2], "compression": [1, 255]}[field]
    values = dict(width=width, height=height, depth=depth, colour=colour, compression=compression,
                  filtering=filtering, interlace=interlace)
    values[field] = rng.choice(odd)
    body = struct.pack(">IIBBBBB", *values.values())
    return data[:8] + png_chunk(b"IHDR", body) + data[33:]


def jpeg_header_change(data: bytes, rng: random.Random) -> bytes:
    """A start-of-frame field (precision, height, width, component count) set to an odd value."""
    index = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    if index < 0:
        return bit_flips(data, rng)
    out = bytearray(data)
    field = rng.choice(["precision", "height", "width", "components"])
    if field == "precision":
        out[index + 4] = rng.choice([0, 1, 12, 16, 255])
    elif field in ("height", "width"):
        offset = index + (5 if field == "height" else 7)
        out[offset:offset + 2] = struct.pack(">H", rng.choice([0, 1, 3, 4, 100, 65535]))
    else:
        out[index + 9] = rng.choice([0, 2, 4, 5, 255])
    return bytes(out)


def check_image(data: bytes, case: str, max_pixels: int | None = 10_000_000) -> np.ndarray | None:
    with deadline(SECONDS_PER_CASE, case):
        try:
            pixels = load_image(data, max_pixels=max_pixels)
        except ValueError:
            return None
    assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8, case
    assert pixels.ndim == 3 and pixels.shape[2] in (1, 3) and min(pixels.shape) >= 1, (case, pixels.shape)
    assert pixels.flags.c_contiguous, case
    with Image.open(io.BytesIO(data)) as image:  # the size the header declares
        declared = (image.height, image.width)
    assert pixels.shape[:2] in (declared, declared[::-1]), f"{case}: {pixels.shape} for a {declared} image"
    assert max_pixels is None or pixels.shape[0] * pixels.shape[1] <= max_pixels
    return pixels


def test_load_image_fuzzed():
    """11 PNG and JPEG files, 16 mutants each: 176 cases. A PNG carries CRCs and an Adler-32: a mutant
    that did not recompute them (all but the header changes) is refused or decodes to the same pixels.
    A JPEG has no checksum: only the shape can be checked."""
    rng = random.Random(7)
    for name, data in image_sources().items():
        png = name.endswith(".png")
        header_change = png_header_change if png else jpeg_header_change
        original = load_image(data)
        for index in range(16):
            mutate = rng.choice([*MUTATIONS, header_change, header_change])
            case = f"{name} #{index} {mutate.__name__}"
            pixels = check_image(mutate(data, rng), case)
            if png and pixels is not None and mutate is not header_change:
                assert np.array_equal(pixels, original), f"{case}: decoded different pixels"


def test_load_image_fuzzed_from_files_and_streams(tmp_path):
    rng = random.Random(8)
    for name, data in image_sources().items():
        mutant = rng.choice(MUTATIONS)(data, rng)
        path = tmp_path / name
        path.write_bytes(mutant)
        for source in (path, str(path), io.BytesIO(mutant)):
            try:
                load_image(source)
            except ValueError as error:
                if not isinstance(source, io.BytesIO):
                    assert str(error).startswith(str(path)), error


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header declares width x height 8-bit grayscale pixels, with the given IDAT data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_load_image_refuses_a_decompression_bomb_before_decoding():
    """9,000 x 9,000 zero pixels compress to 80 kB; a 60-byte header can declare 2^31 x 2^31."""
    rows = zlib.compress(b"\0" * (9_001 * 9_000), 9)
    bomb = png_declaring(9_000, 9_000, rows)
    with deadline(5, "bomb"):
        with pytest.raises(ValueError, match=r"declares 9000x9000 = 81000000 pixels, more than "
                                             r"max_pixels=67108864 \(a possible decompression bomb\)"):
            load_image(bomb)
        with pytest.raises(ValueError, match=r"decompression bomb"):
            load_image(png_declaring(2**31 - 1, 2**31 - 1), max_pixels=None)  # Pillow's own limit
        with pytest.raises(ValueError, match=r"more than max_pixels=100"):
            load_image(image_bytes("RGB", "PNG", size=(11, 10)), max_pixels=100)
    assert load_image(image_bytes("RGB", "PNG", size=(10, 10)), max_pixels=100).shape == (10, 10, 3)


@pytest.mark.parametrize("rows", [1, 4, 6, 1000])
def test_load_image_refuses_a_png_whose_data_and_header_disagree(rows):
    """Pillow zero-fills the rows a short PNG lacks, and ignores extra data: with the header's CRC made
    valid, a 5-row image declared as `rows` rows must be refused, not padded or cut."""
    good = image_bytes("L", "PNG", size=(7, 5))
    width, _ = struct.unpack(">II", good[16:24])
    changed = good[:8] + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, rows, 8, 0, 0, 0, 0)) + good[33:]
    with pytest.raises(ValueError, match=r"corrupt PNG: the image data holds \w+ bytes.*the header declares "
                                         f"{rows * (1 + width)}$"):
        load_image(changed)


def test_load_image_refuses_a_png_chunk_with_a_bad_crc():
    """A flipped bit in the image data's CRC: Pillow never checks that one, and decodes the file."""
    good = image_bytes("RGB", "PNG")
    start = good.index(b"IDAT")
    index = start + 4 + struct.unpack(">I", good[start - 4:start])[0]  # the CRC's first byte
    damaged = good[:index] + bytes([good[index] ^ 1]) + good[index + 1:]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(damaged))), np.asarray(Image.open(io.BytesIO(good))))
    with pytest.raises(ValueError, match=r"corrupt PNG: the 'IDAT' chunk at byte \d+ fails its CRC check"):
        load_image(damaged)


@pytest.mark.parametrize("data", [b"", png_declaring(0, 5), png_declaring(5, 0), png_declaring(0, 0)],
                         ids=["no-bytes", "zero-width", "zero-height", "zero-by-zero"])
def test_load_image_refuses_zero_size_images(data):
    with pytest.raises(ValueError, match=r"empty|not an image|corrupt"):
        load_image(data)


@pytest.mark.parametrize("mode", ["F", "LAB"])
def test_load_image_refuses_unsupported_modes(mode):
    data = image_bytes("RGB" if mode == "LAB" else "L", "TIFF")
    image = Image.open(io.BytesIO(data)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    with pytest.raises(ValueError, match=f"unsupported image mode '{mode}'"):
        load_image(buffer.getvalue())


# Model files: load_model

def model_bytes(tmp_path: Path) -> bytes:
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input(shape=(6, 6, 1)), layers.Conv2D(2, 3, activation="relu", name="conv"),
                                layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    model.metadata = {"class_names": ["a", "b", "c"]}
    model.save(tmp_path / "good.convnet")
    return (tmp_path / "good.convnet").read_bytes()


def described(model: convnet.Sequential) -> tuple:
    weights = [w.tolist() for layer in model.layers for w in layer.get_weights()]
    return (json.dumps(model.get_config(), sort_keys=True), json.dumps(model.compile_config(), sort_keys=True),
            json.dumps(model.metadata, sort_keys=True), weights)


@contextlib.contextmanager
def no_unpickling():
    """Make any attempt to unpickle (and so to run code from a file) fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to unpickle")

    saved = pickle.loads, pickle.load, pickle.Unpickler, torch.load
    pickle.loads = pickle.load = torch.load = refuse
    pickle.Unpickler = refuse
    try:
        yield
    finally:
        pickle.loads, pickle.load, pickle.Unpickler, torch.load = saved


def lookalike(data: bytes, rng: random.Random) -> bytes:
    """A digit replaced by another digit, or a letter by another letter: the JSON stays valid more often
    than not, and says something else (a filter count, an activation, a class name)."""
    out = bytearray(data)
    candidates = [i for i in range(8, len(out)) if chr(out[i]).isalnum()]
    for index in rng.sample(candidates, rng.randint(1, 2)):
        pool = b"0123456789" if chr(out[index]).isdigit() else b"abcdefghijklmnopqrstuvwxyz"
        out[index] = rng.choice([c for c in pool if c != out[index]])
    return bytes(out)


def test_load_model_fuzzed(tmp_path):
    """A small model file, 100 mutants: each is refused with a ValueError naming the file, or (if the
    mutation changed nothing that matters, e.g. header padding) loads as the very same model. Half the
    mutants hit the JSON header; a third of those keep it valid JSON (see `lookalike`)."""
    good = model_bytes(tmp_path)
    reference = described(convnet.load_model(tmp_path / "good.convnet"))
    (length,) = struct.unpack("<Q", good[:8])
    rng = random.Random(9)
    path = tmp_path / "fuzzed.convnet"
    refused = 0
    with no_unpickling():
        for index in range(100):
            mutate = rng.choice(MUTATIONS) if index % 6 != 1 else lookalike
            if index % 2:  # half the mutants in the 8 + length header bytes, where JSON is parsed
                mutant = mutate(good[:8 + length], rng) + good[8 + length:]
            else:
                mutant = mutate(good, rng)
            if mutant == good:
                continue
            path.write_bytes(mutant)
            case = f"#{index} {mutate.__name__}"
            with deadline(SECONDS_PER_CASE, case):
                try:
                    model = convnet.load_model(path, device="cpu")
                except ValueError as error:
                    assert str(error).startswith(f"{path}: "), f"{case}: {error}"
                    refused += 1
                    continue
            assert described(model) == reference, f"{case}: loaded a different model"
    assert refused >= 90
