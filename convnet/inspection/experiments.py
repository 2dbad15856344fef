"""Experiments that put numbers on the seed document's claims about CNNs, built with convnet's own API.

    >>> from convnet import experiments
    >>> experiments.list_experiments()
    ['depthpool', 'params', 'pooling', 'translation']
    >>> result = experiments.run_experiment("params", quick=True, out_dir="runs/params")  # doctest: +SKIP
    >>> print(result.table_markdown)                                                         # doctest: +SKIP

Each experiment writes `results.json` (its numbers, settings, timing and environment), `results.md` (the
Markdown table) and PNG plots into its output folder. `quick=True` runs a smaller version in under two
minutes on a 2-core CPU (for tests and CI); the full version is what the README reports. Every run is
seeded: the same seed on the same machine gives the same numbers. The command line, `convnet experiment
NAME [--quick]`, is `convnet.cli.experiments`.

| name | the seed's claim it tests |
| --- | --- |
| params | a CNN stays small for large images because each neuron is connected to a small patch only |
| translation | a CNN that learned a pattern at one place recognises it anywhere; a dense network only there |
| pooling | pooling buys invariance to small shifts, at the cost of information |
| depthpool | depth-wise max pooling over rotated filters gives rotation invariance |
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from convnet import layers as L
from convnet import zoo
from convnet._internal.checks import (
    check_bool,
    check_int,
    describe,
    unknown_name,
)
from convnet._internal.files import atomic_write
from convnet._internal.registry import Registry
from convnet._internal.table import markdown_table
from convnet.inspection.figures import montage, new_figure, save_figure
from convnet.models.sequential import Sequential
from convnet.utils import set_random_seed

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Experiment", "ExperimentResult", "list_experiments", "get_experiment", "run_experiment"]


def __getattr__(name: str) -> Any:
    if name == "add_cli":  # the command line moved to the CLI layer
        raise AttributeError("convnet.experiments.add_cli moved: the `convnet experiment` command is registered by "
                             "convnet.cli.experiments.add_commands")
    raise AttributeError(f"module 'convnet.inspection.experiments' has no attribute {name!r}")


@dataclass
class ExperimentResult:
    """What `run_experiment` returns; the same numbers are in `out_dir/results.json`."""

    name: str
    table_markdown: str  # the results as Markdown table(s), as in results.md
    numbers: dict[str, Any]  # every measured number, as written to results.json under "numbers"
    plots: list[str]  # paths of the PNG files written
    out_dir: str
    json_path: str
    markdown_path: str
    seconds: float  # wall-clock time of the run
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """What an experiment function gets besides its settings."""

    out_dir: str
    seed: int
    data_dir: str | None
    device: str

    def path(self, filename: str) -> str:
        return os.path.join(self.out_dir, filename)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: `full` and `quick` are its settings (units in the comments where defined);
    `function(settings, run)` returns (numbers, Markdown table, plot paths)."""

    name: str
    title: str
    claim: str
    full: dict[str, Any]
    quick: dict[str, Any]
    function: Callable[[dict[str, Any], _Run], tuple[dict[str, Any], str, list[str]]]


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def _register(name: str, title: str, claim: str, full: dict[str, Any], quick: dict[str, Any]) -> Callable:
    def decorate(function: Callable) -> Callable:
        assert set(quick) <= set(full), name  # quick overrides some full settings
        EXPERIMENTS.register(name, Experiment(name, title, claim, full, {**full, **quick}, function))
        return function
    return decorate


def list_experiments(pattern: str = "*") -> list[str]:
    """Names of the registered experiments matching a shell-style `pattern`, sorted."""
    return EXPERIMENTS.names(pattern)


def get_experiment(name: str, argument: str = "name") -> Experiment:
    """The registered experiment called `name`; ValueError with close matches otherwise."""
    return EXPERIMENTS.get(name, argument=argument)


def run_experiment(name: str, quick: bool = False, out_dir: str | os.PathLike | None = None, seed: int = 0,
                   data_dir: str | os.PathLike | None = None, device: str = "cpu",
                   **settings: Any) -> ExperimentResult:
    """Run one experiment and write results.json, results.md and its plots into `out_dir`.

    Args:
        name: one of `list_experiments()`.
        quick: the small version (under two minutes on a 2-core CPU) instead of the full one.
        out_dir: output folder (default: runs/experiments/<name>, or <name>-quick).
        seed: seeds the data drawing, the weights and the shuffling.
        data_dir: the folder holding fashion-mnist/ (default: $CONVNET_DATA, then the cache).
        device: where models train; "cpu" by default so that numbers repeat exactly.
        **settings: override individual settings of the chosen version (see `get_experiment(name).full`).

    Raises:
        ValueError: an unknown experiment or setting name (with close matches), or a bad seed.
    """
    experiment = get_experiment(name)
    quick = check_bool("quick", quick)
    seed = check_int("seed", seed, minimum=0)
    chosen = dict(experiment.quick if quick else experiment.full)
    for key, value in settings.items():
        if key not in chosen:
            raise unknown_name(f"setting of experiment {experiment.name!r}", key, chosen, argument="settings")
        chosen[key] = value
    if out_dir is None:
        out_dir = os.path.join("runs", "experiments", experiment.name + ("-quick" if quick else ""))
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"`out_dir` must be a path. Received: out_dir={describe(out_dir)}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    run = _Run(out_dir, seed, None if data_dir is None else os.fspath(data_dir), device)
    set_random_seed(seed)
    started = time.perf_counter()
    numbers, table, plots = experiment.function(chosen, run)
    seconds = time.perf_counter() - started
    from convnet.runs.job import environment
    record = {"experiment": experiment.name, "title": experiment.title, "claim": experiment.claim, "quick": quick,
              "seed": seed, "settings": chosen, "seconds": round(seconds, 1),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(), "numbers": numbers}
    json_path, markdown_path = run.path("results.json"), run.path("results.md")
    atomic_write(json_path, (json.dumps(record, indent=2, default=_json_default) + "\n").encode())
    command = f"convnet experiment {experiment.name}{' --quick' if quick else ''} --seed {seed}"
    atomic_write(markdown_path, (f"## {experiment.title}\n\nClaim: {experiment.claim}\n\n{table}\n\n"
                                 f"_{'quick' if quick else 'full'} run, seed {seed}, {seconds:.0f} s: "
                                 f"`{command}`_\n").encode())
    return ExperimentResult(experiment.name, table, numbers, plots, out_dir, json_path, markdown_path, seconds,
                            chosen)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()  # a NumPy scalar becomes a Python number
    raise TypeError(f"not JSON serialisable: {describe(value)}")


