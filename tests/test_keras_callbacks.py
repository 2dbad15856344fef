"""convnet's callbacks against real Keras 3 (`-m keras`; skipped unless Keras 3 imports).

The same sequence of logs drives a Keras 3 callback and convnet's through the hooks `fit` calls, and their
decisions (learning rates, counters, files saved, the direction chosen for mode="auto", errors) must agree,
with each other and with the transcriptions of Keras's rules in test_callbacks.py. Then short real fits,
Keras and convnet from the same weights, shuffle off: LearningRateScheduler with the book's one-argument
schedule, ReduceLROnPlateau, TerminateOnNaN(raise_error=True). Run with
`KERAS_BACKEND=tensorflow python -m pytest tests/test_keras_callbacks.py -m keras -o addopts=""`.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet
from convnet import callbacks, layers

from .test_callbacks import (
    SavingModel,
    StubModel,
    assert_same_epochs,
    batch_epochs,
    drive_checkpoint,
    drive_reducer,
    exponential_decay_fn,
    grid,
    keras3_batch_saves,
    keras3_best_saves,
    keras3_reduce_lr_on_plateau,
    reduce_lr_arguments,
    reduce_lr_cases,
)

pytestmark = pytest.mark.keras


class KerasRateModel:
    """What Keras's ReduceLROnPlateau uses of a model: a real Keras optimizer, whose rate is a float32
    variable; `learning_rate` reads it for `drive_reducer`."""

    def __init__(self, keras, learning_rate):
        self.optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
        self.metrics = []

    @property
    def learning_rate(self):
        return float(np.asarray(self.optimizer.learning_rate))


class KerasSavingModel(SavingModel):
    """SavingModel with the `overwrite` argument Keras's ModelCheckpoint passes."""

    def save(self, path, overwrite=True):
        super().save(path.replace(".keras", ".convnet"))


@settings(max_examples=150, deadline=None)
@given(reduce_lr_cases)
def test_reduce_lr_on_plateau_matches_real_keras3(keras, case):
    arguments, values, rate = reduce_lr_arguments(case), case["values"], case["learning_rate"]
    expected = drive_reducer(keras.callbacks.ReduceLROnPlateau(**arguments), values, rate,
                             model=KerasRateModel(keras, rate))
    assert_same_epochs(drive_reducer(callbacks.ReduceLROnPlateau(**arguments), values, rate), expected)
    assert_same_epochs(keras3_reduce_lr_on_plateau(values, rate, **arguments), expected)


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_reduce_lr_on_plateau_refuses_a_factor_of_one_or_more_as_keras3(keras, factor):
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau does not support a factor >= 1.0. Received factor="):
        keras.callbacks.ReduceLROnPlateau(factor=factor)
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau does not support a factor >= 1.0 .*Received: factor="):
        callbacks.ReduceLROnPlateau(factor=factor)


# (loss, output units and activation, metrics compiled, labels maker) for the mode="auto" comparison
COMPILED = {
    "sparse": ("sparse_categorical_crossentropy", (3, "softmax"),
               ["accuracy", "acc", "sparse_categorical_accuracy", "sparse_top_k_categorical_accuracy"],
               lambda n: np.arange(n) % 3),
    "one-hot": ("categorical_crossentropy", (3, "softmax"),
                ["accuracy", "categorical_accuracy", "mae", "mse", "mean_absolute_error"],
                lambda n: np.eye(3, dtype=np.float32)[np.arange(n) % 3]),
    "binary": ("binary_crossentropy", (1, "sigmoid"), ["accuracy", "binary_accuracy", "mean_squared_error"],
               lambda n: (np.arange(n) % 2).astype(np.float32)[:, None]),
}
MONITORS = ["loss", "val_loss", "accuracy", "val_accuracy", "acc", "val_sparse_categorical_accuracy",
            "sparse_top_k_categorical_accuracy", "val_categorical_accuracy", "mae", "val_mse",
            "val_mean_absolute_error", "binary_accuracy", "val_mean_squared_error", "val_auc", "learning_rate"]


