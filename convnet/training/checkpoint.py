"""Training checkpoints: everything needed to continue a `fit` exactly where it stopped.

A checkpoint holds the model's weights, the optimizer's state, the epoch and step, the current epoch's
shuffling order and metric sums, every random generator's state, the history so far, the callbacks'
state (`Callback.get_state`: EarlyStopping's patience count and best weights, ModelCheckpoint's best)
and a fingerprint of the training data. It is a safetensors file (tensors, plus JSON in the header; no pickle), written
atomically: temporary file, fsync, rename. A run folder keeps two: `last.ckpt` (the newest) and
`best.ckpt` (the best epoch by the monitored value, `val_loss` when there is validation data).

In data-parallel training (`convnet.distributed`) rank 0 writes the file, with every rank's generators in it
(rank r > 0's under "rng/rank<r>/"), and reads it for the others (`read`, then `load(..., payload=...)`): each
rank takes back its own generators, so a resume at the same world size continues every rank's stream.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from convnet._internal.fileformat import check_tensors, decode, encode
from convnet._internal.files import atomic_write, probe_folder

if TYPE_CHECKING:
    from convnet.models.sequential import Sequential

LAST = "last.ckpt"
BEST = "best.ckpt"


@dataclass
class TrainingState:
    """Where a fit stands: what a checkpoint records besides weights and optimizer state."""

    epoch: int = 0                        # the epoch in progress (0-based)
    step: int = 0                         # steps finished in that epoch
    global_step: int = 0                  # the optimizer's steps so far (Keras's optimizer.iterations):
                                          # what a schedule reads; it goes on across fits
    seen: int = 0                         # samples seen in the epoch (for the running means)
    totals: torch.Tensor | None = None    # the epoch's [loss, metric...] sums, float64
    order: torch.Tensor | None = None     # the epoch's shuffling order, None without shuffling
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_done: list[int] = field(default_factory=list)
    best: float | None = None             # best monitored value so far
    fingerprint: dict[str, Any] = field(default_factory=dict)
    # one entry per callback of the fit, in order: {"class": name, "values": JSON-able, "arrays": {name: array}}
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    rng_ranks: int = 1                    # how many ranks' generators the checkpoint held (set by `load`)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A SHA-256 of the tensors' shapes, dtypes and values."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any]) -> dict[str, Any]:
    """Shapes, a SHA-256 of the training arrays and the fit settings that must not change on resume."""
    return {"data_sha256": tensor_digest(x, y), **settings}


def _numpy_state() -> tuple[Any, ...]:
    """NumPy's legacy global generator state: (kind, keys, position, has_gauss, cached)."""
    return cast(tuple[Any, ...], np.random.get_state(legacy=True))


def _optimizer(model: Sequential) -> torch.optim.Optimizer:
    if model.optimizer_ is None:
        raise ValueError(f"{model.name}: the model has no optimizer to checkpoint; compile it first")
    return model.optimizer_


RandomState = tuple[dict[str, torch.Tensor], dict[str, Any]]  # a process's generators: (tensors, JSON)


