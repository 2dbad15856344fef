"""`convnet featuremaps | filters | explain`: the seed's line-filter demo against a NumPy reference, the PNG
files read back with Pillow, what each command prints, and a pinned one-line error for each bad input.
In-process through `convnet.cli.main`, and once as a real, headless subprocess."""
from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnet.cli import inspect as cli_inspect
from convnet.cli import main
from convnet.datasets import load_image, load_sample_image

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def train_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder (LeNet-5, 540 training images, 1 epoch, 200 test images), trained once per session:
    test_report.py calls this too and finds the folder already there."""
    folder = tmp_path_factory.getbasetemp() / "tiny-run"
    if not (folder / "metrics.json").exists():
        code = main(["train", "--model", "lenet5", "--limit", "600", "--epochs", "1", "--test-limit", "200",
                     "--out", str(folder), "--verbose", "0", "--device", "cpu"])
        assert code == 0
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, fashion) -> Path:
    return train_tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def boot_png(tmp_path_factory, fashion) -> Path:
    """The first Fashion-MNIST test image (an ankle boot), as a 28x28 grayscale PNG."""
    (_, _), (x_test, y_test) = fashion
    assert y_test[0] == 9
    path = tmp_path_factory.mktemp("images") / "boot.png"
    Image.fromarray(x_test[0]).save(path)
    return path


def png(path: str | Path) -> np.ndarray:
    """A PNG written by a command, decoded: (H, W, 3) uint8."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def grid(rows: int, columns: int, title: float = 0.4) -> tuple[int, int, int]:
    """The (H, W, 3) of a saved grid of image panels: viz.PANEL_INCHES each, `title` inches on top."""
    from convnet import viz
    return (round((rows * viz.PANEL_INCHES + title) * cli_inspect.FIGURE_DPI),
            round(columns * viz.PANEL_INCHES * cli_inspect.FIGURE_DPI), 3)


def reference_line_maps(image: np.ndarray) -> np.ndarray:
    """The seed's two maps in plain NumPy: the sum over channels of the 7 pixels on a vertical (map 0) or
    horizontal (map 1) line centred on each pixel, with zeros beyond the border (SAME padding, 3 each side)."""
    height, width, _ = image.shape
    summed = image.sum(axis=2)  # every filter tap spans all channels with weight 1
    padded = np.pad(summed, 3)  # (H + 6, W + 6)
    vertical = sum(padded[3 + d:3 + d + height, 3:3 + width] for d in range(-3, 4))
    horizontal = sum(padded[3:3 + height, 3 + d:3 + d + width] for d in range(-3, 4))
    return np.stack([vertical, horizontal], axis=-1)


def test_doctests():
    assert doctest.testmod(cli_inspect).failed == 0


def test_line_filters_are_the_seeds():
    filters = cli_inspect.line_filters(3)
    expected = np.zeros((7, 7, 3, 2), np.float32)
    expected[:, 3, :, 0] = 1
    expected[3, :, :, 1] = 1
    np.testing.assert_array_equal(filters, expected)


@pytest.mark.parametrize("shape", [(12, 15, 3), (9, 7, 1), (5, 4, 2)])
def test_line_filter_maps_match_a_numpy_reference(shape):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    maps = cli_inspect.line_filter_maps(image)
    assert maps.shape == (*shape[:2], 2) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, reference_line_maps(image), rtol=1e-5, atol=1e-5)


def test_the_vertical_map_responds_to_vertical_edges():
    stripes = np.zeros((20, 20, 1), np.float32)
    stripes[:, ::4] = 1  # vertical lines, one pixel wide
    maps = cli_inspect.line_filter_maps(stripes)
    assert maps[10, 8].tolist() == [7.0, 1.0]  # on a line: the vertical filter sees 7 lit pixels, the horizontal 1
    photo = load_sample_image("china.jpg").astype(np.float32) / 255
    maps = cli_inspect.line_filter_maps(photo)
    across = np.abs(np.diff(maps, axis=1)).mean(axis=(0, 1))  # (2,) change from column to column: vertical edges
    down = np.abs(np.diff(maps, axis=0)).mean(axis=(0, 1))  # (2,) change from row to row: horizontal edges
    assert across[0] > 1.5 * across[1]  # the vertical line keeps vertical edges; the horizontal one blurs them
    assert down[1] > 1.5 * down[0]
    np.testing.assert_allclose(maps[200:230, 300:330], reference_line_maps(photo)[200:230, 300:330], rtol=1e-5)


