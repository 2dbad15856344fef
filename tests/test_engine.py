"""The execution engine (precision, memory format, CUDA graphs), augmentation layers, schedules, TTA."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import convnet
from convnet import augment, layers, optimizers, schedules
from convnet.models import Sequential
from convnet.training import engine

from .conftest import tiny_cnn


def compiled(model, **kwargs):
    model.compile(optimizer=kwargs.pop("optimizer", "sgd"), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu", **kwargs)
    return model


# -- precision and engine selection ---------------------------------------------------------------------------
def test_auto_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    expected = "bfloat16" if engine.native_bf16(cpu) else "float32"
    assert engine.resolve_precision("auto", cpu) == expected
    assert engine.resolve_precision("float32", cpu) == "float32"


def test_bf16_where_it_is_only_emulated_is_refused(monkeypatch):
    monkeypatch.setattr(engine, "native_bf16", lambda device: False)
    with pytest.raises(ValueError, match=r"precision='bfloat16' is not native on this cpu device .* many times slower"):
        compiled(tiny_cnn(), precision="bfloat16")


def test_gpu_bf16_that_is_only_emulated_is_not_native(monkeypatch):
    """torch.cuda.is_bf16_supported() counts emulated bf16 (GPUs before Ampere) unless asked not to."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert engine.native_bf16(torch.device("cuda")) is False


def test_compiling_again_builds_a_new_engine(synthetic):
    """Compiled with cross-entropy (which fuses the softmax into the loss), then with MSE and a torch optimizer
    (nothing to rebuild): the MSE is computed on the softmax outputs, not on the logits the first engine used."""
    images, labels = synthetic
    model = compiled(tiny_cnn((12, 12, 1), 3))
    assert model.engine.fused == "softmax"
    model.compile(optimizer=torch.optim.SGD(model.parameters(), lr=0.01), loss="mse", device="cpu")  # no rebuild
    onehot = np.eye(3, dtype=np.float32)[labels[:64]]
    loss = model.evaluate(images[:64], onehot, verbose=0)
    probabilities = model.predict(images[:64], verbose=0)
    assert loss == pytest.approx(np.mean((probabilities - onehot) ** 2), rel=1e-5)
    assert model.engine.fused is None


def test_unknown_precision_and_jit_are_refused():
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'"):
        compiled(tiny_cnn(), precision="fp16")
    with pytest.raises(ValueError, match=r"unknown jit 'graph'\. Did you mean 'graphs'"):
        compiled(tiny_cnn(), jit="graph")
    with pytest.raises(ValueError, match=r"jit='graphs' needs a CUDA device; the model is on cpu"):
        compiled(tiny_cnn(), jit="graphs")


def test_engine_on_cpu_runs_eagerly_with_channels_last_kernels():
    model = compiled(tiny_cnn())
    description = engine.describe(model.engine)
    assert description["cuda_graphs"] is False and description["channels_last"] is True
    kernel = model.layers[0].kernel
    assert kernel.is_contiguous(memory_format=torch.channels_last)
    assert model.layers[0].get_weights()[0].shape == (3, 3, 1, 8)  # Keras layout unchanged


def test_engine_step_equals_a_hand_written_pytorch_step():
    """One SGD step through fit equals the same step written by hand in plain PyTorch (NCHW)."""
    convnet.utils.set_random_seed(0)
    model = Sequential([layers.Input(shape=(8, 8, 2)), layers.Conv2D(3, 3, padding="same", activation="relu"),
                        layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(4, activation="softmax")])
    compiled(model, optimizer=optimizers.SGD(learning_rate=0.5))
    x = np.random.default_rng(1).random((16, 8, 8, 2), dtype=np.float32)
    y = np.random.default_rng(2).integers(0, 4, 16)
    kernel, bias, dense_kernel, dense_bias = (torch.tensor(w, requires_grad=True) for w in model.get_weights())

    def reference_loss():
        images = torch.tensor(x).permute(0, 3, 1, 2)  # NCHW
        hidden = torch.relu(torch.nn.functional.conv2d(images, kernel.permute(3, 2, 0, 1), bias, padding=1))
        pooled = torch.nn.functional.max_pool2d(hidden, 2).permute(0, 2, 3, 1).reshape(16, -1)  # Keras's HWC order
        logits = pooled @ dense_kernel + dense_bias
        return torch.nn.functional.cross_entropy(logits, torch.tensor(y))

    loss = reference_loss()
    loss.backward()
    with torch.no_grad():
        expected = [w - 0.5 * w.grad for w in (kernel, bias, dense_kernel, dense_bias)]
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(loss.item(), rel=1e-5)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-6)


