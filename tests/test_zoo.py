"""The model presets, parameterised over the zoo's registry (as timm's model tests): a preset is tested
the moment it is registered, and a new one must add its parameter count, worked out by hand, to KNOWN_PARAMS.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import convnet
from convnet import zoo


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out  # a k x k kernel per (input, output) channel pair, one bias per output


def dense(n_in, n_out):
    return n_in * n_out + n_out


SEED_TRUNK = conv(7, 1, 64) + conv(3, 64, 128) + conv(3, 128, 128) + conv(3, 128, 256) + conv(3, 256, 256)
# 28 -> 14 -> 7 -> 3 after three 2x2 max pools, 256 channels: 3 * 3 * 256 = 2304 features into the head
KNOWN_PARAMS = {
    "seed": (SEED_TRUNK + dense(2304, 128) + dense(128, 10), 1_406_218),  # the seed's published count
    "homl": (SEED_TRUNK + dense(2304, 128) + dense(128, 64) + dense(64, 10), 1_413_834),
    # C1 (SAME) 28 -> S2 14 -> C3 10 -> S4 5 -> C5 1x1x120 -> F6 84 -> 10
    "lenet5": (conv(5, 1, 6) + conv(5, 6, 16) + conv(5, 16, 120) + dense(120, 84) + dense(84, 10), 61_706),
}


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_builds_with_the_known_parameter_count(name):
    assert name in KNOWN_PARAMS, f"add the parameter count of the new preset {name!r} to KNOWN_PARAMS"
    by_hand, published = KNOWN_PARAMS[name]
    assert by_hand == published
    model = zoo.get_model(name)
    assert isinstance(model, convnet.Sequential) and model.built
    assert model.count_params() == published
    assert model.layer_table()[-1]["output_shape"] == (None, 10)
    assert zoo.get_model(name.upper()).count_params() == published  # names are case-insensitive


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_takes_input_shape_and_classes(name):
    model = zoo.get_model(name, input_shape=(32, 28, 3), num_classes=5)  # non-square, RGB
    with torch.no_grad():
        out = model(torch.rand(2, 32, 28, 3))
    assert tuple(out.shape) == (2, 5)
    np.testing.assert_allclose(out.sum(dim=1).numpy(), 1, rtol=1e-5)  # a softmax head


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_trains_one_step_and_round_trips_through_a_file(name, tmp_path):
    torch.manual_seed(0)
    model = zoo.get_model(name)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    y = np.arange(8) % 10
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"]).all()
    after = model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # the step changed the weights
    model.save(tmp_path / f"{name}.convnet")
    restored = convnet.load_model(tmp_path / f"{name}.convnet", device="cpu")
    assert restored.get_config() == model.get_config()
    for restored_weight, weight in zip(restored.get_weights(), after):
        np.testing.assert_array_equal(restored_weight, weight)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


def test_list_models_by_pattern_and_unknown_names():
    names = zoo.list_models()
    assert names == sorted(names) and {"seed", "homl", "lenet5"} <= set(names)
    assert zoo.list_models("l*") == [n for n in names if n.startswith("l")]
    assert zoo.list_models("nothing*") == []
    with pytest.raises(ValueError, match=r"`model`: unknown model 'sed'\. Did you mean 'seed'\? Available: "
                                         + ", ".join(names)):
        zoo.get_model("sed")
    with pytest.raises(TypeError, match=r"`model` must be a string"):
        zoo.get_model(3)


def test_seed_trunk_is_the_seed_model_without_its_head():
    trunk = zoo.seed_trunk((28, 28, 1))
    assert [type(layer).__name__ for layer in trunk] == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D",
                                                         "MaxPooling2D", "Conv2D", "Conv2D", "MaxPooling2D", "Flatten"]
    assert convnet.Sequential(trunk).count_params() == SEED_TRUNK
