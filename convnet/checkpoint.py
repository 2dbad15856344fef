"""Training checkpoints: everything needed to continue a `fit` exactly where it stopped.

A checkpoint holds the model's weights, the optimizer's state, the epoch and step, the current epoch's
shuffling order and metric sums, every random generator's state, the history so far and a fingerprint
of the training data. It is a safetensors file (tensors, plus JSON in the header; no pickle), written
atomically: temporary file, fsync, rename. A run folder keeps two: `last.ckpt` (the newest) and
`best.ckpt` (the best epoch by the monitored value, `val_loss` when there is validation data).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .saving import atomic_write, decode, encode

if TYPE_CHECKING:
    from .models import Sequential

LAST = "last.ckpt"
BEST = "best.ckpt"


@dataclass
class TrainingState:
    """Where a fit stands: what a checkpoint records besides weights and optimizer state."""

    epoch: int = 0                        # the epoch in progress (0-based)
    step: int = 0                         # steps finished in that epoch
    global_step: int = 0                  # steps finished since the start of training
    seen: int = 0                         # samples seen in the epoch (for the running means)
    totals: torch.Tensor | None = None    # the epoch's [loss, metric...] sums, float64
    order: torch.Tensor | None = None     # the epoch's shuffling order, None without shuffling
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_done: list[int] = field(default_factory=list)
    best: float | None = None             # best monitored value so far
    fingerprint: dict[str, Any] = field(default_factory=dict)


def data_fingerprint(x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any]) -> dict[str, Any]:
    """Shapes, a SHA-256 of the training arrays and the fit settings that must not change on resume."""
    digest = hashlib.sha256()
    for tensor in (x, y):
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"data_sha256": digest.hexdigest(), **settings}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/torch_cuda/{index}"] = state
    tensors["rng/numpy_keys"] = torch.from_numpy(np.random.get_state()[1].astype(np.int64))
    return tensors


def _rng_json() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"numpy": [kind, int(position), int(has_gauss), float(cached)],
            "python": [version, list(state), gauss]}


def _restore_rng(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch_cpu"])
    cuda = sorted(key for key in tensors if key.startswith("rng/torch_cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[key] for key in cuda])
    kind, position, has_gauss, cached = config["rng"]["numpy"]
    np.random.set_state((kind, tensors["rng/numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached))
    version, state, gauss = config["rng"]["python"]
    random.setstate((version, tuple(state), gauss))


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state dict split into tensors and JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu()
            else:
                scalars[f"{index}/{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


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


def save(folder: str, model: Sequential, state: TrainingState, best: bool = False) -> str:
    """Write `last.ckpt` in `folder` atomically (and `best.ckpt` too when `best`); returns the path."""
    tensors = {f"model/{key}": value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    optimizer_tensors, optimizer_json = _optimizer_parts(model.optimizer_)
    tensors.update(optimizer_tensors)
    tensors.update(_rng_tensors())
    if state.totals is not None:
        tensors["state/totals"] = state.totals.detach().cpu()
    if state.order is not None:
        tensors["state/order"] = state.order.detach().cpu()
    config = {"model": model.get_config(), "optimizer": optimizer_json, "rng": _rng_json(),
              "state": {"epoch": state.epoch, "step": state.step, "global_step": state.global_step,
                        "seen": state.seen, "history": state.history, "epochs_done": state.epochs_done,
                        "best": state.best, "fingerprint": state.fingerprint}}
    data = encode(tensors, "checkpoint", config)
    path = os.path.join(folder, LAST)
    atomic_write(path, data)
    if best:
        atomic_write(os.path.join(folder, BEST), data)
    return path


def load(folder: str, model: Sequential) -> TrainingState:
    """Restore weights, optimizer state and random generators from `folder/last.ckpt`; returns the state.

    Raises:
        FileNotFoundError: no checkpoint in `folder`.
        ValueError: a damaged file (named), or a checkpoint of another architecture.
    """
    path = os.path.join(folder, LAST)
    tensors, config = decode(path, "checkpoint")
    try:
        if config["model"] != model.get_config():
            raise ValueError(f"{path}: the checkpoint is of another architecture than the model being trained")
        weights = {key[len("model/"):]: value for key, value in tensors.items() if key.startswith("model/")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: the checkpoint's weights do not match the model (missing {missing}, "
                             f"unexpected {unexpected})")
        model.optimizer_.load_state_dict(_optimizer_state(tensors, config["optimizer"]))
        _restore_rng(tensors, config)
        saved = config["state"]
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"{path}: incomplete checkpoint ({type(error).__name__}: {error})") from None
    device = model.device
    return TrainingState(epoch=saved["epoch"], step=saved["step"], global_step=saved["global_step"],
                         seen=saved["seen"], history=saved["history"], epochs_done=saved["epochs_done"],
                         best=saved["best"], fingerprint=saved["fingerprint"],
                         totals=tensors["state/totals"].to(device) if "state/totals" in tensors else None,
                         order=tensors["state/order"].to(device) if "state/order" in tensors else None)


def exists(folder: str | None) -> bool:
    return folder is not None and os.path.isfile(os.path.join(folder, LAST))


def estimated_size(model: Sequential) -> int:
    """Bytes a checkpoint of `model` takes: weights plus up to two optimizer moments, with a margin."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 3 * weights + 1_000_000


def check_room(folder: str, model: Sequential) -> None:
    """Fail now, not after an hour, when `folder` cannot take a checkpoint (twice: temporary + old file)."""
    os.makedirs(folder, exist_ok=True)
    needed = 2 * estimated_size(model)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ValueError(f"the checkpoint folder {folder!r} has {free / 2**20:.1f} MiB free; a checkpoint of this "
                         f"model needs about {needed / 2**20:.1f} MiB (temporary file included)")
    probe = os.path.join(folder, ".write-test")
    try:
        with open(probe, "wb") as stream:
            stream.write(b"ok")
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"the checkpoint folder {folder!r} is not writable: {error.strerror or error}") from None
