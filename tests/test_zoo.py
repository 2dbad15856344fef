"""The model presets, parameterised over the zoo's registry (as timm's model tests): a preset is tested
the moment it is registered, and a new one must add its parameter count, worked out by hand, to KNOWN_PARAMS.
"""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import convnet
from convnet import zoo
from convnet.models.model import sample_shape


def conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)  # a k x k kernel per (in, out) channel pair, a bias per out


def depthwise(k, channels):
    return k * k * channels  # one k x k kernel per channel, no bias in the presets


def dense(n_in, n_out):
    return n_in * n_out + n_out


def bn(channels):
    return 2 * channels  # gamma and beta; the moving mean and variance are counted apart (non-trainable)


SEED_TRUNK = conv(7, 1, 64) + conv(3, 64, 128) + conv(3, 128, 128) + conv(3, 128, 256) + conv(3, 256, 256)


def resnet20_trainable(channels=3, classes=10):
    """He et al.'s ResNet-20 with option A shortcuts (no parameters): a stem, then 3 stages of 3 blocks of
    two 3x3 convolutions, every convolution followed by batch normalisation, then the classifier."""
    total = conv(3, channels, 16, bias=False) + bn(16)
    for c_in, c_out in ((16, 16), (16, 32), (32, 64)):
        total += conv(3, c_in, c_out, bias=False) + bn(c_out)  # the block that changes the size, its first conv
        total += 5 * (conv(3, c_out, c_out, bias=False) + bn(c_out))  # its second conv and two more blocks
    return total + dense(64, classes)


def mobilenet_trainable(channels=1, classes=10):
    total = conv(3, channels, 32, bias=False) + bn(32)
    c_in = 32
    for c_out in (64, 128, 128, 256, 256):
        total += depthwise(3, c_in) + bn(c_in) + conv(1, c_in, c_out, bias=False) + bn(c_out)
        c_in = c_out
    return total + dense(256, classes)


# name: (trainable parameters for 28x28x1 and 10 classes counted by hand, non-trainable (BN moving statistics),
# the published count where there is one, for its input shape)
KNOWN_PARAMS = {
    # 28 -> 14 -> 7 -> 3 after three 2x2 max pools, 256 channels: 3 * 3 * 256 = 2304 features into the head
    "seed": (SEED_TRUNK + dense(2304, 128) + dense(128, 10), 0, 1_406_218),  # the seed's published count
    "homl": (SEED_TRUNK + dense(2304, 128) + dense(128, 64) + dense(64, 10), 0, 1_413_834),
    # C1 (SAME) 28 -> S2 14 -> C3 10 -> S4 5 -> C5 1x1x120 -> F6 84 -> 10
    "lenet5": (conv(5, 1, 6) + conv(5, 6, 16) + conv(5, 16, 120) + dense(120, 84) + dense(84, 10), 0, 61_706),
    # He et al. 2016, Table 6: ResNet-20, 0.27 M parameters (CIFAR-10, 32x32x3 inputs): 269,722 exactly
    # the moving mean and variance of every BN layer are non-trainable (as in Keras): one BN per convolution
    "resnet20": (resnet20_trainable(channels=1), 2 * (16 + 6 * (16 + 32 + 64)), 269_722),
    "mobilenet": (mobilenet_trainable(), 2 * (32 + (32 + 64) + (64 + 128) + (128 + 128) + (128 + 256) + (256 + 256)),
                  None),
    # conv 3x3 32 (bias, no BN), 64 and 128 (BN), 2x2 max pools after the first two: 28 -> 14 -> 7, then
    # 7 * 7 * 128 = 6272 features into the classifier
    "fast": (conv(3, 1, 32) + conv(3, 32, 64, bias=False) + bn(64) + conv(3, 64, 128, bias=False) + bn(128)
             + dense(6272, 10), 2 * (64 + 128), None),
}
PUBLISHED_SHAPE = {"resnet20": (32, 32, 3)}  # the input a published count is for, where not Fashion-MNIST's


