"""A training run: the `convnet train` job as a function, with its configuration and run folder.

    >>> config = TrainConfig(epochs=1, limit=600, test_limit=200, out="runs/quick")   # doctest: +SKIP
    >>> result = train(config)                                                         # doctest: +SKIP

A run folder holds `model.convnet`, `history.csv`, `history.json`, `metrics.json` and `config.json` (and
`bad_files.json` for a run on a folder of images: every file skipped, with the reason). The
settings (`TrainConfig`, its choices, `load_config`) live in the torch-free `convnet.runs.config` and are
re-exported here.

Your own images (`config.data`): a folder of class folders, read by `image_dataset_from_directory` into
FolderDatasets (batches of pixels 0-255, as Keras), or an .npz file of arrays. The model then starts with a
`Rescaling(1/255)` layer, so that it takes pixels 0-255 as the folder gives them, and its metadata records a
preprocessing scale of 1: `convnet predict` feeds it an image file's pixels as they are. `resolve_data` fixes
what the settings leave open (the image size and color mode: the first image's) before config.json is
written, so that `--resume` reads the same images the same way.

Started by torchrun (`convnet train --nproc-per-node N`), every process runs `train` and `fit` trains
data-parallel (`convnet.distributed`); rank 0 alone writes the run folder.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from convnet import callbacks as callbacks_module
from convnet import distributed, schedules, zoo
from convnet._internal.checks import check_choice
from convnet._internal.files import atomic_write, probe_folder
from convnet.runs.config import (
    AUGMENTATIONS,
    CONFIG_FILE,
    DEFAULT_VAL_SPLIT,
    PRECISIONS,
    RECIPES,
    TrainConfig,
    data_kind,
    load_config,
    parse_image_size,
)
from convnet.training import checkpoint
from convnet.utils import set_random_seed

__all__ = ["TrainConfig", "RunResult", "RunData", "train", "load_config", "load_split", "load_data", "resolve_data",
           "first_image", "prepare_folder", "environment", "color_mode_of", "pixel_factor", "as_pixels",
           "augmentation_layers", "default_folder", "AUGMENTATIONS", "PRECISIONS", "RECIPES", "CONFIG_FILE",
           "CHECKPOINTS", "BAD_FILES", "SHOWN_BAD_FILES"]


def augmentation_layers(name: str, image_size: tuple[int, int]) -> list:
    """The layers `--augment NAME` puts in front of the model: horizontal flips, shifts of up to 2 pixels, both."""
    from convnet import augment
    name = check_choice("augment", name, AUGMENTATIONS)
    flips = [augment.RandomFlip("horizontal")] if name in ("flip", "flip-shift") else []
    shifts = ([augment.RandomTranslation(2 / image_size[0], 2 / image_size[1], fill_mode="constant")]
              if name in ("shift", "flip-shift") else [])
    return [*flips, *shifts]


@dataclass
class RunResult:
    folder: str
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, Any] = field(default_factory=dict)
    diverged_at: tuple[int, int] | None = None  # (epoch, batch) of the first non-finite loss, if training diverged


CHECKPOINTS = "checkpoints"
BAD_FILES = "bad_files.json"  # in a folder run's run folder: [{"subset", "path", "reason"}, ...]
SHOWN_BAD_FILES = 3  # bad files named in the run's output; all of them are in BAD_FILES


@dataclass
class RunData:
    """What a run trains, validates and tests on, with what describes it."""

    train: Any  # (x, y) arrays, or a FolderDataset
    validation: Any  # (x, y) arrays, a FolderDataset, or None (no validation)
    test: Any  # (x, y) arrays, a FolderDataset, or None (no test set)
    input_shape: tuple[int, int, int]  # (height, width, channels) of one image
    class_names: list[str]
    counts: dict[str, int]  # train_images, val_images, test_images
    bad_files: list[dict[str, str]] = field(default_factory=list)  # {"subset", "path", "reason"} per skipped file
    source: dict[str, Any] = field(default_factory=dict)  # what the model's metadata["data"] records


def default_folder(config: TrainConfig) -> str:
    name = config.dataset
    if config.data is not None:  # your own images: the folder's or the file's name
        name = os.path.splitext(os.path.basename(os.path.normpath(config.data)))[0]
    return os.path.join("runs", f"{config.model}-{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare_folder(folder: str) -> str:
    """Create the run folder and prove it is writable now, not after an hour of training."""
    probe_folder(folder, "output folder")
    return folder


def color_mode_of(channels: int) -> str:
    """image_dataset_from_directory's `color_mode` for images of `channels` channels (1, 3 or 4)."""
    return {1: "grayscale", 3: "rgb", 4: "rgba"}[channels]


