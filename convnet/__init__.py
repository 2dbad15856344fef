"""convnet: convolutional neural networks with TensorFlow's semantics and a Keras-style API, on PyTorch.

    >>> import convnet
    >>> model = convnet.zoo.seed_cnn()
    >>> model.count_params()
    1406218

Submodules: `nn` (TF-semantics ops), `layers`, `augment`, `models`, `datasets`, `zoo`, `callbacks`,
`optimizers`, `schedules`, `losses`, `metrics`, `activations`, `initializers`, `utils`; plotting and
explanations load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from . import (activations, augment, callbacks, initializers, layers, losses, metrics, models, nn,  # noqa: E402
               optimizers, schedules, utils, zoo)
from .models import Sequential, load_model  # noqa: E402

_LAZY = {"datasets", "viz", "explain", "experiments", "cli"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")


__all__ = ["Sequential", "load_model", "activations", "augment", "callbacks", "initializers", "layers", "losses", "metrics",
           "models", "nn", "optimizers", "schedules", "utils", "zoo", "__version__"]
