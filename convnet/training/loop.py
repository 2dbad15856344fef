"""The loops behind `Sequential.fit`, `evaluate` and `predict` (how each step executes is `engine.py`).

In-memory arrays are moved to the model's device once. Each step gathers a shuffled batch there, runs
the engine's training step and adds the batch's loss and metric sums to one small accumulator tensor on
the device. The host reads the accumulator only when the progress display is due, when a callback asks
for batch logs, and at the end of each epoch: no host sync per step on a GPU. TerminateOnNaN's check
keeps it that way: each step's "loss not finite" flag travels to pinned host memory behind the step and
is read once the next step is launched (`_NanWatch`).

Keras 3's rules (keras/src/trainers/, backend/torch/trainer.py, callbacks/) kept here: the schedule is read
at the optimizer's iteration count, which goes on across fits; sample and class weights weigh the loss and
the weighted metrics (`engine.Scores`); `validation_freq`; one partial batch when `batch_size` exceeds the
data; the logs every callback gets, History's keys and evaluate's dict are sorted; BackupAndRestore is a
checkpoint folder resumed from automatically.

When a process group of several processes is initialised (`convnet.distributed`), `fit` trains data-parallel
with no change to the caller's code: every rank runs this loop on the same arrays, takes its slice of each
global batch, and the engine's all-reduce makes the ranks' steps one step. The ranks agree at every step on
whether to stop (Ctrl-C on any of them) and whether a timed checkpoint is due (rank 0's clock), so they stop
and save at the same step; rank 0 reads and writes the checkpoint files and prints; callbacks that write files
(ModelCheckpoint, CSVLogger) run on rank 0 only.
A FolderDataset trains data-parallel too: its order is a function of (seed, epoch), rank 0's seed is every
rank's, and each rank reads (decodes, when streaming) only its slice of each global batch; an iterable of other
batches is refused, since nothing could check that every rank's iterable gives the same batches.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar, cast

import numpy as np
import torch

from convnet import distributed, optimizers
from convnet._internal.checks import check_bool, check_float, check_int, describe
from convnet.augment import apply_variant, tta_variants
from convnet.callbacks import BackupAndRestore, Callback, CSVLogger, History, ModelCheckpoint, TerminateOnNaN
from convnet.datasets.local.folder import FolderDataset
from convnet.datasets.local.placement import CachedBatches, Placement, choose_device, free_memory
from convnet.losses import check_from_logits, from_probabilities, to_probabilities
from convnet.optimizers import set_rate
from convnet.training import checkpoint
from convnet.training.engine import Engine, Part, Scores, batch_loss, batch_sums, loss_sum
from convnet.training.inputs import (
    BatchSource,
    as_inputs,
    as_sample_weights,
    as_targets,
    check_steps,
    class_sample_weights,
    is_batches,
    split_batch,
    split_validation,
)
from convnet.training.progress import Progbar, resolve_verbose

if TYPE_CHECKING:
    from convnet.models.sequential import Sequential

T = TypeVar("T")


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
    """Turns the first SIGINT into a flag checked between steps; a second one interrupts at once. `quiet`: say
    nothing (the ranks > 0 of a data-parallel fit, which torchrun interrupts with rank 0)."""

    def __init__(self, quiet: bool = False) -> None:
        self.raised, self.quiet = False, quiet
        self._previous: Any = None

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True
        if self.quiet:
            return
        print("\nInterrupted: finishing the current step and saving a checkpoint (Ctrl-C again to abort).",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class FlagCopy(Protocol):
    """A device flag on its way to the host."""

    def ready(self) -> bool:
        """Whether reading it now costs no wait for the device."""

    def read(self) -> bool:
        """The flag's value (waits for the device when not `ready`)."""


class HostFlags:
    """Flags of a CPU (or any device where a read costs nothing worth hiding): read at once."""

    def copy(self, flag: torch.Tensor) -> FlagCopy:
        return _ReadyFlag(bool(flag))


class _ReadyFlag:
    def __init__(self, value: bool):
        self.value = value

    def ready(self) -> bool:
        return True

    def read(self) -> bool:
        return self.value


class CudaFlags:
    """Flags of a GPU: each is copied into pinned host memory behind the step that computed it
    (non_blocking) and a CUDA event is recorded after the copy; the event says when the value has landed,
    and asking it (`query`) never waits. Two buffers take turns: a flag is read before the next but one
    is copied."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers = [torch.zeros((), dtype=torch.bool, pin_memory=True) for _ in range(2)]
        self.turn = 0

    def copy(self, flag: torch.Tensor) -> FlagCopy:
        buffer = self.buffers[self.turn]
        self.turn ^= 1
        buffer.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return _CudaFlag(buffer, event)


class _CudaFlag:
    def __init__(self, buffer: torch.Tensor, event: Any):
        self.buffer, self.event = buffer, event

    def ready(self) -> bool:
        return bool(self.event.query())

    def read(self) -> bool:
        self.event.synchronize()  # waits for the step that made the flag, not for the steps queued after it
        return bool(self.buffer)


def flag_reader(device: torch.device) -> HostFlags | CudaFlags:
    """How `TerminateOnNaN`'s flags reach the host on `device` (tests replace it to delay the reads)."""
    return CudaFlags(device) if device.type == "cuda" else HostFlags()


class _NanWatch:
    """Finds the first step whose loss is not finite, for `TerminateOnNaN`, without a host sync per step.

    Each step's flag (loss not finite) starts its way to the host when the step has been launched
    (`record`). A flag is read as soon as it is there without waiting, and at the latest once the next
    step has been launched: then reading it waits for its own step only, while the next one runs. So on a
    CPU (flags are there at once), or when the GPU is ahead of the host, training stops right after the bad
    step k, as Keras's does; otherwise it stops after step k + 1, whose update has then been made too.
    Either way `trigger` names step k, and `flush` (called before any checkpoint is written and at the end
    of each epoch) reads every flag in flight, so that no checkpoint is written after a bad step.
    `wait_for_next` (the ranks of a data-parallel fit on GPUs) never reads a flag early, so that every rank
    stops after the same step whatever its GPU's pace.
    """

    def __init__(self, guard: TerminateOnNaN, flags: HostFlags | CudaFlags, wait_for_next: bool = False):
        self.guard, self.flags, self.wait_for_next = guard, flags, wait_for_next
        self.pending: deque[tuple[int, int, FlagCopy]] = deque()

    def record(self, epoch: int, step: int, sums: torch.Tensor) -> None:
        self.pending.append((epoch, step, self.flags.copy(~torch.isfinite(sums[0]))))
        while self.pending and (len(self.pending) > 1 or (not self.wait_for_next and self.pending[0][2].ready())):
            self._read_oldest()

    def flush(self) -> None:
        while self.pending:
            self._read_oldest()

    def _read_oldest(self) -> None:
        epoch, step, flag = self.pending.popleft()
        if flag.read() and self.guard.stopped_at is None:
            self.pending.clear()
            self.guard.trigger(epoch, step)  # may raise (raise_error=True): nothing after it runs


def _check_validation_freq(validation_freq: Any) -> int | frozenset[int]:
    """Keras's `validation_freq`: validate every n epochs (an int), or after the listed epochs (1-based)."""
    if isinstance(validation_freq, (list, tuple, set, frozenset, range)):
        epochs = list(validation_freq)
        if not all(isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in epochs):
            raise ValueError(f"`validation_freq` must be a positive int or a list of epochs (1-based positive ints). "
                             f"Received: validation_freq={validation_freq!r}")
        return frozenset(epochs)
    if isinstance(validation_freq, bool) or not isinstance(validation_freq, int) or validation_freq < 1:
        raise ValueError(f"`validation_freq` must be a positive int or a list of epochs (1-based). Received: "
                         f"validation_freq={validation_freq!r}")
    return validation_freq


