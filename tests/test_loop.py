"""The training loop: Keras's from_logits warning, test-time augmentation scored right for models that
output logits and for models that output probabilities (checked against NumPy by hand), and Keras 3's
training rules (issue 16), each held to a NumPy or Python transcription of Keras's source: schedules read
at the optimizer's iteration count across fits, sample and class weights, validation_freq, a batch size
larger than the data, sorted log keys, TerminateOnNaN's first bad step, BackupAndRestore."""
from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np
import pytest
import torch

import convnet
from convnet import callbacks, layers, losses, optimizers, regularizers, schedules
from convnet.training import checkpoint, graphs, loop

KERAS_WARNING = ("`sparse_categorical_crossentropy` received `from_logits=True`, but the `output` argument was "
                 "produced by a Softmax activation and thus does not represent logits. Was this intended?")


def dense_model(units=3, activation=None, loss=None):
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(units, activation=activation)])
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"], device="cpu")
    return model


def data(classes=3):
    rng = np.random.default_rng(1)
    return rng.normal(size=(10, 4, 4, 1)).astype(np.float32), rng.integers(0, classes, 10)


def test_softmax_output_with_from_logits_gets_keras_warning_once_per_fit():
    model = dense_model(activation="softmax", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=3, batch_size=2, verbose=0)
    messages = [str(w.message) for w in caught if "from_logits" in str(w.message)]
    assert messages == [KERAS_WARNING]
    assert caught[0].filename == __file__  # points at the caller's line
    with pytest.warns(UserWarning, match=re.escape(KERAS_WARNING)):
        model.evaluate(x, y, verbose=0)


def test_sigmoid_output_with_from_logits_names_the_sigmoid():
    model = dense_model(1, activation="sigmoid", loss=losses.BinaryCrossentropy(from_logits=True))
    x, y = data(2)
    with pytest.warns(UserWarning, match=r"^`binary_crossentropy` received `from_logits=True`, but the `output` "
                                         r"argument was produced by a Sigmoid activation"):
        model.evaluate(x, y, verbose=0)


@pytest.mark.parametrize("activation, from_logits", [("softmax", False), (None, True), (None, False)])
def test_no_from_logits_warning_when_the_output_matches_the_loss(activation, from_logits):
    model = dense_model(activation=activation, loss=losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, epochs=1, verbose=0)


