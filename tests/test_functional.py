"""The functional API: `convnet.Input`, layers called on symbolic tensors, `convnet.Model(inputs, outputs)`.

Graphs are checked against a plain NumPy forward pass written from Keras's conventions (tests/reference.py),
the order of `model.layers` against a transcription of Keras 3's `map_graph` rule, and every kind of bad
graph against its error message.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import convnet
from convnet import layers, models

from .reference import conv2d_ref


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def residual_model(name="resnet_block"):
    """conv -> (conv -> conv) + skip -> relu -> global pool -> dense, Keras-style names."""
    inputs = convnet.Input(shape=(8, 8, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(4, 3, padding="same", activation="relu", name="block_conv1")(x)
    y = layers.Conv2D(4, 3, padding="same", name="block_conv2")(y)
    x = layers.Activation("relu", name="block_out")(layers.Add(name="block_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="head")(x)
    return convnet.Model(inputs, outputs, name=name)


def numpy_residual(model, x):
    """The residual model's forward pass in NumPy, from its Keras-layout weights."""
    def conv(name, a, relu):
        kernel, bias = model.get_layer(name).get_weights()
        out = conv2d_ref(a.astype(np.float64), kernel.astype(np.float64), 1, "same") + bias
        return np.maximum(out, 0) if relu else out
    stem = conv("stem", x, True)
    y = conv("block_conv2", conv("block_conv1", stem, True), False)
    pooled = np.maximum(stem + y, 0).mean(axis=(1, 2))
    kernel, bias = model.get_layer("head").get_weights()
    logits = pooled @ kernel + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_residual_graph_matches_numpy_reference():
    model = residual_model()
    x = rand(5, 8, 8, 3)
    np.testing.assert_allclose(model.predict(x, verbose=0), numpy_residual(model, x), atol=1e-5)
    assert [layer.name for layer in model.layers] == ["image", "stem", "block_conv1", "block_conv2", "block_add",
                                                      "block_out", "pool", "head"]
    assert model.count_params() == (3 * 9 * 4 + 4) + 2 * (4 * 9 * 4 + 4) + (4 * 3 + 3)


def test_symbolic_tensors_and_keras_attributes():
    inputs = convnet.Input(shape=(8, 8, 3))
    assert inputs.shape == (None, 8, 8, 3)
    conv = layers.Conv2D(4, 3)
    out = conv(inputs)
    assert out.shape == (None, 6, 6, 4) and conv.output is out and conv.input is inputs
    model = convnet.Model(inputs, out)
    assert model.input is inputs and model.output is out and model.inputs == [inputs] and model.outputs == [out]
    assert model.input_shape == (None, 8, 8, 3) and model.output_shape == (None, 6, 6, 4)
    assert model.get_layer("conv2d") is conv and isinstance(model.layers[0], layers.InputLayer)
    with pytest.raises(ValueError, match=r"never been called on a symbolic tensor, so it has no output"):
        _ = layers.Dense(3).output
    with pytest.raises(TypeError, match=r"arithmetic on symbolic tensors is not recorded"):
        inputs + 1


def keras_order(inputs, outputs):
    """A transcription of Keras 3's operation order (keras/src/ops/function.py, map_graph): a depth-first
    walk from each output gives the post-order of nodes and the first-meeting index of each operation;
    a node's depth is 0 at the outputs and one more than its deepest consumer's; operations sort by
    decreasing depth, then by first meeting."""
    post, first, done = [], {}, set()

    def walk(tensor):
        node = tensor.node
        if id(node) in done:
            return
        first.setdefault(id(node.operation), (len(first), node.operation))
        for parent in node.inputs:
            walk(parent)
        done.add(id(node))
        post.append(node)
    for tensor in outputs:
        walk(tensor)
    depth, op_depth = {}, {}
    for node in reversed(post):
        d = max(depth.setdefault(id(node), 0), op_depth.get(id(node.operation), 0))
        depth[id(node)] = op_depth[id(node.operation)] = d
        for parent in node.inputs:
            depth[id(parent.node)] = max(depth.get(id(parent.node), 0), d + 1)
    order = sorted(first.values(), key=lambda item: (-op_depth[id(item[1])], item[0]))
    return [operation.name for _, operation in order]