def _sorted(logs: Mapping[str, Any]) -> dict[str, Any]:
    """The logs with their keys sorted, as Keras 3 gives every callback (`pythonify_logs` sorts them), so
    History holds "accuracy, loss, val_accuracy, val_loss" and the progress line shows them in that order."""
    return dict(sorted(logs.items()))


class Trainer:
    """One call of `fit`: the loop over epochs and steps, with its state, callbacks and checkpoints.

    The learning-rate schedule is read at the optimizer's iteration count, as Keras reads it at
    `optimizer.iterations`: the count is read from the optimizer once, when the fit starts (it persists
    across fits; compile() builds a new optimizer, which starts again at 0), then counted in Python.

    With `ranks` (data-parallel training), `batch_size` is the global batch and this rank trains on its slice
    (`distributed.shard`); the epoch's sums are the global batch's on every rank (the engine's all-reduce).
    """

    def __init__(self, model: Sequential, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, epochs: int,
                 shuffle: bool, callbacks: list[Callback], verbose: int,
                 validation: Validation | None, initial_epoch: int, checkpoint_dir: str | None,
                 checkpoint_interval: float, resume: bool, sample_weight: torch.Tensor | None = None,
                 validation_freq: int | frozenset[int] = 1, save_every: int | None = None,
                 ranks: distributed.Collective | None = None, source: BatchSource | None = None,
                 requested_verbose: int | str | None = None):
        self.model, self.x, self.y, self.sample_weight = model, x, y, sample_weight
        self.requested_verbose = verbose if requested_verbose is None else requested_verbose  # fit's argument
        self.source = source  # the batches of a FolderDataset or an iterable (x and y are then empty)
        self.batch_size, self.epochs, self.shuffle, self.verbose = batch_size, epochs, shuffle, verbose
        self.validation, self.validation_freq = validation, validation_freq
        self.ranks = ranks
        self.rank, self.world = (0, 1) if ranks is None else (ranks.rank, ranks.world)
        self.count = x.shape[0]
        # steps per epoch; None: an iterable of unknown length, run until exhausted
        self.steps: int | None = math.ceil(self.count / batch_size) if source is None else source.steps
        self.steps_seen: int | None = None  # with `steps` None: the first epoch's steps, the later epochs' target
        slice_ = distributed.shard(batch_size, self.world, self.rank)
        self.local_batch = slice_.stop - slice_.start  # this rank's slice of a full batch
        if self.rank > 0:  # rank 0 writes the files (ModelCheckpoint's, CSVLogger's) for every rank
            callbacks = [c for c in callbacks if not isinstance(c, (ModelCheckpoint, CSVLogger))]
        self.history = History()
        self.user_callbacks = callbacks  # their state goes into checkpoints (History's is the state's history)
        self.callbacks = [*callbacks, self.history]  # History last, as Keras, so it records what callbacks add
        self.batch_hooks = [c for c in self.callbacks if c.uses_batch_hooks()]
        nan_guard = next((c for c in callbacks if isinstance(c, TerminateOnNaN)), None)
        self.nan_watch = None if nan_guard is None else _NanWatch(
            nan_guard, flag_reader(model.device), wait_for_next=ranks is not None and model.device.type == "cuda")
        self.scores = Scores(model)
        self.names = self.scores.names
        self.engine: Engine = model.engine
        self.engine.verbose = verbose  # a CUDA-graph fallback is said once at verbose >= 1
        self.schedule = model.optimizer.schedule if model.optimizer is not None else None
        if self.schedule is not None and self.steps is not None:
            self.schedule.bind(epochs * self.steps)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_interval = checkpoint_interval
        self.save_every = save_every  # BackupAndRestore(save_freq=n): a checkpoint every n steps
        self.state = checkpoint.TrainingState(epoch=initial_epoch, global_step=0)
        self.resumed = False
        if ranks is not None and source is not None and source.dataset is not None:
            # a seed drawn by each process (none was given) would give each rank another order: rank 0's decides
            source.dataset.seed = ranks.broadcast_object(source.dataset.seed)
        self.cached: CachedBatches | None = None  # a cached dataset's batches, gathered by torch (placement.py)
        self.placement: Placement | None = None
        if source is not None and source.dataset is not None and source.dataset.cached:
            self.cached, self.placement = _cached_batches(model, source.dataset)
        if checkpoint_dir is not None:
            settings = {"batch_size": batch_size, "shuffle": shuffle,
                        "validation_samples": 0 if validation is None else _validation_size(validation)}
            self.state.fingerprint = (checkpoint.data_fingerprint(x, y, settings) if source is None
                                      else {**source.fingerprint(), "validation_samples": settings["validation_samples"]})
            if sample_weight is not None:  # a weighted run (sample or class weights) resumes with the same weights
                self.state.fingerprint["sample_weight_sha256"] = checkpoint.tensor_digest(sample_weight)
            self.state.fingerprint["cpu_threads"] = torch.get_num_threads()
            if self.world > 1:
                self.state.fingerprint["world_size"] = self.world
        if ranks is not None:
            ranks.check_same("fit settings and data", {
                "batch_size": batch_size, "epochs": epochs, "shuffle": shuffle, "initial_epoch": initial_epoch,
                "x shape": tuple(x.shape), "y shape": tuple(y.shape), "checkpoints": checkpoint_dir is not None,
                "validation": (None if validation is None else validation.fingerprint()
                               if isinstance(validation, BatchSource) else tuple(validation[0].shape)),
                "data": self.state.fingerprint.get("data_sha256"),
                "dataset": None if source is None else source.fingerprint()})
        if checkpoint_dir is not None:
            folder = checkpoint_dir

            def prepare() -> bool:  # rank 0's files only: the others may have no such folder (another machine)
                checkpoint.check_room(folder, model)
                return checkpoint.exists(folder)
            if self._on_rank0(prepare) and resume:
                self._resume()
        assert model.optimizer_ is not None, "fit checks the model has an optimizer"
        self.state.global_step = optimizers.iterations(model.optimizer_)  # Keras's optimizer.iterations

    @property
    def totals(self) -> torch.Tensor:
        """The epoch's sums (`Scores`' layout; set by `_begin_epoch`, or by the checkpoint of a resumed epoch)."""
        assert self.state.totals is not None, "no epoch in progress"
        return self.state.totals

    def _on_rank0(self, work: Callable[[], T]) -> T:
        """`work()` on rank 0 only (file reads and writes), its result or error on every rank."""
        return work() if self.ranks is None else self.ranks.on_rank0(work)

    def _resume(self) -> None:
        """Load the checkpoint: rank 0 reads the file and checks it, then hands it to the other ranks."""
        if self.ranks is None:
            self._load(None)
            return
        payload = self.ranks.on_rank0(lambda: self._load(None))
        if self.rank > 0:
            self._load(payload)

    def _load(self, payload: Any) -> Any:
        """Load the checkpoint (`payload`: as `checkpoint.read` gave it; None: read it); returns the payload."""
        assert self.checkpoint_dir is not None
        fingerprint = self.state.fingerprint
        payload = checkpoint.read(self.checkpoint_dir) if payload is None else payload
        self.state = checkpoint.load(self.checkpoint_dir, self.model, rank=self.rank, payload=payload)
        self.resumed = True
        source = self.source
        if source is not None and source.dataset is not None and "dataset" in self.state.fingerprint:
            # the run's seed (drawn when none was given) decides the order of the rest of the epoch
            source.dataset.load_state_dict(self.state.fingerprint["dataset"], strict=True)
            fingerprint["dataset"] = source.dataset.state_dict()
        if source is not None and not source.resumable and self.state.step > 0:
            raise ValueError(f"cannot resume from {self.checkpoint_dir}: its checkpoint is at step {self.state.step} "
                             f"of epoch {self.state.epoch + 1}, and an iterable of batches ({describe(source.data)}) "
                             f"cannot be rewound to it; resume from a checkpoint written at the end of an epoch, or "
                             f"train on a FolderDataset or arrays, which resume at any step")
        changed = [key for key in {*fingerprint, *self.state.fingerprint}
                   if self.state.fingerprint.get(key) != fingerprint.get(key)]
        if "cpu_threads" in changed:  # summation order in the conv weight gradient depends on it
            changed.remove("cpu_threads")
            if self.rank == 0:
                warnings.warn(f"resuming with {fingerprint['cpu_threads']} CPU threads where the run had "
                              f"{self.state.fingerprint.get('cpu_threads')}: the result can differ from an "
                              f"uninterrupted run in the last bits (about 1e-7)", stacklevel=5)
        if "world_size" in changed:  # the same samples in the same order: only the sums' rounding and draws differ
            changed.remove("world_size")
            if self.rank == 0:
                warnings.warn(f"resuming with {self.world} process(es) where the run had "
                              f"{self.state.fingerprint.get('world_size', 1)}: each global batch holds the same "
                              f"samples, but the gradient sums round differently and the ranks' dropout and "
                              f"augmentation draw other numbers, so the result differs from an uninterrupted run "
                              f"(in the last bits without dropout or augmentation)", stacklevel=5)
        if changed:
            raise ValueError(f"cannot resume from {self.checkpoint_dir}: the {', '.join(sorted(changed))} differ "
                             f"from the run that wrote the checkpoint (use the same data and settings, or another "
                             f"folder)")
        if self.state.totals is not None and self.state.totals.shape[0] != self.scores.size:
            raise ValueError(f"cannot resume from {self.checkpoint_dir}: the checkpoint's epoch holds "
                             f"{self.state.totals.shape[0]} running sums, this fit logs {self.scores.size} "
                             f"(compile with the same metrics)")
        self.history.history = self.state.history
        self.history.epoch = self.state.epochs_done
        if self.verbose:
            where = f"epoch {self.state.epoch + 1}, step {self.state.step}"
            print(f"Resuming from {os.path.join(self.checkpoint_dir, checkpoint.LAST)} at {where}", flush=True)
        return payload

    def _restore_callbacks(self) -> None:
        """Give each callback the state the checkpoint kept for it (after `on_train_begin`, which resets it).
        Callbacks are matched by class and rank among those of their class, so that adding or removing
        another callback on resume (a CSVLogger, say) leaves the others' state in place."""
        saved = {key: entry for key, entry in zip(_callback_keys(entry["class"] for entry in self.state.callbacks),
                                                  self.state.callbacks)}
        for callback, key in zip(self.user_callbacks, _callback_keys(type(c).__name__ for c in self.user_callbacks)):
            if key in saved:
                callback.set_state(saved[key]["values"], saved[key]["arrays"])

    def _save(self, best: bool = False) -> str | None:
        """A checkpoint of the state now, unless there is no folder or a step since the last one had a
        non-finite loss (TerminateOnNaN's flags in flight are read first)."""
        if self.checkpoint_dir is None:
            return None
        if self.nan_watch is not None:
            self.nan_watch.flush()
            if self.nan_watch.guard.stopped_at is not None:
                return None
        self.state.history = self.history.history
        self.state.epochs_done = self.history.epoch
        self.state.callbacks = []
        for callback in self.user_callbacks:
            values, arrays = callback.get_state()
            self.state.callbacks.append({"class": type(callback).__name__, "values": values, "arrays": arrays})
        if self.ranks is None:
            return checkpoint.save(self.checkpoint_dir, self.model, self.state, best=best)
        folder, generators = self.checkpoint_dir, self.ranks.gather_objects(checkpoint.process_rng())
        # rank 0 writes (atomically); the others wait for it, and learn whether it worked
        return self.ranks.on_rank0(lambda: checkpoint.save(folder, self.model, self.state, best=best, rng=generators))

    def params(self, initial_epoch: int) -> dict[str, Any]:
        """What every callback gets as `params`: Keras 3's keys and values ("verbose" as fit was given it, "auto"
        included; "epochs"; "steps" per epoch, None for an iterable of unknown length), and convnet's
        "initial_epoch" and "resumed", from which CSVLogger learns which rows a resumed fit rewrites."""
        return {"verbose": self.requested_verbose, "epochs": self.epochs, "steps": self.steps,
                "initial_epoch": initial_epoch, "resumed": self.resumed}

    def run(self) -> History:
        model, state = self.model, self.state
        for callback in self.callbacks:
            callback.set_model(model)
            callback.set_params(self.params(state.epoch))
        model.stop_training = False
        model.history = self.history
        for callback in self.callbacks:
            callback.on_train_begin()
        if self.resumed:
            self._restore_callbacks()
        if self.ranks is not None:
            self._start_ranks()
        try:
            with _InterruptFlag(quiet=self.rank > 0) as interrupt:
                while state.epoch < self.epochs and not model.stop_training:
                    self._epoch(interrupt)
        finally:
            model.eval()
            self.engine.set_reducer(None)
        for callback in self.callbacks:
            callback.on_train_end()
        return self.history

    def _start_ranks(self) -> None:
        """Make the ranks one: a fresh fit takes rank 0's weights and buffers (as DistributedDataParallel does), and
        the ranks > 0 get generators of their own (a resume at the run's world size restored theirs); the engine
        sums every step over the ranks."""
        ranks = self.ranks
        assert ranks is not None
        if not self.resumed:
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                copy = ranks.broadcast_(tensor.detach().contiguous())  # a channels_last kernel is sent as NCHW
                with torch.no_grad():
                    tensor.copy_(copy)
        if not self.resumed or self.state.rng_ranks != self.world:
            ranks.decorrelate_generators()
        self.engine.set_reducer(distributed.GradientReducer(ranks, self.model, self.scores.size))

    def _epoch(self, interrupt: _InterruptFlag) -> None:
        epoch = self.state.epoch
        self._begin_epoch(epoch)
        progbar = Progbar(self.steps if self.steps is not None else self.steps_seen, self.verbose)
        self._steps(epoch, progbar, interrupt)
        if self.source is not None and self.source.ran_out:  # the epoch got no batch: nothing to log, training ends
            self.model.stop_training = True
            return
        logs = self._epoch_logs(epoch)
        if self.steps is None and self.steps_seen is None:  # Keras's ProgbarLogger: later epochs show this count
            self.steps_seen = self.state.step
        progbar.finish(logs, step=self.state.step)
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)
        self._end_epoch(epoch, logs)

    def _begin_epoch(self, epoch: int) -> None:
        """Epoch-begin hooks, the "Epoch k/n" line, and a fresh order and sums (a resumed epoch keeps its own)."""
        state, device = self.state, self.model.device
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch)
        if self.verbose:
            print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        if state.step == 0:
            state.order = self._order(device) if self.shuffle and self.source is None else None
            state.totals = torch.zeros(self.scores.size, dtype=torch.float64, device=device)
            state.seen = 0

    def _order(self, device: torch.device) -> torch.Tensor:
        """The epoch's shuffling order: drawn from rank 0's generator, as one process draws it, and sent to the
        other ranks (which draw nothing for it)."""
        if self.ranks is None:
            return torch.randperm(self.count, device=device)
        if self.rank == 0:
            return self.ranks.broadcast_(torch.randperm(self.count, device=device))
        return self.ranks.broadcast_(torch.empty(self.count, dtype=torch.int64, device=device))

    def _steps(self, epoch: int, progbar: Progbar, interrupt: _InterruptFlag) -> None:
        """The epoch's remaining steps; stops early on Ctrl-C (raises) or when a callback stops training."""
        state, nan_watch = self.state, self.nan_watch
        last_save = time.monotonic()
        self.model.train()
        for step, batch in self._positions(epoch):
            for callback in self.batch_hooks:
                callback.on_train_batch_begin(step, {})
            reducer = self.engine.reducer
            if reducer is not None and reducer.with_control:  # the flags travel with this step's all-reduce
                reducer.control = (interrupt.raised, self.rank == 0 and self._time_due(last_save))
            sums = self._train_step(step) if batch is None else self._batch_step(step, batch)
            if nan_watch is not None and sums is not None:
                nan_watch.record(epoch, step, sums)
            if self.batch_hooks:
                logs = LazyLogs(_sorted(dict(zip(self.names, self.scores.mean_tensor(self.totals, state.seen)))))
                for callback in self.batch_hooks:
                    callback.on_train_batch_end(step, logs)
            if progbar.due():
                progbar.update(step + 1, _sorted(self.scores.means(self.totals, state.seen)))
            interrupted, time_due = self._agreed(interrupt, last_save)
            if interrupted:
                self._interrupted(epoch, step, progbar)
            if (self.steps is None or step + 1 < self.steps) and not self.model.stop_training and (
                    time_due or self._every_due()):
                last_save = self._save_periodically(last_save)  # reads the NaN flags in flight: may stop
            if self.model.stop_training:
                break
        if nan_watch is not None:
            nan_watch.flush()

    def _positions(self, epoch: int) -> Iterator[tuple[int, Any]]:
        """(step, batch) for the epoch's remaining steps; the batch is None for arrays (`_train_step` gathers it)."""
        if self.source is None:
            yield from ((step, None) for step in range(self.state.step, cast(int, self.steps)))
            return
        # the cache, gathered where it lives; or, with ranks, the dataset itself, this rank reading its slice of
        # each global batch only (a rank's slice of the cache's batches too)
        part = self._part()
        reader = self.cached if self.cached is not None else self.source.dataset if part is not None else None
        if reader is not None:
            batches = reader.iter_from(epoch, self.state.step, part)
            yield from zip(range(self.state.step, cast(int, self.steps)), batches)
            return
        yield from enumerate(self.source.epoch(epoch, self.state.step), start=self.state.step)

    def _part(self) -> Callable[[int], slice] | None:
        """With ranks, this rank's slice of a batch of a given size (`distributed.shard`); None alone."""
        if self.ranks is None:
            return None
        world, rank = self.world, self.rank
        return lambda size: distributed.shard(size, world, rank)

    def _batch_step(self, step: int, batch: Any) -> torch.Tensor | None:
        """One optimizer step on a batch of the source; an empty batch (its files failed after the scan) keeps its
        place in the epoch but trains nothing (None)."""
        state = self.state
        x_b, y_b = split_batch(batch)
        if self.ranks is not None:
            return self._rank_batch_step(step, x_b, y_b)
        if len(x_b) == 0:
            state.step = step + 1
            return None
        xb, yb = self._on_device(x_b, y_b)
        if self.schedule is not None:
            set_rate(cast(torch.optim.Optimizer, self.model.optimizer_), self.schedule(state.global_step))
        sums = self.engine.train_step(xb, yb, full_batch=self.batch_size)
        self.totals.add_(sums)
        state.seen += xb.shape[0]
        state.step, state.global_step = step + 1, state.global_step + 1
        return sums

    def _on_device(self, x_b: Any, y_b: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as tensors on the model's device: checked (`as_inputs`, `as_targets`) and copied; a batch of the
        cache is there already, or copied as it is (its labels were checked once, by `_cached_batches`)."""
        device = self.model.device
        if self.cached is not None:
            return x_b.to(device, non_blocking=True), y_b.to(device, non_blocking=True)
        xb = as_inputs(self.model, x_b, "x (a batch)").to(device, non_blocking=True)
        return xb, as_targets(self.model, y_b, xb.shape[0], "y (a batch)").to(device, non_blocking=True)

    def _rank_batch_step(self, step: int, x_b: Any, y_b: Any) -> torch.Tensor | None:
        """This rank's part of step `step` on a FolderDataset: its slice of the global batch (what `_positions`
        read), its share of the loss (`engine.Part`). The global batch's size is known from the epoch's order
        when the pixels are cached; a streamed batch may have lost files that failed after the scan, on any rank,
        so the ranks add up what they kept (one all-reduce of a number on the CPU group). A global batch left
        empty is skipped by every rank; a rank whose slice is empty takes part in the step."""
        state, dataset = self.state, cast(BatchSource, self.source).dataset
        assert self.ranks is not None and dataset is not None, "data-parallel batches come from a FolderDataset"
        kept = len(x_b)
        count = min(self.batch_size, dataset.num_samples - step * self.batch_size)  # the global batch's samples
        if not dataset.cached:
            count = self.ranks.total(kept)
        if count == 0:
            state.step = step + 1
            return None
        if self.schedule is not None:
            set_rate(cast(torch.optim.Optimizer, self.model.optimizer_), self.schedule(state.global_step))
        if kept == 0:
            sums = self.engine.idle_step(self.scores.size)
        else:
            xb, yb = self._on_device(x_b, y_b)
            sums = self.engine.train_step(xb, yb, full_batch=self.local_batch, part=Part(count, kept / count))
        self.totals.add_(sums)
        state.seen += count
        state.step, state.global_step = step + 1, state.global_step + 1
        return sums

    def _time_due(self, last_save: float) -> bool:
        """`checkpoint_interval` seconds have passed since the last checkpoint (by this process's clock)."""
        return time.monotonic() - last_save >= self.checkpoint_interval

    def _every_due(self) -> bool:
        """BackupAndRestore's save_freq: the run's step count is a multiple of `save_every`."""
        position = self.state.epoch * (self.steps or 0) + self.state.step  # steps of this run, resumes included
        return self.save_every is not None and position % self.save_every == 0

    def _agreed(self, interrupt: _InterruptFlag, last_save: float) -> tuple[bool, bool]:
        """(stop: Ctrl-C was pressed, a timed checkpoint is due), the same on every rank: interrupted on any rank,
        due by rank 0's clock. They came with the step's all-reduce on a CPU; on a GPU they are agreed on the
        CPU group, which does not wait for the device."""
        if self.ranks is None:
            return interrupt.raised, self._time_due(last_save)
        reducer = self.engine.reducer
        if reducer is not None and reducer.with_control:
            return reducer.agreed
        interrupted, due = self.ranks.any(interrupt.raised, self.rank == 0 and self._time_due(last_save))
        return interrupted, due

    def _train_step(self, step: int) -> torch.Tensor:
        """One optimizer step on batch `step` of the epoch's order; adds its sums to the epoch's totals."""
        state = self.state
        start = step * self.batch_size
        index = (slice(start, start + self.batch_size) if state.order is None
                 else state.order[start:start + self.batch_size])
        count = min(self.batch_size, self.count - start)  # samples in this (global) batch
        if self.schedule is not None:  # Keras: the schedule at optimizer.iterations, the steps taken so far
            set_rate(cast(torch.optim.Optimizer, self.model.optimizer_), self.schedule(state.global_step))
        weights = None if self.sample_weight is None else self.sample_weight[index]
        if self.ranks is None:
            sums = self.engine.train_step(self.x[index], self.y[index], full_batch=self.batch_size,
                                          sample_weight=weights)
        else:
            sums = self._rank_step(index, count, weights)
        self.totals.add_(sums)
        state.seen += count
        state.step, state.global_step = step + 1, state.global_step + 1
        return sums

    def _rank_step(self, index: slice | torch.Tensor, count: int, weights: torch.Tensor | None) -> torch.Tensor:
        """This rank's part of the step on the global batch `index` of `count` samples: its slice, its share of the
        loss (`engine.Part`); a rank whose slice is empty still takes part. Returns the global batch's sums."""
        mine = distributed.shard(count, self.world, self.rank)
        if mine.start == mine.stop:
            return self.engine.idle_step(self.scores.size)
        part = Part(count, (mine.stop - mine.start) / count, None if weights is None else weights.sum())
        if isinstance(index, slice):
            assert index.start is not None
            local: slice | torch.Tensor = slice(index.start + mine.start, index.start + mine.stop)
        else:
            local = index[mine]
        return self.engine.train_step(self.x[local], self.y[local], full_batch=self.local_batch,
                                      sample_weight=None if weights is None else weights[mine], part=part)

    def _interrupted(self, epoch: int, step: int, progbar: Progbar) -> NoReturn:
        """After Ctrl-C: a checkpoint (unless the weights diverged), then `TrainingInterrupted`."""
        state = self.state
        saved = self._save() if bool(torch.isfinite(self.totals).all()) else None
        progbar.finish(_sorted(self.scores.means(self.totals, state.seen)), step=step + 1)
        reason = ("no checkpoint folder was given" if self.checkpoint_dir is None else
                  "no checkpoint written: the weights are no longer finite (the last one is kept)")
        raise TrainingInterrupted(epoch, step + 1, saved, reason)

    def _save_periodically(self, last_save: float) -> float:
        """A mid-epoch checkpoint of finite sums after steps of finite losses (TerminateOnNaN's flags in
        flight are read first, and may stop training); when it was written."""
        if self.checkpoint_dir is None:
            return last_save
        if self.nan_watch is not None:
            self.nan_watch.flush()
        if self.model.stop_training or not bool(torch.isfinite(self.totals).all()):
            return last_save
        self._save()
        return time.monotonic()

    def _validates(self, epoch: int) -> bool:
        """Keras's `_should_eval`: validation after epoch `epoch` (0-based) under `validation_freq`."""
        if isinstance(self.validation_freq, int):
            return (epoch + 1) % self.validation_freq == 0
        return epoch + 1 in self.validation_freq

    def _epoch_logs(self, epoch: int) -> dict[str, float]:
        """The epoch's means, and the validation scores as "val_<name>" (when `validation_freq` says so),
        the keys sorted as Keras gives them to callbacks."""
        logs = self.scores.means(self.totals, self.state.seen)
        if self.validation is not None and self._validates(epoch):
            if isinstance(self.validation, BatchSource):
                val = _evaluate_batches(self.model, self._validation_batches(self.validation), ranks=self.ranks)
            else:
                x_val, y_val, w_val = self.validation
                val = _evaluate_tensors(self.model, x_val, y_val, max(self.batch_size, 256), sample_weight=w_val,
                                        ranks=self.ranks)
            logs.update({f"val_{name}": value for name, value in val.items()})
            self.model.train()
        return _sorted(logs)

    def _validation_batches(self, source: BatchSource) -> Iterable[Any]:
        """The validation batches this process scores: all of them, or with ranks its slice of each (a dataset's
        epoch-0 order, its first `validation_steps` batches)."""
        if self.ranks is None or source.dataset is None:
            return source.epoch(0)
        steps = source.steps or len(source.dataset)
        mine = source.dataset.iter_from(0, 0, part=self._part())
        return (batch for _, batch in zip(range(steps), mine))

    def _end_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """Move on to the next epoch and write its checkpoint (`best.ckpt` too when the monitored value,
        val_loss with validation data, else loss, is the best so far); diverged logs are never checkpointed."""
        state = self.state
        state.epoch, state.step, state.order, state.totals, state.seen = epoch + 1, 0, None, None, 0
        if all(math.isfinite(value) for value in logs.values()):
            monitor = logs.get("val_loss" if self.validation is not None else "loss")
            best = monitor is not None and (state.best is None or monitor < state.best)
            if best:
                state.best = monitor
            self._save(best=best)


Validation = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"] | BatchSource  # x, y, weights; or batches


def _cached_batches(model: Sequential, dataset: FolderDataset) -> tuple[CachedBatches, Placement]:
    """A cached dataset's pixels (uint8, or float32 when resampled) and labels (checked once, as `as_targets`
    makes them) as tensors where `choose_device` says: on the model's GPU when they fit its memory_budget and half
    the GPU's free memory (copied once), else on the host (the NumPy cache itself, no copy)."""
    x, y = dataset.as_arrays()
    assert y is not None and dataset.batch_size is not None, "fit checks the dataset's labels and batches"
    x_t = torch.from_numpy(x)  # (N, H, W, C): shares the cache's memory
    y_t = as_targets(model, y, len(y), "y (the dataset's labels)")
    device = model.device
    placement = choose_device(x_t.nbytes + y_t.nbytes, device, dataset.memory_budget, free_memory(device))
    batches = CachedBatches(x_t.to(placement.device), y_t.to(placement.device), dataset.epoch_order,
                            dataset.batch_size)
    return batches, placement


def _validation_size(validation: Validation) -> int:
    """Validation samples (arrays), or batches per pass (-1: unknown), for the checkpoint's fingerprint."""
    if isinstance(validation, BatchSource):
        return -1 if validation.length is None else validation.length
    return int(validation[0].shape[0])


def fit(model: Sequential, x: Any, y: Any = None, batch_size: int | None = None, epochs: int = 1,
        verbose: int | str = "auto", callbacks: Sequence[Callback] | None = None, validation_split: float = 0.0,
        validation_data: tuple[Any, ...] | None = None, shuffle: bool = True, class_weight: Any = None,
        sample_weight: Any = None, initial_epoch: int = 0, validation_freq: Any = 1,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
        checkpoint_interval: float = 600.0, steps_per_epoch: int | None = None,
        validation_steps: int | None = None) -> History:
    """Keras's `fit` on in-memory arrays, a FolderDataset or an iterable of (x, y) batches (see `Sequential.fit`).

    Keras 3's rules kept here: `sample_weight` (one weight per sample) or `class_weight` ({class index:
    weight}, never both) weigh each sample's loss, the batch loss being sum(w * loss) / batch size, and the
    "weighted_metrics" (the compiled `metrics` are not weighted); `validation_split` takes its share of the
    weights too, and `validation_data` may be (x_val, y_val, val_sample_weight); `validation_freq` is an int
    (every n epochs) or a list of epochs (1-based); a `batch_size` larger than the data trains on one partial
    batch per epoch; schedules continue across fits; the logs and History's keys are sorted.
    A `BackupAndRestore` among the callbacks makes its `backup_dir` the checkpoint folder, resumed from when
    it holds a checkpoint and deleted after a fit that ends without an error (with `delete_checkpoint`).
    Under an initialised process group of several processes, every process calls `fit` with the same arguments
    and it trains data-parallel (`convnet.distributed`): `batch_size` is the global batch, which must divide
    into equal slices; only rank 0 prints.
    """
    require_compiled(model, "fit")
    if is_batches(x):
        _check_batches_arguments("fit", x, y, batch_size, sample_weight=sample_weight, class_weight=class_weight,
                                 validation_split=validation_split)
        if distributed.is_distributed() and not isinstance(x, FolderDataset):
            raise ValueError(f"fit: data-parallel training (a process group of {distributed.world_size()} processes) "
                             f"takes in-memory arrays or a FolderDataset, whose order every rank knows, so that "
                             f"each reads only its slice of every batch; an iterable of batches "
                             f"({describe(x)}) cannot be split across the ranks (give every rank the folder, "
                             f"convnet.datasets.image_dataset_from_directory, or the same arrays)")
    elif steps_per_epoch is not None:
        raise ValueError(f"`steps_per_epoch` is for a FolderDataset or an iterable of batches; with arrays an epoch "
                         f"is one pass over x in batches of `batch_size`. Received: steps_per_epoch={steps_per_epoch}")
    steps_per_epoch = check_steps("steps_per_epoch", steps_per_epoch)
    validation_steps = check_steps("validation_steps", validation_steps)
    batch_size = 32 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    global_batch = x.batch_size if isinstance(x, FolderDataset) and x.batch_size is not None else batch_size
    ranks = _collective(model, global_batch) if distributed.is_distributed() else None
    epochs = check_int("epochs", epochs, minimum=1)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0, maximum=epochs - 1)
    requested_verbose = verbose  # as given ("auto" included): what Keras 3 puts in the callbacks' params
    verbose = resolve_verbose(verbose)
    if ranks is not None and ranks.rank > 0:
        verbose = 0  # rank 0 alone prints
    validation_split = check_float("validation_split", validation_split, minimum=0.0, maximum=1.0,
                                   include_max=False)
    shuffle = check_bool("shuffle", shuffle)
    resume = check_bool("resume", resume)
    checkpoint_interval = check_float("checkpoint_interval", checkpoint_interval, minimum=0.0)
    validation_freq = _check_validation_freq(validation_freq)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"`checkpoint_dir` must be a folder path. Received: checkpoint_dir={describe(checkpoint_dir)}")
    callbacks = _check_callbacks(callbacks)
    backup = _backup(callbacks)
    if backup is not None:
        folder = backup.backup_dir
        if checkpoint_dir is not None and os.path.abspath(os.fspath(checkpoint_dir)) != os.path.abspath(folder):
            raise ValueError(f"`checkpoint_dir` ({os.fspath(checkpoint_dir)!r}) differs from the BackupAndRestore "
                             f"callback's `backup_dir` ({folder!r}); give one folder (or only the callback)")
        checkpoint_dir, resume = folder, True  # Keras's BackupAndRestore restores whenever a backup is there
    if resume and checkpoint_dir is None:
        raise ValueError("`resume=True` needs `checkpoint_dir`: the folder the interrupted fit wrote its checkpoints to")
    if class_weight is not None and sample_weight is not None:
        raise ValueError("`class_weight` and `sample_weight` cannot be given together (Keras refuses it too); fold "
                         "the class weights into `sample_weight`")
    if is_batches(x):
        source = BatchSource(x, steps_per_epoch, "x")
        _build_for(model, source, "fit")
        if model.optimizer_ is None:
            raise ValueError("fit: the model has no trainable weights")
        validation_given = None if validation_data is None else _validation_of(model, validation_data,
                                                                                validation_steps)
        _check_rank_validation(validation_given, ranks)
        empty = torch.empty(0)
        trainer = Trainer(model, empty, empty, batch_size=source.batch_size or 0, epochs=epochs, shuffle=shuffle,
                          callbacks=callbacks, verbose=verbose, validation=validation_given,
                          initial_epoch=initial_epoch,
                          checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
                          checkpoint_interval=checkpoint_interval, resume=resume, validation_freq=validation_freq,
                          save_every=None if backup is None or backup.save_freq == "epoch" else int(backup.save_freq),
                          ranks=ranks, source=source, requested_verbose=requested_verbose)
        return _finish_fit(trainer, backup, None)
    x_t = as_inputs(model, x)
    if not model.built:
        model.build(tuple(x_t.shape[1:]))
    if model.optimizer_ is None:
        raise ValueError("fit: the model has no trainable weights")
    y_t = as_targets(model, y, x_t.shape[0])
    model.resolve_metrics(tuple(y_t.shape))  # "accuracy" from the shapes, as Keras 3
    w_t = None if sample_weight is None else as_sample_weights(sample_weight, x_t.shape[0])
    validation: Validation | None = None
    if validation_data is not None:
        validation = _validation_of(model, validation_data, validation_steps)
    elif validation_split:
        (x_t, y_t, w_t), (x_val, y_val, w_val) = split_validation(validation_split, x_t, y_t, w_t)
        validation = (x_val, y_val, w_val)
    if class_weight is not None:  # after the split, as Keras: validation is not class-weighted
        w_t = class_sample_weights(class_weight, y_t)
    # Keras runs one partial batch when batch_size exceeds the data: that batch is all of it, so it is the
    # fit's full batch size too (a CUDA graph may serve it: every step has that size)
    batch_size = min(batch_size, x_t.shape[0])
    device = model.device
    _check_rank_validation(validation, ranks)
    if validation is not None and not isinstance(validation, BatchSource):
        validation = (validation[0].to(device), validation[1].to(device),
                      None if validation[2] is None else validation[2].to(device))
    trainer = Trainer(model, x_t.to(device), y_t.to(device), batch_size=batch_size, epochs=epochs, shuffle=shuffle,
                      callbacks=callbacks, verbose=verbose, validation=validation, initial_epoch=initial_epoch,
                      checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
                      checkpoint_interval=checkpoint_interval, resume=resume,
                      sample_weight=None if w_t is None else w_t.to(device), validation_freq=validation_freq,
                      save_every=None if backup is None or backup.save_freq == "epoch" else int(backup.save_freq),
                      ranks=ranks, requested_verbose=requested_verbose)
    return _finish_fit(trainer, backup, ranks)