def numpy_outputs(model, x, flips):
    """The Dense model's pre-activation outputs for `x` flipped horizontally (axis 2) or not, in NumPy."""
    kernel, bias = model.get_weights()
    return [(np.flip(x, 2) if flip else x).reshape(len(x), -1).astype(np.float64) @ kernel + bias for flip in flips]


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("activation, from_logits", [(None, True), ("softmax", False)])
@pytest.mark.parametrize("tta, flips", [(None, [False]), ("hflip", [False, True])])
def test_tta_averages_probabilities_and_scores_them_for_logits_and_probability_models(activation, from_logits,
                                                                                      tta, flips):
    model = dense_model(activation=activation, loss=losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    x, y = data()
    probabilities = np.mean([softmax(z) for z in numpy_outputs(model, x, flips)], axis=0)  # (N, 3)
    loss = -np.log(probabilities[np.arange(len(y)), y]).mean()
    accuracy = (probabilities.argmax(-1) == y).mean()
    result = model.evaluate(x, y, verbose=0, tta=tta, return_dict=True)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(accuracy)
    predicted = model.predict(x, verbose=0, tta=tta)
    np.testing.assert_allclose(softmax(predicted) if from_logits else predicted, probabilities, rtol=1e-5, atol=1e-6)


def test_tta_of_a_binary_logits_model_averages_sigmoid_probabilities():
    model = dense_model(1, loss=losses.BinaryCrossentropy(from_logits=True))
    x, y = data(2)
    p = np.mean([1 / (1 + np.exp(-z[:, 0])) for z in numpy_outputs(model, x, [False, True])], axis=0)  # (N,)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert model.evaluate(x, y, verbose=0, tta="hflip", return_dict=True)["loss"] == pytest.approx(loss, rel=1e-5)


# -- Keras parity of the training loop (issue 16) -------------------------------------------------------------
# Each rule below is transcribed from Keras 3's source into plain NumPy or Python, and convnet is held to it.

RATE = 0.5


def sgd_model(learning_rate=RATE, **compile_args):
    """Flatten + Dense(3, softmax) on (4, 4, 1) inputs with plain SGD: small enough for a NumPy twin."""
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(learning_rate=learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu", **compile_args)
    return model


def numpy_sgd_fit(model, x, y, weights, batch_size, epochs, rates=None, l2=0.0, reduction="sum_over_batch_size"):
    """Keras 3's fit of `model`'s Dense softmax layer with SGD, shuffle off, in float64: each batch's loss is
    sum(w * l) / batch size (losses/loss.py `reduce_weighted_values`, "sum_over_batch_size"), the logged
    "loss" is the batches' losses averaged weighted by batch size (the torch trainer's `_loss_tracker`),
    "accuracy" is unweighted (compile_utils: `metrics` get no sample_weight). `l2`: the kernel's L2 penalty,
    l2 * sum(kernel ** 2), which `compute_loss` adds to the batch loss (`model.losses`): in the gradient and
    in the logged loss. `reduction`: the loss's divisor (loss.py `reduce_values`): the batch size, 1 for "sum",
    the weights' sum for "mean_with_sample_weight". Returns (kernel, bias, history)."""
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    features = x.reshape(len(x), -1).astype(np.float64)
    history = {"accuracy": [], "loss": []}
    step = 0
    for _ in range(epochs):
        loss_total, correct = 0.0, 0.0
        for start in range(0, len(x), batch_size):
            xb, yb, wb = (a[start:start + batch_size] for a in (features, y, weights))
            p = softmax(xb @ kernel + bias)  # (n, 3)
            losses = -np.log(p[np.arange(len(yb)), yb])
            penalty = l2 * (kernel ** 2).sum()
            divisor = {"sum_over_batch_size": len(yb), "sum": 1.0, "mean_with_sample_weight": wb.sum()}[reduction]
            loss_total += len(yb) * ((wb * losses).sum() / divisor + penalty)  # the batch loss, times n
            correct += (p.argmax(-1) == yb).sum()
            grad = (p - np.eye(3)[yb]) * wb[:, None] / divisor  # d(sum(w * l) / divisor) / d logits
            rate = RATE if rates is None else rates[step]
            kernel -= rate * (xb.T @ grad + 2 * l2 * kernel)
            bias -= rate * grad.sum(0)
            step += 1
        history["loss"].append(loss_total / len(x))
        history["accuracy"].append(correct / len(x))
    return kernel, bias, history


def assert_history(got, want, rtol=1e-5):
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol)


# 1. Schedules continue across fits at the optimizer's iteration count

def rates_of(model):
    """A callback recording the rate each step trained with (the schedule sets it before the step)."""
    seen = []
    return seen, callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(model.learning_rate))


def test_a_schedule_continues_across_fit_calls_at_the_optimizers_iterations():
    """Keras reads the schedule at `optimizer.iterations`, which persists: fit(epochs=2) then
    fit(epochs=4, initial_epoch=2) continues the decay (ExponentialDecay: initial * rate ** (t / steps))."""
    x, y = data()
    schedule = schedules.ExponentialDecay(0.5, decay_steps=3, decay_rate=0.5)
    model = sgd_model(learning_rate=schedule)
    seen, spy = rates_of(model)
    loop.fit(model, x, y, batch_size=4, epochs=2, shuffle=False, callbacks=[spy], verbose=0)  # 3 steps per epoch
    assert model.optimizer.iterations == 6
    loop.fit(model, x, y, batch_size=4, epochs=4, initial_epoch=2, shuffle=False, callbacks=[spy], verbose=0)
    assert model.optimizer.iterations == optimizers.iterations(model.optimizer_) == 12
    assert seen == pytest.approx([0.5 * 0.5 ** (t / 3) for t in range(12)], rel=1e-12)
    kernel, bias, _ = numpy_sgd_fit(sgd_model(), x, y, np.ones(len(y)), 4, 4, rates=seen)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.get_weights()[1], bias, rtol=1e-5, atol=1e-7)


