"""Weights copied from a Keras model give the same outputs.

Part 1 (always on, no Keras needed): a plain NumPy forward pass of the zoo models, written here from
Keras's documented conventions (Conv2D kernel (kh, kw, in, out); SAME padding by TensorFlow's rule,
the extra pixel after; 2x2 pooling with VALID padding, which drops an odd last row; Flatten in
(H, W, C) order; Dense kernel (in, out)), fed the same random weights through `set_weights`.

Part 2 (`-m keras`, skipped unless Keras 3 is importable): the seed CNN built in real Keras, exactly as
/work/shared/peers/keras_seed.py does, its `get_weights()` copied into convnet; plus the places where
TensorFlow's semantics are subtle (SAME with stride 2 on odd and even sizes, SAME pooling). Run with
any backend, e.g. `KERAS_BACKEND=jax python -m pytest tests/test_keras_compat.py -m keras -o addopts=""`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convnet import activations, layers, nn, zoo

from .reference import avg_pool_ref, conv2d_ref, max_pool_ref, same_pads

ATOL = 1e-4  # float32 model against a float64 reference, through up to eight layers


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def images(n, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)  # pixels in [0, 1), as x / 255


def random_weights(shapes, seed=1):
    """He-scaled random kernels (so activations neither vanish nor explode) and non-zero biases, in Keras
    layouts; the last kernel is scaled down so that the softmax does not saturate."""
    rng = np.random.default_rng(seed)
    weights = []
    for index, shape in enumerate(shapes):
        if len(shape) == 1:
            weights.append((0.1 * rng.standard_normal(shape)).astype(np.float32))
            continue
        fan_in = int(np.prod(shape[:-1]))  # kh * kw * in for a conv kernel, in for a dense kernel
        gain = 1.0 if index >= len(shapes) - 2 else 2.0
        weights.append((rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(np.float32))
    return weights


# The NumPy forward pass, from Keras's documented layouts

def np_conv2d(x, kernel, bias, padding, strides=1):
    """keras.layers.Conv2D: kernel (kh, kw, in, out); output[n, i, j, o] = sum over taps (a, b) and in-channels
    of padded[n, i*s + a, j*s + b, c] * kernel[a, b, c, o], plus bias[o]. SAME pads by TF's rule."""
    n, h, w, _ = x.shape
    kh, kw, _, out_channels = kernel.shape
    if padding == "same":
        (top, bottom), (left, right) = same_pads(h, kh, strides), same_pads(w, kw, strides)
    else:
        top = bottom = left = right = 0
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))  # (N, H + t + b, W + l + r, C)
    out_h = (h + top + bottom - kh) // strides + 1
    out_w = (w + left + right - kw) // strides + 1
    out = np.zeros((n, out_h, out_w, out_channels))
    for a in range(kh):
        for b in range(kw):
            rows = padded[:, a:a + (out_h - 1) * strides + 1:strides, b:b + (out_w - 1) * strides + 1:strides]
            out += rows @ kernel[a, b]  # (N, out_h, out_w, C) @ (C, O) -> (N, out_h, out_w, O)
    return out + bias


def np_pool2x2(x, reduce):
    """2x2 pooling, stride 2, VALID: an odd last row or column is dropped."""
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return reduce(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))  # (N, H/2, 2, W/2, 2, C)


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def relu(z):
    return np.maximum(z, 0)


def np_seed_cnn(x, weights, dense_units=(128,)):
    """Forward pass of the seed CNN (and of homl_cnn with dense_units=(128, 64)); Dropout is the identity
    at inference. Returns the logits (before the softmax)."""
    w = iter(weights)
    h = x.astype(np.float64)
    h = relu(np_conv2d(h, next(w), next(w), "same"))
    h = np_pool2x2(h, np.max)
    for _ in range(2):
        h = relu(np_conv2d(h, next(w), next(w), "same"))
        h = relu(np_conv2d(h, next(w), next(w), "same"))
        h = np_pool2x2(h, np.max)
    h = h.reshape(len(h), -1)  # Flatten: (N, H, W, C) -> (N, H*W*C), C fastest
    for _ in dense_units:
        h = relu(h @ next(w) + next(w))
    return h @ next(w) + next(w)


