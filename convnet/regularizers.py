"""Weight and activity regularizers with Keras 3's names, formulas and defaults.

A regularizer is called on a tensor and returns a scalar penalty (keras/src/regularizers/regularizers.py):
`L1(l1)(x) = l1 * sum(|x|)`, `L2(l2)(x) = l2 * sum(x ** 2)`, `L1L2(l1, l2)(x)` the two summed. Dense and Conv2D
take `kernel_regularizer=`, `bias_regularizer=` and `activity_regularizer=`; `penalty(model)` sums their terms for
the model's last forward pass, which is what Keras adds to the compiled loss as `model.losses`.

    >>> import torch
    >>> float(L2(2.0)(torch.ones(5, 5)))   # 2 * 25, Keras's docstring example
    50.0
    >>> get("l1"), get("L1L2"), list_regularizers("l1*")
    (L1(l1=0.01), L1L2(l1=0.0, l2=0.0), ['l1', 'l1_l2', 'l1l2'])

As in Keras 3, the name "l1_l2" (Keras 3 spells it "l1l2") builds `L1L2()`, whose factors default to 0: pass
`L1L2(l1=..., l2=...)` for a penalty.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from convnet._internal.checks import check_choice, check_float, describe
from convnet._internal.registry import Registry
from convnet.initializers import to_snake_case

_EPSILON = 1e-7  # Keras's backend epsilon, the floor of the norms OrthogonalRegularizer divides by


class Regularizer:
    """Base class: `regularizer(x)` returns a scalar penalty for the tensor `x` (float32 for float32 `x`).

    A custom penalty subclasses it and defines `__call__` and `get_config`; a model holding one saves it by
    class name, which only loads where the class is registered with `REGULARIZERS.register`.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=x.dtype, device=x.device)

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Regularizer:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))


def _factor(name: str, value: Any, default: float) -> float:
    """A penalty factor: a finite number >= 0 (Keras's `validate_float_arg`); None means the default."""
    return default if value is None else check_float(name, value, minimum=0.0)


