"""Callbacks against Keras 3: transcriptions of Keras 3's rules in plain Python/NumPy (EarlyStopping's
stopping and restoring, mode="auto", ReduceLROnPlateau's state machine, ModelCheckpoint's batch counting and
initial threshold, LearningRateScheduler's one-argument fallback, TerminateOnNaN's raise_error), driven
through the hooks `fit` calls and in short real fits; callback state across a killed-and-resumed fit.
Real Keras 3 is in test_keras_callbacks.py (and below for EarlyStopping), under -m keras."""
from __future__ import annotations

import doctest
import os
import re
import warnings

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
    """What EarlyStopping uses of a model; its one weight is the number of the epoch that just ended.
    `metrics` are the compiled metrics mode="auto" looks at."""

    def __init__(self, metrics=()):
        self.stop_training = False
        self.epoch = -1
        self.restored = None
        self.metrics = list(metrics)

    def get_weights(self):
        return [np.array([self.epoch], dtype=np.float32)]

    def set_weights(self, weights):
        self.restored = int(weights[0][0])


def drive(stopper, values, first_epoch=0, monitor="loss", metrics=()):
    """Run `stopper` through the hooks `fit` calls, one epoch per value; returns what
    `keras3_early_stopping` returns."""
    model = StubModel(metrics)
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
    accuracy = [convnet.metrics.get("accuracy")]
    for monitor, mode in [("loss", "min"), ("val_loss", "min"), ("accuracy", "max"), ("val_accuracy", "max")]:
        auto = drive(callbacks.EarlyStopping(monitor=monitor, patience=0), values, monitor=monitor, metrics=accuracy)
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


# -- mode="auto": Keras 3's MonitorCallback._set_monitor_op ------------------------------------------------
# The direction each Keras 3 metric declares (`_direction` in keras/src/metrics/*.py), by the name it logs as
KERAS3_DIRECTIONS = {
    "accuracy": "up", "acc": "up", "sparse_categorical_accuracy": "up", "categorical_accuracy": "up",
    "binary_accuracy": "up", "sparse_top_k_categorical_accuracy": "up",
    "mae": "down", "mean_absolute_error": "down", "mse": "down", "mean_squared_error": "down",
}


def keras3_auto_mode(monitor, compiled):
    """Keras 3's rule for mode="auto", transcribed from monitor_callback.py: the name without "val_" is
    minimised if it is "loss"; a compiled metric of that name with a direction decides (the last one);
    otherwise ValueError. `compiled` lists the compiled metrics' names."""
    name = monitor.removeprefix("val_")
    mode = "min" if name == "loss" else None
    for metric_name in compiled:
        if metric_name == name and metric_name in KERAS3_DIRECTIONS:
            mode = "max" if KERAS3_DIRECTIONS[metric_name] == "up" else "min"
    if mode is None:
        raise ValueError(f"cannot determine the direction of {monitor}")
    return mode


MONITORING = {
    "EarlyStopping": lambda monitor: callbacks.EarlyStopping(monitor=monitor),
    "ReduceLROnPlateau": lambda monitor: callbacks.ReduceLROnPlateau(monitor=monitor),
    "ModelCheckpoint": lambda monitor: callbacks.ModelCheckpoint("unused.convnet", monitor=monitor,
                                                                 save_best_only=True),
}


@pytest.mark.parametrize("kind", sorted(MONITORING))
@pytest.mark.parametrize("name", convnet.metrics.list_metrics())
def test_auto_mode_follows_keras3_for_every_registered_metric(kind, name):
    compiled = [convnet.metrics.get(name)]
    for monitor in (name, f"val_{name}", "loss", "val_loss"):
        callback = MONITORING[kind](monitor)
        callback.set_model(StubModel(compiled))
        callback.on_train_begin()
        assert callback.tracker.mode == keras3_auto_mode(monitor, [name]), monitor


@pytest.mark.parametrize("kind", sorted(MONITORING))
@pytest.mark.parametrize("monitor, compiled", [("val_accuracy", []), ("accuracy", ["mae"]), ("val_auc", ["accuracy"]),
                                               ("learning_rate", ["accuracy"]), ("val_losses", [])])