def test_compile_builds_a_new_optimizer_whose_schedule_starts_again():
    x, y = data()
    schedule = schedules.ExponentialDecay(0.5, decay_steps=3, decay_rate=0.5)
    model = sgd_model(learning_rate=schedule)
    loop.fit(model, x, y, batch_size=5, epochs=1, verbose=0)
    model.compile(optimizer=optimizers.SGD(learning_rate=schedule), loss="sparse_categorical_crossentropy")
    assert model.optimizer.iterations == 0
    seen, spy = rates_of(model)
    loop.fit(model, x, y, batch_size=5, epochs=1, callbacks=[spy], verbose=0)
    assert seen == pytest.approx([schedule(0), schedule(1)])


def test_a_schedule_that_fit_binds_still_follows_the_step_count():
    x, y = data()
    schedule = schedules.CosineDecay(0.5)  # decay_steps left to fit: epochs * steps
    model = sgd_model(learning_rate=schedule)
    seen, spy = rates_of(model)
    loop.fit(model, x, y, batch_size=5, epochs=3, callbacks=[spy], verbose=0)
    assert schedule.decay_steps == 6
    assert seen == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(6)])


# 4. sample_weight, class_weight, validation_freq

def test_sample_weight_weighs_the_loss_but_not_the_metrics_as_keras():
    x, y = data()
    weights = np.random.default_rng(2).uniform(0, 3, len(y))
    model = sgd_model()
    history = loop.fit(model, x, y, batch_size=4, epochs=3, shuffle=False, sample_weight=weights, verbose=0)
    kernel, bias, expected = numpy_sgd_fit(sgd_model(), x, y, weights, 4, 3)
    assert_history(history.history, expected)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.get_weights()[1], bias, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["sum", "mean_with_sample_weight"])
def test_a_loss_reduction_sets_the_batch_loss_and_the_logged_loss(reduction):
    x, y = data()
    weights = np.random.default_rng(2).uniform(0.5, 3, len(y))
    model = sgd_model(learning_rate=RATE)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1),
                  loss=losses.SparseCategoricalCrossentropy(reduction=reduction), metrics=["accuracy"], device="cpu")
    history = loop.fit(model, x, y, batch_size=4, epochs=2, shuffle=False, sample_weight=weights, verbose=0)
    kernel, _, expected = numpy_sgd_fit(sgd_model(), x, y, weights, 4, 2, rates=[0.1] * 6, reduction=reduction)
    assert_history(history.history, expected)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-7)


def test_class_weight_is_sample_weight_from_the_labels():
    """data_adapter_utils.class_weight_to_sample_weights: weight = class_weight.get(label, 1.0)."""
    x, y = data()
    class_weight = {0: 0.25, 2: 4.0}
    model = sgd_model()
    history = loop.fit(model, x, y, batch_size=4, epochs=2, shuffle=False, class_weight=class_weight, verbose=0)
    weights = np.array([class_weight.get(int(label), 1.0) for label in y])
    kernel, _, expected = numpy_sgd_fit(sgd_model(), x, y, weights, 4, 2)
    assert_history(history.history, expected)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-7)


def test_class_weight_of_one_hot_and_binary_labels():
    assert loop.class_sample_weights({1: 3.0}, torch.tensor([[0.0, 1.0], [1.0, 0.0]])).tolist() == [3.0, 1.0]
    assert loop.class_sample_weights({1: 3.0}, torch.tensor([[0.9], [0.2]])).tolist() == [3.0, 1.0]


