"""The engine behind `Sequential.fit`, `evaluate` and `predict`.

In-memory arrays are moved to the model's device once. Each step gathers a shuffled batch there,
runs forward, loss, backward and the optimizer, and adds the batch's loss and metric sums to one small
accumulator tensor on the device. The host reads the accumulator only when the progress display is due,
when a callback asks for batch logs, and at the end of each epoch: no host sync per step.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._checks import check_float, check_int, describe, shape_str
from .callbacks import Callback, History
from .progress import Progbar, resolve_verbose

if TYPE_CHECKING:
    from .models import Sequential


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
        if array.dtype.kind == "f" and array.dtype != np.float32:
            array = array.astype(np.float32)
        elif array.dtype.kind in "bi" or (array.dtype.kind == "u" and array.dtype != np.uint8):
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


class Step:
    """One optimisation step of `model` on a batch; returns [loss_sum, metric_sum, ...] on the device."""

    def __init__(self, model: Sequential):
        self.model = model
        self.fused = model._fused_activation()

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        model = self.model
        outputs = model._forward_train(xb.float(), logits=self.fused is not None)
        loss_sum = model.loss.sum(yb, outputs, logits=True if self.fused else None)
        model.optimizer_.zero_grad(set_to_none=True)
        (loss_sum / xb.shape[0]).backward()
        model.optimizer_.step()
        with torch.no_grad():
            return model._batch_sums(loss_sum.detach(), yb, outputs.detach(), self.fused)


def _batch_slices(count: int, batch_size: int, order: torch.Tensor | None) -> Iterator[slice | torch.Tensor]:
    for start in range(0, count, batch_size):
        yield slice(start, start + batch_size) if order is None else order[start:start + batch_size]


def fit(model: Sequential, x: Any, y: Any = None, batch_size: int | None = None, epochs: int = 1,
        verbose: int | str = "auto", callbacks: Sequence[Callback] | None = None, validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None, shuffle: bool = True, initial_epoch: int = 0) -> History:
    model._require_compiled("fit")
    batch_size = 32 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0, maximum=epochs - 1)
    verbose = resolve_verbose(verbose)
    validation_split = check_float("validation_split", validation_split, minimum=0.0, maximum=1.0,
                                   include_max=False)
    callbacks = _check_callbacks(callbacks)
    x_t = as_inputs(model, x)
    model._ensure_built(tuple(x_t.shape[1:]))
    if model.optimizer_ is None:
        raise ValueError("fit: the model has no trainable weights")
    y_t = as_targets(model, y, x_t.shape[0])
    x_val = y_val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(f"`validation_data` must be a tuple (x_val, y_val). Received: "
                             f"{describe(validation_data)}")
        x_val = as_inputs(model, validation_data[0], "validation_data[0]")
        y_val = as_targets(model, validation_data[1], x_val.shape[0], "validation_data[1]")
    elif validation_split:
        x_t, y_t, x_val, y_val = split_validation(x_t, y_t, validation_split)
    count = x_t.shape[0]
    if batch_size > count:
        raise ValueError(f"`batch_size` (={batch_size}) is larger than the number of training samples ({count}); "
                         f"use batch_size <= {count}")

    device = model.device
    x_t, y_t = x_t.to(device), y_t.to(device)
    if x_val is not None:
        x_val, y_val = x_val.to(device), y_val.to(device)
    steps = math.ceil(count / batch_size)
    history = History()
    everyone = [*callbacks, history]  # History last, as Keras, so it records what callbacks add to the logs
    for callback in everyone:
        callback.set_model(model)
        callback.set_params({"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size})
    batch_hooks = [c for c in everyone if c.uses_batch_hooks()]
    step_fn = Step(model)
    names = model.metrics_names
    model.stop_training = False
    model.history = history
    for callback in everyone:
        callback.on_train_begin()
    try:
        for epoch in range(initial_epoch, epochs):
            for callback in everyone:
                callback.on_epoch_begin(epoch)
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            progbar = Progbar(steps, verbose)
            model.train()
            totals = torch.zeros(len(names), dtype=torch.float64, device=device)
            seen = 0
            order = torch.randperm(count, device=device) if shuffle else None
            for step, index in enumerate(_batch_slices(count, batch_size, order)):
                for callback in batch_hooks:
                    callback.on_train_batch_begin(step)
                sums = step_fn(x_t[index], y_t[index])
                totals += sums
                seen += min(batch_size, count - step * batch_size)
                if batch_hooks:
                    logs = LazyLogs(dict(zip(names, totals / seen)))
                    for callback in batch_hooks:
                        callback.on_train_batch_end(step, logs)
                if progbar.due():
                    progbar.update(step + 1, _means(names, totals, seen))
                if model.stop_training:
                    break
            logs = _means(names, totals, seen)
            if x_val is not None:
                val = _evaluate_tensors(model, x_val, y_val, max(batch_size, 256))
                logs.update({f"val_{name}": value for name, value in val.items()})
            progbar.finish(logs, step=step + 1)
            for callback in everyone:
                callback.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
    finally:
        model.eval()
    for callback in everyone:
        callback.on_train_end()
    return history


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
                      progbar: Progbar | None = None) -> dict[str, float]:
    model.eval()
    fused = model._fused_activation()
    names = model.metrics_names
    totals = torch.zeros(len(names), dtype=torch.float64, device=model.device)
    for step, index in enumerate(_batch_slices(x.shape[0], batch_size, None)):
        outputs = model._forward_train(x[index].float(), logits=fused is not None)
        yb = y[index]
        totals += model._batch_sums(model.loss.sum(yb, outputs, logits=True if fused else None), yb, outputs, fused)
        if progbar is not None and progbar.due():
            progbar.update(step + 1, _means(names, totals, min((step + 1) * batch_size, x.shape[0])))
    return _means(names, totals, x.shape[0])


def evaluate(model: Sequential, x: Any, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
             return_dict: bool = False) -> float | list[float] | dict[str, float]:
    model._require_compiled("evaluate")
    batch_size = 32 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    verbose = resolve_verbose(verbose)
    x_t = as_inputs(model, x)
    model._ensure_built(tuple(x_t.shape[1:]))
    y_t = as_targets(model, y, x_t.shape[0])
    device = model.device
    progbar = Progbar(math.ceil(x_t.shape[0] / batch_size), verbose)
    results = _evaluate_tensors(model, x_t.to(device), y_t.to(device), batch_size, progbar)
    progbar.finish(results)
    if return_dict:
        return results
    values = list(results.values())
    return values[0] if len(values) == 1 else values


@torch.no_grad()
def predict(model: Sequential, x: Any, batch_size: int | None = None, verbose: int | str = "auto") -> np.ndarray:
    batch_size = 256 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    verbose = resolve_verbose(verbose)
    x_t = as_inputs(model, x)
    model._ensure_built(tuple(x_t.shape[1:]))
    device = model.device
    model.eval()
    steps = math.ceil(x_t.shape[0] / batch_size)
    progbar = Progbar(steps, verbose)
    outputs = []
    for step, index in enumerate(_batch_slices(x_t.shape[0], batch_size, None)):
        outputs.append(model(x_t[index].to(device, non_blocking=True).float()).float().cpu())
        if progbar.due():
            progbar.update(step + 1, {})
    progbar.finish({})
    return torch.cat(outputs).numpy()