def summary_totals(model):
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    return {kind: int(text.split(f"{kind} params: ")[1].split()[0].replace(",", ""))
            for kind in ("Total", "Trainable", "Non-trainable")}


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_builds_with_the_known_parameter_count(name):
    assert name in KNOWN_PARAMS, f"add the parameter count of the new preset {name!r} to KNOWN_PARAMS"
    trainable, moving, published = KNOWN_PARAMS[name]
    model = zoo.get(name)
    assert isinstance(model, convnet.Model) and model.built
    assert model.count_trainable_params() == trainable
    assert model.count_params() == trainable + moving
    assert summary_totals(model) == {"Total": trainable + moving, "Trainable": trainable, "Non-trainable": moving}
    assert sample_shape(model) == (28, 28, 1)
    assert model.layer_table()[-1]["output_shape"] == (None, 10)
    assert zoo.get(name.upper()).count_params() == trainable + moving  # names are case-insensitive
    if published is not None:
        assert zoo.get(name, input_shape=PUBLISHED_SHAPE.get(name, (28, 28, 1))).count_trainable_params() == published


def test_resnet20_is_the_papers_network():
    """Option A: 19 convolutions plus the classifier (20 weighted layers), every one followed by BN, no 1x1
    projection anywhere; the paper's 0.27 M parameters for CIFAR-10; 32 -> 16 -> 8 through the stages."""
    model = zoo.get("resnet20", input_shape=(32, 32, 3))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 19 and kinds.count("BatchNormalization") == 19 and kinds.count("Dense") == 1
    assert all(layer.kernel_size == (3, 3) for layer in model.layers if type(layer).__name__ == "Conv2D")
    assert kinds.count("Add") == 9 and model.count_trainable_params() == resnet20_trainable() == 269_722
    shapes = {layer.name: row["output_shape"] for layer, row in zip(model.layers, model.layer_table())}
    assert shapes["stage1_block3_out"] == (None, 32, 32, 16)
    assert shapes["stage2_block1_pad"] == (None, 16, 16, 32) and shapes["stage3_block3_out"] == (None, 8, 8, 64)


def test_resnet20_shortcut_is_option_a_the_subsampled_identity_padded_with_zeros():
    model = zoo.get("resnet20")
    probe = convnet.Model(model.input, [model.get_layer("stage1_block3_out").output,
                                        model.get_layer("stage2_block1_pad").output])
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    before, shortcut = probe.predict(x, verbose=0)
    np.testing.assert_array_equal(shortcut[..., :16], before[:, ::2, ::2, :])  # (2, 14, 14, 16): every other pixel
    np.testing.assert_array_equal(shortcut[..., 16:], 0)  # the 16 new channels are zeros


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_takes_input_shape_and_classes(name):
    model = zoo.get(name, input_shape=(32, 32, 3), num_classes=100)  # CIFAR-100's shape
    assert sample_shape(model) == (32, 32, 3)
    with torch.no_grad():
        out = model(torch.rand(2, 32, 32, 3))
    assert tuple(out.shape) == (2, 100)
    np.testing.assert_allclose(out.sum(dim=1).numpy(), 1, rtol=1e-5)  # a softmax head
    odd = zoo.get(name, input_shape=(30, 28, 2), num_classes=5)  # non-square, 30 -> 15, an odd half
    with torch.no_grad():
        assert tuple(odd(torch.rand(1, 30, 28, 2)).shape) == (1, 5)


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_trains_one_step_and_round_trips_through_a_file(name, tmp_path):
    torch.manual_seed(0)
    model = zoo.get(name)
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
    assert type(restored) is type(model) and restored.get_config() == model.get_config()
    for restored_weight, weight in zip(restored.get_weights(), after):
        np.testing.assert_array_equal(restored_weight, weight)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("name", zoo.list_models())
def test_preset_takes_augmentation_layers_after_its_input(name):
    from convnet import augment
    model = zoo.get(name, augmentation=[augment.RandomFlip("horizontal", name="flip")])
    first = next(layer for layer in model.layers if type(layer).__name__ != "InputLayer")  # a Sequential lists none
    assert first.name == "flip"
    assert model.count_params() == zoo.get(name).count_params()


def test_list_models_by_pattern_and_unknown_names():
    names = zoo.list_models()
    assert names == sorted(names) and {"seed", "homl", "lenet5", "resnet20", "mobilenet", "fast"} <= set(names)
    assert zoo.list_models("res*") == ["resnet20"]
    assert zoo.list_models("nothing*") == []
    assert zoo.get_model is zoo.get  # the older name, for existing callers
    with pytest.raises(ValueError, match=r"`model`: unknown model 'resnet21'\. Did you mean 'resnet20' or 'lenet5'\? "
                                         r"Available: "
                                         + ", ".join(names)):
        zoo.get("resnet21")
    with pytest.raises(TypeError, match=r"`model` must be a string"):
        zoo.get(3)


