"""Reading a folder dataset's images in parallel: the scan that checks every file once (and keeps the
pixels when they fit the memory budget), and the stream of batches decoded ahead of their use.

Threads, not processes: Pillow and zlib release the GIL while they decode and inflate, and a thread hands
its NumPy array back without pickling. For 28x28 PNGs the Python around each decode dominates, so a
second thread adds little on two cores (benchmarks/folder_pipeline.py measures it); for photos, decoding
dominates and the threads scale. Work goes out in chunks of files, so that the per-task overhead of the
pool stays small next to the decoding.

Every result is keyed by the file's position, never by the order in which threads finish: the same
files give the same arrays however the threads run.

    >>> reader = ImageReader(channels=1, image_size=(2, 2))
    >>> reader.failure("a.png", ValueError("a.png: the file is empty (0 bytes), not an image"))
    'the file is empty (0 bytes), not an image'
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from convnet.datasets.images import DEFAULT_MAX_PIXELS
from convnet.datasets.local.decoding import decode
from convnet.datasets.local.resizing import fit_image

__all__ = ["ImageReader", "Scan", "scan", "stream", "default_workers"]

Result = np.ndarray | str | None  # pixels, the reason a file failed, or None (checked, not kept)


def default_workers() -> int:
    """Threads to decode with: the CPUs this process may run on, at most 8."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


@dataclass(frozen=True)
class ImageReader:
    """How one file becomes one image: decoded as TensorFlow decodes (decoding.py), then fitted to
    `image_size` as Keras resizes (resizing.py)."""

    channels: int  # 1, 3 or 4
    image_size: tuple[int, int]  # (height, width)
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def read(self, path: str) -> np.ndarray:
        """(H, W, C) at image_size: uint8 when no resampling happened, else float32."""
        pixels = decode(path, self.channels, self.max_pixels)
        return fit_image(pixels, self.image_size, self.interpolation, self.crop_to_aspect_ratio,
                         self.pad_to_aspect_ratio)

    def check(self, path: str) -> None:
        """Decode the file whole and drop the pixels: every check of `read`, without the resizing."""
        decode(path, self.channels, self.max_pixels)

    @staticmethod
    def failure(path: str, error: Exception) -> str:
        """The reason a file failed, without the path that the loader's message starts with."""
        if isinstance(error, FileNotFoundError):
            return "no such file (a broken link, or removed after the listing)"
        text = str(error)
        return text[len(path) + 2:] if text.startswith(f"{path}: ") else f"{type(error).__name__}: {text}"

    def results(self, paths: Sequence[str], positions: Sequence[int], keep: bool | Callable[[], bool]) -> list[Result]:
        """One chunk's work, in a worker thread: per position, the pixels (when `keep` says so), None
        (checked, not kept) or the reason the file failed."""
        out: list[Result] = []
        for position in positions:
            path = paths[position]
            try:
                if keep() if callable(keep) else keep:
                    out.append(self.read(path))
                else:
                    self.check(path)
                    out.append(None)
            except (ValueError, OSError) as error:  # every failure of a file, never of the program
                out.append(self.failure(path, error))
        return out


@dataclass
class Scan:
    """What the scan found: `bad` maps a position to the reason its file failed; `cache` holds the pixels of
    every position (bad ones left zero) when they fitted the budget, else None."""

    bad: dict[int, str]
    cache: np.ndarray | None  # (n, H, W, C), uint8 or float32


def scan(reader: ImageReader, paths: Sequence[str], budget: int, workers: int, chunk: int = 128) -> Scan:
    """Decode every file once, in parallel, and keep the pixels if `budget` bytes hold them.

    The cache starts as uint8 (one byte a value). If an image comes back resampled (float32, since
    Keras's resized pixels are not integers), the cache becomes float32 if four bytes a value still fit
    the budget; otherwise it is dropped and the scan goes on checking only (the dataset then streams).
    """
    n = len(paths)
    height, width = reader.image_size
    values = n * height * width * reader.channels
    cache = np.zeros((n, height, width, reader.channels), np.uint8) if values <= budget else None
    keeping = [cache is not None]  # read by the workers: drop to False to stop keeping pixels
    bad: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convnet-scan") as pool:
        starts = range(0, n, chunk)
        futures = [pool.submit(reader.results, paths, range(start, min(start + chunk, n)), lambda: keeping[0])
                   for start in starts]
        for start, future in zip(starts, futures):
            for position, result in enumerate(future.result(), start):
                if isinstance(result, str):
                    bad[position] = result
                elif result is not None and keeping[0]:
                    if result.dtype != np.uint8 and cache is not None and cache.dtype == np.uint8:
                        cache = cache.astype(np.float32) if values * 4 <= budget else None
                        keeping[0] = cache is not None
                    if cache is not None:
                        cache[position] = result
    return Scan(bad, cache)


def stream(reader: ImageReader, paths: Sequence[str], batches: Iterable[np.ndarray], workers: int,
           prefetch: int) -> Iterator[tuple[np.ndarray, list[Result]]]:
    """(positions, results) for each batch of positions, decoded by `workers` threads, at most `prefetch`
    batches ahead of the one the caller holds: memory stays bounded however long the epoch.

    Closing the generator (a `break` in the caller's loop) cancels the batches not yet started.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convnet-stream")
    pending: deque[tuple[np.ndarray, list[Future[list[Result]]]]] = deque()

    def submit(positions: np.ndarray) -> None:
        parts = np.array_split(positions, min(workers, len(positions))) if len(positions) else []  # a chunk a worker
        pending.append((positions, [pool.submit(reader.results, paths, part.tolist(), True) for part in parts]))

    try:
        for positions in batches:
            submit(positions)
            if len(pending) > prefetch:
                done, futures = pending.popleft()
                yield done, [result for future in futures for result in future.result()]
        while pending:
            done, futures = pending.popleft()
            yield done, [result for future in futures for result in future.result()]
    finally:
        for _, futures in pending:
            for future in futures:
                future.cancel()
        pool.shutdown(wait=False)
