"""convnet: convolutional neural networks with TensorFlow's semantics and a Keras-style API, on PyTorch.

    >>> import convnet
    >>> model = convnet.zoo.seed_cnn()
    >>> model.count_params()
    1406218

The public API, one namespace per concept as in Keras: `nn` (TF-semantics ops), `layers`, `augment`,
`activations`, `initializers`, `losses`, `metrics`, `optimizers`, `schedules`, `callbacks`, `models`,
`zoo`, `datasets`, `utils`. Inspection (`explain`, `viz`, `report`, `experiments`, all in
`convnet.inspection`), run folders (`runs`) and the command line (`cli`) load on first use.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

from convnet import (
    activations,
    augment,
    callbacks,
    initializers,
    layers,
    losses,
    metrics,
    models,
    nn,
    optimizers,
    schedules,
    utils,
    zoo,
)
from convnet._internal import moved as _moved
from convnet.models import Sequential, load_model

_LAZY = ("datasets", "inspection", "runs", "training", "cli")

if not any(isinstance(finder, _moved.MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _moved.MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"convnet.{name}")
    module = _moved.resolve(f"convnet.{name}")
    if module is not None:
        return module
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")


__all__ = ["Sequential", "load_model", "activations", "augment", "callbacks", "initializers", "layers", "losses",
           "metrics", "models", "nn", "optimizers", "schedules", "utils", "zoo", "datasets", "inspection", "runs",
           "training", "cli", "__version__"]
