"""Optimizers that apply Keras 3's update rules, with Keras's names and defaults.

An optimizer here has two parts:

- a description (`SGD`, `Adam`, `AdamW`, `Nadam`, `RMSprop`, `Adagrad`, `Adamax`): the name and
  hyper-parameters in Keras's words, which a config names and a saved model records;
- the torch optimizer it builds (`TorchSGD`, `TorchAdam`, ...), a `torch.optim.Optimizer` whose `step`
  is Keras 3's `update_step`, transcribed from keras/src/optimizers/<name>.py, not PyTorch's rule of the
  same name. The differences are real: Keras's Nadam schedules its momentum with 0.96 ** t, its RMSprop
  and Adagrad divide by sqrt(v + epsilon), its SGD momentum accumulates -lr * g, and its `weight_decay`
  is decoupled (`p -= lr * weight_decay * p` before the update, keras/src/optimizers/base_optimizer.py
  `_apply_weight_decay`), where torch.optim's SGD, Adam, RMSprop... add weight_decay * p to the gradient.

The learning rate lives in `param_groups[i]["lr"]`, a float or a 0-d tensor (as a CUDA graph needs);
the state of each parameter is tensors of its shape plus 0-d ones (the step count, Nadam's momentum
product) on its device, so a step makes no host sync and `state_dict()` saves it all.

    >>> opt = get("nadam")
    >>> opt
    Nadam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-07, weight_decay=None)
    >>> import torch
    >>> weight = torch.nn.Parameter(torch.ones(2))
    >>> torch_optimizer = opt.build([weight])
    >>> type(torch_optimizer).__name__
    'TorchNadam'
    >>> weight.grad = torch.tensor([1.0, -1.0])
    >>> torch_optimizer.step()
    >>> [round(w, 5) for w in weight.tolist()]  # Nadam's first step: 1.063 * lr against the gradient's sign
    [0.99894, 1.00106]
"""
from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from convnet import schedules
from convnet._internal.checks import check_bool, check_float, describe
from convnet._internal.registry import Registry
from convnet.schedules import LearningRateSchedule

Rate = float | torch.Tensor  # a learning rate: a float, or a 0-d tensor on the parameters' device


# -- the torch optimizers: Keras 3's update rules ---------------------------------------------------
# Each `update` computes its rule's formula (in its docstring, as Keras's source writes it) with the scalar
# factors grouped and in-place tensor ops, a few passes over memory per parameter as in torch.optim; the
# grouping changes the rounding by ulps only (tests/test_optimizers.py holds each rule to a NumPy
# transcription of Keras's source within 1e-6 relative).

def _add_scaled(target: torch.Tensor, tensor: torch.Tensor, scale: torch.Tensor) -> None:
    """target += tensor * scale, in place; `scale` is a 0-d tensor (no host sync)."""
    target.addcmul_(tensor, scale)


def _add_ratio(target: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor,
               scale: torch.Tensor) -> None:
    """target += scale * numerator / denominator, in place; `scale` is a 0-d tensor."""
    target.addcmul_(numerator / denominator, scale)


def _scalar_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype of a parameter's 0-d state: its own, but at least float32 (a bfloat16 count stops at 256)."""
    return torch.promote_types(param.dtype, torch.float32)