def branching_graph():
    """Two inputs, a shared layer, an inception-like branch with concatenation, two outputs."""
    a = convnet.Input(shape=(6, 6, 2), name="a")
    b = convnet.Input(shape=(6, 6, 2), name="b")
    shared = layers.Conv2D(3, 1, name="shared")
    xa, xb = shared(a), shared(b)
    left = layers.Conv2D(2, 3, padding="same", name="left")(xa)
    right = layers.MaxPooling2D(3, strides=1, padding="same", name="right")(xa)
    mixed = layers.Concatenate(name="mix")([left, right, xb])
    first = layers.Dense(4, name="first")(layers.Flatten(name="flat")(mixed))
    second = layers.GlobalMaxPooling2D(name="gmp")(xb)
    return [a, b], [first, second], shared


def test_layer_order_is_keras_map_graph_order():
    inputs, outputs, _ = branching_graph()
    model = convnet.Model(inputs, outputs)
    assert [layer.name for layer in model.layers] == keras_order(inputs, outputs)
    model = residual_model()
    assert [layer.name for layer in model.layers] == keras_order(model.inputs, model.outputs)


def test_several_inputs_and_outputs_shared_layer():
    inputs, outputs, shared = branching_graph()
    model = convnet.Model(inputs, outputs, name="two_heads")
    assert len(shared._inbound_nodes) == 2 and model.count_params() == (2 * 3 + 3) + (3 * 9 * 2 + 2) + (8 * 36 * 4 + 4)
    xa, xb = rand(4, 6, 6, 2, seed=1), rand(4, 6, 6, 2, seed=2)
    first, second = model.predict([xa, xb], verbose=0)
    assert first.shape == (4, 4) and second.shape == (4, 3)
    kernel, bias = shared.get_weights()
    np.testing.assert_allclose(second, (xb @ kernel[0, 0] + bias).max(axis=(1, 2)), atol=1e-5)
    out = model([torch.from_numpy(xa), torch.from_numpy(xb)])
    np.testing.assert_allclose(out[0].detach().numpy(), first, atol=1e-5)
    with pytest.raises(ValueError, match=r"training and evaluation take models with one input and one output"):
        model.compile(loss="mse", optimizer="sgd")
        model.fit([xa, xb], np.zeros((4, 4)))


def test_feature_extraction_from_a_sequential_as_keras():
    seq = models.Sequential([layers.Input(shape=(8, 8, 1)), layers.Conv2D(2, 3, activation="relu"),
                             layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(3, activation="softmax")])
    extractor = convnet.Model(inputs=seq.input, outputs=[layer.output for layer in seq.layers])
    x = rand(2, 8, 8, 1)
    maps = extractor.predict(x, verbose=0)
    assert [m.shape for m in maps] == [(2, 6, 6, 2), (2, 3, 3, 2), (2, 18), (2, 3)]
    np.testing.assert_allclose(maps[-1], seq.predict(x, verbose=0), atol=1e-6)
    seq.pop()  # the stack's graph is rebuilt; the popped layer has no node of it left
    assert seq.output is seq.layers[-1].output and seq.output_shape == (None, 18)


def test_nested_models_as_layers():
    block = models.Sequential([layers.Conv2D(3, 3, padding="same", activation="relu"), layers.Conv2D(3, 1)],
                              name="block")
    inputs = convnet.Input(shape=(6, 6, 3))
    x = layers.Add()([inputs, block(inputs)])
    inner = convnet.Model(inputs, x, name="inner")
    outer_in = convnet.Input(shape=(6, 6, 3))
    outputs = layers.Dense(2)(layers.Flatten()(inner(outer_in)))
    model = convnet.Model(outer_in, outputs, name="outer")
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Model", "Flatten", "Dense"]
    x = rand(3, 6, 6, 3)
    expected = inner.predict(x, verbose=0).reshape(3, -1) @ model.layers[-1].get_weights()[0] \
        + model.layers[-1].get_weights()[1]
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    assert model.count_params() == block.count_params() + 6 * 6 * 3 * 2 + 2


