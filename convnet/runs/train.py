"""A training run: the `convnet train` job as a function, with its configuration and run folder.

    >>> config = TrainConfig(epochs=1, limit=600, test_limit=200, out="runs/quick")   # doctest: +SKIP
    >>> result = train(config)                                                         # doctest: +SKIP

A run folder holds `model.convnet`, `history.csv`, `history.json`, `metrics.json` and `config.json`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from convnet import callbacks as callbacks_module
from convnet import schedules, zoo
from convnet._internal.checks import check_choice, check_float, check_int, unknown_name
from convnet._internal.files import atomic_write, probe_folder
from convnet.training import checkpoint
from convnet.training.engine import PRECISIONS
from convnet.utils import resolve_device, set_random_seed


def _option(default: Any, help: str, choices: Sequence[str] = ()) -> Any:
    """A field with its command-line help and, where the setting takes one of a fixed set, the choices
    (`validate` checks them; `convnet train --help` shows them)."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices)})


AUGMENTATIONS = ("none", "shift", "flip-shift")
RECIPES: dict[str, dict[str, Any]] = {
    # The strongest time-to-accuracy setting measured for the seed CNN so far (../shared/peers: 92.4% after
    # 15 epochs on an H200): large batches, one-cycle, label smoothing, small shifts and flips.
    "fast": {"batch_size": 256, "optimizer": "nadam", "lr": 0.002, "schedule": "onecycle", "label_smoothing": 0.1,
             "augment": "flip-shift", "epochs": 15, "precision": "auto"},
}


@dataclass
class TrainConfig:
    """Everything `convnet train` needs; the CLI's flags are generated from these fields and their help."""

    model: str = _option("seed", "model preset: seed (the seed's CNN), homl (the book's), lenet5")
    dataset: str = _option("fashion-mnist", "dataset: fashion-mnist, mnist or shapes (synthetic: 12000 training "
                                            "and 2000 test images, drawn on the fly)")
    epochs: int = _option(10, "passes over the training images")
    batch_size: int = _option(128, "images per optimisation step")
    optimizer: str = _option("nadam", "nadam, adam, adamw, sgd, rmsprop, adagrad or adamax")
    lr: float | None = _option(None, "learning rate (default: the optimizer's Keras default, 0.001 for nadam)")
    seed: int = _option(0, "random seed for weights, shuffling and dropout (same seed, same CPU run)")
    limit: int | None = _option(None, "train on the first N training images only (quick runs)")
    val_size: int = _option(5000, "images held out from the end of the training set for validation "
                                  "(at most 10%% of the training images)")
    test_limit: int | None = _option(None, "evaluate on the first N test images only (quick runs)")
    device: str = _option("auto", "auto (CUDA if present, else CPU), cpu or cuda")
    data_dir: str | None = _option(None, "folder holding the dataset files (default: $CONVNET_DATA/<dataset>, "
                                         "then ~/.cache/convnet/<dataset>, then download)")
    out: str | None = _option(None, "run folder (default: runs/<model>-<dataset>-<date>-<time>)")
    verbose: int | str = _option("auto", "0 silent, 1 progress bar, 2 one line per epoch, auto (1 in a terminal)")
    checkpoint_minutes: float = _option(10.0, "also checkpoint within an epoch every this many minutes "
                                              "(a checkpoint is always written at the end of each epoch)")
    schedule: str = _option("constant", "learning-rate schedule: constant, onecycle (peak --lr), cosine or step")
    label_smoothing: float = _option(0.0, "label smoothing of the cross-entropy (0 to 1)")
    augment: str = _option("none", "on-device augmentation: none, shift (up to 2 pixels), flip-shift "
                                   "(also horizontal flips)", choices=AUGMENTATIONS)
    precision: str = _option("float32", "float32 (as Keras), bfloat16, or auto (bf16 where the hardware "
                                         "computes it natively, else float32)", choices=PRECISIONS)
    recipe: str | None = _option(None, "a preset that sets several options at once: fast (batch 256, nadam with "
                                       "a one-cycle schedule peaking at 0.002, label smoothing 0.1, flip-shift "
                                       "augmentation, 15 epochs, precision auto)", choices=tuple(RECIPES))

    def validate(self) -> TrainConfig:
        from convnet import optimizers
        from convnet.datasets import get_dataset
        get_dataset(self.dataset, argument="dataset")
        if self.model not in zoo.list_models():
            raise unknown_name("model", self.model, zoo.list_models(), argument="model")
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        optimizers.get(self.optimizer, self.lr)
        check_int("seed", self.seed, minimum=0)
        if self.limit is not None:
            check_int("limit", self.limit, minimum=2)
        check_int("val_size", self.val_size, minimum=0)
        if self.test_limit is not None:
            check_int("test_limit", self.test_limit, minimum=1)
        resolve_device(self.device)
        check_float("checkpoint_minutes", self.checkpoint_minutes, minimum=0.0)
        schedules.from_name(self.schedule, 0.001)
        check_float("label_smoothing", self.label_smoothing, minimum=0.0, maximum=1.0)
        check_choice("augment", self.augment, AUGMENTATIONS)
        from convnet.training.engine import resolve_precision
        resolve_precision(self.precision, resolve_device(self.device))
        if self.recipe is not None:
            check_choice("recipe", self.recipe, tuple(RECIPES))
        return self

    def with_recipe(self, keep: Collection[str] = ()) -> TrainConfig:
        """A copy with the recipe's settings applied, except the fields named in `keep` (the options a user
        gave explicitly). `train` does not apply recipes itself: resolve them first."""
        if self.recipe is None:
            return self
        settings = RECIPES[check_choice("recipe", self.recipe, tuple(RECIPES))]
        return dataclasses.replace(self, **{k: v for k, v in settings.items() if k not in keep})