def np_lenet5(x, weights):
    w = iter(weights)
    h = np.tanh(np_conv2d(x.astype(np.float64), next(w), next(w), "same"))
    h = np_pool2x2(h, np.mean)
    h = np.tanh(np_conv2d(h, next(w), next(w), "valid"))
    h = np_pool2x2(h, np.mean)
    h = np.tanh(np_conv2d(h, next(w), next(w), "valid"))
    h = h.reshape(len(h), -1)
    h = np.tanh(h @ next(w) + next(w))
    return h @ next(w) + next(w)


@pytest.mark.parametrize("size, kernel, strides, padding", [
    (7, 3, 1, "same"), (6, 4, 2, "same"), (7, 4, 2, "same"), (5, 2, 2, "same"), (7, 3, 2, "valid"),
])
def test_numpy_conv_matches_loop_reference(size, kernel, strides, padding):
    # the vectorised NumPy conv used below is itself checked against tests/reference.py
    x, w, b = rand(2, size, size + 1, 3), rand(kernel, kernel, 3, 4, seed=1), rand(4, seed=2)
    expected = conv2d_ref(x, w, strides, padding.upper()) + b
    np.testing.assert_allclose(np_conv2d(x.astype(np.float64), w, b, padding, strides), expected, atol=1e-9)


@pytest.mark.parametrize("reduce, ref", [(np.max, max_pool_ref), (np.mean, avg_pool_ref)], ids=["max", "avg"])
def test_numpy_pool_matches_loop_reference(reduce, ref):
    x = rand(2, 7, 6, 3)
    np.testing.assert_allclose(np_pool2x2(x.astype(np.float64), reduce), ref(x, 2, 2, "VALID"), atol=1e-12)


def _logits(model, x):
    """The model's output before its final softmax (the last layer's pre-activation)."""
    out = torch.from_numpy(x)
    with torch.no_grad():
        for layer in model.layers[:-1]:
            out = layer(out)
        return model.layers[-1].pre_activation(out).numpy()


def _check_against_numpy(model, forward, input_shape, n=4):
    weights = random_weights([w.shape for w in model.get_weights()])
    model.set_weights(weights)
    x = images(n, input_shape)
    logits = forward(x, weights)
    scale = np.abs(logits).max()
    assert 0.5 < scale < 100  # the softmax is neither flat nor saturated, so the comparison has teeth
    np.testing.assert_allclose(_logits(model, x), logits, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(model.predict(x, verbose=0), np_softmax(logits), atol=ATOL)


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (28, 20, 3)], ids=["28x28x1", "28x20x3"])
def test_seed_cnn_matches_numpy_forward(input_shape):
    # 28x20: odd sizes after pooling (7 -> 3, 5 -> 2) and a non-square map, so the Flatten order matters
    model = zoo.seed_cnn(input_shape=input_shape)
    _check_against_numpy(model, np_seed_cnn, input_shape)


def test_homl_cnn_matches_numpy_forward():
    model = zoo.homl_cnn()
    _check_against_numpy(model, lambda x, w: np_seed_cnn(x, w, dense_units=(128, 64)), (28, 28, 1))


def test_lenet5_matches_numpy_forward():
    _check_against_numpy(zoo.lenet5(), np_lenet5, (28, 28, 1), n=8)


@pytest.mark.parametrize("build, params, shapes", [
    (zoo.seed_cnn, 1_406_218, [(7, 7, 1, 64), (64,), (3, 3, 64, 128), (128,), (3, 3, 128, 128), (128,),
                               (3, 3, 128, 256), (256,), (3, 3, 256, 256), (256,), (2304, 128), (128,),
                               (128, 10), (10,)]),
    (zoo.homl_cnn, 1_413_834, None),
    (zoo.lenet5, 61_706, [(5, 5, 1, 6), (6,), (5, 5, 6, 16), (16,), (5, 5, 16, 120), (120,), (120, 84), (84,),
                          (84, 10), (10,)]),
], ids=["seed", "homl", "lenet5"])
def test_published_parameter_counts_and_keras_shapes(build, params, shapes):
    model = build()
    assert model.count_params() == params
    if shapes is not None:
        assert [w.shape for w in model.get_weights()] == shapes


