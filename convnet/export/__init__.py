"""Exporting models: ONNX and torch.export programs, verified against `predict` (`formats`, `verify`), and
running the exported files (`runtime`)."""
from convnet.export.api import export
from convnet.export.formats import ExportError, check_exportable, resolve_format
from convnet.export.runtime import ExportedModel
from convnet.export.verify import verify

__all__ = ["export", "verify", "ExportedModel", "ExportError", "check_exportable", "resolve_format"]