def test_auto_mode_on_a_metric_of_unknown_direction_raises_at_train_begin_as_keras3(kind, monitor, compiled):
    with pytest.raises(ValueError, match="cannot determine"):
        keras3_auto_mode(monitor, compiled)
    callback = MONITORING[kind](monitor)
    callback.set_model(StubModel([convnet.metrics.get(name) for name in compiled]))
    with pytest.raises(ValueError, match=re.escape(f"{kind} callback received monitor={monitor!r}, but convnet "
                                                   "cannot tell whether that metric should be maximized or "
                                                   "minimized") + ".*Pass `mode='max'`.*`mode='min'`"):
        callback.on_train_begin()
    explicit = {"EarlyStopping": callbacks.EarlyStopping, "ReduceLROnPlateau": callbacks.ReduceLROnPlateau}
    if kind in explicit:  # an explicit mode needs no direction
        for mode in ("min", "max"):
            chosen = explicit[kind](monitor=monitor, mode=mode)
            chosen.set_model(StubModel())
            chosen.on_train_begin()
            assert chosen.tracker.mode == mode


def test_auto_mode_is_decided_again_for_each_fit(synthetic):
    images, labels = synthetic
    model = small_cnn()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    stopper = callbacks.EarlyStopping(monitor="val_accuracy", patience=5)
    with pytest.raises(ValueError, match="monitor='val_accuracy'"):  # no accuracy compiled
        model.fit(images[:40], labels[:40], epochs=1, validation_split=0.5, verbose=0, callbacks=[stopper])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    model.fit(images[:40], labels[:40], epochs=1, validation_split=0.5, verbose=0, callbacks=[stopper])
    assert stopper.tracker.mode == "max"


def test_a_missing_monitor_warns_as_keras3():
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=0)
    with pytest.warns(UserWarning, match=r"Early stopping is conditioned on metric 'val_loss', which is not in the "
                                         r"logs \(available: loss\); skipping this epoch"):
        assert drive(stopper, [1.0, 2.0, 3.0]) == (3, 0, 0, None)  # never stops
    reducer = callbacks.ReduceLROnPlateau(patience=0)
    reducer.set_model(RateModel(0.1))
    reducer.on_train_begin()
    with pytest.warns(UserWarning, match="Learning rate reduction is conditioned on metric 'val_loss'"):
        reducer.on_epoch_end(0, {"loss": 1.0})
    assert reducer.model.learning_rate == 0.1


# -- ReduceLROnPlateau ------------------------------------------------------------------------------------
def keras3_reduce_lr_on_plateau(values, learning_rate, *, factor=0.1, patience=10, mode="min", min_delta=1e-4,
                                cooldown=0, min_lr=0.0):
    """Keras 3's ReduceLROnPlateau, transcribed from keras/src/callbacks/reduce_lr_on_plateau.py (on_train_begin,
    on_epoch_end, _reduce_optimizer_lr) with monitor_callback.py's `_is_improvement` (float32 comparisons).
    The optimizer keeps the rate in a float32 variable. A value of None stands for logs without the
    monitored entry. Returns, per epoch, (logged "learning_rate", rate after the epoch, wait,
    cooldown_counter, best)."""
    delta = -abs(min_delta) if mode == "min" else abs(min_delta)
    compare = np.less if mode == "min" else np.greater
    rate = np.float32(learning_rate)
    best, wait, cooldown_counter = None, 0, 0
    epochs = []
    for current in values:
        logged = float(rate)  # logs["learning_rate"] is written before any reduction
        if current is not None:
            if cooldown_counter > 0:
                cooldown_counter -= 1
                wait = 0
            if best is None or compare(np.float32(current - delta), np.float32(best)):
                best, wait = current, 0
            elif not cooldown_counter > 0:
                wait += 1
                if wait >= patience:
                    old = float(rate)
                    if old > np.float32(min_lr):
                        rate = np.float32(max(old * factor, min_lr))
                        cooldown_counter, wait = cooldown, 0
        epochs.append((logged, float(rate), wait, cooldown_counter, best))
    return epochs


class RateModel:
    """What ReduceLROnPlateau and LearningRateScheduler use of a model: a learning rate to read and set."""

    def __init__(self, learning_rate, metrics=()):
        self.learning_rate = learning_rate
        self.metrics = list(metrics)
        self.stop_training = False


