"""convnet.viz: the plotted arrays are the right ones (read back from the figures), grids have the promised
shape, the seed's line filters show what they should, nothing touches pyplot's state, and every bad input
raises a pinned message. Headless (Agg)."""
from __future__ import annotations

import doctest
import io
import math
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from convnet import explain, models, nn, utils, viz
from convnet import layers as L
from convnet.callbacks import History
from convnet.inspection import figures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread avoids threads spinning against each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plotted(ax) -> np.ndarray:
    """The array an axes shows (its first image)."""
    return np.asarray(ax.images[0].get_array())


def geometry(ax) -> tuple[int, int]:
    """(rows, columns) of the grid an axes was placed on."""
    rows, columns, _, _ = ax.get_subplotspec().get_geometry()
    return rows, columns


def small_cnn(channels: int = 1) -> models.Sequential:
    utils.set_random_seed(0)
    return models.Sequential([
        L.Input(shape=(12, 12, channels)),
        L.Conv2D(5, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(10, 3, padding="same", activation="relu"),
        L.Flatten(),
        L.Dense(3, activation="softmax"),
    ], name="small")


def render(figure: Figure) -> None:
    """Draw for real (layout, text, colour bars) into a PNG in memory."""
    figure.savefig(io.BytesIO(), format="png", dpi=40)


def line_filters() -> np.ndarray:
    filters = np.zeros((7, 7, 1, 2), np.float32)
    filters[:, 3, :, 0] = 1  # vertical line, as in the seed
    filters[3, :, :, 1] = 1  # horizontal line
    return filters


def test_doctests():
    assert doctest.testmod(viz).failed == 0


def test_import_convnet_loads_no_matplotlib():
    code = "import sys, convnet, convnet.explain; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_figures_sit_below_explain_and_viz():
    """Imports point one way: figures <- explain <- viz (the results' .plot() used to import viz)."""
    code = ("import sys, convnet.inspection.figures; assert 'convnet.inspection.explain' not in sys.modules; "
            "import convnet.inspection.explain; assert 'convnet.inspection.viz' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert viz.plot_saliency is figures.plot_saliency  # re-exported: convnet.viz keeps its names


def test_save_figure_writes_the_png_and_closes_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image
    figure = plt.figure(figsize=(2, 1.5))
    figure.add_subplot().plot([0, 1], [1, 0])
    path = str(tmp_path / "line.png")
    assert figures.save_figure(figure, path, dpi=50) == path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (100, 75)  # inches x dpi
    assert not plt.fignum_exists(figure.number)  # pyplot no longer holds it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line.png"]  # no temporary file left behind
    own = figures.new_figure(3, 2)  # the object API's figures: saved at the default dpi, pyplot untouched
    figures.save_figure(own, str(tmp_path / "own.png"))
    with Image.open(tmp_path / "own.png") as image:
        assert image.size == (3 * figures.FIGURE_DPI, 2 * figures.FIGURE_DPI)


# Feature maps

def test_feature_maps_of_conv2d_output_vertical_bar():
    image = np.zeros((1, 21, 21, 1), np.float32)
    image[0, :, 10, 0] = 1  # a one-pixel vertical bar
    out = nn.conv2d(image, line_filters(), strides=1, padding="SAME")
    for maps in (out, out[0], np.asarray(out)):  # (1, H, W, C) tensor, (H, W, C) tensor, array
        figure = viz.plot_feature_maps(maps)
        assert [ax.get_title() for ax in figure.axes] == ["output / map 0", "output / map 1"]
        assert geometry(figure.axes[0]) == (1, 2)
        vertical, horizontal = (plotted(ax) for ax in figure.axes)
        np.testing.assert_array_equal(vertical, np.asarray(out)[0, :, :, 0])
        assert vertical.max() == 7 and horizontal.max() == 1  # the whole 7-tap line lies on the bar, or one tap
        assert vertical[3:-3, 10].min() == 7 and vertical[:, :7].max() == 0


def test_feature_maps_seed_demo_on_china():
    from convnet.datasets import load_sample_image
    china = load_sample_image("china.jpg") / 255
    gray = china.mean(axis=2, keepdims=True).astype(np.float32)  # (427, 640, 1), the photo in grayscale
    figure = viz.plot_feature_maps(nn.conv2d(gray[None], line_filters(), strides=1, padding="SAME"), cmap="gray")
    ratios = []
    for ax in figure.axes:  # how much more the map varies across columns (vertical edges) than across rows
        shown = plotted(ax)
        ratios.append(np.abs(np.diff(shown, axis=1)).mean() / np.abs(np.diff(shown, axis=0)).mean())
    vertical, horizontal = ratios  # measured: 1.94 and 0.42
    assert vertical > 1.5 and horizontal < 0.67 and vertical > 3 * horizontal


def test_feature_maps_of_every_conv_layer():
    model = small_cnn()
    image = np.random.default_rng(0).random((12, 12, 1), dtype=np.float32)
    figure = viz.plot_feature_maps(model, image)
    assert len(figure.axes) == 5 + 10
    columns = math.ceil(math.sqrt(10))  # from the layer with the most maps
    rows = math.ceil(5 / columns) + math.ceil(10 / columns)  # each layer starts a new row
    assert {geometry(ax) for ax in figure.axes} == {(rows, columns)}
    assert figure.axes[5].get_subplotspec().rowspan.start == 2  # conv2d_1 starts on a fresh row
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:2] == ["conv2d / map 0", "conv2d / map 1"] and titles[-1] == "conv2d_1 / map 9"
    x = torch.from_numpy(image[None])
    first = model.layers[0](x)
    second = model.layers[2](model.layers[1](first))  # the layers applied by hand, no hooks
    np.testing.assert_allclose(plotted(figure.axes[4]), first[0, :, :, 4].detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(plotted(figure.axes[14]), second[0, :, :, 9].detach().numpy(), rtol=1e-5, atol=1e-7)
    render(figure)


def test_feature_maps_one_layer_limited():
    model = small_cnn()
    image = np.random.default_rng(0).random((1, 12, 12, 1), dtype=np.float32)
    figure = viz.plot_feature_maps(model, image, layer="conv2d_1", max_maps=7)
    assert len(figure.axes) == 7 and {geometry(ax) for ax in figure.axes} == {(3, 3)}
    assert figure.get_suptitle() == "Feature maps of small\n(first maps only; conv2d_1: 7 of 10)"
    pooled = viz.plot_feature_maps(model, image, layer=["max_pooling2d", 0], max_maps=1)  # any spatial layers
    assert [ax.get_title() for ax in pooled.axes] == ["conv2d / map 0", "max_pooling2d / map 0"]  # model order
    assert plotted(pooled.axes[1]).shape == (6, 6) and {geometry(ax) for ax in pooled.axes} == {(2, 1)}


def test_feature_maps_convert_image_with_notice():
    model = small_cnn()
    rgb = np.random.default_rng(0).integers(0, 255, (24, 24, 3)).astype(np.uint8)
    with pytest.warns(UserWarning) as notices:
        figure = viz.plot_feature_maps(model, rgb, layer="conv2d")
    messages = [str(n.message) for n in notices]
    assert any("has 3 channels but small takes 1: converted to grayscale" in m for m in messages)
    assert any("resized from 24x24 to 12x12" in m for m in messages)
    assert len(figure.axes) == 5


@pytest.mark.parametrize("call, error, message", [
    (lambda m, x: viz.plot_feature_maps(m, x, max_maps=0), ValueError,
     r"`max_maps` must be >= 1. Received: max_maps=0"),
    (lambda m, x: viz.plot_feature_maps(m, x, max_maps=1025), ValueError, r"`max_maps` must be <= 1024"),
    (lambda m, x: viz.plot_feature_maps(m, x, layer="conv2d_2"), ValueError,
     r"`layer`: unknown layer 'conv2d_2'. Did you mean 'conv2d_1' or 'conv2d'\? Available: conv2d, conv2d_1, dense, "
     r"flatten, max_pooling2d."),
    (lambda m, x: viz.plot_feature_maps(m, x, layer="flatten"), ValueError,
     r"feature_maps: layer 'flatten' \(Flatten\) has no spatial output \(it outputs \(None, 360\)\); layers that "
     r"qualify: conv2d, max_pooling2d, conv2d_1"),
    (lambda m, x: viz.plot_feature_maps(m), ValueError, r"plot_feature_maps: `image` is required with a model"),
    (lambda m, x: viz.plot_feature_maps(m, x, cmap="graay"), ValueError,
     r"`cmap`: unknown colormap 'graay'. Did you mean 'gray'"),
    (lambda m, x: viz.plot_feature_maps(m, np.zeros((12, 12, 2))), ValueError,
     r"`image` has 2 channels, which cannot be converted to the 1 small takes: expected an image of shape "
     r"\(12, 12, 1\)"),
    (lambda m, x: viz.plot_feature_maps(np.zeros((1, 5, 5, 2)), x), ValueError,
     r"plot_feature_maps: pass `image` only with a model"),
    (lambda m, x: viz.plot_feature_maps(np.zeros((2, 5, 5, 2))), ValueError,
     r"`model_or_maps` must be a convnet model or the maps of one image, \(1, H, W, C\) or \(H, W, C\). Received "
     r"shape \(2, 5, 5, 2\); pick one image with maps\[i:i \+ 1\]"),
    (lambda m, x: viz.plot_feature_maps(np.zeros((5, 5))), ValueError,
     r"Received shape \(5, 5\); add a channel axis with maps\[:, :, None\]"),
    (lambda m, x: viz.plot_feature_maps("maps"), TypeError,
     r"`model_or_maps` must be a NumPy array or a torch.Tensor. Received: model_or_maps='maps'"),
    (lambda m, x: viz.plot_feature_maps(np.zeros((5, 5, 1)), layer=3), TypeError, r"`layer` must be a string"),
])
def test_feature_maps_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call(small_cnn(), np.zeros((12, 12, 1), np.float32))


# Filters

def test_filters_first_layer_gray():
    model = small_cnn()
    figure = viz.plot_filters(model)
    assert len(figure.axes) == 5 and {geometry(ax) for ax in figure.axes} == {(2, 3)}
    assert [ax.get_title() for ax in figure.axes] == [f"filter {i}" for i in range(5)]
    kernel = model.get_layer("conv2d").get_weights()[0][:, :, 0, :]  # (3, 3, 5)
    for i, ax in enumerate(figure.axes):
        expected = (kernel[..., i] - kernel[..., i].min()) / np.ptp(kernel[..., i])
        np.testing.assert_allclose(plotted(ax), expected, rtol=1e-5, atol=1e-6)
    assert figure.get_suptitle() == "conv2d: 5 of 5 filters (3x3x1)"
    assert len(viz.plot_filters(model, max_filters=2).axes) == 2


def test_filters_first_layer_rgb():
    model = small_cnn(channels=3)
    figure = viz.plot_filters(model, layer="conv2d")
    shown = plotted(figure.axes[0])
    assert shown.shape == (3, 3, 3) and shown.min() == 0 and shown.max() == pytest.approx(1)


def test_filters_deeper_layer_grid():
    model = small_cnn()
    figure = viz.plot_filters(model, layer="conv2d_1", max_filters=4, max_channels=3)
    assert len(figure.axes) == 4 * 3 and {geometry(ax) for ax in figure.axes} == {(4, 3)}
    assert figure.get_suptitle() == ("conv2d_1: filters 0-3 of 10 (rows) x input channels 0-2 of 5 (columns), 3x3; "
                                     "each filter normalised")
    kernel = model.get_layer("conv2d_1").get_weights()[0]  # (3, 3, 5, 10)
    f = kernel[..., 2]  # row 2: filter 2, normalised over all its input channels
    expected = (f[:, :, 1] - f.min()) / np.ptp(f)
    np.testing.assert_allclose(plotted(figure.axes[2 * 3 + 1]), expected, rtol=1e-5, atol=1e-6)
    assert [ax.get_title() for ax in figure.axes[:3]] == ["in 0", "in 1", "in 2"]
    assert figure.axes[3].get_ylabel() == "filter 1"
    default = viz.plot_filters(model, layer=2)
    assert len(default.axes) == 10 * 5  # 10 filters (<= 16) x 5 channels (<= 16)
    render(figure)


@pytest.mark.parametrize("call, error, message", [
    (lambda m: viz.plot_filters(m, layer="max_pooling2d"), ValueError,
     r"plot_filters: layer 'max_pooling2d' \(MaxPooling2D\) is not a Conv2D layer; layers that qualify: conv2d, "
     r"conv2d_1$"),
    (lambda m: viz.plot_filters(m, layer="conv"), ValueError, r"`layer`: unknown layer 'conv'"),
    (lambda m: viz.plot_filters(m, max_filters=0), ValueError, r"`max_filters` must be >= 1"),
    (lambda m: viz.plot_filters(m, max_channels=257), ValueError, r"`max_channels` must be <= 256"),
    (lambda m: viz.plot_filters(models.Sequential([L.Input(shape=(4,)), L.Dense(2)], name="mlp")), ValueError,
     r"plot_filters: mlp has no Conv2D layer"),
    (lambda m: viz.plot_filters(np.zeros((3, 3, 1, 2))), TypeError,
     r"`model` must be a convnet model \(a Sequential or a functional Model\)"),
])
def test_filters_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call(small_cnn())


# Training curves

def test_history_from_fit_and_dict():
    utils.set_random_seed(0)
    model = models.Sequential([L.Input(shape=(4,)), L.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    x = np.random.default_rng(0).random((40, 4), dtype=np.float32)
    history = model.fit(x, (x[:, 0] > 0.5).astype(int), batch_size=8, epochs=3, validation_split=0.25, verbose=0)
    assert isinstance(history, History)
    for source in (history, history.history):
        figure = viz.plot_history(source)
        loss_ax, accuracy_ax = figure.axes
        assert (loss_ax.get_title(), accuracy_ax.get_title()) == ("Loss", "Accuracy")
        assert [line.get_label() for line in loss_ax.lines] == ["training", "validation"]
        np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), history.history["val_loss"])
        np.testing.assert_allclose(accuracy_ax.lines[0].get_ydata(), history.history["accuracy"])
        np.testing.assert_array_equal(accuracy_ax.lines[0].get_xdata(), [1, 2, 3])
    render(figure)
    only_loss = viz.plot_history({"loss": [1.0, 0.5]})
    assert len(only_loss.axes) == 1 and len(only_loss.axes[0].lines) == 1


@pytest.mark.parametrize("history, error, message", [
    ([1, 2], TypeError, r"`history` must be a History \(what fit returns\) or its .history dict"),
    ({}, ValueError, r"`history` is empty"),
    ({"loss": [1.0, 0.5], "val_loss": [1.0]}, ValueError, r"`history` lists must all have one value per epoch"),
    ({"loss": ["a"]}, ValueError, r"`history\['loss'\]` must be a non-empty list of numbers, one per epoch"),
    ({"lr": [0.1]}, ValueError, r"`history` has no loss or metric to plot. Received keys: lr"),
])
def test_history_bad_input(history, error, message):
    with pytest.raises(error, match=message):
        viz.plot_history(history)


# Confusion matrix and mistakes

def test_confusion_matrix_counts_and_plot():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 2, 0, 2])
    counts = viz.confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 1], [1, 0, 3]])
    probabilities = np.eye(3)[y_pred] * 0.8 + 0.1  # argmax = y_pred
    figure = viz.plot_confusion_matrix(y_true, probabilities, class_names=["a", "b", "c"])
    matrix_ax, _colorbar = figure.axes
    np.testing.assert_allclose(plotted(matrix_ax), counts / counts.sum(1, keepdims=True))
    assert [t.get_text() for t in matrix_ax.get_yticklabels()] == ["a", "b", "c"]
    assert len(matrix_ax.texts) == 9 and matrix_ax.texts[0].get_text() == "0.50"
    assert "accuracy 66.67%" in matrix_ax.get_title()
    raw = viz.plot_confusion_matrix(y_true, y_pred, normalize=False)
    np.testing.assert_array_equal(plotted(raw.axes[0]), counts)
    assert raw.axes[0].texts[8].get_text() == "3"
    render(figure)


