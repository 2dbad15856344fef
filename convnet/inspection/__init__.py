"""Looking inside a model: explanations (`explain`), figures (`viz`), the HTML run report (`report`) and
the seed's claims as experiments (`experiments`). Each loads on first use (plotting pulls matplotlib)."""
import importlib
from typing import Any

__all__ = ["explain", "viz", "report", "experiments"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"convnet.inspection.{name}")
    raise AttributeError(f"module 'convnet.inspection' has no attribute {name!r}")
