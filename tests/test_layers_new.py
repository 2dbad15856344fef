"""The functional-API layers (merging, reshaping, activation, separable, transposed, regularization and
LayerNormalization) against NumPy references written here from Keras 3's documented rules and source
(keras/src/layers/..., keras/src/backend/common/backend_utils.py), plus tests/reference.py's conv2d_ref.
Real Keras is compared in tests/test_keras_layers_new.py (-m keras).
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from convnet import layers, models

from .reference import conv2d_ref, same_pads

ATOL, RTOL = 1e-5, 1e-5  # float32 results against float64 references


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run(layer, x, training=False):
    """The layer's output on a NumPy batch (or a list of them, for a merge), as a float64 NumPy array."""
    layer.train(training)
    with torch.no_grad():
        inputs = [torch.from_numpy(v) for v in x] if isinstance(x, list) else torch.from_numpy(x)
        return layer(inputs).numpy().astype(np.float64)


def assert_close(out, expected, atol=ATOL, rtol=RTOL):
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=atol, rtol=rtol)


def randomise(layer, seed=3):
    """Random values for every weight (biases and gammas too, so that they show), set through set_weights in
    Keras's layouts; returns them."""
    weights = [rand(*shape, seed=seed + i) for i, shape in enumerate(layer.keras_weight_shapes())]
    layer.set_weights(weights)
    return weights


# Merging: elementwise rules with Keras's broadcasting, Concatenate

