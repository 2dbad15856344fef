"""Keras-style callbacks: hooks into `fit` at the start and end of training, epochs and batches.

Batch-level hooks cost a device sync per step on a GPU, so the engine calls them only for callbacks
that override them; `logs` at batch end is read lazily (values are fetched when a key is read).

The callbacks that watch a log entry (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) follow Keras 3's
rule for mode="auto": "loss" and "val_loss" are minimised, a compiled metric ("accuracy", "mae", with or
without "val_") goes the way it improves (accuracies up, errors down), and anything else is a ValueError
when training begins, asking for mode="min" or mode="max".
"""
from __future__ import annotations

import csv
import io
import math
import os
import string
import sys
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import metrics as metrics_module
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


# Which way each convnet metric improves, as Keras 3's metrics say with their `_direction` ("up"/"down")
_METRIC_MODES: dict[type[metrics_module.Metric], str] = {
    metrics_module.SparseCategoricalAccuracy: "max",
    metrics_module.CategoricalAccuracy: "max",
    metrics_module.BinaryAccuracy: "max",
    metrics_module.SparseTopKCategoricalAccuracy: "max",
    metrics_module.MeanAbsoluteError: "min",
    metrics_module.MeanSquaredError: "min",
}


def _monitor_mode(monitor: str, model: Any, who: str) -> str:
    """The direction of `monitor` for mode="auto", by Keras 3's rule (`MonitorCallback._set_monitor_op`):
    without its "val_" prefix, "loss" is minimised, and a compiled metric of that name goes the way the
    metric improves (the last such metric decides, and one of unknown direction leaves the choice as it
    was). Anything else raises: Keras does not guess from the name."""
    name = monitor.removeprefix("val_")
    mode = "min" if name == "loss" else None
    for metric in getattr(model, "metrics", None) or []:
        if getattr(metric, "name", None) == name:
            mode = next((way for kind, way in _METRIC_MODES.items() if isinstance(metric, kind)), mode)
    if mode is None:
        raise ValueError(f"{who} callback received monitor={monitor!r}, but convnet cannot tell whether that "
                         f"metric should be maximized or minimized (it is neither a loss nor a compiled metric "
                         f"of known direction). Pass `mode='max'` in order to monitor based on the highest "
                         f"metric value, or `mode='min'` in order to use the lowest value.")
    return mode


class _Monitor:
    """Tracks the best value of a monitored log entry ("val_loss", "val_accuracy", ...), as Keras 3's
    `MonitorCallback`: `best` starts at `best` (None: the first value always improves on it), and
    mode="auto" is resolved from the model by `resolve` when training begins."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0, best: float | None = None):
        self.monitor = check_str("monitor", monitor)
        self.requested_mode = check_choice("mode", mode, ("auto", "min", "max"))
        self.mode: str | None = None if self.requested_mode == "auto" else self.requested_mode
        self.min_delta = abs(min_delta)
        self.best = best

    def resolve(self, model: Any, who: str, again: bool = True) -> None:
        """Decide "min" or "max" for mode="auto" from `model`'s compiled metrics (`again=False`: only when
        not decided yet, for hooks called without `on_train_begin`)."""
        if self.requested_mode == "auto" and (again or self.mode is None):
            self.mode = _monitor_mode(self.monitor, model, who)

    def value(self, logs: Mapping[str, float] | None) -> float | None:
        """The monitored value, or None when the logs do not hold it."""
        logs = logs or {}
        return float(logs[self.monitor]) if self.monitor in logs else None

    def warn_missing(self, logs: Mapping[str, float] | None, what: str, then: str) -> None:
        available = ", ".join(logs or {}) or "none"
        warnings.warn(f"{what} is conditioned on metric {self.monitor!r}, which is not in the logs (available: "
                      f"{available}); {then}.", stacklevel=3)

    def improves(self, value: float, reference: float | None) -> bool:
        """Keras 3's `_is_improvement`: `value - min_delta` (min_delta negated in "min" mode) beats
        `reference`. Keras compares with `ops.less`/`ops.greater`, which turn Python floats into float32
        tensors, so the comparison is made in float32 here too: values closer than float32's resolution tie."""
        assert self.mode is not None, "resolve() decides the mode before values are compared"
        if reference is None:
            return True
        if self.mode == "min":
            return bool(np.float32(value - -self.min_delta) < np.float32(reference))
        return bool(np.float32(value - self.min_delta) > np.float32(reference))


