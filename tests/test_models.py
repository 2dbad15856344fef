"""Sequential: structure, summary, compile/fit/evaluate/predict, callbacks, determinism, files."""
from __future__ import annotations

import csv
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

import convnet
from convnet import callbacks, layers, losses, zoo
from convnet.models import Sequential, load_model

from .conftest import tiny_cnn


def small_model(classes=3, input_shape=(12, 12, 1)):
    return Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(classes, activation="softmax"),
    ])


def compiled(model=None, **kwargs):
    model = model or small_model()
    model.compile(optimizer=kwargs.pop("optimizer", "adam"), loss=kwargs.pop("loss", "sparse_categorical_crossentropy"),
                  metrics=kwargs.pop("metrics", ["accuracy"]), device="cpu")
    return model


# -- structure and published numbers ------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [("seed", 1_406_218), ("homl", 1_413_834), ("lenet5", 61_706)])
def test_zoo_parameter_counts_match_the_published_ones(name, params):
    assert zoo.get_model(name).count_params() == params


def test_seed_cnn_output_shapes_match_keras():
    # Keras's summary of the seed model (the book's Fashion-MNIST CNN)
    expected = [(None, 28, 28, 64), (None, 14, 14, 64), (None, 14, 14, 128), (None, 14, 14, 128), (None, 7, 7, 128),
                (None, 7, 7, 256), (None, 7, 7, 256), (None, 3, 3, 256), (None, 2304), (None, 128), (None, 128),
                (None, 10)]
    rows = zoo.seed_cnn().layer_table()
    assert [row["output_shape"] for row in rows] == expected
    assert [row["params"] for row in rows] == [3200, 0, 73856, 147584, 0, 295168, 590080, 0, 0, 295040, 0, 1290]


def test_real_output_shapes_agree_with_the_computed_ones():
    model = zoo.seed_cnn()
    x = torch.zeros(2, 28, 28, 1)
    for layer, row in zip(model.layers, model.layer_table()):
        x = layer(x)
        assert tuple(x.shape[1:]) == row["output_shape"][1:], layer.name


def test_layers_get_unique_keras_style_names():
    model = tiny_cnn()
    assert [l.name for l in model.layers] == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "flatten",
                                             "dense", "dropout", "dense_1"]
    assert model.get_layer("conv2d_1") is model.layers[2]
    assert model.get_layer(index=-1).units == 10


def test_duplicate_explicit_names_are_refused():
    model = Sequential([layers.Input(shape=(4,)), layers.Dense(2, name="a")])
    with pytest.raises(ValueError, match="already has a layer named 'a'"):
        model.add(layers.Dense(2, name="a"))


def test_get_layer_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown layer 'conv2d_9'\. Did you mean 'conv2d_1' or 'conv2d'\? "
                                         r"Available: conv2d, max_pooling2d, "):
        tiny_cnn().get_layer("conv2d_9")


def test_add_checks_types_and_input_position():
    model = Sequential()
    with pytest.raises(TypeError, match=r"call the class: layers.Flatten\(\)"):
        model.add(layers.Flatten)
    model.add(layers.Dense(3, input_shape=(5,)))
    with pytest.raises(ValueError, match="an Input layer must come first"):
        model.add(layers.Input(shape=(5,)))


def test_layer_that_does_not_fit_is_refused_when_added():
    model = Sequential([layers.Input(shape=(4, 4, 1))])
    with pytest.raises(ValueError, match="does not fit the padded input"):
        model.add(layers.Conv2D(2, 5))


def test_unbuilt_model_builds_on_first_call_and_pop_removes():
    model = Sequential([layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(2)])
    assert not model.built
    out = model(np.zeros((1, 5, 5, 1), np.float32))
    assert tuple(out.shape) == (1, 2) and model.built and model.input_shape == (None, 5, 5, 1)
    assert isinstance(model.pop(), layers.Dense) and len(model.layers) == 2


def test_summary_prints_keras_columns_and_totals():
    lines = []
    zoo.seed_cnn().summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert 'Model: "seed_cnn"' in text
    assert "conv2d (Conv2D)" in text and "(None, 28, 28, 64)" in text and "3,200" in text
    assert "Total params: 1,406,218 (5.36 MB)" in text
    assert "Non-trainable params: 0" in text
    assert "Receptive field" in text and "38x38" in text  # after the third pooling layer


def test_summary_of_unbuilt_model_explains():
    with pytest.raises(ValueError, match="not built; give it an input shape"):
        Sequential([layers.Dense(2)]).summary()


