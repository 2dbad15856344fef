"""Plain-text and Markdown tables, for summaries, benchmarks and experiment reports."""
from __future__ import annotations

from collections.abc import Sequence


def box_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A table drawn with box characters, like Keras's model summary; `right` marks right-aligned columns."""
    right = list(right) if right is not None else [False] * len(headers)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str], edge: str, sep: str) -> str:
        parts = [f" {c!s:>{w}} " if r else f" {c!s:<{w}} " for c, w, r in zip(cells, widths, right)]
        return edge + sep.join(parts) + edge

    def rule(left: str, fill: str, mid: str, end: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + end

    out = [rule("┏", "━", "┳", "┓"), line(headers, "┃", "┃"), rule("┡", "━", "╇", "┩")]
    for index, row in enumerate(rows):
        out.append(line(row, "│", "│"))
        out.append(rule("├", "─", "┼", "┤") if index < len(rows) - 1 else rule("└", "─", "┴", "┘"))
    if not rows:
        out.append(rule("└", "─", "┴", "┘"))
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                   right: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured Markdown table."""
    right = list(right) if right is not None else [False] * len(headers)
    head = "| " + " | ".join(map(str, headers)) + " |"
    rule = "| " + " | ".join("---:" if r else "---" for r in right) + " |"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def si(value: float) -> str:
    """1.23K, 4.56M, 7.89G: a count with an SI prefix."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:g}"


def binary_bytes(count: int) -> str:
    """A byte count in KB, MB or GB of 1024 (as Keras's summary)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.2f} B"