def _check_rank_validation(validation: Validation | None, ranks: distributed.Collective | None) -> None:
    """Data-parallel validation splits every batch across the ranks: arrays or a FolderDataset, not an iterable."""
    if ranks is not None and isinstance(validation, BatchSource) and validation.dataset is None:
        raise ValueError(f"fit: data-parallel training validates on arrays or a FolderDataset (each rank scores its "
                         f"slice of every batch); `validation_data` as an iterable of batches "
                         f"({describe(validation.data)}) cannot be split across the ranks")


def _finish_fit(trainer: Trainer, backup: BackupAndRestore | None, ranks: distributed.Collective | None) -> History:
    """Run the fit; then delete BackupAndRestore's folder, as Keras does once fit completes."""
    history = trainer.run()
    if (backup is not None and backup.delete_checkpoint and (ranks is None or ranks.rank == 0)
            and os.path.isdir(backup.backup_dir)):
        shutil.rmtree(backup.backup_dir)  # Keras deletes the backup once fit completes (not after an error)
    return history


def _check_batches_arguments(what: str, x: Any, y: Any, batch_size: Any, **unsupported: Any) -> None:
    """Keras 3's refusals for data given as batches: no `y` (the batches hold it), no `batch_size` (the data's own),
    and none of the arguments that take one value per sample."""
    kind = "a FolderDataset" if isinstance(x, FolderDataset) else "an iterable of batches"
    if y is not None:
        raise ValueError(f"{what}: `y` must be None when `x` is {kind}: the labels come from its batches. "
                         f"Received: y={describe(y)}")
    if batch_size is not None:
        raise ValueError(f"{what}: `batch_size` must be None when `x` is {kind}, which is batched already"
                         + (f" (batch_size={x.batch_size}: set it in image_dataset_from_directory)"
                            if isinstance(x, FolderDataset) else "") + f". Received: batch_size={batch_size!r}")
    for name, value in unsupported.items():
        if value is not None and value is not False and not (isinstance(value, float) and value == 0.0):
            raise ValueError(f"{what}: `{name}` takes arrays; with {kind}, it is not supported. "
                             f"Received: {name}={describe(value)}")


