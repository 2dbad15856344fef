"""A Griffe extension: convnet's docstring examples render as Python sessions in the API reference.

convnet's docstrings carry `>>>` examples that the test suite runs (STYLE.md, point 6), placed where they
read best: after a module's summary, at the end of a class, or after a `Raises:` section. Google-style
parsing only knows examples under an `Examples:` header; elsewhere Markdown reads `>>>` as nested quotes,
and inside a section the parser takes each line for an item ("Failed to get 'exception: description'
pair"); under `Example:`, an admonition to the parser, they are quotes again. This extension turns
every run of `>>>` lines with their output into a fenced `pycon` block; runs under an `Examples:` header
are left to the parser, which renders them itself.

Loaded by mkdocstrings through `mkdocs.yml` (`handlers.python.options.extensions`).
"""
from __future__ import annotations

import re
from typing import Any

import griffe

PROMPT = re.compile(r"^(?P<indent>[ ]*)>>>(?: |$)")
HEADER = re.compile(r"^[ ]*(?P<title>[A-Z][\w ]*):[ ]*$")
# Google-style sections made of items ("name: description"), whose parser a doctest run must not enter.
ITEM_SECTIONS = {"args", "arguments", "params", "parameters", "keyword args", "keyword arguments",
                 "other args", "other arguments", "other params", "other parameters", "raises", "exceptions",
                 "warns", "warnings", "returns", "yields", "receives", "attributes", "functions", "methods",
                 "classes", "modules", "type aliases"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _enclosing_header(lines: list[str], indent: int) -> str | None:
    """The title of the `Title:` line that the run at `indent` sits under, if the nearest earlier line
    indented less than the run is one; None otherwise."""
    for line in reversed(lines):
        if line.strip() and _indent(line) < indent:
            match = HEADER.match(line)
            return match.group("title").lower() if match else None
    return None


def fence_doctests(text: str) -> str:
    """Each run of doctest lines (a `>>>` line, then every non-blank line indented at least as much) becomes
    a fenced `pycon` block with a blank line on either side: at the left margin, which closes a section of
    items (`Raises:`) above it; at the run's own indentation inside an admonition (`Example:`, `Note:`);
    unchanged under `Examples:`, whose parser renders the run itself."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = PROMPT.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match.group("indent"))
        start = i
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= indent:
            i += 1
        run = lines[start:i]
        header = _enclosing_header(out, indent) if indent else None
        if header == "examples":
            out.extend(run)
            continue
        margin = " " * indent if header is not None and header not in ITEM_SECTIONS else ""
        if out and out[-1].strip() and not HEADER.match(out[-1]):
            out.append("")
        out.extend([f"{margin}```pycon", *(margin + line[indent:] for line in run), f"{margin}```"])
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the doctest runs of every docstring Griffe loads, before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