def test_confusion_matrix_empty_class_row_and_class_count():
    counts = viz.confusion_matrix([0, 0], [0, 1], num_classes=4)
    assert counts.shape == (4, 4)
    figure = viz.plot_confusion_matrix([0, 0], [0, 1], class_names=list("wxyz"))
    np.testing.assert_array_equal(plotted(figure.axes[0])[2:], 0)  # no samples of y, z: rows of 0, not NaN


@pytest.mark.parametrize("y_true, y_pred, names, error, message", [
    ([0, 1], [0], None, ValueError, r"`y_true` and `y_pred` must have the same number of samples: y_true has 2, "
                                    r"y_pred has 1"),
    ([0, 3], [0, 1], ["a", "b"], ValueError, r"`class_names` has 2 names but the labels go up to 3"),
    ([0, -1], [0, 1], None, ValueError, r"`y_true` holds a negative class index \(-1\)"),
    ([0, 1.5], [0, 1], None, ValueError, r"`y_true` must hold integer class indices. Received non-integer values such "
                                         r"as 1.5"),
    ([], [], None, ValueError, r"`y_true` must hold class indices \(N,\) or class scores \(N, K\) for N >= 1"),
    ([0, 1], [0, 1], "ab", TypeError, r"`class_names` must be a list of strings"),
    (["a"], [0], None, TypeError, r"`y_true` must hold numbers"),
])
def test_confusion_matrix_bad_input(y_true, y_pred, names, error, message):
    with pytest.raises(error, match=message):
        viz.plot_confusion_matrix(y_true, y_pred, class_names=names)


