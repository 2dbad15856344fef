"""Inspection on any model, not only a stack: Grad-CAM, saliency, occlusion, feature maps, top activations,
receptive fields, filters, the report and the `convnet summary | explain | featuremaps | filters | report`
commands on functional graphs (a residual block, a branch with a shared layer and Concatenate), nested
models, and the errors for models with several inputs or outputs.

References: Grad-CAM written out with torch.autograd on the same layers wired by hand; feature maps against
Keras's recipe, a feature-extraction `Model(model.input, [layer.output, ...])`; receptive fields of a nested
model's layers against the same layers in one flat stack; a Sequential against the same stack built as a
graph. Under `-m keras`, the branch graph against real Keras 3 (feature extraction and Grad-CAM).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import convnet
from convnet import explain, layers, utils, viz
from convnet.cli import main
from convnet.inspection.explain import layer_rows

SIZE = 12


def image(seed: int = 0, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((SIZE, SIZE, channels), dtype=np.float32)


def residual_model() -> convnet.Model:
    """Conv2D -> Conv2D -> Conv2D + skip (Add) -> ReLU -> max pooling -> Dense softmax."""
    utils.set_random_seed(1)
    inputs = convnet.Input(shape=(SIZE, SIZE, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(4, 3, padding="same", activation="relu", name="block_conv1")(x)
    y = layers.Conv2D(4, 3, padding="same", name="block_conv2")(y)
    x = layers.Activation("relu", name="block_out")(layers.Add(name="block_add")([x, y]))
    x = layers.Flatten(name="flatten")(layers.MaxPooling2D(2, name="pool")(x))
    return convnet.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x), name="residual")


def residual_by_hand(model: convnet.Model, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every layer's output and the logits of `residual_model`, its layers wired by hand (no graph runner)."""
    get = model.get_layer
    out = {"stem": get("stem")(x)}
    out["block_conv1"] = get("block_conv1")(out["stem"])
    out["block_conv2"] = get("block_conv2")(out["block_conv1"])
    out["block_add"] = out["stem"] + out["block_conv2"]
    out["block_out"] = torch.relu(out["block_add"])
    out["pool"] = get("pool")(out["block_out"])
    logits = get("head").pre_activation(out["pool"].reshape(1, -1))  # NHWC flattened as Keras: (1, h * w * K)
    return out, logits


def branch_model() -> tuple[convnet.Model, object]:
    """Two branches through one shared Conv2D, concatenated second call first: the graph runs the shared
    layer's second call before its first. Returns the model and the second call's symbolic output."""
    utils.set_random_seed(2)
    inputs = convnet.Input(shape=(SIZE, SIZE, 1), name="image")
    left = layers.Conv2D(3, 3, padding="same", activation="relu", name="left")(inputs)
    right = layers.Conv2D(3, 5, padding="same", activation="relu", name="right")(inputs)
    shared = layers.Conv2D(4, 3, padding="same", name="shared")
    first, second = shared(left), shared(right)
    x = layers.Concatenate(name="merged")([second, first])
    x = layers.GlobalAveragePooling2D(name="gap")(layers.MaxPooling2D(2, name="pool")(x))
    return convnet.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x), name="branch"), second


def branch_by_hand(model: convnet.Model, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    get = model.get_layer
    left, right = get("left")(x), get("right")(x)
    first, second = get("shared")(left), get("shared")(right)
    merged = torch.cat([second, first], dim=-1)
    logits = get("head").pre_activation(get("pool")(merged).mean(dim=(1, 2)))
    return {"left": left, "right": right, "shared": first, "merged": merged}, logits


def nested_model(call_twice: bool = False, stride: int = 1) -> convnet.Model:
    """A stem Conv2D (of `stride`), then a nested Sequential backbone (conv, pool, conv), global pooling and a
    softmax head."""
    utils.set_random_seed(3)
    backbone = convnet.Sequential([layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
                                   layers.MaxPooling2D(2, name="p"), layers.Conv2D(4, 3, name="c2")], name="backbone")
    inputs = convnet.Input(shape=(SIZE, SIZE, 1), name="image")
    x = layers.Conv2D(3, 3, strides=stride, padding="same", activation="relu", name="stem")(inputs)
    features = backbone(x)
    if call_twice:
        features = layers.Add(name="both")([features, backbone(layers.Conv2D(3, 1, name="side")(x))])
    x = layers.GlobalAveragePooling2D(name="gap")(features)
    return convnet.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x), name="nested")


