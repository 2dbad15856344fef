"""One self-contained HTML page about a finished training run: the model's layer table, the training curves,
the test metrics, the accuracy of each class, the confusion matrix and the misclassified test images.

    >>> result = build_report("runs/quick")          # doctest: +SKIP
    >>> result.html, sorted(result.figures)          # doctest: +SKIP
    ('runs/quick/report/report.html', ['confusion_matrix', 'history', 'misclassified'])

The page needs nothing but itself: the figures are embedded as base64 `data:` URIs (and also written next
to it as PNG files), the style sheet is inline, and there are no scripts or links to other sites, so it
can be mailed or archived as one file. The page is `templates/report.html` (which extends the shared
`base.html`, see `convnet.inspection.pages`), autoescaped: every piece of text from the run (names,
settings, paths) is HTML-escaped. This module loads the run, computes the figures and hands each section
its data.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from convnet import __version__
from convnet._internal.checks import check_int, shape_str
from convnet._internal.files import atomic_write
from convnet._internal.table import si
from convnet.inspection import pages
from convnet.inspection.figures import save_figure

__all__ = ["build_report", "ReportResult", "ClassAccuracy", "SECTIONS", "REPORT_FILE"]

REPORT_FILE = "report.html"
FIGURE_DPI = 100  # pixels per inch of the PNG files
MAX_MISCLASSIFIED = 25  # mistakes shown, the most confident first
MAX_HISTORY_ROWS = 50  # epochs listed in the table under the curves; longer runs show the curves only
SECTIONS = (("summary", "Summary"), ("training-curves", "Training curves"), ("test-metrics", "Test metrics"),
            ("per-class-accuracy", "Per-class accuracy"), ("confusion-matrix", "Confusion matrix"),
            ("misclassified", "Misclassified examples"))  # (anchor, heading), in page order

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


def build_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, limit: int | None = None,
                 data_dir: str | os.PathLike | None = None, device: str = "auto") -> ReportResult:
    """Write the report of a finished run: three PNG figures and `report.html`, which embeds them.

    The test-set figures are recomputed: the run's model is loaded, the test images are loaded as the run
    loaded them (`runs.load_split` with the run's `config.json`) and classified again. A run on your own
    folder of images without `--test-data` is scored on its validation split, and the report says so.

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
    from convnet.datasets import get_dataset
    from convnet.inspection import viz
    from convnet.models import load_model
    from convnet.runs.job import load_config, load_split, prepare_folder

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

    _, _, x_val, y_val, x_test, y_test = load_split(config)  # (N, H, W, C) float32 as the model takes them, (N,)
    if config.data is not None and len(y_test) == 0:  # your own images without --test-data: the validation split
        x_test, y_test = x_val, y_val
    if len(y_test) == 0:
        raise ValueError(f"{folder!r}: the run has no test images (--test-data) and no validation images "
                         f"(--val-split 0), so there is nothing to report on")
    probabilities = model.predict(x_test, batch_size=512, verbose=0)  # (N, K)
    predicted = probabilities.argmax(axis=1)  # (N,)
    names = model.metadata.get("class_names") or get_dataset(config.dataset, argument="dataset").class_names
    names = [str(name) for name in names]
    shown = x_test / 255.0 if config.data is not None else x_test  # your own images come as pixels 0-255
    confusion = viz.confusion_matrix(y_test, predicted, num_classes=len(names))  # (K, K)
    per_class = _per_class(confusion, names)
    accuracy = float(np.trace(confusion) / max(len(y_test), 1))

    figures = {"history": save_figure(viz.plot_history(history), os.path.join(out, "history.png"), FIGURE_DPI),
               "confusion_matrix": save_figure(viz.plot_confusion_matrix(y_test, predicted, class_names=names),
                                               os.path.join(out, "confusion_matrix.png"), FIGURE_DPI),
               "misclassified": save_figure(viz.plot_misclassified(shown, y_test, probabilities, class_names=names,
                                                                   max_images=MAX_MISCLASSIFIED),
                                            os.path.join(out, "misclassified.png"), FIGURE_DPI)}
    page = _page(folder=folder, config=config, metrics=metrics, history=history, model=model, per_class=per_class,
                 accuracy=accuracy, test_images=len(y_test), wrong=int(len(y_test) - np.trace(confusion)),
                 figures=figures)
    path = os.path.join(out, REPORT_FILE)
    atomic_write(path, page.encode("utf-8"))
    return ReportResult(html=path, figures=figures, accuracy=accuracy, test_images=len(y_test),
                        per_class=per_class, confusion=confusion)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")  # 0.4250 -> 0.425, 2.5600 -> 2.56
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _shape_text(shape: Any) -> str:
    """An output shape, or the shapes of a layer with several outputs, as `summary` writes them."""
    return ", ".join(shape_str(item) for item in shape) if isinstance(shape, list) else shape_str(shape)


def _summary(config: Any, model: Any) -> dict[str, Any]:
    """The run's settings and the model's layer table: for a graph with its "Connected to" column (Keras's
    summary), each nested model's layers listed under it as "nested/layer" rows (the total counts each
    parameter once, in the nested model's own row)."""
    from convnet.inspection.explain import layer_rows
    from convnet.models.sequential import Sequential

    settings = [(field.name, "-" if getattr(config, field.name) is None else getattr(config, field.name))
                for field in dataclasses.fields(config) if field.name not in ("out", "verbose", "checkpoint_minutes")]
    rows = list(layer_rows(model).values())
    graph = not isinstance(model, Sequential)  # a stack's layers each read the one above: no column needed
    layers = [(row["name"], row["type"], _shape_text(row["output_shape"]), f"{row['params']:,}", si(row["macs"]),
               "-" if row["receptive_field"] is None else "x".join(map(str, row["receptive_field"])),
               "-" if row["jump"] is None else "x".join(map(str, row["jump"])),
               *([", ".join(row["connected_to"]) or "-"] if graph else [])) for row in rows]
    top = [row for row in rows if row["nested_in"] is None]
    total = ("Total", "", "", f"{sum(r['params'] for r in top):,}", si(sum(r["macs"] for r in top)), "", "",
             *([""] if graph else []))
    headers = ["Layer", "Type", "Output shape", "Params", "MACs", "Receptive field", "Jump",
               *(["Connected to"] if graph else [])]
    nested = [row["name"] for row in top if any(other["nested_in"] == row["name"] for other in rows)]
    return {"settings": pages.table(["Setting", "Value"], settings), "model_name": model.name,
            "layers": pages.table(headers, layers, [False] * 3 + [True] * 4, total),
            "graph": graph, "nested": nested}


def _training_curves(history: dict, figure: str) -> dict[str, Any]:
    """The curves, and the numbers per epoch for runs of up to MAX_HISTORY_ROWS epochs."""
    epochs, keys = len(next(iter(history.values()), [])), list(history)
    table = None
    if 0 < epochs <= MAX_HISTORY_ROWS:
        table = pages.table(["Epoch", *keys], [(i + 1, *(f"{history[k][i]:.4f}" for k in keys)) for i in range(epochs)],
                            [True] * (len(keys) + 1))
    return {"image": pages.png_data_uri(figure), "epochs": table}


def _test_metrics(metrics: dict, accuracy: float, test_images: int, wrong: int) -> dict[str, Any]:
    """metrics.json as written when training ended, next to the figures recomputed now."""
    saved = [(key.replace("_", " "), _number(value)) for key, value in metrics.items() if not isinstance(value, dict)]
    environment = metrics.get("environment")
    recomputed = [("test images", f"{test_images:,}"), ("accuracy", f"{accuracy:.4f}"), ("misclassified", f"{wrong:,}")]
    return {"saved": pages.table(["Metric (metrics.json, written when training ended)", "Value"], saved),
            "recomputed": pages.table(["Recomputed now", "Value"], recomputed, [False, True]),
            "test_images": f"{test_images:,}",
            "saved_test_images": None if test_images == metrics.get("test_images") else metrics.get("test_images", "?"),
            "environment": pages.table(["Environment of the run", "Value"], list(environment.items()))
            if isinstance(environment, dict) and environment else None}


def _per_class_rows(per_class: list[ClassAccuracy]) -> dict[str, Any]:
    """One row per class; `bar_em` is the width of its accuracy bar (6em for 100%), None without test images."""
    rows = []
    for item in per_class:
        share = item.accuracy
        rows.append({"index": item.index, "name": item.name, "total": f"{item.total:,}", "correct": f"{item.correct:,}",
                     "bar_em": None if math.isnan(share) else f"{share * 6:.2f}",
                     "accuracy": "-" if math.isnan(share) else f"{share:.1%}",
                     "confused": "-" if item.confused_with is None else f"{item.confused_with} ({item.confused_count})"})
    return {"rows": rows}


def _page(*, folder: str, config: Any, metrics: dict, history: dict, model: Any,
          per_class: list[ClassAccuracy], accuracy: float, test_images: int, wrong: int,
          figures: dict[str, str]) -> str:
    """report.html: templates/report.html filled with each section's data."""
    data = {"summary": _summary(config, model),
            "training-curves": _training_curves(history, figures["history"]),
            "test-metrics": _test_metrics(metrics, accuracy, test_images, wrong),
            "per-class-accuracy": _per_class_rows(per_class),
            "confusion-matrix": {"image": pages.png_data_uri(figures["confusion_matrix"])},
            "misclassified": {"image": pages.png_data_uri(figures["misclassified"]), "wrong": f"{wrong:,}",
                              "test_images": f"{test_images:,}", "shown": MAX_MISCLASSIFIED}}
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    images, scored = config.dataset, "test"
    if config.data is not None:  # your own images: the folder's or the file's name
        images = os.path.basename(os.path.normpath(config.data))
        scored = "test" if config.test_data is not None or images.endswith(".npz") else "validation (no test set)"
    intro = (f"{config.model} on {images}, {metrics.get('epochs_run', '?')} epoch(s); {scored} accuracy "
             f"{accuracy:.2%} on {test_images:,} images. Run folder {os.path.abspath(folder)}; "
             f"report written {created} by convnet {__version__}.")
    return pages.render("report.html", title=f"Run report: {os.path.basename(os.path.normpath(folder))}",
                        intro=intro, sections=SECTIONS, data=data)