def augmentation_layers(name: str, image_size: tuple[int, int]) -> list:
    """The layers `--augment NAME` puts in front of the model: shifts of up to 2 pixels, and flips."""
    from convnet import augment
    name = check_choice("augment", name, AUGMENTATIONS)
    if name == "none":
        return []
    shift = augment.RandomTranslation(2 / image_size[0], 2 / image_size[1], fill_mode="constant")
    return [augment.RandomFlip("horizontal"), shift] if name == "flip-shift" else [shift]


@dataclass
class RunResult:
    folder: str
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, Any] = field(default_factory=dict)
    diverged_at: tuple[int, int] | None = None  # (epoch, batch) of the first non-finite loss, if training diverged


CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


def load_config(folder: str) -> TrainConfig:
    """The TrainConfig a run folder was started with (for `convnet train --resume`)."""
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{folder!r} is not a run folder: it has no {CONFIG_FILE}")
    try:
        saved = json.load(open(path))
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{key: value for key, value in saved.items() if key in names})
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{path}: not a valid run configuration ({error})") from None
    config.out = folder
    return config


def default_folder(config: TrainConfig) -> str:
    return os.path.join("runs", f"{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare_folder(folder: str) -> str:
    """Create the run folder and prove it is writable now, not after an hour of training."""
    probe_folder(folder, "output folder")
    return folder


def load_split(config: TrainConfig) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test) as float32 in [0, 1] with a channel axis."""
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


def train(config: TrainConfig, resume: bool = False) -> RunResult:
    """Run `convnet train`: load and split the data, build and train the model, evaluate on the test
    set and write the run folder. Checkpoints go to `<run>/checkpoints` at the end of every epoch (and every
    `checkpoint_minutes` within one); with `resume`, training continues from the last one.

    Raises:
        ValueError: bad settings, an unwritable folder or a full disk, before any training starts.
        convnet.training.TrainingInterrupted: Ctrl-C; a checkpoint was saved first.
    """
    from convnet import losses, optimizers
    from convnet.datasets import get_dataset
    config.validate()
    folder = prepare_folder(config.out or default_folder(config))
    if not resume:
        _write_json(os.path.join(folder, CONFIG_FILE), dataclasses.asdict(config))
    resumed = resume and checkpoint.exists(os.path.join(folder, CHECKPOINTS))
    if resumed:
        checkpoint.verify(os.path.join(folder, CHECKPOINTS))  # a damaged file is refused before the data loads
    set_random_seed(config.seed)
    x_train, y_train, x_val, y_val, x_test, y_test = load_split(config)
    dataset = get_dataset(config.dataset)
    model = zoo.get_model(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                          augmentation=augmentation_layers(config.augment, dataset.input_shape[:2]))
    model.metadata = {"dataset": config.dataset, "class_names": list(dataset.class_names),
                      "preprocessing": {"scale": 1 / 255}}
    # the optimizer's Keras default learning rate: a number, never a schedule
    learning_rate = config.lr if config.lr is not None else cast(float, optimizers.get(config.optimizer).learning_rate)
    optimizer = optimizers.get(config.optimizer, schedules.from_name(config.schedule, learning_rate))
    model.compile(optimizer=optimizer, loss=losses.SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy"], device=config.device, precision=config.precision)
    csv_path = os.path.join(folder, "history.csv")
    nan_guard = callbacks_module.TerminateOnNaN()
    callbacks = [callbacks_module.CSVLogger(csv_path, append=resume), nan_guard]
    validation = (x_val, y_val) if len(x_val) else None
    started = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
                        validation_data=validation, callbacks=callbacks, verbose=config.verbose,
                        checkpoint_dir=os.path.join(folder, CHECKPOINTS), resume=resume,
                        checkpoint_interval=config.checkpoint_minutes * 60)
    train_seconds = time.perf_counter() - started
    _write_json(os.path.join(folder, "history.json"), history.history)
    if nan_guard.stopped_at is not None:
        return RunResult(folder=folder, model=model, history=history.history, diverged_at=nan_guard.stopped_at)
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    model.save(os.path.join(folder, "model.convnet"))
    metrics = {"test_loss": test_loss, "test_accuracy": test_accuracy, "train_seconds": round(train_seconds, 2),
               "resumed": resumed,
               "epochs_run": len(history.epoch), "train_images": len(x_train), "val_images": len(x_val),
               "test_images": len(x_test), "device": str(model.device), "environment": environment()}
    _write_json(os.path.join(folder, "metrics.json"), metrics)
    return RunResult(folder=folder, model=model, history=history.history, metrics=metrics)


def _write_json(path: str, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())
