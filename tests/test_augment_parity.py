"""The augmentation layers behave as Keras 3's (keras/src/layers/preprocessing/image_preprocessing/).

Part 1 (default suite): NumPy transcriptions of Keras's rules, written from its documentation and source:
RandomFlip's one draw per image, RandomCrop's one window per batch and its resize fallback, the four fill
modes of the affine transform ("The input is extended by reflecting about the edge of the last pixel /
by wrapping around to the opposite edge / by filling with a constant / by the nearest pixel"), and
RandomErasing's arguments and statistics.

Part 2 (`-m keras`, skipped unless Keras 3 imports): the same shifts, angles and crops through real Keras,
compared pixel for pixel where Keras's output is deterministic, and by distribution where it is random.
"""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from convnet import augment, layers
from convnet.models import Sequential

ATOL = 1e-4


def distinct(n, h, w, c=1, seed=0):
    """Images in [0, 1) whose pixels are all different, so that any flip or shift is recognisable."""
    size = n * h * w * c
    pixels = np.random.default_rng(seed).permutation(size).reshape(n, h, w, c) / size
    return torch.from_numpy(pixels.astype(np.float32))


# -- NumPy transcriptions of Keras's rules ----------------------------------------------------------------------
_PAD_MODES = {"reflect": "symmetric", "wrap": "wrap", "nearest": "edge", "constant": "constant"}


def np_affine(image, matrix, fill_mode, fill_value=0.0, interpolation="bilinear"):
    """Keras's affine transform of one (H, W, C) image: output pixel (r, c) reads the input at column
    a0*c + a1*r + a2, row b0*c + b1*r + b2, on the image extended beyond its edges as `fill_mode` says
    (NumPy's pad modes: symmetric d c b a | a b c d, wrap a b c d | a b c d, edge a a | a b c d), bilinear
    between the four pixels around it or the nearest one. The tests avoid coordinates halfway between two
    pixels for "nearest": Keras's TensorFlow kernel rounds them away from zero, its PyTorch and JAX backends to
    even, and convnet's float32 arithmetic may land either side."""
    h, w, _ = image.shape
    a0, a1, a2, b0, b1, b2 = (float(v) for v in matrix)
    r, c = np.mgrid[0:h, 0:w].astype(np.float64)
    cols, rows = a0 * c + a1 * r + a2, b0 * c + b1 * r + b2
    margin = int(np.ceil(max(np.abs(cols).max(), np.abs(rows).max()))) + 2
    pad = ((margin, margin), (margin, margin), (0, 0))
    extended = (np.pad(image, pad, mode="constant", constant_values=fill_value) if fill_mode == "constant"
                else np.pad(image, pad, mode=_PAD_MODES[fill_mode]))
    if interpolation == "nearest":
        return extended[np.rint(rows).astype(int) + margin, np.rint(cols).astype(int) + margin]
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0 + margin, c0 + margin
    return ((1 - fr) * ((1 - fc) * extended[r0, c0] + fc * extended[r0, c0 + 1])
            + fr * ((1 - fc) * extended[r0 + 1, c0] + fc * extended[r0 + 1, c0 + 1]))


def translation_matrix(dy, dx):
    return (1, 0, -dx, 0, 1, -dy)


def rotation_matrix(angle, h, w):
    """Keras's `_compute_affine_matrix` for a rotation by `angle` radians about the image's centre pixel."""
    cos, sin, cx, cy = math.cos(angle), math.sin(angle), (w - 1) / 2, (h - 1) / 2
    return (cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos)


def np_resize_bilinear(image, height, width):
    """tf.image.resize(method="bilinear", antialias=False): half-pixel centres, edge pixels clamped."""
    h, w, _ = image.shape

    def axis(out, size):
        source = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0)
        lower = np.floor(source).astype(int)
        return lower, np.minimum(lower + 1, size - 1), source - lower

    r0, r1, fr = axis(height, h)
    c0, c1, fc = axis(width, w)
    fr, fc = fr[:, None, None], fc[None, :, None]
    top = (1 - fc) * image[r0][:, c0] + fc * image[r0][:, c1]
    bottom = (1 - fc) * image[r1][:, c0] + fc * image[r1][:, c1]
    return (1 - fr) * top + fr * bottom


