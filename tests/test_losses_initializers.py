"""Loss reductions and sample weights, the orthogonal initializer, Keras's names, and the resolution of
"accuracy", each against a NumPy transcription of Keras 3's rule:

- keras/src/losses/loss.py `reduce_weighted_values`: values * sample_weight, then "sum" sums, "sum_over_batch_size"
  and "mean" divide the sum by the number of values, "mean_with_sample_weight" by the sum of the weights (by the
  number of values without weights), "none"/None keep the values; a zero divisor gives 0 (divide_no_nan);
- keras/src/losses/losses.py `binary_crossentropy`: labels smoothed to y (1 - ls) + 0.5 ls;
- keras/src/initializers/random_initializers.py `Orthogonal`: flatten to (prod(shape[:-1]), shape[-1]), QR of a
  normal matrix of the taller orientation, columns times sign(diag(R)), transpose back if wider, times gain;
- keras/src/trainers/compile_utils.py `is_binary_or_sparse_categorical`;
- keras/src/metrics/accuracy_metrics.py `binary_accuracy`: the label equals (y_pred > 0.5), exactly.
"""
from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch

from convnet import initializers, layers, losses, metrics

EPSILON = 1e-7


def test_doctests():
    assert doctest.testmod(losses).failed == 0
    assert doctest.testmod(metrics).failed == 0


# NumPy per-sample losses (float64), Keras's formulas

def np_sparse_ce(y, p):
    p = np.clip(np.asarray(p, np.float64), EPSILON, 1 - EPSILON)
    return -np.log(p[np.arange(len(y)), y])


def np_categorical_ce(y, p):
    p = np.clip(np.asarray(p, np.float64), EPSILON, 1 - EPSILON)
    return -(y * np.log(p)).sum(axis=-1)


def np_binary_ce(y, p, label_smoothing=0.0):
    y = np.asarray(y, np.float64) * (1 - label_smoothing) + 0.5 * label_smoothing
    p = np.clip(np.asarray(p, np.float64), EPSILON, 1 - EPSILON)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1)


def keras_reduce(values, sample_weight, reduction):
    values = np.asarray(values, np.float64)
    if sample_weight is not None:
        values = values * np.asarray(sample_weight, np.float64)
    if reduction in (None, "none"):
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    divisor = np.sum(sample_weight) if reduction == "mean_with_sample_weight" and sample_weight is not None \
        else values.size
    return total / divisor if divisor != 0 else 0.0


def _probabilities(n, k, seed):
    logits = np.random.default_rng(seed).standard_normal((n, k))
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _case(name):
    """(loss class, y_true, y_pred, NumPy per-sample losses) for 6 samples."""
    rng = np.random.default_rng(3)
    if name == "sparse":
        y, p = rng.integers(0, 4, 6), _probabilities(6, 4, 1)
        return losses.SparseCategoricalCrossentropy, y, p, np_sparse_ce(y, p)
    if name == "categorical":
        y, p = np.eye(4)[rng.integers(0, 4, 6)].astype(np.float32), _probabilities(6, 4, 2)
        return losses.CategoricalCrossentropy, y, p, np_categorical_ce(y, p)
    if name == "binary":
        y, p = rng.integers(0, 2, (6, 3)).astype(np.float32), rng.uniform(0.01, 0.99, (6, 3)).astype(np.float32)
        return losses.BinaryCrossentropy, y, p, np_binary_ce(y, p)
    y, p = rng.standard_normal((6, 2)).astype(np.float32), rng.standard_normal((6, 2)).astype(np.float32)
    if name == "mse":
        return losses.MeanSquaredError, y, p, ((p.astype(np.float64) - y) ** 2).mean(axis=1)
    return losses.MeanAbsoluteError, y, p, np.abs(p.astype(np.float64) - y).mean(axis=1)


WEIGHTS = {"unweighted": None, "weighted": np.array([0.5, 2.0, 0.0, 1.0, 3.0, 0.25], np.float32),
           "all zero": np.zeros(6, np.float32)}
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None]


