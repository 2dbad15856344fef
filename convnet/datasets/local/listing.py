"""Which files a folder dataset holds, in which order, with which labels, and which of them form the
training and the validation subsets: Keras 3's `index_directory` and `get_training_or_validation_split`
(keras/src/utils/dataset_utils.py), with one change that makes the subsets disjoint whatever `shuffle` is.

Listing, as Keras: the class folders are the subfolders of `directory` whose names do not start with ".",
in `sorted()` order (code-point order: "B" before "a") unless `class_names` gives the order. Each class
folder is walked with `os.walk` (its subfolders too; symbolic links to folders only with `follow_links`),
folders in sorted order of their paths and the files of a folder in sorted order, keeping the files whose
lower-cased name ends with an allowed extension. With `labels=None` or a list of labels, the whole of
`directory` is walked instead, from its top.

Splitting: Keras shuffles the list with `np.random.RandomState(seed)` when `shuffle=True`, then keeps the
last `int(validation_split * n)` files for validation and the rest for training. So two calls that differ
in `shuffle` (shuffle=True for training, shuffle=False for validation, as many scripts do) split
different lists and overlap. Here the membership never depends on `shuffle`: the seeded permutation
decides it whenever a seed is given, the sorted order when none is (allowed only with shuffle=False, as
in Keras). With shuffle=True the subsets hold exactly Keras's files in Keras's order.

    >>> train, validation = split_indices(10, 0.2, seed=None)  # no seed: the sorted list's last 2 files
    >>> train.tolist(), validation.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ALLOWED_FORMATS", "Listing", "list_files", "keras_order", "split_indices", "display"]

# Keras 3's ALLOWLIST_FORMATS, and WebP (Keras 3.15 leaves it out; Pillow and TensorFlow decode it)
ALLOWED_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")


def display(path: str) -> str:
    """`path` printable whatever its bytes: a file name that is not valid UTF-8 (Python keeps its bytes as
    surrogates) shows them as \\x escapes instead of failing to print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Listing:
    """The files of a folder dataset, sorted as Keras sorts them, before any shuffle or split.

    `labels` is None without labels; `class_names` None with `labels=None`; `empty_classes` names the
    class folders that hold no file with an allowed extension.
    """

    paths: list[str]
    labels: np.ndarray | None  # int32 (n,)
    class_names: list[str] | None
    empty_classes: list[str] = field(default_factory=list)
    top_level_files: int = 0  # image files directly in `directory`, which labels="inferred" does not read


def _walk(folder: str, follow_links: bool, formats: tuple[str, ...]) -> list[tuple[str, str]]:
    """(root, file name) of the allowed files under `folder`, in Keras's order (iter_valid_files)."""
    found: list[tuple[str, str]] = []
    for root, _, files in sorted(os.walk(folder, followlinks=follow_links), key=lambda entry: entry[0]):
        found.extend((root, name) for name in sorted(files) if name.lower().endswith(formats))
    return found


def list_files(directory: str, labels: str | Sequence[int] | None, class_names: Sequence[str] | None,
               follow_links: bool, formats: tuple[str, ...] = ALLOWED_FORMATS) -> Listing:
    """The files of `directory`, their labels and the class names, by Keras's `index_directory` rules
    (without its shuffle: see `keras_order`). `labels` and `class_names` are checked by the caller.

    Raises:
        ValueError: `class_names` not among the class folders; a list of labels whose length differs from
            the number of files (both in Keras's words).
    """
    if labels == "inferred":
        subfolders = [name for name in sorted(os.listdir(directory))
                      if os.path.isdir(os.path.join(directory, name)) and not name.startswith(".")]
        if class_names is not None:
            if not set(class_names).issubset(subfolders):
                raise ValueError(f"The `class_names` passed did not match the names of the subdirectories of the "
                                 f"target directory. Expected: {subfolders} (or a subset of it), but received: "
                                 f"class_names={list(class_names)}")
            subfolders = list(class_names)  # the order given
    else:
        subfolders = [""]  # the whole of `directory`, from its top
    paths: list[str] = []
    label_list: list[int] = []
    empty: list[str] = []
    for label, subfolder in enumerate(subfolders):
        folder = os.path.join(directory, subfolder)
        found = _walk(folder, follow_links, formats)
        if not found and labels == "inferred":
            empty.append(folder)
        for root, name in found:
            # Keras's path: directory / class folder / the path relative to the class folder
            relative = os.path.join(os.path.basename(folder), os.path.relpath(os.path.join(root, name), folder))
            paths.append(os.path.join(directory, relative))
            label_list.append(label)
    top_level = 0
    if labels == "inferred":
        top_level = sum(1 for entry in os.scandir(directory) if entry.is_file() and entry.name.lower().endswith(formats))
        return Listing(paths, np.asarray(label_list, np.int32), subfolders, empty, top_level)
    if labels is None:
        return Listing(paths, None, None)
    if len(labels) != len(paths):
        raise ValueError(f"Expected the lengths of `labels` to match the number of files in the target directory. "
                         f"len(labels) is {len(labels)} while we found {len(paths)} files in directory {directory}.")
    given = np.asarray(labels, np.int64)
    return Listing(paths, given.astype(np.int32), [str(label) for label in sorted(set(given.tolist()))])


def keras_order(n: int, seed: int) -> np.ndarray:
    """The permutation Keras applies to the sorted list when shuffling: `np.random.RandomState(seed).shuffle`
    of the list, which moves items exactly as `RandomState(seed).permutation(n)` orders indices.

        >>> keras_order(5, seed=1).tolist()
        [2, 1, 4, 0, 3]
    """
    return np.random.RandomState(seed).permutation(n)


def split_indices(n: int, validation_split: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) positions in the sorted list, each in Keras's order (shuffled with the seed,
    when there is one): disjoint, together every position, whatever the caller's `shuffle`.

    Raises:
        ValueError: `validation_split` so small that no file is left for validation (Keras would then
            return every file for validation and none for training).
    """
    count = int(validation_split * n)  # Keras's rounding: down
    if count == 0:
        raise ValueError(f"`validation_split`={validation_split} of {n} files leaves int({validation_split} * {n}) = 0 "
                         f"files for validation; pass a larger validation_split or add files")
    order = keras_order(n, seed) if seed is not None else np.arange(n)
    return order[:n - count], order[n - count:]
