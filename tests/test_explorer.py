"""`convnet explore`'s JSON API: every endpoint against the library function it wraps (the same numbers as
`convnet predict`, `explain.feature_maps`, `explain.grad_cam`, `receptive_field_box`, a NumPy convolution for
the playground), its refusals (a 4xx status and {"error"}, never a traceback), its limits (bytes, pixels,
queued requests), path traversal, the Host check, no CORS, inference off the event loop; in-process through
Starlette's TestClient and once through a real uvicorn process started by the command line."""
from __future__ import annotations

import asyncio
import base64
import doctest
import io
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the explorer's web server is the `explore` extra: pip install 'convnet[explore]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx: pip install httpx")

import warnings

from PIL import Image

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and says so on import; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import convnet
from convnet import layers, utils
from convnet.cli import explore as cli_explore
from convnet.cli.common import CommandImage, model_input
from convnet.explorer import Explorer, create_app, load_explorer
from convnet.explorer import server as explorer_server
from convnet.explorer.playground import apply_kernel, output_size, preset_kernel
from convnet.inspection import explain

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

SHAPES = ["square", "circle", "triangle", "cross", "diagonal cross", "horizontal bar", "vertical bar"]


def explorer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder (LeNet-5 on the synthetic shapes, 600 training images, 3 epochs, 200 test images),
    written once per session by `runs.train`; test_explorer_browser.py uses it too."""
    folder = tmp_path_factory.getbasetemp() / "explorer-run"
    if not (folder / "metrics.json").exists():
        from convnet.runs.job import TrainConfig, train
        train(TrainConfig(model="lenet5", dataset="shapes", epochs=3, limit=600, val_size=100, test_limit=200,
                          out=str(folder), verbose=0, device="cpu"))
    return folder


def graph_model() -> convnet.Model:
    """A functional graph: a stem, a branch merged back by Add, a nested Sequential, a softmax head."""
    utils.set_random_seed(5)
    block = convnet.Sequential([layers.Conv2D(4, 3, strides=2, padding="same", name="inner")], name="block")
    inputs = convnet.Input(shape=(12, 12, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(4, 3, padding="same", name="branch")(x)
    x = block(layers.Add(name="merge")([x, y]))
    return convnet.Model(inputs, layers.Dense(3, activation="softmax", name="head")(
        layers.GlobalAveragePooling2D(name="gap")(x)), name="graph")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return explorer_run(tmp_path_factory)


@pytest.fixture(scope="module")
def explorer(run_dir) -> Explorer:
    return load_explorer(run_dir, device="cpu")


@pytest.fixture(scope="module")
def client(explorer):
    with TestClient(create_app(explorer)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def graph_client():
    with TestClient(create_app(Explorer(graph_model(), source="test graph"))) as test_client:
        yield test_client


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def unpack(packed: dict, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed["data"]), dtype=dtype).reshape(packed["shape"])


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    return body["error"]


@pytest.mark.parametrize("module", ["inputs", "playground", "session"])
def test_docstring_examples_run(module):
    import importlib
    assert doctest.testmod(importlib.import_module(f"convnet.explorer.{module}")).failed == 0


def test_model_describes_each_layer_as_the_layer_table(client, explorer):
    info = client.get("/api/model").json()
    model = explorer.model
    assert info["name"] == "lenet5" and info["input_shape"] == [None, 28, 28, 1]
    assert info["class_names"] == SHAPES and info["num_classes"] == 7
    rows = explain.layer_rows(model)
    assert [layer["name"] for layer in info["layers"]] == ["input_layer", *rows]
    for layer in info["layers"][1:]:
        row = rows[layer["name"]]
        assert layer["class_name"] == row["type"] and layer["params"] == row["params"] and layer["macs"] == row["macs"]
        assert layer["output_shape"] == list(row["output_shape"])
        assert layer["receptive_field"] == (None if row["receptive_field"] is None else list(row["receptive_field"]))
    assert [layer["inputs"] for layer in info["layers"][:3]] == [[], ["input_layer"], ["c1"]]
    assert sum(layer["params"] for layer in info["layers"]) == info["params"] == model.count_params()
    assert info["spatial_layers"] == explain.spatial_layers(model) and info["conv_layers"] == ["c1", "c3", "c5"]
    assert info["default_cam_layer"] == "c3" and info["run"] is True and info["test_images"] == 200


def test_model_of_a_graph_shows_branches_merges_and_nested_layers(graph_client):
    info = graph_client.get("/api/model").json()
    by_name = {layer["name"]: layer for layer in info["layers"]}
    assert info["graph"] is True and by_name["image"]["inputs"] == []
    assert by_name["branch"]["inputs"] == ["stem"] and by_name["merge"]["inputs"] == ["stem", "branch"]
    assert by_name["block"]["inputs"] == ["merge"] and by_name["block/inner"]["nested_in"] == "block"
    assert by_name["block/inner"]["receptive_field"] == [7, 7]  # 3 + 2 (stem, branch) + 2 (inner, jump 1)
    assert by_name["gap"]["receptive_field"] is None and info["default_cam_layer"] == "block/inner"


def test_predict_gives_the_numbers_of_convnet_predict(client, explorer, run_dir, tmp_path, capsys, monkeypatch):
    from convnet.cli.main import main
    monkeypatch.chdir(tmp_path)
    path = Path("photo.png")
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    path.write_bytes(png_bytes(rgb))
    answer = client.post("/api/predict", files={"image": ("photo.png", path.read_bytes(), "image/png")}).json()
    assert main(["predict", str(run_dir / "model.convnet"), str(path), "--top-k", "5", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == answer["note"] and "resized from 30x40 to 28x28, converted from 3 to 1" in answer["note"]
    shown = [f"  {rank}. {item['class_name']:<14} {item['probability'] * 100:6.2f}%"
             for rank, item in enumerate(answer["predictions"], start=1)]
    assert printed[1:] == shown
    pixels, _ = model_input(explorer.model, CommandImage(path=str(path)))
    expected = explorer.model.predict(pixels[None], verbose=0)[0]
    top = np.argsort(-expected)[:5]
    assert [item["index"] for item in answer["predictions"]] == top.tolist()
    assert [item["probability"] for item in answer["predictions"]] == pytest.approx(expected[top].tolist(), abs=0)
    converted = answer["input"]
    assert converted["original"] == {"height": 40, "width": 30, "channels": 3}
    assert converted["converted"] == {"height": 28, "width": 28, "channels": 1}
    assert np.array_equal(unpack(converted["pixels"], "uint8"), np.round(pixels / explorer.scale).astype(np.uint8))


def test_predict_a_test_image_by_id(client, explorer):
    answer = client.post("/api/predict", data={"sample": "test-7"}).json()
    image = explorer.run.images[7].astype(np.float32) * explorer.scale  # (28, 28, 1), as an upload is converted
    expected = explorer.model.predict(image[None], verbose=0)[0]
    assert answer["predictions"][0]["index"] == int(expected.argmax()) and answer["note"] is None
    assert answer["predictions"][0]["probability"] == pytest.approx(float(expected.max()), abs=0)
    assert answer["predictions"][0]["probability"] == pytest.approx(float(explorer.run.probabilities[7].max()), abs=1e-6)
    assert [item["probability"] for item in answer["predictions"]] == sorted(
        [item["probability"] for item in answer["predictions"]], reverse=True)


def test_featuremaps_are_the_layers_maps_scaled_per_map(client, explorer):
    answer = client.post("/api/featuremaps", data={"sample": "test-3"}).json()
    pixels = explorer.run.images[3].astype(np.float32) * explorer.scale
    expected = explain.feature_maps(explorer.model, pixels, explain.spatial_layers(explorer.model))
    assert [layer["name"] for layer in answer["layers"]] == list(expected)
    for layer in answer["layers"]:
        maps = expected[layer["name"]]  # (h, w, K)
        assert layer["shape"] == list(maps.shape) and layer["shown"] == maps.shape[2]
        low, high = maps.min(axis=(0, 1)), maps.max(axis=(0, 1))
        flat = high <= low  # a constant map (c5's are 1x1) is scaled by the layer's range
        low, high = np.where(flat, maps.min(), low), np.where(flat, maps.max(), high)
        assert layer["min"] == pytest.approx(low.tolist()) and layer["max"] == pytest.approx(high.tolist())
        reference = ((maps - low) / (high - low) * 255).transpose(2, 0, 1)  # (K, h, w)
        assert np.abs(unpack(layer["maps"], "uint8") - reference).max() <= 0.51
    c5 = unpack(answer["layers"][-1]["maps"], "uint8")  # (120, 1, 1)
    assert c5.min() == 0 and c5.max() == 255
    one = client.post("/api/featuremaps", data={"sample": "test-3", "layers": "c3", "max_maps": "4"}).json()
    assert [(layer["name"], layer["shown"]) for layer in one["layers"]] == [("c3", 4)]
    assert error_of(client.post("/api/featuremaps", data={"sample": "test-3", "layers": "flatten"}), 400).startswith(
        "`layers`: unknown layer with feature maps 'flatten'")


def test_explain_grad_cam_is_explain_grad_cam(client, explorer):
    pixels = explorer.run.images[5].astype(np.float32) * explorer.scale
    answer = client.post("/api/explain", data={"sample": "test-5", "method": "grad_cam", "layer": "c1",
                                               "class_index": "2"}).json()
    expected = explain.grad_cam(explorer.model, pixels, layer="c1", class_index=2)
    assert answer["class_index"] == 2 and answer["class_name"] == "triangle" and answer["layer"] == "c1"
    assert np.allclose(unpack(answer["map"], "<f4"), expected, atol=1e-6)
    default = client.post("/api/explain", data={"sample": "test-5"}).json()
    assert default["method"] == "grad_cam" and default["layer"] == "c3"
    assert default["class_index"] == int(explorer.run.probabilities[5].argmax())


@pytest.mark.parametrize("method, fields", [("gradient", {}), ("smoothgrad", {"samples": "4"}),
                                            ("occlusion", {"patch": "7", "stride": "7"})])
def test_explain_methods_match_the_library(client, explorer, method, fields):
    pixels = explorer.run.images[5].astype(np.float32) * explorer.scale
    answer = client.post("/api/explain", data={"sample": "test-5", "method": method, **fields}).json()
    options = {key: int(value) for key, value in fields.items()}
    expected = explain.explain(explorer.model, pixels, method=method, **options).map
    assert answer["map"]["shape"] == [28, 28] and np.allclose(unpack(answer["map"], "<f4"), expected, atol=1e-5)


@pytest.mark.parametrize("fields, status, message", [
    ({"method": "gradcam"}, 400, "`method`: unknown explanation method 'gradcam'. Did you mean 'grad_cam' or 'gradient'?"),
    ({"method": "gradient", "layer": "c1"}, 400, "`layer` does not apply to method 'gradient'; its options: none"),
    ({"method": "grad_cam", "layer": "flatten"}, 400, "grad_cam: layer 'flatten' (Flatten) has no spatial output"),
    ({"class_index": "7"}, 400, r"`class_index` must be"),
    ({"class_index": "two"}, 400, "`class_index` must be an integer. Received: class_index='two'"),
    ({"method": "smoothgrad", "samples": "1000"}, 400, "`samples` must be"),
])
def test_explain_refuses_bad_options(client, fields, status, message):
    assert message in error_of(client.post("/api/explain", data={"sample": "test-0", **fields}), status)


def test_occlusion_is_limited_in_windows():
    model = convnet.Sequential([layers.Input(shape=(72, 72, 1)), layers.Conv2D(2, 3), layers.GlobalMaxPooling2D(),
                                layers.Dense(2, activation="softmax")])
    explorer = Explorer(model)
    with pytest.raises(ValueError, match="occlusion with patch=1 and stride=1 would run the model on 5184 copies of "
                                         "the image, more than 4096; take a larger stride"):
        explorer.explain(explorer.sample("photo-china"), "occlusion", patch=1, stride=1)
    assert explorer.explain(explorer.sample("photo-china"), "occlusion", patch=2, stride=2)["map"]["shape"] == [72, 72]


def test_filters_are_the_layers_kernel(client, explorer):
    answer = client.get("/api/filters/c3?max_filters=5&max_channels=2").json()
    kernel = explorer.model.get_layer("c3").get_weights()[0]  # (5, 5, 6, 16)
    assert answer["shape"] == [5, 5, 6, 16] and answer["rgb"] is False
    assert np.array_equal(unpack(answer["kernel"], "<f4"), kernel[:, :, :2, :5])
    assert error_of(client.get("/api/filters/s2"), 400) == ("filters: layer 's2' (AveragePooling2D) is not a Conv2D "
                                                            "layer; layers that qualify: c1, c3, c5")
    assert "unknown layer 'nope'" in error_of(client.get("/api/filters/nope"), 400)
    assert "`max_filters` must be" in error_of(client.get("/api/filters/c1?max_filters=0"), 400)


def test_filters_and_receptive_fields_of_a_nested_layer(graph_client):
    answer = graph_client.get("/api/filters/block/inner").json()
    assert answer["layer"] == "block/inner" and answer["shape"] == [3, 3, 4, 4]
    field = graph_client.get("/api/receptive-field/block/inner?row=1&col=2").json()
    assert field["box"] == list(explain.receptive_field_box(graph_model(), "block/inner", (1, 2)))


@pytest.mark.parametrize("layer, row, col", [("c1", 0, 0), ("s2", 3, 5), ("c3", 9, 0), ("c5", 0, 0)])
def test_receptive_field_is_receptive_field_box(client, explorer, layer, row, col):
    answer = client.get(f"/api/receptive-field/{layer}?row={row}&col={col}").json()
    top, left, bottom, right = explain.receptive_field_box(explorer.model, layer, (row, col))
    assert answer["box"] == [top, left, bottom, right] and answer["size"] == [bottom - top, right - left]


def test_receptive_field_refusals(client):
    assert "`position` must lie in the 10x10 output of 'c3'" in error_of(
        client.get("/api/receptive-field/c3?row=10&col=0"), 400)
    assert error_of(client.get("/api/receptive-field/c3?row=1"), 400) == (
        "the query parameter `col` (an integer) is required")
    assert "unknown layer with feature maps 'f6'" in error_of(client.get("/api/receptive-field/f6?row=0&col=0"), 400)


def test_run_gives_curves_confusion_and_the_most_confident_mistakes(client, explorer, run_dir):
    import json
    answer = client.get("/api/run").json()
    assert answer["history"] == json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert answer["metrics"]["test_accuracy"] == metrics["test_accuracy"] and answer["missing"] == []
    confusion = np.array(answer["confusion"])
    labels = explorer.run.labels
    predicted = explorer.run.probabilities.argmax(axis=1)
    assert confusion.shape == (7, 7) and confusion.sum() == answer["test_images"] == 200
    assert np.array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=7))
    assert answer["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)  # the run's own 200 images
    mistakes = answer["mistakes"]
    assert 0 < len(mistakes) <= 24 and all(m["true"] != m["predicted"] for m in mistakes)
    confidences = [m["probability"] for m in mistakes]
    assert confidences == sorted(confidences, reverse=True)
    wrong = predicted != labels
    assert confidences[0] == pytest.approx(float(explorer.run.probabilities[wrong].max()))
    index = int(mistakes[0]["id"].removeprefix("test-"))
    assert labels[index] == mistakes[0]["true"] and predicted[index] == mistakes[0]["predicted"]


def test_run_without_a_run_folder_is_404(graph_client):
    assert error_of(graph_client.get("/api/run"), 404).startswith("no run: the explorer was started on a model file")


def test_samples_list_photos_and_test_images_by_id(client, explorer):
    answer = client.get("/api/samples?offset=10&limit=3").json()
    assert [item["id"] for item in answer["samples"]] == ["photo-china", "photo-flower", "test-10", "test-11",
                                                          "test-12"]
    assert answer["test_total"] == 200
    assert answer["samples"][2]["class_name"] == SHAPES[explorer.run.labels[10]]
    png = client.get("/api/samples/test-11.png")
    assert png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as image:
        assert np.array_equal(np.asarray(image), explorer.run.images[11][:, :, 0])
    assert "`limit` must be" in error_of(client.get("/api/samples?limit=100000"), 400)


@pytest.mark.parametrize("path", ["/api/samples/test-200.png", "/api/samples/photo-nope.png",
                                  "/api/samples/..%2F..%2Fetc%2Fpasswd.png", "/static/..%2Fapp.py",
                                  "/static/../app.py", "/static/%2Fetc%2Fpasswd", "/api/samples/%2Fetc%2Fpasswd.png",
                                  "/etc/passwd", "/../../etc/passwd", "/static/index.html%00.py"])
def test_no_request_reaches_a_file_of_the_server(client, path):
    error_of(client.get(path), 404)


@pytest.mark.parametrize("sample", ["../model.convnet", "/etc/passwd", "test-1e3", "photo-../../x", "model.convnet"])
def test_a_sample_is_an_id_never_a_path(client, sample):
    assert "no sample" in error_of(client.post("/api/predict", data={"sample": sample}), 404)


def test_the_page_and_its_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and 'data-testid="image-input"' in page.text and 'data-testid="top-class"' in page.text
    assert "http" not in re.sub(r"http://www\.w3\.org/2000/svg", "", page.text)  # nothing from elsewhere
    script = client.get("/static/explorer.js")
    assert script.headers["content-type"].startswith("text/javascript") and "fetch(" in script.text
    assert "https://" not in script.text and "http://" not in script.text.replace("http://www.w3.org/2000/svg", "")
    assert client.get("/static/explorer.css").headers["content-type"].startswith("text/css")
    assert "script-src 'self'" in page.headers["content-security-policy"]


def np_conv_same_or_valid(image: np.ndarray, kernel: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """The playground's reference, in NumPy: the kernel on each channel of image / 255, summed; TF's padding
    (SAME: pad_total = max((out - 1) * s + k - in, 0), before = pad_total // 2)."""
    x = image.astype(np.float64) / 255
    k = kernel.shape[0]
    pads = []
    for size in x.shape[:2]:
        out, _ = output_size(size, k, stride, padding)
        total = max((out - 1) * stride + k - size, 0) if padding == "SAME" else 0
        pads.append((total // 2, total - total // 2, out))
    padded = np.pad(x, (pads[0][:2], pads[1][:2], (0, 0)))
    out = np.zeros((pads[0][2], pads[1][2]))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            window = padded[i * stride:i * stride + k, j * stride:j * stride + k]  # (k, k, C)
            out[i, j] = (window * kernel[:, :, None]).sum()
    return out


@pytest.mark.parametrize("stride, padding", [(1, "SAME"), (2, "SAME"), (3, "VALID"), (7, "VALID")])
def test_playground_is_a_convolution_with_tensorflows_padding(stride, padding):
    rng = np.random.default_rng(stride)
    image = rng.integers(0, 256, (23, 17, 3), dtype=np.uint8)
    kernel = rng.normal(size=(7, 7)).astype(np.float32)
    result = apply_kernel(image, kernel, stride, padding.lower())
    expected = np_conv_same_or_valid(image, kernel, stride, padding)
    assert result.output.shape == expected.shape and np.allclose(result.output, expected, atol=1e-4)


def test_output_size_checks_its_arguments():
    assert output_size(5, 7, 1, "valid") == (0, "ceil((5 - 7 + 1) / 1) = 0")
    with pytest.raises(ValueError, match="`padding`: unknown padding 'full'"):
        output_size(5, 3, 1, "full")
    with pytest.raises(ValueError, match="`stride` must be"):
        output_size(5, 3, 0, "SAME")


def test_playground_endpoint_gives_the_output_and_its_size_formula(client, explorer):
    answer = client.post("/api/playground", json={"sample": "photo-china", "kernel": preset_kernel("horizontal")
                                                  .tolist(), "stride": 2, "padding": "SAME"}).json()
    assert answer["input"] == {"height": 427, "width": 640, "channels": 3}
    assert (answer["output"]["height"], answer["output"]["width"]) == (214, 320)
    assert answer["formula"] == {"height": "ceil(427 / 2) = 214", "width": "ceil(640 / 2) = 320"}
    valid = client.post("/api/playground", json={"stride": 3, "padding": "valid"}).json()
    assert valid["formula"]["height"] == "ceil((427 - 7 + 1) / 3) = 141" and valid["output"]["width"] == 212
    assert unpack(valid["output"]["pixels"], "uint8").shape == (141, 212)


@pytest.mark.parametrize("body, message", [
    ({"kernel": [[1] * 7] * 6}, "`kernel` must be 7x7 numbers (a list of 7 rows). Received shape (6, 7)"),
    ({"kernel": [["a"] * 7] * 7}, "`kernel` must be 7x7 numbers"),
    ({"stride": 8}, "`stride` must be"),
    ({"padding": "full"}, "`padding`: unknown padding 'full'"),
    ({"sample": "../x"}, "no sample"),
    ({"kernels": 1}, "unknown field 'kernels'; the fields: sample, kernel, stride, padding"),
])
def test_playground_refusals(client, body, message):
    response = client.post("/api/playground", json=body)
    assert message in error_of(response, 404 if "sample" in body else 400)


def test_bad_requests_get_4xx_and_an_error(client):
    assert error_of(client.post("/api/predict"), 415).startswith("send the image as multipart/form-data")
    assert error_of(client.post("/api/predict", data={}), 415)
    assert error_of(client.post("/api/predict", files={"other": ("a.txt", b"x")}), 400).startswith("send one image")
    both = client.post("/api/predict", data={"sample": "test-0"}, files={"image": ("a.png", b"x")})
    assert error_of(both, 400).startswith("send one image")
    assert error_of(client.post("/api/predict", files={"image": ("a.png", b"")}), 400) == (
        "the uploaded image is empty (0 bytes)")
    assert error_of(client.post("/api/predict", files={"image": ("notes.txt", b"hello")}), 400) == (
        "notes.txt: not an image Pillow can read (UnidentifiedImageError: no image format recognised)")
    truncated = png_bytes(np.zeros((20, 20), np.uint8))[:-30]
    assert "corrupt or truncated" in error_of(client.post("/api/predict", files={"image": ("t.png", truncated)}), 400)
    broken = client.post("/api/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert error_of(broken, 400).startswith("malformed form data")
    assert error_of(client.get("/api/predict"), 405) == "Method Not Allowed"
    assert error_of(client.get("/api/nothing"), 404) == "no such page or endpoint: /api/nothing"


def png_declaring(width: int, height: int) -> bytes:
    """A PNG file of a few bytes whose header declares width x height grayscale pixels (a decompression bomb's
    header: the decoder would allocate them all)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_uploads_are_limited_in_pixels_before_decoding(client):
    message = error_of(client.post("/api/predict", files={"image": ("bomb.png", png_declaring(6000, 6000))}), 400)
    assert message == ("bomb.png: the image declares 6000x6000 = 36000000 pixels, more than max_pixels=25000000 (a "
                       "possible decompression bomb); pass a larger max_pixels if you trust the file")
    huge = error_of(client.post("/api/predict", files={"image": ("big.png", png_declaring(60000, 60000))}), 400)
    assert huge.startswith("big.png: refused as a possible decompression bomb")


def test_uploads_are_limited_in_bytes(explorer):
    with TestClient(create_app(explorer, max_upload_bytes=4096)) as small:
        body = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        assert len(body) > 4096
        assert error_of(small.post("/api/predict", files={"image": ("big.png", body)}), 413).startswith(
            "the request is ")

        def chunks():  # no Content-Length: the limit holds while the body streams in
            for _ in range(10):
                yield b"x" * 1000
        streamed = small.post("/api/predict", content=chunks(), headers={"content-type": "multipart/form-data; b=x"})
        assert error_of(streamed, 413) == "the request is more than this server's limit of 4096 bytes"


def test_an_unexpected_failure_is_500_without_a_traceback(run_dir):
    broken = load_explorer(run_dir / "model.convnet", device="cpu")

    def fail() -> dict:
        raise RuntimeError("secret detail in /home/user/file.py")
    broken.model_info = fail  # type: ignore[method-assign]
    with TestClient(create_app(broken), raise_server_exceptions=False) as test_client:
        response = test_client.get("/api/model")
    assert error_of(response, 500) == "internal error; the server's log has the details"
    assert "secret" not in response.text


def test_host_header_is_checked_and_cors_stays_off(explorer):
    with TestClient(create_app(explorer, allowed_hosts=["127.0.0.1", "localhost"])) as test_client:
        rebound = test_client.get("/api/model", headers={"host": "attacker.example:8000"})
        assert "the Host header 'attacker.example:8000' is not one this server answers to" in error_of(rebound, 400)
        assert test_client.get("/api/model", headers={"host": "localhost:8000"}).status_code == 200
        cross = test_client.get("/api/model", headers={"host": "127.0.0.1:8000", "origin": "https://elsewhere.example"})
        assert cross.status_code == 200 and not any(h.startswith("access-control") for h in cross.headers)
        preflight = test_client.options("/api/predict", headers={"host": "127.0.0.1", "origin": "https://x.example",
                                                                 "access-control-request-method": "POST"})
        assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers


def test_no_pickle_and_no_path_from_a_request():
    folder = Path(convnet.__file__).parent / "explorer"
    source = "\n".join(path.read_text() for path in folder.glob("*.py"))
    assert "pickle" not in source and "torch.load" not in source and not re.search(r"(?<![.\w])eval\(", source)
    script = (folder / "static" / "explorer.js").read_text()
    assert "innerHTML" not in script and not re.search(r"(?<![.\w])eval\(|new Function", script)


def test_inference_runs_in_the_worker_thread_never_the_event_loop(run_dir):
    explorer = load_explorer(run_dir / "model.convnet", device="cpu")
    threads = []
    original = explorer.predict

    def predict(image, top=5):
        threads.append(threading.current_thread().name)
        return original(image, top)
    explorer.predict = predict  # type: ignore[method-assign]
    with TestClient(create_app(explorer)) as test_client:
        assert test_client.post("/api/predict", data={"sample": "photo-china"}).status_code == 200
    assert threads and threads[0].startswith("convnet-explorer")


def test_requests_beyond_max_pending_get_503(run_dir):
    import httpx
    explorer = load_explorer(run_dir / "model.convnet", device="cpu")
    release = threading.Event()
    original = explorer.model_info

    def slow_info() -> dict:
        release.wait(10)
        return original()
    explorer.model_info = slow_info  # type: ignore[method-assign]
    app = create_app(explorer, max_pending=2)

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            waiting = [asyncio.ensure_future(http.get("/api/model")) for _ in range(2)]
            await asyncio.sleep(0.2)
            refused = await http.get("/api/model")
            release.set()
            return [refused.status_code, refused.json()["error"][:5], *[(await w).status_code for w in waiting]]
    try:
        assert asyncio.run(scenario()) == [503, "busy:", 200, 200]
    finally:
        release.set()
        app.state.worker.close()


def test_load_explorer_refusals(tmp_path, run_dir):
    with pytest.raises(ValueError, match=r"explore takes a RUN_DIR, a MODEL.convnet file or --model PRESET \(one of"):
        load_explorer()
    with pytest.raises(ValueError, match="one of them"):
        load_explorer(run_dir, preset="seed")
    with pytest.raises(FileNotFoundError, match="no such run folder or model file"):
        load_explorer(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"not a run folder: it holds no model\.convnet"):
        load_explorer(tmp_path)
    with pytest.raises(ValueError, match=r"`--model`: unknown model preset 'sede'. Did you mean 'seed'\?"):
        load_explorer(preset="sede")
    dense = convnet.Sequential([layers.Input(shape=(4,)), layers.Dense(2)])
    with pytest.raises(ValueError, match=r"takes models of images \(H, W, C\) of a fixed size"):
        Explorer(dense)
    with pytest.raises(TypeError, match=r"`explorer` must be a convnet\.explorer\.Explorer\. Received: explorer=str"):
        create_app("model.convnet")  # type: ignore[arg-type]


def test_a_run_whose_dataset_is_missing_still_shows_its_curves(tmp_path, run_dir):
    import json
    import shutil
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(dataset="fashion-mnist", data_dir=str(tmp_path / "nowhere"))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").unlink()
    with pytest.warns(UserWarning, match="the run's test images are not available"):
        explorer = load_explorer(folder, device="cpu")
    with TestClient(create_app(explorer)) as test_client:
        answer = test_client.get("/api/run").json()
        assert answer["missing"] == ["metrics.json"] and answer["history"] and answer["confusion"] is None
        assert answer["dataset_error"] and test_client.get("/api/samples").json()["test_total"] == 0


def test_an_rgb_model_sees_rgb_and_its_first_filters_are_rgb():
    utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input(shape=(16, 16, 3)), layers.Conv2D(4, 3, name="first"),
                                layers.Conv2D(2, 3, name="second"), layers.GlobalMaxPooling2D(),
                                layers.Dense(2, activation="softmax")])
    explorer = Explorer(model)
    converted = explorer.predict(explorer.sample("photo-flower"))["input"]
    assert converted["converted"] == {"height": 16, "width": 16, "channels": 3}
    assert unpack(converted["pixels"], "uint8").shape == (16, 16, 3)
    assert explorer.filters("first")["rgb"] is True and explorer.filters("second")["rgb"] is False


def test_a_preset_is_marked_untrained():
    explorer = load_explorer(preset="lenet5")
    info = explorer.model_info()
    assert info["untrained"] is True and info["source"].startswith("preset lenet5") and info["class_names"] is None
    answer = explorer.predict(explorer.sample("photo-flower"))
    assert [item["class_name"] for item in answer["predictions"]] == [str(item["index"]) for item in answer["predictions"]]


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("[::1]", True), ("127.0.0.2", True), ("0.0.0.0", False),
                                            ("192.168.1.5", False), ("example.com", False)])
def test_is_loopback(host, loopback):
    assert explorer_server.is_loopback(host) is loopback


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_binds_where_told_and_warns_off_loopback(monkeypatch, capsys, explorer, host, warned):
    import uvicorn
    seen = {}

    def run(self, sockets=None):
        seen["address"] = sockets[0].getsockname()[0]
        seen["app"] = self.config.app
    monkeypatch.setattr(uvicorn.Server, "run", run)
    explorer_server.serve(explorer, host=host, port=0, open_browser=False)
    assert seen["address"] == host
    error = capsys.readouterr().err
    assert ("other machines can connect" in error) is warned


def test_serve_announces_the_url_and_opens_the_browser(monkeypatch, explorer):
    import webbrowser

    import uvicorn
    opened, announced = [], []

    def run(self, sockets=None):
        self.started = True
        time.sleep(0.3)  # the server "runs" while the announcing thread sees it started
    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(webbrowser, "open", opened.append)
    explorer_server.serve(explorer, port=0, announce=announced.append)
    assert len(announced) == 1 and opened == re.findall(r"http://127\.0\.0\.1:\d+/", announced[0])
    assert announced[0].startswith(f"convnet explore: {explorer.source} at ")


def test_bind_refuses_a_port_in_use():
    first = explorer_server.bind("127.0.0.1", 0)
    try:
        import socket
        assert first.proto == socket.IPPROTO_TCP  # so asyncio sets TCP_NODELAY on each connection
        port = first.getsockname()[1]
        with pytest.raises(ValueError, match=rf"cannot listen on 127.0.0.1 port {port}: .*pass another --port"):
            explorer_server.bind("127.0.0.1", port)
    finally:
        first.close()


@pytest.mark.parametrize("argv, message", [
    ([], "explore takes a RUN_DIR, a MODEL.convnet file or --model PRESET (one of them)"),
    (["x", "--model", "seed"], "one of them"),
    (["--model", "seed", "--port", "70000"], "--port must be in [0, 65535] (0 picks a free port). Received: 70000"),
    (["--model", "seed", "--threads", "0"], "--threads must be >= 1. Received: 0"),
    (["/no/such/run", "--no-browser"], "/no/such/run: no such run folder or model file"),
])
def test_cli_usage_errors(capsys, argv, message):
    assert cli_explore.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_registers_explore():
    import argparse
    parser = argparse.ArgumentParser(prog="convnet")
    cli_explore.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explore", "runs/x", "--port", "0", "--no-browser"])
    assert (args.target, args.host, args.port, args.no_browser, args.model) == ("runs/x", "127.0.0.1", 0, True, None)


def test_a_real_uvicorn_process_serves_the_api_and_stops_on_ctrl_c(run_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "convnet.cli.explore", str(run_dir / "model.convnet"), "--port", "0",
                                "--no-browser", "--device", "cpu", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", line)
            url = match.group(1) if match else None
        assert url, process.stderr.read() if process.poll() is not None else "no URL printed"
        with urllib.request.urlopen(url + "api/model", timeout=10) as response:
            assert b'"name":"lenet5"' in response.read()
        body = (b"--b\r\nContent-Disposition: form-data; name=\"sample\"\r\n\r\nphoto-china\r\n--b--\r\n")
        request = urllib.request.Request(url + "api/predict", data=body,
                                         headers={"content-type": "multipart/form-data; boundary=b"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and b'"predictions"' in response.read()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b'data-testid="image-input"' in response.read()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert out.strip().endswith("convnet explore: stopped") and "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_32_clients_for_20_seconds_without_a_failure_and_with_flat_memory():
    """benchmarks/explorer_load.py's load phase: 32 clients sending predict and feature-map requests back to back
    for 20 s to a real server process holding the seed CNN. Its latency figures are printed (run with -s)."""
    import importlib.util
    pytest.importorskip("httpx")
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "explorer_load.py"
    spec = importlib.util.spec_from_file_location("explorer_load", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run_benchmark(clients=32, seconds=20.0, runs=10)
    print(bench.report(figures))
    load = figures["load"]
    assert load["failures"] == [] and load["requests"] > 100
    assert {name: item["n"] > 0 for name, item in load["latency"].items()} == {"predict": True, "featuremaps": True}
    memory = load["memory_mb"]
    assert memory["last_quarter"] - memory["first_quarter"] < max(0.05 * memory["first_quarter"], 20), memory
    assert memory["max"] - memory["start"] < 100, memory
