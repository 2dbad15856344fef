"""Optimizers with Keras's names and defaults, built on torch.optim.

An optimizer here is a description (name and hyper-parameters) that `compile` turns into a
torch.optim optimizer over the model's parameters, so it can be named in a config and saved.
Keras's defaults are kept, notably epsilon=1e-7 (PyTorch uses 1e-8) and SGD's learning rate 0.01.

    >>> opt = get("nadam")
    >>> opt
    Nadam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-07)
    >>> import torch
    >>> type(opt.build([torch.nn.Parameter(torch.zeros(1))])).__name__
    'NAdam'
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from convnet import schedules
from convnet._internal.checks import check_bool, check_float, describe, unknown_name
from convnet.schedules import LearningRateSchedule


class Optimizer:
    """Base class: hyper-parameters in Keras's names; `build(params)` makes the torch optimizer."""

    defaults: dict[str, Any] = {}

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, **hyper: Any):
        if isinstance(learning_rate, (LearningRateSchedule, dict)):
            self.learning_rate: float | LearningRateSchedule = schedules.get(learning_rate)
        else:
            self.learning_rate = check_float("learning_rate", learning_rate, minimum=0.0, include_min=False)
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected argument {sorted(unknown)[0]!r}. "
                            f"Accepted: learning_rate, {', '.join(self.defaults)}")
        self.hyper = {**self.defaults, **hyper}
        for key, value in self.hyper.items():
            if isinstance(self.defaults[key], bool):
                check_bool(key, value)
            else:
                check_float(key, value, minimum=0.0)

    @property
    def schedule(self) -> LearningRateSchedule | None:
        return self.learning_rate if isinstance(self.learning_rate, LearningRateSchedule) else None

    @property
    def initial_rate(self) -> float:
        """The rate the torch optimizer starts with (a schedule's value at step 0)."""
        return self.schedule(0) if self.schedule is not None else self.learning_rate

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        rate = schedules.serialize(self.schedule) if self.schedule is not None else self.learning_rate
        return {"learning_rate": rate, **self.hyper}

    def __repr__(self) -> str:
        settings = {"learning_rate": self.learning_rate, **self.hyper}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


class SGD(Optimizer):
    defaults = {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0}

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.01, **hyper: Any):
        super().__init__(learning_rate, **hyper)

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        h = self.hyper
        return torch.optim.SGD(params, lr=self.initial_rate, momentum=h["momentum"], nesterov=h["nesterov"],
                               weight_decay=h["weight_decay"])


class Adam(Optimizer):
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        h = self.hyper
        return torch.optim.Adam(params, lr=self.initial_rate, betas=(h["beta_1"], h["beta_2"]), eps=h["epsilon"],
                                amsgrad=h["amsgrad"])


class AdamW(Optimizer):
    defaults = {"weight_decay": 0.004, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        h = self.hyper
        return torch.optim.AdamW(params, lr=self.initial_rate, betas=(h["beta_1"], h["beta_2"]), eps=h["epsilon"],
                                 weight_decay=h["weight_decay"])


class Nadam(Optimizer):
    """Adam with Nesterov momentum; PyTorch's NAdam uses Keras's momentum schedule (decay 0.004)."""

    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        h = self.hyper
        return torch.optim.NAdam(params, lr=self.initial_rate, betas=(h["beta_1"], h["beta_2"]), eps=h["epsilon"])


class RMSprop(Optimizer):
    defaults = {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False}

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        h = self.hyper
        return torch.optim.RMSprop(params, lr=self.initial_rate, alpha=h["rho"], eps=h["epsilon"],
                                   momentum=h["momentum"], centered=h["centered"])


class Adagrad(Optimizer):
    defaults = {"initial_accumulator_value": 0.1, "epsilon": 1e-7}

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        h = self.hyper
        return torch.optim.Adagrad(params, lr=self.initial_rate, eps=h["epsilon"],
                                   initial_accumulator_value=h["initial_accumulator_value"])


class Adamax(Optimizer):
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        h = self.hyper
        return torch.optim.Adamax(params, lr=self.initial_rate, betas=(h["beta_1"], h["beta_2"]), eps=h["epsilon"])


NAdam = Nadam
_NAMED: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "nadam": Nadam, "rmsprop": RMSprop,
                                      "adagrad": Adagrad, "adamax": Adamax}
_CLASSES = {cls.__name__: cls for cls in _NAMED.values()}


def list_optimizers() -> list[str]:
    return sorted(_NAMED)


def get(identifier: str | Optimizer | dict, learning_rate: float | LearningRateSchedule | None = None) -> Optimizer:
    """An optimizer description from a name ("nadam", "adam", "sgd", "rmsprop", ...), an Optimizer, or a
    serialized {"class_name", "config"} dict; `learning_rate` overrides the default."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _NAMED:
            raise unknown_name("optimizer", identifier, _NAMED, argument="optimizer")
        cls = _NAMED[key]
        return cls() if learning_rate is None else cls(learning_rate=learning_rate)
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]](**identifier.get("config", {}))
    raise TypeError(f"`optimizer` must be a name such as 'nadam', a convnet optimizer or a torch.optim optimizer. "
                    f"Received: optimizer={describe(identifier)}")


def serialize(optimizer: Optimizer) -> dict[str, Any]:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
