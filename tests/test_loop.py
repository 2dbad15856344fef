"""The training loop's scoring: Keras's from_logits warning, and test-time augmentation scored right for
models that output logits and for models that output probabilities (checked against NumPy by hand)."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import convnet
from convnet import layers, losses

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