@pytest.mark.parametrize("weights", list(WEIGHTS))
@pytest.mark.parametrize("reduction", REDUCTIONS, ids=str)
@pytest.mark.parametrize("name", ["sparse", "categorical", "binary", "mse", "mae"])
def test_call_reduces_as_keras(name, reduction, weights):
    cls, y, p, per_sample = _case(name)
    loss = cls(reduction=reduction)
    sample_weight = WEIGHTS[weights]
    expected = keras_reduce(per_sample, sample_weight, reduction)
    value = loss(torch.from_numpy(y), torch.from_numpy(p), sample_weight=sample_weight)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-7)
    if reduction not in (None, "none"):  # the engine's path: a weighted batch sum, then `reduce`
        weight = None if sample_weight is None else torch.from_numpy(sample_weight)
        total = loss.sum(torch.from_numpy(y), torch.from_numpy(p), sample_weight=weight)
        reduced = loss.reduce(total, len(y), None if weight is None else weight.sum())
        np.testing.assert_allclose(reduced.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_reduce_divides_without_nans_and_keeps_the_old_calls():
    loss = losses.MeanSquaredError(reduction="mean_with_sample_weight")
    prediction = torch.ones(3, 2, requires_grad=True)
    value = loss.reduce(loss.sum(torch.zeros(3, 2), prediction, sample_weight=torch.zeros(3)), 3, torch.zeros(()))
    value.backward()
    assert float(value.detach()) == 0.0 and torch.isfinite(prediction.grad).all()  # divide_no_nan: no 0 / 0 gradient
    assert float(losses.get("mse").reduce(torch.tensor(5.0), 0)) == 0.0
    sparse = losses.SparseCategoricalCrossentropy()
    y, p = torch.tensor([0, 1]), torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    assert float(sparse.sum(y, p, None)) == pytest.approx(-math.log(0.9) - math.log(0.8), rel=1e-6)  # logits=None
    assert float(sparse(y, p)) == pytest.approx(float(sparse.sum(y, p)) / 2, rel=1e-6)
    assert float(sparse(y.reshape(2, 1).float(), p)) == pytest.approx(float(sparse(y, p)), rel=1e-6)  # (N, 1) labels
    assert float(sparse([0, 1], [[0.9, 0.1], [0.2, 0.8]])) == pytest.approx(float(sparse(y, p)), rel=1e-6)
    assert float(sparse(y, p, sample_weight=[[1.0], [3.0]])) == pytest.approx(  # Keras's (N, 1) weights
        float(sparse(y, p, sample_weight=torch.tensor([1.0, 3.0]))), rel=1e-6)


def test_reduction_and_sample_weight_errors():
    with pytest.raises(ValueError, match=r"`reduction`: unknown reduction 'summ'\. Did you mean 'sum'"):
        losses.MeanSquaredError(reduction="summ")
    with pytest.raises(TypeError, match=r"`reduction` must be one of"):
        losses.BinaryCrossentropy(reduction=1)
    none = losses.SparseCategoricalCrossentropy(reduction=None)
    assert none.reduction == "none"
    with pytest.raises(ValueError, match=r"sparse_categorical_crossentropy: reduction='none' gives one loss per "
                                         r"sample, and training needs one value per batch"):
        none.reduce(torch.tensor(1.0), 2)
    with pytest.raises(ValueError, match=r"`sample_weight` must hold one weight per sample, shape \(2,\)\. "
                                         r"Received: sample_weight=a torch\.Tensor of shape \(3,\)"):
        losses.get("mse").sum(torch.zeros(2, 1), torch.zeros(2, 1), sample_weight=torch.ones(3))


def test_binary_crossentropy_label_smoothing_as_keras():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (5, 3)).astype(np.float32)
    logits = rng.standard_normal((5, 3)).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = np_binary_ce(y, p, label_smoothing=0.2).mean()
    smoothed = losses.BinaryCrossentropy(label_smoothing=0.2)
    assert float(smoothed(torch.from_numpy(y), torch.from_numpy(p.astype(np.float32)))) == pytest.approx(expected, rel=1e-5)
    from_logits = losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2)
    assert float(from_logits(torch.from_numpy(y), torch.from_numpy(logits))) == pytest.approx(expected, rel=1e-5)
    plain = float(losses.BinaryCrossentropy()(torch.from_numpy(y), torch.from_numpy(p.astype(np.float32))))
    assert plain == pytest.approx(np_binary_ce(y, p).mean(), rel=1e-5) and plain != pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match=r"`label_smoothing` must be <= 1\.0"):
        losses.BinaryCrossentropy(label_smoothing=1.5)