def test_fit_evaluate_and_logits_on_a_graph(synthetic):
    images, labels = synthetic
    torch.manual_seed(0)
    inputs = convnet.Input(shape=(12, 12, 1))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.Add()([x, y])
    outputs = layers.Dense(3, activation="softmax")(layers.Flatten()(layers.MaxPooling2D(4)(x)))
    model = convnet.Model(inputs, outputs)
    assert model.output_activation == "softmax"
    batch = torch.from_numpy(images[:4])
    np.testing.assert_allclose(torch.softmax(model.logits(batch), -1).detach().numpy(),
                               model(batch).detach().numpy(), atol=1e-6)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    history = model.fit(images, labels, epochs=4, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, accuracy = model.evaluate(images, labels, verbose=0)
    assert accuracy > 0.6


def test_graph_and_sequential_train_identically(synthetic):
    """The same layers as a stack and as a graph: the same weights after training, bit for bit."""
    images, labels = synthetic

    def stack():
        return [layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
                layers.Dense(3, activation="softmax")]
    torch.manual_seed(1)
    seq = models.Sequential([layers.Input(shape=(12, 12, 1)), *stack()])
    inputs = convnet.Input(shape=(12, 12, 1))
    x = inputs
    for layer in stack():
        x = layer(x)
    graph = convnet.Model(inputs, x)
    graph.set_weights(seq.get_weights())
    results = []
    for model in (seq, graph):
        torch.manual_seed(2)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
        model.fit(images, labels, epochs=1, batch_size=50, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_save_and_load_a_graph(tmp_path):
    inputs, outputs, _ = branching_graph()
    model = convnet.Model(inputs, outputs, name="two_heads")
    path = tmp_path / "graph.convnet"
    model.save(path)
    loaded = convnet.load_model(path, device="cpu")
    assert type(loaded) is convnet.Model and [layer.name for layer in loaded.layers] == [l.name for l in model.layers]
    xs = [rand(2, 6, 6, 2, seed=3), rand(2, 6, 6, 2, seed=4)]
    for a, b in zip(model.predict(xs, verbose=0), loaded.predict(xs, verbose=0)):
        np.testing.assert_array_equal(a, b)
    residual = residual_model()
    residual.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    residual.save(tmp_path / "residual.convnet")
    again = convnet.load_model(tmp_path / "residual.convnet", device="cpu")
    assert again.compiled and again.output_activation == "softmax"
    x = rand(2, 8, 8, 3)
    np.testing.assert_array_equal(again.predict(x, verbose=0), residual.predict(x, verbose=0))


def test_nested_graph_round_trips_through_its_config():
    block = models.Sequential([layers.Input(shape=(4, 4, 2)), layers.Conv2D(2, 3, padding="same")], name="block")
    inputs = convnet.Input(shape=(4, 4, 2))
    outputs = layers.Add()([inputs, block(inputs)])
    model = convnet.Model(inputs, outputs)
    clone = convnet.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = rand(2, 4, 4, 2)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))


def test_summary_has_keras_connected_to_column_and_receptive_fields():
    model = residual_model()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "stem[0][0], block_conv2[0][0]" in text
    rows = {row["name"]: row for row in model.layer_table()}
    assert rows["stem"]["receptive_field"] == (3, 3)
    assert rows["block_add"]["receptive_field"] == (7, 7)  # the largest over the two paths (3 and 7)
    assert rows["pool"]["receptive_field"] is None
    seq = models.Sequential([layers.Input(shape=(4, 4, 1)), layers.Conv2D(2, 3)])
    lines = []
    seq.summary(print_fn=lines.append)
    assert "Connected to" not in "\n".join(lines)  # as Keras's Sequential summary


# Bad graphs: each a clear error naming the layers, raised when the graph is built

def test_merge_shape_mismatch_names_both_layers():
    inputs = convnet.Input(shape=(8, 8, 3))
    a = layers.Conv2D(16, 3, padding="same", name="conv_a")(inputs)
    b = layers.Conv2D(32, 3, padding="same", name="conv_b")(inputs)
    with pytest.raises(ValueError, match=r"Add 'add'.*input 0 comes from Conv2D 'conv_a' with shape "
                                         r"\(None, 8, 8, 16\); input 1 comes from Conv2D 'conv_b' with shape "
                                         r"\(None, 8, 8, 32\)"):
        layers.Add()([a, b])


