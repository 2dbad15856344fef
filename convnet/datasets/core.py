"""Datasets (Fashion-MNIST, MNIST, synthetic shapes), the two sample photos, and a safe loader for a user's
own images.

    >>> from convnet import datasets
    >>> datasets.list_datasets()
    ['fashion-mnist', 'mnist', 'shapes']
    >>> datasets.fashion_mnist.class_names[:3], datasets.fashion_mnist.input_shape
    (('T-shirt/top', 'Trouser', 'Pullover'), (28, 28, 1))
    >>> (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, y_train.shape, x_train.dtype                                # doctest: +SKIP
    ((60000, 28, 28), (60000,), dtype('uint8'))

`load_data` looks for the four standard gzip IDX files in, first to last: its `data_dir` argument (the
folder holding the files, or a parent holding `<name>/`); `$CONVNET_DATA/<name>/`; the cache
`~/.cache/convnet/<name>/` (`$CONVNET_CACHE/<name>/` when that is set), downloading missing files there.
Local folders are validated by format (magic numbers, counts, sizes, label range), not by checksum, so a
re-compressed copy of the official files is accepted; downloads are verified by SHA-256 as well.

Errors: a file that is present but malformed raises ValueError naming the file and the problem. Files
that are absent and cannot be downloaded (offline, `download=False`, every mirror failing) raise
`DatasetNotFoundError`, a FileNotFoundError (so an OSError), whose message lists the files, the folders
searched and how to provide them.
"""
from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import importlib.util
import io
import math
import os
import re
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Union

import numpy as np

from convnet._internal.checks import (
    check_bool,
    check_int,
    check_str,
    describe,
    int_tuple,
    unknown_name,
)
from convnet.datasets.shapes import ShapesDataset

__all__ = ["Dataset", "IdxDataset", "DatasetNotFoundError", "FILE_NAMES", "fashion_mnist", "mnist", "shapes",
           "list_datasets", "get_dataset", "read_idx", "load_sample_image", "list_sample_images", "load_image",
           "DEFAULT_MAX_PIXELS"]

PathLike = Union[str, "os.PathLike[str]"]
ImageSource = Union[PathLike, bytes, bytearray, memoryview, BinaryIO]

FILE_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DOWNLOAD_TIMEOUT_S = 30.0  # seconds a connect or a read may stall before a mirror counts as down
DEFAULT_MAX_PIXELS = 8192 * 8192  # load_image refuses larger images unless told otherwise (decompression bombs)