@pytest.mark.parametrize("loss", [losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"),
                                  losses.CategoricalCrossentropy(label_smoothing=0.1, name="cce"),
                                  losses.BinaryCrossentropy(label_smoothing=0.05, reduction="mean_with_sample_weight"),
                                  losses.MeanSquaredError(reduction="none"), losses.MeanAbsoluteError()], ids=repr)
def test_loss_config_round_trip(loss):
    spec = json.loads(json.dumps(losses.serialize(loss)))
    clone = losses.get(spec)
    assert type(clone) is type(loss) and clone.get_config() == loss.get_config() and repr(clone) == repr(loss)
    assert spec["config"]["reduction"] == loss.reduction


def test_loss_configs_and_names():
    old = losses.get({"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": False,
                                                                                "label_smoothing": 0.1}})
    assert old.reduction == "sum_over_batch_size" and old.label_smoothing == 0.1  # files written before reductions
    assert repr(losses.BinaryCrossentropy()) == "BinaryCrossentropy(from_logits=False, label_smoothing=0.0)"
    assert repr(losses.MeanSquaredError(reduction="sum")) == "MeanSquaredError(reduction='sum')"
    for name, cls in [("SparseCategoricalCrossentropy", losses.SparseCategoricalCrossentropy),
                      ("CategoricalCrossentropy", losses.CategoricalCrossentropy),
                      ("BinaryCrossentropy", losses.BinaryCrossentropy), ("bce", losses.BinaryCrossentropy),
                      ("BCE", losses.BinaryCrossentropy), ("MeanSquaredError", losses.MeanSquaredError),
                      ("MSE", losses.MeanSquaredError), ("MeanAbsoluteError", losses.MeanAbsoluteError),
                      ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy)]:
        assert type(losses.get(name)) is cls, name
    with pytest.raises(ValueError, match=r"unknown loss 'SparseCategoricalCrossentropie'\. Did you mean "
                                         r"'sparse_categorical_crossentropy'"):
        losses.get("SparseCategoricalCrossentropie")


# Initializers

def np_orthogonal(shape, gain, draws):
    """Keras's Orthogonal on the normal matrix `draws` of shape (max(rows, cols), min(rows, cols))."""
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    q, r = np.linalg.qr(draws.astype(np.float64))
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


@pytest.mark.parametrize("shape", [(10, 4), (4, 10), (6, 6), (3, 3, 2, 5), (3, 3, 1, 16), (2, 2, 8, 4)])
def test_orthogonal_matches_keras_rule(shape):
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    draws = torch.randn(max(rows, cols), min(rows, cols), generator=torch.Generator().manual_seed(11)).numpy()
    ours = initializers.Orthogonal(gain=1.5, seed=11)(shape)
    assert tuple(ours.shape) == shape and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), np_orthogonal(shape, 1.5, draws), atol=2e-5)
    flat = ours.numpy().astype(np.float64).reshape(rows, cols) / 1.5
    gram = flat.T @ flat if rows >= cols else flat @ flat.T  # orthonormal columns, or rows when wider
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-5)