def _check_save_freq(save_freq: Any) -> str | int:
    """"epoch", or a positive number of training batches (steps)."""
    if isinstance(save_freq, str):
        if save_freq != "epoch":
            raise ValueError(f"`save_freq` must be 'epoch' or a positive number of steps. Received: "
                             f"save_freq={save_freq!r}")
        return save_freq
    return check_int("save_freq", save_freq, minimum=1)


def _log_learning_rate(logs: Mapping[str, float] | None, model: Sequential) -> None:
    """Keras's "learning_rate" log entry: the rate the epoch trained with (History, last, records it)."""
    if isinstance(logs, MutableMapping):
        logs["learning_rate"] = float(model.learning_rate)


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
        self.tracker.resolve(self._model(), "EarlyStopping")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.tracker.resolve(self._model(), "EarlyStopping", again=False)
        value = self.tracker.value(logs)
        if value is None:
            self.tracker.warn_missing(logs, "Early stopping", "skipping this epoch")
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
    """Saves the model (a .convnet file) at the end of each epoch or every `save_freq` batches, as Keras 3;
    with `save_best_only`, only when `monitor` improves on the best value so far.

    `filepath` may hold format fields from the epoch (counted from 1), the logs, and with an integer
    `save_freq` the batch (counted from 1 within its epoch): "ckpt-{epoch:02d}-{batch}-{loss:.3f}.convnet".
    Files are written atomically (temporary file, fsync, rename), so a crash never leaves half a file.

    Keras 3's rules: batches are counted across epochs (and across `fit` calls), so `save_freq=4` with 5
    batches per epoch saves after batches 4 of epoch 1, 3 of epoch 2, 2 of epoch 3, ...; at batch level the
    logs are the epoch's running means. `initial_value_threshold` is the best value to beat at the start
    (None: the first monitored value is saved). With `save_best_only` and `monitor` missing from the logs
    (val_loss at batch level, say), the model is saved, with a warning.

    Raises:
        ValueError: `save_freq` not 'epoch' nor a positive int; a `{batch}` field with `save_freq="epoch"`.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str | int = "epoch", initial_value_threshold: float | None = None):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"`filepath` must be a path. Received: filepath={describe(filepath)}")
        self.filepath = os.fspath(filepath)
        self.save_freq = _check_save_freq(save_freq)
        fields = {field for _, field, _, _ in string.Formatter().parse(self.filepath) if field}
        if "batch" in fields and self.save_freq == "epoch":
            raise ValueError(f"`filepath` has a {{batch}} field, which only an integer `save_freq` (save every so "
                             f"many batches) fills. Received: filepath={self.filepath!r}, save_freq='epoch'")
        threshold = (None if initial_value_threshold is None
                     else check_float("initial_value_threshold", initial_value_threshold))
        self.tracker = _Monitor(monitor, mode, best=threshold)
        self.verbose = check_int("verbose", verbose, minimum=0, maximum=2)
        self.save_best_only = check_bool("save_best_only", save_best_only)
        self.save_weights_only = check_bool("save_weights_only", save_weights_only)
        self._batches_since_save = 0  # training batches since the last save, across epochs
        self._last_batch: int | None = None  # the batch index seen last; a smaller one starts a new epoch
        self._epoch = 0

    @property
    def best(self) -> float | None:
        return self.tracker.best

    def uses_batch_hooks(self) -> bool:
        return isinstance(self.save_freq, int)  # saving by epoch costs the training steps nothing

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        self.tracker.resolve(self._model(), "ModelCheckpoint")

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        if self._batch_due(batch):
            self._save(self._epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.tracker.resolve(self._model(), "ModelCheckpoint", again=False)
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _batch_due(self, batch: int) -> bool:
        """Keras 3's `_should_save_on_batch`: count the batches since the last save (a batch index not above
        the last one seen begins an epoch, which contributes `batch + 1`); due once `save_freq` are counted."""
        if not isinstance(self.save_freq, int):
            return False
        if self._last_batch is None or batch <= self._last_batch:
            self._batches_since_save += batch + 1
        else:
            self._batches_since_save += batch - self._last_batch
        self._last_batch = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            return True
        return False

    def _save(self, epoch: int, batch: int | None, logs: Mapping[str, float] | None) -> None:
        values = dict(logs or {})  # batch logs are read from the device here, only when a file is due
        fields = {"epoch": epoch + 1, **values}
        if batch is not None:
            fields.setdefault("batch", batch + 1)  # as Keras, a "batch" entry of the logs wins
        try:
            path = self.filepath.format(**fields)
        except (KeyError, ValueError, IndexError) as error:
            raise ValueError(f"ModelCheckpoint: cannot fill `filepath` {self.filepath!r} from the epoch"
                             f"{'' if batch is None else ', the batch'} and the logs ({', '.join(values)}): "
                             f"{error}") from None
        if self.save_best_only and not self._improved(epoch, values, path):
            return
        if not self.save_best_only and self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if self.save_weights_only:
            self._model().save_weights(path)
        else:
            self._model().save(path)

    def _improved(self, epoch: int, logs: Mapping[str, float], path: str) -> bool:
        """Whether `save_best_only` saves now (Keras 3: also when the logs lack `monitor`); updates the best."""
        value = self.tracker.value(logs)
        if value is None:
            self.tracker.warn_missing(logs, "Saving the best model only", "saving the model")
            return True
        best = "None" if self.tracker.best is None else f"{self.tracker.best:.5f}"
        if not self.tracker.improves(value, self.tracker.best):
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.tracker.monitor} did not improve from {best}")
            return False
        if self.verbose:
            print(f"Epoch {epoch + 1}: {self.tracker.monitor} improved from {best} to {value:.5f}, "
                  f"saving model to {path}")
        self.tracker.best = value
        return True

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"best": self.tracker.best, "batches_since_save": self._batches_since_save,
                "last_batch": self._last_batch}, {}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.tracker.best = None if values["best"] is None else float(values["best"])
        self._batches_since_save = int(values.get("batches_since_save", 0))
        last = values.get("last_batch")
        self._last_batch = None if last is None else int(last)


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

    The training loop watches the loss on the device for it and calls `trigger` with the first bad batch;
    no checkpoint is written after it, so the last checkpoint holds the last good weights.

    Args:
        raise_error: as Keras 3, False stops gracefully (`model.stop_training`, then every callback's
            `on_train_end`); True raises a RuntimeError at once instead, so that no `on_train_end` runs
            (a backup folder is kept, say).
    """

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        self.raise_error = check_bool("raise_error", raise_error)
        self.stopped_at: tuple[int, int] | None = None

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        self.stopped_at = None

    def trigger(self, epoch: int, batch: int) -> None:
        """Called by `fit` for the first batch (index from 0 within epoch `epoch`) with a non-finite loss.

        Raises:
            RuntimeError: with `raise_error=True`.
        """
        self.stopped_at = (epoch, batch)
        if self.raise_error:
            raise RuntimeError(f"NaN or Inf loss encountered at batch {batch + 1} of epoch {epoch + 1}. "
                               f"Terminating training immediately.")
        print(f"Epoch {epoch + 1}, batch {batch + 1}: invalid loss (NaN or infinite), terminating training",
              file=sys.stderr)
        self._model().stop_training = True


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to `schedule(epoch, lr)` (epoch counts from 0).

    As Keras 3, a schedule that refuses two arguments (TypeError) is called as `schedule(epoch)`, so a
    one-argument function such as `lambda epoch: 0.01 * 0.1 ** (epoch / 20)` works too. The rate each
    epoch trained with is logged as "learning_rate".
    """

    def __init__(self, schedule: Callable[[int, float], float] | Callable[[int], float], verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"`schedule` must be a function (epoch, lr) -> lr or epoch -> lr. "
                            f"Received: schedule={describe(schedule)}")
        self.schedule = schedule
        self.verbose = check_int("verbose", verbose, minimum=0, maximum=2)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        current = self._model().learning_rate
        try:
            value = self.schedule(epoch, current)  # type: ignore[call-arg]
        except TypeError:  # Keras 3's fallback for the one-argument form
            value = self.schedule(epoch)  # type: ignore[call-arg]
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"LearningRateScheduler: the schedule must return a number. Received: "
                            f"{describe(value)}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"LearningRateScheduler: the schedule must return a finite learning rate >= 0. "
                             f"Received: {value} for epoch {epoch}")
        self._model().learning_rate = value
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {value}.")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        _log_learning_rate(logs, self._model())


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` when `monitor` has not improved for `patience` epochs,
    as Keras 3 (keras/src/callbacks/reduce_lr_on_plateau.py).

    Keras 3's rule, at the end of each epoch whose logs hold `monitor` (the rate the epoch trained with is
    logged as "learning_rate" first, in every epoch): during a cooldown, `cooldown_counter` counts down by
    one and `wait` is reset; an improvement on the best value by more than `min_delta` becomes the best and
    resets `wait`; otherwise, outside a cooldown, `wait` grows by one, and once `wait >= patience` the rate,
    if above `min_lr`, becomes `max(rate * factor, min_lr)`, `wait` is reset and a cooldown of `cooldown`
    epochs begins. Keras keeps the rate in a float32 variable, so the comparison with `min_lr` and the
    product are made from the rate rounded to float32, as there.

    Args:
        monitor: the log entry to watch ("val_loss", "loss", "val_accuracy", ...).
        factor: the new rate is `rate * factor`; in [0, 1).
        patience: epochs without improvement before the rate is reduced.
        verbose: 1 prints each reduction.
        mode: "min", "max", or "auto" (losses are minimised, compiled metrics go their own way).
        min_delta: the smallest change that counts as an improvement.
        cooldown: epochs after a reduction during which no reduction is counted.
        min_lr: the rate is never reduced below it.

    Raises:
        ValueError: `factor` >= 1.0 (as Keras) or < 0; at train begin, mode="auto" on a metric of unknown
            direction.

    >>> ReduceLROnPlateau(factor=0.5, patience=2)
    ReduceLROnPlateau(monitor='val_loss', factor=0.5, patience=2, cooldown=0, min_lr=0.0)
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        super().__init__()
        factor = check_float("factor", factor, minimum=0.0)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0 (the new rate is rate * factor). "
                             f"Received: factor={factor}")
        self.factor = factor
        self.tracker = _Monitor(monitor, mode, check_float("min_delta", min_delta))
        self.patience = check_int("patience", patience, minimum=0)
        self.verbose = check_int("verbose", verbose, minimum=0, maximum=2)
        self.cooldown = check_int("cooldown", cooldown, minimum=0)
        self.min_lr = check_float("min_lr", min_lr, minimum=0.0)
        self.wait = 0
        self.cooldown_counter = 0

    @property
    def best(self) -> float | None:
        return self.tracker.best

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        self.wait, self.cooldown_counter, self.tracker.best = 0, 0, None
        self.tracker.resolve(self._model(), "ReduceLROnPlateau")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        model = self._model()
        self.tracker.resolve(model, "ReduceLROnPlateau", again=False)
        _log_learning_rate(logs, model)
        value = self.tracker.value(logs)
        if value is None:
            self.tracker.warn_missing(logs, "Learning rate reduction", "skipping this epoch")
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.tracker.improves(value, self.tracker.best):
            self.tracker.best, self.wait = value, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(model, epoch):
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, model: Sequential, epoch: int) -> bool:
        """Multiply the rate by `factor` unless it is down to `min_lr` already; whether it did."""
        rate = float(np.float32(model.learning_rate))  # what Keras's float32 variable holds
        if not np.float32(rate) > np.float32(self.min_lr):
            return False
        new_rate = max(rate * self.factor, self.min_lr)
        model.learning_rate = new_rate
        if self.verbose:
            print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_rate}.")
        return True

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.tracker.best}, {}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.wait, self.cooldown_counter = int(values["wait"]), int(values["cooldown_counter"])
        self.tracker.best = None if values["best"] is None else float(values["best"])

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(monitor={self.tracker.monitor!r}, factor={self.factor}, "
                f"patience={self.patience}, cooldown={self.cooldown}, min_lr={self.min_lr})")


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
        self.save_freq = _check_save_freq(save_freq)
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