def _build_for(model: Sequential, source: BatchSource, what: str, needs_labels: bool = True) -> None:
    """Build the model for the batches' shape, and resolve "accuracy" from the labels' (as for arrays)."""
    x_shape, y_shape = source.shapes()
    if not model.built:
        model.build(tuple(x_shape[1:]))
    if not needs_labels:
        return
    if y_shape is None:
        raise ValueError(f"{what}: the batches of `{source.argument}` hold no labels (a FolderDataset made with "
                         f"labels=None, or batches of x alone); {what} needs (x, y) batches")
    model.resolve_metrics(y_shape)


def _validation_of(model: Sequential, validation_data: Any, validation_steps: int | None) -> Validation:
    """`validation_data` as (x_val, y_val, weights or None) tensors on the model's device, or as batches."""
    if is_batches(validation_data):
        source = BatchSource(validation_data, validation_steps, "validation_data")
        _, y_shape = source.shapes()
        if y_shape is None:
            raise ValueError("fit: the batches of `validation_data` hold no labels; validation needs (x, y) batches")
        return source
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError(f"`validation_data` must be a tuple (x_val, y_val) or (x_val, y_val, val_sample_weight), a "
                         f"FolderDataset or an iterable of (x, y) batches. Received: {describe(validation_data)}")
    x_val = as_inputs(model, validation_data[0], "validation_data[0]")
    y_val = as_targets(model, validation_data[1], x_val.shape[0], "validation_data[1]")
    w_val = validation_data[2] if len(validation_data) == 3 else None
    device = model.device
    return (x_val.to(device), y_val.to(device),
            None if w_val is None else as_sample_weights(w_val, x_val.shape[0], "validation_data[2]").to(device))


