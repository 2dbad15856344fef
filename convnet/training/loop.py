"""The loops behind `Sequential.fit`, `evaluate` and `predict` (how each step executes is `engine.py`).

In-memory arrays are moved to the model's device once. Each step gathers a shuffled batch there, runs
the engine's training step and adds the batch's loss and metric sums to one small accumulator tensor on
the device. The host reads the accumulator only when the progress display is due, when a callback asks
for batch logs, and at the end of each epoch: no host sync per step on a GPU.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convnet._internal.checks import (
    check_bool,
    check_float,
    check_int,
    describe,
    shape_str,
)
from convnet.augment import apply_variant, tta_variants
from convnet.callbacks import Callback, History, TerminateOnNaN
from convnet.training import checkpoint
from convnet.training.engine import batch_sums
from convnet.training.progress import Progbar, resolve_verbose

if TYPE_CHECKING:
    from convnet.models.sequential import Sequential


class LazyLogs(Mapping):
    """Logs whose tensor values are read from the device only when a key is accessed."""

    def __init__(self, values: dict[str, Any]):
        self._values = values

    def __getitem__(self, key: str) -> float:
        value = self._values[key]
        return float(value) if isinstance(value, torch.Tensor) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def as_inputs(model: Sequential, x: Any, argument: str = "x") -> torch.Tensor:
    """`x` as a CPU (or device) tensor of the model's input shape, keeping uint8 to save memory and
    transfer (batches are cast to float32 on the device). A channel axis is added to (N, H, W) arrays
    when the model takes (H, W, 1)."""
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    elif isinstance(x, (np.ndarray, list, tuple)):
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"`{argument}` must hold numbers. Received: {argument}={describe(array)}")
        if (array.dtype.kind == "f" and array.dtype != np.float32) or array.dtype.kind in "bi" or (array.dtype.kind == "u" and array.dtype != np.uint8):
            array = array.astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    else:
        raise TypeError(f"`{argument}` must be a NumPy array or a torch.Tensor. Received: {argument}={describe(x)}")
    if tensor.is_complex():
        raise TypeError(f"`{argument}` must hold real numbers. Received: {argument}={describe(tensor)}")
    expected = model.input_shape
    if expected is None:
        if tensor.dim() < 2:
            raise ValueError(f"`{argument}` must be a batch (N, ...). Received shape {shape_str(tensor.shape)}")
        return tensor
    if (len(expected) == 3 and expected[-1] == 1 and tensor.dim() == 3
            and all(e is None or e == s for e, s in zip(expected[:2], tensor.shape[1:]))):
        tensor = tensor.unsqueeze(-1)  # (N, H, W) -> (N, H, W, 1)
    if tensor.dim() != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, tensor.shape[1:])):
        hint = "; add a batch axis with x[None]" if tuple(tensor.shape) == tuple(expected) else ""
        raise ValueError(f"`{argument}` has shape {shape_str(tensor.shape)} but the model expects "
                         f"{shape_str((None, *expected))}{hint}")
    if tensor.shape[0] == 0:
        raise ValueError(f"`{argument}` is empty (0 samples)")
    return tensor


def as_targets(model: Sequential, y: Any, count: int, argument: str = "y") -> torch.Tensor:
    """`y` checked against the loss: class indices in [0, classes) for sparse losses, arrays of the output
    shape otherwise; as many samples as x."""
    if y is None:
        raise ValueError(f"`{argument}` is required (the targets for the loss)")
    if isinstance(y, torch.Tensor):
        tensor = y.detach().cpu()
    else:
        array = np.asarray(y)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"`{argument}` must hold numbers. Received: {argument}={describe(array)}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dim() == 0 or tensor.shape[0] != count:
        got = "a scalar" if tensor.dim() == 0 else f"{tensor.shape[0]}"
        raise ValueError(f"`x` and `{argument}` must have the same number of samples: x has {count}, "
                         f"{argument} has {got}")
    loss = model.loss
    output = model.output_shape
    if loss is not None and loss.label_kind == "sparse":
        if tensor.dim() == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0]
        if tensor.dim() != 1:
            raise ValueError(f"`{argument}` must hold one class index per sample for {loss.name}, shape (N,). "
                             f"Received shape {shape_str(tensor.shape)}; for one-hot labels use "
                             f"loss='categorical_crossentropy'")
        if tensor.is_floating_point():
            if not torch.equal(tensor, tensor.round()):
                raise ValueError(f"`{argument}` must hold integer class indices for {loss.name}. "
                                 f"Received non-integer values such as {tensor[tensor != tensor.round()][0].item()}")
        tensor = tensor.long()
        classes = output[-1] if output else None
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or (classes is not None and high >= classes):
            raise ValueError(f"`{argument}` holds labels in [{low}, {high}] but the model has {classes} outputs, "
                             f"so labels must be in [0, {classes - 1}]")
        return tensor
    tensor = tensor.float()
    if output is not None and tuple(tensor.shape[1:]) != tuple(output) and tensor[0].numel() != math.prod(output):
        raise ValueError(f"`{argument}` has shape {shape_str(tensor.shape)} but the model outputs "
                         f"{shape_str((None, *output))}")
    return tensor


def split_validation(x: torch.Tensor, y: torch.Tensor, fraction: float) -> tuple[torch.Tensor, ...]:
    """Keras's rule: the *last* `fraction` of the samples, taken before shuffling."""
    split_at = int(x.shape[0] * (1 - fraction))
    if split_at == 0 or split_at == x.shape[0]:
        raise ValueError(f"`validation_split`={fraction} leaves no training or no validation samples "
                         f"out of {x.shape[0]}")
    return x[:split_at], y[:split_at], x[split_at:], y[split_at:]


