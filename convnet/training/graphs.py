"""The CUDA-graph training step: its bookkeeping here, the capture itself behind a small interface.

A CUDA graph records the kernels of one whole training step (forward, loss, backward, optimizer update)
once, at fixed memory addresses, and replays them for every full batch (PyTorch's "whole network capture"
recipe). What the capture needs around it is bookkeeping, and it lives in `GraphedStep`, apart from CUDA:
- the optimizer runs its capturable form: `capturable=True` (step counts on the device), and each param
  group's `lr` becomes a float64 tensor on the device that the graph reads (a schedule fills it in place);
  float64 does the same arithmetic as a Python float (bit-identical on a CPU, tested);
- each batch is copied into static input tensors; gradients are zeroed in place, never set to None, so
  they keep the addresses the graph wrote them at (an eager step between replays zeroes them too);
- the warm-up steps before the capture really train, so a `Snapshot` taken before them is put back after
  the capture: weights, BatchNorm statistics, optimizer state and the random generators are as if no
  warm-up had run, and training consumes the same random numbers as eager training;
- when capture fails, the snapshot is restored whole, param groups included (no longer capturable, a
  float `lr` again), and the error goes to the engine, which trains eagerly;
- `optimizer.state_dict()` of a graphed optimizer reads as the eager optimizer's (float `lr`, the
  original `capturable`), so checkpoints hold plain JSON and resume anywhere; loading a state dict
  replaces the tensors the graph reads, which makes the graph `stale` (the engine captures again).

The capture is a `Capture`: `CudaGraphCapture` on a GPU; `EagerCapture`, which runs the same steps
eagerly, stands in for it on a CPU, so the default (CPU) test suite runs all of the bookkeeping above.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

WARM_UP_STEPS = 3  # PyTorch's capture recipe warms up a few steps (on a side stream) before capturing

Step = Callable[[], torch.Tensor]


class Capture(Protocol):
    """Records a training step once and replays it. `capturable`: the optimizer must run its capturable
    form (what a CUDA graph needs: no host synchronisation, state on the device)."""

    capturable: bool

    def warm_up(self, step: Step) -> None:
        """Run `step` a few times before capture (lazy initialisation, cuDNN/cuBLAS workspaces)."""

    def capture(self, step: Step) -> torch.Tensor:
        """Record `step`; returns its output tensor, which each `replay` refills."""

    def replay(self) -> None:
        """Run the recorded step again on the current contents of its input tensors."""


class CudaGraphCapture:
    """The real capture: `torch.cuda.CUDAGraph`, with the warm-up on a side stream as PyTorch's recipe asks."""

    capturable = True

    def __init__(self, device: torch.device):
        self.device = device
        self.graph: torch.cuda.CUDAGraph | None = None

    def warm_up(self, step: Step) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(WARM_UP_STEPS):
                step()
        torch.cuda.current_stream(self.device).wait_stream(stream)

    def capture(self, step: Step) -> torch.Tensor:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            return step()

    def replay(self) -> None:
        assert self.graph is not None, "replay before capture"
        self.graph.replay()


class EagerCapture:
    """The CPU stand-in for `CudaGraphCapture`: warm-up runs the steps, "capture" runs the step once (its
    effects are rolled back as a real capture's warm-up is), replay runs it again into the same output.

    Args:
        capturable: ask the optimizer for its capturable form, as a CUDA graph does (torch's own optimizers
            refuse that on a CPU: a way to make capture fail in tests).
    """

    def __init__(self, capturable: bool = False):
        self.capturable = capturable
        self.replays = 0
        self._step: Step | None = None
        self._outputs: torch.Tensor | None = None

    def warm_up(self, step: Step) -> None:
        for _ in range(WARM_UP_STEPS):
            step()

    def capture(self, step: Step) -> torch.Tensor:
        self._step, self._outputs = step, step()
        return self._outputs

    def replay(self) -> None:
        assert self._step is not None and self._outputs is not None, "replay before capture"
        self._outputs.copy_(self._step())
        self.replays += 1


def check_capturable(optimizer: torch.optim.Optimizer) -> None:
    """RuntimeError unless every param group of `optimizer` declares a `capturable` form."""
    if not all("capturable" in group for group in optimizer.param_groups):
        raise RuntimeError(f"{type(optimizer).__name__} has no capturable (CUDA-graph-safe) form")