class TorchOptimizer(torch.optim.Optimizer):
    """A torch optimizer that applies a Keras 3 rule (the subclass's `update`) to each parameter.

    Each step does what Keras's `BaseOptimizer.apply` does without gradient clipping, EMA or gradient
    accumulation: decoupled weight decay, `p -= p * weight_decay * lr` (base_optimizer.py
    `_apply_weight_decay`), when `weight_decay` is set; then the rule's update with `t` = the number of
    this step (Keras's `local_step = iterations + 1`). A param group's parameters step together, as under
    Keras's one `iterations` counter: t and the factors that depend on it are the group's first parameter's
    (with a gradient), computed once per step; parameters without a gradient are skipped, as Keras skips
    variables whose gradient is None.

    The state is created here, not at the first step, so that it exists before a CUDA graph is captured
    and keeps its address: per parameter, `step` (0-d, in the parameter's dtype as Keras casts `iterations`,
    at least float32 so that it counts exactly) and the rule's `state_names`, zeros of the parameter's shape
    unless `initial_state` says otherwise.

    Args:
        params: the parameters, or param groups (dicts), as for any torch optimizer.
        defaults: the hyper-parameters, in Keras's names, with `lr` (float or 0-d tensor),
            `weight_decay` (None for none) and `capturable` (whether a CUDA graph may capture the step; the
            step never reads a tensor on the host, whatever the flag says, so this one only records it).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        super().__init__(params, {**defaults, "capturable": defaults.get("capturable", False)})
        for group in self.param_groups:
            for param in group["params"]:
                self._new_state(param, group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The tensors of a parameter's shape the rule keeps (Keras's optimizer variables)."""
        raise NotImplementedError

    def initial_state(self, name: str, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    def scalars(self, group: dict[str, Any], state: dict[str, torch.Tensor], lr: torch.Tensor) -> dict[str, Any]:
        """The factors every parameter of `group` shares at this step, from the first parameter's `state`
        (its `step` is t, 1 at the first step) and the rate `lr` (0-d): computed once per group, not once per
        parameter. `update` finds them, with "lr", in its `scalars`."""
        return {}

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
               group: dict[str, Any], scalars: dict[str, Any]) -> None:
        """Keras's `update_step` for one parameter, in place."""
        raise NotImplementedError

    def _new_state(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        state["step"] = torch.zeros((), dtype=_scalar_dtype(param), device=param.device)
        for name in self.state_names(group):
            state[name] = self.initial_state(name, param, group)

    def _state_of(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The parameter's state, on the parameter's device (the model may have moved since it was made)."""
        state = self.state[param]
        if not state:
            self._new_state(param, group)
        elif state["step"].device != param.device:
            for name, value in state.items():
                state[name] = value.to(param.device)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load, refusing (ValueError) a state this rule cannot step with: one saved by another
        optimizer (such as torch's Adam), or missing some of the rule's tensors."""
        for saved, group in zip(state_dict["param_groups"], self.param_groups):
            if set(saved) != set(group):
                raise ValueError(f"{type(self).__name__}: the saved optimizer has the settings "
                                 f"{sorted(set(saved) - {'params'})}, this one {sorted(set(group) - {'params'})}")
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            expected = {"step", *self.state_names(group)}
            for param in group["params"]:
                found = set(self.state.get(param, {}))
                if found and found != expected:
                    raise ValueError(f"{type(self).__name__}: the saved optimizer state holds {sorted(found)}, "
                                     f"this optimizer keeps {sorted(expected)}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            if any(param.grad.is_sparse for param in params):
                raise TypeError(f"{type(self).__name__} does not take sparse gradients")
            states = [self._state_of(param, group) for param in params]
            torch._foreach_add_([state["step"] for state in states], 1)
            # the group's parameters step together, as Keras's one `iterations` counter: t is the first's
            # the rate as a 0-d tensor in the step's dtype, whether "lr" is a float or a (float64, CUDA-graph)
            # tensor: one code path, so eager and graphed training compute the same bits
            step = states[0]["step"]
            lr = torch.as_tensor(group["lr"], dtype=step.dtype, device=step.device)
            scalars = {"lr": lr, **self.scalars(group, states[0], lr)}
            weight_decay = group["weight_decay"]
            for param, state in zip(params, states):
                if weight_decay is not None:  # base_optimizer.py: variable - variable * wd * lr
                    _add_scaled(param, param, -weight_decay * lr)  # not p * (1 - wd * lr): float32 loses the decay
                self.update(param, param.grad.to(param.dtype), state, group, scalars)
        return loss


class TorchSGD(TorchOptimizer):
    """Keras 3's SGD (keras/src/optimizers/sgd.py):

        momentum == 0:  p -= lr * g
        otherwise:      m = momentum * m - lr * g
                        p += m                          (nesterov: p += momentum * m - lr * g)
    """

    def __init__(self, params: Iterable[Any], lr: Rate = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float | None = None):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay})

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum",) if group["momentum"] != 0 else ()

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
               group: dict[str, Any], scalars: dict[str, Any]) -> None:
        lr, momentum = scalars["lr"], group["momentum"]
        if momentum == 0:
            _add_scaled(param, grad, -lr)
            return
        m = state["momentum"]
        m.mul_(momentum)
        _add_scaled(m, grad, -lr)
        if group["nesterov"]:
            param.add_(m, alpha=momentum)
            _add_scaled(param, grad, -lr)
        else:
            param.add_(m)


