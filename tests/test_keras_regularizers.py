"""Real Keras 3 against convnet: loss reductions with sample weights, label smoothing, regularizers (alone and as
a layer's `model.losses`), the orthogonal initializer's shapes, and the metric Keras picks for "accuracy".

Skipped unless Keras imports; run with
`KERAS_BACKEND=tensorflow ../.keras-venv/bin/python -m pytest tests/test_keras_regularizers.py -m keras -o addopts=""`.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from convnet import initializers, layers, losses, metrics, regularizers
from convnet.models import Sequential

pytestmark = pytest.mark.keras

RTOL = 1e-5


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    return pytest.importorskip("keras")


def as_numpy(keras, value):
    return np.asarray(keras.ops.convert_to_numpy(value), np.float64)


def normal(rng):
    return rng.standard_normal((6, 2)).astype(np.float32)


def _cases():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    return {
        "SparseCategoricalCrossentropy": (rng.integers(0, 4, 6), probabilities),
        "CategoricalCrossentropy": (np.eye(4, dtype=np.float32)[rng.integers(0, 4, 6)], probabilities),
        "BinaryCrossentropy": (rng.integers(0, 2, (6, 3)).astype(np.float32),
                               rng.uniform(0.02, 0.98, (6, 3)).astype(np.float32)),
        "MeanSquaredError": (normal(rng), normal(rng)),
        "MeanAbsoluteError": (normal(rng), normal(rng)),
    }


SAMPLE_WEIGHTS = {"unweighted": None, "weighted": np.array([0.5, 2.0, 0.0, 1.0, 3.0, 0.25], np.float32),
                  "all zero": np.zeros(6, np.float32)}


@pytest.mark.parametrize("weights", list(SAMPLE_WEIGHTS))
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None], ids=str)
@pytest.mark.parametrize("cls", list(_cases()))
def test_loss_reductions_match_keras(keras, cls, reduction, weights):
    y, p = _cases()[cls]
    sample_weight = SAMPLE_WEIGHTS[weights]
    theirs = getattr(keras.losses, cls)(reduction=reduction)(y, p, sample_weight=sample_weight)
    ours = getattr(losses, cls)(reduction=reduction)(torch.from_numpy(y), torch.from_numpy(p),
                                                     sample_weight=sample_weight)
    np.testing.assert_allclose(ours.numpy(), as_numpy(keras, theirs), rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_binary_crossentropy_label_smoothing_matches_keras(keras, label_smoothing, from_logits):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (8, 3)).astype(np.float32)
    p = rng.standard_normal((8, 3)).astype(np.float32) if from_logits else rng.uniform(0.02, 0.98, (8, 3)).astype(np.float32)
    weight = rng.uniform(0, 2, 8).astype(np.float32)
    theirs = keras.losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)(y, p, weight)
    ours = losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)(
        torch.from_numpy(y), torch.from_numpy(p), sample_weight=torch.from_numpy(weight))
    assert float(ours) == pytest.approx(float(as_numpy(keras, theirs)), rel=RTOL)


REGULARIZERS = [("L1", {"l1": 0.3}), ("L2", {"l2": 0.1}), ("L1L2", {"l1": 0.01, "l2": 0.02}), ("L1L2", {}),
                ("OrthogonalRegularizer", {"factor": 0.2}),
                ("OrthogonalRegularizer", {"factor": 0.05, "mode": "columns"})]


@pytest.mark.parametrize("name, config", REGULARIZERS, ids=lambda v: str(v))
def test_regularizer_values_match_keras(keras, name, config):
    x = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float32)
    theirs = getattr(keras.regularizers, name)(**config)(keras.ops.convert_to_tensor(x))
    ours = getattr(regularizers, name)(**config)(torch.from_numpy(x))
    assert float(ours) == pytest.approx(float(as_numpy(keras, theirs)), rel=RTOL)


@pytest.mark.parametrize("identifier", ["l1", "l2", "L1", "L2", "l1l2", "L1L2", "OrthogonalRegularizer",
                                        "orthogonal_regularizer"])
def test_regularizer_names_match_keras(keras, identifier):
    theirs, ours = keras.regularizers.get(identifier), regularizers.get(identifier)
    assert type(theirs).__name__ == type(ours).__name__
    their_config = theirs.get_config()
    for key, value in ours.get_config().items():  # Keras keeps its factors as float32
        assert their_config[key] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value)


def _copy_weights(keras_model, model):
    for ours, theirs in zip([layer for layer in model.layers if layer.weights],
                            [layer for layer in keras_model.layers if layer.weights]):
        ours.set_weights(theirs.get_weights())


def test_dense_and_conv_losses_match_keras_model_losses(keras):
    x = np.random.default_rng(3).standard_normal((5, 6, 6, 2)).astype(np.float32)
    keras_model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, activation="relu", bias_initializer="random_normal",
                            kernel_regularizer=keras.regularizers.l1(0.01), bias_regularizer=keras.regularizers.L2(0.3),
                            activity_regularizer=keras.regularizers.L1L2(l1=0.001, l2=0.002)),
        keras.layers.Flatten(),
        keras.layers.Dense(4, activation="softmax", kernel_regularizer=keras.regularizers.l2(0.01),
                           bias_initializer="random_normal", bias_regularizer="l1",
                           activity_regularizer=keras.regularizers.L2(0.05)),
    ])
    model = Sequential([
        layers.Input((6, 6, 2)),
        layers.Conv2D(3, 3, activation="relu", kernel_regularizer=regularizers.l1(0.01),
                      bias_regularizer=regularizers.L2(0.3), activity_regularizer=regularizers.L1L2(l1=0.001, l2=0.002)),
        layers.Flatten(),
        layers.Dense(4, activation="softmax", kernel_regularizer=regularizers.l2(0.01), bias_regularizer="l1",
                     activity_regularizer=regularizers.L2(0.05)),
    ])
    _copy_weights(keras_model, model)
    keras_model(x)  # Keras records the activity losses of this call
    theirs = sum(float(as_numpy(keras, loss)) for loss in keras_model.losses)
    with torch.no_grad():
        model(torch.from_numpy(x))
    assert float(regularizers.penalty(model).detach()) == pytest.approx(theirs, rel=RTOL)
    with torch.no_grad():
        model.logits(torch.from_numpy(x))  # the training engine's fused path records the same activity
    assert float(regularizers.penalty(model).detach()) == pytest.approx(theirs, rel=RTOL)


def test_depthwise_separable_and_transposed_losses_match_keras(keras):
    x = np.random.default_rng(4).standard_normal((3, 6, 6, 2)).astype(np.float32)
    regs = keras.regularizers
    keras_model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", bias_initializer="random_normal",
                                     depthwise_regularizer=regs.L1(0.01), bias_regularizer=regs.L2(0.3),
                                     activity_regularizer=regs.L2(0.05)),
        keras.layers.SeparableConv2D(5, 3, padding="same", depthwise_regularizer=regs.L2(0.02),
                                     pointwise_regularizer=regs.L1(0.04), bias_regularizer="l2",
                                     bias_initializer="random_normal", activity_regularizer="l1"),
        keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", bias_initializer="random_normal",
                                     kernel_regularizer=regs.L2(0.1), bias_regularizer=regs.L1(0.2),
                                     activity_regularizer=regs.L1(0.001)),
    ])
    model = Sequential([
        layers.Input((6, 6, 2)),
        layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", depthwise_regularizer=regularizers.L1(0.01),
                               bias_regularizer=regularizers.L2(0.3), activity_regularizer=regularizers.L2(0.05)),
        layers.SeparableConv2D(5, 3, padding="same", depthwise_regularizer=regularizers.L2(0.02),
                               pointwise_regularizer=regularizers.L1(0.04), bias_regularizer="l2",
                               activity_regularizer="l1"),
        layers.Conv2DTranspose(2, 3, strides=2, padding="same", kernel_regularizer=regularizers.L2(0.1),
                               bias_regularizer=regularizers.L1(0.2), activity_regularizer=regularizers.L1(0.001)),
    ])
    _copy_weights(keras_model, model)
    for ours, theirs in zip(model.layers, keras_model.layers):
        config = theirs.get_config()
        assert sorted(key for key in ours.get_config() if key.endswith("_regularizer")) == \
            sorted(key for key in config if key.endswith("_regularizer"))
    keras_model(x)
    theirs = sum(float(as_numpy(keras, loss)) for loss in keras_model.losses)
    with torch.no_grad():
        model(torch.from_numpy(x))
    assert float(regularizers.penalty(model).detach()) == pytest.approx(theirs, rel=RTOL)


@pytest.mark.parametrize("shape", [(10, 4), (4, 10), (3, 3, 2, 5), (3, 3, 8, 4), (1, 1, 3, 3)])
def test_orthogonal_shapes_match_keras(keras, shape):
    rows, cols = int(np.prod(shape[:-1])), shape[-1]

    def gram(values):
        flat = np.asarray(values, np.float64).reshape(rows, cols)
        return flat.T @ flat if rows >= cols else flat @ flat.T

    theirs = as_numpy(keras, keras.initializers.get("orthogonal")(shape))
    ours = initializers.get("orthogonal")(shape).numpy()
    assert theirs.shape == ours.shape == shape
    np.testing.assert_allclose(gram(theirs), np.eye(min(rows, cols)), atol=1e-5)  # Keras's flattening and side
    np.testing.assert_allclose(gram(ours), np.eye(min(rows, cols)), atol=1e-5)
    their_gain = as_numpy(keras, keras.initializers.Orthogonal(gain=2.0)(shape))
    np.testing.assert_allclose(gram(initializers.Orthogonal(gain=2.0)(shape).numpy()), gram(their_gain), atol=1e-4)


ACCURACY_CASES = [  # (loss, labels, output units, output activation)
    ("sparse_categorical_crossentropy", np.array([0, 1, 2, 0]), 3, "softmax"),
    ("sparse_categorical_crossentropy", np.array([[0], [1], [2], [0]]), 3, "softmax"),
    ("categorical_crossentropy", np.eye(3, dtype=np.float32)[[0, 1, 2, 0]], 3, "softmax"),
    ("binary_crossentropy", np.array([0.0, 1.0, 1.0, 0.0], np.float32), 1, "sigmoid"),
    ("binary_crossentropy", np.ones((4, 3), np.float32), 3, "sigmoid"),
    ("mse", np.array([0.7, 1.0, 0.0, 3.0], np.float32), 1, None),
    ("mse", np.zeros((4, 3), np.float32), 3, None),
]


@pytest.mark.parametrize("loss, y, units, activation", ACCURACY_CASES, ids=lambda v: str(getattr(v, "shape", v)))
def test_accuracy_resolution_matches_keras(keras, loss, y, units, activation):
    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, activation=activation)])
    keras_model.compile(optimizer="sgd", loss=loss, metrics=["accuracy", "acc"])
    x = np.random.default_rng(4).random((4, 3)).astype(np.float32)
    keras_model.train_on_batch(x, y)
    theirs = [(metric.name, type(metric).__name__) for metric in keras_model._compile_metrics.metrics]
    y_pred_shape = (4, units)
    ours = [(name, type(metrics.get(name, losses.get(loss), y_true_shape=y.shape, y_pred_shape=y_pred_shape)).__name__)
            for name in ("accuracy", "acc")]
    assert ours == theirs


def test_binary_accuracy_value_matches_keras_for_regression_targets(keras):
    y_true = np.array([[1.0], [0.0], [0.7], [3.0], [1.0], [0.0]], np.float32)
    y_pred = np.array([[0.9], [0.2], [0.8], [5.0], [0.4], [0.6]], np.float32)
    theirs = keras.metrics.BinaryAccuracy()
    theirs.update_state(y_true, y_pred)
    ours = metrics.BinaryAccuracy().batch_sum(torch.from_numpy(y_true), torch.from_numpy(y_pred)) / len(y_true)
    assert float(ours) == pytest.approx(float(as_numpy(keras, theirs.result())), rel=1e-6)
