"""Losses with Keras's names, semantics and reductions.

A loss sees the model's output. When the model ends in a softmax (or sigmoid) and the loss is a
cross-entropy, the training engine hands the loss the pre-activation logits instead and the loss works
in log space (log-softmax), as Keras does: probabilities that round to 0 never produce log(0).

Calling a loss gives Keras's value: per-sample losses, times the sample weights if any, reduced by the
loss's `reduction` (keras/src/losses/loss.py): "sum_over_batch_size" (the default) and "mean" divide the
weighted sum by the batch size, "sum" keeps it, "mean_with_sample_weight" divides it by the sum of the
weights (by the batch size without weights), and "none" (or None) returns the weighted per-sample values.
A zero divisor gives 0, as Keras's `divide_no_nan`.

    >>> import torch
    >>> loss = get("sparse_categorical_crossentropy")
    >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    >>> round(float(loss(torch.tensor([0, 1]), probs)), 4)   # -(log 0.9 + log 0.8) / 2
    0.1643
    >>> weighted = SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
    >>> round(float(weighted(torch.tensor([0, 1]), probs, sample_weight=torch.tensor([1.0, 3.0]))), 4)
    0.1937

The training engine works with batch sums: `sum(y_true, y_pred, logits=..., sample_weight=...)` is the
weighted sum of the per-sample losses, and `reduce(total, count, weight_sum)` turns it into the value above.
A sample's loss is the mean over all its non-batch axes (Keras averages over the last axis only, so for
outputs of rank > 2 "sum" and sample weights count samples here, positions in Keras).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from convnet._internal.checks import check_bool, check_choice, check_float, check_str, describe
from convnet._internal.registry import Registry
from convnet.initializers import to_snake_case

_EPSILON = 1e-7  # Keras's backend epsilon, used to clip probabilities
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")  # Keras 3's; None is "none"


def check_reduction(reduction: Any) -> str:
    """One of `REDUCTIONS` (None reads as "none", as in Keras).

    Raises:
        TypeError / ValueError: anything else, with close matches.
    """
    return "none" if reduction is None else check_choice("reduction", reduction, REDUCTIONS)


def divide_no_nan(numerator: torch.Tensor, denominator: torch.Tensor | float) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 (Keras's `ops.divide_no_nan`); no host sync for a
    tensor denominator, and a finite gradient where it is 0."""
    if not isinstance(denominator, torch.Tensor):
        return numerator / denominator if denominator != 0 else torch.zeros_like(numerator)
    zero = denominator == 0
    safe = torch.where(zero, torch.ones_like(denominator), denominator)  # no 0 / 0 even in the unused branch
    return torch.where(zero, torch.zeros_like(numerator), numerator / safe)


