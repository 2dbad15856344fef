"""Metrics by Keras name. Each metric returns a per-batch *sum* over samples, so the engine can
accumulate on the device and divide by the sample count once per display update (no host sync per step).

"accuracy" (or "acc") resolves from the loss, as in Keras: sparse labels give sparse categorical
accuracy, one-hot labels categorical accuracy, a binary cross-entropy binary accuracy (threshold 0.5).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from convnet._internal.checks import describe
from convnet._internal.registry import Registry
from convnet.losses import BinaryCrossentropy, Loss


class Metric:
    name = "metric"
    needs_probabilities = True  # False for argmax-based metrics, which logits serve as well

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class SparseCategoricalAccuracy(Metric):
    name = "sparse_categorical_accuracy"
    needs_probabilities = False

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        return (y_pred.argmax(dim=-1) == y_true).sum()


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"
    needs_probabilities = False

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        return (y_pred.argmax(dim=-1) == y_true.argmax(dim=-1)).sum()


class BinaryAccuracy(Metric):
    """Fraction of outputs on the right side of 0.5 (of 0 when the engine passes logits)."""

    name = "binary_accuracy"
    threshold = 0.5

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        correct = ((y_pred > self.threshold) == (y_true.reshape(y_pred.shape) > 0.5)).float()
        return correct.reshape(correct.shape[0], -1).mean(dim=1).sum()


class SparseTopKCategoricalAccuracy(Metric):
    name = "sparse_top_k_categorical_accuracy"
    needs_probabilities = False

    def __init__(self, k: int = 5):
        self.k = k

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        k = min(self.k, y_pred.shape[-1])
        return (y_pred.topk(k, dim=-1).indices == y_true.unsqueeze(-1)).any(dim=-1).sum()


class MeanAbsoluteError(Metric):
    name = "mean_absolute_error"

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        diff = (y_pred.float() - y_true.float().reshape(y_pred.shape)).abs()
        return diff.reshape(diff.shape[0], -1).mean(dim=1).sum()


class MeanSquaredError(Metric):
    name = "mean_squared_error"

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        diff = (y_pred.float() - y_true.float().reshape(y_pred.shape)) ** 2
        return diff.reshape(diff.shape[0], -1).mean(dim=1).sum()


def _accuracy(loss: Loss | None) -> Metric:
    """Keras's "accuracy": binary for a binary cross-entropy, categorical for one-hot labels, else sparse."""
    if isinstance(loss, BinaryCrossentropy):
        return BinaryAccuracy()
    if loss is not None and loss.label_kind == "dense":
        return CategoricalAccuracy()
    return SparseCategoricalAccuracy()


def _ignoring_loss(cls: type[Metric]) -> Callable[[Loss | None], Metric]:
    return lambda loss: cls()


# each name maps to a factory given the compiled loss (only "accuracy" depends on it)
METRICS: Registry[Callable[[Loss | None], Metric]] = Registry("metric")
for _name in ("accuracy", "acc"):
    METRICS.register(_name, _accuracy)
for _name, _cls in [("sparse_categorical_accuracy", SparseCategoricalAccuracy),
                    ("categorical_accuracy", CategoricalAccuracy), ("binary_accuracy", BinaryAccuracy),
                    ("sparse_top_k_categorical_accuracy", SparseTopKCategoricalAccuracy),
                    ("mean_absolute_error", MeanAbsoluteError), ("mae", MeanAbsoluteError),
                    ("mean_squared_error", MeanSquaredError), ("mse", MeanSquaredError)]:
    METRICS.register(_name, _ignoring_loss(_cls))


def list_metrics(pattern: str = "*") -> list[str]:
    """The metric names `get` accepts, those matching the shell-style `pattern` ("*accuracy")."""
    return METRICS.names(pattern)


def get(identifier: str | Metric, loss: Loss | None = None) -> Metric:
    """A metric from a name or a Metric; "accuracy" is resolved from `loss` as Keras does. The metric is
    named as asked ("acc" logs as "acc"), lower-cased except for the accuracy aliases."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"a metric must be a name such as 'accuracy' or a convnet Metric. "
                        f"Received: {describe(identifier)}")
    metric = METRICS.get(identifier, argument="metrics")(loss)
    metric.name = identifier if identifier.lower() in ("accuracy", "acc") else identifier.lower()
    return metric
