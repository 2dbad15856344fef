"""Regularizers and Dropout's noise_shape against NumPy transcriptions of Keras 3's rules.

Keras 3 (keras/src/regularizers/regularizers.py): L1 = l1 * sum(|x|), L2 = l2 * sum(x^2), L1L2 both;
OrthogonalRegularizer = factor * 0.5 * sum(|off-diagonal cosines|) / (n (n - 1) / 2). Keras's `layer.losses`
(keras/src/layers/layer.py): the penalties of the trainable weights, plus the activity penalty of the output
divided by the batch size. Dropout (keras/src/backend/*/random.py): the mask has `noise_shape`, None entries
taking the input's size, and is broadcast to the input.
"""
from __future__ import annotations

import copy
import doctest
import json

import numpy as np
import pytest
import torch

from convnet import layers, regularizers
from convnet.models import Sequential


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def value_of(tensor):
    return float(tensor.detach())


def np_l1l2(x, l1=0.0, l2=0.0):
    x = np.asarray(x, np.float64)
    return l1 * np.abs(x).sum() + l2 * np.square(x).sum()


def np_orthogonal(x, factor, mode):
    x = np.asarray(x, np.float64)
    vectors = x if mode == "rows" else x.T
    norms = np.sqrt((vectors ** 2).sum(axis=1, keepdims=True))
    unit = vectors * np.minimum(1 / np.where(norms == 0, 1e-300, norms), 1e7)  # Keras's normalize
    n = unit.shape[0]
    cosines = unit @ unit.T
    off = cosines * (1 - np.eye(n))
    return factor * 0.5 * np.abs(off).sum() / (n * (n - 1) / 2)


def test_doctests():
    assert doctest.testmod(regularizers).failed == 0


@pytest.mark.parametrize("regularizer, expected", [
    (regularizers.L1(0.3), lambda x: np_l1l2(x, l1=0.3)),
    (regularizers.L2(0.1), lambda x: np_l1l2(x, l2=0.1)),
    (regularizers.L1L2(l1=0.01, l2=0.02), lambda x: np_l1l2(x, 0.01, 0.02)),
    (regularizers.L1L2(), lambda x: 0.0),
    (regularizers.l2(), lambda x: np_l1l2(x, l2=0.01)),  # Keras 3's lower-case alias of the class
    (regularizers.OrthogonalRegularizer(0.2), lambda x: np_orthogonal(x, 0.2, "rows")),
    (regularizers.OrthogonalRegularizer(0.2, mode="columns"), lambda x: np_orthogonal(x, 0.2, "columns")),
], ids=repr)
def test_penalty_formulas(regularizer, expected):
    x = rand(6, 4)
    x[2] = 0  # a zero row: the orthogonal penalty's normalisation leaves it at zero
    value = regularizer(torch.from_numpy(x))
    assert value.shape == () and value.dtype == torch.float32
    assert float(value) == pytest.approx(expected(x), rel=1e-5, abs=1e-7)


def test_keras_docstring_values():
    assert float(regularizers.L2(2.0)(torch.ones(5, 5))) == 50.0
    # Keras's Regularizer docstring: Dense(5, kernel 'ones', L1(0.01) kernel, L2(0.01) activity) on 2 * ones(5, 5)
    dense = layers.Dense(5, kernel_initializer="ones", kernel_regularizer=regularizers.L1(0.01),
                         activity_regularizer=regularizers.L2(0.01))
    dense(torch.ones(5, 5) * 2.0)
    losses = [value_of(v) for v in dense.regularization_losses()]
    assert losses == pytest.approx([0.25, 5.0])  # kernel term, then the activity term divided by the batch of 5