def pixel_factor(x: np.ndarray) -> float:
    """What an .npz file's images are multiplied by to be pixels 0-255, as a folder gives them: 255 for floats all
    within [0, 1] (scaled already), else 1 (integer pixels are 0-255, as Keras's datasets)."""
    unit = x.dtype.kind == "f" and x.size > 0 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    return 255.0 if unit else 1.0


def as_pixels(x: np.ndarray, factor: float) -> np.ndarray:
    """float32 (N, H, W, C): `x` times `factor` (`pixel_factor`), a channel axis added to (N, H, W)."""
    x = x.astype(np.float32) * np.float32(factor)
    return x[..., None] if x.ndim == 3 else x  # (N, H, W) -> (N, H, W, 1)


def first_image(folder: str) -> tuple[tuple[int, int], str]:
    """((height, width), color mode) of the first image file of `folder` that can be read, in the order
    image_dataset_from_directory lists them (class folders sorted, then files): the defaults of
    `--image-size` and `--color-mode`. The mode is grayscale for a one-channel image (with or without
    alpha), else rgb (Keras's default)."""
    from convnet.datasets import read_pixels
    from convnet.datasets.local.listing import list_files
    listing = list_files(folder, "inferred", None, follow_links=False)
    for path in listing.paths:
        try:
            pixels, file_format = read_pixels(path, upright=False)  # (H, W, C), C from 1 to 4
        except (ValueError, OSError):
            continue  # a bad file: the dataset's scan lists it
        mode = "grayscale" if pixels.shape[2] in (1, 2) and file_format != "GIF" else "rgb"  # a GIF decodes to RGB
        return (int(pixels.shape[0]), int(pixels.shape[1])), mode
    raise ValueError(f"`data`: none of the {len(listing.paths)} image files in {folder!r} can be read, so there is "
                     f"nothing to train on")


def resolve_data(config: TrainConfig) -> TrainConfig:
    """A copy of `config` with its own images' settings fixed: the paths made absolute, the image size
    ("HxW") and color mode (a folder: the first image's unless given; an .npz: its arrays'), the validation
    split (DEFAULT_VAL_SPLIT unless given). Unchanged without `data`."""
    if config.data is None:
        return config
    data = os.path.abspath(config.data)
    val_split = DEFAULT_VAL_SPLIT if config.val_split is None else config.val_split
    if data_kind(data) == "npz":
        from convnet.datasets import load_npz
        arrays = load_npz(data)
        height, width = arrays.image_size
        mode = color_mode_of(arrays.channels)
        given_size = None if config.image_size is None else parse_image_size(config.image_size)
        checks: tuple[tuple[str, Any, Any], ...] = (("image_size", given_size, (height, width)),
                                                    ("color_mode", config.color_mode, mode))
        for name, value, actual in checks:
            if value is not None and value != actual:
                raise ValueError(f"`{name}`: the images of {config.data!r} are {height}x{width} {mode}; an .npz file's "
                                 f"arrays are used as they are (drop --{name.replace('_', '-')}). Received: "
                                 f"{name}={getattr(config, name)!r}")
        return dataclasses.replace(config, data=data, image_size=f"{height}x{width}", color_mode=mode,
                                   val_split=val_split)
    size = None if config.image_size is None else parse_image_size(config.image_size)
    color_mode = config.color_mode
    if size is None or color_mode is None:
        first_size, first_mode = first_image(data)
        size, color_mode = size or first_size, color_mode or first_mode
    test = None if config.test_data is None else os.path.abspath(config.test_data)
    return dataclasses.replace(config, data=data, test_data=test, image_size=f"{size[0]}x{size[1]}",
                               color_mode=color_mode,
                               val_split=val_split)


def load_data(config: TrainConfig, verbose: bool = False) -> RunData:
    """The run's data, from `config` as `resolve_data` returns it: your own images (`data`), or the built-in
    dataset's split (`load_split`). `verbose` prints what a folder holds (image_dataset_from_directory's lines).

    Raises:
        ValueError: a bad file with `strict`; a split that leaves no image for training or validation.
    """
    if config.data is None:
        from convnet.datasets import get_dataset
        dataset = get_dataset(config.dataset)
        x_train, y_train, x_val, y_val, x_test, y_test = load_split(config)
        return RunData((x_train, y_train), (x_val, y_val) if len(x_val) else None, (x_test, y_test),
                       dataset.input_shape, list(dataset.class_names),
                       {"train_images": len(x_train), "val_images": len(x_val), "test_images": len(x_test)})
    if data_kind(config.data) == "npz":
        return _npz_data(config)
    return _folder_data(config, verbose)


