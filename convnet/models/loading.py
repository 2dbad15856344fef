"""`load_model`: a model back from its `.convnet` file, whatever its class."""
from __future__ import annotations

import os
from typing import Any

import torch

from convnet._internal.fileformat import check_tensors, decode
from convnet.models.model import MODEL_CLASSES, Model
from convnet.models.saving import assign_weights, check_path, keras_shapes
from convnet.models.sequential import Sequential
from convnet.utils import resolve_device


def model_class(config: Any) -> type[Model]:
    """The class a saved model configuration names ("Sequential" for files from before the functional API)."""
    name = config.get("class_name", "Sequential") if isinstance(config, dict) else "Sequential"
    return MODEL_CLASSES.get(name) if isinstance(name, str) else Sequential


def load_model(filepath: str | os.PathLike, device: Any = "auto", compile: bool = True) -> Model:
    """Load a model saved with `model.save()`. Only registered layer classes are instantiated; nothing in
    the file is executed. Raises ValueError naming the file for a truncated, tampered or foreign file."""
    path = check_path(filepath)
    tensors, config = decode(path, "model")
    try:
        with torch.device("meta"):  # shapes only, no memory: a crafted file cannot make us allocate huge layers
            probe = model_class(config.get("model")).from_config(config.get("model"), device="meta")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: invalid architecture: {error}") from None
    if not probe.built:
        raise ValueError(f"{path}: the architecture has no input shape")
    check_tensors(path, keras_shapes(probe), tensors)
    model = model_class(config["model"]).from_config(config["model"])
    assign_weights(model, tensors, path)
    model.metadata = config.get("metadata") or {}
    compile_config = config.get("compile")
    if compile and compile_config:
        try:
            model.compile(optimizer=compile_config["optimizer"], loss=compile_config["loss"],
                          metrics=compile_config["metrics"],
                          weighted_metrics=compile_config.get("weighted_metrics"), device=device)
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{path}: invalid training configuration: {error}") from None
    else:
        model.to(resolve_device(device))
    return model