def keras_direction(keras, callback):
    """The direction Keras 3 chose for a monitoring callback's mode="auto", or the ValueError it raised."""
    try:
        callback._set_monitor_op()  # what Keras's callbacks call at their first epoch end
    except ValueError:
        return "error"
    return "min" if callback.monitor_op is keras.ops.less else "max"


def convnet_direction(callback, model):
    callback.set_model(model)
    try:
        callback.on_train_begin()
    except ValueError as error:
        assert "cannot tell whether that metric should be maximized or minimized" in str(error)
        return "error"
    return callback.tracker.mode


@pytest.mark.parametrize("compiled", sorted(COMPILED))
def test_auto_mode_matches_real_keras3_on_compiled_models(keras, compiled):
    loss, (units, activation), metrics, make_labels = COMPILED[compiled]
    keras_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation=activation)])
    keras_model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    keras_model.fit(np.zeros((4, 4), np.float32), make_labels(4), verbose=0)  # builds the compiled metrics
    model = convnet.Sequential([layers.Input((4,)), layers.Dense(units, activation=activation)])
    model.compile(optimizer="sgd", loss=loss, metrics=metrics, device="cpu")
    decided = set()
    for monitor in MONITORS:
        pairs = [(keras.callbacks.EarlyStopping(monitor=monitor), callbacks.EarlyStopping(monitor=monitor)),
                 (keras.callbacks.ReduceLROnPlateau(monitor=monitor), callbacks.ReduceLROnPlateau(monitor=monitor)),
                 (keras.callbacks.ModelCheckpoint("m.keras", monitor=monitor),
                  callbacks.ModelCheckpoint("m.convnet", monitor=monitor))]
        for keras_callback, convnet_callback in pairs:
            keras_callback.set_model(keras_model)
            expected = keras_direction(keras, keras_callback)
            assert convnet_direction(convnet_callback, model) == expected, (monitor, type(convnet_callback))
            decided.add(expected)
    assert decided == {"min", "max", "error"}  # the case covers the three outcomes


@settings(max_examples=100, deadline=None)
@given(epochs=batch_epochs, save_freq=st.integers(1, 9))
def test_model_checkpoint_save_freq_matches_real_keras3(keras, epochs, save_freq):
    expected = drive_checkpoint(keras.callbacks.ModelCheckpoint("e{epoch}-b{batch}.keras", save_freq=save_freq),
                                epochs, model=KerasSavingModel())
    assert drive_checkpoint(callbacks.ModelCheckpoint("e{epoch}-b{batch}.convnet", save_freq=save_freq),
                            epochs) == expected
    assert [f"e{epoch}-b{batch}.convnet" for epoch, batch in keras3_batch_saves(epochs, save_freq)] == expected


@settings(max_examples=100, deadline=None)
@given(values=st.lists(grid, min_size=1, max_size=8), mode=st.sampled_from(["min", "max", "auto"]),
       threshold=st.one_of(st.none(), grid))
def test_model_checkpoint_initial_value_threshold_matches_real_keras3(keras, values, mode, threshold):
    def checkpoint(module, extension):
        return module.ModelCheckpoint(f"e{{epoch}}.{extension}", monitor="loss", mode=mode, save_best_only=True,
                                      initial_value_threshold=threshold)

    expected = drive_checkpoint(checkpoint(keras.callbacks, "keras"), [[]] * len(values), model=KerasSavingModel(),
                                epoch_values=values)
    assert drive_checkpoint(checkpoint(callbacks, "convnet"), [[]] * len(values), epoch_values=values) == expected
    saved = keras3_best_saves(values, mode="min" if mode == "auto" else mode, initial_value_threshold=threshold)
    assert [f"e{epoch}.convnet" for epoch in saved] == expected


def test_terminate_on_nan_stops_or_raises_as_real_keras3(keras):
    for raise_error in (False, True):
        keras_guard, guard = keras.callbacks.TerminateOnNaN(raise_error=raise_error), callbacks.TerminateOnNaN(
            raise_error=raise_error)
        keras_model, model = StubModel(), StubModel()
        keras_guard.set_model(keras_model)
        guard.set_model(model)
        if raise_error:
            with pytest.raises(RuntimeError, match=r"^NaN or Inf loss encountered at batch 3\. .*Terminating "
                                                   r"training immediately\.$"):
                keras_guard.on_train_batch_end(3, {"loss": float("nan")})
            with pytest.raises(RuntimeError, match=r"^NaN or Inf loss encountered at batch 4 of epoch 1\. "
                                                   r"Terminating training immediately\.$"):
                guard.trigger(0, 3)  # convnet counts batches from 1 in its messages
        else:
            keras_guard.on_train_batch_end(3, {"loss": float("inf")})
            guard.trigger(0, 3)
        assert keras_model.stop_training is model.stop_training is not raise_error