_CHUNK = 1 << 20  # bytes per read while decompressing or downloading
# IDX data types, from the format's description on Yann LeCun's MNIST page; big-endian on disk.
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_IMAGES, _IDX_LABELS = 0x0803, 0x0801  # magic numbers 2051 (ubyte, 3 dims) and 2049 (ubyte, 1 dim)
_FIX = "; delete it or provide a good copy"  # ends every message about a malformed data file


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded; the message says how to provide them."""


def read_idx(source: PathLike | BinaryIO) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, with its header checked.

    The header is two zero bytes, a data-type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a
    big-endian uint32; the data follows, exactly prod(dims) items long.

    Args:
        source: a path, or a binary file object. A gzip stream (by its magic bytes 1f 8b) is decompressed;
            a name ending in ".gz" must be one.

    Returns:
        An array of shape dims, in native byte order (uint8 for the common 0x08 type), writable.

    Raises:
        ValueError: naming the file, for a truncated or corrupt gzip stream, a malformed header or a
            data length that does not match the header.
        FileNotFoundError: the path does not exist.

        >>> import io
        >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
        >>> read_idx(io.BytesIO(header + bytes(range(6)))).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    return _read_idx(source)


def _read_idx(source: PathLike | BinaryIO, *, magic: int | None = None,
              shape: tuple[int, ...] | None = None, what: str = "") -> np.ndarray:
    """read_idx, optionally requiring a magic number and a shape (`what` names the contents in errors)."""
    raw, name, owned = _open_binary(source)
    compressed = False
    try:
        start = raw.tell()
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(start)
        if name.endswith(".gz") and not compressed:
            raise ValueError(f"{name}: not a gzip file (it does not start with the gzip magic bytes 1f 8b){_FIX}")
        with gzip.GzipFile(fileobj=raw, mode="rb") if compressed else contextlib.nullcontext(raw) as stream:
            return _parse_idx(stream, name, compressed, magic, shape, what)
    except EOFError:
        raise ValueError(f"{name}: the gzip stream ends early (the file is truncated){_FIX}") from None
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError; zlib.error is bad deflate data
        if not compressed:
            raise
        raise ValueError(f"{name}: corrupt gzip data ({error}){_FIX}") from None
    finally:
        if owned:
            raw.close()


def _open_binary(source: Any) -> tuple[BinaryIO, str, bool]:
    """(a seekable binary stream, the name errors use, whether we opened it) for a path or a file object."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        return open(name, "rb"), name, True
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        return (source, name, False) if _seekable(source) else (io.BytesIO(source.read()), name, True)
    raise TypeError(f"`source` must be a path or a binary file object. Received: source={describe(source)}")


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _parse_idx(stream: BinaryIO, name: str, compressed: bool, magic: int | None,
               shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    after = " after decompression" if compressed else ""
    header = stream.read(4)
    if len(header) < 4:
        raise ValueError(f"{name}: expected at least a 4-byte IDX header{after}, found {len(header)} bytes "
                         f"(truncated or corrupt){_FIX}")
    if header[:2] != b"\0\0" or header[2] not in _IDX_DTYPES or header[3] == 0:
        raise ValueError(f"{name}: not an IDX file: expected 0x0000, a data type among "
                         f"{', '.join(f'0x{t:02X}' for t in _IDX_DTYPES)} and at least 1 dimension, "
                         f"found header bytes 0x{header.hex().upper()}{_FIX}")
    found_magic = int.from_bytes(header, "big")
    if magic is not None and found_magic != magic:
        raise ValueError(f"{name}: expected magic number {magic} (unsigned bytes in {magic & 0xFF} "
                         f"dimensions: {what}), found {found_magic}{_FIX}")
    dtype, ndim = _IDX_DTYPES[header[2]], header[3]
    header_size = 4 + 4 * ndim
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise ValueError(f"{name}: expected a {header_size}-byte IDX header{after}, found "
                         f"{4 + len(dims_bytes)} bytes (truncated or corrupt){_FIX}")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    if shape is not None and dims != shape:
        raise ValueError(f"{name}: expected {what} of shape {shape}, the header says {dims}{_FIX}")
    size = math.prod(dims) * dtype.itemsize
    data = _read_at_most(stream, size + 1)  # one byte more than needed reveals trailing garbage
    if len(data) != size:
        found = f"more than {header_size + size}" if len(data) > size else f"{header_size + len(data)}"
        raise ValueError(f"{name}: expected {header_size + size} bytes{after}, found {found} "
                         f"(truncated or corrupt){_FIX}")
    array = np.frombuffer(data, dtype).reshape(dims)  # a bytearray buffer, so the array is writable
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _read_at_most(stream: BinaryIO, limit: int) -> bytearray:
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


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity, as a registry entry
class IdxDataset:
    """An image classification dataset stored as the four standard gzip IDX files (as MNIST).

    Args:
        name: the registry name and folder name, such as "fashion-mnist".
        class_names: one name per label; labels are 0 .. len(class_names) - 1.
        sha256: the SHA-256 of each downloaded file, keyed by file name (all four of FILE_NAMES).
        mirrors: base URLs tried in order; a file's URL is base + file name.
        train_size, test_size: the number of images in each split; files are checked against them.
        image_size: (height, width) of every image.

    Build your own to load a dataset in the same format (tests do, with tiny files):

        >>> tiny = IdxDataset("tiny", ["no", "yes"], sha256={f: "0" * 64 for f in FILE_NAMES},
        ...                   mirrors=["http://127.0.0.1:8000/"], train_size=6, test_size=4)
        >>> tiny
        IdxDataset('tiny': 2 classes, 6 train and 4 test images of 28x28)
    """

    name: str
    class_names: tuple[str, ...]
    sha256: Mapping[str, str] = field(repr=False)
    mirrors: tuple[str, ...] = field(repr=False)
    train_size: int = 60000
    test_size: int = 10000
    image_size: tuple[int, int] = (28, 28)

    def __post_init__(self) -> None:
        name = check_str("name", self.name)
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):  # it becomes a folder name
            raise ValueError(f"`name` must be lower-case letters, digits, '.', '_' or '-' (a folder name). "
                             f"Received: name={name!r}")
        if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence):
            raise TypeError(f"`class_names` must be a sequence of strings. "
                            f"Received: class_names={describe(self.class_names)}")
        classes = tuple(check_str(f"class_names[{i}]", c) for i, c in enumerate(self.class_names))
        if not 2 <= len(classes) <= 256 or len(set(classes)) != len(classes):
            raise ValueError(f"`class_names` must hold 2 to 256 distinct names (labels are bytes). "
                             f"Received: class_names={list(classes)}")
        if not isinstance(self.sha256, Mapping) or set(self.sha256) != set(FILE_NAMES):
            raise ValueError(f"`sha256` must map each of {', '.join(FILE_NAMES)} to its SHA-256. "
                             f"Received: sha256={describe(self.sha256)}")
        sha256 = {f: check_str(f"sha256[{f!r}]", self.sha256[f]).lower() for f in FILE_NAMES}
        bad = [f for f, h in sha256.items() if not re.fullmatch(r"[0-9a-f]{64}", h)]
        if bad:
            raise ValueError(f"`sha256` values must be 64 hexadecimal digits. "
                             f"Received: sha256[{bad[0]!r}]={self.sha256[bad[0]]!r}")
        if isinstance(self.mirrors, str) or not isinstance(self.mirrors, Sequence):
            raise TypeError(f"`mirrors` must be a sequence of base URLs. Received: mirrors={describe(self.mirrors)}")
        if not self.mirrors:
            raise ValueError("`mirrors` must hold at least one base URL. Received: mirrors=[]")
        mirrors = tuple(_check_url(f"mirrors[{i}]", m) for i, m in enumerate(self.mirrors))
        object.__setattr__(self, "class_names", classes)
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "mirrors", mirrors)
        object.__setattr__(self, "train_size", check_int("train_size", self.train_size, minimum=1))
        object.__setattr__(self, "test_size", check_int("test_size", self.test_size, minimum=1))
        object.__setattr__(self, "image_size", int_tuple("image_size", self.image_size, 2))

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"IdxDataset({self.name!r}: {self.num_classes} classes, {self.train_size} train and "
                f"{self.test_size} test images of {h}x{w})")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image as a model takes it: (28, 28, 1)."""
        return (*self.image_size, 1)

    @property
    def cache_dir(self) -> Path:
        """Where downloads go: $CONVNET_CACHE/<name>, or ~/.cache/convnet/<name>."""
        root = os.environ.get("CONVNET_CACHE") or os.path.join("~", ".cache", "convnet")
        return Path(root).expanduser() / self.name

    def load_data(self, data_dir: PathLike | None = None, download: bool = True
                  ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The train and test splits, as `keras.datasets.<name>.load_data()`.

        Args:
            data_dir: a folder holding the four files, or a parent holding `<name>/`. When given, the
                files must be there: nothing else is searched and nothing is downloaded.
            download: whether files missing from the cache may be downloaded into it.

        Returns:
            ((x_train, y_train), (x_test, y_test)): images uint8 (N, 28, 28), labels uint8 (N,), with
            N = train_size and test_size.

        Raises:
            ValueError: a file is present but malformed (the message names it and the problem).
            DatasetNotFoundError: the files are not found and cannot be downloaded; the message lists
                the files, the folders searched and the ways to provide them.
            TypeError: `data_dir` is not a path, or `download` not a bool.

            >>> (x_train, y_train), (x_test, y_test) = mnist.load_data()  # doctest: +SKIP
        """
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"`data_dir` must be a path (str or os.PathLike) or None. "
                            f"Received: data_dir={describe(data_dir)}")
        download = check_bool("download", download)
        if data_dir is not None:
            folder = Path(data_dir).expanduser()
            searched = [folder, folder / self.name]
            found = next((f for f in searched if self._complete(f)), None)
            if found is None:
                raise DatasetNotFoundError(self._how_to(searched, "`data_dir` was given, so nothing else "
                                                                  "was searched and nothing downloaded."))
            return self._read_folder(found)
        searched: list[Path | str] = [f"$CONVNET_DATA/{self.name} (CONVNET_DATA is not set)"]
        if os.environ.get("CONVNET_DATA"):
            folder = Path(os.environ["CONVNET_DATA"]).expanduser() / self.name
            searched = [folder]
            if self._complete(folder):
                return self._read_folder(folder)
        return self._read_cache(download, searched)

    def _complete(self, folder: Path) -> bool:
        return all((folder / f).is_file() for f in FILE_NAMES)

    def _read_folder(self, folder: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        arrays = [self._read_file(folder / f) for f in FILE_NAMES]
        return (arrays[0], arrays[1]), (arrays[2], arrays[3])

    def _read_file(self, path: Path) -> np.ndarray:
        """One of the four files, checked against this dataset: magic, shape, length, label range."""
        count = self.train_size if path.name.startswith("train") else self.test_size
        if "images" in path.name:
            return _read_idx(path, magic=_IDX_IMAGES, shape=(count, *self.image_size), what="images")
        labels = _read_idx(path, magic=_IDX_LABELS, shape=(count,), what="labels")
        if labels.size and labels.max() >= self.num_classes:
            index = int(np.argmax(labels >= self.num_classes))
            raise ValueError(f"{path}: labels must be in [0, {self.num_classes}) ({self.num_classes} classes), "
                             f"found {labels[index]} at index {index}{_FIX}")
        return labels

    def _read_cache(self, download: bool, searched: list[Path | str]
                    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        cache = self.cache_dir
        searched = [*searched, cache]
        missing = [f for f in FILE_NAMES if not (cache / f).is_file()]
        if missing and not download:
            raise DatasetNotFoundError(self._how_to(searched, "Nothing was downloaded: download=False."))
        arrays = []
        for filename in FILE_NAMES:
            path = cache / filename
            if path.is_file():
                try:
                    arrays.append(self._read_file(path))
                    continue
                except ValueError as error:
                    if not download:
                        raise
                    warnings.warn(f"{str(error).removesuffix(_FIX)}; the cached copy is unusable, "
                                  f"downloading it again", stacklevel=3)
                    path.unlink()
            self._download(filename, searched)
            arrays.append(self._read_file(path))
        return (arrays[0], arrays[1]), (arrays[2], arrays[3])

    def _download(self, filename: str, searched: list[Path | str]) -> None:
        """Fetch one file into the cache from the first mirror that serves the right bytes.

        The bytes go to a temporary file in the cache folder, are flushed to disk and checked, then
        os.replace moves them into place: a reader never sees a partial file.
        """
        import http.client
        import urllib.error

        folder = self.cache_dir
        folder.mkdir(parents=True, exist_ok=True)
        failures = []
        for base in self._mirrors():
            url = base.rstrip("/") + "/" + filename
            try:
                digest = _fetch(url, folder / filename, self.sha256[filename])
            except urllib.error.HTTPError as error:
                failures.append(f"{url}: {error}")
                continue
            except urllib.error.URLError as error:
                failures.append(f"{url}: {error.reason}")
                continue
            except (http.client.HTTPException, OSError) as error:  # timeouts, resets, a short response
                failures.append(f"{url}: {type(error).__name__}: {error}")
                continue
            if digest is None:
                return
            failures.append(f"{url}: the SHA-256 of the downloaded bytes is {digest}, expected "
                            f"{self.sha256[filename]}; the file was discarded")
        tried = "\n".join(f"  - {f}" for f in failures)
        raise DatasetNotFoundError(self._how_to(searched, f"Downloading {filename} failed:\n{tried}"))

    def _how_to(self, searched: Sequence[Path | str], reason: str) -> str:
        folders = "\n".join(f"  - {f} ({self._state(f)})" if isinstance(f, Path) else f"  - {f}"
                            for f in searched)
        return (f"{self.name}: the files {', '.join(FILE_NAMES)} were not found.\n"
                f"Folders searched:\n{folders}\n{reason}\n"
                f"To provide the files, do one of:\n"
                f"  - pass data_dir=<folder holding the four files> (or its parent holding {self.name}/) "
                f"to load_data;\n"
                f"  - set CONVNET_DATA to a folder holding {self.name}/ with the four files;\n"
                f"  - copy the four files into {self.cache_dir}/;\n"
                f"  - connect to the internet and call load_data(download=True); "
                f"mirrors: {', '.join(self._mirrors())}.")

    def _mirrors(self) -> tuple[str, ...]:
        override = os.environ.get("CONVNET_MIRROR")
        return (_check_url("CONVNET_MIRROR", override),) if override else self.mirrors

    def _state(self, folder: Path) -> str:
        if not folder.is_dir():
            return "does not exist"
        missing = [f for f in FILE_NAMES if not (folder / f).is_file()]
        return f"missing {', '.join(missing)}" if missing else "holds all four"


def _check_url(name: str, url: Any) -> str:
    url = check_str(name, url)
    if not re.match(r"https?://[^/]", url):
        raise ValueError(f"`{name}` must be an http:// or https:// base URL. Received: {name}={url!r}")
    return url


def _fetch(url: str, target: Path, sha256: str) -> str | None:
    """Download `url` to `target` atomically; None on success, else the wrong SHA-256 (nothing is kept)."""
    import urllib.request

    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0)
            progress = _Progress(url, total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.update(len(chunk))
            progress.close()
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            os.unlink(temporary)
            return digest.hexdigest()
        os.replace(temporary, target)
        return None
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class _Progress:
    """Bytes done / total on one stderr line, redrawn in place on a terminal; one line per file otherwise."""

    def __init__(self, url: str, total: int) -> None:
        self.url, self.total, self.done = url, total, 0
        self.tty = sys.stderr is not None and sys.stderr.isatty()
        if not self.tty and sys.stderr is not None:
            size = f" ({total / 1e6:.1f} MB)" if total else ""
            print(f"Downloading {url}{size}", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.tty:
            total = f" / {self.total / 1e6:.1f}" if self.total else ""
            print(f"\rDownloading {self.url}: {self.done / 1e6:.1f}{total} MB", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


class Dataset(Protocol):
    """What a registered dataset provides: IdxDataset (files) and shapes.ShapesDataset (drawn) both do."""

    name: str
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def load_data(self, data_dir: PathLike | None = None
                  ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]: ...


_DATASETS: dict[str, Dataset] = {}


def _register(dataset: Dataset) -> Dataset:
    _DATASETS[dataset.name] = dataset
    return dataset


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell-style `pattern`, sorted.

        >>> list_datasets("*mnist")
        ['fashion-mnist', 'mnist']
    """
    pattern = check_str("pattern", pattern)
    return sorted(fnmatch.filter(_DATASETS, pattern.lower()))


def get_dataset(name: str, argument: str = "name") -> Dataset:
    """The registered dataset called `name` (case-insensitive; "fashion_mnist" works too); `argument`
    names the caller's argument in errors.

    Raises:
        ValueError: unknown name; the message suggests the closest names.

        >>> get_dataset("MNIST").num_classes
        10
    """
    key = check_str(argument, name).lower().replace("_", "-")
    if key not in _DATASETS:
        raise unknown_name("dataset", name, _DATASETS, argument=argument)
    return _DATASETS[key]


fashion_mnist = _register(IdxDataset(
    "fashion-mnist",
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    sha256={"train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"},
    mirrors=["https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
             "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
))

mnist = _register(IdxDataset(
    "mnist",
    [str(digit) for digit in range(10)],
    sha256={"train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
    mirrors=["https://storage.googleapis.com/cvdf-datasets/mnist/"],
))

shapes = _register(ShapesDataset())  # drawn on demand (convnet/shapes.py); data_dir is ignored


_SAMPLE_IMAGES = ("china.jpg", "flower.jpg")


def list_sample_images() -> list[str]:
    """Names accepted by `load_sample_image`.

        >>> list_sample_images()
        ['china.jpg', 'flower.jpg']
    """
    return list(_SAMPLE_IMAGES)


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
    name = check_str("name", name)
    if name not in _SAMPLE_IMAGES:
        raise unknown_name("sample image", name, _SAMPLE_IMAGES, argument="name")
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError(f"load_sample_image({name!r}) reads the photo that ships with scikit-learn, "
                          f"which is not installed: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "images" / name
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
    from PIL import Image, ImageOps

    if size is not None:
        size = int_tuple("size", size, 2)
    if channels is not None and check_int("channels", channels) not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grayscale), 3 (RGB) or None. Received: channels={channels}")
    if max_pixels is not None:
        max_pixels = check_int("max_pixels", max_pixels, minimum=1)
    stream, name = _open_image(source)
    start = 0 if isinstance(stream, str) else stream.tell()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check below says more
            image = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{name}: refused as a possible decompression bomb: {error}") from None
    except Exception as error:  # UnidentifiedImageError, or whatever a malformed header makes a plugin raise
        raise ValueError(f"{name}: not an image Pillow can read ({type(error).__name__}: {error})") from None
    with image:
        width, height = image.size
        if width == 0 or height == 0:
            raise ValueError(f"{name}: the image is empty ({width}x{height} pixels)")
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(f"{name}: the image declares {width}x{height} = {width * height} pixels, more than "
                             f"max_pixels={max_pixels} (a possible decompression bomb); pass a larger "
                             f"max_pixels if you trust the file")
        try:
            image.load()  # the whole decode happens here: a truncated file fails now, not later
            if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag; 1 is upright
                image = ImageOps.exif_transpose(image)
        except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, EOFError, struct.error...
            raise ValueError(f"{name}: corrupt or truncated image ({type(error).__name__}: {error})") from None
        if image.format == "PNG":
            _check_png(_read_back(stream, start), name)
        pixels = _pixels(image, name)  # (H, W) or (H, W, 3)
    if channels == 1 and pixels.ndim == 3:
        r, g, b = (pixels[..., i].astype(np.uint32) for i in range(3))
        pixels = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)  # Pillow's "L" luma
    if size is not None and pixels.shape[:2] != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]  # (H, W) -> (H, W, 1)
    if channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    return np.ascontiguousarray(pixels)


def _open_image(source: Any) -> tuple[str | BinaryIO, str]:
    """(what Image.open takes, the name errors use) for a path, bytes or a binary file object."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"load_image: no such file: {path!r}")
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a folder, not an image file")
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: the file is empty (0 bytes), not an image")
        return path, path  # Pillow opens and closes the file itself
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"<{len(data)} bytes>"
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        if _seekable(source):
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


def _read_back(stream: str | BinaryIO, start: int) -> bytes:
    """The whole file that Image.open read, from its path or from `start` in its stream."""
    if isinstance(stream, str):
        with open(stream, "rb") as handle:
            return handle.read()
    position = stream.tell()
    stream.seek(start)
    data = stream.read()
    stream.seek(position)
    return data


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (PNG spec, 11.2.2)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png(data: bytes, name: str) -> None:
    """What Pillow does not check: every chunk's CRC (Pillow skips the image data's), and image data that
    inflates to exactly the size the header declares (Pillow zero-fills the rows of data that ends early)."""
    position, inflater, inflated, expected = 8, zlib.decompressobj(), 0, None
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        crc = data[position + 8 + length:position + 12 + length]
        if len(body) < length or len(crc) < 4 or zlib.crc32(kind + body) != int.from_bytes(crc, "big"):
            raise ValueError(f"{name}: corrupt PNG: the {kind.decode('latin-1')!r} chunk at byte {position} "
                             f"fails its CRC check{' (truncated)' if len(crc) < 4 else ''}")
        if kind == b"IHDR" and length == 13:
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            bits = depth * _PNG_CHANNELS.get(colour, 1)
            passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
            expected = sum(-(-(height - y) // dy) * (1 + (-(-(width - x) // dx) * bits + 7) // 8)  # filter byte + row
                           for x, y, dx, dy in passes if width > x and height > y)
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


def _pixels(image: Any, name: str) -> np.ndarray:
    """uint8 (H, W) for grayscale modes, (H, W, 3) for colour ones; alpha composited onto black."""
    mode = image.mode
    if mode.startswith("I"):  # 32-bit "I" and 16-bit "I;16*": assume 16-bit data, scale to 8 bits
        values = np.asarray(image).astype(np.float64)
        return np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
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
    if image.mode in ("LA", "RGBA"):
        color, alpha = pixels[..., :-1].astype(np.uint32), pixels[..., -1:].astype(np.uint32)
        pixels = ((color * alpha + 127) // 255).astype(np.uint8)  # over black: (H, W, C - 1)
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]  # (H, W, 1) -> (H, W)
    return pixels
