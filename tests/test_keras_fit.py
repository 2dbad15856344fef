"""`fit` against real Keras 3 (issue 16): the same small model, weights and data in Keras and convnet,
shuffle off, trained with a decaying schedule over two fit calls, with sample and class weights, with
Adam(weight_decay=...) and with a batch size larger than the data: the weights agree within 1e-4
relative afterwards, and the History holds the same keys in the same order with the same values.

Run with `-m keras` (skipped unless Keras 3 imports), e.g.
`KERAS_BACKEND=tensorflow python -m pytest tests/test_keras_fit.py -m keras -o addopts=""`.
"""
from __future__ import annotations

import numpy as np
import pytest

from convnet import layers, losses, optimizers, regularizers, schedules
from convnet.models import Sequential
from convnet.training import loop

pytestmark = pytest.mark.keras

RTOL = 1e-4


def models(keras, optimizer, keras_optimizer, weighted_metrics=None):
    """The same conv net in Keras and convnet, convnet's weights copied from Keras's, both compiled with the
    sparse cross-entropy and accuracy (and Keras's `weighted_metrics`, set on convnet's model by hand until
    its compile takes them)."""
    k = keras.layers
    keras.utils.set_random_seed(0)
    keras_model = keras.models.Sequential([
        keras.Input(shape=(8, 8, 1)), k.Conv2D(4, 3, padding="same", activation="relu"), k.MaxPooling2D(2),
        k.Flatten(), k.Dense(3, activation="softmax")])
    model = Sequential([
        layers.Input(shape=(8, 8, 1)), layers.Conv2D(4, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.set_weights(keras_model.get_weights())
    keras_model.compile(optimizer=keras_optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                        weighted_metrics=weighted_metrics)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  weighted_metrics=weighted_metrics, device="cpu")
    return keras_model, model


def data(count=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((count, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 3, count)
    return x, y


def assert_same(keras_model, keras_history, model, history, start):
    for got, want in zip(model.get_weights(), keras_model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)
    assert list(history.history) == list(keras_history.history)
    for key, values in keras_history.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=RTOL, atol=1e-6, err_msg=key)
    assert max(np.abs(a - b).max() for a, b in zip(start, model.get_weights())) > 1e-3  # it trained


@pytest.mark.parametrize("kind", ["exponential", "cosine"])
def test_a_schedule_continues_across_two_fit_calls_as_in_keras(keras, kind):
    if kind == "exponential":
        ours = schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.5)
        theirs = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.5)
    else:
        ours = schedules.CosineDecay(0.05, decay_steps=10, alpha=0.1, warmup_steps=4)  # warm-up ignored: no target
        theirs = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=10, alpha=0.1, warmup_steps=4)
    keras_model, model = models(keras, optimizers.SGD(learning_rate=ours), keras.optimizers.SGD(learning_rate=theirs))
    x, y = data()
    start = model.get_weights()
    arguments = {"batch_size": 20, "shuffle": False, "verbose": 0, "validation_data": data(12, seed=1)}
    keras_model.fit(x, y, epochs=2, **arguments)
    loop.fit(model, x, y, epochs=2, **arguments)
    keras_history = keras_model.fit(x, y, epochs=4, initial_epoch=2, **arguments)
    history = loop.fit(model, x, y, epochs=4, initial_epoch=2, **arguments)
    assert int(keras_model.optimizer.iterations) == model.optimizer.iterations == 12
    assert_same(keras_model, keras_history, model, history, start)


