"""convnet.explain: the maps point at a planted pattern (a tiny CNN trained in-test on synthetic squares),
agree with hand-written references (a linear model's gradient is its kernel, occlusion by brute force,
receptive fields against the support of a unit's gradient), keep the model's state, and every bad input
raises a pinned message."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from convnet import explain, models, optimizers, utils
from convnet import layers as L

SIZE, SQUARE = 20, 4  # image side and planted square side, pixels
MARGIN = 2  # pixels around the square counted as "on the pattern" (see region())


def make_squares(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of noise in [0, 0.3]; class 1 has a 4x4 square of 1.0 at a random place, class 0 has none.

    Returns x (N, 20, 20, 1) float32, y (N,) and the squares' top-left corners (N, 2)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.3, (count, SIZE, SIZE, 1)).astype(np.float32)
    y = rng.integers(0, 2, count)
    corners = rng.integers(0, SIZE - SQUARE + 1, (count, 2))
    for i in np.flatnonzero(y):
        top, left = corners[i]
        x[i, top:top + SQUARE, left:left + SQUARE, 0] = 1.0
    return x, y, corners


def region(corner: np.ndarray, margin: int = MARGIN) -> np.ndarray:
    """(20, 20) mask of the square grown by `margin` pixels. Why a margin: the first 3x3 convolution sees
    the square's edges from one pixel outside it, and Grad-CAM's layer has a 2-pixel grid (after a 2x2
    pool) that bilinear upsampling spreads by one cell. The grown square covers 8x8 = 16% of the image,
    so "more than half the mass" means over 3 times what a map blind to the square would put there."""
    top, left = corner
    mask = np.zeros((SIZE, SIZE), bool)
    mask[max(top - margin, 0):top + SQUARE + margin, max(left - margin, 0):left + SQUARE + margin] = True
    return mask


def tiny_cnn() -> models.Sequential:
    return models.Sequential([
        L.Input(shape=(SIZE, SIZE, 1)),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.GlobalMaxPooling2D(),
        L.Dense(2, activation="softmax"),
    ], name="squares")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast as several on an idle machine, and on a busy one several
    threads spin against each other (measured 0.4 s against 18 s for the training below)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread):
    """The tiny CNN trained for 6 epochs on 512 images (under 1 s); 100% test accuracy."""
    utils.set_random_seed(0)
    x, y, _ = make_squares(512, seed=0)
    model = tiny_cnn()
    model.compile(optimizer=optimizers.get("adam", 0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu")
    model.fit(x, y, batch_size=32, epochs=6, verbose=0)
    x_test, y_test, corners = make_squares(100, seed=1)
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.95
    positives = np.flatnonzero(y_test == 1)[:10]
    return model, x_test[positives], corners[positives]


def test_doctests():
    assert doctest.testmod(explain).failed == 0


# The maps find the planted square

@pytest.mark.parametrize("method", ["gradient", "smoothgrad"])
def test_saliency_mass_on_square(trained, method):
    model, images, corners = trained
    for image, corner in zip(images, corners):
        heat = explain.saliency(model, image, method=method)
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32 and heat.min() >= 0
        assert heat[region(corner)].sum() / heat.sum() > 0.5


def test_grad_cam_mass_on_square(trained):
    model, images, corners = trained
    for image, corner in zip(images, corners):
        cam = explain.grad_cam(model, image)
        assert cam.shape == (SIZE, SIZE) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        assert cam[region(corner)].sum() / cam.sum() > 0.5
        assert region(corner)[np.unravel_index(cam.argmax(), cam.shape)]


def test_occlusion_drop_largest_over_square(trained):
    model, images, corners = trained
    for image, corner in zip(images, corners):
        drop = explain.occlusion(model, image, patch=4, stride=2)
        assert drop.shape == (SIZE, SIZE) and np.isfinite(drop).all()
        assert region(corner, margin=1)[np.unravel_index(drop.argmax(), drop.shape)]
        assert drop[region(corner)].mean() > 10 * np.abs(drop[~region(corner)]).mean()


def test_top_activations_find_square(trained):
    model, _, _ = trained
    x, y, corners = make_squares(64, seed=2)
    dense = model.get_layer("dense").get_weights()[0]  # (8, 2)
    unit = int(np.argmax(dense[:, 1] - dense[:, 0]))  # the filter voting most for "square"
    result = explain.top_activations(model, "conv2d_1", unit, x, k=8)
    assert result.patches.shape == (8, 8, 8, 1)  # conv3 -> pool2 -> conv3: an 8x8 field
    assert result.receptive_field == (8, 8)
    assert np.all(np.diff(result.scores) <= 0) and len(set(result.indices.tolist())) == 8
    top = result.indices[0]
    assert y[top] == 1
    patch = result.patches[0, :, :, 0]
    assert (patch == 1.0).sum() == SQUARE * SQUARE  # the whole square lies in the top patch
    assert (y[result.indices] == 1).all()
    t, l, b, r = result.boxes[0]
    square = np.zeros((SIZE, SIZE), bool)
    square[corners[top][0]:corners[top][0] + SQUARE, corners[top][1]:corners[top][1] + SQUARE] = True
    inside = np.zeros((SIZE, SIZE), bool)
    inside[max(t, 0):b, max(l, 0):r] = True
    assert (square & inside).sum() == (patch == 1.0).sum()


# Against hand-written references

def linear_model(softmax: bool) -> models.Sequential:
    utils.set_random_seed(3)
    return models.Sequential([L.Input(shape=(5, 4, 2)), L.Flatten(),
                              L.Dense(3, activation="softmax" if softmax else None)])


@pytest.mark.parametrize("softmax", [True, False], ids=["softmax", "linear"])
def test_gradient_of_linear_model_is_its_kernel(softmax):
    model = linear_model(softmax)
    image = np.random.default_rng(0).random((5, 4, 2), dtype=np.float32)
    kernel = model.get_layer("dense").get_weights()[0].reshape(5, 4, 2, 3)  # (H*W*C, 3) -> (H, W, C, 3)
    heat = explain.saliency(model, image, class_index=2)
    np.testing.assert_allclose(heat, np.abs(kernel[..., 2]).max(-1), rtol=1e-6)  # score before the softmax


def test_smoothgrad_without_noise_is_gradient_and_seeded():
    model = tiny_cnn()
    image = make_squares(2, seed=5)[0][1]
    plain = explain.saliency(model, image, class_index=1)
    np.testing.assert_allclose(explain.saliency(model, image, "smoothgrad", 1, samples=3, noise=0.0), plain, rtol=1e-5)
    first = explain.saliency(model, image, "smoothgrad", 1, samples=40, seed=7)  # 40 > one chunk of 32
    np.testing.assert_array_equal(first, explain.saliency(model, image, "smoothgrad", 1, samples=40, seed=7))
    assert not np.array_equal(first, explain.saliency(model, image, "smoothgrad", 1, samples=40, seed=8))


def grad_cam_reference(model: models.Sequential, image: np.ndarray, layer: str, class_index: int) -> np.ndarray:
    """Grad-CAM written out: run the layers one by one, keep the layer's output, differentiate the logit."""
    x = torch.from_numpy(image[None])
    kept = None
    for item in model.layers[:-1]:
        x = item(x)
        if item.name == layer:
            kept = x
    logit = model.layers[-1].pre_activation(x)[0, class_index]
    gradient = torch.autograd.grad(logit, kept)[0]  # (1, h, w, K)
    cam = torch.relu((gradient.mean(dim=(1, 2), keepdim=True) * kept).sum(-1))[None]  # (1, 1, h, w)
    cam = torch.nn.functional.interpolate(cam, size=image.shape[:2], mode="bilinear")[0, 0]
    return (cam / cam.max()).detach().numpy()


