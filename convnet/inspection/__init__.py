"""Looking inside a model: explanations (`explain`), plots of a model (`viz`), plots of arrays and the
figure-saving helper (`figures`), the HTML run report (`report`) on Jinja2 templates (`pages`), and the
seed's claims as experiments (`experiments`). Each loads on first use (plotting pulls matplotlib).
Imports point one way: figures <- explain <- viz <- report."""
import importlib
from typing import Any

__all__ = ["explain", "viz", "figures", "report", "pages", "experiments"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"convnet.inspection.{name}")
    raise AttributeError(f"module 'convnet.inspection' has no attribute {name!r}")