def _npz_data(config: TrainConfig) -> RunData:
    """An .npz file's arrays as float32 pixels 0-255 (N, H, W, C); the validation images are the last
    `val_split` of the training arrays (Keras's fit(validation_split=...) rule), the test set x_test."""
    from convnet.datasets import load_npz
    assert config.data is not None and config.val_split is not None  # resolve_data set them
    dataset = load_npz(config.data)
    (x_train, y_train), (x_test, y_test) = dataset.load_data()
    if config.limit is not None:
        x_train, y_train = x_train[:config.limit], y_train[:config.limit]
    if config.test_limit is not None:
        x_test, y_test = x_test[:config.test_limit], y_test[:config.test_limit]
    factor = pixel_factor(x_train)  # the same for the test images, as the training images decide it
    # Keras 3's fit(validation_split=...) rule (array_slicing.train_validation_split): the last part validates
    split = math.floor(len(x_train) * (1.0 - config.val_split))
    if config.val_split and (split == 0 or split == len(x_train)):
        raise ValueError(f"`val_split`={config.val_split} of the {len(x_train)} training images of {config.data!r} "
                         f"leaves no image for training or none for validation")
    x_train, y_train = as_pixels(x_train, factor), y_train.astype(np.int64)
    x_test, y_test = as_pixels(x_test, factor), y_test.astype(np.int64)
    train, validation = (x_train[:split], y_train[:split]), (x_train[split:], y_train[split:])
    source = {"kind": "npz", "path": config.data, "image_size": list(dataset.image_size),
              "color_mode": config.color_mode, "pixels": "floats 0-1, times 255" if factor == 255.0 else "0-255"}
    return RunData(train, validation if config.val_split else None, (x_test, y_test), dataset.input_shape,
                   list(dataset.class_names), {"train_images": split if config.val_split else len(x_train),
                                               "val_images": len(x_train) - split if config.val_split else 0,
                                               "test_images": len(x_test)}, [], source)


def _folder_data(config: TrainConfig, verbose: bool) -> RunData:
    """FolderDatasets of `data` (split by `val_split` with image_dataset_from_directory's validation_split and
    subset="both", seeded by the run's seed: disjoint) and of `test_data`; bad files skipped and listed, or
    refused with `strict`."""
    from convnet.datasets import BadImageWarning, image_dataset_from_directory
    assert config.data is not None and config.image_size is not None  # resolve_data set them
    size, mode = parse_image_size(config.image_size), cast(str, config.color_mode)

    def read(directory: str, **split: Any) -> Any:  # a FolderDataset, or [training, validation] with subset="both"
        return image_dataset_from_directory(directory, image_size=size, color_mode=mode, batch_size=config.batch_size,
                                            seed=config.seed, verbose=verbose, **split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BadImageWarning)
        if config.val_split:
            train, validation = read(config.data, validation_split=config.val_split, subset="both")
        else:
            train, validation = read(config.data), None
        test = None if config.test_data is None else read(config.test_data, shuffle=False)
    for caught_warning in caught:  # the skipped files are listed by the run; other warnings are passed on
        if not (issubclass(caught_warning.category, BadImageWarning) and "are skipped" in str(caught_warning.message)):
            warnings.warn(caught_warning.message, caught_warning.category, stacklevel=3)
    parts = [("training", train), ("validation", validation), ("test", test)]
    bad = [{"subset": subset, "path": path, "reason": reason} for subset, part in parts if part is not None
           for path, reason in part.bad_files]
    if bad and config.strict:
        listed = "\n".join(f"{item['path']}: {item['reason']}" for item in bad[:20])
        more = f"\n... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(f"`strict`: {len(bad)} image file(s) cannot be used, so nothing was trained (without "
                         f"--strict they are skipped and listed in the run's {BAD_FILES}); remove or repair them:\n"
                         f"{listed}{more}")
    source = {"kind": "folder", "path": config.data, "test_path": config.test_data,
              "image_size": list(parse_image_size(config.image_size)), "color_mode": config.color_mode,
              "pixels": "0-255"}
    counts = {"train_images": train.num_samples, "val_images": 0 if validation is None else validation.num_samples,
              "test_images": 0 if test is None else test.num_samples}
    return RunData(train, validation, test, train.image_shape, list(train.class_names or []), counts, bad, source)


