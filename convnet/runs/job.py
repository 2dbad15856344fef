"""A training run: the `convnet train` job as a function, with its configuration and run folder.

    >>> config = TrainConfig(epochs=1, limit=600, test_limit=200, out="runs/quick")   # doctest: +SKIP
    >>> result = train(config)                                                         # doctest: +SKIP

A run folder holds `model.convnet`, `history.csv`, `history.json`, `metrics.json` and `config.json`. The
settings (`TrainConfig`, its choices, `load_config`) live in the torch-free `convnet.runs.config` and are
re-exported here.

Started by torchrun (`convnet train --nproc-per-node N`), every process runs `train` and `fit` trains
data-parallel (`convnet.distributed`); rank 0 alone writes the run folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from convnet import callbacks as callbacks_module
from convnet import distributed, schedules, zoo
from convnet._internal.checks import check_choice
from convnet._internal.files import atomic_write, probe_folder
from convnet.runs.config import AUGMENTATIONS, CONFIG_FILE, PRECISIONS, RECIPES, TrainConfig, load_config
from convnet.training import checkpoint
from convnet.utils import set_random_seed

__all__ = ["TrainConfig", "RunResult", "train", "load_config", "load_split", "prepare_folder", "environment",
           "augmentation_layers", "default_folder", "AUGMENTATIONS", "PRECISIONS", "RECIPES", "CONFIG_FILE",
           "CHECKPOINTS"]


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


def train(config: TrainConfig, resume: bool = False, callbacks: Sequence[callbacks_module.Callback] = ()) -> RunResult:
    """Run `convnet train`: load and split the data, build and train the model, evaluate on the test
    set and write the run folder. Checkpoints go to `<run>/checkpoints` at the end of every epoch (and every
    `checkpoint_minutes` within one); with `resume`, training continues from the last one. `callbacks` are
    added to the run's own (a CSV logger and a NaN guard), after them.

    In a process started by torchrun, `train` joins its process group (`distributed.init`) and trains
    data-parallel; only rank 0 writes the run folder, and `metrics.json` records the world size, the backend
    and the batch per rank.

    Raises:
        ValueError: bad settings, an unwritable folder or a full disk, before any training starts.
        convnet.training.TrainingInterrupted: Ctrl-C; a checkpoint was saved first.
    """
    from convnet import losses, optimizers
    from convnet.datasets import get_dataset
    from convnet.training import loop
    config.validate()
    distributed.init(device=config.device)  # nothing to do outside torchrun
    folder = distributed.broadcast_object(config.out or default_folder(config))  # rank 0's clock names it

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
    x_train, y_train, x_val, y_val, x_test, y_test = load_split(config)
    dataset = get_dataset(config.dataset)
    model = zoo.get(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
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
    run_callbacks = [callbacks_module.CSVLogger(csv_path, append=resume), nan_guard, *callbacks]
    validation = (x_val, y_val) if len(x_val) else None
    started = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
                        validation_data=validation, callbacks=run_callbacks, verbose=config.verbose,
                        checkpoint_dir=os.path.join(folder, CHECKPOINTS), resume=resume,
                        checkpoint_interval=config.checkpoint_minutes * 60)
    train_seconds = time.perf_counter() - started
    first = distributed.rank() == 0
    if first:
        _write_json(os.path.join(folder, "history.json"), history.history)
    if nan_guard.stopped_at is not None:
        return RunResult(folder=folder, model=model, history=history.history, diverged_at=nan_guard.stopped_at)
    # every rank scores its slice of the test set; the sums are added up over the ranks
    test_loss, test_accuracy = cast(list, loop.evaluate(cast(Any, model), x_test, y_test, batch_size=512, verbose=0,
                                                        across_ranks=True))
    world = distributed.world_size()
    metrics = {"test_loss": test_loss, "test_accuracy": test_accuracy, "train_seconds": round(train_seconds, 2),
               "resumed": resumed,
               "epochs_run": len(history.epoch), "train_images": len(x_train), "val_images": len(x_val),
               "test_images": len(x_test), "device": str(model.device), "world_size": world,
               "backend": distributed.backend(), "per_rank_batch": config.batch_size // world,
               "environment": environment()}
    if first:
        model.save(os.path.join(folder, "model.convnet"))
        _write_json(os.path.join(folder, "metrics.json"), metrics)
    return RunResult(folder=folder, model=model, history=history.history, metrics=metrics)


def _write_json(path: str, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())
