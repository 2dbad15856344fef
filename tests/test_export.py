"""Exported models compute what `predict` computes: ONNX (through ONNX Runtime with its graph optimisations off
and fully on) and torch.export programs, for every registered layer (one graph with a branch per layer,
exported once), residual and concatenating graphs, strided SAME convolutions and pooling (asymmetric
padding), depth-wise max pooling, BatchNormalization in inference mode and augmentation layers (identity at
inference); every zoo preset under `-m slow`. Plus the bad input: a Lambda, an unknown format, an unwritable
folder, a foreign ONNX file, a disagreeing export: each a clear error and no file left behind.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import convnet
from convnet import layers, zoo
from convnet.export import ExportedModel, ExportError, verify

from .test_layers import EXAMPLES

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install \"convnet[export]\"")
pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install \"convnet[export]\"")

TOLERANCE = 1e-4
SHAPE = (6, 6, 4)
NOT_IN_A_GRAPH = {"InputLayer", "Lambda"}  # an InputLayer starts graphs; a Lambda has no export rule (tested below)


def library_layers():
    """convnet's registered layers (tests register their own classes too, which have no EXAMPLES entry)."""
    return [name for name in layers.list_layers() if name not in NOT_IN_A_GRAPH
            and layers.get_layer_class(name).__module__.startswith("convnet.")]