def np_random_crop_fallback(images, height, width):
    """Keras 3's RandomCrop where it draws nothing (training with a side not larger than the target): the
    start of the centred window of the target's aspect ratio, a window of the target's size cut there, and a
    resize where that window falls short (Keras's own arithmetic: float division, int truncation)."""
    h, w = images.shape[1:3]
    crop_h = max(min(h, int(float(w * height) / width)), 1)
    crop_w = max(min(w, int(float(h * width) / height)), 1)
    top, left = int(float(h - crop_h) / 2), int(float(w - crop_w) / 2)
    window = images[:, top:top + height, left:left + width]
    if window.shape[1:3] == (height, width):
        return window
    return np.stack([np_resize_bilinear(image, height, width) for image in window])


def np_centre_crop(images, height, width):
    h, w = images.shape[1:3]
    top, left = (h - height) // 2, (w - width) // 2
    return images[:, top:top + height, left:left + width]


def crop_offset(out, x):
    """(top, left) of the window `out` (h, w, C) within `x` (H, W, C), found by its first pixel."""
    top, left = np.argwhere(x[..., 0].numpy() == float(out[0, 0, 0]))[0]
    return int(top), int(left)


def test_docstring_examples_run():
    result = doctest.testmod(augment, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 4


# -- RandomFlip --------------------------------------------------------------------------------------------------
def test_random_flip_default_mode_turns_each_image_180_degrees_or_leaves_it():
    torch.manual_seed(0)
    x = distinct(400, 5, 6)
    out = augment.RandomFlip().train()(x)
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    turned = torch.tensor([torch.equal(o, i.flip(0).flip(1)) for o, i in zip(out, x)])
    single = torch.tensor([torch.equal(o, i.flip(0)) or torch.equal(o, i.flip(1)) for o, i in zip(out, x)])
    assert bool((kept | turned).all()) and not bool(single.any())
    assert 0.42 < turned.float().mean() < 0.58  # Keras: uniform <= 0.5, one draw per image


@pytest.mark.parametrize("mode, flip", [("horizontal", lambda i: i.flip(1)), ("vertical", lambda i: i.flip(0))])
def test_random_flip_one_direction(mode, flip):
    torch.manual_seed(1)
    x = distinct(400, 4, 5)
    out = augment.RandomFlip(mode).train()(x)
    flipped = torch.tensor([torch.equal(o, flip(i)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all()) and 0.42 < flipped.float().mean() < 0.58


def test_seeded_layers_repeat_and_ignore_the_global_generator():
    x = distinct(64, 6, 6)
    def calls(make, seed):
        layer = make(seed).train()
        return torch.cat([layer(x) for _ in range(4)])  # four calls: a crop has few windows to tell apart

    for make in (lambda s: augment.RandomFlip(seed=s), lambda s: augment.RandomTranslation(0.3, 0.3, seed=s),
                 lambda s: augment.RandomRotation(0.2, seed=s), lambda s: augment.RandomCrop(4, 4, seed=s),
                 lambda s: augment.RandomErasing((1.0, 1.0), seed=s)):
        torch.manual_seed(0)
        first = calls(make, 7)
        torch.manual_seed(123)
        again = calls(make, 7)
        assert torch.equal(first, again) and not torch.equal(first, calls(make, 8))
    layer = augment.RandomFlip(seed=3).train()
    assert not torch.equal(layer(x), layer(x))  # the layer's generator advances from call to call


# -- RandomCrop --------------------------------------------------------------------------------------------------
def test_random_crop_cuts_the_whole_batch_at_one_random_place():
    torch.manual_seed(0)
    x = distinct(16, 7, 9)
    layer = augment.RandomCrop(4, 5).train()
    seen = set()
    for _ in range(200):
        out = layer(x)
        assert out.shape == (16, 4, 5, 1)
        top, left = crop_offset(out[0], x[0])
        np.testing.assert_array_equal(out.numpy(), x[:, top:top + 4, left:left + 5].numpy())  # every image there
        seen.add((top, left))
    assert seen == {(t, left) for t in range(4) for left in range(5)}  # every window of the 4 x 5 possible


@pytest.mark.parametrize("size, target", [
    ((6, 9), (6, 4)),    # one side equal: Keras draws nothing, a centre crop
    ((9, 4), (5, 4)),
    ((5, 5), (5, 5)),    # the target's size: unchanged
    ((8, 8), (10, 10)),  # both smaller: a resize
    ((8, 20), (10, 10)),  # one smaller, the other larger: Keras's cut then resize
    ((8, 12), (10, 6)),
    ((5, 7), (6, 3)),
    ((12, 3), (4, 6)),
])
def test_random_crop_without_room_follows_keras_fallback_in_training_and_at_inference(size, target):
    x = distinct(3, *size, c=2)
    layer = augment.RandomCrop(*target)
    expected = np_random_crop_fallback(x.numpy().astype(np.float64), *target)
    np.testing.assert_allclose(layer.train()(x).numpy(), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(layer.eval()(x).numpy(), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("size, target", [((10, 10), (6, 4)), ((7, 9), (4, 5)), ((6, 9), (6, 4)), ((4, 4), (4, 4))])
def test_random_crop_takes_the_centre_at_inference(size, target):
    x = distinct(3, *size)
    out = augment.RandomCrop(*target)(x)
    np.testing.assert_array_equal(out.numpy(), np_centre_crop(x.numpy(), *target))


def test_random_crop_on_smaller_inputs_builds_and_says_its_shape():
    model = Sequential([layers.Input(shape=(8, 8, 1)), augment.RandomCrop(9, 4)])
    assert model.output_shape == (None, 9, 4, 1)
    assert model(torch.zeros(2, 8, 8, 1)).shape == (2, 9, 4, 1)
    assert augment.RandomCrop(9, 4).geometry((8, 8, 1)) is None  # a resize has no whole-pixel receptive field
    assert augment.RandomCrop(4, 4).geometry((8, 7, 1)) == ((1, 1, -2), (1, 1, -1))


# -- fill modes --------------------------------------------------------------------------------------------------
ROW = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 1, 5, 1)


@pytest.mark.parametrize("fill_mode, expected", [
    ("reflect", [2, 1, 1, 2, 3]),    # d c b a | a b c d
    ("wrap", [4, 5, 1, 2, 3]),       # a b c d | a b c d
    ("nearest", [1, 1, 1, 2, 3]),    # a a a a | a b c d
    ("constant", [9, 9, 1, 2, 3]),   # k k k k | a b c d
])
def test_a_two_pixel_shift_by_hand(fill_mode, expected):
    layer = augment.RandomTranslation(0.0, (0.4, 0.4), fill_mode=fill_mode, fill_value=9.0).train()  # 0.4 * 5 = 2
    np.testing.assert_allclose(layer(ROW).numpy().ravel(), expected, atol=1e-5)


@pytest.mark.parametrize("shift", [-9, -5, -4, -1, 1, 3, 4, 5, 7])
def test_wrap_is_tiling_for_any_whole_shift(shift):
    x = distinct(2, 4, 5, c=3)
    factor = shift / 5
    if abs(factor) > 1:
        pytest.skip("factor beyond Keras's [-1, 1]")
    out = augment.RandomTranslation((0.5, 0.5), (factor, factor), fill_mode="wrap").train()(x)  # down 2 rows
    np.testing.assert_allclose(out.numpy(), np.roll(x.numpy(), (2, shift), axis=(1, 2)), atol=1e-4)


@pytest.mark.parametrize("fill_mode", ["reflect", "wrap", "nearest", "constant"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("dy, dx", [(0.2, -0.375), (-0.8, 0.55), (0.3, 0.99), (-1.0, 0.125), (0.1, -0.61)])
def test_translation_matches_the_numpy_transcription(fill_mode, interpolation, dy, dx):
    x = distinct(1, 6, 7, c=2)
    layer = augment.RandomTranslation((dy, dy), (dx, dx), fill_mode=fill_mode, interpolation=interpolation,
                                      fill_value=-3.0).train()
    expected = np_affine(x[0].double().numpy(), translation_matrix(dy * 6, dx * 7), fill_mode, -3.0, interpolation)
    np.testing.assert_allclose(layer(x)[0].numpy(), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("fill_mode", ["reflect", "wrap", "nearest", "constant"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("factor", [0.07, -0.19, 0.25, 0.43])
def test_rotation_matches_the_numpy_transcription(fill_mode, interpolation, factor):
    x = distinct(1, 5, 7, c=2)  # odd sides: the centre is a pixel, so no coordinate is a rounding tie
    layer = augment.RandomRotation((factor, factor), fill_mode=fill_mode, interpolation=interpolation,
                                   fill_value=2.5).train()
    matrix = rotation_matrix(factor * 2 * math.pi, 5, 7)
    expected = np_affine(x[0].double().numpy(), matrix, fill_mode, 2.5, interpolation)
    np.testing.assert_allclose(layer(x)[0].numpy(), expected, atol=ATOL, rtol=0)


def test_fill_modes_are_checked():
    with pytest.raises(ValueError, match=r"unknown fill_mode 'mirror'.*Available: constant, nearest, reflect, wrap"):
        augment.RandomTranslation(0.1, 0.1, fill_mode="mirror")
    with pytest.raises(ValueError, match=r"unknown fill_mode 'warp'. Did you mean 'wrap'"):
        augment.RandomRotation(0.1, fill_mode="warp")
    assert augment.RandomRotation(0.1, fill_mode="wrap").get_config()["fill_mode"] == "wrap"


# -- RandomErasing -----------------------------------------------------------------------------------------------
def erased_boxes(out, x):
    """Per image: (number of erased rows, number of erased columns, erased pixel count)."""
    changed = (out != x).any(dim=-1)  # (N, H, W)
    return changed.any(dim=2).sum(dim=1), changed.any(dim=1).sum(dim=1), changed.sum(dim=(1, 2))


def test_random_erasing_factor_zero_changes_nothing():
    x = distinct(50, 8, 8)
    assert torch.equal(augment.RandomErasing(factor=0.0, fill_value=-1.0, value_range=(-1, 1e4)).train()(x), x)


def test_random_erasing_erases_one_rectangle_within_the_scale_range():
    torch.manual_seed(0)
    x = torch.full((500, 40, 30, 2), 0.5)
    low, high = 0.05, 0.3
    out = augment.RandomErasing(factor=(1.0, 1.0), scale=(low, high), fill_value=0.0, value_range=(0, 1)).train()(x)
    rows, cols, count = erased_boxes(out, x)
    assert bool((count > 0).all()) and torch.equal(count, rows * cols)  # every image, one rectangle each
    assert set(out.unique().tolist()) == {0.0, 0.5}
    # each side is sqrt(u) of the image's, u uniform in scale: a whole-pixel cover of [corner, corner + size)
    assert rows.min() >= math.floor(math.sqrt(low) * 40) and rows.max() <= math.ceil(math.sqrt(high) * 40)
    assert cols.min() >= math.floor(math.sqrt(low) * 30) and cols.max() <= math.ceil(math.sqrt(high) * 30)
    side = (2 / 3) * (high ** 1.5 - low ** 1.5) / (high - low)  # E[sqrt(u)], u ~ U(low, high)
    assert abs(float((rows / 40).mean()) - side) < 0.02 and abs(float((cols / 30).mean()) - side) < 0.02


@pytest.mark.parametrize("kwargs, rate", [
    ({"factor": 1.0}, 0.5),           # Keras's code: the probability itself is drawn from U(0, factor)
    ({"factor": 0.5}, 0.25),
    ({"factor": (0.2, 0.6)}, 0.4),
    ({"probability": 0.3}, 0.3),      # convnet's older spelling: factor=(p, p)
    ({}, 0.5),
])
def test_random_erasing_rate(kwargs, rate):
    torch.manual_seed(0)
    x = torch.full((2000, 10, 10, 1), 0.5)
    out = augment.RandomErasing(fill_value=0.0, scale=(0.1, 0.2), **kwargs).train()(x)
    assert abs(float((out == 0).any(dim=(1, 2, 3)).float().mean()) - rate) < 0.04


def test_random_erasing_fill_values():
    torch.manual_seed(0)
    x = torch.full((300, 12, 12, 3), 0.5)
    always = {"factor": (1.0, 1.0), "scale": (0.2, 0.3)}
    out = augment.RandomErasing(**always, fill_value=300.0).train()(x)  # clipped to value_range (0, 255)
    assert set(out.unique().tolist()) == {0.5, 255.0}
    out = augment.RandomErasing(**always, fill_value=(0.1, 0.2, 0.3), value_range=(0, 1)).train()(x)
    erased = out[(out != 0.5).any(dim=-1)]  # (pixels, 3)
    assert len(erased) > 0 and bool((erased == torch.tensor([0.1, 0.2, 0.3])).all())
    out = augment.RandomErasing(**always, value=0.25).train()(x)  # the older spelling of fill_value
    assert set(out.unique().tolist()) == {0.25, 0.5}
    # None: normal noise times value_range[1], clipped: P(low) = 1/2, P(high) = P(z > 1) = 0.159
    out = augment.RandomErasing(**always, value_range=(0, 1)).train()(x)
    noise = out[(out != 0.5)]
    assert noise.numel() > 10_000 and float(noise.min()) == 0.0 and float(noise.max()) == 1.0
    assert abs(float((noise == 0).float().mean()) - 0.5) < 0.02
    assert abs(float((noise == 1).float().mean()) - 0.1587) < 0.02


def test_random_erasing_configuration_round_trips():
    layer = augment.RandomErasing(0.4, scale=0.2, fill_value=[1, 2, 3], value_range=(0, 10), seed=5)
    config = layer.get_config()
    assert {k: config[k] for k in ("factor", "scale", "fill_value", "value_range", "seed")} == {
        "factor": [0.0, 0.4], "scale": [0.0, 0.2], "fill_value": [1.0, 2.0, 3.0], "value_range": [0.0, 10.0],
        "seed": 5}
    clone = layers.deserialize(layers.serialize(layer))
    assert clone.get_config() == config and repr(clone) == repr(layer)
    assert augment.RandomErasing(probability=0.25).factor == (0.25, 0.25)


@pytest.mark.parametrize("make, error, message", [
    (lambda: augment.RandomErasing(factor=1.5), ValueError, r"`factor` must be <= 1.0. Received: factor=1.5"),
    (lambda: augment.RandomErasing(factor=(0.6, 0.2)), ValueError, r"`factor` must be \(min, max\) with min <= max"),
    (lambda: augment.RandomErasing(scale=(0.1, 0.2, 0.3)), ValueError, r"`scale` must be a number or a \(min, max\)"),
    (lambda: augment.RandomErasing(value_range=(1, 0)), ValueError, r"`value_range` must be \(low, high\) with low < high"),
    (lambda: augment.RandomErasing(value_range=5), ValueError, r"`value_range` must be a \(low, high\) pair"),
    (lambda: augment.RandomErasing(fill_value="black"), TypeError, r"`fill_value` must be None, a number or one number"),
    (lambda: augment.RandomErasing(factor=0.5, probability=0.3), ValueError,
     r"`probability` is the older spelling of `factor`=\(p, p\); give one of them"),
    (lambda: augment.RandomErasing(fill_value=1.0, value=0.0), ValueError, r"`value` is the older spelling of `fill_value`"),
    (lambda: augment.RandomErasing(ratio=(0.3, 3.3)), TypeError, r"unexpected keyword argument 'ratio'"),
    (lambda: augment.RandomFlip(seed=-1), ValueError, r"`seed` must be >= 0. Received: seed=-1"),
    (lambda: augment.RandomCrop(4, 4, seed=1.5), TypeError, r"`seed` must be an integer"),
])
def test_arguments_are_checked(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_per_channel_fill_value_must_match_the_channels():
    with pytest.raises(ValueError, match=r"RandomErasing 'random_erasing': `fill_value` gives 3 values, one per "
                                         r"channel, but the images have 1 channels"):
        Sequential([layers.Input(shape=(8, 8, 1)), augment.RandomErasing(fill_value=(1, 2, 3))])


@pytest.mark.parametrize("layer", [augment.RandomFlip(seed=1), augment.RandomTranslation(0.2, 0.2, fill_mode="wrap"),
                                   augment.RandomRotation(0.1, fill_mode="wrap"), augment.RandomErasing()])
def test_identity_at_inference(layer):
    x = distinct(8, 6, 6)
    assert torch.equal(layer(x), x)


# -- against real Keras 3 (-m keras) ----------------------------------------------------------------------------
def keras_call(keras, layer, x, training=True):
    return np.asarray(keras.ops.convert_to_numpy(layer(x, training=training)))


def tensorflow_backend(keras):
    return keras.backend.backend() == "tensorflow"


@pytest.mark.keras
@pytest.mark.parametrize("fill_mode", ["reflect", "wrap", "nearest", "constant"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("dy, dx", [(0.25, -0.375), (-0.5, 0.625), (0.125, 0.75), (-0.3, 0.55), (0.61, -0.2)])
def test_keras_translation_same_pixels(keras, fill_mode, interpolation, dy, dx):
    x = distinct(3, 8, 8, c=2).numpy()
    whole = float(dy * 8).is_integer() and float(dx * 8).is_integer() and abs(dy * 8) < 7 and abs(dx * 8) < 7
    if fill_mode == "wrap" and tensorflow_backend(keras) and not whole:
        pytest.skip("TensorFlow's kernel wraps only whole shifts below the size minus one; see the next tests")
    kwargs = {"fill_mode": fill_mode, "interpolation": interpolation, "fill_value": -3.0}
    theirs = keras_call(keras, keras.layers.RandomTranslation((dy, dy), (dx, dx), **kwargs), x)
    ours = augment.RandomTranslation((dy, dy), (dx, dx), **kwargs).train()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.keras
@pytest.mark.parametrize("fill_mode", ["reflect", "nearest", "constant"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("factor", [0.07, -0.19, 0.25, 0.43])
def test_keras_rotation_same_pixels(keras, fill_mode, interpolation, factor):
    x = distinct(2, 7, 9, c=1).numpy()
    kwargs = {"fill_mode": fill_mode, "interpolation": interpolation, "fill_value": 2.5}
    theirs = keras_call(keras, keras.layers.RandomRotation((factor, factor), **kwargs), x)
    ours = augment.RandomRotation((factor, factor), **kwargs).train()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)  # odd sides: no rounding ties for "nearest"


def keras_torch_affine(keras):
    """Keras's PyTorch backend's affine_transform (true wrapping), importable under any backend."""
    try:
        from keras.src.backend.torch import image
    except ImportError as error:  # pragma: no cover - depends on the Keras installation
        pytest.skip(f"Keras's PyTorch backend does not import here: {error}")
    return image.affine_transform


@pytest.mark.keras
@pytest.mark.parametrize("matrix", [translation_matrix(2.25, -7.75), translation_matrix(-7, 8), translation_matrix(0.3, 5.2),
                                    rotation_matrix(0.9, 6, 8), rotation_matrix(-2.0, 6, 8)], ids=str)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_keras_wrap_any_shift_or_angle_as_its_pytorch_backend(keras, matrix, interpolation):
    affine = keras_torch_affine(keras)
    x = distinct(1, 6, 8, c=2)
    transform = torch.tensor([[*matrix, 0.0, 0.0]], dtype=torch.float32)
    theirs = affine(x, transform, interpolation=interpolation, fill_mode="wrap", data_format="channels_last").numpy()
    ours = augment._transform(x, torch.tensor([matrix]), "wrap", 0.0, interpolation).numpy()
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(ours[0], np_affine(x[0].double().numpy(), matrix, "wrap", 0.0, interpolation),
                               atol=ATOL, rtol=0)


@pytest.mark.keras
def test_keras_tensorflow_wrap_departs_from_tiling_for_shifts_of_size_minus_one(keras):
    if not tensorflow_backend(keras):
        pytest.skip("a TensorFlow kernel quirk")
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 8, 1)
    theirs = keras_call(keras, keras.layers.RandomTranslation(0.0, (7 / 8, 7 / 8), fill_mode="wrap"), x).ravel()
    ours = augment.RandomTranslation(0.0, (7 / 8, 7 / 8), fill_mode="wrap").train()(torch.from_numpy(x)).numpy().ravel()
    np.testing.assert_allclose(ours, np.roll(x.ravel(), 7), atol=ATOL)  # as Keras documents wrap
    assert not np.allclose(theirs, ours)  # TensorFlow's kernel: [7, 2, 3, 4, 5, 6, 7, 0]


@pytest.mark.keras
@pytest.mark.parametrize("size, target", [((6, 9), (6, 4)), ((9, 4), (5, 4)), ((8, 8), (10, 10)), ((8, 20), (10, 10)),
                                          ((8, 12), (10, 6)), ((5, 7), (6, 3)), ((12, 3), (4, 6))])
def test_keras_random_crop_without_room_same_pixels(keras, size, target):
    """Where a side is not larger than the target, Keras's training output is deterministic: convnet gives it in
    training and at inference."""
    x = distinct(3, *size, c=2).numpy()
    theirs = keras_call(keras, keras.layers.RandomCrop(*target), x, training=True)
    layer = augment.RandomCrop(*target)
    np.testing.assert_allclose(layer.train()(torch.from_numpy(x)).numpy(), theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(layer.eval()(torch.from_numpy(x)).numpy(), theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np_random_crop_fallback(x, *target), theirs, atol=ATOL, rtol=0)


@pytest.mark.keras
@pytest.mark.parametrize("size, target", [((10, 10), (6, 4)), ((7, 9), (4, 5)), ((6, 9), (6, 4)), ((8, 8), (4, 4))])
def test_keras_random_crop_inference_is_center_crop(keras, size, target):
    """At inference Keras's RandomCrop returns its input uncropped (a known bug); convnet's is Keras's
    CenterCrop wherever both sides are at least the target."""
    x = distinct(2, *size).numpy()
    assert keras_call(keras, keras.layers.RandomCrop(*target), x, training=False).shape == x.shape
    theirs = keras_call(keras, keras.layers.CenterCrop(*target), x, training=False)
    np.testing.assert_array_equal(augment.RandomCrop(*target)(torch.from_numpy(x)).numpy(), theirs)


@pytest.mark.keras
def test_keras_center_crop_differs_where_a_side_is_smaller_and_the_aspect_differs(keras):
    """The one place convnet's inference departs from CenterCrop: CenterCrop resizes the aspect-ratio window
    (smart_resize); convnet keeps Keras's RandomCrop training fallback, so both of its modes agree."""
    x = distinct(2, 8, 20).numpy()
    centre = keras_call(keras, keras.layers.CenterCrop(10, 10), x, training=False)
    training = keras_call(keras, keras.layers.RandomCrop(10, 10), x, training=True)
    ours = augment.RandomCrop(10, 10)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, training, atol=ATOL, rtol=0)
    assert not np.allclose(ours, centre, atol=ATOL)
    square = distinct(2, 8, 8).numpy()  # the target's aspect ratio: the two rules agree
    np.testing.assert_allclose(augment.RandomCrop(10, 10)(torch.from_numpy(square)).numpy(),
                               keras_call(keras, keras.layers.CenterCrop(10, 10), square, training=False),
                               atol=ATOL, rtol=0)


def window_counts(outputs, x, spare_h, spare_w):
    counts = np.zeros((spare_h + 1, spare_w + 1))
    for out in outputs:
        top, left = crop_offset(torch.as_tensor(out[0]), torch.as_tensor(x[0]))
        assert np.array_equal(out, x[:, top:top + out.shape[1], left:left + out.shape[2]])  # one place per batch
        counts[top, left] += 1
    return counts / counts.sum()


@pytest.mark.keras
def test_keras_random_crop_one_uniform_window_per_batch(keras):
    x = distinct(4, 6, 7).numpy()
    keras_layer, layer = keras.layers.RandomCrop(4, 4, seed=0), augment.RandomCrop(4, 4, seed=0).train()
    theirs = window_counts([keras_call(keras, keras_layer, x) for _ in range(600)], x, 2, 3)
    ours = window_counts([layer(torch.from_numpy(x)).numpy() for _ in range(600)], x, 2, 3)
    assert (theirs > 0).all() and (ours > 0).all()
    np.testing.assert_allclose(theirs, 1 / 12, atol=0.045)  # 12 windows, uniform
    np.testing.assert_allclose(ours, 1 / 12, atol=0.045)


@pytest.mark.keras
def test_keras_random_flip_default_mode_same_outcomes(keras):
    x = distinct(600, 4, 5).numpy()
    theirs = keras_call(keras, keras.layers.RandomFlip(seed=0), x)
    ours = augment.RandomFlip(seed=0).train()(torch.from_numpy(x)).numpy()
    for out in (theirs, ours):
        kept = (out == x).all(axis=(1, 2, 3))
        turned = (out == x[:, ::-1, ::-1]).all(axis=(1, 2, 3))
        assert (kept | turned).all() and 0.42 < turned.mean() < 0.58


def erasing_statistics(out, x):
    changed = (out != x).any(axis=-1)  # (N, H, W)
    applied = changed.any(axis=(1, 2))
    rows, cols = changed.any(axis=2).sum(axis=1), changed.any(axis=1).sum(axis=1)
    return applied.mean(), rows[applied].mean(), cols[applied].mean(), (changed.sum(axis=(1, 2)) == rows * cols).all()


@pytest.mark.keras
@pytest.mark.parametrize("factor", [1.0, 0.5, (1.0, 1.0), (0.2, 0.6)], ids=str)
def test_keras_random_erasing_same_statistics(keras, factor):
    x = np.full((3000, 16, 12, 1), 0.5, np.float32)
    kwargs = {"factor": factor, "scale": (0.05, 0.4), "fill_value": 0.0, "value_range": (0, 1)}
    theirs = erasing_statistics(keras_call(keras, keras.layers.RandomErasing(**kwargs, seed=0), x), x)
    ours = erasing_statistics(augment.RandomErasing(**kwargs, seed=0).train()(torch.from_numpy(x)).numpy(), x)
    assert theirs[3] and ours[3]  # one rectangle per image
    assert abs(theirs[0] - ours[0]) < 0.04  # the rate of erased images
    assert abs(theirs[1] - ours[1]) < 0.4 and abs(theirs[2] - ours[2]) < 0.3  # mean rows and columns erased


@pytest.mark.keras
@pytest.mark.parametrize("fill_value, value_range", [(None, (0, 255)), (None, (-1, 1)), (300.0, (0, 255)),
                                                     ((0.1, 0.7, 2.0), (0, 1))], ids=str)
def test_keras_random_erasing_same_fill(keras, fill_value, value_range):
    x = np.full((400, 10, 10, 3), 0.5, np.float32)
    kwargs = {"factor": (1.0, 1.0), "fill_value": fill_value, "value_range": value_range}
    theirs = keras_call(keras, keras.layers.RandomErasing(**kwargs, seed=0), x)
    ours = augment.RandomErasing(**kwargs, seed=0).train()(torch.from_numpy(x)).numpy()
    low, high = value_range
    for out in (theirs, ours):
        assert out.min() >= low and out.max() <= high
    theirs, ours = theirs[theirs != 0.5], ours[ours != 0.5]
    if fill_value is not None:
        assert set(np.unique(ours)) == set(np.unique(theirs))
    else:
        for statistic in (lambda v: (v == low).mean(), lambda v: (v == high).mean(), lambda v: v.mean() / high):
            assert abs(statistic(theirs) - statistic(ours)) < 0.03