def drive_reducer(reducer, values, learning_rate, monitor="val_loss", model=None):
    """Run `reducer` through the hooks `fit` calls, one epoch per value (None: the logs lack `monitor`);
    returns what `keras3_reduce_lr_on_plateau` returns."""
    model = model or RateModel(learning_rate)
    reducer.set_model(model)
    reducer.on_train_begin()
    epochs = []
    for epoch, value in enumerate(values):
        logs = {"loss": 1.0} if value is None else {monitor: value}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the missing monitor
            reducer.on_epoch_end(epoch, logs)
        epochs.append((logs["learning_rate"], model.learning_rate, reducer.wait, reducer.cooldown_counter,
                       reducer.best))
    return epochs


def assert_same_epochs(got, expected):
    assert len(got) == len(expected)
    for (logged, rate, *counters), (want_logged, want_rate, *want_counters) in zip(got, expected):
        assert logged == pytest.approx(want_logged, rel=1e-6) and rate == pytest.approx(want_rate, rel=1e-6)
        assert counters == want_counters


reduce_lr_cases = st.fixed_dictionaries({
    "values": st.lists(st.one_of(grid, grid, grid, st.none()), min_size=1, max_size=14),
    "learning_rate": st.sampled_from([0.1, 0.01, 1.0, 0.003]),
    "factor": st.sampled_from([0.1, 0.5, 0.2, 0.0, 0.9]),
    "patience": st.integers(0, 4),
    "mode": st.sampled_from(["min", "max"]),
    "min_delta": st.sampled_from([0.0, 1e-4, 0.25, 0.3, -0.5]),
    "cooldown": st.integers(0, 3),
    "min_lr": st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.05]),
})


def reduce_lr_arguments(case):
    return {key: value for key, value in case.items() if key not in ("values", "learning_rate")}


@settings(max_examples=250, deadline=None)
@given(reduce_lr_cases)
def test_reduce_lr_on_plateau_follows_keras3_for_any_sequence(case):
    expected = keras3_reduce_lr_on_plateau(case["values"], case["learning_rate"], **reduce_lr_arguments(case))
    got = drive_reducer(callbacks.ReduceLROnPlateau(**reduce_lr_arguments(case)), case["values"],
                        case["learning_rate"])
    assert_same_epochs(got, expected)


@pytest.mark.parametrize("values, arguments, rates", [
    # patience 2: the second epoch without improvement on 1.0 reduces; cooldown 2 leaves one epoch uncounted
    # (Keras counts the cooldown down before it looks at it, so cooldown=1 would leave none)
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], {"patience": 2, "cooldown": 2}, [0.1, 0.1, 0.01, 0.01, 0.01, 0.001]),
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], {"patience": 2, "cooldown": 1}, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]),
    # min_lr stops the reductions (0.1 -> 0.05 -> 0.05); an improvement resets the wait
    ([3.0, 3.0, 2.0, 2.0, 2.0], {"patience": 1, "factor": 0.5, "min_lr": 0.05}, [0.1, 0.05, 0.05, 0.05, 0.05]),
    # min_delta: 1.0 -> 0.99995 is no improvement with the default 1e-4, 0.9998 is one; 0.9999 ties in float32
    ([1.0, 0.99995, 0.9998], {"patience": 1}, [0.1, 0.01, 0.01]),
    ([1.0, 0.9999], {"patience": 1}, [0.1, 0.01]),
])
def test_reduce_lr_on_plateau_hand_cases(values, arguments, rates):
    got = drive_reducer(callbacks.ReduceLROnPlateau(monitor="loss", **arguments), values, 0.1, monitor="loss")
    assert [rate for _, rate, *_ in got] == pytest.approx(rates)
    assert_same_epochs(got, keras3_reduce_lr_on_plateau(values, 0.1, **arguments))


def test_reduce_lr_on_plateau_sets_the_torch_optimizers_rate():
    model = small_cnn()
    reducer = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0)
    drive_reducer(reducer, [1.0, 1.0], 0.5, monitor="loss", model=model)
    assert model.learning_rate == model.optimizer_.param_groups[0]["lr"] == pytest.approx(0.25)


@pytest.mark.parametrize("arguments, error, message", [
    ({"factor": 1.0}, ValueError, "ReduceLROnPlateau does not support a factor >= 1.0 .*Received: factor=1.0"),
    ({"factor": 2}, ValueError, "does not support a factor >= 1.0"),
    ({"factor": -0.5}, ValueError, r"`factor` must be >= 0.0. Received: factor=-0.5"),
    ({"factor": "0.5"}, TypeError, "`factor` must be a number"),
    ({"patience": -1}, ValueError, r"`patience` must be >= 0. Received: patience=-1"),
    ({"cooldown": 1.5}, TypeError, "`cooldown` must be an integer"),
    ({"min_lr": -1e-3}, ValueError, r"`min_lr` must be >= 0.0"),
    ({"mode": "lowest"}, ValueError, "`mode`: unknown mode 'lowest'"),
    ({"monitor": 3}, TypeError, "`monitor` must be a string"),
])
def test_reduce_lr_on_plateau_checks_its_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        callbacks.ReduceLROnPlateau(**arguments)


def test_reduce_lr_on_plateau_in_fit_follows_keras3s_rule(synthetic):
    images, labels = synthetic
    model = small_cnn()
    reducer = callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, cooldown=1, min_delta=0.02)
    history = model.fit(images[:120], labels[:120], batch_size=20, epochs=6, validation_split=0.5, verbose=0,
                        callbacks=[reducer])
    expected = keras3_reduce_lr_on_plateau(history.history["val_loss"], 0.5, factor=0.5, patience=1, cooldown=1,
                                           min_delta=0.02)
    assert history.history["learning_rate"] == pytest.approx([logged for logged, *_ in expected], rel=1e-6)
    assert model.learning_rate == pytest.approx(expected[-1][1], rel=1e-6)
    assert model.learning_rate < 0.5  # the case reduces at least once


def fit_with_reducer(images, labels, folder, extra=(), resume=False):
    model = small_cnn()
    reducer = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, cooldown=2, min_delta=10.0)
    every_4 = callbacks.ModelCheckpoint(os.path.join(folder, "e{epoch}-b{batch}.convnet"), save_freq=4,
                                        save_weights_only=True)
    history = model.fit(images[:60], labels[:60], batch_size=20, epochs=4, verbose=0, checkpoint_dir=folder,
                        resume=resume, callbacks=[reducer, every_4, *extra])
    return model, reducer, history


@pytest.mark.parametrize("kill_at", [2, 3])
def test_reduce_lr_on_plateau_and_batch_checkpoints_continue_exactly_after_a_resume(kill_at, synthetic, tmp_path):
    images, labels = synthetic
    # min_delta=10: only epoch 0 is "best"; the rate halves after epochs 1 and 3 (a cooldown in between), so
    # a resumed fit that lost `wait` or `cooldown_counter` would reduce after other epochs
    model, reducer, history = fit_with_reducer(images, labels, str(tmp_path / "straight"))
    assert history.history["learning_rate"] == [0.5, 0.5, 0.25, 0.25]
    folder = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        fit_with_reducer(images, labels, folder, extra=[KillAfter(kill_at)])
    resumed, resumed_reducer, resumed_history = fit_with_reducer(images, labels, folder, resume=True)
    assert resumed_history.history == history.history
    assert (resumed_reducer.wait, resumed_reducer.cooldown_counter, resumed_reducer.best) == \
        (reducer.wait, reducer.cooldown_counter, reducer.best)
    assert resumed.learning_rate == model.learning_rate == 0.125
    saved = sorted(name for name in os.listdir(tmp_path / "straight") if name.endswith(".convnet"))
    assert sorted(saved_pairs(saved)) == keras3_batch_saves([range(3)] * 4, 4) == [(2, 1), (3, 2), (4, 3)]
    assert sorted(name for name in os.listdir(folder) if name.endswith(".convnet")) == saved
    for got, want in zip(resumed.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_reduce_lr_on_plateau_state_round_trips():
    reducer = callbacks.ReduceLROnPlateau(monitor="loss", patience=3, cooldown=2)
    drive_reducer(reducer, [2.0, 1.0, 1.5, 1.5], 0.1, monitor="loss")
    copy = callbacks.ReduceLROnPlateau(monitor="loss", patience=3, cooldown=2)
    copy.set_state(*reducer.get_state())
    assert (copy.wait, copy.cooldown_counter, copy.best) == (reducer.wait, reducer.cooldown_counter, 1.0) == (2, 0, 1.0)


# -- ModelCheckpoint: save_freq in batches, initial_value_threshold -----------------------------------------
def keras3_batch_saves(epochs, save_freq):
    """Keras 3's ModelCheckpoint._should_save_on_batch, transcribed from model_checkpoint.py: `epochs` lists
    each epoch's batch indices (a resumed epoch starts later); returns the (epoch, batch) of each save, both
    counted from 1 as the `{epoch}` and `{batch}` fields write them."""
    since_save, last = 0, None
    saves = []
    for epoch, batches in enumerate(epochs):
        for batch in batches:
            since_save += batch + 1 if last is None or batch <= last else batch - last
            last = batch
            if since_save >= save_freq:
                since_save = 0
                saves.append((epoch + 1, batch + 1))
    return saves


class SavingModel:
    """What ModelCheckpoint uses of a model: records the paths it is asked to save to."""

    def __init__(self, metrics=()):
        self.saved = []
        self.metrics = list(metrics)

    def save(self, path):
        self.saved.append(os.path.basename(path))

    save_weights = save


def drive_checkpoint(checkpoint, epochs, model=None, epoch_values=None, start=0):
    """The hooks `fit` calls for ModelCheckpoint: `epochs` lists each epoch's batch indices, `epoch_values`
    the monitored loss at each epoch end. Returns the names of the files saved."""
    model = model or SavingModel()
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    for epoch, batches in enumerate(epochs, start=start):
        checkpoint.on_epoch_begin(epoch)
        for batch in batches:
            checkpoint.on_train_batch_end(batch, {"loss": 0.5})
        checkpoint.on_epoch_end(epoch, {"loss": 1.0 if epoch_values is None else epoch_values[epoch - start]})
    return model.saved


def saved_pairs(names):
    return [tuple(int(part) for part in re.fullmatch(r"e(\d+)-b(\d+)\.convnet", name).groups()) for name in names]


# each epoch's batch indices: from 0, or from a later batch for an epoch resumed mid-way
batch_epochs = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 7)).map(lambda pair: range(pair[0], sum(pair))),
                        min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(epochs=batch_epochs, save_freq=st.integers(1, 9), split=st.integers(0, 5))
def test_model_checkpoint_saves_every_save_freq_batches_as_keras3(epochs, save_freq, split):
    expected = keras3_batch_saves(epochs, save_freq)
    checkpoint = callbacks.ModelCheckpoint("e{epoch}-b{batch}.convnet", save_freq=save_freq)
    assert saved_pairs(drive_checkpoint(checkpoint, epochs)) == expected
    # a resumed fit (get_state, then set_state on a new callback) carries on counting
    split = min(split, len(epochs))
    first = callbacks.ModelCheckpoint("e{epoch}-b{batch}.convnet", save_freq=save_freq)
    names = drive_checkpoint(first, epochs[:split])
    second = callbacks.ModelCheckpoint("e{epoch}-b{batch}.convnet", save_freq=save_freq)
    second.set_model(SavingModel())
    second.on_train_begin()
    second.set_state(*first.get_state())
    names += drive_checkpoint(second, epochs[split:], start=split)
    assert saved_pairs(names) == expected


def test_model_checkpoint_by_epoch_makes_no_batch_hook_and_by_batch_does():
    assert not callbacks.ModelCheckpoint("m.convnet").uses_batch_hooks()
    assert callbacks.ModelCheckpoint("m.convnet", save_freq=5).uses_batch_hooks()
    assert drive_checkpoint(callbacks.ModelCheckpoint("e{epoch}.convnet"), [range(4), range(4)]) == \
        ["e1.convnet", "e2.convnet"]


def keras3_best_saves(values, *, mode, initial_value_threshold):
    """Keras 3's ModelCheckpoint with save_best_only: `best` starts at initial_value_threshold (MonitorCallback's
    `baseline`) and a value is saved when `_is_improvement` (min_delta 0, float32). Returns the saved epochs."""
    compare = np.less if mode == "min" else np.greater
    best, saved = initial_value_threshold, []
    for epoch, value in enumerate(values):
        if best is None or compare(np.float32(value), np.float32(best)):
            best = value
            saved.append(epoch + 1)
    return saved


@settings(max_examples=100, deadline=None)
@given(values=st.lists(grid, min_size=1, max_size=10), mode=st.sampled_from(["min", "max", "auto"]),
       threshold=st.one_of(st.none(), grid))
