"""Learning-rate schedules: the rate as a function of the optimisation step, as Keras's
`keras.optimizers.schedules`. Pass one as an optimizer's learning rate:

    >>> from convnet import optimizers, schedules
    >>> schedule = schedules.OneCycle(max_learning_rate=0.003, total_steps=100)
    >>> optimizer = optimizers.Nadam(learning_rate=schedule)
    >>> round(schedule(0), 6), round(schedule(24), 6), round(schedule(99), 9)   # start, peak, last step
    (0.00012, 0.003, 1.2e-08)

A schedule whose length is left open (`total_steps=None`, `decay_steps=None`) is fitted to the training
run by `fit`: epochs times steps per epoch.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from convnet._internal.checks import check_choice, check_float, check_int, describe
from convnet._internal.registry import Registry


class LearningRateSchedule:
    """Base class: `schedule(step)` gives the learning rate before optimisation step `step` (from 0)."""

    length_attribute: str | None = None  # the argument `fit` fills when left as None

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def bind(self, total_steps: int) -> None:
        """Fill an open length with the run's total number of steps."""
        if self.length_attribute and getattr(self, self.length_attribute) is None:
            setattr(self, self.length_attribute, total_steps)

    def _length(self) -> int:
        assert self.length_attribute is not None, "only schedules with a length call _length"
        length: int | None = getattr(self, self.length_attribute)
        if length is None:
            raise ValueError(f"{type(self).__name__}: `{self.length_attribute}` is not set; give it, or let fit "
                             f"fill it with the number of training steps")
        return length

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class Constant(LearningRateSchedule):
    def __init__(self, learning_rate: float):
        self.learning_rate = check_float("learning_rate", learning_rate, minimum=0.0, include_min=False)

    def __call__(self, step: int) -> float:
        return self.learning_rate

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}


class OneCycle(LearningRateSchedule):
    """Smith's one-cycle policy, as torch.optim.lr_scheduler.OneCycleLR: from max / div_factor up to the
    maximum over the first `pct_start` of the `total_steps` steps, then down to
    max / (div_factor * final_div_factor) at the last step."""

    length_attribute = "total_steps"

    def __init__(self, max_learning_rate: float, total_steps: int | None = None, pct_start: float = 0.25,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, anneal: str = "cos"):
        self.max_learning_rate = check_float("max_learning_rate", max_learning_rate, minimum=0.0, include_min=False)
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, minimum=1)
        self.pct_start = check_float("pct_start", pct_start, minimum=0.0, maximum=1.0, include_max=False)
        self.div_factor = check_float("div_factor", div_factor, minimum=1.0)
        self.final_div_factor = check_float("final_div_factor", final_div_factor, minimum=1.0)
        self.anneal = check_choice("anneal", anneal, ("cos", "linear"))

    def _blend(self, start: float, end: float, fraction: float) -> float:
        if self.anneal == "linear":
            return start + (end - start) * fraction
        return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2

    def __call__(self, step: int) -> float:
        initial = self.max_learning_rate / self.div_factor
        if step == 0:
            return initial  # known before fit fixes the run's length
        total = self._length()
        final = initial / self.final_div_factor
        peak = self.pct_start * total - 1  # PyTorch's phase boundaries: the peak, then the last step
        if step <= peak:
            return self._blend(initial, self.max_learning_rate, step / peak)
        fraction = min((step - max(peak, 0)) / max(total - 1 - max(peak, 0), 1), 1.0)
        return self._blend(self.max_learning_rate, final, fraction)

    def get_config(self) -> dict[str, Any]:
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "anneal": self.anneal}