def test_misclassified_most_confident_first():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8)).astype(np.uint8)
    y_true = np.array([0, 1, 2, 0, 1, 2])
    probabilities = np.array([[.9, .1, 0], [.6, .4, 0], [0, .2, .8], [.1, .2, .7], [.05, .05, .9], [.3, .3, .4]])
    figure = viz.plot_misclassified(images, y_true, probabilities, class_names=["cat", "dog", "emu"])
    assert [ax.get_title() for ax in figure.axes] == ["pred: emu (90%)\ntrue: dog", "pred: emu (70%)\ntrue: cat",
                                                      "pred: cat (60%)\ntrue: dog"]
    np.testing.assert_allclose(plotted(figure.axes[0]), images[4] / 255)
    assert figure.get_suptitle() == "3 of 6 misclassified; showing 3"
    limited = viz.plot_misclassified(images[..., None], y_true, probabilities.argmax(1), max_images=2)
    assert [ax.get_title() for ax in limited.axes] == ["pred: 0\ntrue: 1", "pred: 2\ntrue: 0"]  # dataset order
    assert {geometry(ax) for ax in limited.axes} == {(1, 2)}
    render(figure)


def test_misclassified_none_and_rgb():
    images = np.random.default_rng(0).random((3, 5, 5, 3), dtype=np.float32) * 4 - 2  # outside [0, 1]: rescaled
    figure = viz.plot_misclassified(images, [0, 1, 1], [0, 1, 1])
    assert len(figure.axes) == 1 and "No misclassified images\n(3 of 3 correct)" in figure.axes[0].texts[0].get_text()
    rgb = viz.plot_misclassified(images, [0, 1, 1], [1, 1, 1])
    shown = plotted(rgb.axes[0])
    assert shown.shape == (5, 5, 3) and shown.min() == 0 and shown.max() == pytest.approx(1)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(images=np.zeros((3, 5, 5, 2))), ValueError,
     r"`images` must be \(N, H, W\), \(N, H, W, 1\) or \(N, H, W, 3\). Received shape \(3, 5, 5, 2\)"),
    (dict(y_true=[0, 1]), ValueError, r"`images` and `y_true` must have the same number of samples: images has 3, "
                                      r"y_true has 2"),
    (dict(max_images=0), ValueError, r"`max_images` must be >= 1"),
    (dict(probabilities=np.ones((3, 1))), ValueError, r"`probabilities` must be \(N, K\) with N = 3 and K > 1"),
])
def test_misclassified_bad_input(kwargs, error, message):
    arguments = {"images": np.zeros((3, 5, 5)), "y_true": [0, 1, 1], "y_pred": [1, 1, 0], **kwargs}
    with pytest.raises(error, match=message):
        viz.plot_misclassified(**arguments)


