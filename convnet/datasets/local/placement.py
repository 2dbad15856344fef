"""Where a cached folder dataset's pixels live while a model trains on them, and the batches gathered there.

A dataset that fits its memory budget is decoded once, by the scan, and kept as uint8 (folder.py). When the
model trains on a GPU and the cache also fits there, `fit` copies it to the GPU once and gathers every batch on
the GPU (an index into the uint8 tensor; the engine casts to float32 there): no host-to-device copy per batch.
Otherwise the batches are gathered from the host cache, through torch and without a float32 copy on the host.

The decision (`choose_device`) takes the device and its free memory as arguments, so that it is tested on a
machine without a GPU:

    >>> GiB = 1024 ** 3
    >>> choose_device(47_040_000, torch.device("cuda", 0), budget=2 * GiB, free_bytes=80 * GiB).device
    device(type='cuda', index=0)
    >>> choose_device(3 * GiB, torch.device("cuda", 0), budget=4 * GiB, free_bytes=5 * GiB).reason
    'the cache (3.0 GiB) would take more than half of the free memory of cuda:0 (5.0 GiB)'
    >>> choose_device(47_040_000, torch.device("cuda", 0), budget=2 * GiB, free_bytes=None).device
    device(type='cpu')
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from convnet._internal.checks import check_int, describe

__all__ = ["DEVICE_SHARE", "Placement", "choose_device", "free_memory", "CachedBatches"]

DEVICE_SHARE = 0.5  # the most of a GPU's free memory the cache may take: the rest is the model's and its steps'


@dataclass(frozen=True)
class Placement:
    """Where the batches are gathered (`device`), and why (`reason`, one line)."""

    device: torch.device
    reason: str


def _size(count: int) -> str:
    return f"{count / 1024 ** 3:.1f} GiB" if count >= 1024 ** 3 else f"{count / 1024 ** 2:.1f} MiB"


def choose_device(cache_bytes: int, device: torch.device, budget: int, free_bytes: int | None) -> Placement:
    """Where to keep a cache of `cache_bytes` (pixels and labels) for a model on `device`.

    The CPU for a model on the CPU (the host cache is used as it is). For a model on a GPU: the GPU, when the cache
    fits `budget` (the dataset's memory_budget) and at most DEVICE_SHARE of the GPU's `free_bytes`; else the CPU.
    `free_bytes` None: CUDA is not available for a "cuda" device (the CPU, then), unknown for another accelerator
    (the budget alone decides).

    Raises:
        TypeError: `device` is not a torch.device.
        ValueError: a negative size or budget.
    """
    if not isinstance(device, torch.device):
        raise TypeError(f"`device` must be a torch.device. Received: device={describe(device)}")
    check_int("cache_bytes", cache_bytes, minimum=0)
    check_int("budget", budget, minimum=0)
    host = torch.device("cpu")
    if device.type == "cpu":
        return Placement(host, "the model trains on the CPU: batches are gathered from the host cache")
    if free_bytes is None and device.type == "cuda":
        return Placement(host, f"CUDA is not available for {device}: batches are gathered on the CPU")
    if cache_bytes > budget:
        return Placement(host, f"the cache ({_size(cache_bytes)}) exceeds memory_budget ({_size(budget)}) on {device}")
    if free_bytes is not None and cache_bytes > DEVICE_SHARE * free_bytes:
        return Placement(host, f"the cache ({_size(cache_bytes)}) would take more than half of the free memory of "
                               f"{device} ({_size(free_bytes)})")
    return Placement(device, f"the cache ({_size(cache_bytes)}) is copied to {device} once; batches are gathered "
                             f"there")


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA `device` (None when CUDA is not available); None for other devices (unknown)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


class CachedBatches:
    """A cached dataset's batches gathered by torch from `x` (N, H, W, C) and `y` (N, ...), both on one device, in
    the dataset's order: batch i of epoch e holds the samples of `order(e)[i * batch_size:(i + 1) * batch_size]`.

    `x` stays uint8 (float32 when resampled): the engine casts each batch on its device. The order goes to the
    device once an epoch; a batch is one index there.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, order: Callable[[int], object], batch_size: int):
        if x.shape[0] != y.shape[0] or x.device != y.device:
            raise ValueError(f"`x` and `y` must hold as many samples, on one device. Received x of shape "
                             f"{tuple(x.shape)} on {x.device}, y of shape {tuple(y.shape)} on {y.device}")
        self.x, self.y, self.order = x, y, order
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.device = x.device

    def __len__(self) -> int:
        return -(-self.x.shape[0] // self.batch_size)

    def iter_from(self, epoch: int, step: int = 0,
                  part: Callable[[int], slice] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) of batches `step`, step + 1, ... of epoch `epoch` (with `part`, that slice of each batch, as
        `FolderDataset.iter_from` takes it)."""
        order = torch.as_tensor(self.order(epoch), dtype=torch.int64).to(self.device)  # (N,)
        size = self.batch_size
        for index in range(step, len(self)):
            chunk = order[index * size:(index + 1) * size]  # (b,) sample indices
            if part is not None:
                chunk = chunk[part(len(chunk))]
            yield self.x[chunk], self.y[chunk]
