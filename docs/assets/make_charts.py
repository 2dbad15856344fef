"""Draws the site's speed charts (docs/assets/charts/*.png) from the measured numbers in docs/assets/speed.json.

Each entry of speed.json is one table of a guide: its header, its rows (a label, then one list of numbers per
column: the median first, then the range where the table gives one) and where the numbers come from (command,
hardware, software, date). The guide shows the table and the chart side by side; tests/test_docs.py checks that
the guide's table holds the same numbers as the data file, and that each chart was drawn from the data as it is
now (the chart's PNG carries a SHA-256 of its entry). Run standalone, or through make_figures.sh:

    python docs/assets/make_charts.py
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure  # the object API: no window, no backend to choose

ASSETS = Path(__file__).resolve().parent
DATA = ASSETS / "speed.json"
CHARTS = ASSETS / "charts"
WIDTH_INCHES = 7.5


def load() -> dict[str, dict]:
    return json.loads(DATA.read_text(encoding="utf-8"))


def fingerprint(entry: dict) -> str:
    """The SHA-256 of one entry, in a canonical form: what a chart records of the data it was drawn from."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def chart_path(name: str) -> Path:
    return CHARTS / f"speed-{name}.png"


def provenance(entry: dict) -> str:
    return f"{entry['date']}, {entry['hardware']}; {entry['software']}\n$ {entry['command']}"


def plain(label: str) -> str:
    return label.replace("`", "")


def grouped_bars(figure: Figure, entry: dict, columns: list[int]) -> None:
    """One group of bars per row, one bar per column in `columns`; a range, where given, as error bars."""
    axes = figure.add_subplot()
    rows = entry["rows"]
    height = 0.8 / len(columns)
    for slot, column in enumerate(columns):
        medians = [row[column][0] for row in rows]
        errors = [[row[column][0] - row[column][1] if len(row[column]) == 3 else 0 for row in rows],
                  [row[column][2] - row[column][0] if len(row[column]) == 3 else 0 for row in rows]]
        positions = [index + (slot - (len(columns) - 1) / 2) * height for index in range(len(rows))]
        ranged = any(len(row[column]) == 3 for row in rows)
        bars = axes.barh(positions, medians, height=height, xerr=errors if ranged else None, capsize=3,
                         label=entry["header"][column])
        axes.bar_label(bars, labels=[f"{value:,g}" for value in medians], padding=4, fontsize=8)
    axes.set_yticks(range(len(rows)), [plain(row[0]) for row in rows], fontsize=8)
    axes.invert_yaxis()  # the table's first row on top
    axes.set_xlabel(entry["unit"], fontsize=8)
    axes.margins(x=0.15)
    if len(columns) > 1:
        axes.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=len(columns), frameon=False)


def range_bars(figure: Figure, entry: dict, median: int, spread: int, log: bool = False, digits: int | None = None) -> None:
    """One bar per row: the median (column `median`), and the range (column `spread`: low, high) as an error bar."""
    axes = figure.add_subplot()
    rows = entry["rows"]
    medians = [row[median][0] for row in rows]
    lows = [row[median][0] - row[spread][0] if len(row[spread]) == 2 else 0 for row in rows]
    highs = [row[spread][-1] - row[median][0] for row in rows]
    bars = axes.barh(range(len(rows)), medians, xerr=[lows, highs], capsize=3, color="tab:blue")
    labels = [f"{value:g}" if digits is None else f"{value:.{digits}f}" for value in medians]
    axes.bar_label(bars, labels=labels, padding=4, fontsize=8)
    axes.set_yticks(range(len(rows)), [plain(row[0]) for row in rows], fontsize=8)
    axes.invert_yaxis()
    if log:
        axes.set_xscale("log")
    axes.set_xlabel(entry["unit"], fontsize=8)
    axes.margins(x=0.2)


def draw(name: str, entry: dict) -> Figure:
    figure = Figure(figsize=(WIDTH_INCHES, 1.2 + 0.55 * len(entry["rows"]) * (2 if name in ("bench", "ddp") else 1)),
                    layout="constrained")
    if name == "bench":
        grouped_bars(figure, entry, columns=[1, 2, 3])
    elif name == "cli":
        range_bars(figure, entry, median=1, spread=2, log=True, digits=3)
    elif name == "ddp":
        grouped_bars(figure, entry, columns=[1, 2])
        figure.axes[0].set_xscale("log")
    elif name == "explorer":
        range_bars(figure, entry, median=1, spread=2, log=True)
    else:
        raise ValueError(f"speed.json: no chart is defined for {name!r}; add one to make_charts.py")
    axes = figure.axes[0]
    with_legend = axes.get_legend() is not None  # the legend sits above the axes, under the title
    axes.set_title(entry["title"], fontsize=10, loc="left", pad=20 if with_legend else 6)
    figure.supxlabel(provenance(entry), fontsize=6, color="0.35", x=0.01, ha="left")
    return figure


def save(figure: Figure, path: Path, entry: dict) -> None:
    """A 256-colour PNG (small), with the entry's fingerprint in its metadata."""
    from PIL import Image, PngImagePlugin
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    info = PngImagePlugin.PngInfo()
    info.add_text("convnet-data", fingerprint(entry))
    image = Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    image.save(path, optimize=True, pnginfo=info)


def main() -> int:
    for name, entry in load().items():
        path = chart_path(name)
        save(draw(name, entry), path, entry)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
