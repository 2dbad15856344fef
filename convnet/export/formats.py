"""Writing a model out: ONNX (through `torch.onnx.export(..., dynamo=True)`, opset 18) and torch.export
programs (`.pt2`), both with a dynamic batch axis and the interface of `model.predict`: NHWC float32 of the
model's input shape in, what `predict` returns out (probabilities for a softmax model).

Why the dynamo exporter: it is the exporter PyTorch maintains (the TorchScript one is deprecated), it
writes opset 18 directly, and every layer convnet has exports through it exactly (tests/test_export.py
checks each against `predict`, with ONNX Runtime's optimisations off and fully on).

`api.export` writes through these functions to a temporary name and renames into place only when the file
is complete (and, with `check=True`, verified).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from convnet._internal.checks import check_choice, check_int

FORMATS = {".onnx": "onnx", ".pt2": "torch"}  # file extension -> format
METADATA_KEY = "convnet"  # the ONNX metadata entry / the .pt2 extra file holding convnet's JSON


class ExportError(ValueError):
    """A model that cannot be exported, or whose export does not compute what `predict` computes."""


def resolve_format(path: str, format: str | None) -> str:
    """"onnx" or "torch", from `format` or else from the file's extension."""
    if format is not None:
        return check_choice("format", format, ("onnx", "torch"))
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise ValueError(f"cannot tell the export format from {path!r}: give format='onnx' or 'torch', or a path "
                         f"ending in {' or '.join(FORMATS)}")
    return FORMATS[extension]


def check_exportable(model: Any) -> None:
    """ExportError naming the first layer that has no export rule: a Lambda (it holds Python code), or a
    user's layer class that does not declare `exportable = True` (its `call` is then not known to trace)."""
    for layer in model.layers:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested model
            check_exportable(layer)
            continue
        rule = getattr(type(layer), "exportable", None)
        if rule is False or (rule is None and not type(layer).__module__.startswith("convnet.")):
            raise ExportError(f"{layer.label} has no export rule: "
                              + ("a Lambda holds Python code, which an exported file cannot carry; replace it with "
                                 "layers" if type(layer).__name__ == "Lambda" else
                                 "a custom layer exports once its class declares `exportable = True` (its call() "
                                 "must use torch operations only)"))


class _Predictor(torch.nn.Module):
    """The model as `predict` runs it: inference mode, float32 in, float32 out, one tensor per input."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, *images: torch.Tensor) -> Any:
        outputs = self.model(images[0] if len(images) == 1 else list(images))
        if isinstance(outputs, (list, tuple)):
            return tuple(output.float() for output in outputs)
        return outputs.float()


def metadata(model: Any) -> dict[str, Any]:
    """What an exported file carries besides the network: class names, input shape(s), preprocessing scale,
    the convnet version."""
    import convnet
    shapes = [list(tensor.shape[1:]) for tensor in model.inputs]
    return {"convnet_version": convnet.__version__, "model_name": model.name, "input_shapes": shapes,
            "input_layout": "NHWC float32", "class_names": model.metadata.get("class_names"),
            "preprocessing": model.metadata.get("preprocessing") or {"scale": 1.0},
            "outputs": len(model.outputs)}


def _example_inputs(model: Any, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return tuple(torch.rand(batch, *tensor.shape[1:]) for tensor in model.inputs)


def _dynamic_batch(model: Any) -> tuple[tuple[dict[int, Any], ...]]:
    """Axis 0 of every input is the batch (one shared size); the outer tuple is `forward`'s `*images`."""
    batch = torch.export.Dim("batch", min=1)
    return (tuple({0: batch} for _ in model.inputs),)


@contextmanager
def _inference(model: Any) -> Iterator[None]:
    """Inference mode on the CPU for the duration (a model trained elsewhere is moved and put back)."""
    device, training = model.device, model.training
    model.to("cpu").eval()
    try:
        yield
    finally:
        model.to(device).train(training)


@contextmanager
def quiet() -> Iterator[None]:
    """The exporter's progress lines, its warnings and its log records about optional packages (torchvision)
    stay out of the user's output; errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def exported_program(model: Any) -> torch.export.ExportedProgram:
    """The model as a `torch.export` program with a dynamic batch axis (on the CPU, inference mode)."""
    check_exportable(model)
    with _inference(model):
        predictor = _Predictor(model).eval()
        try:
            with quiet():
                return torch.export.export(predictor, _example_inputs(model), dynamic_shapes=_dynamic_batch(model))
        except Exception as error:  # torch's own errors, made to name the model
            raise ExportError(f"torch.export could not trace {model.label}: {type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}") from error


def write_onnx(model: Any, path: str, opset: int = 18) -> None:
    """The model as an ONNX file at `path` (opset >= 18, a dynamic batch axis, convnet's metadata)."""
    check_int("opset", opset, minimum=18)
    onnx = require_export_extra("onnx")
    program = exported_program(model)
    names = [f"input_{i}" if len(model.inputs) > 1 else "images" for i in range(len(model.inputs))]
    outputs = ["probabilities" if model.output_activation == "softmax" else "outputs"] if len(model.outputs) == 1 \
        else [f"output_{i}" for i in range(len(model.outputs))]
    with quiet():
        onnx_program = torch.onnx.export(program, input_names=names, output_names=outputs, opset_version=opset,
                                         dynamo=True, external_data=False, verbose=False)
    assert onnx_program is not None, "the dynamo exporter returns the program"
    proto = onnx_program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata(model))
    proto.producer_name = "convnet"
    onnx.save(proto, path)


def write_program(model: Any, path: str) -> None:
    """The model as a `torch.export` program file (`torch.export.save`), with convnet's metadata."""
    program = exported_program(model)
    with quiet():
        torch.export.save(program, path, extra_files={METADATA_KEY: json.dumps(metadata(model))})


def require_export_extra(module: str) -> Any:
    """Import `module` (onnx, onnxruntime), or say exactly what to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"exporting to or running ONNX needs the {module!r} package: pip install "
                          f"\"convnet[export]\" (onnx, onnxruntime and onnxscript)") from None
