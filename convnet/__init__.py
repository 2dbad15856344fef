"""convnet: convolutional neural networks with TensorFlow's semantics and a Keras-style API, on PyTorch.

    >>> import convnet
    >>> model = convnet.zoo.seed_cnn()
    >>> model.count_params()
    1406218

The public API, one namespace per concept as in Keras: `nn` (TF-semantics ops), `layers`, `augment`,
`activations`, `initializers`, `regularizers`, `losses`, `metrics`, `optimizers`, `schedules`, `callbacks`,
`models`, `zoo`, `datasets`, `utils`; `Input` and `Model` (the functional API); inspection (`explain`, `viz`,
`report`, `experiments`, all in `convnet.inspection`), run folders (`runs`) and the command line (`cli`).
Every one of them, and `Input`, `Model`, `Sequential` and `load_model`, loads on first use: `import convnet`
itself does not import PyTorch, so the command line answers `--help` at once.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

from convnet._internal import moved as _moved

__version__ = "0.1.0"

_NAMESPACES = ("activations", "augment", "callbacks", "initializers", "layers", "losses", "metrics", "models", "nn",
               "optimizers", "regularizers", "schedules", "utils", "zoo", "datasets", "inspection", "runs", "training",
               "cli")
_FROM_MODELS = ("Model", "Sequential", "load_model")
_FROM_LAYERS = ("Input",)

if not any(isinstance(finder, _moved.MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _moved.MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name in _NAMESPACES:
        return importlib.import_module(f"convnet.{name}")  # the import binds it here, so this runs once
    if name in _FROM_MODELS or name in _FROM_LAYERS:
        value = getattr(importlib.import_module("convnet.models" if name in _FROM_MODELS else "convnet.layers"), name)
        globals()[name] = value
        return value
    module = _moved.resolve(f"convnet.{name}")
    if module is not None:
        return module
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")


__all__ = ["Input", "Model", "Sequential", "load_model", "activations", "augment", "callbacks", "initializers",
           "layers", "losses", "metrics", "models", "nn", "optimizers", "regularizers", "schedules", "utils", "zoo",
           "datasets", "inspection", "runs", "training", "cli", "__version__"]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})  # the names not loaded yet too, for tab completion
