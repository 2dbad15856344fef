"""`IdxDataset`: an image classification dataset stored as the four standard gzip IDX files (as MNIST),
found on disk or downloaded into a cache.

`load_data` looks for the four files in, first to last: its `data_dir` argument (the folder holding the
files, or a parent holding `<name>/`); `$CONVNET_DATA/<name>/`; the cache `~/.cache/convnet/<name>/`
(`$CONVNET_CACHE/<name>/` when that is set), downloading missing files there (download.py: mirrors in
order, SHA-256 verified). Local folders are validated by format (magic numbers, counts, sizes, label
range), not by checksum, so a re-compressed copy of the official files is accepted.

Errors: a file that is present but malformed raises ValueError naming the file and the problem. Files
that are absent and cannot be downloaded (offline, `download=False`, every mirror failing) raise
`DatasetNotFoundError`, a FileNotFoundError (so an OSError), whose message lists the files, the folders
searched and how to provide them.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from convnet._internal.checks import check_bool, check_int, check_str, describe, int_tuple
from convnet.datasets import download as downloads  # through the module: tests patch downloads.fetch to go offline
from convnet.datasets.base import ImageClassDataset
from convnet.datasets.idx import FIX_ADVICE, IDX_IMAGES, IDX_LABELS, read_idx

__all__ = ["IdxDataset", "DatasetNotFoundError", "FILE_NAMES"]

PathLike = Union[str, "os.PathLike[str]"]
Splits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # ((x_train, y_train), (x_test, y_test))

FILE_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded; the message says how to provide them."""