def process_rng() -> RandomState:
    """This process's generators: torch's (CPU, and each initialised CUDA device's), NumPy's and Python's."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda/{index}"] = state
    kind, keys, position, has_gauss, cached = _numpy_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, state, gauss = random.getstate()
    return tensors, {"numpy": [kind, int(position), int(has_gauss), float(cached)],
                     "python": [version, list(state), gauss]}


def _rng_prefix(rank: int) -> str:
    return "rng/" if rank == 0 else f"rng/rank{rank}/"  # rank 0's where one-process checkpoints keep theirs


def _restore_rng(tensors: dict[str, torch.Tensor], config: dict[str, Any], rank: int = 0) -> int:
    """Take back rank `rank`'s generators, or rank 0's when the checkpoint has none for it; returns how many
    ranks' generators the checkpoint holds."""
    ranks = 1 + len(config.get("rng_ranks", []))
    source = rank if rank < ranks else 0
    prefix, saved = _rng_prefix(source), (config["rng"] if source == 0 else config["rng_ranks"][source - 1])
    torch.set_rng_state(tensors[prefix + "torch_cpu"])
    cuda = sorted(key for key in tensors if key.startswith(prefix + "torch_cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[key] for key in cuda])
    kind, position, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, tensors[prefix + "numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached))
    version, state, gauss = saved["python"]
    random.setstate((version, tuple(state), gauss))
    return ranks


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state dict split into tensors and JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                # .contiguous(): the moments of a channels_last conv kernel are channels_last too
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    groups = [{k: _plain(v) for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


def _plain(value: Any) -> Any:
    """A param-group value as JSON: tuples (betas) as lists, one-element tensors (an `lr` that a CUDA graph
    reads, or one a user gave as a tensor) as numbers."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _optimizer_state(tensors: dict[str, torch.Tensor], parts: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in parts["scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in group.items()} for group in parts["groups"]]
    return {"state": state, "param_groups": groups}


def save(folder: str, model: Sequential, state: TrainingState, best: bool = False,
         rng: list[RandomState] | None = None) -> str | None:
    """Write `last.ckpt` in `folder` atomically (and `best.ckpt` too when `best`); returns the path.
    `rng`: every rank's generators (`process_rng` of each, in rank order); by default this process's.

    Weights that are no longer finite are never written: the last good checkpoint stays, and None is
    returned. (A step whose loss was finite can still produce inf weights: the loss is computed before
    the update.)
    """
    tensors = {f"model/{key}": value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    if not all(bool(torch.isfinite(value).all()) for value in tensors.values() if value.is_floating_point()):
        return None
    optimizer_tensors, optimizer_json = _optimizer_parts(_optimizer(model))
    tensors.update(optimizer_tensors)
    ranks = [process_rng()] if rng is None else rng
    for rank, (generators, _) in enumerate(ranks):
        tensors.update({_rng_prefix(rank) + key: value for key, value in generators.items()})
    if state.totals is not None:
        tensors["state/totals"] = state.totals.detach().cpu().contiguous()
    if state.order is not None:
        tensors["state/order"] = state.order.detach().cpu().contiguous()
    tensors.update(_callback_tensors(state.callbacks))
    config = {"model": model.get_config(), "optimizer": optimizer_json, "rng": ranks[0][1],
              "rng_ranks": [saved for _, saved in ranks[1:]],
              "state": {"epoch": state.epoch, "step": state.step, "global_step": state.global_step,
                        "seen": state.seen, "history": state.history, "epochs_done": state.epochs_done,
                        "best": state.best, "fingerprint": state.fingerprint,
                        "callbacks": [{"class": entry["class"], "values": entry["values"]}
                                      for entry in state.callbacks]}}
    data = encode(tensors, "checkpoint", config)
    path = os.path.join(folder, LAST)
    atomic_write(path, data)
    if best:
        atomic_write(os.path.join(folder, BEST), data)
    return path


def load(folder: str, model: Sequential, *, rank: int = 0,
         payload: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None) -> TrainingState:
    """Restore weights, optimizer state and random generators from `folder/last.ckpt`; returns the state.
    `rank` takes back that rank's generators (rank 0's when the checkpoint has none for it: see
    `TrainingState.rng_ranks`); `payload` is the file as `read` gave it, read by another process.

    Raises:
        FileNotFoundError: no checkpoint in `folder`.
        ValueError: a damaged file (named), or a checkpoint of another architecture.
    """
    path = os.path.join(folder, LAST)
    tensors, config = read(folder) if payload is None else payload
    try:
        if config["model"] != model.get_config():
            raise ValueError(f"{path}: the checkpoint is of another architecture than the model being trained")
        weights = {key[len("model/"):]: value for key, value in tensors.items() if key.startswith("model/")}
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        check_tensors(path, expected, weights, what="the model")
        saved = config["state"]
        state = TrainingState(epoch=_count(saved["epoch"]), step=_count(saved["step"]),
                              global_step=_count(saved["global_step"]), seen=_count(saved["seen"]),
                              history=dict(saved["history"]), epochs_done=list(saved["epochs_done"]),
                              best=saved["best"], fingerprint=dict(saved["fingerprint"]),
                              totals=tensors.get("state/totals"), order=tensors.get("state/order"),
                              callbacks=_callback_entries(tensors, saved.get("callbacks", [])))
        optimizer_state = _optimizer_state(tensors, config["optimizer"])
        optimizer = _optimizer(model)
        _check_optimizer_state(optimizer_state, optimizer)
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        state.rng_ranks = _restore_rng(tensors, config, rank)
    except ValueError as error:
        if str(error).startswith(path):
            raise
        raise ValueError(f"{path}: invalid checkpoint ({error})") from None
    except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as error:
        # a key or value that a checkpoint written by `save` always has; RuntimeError: torch refusing a tensor
        raise ValueError(f"{path}: incomplete checkpoint ({type(error).__name__}: {error})") from None
    device = model.device
    state.totals = None if state.totals is None else state.totals.to(device)
    state.order = None if state.order is None else state.order.to(device)
    return state


def _callback_tensors(entries: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Each callback's arrays as tensors under "callbacks/<index>/<name>"."""
    return {f"callbacks/{index}/{name}": torch.from_numpy(np.ascontiguousarray(array))
            for index, entry in enumerate(entries) for name, array in entry["arrays"].items()}


def _callback_entries(tensors: dict[str, torch.Tensor], saved: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The callbacks' state as `save` wrote it (checkpoints written before callbacks had state have none)."""
    entries: list[dict[str, Any]] = [{"class": str(entry["class"]), "values": dict(entry["values"]), "arrays": {}}
                                     for entry in saved]
    for key, value in tensors.items():
        if key.startswith("callbacks/"):
            _, index, name = key.split("/", 2)
            entries[int(index)]["arrays"][name] = value.numpy()
    return entries


def verify(folder: str) -> None:
    """Check `folder/last.ckpt` is an intact checkpoint (digests, format) without loading it into a model:
    `convnet train --resume` calls this before spending time on the data. ValueError naming the file if not."""
    read(folder)


def read(folder: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`folder/last.ckpt`, checked (digests, format): (tensors, JSON configuration), for `load`. ValueError naming
    the file for damage (and pointing at `best.ckpt` when there is one)."""
    path = os.path.join(folder, LAST)
    try:
        return decode(path, "checkpoint")
    except ValueError as error:
        if os.path.isfile(os.path.join(folder, BEST)):
            raise ValueError(f"{error}; {BEST} in the same folder may be intact: copy it over {LAST} to resume from "
                             f"the best epoch") from None
        raise


def _check_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """What torch's load_state_dict does not check and a step would trip on: each parameter's state holds
    the same entries, and its tensors (moments) have the parameter's shape. TypeError/ValueError otherwise."""
    params = [param for group in optimizer.param_groups for param in group["params"]]
    kinds = {frozenset(entry) for entry in state["state"].values()}
    if len(kinds) > 1:
        raise ValueError(f"the optimizer state differs between parameters ({sorted(sorted(k) for k in kinds)})")
    for index, entry in state["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(f"optimizer state for parameter {index}, but the model has {len(params)}")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                raise ValueError(f"optimizer state {index}/{name} has shape {tuple(value.shape)}, its parameter "
                                 f"{tuple(params[index].shape)}")


def _count(value: Any) -> int:
    """A step or epoch count from the checkpoint's JSON: a non-negative int, else TypeError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"expected a count, found {value!r}")
    return value


def exists(folder: str | None) -> bool:
    return folder is not None and os.path.isfile(os.path.join(folder, LAST))


def estimated_size(model: Sequential) -> int:
    """Bytes a checkpoint of `model` takes: the weights plus the optimizer's state, measured when it exists
    (three moments for Adam with amsgrad, or RMSprop centered with momentum), else three moments; with a margin."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    optimizer = model.optimizer_
    state = [value for entry in (optimizer.state.values() if optimizer is not None else ())
             for value in entry.values() if isinstance(value, torch.Tensor)]
    moments = sum(t.numel() * t.element_size() for t in state) if state else 3 * weights
    return weights + moments + 1_000_000


def check_room(folder: str, model: Sequential) -> None:
    """Fail now, not after an hour, when `folder` cannot take a checkpoint (twice: temporary + old file)."""
    probe_folder(folder, "checkpoint folder")
    remove_stale_temporaries(folder)
    needed = 2 * estimated_size(model)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ValueError(f"the checkpoint folder {folder!r} has {free / 2**20:.1f} MiB free; a checkpoint of this "
                         f"model needs about {needed / 2**20:.1f} MiB (temporary file included)")


def remove_stale_temporaries(folder: str) -> None:
    """Delete the temporary files that a process killed while writing a checkpoint leaves behind
    (`.last.ckpt.*.tmp`); each is as large as a checkpoint and would otherwise stay forever."""
    for name in os.listdir(folder):
        if name.startswith((f".{LAST}.", f".{BEST}.")) and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass
