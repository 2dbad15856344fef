"""Callbacks against Keras 3: EarlyStopping's stopping and restoring rule (a transcription of Keras 3's
code in the default suite, real Keras under -m keras), callback state across a killed-and-resumed fit."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet
from convnet import callbacks, layers


def keras3_early_stopping(values, *, first_epoch=0, patience=0, min_delta=0.0, mode="min", baseline=None,
                          start_from_epoch=0, restore=False):
    """Keras 3's EarlyStopping, transcribed from keras/src/callbacks/early_stopping.py (on_train_begin,
    on_epoch_end, on_train_end) and monitor_callback.py (`_is_improvement`; `ops.less`/`ops.greater` turn
    Python floats into float32). Returns (epochs run, stopped_epoch, best_epoch, epoch of the restored
    weights or None)."""
    delta = -abs(min_delta) if mode == "min" else abs(min_delta)
    compare = np.less if mode == "min" else np.greater

    def is_improvement(current, reference):
        return reference is None or bool(compare(np.float32(current - delta), np.float32(reference)))

    wait, stopped_epoch, best, best_weights, best_epoch = 0, 0, None, None, 0
    epochs_run = 0
    for epoch, current in enumerate(values, start=first_epoch):
        epochs_run += 1
        if epoch < start_from_epoch:
            continue
        if restore and best_weights is None:
            best_weights, best_epoch = epoch, epoch
        wait += 1
        if is_improvement(current, best):
            best, best_epoch = current, epoch
            if restore:
                best_weights = epoch
            if baseline is None or is_improvement(current, baseline):
                wait = 0
            continue
        if wait >= patience and epoch > 0:
            stopped_epoch = epoch
            break
    return epochs_run, stopped_epoch, best_epoch, best_weights if restore else None


class StubModel:
    """What EarlyStopping uses of a model; its one weight is the number of the epoch that just ended."""

    def __init__(self):
        self.stop_training = False
        self.epoch = -1
        self.restored = None

    def get_weights(self):
        return [np.array([self.epoch], dtype=np.float32)]

    def set_weights(self, weights):
        self.restored = int(weights[0][0])


def drive(stopper, values, first_epoch=0, monitor="loss"):
    """Run `stopper` through the hooks `fit` calls, one epoch per value; returns what
    `keras3_early_stopping` returns."""
    model = StubModel()
    stopper.set_model(model)
    stopper.on_train_begin()
    epochs_run = 0
    for epoch, value in enumerate(values, start=first_epoch):
        model.epoch = epoch
        epochs_run += 1
        stopper.on_epoch_end(epoch, {monitor: value})
        if model.stop_training:
            break
    stopper.on_train_end()
    return epochs_run, stopper.stopped_epoch, stopper.best_epoch, model.restored


# values on a grid of quarters, so that ties and min_delta margins are exact in float32 too
grid = st.integers(0, 12).map(lambda n: n / 4)
early_stopping_cases = st.fixed_dictionaries({
    "values": st.lists(grid, min_size=1, max_size=12),
    "first_epoch": st.sampled_from([0, 0, 1, 3]),
    "patience": st.integers(0, 4),
    "min_delta": st.sampled_from([0.0, 0.0, 0.25, 0.3, 1.0, -0.5]),
    "mode": st.sampled_from(["min", "max"]),
    "baseline": st.one_of(st.none(), grid),
    "start_from_epoch": st.sampled_from([0, 0, 1, 2, 4]),
    "restore": st.booleans(),
})


def convnet_stopper(case, mode=None):
    return callbacks.EarlyStopping(monitor="loss", patience=case["patience"], min_delta=case["min_delta"],
                                   mode=mode or case["mode"], baseline=case["baseline"],
                                   start_from_epoch=case["start_from_epoch"], restore_best_weights=case["restore"])


def rule_arguments(case):
    return {key: value for key, value in case.items() if key not in ("values", "first_epoch", "restore")}


@settings(max_examples=400, deadline=None)
@given(early_stopping_cases)
def test_early_stopping_stops_and_restores_as_keras3_for_any_sequence(case):
    expected = keras3_early_stopping(case["values"], first_epoch=case["first_epoch"], restore=case["restore"],
                                     **rule_arguments(case))
    assert drive(convnet_stopper(case), case["values"], case["first_epoch"]) == expected


@pytest.mark.parametrize("values, patience, stops_after", [
    ([3, 2, 2, 2], 0, 3),      # Keras 3 stops at the first epoch without improvement when patience is 0
    ([3, 2, 2, 2, 2], 2, 4),   # ...and after `patience` epochs without one (convnet used to run one more)
    ([3, 3, 3, 3, 3], 1, 2),   # epoch 0 is never the stopping epoch
])
def test_early_stopping_stops_on_keras3s_epoch(values, patience, stops_after):
    stopper = callbacks.EarlyStopping(monitor="loss", patience=patience)
    epochs_run, stopped, *_ = drive(stopper, values)
    assert (epochs_run, stopped) == (stops_after, stops_after - 1)


def test_early_stopping_compares_in_float32_as_keras3():
    # 1 - 1e-9 is 1.0 in float32: Keras 3 sees no improvement and stops
    assert drive(callbacks.EarlyStopping(monitor="loss"), [1.0, 1.0 - 1e-9, 0.5])[:2] == (2, 1)


def test_early_stopping_restores_best_weights_even_without_stopping():
    stopper = callbacks.EarlyStopping(monitor="loss", patience=5, restore_best_weights=True)
    assert drive(stopper, [3.0, 1.0, 2.0]) == (3, 0, 1, 1)


def test_early_stopping_in_auto_mode_minimises_losses_and_maximises_accuracies():
    values = [0.5, 0.6, 0.4]
    for monitor, mode in [("loss", "min"), ("val_loss", "min"), ("accuracy", "max"), ("val_accuracy", "max")]:
        auto = drive(callbacks.EarlyStopping(monitor=monitor, patience=0), values, monitor=monitor)
        assert auto == keras3_early_stopping(values, mode=mode), monitor


def small_cnn():
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([
        layers.Input((12, 12, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=convnet.optimizers.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu")
    return model


class WeightsEachEpoch(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = self.model.get_weights()


def test_early_stopping_in_fit_restores_the_weights_of_the_best_epoch(synthetic):
    images, labels = synthetic
    model = small_cnn()
    recorder = WeightsEachEpoch()
    # a large learning rate makes the validation loss go up and down; min_delta makes improvements rare
    stopper = callbacks.EarlyStopping(patience=2, min_delta=0.02, restore_best_weights=True)
    history = model.fit(images[:200], labels[:200], batch_size=20, epochs=12, validation_split=0.3, verbose=0,
                        callbacks=[recorder, stopper])
    epochs_run, stopped, best, restored = keras3_early_stopping(history.history["val_loss"], patience=2,
                                                                min_delta=0.02, restore=True)
    assert len(history.epoch) == epochs_run and stopper.stopped_epoch == stopped and stopper.best_epoch == best
    assert restored == best != history.epoch[-1]  # the restored weights are not the last epoch's
    for got, want in zip(model.get_weights(), recorder.weights[best]):
        np.testing.assert_array_equal(got, want)


# -- callback state across a killed-and-resumed fit -------------------------------------------------------
class KillAfter(callbacks.Callback):
    """Stands for a kill between epochs: raises at the start of epoch `epoch` (the checkpoint of the epoch
    before it is written)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def fit_with_stoppers(images, labels, folder, extra=(), resume=False):
    model = small_cnn()
    stopper = callbacks.EarlyStopping(monitor="loss", patience=3, min_delta=10.0, restore_best_weights=True)
    # mode="max" on a falling loss: only the first epoch is "best"; a resumed fit without the best kept would
    # write the file of its first epoch again
    best_only = callbacks.ModelCheckpoint(os.path.join(folder, "best-{epoch}.convnet"), monitor="loss",
                                          mode="max", save_best_only=True, save_weights_only=True)
    history = model.fit(images[:200], labels[:200], batch_size=20, epochs=10, verbose=0, checkpoint_dir=folder,
                        resume=resume, callbacks=[stopper, best_only, *extra])
    return model, stopper, best_only, history