PLOT_DPI = 110  # pixels per inch of the experiments' PNG plots


def _save(figure: Figure, run: _Run, filename: str) -> str:
    return save_figure(figure, run.path(filename), dpi=PLOT_DPI)


def _relative_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the images (axis 0) of ||a - b|| / ||b||, the norms over every other axis."""
    axes = tuple(range(1, a.ndim))
    difference = np.sqrt(((a - b) ** 2).sum(axis=axes))
    return float(np.mean(difference / np.maximum(np.sqrt((b ** 2).sum(axis=axes)), 1e-12)))


def _scaled(images: np.ndarray, pad: int = 0) -> np.ndarray:
    """uint8 items (N, S, S) as float32 NHWC in [0, 1], with `pad` pixels of zeros on each side."""
    x = np.pad(images.astype(np.float32) / 255, ((0, 0), (pad, pad), (pad, pad)))  # (N, S + 2 pad, S + 2 pad)
    return x[..., None]  # (N, S', S') -> (N, S', S', 1)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _load_items(dataset: str, size: int, train_size: int, test_size: int, run: _Run
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(x_train, y_train, x_test, y_test, class_names): uint8 items (N, size, size) and int64 labels; the
    first N images of Fashion-MNIST, or N freshly drawn shapes."""
    from convnet.datasets import get_dataset, shapes
    source = get_dataset(dataset)
    if source is shapes:
        (x_train, y_train), (x_test, y_test) = shapes.load_data(image_size=size, train_size=train_size,
                                                                test_size=test_size, seed=run.seed)
    else:
        (x_train, y_train), (x_test, y_test) = source.load_data(data_dir=run.data_dir)
        if x_train.shape[1:] != (size, size):
            raise ValueError(f"{dataset} images are {x_train.shape[1]}x{x_train.shape[2]}; set item_size to that")
        x_train, y_train, x_test, y_test = (x_train[:train_size], y_train[:train_size], x_test[:test_size],
                                            y_test[:test_size])
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), tuple(source.class_names)


def _train(model: Sequential, x: np.ndarray, y: np.ndarray, settings: dict[str, Any], run: _Run) -> float:
    """Compile with Adam, fit quietly; returns the final training accuracy."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device=run.device)
    history = model.fit(x, y, batch_size=settings["batch_size"], epochs=settings["epochs"], verbose=0)
    return float(history.history["accuracy"][-1])


def _count(stack: list[L.Layer], input_shape: tuple[int, ...], max_real: int) -> tuple[int, bool]:
    """(parameters, whether any were computed by formula): real layers are built and counted, except Dense
    layers whose kernel would exceed `max_real` weights, counted as (inputs + 1) * units instead."""
    shape, total, formula = input_shape, 0, False
    for layer in stack:
        if isinstance(layer, L.InputLayer):
            continue
        if isinstance(layer, L.Dense) and shape[-1] * layer.units > max_real:
            total += (shape[-1] + int(layer.use_bias)) * layer.units  # too large to allocate
            formula = True
        else:
            layer.build_for(shape)
            total += layer.count_params()
        shape = layer.compute_output_shape(shape)
    return total, formula


def _seed_trunk(input_shape: tuple[int, int, int]) -> list[L.Layer]:
    """The seed CNN's convolutional layers, unbuilt (zoo.seed_cnn would allocate its whole Dense head)."""
    return zoo.seed_trunk(input_shape)[:-1]  # without its final Flatten


def _seed_head(gap: bool) -> list[L.Layer]:
    """The seed CNN's classifier, after Flatten (as in the seed) or after global average pooling."""
    return [L.GlobalAveragePooling2D() if gap else L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.5),
            L.Dense(10, activation="softmax")]


@_register(
    "params", "Parameters: a convolutional layer versus a dense layer with the same outputs",
    "a CNN stays small for high-resolution inputs because it is only partly connected",
    full={"input_shapes": [(28, 28, 1), (100, 100, 1), (427, 640, 3)],  # (height, width, channels)
          "filters": 32,  # feature maps of the Conv2D layer; the Dense layer has height * width * filters units
          "kernel_size": 3,  # pixels
          "max_real_weights": 50_000_000},  # larger Dense kernels are counted by formula, not allocated
    quick={})
