"""Running an exported file: `ExportedModel(path)` loads an `.onnx` file into ONNX Runtime or a `.pt2`
program with `torch.export.load`, and `predict`s as `Model.predict` does (NHWC float32 in, NumPy out).

    >>> import convnet, tempfile, os, numpy as np
    >>> from convnet.export import ExportedModel
    >>> model = convnet.Sequential([convnet.Input(shape=(4, 4, 1)), convnet.layers.Flatten(),
    ...                             convnet.layers.Dense(2, activation="softmax")])
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.pt2")
    >>> _ = model.export(path)
    >>> exported = ExportedModel(path)
    >>> exported.input_shapes, exported.predict(np.zeros((3, 4, 4, 1), np.float32)).shape
    ([(4, 4, 1)], (3, 2))
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from convnet._internal.checks import check_bool, check_int, describe
from convnet.export.formats import FORMATS, METADATA_KEY, quiet, require_export_extra


class ExportedModel:
    """An exported convnet model, ready to predict.

    Args:
        path: an `.onnx` file (run by ONNX Runtime on the CPU) or a `.pt2` torch.export program.
        optimize: ONNX Runtime's graph optimisations fully on (True, the deployment setting) or off.

    Raises:
        ValueError: a file that does not exist, has another extension, or was not written by convnet (it has no
            convnet metadata, so its input layout and scaling are unknown).
        ImportError: an ONNX file without onnxruntime installed (the message says what to install).
    """

    def __init__(self, path: str | os.PathLike, optimize: bool = True):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"`path` must be a file path. Received: path={describe(path)}")
        self.path = os.fspath(path)
        optimize = check_bool("optimize", optimize)
        extension = os.path.splitext(self.path)[1].lower()
        if extension not in FORMATS:
            raise ValueError(f"{self.path}: an exported model ends in {' or '.join(FORMATS)}")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        self.format = FORMATS[extension]
        if self.format == "onnx":
            self._session, info = _onnx_session(self.path, optimize)
        else:
            self._program, info = _torch_program(self.path)
        self.metadata: dict[str, Any] = info
        self.input_shapes = [tuple(shape) for shape in info["input_shapes"]]
        self.class_names: list[str] | None = info.get("class_names")

    def __repr__(self) -> str:
        return f"ExportedModel({self.path!r}, format={self.format!r}, inputs={self.input_shapes})"

    def predict(self, x: Any, batch_size: int = 256) -> Any:
        """Outputs for `x` (NHWC float32 of the input shape; a list of arrays for several inputs) in batches,
        as NumPy arrays (a list for several outputs)."""
        batch_size = check_int("batch_size", batch_size, minimum=1)
        arrays = [np.asarray(item, dtype=np.float32) for item in (x if isinstance(x, (list, tuple)) else [x])]
        if len(arrays) != len(self.input_shapes):
            raise ValueError(f"{self.path} takes {len(self.input_shapes)} inputs. Received: {len(arrays)}")
        for index, (array, shape) in enumerate(zip(arrays, self.input_shapes)):
            if array.ndim == len(shape):
                arrays[index] = array = array[None]
            if tuple(array.shape[1:]) != shape:
                raise ValueError(f"{self.path} takes inputs of shape (None, {', '.join(map(str, shape))}). Received: "
                                 f"{tuple(array.shape)}")
        chunks = []
        for start in range(0, arrays[0].shape[0], batch_size):
            chunks.append(self._run([a[start:start + batch_size] for a in arrays]))
        outputs = [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]
        return outputs[0] if len(outputs) == 1 else outputs

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.format == "onnx":
            names = [item.name for item in self._session.get_inputs()]
            return list(self._session.run(None, dict(zip(names, arrays))))
        with torch.no_grad():
            result = self._program(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        results = result if isinstance(result, (list, tuple)) else [result]
        return [r.numpy() for r in results]


def _onnx_session(path: str, optimize: bool) -> tuple[Any, dict[str, Any]]:
    ort = require_export_extra("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ValueError(f"{path}: not a readable ONNX model ({str(error).splitlines()[0]})") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return session, _metadata(path, raw)


def _torch_program(path: str) -> tuple[Any, dict[str, Any]]:
    extra = {METADATA_KEY: ""}
    try:
        with quiet():
            program = torch.export.load(path, extra_files=extra)
    except Exception as error:  # a zip that is not a torch.export archive, a truncated file
        raise ValueError(f"{path}: not a readable torch.export program ({str(error).splitlines()[0]})") from None
    return program.module(), _metadata(path, extra[METADATA_KEY] or None)


def _metadata(path: str, raw: str | None) -> dict[str, Any]:
    if not raw:
        raise ValueError(f"{path}: not exported by convnet (no {METADATA_KEY!r} metadata), so its input layout and "
                         f"scaling are unknown; export it with `convnet export` or model.export()")
    try:
        info = json.loads(raw)
        shapes = info["input_shapes"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: its convnet metadata is damaged") from None
    if not isinstance(shapes, list) or not all(isinstance(s, list) for s in shapes):
        raise ValueError(f"{path}: its convnet metadata is damaged")
    return dict(info)
