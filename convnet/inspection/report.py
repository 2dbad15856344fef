"""One self-contained HTML page about a finished training run: the model's layer table, the training curves,
the test metrics, the accuracy of each class, the confusion matrix and the misclassified test images.

    >>> result = build_report("runs/quick")          # doctest: +SKIP
    >>> result.html, sorted(result.figures)          # doctest: +SKIP
    ('runs/quick/report/report.html', ['confusion_matrix', 'history', 'misclassified'])

The page needs nothing but itself: the figures are embedded as base64 `data:` URIs (and also written next
to it as PNG files), the style sheet is inline, and there are no scripts or links to other sites, so it
can be mailed or archived as one file. Every piece of text from the run (names, settings, paths) is
HTML-escaped.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from convnet import __version__
from convnet._internal.checks import check_int, shape_str
from convnet._internal.table import si

__all__ = ["build_report", "ReportResult", "ClassAccuracy", "SECTIONS", "REPORT_FILE"]

REPORT_FILE = "report.html"
FIGURE_DPI = 100  # pixels per inch of the PNG files
MAX_MISCLASSIFIED = 25  # mistakes shown, the most confident first
MAX_HISTORY_ROWS = 50  # epochs listed in the table under the curves; longer runs show the curves only
SECTIONS = (("summary", "Summary"), ("training-curves", "Training curves"), ("test-metrics", "Test metrics"),
            ("per-class-accuracy", "Per-class accuracy"), ("confusion-matrix", "Confusion matrix"),
            ("misclassified", "Misclassified examples"))  # (anchor, heading), in page order

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; background: #fafafa; }
.bar { display: inline-block; height: 0.7em; background: #4c78a8; margin-right: 0.4em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; } nav a { margin-right: 1em; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


@dataclasses.dataclass
class ClassAccuracy:
    """How one class fared on the test images."""

    index: int
    name: str
    total: int  # test images of this class
    correct: int
    confused_with: str | None  # the class most often predicted instead, None without mistakes
    confused_count: int  # how many times

    @property
    def accuracy(self) -> float:
        """correct / total (the class's recall); NaN when the test images held none of this class."""
        return self.correct / self.total if self.total else math.nan


@dataclasses.dataclass
class ReportResult:
    """What `build_report` wrote and measured."""

    html: str  # path of report.html
    figures: dict[str, str]  # {"history" | "confusion_matrix" | "misclassified": path of the PNG}
    accuracy: float  # recomputed on the test images below
    test_images: int
    per_class: list[ClassAccuracy]
    confusion: np.ndarray  # (K, K) counts, rows = true class, columns = predicted class

    @property
    def paths(self) -> list[str]:
        """Every file written: the PNGs, then the HTML page."""
        return [*self.figures.values(), self.html]


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _check_run(run_dir: Any) -> str:
    """The run folder, checked to hold what a finished run writes."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"`run_dir` must be a path to a run folder. Received: run_dir={run_dir!r}")
    folder = os.fspath(run_dir)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{folder}: no such run folder")
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: not a run folder (it is a file); pass the folder `convnet train` wrote")
    if not os.path.isfile(os.path.join(folder, "metrics.json")):
        raise ValueError(f"{folder}: the run has no metrics.json, so it did not finish (interrupted, or the loss "
                         f"diverged); resume it with: convnet train --resume {folder}")
    for name in ("model.convnet", "history.json"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise ValueError(f"{folder}: the run has no {name}; a finished run folder holds model.convnet, "
                             f"history.json, metrics.json and config.json")
    return folder


def _per_class(confusion: np.ndarray, names: Sequence[str]) -> list[ClassAccuracy]:
    rows = []
    for i, name in enumerate(names):
        others = confusion[i].copy()
        others[i] = 0  # mistakes only
        worst = int(others.argmax())
        rows.append(ClassAccuracy(index=i, name=name, total=int(confusion[i].sum()), correct=int(confusion[i, i]),
                                  confused_with=names[worst] if others[worst] else None,
                                  confused_count=int(others[worst])))
    return rows


def _save(figure: Any, path: str) -> str:
    figure.savefig(path, dpi=FIGURE_DPI)
    return path


def build_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, limit: int | None = None,
                 data_dir: str | os.PathLike | None = None, device: str = "auto") -> ReportResult:
    """Write the report of a finished run: three PNG figures and `report.html`, which embeds them.

    The test-set figures are recomputed: the run's model is loaded, the test images are loaded as the run
    loaded them (`runs.load_split` with the run's `config.json`) and classified again.

    Args:
        run_dir: a folder written by `convnet train` (model.convnet, history.json, metrics.json, config.json).
        out_dir: where the files go; default: `<run_dir>/report`.
        limit: classify the first N test images only; default: the run's own `test_limit` (all when it had
            none), which makes the recomputed accuracy the one in metrics.json.
        data_dir: the folder holding the dataset files, if not where the run found them.
        device: "auto", "cpu" or "cuda" for the predictions.

    Returns:
        A ReportResult with the paths written, the recomputed accuracy and the per-class figures.

    Raises:
        FileNotFoundError: no such folder, or the dataset's files cannot be found (DatasetNotFoundError).
        ValueError: a folder that is not a finished run (the message says what is missing), an unwritable
            `out_dir`, a bad `limit`.
    """
    from convnet.datasets.core import get_dataset
    from convnet.inspection import viz
    from convnet.models import load_model
    from convnet.runs.train import load_config, load_split, prepare_folder

    folder = _check_run(run_dir)
    config = load_config(folder)
    if limit is not None:
        config.test_limit = check_int("limit", limit, minimum=1)
    if data_dir is not None:
        config.data_dir = os.fspath(data_dir)
    metrics = _read_json(os.path.join(folder, "metrics.json"))
    history = _read_json(os.path.join(folder, "history.json"))
    model = load_model(os.path.join(folder, "model.convnet"), device=device, compile=False)
    out = prepare_folder(os.fspath(out_dir) if out_dir is not None else os.path.join(folder, "report"))

    dataset = get_dataset(config.dataset, argument="dataset")
    *_, x_test, y_test = load_split(config)  # (N, H, W, 1) float32 in [0, 1], (N,) int64
    probabilities = model.predict(x_test, batch_size=512, verbose=0)  # (N, K)
    predicted = probabilities.argmax(axis=1)  # (N,)
    names = [str(name) for name in (model.metadata.get("class_names") or dataset.class_names)]
    confusion = viz.confusion_matrix(y_test, predicted, num_classes=len(names))  # (K, K)
    per_class = _per_class(confusion, names)
    accuracy = float(np.trace(confusion) / max(len(y_test), 1))

    figures = {"history": _save(viz.plot_history(history), os.path.join(out, "history.png")),
               "confusion_matrix": _save(viz.plot_confusion_matrix(y_test, predicted, class_names=names),
                                         os.path.join(out, "confusion_matrix.png")),
               "misclassified": _save(viz.plot_misclassified(x_test, y_test, probabilities, class_names=names,
                                                             max_images=MAX_MISCLASSIFIED),
                                      os.path.join(out, "misclassified.png"))}
    page = _page(folder=folder, config=config, metrics=metrics, history=history, model=model, per_class=per_class,
                 accuracy=accuracy, test_images=len(y_test), wrong=int(len(y_test) - np.trace(confusion)),
                 figures=figures)
    path = os.path.join(out, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(page)
    return ReportResult(html=path, figures=figures, accuracy=accuracy, test_images=len(y_test),
                        per_class=per_class, confusion=confusion)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] = (),
           total: Sequence[Any] | None = None, raw: int | None = None) -> str:
    """An HTML table; every cell is escaped, except column `raw`, which holds HTML built here."""
    numeric = list(numeric) + [False] * (len(headers) - len(numeric))

    def cells(row: Sequence[Any]) -> str:
        opening = ['<td class="n">' if flag else "<td>" for flag in numeric]
        return "".join(f"{opening[i]}{cell if i == raw else _e(cell)}</td>" for i, cell in enumerate(row))

    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(f"<tr>{cells(row)}</tr>" for row in rows)
    if total is not None:
        body += f'<tr class="total">{cells(total)}</tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: str, alt: str) -> str:
    with open(path, "rb") as stream:
        encoded = base64.b64encode(stream.read()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_e(alt)}">'


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")  # 0.4250 -> 0.425, 2.5600 -> 2.56
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _page(*, folder: str, config: Any, metrics: dict, history: dict, model: Any,
          per_class: list[ClassAccuracy], accuracy: float, test_images: int, wrong: int,
          figures: dict[str, str]) -> str:
    sections: dict[str, str] = {}

    settings = [(field.name, "-" if getattr(config, field.name) is None else getattr(config, field.name))
                for field in dataclasses.fields(config) if field.name not in ("out", "verbose", "checkpoint_minutes")]
    rows = model.layer_table()
    layer_rows = [(row["name"], row["type"], shape_str(row["output_shape"]), f"{row['params']:,}", si(row["macs"]),
                   "-" if row["receptive_field"] is None else "x".join(map(str, row["receptive_field"])),
                   "-" if row["jump"] is None else "x".join(map(str, row["jump"]))) for row in rows]
    total = ("Total", "", "", f"{sum(r['params'] for r in rows):,}", si(sum(r["macs"] for r in rows)), "", "")
    headers = ["Layer", "Type", "Output shape", "Params", "MACs", "Receptive field", "Jump"]
    sections["summary"] = (
        f"<h3>Settings</h3>{_table(['Setting', 'Value'], settings)}"
        f"<h3>Model {_e(model.name)}</h3>"
        f"{_table(headers, layer_rows, [False] * 3 + [True] * 4, total)}"
        f'<p class="note">MACs: multiply-adds per image. Receptive field: the input pixels one unit of the layer '
        f"sees (height x width); jump: the distance in input pixels between neighbouring units.</p>")

    curves = _image(figures["history"], "training and validation loss and accuracy per epoch")
    epochs = len(next(iter(history.values()), []))
    if 0 < epochs <= MAX_HISTORY_ROWS:
        keys = list(history)
        curves += _table(["Epoch", *keys], [(i + 1, *(f"{history[k][i]:.4f}" for k in keys)) for i in range(epochs)],
                         [True] * (len(keys) + 1))
    sections["training-curves"] = curves

    saved = [(key.replace("_", " "), _number(value)) for key, value in metrics.items() if not isinstance(value, dict)]
    environment = metrics.get("environment") if isinstance(metrics.get("environment"), dict) else {}
    same = test_images == metrics.get("test_images")
    sections["test-metrics"] = (
        _table(["Metric (metrics.json, written when training ended)", "Value"], saved)
        + _table(["Recomputed now", "Value"], [("test images", f"{test_images:,}"), ("accuracy", f"{accuracy:.4f}"),
                                               ("misclassified", f"{wrong:,}")], [False, True])
        + ("" if same else f'<p class="note">The recomputed figures use {test_images:,} test images, '
                           f"metrics.json {_e(metrics.get('test_images', '?'))}: they differ for that reason.</p>")
        + (_table(["Environment of the run", "Value"], list(environment.items())) if environment else ""))

    class_rows = []
    for item in per_class:
        share = item.accuracy
        bar = "" if math.isnan(share) else f'<span class="bar" style="width:{share * 6:.2f}em"></span>'
        class_rows.append((item.index, item.name, f"{item.total:,}", f"{item.correct:,}",
                           bar + ("-" if math.isnan(share) else _e(f"{share:.1%}")),
                           "-" if item.confused_with is None else f"{item.confused_with} ({item.confused_count})"))
    sections["per-class-accuracy"] = (
        _table(["#", "Class", "Test images", "Correct", "Accuracy", "Most often predicted instead"], class_rows,
               [True, False, True, True, False, False], raw=4)
        + '<p class="note">Accuracy of a class: the share of its test images predicted as it (its recall).</p>')
    sections["confusion-matrix"] = _image(figures["confusion_matrix"], "confusion matrix, rows true class, "
                                                                       "columns predicted class")
    sections["misclassified"] = (_image(figures["misclassified"], "misclassified test images")
                                 + f'<p class="note">{wrong:,} of {test_images:,} test images misclassified; up to '
                                   f"{MAX_MISCLASSIFIED} shown, the most confident mistakes first.</p>")

    title = f"Run report: {os.path.basename(os.path.normpath(folder))}"
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    intro = (f"{config.model} on {config.dataset}, {metrics.get('epochs_run', '?')} epoch(s); test accuracy "
             f"{accuracy:.2%} on {test_images:,} images. Run folder {os.path.abspath(folder)}; "
             f"report written {created} by convnet {__version__}.")
    nav = " ".join(f'<a href="#{anchor}">{_e(heading)}</a>' for anchor, heading in SECTIONS)
    body = "".join(f'<section id="{anchor}"><h2>{_e(heading)}</h2>{sections[anchor]}</section>\n'
                   for anchor, heading in SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{_e(title)}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n<p>{_e(intro)}</p>\n<nav>{nav}</nav>\n"
            f"{body}</body>\n</html>\n")