class TorchAdam(TorchOptimizer):
    """Keras 3's Adam (keras/src/optimizers/adam.py), bias correction folded into the rate:

        alpha = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        m += (g - m) * (1 - beta_1)
        v += (g ** 2 - v) * (1 - beta_2)
        v_hat = max(v_hat, v); v = v_hat                (amsgrad only)
        p -= m * alpha / (sqrt(v) + epsilon)
    """

    def __init__(self, params: Iterable[Any], lr: Rate = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, weight_decay: float | None = None):
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon,
                                  "amsgrad": amsgrad, "weight_decay": weight_decay})

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum", "velocity", "velocity_hat") if group["amsgrad"] else ("momentum", "velocity")

    def scalars(self, group: dict[str, Any], state: dict[str, torch.Tensor], lr: torch.Tensor) -> dict[str, Any]:
        t = state["step"]
        return {"-alpha": -lr * torch.sqrt(1 - group["beta_2"] ** t) / (1 - group["beta_1"] ** t)}

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
               group: dict[str, Any], scalars: dict[str, Any]) -> None:
        beta_1, beta_2 = group["beta_1"], group["beta_2"]
        m, v = state["momentum"], state["velocity"]
        m.lerp_(grad, 1 - beta_1)  # m + (g - m) * (1 - beta_1)
        v.mul_(beta_2).addcmul_(grad, grad, value=1 - beta_2)  # v + (g ** 2 - v) * (1 - beta_2)
        if group["amsgrad"]:
            v = torch.maximum(state["velocity_hat"], v, out=state["velocity_hat"])
        _add_ratio(param, m, v.sqrt().add_(group["epsilon"]), scalars["-alpha"])


class TorchAdamW(TorchAdam):
    """Keras 3's AdamW (keras/src/optimizers/adamw.py): Adam with the base optimizer's decoupled weight
    decay, `p -= p * weight_decay * lr` before each update, weight_decay 0.004 by default."""

    def __init__(self, params: Iterable[Any], lr: Rate = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, weight_decay: float = 0.004):
        super().__init__(params, lr, beta_1, beta_2, epsilon, amsgrad, weight_decay)


class TorchNadam(TorchOptimizer):
    """Keras 3's Nadam (keras/src/optimizers/nadam.py), Dozat's momentum schedule:

        u_t = beta_1 * (1 - 0.5 * 0.96 ** t);  u_t1 = beta_1 * (1 - 0.5 * 0.96 ** (t + 1))
        u_product *= u_t                                (a running product, 1 before the first step)
        m += (g - m) * (1 - beta_1);  v += (g ** 2 - v) * (1 - beta_2)
        m_hat = u_t1 * m / (1 - u_product * u_t1) + (1 - u_t) * g / (1 - u_product)
        v_hat = v / (1 - beta_2 ** t)
        p -= m_hat * lr / (sqrt(v_hat) + epsilon)
    """

    def __init__(self, params: Iterable[Any], lr: Rate = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float | None = None):
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon,
                                  "weight_decay": weight_decay})

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum", "velocity", "u_product")

    def initial_state(self, name: str, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if name == "u_product":  # Keras keeps one for all variables; each parameter's copy is the same
            return torch.ones((), dtype=_scalar_dtype(param), device=param.device)
        return super().initial_state(name, param, group)

    def scalars(self, group: dict[str, Any], state: dict[str, torch.Tensor], lr: torch.Tensor) -> dict[str, Any]:
        beta_1, t = group["beta_1"], state["step"]
        u_t = beta_1 * (1.0 - 0.5 * 0.96 ** t)
        u_t1 = beta_1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        u_product = state["u_product"] * beta_1 * (1.0 - 0.5 * 0.96 ** t)  # Nadam._backend_update_step
        return {"u_product": u_product, "lr * m": lr * u_t1 / (1 - u_product * u_t1),
                "lr * g": lr * (1 - u_t) / (1 - u_product), "1 - beta_2 ** t": 1 - group["beta_2"] ** t}

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
               group: dict[str, Any], scalars: dict[str, Any]) -> None:
        beta_1, beta_2 = group["beta_1"], group["beta_2"]
        state["u_product"].copy_(scalars["u_product"])
        m, v = state["momentum"], state["velocity"]
        m.lerp_(grad, 1 - beta_1)
        v.mul_(beta_2).addcmul_(grad, grad, value=1 - beta_2)  # v + (g ** 2 - v) * (1 - beta_2)
        step = m * scalars["lr * m"]  # lr * m_hat, in two passes
        step.addcmul_(grad, scalars["lr * g"])
        step.div_((v / scalars["1 - beta_2 ** t"]).sqrt_().add_(group["epsilon"]))  # / (sqrt(v_hat) + epsilon)
        param.sub_(step)