def test_model_call_is_inference_by_default():
    model = Sequential([layers.Input(shape=(100,)), layers.Dropout(0.5)])
    x = np.ones((4, 100), np.float32)
    assert torch.equal(model(x), torch.ones(4, 100))


# -- compile, fit, evaluate, predict ------------------------------------------------------------------------
def test_fit_learns_and_history_has_keras_keys(synthetic):
    images, labels = synthetic
    convnet.utils.set_random_seed(0)
    model = compiled()
    history = model.fit(images, labels, epochs=3, batch_size=32, validation_split=0.2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2] and model.history is history
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.9


def test_validation_split_takes_the_last_samples_before_shuffling(synthetic):
    images, labels = synthetic
    model = compiled()
    model.fit(images, labels, epochs=1, validation_split=0.25, verbose=0)
    expected = model.evaluate(images[450:], labels[450:], verbose=0, return_dict=True)
    convnet.utils.set_random_seed(1)
    model2 = compiled()
    model2.set_weights(model.get_weights())
    history = model2.fit(images, labels, epochs=1, validation_split=0.25, verbose=0, shuffle=False,
                         batch_size=450)
    # one step on all 450 training samples changes the weights; recompute val on the updated weights
    after = model2.evaluate(images[450:], labels[450:], verbose=0, return_dict=True)
    assert history.history["val_loss"][0] == pytest.approx(after["loss"], rel=1e-5)
    assert expected["loss"] > 0


def test_evaluate_returns_keras_forms(synthetic):
    images, labels = synthetic
    model = compiled()
    loss_and_accuracy = model.evaluate(images, labels, verbose=0)
    assert isinstance(loss_and_accuracy, list) and len(loss_and_accuracy) == 2
    as_dict = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert list(as_dict) == ["accuracy", "loss"]  # sorted, as Keras 3 (the list keeps compile's order)
    only_loss = compiled(metrics=[]).evaluate(images, labels, verbose=0)
    assert isinstance(only_loss, float)


def test_evaluate_matches_a_hand_computed_loss(synthetic):
    images, labels = synthetic
    model = compiled()
    probabilities = model.predict(images, verbose=0)
    expected_loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    expected_accuracy = np.mean(probabilities.argmax(1) == labels)
    loss, accuracy = model.evaluate(images, labels, verbose=0, batch_size=64)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert accuracy == pytest.approx(expected_accuracy)


def test_predict_returns_numpy_probabilities(synthetic):
    images, _ = synthetic
    out = compiled().predict(images[:10], verbose=0)
    assert isinstance(out, np.ndarray) and out.shape == (10, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-6)


def test_predict_batch_size_does_not_change_results(synthetic):
    images, _ = synthetic
    model = compiled()
    np.testing.assert_allclose(model.predict(images, batch_size=7, verbose=0),
                               model.predict(images, batch_size=600, verbose=0), atol=1e-6)


def test_softmax_cross_entropy_is_computed_stably():
    # Logits so large that softmax rounds to exactly 0 for the true class: log(0) would be -inf.
    model = Sequential([layers.Input(shape=(2,)), layers.Dense(2, activation="softmax", kernel_initializer="zeros")])
    model.layers[0].set_weights([np.array([[200.0, -200.0], [0.0, 0.0]], np.float32), np.zeros(2, np.float32)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    x, y = np.array([[1.0, 0.0]], np.float32), np.array([1])
    loss = model.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(400.0, rel=1e-4)  # exact: log-softmax gives 400, clipping would give 16.1
    history = model.fit(x, y, epochs=1, batch_size=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])


def test_categorical_crossentropy_with_one_hot_labels(synthetic):
    images, labels = synthetic
    model = compiled(loss="categorical_crossentropy")
    one_hot = np.eye(3, dtype=np.float32)[labels]
    history = model.fit(images, one_hot, epochs=2, verbose=0)
    assert history.history["accuracy"][-1] > 0.5
    sparse = compiled(small_model())
    sparse.set_weights(model.get_weights())
    np.testing.assert_allclose(model.evaluate(images, one_hot, verbose=0),
                               sparse.evaluate(images, labels, verbose=0), rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["nadam", "adam", "adamw", "sgd", "rmsprop", "adagrad", "adamax"])
def test_every_named_optimizer_trains(optimizer, synthetic):
    images, labels = synthetic
    model = compiled(optimizer=optimizer)
    before = model.evaluate(images, labels, verbose=0)[0]
    model.fit(images, labels, epochs=2, batch_size=16, verbose=0)
    assert model.evaluate(images, labels, verbose=0)[0] < before


def test_same_seed_gives_identical_histories_on_cpu(synthetic):
    images, labels = synthetic

    def run():
        convnet.utils.set_random_seed(42)
        model = compiled(tiny_cnn((12, 12, 1), 3), optimizer="nadam")
        return model.fit(images, labels, epochs=2, batch_size=32, validation_split=0.1, verbose=0).history, \
            model.get_weights()

    (history_a, weights_a), (history_b, weights_b) = run(), run()
    assert history_a == history_b
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))