class CosineDecay(LearningRateSchedule):
    """Keras 3's CosineDecay (keras/src/optimizers/schedules/learning_rate_schedule.py): cosine decay from
    the starting rate to alpha * that rate over `decay_steps`, then flat; with `warmup_target`, first a
    linear warm-up from `initial_learning_rate` to `warmup_target` over `warmup_steps`, and the decay starts
    from `warmup_target`. Without `warmup_target`, `warmup_steps` is ignored, as Keras ignores it:

        no warmup_target:  lr(t) = initial * decayed(min(t, decay_steps) / decay_steps)
        warmup_target:     lr(t) = initial + (target - initial) * t / warmup_steps       for t < warmup_steps
                           lr(t) = target * decayed(min(t - warmup_steps, decay_steps) / decay_steps)  after
        decayed(f) = (1 - alpha) * (1 + cos(pi * f)) / 2 + alpha

    >>> [round(CosineDecay(1.0, decay_steps=4)(t), 4) for t in range(6)]
    [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    >>> CosineDecay(1.0, decay_steps=4, warmup_steps=2)(1) == CosineDecay(1.0, decay_steps=4)(1)  # no target
    True
    >>> [round(CosineDecay(0.0, 4, warmup_target=1.0, warmup_steps=2)(t), 4) for t in range(4)]
    [0.0, 0.5, 1.0, 0.8536]
    """

    length_attribute = "decay_steps"

    def __init__(self, initial_learning_rate: float, decay_steps: int | None = None, alpha: float = 0.0,
                 warmup_target: float | None = None, warmup_steps: int = 0):
        self.initial_learning_rate = check_float("initial_learning_rate", initial_learning_rate, minimum=0.0)
        self.decay_steps = None if decay_steps is None else check_int("decay_steps", decay_steps, minimum=1)
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)
        self.warmup_target = None if warmup_target is None else check_float("warmup_target", warmup_target,
                                                                           minimum=0.0)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)

    def __call__(self, step: int) -> float:
        warmup = 0 if self.warmup_target is None else self.warmup_steps  # Keras ignores the steps without a target
        start = self.initial_learning_rate if self.warmup_target is None else self.warmup_target
        if step < warmup:
            return self.initial_learning_rate + (start - self.initial_learning_rate) * step / warmup
        if step == warmup:
            return start  # known before fit fixes the run's length
        fraction = min((step - warmup) / self._length(), 1.0)
        cosine = (1 + math.cos(math.pi * fraction)) / 2
        return start * ((1 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


class StepDecay(LearningRateSchedule):
    """initial * gamma ** (step // step_size): the rate drops by `gamma` every `step_size` steps."""

    def __init__(self, initial_learning_rate: float, step_size: int, gamma: float = 0.1):
        self.initial_learning_rate = check_float("initial_learning_rate", initial_learning_rate, minimum=0.0)
        self.step_size = check_int("step_size", step_size, minimum=1)
        self.gamma = check_float("gamma", gamma, minimum=0.0)

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "step_size": self.step_size,
                "gamma": self.gamma}


class ExponentialDecay(LearningRateSchedule):
    """Keras's ExponentialDecay: initial * decay_rate ** (step / decay_steps), floored with staircase=True."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False):
        self.initial_learning_rate = check_float("initial_learning_rate", initial_learning_rate, minimum=0.0)
        self.decay_steps = check_int("decay_steps", decay_steps, minimum=1)
        self.decay_rate = check_float("decay_rate", decay_rate, minimum=0.0)
        self.staircase = bool(staircase)

    def __call__(self, step: int) -> float:
        exponent = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(exponent) if self.staircase else exponent)

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase}


class _ThirdsStepDecay(StepDecay):
    """A StepDecay whose step size is a third of the run, fixed when fit binds the run's length."""

    def __init__(self, initial_learning_rate: float):
        super().__init__(initial_learning_rate, step_size=1, gamma=0.1)
        self._bound = False

    def bind(self, total_steps: int) -> None:
        if not self._bound:
            self.step_size, self._bound = max(total_steps // 3, 1), True


# The classes a serialized {"class_name", "config"} may name (as an optimizer's saved learning rate).
CLASSES: Registry[type[LearningRateSchedule]] = Registry("schedule", normalise=str)
for _cls in (Constant, OneCycle, CosineDecay, StepDecay, ExponentialDecay):
    CLASSES.register(_cls.__name__, _cls)
del _cls

# The CLI's `--schedule` names: each makes a schedule from the run's learning rate.
NAMED: Registry[Callable[[float], LearningRateSchedule]] = Registry("schedule")
NAMED.register("constant", Constant)
NAMED.register("onecycle", OneCycle)  # peaks at the learning rate
NAMED.register("cosine", CosineDecay)  # from the learning rate down to 0
NAMED.register("step", _ThirdsStepDecay)  # divided by 10 after each third of the run
NAMES = tuple(NAMED)  # the same names, as a tuple (older spelling)


def list_schedules(pattern: str = "*") -> list[str]:
    """The names `from_name` accepts that match a shell-style `pattern`, sorted."""
    return NAMED.names(pattern)


def from_name(name: str, learning_rate: float) -> LearningRateSchedule:
    """The CLI's `--schedule`: constant, onecycle (peak `learning_rate`), cosine (from `learning_rate` to 0),
    or step (divided by 10 after each third of the run; the length is fixed when fit binds it).

    Raises:
        ValueError: an unknown name (with close matches).
    """
    return NAMED.get(name, argument="schedule")(learning_rate)


def get(identifier: Any) -> LearningRateSchedule:
    """A schedule from an instance or a serialized {"class_name", "config"} dict."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict) and isinstance(identifier.get("class_name"), str):
        return CLASSES.get(identifier["class_name"])(**identifier.get("config", {}))
    raise TypeError(f"a learning-rate schedule must be a convnet.schedules object. Received: {describe(identifier)}")


def serialize(schedule: LearningRateSchedule) -> dict[str, Any]:
    if isinstance(schedule, _ThirdsStepDecay):  # saved as the plain StepDecay it has become once bound
        return {"class_name": "StepDecay", "config": schedule.get_config()}
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}