def _collective(model: Sequential, batch_size: int) -> distributed.Collective:
    """The process group's communication for a data-parallel fit, after checking that the batch splits into equal
    slices and that each rank trains on its own GPU."""
    distributed.check_batch_size(batch_size, distributed.world_size())
    device = model.device
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        raise ValueError(f"rank {distributed.rank()} trains on {device}, but its GPU is cuda:"
                         f"{torch.cuda.current_device()} (LOCAL_RANK): compile with device='cuda' or 'auto', which "
                         f"mean this rank's GPU after convnet.distributed.init()")
    return distributed.Collective(device)


def _backup(callbacks: list[Callback]) -> BackupAndRestore | None:
    """The BackupAndRestore among `callbacks`, if any (ValueError for two: one folder per fit)."""
    backups = [c for c in callbacks if isinstance(c, BackupAndRestore)]
    if len(backups) > 1:
        raise ValueError(f"`callbacks` holds {len(backups)} BackupAndRestore callbacks; a fit backs up to one folder")
    return backups[0] if backups else None


def require_compiled(model: Sequential, what: str) -> None:
    """ValueError unless `model` is compiled; Keras's warning when its loss takes logits from a softmax."""
    if not model.compiled:
        raise ValueError(f"{what}: the model must be compiled first, e.g. model.compile(loss="
                         f"'sparse_categorical_crossentropy', optimizer='nadam', metrics=['accuracy'])")
    if model.loss is not None:
        check_from_logits(model.loss, model.output_activation)