def test_model_checkpoint_initial_value_threshold_is_the_first_best_as_keras3(values, mode, threshold):
    checkpoint = callbacks.ModelCheckpoint("e{epoch}.convnet", monitor="loss", mode=mode, save_best_only=True,
                                           initial_value_threshold=threshold)
    names = drive_checkpoint(checkpoint, [[]] * len(values), epoch_values=values)
    expected = keras3_best_saves(values, mode="min" if mode == "auto" else mode, initial_value_threshold=threshold)
    assert names == [f"e{epoch}.convnet" for epoch in expected]


def test_model_checkpoint_save_best_only_saves_when_the_monitor_is_missing_as_keras3():
    checkpoint = callbacks.ModelCheckpoint("e{epoch}-b{batch}.convnet", save_best_only=True, save_freq=2)
    with pytest.warns(UserWarning, match=r"Saving the best model only is conditioned on metric 'val_loss', which "
                                         r"is not in the logs \(available: loss\); saving the model"):
        names = drive_checkpoint(checkpoint, [range(4)])
    assert names == ["e1-b2.convnet", "e1-b4.convnet"]


@pytest.mark.parametrize("arguments, error, message", [
    ({"save_freq": "batch"}, ValueError, r"`save_freq` must be 'epoch' or a positive number of steps. "
                                         r"Received: save_freq='batch'"),
    ({"save_freq": 0}, ValueError, r"`save_freq` must be >= 1. Received: save_freq=0"),
    ({"save_freq": 2.5}, TypeError, r"`save_freq` must be an integer. Received: save_freq=2.5"),
    ({"save_freq": True}, TypeError, "`save_freq` must be an integer"),
    ({"filepath": "m-{batch}.convnet"}, ValueError, r"`filepath` has a \{batch\} field, which only an integer "
                                                    r"`save_freq`.*Received: filepath='m-\{batch\}.convnet', "
                                                    r"save_freq='epoch'"),
    ({"initial_value_threshold": "0.1"}, TypeError, "`initial_value_threshold` must be a number"),
    ({"initial_value_threshold": float("nan")}, ValueError, "`initial_value_threshold` must be finite"),
])
def test_model_checkpoint_checks_its_new_arguments(arguments, error, message):
    arguments = {"filepath": "m.convnet", **arguments}
    with pytest.raises(error, match=message):
        callbacks.ModelCheckpoint(**arguments)


def test_model_checkpoint_in_fit_saves_every_save_freq_batches(synthetic, tmp_path):
    images, labels = synthetic
    model = small_cnn()
    checkpoint = callbacks.ModelCheckpoint(tmp_path / "e{epoch}-b{batch}.convnet", save_freq=4,
                                           save_weights_only=True)
    model.fit(images[:100], labels[:100], batch_size=20, epochs=3, verbose=0, callbacks=[checkpoint])
    expected = keras3_batch_saves([range(5)] * 3, 4)  # 5 batches an epoch
    assert expected == [(1, 4), (2, 3), (3, 2)]
    assert sorted(saved_pairs(os.listdir(tmp_path))) == expected


def test_model_checkpoint_in_fit_beats_initial_value_threshold_only(synthetic, tmp_path):
    images, labels = synthetic
    model = small_cnn()
    checkpoint = callbacks.ModelCheckpoint(tmp_path / "e{epoch}.convnet", monitor="loss", save_best_only=True,
                                           save_weights_only=True, initial_value_threshold=0.0)
    history = model.fit(images[:60], labels[:60], batch_size=20, epochs=2, verbose=0, callbacks=[checkpoint])
    assert min(history.history["loss"]) > 0.0 and os.listdir(tmp_path) == []  # no loss beats 0.0
    assert checkpoint.best == 0.0