def test_evaluate_and_validation_weigh_the_loss_with_their_own_weights():
    x, y = data()
    weights = np.linspace(0.0, 2.0, len(y))
    model = sgd_model()
    kernel, bias = model.get_weights()
    p = softmax(x.reshape(len(x), -1).astype(np.float64) @ kernel + bias)
    losses = -np.log(p[np.arange(len(y)), y])
    result = loop.evaluate(model, x, y, sample_weight=weights, verbose=0, return_dict=True)
    assert list(result) == ["accuracy", "loss"]  # sorted, as Keras's (its list form keeps compile's order)
    assert loop.evaluate(model, x, y, sample_weight=weights, verbose=0) == [result["loss"], result["accuracy"]]
    assert result["loss"] == pytest.approx((weights * losses).sum() / len(y), rel=1e-6)
    assert result["accuracy"] == pytest.approx((p.argmax(-1) == y).mean())
    # validation_split takes the last fifth of the weights too; validation_data may carry its own
    split = loop.fit(sgd_model(learning_rate=1e-12), x, y, sample_weight=weights, validation_split=0.2, verbose=0)
    given = loop.fit(sgd_model(learning_rate=1e-12), x[:8], y[:8], sample_weight=weights[:8],
                                               validation_data=(x[8:], y[8:], weights[8:]), verbose=0)
    expected = (weights[8:] * losses[8:]).sum() / 2
    assert split.history["val_loss"][0] == pytest.approx(expected, rel=1e-5)
    assert given.history["val_loss"][0] == pytest.approx(expected, rel=1e-5)


def test_weighted_metrics_divide_by_the_weights_and_take_keras_names():
    """Keras's `weighted_metrics` (compile_utils): sum(w * value) / sum(w), named "weighted_<name>" when a
    metric already has the name."""
    x, y = data()
    weights = np.linspace(0.0, 2.0, len(y))
    model = sgd_model(learning_rate=1e-12, weighted_metrics=["accuracy"])
    kernel, bias = model.get_weights()
    correct = softmax(x.reshape(len(x), -1) @ kernel + bias).argmax(-1) == y
    result = loop.evaluate(model, x, y, sample_weight=weights, batch_size=3, verbose=0, return_dict=True)
    assert list(result) == ["accuracy", "loss", "weighted_accuracy"]
    assert result["weighted_accuracy"] == pytest.approx((weights * correct).sum() / weights.sum())
    assert result["accuracy"] == pytest.approx(correct.mean())
    assert loop.evaluate(model, x, y, verbose=0, return_dict=True)["weighted_accuracy"] == pytest.approx(correct.mean())
    assert loop.evaluate(model, x, y, sample_weight=np.zeros(10), verbose=0, return_dict=True)["weighted_accuracy"] == 0
    history = loop.fit(model, x, y, batch_size=4, sample_weight=weights, shuffle=False, verbose=0)
    assert history.history["weighted_accuracy"] == pytest.approx([(weights * correct).sum() / weights.sum()])


@pytest.mark.parametrize("validation_freq, validated", [(1, [1, 2, 3, 4]), (2, [2, 4]), ([1, 4], [1, 4]),
                                                         (3, [3])])
def test_validation_freq_validates_after_the_epochs_keras_says(validation_freq, validated):
    """trainer.py `_should_eval`: (epoch + 1) % freq == 0 for an int, epoch + 1 in the list otherwise."""
    x, y = data()
    seen = []
    spy = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append("val_loss" in logs))
    history = loop.fit(sgd_model(), x, y, epochs=4, validation_split=0.2, validation_freq=validation_freq,
                              callbacks=[spy], verbose=0)
    assert seen == [epoch in validated for epoch in range(1, 5)]
    assert len(history.history["val_loss"]) == len(validated) and len(history.history["loss"]) == 4