def check_sample_weight(sample_weight: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Per-sample weights as a 1-D float tensor of length `batch` on `like`'s device. Accepts (N,) or Keras's
    (N, 1), as a tensor, a NumPy array or a list.

    Raises:
        ValueError: another shape.
    """
    weight = sample_weight if isinstance(sample_weight, torch.Tensor) else torch.as_tensor(sample_weight)
    if weight.dim() == 2 and weight.shape[1] == 1:
        weight = weight[:, 0]  # (N, 1) -> (N,)
    if weight.dim() != 1 or weight.shape[0] != batch:
        raise ValueError(f"`sample_weight` must hold one weight per sample, shape ({batch},). "
                         f"Received: sample_weight={describe(sample_weight)}")
    return weight.to(device=like.device, dtype=like.dtype)


class Loss:
    """Base class: subclasses define `per_sample(y_true, y_pred, logits)`, one loss per sample (N,).

    `loss(y_true, y_pred, sample_weight=None)` is Keras's value with the loss's `reduction`; the training
    engine uses `sum` and `reduce`.

    Args:
        from_logits: whether `y_pred` holds logits rather than probabilities.
        reduction: one of `REDUCTIONS`.
        name: the loss's name (default: its registry name).
    """

    name = "loss"
    fused_activation: str | None = None  # the output activation this loss can absorb as logits
    label_kind = "any"  # "sparse" (class indices), "dense" (one-hot / probabilities) or "any"

    def __init__(self, from_logits: bool = False, reduction: str | None = "sum_over_batch_size",
                 name: str | None = None):
        self.from_logits = check_bool("from_logits", from_logits)
        self.reduction = check_reduction(reduction)
        if name is not None:
            self.name = check_str("name", name)

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        raise NotImplementedError

    def sum(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool | None = None,
            sample_weight: Any = None) -> torch.Tensor:
        """The batch's per-sample losses times `sample_weight` (one weight per sample, or None), summed.

        The training loop divides it through `reduce`, not by the batch size itself, and accumulates it (plus
        the regularization penalty times the batch size) for the epoch's reported loss; see `reduce`.
        `logits` overrides `from_logits` (the engine passes logits where it left out the final softmax).
        """
        values = self.per_sample(y_true, y_pred, self.from_logits if logits is None else logits)
        if sample_weight is not None:
            values = values * check_sample_weight(sample_weight, values.shape[0], values)
        return values.sum()

    def reduce(self, total: torch.Tensor, count: int | torch.Tensor,
               weight_sum: torch.Tensor | float | None = None) -> torch.Tensor:
        """Keras's value of this loss for a batch whose weighted per-sample losses sum to `total` (`sum`), over
        `count` samples whose weights sum to `weight_sum` (None without sample weights).

        "sum_over_batch_size" and "mean": total / count; "sum": total; "mean_with_sample_weight": total /
        weight_sum, or total / count without weights; a zero divisor gives 0 (Keras's divide_no_nan).

        The training step computes `loss.reduce(loss.sum(y, out, sample_weight=w), n, w.sum())` (plus the
        regularization penalty) and differentiates it, where it used to divide the sum by n. Keras reports
        the epoch's loss as the mean of these batch values weighted by the batch size: accumulate
        `reduce(...) * n` over the batches (equal to the sum for the default reduction) and divide by the
        number of samples.

        Raises:
            ValueError: reduction "none", which has no single value to train on.
        """
        if self.reduction == "none":
            raise ValueError(f"{self.name}: reduction='none' gives one loss per sample, and training needs one "
                             f"value per batch; use 'sum_over_batch_size' (Keras's default), 'sum', 'mean' or "
                             f"'mean_with_sample_weight'")
        if self.reduction == "sum":
            return total
        if self.reduction == "mean_with_sample_weight" and weight_sum is not None:
            return divide_no_nan(total, weight_sum)
        return divide_no_nan(total, count)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None, *,
                 logits: bool | None = None) -> torch.Tensor:
        """Keras's `loss(y_true, y_pred, sample_weight)`: the reduced value (a scalar), or the weighted
        per-sample values for reduction "none". Arrays and lists are converted; sparse labels may be (N, 1)."""
        y_pred = y_pred if isinstance(y_pred, torch.Tensor) else torch.as_tensor(y_pred, dtype=torch.float32)
        y_true = y_true if isinstance(y_true, torch.Tensor) else torch.as_tensor(y_true)
        if self.label_kind == "sparse":
            if y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1:
                y_true = y_true[..., 0]  # (N, 1) -> (N,), as Keras squeezes
            y_true = y_true.long()
        values = self.per_sample(y_true, y_pred, self.from_logits if logits is None else logits)
        weight = None
        if sample_weight is not None:
            weight = check_sample_weight(sample_weight, values.shape[0], values)
            values = values * weight
        if self.reduction == "none":
            return values
        return self.reduce(values.sum(), values.shape[0], None if weight is None else weight.sum())

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits, "reduction": self.reduction, "name": self.name}

    def __repr__(self) -> str:
        defaults = {"reduction": "sum_over_batch_size", "name": type(self).name}
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if defaults.get(k, object()) != v)
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

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None):
        super().__init__(from_logits, reduction, name)
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
    """Cross-entropy for one or more independent yes/no outputs, labels in [0, 1], averaged over the outputs.
    `label_smoothing` moves the labels towards 0.5, as Keras: y * (1 - label_smoothing) + 0.5 * label_smoothing."""

    name = "binary_crossentropy"
    fused_activation = "sigmoid"
    label_kind = "dense"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None):
        super().__init__(from_logits, reduction, name)
        self.label_smoothing = check_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        target = y_true.float().reshape(y_pred.shape)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        if logits:
            loss = F.binary_cross_entropy_with_logits(y_pred.float(), target, reduction="none")
        else:
            p = y_pred.float().clamp(_EPSILON, 1 - _EPSILON)
            loss = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
        return loss.reshape(loss.shape[0], -1).mean(dim=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class MeanSquaredError(Loss):
    """Mean over each sample's outputs of (y_pred - y_true) ** 2."""

    name = "mean_squared_error"

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str | None = None):
        super().__init__(False, reduction, name)

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        diff = (y_pred.float() - y_true.float().reshape(y_pred.shape)) ** 2
        return diff.reshape(diff.shape[0], -1).mean(dim=1)

    def get_config(self) -> dict[str, Any]:
        return {"reduction": self.reduction, "name": self.name}


class MeanAbsoluteError(MeanSquaredError):
    """Mean over each sample's outputs of |y_pred - y_true|."""

    name = "mean_absolute_error"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        diff = (y_pred.float() - y_true.float().reshape(y_pred.shape)).abs()
        return diff.reshape(diff.shape[0], -1).mean(dim=1)


class LossFunction(Loss):
    """A user's callable `fn(y_true, y_pred)` returning a per-sample vector or a batch mean.
    Works in `fit`, but a model compiled with it saves without its loss."""

    def __init__(self, function: Any, reduction: str | None = "sum_over_batch_size"):
        super().__init__(False, reduction)
        self.function = function
        self.name = getattr(function, "__name__", "loss")

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        value = self.function(y_true, y_pred)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the loss function {self.name!r} must return a torch.Tensor. Received: {describe(value)}")
        return value.expand(y_pred.shape[0]) if value.dim() == 0 else value.reshape(y_pred.shape[0], -1).mean(1)

    def get_config(self) -> dict[str, Any]:
        return {"reduction": self.reduction}


# Names as Keras 3's `losses.get` reads them: the function names, their short forms, and the class names
# ("SparseCategoricalCrossentropy" is read as its snake_case, as Keras's registry holds both).
LOSSES: Registry[type[Loss]] = Registry("loss", normalise=to_snake_case)
for _name, _cls in [("sparse_categorical_crossentropy", SparseCategoricalCrossentropy),
                    ("categorical_crossentropy", CategoricalCrossentropy),
                    ("binary_crossentropy", BinaryCrossentropy), ("bce", BinaryCrossentropy),
                    ("mean_squared_error", MeanSquaredError), ("mse", MeanSquaredError),
                    ("mean_absolute_error", MeanAbsoluteError), ("mae", MeanAbsoluteError)]:
    LOSSES.register(_name, _cls)
_CLASSES = {cls.__name__: cls for _, cls in LOSSES.items()}


def list_losses(pattern: str = "*") -> list[str]:
    """The loss names `get` accepts, those matching the shell-style `pattern` ("*crossentropy")."""
    return LOSSES.names(pattern)


def get(identifier: str | Loss | dict) -> Loss:
    """A loss from a Keras name ("sparse_categorical_crossentropy", "mse", or the class name
    "SparseCategoricalCrossentropy"), a Loss instance, a function (y_true, y_pred), or a serialized
    {"class_name", "config"} dict."""
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