def load_split(config: TrainConfig) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test) as float32 in the scale the run's model takes, with a
    channel axis: [0, 1] for a built-in dataset; 0-255 for your own images (the model rescales them), a
    folder's read whole into memory (FolderDataset.as_arrays), empty arrays for a part the run lacks."""
    if config.data is not None:
        data = load_data(resolve_data(config))
        empty = (np.zeros((0, *data.input_shape), np.float32), np.zeros((0,), np.int64))
        arrays: list[np.ndarray] = []
        for part in (data.train, data.validation, data.test):
            if part is None:
                arrays += empty
            elif isinstance(part, tuple):
                arrays += part
            else:
                x, y = part.as_arrays()
                arrays += (x.astype(np.float32), np.asarray(y, np.int64))
        return tuple(arrays)
    from convnet.datasets import get_dataset
    dataset = get_dataset(config.dataset)
    (x_train, y_train), (x_test, y_test) = dataset.load_data(data_dir=config.data_dir)
    if config.limit is not None:
        x_train, y_train = x_train[:config.limit], y_train[:config.limit]
    if config.test_limit is not None:
        x_test, y_test = x_test[:config.test_limit], y_test[:config.test_limit]
    val_size = min(config.val_size, len(x_train) // 10)  # 5000 of Fashion-MNIST's 60000; 1200 of shapes' 12000
    split = len(x_train) - val_size

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0)[..., None]  # (N, H, W) -> (N, H, W, 1) in [0, 1]

    return (scale(x_train[:split]), y_train[:split].astype(np.int64), scale(x_train[split:]),
            y_train[split:].astype(np.int64), scale(x_test), y_test.astype(np.int64))


def environment() -> dict[str, Any]:
    """Versions and hardware, recorded with every run and benchmark."""
    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(), "cuda_device": device}