@pytest.mark.parametrize("arguments, error, message", [
    ({"validation_freq": 0}, ValueError, r"`validation_freq` must be a positive int or a list of epochs \(1-based\)\. "
                                         r"Received: validation_freq=0"),
    ({"validation_freq": [0, 2]}, ValueError, r"Received: validation_freq=\[0, 2\]"),
    ({"validation_freq": "2"}, ValueError, r"Received: validation_freq='2'"),
    ({"class_weight": {0: 1.0}, "sample_weight": np.ones(10)}, ValueError,
     r"`class_weight` and `sample_weight` cannot be given together"),
    ({"sample_weight": np.ones(9)}, ValueError, r"`sample_weight` must hold one weight per sample, shape \(10,\)\. "
                                                r"Received shape \(9,\)"),
    ({"sample_weight": "heavy"}, TypeError, r"`sample_weight` must be a NumPy array or a torch.Tensor"),
    ({"class_weight": [1.0, 2.0]}, TypeError, r"`class_weight` must be a dict mapping class indices to weights"),
    ({"class_weight": {"cat": 2.0}}, TypeError, r"`class_weight` keys must be integer class indices\. "
                                                r"Received the key 'cat'"),
    ({"class_weight": {0: "2"}}, TypeError, r"`class_weight\[0\]` must be a number"),
    ({"validation_data": (np.zeros((2, 4, 4, 1)), np.zeros(2), np.ones(3))}, ValueError,
     r"`validation_data\[2\]` must hold one weight per sample, shape \(2,\)"),
])
def test_bad_weight_and_validation_arguments_are_refused(arguments, error, message):
    x, y = data()
    with pytest.raises(error, match=message):
        loop.fit(sgd_model(), x, y, verbose=0, **arguments)


# 9. Regularization penalties