def test_orthogonal_seed_names_and_layers():
    seeded = initializers.Orthogonal(seed=3)
    assert torch.equal(seeded((5, 3)), seeded((5, 3)))  # an int seed draws the same matrix every call
    torch.manual_seed(0)
    unseeded = initializers.get("orthogonal")
    assert not torch.equal(unseeded((5, 3)), unseeded((5, 3)))
    assert initializers.serialize(unseeded) == "orthogonal"
    spec = initializers.serialize(initializers.Orthogonal(gain=2.0, seed=4))
    assert spec == {"class_name": "Orthogonal", "config": {"gain": 2.0, "seed": 4}}
    assert initializers.get(json.loads(json.dumps(spec))).get_config() == spec["config"]
    with pytest.raises(ValueError, match=r"the orthogonal initializer needs a shape of rank >= 2\. Received: "
                                         r"shape=\(4,\)"):
        initializers.get("Orthogonal")((4,))
    conv = layers.Conv2D(6, 3, kernel_initializer="orthogonal")
    conv.build_for((8, 8, 2))
    kernel = conv.get_weights()[0].reshape(3 * 3 * 2, 6)  # Keras's layout, flattened as Keras flattens it
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(6), atol=1e-5)
    dense = layers.Dense(20, kernel_initializer="Orthogonal")
    dense.build_for((5,))
    kernel = dense.get_weights()[0]  # (5, 20): wider than tall, orthonormal rows
    np.testing.assert_allclose(kernel @ kernel.T, np.eye(5), atol=1e-5)


def test_variance_scaling_names_and_distributions():
    for name in ("variance_scaling", "VarianceScaling"):
        assert initializers.get(name).get_config() == {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"}
    assert initializers.VarianceScaling(distribution="normal").distribution == "truncated_normal"  # as Keras
    torch.manual_seed(0)
    w = initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")((400, 300))
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / 400), rel=0.02)
    assert w.abs().max().item() > 3 * math.sqrt(2.0 / 400)  # not cut at two standard deviations
    with pytest.raises(ValueError, match=r"`distribution` must be 'truncated_normal', 'untruncated_normal' or "
                                         r"'uniform'\. Received: distribution='gamma'"):
        initializers.VarianceScaling(distribution="gamma")


@pytest.mark.parametrize("camel, snake", [("Zeros", "zeros"), ("Ones", "ones"), ("GlorotUniform", "glorot_uniform"),
                                          ("GlorotNormal", "glorot_normal"), ("HeNormal", "he_normal"),
                                          ("HeUniform", "he_uniform"), ("LecunNormal", "lecun_normal"),
                                          ("LecunUniform", "lecun_uniform"), ("RandomNormal", "random_normal"),
                                          ("RandomUniform", "random_uniform"), ("TruncatedNormal", "truncated_normal"),
                                          ("Orthogonal", "orthogonal"),
                                          ("VarianceScaling", "variance_scaling")])
def test_initializer_class_names(camel, snake):
    ours = initializers.get(camel)
    assert initializers.serialize(ours) == snake and ours.get_config() == initializers.get(snake).get_config()


def test_unknown_initializer_suggests():
    with pytest.raises(ValueError, match=r"unknown initializer 'Orthogonl'\. Did you mean 'orthogonal'"):
        initializers.get("Orthogonl")


# Metrics: "accuracy" as Keras 3 resolves it

def keras_accuracy_class(y_true_shape, y_pred_shape):
    """compile_utils.get_metric for "accuracy", by the class name Keras picks."""
    is_binary = y_pred_shape[-1] == 1
    is_sparse = len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1] == 1 and y_pred_shape[-1] > 1)
    return "BinaryAccuracy" if is_binary else "SparseCategoricalAccuracy" if is_sparse else "CategoricalAccuracy"


ACCURACY_TABLE = [  # (loss, labels shape, output shape): the book's cases and the edge ones
    ("sparse_categorical_crossentropy", (32,), (32, 10)),
    ("sparse_categorical_crossentropy", (32, 1), (32, 10)),
    ("categorical_crossentropy", (32, 10), (32, 10)),
    ("binary_crossentropy", (32,), (32, 1)),
    ("binary_crossentropy", (32, 1), (32, 1)),
    ("binary_crossentropy", (32, 5), (32, 5)),  # multi-label: Keras picks categorical accuracy
    ("mse", (32,), (32, 1)),  # regression with one output: binary accuracy, as Keras
    ("mse", (32, 3), (32, 3)),
    ("mae", (32, 4, 4, 1), (32, 4, 4, 3)),
]