def _params(settings: dict[str, Any], run: _Run) -> tuple[dict[str, Any], str, list[str]]:
    filters, kernel, max_real = settings["filters"], settings["kernel_size"], settings["max_real_weights"]
    rows: list[list[str]] = []
    numbers: dict[str, Any] = {"rows": []}
    for shape in map(tuple, settings["input_shapes"]):
        h, w, c = shape
        conv = L.Conv2D(filters, kernel, padding="same")
        conv_params, _ = _count([conv], shape, max_real)
        dense = L.Dense(h * w * filters)
        dense_params, dense_formula = _count([L.Flatten(), dense], shape, max_real)
        seed_params, seed_formula = _count([*_seed_trunk(shape), *_seed_head(gap=False)], shape, max_real)
        gap_params, _ = _count([*_seed_trunk(shape), *_seed_head(gap=True)], shape, max_real)
        row = {"input_shape": shape, "conv_params": conv_params, "dense_params": dense_params,
               "ratio": dense_params / conv_params, "dense_counted_by": "formula" if dense_formula else "layer",
               "conv_macs": h * w * filters * kernel * kernel * c, "dense_macs": h * w * c * h * w * filters,
               "dense_float32_bytes": 4 * dense_params, "seed_cnn_params": seed_params,
               "seed_cnn_counted_by": "formula" if seed_formula else "layer", "seed_gap_params": gap_params}
        numbers["rows"].append(row)
        rows.append([f"{h}x{w}x{c}", f"{conv_params:,}",
                     f"{dense_params:,}" + (" (formula)" if dense_formula else ""), f"{row['ratio']:,.0f}x",
                     _bytes(row["dense_float32_bytes"]), f"{seed_params:,}" + (" (formula)" if seed_formula else ""),
                     f"{gap_params:,}"])
    table = markdown_table(
        ["Input", f"Conv2D({filters}, {kernel}x{kernel}, same)", f"Dense to the same H*W*{filters} outputs",
         "Dense / Conv", "Dense weights (float32)", "Seed CNN (Flatten head)", "Seed CNN, global-pool head"],
        rows, right=[False, True, True, True, True, True, True])
    table += ("\n\nCounts come from built convnet layers (`count_params`), except those marked (formula): "
              "(inputs + 1) x units for a Dense layer too large to allocate. The seed CNN's head is "
              "Flatten-Dense(128)-Dropout-Dense(10); the last column replaces Flatten by GlobalAveragePooling2D.")
    figure = new_figure(6.5, 4)
    ax = figure.add_subplot()
    pixels = [math.prod(r["input_shape"]) for r in numbers["rows"]]
    for key, label, style in (("dense_params", "Dense, same outputs", "o-"), ("seed_cnn_params", "seed CNN", "s-"),
                              ("seed_gap_params", "seed CNN, global-pool head", "^-"),
                              ("conv_params", f"Conv2D({filters}, {kernel}x{kernel})", "d-")):
        ax.plot(pixels, [r[key] for r in numbers["rows"]], style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="input size (height x width x channels)", ylabel="parameters",
           title="Parameters versus input size")
    ax.set_xticks(pixels, [f"{r['input_shape'][0]}x{r['input_shape'][1]}x{r['input_shape'][2]}"
                           for r in numbers["rows"]])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return numbers, table, [_save(figure, run, "params.png")]


def _bytes(count: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} B"


def _place(items: np.ndarray, canvas: int, offsets: np.ndarray) -> np.ndarray:
    """Paste uint8 items (N, h, w) onto black canvases at (top, left) `offsets` (N, 2): float32 NHWC in [0, 1]."""
    n, h, w = items.shape
    out = np.zeros((n, canvas, canvas), np.float32)
    rows = offsets[:, 0, None, None] + np.arange(h)[None, :, None]  # (N, h, 1)
    cols = offsets[:, 1, None, None] + np.arange(w)[None, None, :]  # (N, 1, w)
    out[np.arange(n)[:, None, None], rows, cols] = items / np.float32(255)
    return out[..., None]  # (N, canvas, canvas) -> (N, canvas, canvas, 1)