def _batch_slices(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, start + batch_size)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by `fit` after Ctrl-C (SIGINT): the current step was finished and, with a checkpoint folder,
    a checkpoint was saved. `checkpoint` is its path (or None); `epoch` and `step` say where it stopped."""

    def __init__(self, epoch: int, step: int, checkpoint: str | None, reason: str = "no checkpoint folder was given"):
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint
        where = f"epoch {epoch + 1}, step {step}"
        super().__init__(f"training interrupted at {where}; " +
                         (f"checkpoint saved to {checkpoint}" if checkpoint else reason))


class _InterruptFlag:
    """Turns the first SIGINT into a flag checked between steps; a second one interrupts at once."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True
        print("\nInterrupted: finishing the current step and saving a checkpoint (Ctrl-C again to abort).",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Trainer:
    """One call of `fit`: the loop over epochs and steps, with its state, callbacks and checkpoints."""

    def __init__(self, model: Sequential, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, epochs: int,
                 shuffle: bool, callbacks: list[Callback], verbose: int, validation: tuple | None,
                 initial_epoch: int, checkpoint_dir: str | None, checkpoint_interval: float, resume: bool):
        self.model, self.x, self.y = model, x, y
        self.batch_size, self.epochs, self.shuffle, self.verbose = batch_size, epochs, shuffle, verbose
        self.validation = validation
        self.count = x.shape[0]
        self.steps = math.ceil(self.count / batch_size)
        self.history = History()
        self.callbacks = [*callbacks, self.history]  # History last, as Keras, so it records what callbacks add
        self.batch_hooks = [c for c in self.callbacks if c.uses_batch_hooks()]
        self.nan_guard = next((c for c in callbacks if isinstance(c, TerminateOnNaN)), None)
        self.names = model.metrics_names
        self.engine = model.engine
        self.schedule = model.optimizer.schedule if model.optimizer is not None else None
        if self.schedule is not None:
            self.schedule.bind(epochs * self.steps)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_interval = checkpoint_interval
        self.state = checkpoint.TrainingState(epoch=initial_epoch, global_step=0)
        self.resumed = False
        if checkpoint_dir is not None:
            settings = {"batch_size": batch_size, "shuffle": shuffle,
                        "validation_samples": 0 if validation is None else int(validation[0].shape[0])}
            self.state.fingerprint = checkpoint.data_fingerprint(x, y, settings)
            self.state.fingerprint["cpu_threads"] = torch.get_num_threads()
            checkpoint.check_room(checkpoint_dir, model)
            if resume and checkpoint.exists(checkpoint_dir):
                self._resume()

    def _resume(self) -> None:
        fingerprint = self.state.fingerprint
        self.state = checkpoint.load(self.checkpoint_dir, self.model)
        self.resumed = True
        changed = [key for key in fingerprint if self.state.fingerprint.get(key) != fingerprint[key]]
        if "cpu_threads" in changed:  # summation order in the conv weight gradient depends on it
            changed.remove("cpu_threads")
            warnings.warn(f"resuming with {fingerprint['cpu_threads']} CPU threads where the run had "
                          f"{self.state.fingerprint.get('cpu_threads')}: the result can differ from an "
                          f"uninterrupted run in the last bits (about 1e-7)", stacklevel=4)
        if changed:
            raise ValueError(f"cannot resume from {self.checkpoint_dir}: the {', '.join(changed)} differ from the "
                             f"run that wrote the checkpoint (use the same data and settings, or another folder)")
        self.history.history = self.state.history
        self.history.epoch = self.state.epochs_done
        if self.verbose:
            where = f"epoch {self.state.epoch + 1}, step {self.state.step}"
            print(f"Resuming from {os.path.join(self.checkpoint_dir, checkpoint.LAST)} at {where}", flush=True)

    def _save(self, best: bool = False) -> str | None:
        if self.checkpoint_dir is None:
            return None
        self.state.history = self.history.history
        self.state.epochs_done = self.history.epoch
        return checkpoint.save(self.checkpoint_dir, self.model, self.state, best=best)

    def _check_finite(self, epoch: int, first_bad: torch.Tensor) -> None:
        bad = int(first_bad)
        if bad >= 0 and self.nan_guard.stopped_at is None:
            self.nan_guard.trigger(epoch, bad)

    def run(self) -> History:
        model, state = self.model, self.state
        for callback in self.callbacks:
            callback.set_model(model)
            callback.set_params({"epochs": self.epochs, "steps": self.steps, "verbose": self.verbose,
                                 "initial_epoch": state.epoch, "resumed": self.resumed,
                                 "batch_size": self.batch_size})
        model.stop_training = False
        model.history = self.history
        for callback in self.callbacks:
            callback.on_train_begin()
        try:
            with _InterruptFlag() as interrupt:
                while state.epoch < self.epochs and not model.stop_training:
                    self._epoch(interrupt)
        finally:
            model.eval()
        for callback in self.callbacks:
            callback.on_train_end()
        return self.history

    def _epoch(self, interrupt: _InterruptFlag) -> None:
        model, state, device = self.model, self.state, self.model.device
        epoch = state.epoch
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch)
        if self.verbose:
            print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        if state.step == 0:  # a fresh epoch (a resumed one brings its order and sums)
            state.order = torch.randperm(self.count, device=device) if self.shuffle else None
            state.totals = torch.zeros(len(self.names), dtype=torch.float64, device=device)
            state.seen = 0
        progbar = Progbar(self.steps, self.verbose)
        engine = self.engine
        first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
        check_every = 1 if device.type == "cpu" else 64  # reading it costs a GPU sync: batch the checks
        last_save = time.monotonic()
        model.train()
        for step in range(state.step, self.steps):
            for callback in self.batch_hooks:
                callback.on_train_batch_begin(step, {})
            start = step * self.batch_size
            index = (slice(start, start + self.batch_size) if state.order is None
                     else state.order[start:start + self.batch_size])
            if self.schedule is not None:
                model.learning_rate = self.schedule(state.global_step)
            sums = engine.train_step(self.x[index], self.y[index], full_batch=self.batch_size)
            state.totals += sums
            state.seen += min(self.batch_size, self.count - start)
            state.step, state.global_step = step + 1, state.global_step + 1
            if self.nan_guard is not None:
                first_bad.masked_fill_((first_bad < 0) & ~torch.isfinite(sums[0]), step)
                if (step + 1) % check_every == 0 or step + 1 == self.steps or progbar.due():
                    self._check_finite(epoch, first_bad)
            if self.batch_hooks:
                logs = LazyLogs(dict(zip(self.names, state.totals / state.seen)))
                for callback in self.batch_hooks:
                    callback.on_train_batch_end(step, logs)
            if progbar.due():
                progbar.update(step + 1, _means(self.names, state.totals, state.seen))
            if interrupt.raised:
                saved = self._save() if bool(torch.isfinite(state.totals).all()) else None
                progbar.finish(_means(self.names, state.totals, state.seen), step=step + 1)
                reason = ("no checkpoint folder was given" if self.checkpoint_dir is None else
                          "no checkpoint written: the weights are no longer finite (the last one is kept)")
                raise TrainingInterrupted(epoch, step + 1, saved, reason)
            if model.stop_training:
                break
            if (self.checkpoint_dir is not None and step + 1 < self.steps
                    and time.monotonic() - last_save >= self.checkpoint_interval
                    and bool(torch.isfinite(state.totals).all())):
                self._save()
                last_save = time.monotonic()
        if self.nan_guard is not None:
            self._check_finite(epoch, first_bad)
        logs = _means(self.names, state.totals, state.seen)
        if self.validation is not None:
            val = _evaluate_tensors(model, *self.validation, max(self.batch_size, 256))
            logs.update({f"val_{name}": value for name, value in val.items()})
            model.train()
        progbar.finish(logs, step=state.step)
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)
        state.epoch, state.step, state.order, state.totals, state.seen = epoch + 1, 0, None, None, 0
        if all(math.isfinite(value) for value in logs.values()):  # never checkpoint diverged weights
            monitor = logs.get("val_loss", logs["loss"])
            best = state.best is None or monitor < state.best
            if best:
                state.best = monitor
            self._save(best=best)


