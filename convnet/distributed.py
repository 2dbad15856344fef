"""Data-parallel training across processes: torchrun starts them, `fit` splits every batch across them.

    torchrun --nproc-per-node 2 -m convnet train --batch-size 256      # or: convnet train --nproc-per-node 2 ...

From Python, a script run by torchrun calls `convnet.distributed.init()` once (or initialises a process group
itself) and then calls `fit` exactly as in one process:

    >>> import convnet.distributed as distributed
    >>> distributed.init()              # False: not started by torchrun, so this stays one process
    False
    >>> distributed.rank(), distributed.world_size()
    (0, 1)
    >>> distributed.shard(10, parts=3, index=0), distributed.shard(10, parts=3, index=2)
    (slice(0, 4, None), slice(7, 10, None))

What `fit` does with N processes (ranks), all holding the same arrays:
- `batch_size` is the global batch. The shuffling order is drawn on rank 0 from its generator, as one process
  draws it, and broadcast; rank r takes slice `shard(b, N, r)` of each global batch of b samples (b / N for
  a full batch; the last, partial batch is split as evenly as it goes, and a rank whose slice is empty
  still takes part in the step). So the global batch at step t holds exactly the samples a one-process run
  with the same seed uses at step t.
- Each rank scales its loss by its share of the global batch, so that the gradients summed over ranks (one
  `all_reduce`, `GradientReducer`) are the gradient of the global batch's mean loss; the regularization
  penalty is counted once. Every rank then takes the same optimizer step: the weights stay identical, and
  without dropout or augmentation they equal a one-process run's within float rounding.
- Dropout and augmentation: each rank draws from its own generator. Rank 0 continues the seeded stream;
  at the start of a fit each rank r > 0 is reseeded from a digest of rank 0's generator state and r, so the
  ranks' masks are independent of each other, and a run is repeatable for a given seed and world size (a
  checkpoint keeps every rank's generators). The global batch's random draws are not a one-process run's.
  A layer given its own `seed` has a generator per layer, seeded alike on every rank: its draws repeat
  across ranks.
- BatchNormalization normalises over each rank's slice, and its moving statistics are rank 0's (as
  DistributedDataParallel's `broadcast_buffers`).
- Validation sums every rank's batch sums (`all_reduce`): each sample counts once, no padding.
- Rank 0 reads and writes every file (checkpoints, the run folder); the others wait for it.
- A FolderDataset (every rank lists the same folder): the epoch's order is a function of the seed, rank 0's, so
  rank r reads only `shard(b, N, r)` of each global batch's files; when streamed files fail after the scan, the
  ranks add up what they kept (one small all-reduce a step) to weigh the step. Validation on a FolderDataset is
  split the same way. Other iterables of batches are refused.

Why an all-reduce in the engine rather than wrapping the model in DistributedDataParallel: the engine runs
`model.logits` (the loss fused with the final softmax), not `forward`, which is what DDP hooks; a rank with
an empty slice of the last batch must take part without a forward pass (an empty batch is not something
every layer accepts, and BatchNorm would learn NaN from it), where DDP needs a forward and a backward on
every rank; the gradient must be the global mean over uneven slices, where DDP averages over ranks; one
flat buffer in a fixed order copies channels_last gradients explicitly (DDP's bucket views warn and copy
when the strides differ) and is one more kernel inside the engine's CUDA-graph capture (DDP needs
`static_graph` and warm-up steps for that). What DDP has and this has not is overlapping the all-reduce
with the backward pass.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["init", "finish", "is_distributed", "rank", "world_size", "local_rank", "backend", "launched", "shard",
           "check_batch_size", "broadcast_object", "on_rank0", "Collective", "GradientReducer", "DEFAULT_TIMEOUT",
           "TIMEOUT_VARIABLE"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait for the other ranks before it fails (torch's: 30 min)
TIMEOUT_VARIABLE = "CONVNET_DIST_TIMEOUT"  # the same, for processes started by the command line
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by torchrun (its environment names a rank and a world)."""
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def init(backend: str | None = None, device: Any = "auto", timeout: float | None = None) -> bool:
    """Join the process group that torchrun describes in the environment; returns whether this process is one
    of several. Without torchrun's environment this does nothing and returns False, so one script runs both
    ways. Calling it again is harmless.

    Args:
        backend: "gloo" or "nccl"; by default nccl when `device` resolves to CUDA, else gloo.
        device: where this process will train ("auto", "cpu", "cuda"): on CUDA, rank r of a node uses GPU
            `LOCAL_RANK`, made the current device here, so that "cuda" and "auto" mean that GPU.
        timeout: seconds a collective waits for the other ranks before failing (default:
            $CONVNET_DIST_TIMEOUT, else 300), so that a rank that stopped answering ends the others.

    Raises:
        ValueError: an unknown backend, a bad timeout, more local ranks than GPUs, or nccl without CUDA.
    """
    if dist.is_available() and dist.is_initialized():
        return world_size() > 1
    if not launched():
        return False
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; install one that has it to train on "
                         "several processes")
    seconds = _timeout(timeout)
    from convnet.utils import resolve_device
    on_cuda = resolve_device(device).type == "cuda"
    if backend is None:
        backend = "nccl" if on_cuda else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"`backend` must be 'gloo' (CPU) or 'nccl' (CUDA). Received: backend={backend!r}")
    if backend == "nccl" and not on_cuda:
        raise ValueError(f"backend='nccl' needs CUDA; this process trains on {device!r} (use 'gloo' on a CPU)")
    if on_cuda:
        local, count = local_rank(), torch.cuda.device_count()
        if local >= count:
            raise ValueError(f"local rank {local} has no GPU of its own: this machine has {count}; start at most "
                             f"{count} processes per node (--nproc-per-node)")
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    return world_size() > 1


