"""Metrics by Keras name. Each metric returns a per-batch *sum* over samples, so the engine can
accumulate on the device and divide by the sample count once per display update (no host sync per step).

"accuracy" (or "acc") resolves as Keras 3's `compile_utils.get_metric` does, from the shapes of the labels
and of the model's output: binary accuracy when the output has one unit, sparse categorical accuracy when
the labels have one axis fewer than the output (or a last axis of 1 against more than one unit), categorical
accuracy otherwise. Keras looks at the shapes only: a multi-label binary cross-entropy gets categorical
accuracy, and `mse` with one output binary accuracy. Before the shapes are known (at compile), the loss
decides: binary for a binary cross-entropy, categorical for one-hot labels, else sparse.

    >>> resolve_accuracy(None, y_true_shape=(32,), y_pred_shape=(32, 10))
    SparseCategoricalAccuracy(name='accuracy')
    >>> get("acc", y_true_shape=(32, 1), y_pred_shape=(32, 1))     # mse with one output: as Keras
    BinaryAccuracy(name='acc')
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from convnet._internal.checks import describe, is_int
from convnet._internal.registry import Registry
from convnet.initializers import to_snake_case
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
        if y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]  # (N, 1) labels -> (N,), as Keras squeezes them
        return (y_pred.argmax(dim=-1) == y_true).sum()


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"
    needs_probabilities = False

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        return (y_pred.argmax(dim=-1) == y_true.argmax(dim=-1)).sum()


class BinaryAccuracy(Metric):
    """Fraction of outputs whose thresholded value (1 above 0.5, else 0) equals the label, averaged over each
    sample's outputs. As Keras's `binary_accuracy`, the label is compared exactly: a label that is neither 0
    nor 1 (a regression target under `mse`) never counts as right."""

    name = "binary_accuracy"
    threshold = 0.5

    def batch_sum(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        predicted = (y_pred > self.threshold).float()
        correct = (y_true.float().reshape(y_pred.shape) == predicted).float()
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


ACCURACY_NAMES = ("accuracy", "acc")  # the names Keras resolves from the labels and the output


def _check_shape(name: str, shape: Any) -> tuple[int | None, ...]:
    if not isinstance(shape, (Sequence, torch.Size)) or isinstance(shape, str) or len(shape) == 0 \
            or not all(d is None or (is_int(d) and d >= 0) for d in shape):
        raise TypeError(f"`{name}` must be a shape with the batch axis, e.g. (32, 10). Received: {name}={describe(shape)}")
    return tuple(None if d is None else int(d) for d in shape)


def _accuracy_from_loss(loss: Loss | None) -> type[Metric]:
    if isinstance(loss, BinaryCrossentropy):
        return BinaryAccuracy
    if loss is not None and loss.label_kind == "dense":
        return CategoricalAccuracy
    return SparseCategoricalAccuracy


def resolve_accuracy(loss: Loss | None, y_true_shape: Sequence[int | None] | None = None,
                     y_pred_shape: Sequence[int | None] | None = None, *, name: str = "accuracy") -> Metric:
    """The metric Keras 3 means by "accuracy" for labels of `y_true_shape` and outputs of `y_pred_shape`
    (both with the batch axis, as the tensors have them); from `loss` while either shape is unknown.

    Keras's rule (`compile_utils.is_binary_or_sparse_categorical`): binary when the output's last axis is 1;
    else sparse categorical when the labels have fewer axes than the output, or a last axis of 1 while the
    output's is larger; else categorical.

    Raises:
        TypeError: a shape that is not a sequence of sizes.
    """
    if y_true_shape is None or y_pred_shape is None:
        metric = _accuracy_from_loss(loss)()
    else:
        true_shape, pred_shape = _check_shape("y_true_shape", y_true_shape), _check_shape("y_pred_shape", y_pred_shape)
        binary = pred_shape[-1] == 1
        sparse = len(true_shape) < len(pred_shape) or (true_shape[-1] == 1 and (pred_shape[-1] or 0) > 1)
        metric = BinaryAccuracy() if binary else SparseCategoricalAccuracy() if sparse else CategoricalAccuracy()
    metric.name = name
    return metric


def _ignoring_loss(cls: type[Metric]) -> Callable[[Loss | None], Metric]:
    return lambda loss: cls()


# each name maps to a factory given the compiled loss; "accuracy" is resolved by `resolve_accuracy` instead.
# Names are read as Keras 3 reads them: the function names, the short forms, and the class names
# ("SparseCategoricalAccuracy", "MSE"), through their snake_case.
METRICS: Registry[Callable[[Loss | None], Metric]] = Registry("metric", normalise=to_snake_case)
for _name in ACCURACY_NAMES:
    METRICS.register(_name, lambda loss: resolve_accuracy(loss))
for _name, _cls in [("sparse_categorical_accuracy", SparseCategoricalAccuracy),
                    ("categorical_accuracy", CategoricalAccuracy), ("binary_accuracy", BinaryAccuracy),
                    ("sparse_top_k_categorical_accuracy", SparseTopKCategoricalAccuracy),
                    ("mean_absolute_error", MeanAbsoluteError), ("mae", MeanAbsoluteError),
                    ("mean_squared_error", MeanSquaredError), ("mse", MeanSquaredError)]:
    METRICS.register(_name, _ignoring_loss(_cls))


def list_metrics(pattern: str = "*") -> list[str]:
    """The metric names `get` accepts, those matching the shell-style `pattern` ("*accuracy")."""
    return METRICS.names(pattern)


def get(identifier: str | Metric, loss: Loss | None = None, *, y_true_shape: Sequence[int | None] | None = None,
        y_pred_shape: Sequence[int | None] | None = None) -> Metric:
    """A metric from a name (Keras's, any case, or its class name "SparseCategoricalAccuracy") or a Metric.

    "accuracy" and "acc" are resolved by `resolve_accuracy`: from the shapes when both are given (Keras's
    rule), else from `loss`. The metric is named as asked ("acc" logs as "acc", "MSE" as "MSE"), as Keras
    names a metric given by a string.

    Raises:
        ValueError: an unknown name (with close matches).
        TypeError: anything else.
    """
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"a metric must be a name such as 'accuracy' or a convnet Metric. "
                        f"Received: {describe(identifier)}")
    factory = METRICS.get(identifier, argument="metrics")
    if identifier.lower() in ACCURACY_NAMES:
        return resolve_accuracy(loss, y_true_shape, y_pred_shape, name=identifier)
    metric = factory(loss)
    metric.name = identifier
    return metric