def grad_cam_by_hand(maps: torch.Tensor, logits: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM from a layer's maps (1, h, w, K) and the logits computed from them: d logit / d maps, mean-pooled
    per channel, weighted sum, ReLU, bilinear upsampling to the image, divided by the max."""
    (gradient,) = torch.autograd.grad(logits[0, class_index], maps, retain_graph=True)
    cam = torch.relu((gradient.mean(dim=(1, 2), keepdim=True) * maps).sum(-1))[None]  # (1, 1, h, w)
    cam = torch.nn.functional.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]
    return (cam / cam.max() if cam.max() > 0 else cam).detach().numpy()  # no evidence for the class: zeros


def extracted(model: convnet.Model, names: list[str], picture: np.ndarray) -> list[np.ndarray]:
    """Keras's feature extraction: `Model(model.input, [layer.output for ...]).predict(...)`, one image."""
    tensors = [model.get_layer(name).output for name in names]
    outputs = convnet.Model(model.input, tensors if len(tensors) > 1 else tensors[0]).predict(picture[None], verbose=0)
    return [array[0] for array in (outputs if len(tensors) > 1 else [outputs])]


# Grad-CAM inside a residual block, and through a branch

@pytest.mark.parametrize("layer", ["stem", "block_conv1", "block_conv2", "block_add", "block_out", "pool"])
def test_grad_cam_inside_a_residual_block_matches_a_hand_computation(layer):
    model = residual_model()
    picture = image(4)
    outputs, logits = residual_by_hand(model, torch.from_numpy(picture[None]))
    for class_index in (0, 2, None):
        expected = grad_cam_by_hand(outputs[layer], logits, int(logits.argmax()) if class_index is None else class_index)
        np.testing.assert_allclose(explain.grad_cam(model, picture, layer=layer, class_index=class_index), expected,
                                   atol=1e-5)


def test_grad_cam_defaults_to_the_last_conv_of_the_graph_and_the_maps_differ_by_layer():
    model = residual_model()
    picture = image(4)
    assert explain.default_cam_layer(model) is model.get_layer("block_conv2")
    np.testing.assert_array_equal(explain.grad_cam(model, picture), explain.grad_cam(model, picture, "block_conv2"))
    assert not np.allclose(explain.grad_cam(model, picture, "block_add", class_index=0),
                           explain.grad_cam(model, picture, "block_conv2", class_index=0))


@pytest.mark.parametrize("layer", ["left", "right", "shared", "merged"])
def test_grad_cam_through_a_branch_reads_the_shared_layers_first_call(layer):
    model, _ = branch_model()
    picture = image(5)
    outputs, logits = branch_by_hand(model, torch.from_numpy(picture[None]))
    np.testing.assert_allclose(explain.grad_cam(model, picture, layer=layer, class_index=1),
                               grad_cam_by_hand(outputs[layer], logits, 1), atol=1e-5)


def test_saliency_smoothgrad_and_occlusion_on_a_graph():
    model = residual_model()
    picture = image(6)
    x = torch.from_numpy(picture[None]).requires_grad_(True)
    logits = residual_by_hand(model, x)[1]
    (gradient,) = torch.autograd.grad(logits[0, 1], x)
    np.testing.assert_allclose(explain.saliency(model, picture, class_index=1), gradient[0].abs().amax(-1).numpy(),
                               atol=1e-6)
    smooth = explain.saliency(model, picture, method="smoothgrad", class_index=1, samples=3)
    assert smooth.shape == (SIZE, SIZE) and (smooth >= 0).all() and smooth.max() > 0
    probability = lambda pixels: float(model.predict(pixels[None], verbose=0)[0, 1])
    drop = explain.occlusion(model, picture, patch=6, stride=6, class_index=1)
    hidden = picture.copy()
    hidden[:6, 6:] = 0
    np.testing.assert_allclose(drop[0, 6], probability(picture) - probability(hidden), atol=1e-6)
    result = explain.explain(model, picture, method="grad_cam", layer="block_add")
    assert result.class_index == int(model.predict(picture[None], verbose=0).argmax())


# Feature maps: Keras's feature extraction

def test_feature_maps_of_every_spatial_layer_equal_a_feature_extraction_model():
    for model in (residual_model(), branch_model()[0]):
        names = explain.spatial_layers(model)
        picture = image(7)
        maps = explain.feature_maps(model, picture, layers=names)
        assert list(maps) == names
        for name, expected in zip(names, extracted(model, names, picture)):
            np.testing.assert_allclose(maps[name], expected, atol=1e-6, err_msg=name)
    assert explain.spatial_layers(residual_model()) == ["stem", "block_conv1", "block_conv2", "block_add",
                                                        "block_out", "pool"]


def test_a_shared_layer_reports_the_call_layer_output_names_not_the_first_to_run():
    model, second = branch_model()
    picture = image(8)
    maps = explain.feature_maps(model, picture, layers="shared")
    first_call = extracted(model, ["shared"], picture)[0]
    second_call = convnet.Model(model.input, second).predict(picture[None], verbose=0)[0]
    np.testing.assert_allclose(maps["shared"], first_call, atol=1e-6)
    assert not np.allclose(maps["shared"], second_call, atol=1e-3)  # the graph runs this call first
    assert model.get_layer("shared").output is not second


def test_a_sequential_and_the_same_stack_as_a_graph_give_identical_numbers():
    def stack(functional: bool):
        utils.set_random_seed(9)
        parts = [layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"), layers.MaxPooling2D(2, name="p"),
                 layers.Conv2D(5, 3, padding="same", activation="relu", name="c2"), layers.Flatten(name="f"),
                 layers.Dense(3, activation="softmax", name="out")]
        if not functional:
            return convnet.Sequential([layers.Input(shape=(SIZE, SIZE, 1)), *parts])
        x = inputs = convnet.Input(shape=(SIZE, SIZE, 1))
        for part in parts:
            x = part(x)
        return convnet.Model(inputs, x)
    sequential, graph = stack(False), stack(True)
    graph.set_weights(sequential.get_weights())
    picture, images = image(10), np.random.default_rng(11).random((6, SIZE, SIZE, 1), dtype=np.float32)
    for layer in ("c1", "p", "c2"):
        np.testing.assert_array_equal(explain.grad_cam(sequential, picture, layer), explain.grad_cam(graph, picture, layer))
        np.testing.assert_array_equal(explain.feature_maps(sequential, picture, layer)[layer],
                                      explain.feature_maps(graph, picture, layer)[layer])
        assert explain.receptive_field_box(sequential, layer, (1, 2)) == explain.receptive_field_box(graph, layer, (1, 2))
    np.testing.assert_array_equal(explain.saliency(sequential, picture), explain.saliency(graph, picture))
    np.testing.assert_array_equal(explain.occlusion(sequential, picture), explain.occlusion(graph, picture))
    ours, theirs = (explain.top_activations(m, "c2", 1, images, k=3) for m in (sequential, graph))
    np.testing.assert_array_equal(ours.patches, theirs.patches)
    np.testing.assert_array_equal(ours.boxes, theirs.boxes)


# Receptive fields and top activations through the graph

def test_receptive_fields_come_from_the_graph_table_largest_over_paths():
    model = residual_model()
    rows = layer_rows(model)
    assert rows["block_add"]["receptive_field"] == (7, 7)  # the long path: 3 convs of 3x3; the skip sees 3x3
    assert rows["pool"]["receptive_field"] == (8, 8) and rows["pool"]["jump"] == (2, 2)
    assert explain.receptive_field_box(model, "block_add", (0, 0)) == (-3, -3, 4, 4)
    assert explain.receptive_field_box(model, "pool", (2, 3)) == (1, 3, 9, 11)  # centre 4.5, 6.5
    images = np.random.default_rng(12).random((5, SIZE, SIZE, 1), dtype=np.float32)
    top = explain.top_activations(model, "block_out", 2, images, k=2)
    maps = explain.feature_maps(model, images[top.indices[0]], "block_out")["block_out"][..., 2]
    assert top.scores[0] == pytest.approx(float(maps.max()))
    assert tuple(top.positions[0]) == np.unravel_index(maps.argmax(), maps.shape)
    assert tuple(top.boxes[0]) == explain.receptive_field_box(model, "block_out", tuple(top.positions[0]))
    assert top.patches.shape == (2, 7, 7, 1)


# Nested models: their layers are named "nested/layer"

def test_nested_layers_are_listed_under_the_nested_models_name():
    model = nested_model()
    assert explain.spatial_layers(model) == ["stem", "backbone", "backbone/c1", "backbone/p", "backbone/c2"]
    assert explain.layer_path(model, model.get_layer("backbone").get_layer("c1")) == "backbone/c1"
    assert [layer.name for layer in explain.conv_layers(model, "x")] == ["stem", "c1", "c2"]
    assert explain.default_cam_layer(model) is model.get_layer("backbone").get_layer("c2")
    rows = layer_rows(model)
    assert [name for name in rows] == ["image", "stem", "backbone", "backbone/c1", "backbone/p", "backbone/c2", "gap",
                                       "head"]
    assert rows["backbone/c1"]["nested_in"] == "backbone" and rows["stem"]["nested_in"] is None


def test_nested_feature_maps_and_grad_cam_match_the_layers_wired_by_hand():
    model = nested_model()
    backbone = model.get_layer("backbone")
    picture = image(13)
    x = torch.from_numpy(picture[None])
    stem = model.get_layer("stem")(x)
    c1 = backbone.get_layer("c1")(stem)
    c2 = backbone.get_layer("c2")(backbone.get_layer("p")(c1))
    logits = model.get_layer("head").pre_activation(c2.mean(dim=(1, 2)))
    maps = explain.feature_maps(model, picture, layers=explain.spatial_layers(model))
    np.testing.assert_allclose(maps["backbone/c1"], c1[0].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(maps["backbone/c2"], c2[0].detach().numpy(), atol=1e-6)
    np.testing.assert_array_equal(maps["backbone"], maps["backbone/c2"])  # the nested model's output is c2's
    for layer, tensor in (("backbone/c1", c1), ("backbone/c2", c2), ("stem", stem)):
        np.testing.assert_allclose(explain.grad_cam(model, picture, layer=layer, class_index=2),
                                   grad_cam_by_hand(tensor, logits, 2), atol=1e-5, err_msg=layer)
    np.testing.assert_allclose(explain.grad_cam(model, picture, "backbone", class_index=2),
                               explain.grad_cam(model, picture, "backbone/c2", class_index=2), atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_nested_receptive_fields_equal_the_same_layers_in_one_stack(stride):
    model = nested_model(stride=stride)
    flat = convnet.Sequential([layers.Input(shape=(SIZE, SIZE, 1)),
                               layers.Conv2D(3, 3, strides=stride, padding="same", name="stem"),
                               layers.Conv2D(4, 3, padding="same", name="c1"), layers.MaxPooling2D(2, name="p"),
                               layers.Conv2D(4, 3, name="c2")])
    rows, expected = layer_rows(model), {row["name"]: row for row in flat.layer_table()}
    for name in ("c1", "p", "c2"):
        for key in ("receptive_field", "jump", "start", "output_shape"):
            assert rows[f"backbone/{name}"][key] == expected[name][key], (name, key)
    assert rows["backbone"]["receptive_field"] == expected["c2"]["receptive_field"]  # the nested model's own field
    assert rows["backbone/c2"]["receptive_field"] == ((10, 10) if stride == 1 else (17, 17))  # 3 + 2 * 2 + 1 * 2 + 2 * 4
    images = np.random.default_rng(14).random((4, SIZE, SIZE, 1), dtype=np.float32)
    top = explain.top_activations(model, "backbone/c2", 0, images, k=2)
    assert top.layer == "backbone/c2" and top.patches.shape == (2, *expected["c2"]["receptive_field"], 1)
    assert tuple(top.boxes[1]) == explain.receptive_field_box(model, "backbone/c2", tuple(top.positions[1]))


def test_a_nested_model_called_twice_is_inspected_by_its_output():
    model = nested_model(call_twice=True)
    picture = image(15)
    first = model.get_layer("backbone")(model.get_layer("stem")(torch.from_numpy(picture[None])))  # its first call
    np.testing.assert_allclose(explain.feature_maps(model, picture, "backbone")["backbone"], first[0].detach().numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match=r"layer 'backbone/c1' runs 2 times in one forward pass of nested \(a nested "
                                         r"model or a layer called more than once\), so its maps are ambiguous; "
                                         r"inspect the nested model's output \('backbone'\) instead"):
        explain.grad_cam(model, picture, "backbone/c1")


def test_a_nested_classifier_ending_the_graph_gives_its_logits_and_probabilities():
    utils.set_random_seed(20)
    classifier = convnet.Sequential([layers.GlobalAveragePooling2D(name="gap"),
                                     layers.Dense(3, activation="softmax", name="probs")], name="classifier")
    inputs = convnet.Input(shape=(SIZE, SIZE, 1))
    model = convnet.Model(inputs, classifier(layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)))
    picture = image(21)
    maps = model.get_layer("conv")(torch.from_numpy(picture[None]))
    logits = classifier.get_layer("probs").pre_activation(maps.mean(dim=(1, 2)))  # before the nested softmax
    np.testing.assert_allclose(explain.grad_cam(model, picture, class_index=0), grad_cam_by_hand(maps, logits, 0),
                               atol=1e-5)
    result = explain.explain(model, picture, method="occlusion")
    assert result.probability == pytest.approx(float(model.predict(picture[None], verbose=0).max()), abs=1e-6)


def test_plots_of_nested_layers_name_them_by_path():
    model = nested_model()
    figure = viz.plot_feature_maps(model, image(16), layer=["backbone/c1", "stem"])
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:3] == ["stem / map 0", "stem / map 1", "stem / map 2"] and "backbone/c1 / map 3" in titles
    assert viz.plot_filters(model, "backbone/c2").get_suptitle().startswith("backbone/c2: filters 0-3 of 4")
    assert viz.plot_filters(model).get_suptitle().startswith("stem: 3 of 3 filters (3x3x1)")
    field = viz.plot_receptive_field(model, "backbone/c2", (0, 0))
    assert field.axes[0].get_title().startswith("backbone/c2 unit (0, 0): 10x10 field")


# Models explanations cannot take

def two_input_model() -> convnet.Model:
    a, b = convnet.Input(shape=(SIZE, SIZE, 1), name="a"), convnet.Input(shape=(SIZE, SIZE, 1), name="b")
    x = layers.Conv2D(2, 3, name="conv")(layers.Concatenate()([a, b]))
    return convnet.Model([a, b], layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x)), name="pair")