# -- TerminateOnNaN(raise_error) --------------------------------------------------------------------------
class EndRecorder(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ended = False

    def on_train_end(self, logs=None):
        self.ended = True


@pytest.mark.parametrize("raise_error", [False, True])
def test_terminate_on_nan_raises_or_stops_as_keras3(synthetic, raise_error):
    images, labels = synthetic
    poisoned = images[:200].copy()
    poisoned[70] = np.nan  # sample 70 lands in batch 3 (index from 0) with 20 a batch, no shuffling
    guard, recorder = callbacks.TerminateOnNaN(raise_error=raise_error), EndRecorder()
    fit = lambda: small_cnn().fit(poisoned, labels[:200], batch_size=20, epochs=2, shuffle=False, verbose=0,
                                  callbacks=[guard, recorder])
    if raise_error:  # Keras 3: a RuntimeError at once, and no callback's on_train_end runs
        with pytest.raises(RuntimeError, match=r"^NaN or Inf loss encountered at batch 4 of epoch 1\. "
                                               r"Terminating training immediately\.$"):
            fit()
    else:  # Keras 3: stop_training, and every on_train_end runs
        assert fit().epoch == [0]
    assert guard.stopped_at == (0, 3) and recorder.ended is not raise_error


def test_terminate_on_nan_checks_raise_error():
    with pytest.raises(TypeError, match=r"`raise_error` must be True or False. Received: raise_error=1 \(type int\)"):
        callbacks.TerminateOnNaN(raise_error=1)


# -- LearningRateScheduler: schedule(epoch, lr), else schedule(epoch) -------------------------------------
def keras3_scheduled_rates(schedule, epochs, learning_rate):
    """Keras 3's LearningRateScheduler, transcribed from learning_rate_scheduler.py: at each epoch's begin,
    `schedule(epoch, lr)`, and on a TypeError `schedule(epoch)`; the rate is kept in float32."""
    rate, rates = np.float32(learning_rate), []
    for epoch in range(epochs):
        try:
            value = schedule(epoch, float(rate))
        except TypeError:
            value = schedule(epoch)
        rate = np.float32(value)
        rates.append(float(rate))
    return rates


def exponential_decay_fn(epoch):  # the book's one-argument schedule
    return 0.01 * 0.1 ** (epoch / 20)


@pytest.mark.parametrize("schedule", [exponential_decay_fn, lambda epoch, lr: lr * 0.9,
                                      lambda epoch, lr=None: 0.5 / (epoch + 1), lambda *args: 0.1 * len(args)])
def test_learning_rate_scheduler_calls_the_schedule_as_keras3(schedule):
    scheduler = callbacks.LearningRateScheduler(schedule)
    model = RateModel(0.01)
    scheduler.set_model(model)
    rates = []
    for epoch in range(4):
        scheduler.on_epoch_begin(epoch)
        logs = {}
        scheduler.on_epoch_end(epoch, logs)
        rates.append(logs["learning_rate"])
    assert rates == pytest.approx(keras3_scheduled_rates(schedule, 4, 0.01), rel=1e-6)


def test_learning_rate_scheduler_with_a_one_argument_schedule_in_fit(synthetic):
    images, labels = synthetic
    model = small_cnn()
    scheduler = callbacks.LearningRateScheduler(exponential_decay_fn)
    history = model.fit(images[:60], labels[:60], batch_size=30, epochs=3, verbose=0, callbacks=[scheduler])
    assert history.history["learning_rate"] == pytest.approx([exponential_decay_fn(epoch) for epoch in range(3)])


def test_learning_rate_scheduler_a_type_error_in_both_forms_is_raised():
    def broken(epoch, lr):
        return lr + "1"  # a TypeError inside: Keras calls schedule(epoch) too, which lacks `lr`

    scheduler = callbacks.LearningRateScheduler(broken)
    scheduler.set_model(RateModel(0.1))
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'lr'"):
        scheduler.on_epoch_begin(0)


@pytest.mark.parametrize("schedule, error, message", [
    (lambda epoch: "fast", TypeError, r"the schedule must return a number. Received: 'fast' \(type str\)"),
    (lambda epoch: -0.1, ValueError, r"the schedule must return a finite learning rate >= 0. Received: -0.1 for "
                                     r"epoch 0"),
    (lambda epoch, lr: float("nan"), ValueError, "Received: nan for epoch 0"),
])
def test_learning_rate_scheduler_checks_what_the_schedule_returns(schedule, error, message):
    scheduler = callbacks.LearningRateScheduler(schedule)
    scheduler.set_model(RateModel(0.1))
    with pytest.raises(error, match=message):
        scheduler.on_epoch_begin(0)
    with pytest.raises(TypeError, match=r"`schedule` must be a function \(epoch, lr\) -> lr or epoch -> lr. "
                                        r"Received: schedule=0.1"):
        callbacks.LearningRateScheduler(0.1)


def test_doctests():
    result = doctest.testmod(callbacks)
    assert result.attempted > 0 and result.failed == 0


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