class TorchRMSprop(TorchOptimizer):
    """Keras 3's RMSprop (keras/src/optimizers/rmsprop.py), epsilon inside the square root:

        v = rho * v + (1 - rho) * g ** 2
        a = rho * a + (1 - rho) * g                     (centered only)
        increment = lr * g / sqrt(v + epsilon)          (centered: sqrt(v - a ** 2 + epsilon))
        p -= increment                                  (momentum > 0: m = momentum * m + increment; p -= m)
    """

    def __init__(self, params: Iterable[Any], lr: Rate = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, weight_decay: float | None = None):
        super().__init__(params, {"lr": lr, "rho": rho, "momentum": momentum, "epsilon": epsilon,
                                  "centered": centered, "weight_decay": weight_decay})

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("velocity", *(("momentum",) if group["momentum"] > 0 else ()),
                *(("average_gradient",) if group["centered"] else ()))

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
               group: dict[str, Any], scalars: dict[str, Any]) -> None:
        rho, epsilon = group["rho"], group["epsilon"]
        v = state["velocity"]
        v.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        if group["centered"]:
            a = state["average_gradient"]
            a.mul_(rho).add_(grad, alpha=1 - rho)
            denominator = torch.addcmul(v, a, a, value=-1).add_(epsilon)  # v - a ** 2 + epsilon
        else:
            denominator = v + epsilon
        denominator.sqrt_()
        if group["momentum"] > 0:
            m = state["momentum"]
            m.mul_(group["momentum"])
            _add_ratio(m, grad, denominator, scalars["lr"])  # m = momentum * m + increment
            param.sub_(m)
        else:
            _add_ratio(param, grad, denominator, -scalars["lr"])


class TorchAdagrad(TorchOptimizer):
    """Keras 3's Adagrad (keras/src/optimizers/adagrad.py), epsilon inside the square root:

        accumulator += g ** 2                           (starts at initial_accumulator_value)
        p -= lr * g / sqrt(accumulator + epsilon)
    """

    def __init__(self, params: Iterable[Any], lr: Rate = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, weight_decay: float | None = None):
        super().__init__(params, {"lr": lr, "initial_accumulator_value": initial_accumulator_value,
                                  "epsilon": epsilon, "weight_decay": weight_decay})

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("accumulator",)

    def initial_state(self, name: str, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return torch.full_like(param, group["initial_accumulator_value"], memory_format=torch.preserve_format)

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
               group: dict[str, Any], scalars: dict[str, Any]) -> None:
        accumulator = state["accumulator"]
        accumulator.addcmul_(grad, grad)
        _add_ratio(param, grad, (accumulator + group["epsilon"]).sqrt_(), -scalars["lr"])