def test_short_real_training_run_beats_chance(fashion_small):
    (x_train, y_train), (x_test, y_test) = fashion_small
    convnet.utils.set_random_seed(0)
    model = tiny_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.70  # chance is 0.10


def test_uint8_and_channelless_inputs_are_accepted(synthetic):
    images, labels = synthetic
    model = compiled()
    as_uint8 = np.clip(images * 100, 0, 255).astype(np.uint8)
    model.fit(as_uint8[..., 0], labels, epochs=1, verbose=0)  # (N, H, W) for a (H, W, 1) model
    assert model.predict(as_uint8, verbose=0).shape == (600, 3)


def test_learning_rate_property_reads_and_writes_the_optimizer():
    model = compiled(optimizer=convnet.optimizers.Nadam(learning_rate=0.01))
    assert model.learning_rate == pytest.approx(0.01)
    model.learning_rate = 0.002
    assert model.optimizer_.param_groups[0]["lr"] == 0.002


def test_a_torch_optimizer_can_be_given_directly(synthetic):
    images, labels = synthetic
    model = small_model()
    model.compile(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss="sparse_categorical_crossentropy",
                  device="cpu")
    history = model.fit(images, labels, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


# -- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, message", [
    (lambda m, x, y: m.fit(x, y[:-1], verbose=0), ValueError, r"same number of samples: x has 600, y has 599"),
    (lambda m, x, y: m.fit(x, y + 1, verbose=0), ValueError, r"labels in \[1, 3\] but the model has 3 outputs"),
    (lambda m, x, y: m.fit(x, y - 1, verbose=0), ValueError, r"labels in \[-1, 1\]"),
    (lambda m, x, y: m.fit(x, y + 0.5, verbose=0), ValueError, "integer class indices"),
    (lambda m, x, y: m.fit(x[..., :1, :], y, verbose=0), ValueError,
     r"has shape \(600, 12, 1, 1\) but the model expects \(None, 12, 12, 1\)"),
    (lambda m, x, y: m.fit(x, y, batch_size=0, verbose=0), ValueError, "`batch_size` must be >= 1"),
    (lambda m, x, y: m.fit(x, y, epochs=0, verbose=0), ValueError, "`epochs` must be >= 1"),
    (lambda m, x, y: m.fit(x, y, validation_split=1.0, verbose=0), ValueError, "`validation_split` must be < 1"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x,), verbose=0), ValueError, r"tuple \(x_val, y_val\)"),
    (lambda m, x, y: m.fit(x, y, verbose=3), ValueError, "`verbose` must be 0, 1, 2 or 'auto'"),
    (lambda m, x, y: m.fit(x, y, callbacks=[print], verbose=0), TypeError, "`callbacks` must be a list"),
    (lambda m, x, y: m.fit("images", y, verbose=0), TypeError, "`x` must be a NumPy array or a torch.Tensor"),
    (lambda m, x, y: m.predict(x[0], verbose=0), ValueError, r"add a batch axis with x\[None\]"),
])
def test_bad_fit_arguments_give_clear_errors(call, error, message, synthetic):
    images, labels = synthetic
    with pytest.raises(error, match=message):
        call(compiled(), images, labels)


def test_fit_before_compile_explains():
    with pytest.raises(ValueError, match=r"must be compiled first, e.g. model.compile\(loss="):
        small_model().fit(np.zeros((4, 12, 12, 1)), np.zeros(4), verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "nadamm", "loss": "sparse_categorical_crossentropy"},
     r"unknown optimizer 'nadamm'\. Did you mean 'nadam'"),
    ({"loss": "sparse_categorical_crossentropie"}, r"unknown loss .*Did you mean 'sparse_categorical_crossentropy'"),
    ({"loss": "mse", "metrics": ["acuracy"]}, r"unknown metric 'acuracy'\. Did you mean 'accuracy'"),
    ({"loss": "mse", "metrics": "accuracy"}, r"`metrics` must be a list"),
    ({"loss": None}, r"`loss` is required"),
    ({"loss": "mse", "device": "tpu"}, r"`device` must be"),
])
def test_bad_compile_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        small_model().compile(**kwargs)