def every_layer_model():
    """One input, a branch per registered layer (merges take the input and a 1x1 convolution of it)."""
    convnet.utils.set_random_seed(0)
    inputs = convnet.Input(shape=SHAPE, name="images")
    other = layers.Conv2D(4, 1, name="other")(inputs)
    names, outputs = [], []
    for name in library_layers():
        layer = EXAMPLES[name]()
        layer.name = f"branch_{name.lower()}"
        layer.input_shape_arg = None
        outputs.append(layer([inputs, other] if getattr(layer, "multiple_inputs", False) else inputs))
        names.append(name)
    model = convnet.Model(inputs, outputs, name="every_layer")
    for layer in model.layers:  # BatchNormalization with statistics that are not the identity
        if isinstance(layer, layers.BatchNormalization):
            *affine_and_mean, var = layer.get_weights()  # (gamma, beta,) moving mean, moving variance
            layer.set_weights([w * 1.5 + 0.2 for w in affine_and_mean] + [var * 2 + 0.3])
    return model, names


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The every-layer graph, its outputs from predict, and its two exports run on the same images."""
    model, names = every_layer_model()
    folder = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, *SHAPE)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    runs = {}
    for path in (folder / "every.onnx", folder / "every.pt2"):
        model.export(path)
        runners = ([ExportedModel(path, optimize=False), ExportedModel(path, optimize=True)]
                   if path.suffix == ".onnx" else [ExportedModel(path)])
        runs[path.suffix] = [(runner.predict(x), runner.predict(x[:1])) for runner in runners]
    return names, expected, runs


@pytest.mark.parametrize("name", library_layers())
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_every_layer_exports_exactly(exported, name, suffix):
    names, expected, runs = exported
    index = names.index(name)
    for full, single in runs[suffix]:  # ONNX: optimisations off, then fully on
        np.testing.assert_allclose(full[index], expected[index], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(single[index], expected[index][:1], atol=TOLERANCE, rtol=0)


def residual_graph():
    convnet.utils.set_random_seed(2)
    inputs = convnet.Input(shape=(9, 9, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same")(inputs)  # odd size, stride 2: padding (0, 1)
    y = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(x))
    x = layers.Activation("relu")(layers.Add()([x, y]))
    pooled = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    averaged = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    x = layers.DepthMaxPool(2)(layers.Concatenate()([pooled, averaged]))
    x = layers.Dropout(0.5)(layers.Flatten()(x))
    return convnet.Model(inputs, layers.Dense(3, activation="softmax")(x), name="residual")


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_a_residual_concatenating_graph_exports_with_check(tmp_path, suffix):
    model = residual_graph()
    model.metadata["class_names"] = ["a", "b", "c"]
    report = model.export(tmp_path / f"model{suffix}", check=True)
    assert report["format"] == ("onnx" if suffix == ".onnx" else "torch") and report["max_difference"] <= TOLERANCE
    loaded = ExportedModel(tmp_path / f"model{suffix}")
    assert loaded.class_names == ["a", "b", "c"] and loaded.input_shapes == [(9, 9, 3)]
    assert loaded.metadata["convnet_version"] == convnet.__version__
    x = np.random.default_rng(3).random((5, 9, 9, 3), dtype=np.float32)
    probabilities = loaded.predict(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)  # what predict returns: probabilities
    np.testing.assert_allclose(probabilities, model.predict(x, verbose=0), atol=TOLERANCE)
    assert [p.name for p in tmp_path.iterdir()] == [f"model{suffix}"]  # no temporary file left


def test_onnx_file_is_opset_18_with_a_dynamic_batch_and_nhwc_input(tmp_path):
    model = residual_graph()
    model.export(tmp_path / "model.onnx")
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert max(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")) >= 18
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].dim_value and dims[0].dim_param and [d.dim_value for d in dims[1:]] == [9, 9, 3]
    assert {entry.key for entry in proto.metadata_props} >= {"convnet"}


def test_a_model_with_two_inputs_and_two_outputs_exports(tmp_path):
    a, b = convnet.Input(shape=(4, 4, 2)), convnet.Input(shape=(4, 4, 2))
    shared = layers.Conv2D(3, 3, padding="same")
    merged = layers.Subtract()([shared(a), shared(b)])
    model = convnet.Model([a, b], [layers.GlobalMaxPooling2D()(merged), layers.Flatten()(merged)])
    for suffix in (".onnx", ".pt2"):
        report = model.export(tmp_path / f"two{suffix}", check=True)
        assert report["max_difference"] <= TOLERANCE


def test_the_seed_cnn_exports_and_convnet_predict_runs_the_onnx_file(tmp_path, capsys):
    model = zoo.seed_cnn()
    model.metadata["class_names"] = [f"class {i}" for i in range(10)]
    model.save(tmp_path / "seed.convnet")
    from convnet.cli import main
    assert main(["export", str(tmp_path / "seed.convnet"), "--format", "onnx", "--output",
                 str(tmp_path / "seed.onnx"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "largest difference from predict" in out and str(tmp_path / "seed.onnx") in out
    from PIL import Image
    image = (np.random.default_rng(4).random((28, 28)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    assert main(["predict", str(tmp_path / "seed.convnet"), str(tmp_path / "image.png")]) == 0
    from_convnet = capsys.readouterr().out
    assert main(["predict", str(tmp_path / "seed.onnx"), str(tmp_path / "image.png")]) == 0
    from_onnx = capsys.readouterr().out
    lines = lambda text: [line.split()[:3] for line in text.splitlines()[1:]]  # rank, class, percent (rounded)
    assert lines(from_onnx) == lines(from_convnet) and from_onnx.splitlines()[0] == from_convnet.splitlines()[0]


# Bad input: clear errors, nothing written

def test_a_lambda_cannot_be_exported_and_nothing_is_written(tmp_path):
    inputs = convnet.Input(shape=(4,))
    model = convnet.Model(inputs, layers.Lambda(lambda t: t * 2, name="double")(inputs))
    with pytest.raises(ExportError, match=r"Lambda 'double' has no export rule: a Lambda holds Python code"):
        model.export(tmp_path / "lambda.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_custom_layer_needs_an_export_rule(tmp_path):
    class Doubling(layers.Layer):
        def call(self, x):
            return x * 2
    inputs = convnet.Input(shape=(4,))
    model = convnet.Model(inputs, Doubling(name="doubling")(inputs))
    with pytest.raises(ExportError, match=r"Doubling 'doubling' has no export rule: a custom layer exports once its "
                                          r"class declares `exportable = True`"):
        model.export(tmp_path / "custom.pt2")
    Doubling.exportable = True
    assert model.export(tmp_path / "custom.pt2", check=True)["max_difference"] == 0.0


def test_bad_formats_paths_and_foreign_files(tmp_path):
    model = residual_graph()
    with pytest.raises(ValueError, match=r"cannot tell the export format from '.*model.tflite': give format='onnx' or "
                                         r"'torch', or a path ending in .onnx or .pt2"):
        model.export(tmp_path / "model.tflite")
    with pytest.raises(ValueError, match=r"`format`: unknown format 'tflite'. Available: onnx, torch"):
        model.export(tmp_path / "model.onnx", format="tflite")
    with pytest.raises(ValueError, match=r"the folder .*missing.* does not exist"):
        model.export(tmp_path / "missing" / "model.onnx")
    with pytest.raises(TypeError, match=r"`path` must be a file path. Received: path=3"):
        model.export(3)
    foreign = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])]))
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ValueError, match=r"foreign.onnx: not exported by convnet \(no 'convnet' metadata\)"):
        ExportedModel(tmp_path / "foreign.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"junk.onnx: not a readable ONNX model"):
        ExportedModel(tmp_path / "junk.onnx")


def test_an_export_that_disagrees_with_predict_fails_loudly(tmp_path, monkeypatch):
    model = residual_graph()
    model.export(tmp_path / "model.pt2")
    head = model.get_layer("dense")
    with torch.no_grad():
        head.bias[0] += 2.0  # the model now differs from the file written before
    with pytest.raises(ExportError, match=r"the export of Model 'residual' disagrees with predict: largest difference "
                                          r"[0-9.e-]+ \(tolerance 0.0001\) on random images, batch 1"):
        verify(model, str(tmp_path / "model.pt2"))
    monkeypatch.setattr("convnet.export.api.write_program",
                        lambda model, path: open(path, "wb").write(b"broken"))
    with pytest.raises(ValueError, match=r"not a readable torch.export program"):
        model.export(tmp_path / "broken.pt2", check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]  # the failed export left nothing


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.list_models())
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_every_zoo_preset_exports_exactly(tmp_path, name, suffix):
    model = zoo.get_model(name)
    report = model.export(tmp_path / f"{name}{suffix}", check=True)
    assert report["max_difference"] <= TOLERANCE, report
    assert os.path.getsize(tmp_path / f"{name}{suffix}") > 4 * model.count_params()  # float32 weights are in it


def test_without_the_export_extra_the_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    import importlib
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: (_ for _ in ()).throw(ImportError(name)) if name == "onnx" else real(name, *a))
    residual_graph().save(tmp_path / "model.convnet")
    from convnet.cli import main
    assert main(["export", str(tmp_path / "model.convnet"), "--output", str(tmp_path / "model.onnx")]) == 2
    assert "exporting to or running ONNX needs the 'onnx' package: pip install \"convnet[export]\"" in \
        capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.convnet"]