def test_names_classes_and_errors():
    assert regularizers.list_regularizers() == ["l1", "l1_l2", "l1l2", "l2", "orthogonal_regularizer"]
    for name, cls, config in [("l1", regularizers.L1, {"l1": 0.01}), ("L1", regularizers.L1, {"l1": 0.01}),
                              ("l2", regularizers.L2, {"l2": 0.01}), ("L2", regularizers.L2, {"l2": 0.01}),
                              ("l1_l2", regularizers.L1L2, {"l1": 0.0, "l2": 0.0}),
                              ("L1L2", regularizers.L1L2, {"l1": 0.0, "l2": 0.0}),
                              ("OrthogonalRegularizer", regularizers.OrthogonalRegularizer,
                               {"factor": 0.01, "mode": "rows"})]:
        regularizer = regularizers.get(name)
        assert type(regularizer) is cls and regularizer.get_config() == config, name
    assert regularizers.get(None) is None
    assert regularizers.get(regularizers.L2) == regularizers.L2()  # a class is instantiated, as Keras
    spec = regularizers.serialize(regularizers.L1L2(l1=0.5, l2=0.25))
    assert spec == {"class_name": "L1L2", "config": {"l1": 0.5, "l2": 0.25}}
    assert regularizers.get(json.loads(json.dumps(spec))) == regularizers.L1L2(l1=0.5, l2=0.25)
    with pytest.raises(ValueError, match=r"`kernel_regularizer`: unknown regularizer 'l3'\. Did you mean"):
        regularizers.get("l3", "kernel_regularizer")
    with pytest.raises(ValueError, match=r"unknown regularizer class 'l2'\. Did you mean 'L2'"):
        regularizers.get({"class_name": "l2", "config": {}})
    with pytest.raises(ValueError, match=r"invalid L2 config \{'l1': 0\.1\}"):
        regularizers.get({"class_name": "L2", "config": {"l1": 0.1}})
    with pytest.raises(ValueError, match=r"`l2` must be >= 0\.0\. Received: l2=-0\.1"):
        regularizers.L2(-0.1)
    with pytest.raises(TypeError, match=r"`l1` must be a number\. Received: l1='0\.1'"):
        regularizers.L1("0.1")
    with pytest.raises(ValueError, match=r"`mode`: unknown mode 'row'\. Did you mean 'rows'"):
        regularizers.OrthogonalRegularizer(mode="row")
    with pytest.raises(ValueError, match=r"OrthogonalRegularizer takes rank-2 tensors.*\(3, 3, 2, 4\)"):
        regularizers.OrthogonalRegularizer()(torch.ones(3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"cannot be saved \(files never carry code\)"):
        regularizers.serialize(lambda x: x.sum())
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module"):
        regularizers.penalty("model")


def test_layer_arguments_are_checked_and_named():
    with pytest.raises(TypeError, match=r"`kernel_regularizer` must be a regularizer name such as 'l2'.*"
                                        r"Received: kernel_regularizer=3 \(type int\)"):
        layers.Dense(2, kernel_regularizer=3)
    with pytest.raises(TypeError, match=r"`activity_regularizer` must be .* Received: activity_regularizer=0\.1"):
        layers.Conv2D(2, 3, activity_regularizer=0.1)
    with pytest.raises(ValueError, match=r"`bias_regularizer`: unknown regularizer 'L3'\. Did you mean"):
        layers.Conv2D(2, 3, bias_regularizer="L3")


@pytest.mark.parametrize("make", [
    lambda: layers.Dense(3, activation="relu", kernel_regularizer="l2", bias_regularizer=regularizers.L1(0.5),
                         activity_regularizer=regularizers.L1L2(l1=0.1, l2=0.2)),
    lambda: layers.Conv2D(2, 3, padding="same", kernel_regularizer=regularizers.OrthogonalRegularizer(),
                          activity_regularizer="l1"),
    lambda: layers.DepthwiseConv2D(3, depthwise_regularizer="l1", bias_regularizer=regularizers.L2(0.5)),
    lambda: layers.SeparableConv2D(2, 3, depthwise_regularizer="l2", pointwise_regularizer=regularizers.L1(0.1),
                                   activity_regularizer="l1l2"),
    lambda: layers.Conv2DTranspose(2, 3, kernel_regularizer="l2", bias_regularizer="l1"),
], ids=["Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose"])
def test_config_round_trip_and_repr(make):
    layer = make()
    spec = json.loads(json.dumps(layers.serialize(layer)))  # as a model file stores it
    clone = layers.deserialize(spec)
    assert clone.get_config() == layer.get_config() == spec["config"]
    arguments = [key for key in spec["config"] if key.endswith("_regularizer")]
    assert "activity_regularizer" in arguments and len(arguments) >= 3  # a weight's, the bias's, the activity's
    for argument in arguments:
        assert getattr(clone, argument) == getattr(layer, argument)
        value = spec["config"][argument]
        assert (f"{argument}=" in repr(layer)) == (value is not None)  # shown only when set
    for bare in (layers.Dense(3), layers.Conv2D(2, 3), layers.SeparableConv2D(2, 3), layers.Conv2DTranspose(2, 3)):
        assert "regularizer" not in repr(bare)


def test_depthwise_separable_and_transposed_penalties_match_numpy():
    """Keras's argument per weight: DepthwiseConv2D's depthwise_regularizer on its kernel (kh, kw, C, dm),
    SeparableConv2D's depthwise_ and pointwise_regularizer, Conv2DTranspose's kernel_regularizer on its
    (kh, kw, filters, C) kernel; each bias_regularizer on the bias, the activity term after the activation."""
    x = torch.from_numpy(rand(4, 6, 6, 3, seed=4))
    depthwise = layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", bias_initializer="random_normal",
                                       depthwise_regularizer=regularizers.L1(0.01), bias_regularizer=regularizers.L2(0.3),
                                       activity_regularizer=regularizers.L2(0.05))
    separable = layers.SeparableConv2D(5, 3, depthwise_regularizer=regularizers.L2(0.02),
                                       pointwise_regularizer=regularizers.L1(0.04), activity_regularizer="l1")
    transposed = layers.Conv2DTranspose(2, 3, strides=2, padding="same", bias_initializer="random_normal",
                                        kernel_regularizer=regularizers.L2(0.1), bias_regularizer=regularizers.L1(0.2),
                                        activity_regularizer=regularizers.L1(0.001))
    out_d, out_s, out_t = (layer(x).detach().numpy() for layer in (depthwise, separable, transposed))
    assert [w.shape for w in depthwise.get_weights()] == [(3, 3, 3, 2), (6,)]  # Keras's layouts
    d_kernel, d_bias = depthwise.get_weights()
    s_depthwise, s_pointwise, _ = separable.get_weights()
    t_kernel, t_bias = transposed.get_weights()
    expected = {
        "depthwise": np_l1l2(d_kernel, l1=0.01) + np_l1l2(d_bias, l2=0.3) + np_l1l2(out_d, l2=0.05) / 4,
        "separable": np_l1l2(s_depthwise, l2=0.02) + np_l1l2(s_pointwise, l1=0.04) + np_l1l2(out_s, l1=0.01) / 4,
        "transposed": np_l1l2(t_kernel, l2=0.1) + np_l1l2(t_bias, l1=0.2) + np_l1l2(out_t, l1=0.001) / 4,
    }
    for name, layer in zip(expected, (depthwise, separable, transposed)):
        assert value_of(regularizers.penalty(layer)) == pytest.approx(expected[name], rel=1e-5), name
    assert regularizers.penalty(layers.SeparableConv2D(2, 3)) is None
    with pytest.raises(TypeError, match=r"`pointwise_regularizer` must be a regularizer name .* Received: "
                                        r"pointwise_regularizer=2"):
        layers.SeparableConv2D(2, 3, pointwise_regularizer=2)