# Explanation overlays, receptive fields, top patches

def test_saliency_overlay():
    image = np.random.default_rng(0).random((6, 7, 1), dtype=np.float32)
    heat = np.arange(42, dtype=np.float32).reshape(6, 7)
    figure = viz.plot_saliency(image, heat, alpha=0.3, title="why")
    image_ax, overlay_ax, _ = figure.axes  # the third is the colour bar
    np.testing.assert_allclose(plotted(image_ax), image[:, :, 0])
    assert len(overlay_ax.images) == 2 and overlay_ax.images[1].get_alpha() == 0.3
    np.testing.assert_allclose(np.asarray(overlay_ax.images[1].get_array()), heat / 41)
    assert figure.get_suptitle() == "why"
    render(figure)
    with pytest.raises(ValueError, match=r"`saliency_map` must be \(H, W\) = \(6, 7\), the image's size. Received "
                                         r"shape \(7, 6\)"):
        viz.plot_saliency(image, heat.T)
    with pytest.raises(ValueError, match=r"`alpha` must be <= 1.0. Received: alpha=2.0"):
        viz.plot_saliency(image, heat, alpha=2)
    with pytest.raises(ValueError, match=r"`image` must be an image \(H, W\), \(H, W, 1\) or \(H, W, 3\). Received "
                                         r"shape \(6, 7, 2\)"):
        viz.plot_saliency(np.zeros((6, 7, 2)), heat)