# Part 2: real Keras 3



def keras_seed_cnn(keras):
    """The seed's model, built by the Keras peer that `convnet bench` runs."""
    from convnet.cli.peers.keras_peer import seed_model
    keras.utils.set_random_seed(0)
    return seed_model(keras)


def to_numpy(keras, value):
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


@pytest.mark.keras
def test_keras_seed_cnn_structure(keras):
    keras_model, model = keras_seed_cnn(keras), zoo.seed_cnn()
    assert keras_model.count_params() == model.count_params() == 1_406_218
    assert [type(layer).__name__ for layer in keras_model.layers] == [type(layer).__name__ for layer in model.layers]
    assert [layer.count_params() for layer in keras_model.layers] == [layer.count_params() for layer in model.layers]
    assert [tuple(layer.output.shape) for layer in keras_model.layers] == \
           [row["output_shape"] for row in model.layer_table()]
    assert [w.shape for w in keras_model.get_weights()] == [w.shape for w in model.get_weights()]


@pytest.mark.keras
def test_keras_seed_cnn_weights_give_the_same_predictions(keras):
    keras_model, model = keras_seed_cnn(keras), zoo.seed_cnn()
    model.set_weights(keras_model.get_weights())  # Keras's own glorot-initialised weights
    x = images(16)
    np.testing.assert_allclose(model.predict(x, verbose=0), keras_model.predict(x, verbose=0), atol=ATOL)
    # and with larger random weights, whose softmax is far from uniform, copied the other way round too
    weights = random_weights([w.shape for w in model.get_weights()])
    keras_model.set_weights(weights)
    model.set_weights(keras_model.get_weights())
    expected = keras_model.predict(x, verbose=0)
    assert expected.max() > 0.25  # well above the uniform 0.1
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=ATOL)
    for got, want in zip(model.get_weights(), keras_model.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.keras
def test_keras_lenet5_weights_give_the_same_predictions(keras):
    k = keras.layers
    keras_model = keras.models.Sequential([
        keras.Input(shape=(28, 28, 1)), k.Conv2D(6, 5, activation="tanh", padding="same"), k.AveragePooling2D(2),
        k.Conv2D(16, 5, activation="tanh"), k.AveragePooling2D(2), k.Conv2D(120, 5, activation="tanh"),
        k.Flatten(), k.Dense(84, activation="tanh"), k.Dense(10, activation="softmax")])
    model = zoo.lenet5()
    assert [layer.count_params() for layer in keras_model.layers] == [layer.count_params() for layer in model.layers]
    keras_model.set_weights(random_weights([w.shape for w in keras_model.get_weights()]))
    model.set_weights(keras_model.get_weights())
    x = images(16)
    np.testing.assert_allclose(model.predict(x, verbose=0), keras_model.predict(x, verbose=0), atol=ATOL)


@pytest.mark.keras
@pytest.mark.parametrize("size", [5, 6, 7, 8])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_keras_same_conv_stride2(keras, size, kernel):
    # SAME with stride 2: TF pads max((out - 1) * 2 + k - size, 0), the extra pixel after (bottom/right)
    x, w = rand(2, size, size + 1, 3), rand(kernel, kernel, 3, 4, seed=1)
    expected = to_numpy(keras, keras.ops.conv(x, w, strides=2, padding="same"))
    np.testing.assert_allclose(nn.conv2d(x, w, 2, "SAME").numpy(), expected, atol=1e-5)


@pytest.mark.keras
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel, strides, dilation, groups", [
    (3, 2, 1, 1), (4, 2, 1, 2), ((2, 3), (2, 1), 1, 1), (3, 1, 2, 1), (2, 1, (2, 3), 4),
], ids=str)
def test_keras_conv2d_layer(keras, kernel, strides, dilation, groups, padding):
    x = rand(2, 9, 8, 4)
    keras_layer = keras.layers.Conv2D(8, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                                      groups=groups, activation="relu", bias_initializer="random_normal")
    expected = to_numpy(keras, keras_layer(x))
    layer = layers.Conv2D(8, kernel, strides=strides, padding=padding, dilation_rate=dilation, groups=groups,
                          activation="relu")
    layer.build_for(x.shape[1:])
    layer.set_weights(keras_layer.get_weights())
    with torch.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    assert layer.compute_output_shape(x.shape[1:]) == tuple(keras_layer.compute_output_shape((None, *x.shape[1:])))[1:]