class TorchAdamax(TorchOptimizer):
    """Keras 3's Adamax (keras/src/optimizers/adamax.py):

        m += (g - m) * (1 - beta_1)
        u = max(beta_2 * u, |g|)
        p -= lr * m / ((1 - beta_1 ** t) * (u + epsilon))
    """

    def __init__(self, params: Iterable[Any], lr: Rate = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float | None = None):
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon,
                                  "weight_decay": weight_decay})

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum", "norm")

    def scalars(self, group: dict[str, Any], state: dict[str, torch.Tensor], lr: torch.Tensor) -> dict[str, Any]:
        return {"-lr / (1 - beta_1 ** t)": -lr / (1 - group["beta_1"] ** state["step"])}

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
               group: dict[str, Any], scalars: dict[str, Any]) -> None:
        m, u = state["momentum"], state["norm"]
        m.lerp_(grad, 1 - group["beta_1"])
        torch.maximum(u.mul_(group["beta_2"]), grad.abs(), out=u)
        _add_ratio(param, m, u + group["epsilon"], scalars["-lr / (1 - beta_1 ** t)"])


# -- the descriptions: Keras's names, defaults and configs ------------------------------------------

def _check_hyper(name: str, value: Any, default: Any) -> Any:
    """One hyper-parameter, checked against the kind of its default."""
    if isinstance(default, bool):
        return check_bool(name, value)
    if name == "weight_decay":
        return None if value is None else check_float(name, value, minimum=0.0)
    if name in ("beta_1", "beta_2", "rho", "momentum"):
        return check_float(name, value, minimum=0.0, maximum=1.0)
    return check_float(name, value, minimum=0.0)


class Optimizer:
    """A description of an optimizer: hyper-parameters in Keras's names; `build(params)` makes the torch
    optimizer (`torch_class`) that applies Keras's rule.

    Args:
        learning_rate: a positive float, or a `convnet.schedules.LearningRateSchedule` (or its serialized
            dict), which `fit` applies at every step.
        **hyper: the optimizer's own hyper-parameters (see `defaults`); TypeError for any other name.
    """

    defaults: dict[str, Any] = {}
    torch_class: Callable[..., TorchOptimizer] = TorchOptimizer

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, **hyper: Any):
        if isinstance(learning_rate, (LearningRateSchedule, dict)):
            self.learning_rate: float | LearningRateSchedule = schedules.get(learning_rate)
        else:
            self.learning_rate = check_float("learning_rate", learning_rate, minimum=0.0, include_min=False)
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected argument {sorted(unknown)[0]!r}. "
                            f"Accepted: learning_rate, {', '.join(self.defaults)}")
        self.hyper = {key: _check_hyper(key, value, self.defaults[key])
                      for key, value in {**self.defaults, **hyper}.items()}
        self._excluded: list[torch.Tensor] = []  # exclude_from_weight_decay's weights, and its name pattern
        self._excluded_pattern: re.Pattern[str] | None = None
        self._built: weakref.ref[torch.optim.Optimizer] | None = None  # the torch optimizer built last

    @property
    def schedule(self) -> LearningRateSchedule | None:
        return self.learning_rate if isinstance(self.learning_rate, LearningRateSchedule) else None

    @property
    def initial_rate(self) -> float:
        """The rate the torch optimizer starts with (a schedule's value at step 0)."""
        schedule = self.schedule
        return schedule(0) if schedule is not None else float(self.learning_rate)  # type: ignore[arg-type]

    def exclude_from_weight_decay(self, var_list: Sequence[torch.Tensor] | None = None,
                                  var_names: Sequence[str] | None = None) -> None:
        """Keras's `exclude_from_weight_decay`: the weights in `var_list`, and those whose name contains one
        of `var_names` (a regular-expression search in the weight's Keras name: "kernel", "bias", "gamma"...),
        are not decayed. Each call replaces the previous exclusions, as Keras's does.

        Raises:
            ValueError: called after `build` (compile builds the optimizer of a built model), as Keras refuses
                it once the optimizer is built.
            TypeError: `var_list` is not a list of tensors, or `var_names` not a list of strings.

        >>> adamw = AdamW()
        >>> adamw.exclude_from_weight_decay(var_names=["bias"])
        >>> kernel, bias = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
        >>> [group["weight_decay"] for group in adamw.build([kernel, bias], names=["kernel", "bias"]).param_groups]
        [0.004, None]
        """
        if self._built is not None:
            raise ValueError(f"{type(self).__name__}: `exclude_from_weight_decay()` can only be configured before the "
                             f"optimizer is built (call it before `compile`)")
        if var_list is not None and (not isinstance(var_list, (list, tuple))
                                     or not all(isinstance(v, torch.Tensor) for v in var_list)):
            raise TypeError(f"`var_list` must be a list of weights (tensors). Received: var_list={describe(var_list)}")
        if var_names is not None and (not isinstance(var_names, (list, tuple))
                                      or not all(isinstance(n, str) for n in var_names)):
            raise TypeError(f"`var_names` must be a list of strings. Received: var_names={describe(var_names)}")
        self._excluded = list(var_list or [])
        self._excluded_pattern = re.compile("|".join(sorted(set(var_names)))) if var_names else None

    def _decays(self, param: torch.Tensor, name: str | None) -> bool:
        """Keras's `_use_weight_decay`: not in the excluded list, and no excluded name in the weight's name."""
        if any(param is excluded for excluded in self._excluded):
            return False
        if self._excluded_pattern is None:
            return True
        if name is None:
            raise ValueError(f"{type(self).__name__}: `exclude_from_weight_decay(var_names=...)` needs the weights' "
                             f"names; build(params, names=[...]) was given none")
        return self._excluded_pattern.search(name) is None

    def build(self, params: Iterable[torch.nn.Parameter], names: Sequence[str] | None = None) -> torch.optim.Optimizer:
        """The torch optimizer over `params` that applies this optimizer's Keras rule. `names` are the weights'
        Keras names ("kernel", "bias", ...), one per parameter, for `exclude_from_weight_decay(var_names=...)`;
        the excluded parameters form a second param group whose `weight_decay` is None."""
        params = list(params)
        if names is not None and len(names) != len(params):
            raise ValueError(f"`names` must hold one name per parameter: {len(params)} parameters, {len(names)} names")
        groups: Iterable[Any] = params
        if self.hyper.get("weight_decay") is not None and (self._excluded or self._excluded_pattern is not None):
            decays = [self._decays(p, None if names is None else names[i]) for i, p in enumerate(params)]
            kept: list[dict[str, Any]] = [{"params": [p for p, d in zip(params, decays) if d]},
                    {"params": [p for p, d in zip(params, decays) if not d], "weight_decay": None}]
            groups = [group for group in kept if group["params"]]
        optimizer = self.torch_class(groups, lr=self.initial_rate, **self.hyper)
        self._built = weakref.ref(optimizer)
        return optimizer

    @property
    def iterations(self) -> int:
        """Keras's `optimizer.iterations`: the steps taken by the torch optimizer this description built last
        (0 before it is built, and again after `compile` builds a new one). Reading it waits for the device."""
        optimizer = None if self._built is None else self._built()
        return 0 if optimizer is None else iterations(optimizer)

    def get_config(self) -> dict[str, Any]:
        rate = schedules.serialize(self.schedule) if self.schedule is not None else self.learning_rate
        return {"learning_rate": rate, **self.hyper}

    def __repr__(self) -> str:
        settings = {"learning_rate": self.learning_rate, **self.hyper}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


