"""A training run: the `convnet train` job as a function (`train`, in `runs.train`), its configuration
(`TrainConfig`, in the torch-free `runs.config`) and its run folder. The job's names load on first use, so
reading a configuration does not import PyTorch. (`convnet.runs.train` is the function when first reached as
`convnet.runs.train` or `from convnet.runs import train`; code that imports the module `convnet.runs.train`
first should take the function from it.)"""
from __future__ import annotations

import importlib
from typing import Any

from convnet.runs.config import CONFIG_FILE, TrainConfig, load_config

_FROM_TRAIN = ("RunResult", "train", "load_split", "prepare_folder", "environment", "CHECKPOINTS")


def __getattr__(name: str) -> Any:
    if name in _FROM_TRAIN:
        job = importlib.import_module("convnet.runs.train")
        # kept as attributes, so that `convnet.runs.train` is the function (importing the module `runs.train`
        # has just bound that name to the module)
        globals().update({item: getattr(job, item) for item in _FROM_TRAIN})
        return globals()[name]
    raise AttributeError(f"module 'convnet.runs' has no attribute {name!r}")


__all__ = ["TrainConfig", "RunResult", "train", "load_config", "load_split", "prepare_folder", "environment",
           "CONFIG_FILE", "CHECKPOINTS"]
