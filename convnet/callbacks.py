"""Keras-style callbacks: hooks into `fit` at the start and end of training, epochs and batches.

Batch-level hooks cost a device sync per step on a GPU, so the engine calls them only for callbacks
that override them; `logs` at batch end is read lazily (values are fetched when a key is read).
"""
from __future__ import annotations

import csv
import io
import math
import os
import string
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet._internal.checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_str,
    describe,
)

if TYPE_CHECKING:
    from convnet.models.sequential import Sequential


class Callback:
    """Base class; override the hooks you need. `self.model` is the model being trained.

    A callback that keeps state across epochs (a best value, a patience counter) returns it from
    `get_state` and takes it back in `set_state`, so that `fit(..., resume=True)` continues it exactly.
    """

    def __init__(self) -> None:
        self.model: Sequential | None = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Sequential) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_train_end(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: Mapping[str, float] | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None: ...

    def uses_batch_hooks(self) -> bool:
        cls = type(self)
        return (cls.on_train_batch_begin is not Callback.on_train_batch_begin
                or cls.on_train_batch_end is not Callback.on_train_batch_end)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The state a training checkpoint keeps: (JSON-able values, named arrays). Empty for a stateless
        callback. `fit` calls it when it writes a checkpoint, between epochs or steps."""
        return {}, {}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Take back what `get_state` returned; `fit(..., resume=True)` calls it after `on_train_begin`."""

    def _model(self) -> Sequential:
        """`self.model`, which `fit` sets before calling any hook."""
        if self.model is None:
            raise ValueError(f"{type(self).__name__}: no model; `fit` sets it (or call `set_model` first)")
        return self.model


class History(Callback):
    """Records each epoch's logs: `history.history["loss"]`, `history.epoch`, `history.params`."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if ("acc" in monitor or monitor.startswith("fmeasure") or "auc" in monitor) else "min"


class _Monitor:
    """Tracks the best value of a monitored log entry ("val_loss", "val_accuracy", ...), as Keras 3's
    `MonitorCallback`: `best` starts as None, and the first value always improves on it."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        self.monitor = check_str("monitor", monitor)
        self.mode = _monitor_mode(monitor, check_choice("mode", mode, ("auto", "min", "max")))
        self.min_delta = abs(min_delta)
        self.best: float | None = None

    def value(self, logs: Mapping[str, float] | None, who: str) -> float | None:
        logs = logs or {}
        if self.monitor not in logs:
            print(f"{who}: monitored metric {self.monitor!r} is not in the logs (available: "
                  f"{', '.join(logs) or 'none'}); skipping.", file=sys.stderr)
            return None
        return float(logs[self.monitor])

    def improves(self, value: float, reference: float | None) -> bool:
        """Keras 3's `_is_improvement`: `value - min_delta` (min_delta negated in "min" mode) beats
        `reference`. Keras compares with `ops.less`/`ops.greater`, which turn Python floats into float32
        tensors, so the comparison is made in float32 here too: values closer than float32's resolution tie."""
        if reference is None:
            return True
        if self.mode == "min":
            return bool(np.float32(value - -self.min_delta) < np.float32(reference))
        return bool(np.float32(value - self.min_delta) > np.float32(reference))


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved for `patience` epochs, as Keras 3.

    Keras 3's rule, epoch by epoch (from `start_from_epoch` on, for epochs whose logs hold `monitor`):
    `wait` grows by one; an improvement on the best value by more than `min_delta` becomes the best and
    resets `wait` to 0 if it also beats `baseline` (the first monitored value always becomes the best);
    otherwise training stops once `wait >= patience` (never at epoch 0). With `restore_best_weights`,
    the weights of the best epoch (those of the first monitored epoch until one improves) are put back
    when training ends, whether it stopped early or ran all its epochs.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__()
        self.tracker = _Monitor(monitor, mode, check_float("min_delta", min_delta))
        self.patience = check_int("patience", patience, minimum=0)
        self.verbose = check_int("verbose", verbose, minimum=0, maximum=2)
        self.baseline = None if baseline is None else check_float("baseline", baseline)
        self.restore_best_weights = check_bool("restore_best_weights", restore_best_weights)
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, minimum=0)
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.best_epoch = 0

    @property
    def best(self) -> float | None:
        return self.tracker.best

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        # as Keras 3, `best` restarts at None, not at `baseline`: the baseline only decides when `wait` resets
        self.wait, self.stopped_epoch, self.best_weights, self.best_epoch = 0, 0, None, 0
        self.tracker.best = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        value = self.tracker.value(logs, "EarlyStopping")
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self._weights(), epoch
        self.wait += 1
        if self.tracker.improves(value, self.tracker.best):
            self.tracker.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self._weights()
            if self.baseline is None or self.tracker.improves(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self._model().stop_training = True

    def on_train_end(self, logs: Mapping[str, float] | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self._model().set_weights(self.best_weights)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        values = {"wait": self.wait, "best": self.tracker.best, "best_epoch": self.best_epoch,
                  "stopped_epoch": self.stopped_epoch, "has_best_weights": self.best_weights is not None}
        arrays = {f"best_weights/{index}": weight for index, weight in enumerate(self.best_weights or [])}
        return values, arrays

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.wait, self.best_epoch = int(values["wait"]), int(values["best_epoch"])
        self.stopped_epoch = int(values["stopped_epoch"])
        self.tracker.best = None if values["best"] is None else float(values["best"])
        self.best_weights = ([arrays[f"best_weights/{index}"] for index in range(len(arrays))]
                             if values["has_best_weights"] else None)

    def _weights(self) -> list[np.ndarray]:
        # copies: `get_weights` can return arrays that share memory with the parameters (a CPU bias)
        return [np.array(weight, copy=True) for weight in self._model().get_weights()]


class ModelCheckpoint(Callback):
    """Saves the model (a .convnet file) at the end of each epoch, or only when `monitor` improves.

    `filepath` may hold format fields from the epoch and logs: "ckpt-{epoch:02d}-{val_loss:.3f}.convnet".
    Files are written atomically (temporary file, fsync, rename), so a crash never leaves half a file.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto"):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"`filepath` must be a path. Received: filepath={describe(filepath)}")
        self.filepath = os.fspath(filepath)
        fields = [field for _, field, _, _ in string.Formatter().parse(self.filepath) if field]
        self._fields = fields
        self.tracker = _Monitor(monitor, mode)
        self.verbose = check_int("verbose", verbose, minimum=0, maximum=2)
        self.save_best_only = check_bool("save_best_only", save_best_only)
        self.save_weights_only = check_bool("save_weights_only", save_weights_only)

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        folder = os.path.dirname(os.path.abspath(self.filepath))
        os.makedirs(folder, exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        logs = dict(logs or {})
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, ValueError, IndexError) as error:
            raise ValueError(f"ModelCheckpoint: cannot fill `filepath` {self.filepath!r} from epoch and logs "
                             f"({', '.join(logs)}): {error}") from None
        if self.save_best_only:
            value = self.tracker.value(logs, "ModelCheckpoint")
            if value is None or not self.tracker.improves(value, self.tracker.best):
                return
            if self.verbose:
                best = "None" if self.tracker.best is None else f"{self.tracker.best:.5f}"
                print(f"Epoch {epoch + 1}: {self.tracker.monitor} improved from {best} to {value:.5f}, "
                      f"saving model to {path}")
            self.tracker.best = value
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self._model().save_weights(path)
        else:
            self._model().save(path)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"best": self.tracker.best}, {}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.tracker.best = None if values["best"] is None else float(values["best"])


class CSVLogger(Callback):
    """Appends one row per epoch (epoch, then the logs) to a CSV file, flushed at once."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"`filename` must be a path. Received: filename={describe(filename)}")
        self.filename = os.fspath(filename)
        self.separator = check_str("separator", separator)
        self.append = check_bool("append", append)
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        self._keys = None
        if self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0:
            with open(self.filename, newline="") as handle:
                rows = list(csv.reader(handle, delimiter=self.separator))
            header = rows[0] if rows else None
            self._keys = header[1:] if header else None
            if self.params.get("resumed") and header:
                # a resumed fit rewrites the epochs its checkpoint had not recorded: drop their old rows
                start = self.params.get("initial_epoch", 0)
                kept = [header] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < start]
                if len(kept) != len(rows):
                    from convnet._internal.files import atomic_write
                    buffer = io.StringIO()
                    csv.writer(buffer, delimiter=self.separator).writerows(kept)
                    atomic_write(self.filename, buffer.getvalue().encode())
        elif not self.append or not os.path.exists(self.filename):
            os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        logs = dict(logs or {})
        with open(self.filename, "a", newline="") as handle:
            writer = csv.writer(handle, delimiter=self.separator)
            if self._keys is None:
                self._keys = sorted(logs)
                writer.writerow(["epoch", *self._keys])
            writer.writerow([epoch, *(logs.get(key, "NA") for key in self._keys)])
            handle.flush()
            os.fsync(handle.fileno())


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite, saying where.

    The training loop watches the loss on the device for it (checked every step on a CPU, in batches of
    steps on a GPU to avoid a sync per step) and calls `trigger` with the first bad batch; no checkpoint is
    written after it, so the last checkpoint holds the last good weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stopped_at: tuple[int, int] | None = None

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        self.stopped_at = None

    def trigger(self, epoch: int, batch: int) -> None:
        self.stopped_at = (epoch, batch)
        print(f"Epoch {epoch + 1}, batch {batch + 1}: invalid loss (NaN or infinite), terminating training",
              file=sys.stderr)
        self._model().stop_training = True


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to `schedule(epoch, lr)` (epoch counts from 0)."""

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"`schedule` must be a function (epoch, lr) -> lr. Received: schedule={describe(schedule)}")
        self.schedule = schedule
        self.verbose = check_int("verbose", verbose, minimum=0, maximum=2)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        current = self._model().learning_rate
        value = self.schedule(epoch, current)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"LearningRateScheduler: the schedule must return a number. Received: "
                            f"{describe(value)}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"LearningRateScheduler: the schedule returned an invalid learning rate {value}")
        self._model().learning_rate = value
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {value}.")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if isinstance(logs, dict):
            logs["learning_rate"] = self._model().learning_rate


class BackupAndRestore(Callback):
    """Keras's fault-tolerance callback, mapped onto convnet's training checkpoints.

    `fit` treats `backup_dir` as its `checkpoint_dir`: it writes a checkpoint at the end of each epoch
    (`save_freq="epoch"`) or every `save_freq` steps (an int), and when a checkpoint is already there it
    resumes from it exactly (weights, optimizer state, epoch, step, the other callbacks' state, the random
    generators). When training ends without an error the folder is deleted if `delete_checkpoint`.

    Args:
        backup_dir: the folder the checkpoints go to (created when missing).
        save_freq: "epoch", or a number of training steps between checkpoints.
        double_checkpoint: Keras keeps the previous backup as well; convnet always does (`last.ckpt` is
            replaced atomically, and `best.ckpt` is kept beside it), so this is accepted for compatibility.
        delete_checkpoint: delete `backup_dir` once `fit` completes.
    """

    def __init__(self, backup_dir: str | os.PathLike, save_freq: str | int = "epoch",
                 double_checkpoint: bool = False, delete_checkpoint: bool = True):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
            raise TypeError(f"`backup_dir` must be a folder path. Received: backup_dir={describe(backup_dir)}")
        self.backup_dir = os.fspath(backup_dir)
        if isinstance(save_freq, str) and save_freq != "epoch":
            raise ValueError(f"`save_freq` must be 'epoch' or a positive number of steps. Received: "
                             f"save_freq={save_freq!r}")
        if save_freq != "epoch":
            save_freq = check_int("save_freq", save_freq, minimum=1)
        self.save_freq: str | int = save_freq
        self.double_checkpoint = check_bool("double_checkpoint", double_checkpoint)
        self.delete_checkpoint = check_bool("delete_checkpoint", delete_checkpoint)


class LambdaCallback(Callback):
    """A callback from plain functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    _HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
              "on_train_batch_end")

    def __init__(self, **hooks: Callable[..., Any]):
        super().__init__()
        for name, function in hooks.items():
            if name not in self._HOOKS:
                raise TypeError(f"LambdaCallback: unknown hook {name!r}. Accepted: {', '.join(self._HOOKS)}")
            if not callable(function):
                raise TypeError(f"LambdaCallback: `{name}` must be callable. Received: {describe(function)}")
            setattr(self, name, function)

    def uses_batch_hooks(self) -> bool:
        return "on_train_batch_begin" in vars(self) or "on_train_batch_end" in vars(self)