def _timeout(timeout: float | None) -> float:
    if timeout is None:
        text = os.environ.get(TIMEOUT_VARIABLE)
        if text is None:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"${TIMEOUT_VARIABLE} must be a number of seconds. Received: {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"`timeout` must be a positive number of seconds. Received: timeout={timeout!r}")
    return float(timeout)


def finish() -> None:
    """Leave the process group, if this process joined one (the end of a `convnet train` process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised (then `fit` trains data-parallel)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes, 1 without a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK), 0 without torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def backend() -> str | None:
    """The process group's backend ("gloo", "nccl"), None without one."""
    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


def shard(count: int, parts: int, index: int) -> slice:
    """Part `index` of `parts` contiguous, near-equal parts of `count` items: each has count // parts items, and the
    first count % parts have one more. So equal parts when `parts` divides `count`, and part 0 is empty only when
    `count` is 0.

        >>> [shard(5, 3, i) for i in range(3)]
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
        >>> shard(1, 3, 2)      # fewer items than parts: the last parts are empty
        slice(1, 1, None)
    """
    if parts < 1 or not 0 <= index < parts or count < 0:
        raise ValueError(f"shard: need count >= 0 and 0 <= index < parts. Received: count={count}, parts={parts}, "
                         f"index={index}")
    size, extra = divmod(count, parts)
    start = index * size + min(index, extra)
    return slice(start, start + size + (index < extra))


def check_batch_size(batch_size: int, processes: int) -> None:
    """ValueError unless a global batch of `batch_size` splits into `processes` equal slices of at least one
    sample each (the last, partial batch of an epoch is split as evenly as it goes).

        >>> check_batch_size(256, 4)
        >>> check_batch_size(100, 3)
        Traceback (most recent call last):
        ...
        ValueError: `batch_size` (=100) must be divisible by the number of processes (=3): each process takes an \
equal slice of every batch. Use a batch size of 99 or 102
    """
    if processes > batch_size:
        raise ValueError(f"`batch_size` (={batch_size}) cannot be split across {processes} processes: each takes "
                         f"batch_size / processes samples of every batch, so use a batch size of at least "
                         f"{processes} (or fewer processes)")
    if batch_size % processes:
        below, above = batch_size - batch_size % processes, batch_size + processes - batch_size % processes
        raise ValueError(f"`batch_size` (={batch_size}) must be divisible by the number of processes (={processes}): "
                         f"each process takes an equal slice of every batch. Use a batch size of {below} or {above}")