# -- callbacks ---------------------------------------------------------------------------------------------
def test_early_stopping_stops_and_restores_best_weights(synthetic):
    images, labels = synthetic
    model = compiled(optimizer=convnet.optimizers.SGD(learning_rate=1e-9))  # no progress: stops after patience
    stopper = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    history = model.fit(images, labels, epochs=20, callbacks=[stopper], verbose=0)
    assert len(history.epoch) < 20 and stopper.stopped_epoch > 0
    assert stopper.best_epoch != stopper.stopped_epoch  # the weights put back are not those training ended with
    for restored, best in zip(model.get_weights(), stopper.best_weights):
        np.testing.assert_array_equal(restored, best)


def test_model_checkpoint_saves_best_only(tmp_path, synthetic):
    images, labels = synthetic
    path = tmp_path / "ckpt-{epoch:02d}.convnet"
    checkpoint = callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    model = compiled()
    model.fit(images, labels, epochs=3, validation_split=0.2, callbacks=[checkpoint], verbose=0)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved and saved[0] == "ckpt-01.convnet" and all(name.endswith(".convnet") for name in saved)
    restored = load_model(tmp_path / saved[-1], device="cpu")
    assert restored.count_params() == model.count_params()


def test_csv_logger_writes_one_row_per_epoch(tmp_path, synthetic):
    images, labels = synthetic
    path = tmp_path / "log.csv"
    compiled().fit(images, labels, epochs=2, validation_split=0.2, callbacks=[callbacks.CSVLogger(path)], verbose=0)
    rows = list(csv.DictReader(open(path)))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}


def test_terminate_on_nan_stops_at_the_first_bad_batch(synthetic):
    images, labels = synthetic
    poisoned = images.copy()
    poisoned[100] = np.nan  # sample 100 lands in batch 3 (batch size 32, no shuffling)
    terminate = callbacks.TerminateOnNaN()
    history = compiled().fit(poisoned, labels, epochs=3, batch_size=32, shuffle=False, callbacks=[terminate], verbose=0)
    assert terminate.stopped_at == (0, 3)
    assert len(history.epoch) == 1


def test_learning_rate_scheduler_sets_the_rate_each_epoch(synthetic):
    images, labels = synthetic
    model = compiled()
    seen = []
    scheduler = callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 / (epoch + 1))
    spy = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(model.learning_rate))
    history = model.fit(images, labels, epochs=3, batch_size=300, callbacks=[scheduler, spy], verbose=0)
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.005, 0.01 / 3])
    assert seen == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.01 / 3, 0.01 / 3])


def test_custom_callback_sees_every_hook(synthetic):
    images, labels = synthetic
    events = []

    class Recorder(callbacks.Callback):
        def on_train_begin(self, logs=None): events.append("train_begin")
        def on_epoch_begin(self, epoch, logs=None): events.append(f"epoch_begin {epoch}")
        def on_train_batch_end(self, batch, logs=None): events.append(f"batch {batch} {logs['loss'] > 0}")
        def on_epoch_end(self, epoch, logs=None): events.append(f"epoch_end {epoch} {sorted(logs)}")
        def on_train_end(self, logs=None): events.append("train_end")

    compiled().fit(images[:64], labels[:64], epochs=1, batch_size=32, callbacks=[Recorder()], verbose=0)
    assert events == ["train_begin", "epoch_begin 0", "batch 0 True", "batch 1 True",
                      "epoch_end 0 ['accuracy', 'loss']", "train_end"]