def test_model_config_round_trip_keeps_the_regularizers():
    model = Sequential([layers.Input((4, 4, 2)), layers.Conv2D(2, 3, kernel_regularizer="l2"), layers.Flatten(),
                        layers.Dense(3, activity_regularizer=regularizers.L1(0.1))])
    clone = Sequential.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    x = torch.from_numpy(rand(5, 4, 4, 2))
    with torch.no_grad():
        model(x), clone(x)
    assert value_of(regularizers.penalty(clone)) == pytest.approx(value_of(regularizers.penalty(model)), rel=1e-6)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_penalty_of_a_model_matches_numpy_and_its_gradient():
    torch.manual_seed(0)
    model = Sequential([layers.Input((5, 5, 2)),
                        layers.Conv2D(3, 3, activation="relu", kernel_regularizer=regularizers.L1(0.01),
                                      bias_regularizer=regularizers.L2(0.3), bias_initializer="random_normal"),
                        layers.Flatten(),
                        layers.Dense(4, kernel_regularizer=regularizers.L2(0.02),
                                     activity_regularizer=regularizers.L2(0.05))])
    x = rand(6, 5, 5, 2, seed=1)
    conv_kernel, conv_bias, dense_kernel, _ = model.get_weights()  # Keras layouts
    out = model(torch.from_numpy(x)).detach().numpy().astype(np.float64)
    expected = (np_l1l2(conv_kernel, l1=0.01) + np_l1l2(conv_bias, l2=0.3) + np_l1l2(dense_kernel, l2=0.02)
                + np_l1l2(out, l2=0.05) / 6)  # the activity term is divided by the batch size, as Keras 3
    value = regularizers.penalty(model)
    assert value is not None and value.shape == () and value.dtype == torch.float32
    assert value_of(value) == pytest.approx(expected, rel=1e-5)