@pytest.mark.parametrize("call", [
    lambda m, x: explain.grad_cam(m, x),
    lambda m, x: explain.saliency(m, x),
    lambda m, x: explain.occlusion(m, x),
    lambda m, x: explain.explain(m, x, method="gradient"),
    lambda m, x: explain.feature_maps(m, x, "conv"),
    lambda m, x: explain.top_activations(m, "conv", 0, x[None]),
    lambda m, x: explain.receptive_field_box(m, "conv", (0, 0)),
    lambda m, x: viz.plot_feature_maps(m, x),
])
def test_a_model_with_two_inputs_is_refused_naming_them(call):
    with pytest.raises(ValueError, match=r"^Model 'pair' takes 2 inputs \('a', 'b'\); explanations and feature maps "
                                         r"look at one image, so they take models with one input$"):
        call(two_input_model(), image())


def test_filters_need_no_input_and_several_outputs_need_one_for_a_class_score():
    assert viz.plot_filters(two_input_model()).get_suptitle().startswith("conv: filters 0-1 of 2")
    inputs = convnet.Input(shape=(SIZE, SIZE, 1))
    x = layers.Conv2D(2, 3, name="conv")(inputs)
    pooled = layers.GlobalAveragePooling2D()(x)
    model = convnet.Model(inputs, [layers.Dense(2, name="a")(pooled), layers.Dense(3, name="b")(pooled)], name="heads")
    assert explain.feature_maps(model, image())["conv"].shape == (10, 10, 2)
    for call in (explain.grad_cam, explain.saliency, explain.occlusion, explain.explain):
        with pytest.raises(ValueError, match=r"needs a classifier with one output \(N, classes\); Model 'heads' has 2 "
                                             r"outputs"):
            call(model, image())


