"""A training run: the `convnet train` job as a function (`train`, in `runs.job`), its configuration
(`TrainConfig`, in the torch-free `runs.config`) and its run folder. The job's names load on first use, so
reading a configuration does not import PyTorch."""
from __future__ import annotations

import importlib
from typing import Any

from convnet.runs.config import CONFIG_FILE, TrainConfig, load_config

_FROM_JOB = ("RunResult", "train", "load_split", "prepare_folder", "environment", "CHECKPOINTS")


def __getattr__(name: str) -> Any:
    if name in _FROM_JOB:
        return getattr(importlib.import_module("convnet.runs.job"), name)
    raise AttributeError(f"module 'convnet.runs' has no attribute {name!r}")


__all__ = ["TrainConfig", "RunResult", "train", "load_config", "load_split", "prepare_folder", "environment",
           "CONFIG_FILE", "CHECKPOINTS"]