def test_penalty_gradients_match_numpy():
    torch.manual_seed(0)
    conv = layers.Conv2D(3, 3, activation="relu", kernel_regularizer=regularizers.L1(0.01),
                         bias_regularizer=regularizers.L2(0.3), bias_initializer="random_normal")
    dense = layers.Dense(4, kernel_regularizer=regularizers.L2(0.02), activity_regularizer=regularizers.L2(0.05),
                         bias_initializer="random_normal")
    h = rand(6, 7, seed=2)
    conv(torch.from_numpy(rand(2, 5, 5, 2))), dense(torch.from_numpy(h))
    regularizers.penalty(torch.nn.Sequential(conv, dense)).backward()
    conv_kernel, conv_bias = conv.get_weights()
    kernel, bias = (w.astype(np.float64) for w in dense.get_weights())
    # the conv's terms: d/dW [0.01 sum|W|] = 0.01 sign(W); d/db [0.3 sum b^2] = 0.6 b
    np.testing.assert_allclose(conv.kernel.grad.permute(2, 3, 1, 0).numpy(), 0.01 * np.sign(conv_kernel), atol=1e-7)
    np.testing.assert_allclose(conv.bias.grad.numpy(), 0.6 * conv_bias, rtol=1e-5)
    # the Dense's: d/dW [0.02 sum W^2 + 0.05 sum((hW + b)^2) / N] = 0.04 W + 0.1 h^T (hW + b) / N
    out = h @ kernel + bias
    np.testing.assert_allclose(dense.kernel.grad.t().numpy(), 0.04 * kernel + 0.1 * h.T @ out / 6, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dense.bias.grad.numpy(), 0.1 * out.sum(axis=0) / 6, rtol=1e-4, atol=1e-6)


def test_activity_penalty_after_the_activation_also_when_the_engine_takes_logits():
    model = Sequential([layers.Input((3,)),
                        layers.Dense(4, activation="softmax", activity_regularizer=regularizers.L1L2(l1=0.1, l2=1.0))])
    x = torch.from_numpy(rand(5, 3))
    probabilities = model(x).detach().numpy()
    expected = np_l1l2(probabilities, 0.1, 1.0) / 5
    assert value_of(regularizers.penalty(model)) == pytest.approx(expected, rel=1e-5)
    logits = model.logits(x)  # the training engine's fused path calls pre_activation alone
    np.testing.assert_allclose(_softmax(logits.detach().numpy()), probabilities, rtol=1e-5)
    assert value_of(regularizers.penalty(model)) == pytest.approx(expected, rel=1e-5)
    model(x[:2])  # the last forward pass counts, divided by its own batch size
    assert value_of(regularizers.penalty(model)) == pytest.approx(np_l1l2(probabilities[:2], 0.1, 1.0) / 2, rel=1e-5)


def test_penalty_is_none_without_regularizers_and_skips_frozen_weights():
    plain = Sequential([layers.Input((3,)), layers.Dense(2), layers.Dropout(0.5)])
    plain(torch.ones(2, 3))
    assert regularizers.penalty(plain) is None
    dense = layers.Dense(2, kernel_regularizer="l2", trainable=False)
    model = Sequential([layers.Input((3,)), dense])
    model(torch.ones(2, 3))
    assert regularizers.penalty(model) is None  # Keras penalises trainable weights only
    dense.trainable = True
    assert value_of(regularizers.penalty(model)) == pytest.approx(np_l1l2(dense.get_weights()[0], l2=0.01), rel=1e-6)