@pytest.mark.parametrize("weighting", ["sample_weight", "class_weight"])
@pytest.mark.parametrize("weighted_metrics", [None, ["accuracy", "sparse_categorical_accuracy"]])
def test_sample_and_class_weights_train_and_report_as_in_keras(keras, weighting, weighted_metrics):
    """Keras weighs the loss (sum(w * l) / batch size) and its `weighted_metrics`, not its `metrics`."""
    keras_model, model = models(keras, optimizers.Adam(learning_rate=0.01), keras.optimizers.Adam(learning_rate=0.01),
                                weighted_metrics)
    x, y = data()
    if weighting == "sample_weight":
        weights = {"sample_weight": np.random.default_rng(3).uniform(0.0, 3.0, len(y)).astype(np.float32)}
    else:
        weights = {"class_weight": {0: 0.2, 2: 3.0}}
    x_val, y_val = data(12, seed=1)
    w_val = np.linspace(0.5, 2.0, 12).astype(np.float32)
    start = model.get_weights()
    arguments = {"batch_size": 16, "epochs": 3, "shuffle": False, "verbose": 0,
                 "validation_data": (x_val, y_val, w_val), **weights}
    keras_history = keras_model.fit(x, y, **arguments)
    history = loop.fit(model, x, y, **arguments)
    assert_same(keras_model, keras_history, model, history, start)
    keras_result = keras_model.evaluate(x_val, y_val, sample_weight=w_val, verbose=0, return_dict=True)
    result = loop.evaluate(model, x_val, y_val, sample_weight=w_val, verbose=0, return_dict=True)
    assert list(result) == list(keras_result)
    assert list(result.values()) == pytest.approx(list(keras_result.values()), rel=RTOL)


def test_adam_weight_decay_trains_as_in_keras(keras):
    keras_model, model = models(keras, optimizers.Adam(learning_rate=0.01, weight_decay=0.5),
                                keras.optimizers.Adam(learning_rate=0.01, weight_decay=0.5))
    x, y = data()
    start = model.get_weights()
    keras_history = keras_model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    history = loop.fit(model, x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert_same(keras_model, keras_history, model, history, start)


def test_a_batch_size_larger_than_the_data_trains_one_batch_as_in_keras(keras):
    keras_model, model = models(keras, optimizers.SGD(learning_rate=0.5), keras.optimizers.SGD(learning_rate=0.5))
    x, y = data(20)
    start = model.get_weights()
    keras_history = keras_model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0,
                                    validation_split=0.25, validation_freq=2)
    history = loop.fit(model, x, y, batch_size=64, epochs=3, shuffle=False, verbose=0, validation_split=0.25,
                       validation_freq=2)
    assert int(keras_model.optimizer.iterations) == model.optimizer.iterations == 3
    assert_same(keras_model, keras_history, model, history, start)


def test_regularization_penalties_and_a_loss_reduction_train_and_report_as_in_keras(keras):
    """Keras adds `model.losses` (kernel, bias and activity penalties) to the batch loss, in the gradient and
    in the logged loss; a "sum" reduction leaves the weighted sum undivided."""
    k, r = keras.layers, keras.regularizers
    keras.utils.set_random_seed(0)
    keras_model = keras.models.Sequential([
        keras.Input(shape=(8, 8, 1)), k.Conv2D(4, 3, padding="same", activation="relu",
                                               kernel_regularizer=r.L2(0.01)),
        k.MaxPooling2D(2), k.Flatten(),
        k.Dense(3, activation="softmax", kernel_regularizer=r.L1(0.01), bias_regularizer=r.L2(0.1),
                activity_regularizer=r.L2(0.01))])
    model = Sequential([
        layers.Input(shape=(8, 8, 1)), layers.Conv2D(4, 3, padding="same", activation="relu",
                                                     kernel_regularizer=regularizers.L2(0.01)),
        layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(3, activation="softmax", kernel_regularizer=regularizers.L1(0.01),
                     bias_regularizer=regularizers.L2(0.1), activity_regularizer=regularizers.L2(0.01))])
    model.set_weights(keras_model.get_weights())
    keras_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), metrics=["accuracy"],
                        loss=keras.losses.SparseCategoricalCrossentropy(reduction="sum"))
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), metrics=["accuracy"], device="cpu",
                  loss=losses.SparseCategoricalCrossentropy(reduction="sum"))
    x, y = data()
    weights = np.random.default_rng(3).uniform(0.0, 1.0, len(y)).astype(np.float32)
    start = model.get_weights()
    arguments = {"batch_size": 16, "epochs": 3, "shuffle": False, "verbose": 0, "sample_weight": weights,
                 "validation_data": data(12, seed=1)}
    keras_history = keras_model.fit(x, y, **arguments)
    history = loop.fit(model, x, y, **arguments)
    assert_same(keras_model, keras_history, model, history, start)
