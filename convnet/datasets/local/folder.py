"""`image_dataset_from_directory`: a folder per class, as Keras 3 reads it, into a `FolderDataset` that
yields NumPy batches (x float32 (B, H, W, C) in 0-255, y as `label_mode` says) in an order that is a pure
function of (seed, epoch, step), so that a training run can resume in the middle of an epoch.

What differs from Keras, and why (each is tested):
- the split never depends on `shuffle` (listing.py): two calls with the same seed are disjoint;
- every file is checked before training: bad files are skipped with a warning and listed in
  `bad_files` (or refused with on_bad_image="error"), never a crash in the middle of an epoch;
- the epoch order is a full permutation per epoch (Keras shuffles through an 8-batch buffer, whose
  order no one can reproduce without TensorFlow's random streams);
- with shuffle=True and no seed, `file_paths` stay sorted (Keras shuffles them with a random draw): the
  drawn seed shuffles the epochs only, so that restoring it from a checkpoint restores the order;
- batches are always float32 (Keras's "nearest" gives uint8); WebP files are read too; BMP and GIF
  files work in grayscale (Keras fails on them);
- a `validation_split` too small to leave a validation file is an error (Keras returns every file for
  validation and none for training).

    >>> import tempfile
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> for name, value in [("cat", 40), ("dog", 200)]:
    ...     os.makedirs(os.path.join(folder, name))
    ...     for i in range(3):
    ...         Image.new("L", (8, 6), value + i).save(os.path.join(folder, name, f"{i}.png"))
    >>> data = image_dataset_from_directory(folder, image_size=(6, 8), color_mode="grayscale", batch_size=4,
    ...                                     seed=1, verbose=False)
    >>> data.class_names, data.num_samples, len(data), data.element_spec
    (['cat', 'dog'], 6, 2, (((None, 6, 8, 1), 'float32'), ((None,), 'int32')))
    >>> x, y = data.batch(epoch=0, index=0)
    >>> x.shape, x.dtype, y.dtype
    ((4, 6, 8, 1), dtype('float32'), dtype('int32'))
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convnet._internal.checks import check_bool, check_int, describe, is_int
from convnet.datasets.local.listing import ALLOWED_FORMATS, Listing, display, keras_order, list_files, split_indices
from convnet.datasets.local.pipeline import ImageReader, default_workers, scan, stream
from convnet.datasets.local.resizing import INTERPOLATIONS

__all__ = ["FolderDataset", "BadImageWarning", "image_dataset_from_directory", "check_same_classes",
           "DEFAULT_MEMORY_BUDGET"]

DEFAULT_MEMORY_BUDGET = 2 * 1024 ** 3  # bytes of decoded pixels a dataset may keep in memory
_SHOWN = 3  # bad files named in the warning; all of them are in `bad_files`
_LISTED = 20  # bad files listed in the error of on_bad_image="error"

Batch = np.ndarray | tuple[np.ndarray, np.ndarray]  # x, or (x, y)


class BadImageWarning(UserWarning):
    """A folder dataset skipped image files that cannot be used (the scan's, or one that failed later)."""


class FolderDataset:
    """Batches of images read from files, as `image_dataset_from_directory` returns them (which builds it:
    construction lists nothing, it scans the files it is given).

    Iterating yields (x, y) NumPy batches, or x alone when `label_mode` is None; each iteration is the next
    epoch (reshuffled when `shuffle`). A training loop that resumes asks for positions instead:
    `iter_from(epoch, step)` yields batches step, step + 1, ... of that epoch without decoding the
    skipped ones, and `batch(epoch, index)` gives one batch. `state_dict()` records what decides the
    order (the seed and a fingerprint of the files) for `load_state_dict` to restore.

    Attributes:
        class_names: the class names (label i is class_names[i]), or None without labels.
        file_paths: the usable files: Keras's shuffled order with shuffle=True and a seed, else sorted.
        labels: int32 (num_samples,) class index per file, or None.
        bad_files: (path, reason) of every file skipped, found by the scan or later.
        image_shape: (height, width, channels) of one image.
        cached: whether the pixels are held in memory (decoded once) or read from disk every epoch.
    """

    def __init__(self, directory: str, paths: list[str], labels: np.ndarray | None, class_names: list[str] | None,
                 label_mode: str | None, reader: ImageReader, batch_size: int | None, shuffle: bool, seed: int,
                 subset: str | None, memory_budget: int, workers: int, prefetch: int, on_bad_image: str):
        self.directory = directory
        self.class_names = class_names
        self.label_mode = label_mode
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed  # the shuffle seed: given, or drawn as Keras draws it
        self.subset = subset
        self.memory_budget = memory_budget
        self.workers = workers
        self.prefetch = prefetch
        self._reader = reader
        found = scan(reader, paths, memory_budget, workers)
        self.bad_files: list[tuple[str, str]] = [(paths[i], reason) for i, reason in sorted(found.bad.items())]
        good = np.array([i not in found.bad for i in range(len(paths))], bool)
        self._report_bad(len(paths), on_bad_image)
        self._rows = np.flatnonzero(good)  # (num_samples,) position of each usable file in the scan
        self._cache = found.cache
        self.file_paths = [paths[i] for i in self._rows]
        self.labels = None if labels is None else labels[self._rows]
        if not self.file_paths:
            raise ValueError(f"None of the {len(paths)} image files found in {directory} can be used; "
                             f"the first: {display(self.bad_files[0][0])}: {self.bad_files[0][1]}")
        self._late: dict[int, str] = {}  # sample -> reason, for files that failed after the scan
        self._epochs_begun = 0
        self._warn_empty_classes(labels)


    @property
    def num_samples(self) -> int:
        return len(self.file_paths)

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self._reader.image_size, self._reader.channels)

    @property
    def cached(self) -> bool:
        return self._cache is not None

    @property
    def element_spec(self) -> tuple[Any, ...]:
        """((shape, dtype) of x, (shape, dtype) of y), the batch axis None; ((shape, dtype),) alone
        without labels. Without batching, no batch axis."""
        batch: tuple[None, ...] = () if self.batch_size is None else (None,)
        x = ((*batch, *self.image_shape), "float32")
        if self.label_mode is None:
            return (x,)
        y_shape = {"int": (), "binary": (1,), "categorical": (self.num_classes,)}[self.label_mode]
        return x, ((*batch, *y_shape), "int32" if self.label_mode == "int" else "float32")

    def __len__(self) -> int:
        """Batches per epoch (samples, without batching); the last batch may be smaller."""
        size = self.batch_size or 1
        return -(-self.num_samples // size)


    def epoch_order(self, epoch: int) -> np.ndarray:
        """int64 (num_samples,) sample indices in the order epoch `epoch` visits them: a permutation drawn
        from (seed, epoch) when shuffling, else 0, 1, 2, ..."""
        epoch = check_int("epoch", epoch, minimum=0)
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def batch_indices(self, epoch: int, index: int) -> np.ndarray:
        """Sample indices of batch `index` of epoch `epoch` (into file_paths, labels and as_arrays())."""
        index = check_int("index", index, minimum=0)
        if index >= len(self):
            raise ValueError(f"`index` must be < {len(self)} (the batches per epoch). Received: index={index}")
        size = self.batch_size or 1
        return self.epoch_order(epoch)[index * size:(index + 1) * size]

    def batch(self, epoch: int, index: int) -> Batch:
        """Batch `index` of epoch `epoch`: the same arrays every time, whatever was read before."""
        return next(self._batches(epoch, [self.batch_indices(epoch, index)]))

    def iter_from(self, epoch: int = 0, step: int = 0, part: Callable[[int], slice] | None = None) -> Iterator[Batch]:
        """Batches `step`, step + 1, ... to the end of epoch `epoch`, as an uninterrupted epoch would yield
        them; the skipped batches are not read.

        A file that fails after the scan (streaming only) is left out of its batch, which is then shorter
        (empty, if all of its files failed) but keeps its place: batch i is always batch i. Without
        batching, the failed image is not yielded.

        `part` (data-parallel training): given a batch's size b, the slice of it to read, e.g.
        `lambda b: convnet.distributed.shard(b, world, rank)`; each batch is then that slice of the batch, and
        only its files are read (the process of another slice reads the others).

            >>> import tempfile
            >>> from PIL import Image
            >>> folder = tempfile.mkdtemp()
            >>> os.makedirs(os.path.join(folder, "a"))
            >>> for i in range(5):
            ...     Image.new("L", (2, 2), i).save(os.path.join(folder, "a", f"{i}.png"))
            >>> data = image_dataset_from_directory(folder, image_size=2, color_mode="grayscale", batch_size=4,
            ...                                     shuffle=False, verbose=False)
            >>> [x[:, 0, 0, 0].tolist() for x, _ in data.iter_from(0, part=lambda size: slice(size // 2, size))]
            [[2.0, 3.0], [4.0]]
        """
        order = self.epoch_order(epoch)
        step = check_int("step", step, minimum=0)
        if step > len(self):
            raise ValueError(f"`step` must be <= {len(self)} (the batches per epoch). Received: step={step}")
        if part is not None and not callable(part):
            raise TypeError(f"`part` must be a function from a batch's size to the slice of it to read, or None. "
                            f"Received: part={describe(part)}")
        size = self.batch_size or 1
        chunks = (order[i * size:(i + 1) * size] for i in range(step, len(self)))  # (b,) sample indices each
        if part is not None:
            chunks = (chunk[part(len(chunk))] for chunk in chunks)
        return self._batches(epoch, chunks)

    def __iter__(self) -> Iterator[Batch]:
        """The next epoch (the first iteration is epoch 0), as Keras's dataset reshuffles per iteration."""
        epoch = self._epochs_begun
        self._epochs_begun += 1
        return self.iter_from(epoch, 0)

    def state_dict(self) -> dict[str, Any]:
        """What decides the order of every batch: the seed, and a fingerprint of the files and labels.
        JSON-serialisable, for a checkpoint."""
        return {"seed": int(self.seed), "num_samples": self.num_samples, "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = False) -> None:
        """Take the seed of a checkpoint's `state_dict()`, so that `iter_from` continues its order.

        When the files differ from the checkpoint's (added, removed, or newly bad), the order of the rest
        of the epoch cannot be the one the run had: a warning says so, or a ValueError when `strict`.
        """
        if not isinstance(state, dict) or not {"seed", "num_samples", "fingerprint"} <= set(state):
            raise TypeError(f"`state` must be a dict from FolderDataset.state_dict() with keys 'seed', 'num_samples' "
                            f"and 'fingerprint'. Received: state={describe(state)}")
        seed = check_int("state['seed']", state["seed"], minimum=0, maximum=2 ** 32 - 1)
        if state["fingerprint"] != self._fingerprint():
            message = (f"the files of {display(self.directory)} differ from the checkpoint's ({state['num_samples']} "
                       f"files then, {self.num_samples} now, or other files or labels): the rest of the epoch "
                       f"cannot follow the interrupted run's order")
            if check_bool("strict", strict):
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
        self.seed = seed

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.file_paths:
            digest.update(os.fsencode(path) + b"\0")
        if self.labels is not None:
            digest.update(self.labels.astype("<i4").tobytes())
        return digest.hexdigest()[:32]


    def as_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(x, y) of every sample in file_paths order, when the dataset is cached: x (N, H, W, C) uint8 when
        no image was resampled (every file already had image_size, or "nearest"), else float32 with Keras's
        resampled values; y encoded as the batches' (None without labels).

        Raises:
            ValueError: the dataset streams: its pixels did not fit `memory_budget`.
        """
        if self._cache is None:
            height, width, channels = self.image_shape
            size = self.num_samples * height * width * channels
            raise ValueError(f"the dataset streams from disk: its {self.num_samples} images of {height}x{width}x"
                             f"{channels} take {size} bytes as uint8 (4x as float32 after resampling), more than "
                             f"memory_budget={self.memory_budget}; pass a larger memory_budget to keep them in memory")
        x = self._cache if len(self._rows) == len(self._cache) else self._cache[self._rows]
        return x, None if self.labels is None else self._encode(self.labels)

    def _encode(self, labels: np.ndarray) -> np.ndarray:
        """Labels as Keras's label_mode encodes them: int32 (B,), float32 (B, 1) or one-hot float32 (B, K)."""
        if self.label_mode == "binary":
            return labels.astype(np.float32)[:, None]  # (B,) -> (B, 1)
        if self.label_mode == "categorical":
            return np.eye(self.num_classes or 0, dtype=np.float32)[labels]  # (B,) -> (B, K)
        return labels.astype(np.int32)

    def _batches(self, epoch: int, batches: Iterable[np.ndarray]) -> Iterator[Batch]:
        """The batches of these sample indices: gathered from the cache, or decoded ahead in threads."""
        if self._cache is not None:
            for indices in batches:
                yield self._assemble(indices, self._cache[self._rows[indices]].astype(np.float32))
            return
        wanted = (np.array([i for i in indices if i not in self._late], np.int64) for indices in batches)
        for indices, results in stream(self._reader, self.file_paths, wanted, self.workers, self.prefetch):
            images, kept = [], []
            for sample, result in zip(indices, results):
                if isinstance(result, np.ndarray):
                    images.append(result)
                    kept.append(sample)
                else:
                    self._fail(int(sample), str(result), epoch)
            if not images and self.batch_size is None:
                continue  # a single image that failed: nothing to yield
            x = (np.stack(images).astype(np.float32, copy=False) if images
                 else np.zeros((0, *self.image_shape), np.float32))  # (B', H, W, C); B' = 0 if all failed
            yield self._assemble(np.asarray(kept, np.int64), x)

    def _assemble(self, indices: np.ndarray, x: np.ndarray) -> Batch:
        if self.batch_size is None:
            x = x[0] if len(x) else x
        if self.labels is None:
            return x
        y = self._encode(self.labels[indices])
        return x, (y[0] if self.batch_size is None and len(y) else y)

    def _fail(self, sample: int, reason: str, epoch: int) -> None:
        """A file that passed the scan failed now: leave it out of this and later batches, and say so once."""
        path = self.file_paths[sample]
        self._late[sample] = reason
        self.bad_files.append((path, f"{reason} (when read in epoch {epoch}, after the scan)"))
        warnings.warn(f"{display(path)}: {reason}. The file passed the scan but fails now; it is left out of its "
                      f"batch (one sample short) and of later epochs, and added to `bad_files`.",
                      BadImageWarning, stacklevel=3)


    def _report_bad(self, total: int, on_bad_image: str) -> None:
        bad = self.bad_files
        if not bad:
            return
        if on_bad_image == "error":
            listed = "\n".join(f"  {display(path)}: {reason}" for path, reason in bad[:_LISTED])
            more = f"\n  ... and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
            raise ValueError(f"{len(bad)} of {total} image files in {display(self.directory)} cannot be used "
                             f"(on_bad_image='error'):\n{listed}{more}\nRemove or repair them, or pass "
                             f"on_bad_image='skip' to leave them out.")
        shown = "; ".join(f"{display(path)} ({reason})" for path, reason in bad[:_SHOWN])
        more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        warnings.warn(f"{len(bad)} of {total} image files in {display(self.directory)} cannot be used and are skipped: "
                      f"{shown}{more}. The full list of (path, reason) is in `bad_files`.", BadImageWarning,
                      stacklevel=5)

    def _warn_empty_classes(self, labels_before_scan: np.ndarray | None) -> None:
        """Warn about classes that had files but lost them all to the scan (empty folders were warned of
        when listed)."""
        if self.labels is None or labels_before_scan is None or self.class_names is None:
            return
        before = np.bincount(labels_before_scan, minlength=len(self.class_names))
        after = np.bincount(self.labels, minlength=len(self.class_names))
        for label in np.flatnonzero((before > 0) & (after == 0)):
            warnings.warn(f"class {self.class_names[label]!r} (label {label}) has no usable image left: all "
                          f"{before[label]} of its files are in `bad_files`", BadImageWarning, stacklevel=5)

    def __repr__(self) -> str:
        height, width, channels = self.image_shape
        classes = "" if self.class_names is None else f" in {len(self.class_names)} classes"
        subset = "" if self.subset is None else f", {self.subset} subset"
        if self._cache is not None:
            held = f"cached as {self._cache.dtype} ({self._cache.nbytes / 2 ** 20:.1f} MiB)"
        else:
            held = f"streamed ({self.workers} threads, {self.prefetch} batches ahead)"
        bad = f", {len(self.bad_files)} bad files skipped" if self.bad_files else ""
        return (f"FolderDataset({display(self.directory)!r}: {self.num_samples} images of {height}x{width}x{channels}"
                f"{classes}{subset}, batches of {self.batch_size}, {held}{bad})")


def check_same_classes(training: FolderDataset, other: FolderDataset, what: str = "test") -> None:
    """Refuse a second folder (the test or validation data) whose class folders differ from the training
    folder's: label i must mean the same class in both.

    Raises:
        ValueError: naming both folders, the classes each lacks, or the order that differs.
    """
    if training.class_names == other.class_names:
        return
    mine, theirs = list(training.class_names or []), list(other.class_names or [])
    if set(mine) == set(theirs):
        problem = f"the same classes in another order: {mine} and {theirs}"
    else:
        only_training = sorted(set(mine) - set(theirs))
        only_other = sorted(set(theirs) - set(mine))
        problem = (f"classes only in the training folder: {only_training or 'none'}; only in the {what} folder: "
                   f"{only_other or 'none'}")
    raise ValueError(f"the {what} folder {display(other.directory)} and the training folder "
                     f"{display(training.directory)} must hold the same class folders, so that each label means one "
                     f"class: {problem}. Pass class_names=training.class_names to read the {what} folder's classes "
                     f"in the training order.")


def image_dataset_from_directory(directory: str | os.PathLike[str], labels: str | Sequence[int] | None = "inferred",
                                 label_mode: str | None = "int", class_names: Sequence[str] | None = None,
                                 color_mode: str = "rgb", batch_size: int | None = 32,
                                 image_size: int | Sequence[int] = (256, 256), shuffle: bool = True,
                                 seed: int | None = None, validation_split: float | None = None,
                                 subset: str | None = None, interpolation: str = "bilinear", follow_links: bool = False,
                                 crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False,
                                 data_format: str | None = None, verbose: bool = True, *, on_bad_image: str = "skip",
                                 memory_budget: int = DEFAULT_MEMORY_BUDGET, workers: int | None = None,
                                 prefetch: int = 4, max_pixels: int | None = None,
                                 ) -> FolderDataset | list[FolderDataset]:
    """A dataset of the images in `directory`, one subfolder per class, with Keras 3's arguments,
    defaults, file order, labels and pixels (`keras.utils.image_dataset_from_directory`).

    Args:
        directory: the folder; with labels="inferred", one subfolder per class (their subfolders are read
            too); files ending in .bmp, .gif, .jpeg, .jpg, .png or .webp (any case).
        labels: "inferred" (from the class folders), None (images only), or a list of int labels, one per
            file in the sorted order of all files under `directory`.
        label_mode: "int" (int32 (B,)), "categorical" (one-hot float32 (B, K)), "binary" (float32 (B, 1),
            exactly two classes) or None (batches of images only).
        class_names: with labels="inferred", the class folders to read, in the order that numbers them.
        color_mode: "grayscale", "rgb" or "rgba": 1, 3 or 4 channels.
        batch_size: images per batch; None yields single images.
        image_size: (height, width) every image is resized to (an int: a square).
        shuffle: reshuffle every epoch; False keeps the sorted order.
        seed: the seed of the split and the shuffles; required with validation_split and shuffle (as Keras).
        validation_split: the fraction of the files kept for validation.
        subset: "training", "validation" or "both" (a list [training, validation]); with validation_split.
        interpolation: "bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian" or
            "mitchellcubic", as tf.image.resize without antialiasing.
        follow_links: walk into symbolic links to folders.
        crop_to_aspect_ratio: crop the largest centred window of the target's aspect ratio, then resize.
        pad_to_aspect_ratio: resize to fit inside, keeping the aspect ratio, and pad with zeros.
        data_format: None or "channels_last" (convnet is NHWC).
        verbose: print the number of files and classes found, and of files per subset.
        on_bad_image: "skip" (leave out, warn, list in `bad_files`) or "error" (refuse, listing them).
        memory_budget: bytes of decoded pixels to keep in memory (one per value, four after resampling); a
            larger dataset streams from disk. 0 always streams.
        workers: decoding threads (default: the CPUs available, at most 8).
        prefetch: batches decoded ahead while streaming.
        max_pixels: refuse images declaring more pixels than this (decompression bombs); default
            convnet.datasets.DEFAULT_MAX_PIXELS.

    Returns:
        A FolderDataset, or [training, validation] for subset="both".

    Raises:
        ValueError / TypeError: a bad argument (Keras's messages where Keras checks it); no images; a bad
            file with on_bad_image="error".
        FileNotFoundError / NotADirectoryError: `directory` does not exist or is not a folder.
    """
    options = _check_arguments(directory, labels, label_mode, class_names, color_mode, batch_size, image_size,
                               shuffle, seed, validation_split, subset, interpolation, follow_links,
                               crop_to_aspect_ratio, pad_to_aspect_ratio, data_format, verbose, on_bad_image,
                               memory_budget, workers, prefetch, max_pixels)
    folder = options.directory
    if labels is None or label_mode is None:  # Keras: no labels either way
        labels, label_mode = None, None
    if labels is None and class_names is not None:
        raise ValueError("When `labels=None` (no labels), argument `class_names` cannot be specified.")
    given_seed = seed
    if seed is None:
        seed = int(np.random.randint(int(1e6)))  # Keras's draw, reproducible under np.random.seed
    listing = list_files(folder, labels, class_names, follow_links)
    _check_listing(listing, folder, label_mode)
    if verbose:
        kind = "" if listing.class_names is None or labels is None else f" belonging to {len(listing.class_names)} classes"
        print(f"Found {len(listing.paths)} files{kind}.")
    reader = ImageReader(options.channels, options.image_size, options.interpolation, crop_to_aspect_ratio,
                         pad_to_aspect_ratio, options.max_pixels)
    common = dict(label_mode=label_mode, reader=reader, seed=seed, workers=options.workers, prefetch=prefetch,
                  on_bad_image=on_bad_image)
    if not validation_split:
        # Keras's order when the seed is given; a drawn seed shuffles the epochs only, so that a checkpoint's
        # seed restores the order (load_state_dict) without reordering the files
        shuffled = shuffle and given_seed is not None
        positions = keras_order(len(listing.paths), seed) if shuffled else np.arange(len(listing.paths))
        return _subset(listing, positions, None, folder, batch_size, shuffle, memory_budget, common)
    training, validation = split_indices(len(listing.paths), validation_split, given_seed)
    if not shuffle:  # the subsets' files in sorted order (their membership came from the seed, if given)
        training, validation = np.sort(training), np.sort(validation)
    if verbose and subset in ("training", "both"):
        print(f"Using {len(training)} files for training.")
    if verbose and subset in ("validation", "both"):
        print(f"Using {len(validation)} files for validation.")
    if subset == "training":
        return _subset(listing, training, "training", folder, batch_size, shuffle, memory_budget, common)
    if subset == "validation":
        return _subset(listing, validation, "validation", folder, batch_size, shuffle, memory_budget, common)
    train = _subset(listing, training, "training", folder, batch_size, shuffle, memory_budget, common)
    kept = 0 if train._cache is None else train._cache.nbytes
    # Keras's validation dataset of subset="both" keeps its order: not reshuffled
    val = _subset(listing, validation, "validation", folder, batch_size, False, max(memory_budget - kept, 0), common)
    return [train, val]


def _subset(listing: Listing, positions: np.ndarray, subset: str | None, directory: str, batch_size: int | None,
            shuffle: bool, memory_budget: int, common: dict[str, Any]) -> FolderDataset:
    """The FolderDataset of these positions of the listing, in this order; reshuffled per epoch if `shuffle`."""
    paths = [listing.paths[i] for i in positions]
    labels = None if listing.labels is None else listing.labels[positions]
    return FolderDataset(directory, paths, labels, listing.class_names if listing.labels is not None else None,
                         batch_size=batch_size, shuffle=shuffle, subset=subset, memory_budget=memory_budget, **common)


def _check_listing(listing: Listing, directory: str, label_mode: str | None) -> None:
    """The errors and warnings that need the files: no images, empty class folders, "binary" with a number
    of classes other than 2, labels outside the classes."""
    for folder in listing.empty_classes:
        warnings.warn(f"the class folder {display(folder)} holds no image file ({', '.join(ALLOWED_FORMATS)}): its "
                      f"class keeps its label but has no examples", BadImageWarning, stacklevel=3)
    if not listing.paths:
        hint = ""
        if listing.top_level_files:
            hint = (f" ({listing.top_level_files} image files lie directly in it, but labels='inferred' reads one "
                    f"subfolder per class: move them into class folders, or pass labels=None)")
        raise ValueError(f"No images found in directory {display(directory)}. Allowed formats: {ALLOWED_FORMATS}{hint}")
    if label_mode == "binary" and len(listing.class_names or ()) != 2:
        raise ValueError(f'When passing `label_mode="binary"`, there must be exactly 2 class_names. '
                         f"Received: class_names={listing.class_names}")
    if listing.labels is not None and label_mode is not None and listing.labels.size:
        low, high, count = int(listing.labels.min()), int(listing.labels.max()), len(listing.class_names or ())
        if low < 0 or (label_mode != "int" and high >= count):
            raise ValueError(f"`labels` must be class indices from 0 to {count - 1} for label_mode={label_mode!r} "
                             f"(one per distinct label). Received labels from {low} to {high}")


@dataclass(frozen=True)
class _Options:
    """The arguments that checking normalises: the rest are used as given."""

    directory: str
    channels: int  # 1, 3 or 4, from color_mode
    image_size: tuple[int, int]
    interpolation: str  # lower-cased
    workers: int
    max_pixels: int


def _check_arguments(directory: Any, labels: Any, label_mode: Any, class_names: Any, color_mode: Any, batch_size: Any,
                     image_size: Any, shuffle: Any, seed: Any, validation_split: Any, subset: Any, interpolation: Any,
                     follow_links: Any, crop_to_aspect_ratio: Any, pad_to_aspect_ratio: Any, data_format: Any,
                     verbose: Any, on_bad_image: Any, memory_budget: Any, workers: Any, prefetch: Any,
                     max_pixels: Any) -> _Options:
    """Every argument checked once, in Keras's order and with Keras's messages where Keras checks it."""
    from convnet.datasets.images import DEFAULT_MAX_PIXELS

    if labels not in ("inferred", None):
        if not isinstance(labels, (list, tuple)) or not all(is_int(label) for label in labels):
            raise ValueError("`labels` argument should be a list/tuple of integer labels, of the same size as the "
                             "number of image files in the target directory. If you wish to infer the labels from "
                             'the subdirectory names in the target directory, pass `labels="inferred"`. If you wish '
                             "to get a dataset that only contains images (no labels), pass `labels=None`. "
                             f"Received: labels={labels}")
        if class_names:
            raise ValueError(f'You can only pass `class_names` if `labels="inferred"`. Received: labels={labels}, '
                             f"and class_names={class_names}")
    if label_mode not in {"int", "categorical", "binary", None}:
        raise ValueError('`label_mode` argument must be one of "int", "categorical", "binary", or None. '
                         f"Received: label_mode={label_mode}")
    if class_names is not None and (isinstance(class_names, str) or not isinstance(class_names, Sequence)
                                    or not all(isinstance(name, str) for name in class_names)):
        raise TypeError(f"`class_names` must be a list of folder names. Received: class_names={describe(class_names)}")
    channels = {"grayscale": 1, "rgb": 3, "rgba": 4}.get(color_mode) if isinstance(color_mode, str) else None
    if channels is None:
        raise ValueError(f'`color_mode` must be one of {{"rgb", "rgba", "grayscale"}}. Received: color_mode={color_mode}')
    if is_int(image_size):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
            or not all(is_int(side) and side >= 1 for side in image_size)):
        raise ValueError(f"Invalid `image_size` value. Expected a tuple of 2 integers. Received: image_size={image_size}")
    if not isinstance(interpolation, str) or interpolation.lower() not in INTERPOLATIONS:
        raise ValueError(f"Argument `interpolation` should be one of {INTERPOLATIONS}. "
                         f"Received: interpolation={interpolation}")
    if validation_split is not None and (not isinstance(validation_split, (int, float))
                                         or isinstance(validation_split, bool)):
        raise TypeError(f"`validation_split` must be a float between 0 and 1. "
                        f"Received: validation_split={describe(validation_split)}")
    shuffle = check_bool("shuffle", shuffle)
    if seed is not None:
        seed = check_int("seed", seed, minimum=0, maximum=2 ** 32 - 1)  # what np.random.RandomState takes
    # Keras's check_validation_split_arg, conditions and messages
    if validation_split and not 0 < validation_split < 1:
        raise ValueError(f"`validation_split` must be between 0 and 1, received: {validation_split}")
    if (validation_split or subset) and not (validation_split and subset):
        raise ValueError("If `subset` is set, `validation_split` must be set, and inversely.")
    if subset not in ("training", "validation", "both", None):
        raise ValueError(f'`subset` must be either "training", "validation" or "both", received: {subset}')
    if validation_split and shuffle and seed is None:
        raise ValueError("If using `validation_split` and shuffling the data, you must provide a `seed` argument, "
                         "to make sure that there is no overlap between the training and validation subset.")
    if crop_to_aspect_ratio and pad_to_aspect_ratio:
        raise ValueError("Only one of `pad_to_aspect_ratio`, `crop_to_aspect_ratio` can be set to `True`.")
    if data_format not in (None, "channels_last"):
        raise ValueError(f"`data_format` must be None or 'channels_last': convnet's images are NHWC. "
                         f"Received: data_format={data_format!r}")
    if batch_size is not None:
        check_int("batch_size", batch_size, minimum=1)
    for name, value in (("follow_links", follow_links), ("crop_to_aspect_ratio", crop_to_aspect_ratio),
                        ("pad_to_aspect_ratio", pad_to_aspect_ratio), ("verbose", verbose)):
        check_bool(name, value)
    if on_bad_image not in ("skip", "error"):
        raise ValueError(f"`on_bad_image` must be 'skip' or 'error'. Received: on_bad_image={on_bad_image!r}")
    check_int("memory_budget", memory_budget, minimum=0)
    check_int("prefetch", prefetch, minimum=1)
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"`directory` must be a path. Received: directory={describe(directory)}")
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise FileNotFoundError(f"`directory` does not exist. Received: directory={display(directory)!r}")
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"`directory` must be a folder of class folders, not a file. "
                                 f"Received: directory={display(directory)!r}")
    return _Options(directory, channels, (int(image_size[0]), int(image_size[1])), interpolation.lower(),
                    default_workers() if workers is None else check_int("workers", workers, minimum=1),
                    DEFAULT_MAX_PIXELS if max_pixels is None else check_int("max_pixels", max_pixels, minimum=1))