def test_bf16_autocast_path_trains_to_the_same_accuracy(monkeypatch, synthetic):
    """The bf16 path, forced on this CPU: the accuracy matches float32 after the same epochs (speed settings
    must not cost accuracy). On a CPU without native bf16 this path is slow, so the model is tiny."""
    images, labels = synthetic
    results = {}
    for precision in ("float32", "bfloat16"):
        monkeypatch.setattr(engine, "native_bf16", lambda device: True)
        convnet.utils.set_random_seed(0)
        model = compiled(tiny_cnn((12, 12, 1), 3), optimizer="adam", precision=precision)
        model.fit(images[:480], labels[:480], epochs=4, batch_size=32, verbose=0)
        assert model.engine.precision == precision
        results[precision] = model.evaluate(images[480:], labels[480:], verbose=0)[1]
    assert results["float32"] > 0.9
    assert abs(results["bfloat16"] - results["float32"]) <= 0.05


# -- schedules -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_onecycle_matches_pytorch_onecyclelr(anneal):
    total = 50
    ours = schedules.OneCycle(0.01, total_steps=total, pct_start=0.3, anneal=anneal)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.01)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=total, pct_start=0.3,
                                                    anneal_strategy=anneal, cycle_momentum=False)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    np.testing.assert_allclose([ours(step) for step in range(total)], rates, rtol=1e-6)


def test_cosine_decay_matches_keras_formula():
    schedule = schedules.CosineDecay(0.1, decay_steps=100, alpha=0.1, warmup_target=0.2, warmup_steps=10)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(5) == pytest.approx(0.15)
    assert schedule(10) == pytest.approx(0.2)
    assert schedule(60) == pytest.approx(0.2 * (0.9 * (1 + math.cos(math.pi * 0.5)) / 2 + 0.1))
    assert schedule(500) == pytest.approx(0.02)