class Snapshot:
    """Weights, buffers, gradients, optimizer state and param groups, and the random generators' states,
    as they were when taken. `restore_values` copies the values back into the tensors in use now (which
    a captured graph reads); `restore_all` also puts back the objects themselves (param groups, state
    entries, gradients), undoing everything done since."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.tensors = [(t, t.detach().clone()) for t in model.state_dict(keep_vars=True).values()]
        self.grads = [(p, p.grad, p.grad.detach().clone()) for p in model.parameters() if p.grad is not None]
        self.no_grads = [p for p in model.parameters() if p.grad is None]
        self.groups = [(group, dict(group)) for group in optimizer.param_groups]
        self.state_object = optimizer.state
        self.states = {p: (entry, dict(entry), _clone_tensors(entry)) for p, entry in optimizer.state.items()}
        self.rng = _rng_states(device)

    def changed_state(self) -> list[str]:
        """State entries the optimizer created since the snapshot: they have no value to go back to."""
        created = []
        for index, (p, entry) in enumerate(self.optimizer.state.items()):
            before = self.states.get(p, (None, {}, {}))[1]
            created += [f"{index}/{key}" for key in entry if key not in before]
        return created

    @torch.no_grad()
    def restore_values(self) -> None:
        for tensor, value in self.tensors:
            tensor.copy_(value)
        for p, entry in self.optimizer.state.items():
            if p not in self.states:  # an entry the step looked up but left empty (changed_state checked)
                continue
            _, plain, values = self.states[p]
            for key in entry:
                if key in values:
                    entry[key].copy_(values[key])
                else:
                    entry[key] = plain[key]
        _set_rng_states(self.device, self.rng)

    @torch.no_grad()
    def restore_all(self) -> None:
        self.optimizer.state = self.state_object
        for p in [p for p in self.optimizer.state if p not in self.states]:
            del self.optimizer.state[p]
        for p, (entry, plain, values) in self.states.items():
            entry.clear()
            entry.update(plain)
            for key, value in values.items():
                entry[key].copy_(value)
            self.optimizer.state[p] = entry
        for group, plain in self.groups:
            group.clear()
            group.update(plain)
        self.optimizer.param_groups[:] = [group for group, _ in self.groups]
        for p, grad, value in self.grads:
            grad.copy_(value)
            p.grad = grad
        for p in self.no_grads:
            p.grad = None
        for tensor, value in self.tensors:
            tensor.copy_(value)
        _set_rng_states(self.device, self.rng)


class GraphedStep:
    """One training step captured by `capture` and replayed for each full batch (see the module docstring).

    Args:
        model: the model whose parameters and buffers the step changes.
        optimizer: its optimizer; each param group must declare `capturable`.
        step: `step(x, y)` runs one step on static inputs, zeroing gradients in place, and returns its sums.
        x, y: a full batch: the static inputs' shapes and dtypes.
        capture: how the step is recorded and replayed.

    Raises:
        Exception: whatever capture raised, after everything is restored as it was before.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 capture: Capture):
        check_capturable(optimizer)
        self.optimizer, self.capture = optimizer, capture
        device = x.device
        snapshot = Snapshot(model, optimizer, device)
        self.groups = list(optimizer.param_groups)
        self.plain_groups = [{"capturable": group["capturable"]} for group in self.groups]
        try:
            self.rates = self._make_capturable(device)
            self.x, self.y = x.detach().clone(), y.detach().clone()
            capture.warm_up(lambda: step(self.x, self.y))
            created = snapshot.changed_state()
            if created:
                raise RuntimeError(f"{type(optimizer).__name__} created state during warm-up ({', '.join(created)}): "
                                   f"capture starts after an eager step")
            self.sums = capture.capture(lambda: step(self.x, self.y))
            snapshot.restore_values()
        except BaseException:
            snapshot.restore_all()
            raise
        self.state_object = optimizer.state
        self._hook = optimizer.register_state_dict_post_hook(self._eager_state_dict)

    def _make_capturable(self, device: torch.device) -> list[torch.Tensor]:
        rates = []
        for group in self.groups:
            lr = group["lr"]
            rate = lr if isinstance(lr, torch.Tensor) else torch.tensor(float(lr), dtype=torch.float64, device=device)
            group["lr"] = rate
            rates.append(rate)
            if self.capture.capturable:
                group["capturable"] = True
                for p in group["params"]:  # as torch's load_state_dict does for capturable groups: steps on the device
                    entry = self.optimizer.state.get(p, {})
                    for key, value in entry.items():
                        if isinstance(value, torch.Tensor) and value.device != p.device:
                            entry[key] = value.to(p.device)
        return rates

    @property
    def stale(self) -> bool:
        """Whether the optimizer's groups or state were replaced (load_state_dict): the graph reads old tensors."""
        groups = self.optimizer.param_groups
        return (self.optimizer.state is not self.state_object or len(groups) != len(self.groups)
                or any(a is not b for a, b in zip(groups, self.groups)))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for group, rate in zip(self.groups, self.rates):
            if group["lr"] is not rate:  # set to a number (a torch scheduler): the graph reads the tensor
                rate.fill_(float(group["lr"]))
                group["lr"] = rate
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.capture.replay()
        return self.sums.clone()

    def _eager_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        for saved, plain in zip(state["param_groups"], self.plain_groups):
            saved.update(plain, lr=float(saved["lr"]))
        return state

    def release(self) -> None:
        """Stop serving the graph: the optimizer's groups (where still the graph's) get a float `lr` and their
        own `capturable` back, and its state dict is no longer rewritten."""
        self._hook.remove()
        if self.stale:
            return
        for group, plain in zip(self.groups, self.plain_groups):
            group.update(plain, lr=float(group["lr"]))


def _clone_tensors(entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in entry.items() if isinstance(value, torch.Tensor)}


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_states(device: torch.device, states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