# -- real fits, Keras and convnet from the same weights ----------------------------------------------------
def twin_models(keras, learning_rate):
    """A softmax regression in Keras and in convnet with the same weights, plain SGD (no momentum)."""
    rng = np.random.default_rng(0)
    keras_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    keras_model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
                        loss="sparse_categorical_crossentropy")
    keras_model.set_weights([rng.normal(0, 0.5, (4, 3)).astype(np.float32), np.zeros(3, np.float32)])
    model = convnet.Sequential([layers.Input((4,)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer=convnet.optimizers.SGD(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", device="cpu")
    model.set_weights(keras_model.get_weights())
    x = rng.normal(0, 1, (60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    return keras_model, model, x, y


def rate_recorder(base, read, rates):
    """A callback (Keras's or convnet's `base`) that appends the rate each training batch ran with to `rates`."""
    class Recorder(base):
        def on_train_batch_end(self, batch, logs=None):
            rates.append(read(self.model))

    return Recorder()


def fit_twins(keras, learning_rate, make_callbacks, epochs):
    keras_model, model, x, y = twin_models(keras, learning_rate)
    keras_rates, rates = [], []
    keras_recorder = rate_recorder(keras.callbacks.Callback, lambda m: float(np.asarray(m.optimizer.learning_rate)),
                                   keras_rates)
    keras_history = keras_model.fit(x, y, batch_size=20, epochs=epochs, shuffle=False, verbose=0,
                                    callbacks=[*make_callbacks(keras.callbacks), keras_recorder])
    history = model.fit(x, y, batch_size=20, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[*make_callbacks(callbacks), rate_recorder(callbacks.Callback,
                                                                             lambda m: m.learning_rate, rates)])
    assert len(rates) == 3 * epochs and rates == pytest.approx(keras_rates, rel=1e-6)
    for key in ("learning_rate", "loss"):
        assert history.history[key] == pytest.approx(keras_history.history[key], rel=1e-4), key
    for got, want in zip(model.get_weights(), keras_model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    return history


def test_learning_rate_scheduler_with_a_one_argument_schedule_matches_a_real_keras3_fit(keras):
    history = fit_twins(keras, 0.5, lambda module: [module.LearningRateScheduler(exponential_decay_fn)], epochs=4)
    assert history.history["learning_rate"] == pytest.approx([exponential_decay_fn(epoch) for epoch in range(4)])


def test_reduce_lr_on_plateau_matches_a_real_keras3_fit(keras):
    # min_delta=10: only the first epoch is "best", so the decisions cannot hinge on the last bits of the loss
    history = fit_twins(keras, 0.5, lambda module: [module.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1,
                                                                            cooldown=2, min_delta=10.0)], epochs=5)
    assert history.history["learning_rate"] == [0.5, 0.5, 0.25, 0.25, 0.125]


def test_terminate_on_nan_with_raise_error_matches_a_real_keras3_fit(keras):
    keras_model, model, x, y = twin_models(keras, 0.1)
    x[45] = np.nan  # sample 45 is in batch 2 (from 0) of 20
    with pytest.raises(RuntimeError, match=r"NaN or Inf loss encountered at batch 2\.") as keras_error:
        keras_model.fit(x, y, batch_size=20, epochs=2, shuffle=False, verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN(raise_error=True)])
    with pytest.raises(RuntimeError, match=r"NaN or Inf loss encountered at batch 3 of epoch 1\.") as error:
        model.fit(x, y, batch_size=20, epochs=2, shuffle=False, verbose=0,
                  callbacks=[callbacks.TerminateOnNaN(raise_error=True)])
    assert "Terminating training immediately." in str(error.value) and \
        "Terminating training immediately." in str(keras_error.value)