def test_step_and_exponential_decay():
    assert [schedules.StepDecay(1.0, 10, 0.5)(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert schedules.ExponentialDecay(1.0, 10, 0.5)(5) == pytest.approx(0.5 ** 0.5)
    assert schedules.ExponentialDecay(1.0, 10, 0.5, staircase=True)(15) == 0.5


def test_fit_binds_and_follows_a_schedule_per_step(synthetic):
    images, labels = synthetic
    schedule = schedules.OneCycle(0.01)
    model = compiled(tiny_cnn((12, 12, 1), 3), optimizer=optimizers.Adam(learning_rate=schedule))
    seen = []
    spy = convnet.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: None,
                                           on_train_batch_end=lambda batch, logs: seen.append(model.learning_rate))
    model.fit(images, labels, batch_size=100, epochs=2, callbacks=[spy], verbose=0)
    assert schedule.total_steps == 12
    assert seen == pytest.approx([schedule(step) for step in range(12)])


def test_a_schedule_survives_save_and_load(tmp_path):
    model = compiled(tiny_cnn(), optimizer=optimizers.Nadam(learning_rate=schedules.CosineDecay(0.01, 500)))
    model.save(tmp_path / "m.convnet")
    restored = convnet.load_model(tmp_path / "m.convnet", device="cpu")
    assert isinstance(restored.optimizer.learning_rate, schedules.CosineDecay)
    assert restored.optimizer.learning_rate.decay_steps == 500


def test_cli_schedule_names():
    assert isinstance(schedules.from_name("onecycle", 0.01), schedules.OneCycle)
    assert isinstance(schedules.from_name("cosine", 0.01), schedules.CosineDecay)
    step = schedules.from_name("step", 0.01)
    step.bind(90)
    assert step(29) == pytest.approx(0.01) and step(30) == pytest.approx(0.001)
    with pytest.raises(ValueError, match=r"unknown schedule 'one-cycle'\. Did you mean 'onecycle'"):
        schedules.from_name("one-cycle", 0.01)


# -- augmentation layers ---------------------------------------------------------------------------------------
def _batch(n=64, h=8, w=8, c=1):
    return torch.arange(n * h * w * c, dtype=torch.float32).reshape(n, h, w, c)


@pytest.mark.parametrize("layer", [augment.RandomFlip(), augment.RandomTranslation(0.2, 0.2),
                                   augment.RandomRotation(0.1), augment.RandomErasing(1.0)])
def test_augmentations_are_identity_at_inference(layer):
    x = _batch()
    assert torch.equal(layer(x), x)


def test_random_flip_flips_about_half_of_the_samples_each_its_own_way():
    torch.manual_seed(0)
    x = _batch(n=400)
    out = augment.RandomFlip("horizontal").train()(x)
    flipped = torch.tensor([torch.equal(o, i.flip(1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all())
    assert 0.4 < flipped.float().mean() < 0.6


def test_random_translation_by_a_whole_pixel_count_is_an_exact_shift():
    x = torch.rand(5, 8, 8, 2)
    layer = augment.RandomTranslation((0.25, 0.25), (-0.125, -0.125), fill_mode="constant").train()  # +2 rows, -1 col
    out = layer(x)
    expected = torch.zeros_like(x)
    expected[:, 2:, :7] = x[:, :6, 1:]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_random_translation_fill_value():
    out = augment.RandomTranslation((0.5, 0.5), 0.0, fill_mode="constant", fill_value=7.0).train()(torch.zeros(2, 4, 4, 1))
    assert torch.allclose(out[:, :2], torch.full((2, 2, 4, 1), 7.0)) and torch.allclose(out[:, 2:], torch.zeros(2, 2, 4, 1))


def test_random_rotation_by_a_quarter_turn_matches_rot90():
    x = torch.rand(3, 6, 6, 1)
    out = augment.RandomRotation((0.25, 0.25), fill_mode="constant").train()(x)
    expected = torch.from_numpy(np.rot90(x.numpy(), k=-1, axes=(1, 2)).copy())  # counter-clockwise in image coords
    rot_other = torch.from_numpy(np.rot90(x.numpy(), k=1, axes=(1, 2)).copy())
    assert torch.allclose(out, expected, atol=1e-5) or torch.allclose(out, rot_other, atol=1e-5)


def test_random_crop_takes_windows_in_training_and_the_centre_at_inference():
    torch.manual_seed(0)
    x = _batch(n=50, h=10, w=10)
    layer = augment.RandomCrop(6, 4)
    centre = layer(x)
    torch.testing.assert_close(centre, x[:, 2:8, 3:7])
    layer.train()
    corners = set()
    for _ in range(30):  # one window per batch, as Keras 3: every image cut at the same place
        out = layer(x)
        assert out.shape == (50, 6, 4, 1)
        top, left = divmod(int(out[0, 0, 0, 0] - x[0, 0, 0, 0]), 10)
        torch.testing.assert_close(out, x[:, top:top + 6, left:left + 4])
        corners.add((top, left))
    assert all(0 <= top <= 4 and 0 <= left <= 6 for top, left in corners) and len(corners) > 1


def test_random_crop_larger_than_the_input_resizes_as_keras():
    model = Sequential([layers.Input(shape=(8, 8, 1)), augment.RandomCrop(9, 4)])
    assert model.output_shape == (None, 9, 4, 1)
    assert model(torch.zeros(2, 8, 8, 1)).shape == (2, 9, 4, 1)


def test_random_erasing_erases_one_rectangle_of_the_requested_area():
    torch.manual_seed(0)
    x = torch.ones(200, 20, 20, 1)
    out = augment.RandomErasing(factor=(1.0, 1.0), scale=(0.1, 0.2), fill_value=0.0).train()(x)
    erased = (out == 0).float().mean(dim=(1, 2, 3))
    assert erased.min() > 0.05 and erased.max() < 0.3
    rows = (out[..., 0] == 0).any(dim=2).sum(dim=1)
    cols = (out[..., 0] == 0).any(dim=1).sum(dim=1)
    assert torch.equal((out[..., 0] == 0).sum(dim=(1, 2)), rows * cols)  # each erased region is one rectangle
    assert torch.equal(augment.RandomErasing(factor=0.0).train()(x), x)


@pytest.mark.parametrize("make", [lambda: augment.RandomFlip(), lambda: augment.RandomErasing()])
def test_augmentation_of_non_image_input_is_refused(make):
    with pytest.raises(ValueError, match=r"expected a 4-D batch \(N, H, W, C\), received shape \(32, 10\)"):
        make()(torch.zeros(32, 10))


@pytest.mark.parametrize("make, message", [
    (lambda: augment.RandomFlip("diagonal"), r"unknown mode 'diagonal'"),
    (lambda: augment.RandomTranslation(1.5, 0), r"`height_factor` must be <= 1.0"),
    (lambda: augment.RandomTranslation(0.1, 0.1, fill_mode="mirror"), r"unknown fill_mode 'mirror'"),
    (lambda: augment.RandomRotation((0.2, 0.1)), r"lower bound must be <= upper bound"),
    (lambda: augment.RandomErasing(scale=(0.5, 0.1)), r"`scale` must be \(min, max\) with min <= max"),
    (lambda: augment.RandomCrop(0, 3), r"`height` must be >= 1"),
])
def test_augmentation_arguments_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_augmented_training_runs_and_saves(tmp_path, synthetic):
    images, labels = synthetic
    convnet.utils.set_random_seed(0)
    model = Sequential([layers.Input(shape=(12, 12, 1)), augment.RandomTranslation(0.1, 0.1), augment.RandomErasing(0.3),
                        layers.Conv2D(8, 3, activation="relu"), layers.GlobalAveragePooling2D(),
                        layers.Dense(3, activation="softmax")])
    compiled(model, optimizer="adam")
    model.fit(images, labels, epochs=3, batch_size=32, verbose=0)
    model.save(tmp_path / "aug.convnet")
    restored = convnet.load_model(tmp_path / "aug.convnet", device="cpu")
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))


# -- test-time augmentation -------------------------------------------------------------------------------------
def test_tta_averages_flipped_predictions(synthetic):
    images, labels = synthetic
    model = compiled(tiny_cnn((12, 12, 1), 3))
    plain = model.predict(images, verbose=0)
    flipped = model.predict(images[:, :, ::-1].copy(), verbose=0)
    np.testing.assert_allclose(model.predict(images, verbose=0, tta="hflip"), (plain + flipped) / 2, atol=1e-6)
    loss, accuracy = model.evaluate(images, labels, verbose=0, tta="hflip")
    averaged = (plain + flipped) / 2
    assert accuracy == pytest.approx(np.mean(averaged.argmax(1) == labels))
    assert loss == pytest.approx(-np.mean(np.log(np.clip(averaged[np.arange(600), labels], 1e-7, 1))), rel=1e-5)
    with pytest.raises(ValueError, match=r"`tta` must be None, 'hflip' or 'flips'"):
        model.predict(images, tta="rotate")