def test_function_regularizers_and_copies():
    def half_sum(x):
        return 0.5 * x.sum()

    dense = layers.Dense(2, kernel_initializer="ones", kernel_regularizer=half_sum, activity_regularizer="l2")
    dense(torch.ones(3, 4))
    assert value_of(dense.regularization_losses()[0]) == 0.5 * 8
    assert dense.get_config()["kernel_regularizer"] == "half_sum"  # describes it; a file cannot carry code
    clone = copy.deepcopy(dense)  # the recorded activity (a non-leaf tensor) is not copied
    assert len(clone.regularization_losses()) == 1
    bad = layers.Dense(2, kernel_regularizer=lambda x: x)
    bad(torch.ones(1, 2))
    with pytest.raises(TypeError, match=r"the kernel regularizer .* must return a scalar torch\.Tensor"):
        regularizers.penalty(bad)


# Dropout(noise_shape=..., seed=...)

def test_dropout_noise_shape_drops_whole_channels():
    torch.manual_seed(0)
    layer = layers.Dropout(0.5, noise_shape=(None, 1, 1, None))
    layer.train(True)
    x = torch.ones(64, 5, 6, 8)
    out = layer(x).numpy()
    kept = out[:, :1, :1, :] != 0  # (N, 1, 1, C): one decision per sample and channel
    np.testing.assert_array_equal(out, np.where(kept, 2.0, 0.0) * np.ones((64, 5, 6, 8)))  # broadcast, scaled
    assert abs(kept.mean() - 0.5) < 0.07  # 512 decisions


@pytest.mark.parametrize("noise_shape, constant_axes", [((1, None), (0,)), ((None, 1), (1,)), ((None, None), ())])
def test_dropout_noise_shape_masks(noise_shape, constant_axes):
    torch.manual_seed(1)
    layer = layers.Dropout(0.25, noise_shape=noise_shape)
    layer.train(True)
    out = layer(torch.ones(300, 200)).numpy()
    mask = out != 0
    np.testing.assert_allclose(out[mask], 1 / 0.75, rtol=1e-6)
    for axis in constant_axes:
        assert (mask == mask.take([0], axis=axis)).all()  # the same decision along a size-1 noise axis
    assert abs(1 - mask.mean() - 0.25) < 0.05


def test_dropout_seed_repeats_and_eval_is_identity():
    outputs = []
    for _ in range(2):
        layer = layers.Dropout(0.5, seed=7)
        layer.train(True)
        outputs.append([layer(torch.ones(4, 10)).numpy() for _ in range(2)])
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])  # the same seed, the same masks
    assert not np.array_equal(outputs[0][0], outputs[0][1])  # which still change from call to call
    layer = layers.Dropout(0.5, noise_shape=(None, 1), seed=3)
    x = torch.from_numpy(rand(4, 6))
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())  # inference: identity


def test_dropout_noise_shape_checks_and_config():
    with pytest.raises(ValueError, match=r"Dropout 'dropout': `noise_shape` \(None, 1\) must have one entry per "
                                         r"axis of the input, batch included \(4\)"):
        Sequential([layers.Input((5, 5, 3)), layers.Dropout(0.5, noise_shape=(None, 1))])
    with pytest.raises(ValueError, match=r"does not broadcast to the input shape \(None, 5, 5, 3\): axis 3 must be "
                                         r"1, None or 3"):
        Sequential([layers.Input((5, 5, 3)), layers.Dropout(0.5, noise_shape=(None, 1, 1, 4))])
    layer = layers.Dropout(0.5, noise_shape=(None, 3))
    layer.train(True)
    with pytest.raises(ValueError, match=r"axis 1 must be 1, None or 5"):
        layer(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"`noise_shape` entries must be positive integers or None\. "
                                         r"Received: noise_shape=\(None, 0\)"):
        layers.Dropout(0.5, noise_shape=(None, 0))
    with pytest.raises(TypeError, match=r"`noise_shape` must be a tuple of sizes"):
        layers.Dropout(0.5, noise_shape="channels")
    dropout = layers.Dropout(0.3, noise_shape=[None, 1, 1, None], seed=5)
    spec = json.loads(json.dumps(layers.serialize(dropout)))
    assert spec["config"]["noise_shape"] == [None, 1, 1, None] and spec["config"]["seed"] == 5
    clone = layers.deserialize(spec)
    assert clone.noise_shape == (None, 1, 1, None) and clone.get_config() == spec["config"]
    assert repr(clone) == "Dropout(name='dropout', rate=0.3, noise_shape=(None, 1, 1, None), seed=5)"
    assert repr(layers.Dropout(0.3)) == "Dropout(name='dropout', rate=0.3)"
