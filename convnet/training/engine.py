"""How one training step and one inference batch execute on a device: precision, memory format, CUDA graphs.

The engine is chosen per device when a model is compiled:
- channels_last memory: layers see NHWC tensors, which are NCHW tensors in channels_last format, so
  convolutions and pooling run their channels_last kernels without copies; conv kernels are stored
  channels_last too, so oneDNN and cuDNN need no reorder per call;
- precision: bfloat16 autocast where the hardware computes in bf16 natively (CUDA GPUs with bf16,
  CPUs whose oneDNN has bf16 kernels: AVX-512 or AMX), float32 elsewhere; `precision=` chooses;
- CUDA graphs: on a GPU, the whole training step (forward, loss, backward, optimizer) is captured once
  for the full batch size and replayed (graphs.py); the first full batch and the last partial batch run
  eagerly. Where capture is not possible (an optimizer without a capturable form, a Lambda layer doing
  host work, ...), everything the attempt changed is rolled back, the engine trains eagerly and says why
  once, at verbose level.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from convnet import regularizers
from convnet._internal.checks import check_choice
from convnet.training.graphs import Capture, CudaGraphCapture, GraphedStep

if TYPE_CHECKING:
    from convnet.distributed import GradientReducer
    from convnet.losses import Loss
    from convnet.metrics import Metric
    from convnet.models.sequential import Sequential

PRECISIONS = ("auto", "float32", "bfloat16")
JIT_MODES = ("auto", "eager", "graphs")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (so bf16 is faster, not an emulated slow path)."""
    if device.type == "cuda":
        # including_emulation=False: by default torch also counts GPUs that only emulate bf16 (before Ampere)
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """"float32" or "bfloat16" for `device`; "auto" picks bf16 where it is native.

    Raises:
        ValueError: an unknown precision, or bf16 asked for on hardware that only emulates it (a silent
            slow path: measured 13 images/s instead of 224 on an AVX2 CPU).
    """
    precision = check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    if precision == "bfloat16" and not native_bf16(device):
        raise ValueError(f"precision='bfloat16' is not native on this {device.type} device (no AVX-512/AMX bf16 "
                         f"kernels in oneDNN, or a GPU without bf16) and would run many times slower; use "
                         f"precision='float32' or 'auto'")
    return precision