def _callback_keys(classes: Iterable[str]) -> list[tuple[str, int]]:
    """(class name, rank among the callbacks of that class) for each callback in order."""
    seen: dict[str, int] = {}
    keys = []
    for name in classes:
        keys.append((name, seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def _check_callbacks(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    if not isinstance(callbacks, (list, tuple)) or not all(isinstance(c, Callback) for c in callbacks):
        raise TypeError(f"`callbacks` must be a list of convnet.callbacks.Callback objects. Received: "
                        f"callbacks={describe(callbacks)}")
    return list(callbacks)


def outputs_logits(model: Sequential) -> bool:
    """Whether the model's outputs are logits: no final softmax/sigmoid, and a loss that takes logits."""
    return model.output_activation is None and model.loss is not None and model.loss.from_logits


def tta_outputs(model: Sequential, x: torch.Tensor, variants: list[str]) -> torch.Tensor:
    """The model's outputs for batch `x`, averaged over the test-time-augmentation `variants`.

    Probabilities are averaged, never logits: a model that outputs logits (`outputs_logits`) has each
    variant's logits turned into probabilities (softmax, or sigmoid for a binary cross-entropy), averaged,
    and turned back into logits (log p; log p - log(1 - p) for sigmoid), so that the loss and the metrics
    see the same kind of values as without TTA, and the loss of the averaged prediction is -log(mean p).
    """
    engine, loss = model.engine, model.loss
    if len(variants) == 1:
        return engine.predict_batch(apply_variant(x, variants[0]))
    outputs = [engine.predict_batch(apply_variant(x, variant)) for variant in variants]
    if loss is None or not outputs_logits(model):
        return torch.stack(outputs).mean(dim=0)
    mean = torch.stack([to_probabilities(loss, logits) for logits in outputs]).mean(dim=0)
    return from_probabilities(loss, mean)


def _score_batch(model: Sequential, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor | None, part: Any,
                 variants: list[str]) -> torch.Tensor:
    """One batch's [loss, metric...] sums: the engine's, or with test-time augmentation the averaged outputs
    (of the model's own kind, see tta_outputs) scored as the loss takes them."""
    if len(variants) == 1:
        return model.engine.eval_batch(xb, yb, wb, part)
    loss = model.loss
    assert loss is not None, "evaluate needs a compiled model"
    outputs = tta_outputs(model, xb, variants)
    _, reported = batch_loss(model, loss_sum(loss, yb, outputs, None, wb), xb.shape[0], wb, part)
    return batch_sums(model, reported, yb, outputs, None, wb)


@torch.no_grad()
def _evaluate_tensors(model: Sequential, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                      progbar: Progbar | None = None, tta: Any = None, sample_weight: torch.Tensor | None = None,
                      ranks: distributed.Collective | None = None) -> dict[str, float]:
    """Loss and metrics over (x, y) by name, in compile's order ("loss" first), weighted as `Scores` says.
    With `ranks`, each rank scores its slice of every batch and the sums are added up over the ranks: every
    sample counts once."""
    model.eval()
    assert model.loss is not None, "evaluate needs a compiled model"
    scores = Scores(model)
    totals = torch.zeros(scores.size, dtype=torch.float64, device=model.device)
    variants = tta_variants(tta)
    seen = 0  # samples scored by this process
    for step, index in enumerate(_batch_slices(x.shape[0], batch_size)):
        xb, yb = x[index], y[index]
        wb = None if sample_weight is None else sample_weight[index]
        part = None
        if ranks is not None:
            mine = distributed.shard(xb.shape[0], ranks.world, ranks.rank)
            part = Part(xb.shape[0], (mine.stop - mine.start) / xb.shape[0], None if wb is None else wb.sum())
            xb, yb, wb = xb[mine], yb[mine], None if wb is None else wb[mine]
            if xb.shape[0] == 0:
                continue
        totals += _score_batch(model, xb, yb, wb, part, variants)
        seen += xb.shape[0]
        if progbar is not None and progbar.due():
            progbar.update(step + 1, scores.means(totals, seen))  # this process's share, until the end
    if ranks is not None:
        ranks.sum_(totals)
    return scores.means(totals, x.shape[0])


@torch.no_grad()
def _evaluate_batches(model: Sequential, batches: Iterable[Any], progbar: Progbar | None = None, tta: Any = None,
                      argument: str = "validation_data",
                      ranks: distributed.Collective | None = None) -> dict[str, float]:
    """`_evaluate_tensors` over batches given one by one ((x, y) as a FolderDataset or an iterable yields them);
    empty batches (files that failed after the scan) are skipped. With `ranks`, `batches` are this rank's slices
    and the sums and counts are added up over the ranks: every sample counts once."""
    model.eval()
    assert model.loss is not None, "evaluate needs a compiled model"
    scores = Scores(model)
    totals = torch.zeros(scores.size, dtype=torch.float64, device=model.device)
    variants = tta_variants(tta)
    seen = steps = 0
    for step, batch in enumerate(batches):
        steps = step + 1
        x_b, y_b = split_batch(batch, argument)
        if len(x_b) == 0:
            continue
        xb = as_inputs(model, x_b, f"{argument} (a batch)").to(model.device, non_blocking=True)
        yb = as_targets(model, y_b, xb.shape[0], f"{argument} (a batch's y)").to(model.device, non_blocking=True)
        totals += _score_batch(model, xb, yb, None, None, variants)
        seen += xb.shape[0]
        if progbar is not None and progbar.due():
            progbar.update(step + 1, scores.means(totals, seen))
    if progbar is not None:
        progbar.learn_target(steps)
    if ranks is not None:
        ranks.sum_(totals)
        seen = ranks.total(seen)
    if seen == 0:
        raise ValueError(f"`{argument}` gave no sample to score (a generator is exhausted after one pass: give a new "
                         f"one, or a re-iterable such as a DataLoader or a FolderDataset)")
    return scores.means(totals, seen)


def evaluate(model: Sequential, x: Any, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
             return_dict: bool = False, tta: Any = None, sample_weight: Any = None,
             across_ranks: bool = False, steps: int | None = None) -> float | list[float] | dict[str, float]:
    """Keras's `evaluate` (see `Sequential.evaluate`); `sample_weight` weighs the loss and the weighted
    metrics as in `fit`. As Keras 3's: the dict (`return_dict=True`) has sorted keys, the list holds the
    loss, then the metrics in compile's order.

    `across_ranks`: under a process group of several processes, split the work (each rank scores its slice of
    every batch, the sums are added up over the ranks): every rank must then call it, with the same arrays.
    Without it each process scores all of (x, y) by itself, so rank 0 alone may call it.

    `x` may be a FolderDataset or an iterable of (x, y) batches (`y` and `batch_size` None): one pass over it,
    or its first `steps` batches (Keras 3's `steps`); a FolderDataset is read in its epoch-0 order.
    """
    require_compiled(model, "evaluate")
    steps = check_steps("steps", steps)
    if is_batches(x):
        _check_batches_arguments("evaluate", x, y, batch_size, sample_weight=sample_weight,
                                 across_ranks=across_ranks)
        verbose = resolve_verbose(verbose)
        tta_variants(tta)
        source = BatchSource(x, steps, "x")
        _build_for(model, source, "evaluate")
        progbar = Progbar(source.steps, verbose)
        results = _evaluate_batches(model, source.epoch(0), progbar, tta, "x")
        return _evaluate_results(results, progbar, return_dict)
    if steps is not None:
        raise ValueError(f"`steps` is for a FolderDataset or an iterable of batches; with arrays, evaluate scores "
                         f"all of x. Received: steps={steps}")
    batch_size = 32 if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    across_ranks = check_bool("across_ranks", across_ranks)
    ranks = distributed.Collective(model.device) if across_ranks and distributed.is_distributed() else None
    verbose = resolve_verbose(verbose)
    if ranks is not None and ranks.rank > 0:
        verbose = 0  # rank 0 alone prints
    x_t = as_inputs(model, x)
    if not model.built:
        model.build(tuple(x_t.shape[1:]))
    y_t = as_targets(model, y, x_t.shape[0])
    model.resolve_metrics(tuple(y_t.shape))  # "accuracy" from the shapes, as Keras 3
    w_t = None if sample_weight is None else as_sample_weights(sample_weight, x_t.shape[0])
    device = model.device
    progbar = Progbar(math.ceil(x_t.shape[0] / batch_size), verbose)
    tta_variants(tta)  # checks the argument before any work
    results = _evaluate_tensors(model, x_t.to(device), y_t.to(device), batch_size, progbar, tta,
                                None if w_t is None else w_t.to(device), ranks)
    return _evaluate_results(results, progbar, return_dict)


def _evaluate_results(results: dict[str, float], progbar: Progbar,
                      return_dict: bool) -> float | list[float] | dict[str, float]:
    progbar.finish(_sorted(results))
    if return_dict:  # Keras 3 returns `pythonify_logs(logs)`: sorted keys; the list keeps compile's order
        return _sorted(results)
    values = list(results.values())
    return values[0] if len(values) == 1 else values


@torch.no_grad()
def predict(model: Sequential, x: Any, batch_size: int | None = None, verbose: int | str = "auto",
            tta: Any = None, steps: int | None = None) -> np.ndarray:
    """Keras's `predict` (see `Model.predict`). `x` may be a FolderDataset or an iterable of batches (x, (x, y)
    or (x,); `batch_size` None): one pass over it, or its first `steps` batches; a FolderDataset in its epoch-0
    order (its `file_paths` order when it does not shuffle)."""
    steps = check_steps("steps", steps)
    if is_batches(x):
        _check_batches_arguments("predict", x, None, batch_size)
        return _predict_batches(model, BatchSource(x, steps, "x"), resolve_verbose(verbose), tta)
    if steps is not None:
        raise ValueError(f"`steps` is for a FolderDataset or an iterable of batches; with arrays, predict runs on "
                         f"all of x. Received: steps={steps}")
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
    outputs = []
    for step, index in enumerate(_batch_slices(x_t.shape[0], batch_size)):
        xb = x_t[index].to(device, non_blocking=True)
        outputs.append(tta_outputs(model, xb, variants).cpu())
        if progbar.due():
            progbar.update(step + 1, {})
    progbar.finish({})
    return torch.cat(outputs).numpy()


@torch.no_grad()
def _predict_batches(model: Sequential, source: BatchSource, verbose: int, tta: Any) -> np.ndarray:
    """`predict` over the batches of `source`; empty batches give no rows."""
    variants = tta_variants(tta)
    _build_for(model, source, "predict", needs_labels=False)
    model.eval()
    progbar = Progbar(source.steps, verbose)
    outputs = []
    step = -1
    for step, batch in enumerate(source.epoch(0)):
        x_b, _ = split_batch(batch, "x")
        if len(x_b) == 0:
            continue
        xb = as_inputs(model, x_b, "x (a batch)").to(model.device, non_blocking=True)
        outputs.append(tta_outputs(model, xb, variants).cpu())
        if progbar.due():
            progbar.update(step + 1, {})
    progbar.learn_target(step + 1)
    progbar.finish({})
    if not outputs:
        raise ValueError("predict: `x` gave no sample (an exhausted generator, or every file failed)")
    return torch.cat(outputs).numpy()