def fit(model: Sequential, x: Any, y: Any = None, batch_size: int | None = None, epochs: int = 1,
        verbose: int | str = "auto", callbacks: Sequence[Callback] | None = None, validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None, shuffle: bool = True, initial_epoch: int = 0,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
        checkpoint_interval: float = 600.0) -> History:
    require_compiled(model, "fit")
    explicit_batch = batch_size is not None
    batch_size = 32 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0, maximum=epochs - 1)
    verbose = resolve_verbose(verbose)
    validation_split = check_float("validation_split", validation_split, minimum=0.0, maximum=1.0,
                                   include_max=False)
    shuffle = check_bool("shuffle", shuffle)
    resume = check_bool("resume", resume)
    checkpoint_interval = check_float("checkpoint_interval", checkpoint_interval, minimum=0.0)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"`checkpoint_dir` must be a folder path. Received: checkpoint_dir={describe(checkpoint_dir)}")
    if resume and checkpoint_dir is None:
        raise ValueError("`resume=True` needs `checkpoint_dir`: the folder the interrupted fit wrote its checkpoints to")
    callbacks = _check_callbacks(callbacks)
    x_t = as_inputs(model, x)
    if not model.built:
        model.build(tuple(x_t.shape[1:]))
    if model.optimizer_ is None:
        raise ValueError("fit: the model has no trainable weights")
    y_t = as_targets(model, y, x_t.shape[0])
    validation = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(f"`validation_data` must be a tuple (x_val, y_val). Received: "
                             f"{describe(validation_data)}")
        x_val = as_inputs(model, validation_data[0], "validation_data[0]")
        validation = (x_val, as_targets(model, validation_data[1], x_val.shape[0], "validation_data[1]"))
    elif validation_split:
        x_t, y_t, *validation = split_validation(x_t, y_t, validation_split)
    if batch_size > x_t.shape[0] and not explicit_batch:
        batch_size = x_t.shape[0]  # Keras's default of 32 on a smaller dataset: one batch of everything
    if batch_size > x_t.shape[0]:
        raise ValueError(f"`batch_size` (={batch_size}) is larger than the number of training samples "
                         f"({x_t.shape[0]}); use batch_size <= {x_t.shape[0]}")
    device = model.device
    if validation is not None:
        validation = tuple(t.to(device) for t in validation)
    trainer = Trainer(model, x_t.to(device), y_t.to(device), batch_size=batch_size, epochs=epochs, shuffle=shuffle,
                      callbacks=callbacks, verbose=verbose, validation=validation, initial_epoch=initial_epoch,
                      checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
                      checkpoint_interval=checkpoint_interval, resume=resume)
    return trainer.run()