def test_layer_called_on_an_array_inside_a_graph():
    inputs = convnet.Input(shape=(4, 4, 1))
    with pytest.raises(TypeError, match=r"Add 'add': input 1 is a NumPy array of shape \(1, 4, 4, 1\).*not a "
                                        r"symbolic tensor"):
        layers.Add()([inputs, np.zeros((1, 4, 4, 1), np.float32)])
    eager = layers.Conv2D(1, 1)(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(TypeError, match=r"`outputs` must be a symbolic tensor .*a layer was called on data"):
        convnet.Model(inputs, eager)


def test_disconnected_graphs_are_refused():
    a = convnet.Input(shape=(4,), name="a")
    b = convnet.Input(shape=(4,), name="b")
    out = layers.Add(name="sum")([a, b])
    with pytest.raises(ValueError, match=r"Graph disconnected: Add 'sum' needs 'b' \(InputLayer 'b'\), which is not "
                                         r"among the model's inputs \['a'\]"):
        convnet.Model(a, out)
    unused = convnet.Input(shape=(4,), name="unused")
    with pytest.raises(ValueError, match=r"input 'unused' is not connected to any output"):
        convnet.Model([a, b, unused], out)
    other = layers.Dense(2, name="other")(convnet.Input(shape=(4,), name="elsewhere"))
    with pytest.raises(ValueError, match=r"Graph disconnected: Dense 'other' needs 'elsewhere'"):
        convnet.Model(a, other)


def test_duplicate_names_and_bad_arguments():
    inputs = convnet.Input(shape=(4,))
    x = layers.Dense(3, name="same")(inputs)
    y = layers.Dense(3, name="same")(x)
    with pytest.raises(ValueError, match=r"two layers of the model are named 'same' \(Dense 'same' and Dense 'same'\)"):
        convnet.Model(inputs, y)
    auto = layers.Dense(2)(layers.Dense(2)(inputs))
    model = convnet.Model(inputs, auto)
    assert [layer.name for layer in model.layers][1:] == ["dense", "dense_1"]
    with pytest.raises(TypeError, match=r"Model\(inputs, outputs\) builds a graph from symbolic tensors"):
        convnet.Model()
    with pytest.raises(TypeError, match=r"`inputs\[0\]` must be a symbolic tensor"):
        convnet.Model([np.zeros(3)], auto)


def test_a_cycle_in_a_saved_graph_is_refused():
    inputs = convnet.Input(shape=(4,), name="x")
    a = layers.Dense(4, name="a")(inputs)
    config = convnet.Model(inputs, layers.Dense(4, name="b")(a)).get_config()
    config["calls"] = [["a", [["b", 0, 0]], False], ["b", [["a", 0, 0]], False]]  # a reads b, b reads a
    with pytest.raises(ValueError, match=r"the call of 'a' reads \['b', 0, 0\], which no earlier call made"):
        convnet.Model.from_config(config)
    config["calls"] = [["nowhere", [["x", 0, 0]], False]]
    with pytest.raises(ValueError, match=r"a call names layer 'nowhere', which the configuration does not define"):
        convnet.Model.from_config(config)


def test_lambda_in_a_graph_cannot_be_saved(tmp_path):
    inputs = convnet.Input(shape=(4,))
    model = convnet.Model(inputs, layers.Lambda(lambda t: t * 2, name="double")(inputs))
    with pytest.raises(ValueError, match=r"Lambda 'double'.*cannot be saved"):
        model.save(tmp_path / "lambda.convnet")


def residual_classifier():
    """A small residual graph with BatchNormalization and Dropout (state a resume must restore exactly)."""
    convnet.utils.set_random_seed(0)
    inputs = convnet.Input(shape=(12, 12, 1))
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    y = layers.BatchNormalization()(layers.Conv2D(6, 3, padding="same")(x))
    x = layers.Activation("relu")(layers.Add()([x, y]))
    x = layers.Dropout(0.2)(layers.Flatten()(layers.MaxPooling2D(3)(x)))
    model = convnet.Model(inputs, layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    return model


def test_a_graph_checkpoints_and_resumes_bit_for_bit(synthetic, tmp_path):
    images, labels = synthetic[0][:200], synthetic[1][:200]
    first = residual_classifier()
    first.fit(images, labels, batch_size=32, epochs=1, verbose=0, checkpoint_dir=tmp_path)
    resumed = residual_classifier()
    history = resumed.fit(images, labels, batch_size=32, epochs=3, verbose=0, checkpoint_dir=tmp_path, resume=True)
    uninterrupted = residual_classifier()
    expected = uninterrupted.fit(images, labels, batch_size=32, epochs=3, verbose=0)
    assert history.history == expected.history
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_graph_trains_through_the_captured_step_as_eagerly(synthetic):
    """The CUDA-graph bookkeeping (run on the CPU through its eager stand-in) on a functional model."""
    from convnet.training import graphs
    images, labels = synthetic[0][:100], synthetic[1][:100]
    captured = residual_classifier()
    captured.engine.capture_factory = lambda: graphs.EagerCapture(True)
    captured.fit(images, labels, batch_size=32, epochs=2, verbose=0)
    assert captured.engine.graph is not None
    eager = residual_classifier()
    eager.fit(images, labels, batch_size=32, epochs=2, verbose=0)
    captured.engine.release()
    for a, b in zip(captured.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_lists_of_one_input_and_one_output_act_as_one_as_in_keras(synthetic):
    images, labels = synthetic
    inputs = convnet.Input(shape=(12, 12, 1))
    outputs = layers.Dense(3, activation="softmax")(layers.Flatten()(inputs))
    model = convnet.Model([inputs], [outputs])
    assert model.predict(images[:4], verbose=0).shape == (4, 3)  # an array, not a list of one
    called = model(torch.from_numpy(images[:4]))  # a call keeps the structure, as Keras's
    assert isinstance(called, list) and len(called) == 1 and called[0].shape == (4, 3)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    assert len(model.fit(images, labels, epochs=1, verbose=0).history["loss"]) == 1


def test_receptive_fields_pass_through_a_nested_model():
    def stack():
        return [layers.Conv2D(2, 3, padding="same"), layers.MaxPooling2D(2), layers.Conv2D(2, 3, padding="same")]
    flat = models.Sequential([layers.Input(shape=(16, 16, 1)), *stack(), layers.Conv2D(2, 3)])
    inner = models.Sequential([layers.Input(shape=(16, 16, 1)), *stack()], name="inner")
    inputs = convnet.Input(shape=(16, 16, 1))
    nested = convnet.Model(inputs, layers.Conv2D(2, 3, name="after")(inner(inputs)))
    expected = flat.layer_table()[-1]
    got = {row["name"]: row for row in nested.layer_table()}["after"]
    assert (got["receptive_field"], got["jump"], got["start"]) == \
        (expected["receptive_field"], expected["jump"], expected["start"])


def test_accuracy_is_resolved_from_the_shapes_when_fit_sees_the_data():
    """Keras 3: multi-label binary cross-entropy over 4 units reports categorical accuracy, while the loss
    alone would say binary."""
    x = rand(16, 5)
    y = (rand(16, 4, seed=1) > 0).astype(np.float32)
    inputs = convnet.Input(shape=(5,))
    model = convnet.Model(inputs, layers.Dense(4, activation="sigmoid")(inputs))
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"], device="cpu")
    assert type(model.metrics[0]).__name__ == "BinaryAccuracy"  # from the loss, before any data
    model.fit(x, y, epochs=1, verbose=0)
    assert type(model.metrics[0]).__name__ == "CategoricalAccuracy" and model.metrics[0].name == "accuracy"


def test_a_scheduled_learning_rate_cannot_be_set_by_hand_as_in_keras():
    inputs = convnet.Input(shape=(3,))
    model = convnet.Model(inputs, layers.Dense(2)(inputs))
    model.compile(optimizer=convnet.optimizers.SGD(convnet.schedules.ExponentialDecay(0.1, 10, 0.5)), loss="mse",
                  device="cpu")
    with pytest.raises(TypeError, match=r"the optimizer's learning rate follows the schedule ExponentialDecay, so it "
                                        r"cannot be set"):
        model.learning_rate = 0.01
    model.fit(rand(8, 3), rand(8, 2), epochs=1, batch_size=4, verbose=0)  # fit itself steps the schedule
    assert model.learning_rate == pytest.approx(0.1 * 0.5 ** (1 / 10))
