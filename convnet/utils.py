"""Seeding and device selection.

    >>> from convnet import utils
    >>> utils.set_random_seed(0)
    >>> str(utils.resolve_device("cpu"))
    'cpu'
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from convnet._internal.checks import check_int, describe


def set_random_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (all devices), as `keras.utils.set_random_seed`.

    Two CPU runs of the same program with the same seed give identical weights and histories.
    """
    seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(device: Any = "auto") -> torch.device:
    """A torch.device from "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1" or a torch.device.

    Raises:
        ValueError: an unknown device string, or CUDA asked for on a machine without it.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Received: device={device!r}") from None
    else:
        raise TypeError(f"`device` must be a string such as 'auto', 'cpu' or 'cuda', or a torch.device. "
                        f"Received: device={describe(device)}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`device` is {device!r} but CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use device='cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"`device` is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type not in ("cpu", "mps"):
        raise ValueError(f"`device` must be 'auto', 'cpu' or 'cuda'. Received: device={device!r}")
    return resolved