@pytest.mark.parametrize("call, error, message", [
    (lambda m: explain.grad_cam(m, image(), layer="image"), ValueError,
     r"^grad_cam: layer 'image' \(InputLayer\) is the model's input \(the image itself\), not a layer that computes; "
     r"layers that qualify: stem, block_conv1, block_conv2, block_add, block_out, pool$"),
    (lambda m: explain.grad_cam(m, image(), layer=0), ValueError, r"layer 'image' \(InputLayer\) is the model's input"),
    (lambda m: explain.grad_cam(m, image(), layer="flatten"), ValueError,
     r"grad_cam: layer 'flatten' \(Flatten\) has no spatial output \(it outputs \(None, 144\)\)"),
    (lambda m: explain.feature_maps(m, image(), layers="block_ad"), ValueError,
     r"`layer`: unknown layer 'block_ad'. Did you mean 'block_add'"),
    (lambda m: explain.grad_cam(m, image(), layer=layers.Conv2D(2, 3, name="elsewhere")), ValueError,
     r"`layer` Conv2D 'elsewhere' is not a layer of residual; its layers are image, stem, block_conv1"),
    (lambda m: explain.grad_cam(nested_model(), image(), layer="backbone/c3"), ValueError,
     r"unknown layer 'backbone/c3'. Did you mean 'backbone/c2' or 'backbone/c1'"),
    (lambda m: explain.check_model(convnet.Sequential([layers.Conv2D(2, 3)])), ValueError,
     r"sequential: the model is not built or has no layers"),
    (lambda m: explain.check_model(m.get_layer("stem")), TypeError,
     r"`model` must be a convnet model \(a Sequential or a functional Model\). Received: model=Conv2D"),
])
def test_bad_layers_and_models(call, error, message):
    with pytest.raises(error, match=message):
        call(residual_model())