def test_explanation_plot():
    model = small_cnn()
    image = np.random.default_rng(0).random((12, 12, 1), dtype=np.float32)
    result = explain.explain(model, image, "gradient", class_index=2)
    figure = result.plot(alpha=0.4)
    assert figure.get_suptitle() == f"gradient: class 2 ({result.probability:.1%})"
    np.testing.assert_allclose(np.asarray(figure.axes[1].images[1].get_array()),
                               (result.map - result.map.min()) / np.ptp(result.map), rtol=1e-5, atol=1e-6)


def test_receptive_field_rectangle():
    model = small_cnn()
    figure = viz.plot_receptive_field(model, "conv2d_1")  # centre unit (3, 3) of the 6x6 output
    (ax,) = figure.axes
    top, left, bottom, right = explain.receptive_field_box(model, "conv2d_1", (3, 3))
    assert (bottom - top, right - left) == (8, 8)  # conv 3 -> pool 2 -> conv 3
    (rectangle,) = ax.patches
    assert rectangle.get_xy() == (left - 0.5, top - 0.5) and (rectangle.get_width(), rectangle.get_height()) == (8, 8)
    corner = viz.plot_receptive_field(model, "conv2d_1", position=(0, 0), image=np.ones((12, 12, 1)))
    (clipped,) = corner.axes[0].patches  # the field reaches 3 pixels into the padding: drawn clipped
    assert clipped.get_xy() == (-0.5, -0.5) and clipped.get_width() == 5
    assert "rows -3..4, columns -3..4" in corner.axes[0].get_title()
    render(corner)
    with pytest.raises(ValueError, match=r"`image` must have the model's input size 12x12. Received shape \(5, 5\)"):
        viz.plot_receptive_field(model, "conv2d", image=np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"layers that qualify: conv2d, max_pooling2d, conv2d_1"):
        viz.plot_receptive_field(model, "dense")


def test_top_activations_plot():
    model = small_cnn()
    images = np.random.default_rng(0).random((10, 12, 12, 1), dtype=np.float32)
    result = explain.top_activations(model, "conv2d_1", 3, images, k=5)
    figure = viz.plot_top_activations(result)
    assert len(figure.axes) == 5 and {geometry(ax) for ax in figure.axes} == {(2, 3)}
    assert figure.axes[0].get_title().startswith(f"#1 img {result.indices[0]}\n")
    np.testing.assert_allclose(plotted(figure.axes[4]), result.patches[4, :, :, 0])
    assert figure.get_suptitle() == "Top 5 patches for conv2d_1 filter 3 (receptive field 8x8)"
    assert len(result.plot().axes) == 5
    with pytest.raises(TypeError, match=r"`result` must be what explain.top_activations returns"):
        viz.plot_top_activations(result.patches)


def test_no_pyplot_state():
    import matplotlib.pyplot as plt
    plt.close("all")
    viz.plot_feature_maps(np.zeros((4, 4, 2)))
    viz.plot_history({"loss": [1.0]})
    assert plt.get_fignums() == []