@dataclass(frozen=True, eq=False, repr=False)  # eq=False: hashable by identity, as a registry entry
class IdxDataset(ImageClassDataset):
    """An image classification dataset stored as the four standard gzip IDX files (as MNIST).

    Args:
        name: the registry name and folder name, such as "fashion-mnist".
        class_names: one name per label; labels are 0 .. len(class_names) - 1.
        sha256: the SHA-256 of each downloaded file, keyed by file name (all four of FILE_NAMES).
        mirrors: base URLs tried in order; a file's URL is base + file name.
        train_size: the number of training images; the files are checked against it.
        test_size: the number of test images; the files are checked against it.
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
        object.__setattr__(self, "class_names", _check_class_names(self.class_names))
        object.__setattr__(self, "sha256", _check_sha256(self.sha256))
        object.__setattr__(self, "mirrors", _check_mirrors(self.mirrors))
        object.__setattr__(self, "train_size", check_int("train_size", self.train_size, minimum=1))
        object.__setattr__(self, "test_size", check_int("test_size", self.test_size, minimum=1))
        object.__setattr__(self, "image_size", int_tuple("image_size", self.image_size, 2))

    @property
    def cache_dir(self) -> Path:
        """Where downloads go: $CONVNET_CACHE/<name>, or ~/.cache/convnet/<name>."""
        root = os.environ.get("CONVNET_CACHE") or os.path.join("~", ".cache", "convnet")
        return Path(root).expanduser() / self.name

    def load_data(self, data_dir: PathLike | None = None, download: bool = True) -> Splits:
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
            candidates = [folder, folder / self.name]
            found = next((f for f in candidates if self._complete(f)), None)
            if found is None:
                raise DatasetNotFoundError(self._how_to(candidates, "`data_dir` was given, so nothing else "
                                                                  "was searched and nothing downloaded."))
            return self._read_folder(found)
        searched: list[Path | str] = [f"$CONVNET_DATA/{self.name} (CONVNET_DATA is not set)"]
        if os.environ.get("CONVNET_DATA"):
            folder = Path(os.environ["CONVNET_DATA"]).expanduser() / self.name
            searched = [folder]
            if self._complete(folder):
                return self._read_folder(folder)
        return self._read_cache(download, searched)

    def read_file(self, path: PathLike) -> np.ndarray:
        """One of the four files (which one, by its name), checked against this dataset: magic number,
        shape, length and, for labels, their range.

        Raises:
            ValueError: naming the file and the problem.
        """
        path = Path(path)
        count = self.train_size if path.name.startswith("train") else self.test_size
        if "images" in path.name:
            return read_idx(path, magic=IDX_IMAGES, shape=(count, *self.image_size), what="images")
        labels = read_idx(path, magic=IDX_LABELS, shape=(count,), what="labels")
        if labels.size and labels.max() >= self.num_classes:
            index = int(np.argmax(labels >= self.num_classes))
            raise ValueError(f"{path}: labels must be in [0, {self.num_classes}) ({self.num_classes} classes), "
                             f"found {labels[index]} at index {index}{FIX_ADVICE}")
        return labels

    def _complete(self, folder: Path) -> bool:
        return all((folder / f).is_file() for f in FILE_NAMES)

    def _read_folder(self, folder: Path) -> Splits:
        arrays = [self.read_file(folder / f) for f in FILE_NAMES]
        return (arrays[0], arrays[1]), (arrays[2], arrays[3])

    def _read_cache(self, may_download: bool, searched: Sequence[Path | str]) -> Splits:
        """The four files from the cache, each downloaded first if it is missing or unusable."""
        cache = self.cache_dir
        searched = [*searched, cache]
        if not may_download and not self._complete(cache):
            raise DatasetNotFoundError(self._how_to(searched, "Nothing was downloaded: download=False."))
        arrays = []
        for filename in FILE_NAMES:  # a loop, not a comprehension: the warning's stacklevel counts frames
            arrays.append(self._read_or_fetch(cache / filename, may_download, searched))
        return (arrays[0], arrays[1]), (arrays[2], arrays[3])

    def _read_or_fetch(self, path: Path, may_download: bool, searched: Sequence[Path | str]) -> np.ndarray:
        """One file of the cache, downloaded when it is missing, and again when the cached copy is unusable."""
        if path.is_file():
            try:
                return self.read_file(path)
            except ValueError as error:
                if not may_download:
                    raise
                warnings.warn(f"{str(error).removesuffix(FIX_ADVICE)}; the cached copy is unusable, "
                              f"downloading it again", stacklevel=4)  # the caller of load_data
                path.unlink()
        try:
            downloads.fetch(path.name, path.parent, self.sha256[path.name], downloads.mirror_urls(self.mirrors))
        except downloads.DownloadError as error:
            raise DatasetNotFoundError(self._how_to(searched, str(error))) from None
        return self.read_file(path)

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
                f"mirrors: {', '.join(downloads.mirror_urls(self.mirrors))}.")

    def _state(self, folder: Path) -> str:
        if not folder.is_dir():
            return "does not exist"
        missing = [f for f in FILE_NAMES if not (folder / f).is_file()]
        return f"missing {', '.join(missing)}" if missing else "holds all four"


def _check_class_names(class_names: object) -> tuple[str, ...]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"`class_names` must be a sequence of strings. Received: class_names={describe(class_names)}")
    classes = tuple(check_str(f"class_names[{i}]", c) for i, c in enumerate(class_names))
    if not 2 <= len(classes) <= 256 or len(set(classes)) != len(classes):
        raise ValueError(f"`class_names` must hold 2 to 256 distinct names (labels are bytes). "
                         f"Received: class_names={list(classes)}")
    return classes


def _check_sha256(sha256: object) -> dict[str, str]:
    if not isinstance(sha256, Mapping) or set(sha256) != set(FILE_NAMES):
        raise ValueError(f"`sha256` must map each of {', '.join(FILE_NAMES)} to its SHA-256. "
                         f"Received: sha256={describe(sha256)}")
    digests = {f: check_str(f"sha256[{f!r}]", sha256[f]).lower() for f in FILE_NAMES}
    bad = [f for f, h in digests.items() if not re.fullmatch(r"[0-9a-f]{64}", h)]
    if bad:
        raise ValueError(f"`sha256` values must be 64 hexadecimal digits. Received: sha256[{bad[0]!r}]={sha256[bad[0]]!r}")
    return digests


def _check_mirrors(mirrors: object) -> tuple[str, ...]:
    if isinstance(mirrors, str) or not isinstance(mirrors, Sequence):
        raise TypeError(f"`mirrors` must be a sequence of base URLs. Received: mirrors={describe(mirrors)}")
    if not mirrors:
        raise ValueError("`mirrors` must hold at least one base URL. Received: mirrors=[]")
    return tuple(downloads.check_url(f"mirrors[{i}]", m) for i, m in enumerate(mirrors))