ELEMENTWISE = {
    "Add": lambda xs: sum(xs[1:], xs[0]),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: np.prod(np.stack(xs), axis=0),
    "Average": lambda xs: np.mean(np.stack(xs), axis=0),
    "Maximum": lambda xs: np.max(np.stack(xs), axis=0),
    "Minimum": lambda xs: np.min(np.stack(xs), axis=0),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_merges_match_numpy(name):
    count = 2 if name == "Subtract" else 3
    xs = [rand(2, 4, 5, 3, seed=i) for i in range(count)]
    layer = getattr(layers, name)()
    assert layer.multiple_inputs and isinstance(layer, layers.Merge)
    assert_close(run(layer, xs), ELEMENTWISE[name]([x.astype(np.float64) for x in xs]))
    assert layer.built and layer.input_shape == [(4, 5, 3)] * count and layer.output_shape == (4, 5, 3)
    assert layer.count_params() == 0 and layer.get_weights() == []


def keras_broadcast_shape(shapes):
    """Keras 3's Merge._compute_elemwise_op_output_shape, folded over the inputs (shapes without the batch
    axis): aligned from the right, equal sizes or a 1 that takes the other's size; None stays None."""
    output = shapes[0]
    for shape in shapes[1:]:
        longer, shorter = (output, shape) if len(output) >= len(shape) else (shape, output)
        head = list(longer[:len(longer) - len(shorter)])
        for a, b in zip(longer[len(longer) - len(shorter):], shorter):
            if a is None or b is None:
                head.append(None)
            elif a == 1:
                head.append(b)
            elif b == 1 or a == b:
                head.append(a)
            else:
                raise ValueError("incompatible")
        output = tuple(head)
    return output


@pytest.mark.parametrize("shapes", [[(4, 5, 3), (3,)], [(4, 5, 3), (1, 5, 3)], [(4, 1, 3), (1, 5, 1)],
                                    [(3,), (4, 5, 3), (5, 1)], [(None, 5, 3), (1, 5, 3)], [(4, None, 3), (3,)]],
                         ids=str)
def test_elementwise_merges_broadcast_as_keras(shapes):
    expected_shape = keras_broadcast_shape(shapes)
    assert layers.Add().compute_output_shape(shapes) == expected_shape
    concrete = [tuple(7 if d is None else d for d in shape) for shape in shapes]
    xs = [rand(2, *shape, seed=i) for i, shape in enumerate(concrete)]
    rank = max(x.ndim for x in xs)
    # Keras expands a lower-rank input after the batch axis: (N, C) -> (N, 1, 1, C)
    aligned = [x.reshape(x.shape[0], *(1,) * (rank - x.ndim), *x.shape[1:]).astype(np.float64) for x in xs]
    assert_close(run(layers.Maximum(), xs), np.max(np.broadcast_arrays(*aligned), axis=0))
    assert_close(run(layers.Add(), xs), sum(aligned[1:], aligned[0]))


def test_merge_mismatch_names_the_layer_and_each_input():
    message = (r"^Add 'add': inputs must have the same shape; input 0 has shape \(None, 8, 8, 16\), input 1 has "
               r"shape \(None, 8, 8, 32\)")
    with pytest.raises(ValueError, match=message):
        layers.Add(name="add").build_for([(8, 8, 16), (8, 8, 32)])
    with pytest.raises(ValueError, match=message):
        layers.Add(name="add")([torch.zeros(2, 8, 8, 16), torch.zeros(2, 8, 8, 32)])
    with pytest.raises(ValueError, match=r"Multiply 'multiply': inputs must have the same shape; .*input 2 has "
                                         r"shape \(None, 4\)"):
        layers.Multiply().compute_output_shape([(3,), (3,), (4,)])
    with pytest.raises(ValueError, match=r"Subtract 'subtract': expects a list of exactly 2 tensors. Received: "
                                         r"3 inputs"):
        layers.Subtract()([torch.zeros(1, 2)] * 3)
    with pytest.raises(ValueError, match=r"Average 'average': expects a list of at least 2 tensors. Received: "
                                         r"1 input$"):
        layers.Average()([torch.zeros(1, 2)])
    with pytest.raises(TypeError, match=r"Add 'add': expects a list of tensors, e.g. Add\(\)\(\[x, y\]\). "
                                        r"Received: a torch.Tensor"):
        layers.Add()(torch.zeros(1, 2))
    with pytest.raises(TypeError, match=r"Add 'add': expects a list of input shapes"):
        layers.Add().build_for((8, 8, 16))
    with pytest.raises(ValueError, match=r"Add 'add': expects batches \(N, \.\.\.\) of one batch size N; input 0 "
                                         r"has shape \(4, 3\), input 1 has shape \(1, 3\)"):
        layers.Add()([torch.zeros(4, 3), torch.zeros(1, 3)])  # torch would broadcast the batch; Keras refuses
    with pytest.raises(ValueError, match=r"Add 'add': input 1 has shape \(0, 3\)"):
        layers.Add().build_for([(2, 3), (0, 3)])


def test_a_built_merge_checks_new_shapes_too():
    add = layers.Add()
    add([torch.zeros(2, 3, 3, 4), torch.zeros(2, 3, 3, 4)])
    assert add([torch.ones(1, 5, 5, 4), torch.ones(1, 5, 5, 4)]).shape == (1, 5, 5, 4)  # no weights: any size
    with pytest.raises(ValueError, match=r"input 0 has shape \(None, 5, 5, 4\), input 1 has shape \(None, 5, 5, 3\)"):
        add([torch.ones(1, 5, 5, 4), torch.ones(1, 5, 5, 3)])


@pytest.mark.parametrize("axis", [-1, 3, 1, 2, -3])
def test_concatenate_matches_numpy(axis):
    sizes = [2, 3, 1]
    shapes = []
    for size in sizes:
        shape = [4, 5, 3]
        shape[axis % 4 - 1] = size
        shapes.append(tuple(shape))
    xs = [rand(2, *shape, seed=i) for i, shape in enumerate(shapes)]
    layer = layers.Concatenate(axis=axis)
    expected = np.concatenate(xs, axis=axis).astype(np.float64)
    assert_close(run(layer, xs), expected)
    assert layer.compute_output_shape(shapes) == expected.shape[1:]


def test_concatenate_shapes_and_errors():
    concat = layers.Concatenate(name="mix")
    assert concat.compute_output_shape([(None, 8, 16), (None, 8, 32)]) == (None, 8, 48)
    assert concat.compute_output_shape([(None, 8, 16), (6, 8, 32)]) == (6, 8, 48)  # a known size wins over None
    assert layers.Concatenate(axis=1).compute_output_shape([(None, 8, 16), (4, 8, 16)]) == (None, 8, 16)
    with pytest.raises(ValueError, match=r"^Concatenate 'mix': inputs must have the same shape except along the "
                                         r"concatenation axis \(axis=-1\); input 0 has shape \(None, 8, 8, 16\), "
                                         r"input 1 has shape \(None, 4, 4, 16\)$"):
        concat.build_for([(8, 8, 16), (4, 4, 16)])
    with pytest.raises(ValueError, match=r"same shape except along the concatenation axis"):
        concat.build_for([(8, 8, 16), (8, 16)])  # ranks differ
    with pytest.raises(ValueError, match=r"Concatenate 'mix': axis=4 is out of range for inputs of rank 4"):
        layers.Concatenate(axis=4, name="mix").build_for([(2, 2, 3), (2, 2, 3)])
    with pytest.raises(ValueError, match=r"`axis` counts the batch axis \(axis 0\)"):
        layers.Concatenate(axis=0)
    with pytest.raises(TypeError, match=r"`axis` must be an integer. Received: axis='x'"):
        layers.Concatenate(axis="x")


def test_merge_geometry_is_a_one_by_one_window():
    identity = ((1, 1, 0), (1, 1, 0))
    for layer in (layers.Add(), layers.Subtract(), layers.Concatenate(), layers.Concatenate(axis=3)):
        assert layer.geometry([(8, 8, 3), (8, 8, 3)]) == identity
        assert layer.geometry((8, 8, 3)) == identity  # one input's shape works too
    assert layers.Add().geometry([(16,), (16,)]) is None  # no spatial axes left
    assert layers.Concatenate(axis=1).geometry([(8, 8, 3), (8, 8, 3)]) is None  # positions move along height


# Reshaping

@pytest.mark.parametrize("padding, pairs", [(1, ((1, 1), (1, 1))), ((2, 0), ((2, 2), (0, 0))),
                                            (((1, 2), (3, 0)), ((1, 2), (3, 0))), ((1, (0, 2)), ((1, 1), (0, 2)))],
                         ids=str)
def test_zero_padding_matches_numpy(padding, pairs):
    x = rand(2, 3, 4, 2)
    layer = layers.ZeroPadding2D(padding)
    expected = np.pad(x, ((0, 0), *pairs, (0, 0))).astype(np.float64)
    assert_close(run(layer, x), expected)
    assert layer.compute_output_shape((3, 4, 2)) == expected.shape[1:]
    assert layer.compute_output_shape((None, 4, 2)) == (None, expected.shape[2], 2)
    assert layer.geometry((3, 4, 2)) == ((1, 1, pairs[0][0]), (1, 1, pairs[1][0]))
    assert layer.get_config()["padding"] == [list(pairs[0]), list(pairs[1])]


@pytest.mark.parametrize("cropping, pairs", [(1, ((1, 1), (1, 1))), ((0, 2), ((0, 0), (2, 2))),
                                             (((1, 0), (2, 1)), ((1, 0), (2, 1)))], ids=str)
def test_cropping_matches_numpy(cropping, pairs):
    x = rand(2, 5, 6, 2)
    layer = layers.Cropping2D(cropping)
    (t, b), (l, r) = pairs
    expected = x[:, t:5 - b, l:6 - r, :].astype(np.float64)
    out = layer(torch.from_numpy(x))
    assert out.is_contiguous()  # NHWC-contiguous, so the next convolution sees channels_last memory
    assert_close(out.numpy().astype(np.float64), expected)
    assert layer.compute_output_shape((5, None, 2)) == (expected.shape[1], None, 2)
    assert layer.geometry((5, 6, 2)) == ((1, 1, -t), (1, 1, -l))


def test_padding_and_cropping_errors():
    with pytest.raises(ValueError, match=r"`padding` must be an int, a tuple of 2 ints .* Received: padding=-1"):
        layers.ZeroPadding2D(-1)
    with pytest.raises(ValueError, match=r"Received: padding=\(1, 2, 3\)"):
        layers.ZeroPadding2D((1, 2, 3))
    with pytest.raises(ValueError, match=r"Received: padding=\(\(1, 2\), \(3, -1\)\)"):
        layers.ZeroPadding2D(((1, 2), (3, -1)))
    with pytest.raises(TypeError, match=r"`cropping` must be an int.* Received: cropping=1.5"):
        layers.Cropping2D(1.5)
    crop = layers.Cropping2D(((2, 1), (0, 0)), name="crop")
    with pytest.raises(ValueError, match=r"Cropping2D 'crop': cropping=\(\(2, 1\), \(0, 0\)\) must leave at least one "
                                         r"row and column of the input; received input shape \(None, 3, 5, 1\)"):
        crop.build_for((3, 5, 1))
    with pytest.raises(ValueError, match=r"must leave at least one row"):
        layers.Cropping2D(((2, 1), (0, 0)))(torch.zeros(1, 3, 5, 1))
    with pytest.raises(ValueError, match=r"ZeroPadding2D 'zero_padding2d': expected a 4-D batch"):
        layers.ZeroPadding2D()(torch.zeros(2, 3, 3))


def bilinear_ref(x, size):
    """tf.image.resize(..., "bilinear") as TensorFlow's resize_bilinear with half_pixel_centers=True computes
    it: output row i samples in = (i + 0.5) * (in_size / out_size) - 0.5, between rows floor(in) (at least
    0) and ceil(in) (at most in_size - 1), weighted by in - floor(in); then the same along the columns."""
    def along(x, axis, factor):
        n_in = x.shape[axis]
        n_out = n_in * factor
        out = []
        for i in range(n_out):
            position = (i + 0.5) * (n_in / n_out) - 0.5
            low = math.floor(position)
            lerp = position - low
            lower, upper = max(low, 0), min(math.ceil(position), n_in - 1)
            a, b = np.take(x, lower, axis=axis), np.take(x, upper, axis=axis)
            out.append(a * (1 - lerp) + b * lerp)
        return np.stack(out, axis=axis)
    return along(along(np.asarray(x, np.float64), 1, size[0]), 2, size[1])


@pytest.mark.parametrize("size", [2, (3, 2), (1, 4)], ids=str)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling_matches_numpy(size, interpolation):
    x = rand(2, 3, 5, 2)
    layer = layers.UpSampling2D(size, interpolation=interpolation)
    sh, sw = (size, size) if isinstance(size, int) else size
    if interpolation == "nearest":  # Keras: ops.repeat along rows, then columns
        expected = np.repeat(np.repeat(x, sh, axis=1), sw, axis=2).astype(np.float64)
    else:
        expected = bilinear_ref(x, (sh, sw))
    assert_close(run(layer, x), expected)
    assert layer.compute_output_shape((3, None, 2)) == (3 * sh, None, 2)
    assert layer.geometry((3, 5, 2)) is None  # a fractional stride: unknown to the receptive-field arithmetic
    assert layers.UpSampling2D(1).geometry((3, 5, 2)) == ((1, 1, 0), (1, 1, 0))


def test_upsampling_bilinear_small_case_by_hand():
    """Doubling [0, 1, 2]: half-pixel centres sample 0 - 0.25 (clamped to 0), 0.25, 0.75, 1.25, 1.75, 2.25
    (clamped to 2)."""
    x = np.array([0.0, 1.0, 2.0], np.float32).reshape(1, 1, 3, 1)
    out = run(layers.UpSampling2D((1, 2), interpolation="bilinear"), x)[0, 0, :, 0]
    np.testing.assert_allclose(out, [0.0, 0.25, 0.75, 1.25, 1.75, 2.0], atol=1e-6)


def test_upsampling_errors():
    with pytest.raises(ValueError, match=r"unknown interpolation 'bicubic'"):
        layers.UpSampling2D(interpolation="bicubic")
    with pytest.raises(ValueError, match=r"`size` values must be >= 1. Received: size=0"):
        layers.UpSampling2D(0)
    with pytest.raises(ValueError, match=r"`data_format` must be 'channels_last' or None"):
        layers.UpSampling2D(data_format="channels_first")


@pytest.mark.parametrize("target", [(20, 3), (-1, 3), (5, -1), (3, 4, 5), (60,)], ids=str)
def test_reshape_matches_numpy(target):
    x = rand(2, 4, 5, 3)
    layer = layers.Reshape(target)
    expected = x.reshape(2, *target).astype(np.float64)  # row-major over (H, W, C), as Keras
    assert_close(run(layer, x), expected)
    assert layer.build_for((4, 5, 3)) == expected.shape[1:]
    assert layer.compute_output_shape((None, 5, 3)) == tuple(None if d == -1 else d for d in target)
    assert layer.geometry((4, 5, 3)) is None


def test_reshape_errors():
    with pytest.raises(ValueError, match=r"Reshape 'reshape': cannot reshape an input of shape \(None, 4, 5, 3\) "
                                         r"\(60 values per sample\) to target_shape=\(7, -1\)"):
        layers.Reshape((7, -1)).build_for((4, 5, 3))
    with pytest.raises(ValueError, match=r"cannot reshape .* to target_shape=\(6, 10, 2\)"):
        layers.Reshape((6, 10, 2))(torch.zeros(1, 4, 5, 3))
    with pytest.raises(ValueError, match=r"at most one -1 .* Received: target_shape=\(-1, -1\)"):
        layers.Reshape((-1, -1))
    with pytest.raises(ValueError, match=r"Received: target_shape=\(0, 3\)"):
        layers.Reshape((0, 3))
    with pytest.raises(TypeError, match=r"`target_shape` must be a tuple of ints"):
        layers.Reshape(12)


# Activation layers

def keras_relu(x, max_value=None, negative_slope=0.0, threshold=0.0):
    """Keras 3's ReLU (keras/src/activations/activations.py, ReLU.static_call): x where x > threshold else 0
    (relu(x) when threshold is 0), clipped to [0, max_value], minus negative_slope * relu(threshold - x).
    Keras casts the threshold to the input's dtype before comparing, so the test is made in float32."""
    above = x > np.float32(threshold)
    x = x.astype(np.float64)
    positive = np.maximum(x, 0) if threshold == 0 else np.where(above, x, 0.0)
    if max_value is not None:
        positive = np.clip(positive, 0, max_value)
    return positive - negative_slope * np.maximum(threshold - x, 0) if negative_slope else positive


@pytest.mark.parametrize("kwargs", [{}, {"max_value": 6.0}, {"negative_slope": 0.1}, {"threshold": 0.5},
                                    {"max_value": 1.0, "negative_slope": 0.2, "threshold": 0.3},
                                    {"max_value": 0.2, "threshold": 0.5}], ids=str)
def test_relu_matches_keras_formula(kwargs):
    x = np.concatenate([rand(2, 3, 4, 5).ravel(), [0.0, 0.5, 0.3, 1.0, 6.0]]).astype(np.float32)[None]
    assert_close(run(layers.ReLU(**kwargs), x), keras_relu(x, **kwargs))


def test_leaky_relu_and_errors():
    x = rand(2, 3, 3, 2)
    assert layers.LeakyReLU().negative_slope == 0.3  # Keras 3's default (Keras 2's was alpha=0.3 too; the op's is 0.2)
    assert_close(run(layers.LeakyReLU(0.1), x), np.where(x >= 0, x, 0.1 * x).astype(np.float64))
    assert layers.LeakyReLU(alpha=0.05).negative_slope == 0.05  # Keras 2's name, accepted as Keras 3 does
    with pytest.raises(ValueError, match=r"`negative_slope` must be >= 0.0. Received: negative_slope=-0.1"):
        layers.LeakyReLU(-0.1)
    with pytest.raises(ValueError, match=r"`max_value` must be >= 0.0. Received: max_value=-1.0"):
        layers.ReLU(max_value=-1.0)
    with pytest.raises(ValueError, match=r"`threshold` must be >= 0.0"):
        layers.ReLU(threshold=-0.5)
    with pytest.raises(TypeError, match=r"`negative_slope` must be a number"):
        layers.ReLU(negative_slope=None)


def softmax_ref(x, axes):
    shifted = x - x.max(axis=axes, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axes, keepdims=True)


@pytest.mark.parametrize("axis", [-1, 1, 2, [1, 2], (1, 2, 3)], ids=str)
def test_softmax_matches_numpy(axis):
    x = rand(2, 3, 4, 5).astype(np.float64) * 3
    axes = axis if isinstance(axis, int) else tuple(axis)
    layer = layers.Softmax(axis=axis)
    assert_close(run(layer, x.astype(np.float32)), softmax_ref(x, axes))
    assert layer.compute_output_shape((3, 4, 5)) == (3, 4, 5)
    assert layer.geometry((3, 4, 5)) == (((1, 1, 0), (1, 1, 0)) if axis == -1 else None)


def test_softmax_errors():
    with pytest.raises(ValueError, match=r"`axis` counts the batch axis \(0\)"):
        layers.Softmax(axis=0)
    with pytest.raises(TypeError, match=r"`axis` must be an int or a list of ints. Received: axis='x'"):
        layers.Softmax(axis="x")
    with pytest.raises(ValueError, match=r"Softmax 'softmax': axis=3 is out of range for inputs of rank 3 \(batch "
                                         r"axis included\); received shape \(None, 4, 5\)"):
        layers.Softmax(axis=3)(torch.zeros(2, 4, 5))


def test_a_model_ending_in_softmax_trains_on_logits_as_dense_softmax_does():
    """The engine takes the cross-entropy of a final softmax in log space (output_activation); a model that
    ends in layers.Softmax() must train exactly as one ending in Dense(activation="softmax")."""
    def build(final_softmax_layer):
        head = [layers.Dense(3), layers.Softmax()] if final_softmax_layer else [layers.Dense(3, activation="softmax")]
        model = models.Sequential([layers.Input(shape=(4, 4, 1)), layers.Flatten(), *head])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
        return model

    ours, reference = build(True), build(False)
    assert ours.output_activation == reference.output_activation == "softmax"
    ours.set_weights(reference.get_weights())
    x = rand(8, 4, 4, 1) * 30  # large logits: softmax-then-log would lose precision where log space does not
    y = np.arange(8) % 3
    assert_close(ours.logits(torch.from_numpy(x)).detach().numpy(), reference.logits(torch.from_numpy(x)).detach().numpy())
    ours.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
    reference.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not hasattr(layers.Softmax(axis=1), "activation_name")  # not a class softmax: never fused


# Depthwise and separable convolutions

def depthwise_ref(x, kernel, strides, padding, dilation=1):
    """tf.nn.depthwise_conv2d: output channel c * dm + m is input channel c convolved with kernel[:, :, c, m]."""
    channels, multiplier = kernel.shape[2], kernel.shape[3]
    outputs = [conv2d_ref(x[..., c:c + 1], kernel[:, :, c:c + 1, m:m + 1], strides, padding, dilation)
               for c in range(channels) for m in range(multiplier)]
    return np.concatenate(outputs, axis=3)


CONV_CASES = [  # (input size, kernel, strides, padding, dilation): odd and even sizes, strides 1 and 2
    ((5, 6), 3, 1, "valid", 1), ((5, 6), 3, 2, "same", 1), ((6, 5), 2, 2, "same", 1), ((7, 6), (3, 2), (2, 1), "valid", 1),
    ((6, 7), 3, 1, "same", 2), ((8, 7), 2, 2, "valid", 2), ((7, 8), 4, 2, "same", 1),
]


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("size, kernel, strides, padding, dilation", CONV_CASES, ids=str)
def test_depthwise_conv_matches_reference(size, kernel, strides, padding, dilation, multiplier):
    x = rand(2, *size, 3)
    layer = layers.DepthwiseConv2D(kernel, strides=strides, padding=padding, depth_multiplier=multiplier,
                                   dilation_rate=dilation, activation="relu")
    layer.build_for(x.shape[1:])
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    assert layer.keras_weight_shapes() == [(kh, kw, 3, multiplier), (3 * multiplier,)]
    assert layer.count_params() == kh * kw * 3 * multiplier + 3 * multiplier  # Keras's count
    depthwise, bias = randomise(layer)
    expected = np.maximum(depthwise_ref(x, depthwise, strides, padding.upper(), dilation) + bias, 0)
    assert_close(run(layer, x), expected)
    assert layer.compute_output_shape(x.shape[1:]) == expected.shape[1:]
    assert [w.shape for w in layer.get_weights()] == [depthwise.shape, bias.shape]
    np.testing.assert_array_equal(layer.get_weights()[0], depthwise)  # the layout round trip


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("size, kernel, strides, padding, dilation", CONV_CASES[:5], ids=str)
def test_separable_conv_matches_reference(size, kernel, strides, padding, dilation, multiplier):
    x = rand(2, *size, 3)
    layer = layers.SeparableConv2D(4, kernel, strides=strides, padding=padding, depth_multiplier=multiplier,
                                   dilation_rate=dilation)
    layer.build_for(x.shape[1:])
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    assert layer.weight_names() == ["depthwise_kernel", "pointwise_kernel", "bias"]
    assert layer.keras_weight_shapes() == [(kh, kw, 3, multiplier), (1, 1, 3 * multiplier, 4), (4,)]
    assert layer.count_params() == kh * kw * 3 * multiplier + 3 * multiplier * 4 + 4
    depthwise, pointwise, bias = randomise(layer)
    # tf.nn.separable_conv2d: the depthwise step (with the strides, padding and dilation), then a 1x1 conv
    expected = depthwise_ref(x, depthwise, strides, padding.upper(), dilation) @ pointwise[0, 0] + bias
    assert_close(run(layer, x), expected)
    assert layer.compute_output_shape(x.shape[1:]) == expected.shape[1:]


def test_depthwise_and_separable_arguments():
    with pytest.raises(ValueError, match=r"`depth_multiplier` must be >= 1. Received: depth_multiplier=0"):
        layers.DepthwiseConv2D(3, depth_multiplier=0)
    with pytest.raises(ValueError, match=r"unknown padding 'full'"):
        layers.SeparableConv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match=r"`filters` must be >= 1"):
        layers.SeparableConv2D(0, 3)
    with pytest.raises(ValueError, match=r"DepthwiseConv2D 'depthwise_conv2d': the kernel of size 5 does not fit"):
        layers.DepthwiseConv2D(5).build_for((4, 6, 2))
    layer = layers.DepthwiseConv2D(3)
    layer.build_for((6, 6, 2))
    with pytest.raises(ValueError, match=r"DepthwiseConv2D 'depthwise_conv2d': expected inputs with 2 channels"):
        layer(torch.zeros(1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"weight 'kernel' must have shape \(3, 3, 2, 1\) \(Keras layout\)"):
        layer.set_weights([np.zeros((3, 3, 1, 2)), np.zeros(2)])
    assert layers.DepthwiseConv2D(3, padding="same").macs((6, 6, 2), (6, 6, 2)) == 6 * 6 * 2 * 9
    assert layers.SeparableConv2D(8, 3, depth_multiplier=2).macs((6, 6, 2), (4, 4, 8)) == 4 * 4 * 4 * (9 + 8)


# Conv2DTranspose

def keras_deconv_length(size, k, s, padding, output_padding, d):
    """Keras 3's `_get_output_shape_given_tf_padding` (keras/src/backend/common/backend_utils.py)."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return (size - 1) * s + span + (max(span, s) - span if output_padding is None else output_padding)
    return size * s if output_padding is None else (size - 1) * s + span % 2 + output_padding


def conv_transpose_ref(x, kernel, strides, padding, output_padding=None, dilation=1):
    """tf.nn.conv2d_transpose with Keras's output shape: the gradient of a convolution whose input has that
    shape. Input pixel (i, j) adds x[i, j] @ kernel[a, b].T to output pixel (i*s + a*d - top, j*s + b*d - left),
    where top/left is the SAME padding TensorFlow computes for that convolution (0 for VALID)."""
    x = np.asarray(x, np.float64)
    n, h, w, _ = x.shape
    kh, kw, filters, _ = kernel.shape
    s, d = strides, dilation
    op = (None, None) if output_padding is None else output_padding
    out_h, out_w = (keras_deconv_length(size, k, s, padding, extra, d)
                    for size, k, extra in zip((h, w), (kh, kw), op))
    top = same_pads(out_h, kh, s, d)[0] if padding == "same" else 0
    left = same_pads(out_w, kw, s, d)[0] if padding == "same" else 0
    out = np.zeros((n, out_h, out_w, filters))
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    row, col = i * s + a * d - top, j * s + b * d - left
                    if 0 <= row < out_h and 0 <= col < out_w:
                        out[:, row, col, :] += x[:, i, j, :] @ kernel[a, b].T  # kernel[a, b]: (filters, in)
    return out


TRANSPOSE_CASES = [  # (input size, kernel, strides, padding, output_padding, dilation)
    ((4, 5), 3, 1, "valid", None, 1), ((4, 5), 3, 1, "same", None, 1), ((4, 5), 4, 1, "same", None, 1),
    ((5, 4), 3, 2, "same", None, 1), ((5, 4), 3, 2, "valid", None, 1), ((4, 5), 2, 2, "same", None, 1),
    ((4, 5), 2, 2, "valid", None, 1), ((5, 5), 1, 2, "valid", None, 1), ((3, 4), 4, 2, "same", None, 1),
    ((5, 4), 3, 2, "same", (1, 0), 1), ((4, 5), 3, 2, "valid", (1, 1), 1), ((4, 4), 2, 2, "same", (1, 1), 1),
    ((3, 4), 5, 3, "same", (2, 1), 1), ((4, 5), 3, 1, "same", None, 2), ((4, 5), 2, 1, "valid", None, 3),
    ((4, 5), 4, 3, "same", None, 1),
]


@pytest.mark.parametrize("size, kernel, strides, padding, output_padding, dilation", TRANSPOSE_CASES, ids=str)
def test_conv_transpose_matches_reference(size, kernel, strides, padding, output_padding, dilation):
    x = rand(2, *size, 3)
    layer = layers.Conv2DTranspose(4, kernel, strides=strides, padding=padding, output_padding=output_padding,
                                   dilation_rate=dilation, activation="tanh")
    layer.build_for(x.shape[1:])
    assert layer.keras_weight_shapes() == [(kernel, kernel, 4, 3), (4,)]  # Keras's (kh, kw, filters, in)
    assert layer.count_params() == kernel * kernel * 4 * 3 + 4
    weights = randomise(layer)
    kernel_keras, bias = weights[0] * 0.3, weights[1]
    layer.set_weights([kernel_keras, bias])
    expected = np.tanh(conv_transpose_ref(x, kernel_keras, strides, padding, output_padding, dilation) + bias)
    assert_close(run(layer, x), expected)
    assert layer.compute_output_shape(x.shape[1:]) == expected.shape[1:]
    assert layer.compute_output_shape((None, size[1], 3))[0] is None


def test_conv_transpose_refuses_what_tensorflow_refuses():
    with pytest.raises(ValueError, match=r"`strides` > 1 cannot be combined with `dilation_rate` > 1"):
        layers.Conv2DTranspose(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match=r"`output_padding` must be strictly less than `strides`.* "
                                         r"Received: output_padding=2, strides=2"):
        layers.Conv2DTranspose(4, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match=r"`output_padding` values must be >= 0"):
        layers.Conv2DTranspose(4, 3, strides=2, output_padding=-1)
    # an even kernel, 'same', output_padding 0: the output is 2n - 2, whose SAME convolution gives n - 1
    up = layers.Conv2DTranspose(4, 2, strides=2, padding="same", output_padding=0, name="up")
    with pytest.raises(ValueError, match=r"Conv2DTranspose 'up': output_padding=\(0, 0\) gives an output height of 8 "
                                         r"for an input of 5, and a 'same' convolution of 8 pixels \(kernel 2, "
                                         r"stride 2\) gives 4, not 5; TensorFlow refuses this"):
        up.build_for((5, 5, 3))
    with pytest.raises(ValueError, match=r"TensorFlow refuses this"):
        layers.Conv2DTranspose(4, 2, strides=2, padding="same", output_padding=0)(torch.zeros(1, 5, 5, 3))


# SpatialDropout2D

def test_spatial_dropout_drops_whole_channels():
    torch.manual_seed(0)
    layer = layers.SpatialDropout2D(0.25)
    x = rand(16, 4, 5, 32) + 5.0  # no zeros in the input
    assert_close(run(layer, x), x.astype(np.float64))  # inference: identity
    out = run(layer, x, training=True)
    dropped = out == 0
    per_channel = dropped.all(axis=(1, 2))  # (N, C): one decision per sample and channel
    assert (dropped == per_channel[:, None, None, :]).all()
    assert_close(np.where(dropped, 0.0, out), np.where(dropped, 0.0, x / 0.75))  # kept: scaled by 1 / (1 - rate)
    assert 0.15 < per_channel.mean() < 0.35  # 512 draws of a 0.25 coin
    assert layers.SpatialDropout2D(0.0).train(True)(torch.from_numpy(x)).equal(torch.from_numpy(x))


def test_spatial_dropout_arguments():
    with pytest.raises(ValueError, match=r"`rate` must be < 1.0. Received: rate=1.0"):
        layers.SpatialDropout2D(1.0)
    with pytest.raises(ValueError, match=r"`seed` must be >= 0"):
        layers.SpatialDropout2D(0.5, seed=-1)
    with pytest.raises(ValueError, match=r"SpatialDropout2D 'spatial_dropout2d': expected a 4-D batch"):
        layers.SpatialDropout2D(0.5)(torch.zeros(2, 8))
    assert layers.SpatialDropout2D(0.5, seed=7).get_config()["seed"] == 7


# LayerNormalization

@pytest.mark.parametrize("axis", [-1, 3, [1, 2, 3], [1, 3], 2, [-2, -1]], ids=str)
@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_layer_normalization_matches_numpy(axis, center, scale):
    x = rand(2, 3, 4, 5) * 2 + 1
    layer = layers.LayerNormalization(axis=axis, center=center, scale=scale)
    layer.build_for(x.shape[1:])
    axes = tuple(sorted({a % 4 for a in ([axis] if isinstance(axis, int) else axis)}))
    shape = tuple(x.shape[a] for a in axes)
    assert layer.keras_weight_shapes() == [shape] * (center + scale)
    weights = randomise(layer)
    mean = x.astype(np.float64).mean(axis=axes, keepdims=True)
    variance = x.astype(np.float64).var(axis=axes, keepdims=True)  # biased, as Keras's moments
    expected = (x - mean) / np.sqrt(variance + 1e-3)  # Keras 3's default epsilon
    broadcast = [x.shape[a] if a in axes else 1 for a in range(4)]
    if scale:
        expected = expected * weights[0].reshape(broadcast)
    if center:
        expected = expected + weights[-1].reshape(broadcast)
    for training in (False, True):  # the same in both modes: no moving statistics
        assert_close(run(layer, x, training=training), expected, atol=1e-4)
    assert layer.geometry(x.shape[1:]) == (((1, 1, 0), (1, 1, 0)) if axes == (3,) else None)


def test_layer_normalization_arguments():
    layer = layers.LayerNormalization()
    assert layer.epsilon == 1e-3 and layer.weight_names() == []
    layer.build_for((4, 4, 8))
    assert layer.weight_names() == ["gamma", "beta"] and layer.count_params() == 16
    with pytest.raises(ValueError, match=r"`axis` counts the batch axis \(0\)"):
        layers.LayerNormalization(axis=[0, 1])
    with pytest.raises(ValueError, match=r"LayerNormalization 'layer_normalization': axis=4 is out of range for "
                                         r"inputs of rank 4"):
        layers.LayerNormalization(axis=4).build_for((3, 3, 2))
    with pytest.raises(ValueError, match=r"the normalised axes \(axis=\[1, 2\]\) must have known sizes"):
        layers.LayerNormalization(axis=[1, 2]).build_for((None, 3, 2))
    with pytest.raises(ValueError, match=r"`epsilon` must be > 0.0"):
        layers.LayerNormalization(epsilon=0)


# Receptive-field geometry, against the dependencies autograd finds

def dependencies(layer, shape, row):
    """Which input rows (and columns) output pixel (row, row) depends on, found by back-propagating from it."""
    x = torch.randn(1, *shape, requires_grad=True)
    layer.train(False)
    out = layer(x)
    out[0, row, row].sum().backward()
    touched = x.grad[0].abs().sum(dim=2) > 0  # (H, W)
    rows = torch.nonzero(touched.any(dim=1)).flatten().tolist()
    cols = torch.nonzero(touched.any(dim=0)).flatten().tolist()
    return rows, cols


@pytest.mark.parametrize("make", [
    lambda: layers.DepthwiseConv2D(3, strides=2, padding="same"),
    lambda: layers.DepthwiseConv2D(3, padding="valid", dilation_rate=2),
    lambda: layers.SeparableConv2D(2, (3, 3), strides=2, padding="same"),
    lambda: layers.Conv2DTranspose(2, 3, padding="same"),
    lambda: layers.Conv2DTranspose(2, 4, padding="same"),
    lambda: layers.Conv2DTranspose(2, 3, padding="valid", dilation_rate=2),
    lambda: layers.ZeroPadding2D(((2, 0), (2, 1))),
    lambda: layers.Cropping2D(((1, 0), (1, 2))),
], ids=["depthwise_same_s2", "depthwise_dilated", "separable_same_s2", "transpose_same_k3", "transpose_same_k4",
        "transpose_valid_dilated", "zero_padding", "cropping"])
def test_geometry_matches_the_dependencies(make):
    """The window (kernel span, stride, padding before) that `geometry` reports holds exactly the input pixels
    that autograd finds an output pixel depends on (every dilation-th one for a dilated kernel)."""
    layer, shape, row = make(), (9, 9, 2), 3
    layer.build_for(shape)
    if layer.weights:
        randomise(layer)
    dilation = getattr(layer, "dilation_rate", (1, 1))
    for axis, found in enumerate(dependencies(layer, shape, row)):
        span, stride, before = layer.geometry(shape)[axis]
        first = row * stride - before  # where the window of output pixel `row` starts, in input pixels
        assert found == [i for i in range(first, first + span, dilation[axis]) if 0 <= i < shape[axis]], axis


def test_conv_transpose_with_stride_has_no_integer_geometry():
    assert layers.Conv2DTranspose(2, 3, strides=2).geometry((5, 5, 2)) is None


# Every new layer: configuration round trip, repr, gradients

NEW_LAYERS = {
    "Add": lambda: layers.Add(name="plus"),
    "Subtract": lambda: layers.Subtract(),
    "Multiply": lambda: layers.Multiply(),
    "Average": lambda: layers.Average(),
    "Maximum": lambda: layers.Maximum(),
    "Minimum": lambda: layers.Minimum(),
    "Concatenate": lambda: layers.Concatenate(axis=2),
    "ZeroPadding2D": lambda: layers.ZeroPadding2D(((1, 2), (0, 1))),
    "Cropping2D": lambda: layers.Cropping2D((1, 2)),
    "UpSampling2D": lambda: layers.UpSampling2D((2, 3), interpolation="bilinear"),
    "Reshape": lambda: layers.Reshape((-1, 8)),
    "ReLU": lambda: layers.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.05),
    "LeakyReLU": lambda: layers.LeakyReLU(negative_slope=0.2),
    "Softmax": lambda: layers.Softmax(axis=[1, 2]),
    "DepthwiseConv2D": lambda: layers.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=2,
                                                      activation="relu", use_bias=False,
                                                      depthwise_initializer="he_normal"),
    "SeparableConv2D": lambda: layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, dilation_rate=2,
                                                      pointwise_initializer="he_uniform", bias_initializer="ones"),
    "Conv2DTranspose": lambda: layers.Conv2DTranspose(3, (2, 3), strides=(2, 1), padding="same",
                                                      output_padding=(1, 0), activation="elu"),
    "SpatialDropout2D": lambda: layers.SpatialDropout2D(0.3, seed=1),
    "LayerNormalization": lambda: layers.LayerNormalization(axis=[1, 2, 3], epsilon=1e-5, center=False),
}


def build_example(layer):
    return layer.build_for([(6, 6, 4)] * 2 if getattr(layer, "multiple_inputs", False) else (6, 6, 4))


def test_every_new_registered_layer_has_an_example():
    new_modules = {"merging", "reshaping", "activation", "separable", "transposed", "regularization"}
    registered = {name for name in layers.list_layers()
                  if layers.get_layer_class(name).__module__.rsplit(".", 1)[-1] in new_modules}
    assert registered | {"LayerNormalization"} == set(NEW_LAYERS)


@pytest.mark.parametrize("name", sorted(NEW_LAYERS))
def test_new_layers_config_round_trip_and_repr(name):
    layer = NEW_LAYERS[name]()
    spec = layers.serialize(layer)
    assert spec["class_name"] == name
    clone = layers.deserialize(spec)
    assert type(clone) is type(layer) and clone.get_config() == spec["config"] and repr(clone) == repr(layer)
    assert repr(layer).startswith(f"{name}(name={layer.name!r}")
    for parameter in list(inspect.signature(type(layer).__init__).parameters.values())[1:]:
        if parameter.default is inspect.Parameter.empty and parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
            assert f"{parameter.name}=" in repr(layer)
    build_example(layer)  # building adds weights, not configuration
    assert layers.serialize(layer) == spec
    assert layer.count_params() == sum(math.prod(shape) for shape in layer.keras_weight_shapes())


@pytest.mark.parametrize("name", sorted(NEW_LAYERS))
def test_new_layers_gradients_flow(name):
    torch.manual_seed(0)
    layer = NEW_LAYERS[name]()
    layer.train(True)
    x = torch.randn(3, 6, 6, 4, requires_grad=True)
    inputs = [x, torch.randn(3, 6, 6, 4)] if getattr(layer, "multiple_inputs", False) else x
    out = layer(inputs)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for parameter_name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


def test_new_layers_in_a_sequential_model_summary():
    model = models.Sequential([
        layers.Input(shape=(8, 8, 3)), layers.ZeroPadding2D(1), layers.DepthwiseConv2D(3, activation="relu"),
        layers.SeparableConv2D(8, 3, strides=2, padding="same"), layers.LayerNormalization(), layers.ReLU(6.0),
        layers.SpatialDropout2D(0.1), layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
        layers.Cropping2D(1), layers.UpSampling2D(), layers.Reshape((-1, 4)), layers.LeakyReLU(),
        layers.Softmax()])
    rows = model.layer_table()
    assert [row["output_shape"] for row in rows] == [
        (None, 10, 10, 3), (None, 8, 8, 3), (None, 4, 4, 8), (None, 4, 4, 8), (None, 4, 4, 8), (None, 4, 4, 8),
        (None, 8, 8, 4), (None, 6, 6, 4), (None, 12, 12, 4), (None, 144, 4), (None, 144, 4), (None, 144, 4)]
    assert rows[1]["receptive_field"] == (3, 3) and rows[1]["start"] == (0.0, 0.0)  # padding 1 centres the 3x3
    assert rows[2]["receptive_field"] == (5, 5) and rows[2]["jump"] == (2, 2)
    assert rows[6]["receptive_field"] is None  # after a stride-2 transposed convolution: a fractional stride
    out = model.predict(rand(2, 8, 8, 3), verbose=0)
    assert out.shape == (2, 144, 4) and np.allclose(out.sum(axis=-1), 1, atol=1e-5)