def test_grad_cam_matches_reference_and_defaults_to_last_conv():
    model = tiny_cnn()
    image = make_squares(2, seed=5)[0][1]
    expected = grad_cam_reference(model, image, "conv2d_1", 0)
    np.testing.assert_allclose(explain.grad_cam(model, image, class_index=0), expected, atol=1e-6)
    np.testing.assert_allclose(explain.grad_cam(model, image, layer="conv2d", class_index=0),
                               grad_cam_reference(model, image, "conv2d", 0), atol=1e-6)
    np.testing.assert_allclose(explain.grad_cam(model, image, layer=3 - 2, class_index=0),  # by index: max_pooling2d
                               grad_cam_reference(model, image, "max_pooling2d", 0), atol=1e-6)


def test_occlusion_matches_brute_force():
    model = tiny_cnn()
    image = make_squares(2, seed=5)[0][1]
    drop = explain.occlusion(model, image, patch=5, stride=5, class_index=1, baseline=0.5, batch_size=3)
    reference = float(model.predict(image[None], verbose=0)[0, 1])
    expected = np.zeros((SIZE, SIZE), np.float32)
    for top in range(0, SIZE, 5):  # patch == stride: each pixel lies under exactly one patch
        for left in range(0, SIZE, 5):
            hidden = image.copy()
            hidden[top:top + 5, left:left + 5] = 0.5
            expected[top:top + 5, left:left + 5] = reference - model.predict(hidden[None], verbose=0)[0, 1]
    np.testing.assert_allclose(drop, expected, atol=1e-6)