@pytest.mark.parametrize("name", zoo.list_models())
def test_bad_shapes_and_class_counts_are_refused_naming_the_argument(name):
    with pytest.raises(ValueError, match=r"`input_shape` must be three positive ints \(height, width, channels\), "
                                         r"without the batch axis, e\.g\. \(28, 28, 1\)\. Received: "
                                         r"input_shape=\(28, 28\)"):
        zoo.get(name, input_shape=(28, 28))
    with pytest.raises(ValueError, match=r"Received: input_shape=\(None, 28, 28, 1\)"):
        zoo.get(name, input_shape=(None, 28, 28, 1))
    with pytest.raises(TypeError, match=r"`input_shape` must be a tuple \(height, width, channels\), e\.g\. "
                                        r"\(28, 28, 1\)\. Received: input_shape=28"):
        zoo.get(name, input_shape=28)
    with pytest.raises(ValueError, match=r"num_classes"):
        zoo.get(name, num_classes=1)
    with pytest.raises(TypeError, match=r"zoo\.get\(\) takes input_shape, num_classes and augmentation; "
                                        r"received classes"):
        zoo.get(name, classes=10)


def test_fast_trains_with_its_recipe_unless_told_otherwise():
    from convnet.runs.config import MODEL_RECIPES, RECIPES, TrainConfig
    assert set(MODEL_RECIPES) <= set(zoo.list_models()) and set(MODEL_RECIPES.values()) <= set(RECIPES)
    config = TrainConfig(model="fast").with_recipe()
    assert config.recipe == "fast"
    for key, value in RECIPES["fast"].items():
        assert getattr(config, key) == value, key
    assert config.precision == "auto"  # bf16 where native
    from convnet.runs.job import augmentation_layers
    flips = augmentation_layers(config.augment, (28, 28))
    assert [(type(layer).__name__, layer.mode) for layer in flips] == [("RandomFlip", "horizontal")]
    # options given on the command line win over the recipe; other models keep the plain defaults
    assert TrainConfig(model="FAST", epochs=1).with_recipe(keep={"epochs"}).epochs == 1
    assert TrainConfig(model="seed").with_recipe() == TrainConfig(model="seed")


def test_cli_train_model_fast_uses_the_fast_recipe(monkeypatch):
    """What `convnet train --model fast` hands to the training job (the job itself is replaced here)."""
    from convnet.cli.main import main
    from convnet.runs import job
    from convnet.runs.config import RECIPES
    seen = []

    class Stop(Exception):
        pass

    def fake_train(config, resume=False):
        seen.append(config)
        raise Stop  # before anything runs
    monkeypatch.setattr(job, "train", fake_train)
    with pytest.raises(Stop):
        main(["train", "--model", "fast", "--epochs", "2"])
    (config,) = seen
    assert config.model == "fast" and config.recipe == "fast" and config.epochs == 2  # the explicit option wins
    assert config.batch_size == RECIPES["fast"]["batch_size"] and config.optimizer == RECIPES["fast"]["optimizer"]


def test_doctests():
    assert doctest.testmod(zoo).failed == 0


@pytest.mark.parametrize("name, kinds", [("none", []), ("flip", ["RandomFlip"]), ("shift", ["RandomTranslation"]),
                                         ("flip-shift", ["RandomFlip", "RandomTranslation"])])
def test_each_augment_choice_gives_its_layers(name, kinds):
    from convnet.runs.config import AUGMENTATIONS
    from convnet.runs.job import augmentation_layers
    assert name in AUGMENTATIONS
    layers = augmentation_layers(name, (28, 28))
    assert [type(layer).__name__ for layer in layers] == kinds
    for layer in layers:
        if type(layer).__name__ == "RandomFlip":
            assert layer.mode == "horizontal"  # a left-right flip keeps a garment a garment
        else:  # shifts of up to 2 pixels, zeros coming in
            assert layer.height_factor == (-2 / 28, 2 / 28) and layer.fill_mode == "constant"
