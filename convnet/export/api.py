"""`export`: write a model to a file (formats.py), check it against `predict` (verify.py) when asked, and put
it in place atomically: written to a temporary name beside the target and renamed only when complete and
verified, so a failed export never leaves a half-written file behind."""
from __future__ import annotations

import os
import tempfile
from typing import Any

from convnet._internal.checks import describe
from convnet.export.formats import resolve_format, write_onnx, write_program
from convnet.export.verify import verify


def export(model: Any, path: str | os.PathLike, format: str | None = None, opset: int = 18,
           check: bool = False, tolerance: float = 1e-4) -> dict[str, Any]:
    """Write `model` to `path` as ONNX or a torch.export program; with `check`, run the written file (ONNX
    Runtime with its graph optimisations off and fully on, or `torch.export.load`) on random and real-looking
    images and compare with `model.predict`.

    Returns:
        {"path", "format", "max_difference" (None without check), ...} describing what was written.

    Raises:
        ExportError: a layer without an export rule, a tracing failure, or (with check) a largest difference
            above `tolerance`; nothing is left at `path`.
        ValueError / TypeError: a bad argument (an unknown format, a path that is not a string).
        ImportError: ONNX export without the `export` extra installed (the message says what to install).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path. Received: path={describe(path)}")
    target = os.fspath(path)
    kind = resolve_format(target, format)
    if not model.built:
        raise ValueError(f"{model.label} is not built; give it an input shape before exporting")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise ValueError(f"cannot write {target!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {target!r}: the folder {folder!r} is not writable")
    handle, temporary = tempfile.mkstemp(prefix=".export-", suffix=os.path.splitext(target)[1], dir=folder)
    os.close(handle)
    try:
        if kind == "onnx":
            write_onnx(model, temporary, opset)
        else:
            write_program(model, temporary)
        report: dict[str, Any] = {"path": target, "format": kind, "max_difference": None}
        if check:
            report.update(verify(model, temporary, tolerance=tolerance))
        os.replace(temporary, target)
        return report
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
