"""Fetching a data file into a cache folder with pooch: mirrors tried in order, SHA-256 verified.

pooch streams each file to a temporary file in the cache folder, checks its SHA-256 and only then moves
it into place, so a reader never sees a partial or unverified file, and a file with the wrong bytes is
deleted. This module adds what pooch leaves to its caller: trying the next mirror when one fails, one
readable line per failure, the `CONVNET_MIRROR` override, and a progress display that needs no tqdm.

    >>> check_url("mirror", "ftp://example.org/")
    Traceback (most recent call last):
    ...
    ValueError: `mirror` must be an http:// or https:// base URL. Received: mirror='ftp://example.org/'
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from convnet._internal.checks import check_str

__all__ = ["DOWNLOAD_TIMEOUT_S", "DownloadError", "Progress", "check_url", "mirror_urls", "fetch"]

DOWNLOAD_TIMEOUT_S = 30.0  # seconds a connect or a read may stall before a mirror counts as down
_CHUNK = 1 << 20  # bytes per read while downloading


class DownloadError(OSError):
    """Every mirror failed to serve a file; `failures` holds one line per mirror: its URL and why."""

    def __init__(self, file_name: str, failures: Sequence[str]) -> None:
        tried = "\n".join(f"  - {f}" for f in failures)
        super().__init__(f"Downloading {file_name} failed:\n{tried}")  # one argument: no "[Errno ...]" prefix
        self.file_name, self.failures = file_name, list(failures)  # not `filename`: OSError would print it


def check_url(name: str, url: Any) -> str:
    """`url` if it is an http(s) base URL; ValueError naming `name` otherwise."""
    url = check_str(name, url)
    if not re.match(r"https?://[^/]", url):
        raise ValueError(f"`{name}` must be an http:// or https:// base URL. Received: {name}={url!r}")
    return url


def mirror_urls(default: Sequence[str]) -> tuple[str, ...]:
    """The base URLs to try, in order: $CONVNET_MIRROR alone when it is set, else `default`."""
    override = os.environ.get("CONVNET_MIRROR")
    return (check_url("CONVNET_MIRROR", override),) if override else tuple(default)


def fetch(filename: str, folder: Path, sha256: str, bases: Sequence[str]) -> Path:
    """Download `filename` into `folder` from the first base URL in `bases` that serves bytes with this SHA-256.

    Returns:
        The path of the verified file, folder / filename.

    Raises:
        DownloadError: every mirror failed (unreachable, an HTTP error, a timeout after DOWNLOAD_TIMEOUT_S,
            or bytes with another SHA-256, which are deleted); the message has one line per mirror.
        OSError: `folder` cannot be created.
    """
    folder.mkdir(parents=True, exist_ok=True)  # a cache that cannot be created is our problem, not a mirror's
    failures = []
    for base in bases:
        url = base.rstrip("/") + "/" + filename
        try:
            _retrieve(url, folder / filename, sha256)
            return folder / filename
        except (OSError, ValueError) as error:  # requests' errors are OSErrors; pooch's hash mismatch a ValueError
            failures.append(f"{url}: {_why(error, sha256)}")
    raise DownloadError(filename, failures)


def _retrieve(url: str, target: Path, sha256: str) -> None:
    import pooch

    downloader = pooch.HTTPDownloader(
        progressbar=Progress(url), chunk_size=_CHUNK, timeout=DOWNLOAD_TIMEOUT_S,
        headers={"Accept-Encoding": "identity"},  # the SHA-256 is of the .gz bytes: no transparent decoding
    )
    with _quiet(pooch.get_logger()):  # our progress line says what pooch's log line would
        pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=target.name, path=target.parent,
                       downloader=downloader)


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _why(error: BaseException, sha256: str) -> str:
    """One line saying why a download failed: the wrong checksum, the HTTP status, or the root cause."""
    if isinstance(error, ValueError):
        found = re.search(r"but got ([0-9a-fA-F]{64})", str(error))  # pooch's hash-mismatch message
        if found:
            return (f"the SHA-256 of the downloaded bytes is {found.group(1).lower()}, expected {sha256}; "
                    f"the file was discarded")
        return f"{type(error).__name__}: {error}"
    response = getattr(error, "response", None)  # requests.HTTPError carries the response
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP Error {response.status_code}: {response.reason}"
    root = error
    while root.__cause__ is not None or root.__context__ is not None:  # requests wraps urllib3 wraps socket
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    return f"{type(root).__name__}: {root}"


class Progress:
    """On a terminal, one stderr line redrawn in place: MB done / total, a bar and the percentage; otherwise
    one line per file, when its download starts.

    pooch drives it as it would a tqdm bar: it sets `total` once the server answers, calls `update` per
    chunk, then `reset`, `update(total)` and `close`.
    """

    _BAR = 20  # characters in the bar

    def __init__(self, url: str) -> None:
        self.url, self.done, self._total = url, 0, 0
        self.tty = sys.stderr is not None and sys.stderr.isatty()

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, total: int) -> None:  # the server has answered: the download starts
        self._total = total
        if not self.tty and sys.stderr is not None:
            size = f" ({total / 1e6:.1f} MB)" if total else ""
            print(f"Downloading {self.url}{size}", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done = min(self.done + n, self._total) if self._total else self.done + n
        if self.tty:
            print(f"\rDownloading {self.url}: {self._figures()}", end="", file=sys.stderr, flush=True)

    def _figures(self) -> str:
        """'12.3 / 26.4 MB [#########...........]  47%', or '12.3 MB' while the size is unknown."""
        if not self._total:
            return f"{self.done / 1e6:.1f} MB"
        filled = self._BAR * self.done // self._total
        return (f"{self.done / 1e6:.1f} / {self._total / 1e6:.1f} MB [{'#' * filled}{'.' * (self._BAR - filled)}] "
                f"{100 * self.done // self._total:3d}%")

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)
