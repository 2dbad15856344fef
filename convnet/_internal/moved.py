"""Import paths of modules that moved when the package was reshaped into subpackages.

`import convnet.engine` (or `from convnet.checkpoint import ...`) still works: the finder below hands
out the module at its new place and warns once with the new path. The inspection modules keep their
short names (`convnet.explain`, `convnet.viz`, `convnet.report`, `convnet.experiments`) without a warning:
they are documented shortcuts, not old paths.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import warnings
from types import ModuleType

SHORTCUTS = {
    "convnet.explain": "convnet.inspection.explain",
    "convnet.viz": "convnet.inspection.viz",
    "convnet.report": "convnet.inspection.report",
    "convnet.experiments": "convnet.inspection.experiments",
}
MOVED = {
    "convnet.engine": "convnet.training.engine",
    "convnet.checkpoint": "convnet.training.checkpoint",
    "convnet.progress": "convnet.training.progress",
    "convnet.saving": "convnet.models.saving",
    "convnet.shapes": "convnet.datasets.shapes",
    "convnet.cli_inspect": "convnet.cli.inspect",
    "convnet.bench": "convnet.cli.bench",
    "convnet._keras_peer": "convnet.cli.peers.keras_peer",
    "convnet._torch_peer": "convnet.cli.peers.torch_peer",
    "convnet._checks": "convnet._internal.checks",
    "convnet._table": "convnet._internal.table",
}


def resolve(old: str) -> ModuleType | None:
    """The module that `old` names now (warning for a moved path), or None if `old` never moved."""
    if old in SHORTCUTS:
        return importlib.import_module(SHORTCUTS[old])
    if old in MOVED:
        warnings.warn(f"{old} moved to {MOVED[old]}; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.import_module(MOVED[old])
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, module: ModuleType):
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # the import system stamped the old name's spec on it


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Answers imports of the old paths with the modules at their new places."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        module = resolve(fullname) if fullname in SHORTCUTS or fullname in MOVED else None
        if module is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(module))