@pytest.mark.parametrize("kill_at", [2, 3])
def test_a_killed_and_resumed_fit_stops_and_restores_like_an_uninterrupted_one(kill_at, synthetic, tmp_path):
    images, labels = synthetic
    # min_delta=10: only the first epoch "improves", so EarlyStopping stops at epoch 3 and restores epoch 0;
    # a resumed fit that lost its state would start counting again and restore a later epoch
    model, stopper, best_only, history = fit_with_stoppers(images, labels, str(tmp_path / "straight"))
    assert (stopper.stopped_epoch, stopper.best_epoch, history.epoch) == (3, 0, [0, 1, 2, 3])
    folder = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        fit_with_stoppers(images, labels, folder, extra=[KillAfter(kill_at)])
    resumed, resumed_stopper, resumed_best, resumed_history = fit_with_stoppers(images, labels, folder, resume=True)
    assert (resumed_stopper.stopped_epoch, resumed_stopper.best_epoch, resumed_stopper.wait) == \
        (stopper.stopped_epoch, stopper.best_epoch, stopper.wait)
    assert resumed_best.tracker.best == best_only.tracker.best
    assert resumed_history.history == history.history
    saved = sorted(name for name in os.listdir(tmp_path / "straight") if name.startswith("best-"))
    assert sorted(name for name in os.listdir(folder) if name.startswith("best-")) == saved
    for got, want in zip(resumed.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_callback_state_round_trips_through_get_state_and_set_state():
    stopper = callbacks.EarlyStopping(monitor="loss", patience=4, restore_best_weights=True)
    drive(stopper, [3.0, 1.0, 2.0, 2.5])
    copy = callbacks.EarlyStopping(monitor="loss", patience=4, restore_best_weights=True)
    copy.set_state(*stopper.get_state())
    assert (copy.wait, copy.best, copy.best_epoch, copy.stopped_epoch) == (2, 1.0, 1, 0)
    np.testing.assert_array_equal(copy.best_weights[0], stopper.best_weights[0])


# -- real Keras 3 ------------------------------------------------------------------------------------------


@pytest.mark.keras
@settings(max_examples=150, deadline=None)
@given(case=early_stopping_cases)
def test_early_stopping_matches_real_keras3(keras, case):
    keras_stopper = keras.callbacks.EarlyStopping(
        monitor="loss", patience=case["patience"], min_delta=case["min_delta"], mode=case["mode"],
        baseline=case["baseline"], start_from_epoch=case["start_from_epoch"],
        restore_best_weights=case["restore"])
    expected = drive(keras_stopper, case["values"], case["first_epoch"])
    assert drive(convnet_stopper(case), case["values"], case["first_epoch"]) == expected
    assert keras3_early_stopping(case["values"], first_epoch=case["first_epoch"], restore=case["restore"],
                                 **rule_arguments(case)) == expected


@pytest.mark.keras
@pytest.mark.parametrize("values", [[1.0, 1.0 - 1e-9, 0.5], [3.0, 2.0, 2.0, 2.0, 2.0], [0.5, 0.4, 0.6, 0.7]])
def test_early_stopping_auto_mode_and_float32_ties_match_real_keras3(keras, values):
    for monitor in ("loss", "val_loss"):
        expected = drive(keras.callbacks.EarlyStopping(monitor=monitor, patience=1), values, monitor=monitor)
        assert drive(callbacks.EarlyStopping(monitor=monitor, patience=1), values, monitor=monitor) == expected
