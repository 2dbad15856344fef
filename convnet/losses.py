"""Losses with Keras's names and semantics.

A loss sees the model's output. When the model ends in a softmax (or sigmoid) and the loss is a
cross-entropy, the training engine hands the loss the pre-activation logits instead and the loss works
in log space (log-softmax), as Keras does: probabilities that round to 0 never produce log(0).

    >>> import torch
    >>> loss = get("sparse_categorical_crossentropy")
    >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    >>> round(float(loss(torch.tensor([0, 1]), probs)), 4)   # -(log 0.9 + log 0.8) / 2
    0.1643
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from convnet._internal.checks import check_bool, check_float, describe
from convnet._internal.registry import Registry

_EPSILON = 1e-7  # Keras's backend epsilon, used to clip probabilities


class Loss:
    """Base class. `__call__(y_true, y_pred)` returns the mean loss over the batch; `sum` the sum."""

    name = "loss"
    fused_activation: str | None = None  # the output activation this loss can absorb as logits
    label_kind = "any"  # "sparse" (class indices), "dense" (one-hot / probabilities) or "any"

    def __init__(self, from_logits: bool = False):
        self.from_logits = check_bool("from_logits", from_logits)

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        raise NotImplementedError

    def sum(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool | None = None) -> torch.Tensor:
        return self.per_sample(y_true, y_pred, self.from_logits if logits is None else logits).sum()

    def __call__(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool | None = None) -> torch.Tensor:
        return self.per_sample(y_true, y_pred, self.from_logits if logits is None else logits).mean()

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _log_probs(y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
    if logits:
        return torch.log_softmax(y_pred.float(), dim=-1)
    return torch.log(y_pred.float().clamp(_EPSILON, 1 - _EPSILON))


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer class labels (N,) and class scores (N, K)."""

    name = "sparse_categorical_crossentropy"
    fused_activation = "softmax"
    label_kind = "sparse"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        super().__init__(from_logits)
        self.label_smoothing = check_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        if logits:  # fused log-softmax + NLL: the stable path
            return F.cross_entropy(y_pred.float(), y_true, reduction="none", label_smoothing=self.label_smoothing)
        log_p = _log_probs(y_pred, logits)
        nll = -log_p.gather(-1, y_true.unsqueeze(-1)).squeeze(-1)
        if self.label_smoothing:
            return (1 - self.label_smoothing) * nll - self.label_smoothing * log_p.mean(dim=-1)
        return nll

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class CategoricalCrossentropy(SparseCategoricalCrossentropy):
    """Cross-entropy with one-hot (or probability) labels (N, K)."""

    name = "categorical_crossentropy"
    label_kind = "dense"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        target = y_true.float()
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / target.shape[-1]
        return -(target * _log_probs(y_pred, logits)).sum(dim=-1)


class BinaryCrossentropy(Loss):
    """Cross-entropy for one or more independent yes/no outputs, labels in [0, 1]."""

    name = "binary_crossentropy"
    fused_activation = "sigmoid"
    label_kind = "dense"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        target = y_true.float().reshape(y_pred.shape)
        if logits:
            loss = F.binary_cross_entropy_with_logits(y_pred.float(), target, reduction="none")
        else:
            p = y_pred.float().clamp(_EPSILON, 1 - _EPSILON)
            loss = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
        return loss.reshape(loss.shape[0], -1).mean(dim=1)


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def __init__(self) -> None:
        super().__init__(False)

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        diff = (y_pred.float() - y_true.float().reshape(y_pred.shape)) ** 2
        return diff.reshape(diff.shape[0], -1).mean(dim=1)

    def get_config(self) -> dict[str, Any]:
        return {}


class MeanAbsoluteError(MeanSquaredError):
    name = "mean_absolute_error"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        diff = (y_pred.float() - y_true.float().reshape(y_pred.shape)).abs()
        return diff.reshape(diff.shape[0], -1).mean(dim=1)


class LossFunction(Loss):
    """A user's callable `fn(y_true, y_pred)` returning a per-sample vector or a batch mean.
    Works in `fit`, but a model compiled with it saves without its loss."""

    def __init__(self, function: Any):
        super().__init__(False)
        self.function = function
        self.name = getattr(function, "__name__", "loss")

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        value = self.function(y_true, y_pred)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the loss function {self.name!r} must return a torch.Tensor. Received: {describe(value)}")
        return value.expand(y_pred.shape[0]) if value.dim() == 0 else value.reshape(y_pred.shape[0], -1).mean(1)

    def get_config(self) -> dict[str, Any]:
        return {}


LOSSES: Registry[type[Loss]] = Registry("loss")
for _name, _cls in [("sparse_categorical_crossentropy", SparseCategoricalCrossentropy),
                    ("categorical_crossentropy", CategoricalCrossentropy),
                    ("binary_crossentropy", BinaryCrossentropy),
                    ("mean_squared_error", MeanSquaredError), ("mse", MeanSquaredError),
                    ("mean_absolute_error", MeanAbsoluteError), ("mae", MeanAbsoluteError)]:
    LOSSES.register(_name, _cls)
_CLASSES = {cls.__name__: cls for _, cls in LOSSES.items()}


def list_losses(pattern: str = "*") -> list[str]:
    """The loss names `get` accepts, those matching the shell-style `pattern` ("*crossentropy")."""
    return LOSSES.names(pattern)


def get(identifier: str | Loss | dict) -> Loss:
    """A loss from a Keras name, a Loss instance, or a serialized {"class_name", "config"} dict."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        return LOSSES.get(identifier, argument="loss")()
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]](**identifier.get("config", {}))
    if callable(identifier) and not isinstance(identifier, type):
        return LossFunction(identifier)
    raise TypeError(f"`loss` must be a name such as 'sparse_categorical_crossentropy', a convnet Loss or a "
                    f"function (y_true, y_pred). "
                    f"Received: loss={describe(identifier)}")


def check_from_logits(loss: Loss, output_activation: str | None) -> None:
    """Keras's warning for `from_logits=True` on the output of a softmax (or sigmoid): the loss then
    applies the activation a second time. Training goes on as Keras's does (the outputs are taken as
    logits); the warning is Keras's wording (without the stray quote that opens Keras's message)."""
    if loss.from_logits and output_activation is not None and output_activation == loss.fused_activation:
        activation = {"softmax": "Softmax", "sigmoid": "Sigmoid"}[output_activation]
        warnings.warn(f"`{loss.name}` received `from_logits=True`, but the `output` argument was produced by a "
                      f"{activation} activation and thus does not represent logits. Was this intended?",
                      stacklevel=5)  # check_from_logits <- require_compiled <- loop.fit <- Sequential.fit <- you


def to_probabilities(loss: Loss, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from the logits a cross-entropy `loss` takes: softmax, or sigmoid for a binary one."""
    if loss.fused_activation == "sigmoid":
        return torch.sigmoid(logits.float())
    if loss.fused_activation == "softmax":
        return torch.softmax(logits.float(), dim=-1)
    raise ValueError(f"{loss.name} does not take logits")


def from_probabilities(loss: Loss, probabilities: torch.Tensor) -> torch.Tensor:
    """Logits whose probabilities (`to_probabilities`) are `probabilities`: log p for a softmax (any shift
    of it would do), log p - log(1 - p) for a sigmoid; 0 and 1 become -inf and inf."""
    p = probabilities.float()
    if loss.fused_activation == "sigmoid":
        return torch.log(p) - torch.log1p(-p)
    if loss.fused_activation == "softmax":
        return torch.log(p)
    raise ValueError(f"{loss.name} does not take logits")


def serialize(loss: Loss) -> dict[str, Any]:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