@pytest.mark.keras
@pytest.mark.parametrize("size", [5, 6, 7])
@pytest.mark.parametrize("pool_size, strides", [(2, None), (3, None), (3, 2), (2, 1), (3, 1)], ids=str)
@pytest.mark.parametrize("kind", ["MaxPooling2D", "AveragePooling2D"])
def test_keras_same_pooling(keras, kind, pool_size, strides, size):
    # max pooling pads with -inf (inputs are mostly negative, so a zero pad would win); the average
    # divides by the number of real pixels in each window
    x = rand(2, size, size + 2, 3) - 2
    pads = [same_pads(n, pool_size, pool_size if strides is None else strides) for n in (size, size + 2)]
    if kind == "AveragePooling2D" and keras.backend.backend() == "torch" and any(a != b for a, b in pads):
        pytest.skip("Keras's torch backend averages uneven SAME padding unlike TensorFlow (keras-team/keras#18452, "
                    "#19721); the TF and JAX backends are the reference")
    expected = to_numpy(keras, getattr(keras.layers, kind)(pool_size, strides=strides, padding="same")(x))
    with torch.no_grad():
        out = getattr(layers, kind)(pool_size, strides=strides, padding="same")(x).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.keras
def test_keras_dense_on_4d_input_and_flatten(keras):
    x = rand(2, 3, 4, 5)
    keras_dense = keras.layers.Dense(6, bias_initializer="random_normal")
    expected = to_numpy(keras, keras_dense(x))
    dense = layers.Dense(6)
    dense.build_for(x.shape[1:])
    dense.set_weights(keras_dense.get_weights())
    with torch.no_grad():
        np.testing.assert_allclose(dense(x).numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(layers.Flatten()(x).numpy(), to_numpy(keras, keras.layers.Flatten()(x)))


@pytest.mark.keras
def test_keras_batch_normalization(keras):
    x = rand(8, 4, 5, 3) * 2 + 1
    keras_bn = keras.layers.BatchNormalization(momentum=0.9)
    keras_bn.build(x.shape)
    start = [rand(3, seed=1), rand(3, seed=2), rand(3, seed=3), np.abs(rand(3, seed=4)) + 0.5]
    keras_bn.set_weights(start)
    bn = layers.BatchNormalization(momentum=0.9)
    bn.build_for(x.shape[1:])
    bn.set_weights(start)
    with torch.no_grad():
        np.testing.assert_allclose(bn(x).numpy(), to_numpy(keras, keras_bn(x, training=False)), atol=1e-5)
        bn.train()
        np.testing.assert_allclose(bn(x).numpy(), to_numpy(keras, keras_bn(x, training=True)), atol=1e-4)
    for got, want in zip(bn.get_weights(), keras_bn.get_weights()):  # moving statistics updated alike
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.keras
@pytest.mark.parametrize("name", activations.list_activations())
def test_keras_activations(keras, name):
    x = rand(2, 3, 7) * 3
    expected = to_numpy(keras, keras.activations.get(name)(x))
    np.testing.assert_allclose(activations.get(name)(torch.from_numpy(x)).numpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.keras
@pytest.mark.parametrize("name", ["glorot_uniform", "he_normal", "lecun_normal", "glorot_normal"])
def test_keras_initializer_spread(keras, name):
    # same distribution family and scale: compare the spread of large samples (3x3x64x128 kernels)
    shape = (3, 3, 64, 128)
    keras_sample = to_numpy(keras, keras.initializers.get(name)(shape))
    torch.manual_seed(0)
    sample = layers.Conv2D(128, 3, kernel_initializer=name)
    sample.build_for((8, 8, 64))
    ours = sample.get_weights()[0]
    assert ours.std() == pytest.approx(keras_sample.std(), rel=0.03)
    assert np.abs(ours).max() <= np.abs(keras_sample).max() * 1.02