def prepare_model(model: Sequential) -> None:
    """Store 4-D weights (conv kernels) channels_last, the layout their inputs arrive in."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 4:
                # .to() sets channels_last strides even where a size-1 axis makes both layouts "contiguous"
                # (a first layer's (64, 1, 7, 7) kernel): oneDNN reads the strides, and NCHW-looking strides
                # make it convert the gradients of that layer to NCHW in every backward pass
                parameter.data = parameter.data.to(memory_format=torch.channels_last)


def fused_activation(model: Sequential) -> str | None:
    """The final activation the loss takes in log space ("softmax" for cross-entropy), or None: then
    training runs on logits, which is exact where softmax-then-log underflows."""
    loss = model.loss
    if loss is None or loss.from_logits:
        return None
    name = model.output_activation
    return name if name is not None and name == loss.fused_activation else None


def weighted_metrics(model: Sequential) -> list[Metric]:
    """The metrics weighted by `sample_weight` (Keras's `compile(weighted_metrics=...)`); none until the model
    has them. Keras weighs only these: the `metrics` of `compile` ignore sample and class weights."""
    return list(getattr(model, "weighted_metrics", None) or [])


class Scores:
    """What the sums of a batch hold, and how they become the logged means, as Keras 3 computes them.

    Layout: [loss, metrics..., weighted metrics..., weight sum], the weight sum only with weighted metrics.
    - "loss": the sum over samples of w * loss (w = 1 without weights), divided by the number of samples:
      Keras's loss tracker averages the batches' `sum(w * loss) / batch_size` weighted by batch size;
    - a metric: the sum of its per-sample values over the number of samples (unweighted, as Keras's
      `metrics`);
    - a weighted metric: sum(w * value) / sum(w), 0 when the weights sum to 0 (Keras's `Mean` metric with
      `sample_weight`, and its `divide_no_nan`).

    Names follow Keras's rule: a weighted metric whose name a metric already has is "weighted_<name>".
    """

    def __init__(self, model: Sequential):
        names = list(model.metrics_names)
        for metric in weighted_metrics(model):
            names.append(f"weighted_{metric.name}" if metric.name in names else metric.name)
        self.names = names
        self.weighted = len(names) - len(model.metrics_names)
        self.size = len(names) + (1 if self.weighted else 0)

    def mean_tensor(self, totals: torch.Tensor, seen: int) -> torch.Tensor:
        """The means as a tensor on the totals' device (no host sync), in the order of `names`."""
        count = max(seen, 1)
        if not self.weighted:
            return totals / count
        plain = totals[:len(self.names) - self.weighted] / count
        weight_sum = totals[-1]
        weighted = totals[len(self.names) - self.weighted:-1] / weight_sum
        return torch.cat([plain, torch.where(weight_sum == 0, torch.zeros_like(weighted), weighted)])

    def means(self, totals: torch.Tensor, seen: int) -> dict[str, float]:
        """The means as floats by name (one host read)."""
        return dict(zip(self.names, self.mean_tensor(totals, seen).tolist()))


def loss_sum(loss: Loss, y: torch.Tensor, outputs: torch.Tensor, logits: bool | None,
             sample_weight: torch.Tensor | None) -> torch.Tensor:
    """sum(w * loss) over the batch (plain sum without weights): Keras's weighted loss before its reduction.
    `logits` as for `Loss.sum`."""
    return loss.sum(y, outputs, logits=logits, sample_weight=sample_weight)


@dataclass(frozen=True)
class Part:
    """This rank's slice of a global batch that data-parallel training splits across ranks (`convnet.distributed`).

    A rank differentiates `loss.reduce(its sum, count, weight_sum) + share * penalty`. Summed over the ranks that
    is the global batch's loss: the reductions are linear in the sum, and the shares add up to 1 (so the penalty,
    and an activity penalty's mean over each slice, count as in one process). Hence the summed gradients are the
    global batch's gradient.
    """

    count: int                              # samples in the global batch
    share: float                            # this rank's samples / count
    weight_sum: torch.Tensor | None = None  # the global batch's sample-weight sum (None without weights)


def batch_loss(model: Sequential, total: torch.Tensor, count: int,
               sample_weight: torch.Tensor | None, part: Part | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch's loss as Keras trains on it, what the epoch's "loss" adds up) from `total` = `loss_sum`.

    Keras's `compute_loss`: the compiled loss reduced (`Loss.reduce`: total / count by default), plus the
    regularization penalties of the last forward pass (`regularizers.penalty`, Keras's `model.losses`).
    Keras reports the epoch's loss as the batch values averaged weighted by batch size, so the epoch adds
    value * count: `total` itself for a loss that divides by the batch size and no penalty (the same
    number, without the rounding of a division and a product). With a `part` (data-parallel training),
    `total` is this rank's slice's and the value is this rank's share of the global batch's (see `Part`).
    """
    loss = model.loss
    assert loss is not None, "compile() sets the loss"
    share = 1.0
    if part is None:
        weight_sum = None if sample_weight is None else sample_weight.sum()
    else:
        count, share, weight_sum = part.count, part.share, part.weight_sum
    value = loss.reduce(total, count, weight_sum)
    penalty = regularizers.penalty(model)
    if penalty is not None:
        value = value + (penalty if share == 1.0 else penalty * share)
    if penalty is None and loss.reduction in ("sum_over_batch_size", "mean"):
        return value, total
    return value, value * count


def _per_sample(metric: Metric, y: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """The metric's value for each sample, shape (N,): its `batch_sum` of one-sample batches, vectorised."""
    return torch.func.vmap(lambda yi, pi: metric.batch_sum(yi[None], pi[None]))(y, predictions).float()


def batch_sums(model: Sequential, loss_total: torch.Tensor, y: torch.Tensor, outputs: torch.Tensor,
               fused: str | None, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The sums of one batch laid out as `Scores` says, as a float64 tensor on the device; `loss_total` is
    what the epoch's loss adds up (`batch_loss`); `outputs` are logits when `fused` names the activation
    they leave out."""
    weighted = weighted_metrics(model)
    predictions = outputs
    if fused is not None and any(metric.needs_probabilities for metric in (*model.metrics, *weighted)):
        predictions = model.activate(outputs)
    values = [loss_total.float()] + [metric.batch_sum(y, predictions).float() for metric in model.metrics]
    if weighted:
        weight = (torch.ones(y.shape[0], device=y.device) if sample_weight is None
                  else sample_weight.float())
        values += [(_per_sample(metric, y, predictions) * weight).sum() for metric in weighted]
        values.append(weight.sum())
    return torch.stack(values).double()


class Engine:
    """Runs training steps and inference batches of one compiled model.

    `train_step(x, y)` and `eval_batch(x, y)` return the batch's sums ([loss sum, metric sums...], laid out
    as `Scores` says) as a float64 tensor on the device, without synchronising with the host.

    Full batches go through a CUDA graph where `capture_factory` is set (a GPU, jit "auto" or "graphs"):
    the first full batch runs eagerly (it creates the optimizer's state), the second is captured, the rest
    replay it; other batches run eagerly. The bookkeeping is `graphs.GraphedStep`; tests set
    `capture_factory` to `graphs.EagerCapture` to run it on a CPU.

    Data-parallel training (`convnet.distributed`) sets a `reducer` for the fit: each step then trains on this
    rank's `Part` of the global batch, and the reducer's all-reduce runs between the backward pass and the
    optimizer step (inside the captured graph too); a rank with an empty slice runs `idle_step`.
    """

    def __init__(self, model: Sequential, precision: str = "auto", jit: str = "auto", verbose: int = 0):
        self.model = model
        self.device = model.device
        self.precision = resolve_precision(precision, self.device)
        self.jit = check_choice("jit", jit, JIT_MODES)
        if self.jit == "graphs" and self.device.type != "cuda":
            raise ValueError(f"jit='graphs' needs a CUDA device; the model is on {self.device}")
        self.verbose = verbose  # fit sets it: the capture fallback is said at verbose level
        self.fused = fused_activation(model)
        self.capture_factory: Callable[[], Capture] | None = None
        if self.device.type == "cuda" and self.jit != "eager":
            self.capture_factory = functools.partial(CudaGraphCapture, self.device)
        self._graph: GraphedStep | None = None
        self._graph_weighted = False  # whether the graph was captured with sample weights
        self._weights: torch.Tensor | None = None  # the static sample weights the graph reads
        self._graph_failed = False
        self._eager_full_steps = 0  # full batches run eagerly since the graph (if any) was dropped
        self._part: Part | None = None  # the part of the global batch the graph was captured for
        self.reducer: GradientReducer | None = None
        prepare_model(model)

    def set_reducer(self, reducer: GradientReducer | None) -> None:
        """Sum every step over the ranks with `reducer` (None: one process); a graph captured with another
        reducer (or none) is dropped."""
        if reducer is not self.reducer:
            self.release()
        self.reducer = reducer

    @property
    def use_graphs(self) -> bool:
        return self.capture_factory is not None and not self._graph_failed

    @property
    def graph(self) -> GraphedStep | None:
        """The captured training step, once there is one."""
        return self._graph

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bfloat16":
            # no cast cache under CUDA graphs: PyTorch's graph notes ask for cache_enabled=False with autocast
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.use_graphs)
        return contextlib.nullcontext()

    def step(self, x: torch.Tensor, y: torch.Tensor, set_to_none: bool = True,
             sample_weight: torch.Tensor | None = None, part: Part | None = None) -> torch.Tensor:
        """One eager optimisation step. Gradients are zeroed first: set to None, or zeroed in place
        (`set_to_none=False`) where a CUDA graph reads them at their addresses. The gradient is that of
        Keras's batch loss (`batch_loss`): sum(w * loss) / batch size by default (w = 1 without
        `sample_weight`), plus the layers' regularization penalties; with a `part`, this rank's share of it,
        summed over the ranks by the `reducer` before the update."""
        model, optimizer, loss = self.model, self.model.optimizer_, self.model.loss
        assert optimizer is not None and loss is not None, "compile() sets the optimizer and the loss"
        optimizer.zero_grad(set_to_none=set_to_none)
        with self.autocast():
            outputs = (model.logits(x.float()) if self.fused else model(x.float()))
        total = loss_sum(loss, y, outputs.float(), True if self.fused else None, sample_weight)
        value, reported = batch_loss(model, total, x.shape[0], sample_weight, part)
        value.backward()
        if self.reducer is None:
            optimizer.step()
            with torch.no_grad():
                return batch_sums(model, reported.detach(), y, outputs.detach().float(), self.fused, sample_weight)
        with torch.no_grad():
            sums = self.reducer.reduce(batch_sums(model, reported.detach(), y, outputs.detach().float(), self.fused,
                                                  sample_weight))
        optimizer.step()
        return sums

    def idle_step(self, sums: int) -> torch.Tensor:
        """The step of a rank whose slice of the global batch is empty: no forward pass; it sends zero gradients
        and zero sums to the all-reduce and takes the same optimizer step as the other ranks."""
        optimizer = self.model.optimizer_
        assert optimizer is not None and self.reducer is not None, "an idle step is a data-parallel step"
        optimizer.zero_grad(set_to_none=self._graph is None)
        with torch.no_grad():
            totals = self.reducer.reduce(torch.zeros(sums, dtype=torch.float64, device=self.device))
        optimizer.step()
        return totals

    def _graph_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.step(x, y, set_to_none=False, sample_weight=self._weights, part=self._part)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, full_batch: int | None = None,
                   sample_weight: torch.Tensor | None = None, part: Part | None = None) -> torch.Tensor:
        """One optimisation step; `full_batch` is the fit's batch size (this rank's slice of it in data-parallel
        training: graphs serve only full batches); `sample_weight` (N,) weighs each sample's loss; `part` says
        which share of a global batch this is (`Part`). A graph captured with weights reads them, and the global
        weight sum, from static tensors of its own (filled before each replay); one captured without has none, so
        a step of the other kind drops it and captures again."""
        graph = self._graph
        if graph is not None and (graph.stale or self._graph_weighted != (sample_weight is not None)
                                  or not _same_part(self._part, part)):
            self.release()  # a loaded optimizer state (the graph reads old tensors), or weights come or go
        full = full_batch is not None and x.shape[0] == full_batch
        if full and self._graph is not None:
            if self._weights is not None and sample_weight is not None:
                self._weights.copy_(sample_weight, non_blocking=True)
            static_sum = None if self._part is None else self._part.weight_sum
            if static_sum is not None and part is not None and part.weight_sum is not None:
                static_sum.copy_(part.weight_sum, non_blocking=True)
            return self._graph(x, y)
        if full and self.use_graphs and self._eager_full_steps > 0:
            assert self.capture_factory is not None and self.model.optimizer_ is not None
            self._graph_weighted = sample_weight is not None
            self._weights = None if sample_weight is None else sample_weight.detach().clone()
            self._part = None if part is None else Part(part.count, part.share, None if part.weight_sum is None
                                                        else part.weight_sum.detach().clone())
            try:
                self._graph = GraphedStep(self.model, self.model.optimizer_, self._graph_step, x, y,
                                          self.capture_factory())
            except Exception as error:  # capture is best effort: everything is rolled back; say why once
                self._fallback(error)
            else:
                return self._graph(x, y)
        self._eager_full_steps += full
        return self.step(x, y, set_to_none=self._graph is None, sample_weight=sample_weight, part=part)

    def _fallback(self, error: Exception) -> None:
        self._graph_failed = True
        if self.jit == "graphs":
            raise RuntimeError(f"jit='graphs': capturing the training step in a CUDA graph failed: {error}") from error
        if self.verbose:
            print(f"convnet: CUDA graph capture is not possible for this model ({type(error).__name__}: {error}); "
                  f"training runs eagerly.", file=sys.stderr)

    def release(self) -> None:
        """Drop the captured step (if any): the optimizer gets its eager form back (float `lr`); a later full
        batch runs eagerly, then is captured again."""
        if self._graph is not None:
            self._graph.release()
            self._graph = None
        self._weights = None
        self._part = None
        self._eager_full_steps = 0

    @torch.no_grad()
    def eval_batch(self, x: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None,
                   part: Part | None = None) -> torch.Tensor:
        """The sums of one inference batch (`Scores`' layout), weighted by `sample_weight` where Keras weighs;
        with a `part`, this rank's share of a global batch's sums."""
        model, loss = self.model, self.model.loss
        assert loss is not None, "compile() sets the loss"
        with self.autocast():
            outputs = (model.logits(x.float()) if self.fused else model(x.float()))
        outputs = outputs.float()
        total = loss_sum(loss, y, outputs, True if self.fused else None, sample_weight)
        _, reported = batch_loss(model, total, x.shape[0], sample_weight, part)  # the penalty counts, as in Keras
        return batch_sums(model, reported, y, outputs, self.fused, sample_weight)

    @torch.no_grad()
    def predict_batch(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(x.float()).float()


def _same_part(captured: Part | None, part: Part | None) -> bool:
    """Whether a graph captured for `captured` serves `part` (the weight sum is an input it reads)."""
    if captured is None or part is None:
        return captured is part
    return (captured.count, captured.share, captured.weight_sum is None) == (part.count, part.share,
                                                                             part.weight_sum is None)


def describe(engine: Engine) -> dict[str, Any]:
    """What the engine does on this device, for benchmarks and run metadata."""
    return {"device": str(engine.device), "precision": engine.precision, "jit": engine.jit,
            "cuda_graphs": engine.use_graphs, "channels_last": True}
