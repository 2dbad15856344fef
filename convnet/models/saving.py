"""The `.convnet` model file: one safetensors file whose header carries the architecture as JSON.

Layout:
- tensors "<layer name>/<weight name>" in Keras's layouts (a Conv2D kernel (kh, kw, in, out)), float32;
- header metadata "convnet.format" ("model" or "weights"), "convnet.version", "convnet.config" (the
  architecture, training configuration and user metadata, as JSON), "convnet.config_sha256" (a digest of
  that JSON) and "convnet.sha256" (a digest of the tensors), so a modified or damaged file is refused.
  The metadata is written in sorted order: the same model gives the same bytes.

Loading parses JSON and raw tensors only: no pickle, and only registered layer classes are built, so
opening a file someone sent you runs no code from it. Files are written atomically (temporary file,
fsync, rename): a crash or a full disk never leaves a half-written model in place of the old one.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convnet._internal.checks import describe
from convnet._internal.fileformat import check_tensors, decode, encode
from convnet._internal.files import atomic_write

if TYPE_CHECKING:
    from convnet.models.model import Model

def check_path(filepath: Any, argument: str = "filepath") -> str:
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a path. Received: {argument}={describe(filepath)}")
    return os.fspath(filepath)


def model_tensors(model: Model) -> dict[str, torch.Tensor]:
    tensors = {}
    for layer in model.layers:
        for name, array in zip(layer.weight_names(), layer.get_weights()):
            tensors[f"{layer.name}/{name}"] = torch.from_numpy(np.ascontiguousarray(array, np.float32))
    return tensors


def save_model(model: Model, filepath: str | os.PathLike) -> None:
    path = check_path(filepath)
    if not path.endswith(".convnet"):
        raise ValueError(f"model files end in '.convnet' (e.g. model.save('fashion.convnet')). Received: "
                         f"filepath={path!r}")
    if not model.built:
        raise ValueError("save: the model is not built; give it an input shape or train it first")
    config = {"model": model.get_config(), "compile": model.compile_config(), "metadata": model.metadata}
    try:
        json.dumps(model.metadata)
    except TypeError as error:
        raise ValueError(f"save: model.metadata must be JSON-serialisable ({error})") from None
    atomic_write(path, encode(model_tensors(model), "model", config))


def keras_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    return {f"{layer.name}/{name}": shape for layer in model.layers
            for name, shape in zip(layer.weight_names(), layer.keras_weight_shapes())}


def assign_weights(model: Model, tensors: dict[str, torch.Tensor], path: str) -> None:
    """Check every expected tensor is present with its shape, then set the weights."""
    check_tensors(path, keras_shapes(model), tensors)
    for layer in model.layers:
        layer.set_weights([tensors[f"{layer.name}/{name}"].float().numpy() for name in layer.weight_names()])


def save_weights(model: Model, filepath: str | os.PathLike) -> None:
    path = check_path(filepath)
    if not model.built:
        raise ValueError("save_weights: the model is not built")
    atomic_write(path, encode(model_tensors(model), "weights", {"layers": [l.name for l in model.layers]}))


def load_weights(model: Model, filepath: str | os.PathLike) -> None:
    path = check_path(filepath)
    if not model.built:
        raise ValueError("load_weights: the model is not built; give it an input shape first")
    tensors, _ = decode(path, "weights")
    assign_weights(model, tensors, path)