def test_featuremaps_demo_as_a_real_headless_subprocess(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "MPLBACKEND")}
    run = subprocess.run([sys.executable, "-m", "convnet", "featuremaps", "--sample", "china.jpg", "--out",
                          str(tmp_path / "maps")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [str(tmp_path / "maps" / "china-lines.png")]
    assert run.stderr == ""
    pixels = png(tmp_path / "maps" / "china-lines.png")
    assert pixels.shape[1] == 1200 and 300 < pixels.shape[0] < 420  # 3 panels of 4 in at 100 dpi, 640x427 aspect
    assert pixels.std() > 20  # a photo and two maps, not a blank canvas


def test_featuremaps_demo_defaults_to_both_samples_and_the_featuremaps_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["featuremaps"]) == 0
    assert capsys.readouterr().out.splitlines() == [os.path.join("featuremaps", "china-lines.png"),
                                                    os.path.join("featuremaps", "flower-lines.png")]
    assert png(tmp_path / "featuremaps" / "flower-lines.png").shape[1] == 1200


def test_featuremaps_of_a_model_for_a_file_and_a_sample(tiny_run, boot_png, tmp_path, monkeypatch, capsys):
    from convnet import viz
    seen = []
    original = viz.plot_feature_maps

    def recording(model, image, **kwargs):
        seen.append(image)
        return original(model, image, **kwargs)

    monkeypatch.setattr(viz, "plot_feature_maps", recording)
    out = tmp_path / "maps"
    assert main(["featuremaps", str(boot_png), "--sample", "china.jpg", "--model", str(tiny_run / "model.convnet"),
                 "--layer", "c1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(out / "boot-c1.png"),
        "sample china.jpg  (note: resized from 640x427 to 28x28, converted from 3 to 1 channel(s) to fit the model)",
        str(out / "china-c1.png")]
    np.testing.assert_allclose(seen[0], load_image(boot_png).astype(np.float32) / 255)  # the model's scale
    gray = Image.fromarray(load_sample_image("china.jpg")).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(seen[1][:, :, 0], np.asarray(gray) / 255, atol=1.01 / 255)  # luma, then resized
    assert png(out / "boot-c1.png").shape == grid(rows=2, columns=3)  # c1's 6 maps


def test_featuremaps_of_every_conv_layer_by_default(tiny_run, boot_png, tmp_path, capsys):
    assert main(["featuremaps", str(boot_png), "--model", str(tiny_run / "model.convnet"), "--max-maps", "4",
                 "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / f"boot-{layer}.png") for layer in ("c1", "c3", "c5")]
    for layer in ("c1", "c3", "c5"):
        assert png(tmp_path / f"boot-{layer}.png").shape == grid(rows=2, columns=2)  # the first 4 maps


def test_featuremaps_of_a_pooling_layer(tiny_run, boot_png, tmp_path, capsys):
    assert main(["featuremaps", str(boot_png), "--model", str(tiny_run / "model.convnet"), "--layer", "s4",
                 "--max-maps", "9", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "boot-s4.png")]
    assert png(tmp_path / "boot-s4.png").shape == grid(rows=3, columns=3)


def test_featuremaps_of_two_images_with_one_name_keep_both(tiny_run, boot_png, tmp_path, capsys):
    assert main(["featuremaps", str(boot_png), str(boot_png), "--model", str(tiny_run / "model.convnet"), "--layer",
                 "c1", "--max-maps", "1", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "boot-c1.png"), str(tmp_path / "boot-c1-2.png")]


def test_filters_of_the_first_conv_layer_and_of_another(tiny_run, tmp_path, capsys):
    model = str(tiny_run / "model.convnet")
    assert main(["filters", model, "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Showing c1, the first Conv2D layer; the others: c3, c5 (pick with --layer)",
        str(tmp_path / "model-c1-filters.png")]
    assert png(tmp_path / "model-c1-filters.png").shape == grid(rows=2, columns=3)  # 6 filters 5x5x1
    assert main(["filters", model, "--layer", "c3", "--max-filters", "4", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "model-c3-filters.png")]
    assert png(tmp_path / "model-c3-filters.png").shape == grid(rows=4, columns=6, title=0.6)  # filters x channels


@pytest.mark.parametrize("method", sorted(cli_inspect.EXPLAIN_METHODS))
def test_explain_prints_the_prediction_and_writes_the_overlay(method, tiny_run, boot_png, tmp_path, capsys):
    from convnet.models import load_model
    model = load_model(tiny_run / "model.convnet", device="cpu")
    probabilities = model.predict(load_image(boot_png)[None].astype(np.float32) / 255, verbose=0)[0]
    top = int(probabilities.argmax())
    assert main(["explain", str(tiny_run / "model.convnet"), str(boot_png), "--method", method,
                 "--out", str(tmp_path)]) == 0
    where = " at layer c3" if method == "gradcam" else ""  # c5's 1x1 maps cannot localise
    assert capsys.readouterr().out.splitlines() == [
        f"Predicted: {FASHION_NAMES[top]} ({probabilities[top]:.2%})",
        f"Explained: {FASHION_NAMES[top]} ({probabilities[top]:.2%}) with {method}{where}",
        str(tmp_path / f"boot-{method}.png")]
    pixels = png(tmp_path / f"boot-{method}.png")
    assert 300 <= pixels.shape[0] < pixels.shape[1] <= 1500  # the image and the overlay side by side
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a colour map over the image, not a blank


def test_explain_another_class(tiny_run, boot_png, tmp_path, capsys):
    assert main(["explain", str(tiny_run / "model.convnet"), str(boot_png), "--class-index", "3", "--method",
                 "occlusion", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("Explained: Dress (")


@pytest.fixture(scope="session")
def not_a_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("junk") / "notes.convnet"
    path.write_text("these are notes, not a model")
    return path


@pytest.mark.parametrize("argv, message", [
    (["featuremaps", "--sample", "chna.jpg"], "`--sample`: unknown sample image 'chna.jpg'. Did you mean "
                                              "'china.jpg'? Available: china.jpg, flower.jpg."),
    (["featuremaps", "{dir}/missing.png"], "load_image: no such file: '{dir}/missing.png'"),
    (["featuremaps", "--layer", "c1"], "--layer and --max-maps need --model; without a model the command shows "
                                       "the seed's two line filters"),
    (["featuremaps", "--model", "{dir}/missing.convnet"], "{dir}/missing.convnet: no such file"),
    (["featuremaps", "--model", "{junk}"], "{junk}: not a convnet file (no safetensors header at the start"),
    (["featuremaps", "--model", "{model}", "--layer", "c2"], "`layer`: unknown layer 'c2'. Did you mean 's2' or "
                                                             "'c5' or 'c3'? Available: c1, c3, c5, f6, flatten, "
                                                             "output, s2, s4."),
    (["featuremaps", "--model", "{model}", "--layer", "flatten"], "featuremaps: layer 'flatten' (Flatten) has no "
                                                                  "spatial output (it outputs (None, 120)); layers "
                                                                  "that qualify: c1, s2, c3, s4, c5"),
    (["featuremaps", "--model", "{model}", "--max-maps", "0"], "`--max-maps` must be >= 1. Received: --max-maps=0"),
    (["filters", "{model}", "--layer", "s2"], "filters: layer 's2' (AveragePooling2D) is not a Conv2D layer; "
                                              "layers that qualify: c1, c3, c5"),
    (["filters", "{model}", "--layer", "c9"], "`layer`: unknown layer 'c9'. Did you mean"),
    (["filters", "{junk}"], "{junk}: not a convnet file"),
    (["explain", "{model}", "{boot}", "--method", "gradcm"], "`--method`: unknown explanation method 'gradcm'. Did "
                                                             "you mean 'gradcam' or 'smoothgrad'? Available: "
                                                             "gradcam, occlusion, saliency, smoothgrad."),
    (["explain", "{model}", "{boot}", "--method", "saliency", "--layer", "c1"], "--layer applies to --method "
                                                                                "gradcam only. Received: --method "
                                                                                "saliency"),
    (["explain", "{model}", "{boot}", "--class-index", "10"], "--class-index must be in [0, 9] (lenet5 has 10 "
                                                              "classes). Received: 10"),
    (["explain", "{model}", "{junk}"], "{junk}: not an image Pillow can read"),
    (["explain", "{dir}/missing.convnet", "{boot}"], "{dir}/missing.convnet: no such file"),
])
def test_bad_input_exits_2_with_one_pinned_line(argv, message, tiny_run, boot_png, not_a_model, tmp_path,
                                                monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a command that wrongly went ahead would write ./featuremaps here
    places = {"model": str(tiny_run / "model.convnet"), "boot": str(boot_png), "junk": str(not_a_model),
              "dir": str(tmp_path)}
    assert main([item.format(**places) for item in argv]) == 2
    captured = capsys.readouterr()
    command = argv[0]
    assert captured.err.startswith(f"convnet {command}: error: {message.format(**places)}"), captured.err
    assert len(captured.err.splitlines()) == 1 and captured.out == ""
    assert not (tmp_path / "featuremaps").exists()