def require_compiled(model: Sequential, what: str) -> None:
    if not model.compiled:
        raise ValueError(f"{what}: the model must be compiled first, e.g. model.compile(loss="
                         f"'sparse_categorical_crossentropy', optimizer='nadam', metrics=['accuracy'])")


def _means(names: list[str], totals: torch.Tensor, seen: int) -> dict[str, float]:
    return dict(zip(names, (totals / max(seen, 1)).tolist()))


def _check_callbacks(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    if not isinstance(callbacks, (list, tuple)) or not all(isinstance(c, Callback) for c in callbacks):
        raise TypeError(f"`callbacks` must be a list of convnet.callbacks.Callback objects. Received: "
                        f"callbacks={describe(callbacks)}")
    return list(callbacks)


@torch.no_grad()
def _evaluate_tensors(model: Sequential, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                      progbar: Progbar | None = None, tta: Any = None) -> dict[str, float]:
    model.eval()
    engine = model.engine
    names = model.metrics_names
    totals = torch.zeros(len(names), dtype=torch.float64, device=model.device)
    variants = tta_variants(tta)
    for step, index in enumerate(_batch_slices(x.shape[0], batch_size)):
        xb, yb = x[index], y[index]
        if len(variants) == 1:
            totals += engine.eval_batch(xb, yb)
        else:  # average the probabilities over the variants, then score them as probabilities
            outputs = sum(engine.predict_batch(apply_variant(xb, v)) for v in variants) / len(variants)
            loss_sum = model.loss.sum(yb, outputs, logits=False)
            totals += batch_sums(model, loss_sum, yb, outputs, None)
        if progbar is not None and progbar.due():
            progbar.update(step + 1, _means(names, totals, min((step + 1) * batch_size, x.shape[0])))
    return _means(names, totals, x.shape[0])


def evaluate(model: Sequential, x: Any, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
             return_dict: bool = False, tta: Any = None) -> float | list[float] | dict[str, float]:
    require_compiled(model, "evaluate")
    batch_size = 32 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    verbose = resolve_verbose(verbose)
    x_t = as_inputs(model, x)
    if not model.built:
        model.build(tuple(x_t.shape[1:]))
    y_t = as_targets(model, y, x_t.shape[0])
    device = model.device
    progbar = Progbar(math.ceil(x_t.shape[0] / batch_size), verbose)
    tta_variants(tta)  # checks the argument before any work
    results = _evaluate_tensors(model, x_t.to(device), y_t.to(device), batch_size, progbar, tta)
    progbar.finish(results)
    if return_dict:
        return results
    values = list(results.values())
    return values[0] if len(values) == 1 else values


@torch.no_grad()
def predict(model: Sequential, x: Any, batch_size: int | None = None, verbose: int | str = "auto",
            tta: Any = None) -> np.ndarray:
    batch_size = 256 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    verbose = resolve_verbose(verbose)
    x_t = as_inputs(model, x)
    if not model.built:
        model.build(tuple(x_t.shape[1:]))
    device = model.device
    model.eval()
    steps = math.ceil(x_t.shape[0] / batch_size)
    progbar = Progbar(steps, verbose)
    variants = tta_variants(tta)
    engine = model.engine
    outputs = []
    for step, index in enumerate(_batch_slices(x_t.shape[0], batch_size)):
        xb = x_t[index].to(device, non_blocking=True)
        batch = sum(engine.predict_batch(apply_variant(xb, v)) for v in variants) / len(variants)
        outputs.append(batch.cpu())
        if progbar.due():
            progbar.update(step + 1, {})
    progbar.finish({})
    return torch.cat(outputs).numpy()
