"""How one training step and one inference batch execute on a device: precision, memory format, CUDA graphs.

The engine is chosen per device when a model is compiled:
- channels_last memory: layers see NHWC tensors, which are NCHW tensors in channels_last format, so
  convolutions and pooling run their channels_last kernels without copies; conv kernels are stored
  channels_last too, so oneDNN and cuDNN need no reorder per call;
- precision: bfloat16 autocast where the hardware computes in bf16 natively (CUDA GPUs with bf16,
  CPUs whose oneDNN has bf16 kernels: AVX-512 or AMX), float32 elsewhere; `precision=` chooses;
- CUDA graphs: on a GPU, the whole training step (forward, loss, backward, optimizer) is captured once
  for the full batch size and replayed; the last partial batch runs eagerly. Where capture is not possible
  (an optimizer without a capturable form, a Lambda layer doing host work, ...), the engine falls back to
  eager execution and says why once, at verbose level.
"""
from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

import torch

from convnet._internal.checks import check_choice

if TYPE_CHECKING:
    from convnet.models.sequential import Sequential

PRECISIONS = ("auto", "float32", "bfloat16")
JIT_MODES = ("auto", "eager", "graphs")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (so bf16 is faster, not an emulated slow path)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
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


def batch_sums(model: Sequential, loss_sum: torch.Tensor, y: torch.Tensor, outputs: torch.Tensor,
               fused: str | None) -> torch.Tensor:
    """[loss sum, metric sums...] for one batch, as a float64 tensor on the device; `outputs` are logits
    when `fused` names the activation they leave out."""
    predictions = outputs
    if fused is not None and any(metric.needs_probabilities for metric in model.metrics):
        predictions = model.activate(outputs)
    values = [loss_sum.float()] + [metric.batch_sum(y, predictions).float() for metric in model.metrics]
    return torch.stack(values).double()


class Engine:
    """Runs training steps and inference batches of one compiled model.

    `train_step(x, y)` and `eval_batch(x, y)` return [loss sum, metric sums...] as a float64 tensor on the
    device, without synchronising with the host.
    """

    def __init__(self, model: Sequential, precision: str = "auto", jit: str = "auto", verbose: int = 0):
        self.model = model
        self.device = model.device
        self.precision = resolve_precision(precision, self.device)
        self.jit = check_choice("jit", jit, JIT_MODES)
        if self.jit == "graphs" and self.device.type != "cuda":
            raise ValueError(f"jit='graphs' needs a CUDA device; the model is on {self.device}")
        self.verbose = verbose
        self.fused = fused_activation(model)
        self._graph: _GraphedStep | None = None
        self._graph_failed = False
        prepare_model(model)

    @property
    def use_graphs(self) -> bool:
        return self.device.type == "cuda" and self.jit in ("auto", "graphs") and not self._graph_failed

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _eager_step(self, x: torch.Tensor, y: torch.Tensor, zero_grad: bool = True) -> torch.Tensor:
        model = self.model
        with self.autocast():
            outputs = (model.logits(x.float()) if self.fused else model(x.float()))
        loss_sum = model.loss.sum(y, outputs.float(), logits=True if self.fused else None)
        if zero_grad:
            model.optimizer_.zero_grad(set_to_none=True)
        (loss_sum / x.shape[0]).backward()
        model.optimizer_.step()
        with torch.no_grad():
            return batch_sums(model, loss_sum.detach(), y, outputs.detach().float(), self.fused)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, full_batch: int | None = None) -> torch.Tensor:
        """One optimisation step; `full_batch` is the fit's batch size (graphs serve only full batches)."""
        if self.use_graphs and full_batch is not None and x.shape[0] == full_batch:
            if self._graph is None:
                try:
                    self._graph = _GraphedStep(self, x, y)
                except Exception as error:  # capture is best effort: fall back, say why once
                    self._fallback(error)
                    return self._eager_step(x, y)
            return self._graph(x, y)
        return self._eager_step(x, y, zero_grad=self._graph is None)

    def _fallback(self, error: Exception) -> None:
        self._graph_failed = True
        self._graph = None
        if self.jit == "graphs":
            raise RuntimeError(f"jit='graphs': capturing the training step in a CUDA graph failed: {error}") from error
        if self.verbose:
            print(f"convnet: CUDA graph capture is not possible for this model ({type(error).__name__}: {error}); "
                  f"training runs eagerly.", file=sys.stderr)

    @torch.no_grad()
    def eval_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model = self.model
        with self.autocast():
            outputs = (model.logits(x.float()) if self.fused else model(x.float()))
        outputs = outputs.float()
        loss_sum = model.loss.sum(y, outputs, logits=True if self.fused else None)
        return batch_sums(model, loss_sum, y, outputs, self.fused)

    @torch.no_grad()
    def predict_batch(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(x.float()).float()


class _GraphedStep:
    """The whole training step captured in one CUDA graph, following PyTorch's whole-network capture recipe:
    static input buffers, a capturable optimizer, warm-up on a side stream, then capture. The warm-up steps'
    effects on weights and optimizer state are undone, so training is the same as eager execution."""

    def __init__(self, engine: Engine, x: torch.Tensor, y: torch.Tensor):
        model = engine.model
        optimizer = model.optimizer_
        for group in optimizer.param_groups:
            if "capturable" not in group:
                raise RuntimeError(f"{type(optimizer).__name__} has no capturable (CUDA-graph-safe) form")
            group["capturable"] = True
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=engine.device)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        moments = {id(p): {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
                   for p, state in optimizer.state.items()}
        self.x = x.detach().clone()
        self.y = y.detach().clone()
        for p in model.parameters():  # gradients must live at fixed addresses across replays
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=False)
                engine._eager_step(self.x, self.y, zero_grad=False)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=False)
        with torch.cuda.graph(self.graph):
            optimizer.zero_grad(set_to_none=False)
            self.sums = engine._eager_step(self.x, self.y, zero_grad=False)
        with torch.no_grad():  # undo the warm-up and capture steps: weights and optimizer state as before
            for key, value in model.state_dict().items():
                value.copy_(weights[key])
            for parameter, state in optimizer.state.items():
                before = moments.get(id(parameter), {})
                for key, value in state.items():
                    if not isinstance(value, torch.Tensor):
                        continue
                    if key in before:
                        value.copy_(before[key])
                    else:  # state the warm-up created: back to its initial value
                        value.fill_(1.0) if key == "mu_product" else value.zero_()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
        return self.sums.clone()


def describe(engine: Engine) -> dict[str, Any]:
    """What the engine does on this device, for benchmarks and run metadata."""
    return {"device": str(engine.device), "precision": engine.precision, "jit": engine.jit,
            "cuda_graphs": engine.use_graphs, "channels_last": True}