def test_occlusion_covers_every_pixel_with_overhanging_stride():
    model = tiny_cnn()
    image = make_squares(1, seed=5)[0][0]
    drop = explain.occlusion(model, image, patch=(3, 6), stride=(2, 4))  # 20 is no multiple: last windows flush
    assert np.isfinite(drop).all()
    assert explain._window_starts(20, 3, 2) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 17]
    assert explain._window_starts(20, 6, 4) == [0, 4, 8, 12, 14]


def field_model() -> models.Sequential:
    """Positive weights, no ReLU and average pooling: every pixel in a unit's field has a nonzero gradient.
    Even kernels and SAME padding on odd sizes make TensorFlow's asymmetric padding matter."""
    model = models.Sequential([L.Input(shape=(15, 13, 1)), L.Conv2D(2, 4, padding="same"),
                               L.AveragePooling2D(2, padding="same"), L.Conv2D(2, (3, 2), strides=2),
                               L.Conv2D(1, 2, padding="same")])
    model.set_weights([np.full(w.shape, 0.5, np.float32) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("layer", ["conv2d", "average_pooling2d", "conv2d_1", "conv2d_2"])
def test_receptive_field_box_is_the_gradient_support(layer):
    model = field_model()
    row = next(row for row in model.layer_table() if row["name"] == layer)
    out_h, out_w = row["output_shape"][1:3]
    for position in [(0, 0), (out_h // 2, out_w // 2), (out_h - 1, out_w - 1)]:
        x = torch.ones(1, 15, 13, 1, requires_grad=True)
        out = x
        for item in model.layers:
            out = item(out)
            if item.name == layer:
                break
        (gradient,) = torch.autograd.grad(out[0, position[0], position[1], 0], x)
        support = gradient[0, :, :, 0].numpy() != 0
        top, left, bottom, right = explain.receptive_field_box(model, layer, position)
        assert (bottom - top, right - left) == row["receptive_field"]
        expected = np.zeros((15, 13), bool)
        expected[max(top, 0):bottom, max(left, 0):right] = True
        np.testing.assert_array_equal(support, expected)


def test_top_activations_patches_are_the_fields():
    model = field_model()
    images = np.random.default_rng(0).random((12, 15, 13, 1), dtype=np.float32)
    result = explain.top_activations(model, "conv2d_1", 1, images, k=12, batch_size=5)
    outputs = images
    for item in model.layers[:3]:
        outputs = item(torch.from_numpy(np.asarray(outputs))).detach().numpy()
    response = outputs[..., 1]  # (12, h, w)
    np.testing.assert_allclose(np.sort(response.reshape(12, -1).max(1))[::-1], result.scores, rtol=1e-6)
    field = next(row for row in model.layer_table() if row["name"] == "conv2d_1")["receptive_field"]
    assert result.patches.shape == (12, *field, 1)
    for patch, index, (top, left, bottom, right) in zip(result.patches, result.indices, result.boxes):
        padded = np.pad(images[index, :, :, 0], 20)  # zeros outside the image, as the patches
        np.testing.assert_array_equal(patch[:, :, 0], padded[top + 20:bottom + 20, left + 20:right + 20])


def test_top_activations_on_uint8_images_and_hwc_batches():
    model = tiny_cnn()
    images = (make_squares(6, seed=4)[0][..., 0] * 255).astype(np.uint8)  # (N, H, W) uint8
    result = explain.top_activations(model, "conv2d", 0, images, k=6)
    assert result.patches.dtype == np.float32 and result.patches.max() <= 255 and result.patches.shape == (6, 3, 3, 1)


# The model is left as it was

def test_mode_hooks_and_grads_restored(trained):
    model, images, _ = trained
    model.train()
    model.get_layer("conv2d").eval()  # a mixed state must survive too
    before = {name: module.training for name, module in model.named_modules()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    explain.saliency(model, images[0])
    explain.saliency(model, images[0], method="smoothgrad", samples=2)
    explain.grad_cam(model, images[0])
    explain.occlusion(model, images[0])
    explain.top_activations(model, "conv2d", 0, images, k=2)
    explain.feature_maps(model, images[0])
    with pytest.raises(ValueError, match=r"`class_index` must be <= 1"):
        explain.grad_cam(model, images[0], class_index=2)  # fails with the hook installed
    assert {name: module.training for name, module in model.named_modules()} == before
    assert all(not module._forward_hooks for module in model.modules())
    for p, grad in zip(model.parameters(), grads):  # the training's leftovers, untouched
        assert (p.grad is None and grad is None) or torch.equal(p.grad, grad)
    model.eval()


def test_frozen_model():
    model = tiny_cnn()
    for layer in model.layers:
        layer.trainable = False  # no parameter requires grad: the graph must still reach the maps
    image = make_squares(2, seed=5)[0][1]
    assert explain.grad_cam(model, image, layer="max_pooling2d").shape == (SIZE, SIZE)
    assert explain.saliency(model, image).max() > 0


def test_works_inside_no_grad(trained):
    model, images, _ = trained
    with torch.no_grad():
        assert explain.grad_cam(model, images[0]).max() == pytest.approx(1.0)
        assert explain.saliency(model, images[0]).max() > 0


# Images are converted, with a notice, or refused

def test_rgb_image_converted_to_luma_with_warning(trained):
    model, images, _ = trained
    rgb = np.repeat(images[0], 3, axis=2) * np.array([1.0, 0.5, 0.25], np.float32)
    with pytest.warns(UserWarning, match=r"`image` has 3 channels but squares takes 1: converted to grayscale"):
        converted = explain.prepare_image(model, rgb)
    expected = rgb @ np.array(explain.LUMA, np.float32)
    np.testing.assert_allclose(converted[0, :, :, 0].numpy(), expected, rtol=1e-6)


def test_warnings_point_at_the_callers_line(trained):
    model, _, _ = trained
    with pytest.warns(UserWarning, match="resized") as notices:
        explain.explain(model, np.zeros((10, 10, 1), np.float32))
    assert [notice.filename for notice in notices] == [__file__]


def test_gray_image_repeated_for_rgb_model():
    model = models.Sequential([L.Input(shape=(8, 8, 3)), L.Conv2D(2, 3), L.Flatten(), L.Dense(2)])
    with pytest.warns(UserWarning, match=r"has 1 channel but sequential takes 3: the channel was repeated"):
        x = explain.prepare_image(model, np.ones((8, 8), np.float32))
    assert tuple(x.shape) == (1, 8, 8, 3)


def test_resized_with_warning(trained):
    model, images, _ = trained
    with pytest.warns(UserWarning, match=r"resized from 40x40 to 20x20 \(height x width\) to fit squares"):
        heat = explain.grad_cam(model, np.kron(images[0], np.ones((2, 2, 1), np.float32)))
    assert heat.shape == (SIZE, SIZE)


def test_uint8_image_for_scaled_model_warns(trained):
    model, images, _ = trained
    model.metadata = {"preprocessing": {"scale": 1 / 255}}
    try:
        with pytest.warns(UserWarning, match=r"holds integers \(torch.uint8\) but squares was trained on inputs "
                                             r"scaled by 0.00392157.*pass image \* 0.00392157"):
            explain.saliency(model, (images[0] * 255).astype(np.uint8))
    finally:
        model.metadata = {}


@pytest.mark.parametrize("image, message", [
    (np.zeros((20, 20, 2)), r"`image` has 2 channels, which cannot be converted to the 1 squares takes: expected "
                            r"an image of shape \(20, 20, 1\). Received shape \(20, 20, 2\)"),
    (np.zeros((2, 20, 20, 1)), r"`image` must be one image \(H, W, C\) or \(1, H, W, C\). Received shape "
                               r"\(2, 20, 20, 1\); pick one with image\[i\]"),
    (np.zeros((20,)), r"`image` must be one image .* Received shape \(20,\)"),
    (np.zeros((0, 20, 1)), r"Received shape \(0, 20, 1\)"),
])
def test_bad_images(trained, image, message):
    with pytest.raises(ValueError, match=message):
        explain.grad_cam(trained[0], image)


def test_bad_image_types(trained):
    with pytest.raises(TypeError, match=r"`image` must hold numbers. Received: image=a NumPy array of shape "
                                        r"\(2,\) and dtype <U1"):
        explain.saliency(trained[0], np.array(["a", "b"]))
    with pytest.raises(TypeError, match=r"`image` must be a NumPy array or a torch.Tensor. Received: image='x'"):
        explain.occlusion(trained[0], "x")


# Argument checks, with their messages

@pytest.mark.parametrize("call, error, message", [
    (lambda m, x: explain.saliency(m, x, method="smooth"), ValueError,
     r"`method`: unknown method 'smooth'. Did you mean 'smoothgrad'\? Available: gradient, smoothgrad."),
    (lambda m, x: explain.saliency(m, x, samples=0), ValueError, r"`samples` must be >= 1. Received: samples=0"),
    (lambda m, x: explain.saliency(m, x, noise=-1), ValueError, r"`noise` must be >= 0.0. Received: noise=-1.0"),
    (lambda m, x: explain.saliency(m, x, class_index=2), ValueError,
     r"`class_index` must be <= 1. Received: class_index=2"),
    (lambda m, x: explain.saliency(m, x, class_index=1.0), TypeError, r"`class_index` must be an integer"),
    (lambda m, x: explain.grad_cam(m, x, layer="conv"), ValueError,
     r"`layer`: unknown layer 'conv'. Did you mean 'conv2d'.*Available: conv2d, conv2d_1, dense, "),
    (lambda m, x: explain.grad_cam(m, x, layer="dense"), ValueError,
     r"grad_cam: layer 'dense' \(Dense\) has no spatial output \(it outputs \(None, 2\)\); layers that qualify: "
     r"conv2d, max_pooling2d, conv2d_1$"),
    (lambda m, x: explain.grad_cam(m, x, layer=9), ValueError, r"`layer` must be a layer name or an index in \[0, 4\]"),
    (lambda m, x: explain.grad_cam(m, x, layer=L.Conv2D(2, 3)), ValueError,
     r"`layer` Conv2D 'conv2d' is not a layer of squares; its layers are conv2d, max_pooling2d"),
    (lambda m, x: explain.grad_cam(m, x, layer=2.5), TypeError, r"`layer` must be a layer name, an index or a layer"),
    (lambda m, x: explain.occlusion(m, x, patch=21), ValueError,
     r"`patch` \(21x21\) must fit in the image \(20x20\). Received: patch=21"),
    (lambda m, x: explain.occlusion(m, x, stride=0), ValueError, r"`stride` values must be >= 1"),
    (lambda m, x: explain.occlusion(m, x, patch=(4, 2), stride=3), ValueError,
     r"`stride` \(3x3\) must not exceed `patch` \(4x2\) on either axis, or pixels between patches would never be "
     r"hidden. Received: stride=3"),
    (lambda m, x: explain.occlusion(m, x, batch_size=0), ValueError, r"`batch_size` must be >= 1"),
    (lambda m, x: explain.occlusion(m, x, baseline="black"), TypeError, r"`baseline` must be a number"),
    (lambda m, x: explain.saliency("model", x), TypeError,
     r"`model` must be a convnet model \(a Sequential or a functional Model\). Received: model='model' \(type str\)"),
    (lambda m, x: explain.top_activations(m, "conv2d", 8, x[None], k=1), ValueError,
     r"`filter_index` must be <= 7. Received: filter_index=8"),
    (lambda m, x: explain.top_activations(m, "conv2d", 0, x[None], k=2), ValueError,
     r"`k` must be <= 1. Received: k=2"),
    (lambda m, x: explain.top_activations(m, "conv2d", 0, x[None], k=0), ValueError,
     r"`k` must be >= 1. Received: k=0"),
    (lambda m, x: explain.top_activations(m, "global_max_pooling2d", 0, x[None]), ValueError,
     r"top_activations: layer 'global_max_pooling2d' \(GlobalMaxPooling2D\) has no spatial output"),
    (lambda m, x: explain.top_activations(m, "conv2d", 0, x[None, :10]), ValueError,
     r"`images` has shape \(1, 10, 20, 1\) but the model expects \(None, 20, 20, 1\)"),
    (lambda m, x: explain.receptive_field_box(m, "conv2d", (20, 0)), ValueError,
     r"`position` must lie in the 20x20 output of 'conv2d'. Received: position=\(20, 0\)"),
    (lambda m, x: explain.receptive_field_box(m, "conv2d", 3), TypeError, r"`position` must be \(row, col\) integers"),
    (lambda m, x: explain.feature_maps(m, x, layers=["conv2d", "flatten"]), ValueError, r"unknown layer 'flatten'"),
])
def test_bad_arguments(trained, call, error, message):
    model, images, _ = trained
    with pytest.raises(error, match=message):
        call(model, images[0])


def test_unbuilt_and_non_classifier_models():
    with pytest.raises(ValueError, match=r"sequential: the model is not built or has no layers"):
        explain.saliency(models.Sequential([L.Conv2D(2, 3)]), np.zeros((8, 8, 1)))
    no_conv = models.Sequential([L.Input(shape=(4, 4, 1)), L.Flatten(), L.Dense(2)], name="mlp")
    with pytest.raises(ValueError, match=r"grad_cam: mlp has no Conv2D layer; pass `layer`, one of: flatten, dense"):
        explain.grad_cam(no_conv, np.zeros((4, 4, 1)))
    maps_only = models.Sequential([L.Input(shape=(6, 6, 1)), L.Conv2D(2, 3)], name="maps")
    with pytest.raises(ValueError, match=r"grad_cam needs a classifier whose output is \(N, classes\); maps outputs "
                                         r"shape \(None, 4, 4, 2\)"):
        explain.grad_cam(maps_only, np.zeros((6, 6, 1)))
    with pytest.raises(ValueError, match=r"occlusion needs a classifier"):
        explain.occlusion(maps_only, np.zeros((6, 6, 1)))
    assert explain.feature_maps(maps_only, np.zeros((6, 6, 1)))["conv2d"].shape == (4, 4, 2)


# The explain() front door and its registry

@pytest.mark.parametrize("method", explain.list_methods())
def test_explain_every_method(trained, method):
    model, images, corners = trained
    model.metadata = {"class_names": ["empty", "square"]}
    try:
        result = explain.explain(model, images[0], method=method)
    finally:
        model.metadata = {}
    assert result.method == method and result.class_index == 1 and result.class_name == "square"
    assert result.map.shape == (SIZE, SIZE) and result.image.shape == (SIZE, SIZE, 1)
    assert 0.5 < result.probability <= 1
    assert region(corners[0])[np.unravel_index(result.map.argmax(), result.map.shape)]


def test_explain_passes_options_and_rejects_others(trained):
    model, images, _ = trained
    fine = explain.explain(model, images[0], "occlusion", class_index=0, patch=2, stride=2)
    np.testing.assert_array_equal(fine.map, explain.occlusion(model, images[0], patch=2, stride=2, class_index=0))
    with pytest.raises(TypeError, match=r"explain: method 'grad_cam' takes no option 'patch'; its options: layer"):
        explain.explain(model, images[0], "grad_cam", patch=2)
    with pytest.raises(ValueError, match=r"`method`: unknown explanation method 'gradcam'. Did you mean 'grad_cam'"):
        explain.explain(model, images[0], "gradcam")


def test_method_options_exist():
    """Every option a registered method declares is a parameter of the function that computes it."""
    import inspect
    for name, method in explain.METHODS.items():
        function = explain.saliency if name in ("gradient", "smoothgrad") else method.compute
        assert set(method.options) <= set(inspect.signature(function).parameters)
    assert explain.METHODS.names() == explain.list_methods() == ["grad_cam", "gradient", "occlusion", "smoothgrad"]


@pytest.mark.gpu
def test_cuda_matches_cpu(trained):
    model, images, _ = trained
    expected = explain.grad_cam(model, images[0]), explain.saliency(model, images[0])
    model.to("cuda")
    try:
        np.testing.assert_allclose(explain.grad_cam(model, images[0]), expected[0], atol=1e-4)
        np.testing.assert_allclose(explain.saliency(model, images[0]), expected[1], rtol=1e-3, atol=1e-5)
        assert explain.top_activations(model, "conv2d", 0, images, k=3).patches.shape == (3, 3, 3, 1)
    finally:
        model.to("cpu")


def test_grad_cam_default_layer_skips_maps_that_cannot_localise():
    """LeNet-5's last conv (c5) has 1x1 maps: Grad-CAM defaults to c3, the last conv with a spatial grid."""
    from convnet import zoo
    from convnet.inspection.explain import default_cam_layer
    assert default_cam_layer(zoo.lenet5()).name == "c3"
    model = tiny_cnn()  # this file's: two convs, the last with 10x10 maps
    convs = [layer for layer in model.layers if isinstance(layer, L.Conv2D)]
    assert default_cam_layer(model) is convs[-1]