@pytest.mark.parametrize("loss, y_true_shape, y_pred_shape", ACCURACY_TABLE)
def test_accuracy_resolves_from_the_shapes_as_keras(loss, y_true_shape, y_pred_shape):
    expected = keras_accuracy_class(y_true_shape, y_pred_shape)
    for identifier in ("accuracy", "acc", "Accuracy"):
        metric = metrics.get(identifier, losses.get(loss), y_true_shape=y_true_shape, y_pred_shape=y_pred_shape)
        assert type(metric).__name__ == expected and metric.name == identifier
    resolved = metrics.resolve_accuracy(losses.get(loss), torch.Size(y_true_shape), list(y_pred_shape))
    assert type(resolved).__name__ == expected and resolved.name == "accuracy"


def test_accuracy_from_the_loss_before_the_shapes_are_known():
    assert type(metrics.get("accuracy", losses.get("binary_crossentropy"))) is metrics.BinaryAccuracy
    assert type(metrics.get("acc", losses.get("categorical_crossentropy"))) is metrics.CategoricalAccuracy
    assert type(metrics.get("accuracy", losses.get("sparse_categorical_crossentropy"))) is \
        metrics.SparseCategoricalAccuracy
    assert type(metrics.resolve_accuracy(None, (32,), None)) is metrics.SparseCategoricalAccuracy
    with pytest.raises(TypeError, match=r"`y_pred_shape` must be a shape with the batch axis, e.g\. \(32, 10\)\. "
                                        r"Received: y_pred_shape=10 \(type int\)"):
        metrics.resolve_accuracy(None, (32,), 10)


def test_metric_names_as_keras():
    for name, cls in [("SparseCategoricalAccuracy", metrics.SparseCategoricalAccuracy),
                      ("CategoricalAccuracy", metrics.CategoricalAccuracy), ("BinaryAccuracy", metrics.BinaryAccuracy),
                      ("SparseTopKCategoricalAccuracy", metrics.SparseTopKCategoricalAccuracy),
                      ("MSE", metrics.MeanSquaredError), ("MeanAbsoluteError", metrics.MeanAbsoluteError),
                      ("mae", metrics.MeanAbsoluteError)]:
        metric = metrics.get(name)
        assert type(metric) is cls and metric.name == name  # logged under the name given, as Keras
    with pytest.raises(ValueError, match=r"`metrics`: unknown metric 'SparseCategoricalAcuracy'\. Did you mean "
                                         r"'sparse_categorical_accuracy'"):
        metrics.get("SparseCategoricalAcuracy")


def test_binary_accuracy_compares_labels_exactly():
    y_true = np.array([[1.0], [0.0], [0.7], [3.0], [1.0], [0.0]], np.float32)
    y_pred = np.array([[0.9], [0.2], [0.8], [5.0], [0.4], [0.6]], np.float32)
    expected = (y_true == (y_pred > 0.5)).astype(np.float64).mean(axis=-1).sum()  # Keras's binary_accuracy
    got = metrics.BinaryAccuracy().batch_sum(torch.from_numpy(y_true[:, 0]), torch.from_numpy(y_pred))
    assert float(got) == expected == 2.0  # 0.7 and 3.0 never match a thresholded 0/1


def test_sparse_accuracy_takes_column_labels():
    y_pred = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    column = metrics.SparseCategoricalAccuracy().batch_sum(torch.tensor([[1], [1], [1]]), y_pred)
    flat = metrics.SparseCategoricalAccuracy().batch_sum(torch.tensor([1, 1, 1]), y_pred)
    assert int(column) == int(flat) == 2