# -- progress display ------------------------------------------------------------------------------------
def test_progress_lines_look_like_keras(synthetic, capsys):
    images, labels = synthetic
    compiled().fit(images, labels, epochs=2, batch_size=100, validation_split=0.5, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2"
    assert out[1].startswith("3/3 - ") and "/step - accuracy: " in out[1] and " - loss: " in out[1]
    assert out[1].index(" - loss: ") < out[1].index(" - val_accuracy: ") < out[1].index(" - val_loss: ")
    assert out[2] == "Epoch 2/2"


def test_progress_bar_redraws_in_a_terminal(synthetic, capsys):
    images, labels = synthetic
    compiled().fit(images, labels, epochs=1, batch_size=100, verbose=1)
    out = capsys.readouterr().out
    assert "6/6 ━━━━━━━━━━━━━━━━━━━━" in out and "\r" in out


def test_verbose_zero_is_silent(synthetic, capsys):
    images, labels = synthetic
    model = compiled()
    model.fit(images, labels, epochs=1, verbose=0)
    model.evaluate(images, labels, verbose=0)
    model.predict(images, verbose=0)
    assert capsys.readouterr().out == ""


# -- files -------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path, synthetic):
    images, labels = synthetic
    model = compiled(tiny_cnn((12, 12, 1), 3), optimizer=convnet.optimizers.Adam(learning_rate=0.003))
    model.fit(images, labels, epochs=1, verbose=0)
    model.metadata = {"class_names": ["left", "middle", "right"]}
    path = tmp_path / "model.convnet"
    model.save(path)
    restored = load_model(path, device="cpu")
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))
    assert restored.get_config() == model.get_config()
    assert restored.metadata == model.metadata
    assert restored.learning_rate == pytest.approx(0.003) and restored.metrics_names == ["loss", "accuracy"]
    assert isinstance(restored.loss, losses.SparseCategoricalCrossentropy)
    restored.fit(images, labels, epochs=1, verbose=0)  # ready to train further


def test_saved_file_is_safetensors_with_keras_layouts(tmp_path):
    from safetensors.numpy import load_file
    model = zoo.seed_cnn()
    path = tmp_path / "seed.convnet"
    model.save(path)
    tensors = load_file(str(path))
    assert tensors["conv2d/kernel"].shape == (7, 7, 1, 64)
    assert tensors["dense/kernel"].shape == (2304, 128)
    np.testing.assert_array_equal(tensors["conv2d_4/kernel"], model.get_layer("conv2d_4").get_weights()[0])
    assert b"pickle" not in open(path, "rb").read(4096)


def test_save_refuses_other_extensions_and_lambda_layers(tmp_path):
    with pytest.raises(ValueError, match=r"model files end in '\.convnet'"):
        zoo.lenet5().save(tmp_path / "model.h5")
    model = Sequential([layers.Input(shape=(3,)), layers.Lambda(lambda x: x * 2)])
    with pytest.raises(ValueError, match="holds Python code and cannot be saved"):
        model.save(tmp_path / "lambda.convnet")


def test_save_weights_and_load_weights(tmp_path):
    model = zoo.lenet5()
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    other = zoo.lenet5()
    other.load_weights(path)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
    with pytest.raises(ValueError, match="the weights do not match the architecture"):
        zoo.seed_cnn().load_weights(path)


def test_a_saved_model_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "model.convnet"
    zoo.lenet5().save(path)
    before = path.read_bytes()
    import convnet.models.saving as saving

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saving.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        zoo.lenet5().save(path)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model.convnet"]  # no temporary left behind


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:100], "truncated"),
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: data[:-10] + bytes(10), "do not match the file's checksum"),
    (lambda data: pickle.dumps({"weights": list(range(100))}), "not a convnet file"),
    (lambda data: b"\x89HDF\r\n\x1a\n" + bytes(100), "not a convnet file"),
    (lambda data: b"", "only 0 bytes"),
])
def test_damaged_model_files_are_refused_by_name(tmp_path, damage, message):
    path = tmp_path / "model.convnet"
    zoo.lenet5().save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_a_plain_safetensors_file_is_not_a_model(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "foreign.convnet"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="a safetensors file without convnet's metadata"):
        load_model(path)


def test_unknown_layer_class_in_a_file_is_refused(tmp_path):
    from convnet._internal.fileformat import encode
    from convnet.models.saving import model_tensors
    model = zoo.lenet5()
    config = {"model": model.get_config(), "compile": None, "metadata": {}}
    config["model"]["layers"][0]["class_name"] = "EvilLayer"
    path = tmp_path / "evil.convnet"
    path.write_bytes(encode(model_tensors(model), "model", config))
    with pytest.raises(ValueError, match=r"invalid architecture: unknown layer class 'EvilLayer'"):
        load_model(path)


def test_model_config_round_trip_rebuilds_an_identical_architecture():
    model = zoo.homl_cnn()
    clone = Sequential.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()


def test_set_weights_checks_counts():
    with pytest.raises(ValueError, match="the model has 14 weight arrays, received 1"):
        zoo.seed_cnn().set_weights([np.zeros(1)])


def test_model_is_a_torch_module_for_hand_written_loops():
    model = zoo.lenet5()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(8, 28, 28, 1), torch.randint(0, 10, (8,))
    model.train()
    loss = torch.nn.functional.nll_loss(torch.log(model(x)), y)
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())
    assert os.path.basename(convnet.__file__) == "__init__.py"