class L1L2(Regularizer):
    """`l1 * sum(|x|) + l2 * sum(x ** 2)`; both factors default to 0, as Keras 3's `L1L2`."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _factor("l1", l1, 0.0)
        self.l2 = _factor("l2", l2, 0.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        penalty = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.l1:
            penalty = penalty + self.l1 * x.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * x.square().sum()
        return penalty

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """`l1 * sum(|x|)`, l1 = 0.01 by default (as the name "l1")."""

    def __init__(self, l1: float = 0.01):
        self.l1 = _factor("l1", l1, 0.01)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1 * x.abs().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


class L2(Regularizer):
    """`l2 * sum(x ** 2)`, l2 = 0.01 by default (as the name "l2"). Keras adds it to the loss, so its gradient
    `2 * l2 * x` goes through the optimizer, unlike an optimizer's decoupled `weight_decay`."""

    def __init__(self, l2: float = 0.01):
        self.l2 = _factor("l2", l2, 0.01)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2 * x.square().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Keras's penalty on the pairwise cosines of a matrix's rows (`mode="rows"`) or columns: `factor` times
    the mean |cosine| over the n (n - 1) / 2 distinct pairs. Takes rank-2 tensors only (a Dense kernel, in
    Keras's (in, units) layout)."""

    def __init__(self, factor: float = 0.01, mode: str = "rows"):
        self.factor = check_float("factor", factor, minimum=0.0)
        self.mode = check_choice("mode", mode, ("rows", "columns"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"OrthogonalRegularizer takes rank-2 tensors (a Dense kernel). "
                             f"Received: a tensor of shape {tuple(x.shape)}")
        vectors = x if self.mode == "rows" else x.t()  # (n, d): one vector per row
        # Keras's normalize: x * min(1 / ||x||, 1 / epsilon), so a zero vector stays zero
        inverse_norm = torch.rsqrt(vectors.square().sum(dim=1, keepdim=True)).clamp(max=1 / _EPSILON)
        unit = vectors * inverse_norm  # (n, d)
        n = unit.shape[0]
        cosines = unit @ unit.t()  # (n, n)
        off_diagonal = cosines * (1 - torch.eye(n, dtype=x.dtype, device=x.device))
        pairs = n * (n - 1) / 2
        return self.factor * 0.5 * off_diagonal.abs().sum() / pairs

    def get_config(self) -> dict[str, Any]:
        return {"factor": self.factor, "mode": self.mode}


# Keras 3 exports the classes under these lower-case names too (keras.regularizers.l2 is L2)
l1 = L1
l2 = L2
l1_l2 = L1L2
orthogonal_regularizer = OrthogonalRegularizer

# Names as Keras 3's `regularizers.get` reads them: the class name or its snake_case ("L1L2" and "l1l2"),
# plus "l1_l2", the spelling of Keras 2 and of Keras 3's Python alias.
REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer", normalise=to_snake_case)
for _name, _cls in [("l1", L1), ("l2", L2), ("l1l2", L1L2), ("l1_l2", L1L2),
                    ("orthogonal_regularizer", OrthogonalRegularizer)]:
    REGULARIZERS.register(_name, _cls)
# The classes a serialized {"class_name", "config"} may name; matched exactly, as Keras matches class names.
CLASSES: Registry[type[Regularizer]] = Registry("regularizer class", normalise=str)
for _cls in (L1, L2, L1L2, OrthogonalRegularizer):
    CLASSES.register(_cls.__name__, _cls)
del _name, _cls

RegularizerLike = Regularizer | Callable[[torch.Tensor], torch.Tensor]


def list_regularizers(pattern: str = "*") -> list[str]:
    """The names `get` accepts (besides the class names) that match a shell-style `pattern` ("l1*"), sorted."""
    return REGULARIZERS.names(pattern)


def get(identifier: Any, argument: str = "regularizer") -> RegularizerLike | None:
    """A regularizer from a name ("l2", "L2", "l1_l2"), a Regularizer, a function `f(x) -> scalar tensor`,
    a serialized {"class_name": ..., "config": ...} dict, or None (no regularizer).

    Args:
        argument: the caller's argument, named in errors ("kernel_regularizer").

    Raises:
        ValueError: an unknown name or class name (with close matches), or an invalid config.
        TypeError: anything else.
    """
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        return REGULARIZERS.get(identifier, argument=argument)()
    if isinstance(identifier, dict) and isinstance(identifier.get("class_name"), str):
        cls = CLASSES.get(identifier["class_name"], argument=argument)
        config = identifier.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"`{argument}`: a serialized regularizer's config must be a dict. "
                             f"Received: {describe(config)}")
        try:
            return cls.from_config(config)
        except TypeError as error:
            raise ValueError(f"`{argument}`: invalid {cls.__name__} config {config!r} ({error})") from None
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()  # Keras instantiates a class given in place of an instance
    if callable(identifier) and not isinstance(identifier, type):
        return identifier  # a function of the tensor, as Keras accepts (it cannot be saved to a file)
    raise TypeError(f"`{argument}` must be a regularizer name such as 'l2', a convnet Regularizer, a function "
                    f"of a tensor, or None. Received: {argument}={describe(identifier)}")


def serialize(regularizer: RegularizerLike | None) -> dict[str, Any] | None:
    """{"class_name", "config"} for a Regularizer, None for None.

    Raises:
        ValueError: a plain function (files never carry code).
    """
    if regularizer is None:
        return None
    if not isinstance(regularizer, Regularizer):
        raise ValueError(f"the regularizer {getattr(regularizer, '__name__', regularizer)!r} is a function and "
                         f"cannot be saved (files never carry code); subclass convnet.regularizers.Regularizer "
                         f"and register it in REGULARIZERS and CLASSES")
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


def config_of(regularizer: RegularizerLike | None) -> dict[str, Any] | str | None:
    """How a layer's config writes a regularizer: `serialize`'s dict, or a function's name (which, like a
    custom activation's, describes the layer but does not load)."""
    if regularizer is None or isinstance(regularizer, Regularizer):
        return serialize(regularizer)
    return getattr(regularizer, "__name__", "custom")


class _ActivityRecord:
    """What a layer's activity regularizer penalises, from its last forward pass: the tensor before the
    activation and the activation. Copies and pickles of a layer leave it behind (a non-leaf tensor would
    make `copy.deepcopy(model)` fail)."""

    def __init__(self) -> None:
        self.pre_activation: torch.Tensor | None = None
        self.activation: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __deepcopy__(self, memo: dict) -> _ActivityRecord:
        return _ActivityRecord()

    def __getstate__(self) -> dict[str, Any]:
        return {"pre_activation": None, "activation": None}


class Regularized:
    """Mixin for layers with Keras's weight regularizers (`kernel_regularizer`, `bias_regularizer`; on the
    depthwise layers `depthwise_regularizer` and `pointwise_regularizer`) and `activity_regularizer`.

    The layer calls `_set_regularizers(activity_regularizer, kernel_regularizer=..., bias_regularizer=...)` in
    `__init__` (the weight regularizers by their Keras argument names, in Keras's config order),
    `_record_activity(z, activation)` where it computes its output `activation(z)` (in `pre_activation`,
    which the training engine calls alone for a final softmax), adds `regularizer_config()` to its config,
    and lists its weights in Keras's layout with `_regularized_weights()`, each under the name its
    regularizer argument starts with ("kernel" for `kernel_regularizer`).
    """

    activity_regularizer: RegularizerLike | None
    _weight_regularizers: dict[str, RegularizerLike | None]

    def _set_regularizers(self, activity_regularizer: Any, **weight_regularizers: Any) -> None:
        self._weight_regularizers = {}
        for argument, value in weight_regularizers.items():  # "kernel_regularizer": ...
            regularizer = get(value, argument)
            setattr(self, argument, regularizer)
            self._weight_regularizers[argument.removesuffix("_regularizer")] = regularizer
        self.activity_regularizer = get(activity_regularizer, "activity_regularizer")
        self._activity = _ActivityRecord()

    @property
    def has_regularizers(self) -> bool:
        return self.activity_regularizer is not None or any(r is not None for r in self._weight_regularizers.values())

    def _record_activity(self, pre_activation: torch.Tensor,
                         activation: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if self.activity_regularizer is not None:
            self._activity.pre_activation, self._activity.activation = pre_activation, activation

    def _regularized_weights(self) -> list[tuple[str, torch.Tensor]]:
        """(the weight's regularizer name, "kernel" or "bias" or ..., the weight as a view in Keras's layout),
        for the weights that exist."""
        return []

    def regularization_losses(self) -> list[torch.Tensor]:
        """Keras's `layer.losses` for this layer: the weight penalties of the current weights (trainable
        ones only, as Keras), then the activity penalty of the last forward pass divided by its batch size
        (Keras 3's `Layer.__call__` divides, so the weighting does not change with the batch size)."""
        losses = []
        for name, weight in self._regularized_weights():
            regularizer = self._weight_regularizers.get(name)
            if regularizer is not None and weight.requires_grad:
                losses.append(_scalar(regularizer, weight.float(), name))
        z, activation = self._activity.pre_activation, self._activity.activation
        if self.activity_regularizer is not None and z is not None:
            output = (activation(z) if activation is not None else z).float()
            batch = output.shape[0] if output.dim() > 0 else 1
            losses.append(_scalar(self.activity_regularizer, output, "activity") / max(batch, 1))
        return losses

    def regularizer_config(self) -> dict[str, Any]:
        return {**{f"{name}_regularizer": config_of(regularizer) for name, regularizer in self._weight_regularizers.items()},
                "activity_regularizer": config_of(self.activity_regularizer)}


def _scalar(regularizer: RegularizerLike, x: torch.Tensor, what: str) -> torch.Tensor:
    value = regularizer(x)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"the {what} regularizer {regularizer!r} must return a scalar torch.Tensor. "
                        f"Received: {describe(value)}")
    return value.reshape(())


def penalty(model: torch.nn.Module) -> torch.Tensor | None:
    """The regularization terms of every layer of `model` for its last forward pass, summed (a float32 scalar
    on the model's device, differentiable with respect to the weights); None when no layer has a regularizer.

    Keras's training step adds this (`sum(model.losses)`) to the compiled loss of the batch, after the
    loss's reduction: `total = loss.reduce(loss_sum, n) + penalty(model)`, then `total.backward()`. Call it
    after the forward pass of the batch (activity penalties are recorded there), in evaluation too: Keras's
    reported loss, in `fit` and `evaluate`, includes the penalty.

        >>> import torch
        >>> from convnet import layers
        >>> dense = layers.Dense(2, kernel_initializer="ones", kernel_regularizer=L1(0.01))
        >>> out = dense(torch.ones(4, 3))
        >>> round(float(penalty(torch.nn.Sequential(dense)).detach()), 6)   # 0.01 * 6 kernel entries of 1
        0.06
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module (a convnet model or layer). Received: {describe(model)}")
    terms: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, Regularized) and module.has_regularizers:
            terms.extend(module.regularization_losses())
    if not terms:
        return None
    return torch.stack(terms).sum()