# The command line on saved graphs

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The residual and nested models saved, and a 12x12 grayscale PNG."""
    folder = tmp_path_factory.mktemp("graphs")
    residual_model().save(folder / "residual.convnet")
    nested_model().save(folder / "nested.convnet")
    Image.fromarray((image(17)[:, :, 0] * 255).astype(np.uint8)).save(folder / "picture.png")
    return folder


def test_convnet_summary_of_a_saved_graph_as_a_real_subprocess(saved):
    run = subprocess.run([sys.executable, "-m", "convnet", "summary", str(saved / "residual.convnet")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == 'Model: "residual"'
    assert "Connected to" in lines[2]
    block_add = next(line for line in lines if "block_add (Add)" in line)
    assert "stem[0][0], block_conv2[0][0]" in block_add and "7x7" in block_add
    assert f" Total params: {residual_model().count_params():,} " in run.stdout


def test_explain_featuremaps_and_filters_commands_take_saved_graphs(saved, tmp_path, capsys):
    model_file, picture = str(saved / "residual.convnet"), str(saved / "picture.png")
    assert main(["explain", model_file, picture, "--out", str(tmp_path), "--layer", "block_add"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("with gradcam at layer block_add") and lines[-1] == str(tmp_path / "picture-gradcam.png")
    assert main(["explain", model_file, picture, "--out", str(tmp_path)]) == 0
    assert "at layer block_conv2" in capsys.readouterr().out
    assert main(["featuremaps", picture, "--model", model_file, "--out", str(tmp_path)]) == 0
    written = capsys.readouterr().out.splitlines()
    assert written == [str(tmp_path / f"picture-{name}.png") for name in ("stem", "block_conv1", "block_conv2")]
    nested_file = str(saved / "nested.convnet")
    assert main(["featuremaps", picture, "--model", nested_file, "--layer", "backbone/c1", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "picture-backbone-c1.png")]
    assert main(["filters", nested_file, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Showing stem, the first Conv2D layer; the others: backbone/c1, backbone/c2 (pick with --layer)"
    assert out[1] == str(tmp_path / "nested-stem-filters.png")
    assert main(["explain", nested_file, picture, "--layer", "backbone/c2", "--out", str(tmp_path)]) == 0
    assert "at layer backbone/c2" in capsys.readouterr().out
    assert main(["featuremaps", picture, "--model", model_file, "--layer", "flatten"]) == 2
    assert capsys.readouterr().err.startswith("convnet featuremaps: error: featuremaps: layer 'flatten' (Flatten) has no "
                                              "spatial output (it outputs (None, 144)); layers that qualify: stem, ")


def test_commands_refuse_a_saved_model_with_two_inputs_in_one_line(tmp_path, saved, capsys):
    two_input_model().save(tmp_path / "pair.convnet")
    assert main(["explain", str(tmp_path / "pair.convnet"), str(saved / "picture.png")]) == 2
    assert capsys.readouterr().err == ("convnet explain: error: Model 'pair' takes 2 inputs ('a', 'b'); explanations "
                                       "and feature maps look at one image, so they take models with one input\n")
    assert main(["filters", str(tmp_path / "pair.convnet"), "--out", str(tmp_path)]) == 0  # kernels need no image
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "pair-conv-filters.png")]


def shapes_run(folder) -> str:
    """A finished run folder by hand: the nested graph (28x28x1, 7 classes) on 30 test images of `shapes`."""
    from dataclasses import asdict

    from convnet.runs.config import TrainConfig
    utils.set_random_seed(18)
    backbone = convnet.Sequential([layers.Conv2D(4, 3, activation="relu", name="c1"), layers.MaxPooling2D(2, name="p")],
                                  name="backbone")
    inputs = convnet.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(3, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.Add(name="skip")([x, layers.Conv2D(3, 1, name="project")(x)])
    x = layers.GlobalAveragePooling2D(name="gap")(backbone(x))
    convnet.Model(inputs, layers.Dense(7, activation="softmax", name="head")(x), name="graph").save(
        folder / "model.convnet")
    (folder / "config.json").write_text(json.dumps(asdict(TrainConfig(dataset="shapes", test_limit=30, epochs=1))))
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": 0.1, "test_images": 30, "epochs_run": 1}))
    (folder / "history.json").write_text(json.dumps({"loss": [1.9], "accuracy": [0.2]}))
    return str(folder)


def check_report_page(path) -> None:
    """The layer table of `shapes_run`'s model on the page: Keras's "Connected to" column, the nested model's
    layers under its name with fields in the outer input's pixels, and a total counting each parameter once."""
    from tests.test_report import Page
    text = path.read_text(encoding="utf-8")
    headers, *rows, total = Page(text).tables["summary"][1]
    assert headers == ["Layer", "Type", "Output shape", "Params", "MACs", "Receptive field", "Jump", "Connected to"]
    by_name = {row[0]: row for row in rows}
    assert list(by_name) == ["image", "stem", "project", "skip", "backbone", "backbone/c1", "backbone/p", "gap", "head"]
    assert by_name["skip"][7] == "stem[0][0], project[0][0]"
    assert by_name["backbone/c1"][1:4] == ["Conv2D", "(None, 26, 26, 4)", "112"]  # 3 * 9 * 4 + 4 parameters
    assert by_name["backbone/c1"][5:7] == ["5x5", "1x1"] and by_name["backbone/p"][5:7] == ["6x6", "2x2"]
    assert by_name["backbone"][5:7] == ["6x6", "2x2"]
    assert total[3] == f"{sum(int(row[3].replace(',', '')) for name, row in by_name.items() if '/' not in name):,}"
    assert "Rows named nested/layer are the layers of the nested model backbone, listed under it" in text