_REGISTRY: Registry[type[Optimizer]] = Registry("optimizer")


@_REGISTRY.register("sgd")
class SGD(Optimizer):
    """Keras's SGD: learning_rate 0.01, momentum 0, nesterov False, decoupled weight_decay None.
    The rule is `TorchSGD`'s.

    >>> SGD(momentum=0.9, nesterov=True)
    SGD(learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=None)
    """

    defaults = {"momentum": 0.0, "nesterov": False, "weight_decay": None}
    torch_class = TorchSGD

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.01, **hyper: Any):
        super().__init__(learning_rate, **hyper)


@_REGISTRY.register("adam")
class Adam(Optimizer):
    """Keras's Adam: learning_rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7, amsgrad False,
    weight_decay None. The rule is `TorchAdam`'s.

    >>> Adam(amsgrad=True).build([torch.nn.Parameter(torch.zeros(3))]).param_groups[0]["amsgrad"]
    True
    """

    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False, "weight_decay": None}
    torch_class = TorchAdam


@_REGISTRY.register("adamw")
class AdamW(Optimizer):
    """Keras's AdamW: Adam's defaults with decoupled weight_decay 0.004 (None is refused, as Keras does).
    The rule is `TorchAdamW`'s.

    >>> AdamW(weight_decay=0.01).get_config()["weight_decay"]
    0.01
    """

    defaults = {"weight_decay": 0.004, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}
    torch_class = TorchAdamW

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, **hyper: Any):
        if "weight_decay" in hyper and hyper["weight_decay"] is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate, **hyper)