def test_a_kernel_penalty_is_trained_on_and_reported_in_the_loss_as_keras():
    x, y = data()
    weights = np.random.default_rng(4).uniform(0, 2, len(y))
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input((4, 4, 1)), layers.Flatten(),
                                layers.Dense(3, activation="softmax", kernel_regularizer=regularizers.L2(0.05))])
    model.compile(optimizer=optimizers.SGD(learning_rate=RATE), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu")
    start = [w.copy() for w in model.get_weights()]
    history = loop.fit(model, x, y, batch_size=4, epochs=3, shuffle=False, sample_weight=weights, verbose=0)
    twin = sgd_model()
    twin.set_weights(start)
    kernel, bias, expected = numpy_sgd_fit(twin, x, y, weights, 4, 3, l2=0.05)
    assert_history(history.history, expected)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.get_weights()[1], bias, rtol=1e-5, atol=1e-7)
    k, b = (w.astype(np.float64) for w in model.get_weights())
    p = softmax(x.reshape(len(x), -1) @ k + b)
    plain = -np.log(p[np.arange(len(y)), y]).mean()
    assert loop.evaluate(model, x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(
        plain + 0.05 * (k ** 2).sum(), rel=1e-5)  # Keras's test_step adds model.losses too


# 5. A batch size larger than the data

def test_a_batch_size_larger_than_the_data_trains_on_one_partial_batch():
    x, y = data()
    model = sgd_model()
    history = loop.fit(model, x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
    kernel, _, expected = numpy_sgd_fit(sgd_model(), x, y, np.ones(len(y)), 10, 3)
    assert_history(history.history, expected)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-7)
    assert model.optimizer.iterations == 3


def test_a_batch_size_larger_than_the_data_is_served_by_the_capture_bookkeeping():
    """Every step has the same size (the whole data), so a CUDA graph may serve it: through the CPU
    stand-in, the result is eager training's, bit for bit."""
    x, y = data()
    graphed, eager = sgd_model(), sgd_model()
    captures = []
    graphed.engine.capture_factory = lambda: captures.append(graphs.EagerCapture()) or captures[-1]
    for model in (graphed, eager):
        convnet.utils.set_random_seed(3)  # the same shuffling
        loop.fit(model, x, y, batch_size=64, epochs=4, verbose=0)
    assert len(captures) == 1 and captures[0].replays == 3  # epochs 2 to 4
    graphed.engine.release()
    for a, b in zip(graphed.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_sample_weights_through_the_capture_bookkeeping_equal_eager_training():
    """A graph reads its sample weights from a static tensor filled before each replay; a fit without
    weights drops a graph captured with them (and the other way round)."""
    x, y = data(classes=3)
    x, y = np.concatenate([x] * 4), np.concatenate([y] * 4)
    weights = np.random.default_rng(5).uniform(0, 2, len(y))
    graphed, eager = sgd_model(), sgd_model()
    captures = []
    graphed.engine.capture_factory = lambda: captures.append(graphs.EagerCapture()) or captures[-1]
    for model in (graphed, eager):
        convnet.utils.set_random_seed(3)
        loop.fit(model, x, y, batch_size=8, epochs=2, sample_weight=weights, verbose=0)
        loop.fit(model, x, y, batch_size=8, epochs=1, verbose=0)
        loop.fit(model, x, y, batch_size=8, epochs=1, sample_weight=weights, verbose=0)
    assert len(captures) == 3 and all(capture.replays > 0 for capture in captures)
    graphed.engine.release()
    for a, b in zip(graphed.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(a, b)


# 6. Sorted log keys

def test_history_and_callback_logs_have_keras_sorted_keys(capsys):
    """Keras 3's CallbackList gives every callback `pythonify_logs(logs)`, whose keys are sorted."""
    x, y = data()
    epoch_keys, batch_keys = [], []
    spy = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch_keys.append(list(logs)),
                                   on_train_batch_end=lambda batch, logs: batch_keys.append(list(logs)))
    history = loop.fit(sgd_model(), x, y, epochs=2, validation_split=0.2, callbacks=[spy], verbose=2)
    assert list(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert epoch_keys == [["accuracy", "loss", "val_accuracy", "val_loss"]] * 2
    assert batch_keys == [["accuracy", "loss"]] * 2
    assert " - accuracy: " in capsys.readouterr().out.splitlines()[1].split(" - loss: ")[0]


# 7. TerminateOnNaN: the first bad step, and no checkpoint after it

class LateFlags:
    """A device whose flags are never there before they must be read: the GPU behind the host."""

    def __init__(self):
        self.reads = []

    def copy(self, flag):
        reads, value = self.reads, bool(flag)

        class Late:
            def ready(self):
                return False

            def read(self):
                reads.append(value)
                return value
        return Late()


def poisoned(bad_step, batch_size=2):
    x, y = data()
    x = x.copy()
    x[bad_step * batch_size] = np.nan  # batch `bad_step`'s loss is NaN (no shuffling)
    return x, y


@pytest.mark.parametrize("late", [False, True])
def test_terminate_on_nan_stops_at_the_first_bad_step_or_the_next_one_when_its_flag_is_late(late, monkeypatch):
    flags = LateFlags()
    if late:
        monkeypatch.setattr(loop, "flag_reader", lambda device: flags)
    x, y = poisoned(bad_step=2)
    steps = []
    guard = callbacks.TerminateOnNaN()
    spy = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    loop.fit(sgd_model(), x, y, batch_size=2, epochs=2, shuffle=False, callbacks=[guard, spy], verbose=0)
    assert guard.stopped_at == (0, 2)
    assert steps == ([0, 1, 2, 3] if late else [0, 1, 2])  # a late flag is read once the next step is launched
    assert flags.reads == ([False, False, True] if late else [])


@pytest.mark.parametrize("late", [False, True])
def test_no_checkpoint_is_written_after_a_bad_step(late, monkeypatch, tmp_path):
    """A checkpoint due after the bad step reads the flags in flight first: training stops there, and the
    last checkpoint is the one written before the bad step."""
    if late:
        monkeypatch.setattr(loop, "flag_reader", lambda device: LateFlags())
    x, y = poisoned(bad_step=2)
    guard = callbacks.TerminateOnNaN()
    backup = callbacks.BackupAndRestore(tmp_path / "backup", save_freq=1, delete_checkpoint=False)  # every step
    steps = []
    spy = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    loop.fit(sgd_model(), x, y, batch_size=2, epochs=2, shuffle=False, callbacks=[guard, spy, backup], verbose=0)
    assert guard.stopped_at == (0, 2) and steps == [0, 1, 2]
    saved = checkpoint.load(str(tmp_path / "backup"), sgd_model())
    assert (saved.epoch, saved.step) == (0, 2)  # after steps 0 and 1


def test_terminate_on_nan_flags_are_read_without_waiting_when_they_are_there():
    guard = callbacks.TerminateOnNaN()
    guard.set_model(sgd_model())
    watch = loop._NanWatch(guard, loop.HostFlags())
    watch.record(0, 0, torch.tensor([1.0]))
    assert not watch.pending
    watch.record(0, 1, torch.tensor([math.inf]))
    assert guard.stopped_at == (0, 1) and guard.model.stop_training


class RaisingGuard(callbacks.TerminateOnNaN):
    """TerminateOnNaN(raise_error=True)'s behaviour: `trigger` raises."""

    def trigger(self, epoch, batch):
        raise RuntimeError(f"NaN loss at batch {batch + 1} of epoch {epoch + 1}")


def test_an_error_raised_by_the_nan_guard_propagates_and_keeps_the_backup(tmp_path):
    x, y = poisoned(bad_step=1)
    ended = []
    spy = callbacks.LambdaCallback(on_train_end=lambda logs: ended.append(True))
    backup = callbacks.BackupAndRestore(tmp_path / "backup")
    model = sgd_model()
    with pytest.raises(RuntimeError, match=r"NaN loss at batch 2 of epoch 1"):
        loop.fit(model, x[:4], y[:4], batch_size=2, epochs=2, shuffle=False, callbacks=[RaisingGuard(), spy, backup],
                  verbose=0)
    assert not ended and not model.training  # no on_train_end, as Keras; the model is back in inference mode
    assert os.path.isdir(tmp_path / "backup")


# 8. BackupAndRestore

class FailAt(callbacks.Callback):
    """Raises at the end of batch `batch` of epoch `epoch`, once (a crash in the middle of an epoch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.armed, self.epoch = (epoch, batch), True, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.armed and (self.epoch, batch) == self.at:
            self.armed = False
            raise RuntimeError("the machine went away")


def dropout_model(schedule=True):
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(8, activation="relu"),
                                layers.Dropout(0.5), layers.Dense(3, activation="softmax")])
    rate = schedules.ExponentialDecay(0.01, decay_steps=4, decay_rate=0.5) if schedule else 0.01
    model.compile(optimizer=optimizers.Adam(learning_rate=rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu")
    return model


@pytest.mark.parametrize("save_freq, fail_at", [("epoch", (1, 2)), (3, (2, 1)), (3, (0, 4))])
def test_backup_and_restore_resumes_an_interrupted_fit_bit_for_bit(save_freq, fail_at, tmp_path):
    """Dropout, shuffling and a decaying schedule: a fit that crashes mid-epoch, then runs again with the same
    BackupAndRestore, ends with the weights and history of a fit that never crashed."""
    x, y = data()
    x, y = np.concatenate([x] * 2), np.concatenate([y] * 2)
    straight = dropout_model()
    expected = loop.fit(straight, x, y, batch_size=4, epochs=3, verbose=0)
    folder = tmp_path / "backup"
    backup = callbacks.BackupAndRestore(folder, save_freq=save_freq)
    crash = FailAt(*fail_at)
    model = dropout_model()
    with pytest.raises(RuntimeError, match="the machine went away"):
        loop.fit(model, x, y, batch_size=4, epochs=3, callbacks=[crash, backup], verbose=0)
    assert checkpoint.exists(str(folder))  # kept after an error
    convnet.utils.set_random_seed(99)  # the restore puts the generators back: this seed must not matter
    history = loop.fit(model, x, y, batch_size=4, epochs=3, callbacks=[crash, backup], verbose=0)
    assert history.history == expected.history
    for got, want in zip(model.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert model.optimizer.iterations == straight.optimizer.iterations == 15
    assert not folder.exists()  # deleted once fit completes (delete_checkpoint=True)


def test_backup_and_restore_writes_every_save_freq_steps_and_can_keep_its_folder(tmp_path):
    x, y = data()
    positions = []
    original = checkpoint.save

    def spy(folder, model, state, best=False):
        positions.append(state.epoch * 3 + state.step)
        return original(folder, model, state, best)

    backup = callbacks.BackupAndRestore(tmp_path / "b", save_freq=2, delete_checkpoint=False)
    try:
        checkpoint.save = spy
        loop.fit(sgd_model(), x, y, batch_size=4, epochs=2, callbacks=[backup], verbose=0)  # 3 steps per epoch
    finally:
        checkpoint.save = original
    assert positions == [2, 3, 4, 6]  # steps 2 and 4 of the run, and each epoch's end
    assert checkpoint.exists(str(tmp_path / "b"))


def test_a_backup_of_a_weighted_run_refuses_other_weights(tmp_path):
    x, y = data()
    backup = callbacks.BackupAndRestore(tmp_path / "b", delete_checkpoint=False)
    loop.fit(sgd_model(), x, y, epochs=1, class_weight={0: 2.0}, callbacks=[backup], verbose=0)
    with pytest.raises(ValueError, match=r"cannot resume from .*: the sample_weight_sha256 differ from the run"):
        loop.fit(sgd_model(), x, y, epochs=2, class_weight={0: 3.0}, callbacks=[backup], verbose=0)
    loop.fit(sgd_model(), x, y, epochs=2, class_weight={0: 2.0}, callbacks=[backup], verbose=0)


@pytest.mark.parametrize("arguments, message", [
    ({"callbacks": [callbacks.BackupAndRestore("a"), callbacks.BackupAndRestore("b")]},
     r"`callbacks` holds 2 BackupAndRestore callbacks; a fit backs up to one folder"),
    ({"callbacks": [callbacks.BackupAndRestore("a")], "checkpoint_dir": "b"},
     r"`checkpoint_dir` \('b'\) differs from the BackupAndRestore callback's `backup_dir` \('a'\)"),
])
def test_backup_and_restore_with_another_folder_is_refused(arguments, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = data()
    with pytest.raises(ValueError, match=message):
        loop.fit(sgd_model(), x, y, verbose=0, **arguments)


# -- on a GPU (-m gpu) ---------------------------------------------------------------------------------------

def cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.mark.gpu
def test_terminate_on_nan_on_a_gpu_stops_at_the_bad_step_or_the_next_one():
    """CudaFlags: pinned copies and events; the bad step is named, and at most one more step runs."""
    cuda_or_skip()
    x, y = poisoned(bad_step=3)
    x, y = np.concatenate([x, x]), np.concatenate([y, y])
    model = sgd_model()
    model.compile(optimizer=optimizers.SGD(learning_rate=RATE), loss="sparse_categorical_crossentropy",
                  device="cuda")
    steps = []
    guard = callbacks.TerminateOnNaN()
    spy = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: steps.append(model.optimizer.iterations))
    loop.fit(model, x, y, batch_size=2, epochs=1, shuffle=False, callbacks=[guard, spy], verbose=0)
    assert guard.stopped_at == (0, 3)
    assert steps[0] in (4, 5)


@pytest.mark.gpu
def test_sample_weights_through_real_cuda_graphs_equal_eager_training():
    cuda_or_skip()
    x, y = data()
    x, y = np.concatenate([x] * 8), np.concatenate([y] * 8)
    weights = np.random.default_rng(5).uniform(0, 2, len(y))
    results = []
    for jit in ("graphs", "eager"):
        model = sgd_model()
        model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], device="cuda", jit=jit)
        convnet.utils.set_random_seed(3)
        history = loop.fit(model, x, y, batch_size=16, epochs=3, sample_weight=weights, verbose=0)
        results.append((model.get_weights(), history.history))
    (graphed, graphed_history), (eager, eager_history) = results
    for key in eager_history:
        np.testing.assert_allclose(graphed_history[key], eager_history[key], rtol=1e-6)
    for a, b in zip(graphed, eager):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