def test_report_of_a_run_with_a_graph(tmp_path, capsys):
    run_dir = shapes_run(tmp_path)
    assert main(["report", run_dir, "--out", str(tmp_path / "out"), "--device", "cpu", "--limit", "10"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "out" / "report.html")
    check_report_page(tmp_path / "out" / "report.html")


@pytest.mark.slow
def test_convnet_report_on_a_saved_graph_as_a_real_subprocess(tmp_path):
    run_dir = shapes_run(tmp_path)
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "MPLBACKEND")}
    run = subprocess.run([sys.executable, "-m", "convnet", "report", run_dir, "--out", str(tmp_path / "out"),
                          "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == str(tmp_path / "out" / "report.html")
    check_report_page(tmp_path / "out" / "report.html")


# Against real Keras 3 (-m keras): the branch graph's feature extraction and Grad-CAM (Keras's recipe)

@pytest.mark.keras
def test_feature_maps_and_grad_cam_of_a_graph_with_a_shared_layer_match_keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Grad-CAM's reference uses tf.GradientTape (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf
    model, _ = branch_model()
    k = keras.layers
    inputs = keras.Input(shape=(SIZE, SIZE, 1), name="image")
    left = k.Conv2D(3, 3, padding="same", activation="relu", name="left")(inputs)
    right = k.Conv2D(3, 5, padding="same", activation="relu", name="right")(inputs)
    shared = k.Conv2D(4, 3, padding="same", name="shared")
    first, second = shared(left), shared(right)
    x = k.Concatenate(name="merged")([second, first])
    x = k.GlobalAveragePooling2D(name="gap")(k.MaxPooling2D(2, name="pool")(x))
    keras_model = keras.Model(inputs, k.Dense(3, activation="softmax", name="head")(x))
    for layer in model.layers:
        if layer.get_weights():
            keras_model.get_layer(layer.name).set_weights(layer.get_weights())
    picture = image(19)
    np.testing.assert_allclose(model.predict(picture[None], verbose=0), keras_model.predict(picture[None], verbose=0),
                               atol=1e-5)
    names = explain.spatial_layers(model)
    assert names == [layer.name for layer in keras_model.layers if len(layer.output.shape) == 4][1:]  # Keras's order
    extractor = keras.Model(keras_model.input, [keras_model.get_layer(name).output for name in names])
    maps = explain.feature_maps(model, picture, layers=names)
    for name, expected in zip(names, extractor(picture[None])):
        np.testing.assert_allclose(maps[name], keras.ops.convert_to_numpy(expected)[0], atol=1e-5, err_msg=name)
    keras_model.get_layer("head").activation = keras.activations.linear  # the score before softmax, as the paper
    for name in ("shared", "merged"):
        grad_model = keras.Model(keras_model.inputs, [keras_model.get_layer(name).output, keras_model.output])
        with tf.GradientTape() as tape:
            layer_maps, logits = grad_model(picture[None])
            score = logits[:, 1]
        weights = tf.reduce_mean(tape.gradient(score, layer_maps), axis=(0, 1, 2))  # (K,)
        heat = tf.nn.relu(tf.reduce_sum(layer_maps[0] * weights, axis=-1)).numpy()  # (h, w)
        np.testing.assert_allclose(explain.grad_cam(model, picture, name, class_index=1), heat / heat.max(), atol=1e-5,
                                   err_msg=name)