@_REGISTRY.register("nadam")
class Nadam(Optimizer):
    """Keras's Nadam (Adam with Nesterov momentum and Dozat's 0.96 ** t momentum schedule): learning_rate
    0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7, weight_decay None. The rule is `TorchNadam`'s.

    >>> Nadam(learning_rate=0.01).get_config()["learning_rate"]
    0.01
    """

    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": None}
    torch_class = TorchNadam


@_REGISTRY.register("rmsprop")
class RMSprop(Optimizer):
    """Keras's RMSprop: learning_rate 0.001, rho 0.9, momentum 0, epsilon 1e-7, centered False,
    weight_decay None. The rule is `TorchRMSprop`'s.

    >>> RMSprop(centered=True).hyper["centered"]
    True
    """

    defaults = {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False, "weight_decay": None}
    torch_class = TorchRMSprop


@_REGISTRY.register("adagrad")
class Adagrad(Optimizer):
    """Keras's Adagrad: learning_rate 0.001, initial_accumulator_value 0.1, epsilon 1e-7, weight_decay None.
    The rule is `TorchAdagrad`'s.

    >>> Adagrad().hyper["initial_accumulator_value"]
    0.1
    """

    defaults = {"initial_accumulator_value": 0.1, "epsilon": 1e-7, "weight_decay": None}
    torch_class = TorchAdagrad


@_REGISTRY.register("adamax")
class Adamax(Optimizer):
    """Keras's Adamax (Adam with the infinity norm): learning_rate 0.001, beta_1 0.9, beta_2 0.999,
    epsilon 1e-7, weight_decay None. The rule is `TorchAdamax`'s.

    >>> Adamax().hyper["beta_2"]
    0.999
    """

    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": None}
    torch_class = TorchAdamax


NAdam = Nadam
_CLASSES = {cls.__name__: cls for _, cls in _REGISTRY.items()}


def iterations(optimizer: torch.optim.Optimizer) -> int:
    """How many steps `optimizer` has taken: Keras's `optimizer.iterations`, read from the per-parameter step
    counts (the largest: a parameter that had no gradient at some step counts fewer). 0 for an optimizer that
    keeps no count (torch's SGD). A host read of each count: `fit` calls it once, then counts in Python.

    >>> weight = torch.nn.Parameter(torch.ones(2))
    >>> optimizer = Adam().build([weight])
    >>> weight.grad = torch.ones(2)
    >>> optimizer.step(); optimizer.step()
    >>> iterations(optimizer)
    2
    """
    counts = [entry["step"] for entry in optimizer.state.values() if "step" in entry]
    return max((int(float(count)) for count in counts), default=0)


def set_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Write the learning rate into every param group of a torch optimizer; a rate held as a tensor (which a
    captured CUDA graph reads) is filled in place."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(float(value))
        else:
            group["lr"] = float(value)


def list_optimizers(pattern: str = "*") -> list[str]:
    """The optimizer names `get` accepts, matching a shell-style pattern ("adam*")."""
    return _REGISTRY.names(pattern)


def get(identifier: str | Optimizer | dict, learning_rate: float | LearningRateSchedule | None = None) -> Optimizer:
    """An optimizer description from a name ("nadam", "adam", "sgd", "rmsprop", ...), an Optimizer, or a
    serialized {"class_name", "config"} dict; `learning_rate` overrides the default.

    >>> get("adam", 0.01)
    Adam(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-07, amsgrad=False, weight_decay=None)
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier, argument="optimizer")
        return cls() if learning_rate is None else cls(learning_rate=learning_rate)
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]](**identifier.get("config", {}))
    raise TypeError(f"`optimizer` must be a name such as 'nadam', a convnet optimizer or a torch.optim optimizer. "
                    f"Received: optimizer={describe(identifier)}")


def serialize(optimizer: Optimizer) -> dict[str, Any]:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