def _translation_models(input_shape: tuple[int, int, int], classes: int, hidden: int
                        ) -> dict[str, Sequential]:
    """The dense network and two CNNs sharing one convolutional trunk, one with a Flatten head, one with a
    global-average-pooling head."""
    def trunk() -> list[L.Layer]:
        return [L.InputLayer(shape=input_shape),
                L.Conv2D(16, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(2)]

    head = [L.Dense(hidden, activation="relu"), L.Dense(classes, activation="softmax")]
    return {"dense": Sequential([L.InputLayer(shape=input_shape), L.Flatten(), *head], name="dense"),
            "cnn": Sequential([*trunk(), L.Flatten(), L.Dense(hidden, activation="relu"),
                               L.Dense(classes, activation="softmax")], name="cnn_flatten"),
            "cnn_gap": Sequential([*trunk(), L.GlobalAveragePooling2D(), L.Dense(hidden, activation="relu"),
                                   L.Dense(classes, activation="softmax")], name="cnn_gap")}


_MODEL_LABELS = {"dense": "Dense net", "cnn": "CNN, Flatten head", "cnn_gap": "CNN, global-pool head"}


@_register(
    "translation", "Translation: trained in one corner, tested across the canvas",
    "a CNN that learned a pattern at one place recognises it anywhere, a dense network only where it learned it",
    full={"datasets": ["fashion-mnist", "shapes"],
          "item_size": 28,  # pixels: the side of a Fashion-MNIST item or of a drawn shape
          "canvas": 56,  # pixels: the side of the canvas the items are pasted on
          "train_jitter": 4,  # pixels: training items sit at a random offset in [0, train_jitter] from the top-left
          "shift_step": 2,  # pixels between test positions, moved diagonally from the top-left corner
          "train_size": 12000, "test_size": 2000,  # images per dataset
          "hidden": 64,  # units of the Dense layer before the output, in all three models
          "epochs": 5, "batch_size": 64},
    quick={"datasets": ["shapes"], "item_size": 20, "canvas": 40, "train_size": 3000, "test_size": 700,
           "shift_step": 4, "epochs": 4})
def _translation(settings: dict[str, Any], run: _Run) -> tuple[dict[str, Any], str, list[str]]:
    item, canvas, jitter = settings["item_size"], settings["canvas"], settings["train_jitter"]
    if canvas < item + jitter:
        raise ValueError(f"`canvas` (={canvas}) must be at least item_size + train_jitter (={item + jitter})")
    shifts = list(range(0, canvas - item + 1, settings["shift_step"]))
    rng = np.random.default_rng(run.seed)
    numbers: dict[str, Any] = {"shifts": shifts, "datasets": {}}
    examples = []
    for dataset in settings["datasets"]:
        x_train, y_train, x_test, y_test, names = _load_items(dataset, item, settings["train_size"],
                                                              settings["test_size"], run)
        train_images = _place(x_train, canvas, rng.integers(0, jitter + 1, (len(x_train), 2)))
        models = _translation_models((canvas, canvas, 1), len(names), settings["hidden"])
        found: dict[str, Any] = {}
        for key, model in models.items():
            train_accuracy = _train(model, train_images, y_train, settings, run)
            accuracy = []
            for shift in shifts:
                test_images = _place(x_test, canvas, np.full((len(x_test), 2), shift))
                predicted = model.predict(test_images, batch_size=500, verbose=0).argmax(axis=1)
                accuracy.append(float(np.mean(predicted == y_test)))
            found[key] = {"params": model.count_params(), "train_accuracy": train_accuracy, "accuracy": accuracy}
        found["chance"] = float(np.bincount(y_test).max() / len(y_test))
        numbers["datasets"][dataset] = found
        examples.append((dataset, x_test[0]))
    datasets = settings["datasets"]
    header = ["Shift (px, down and right)"] + [f"{d}: {_MODEL_LABELS[k]}" for d in datasets for k in _MODEL_LABELS]
    rows = [[str(shift)] + [_percent(numbers["datasets"][d][k]["accuracy"][i]) for d in datasets
                            for k in _MODEL_LABELS] for i, shift in enumerate(shifts)]
    rows.append(["parameters"] + [f"{numbers['datasets'][d][k]['params']:,}" for d in datasets for k in _MODEL_LABELS])
    table = markdown_table(header, rows, right=[False] + [True] * (len(header) - 1))
    table += (f"\n\nTest accuracy with every test item moved by the shift both down and right on a {canvas}x{canvas} "
              f"canvas; training items were {item}x{item} at offsets 0-{jitter} px from the top-left corner. "
              f"Chance: " + ", ".join(f"{d} {_percent(numbers['datasets'][d]['chance'])}" for d in datasets) + ".")
    return numbers, table, [_plot_translation(numbers, examples, settings, run)]


def _plot_translation(numbers: dict[str, Any], examples: list, settings: dict[str, Any], run: _Run) -> str:
    datasets, shifts = settings["datasets"], numbers["shifts"]
    figure = new_figure(5 * len(datasets), 5.2)
    grid = figure.add_gridspec(2, len(datasets), height_ratios=[3.2, 1])
    for column, (dataset, item) in enumerate(examples):
        ax = figure.add_subplot(grid[0, column])
        found = numbers["datasets"][dataset]
        for key, label in _MODEL_LABELS.items():
            ax.plot(shifts, [100 * a for a in found[key]["accuracy"]], "o-", ms=3,
                    label=f"{label} ({found[key]['params']:,} params)")
        ax.axhline(100 * found["chance"], color="gray", ls=":", label="chance")
        ax.axvspan(0, settings["train_jitter"], color="green", alpha=0.1, label="training positions")
        ax.set(xlabel="shift down and right (pixels)", ylabel="test accuracy (%)", ylim=(0, 100), title=dataset)
        ax.legend(fontsize=7)
        picks = [shifts[0], shifts[len(shifts) // 2], shifts[-1]]
        canvases = _place(np.repeat(item[None], len(picks), 0), settings["canvas"], np.array([[s, s] for s in picks]))
        montage(figure.add_subplot(grid[1, column]), canvases[None, ..., 0], title="test positions",
                 column_labels=[f"shift {s}" for s in picks])
    return _save(figure, run, "translation.png")


@_register(
    "pooling", "Max pooling: invariance to small shifts, and what it discards",
    "pooling buys invariance to small shifts at the cost of information",
    full={"train_size": 20000,  # Fashion-MNIST images to train the small CNN on
          "epochs": 3, "batch_size": 64,
          "filters": 16, "kernel_size": 5,  # the first convolutional layer, whose maps are studied
          "pool_sizes": [2, 4],  # max-pooling windows (and strides) applied to those maps
          "max_shift": 4,  # pixels; every shift 0..max_shift is applied up, down, left and right, to images
                           # padded by max_shift on each side so that nothing leaves the frame
          "eval_images": 2000,  # test images for the shift measurements and the reconstruction error
          "fit_images": 2000,  # training images the least-squares decoders are fitted on
          "block": 4},  # pixels: the decoders rebuild each block x block patch of the input
    quick={"train_size": 4000, "epochs": 1, "eval_images": 300, "fit_images": 600})
def _pooling(settings: dict[str, Any], run: _Run) -> tuple[dict[str, Any], str, list[str]]:
    x_train, y_train, x_test, _, _ = _load_items("fashion-mnist", 28, settings["train_size"],
                                                  settings["eval_images"], run)
    model, conv = _pooling_probe(settings["filters"], settings["kernel_size"])
    train_accuracy = _train(model, _scaled(x_train), y_train, settings, run)
    maps = _MapReader(conv, model.device, settings["pool_sizes"])
    # zeros around the image, wider than a shift plus the kernel's reach so that np.roll moves only zeros
    # across the border (conv(shifted x) is then exactly the shifted conv(x)); even, so 28 + 2 * margin divides by 4
    margin = -(-(settings["max_shift"] + settings["kernel_size"] // 2) // 2) * 2
    x_shift = _scaled(x_test, margin)  # (N, S, S, 1), S = 28 + 2 * margin
    x_fit, x_plain = _scaled(x_train[:settings["fit_images"]]), _scaled(x_test)  # unpadded: (N, 28, 28, 1)
    numbers: dict[str, Any] = {"train_accuracy": train_accuracy, **_shift_sensitivity(maps, x_shift, settings["max_shift"])}
    numbers["reconstruction"], decoded = _reconstruction(maps, x_fit, x_plain, settings["block"])
    table = _pooling_table(numbers, settings, trained_on=len(x_train), padded=x_shift.shape, fitted_on=len(x_fit))
    return numbers, table, [_plot_pooling(numbers, x_plain[:6, ..., 0], decoded, run)]


def _pooling_probe(filters: int, kernel_size: int) -> tuple[Sequential, L.Conv2D]:
    """A small Fashion-MNIST CNN whose first layer, `conv`, makes the maps studied."""
    conv = L.Conv2D(filters, kernel_size, padding="same", activation="relu", name="conv")
    model = Sequential([L.InputLayer(shape=(28, 28, 1)), conv, L.MaxPooling2D(2),
                        L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                        L.Dense(10, activation="softmax")], name="pooling_probe")
    return model, conv


class _MapReader:
    """The trained first layer's maps of NHWC images, raw (`pool` None) or max-pooled by one of `pool_sizes`."""

    def __init__(self, conv: L.Conv2D, device: Any, pool_sizes: list[int]):
        self.conv, self.device = conv, device
        self.pools: dict[int | None, L.Layer | None] = {None: None, **{p: L.MaxPooling2D(p) for p in pool_sizes}}

    @staticmethod
    def name(pool: int | None) -> str:
        return "conv maps" if pool is None else f"after {pool}x{pool} max pool"

    @torch.no_grad()
    def __call__(self, x: np.ndarray, pool: int | None = None) -> np.ndarray:
        out = self.conv(torch.from_numpy(x).to(self.device))  # (N, S, S, filters)
        layer = self.pools[pool]
        return (out if layer is None else layer(out)).cpu().numpy()  # (N, S / p, S / p, filters)


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.roll(x, (dy, dx), axis=(1, 2))  # the zero margin wraps around, not the image


def _shift_sensitivity(maps: _MapReader, x: np.ndarray, max_shift: int) -> dict[str, Any]:
    """How much each representation of the padded images `x` changes when they move by 0..max_shift pixels
    in each of 4 directions ("change"), and how far the raw maps, shifted back, are from the originals
    ("aligned_change": 0 for an exactly equivariant convolution)."""
    directions = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    shifts = list(range(max_shift + 1))
    base = {pool: maps(x, pool) for pool in maps.pools}
    change = {maps.name(pool): [float(np.mean([_relative_change(maps(_shifted(x, s * dy, s * dx), pool), base[pool])
                                               for dy, dx in directions])) for s in shifts]
              for pool in maps.pools}
    aligned = [float(np.mean([_relative_change(maps(_shifted(x, s * dy, s * dx)), _shifted(base[None], s * dy, s * dx))
                              for dy, dx in directions])) for s in shifts]
    return {"shifts": shifts, "change": change, "aligned_change": aligned}


def _reconstruction(maps: _MapReader, x_fit: np.ndarray, x_test: np.ndarray, block: int
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What each representation keeps: every block x block patch of the 28x28 test images rebuilt from the
    numbers the representation holds for it, by a least-squares decoder fitted on `x_fit`. Returns
    ({name: numbers kept per patch, unexplained variance}, {name: the first 6 images rebuilt (6, 28, 28)})."""
    found, decoded = {}, {}
    for pool in maps.pools:
        fit_features, test_features = _blocks(maps(x_fit, pool), block, 28), _blocks(maps(x_test, pool), block, 28)
        error, predicted = _least_squares(fit_features, _blocks(x_fit, block, 28), test_features,
                                          _blocks(x_test, block, 28))
        found[maps.name(pool)] = {"features_per_block": fit_features.shape[1], "unexplained_variance": error}
        decoded[maps.name(pool)] = _unblocks(predicted[:6 * (28 // block) ** 2], 6, 28, block)
    return found, decoded


def _pooling_table(numbers: dict[str, Any], settings: dict[str, Any], trained_on: int, padded: tuple[int, ...],
                   fitted_on: int) -> str:
    names = list(numbers["change"])
    rows = [[str(s), f"{numbers['aligned_change'][i]:.3f}"] + [f"{numbers['change'][name][i]:.3f}" for name in names]
            for i, s in enumerate(numbers["shifts"])]
    shift_table = markdown_table(["Shift (px)", "conv maps, shifted back", *names], rows,
                                 right=[False] + [True] * (len(names) + 1))
    block, recon = settings["block"], numbers["reconstruction"]
    rows = [[name, f"{r['features_per_block']}", f"{r['unexplained_variance']:.3f}"] for name, r in recon.items()]
    recon_table = markdown_table([f"Representation of each {block}x{block} input patch", "numbers kept",
                                  "unexplained variance of the rebuilt pixels"], rows, right=[False, True, True])
    return (f"Relative change ||f(shifted x) - f(x)|| / ||f(x)|| of the first layer's maps ({settings['filters']} "
            f"{settings['kernel_size']}x{settings['kernel_size']} ReLU filters of a small CNN trained on "
            f"{trained_on} Fashion-MNIST images to {_percent(numbers['train_accuracy'])} training accuracy), mean "
            f"over {padded[0]} test images (padded to {padded[1]}x{padded[2]}) and 4 directions:\n\n{shift_table}\n\n"
            f"What pooling discards: each {block}x{block} patch of a test image rebuilt by a linear least-squares "
            f"decoder from the numbers the representation keeps for it (fitted on {fitted_on} training images):"
            f"\n\n{recon_table}")


def _blocks(maps: np.ndarray, block: int, size: int) -> np.ndarray:
    """(N, H', W', C) maps of a size x size input -> (N * (size / block)^2, features): per block x block input
    patch, every number the maps hold for it (cells of side block * H' / size)."""
    n, h, w, c = maps.shape
    per = block * h // size  # map cells per patch side
    grid = maps.reshape(n, h // per, per, w // per, per, c)  # (N, bh, per, bw, per, C)
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(-1, per * per * c)  # (N * bh * bw, per * per * C)


def _unblocks(patches: np.ndarray, n: int, size: int, block: int) -> np.ndarray:
    """Inverse of _blocks for a one-channel image: (n * (size / block)^2, block^2) -> (n, size, size)."""
    side = size // block
    grid = patches.reshape(n, side, side, block, block)  # (n, bh, bw, block, block)
    return grid.transpose(0, 1, 3, 2, 4).reshape(n, size, size)


def _least_squares(features: np.ndarray, targets: np.ndarray, test_features: np.ndarray,
                   test_targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Fit targets ~ features @ W + b by ridge-regularised least squares (tiny ridge, for stability); return
    the unexplained variance sum((y - y_hat)^2) / sum((y - mean)^2) on the test pairs, and the predictions."""
    def design(f: np.ndarray) -> np.ndarray:
        return np.concatenate([f, np.ones((len(f), 1), f.dtype)], axis=1).astype(np.float64)

    a = design(features)
    gram = a.T @ a
    gram[np.diag_indices_from(gram)] += 1e-6 * np.trace(gram) / len(gram)
    weights = np.linalg.solve(gram, a.T @ targets.astype(np.float64))
    predicted = design(test_features) @ weights
    residual = ((test_targets - predicted) ** 2).sum()
    total = ((test_targets - test_targets.mean(axis=0)) ** 2).sum()
    return float(residual / total), predicted


def _plot_pooling(numbers: dict[str, Any], originals: np.ndarray, decoded: dict[str, np.ndarray], run: _Run) -> str:
    figure = new_figure(11, 4.6)
    grid = figure.add_gridspec(1, 2, width_ratios=[1, 1.4])
    ax = figure.add_subplot(grid[0])
    ax.plot(numbers["shifts"], numbers["aligned_change"], "k--", label="conv maps, shifted back (equivariance)")
    for name, values in numbers["change"].items():
        ax.plot(numbers["shifts"], values, "o-", label=name)
    ax.set(xlabel="input shift (pixels)", ylabel="relative change of the maps", title="Shift sensitivity",
           ylim=(0, None))
    ax.legend(fontsize=8)
    labels = ["input"] + [f"from {name}\n(unexplained {numbers['reconstruction'][name]['unexplained_variance']:.2f})"
                          for name in decoded]
    images = np.clip(np.stack([originals, *decoded.values()]), 0, 1)  # (1 + representations, 6, S, S)
    montage(figure.add_subplot(grid[1]), images, row_labels=labels, title="test images rebuilt by least squares")
    return _save(figure, run, "pooling.png")


def _stroke(u: np.ndarray, v: np.ndarray, angle: float, length: float, width: float) -> np.ndarray:
    """A soft line segment from the centre, `length` pixels long towards `angle` (degrees, counter-clockwise)."""
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    along = u * ca + v * sa
    across = -u * sa + v * ca
    beyond = np.maximum(np.maximum(-along, along - length), 0)  # distance past either end, along the segment
    return np.exp(-(across ** 2 + beyond ** 2) / (2 * width ** 2))


# Patterns as strokes from the kernel centre, (angle in degrees, length in pixels); none is symmetric
# under a quarter turn, so their rotated copies are four (or eight) different filters.
_PATTERNS = {"bar end": [(0, 4)], "corner": [(0, 4), (90, 4)], "tee": [(0, 4), (90, 4), (180, 4)],
             "arrow": [(0, 4), (150, 3), (210, 3)]}


def _rotated_kernels(size: int, width: float) -> np.ndarray:
    """Keras-layout kernels (size, size, 1, patterns * 8): each pattern at 0, 45, ..., 315 degrees, pattern-major
    so that DepthMaxPool(8) takes the max over the rotations of one pattern. Each pattern is drawn at 0 and 45
    degrees from its formula; the quarter turns are exact np.rot90 copies. Zero mean and unit L2 norm each."""
    centre = (size - 1) / 2
    v, u = np.mgrid[0:size, 0:size] - centre  # v: rows (down), u: columns (right)
    v = -v  # counter-clockwise angles with y pointing up
    kernels = []
    for strokes in _PATTERNS.values():
        drawn = []
        for offset in (0, 45):
            image = np.max([_stroke(u, v, angle + offset, length, width) for angle, length in strokes], axis=0)
            image = image - image.mean()
            drawn.append(image / np.linalg.norm(image))
        for quarter in range(4):
            kernels += [np.rot90(image, quarter) for image in drawn]  # 0, 45, 90, 135, ... degrees in order
    return np.stack(kernels, axis=-1)[:, :, None, :].astype(np.float32)  # (size, size, 1, patterns * 8)


def _rotate(images: np.ndarray, angle: int) -> np.ndarray:
    """Rotate NHWC images counter-clockwise by a multiple of 45 degrees about their centre: quarter turns with
    np.rot90 (exact), the extra 45 degrees by bilinear resampling (torch grid_sample)."""
    quarters, rest = divmod(angle % 360, 90)
    assert rest in (0, 45), angle
    out = images
    if rest:
        theta = math.radians(rest)
        matrix = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0],
                               [math.sin(theta), math.cos(theta), 0.0]], dtype=torch.float32)
        nchw = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        grid = F.affine_grid(matrix.expand(len(images), 2, 3), list(nchw.shape), align_corners=False)
        turned = F.grid_sample(nchw, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = turned.permute(0, 2, 3, 1).numpy()  # (N, C, H, W) -> (N, H, W, C)
    return np.ascontiguousarray(np.rot90(out, quarters, axes=(1, 2)))


@_register(
    "depthpool", "Depth-wise max pooling over rotated filters: rotation invariance",
    "depth-wise max pooling over filters that detect rotated versions of a pattern gives rotation invariance",
    full={"images": 2000,  # shapes test images
          "image_size": 28, "padding": 8,  # pixels: shapes are drawn at image_size, then padded by this much each
                                           # side so that a 45-degree turn keeps them whole
          "kernel_size": 9,  # pixels; odd, so that SAME padding is symmetric and quarter turns are exact
          "stroke_width": 1.0},  # pixels: standard deviation of the strokes the patterns are drawn with
    quick={"images": 300})
def _depthpool(settings: dict[str, Any], run: _Run) -> tuple[dict[str, Any], str, list[str]]:
    from convnet.datasets import shapes
    _, (items, _) = shapes.load_data(image_size=settings["image_size"], train_size=0, test_size=settings["images"],
                                     seed=run.seed)
    x = _scaled(items, settings["padding"])  # (N, S, S, 1)
    kernels = _rotated_kernels(settings["kernel_size"], settings["stroke_width"])  # (size, size, 1, patterns * 8)
    banks = _RotationBanks(kernels, x.shape[1:])
    angles = list(range(0, 360, 45))
    numbers: dict[str, Any] = {"angles": angles, "patterns": list(_PATTERNS), **_rotation_changes(banks, x, angles)}
    table = _depthpool_table(numbers, settings["kernel_size"], x.shape)
    return numbers, table, [_plot_depthpool(numbers, kernels, x[0, ..., 0], run)]


class _RotationBanks:
    """The four layers compared, all from one Conv2D holding every pattern at 8 rotations: the filters every
    90 degrees or every 45, each without and with DepthMaxPool over each pattern's rotations."""

    def __init__(self, kernels: np.ndarray, input_shape: tuple[int, ...]):
        size, channels = kernels.shape[0], kernels.shape[-1]
        conv = L.Conv2D(channels, size, padding="same", use_bias=False, name="rotated_filters")
        self.model = Sequential([L.InputLayer(shape=input_shape), conv], name="rotated_filters")
        conv.set_weights([kernels])
        self.every_90 = np.arange(channels).reshape(-1, 8)[:, ::2].ravel()  # the 0/90/180/270-degree filters
        self.pool_4, self.pool_8 = L.DepthMaxPool(4), L.DepthMaxPool(8)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """{bank name: its maps of x (N, S, S, channels)}."""
        maps = self.model.predict(x, batch_size=500, verbose=0)  # (N, S, S, patterns * 8)
        quarter = maps[..., self.every_90]  # (N, S, S, patterns * 4)
        return {"4 rotations": quarter, "4 rotations + DepthMaxPool": self.pool_4(torch.from_numpy(quarter)).numpy(),
                "8 rotations": maps, "8 rotations + DepthMaxPool": self.pool_8(torch.from_numpy(maps)).numpy()}


def _rotation_changes(banks: _RotationBanks, x: np.ndarray, angles: list[int]) -> dict[str, Any]:
    """For each bank and angle, the relative change of its maps (turned back to the input's frame) and of
    each channel's global max when the images turn; and the change that resampling causes by itself."""
    global_max = L.GlobalMaxPooling2D()

    def maxima(maps: np.ndarray) -> np.ndarray:
        return global_max(torch.from_numpy(maps)).numpy()  # (N, channels)

    base = banks(x)
    found = {name: {"filters": (8 if name.startswith("8") else 4) * len(_PATTERNS), "channels": maps.shape[-1],
                    "maps_change": [], "global_change": []} for name, maps in base.items()}
    for angle in angles:
        for name, maps in banks(_rotate(x, angle)).items():
            found[name]["maps_change"].append(_relative_change(_rotate(maps, -angle), base[name]))
            found[name]["global_change"].append(_relative_change(maxima(maps), maxima(base[name])))
    # the part of a change that resampling alone causes: the invariant maps turned there and back, no filtering
    invariant = base["8 rotations + DepthMaxPool"]
    alone = [_relative_change(_rotate(_rotate(invariant, angle), -angle), invariant) for angle in angles]
    return {"banks": found, "resampling_alone": alone}


def _depthpool_table(numbers: dict[str, Any], size: int, shape: tuple[int, ...]) -> str:
    columns, angles = list(numbers["banks"]), numbers["angles"]
    header = ["Rotation (degrees)"] + [f"{c.replace(' rotations', ' rotated filters')} "
                                       f"({numbers['banks'][c]['channels']} channels)" for c in columns]
    tables = []
    for key, extra in (("maps_change", "resampling_alone"), ("global_change", None)):
        rows = [[f"{angle}"] + [f"{numbers['banks'][c][key][i]:.3f}" for c in columns]
                + ([f"{numbers[extra][i]:.3f}"] if extra else []) for i, angle in enumerate(angles)]
        tables.append(markdown_table(header + (["resampling alone"] if extra else []), rows,
                                     right=[False] + [True] * (len(rows[0]) - 1)))
    return (f"The responses of {len(_PATTERNS)} patterns ({', '.join(_PATTERNS)}) drawn as {size}x{size} filters "
            f"at 4 rotations (every 90 degrees) or 8 (every 45 degrees), with and without DepthMaxPool over each "
            f"pattern's rotations, to {shape[0]} shapes ({shape[1]}x{shape[2]}) and to the same shapes rotated. "
            f"Each number is the relative change ||f(rotated x) - f(x)|| / ||f(x)||, mean over the images.\n\n"
            f"Feature maps, rotated back to the input's frame (the response at each place):\n\n{tables[0]}\n\n"
            f"Global max of each channel (the response anywhere in the image):\n\n{tables[1]}\n\n"
            f"Quarter turns are exact (np.rot90); 45-degree turns are resampled bilinearly, there and back for "
            f"the maps: 'resampling alone' is the change that this causes by itself (the DepthMaxPool(8) maps "
            f"turned there and back, without filtering the turned image).")


def _plot_depthpool(numbers: dict[str, Any], kernels: np.ndarray, image: np.ndarray, run: _Run) -> str:
    patterns, rotations = len(numbers["patterns"]), kernels.shape[-1] // len(numbers["patterns"])
    figure = new_figure(12, 5)
    grid = figure.add_gridspec(2, 2, width_ratios=[1.1, 1])
    bank = kernels[:, :, 0, :].transpose(2, 0, 1).reshape(patterns, rotations, *kernels.shape[:2])  # (p, r, k, k)
    montage(figure.add_subplot(grid[:, 0]), bank, row_labels=numbers["patterns"],
             column_labels=[f"{45 * r}°" for r in range(rotations)], title="the filters: each pattern, rotated")
    ax = figure.add_subplot(grid[0, 1])
    for name, bank in numbers["banks"].items():
        ax.plot(numbers["angles"], bank["maps_change"], "o-" if "DepthMaxPool" in name else "s--", label=name)
    ax.set(xlabel="input rotation (degrees)", ylabel="relative change", xticks=numbers["angles"],
           title="Change of the maps (rotated back) when the input turns")
    ax.plot(numbers["angles"], numbers["resampling_alone"], "k:", label="resampling alone")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="filters", title_fontsize=7)
    turned = np.stack([_rotate(image[None, ..., None], angle)[0, ..., 0] for angle in (0, 45, 90, 135)])
    montage(figure.add_subplot(grid[1, 1]), turned[None], column_labels=["0°", "45°", "90°", "135°"],
             title="a test input, rotated")
    return _save(figure, run, "depthpool.png")