def train(config: TrainConfig, resume: bool = False, callbacks: Sequence[callbacks_module.Callback] = ()) -> RunResult:
    """Run `convnet train`: load and split the data, build and train the model, evaluate on the test
    set and write the run folder. Checkpoints go to `<run>/checkpoints` at the end of every epoch (and every
    `checkpoint_minutes` within one); with `resume`, training continues from the last one. `callbacks` are
    added to the run's own (a CSV logger and a NaN guard), after them.

    With `config.data` (your own images), the settings it leaves open are fixed first (`resolve_data`) and
    written to config.json; a folder run also writes `bad_files.json`, and without `test_data` its metrics say
    that there is no test set (`test_accuracy` None, `val_accuracy` the estimate).

    In a process started by torchrun, `train` joins its process group (`distributed.init`) and trains
    data-parallel; only rank 0 writes the run folder, and `metrics.json` records the world size, the backend
    and the batch per rank.

    Raises:
        ValueError: bad settings, an unwritable folder or a full disk, before any training starts.
        convnet.training.TrainingInterrupted: Ctrl-C; a checkpoint was saved first.
    """
    from convnet import losses, optimizers
    from convnet.layers import Rescaling
    from convnet.training import loop
    config.validate()
    unset = [f"--{name.replace('_', '-')}" for name in ("image_size", "color_mode") if getattr(config, name) is None]
    config = resolve_data(config)  # before config.json is written: a resumed run reads the images the same way
    distributed.init(device=config.device)  # nothing to do outside torchrun
    folder = distributed.broadcast_object(config.out or default_folder(config))  # rank 0's clock names it
    first = distributed.rank() == 0

    def prepare() -> bool:  # rank 0's files; the others wait, and share its answer or its error
        prepare_folder(folder)
        if not resume:
            _write_json(os.path.join(folder, CONFIG_FILE), dataclasses.asdict(config))
        found = resume and checkpoint.exists(os.path.join(folder, CHECKPOINTS))
        if found:
            checkpoint.verify(os.path.join(folder, CHECKPOINTS))  # a damaged file is refused before the data loads
        return found
    resumed = distributed.on_rank0(prepare)
    set_random_seed(config.seed)
    talk = first and config.verbose != 0
    if talk and config.data is not None and os.path.isdir(config.data) and unset:
        print(f"Reading the images at {config.image_size} (height x width), {config.color_mode}: the first image's "
              f"(give {' and '.join(unset)} to choose)", flush=True)
    data = load_data(config, verbose=talk)
    if first and config.data is not None and data.source["kind"] == "folder":
        _write_json(os.path.join(folder, BAD_FILES), data.bad_files)
        if talk and data.bad_files:
            _print_bad_files(data.bad_files, os.path.join(folder, BAD_FILES))
    augmentation = augmentation_layers(config.augment, data.input_shape[:2])
    if config.data is not None:  # pixels 0-255 in, as the folder gives them: the model scales them to 0-1
        augmentation = [Rescaling(1 / 255, name="rescaling"), *augmentation]
    model = _build_model(config, data.input_shape, len(data.class_names), augmentation)
    model.metadata = {"class_names": list(data.class_names)}
    if config.data is None:
        model.metadata.update({"dataset": config.dataset, "preprocessing": {"scale": 1 / 255}})
    else:
        model.metadata.update({"preprocessing": {"scale": 1.0}, "data": data.source})
    # the optimizer's Keras default learning rate: a number, never a schedule
    learning_rate = config.lr if config.lr is not None else cast(float, optimizers.get(config.optimizer).learning_rate)
    optimizer = optimizers.get(config.optimizer, schedules.from_name(config.schedule, learning_rate))
    model.compile(optimizer=optimizer, loss=losses.SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy"], device=config.device, precision=config.precision)
    csv_path = os.path.join(folder, "history.csv")
    nan_guard = callbacks_module.TerminateOnNaN()
    run_callbacks = [callbacks_module.CSVLogger(csv_path, append=resume), nan_guard, *callbacks]
    arrays = isinstance(data.train, tuple)
    x_train, y_train = data.train if arrays else (data.train, None)
    started = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=config.batch_size if arrays else None, epochs=config.epochs,
                        validation_data=data.validation, callbacks=run_callbacks, verbose=config.verbose,
                        checkpoint_dir=os.path.join(folder, CHECKPOINTS), resume=resume,
                        checkpoint_interval=config.checkpoint_minutes * 60)
    train_seconds = time.perf_counter() - started
    if first:
        _write_json(os.path.join(folder, "history.json"), history.history)
    if nan_guard.stopped_at is not None:
        return RunResult(folder=folder, model=model, history=history.history, diverged_at=nan_guard.stopped_at)
    test_loss: float | None = None
    test_accuracy: float | None = None
    if isinstance(data.test, tuple):
        # every rank scores its slice of the test set; the sums are added up over the ranks
        x_test, y_test = data.test
        test_loss, test_accuracy = cast(list, loop.evaluate(cast(Any, model), x_test, y_test, batch_size=512,
                                                            verbose=0, across_ranks=True))
    elif data.test is not None:
        test_loss, test_accuracy = cast(list, loop.evaluate(cast(Any, model), data.test, verbose=0))
    world = distributed.world_size()
    metrics: dict[str, Any] = {
               "test_loss": test_loss, "test_accuracy": test_accuracy, "train_seconds": round(train_seconds, 2),
               "resumed": resumed, "epochs_run": len(history.epoch), **data.counts, "device": str(model.device),
               "world_size": world, "backend": distributed.backend(), "per_rank_batch": config.batch_size // world,
               "environment": environment()}
    if config.data is not None:
        last = {key: values[-1] for key, values in history.history.items() if key.startswith("val_") and values}
        metrics.update({**last, "class_names": list(data.class_names)})
        if data.source["kind"] == "folder":
            metrics["bad_files"] = len(data.bad_files)  # listed in BAD_FILES
        if data.test is None:
            metrics["test_set"] = ("none: no --test-data was given, so there are no test metrics; val_accuracy "
                                   "(the held-out --val-split of the training folder) is the estimate")
    if first:
        model.save(os.path.join(folder, "model.convnet"))
        _write_json(os.path.join(folder, "metrics.json"), metrics)
    return RunResult(folder=folder, model=model, history=history.history, metrics=metrics)


def _build_model(config: TrainConfig, input_shape: tuple[int, int, int], num_classes: int,
                 augmentation: list) -> Any:
    """The preset for this data's image shape and number of classes."""
    try:
        return zoo.get(config.model, input_shape=input_shape, num_classes=num_classes, augmentation=augmentation)
    except ValueError as error:
        if config.data is None:
            raise
        height, width, _ = input_shape
        raise ValueError(f"--model {config.model} cannot take images of {height}x{width} (pass a larger "
                         f"--image-size or another --model): {error}") from None


def _print_bad_files(bad: list[dict[str, str]], listed_in: str) -> None:
    print(f"Skipped {len(bad)} image file(s) that cannot be used (all are listed in {listed_in}):", flush=True)
    for item in bad[:SHOWN_BAD_FILES]:
        print(f"  {item['path']} ({item['subset']}): {item['reason']}", flush=True)
    if len(bad) > SHOWN_BAD_FILES:
        print(f"  ... and {len(bad) - SHOWN_BAD_FILES} more", flush=True)


def _write_json(path: str, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())