def broadcast_object(value: Any, group: Any = None) -> Any:
    """Rank 0's `value` (a picklable object) on every rank; `value` itself in one process."""
    if not is_distributed():
        return value
    box = [value if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def on_rank0(work: Callable[[], T], group: Any = None) -> T:
    """`work()` run on rank 0 only, its result on every rank (in one process: `work()`). When it raises, every
    rank raises that error; on the other ranks it carries `raised_on_rank0 = True` (the command line prints
    it once, on rank 0). The other ranks wait here for rank 0: the barrier after rank 0 writes a file."""
    if not is_distributed():
        return work()
    outcome: tuple[str, Any] | None = None
    if rank() == 0:
        try:
            outcome = ("ok", work())
        except Exception as error:  # every rank must learn of it, else the others wait for rank 0 forever
            broadcast_object(("error", _portable(error)), group)
            raise
    kind, value = broadcast_object(outcome, group)
    if kind == "error":
        value.raised_on_rank0 = True
        raise value
    return value


class Collective:
    """The communication of one data-parallel fit: tensors on the model's device go through the default process
    group (gloo, or nccl on CUDA); flags and Python objects go through a gloo group on the CPU (the default
    group itself under gloo), so that reading them never waits for a GPU."""

    _control_group: tuple[Any, Any] = (None, None)  # (the default group, its CPU group for flags and objects)

    def __init__(self, device: torch.device):
        if not is_distributed():
            raise ValueError("Collective: no process group of several processes; call convnet.distributed.init() "
                             "in a process started by torchrun")
        self.rank, self.world, self.device = rank(), world_size(), device
        self.backend = backend()
        world, control = Collective._control_group
        if world is not dist.group.WORLD:  # every rank reaches this in the same fit: new_group is collective
            control = None if self.backend == "gloo" else dist.new_group(backend="gloo")
            Collective._control_group = (dist.group.WORLD, control)
        self.control = control

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place (it is on the model's device)."""
        dist.all_reduce(tensor)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's `tensor` on every rank, in place."""
        dist.broadcast(tensor, src=0)
        return tensor

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag: whether it is set on any rank (a small all-reduce on the CPU group)."""
        values = torch.tensor([float(flag) for flag in flags])
        dist.all_reduce(values, group=self.control)
        return tuple(bool(value > 0) for value in values.tolist())

    def total(self, value: int) -> int:
        """The sum of an integer over the ranks (an all-reduce on the CPU group: no wait for a GPU)."""
        values = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(values, group=self.control)
        return int(values.item())

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's `value` (a picklable object) on every rank."""
        return broadcast_object(value, self.control)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value, group=self.control)
        return values

    def on_rank0(self, work: Callable[[], T]) -> T:
        """`work()` on rank 0 only, its result or error on every rank (`on_rank0`, through the CPU group)."""
        return on_rank0(work, self.control)

    def check_same(self, what: str, values: dict[str, Any]) -> None:
        """ValueError on every rank unless every rank's `values` equal rank 0's (named by key)."""
        gathered = self.gather_objects(values)
        for index, other in enumerate(gathered):
            differing = sorted(key for key in {*other, *gathered[0]} if other.get(key) != gathered[0].get(key))
            if differing:
                shown = "; ".join(f"{key}: {other.get(key)!r} on rank {index}, {gathered[0].get(key)!r} on rank 0"
                                  for key in differing)
                raise ValueError(f"the {what} differ between the processes ({shown}): every process must call fit "
                                 f"with the same arrays and settings")

    def decorrelate_generators(self) -> None:
        """Reseed rank r > 0's torch generators (CPU and CUDA) from a digest of rank 0's CPU generator state and r,
        without drawing from rank 0's: its stream stays a one-process run's (`dropout and augmentation` above)."""
        digest = self.broadcast_object(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest())
        if self.rank > 0:
            torch.manual_seed(int(hashlib.sha256(f"{digest}/{self.rank}".encode()).hexdigest()[:15], 16))


def _portable(error: Exception) -> Exception:
    """`error` itself when it pickles (ValueError, OSError, ...), else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


class GradientReducer:
    """Sums what the ranks computed in a training step with one `all_reduce` of one flat float32 buffer:
    [every gradient | BatchNorm statistics | the batch's sums | control flags].

    - gradients: each rank's, of its share of the global batch's loss (`engine.Part`), so the sum is the global
      batch's gradient. A parameter without a gradient on this rank (an empty slice runs no forward pass) sends
      zeros and gets the sum back as its gradient, so every rank's optimizer updates every parameter alike;
    - floating buffers (BatchNorm's moving statistics): rank 0's values, the others send zeros;
    - the batch's sums (loss and metrics, `engine.Scores`' layout): the global batch's, on every rank;
    - control flags (on a CPU only, where reading them costs nothing): whether any rank was interrupted
      (Ctrl-C), and whether rank 0's clock says a checkpoint is due; set `control` before the step and read
      `agreed` after it. On a GPU the trainer agrees on them through the CPU group instead (`Collective.any`),
      which does not wait for the device.

    The buffer is allocated once and the copies run in a fixed order, so the step can be captured in a CUDA
    graph; channels_last gradients are copied element by element (`copy_` through an NCHW view).
    """

    CONTROL = 2

    def __init__(self, collective: Collective, model: torch.nn.Module, sums: int):
        self.collective = collective
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = [b for b in model.buffers() if b.is_floating_point()]
        sizes = [p.numel() for p in self.params] + [b.numel() for b in self.buffers]
        self.sums_start = sum(sizes)
        self.control_start = self.sums_start + sums
        self.with_control = collective.device.type != "cuda"
        self.flat = torch.zeros(self.control_start + (self.CONTROL if self.with_control else 0), dtype=torch.float32,
                                device=collective.device)
        self.views = list(self.flat[:self.sums_start].split(sizes))  # views: one per gradient, then per buffer
        self.control: tuple[bool, bool] = (False, False)  # this rank's flags for the next step
        self.agreed: tuple[bool, bool] = (False, False)   # the ranks' flags after the last step

    def reduce(self, sums: torch.Tensor) -> torch.Tensor:
        """All-reduce this rank's gradients and `sums` (float64); the gradients become the global batch's, the
        buffers rank 0's; returns the global batch's sums (float64)."""
        count = len(self.params)
        for param, view in zip(self.params, self.views[:count]):
            if param.grad is None:
                view.zero_()
            else:
                view.view(param.shape).copy_(param.grad)  # NCHW view: a channels_last gradient is copied in order
        for buffer, view in zip(self.buffers, self.views[count:]):
            if self.collective.rank == 0:
                view.view(buffer.shape).copy_(buffer)
            else:
                view.zero_()
        self.flat[self.sums_start:self.control_start].copy_(sums)
        if self.with_control:
            self.flat[self.control_start:] = torch.tensor([float(flag) for flag in self.control])
        self.collective.sum_(self.flat)
        for param, view in zip(self.params, self.views[:count]):
            if param.grad is None:
                param.grad = torch.empty_like(param)  # preserve_format: channels_last like its parameter
            param.grad.copy_(view.view(param.shape))
        for buffer, view in zip(self.buffers, self.views[count:]):
            buffer.copy_(view.view(buffer.shape))
        if self.with_control:
            interrupted, save = self.flat[self.control_start:].tolist()
            self.agreed = (interrupted > 0, save > 0)
        return self.flat[self.sums_start:self.control_start].double()
