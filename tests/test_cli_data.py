"""`convnet train --data` and `convnet evaluate --data`: training on your own images (a folder of class
folders, or an .npz file) from the command line, in-process, and one real process killed and resumed.

The folders are drawn here: 3 classes ("circle", "square", "stripe") of 12x12 grayscale PNGs, 20 per class
for training (plus an unreadable file and an empty one, planted) and 6 per class for testing.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convnet._internal.names import MODELS
from convnet.cli import main
from convnet.runs.config import TrainConfig, parse_image_size

from .conftest import tiny_cnn

CLASSES = ["circle", "square", "stripe"]
PLANTED = {"square/bad.png": b"not an image", "circle/empty.png": b""}  # the bad files of the training folder


def draw(folder: Path, per_class: int, seed: int, size: int = 12, mode: str = "L") -> Path:
    """`per_class` images of each class: noise with a bright square in the middle, a bright band on the left,
    or bright rows every third line."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)  # (H, W)
            if label == 0:
                pixels[3:9, 3:9] += 150
            elif label == 1:
                pixels[:, :4] += 180
            else:
                pixels[::3, :] += 190
            Image.fromarray(pixels).convert(mode).save(folder / name / f"{i:02d}.png")
    return folder


def run_main(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `convnet ARGV` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    train = draw(root / "train", 20, seed=0)
    for name, content in PLANTED.items():
        (train / name).write_bytes(content)
    return {"train": train, "test": draw(root / "test", 6, seed=1), "root": root}


@pytest.fixture(scope="module")
def folder_run(folders, tmp_path_factory):
    """One run on the training folder, tested on the test folder: 1 epoch of the seed CNN."""
    run = tmp_path_factory.mktemp("run") / "run"
    code, out, err = run_main("train", "--data", str(folders["train"]), "--test-data", str(folders["test"]),
                              "--epochs", "1", "--batch-size", "16", "--out", str(run), "--verbose", "2")
    assert code == 0, err
    return run, out


def test_a_folder_run_writes_the_model_with_class_names_and_the_bad_files(folder_run, folders):
    from convnet.models import load_model
    run, _ = folder_run
    assert {"model.convnet", "config.json", "metrics.json", "history.json", "bad_files.json"} <= set(os.listdir(run))
    bad = json.loads((run / "bad_files.json").read_text())
    assert sorted(item["path"] for item in bad) == sorted(str(folders["train"] / name) for name in PLANTED)
    assert {item["reason"] for item in bad} == {"the file is empty (0 bytes), not an image",
                                                "not an image Pillow can read (UnidentifiedImageError: no image "
                                                "format recognised)"}
    model = load_model(str(run / "model.convnet"))
    assert model.metadata["class_names"] == CLASSES
    assert model.metadata["preprocessing"] == {"scale": 1.0}  # the model's first layer rescales
    assert model.layers[0].__class__.__name__ == "Rescaling" and model.layers[0].scale == pytest.approx(1 / 255)
    assert model.metadata["data"]["path"] == str(folders["train"]) and model.metadata["data"]["image_size"] == [12, 12]
    assert model.input_shape == (None, 12, 12, 1) and model.output_shape == (None, 3)
    config = json.loads((run / "config.json").read_text())
    assert (config["data"], config["test_data"]) == (str(folders["train"]), str(folders["test"]))
    assert (config["image_size"], config["color_mode"], config["val_split"]) == ("12x12", "grayscale", 0.1)
    metrics = json.loads((run / "metrics.json").read_text())
    # 62 files, 2 bad: int(0.1 * 62) = 6 held out before the scan, of which none is bad here
    assert metrics["train_images"] + metrics["val_images"] == 60 and metrics["test_images"] == 18
    assert metrics["bad_files"] == 2 and metrics["class_names"] == CLASSES
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and "val_accuracy" in metrics


def test_a_folder_run_prints_the_folder_the_bad_files_and_the_test_accuracy(folder_run, folders):
    run, out = folder_run
    lines = out.splitlines()
    assert lines[0] == ("Reading the images at 12x12 (height x width), grayscale: the first image's (give "
                        "--image-size and --color-mode to choose)")
    assert "Found 62 files belonging to 3 classes." in lines and "Found 18 files belonging to 3 classes." in lines
    assert f"Skipped 2 image file(s) that cannot be used (all are listed in {run / 'bad_files.json'}):" in lines
    assert f"  {folders['train'] / 'circle' / 'empty.png'} (training): the file is empty (0 bytes), not an image" in lines
    assert any(line.startswith("Test accuracy: ") and "on 18 test images" in line for line in lines)
    assert f"Run saved in {run}: model.convnet, history.csv, history.json, metrics.json, config.json, " \
           f"bad_files.json, checkpoints/" in lines


def test_predict_speaks_the_folder_names_and_sees_the_pixels_training_saw(folder_run, folders):
    """An image file through `convnet predict`'s conversion gives the model the same numbers as the folder's
    batches did in training, and the answer is a class folder's name."""
    from convnet.cli.common import CommandImage, model_input
    from convnet.datasets import image_dataset_from_directory
    from convnet.models import load_model
    run, _ = folder_run
    path = folders["test"] / "stripe" / "03.png"
    code, out, err = run_main("predict", str(run / "model.convnet"), str(path), "--top-k", "3", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(path) and sorted(line.split()[1] for line in lines[1:]) == CLASSES
    model = load_model(str(run / "model.convnet"), device="cpu")
    test = image_dataset_from_directory(str(folders["test"]), image_size=12, color_mode="grayscale", shuffle=False,
                                        batch_size=None, verbose=False)
    x, _ = test.batch(epoch=0, index=test.file_paths.index(str(path)))
    pixels, note = model_input(model, CommandImage(path=str(path)))
    assert note is None and np.array_equal(pixels, x)  # 0-255, as the folder's batches
    shown = float(lines[1].split()[-1].rstrip("%")) / 100
    assert shown == pytest.approx(model.predict(x[None], verbose=0).max(), abs=6e-5)


def test_evaluate_on_a_folder_matches_the_runs_test_accuracy(folder_run, folders):
    run, _ = folder_run
    metrics = json.loads((run / "metrics.json").read_text())
    code, out, err = run_main("evaluate", str(run / "model.convnet"), "--data", str(folders["test"]), "--device", "cpu")
    assert code == 0, err
    assert out.startswith(f"{run / 'model.convnet'} on 18 images of {folders['test']}: ")
    assert f"accuracy {metrics['test_accuracy']:.4f}" in out and f"loss {metrics['test_loss']:.4f}" in out
    code, recorded, err = run_main("evaluate", str(run / "model.convnet"), "--device", "cpu")  # the run's test folder
    assert code == 0 and recorded == out, err


def test_evaluate_scales_a_folder_for_a_model_trained_on_scaled_pixels(folders, tmp_path):
    """A model whose metadata says pixels / 255 (the built-in datasets' runs) gets the folder's 0-255 batches
    times its scale."""
    from convnet.datasets import image_dataset_from_directory
    model = tiny_cnn((12, 12, 1), classes=3)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    model.metadata = {"class_names": CLASSES, "preprocessing": {"scale": 1 / 255}}
    model.save(str(tmp_path / "scaled.convnet"))
    code, out, err = run_main("evaluate", str(tmp_path / "scaled.convnet"), "--data", str(folders["test"]),
                              "--device", "cpu")
    assert code == 0, err
    x, y = image_dataset_from_directory(str(folders["test"]), image_size=12, color_mode="grayscale", shuffle=False,
                                        verbose=False).as_arrays()
    expected = model.evaluate(x.astype(np.float32) / 255, y, verbose=0, return_dict=True)
    assert f"accuracy {expected['accuracy']:.4f}, loss {expected['loss']:.4f}" in out


def test_evaluate_refuses_a_folder_of_other_classes(folder_run, tmp_path):
    run, _ = folder_run
    draw(tmp_path / "other", 1, seed=2)
    (tmp_path / "other" / "triangle").mkdir()  # a class the model does not know
    code, _, err = run_main("evaluate", str(run / "model.convnet"), "--data", str(tmp_path / "other"))
    assert code == 2
    assert err == (f"convnet evaluate: error: the class folders of {tmp_path / 'other'} differ from the classes of "
                   f"{run / 'model.convnet'}, so a label would not mean the model's class: only in the model: none; "
                   f"only in the folder: ['triangle']\n")


def test_an_npz_run_uses_its_test_arrays_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = (rng.integers(0, 50, (40, 8, 8)) + 200 * y[:, None, None]).astype(np.uint8)  # (N, 8, 8): bright = class 1
    np.savez(tmp_path / "tiny.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:],
             class_names=np.array(["dark", "bright"]))
    code, out, err = run_main("train", "--data", str(tmp_path / "tiny.npz"), "--epochs", "1", "--batch-size", "10",
                              "--val-split", "0.2", "--out", str(tmp_path / "run"), "--verbose", "2")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["val_images"], metrics["test_images"]) == (24, 6, 10)
    assert metrics["class_names"] == ["dark", "bright"] and "bad_files.json" not in os.listdir(tmp_path / "run")
    assert "bad_files" not in metrics and "bad_files.json" not in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["image_size"], config["color_mode"], config["val_split"]) == ("8x8", "grayscale", 0.2)
    code, out, err = run_main("evaluate", str(tmp_path / "run" / "model.convnet"), "--data", str(tmp_path / "tiny.npz"))
    assert code == 0, err
    assert f"on 10 images of {tmp_path / 'tiny.npz'}: accuracy {metrics['test_accuracy']:.4f}" in out


@pytest.mark.slow
@pytest.mark.parametrize("preset", MODELS)
def test_every_preset_takes_the_folders_image_size_channels_and_classes(preset, folders, tmp_path):
    from convnet.models import load_model
    code, _, err = run_main("train", "--data", str(folders["test"]), "--model", preset, "--image-size", "36x32",
                            "--color-mode", "rgb", "--epochs", "1", "--batch-size", "4", "--val-split", "0.2",
                            "--out", str(tmp_path / "run"), "--verbose", "0")
    assert code == 0, err
    model = load_model(str(tmp_path / "run" / "model.convnet"))
    assert model.input_shape == (None, 36, 32, 3) and model.output_shape == (None, 3)
    assert model.metadata["class_names"] == CLASSES


def test_without_test_data_the_run_says_there_is_no_test_set(folders, tmp_path):
    code, out, err = run_main("train", "--data", str(folders["test"]), "--epochs", "1", "--val-split", "0.25",
                              "--model", "homl", "--out", str(tmp_path / "run"), "--verbose", "0")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] is None and metrics["test_images"] == 0 and metrics["val_images"] == 4
    assert metrics["test_set"].startswith("none: no --test-data was given")
    assert f"No test set (no --test-data): validation accuracy {metrics['val_accuracy']:.4f}" in out
    assert json.loads((tmp_path / "run" / "bad_files.json").read_text()) == []
    code, _, err = run_main("evaluate", str(tmp_path / "run" / "model.convnet"))  # no test folder to default to
    assert code == 2
    assert err == (f"convnet evaluate: error: {tmp_path / 'run' / 'model.convnet'} does not say which dataset it was "
                   f"trained on (it was trained on {folders['test']}, without --test-data); pass --data FOLDER (one "
                   f"subfolder per class) or FILE.npz, or --dataset NAME\n")


def test_the_report_of_a_folder_run_names_the_folder_and_its_classes(folder_run, folders, tmp_path):
    from convnet.inspection.report import build_report
    run, _ = folder_run
    result = build_report(run, out_dir=tmp_path / "report", device="cpu")
    metrics = json.loads((run / "metrics.json").read_text())
    assert result.test_images == metrics["test_images"] == 18
    assert result.accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert [row.name for row in result.per_class] == CLASSES
    page = Path(result.html).read_text(encoding="utf-8")
    assert f"seed on {folders['train'].name}, 1 epoch(s); test accuracy" in page


def test_the_report_of_a_run_without_test_data_scores_the_validation_split(folders, tmp_path):
    from convnet.inspection.report import build_report
    code, _, err = run_main("train", "--data", str(folders["test"]), "--epochs", "1", "--val-split", "0.25",
                            "--model", "homl", "--out", str(tmp_path / "run"), "--verbose", "0")
    assert code == 0, err
    result = build_report(tmp_path / "run", device="cpu")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result.test_images == metrics["val_images"] == 4
    assert result.accuracy == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert "validation (no test set) accuracy" in Path(result.html).read_text(encoding="utf-8")


def test_augmentation_layers_apply_to_a_folder_as_to_its_arrays(folders):
    """The issue's "augmentation applies to folder datasets as to arrays, on the device": the layers are part
    of the model, so a folder and its images as arrays, in the same order, train to the same weights."""
    import torch

    import convnet
    from convnet import augment, layers
    from convnet.datasets import image_dataset_from_directory

    data = image_dataset_from_directory(folders["test"], image_size=(12, 12), color_mode="grayscale", batch_size=6,
                                        shuffle=False, verbose=False)
    x, y = data.as_arrays()

    def trained(*inputs, augmented=True, **options):
        torch.manual_seed(0)
        augmentation = [augment.RandomFlip(), augment.RandomTranslation(0.2, 0.2)] if augmented else []
        model = convnet.Sequential([layers.Input((12, 12, 1)), layers.Rescaling(1 / 255), *augmentation,
                                    layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                                    layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu")
        torch.manual_seed(1)  # the augmentation layers draw from it
        model.fit(*inputs, epochs=2, verbose=0, **options)
        return model.get_weights()

    from_folder, from_arrays = trained(data), trained(x, y, batch_size=6, shuffle=False)
    assert all(np.array_equal(a, b) for a, b in zip(from_folder, from_arrays))
    plain = trained(data, augmented=False)
    assert not all(np.array_equal(a, b) for a, b in zip(from_folder, plain))  # the layers changed what was learnt


def test_train_data_with_augmentation_puts_the_layers_after_the_rescaling(folders, tmp_path):
    from convnet.models import load_model
    code, _, err = run_main("train", "--data", str(folders["test"]), "--augment", "flip-shift", "--epochs", "1",
                            "--model", "homl", "--out", str(tmp_path / "run"), "--verbose", "0")
    assert code == 0, err
    model = load_model(str(tmp_path / "run" / "model.convnet"), device="cpu")
    assert [type(layer).__name__ for layer in model.layers[:3]] == ["Rescaling", "RandomFlip", "RandomTranslation"]


def test_image_size_is_height_by_width_and_defaults_to_the_first_image(tmp_path):
    from convnet.runs.job import load_data, resolve_data
    draw(tmp_path / "rgb", 4, seed=3, size=10, mode="RGB")
    assert parse_image_size("64x48") == (64, 48) and parse_image_size("28") == (28, 28)
    config = resolve_data(TrainConfig(data=str(tmp_path / "rgb"), image_size="16x8"))
    assert (config.image_size, config.color_mode) == ("16x8", "rgb")  # an RGB first image: rgb
    assert load_data(config).input_shape == (16, 8, 3)
    config = resolve_data(TrainConfig(data=str(tmp_path / "rgb"), color_mode="grayscale"))
    assert (config.image_size, config.color_mode, config.val_split) == ("10x10", "grayscale", 0.1)


def test_the_validation_split_is_disjoint_and_seeded_and_0_means_none(folders):
    from convnet.datasets import image_dataset_from_directory
    from convnet.runs.job import load_data, resolve_data
    config = resolve_data(TrainConfig(data=str(folders["train"]), val_split=0.2, seed=5, batch_size=8))
    data = load_data(config)
    train, validation = set(data.train.file_paths), set(data.validation.file_paths)
    planted = {str(folders["train"] / name) for name in PLANTED}
    assert not train & validation and len(train | validation) == 60 and not (train | validation) & planted
    keras_split = image_dataset_from_directory(str(folders["train"]), image_size=12, color_mode="grayscale", seed=5,
                                               validation_split=0.2, subset="validation", verbose=False)
    assert validation == set(keras_split.file_paths)  # the run's seed decides the split
    none = load_data(resolve_data(TrainConfig(data=str(folders["train"]), val_split=0.0)))
    assert none.validation is None and none.counts == {"train_images": 60, "val_images": 0, "test_images": 0}


def test_resume_refuses_other_data_and_accepts_the_same_folder_by_another_path(folder_run, folders, monkeypatch):
    run, _ = folder_run
    code, _, err = run_main("train", "--resume", str(run), "--data", str(folders["test"]))
    assert code == 2
    assert err.startswith(f"convnet train: error: --resume {run} continues that run with the settings it was started "
                          f"with; --data {folders['test']} (the run has {folders['train']})")
    monkeypatch.chdir(folders["root"])
    from convnet.cli.main import _check_resume_options
    from convnet.runs.config import load_config
    _check_resume_options(str(run), load_config(str(run)), {"data": "train", "test_data": "./test"})  # no error


def npz_split(tmp_path: Path, n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(the training x, the validation x) that `convnet train --data FILE.npz --val-split FRACTION` uses."""
    from convnet.runs.job import load_data, resolve_data
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2)  # image i holds 4i .. 4i + 3 (floats above 1: as given)
    path = tmp_path / f"split-{n}.npz"
    np.savez(path, x_train=x, y_train=np.arange(n) % 2, x_test=x[:2], y_test=np.array([0, 1]))
    data = load_data(resolve_data(TrainConfig(data=str(path), val_split=fraction)))
    return data.train[0][..., 0], data.validation[0][..., 0]  # (N, 2, 2) each


SPLITS = [(30, 0.2), (31, 0.1), (7, 0.3), (100, 0.33), (10, 0.7)]


@pytest.mark.parametrize("n, fraction", SPLITS)
def test_an_npz_split_is_kerass_fit_validation_split(tmp_path, n, fraction):
    """Keras 3's rule (keras/src/trainers/data_adapters/array_slicing.py, train_validation_split): the samples
    from floor(n * (1 - validation_split)) on validate, the ones before train, in their order."""
    import math
    split_at = math.floor(n * (1.0 - fraction))
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2)
    train, validation = npz_split(tmp_path, n, fraction)
    assert np.array_equal(train, x[:split_at]) and np.array_equal(validation, x[split_at:])


def test_npz_pixels_come_to_0_255_as_a_folder_gives_them(tmp_path):
    """uint8 pixels as they are; floats all within [0, 1] (scaled already) times 255; (N, H, W) gains a channel."""
    from convnet.runs.job import load_data, resolve_data
    unit = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 2, 2)  # (N, H, W)
    for x, expected in ((np.uint8(unit * 255), np.uint8(unit * 255)), (unit, unit * 255)):
        np.savez(tmp_path / "p.npz", x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x, y_test=np.array([0, 1, 0, 1]))
        data = load_data(resolve_data(TrainConfig(data=str(tmp_path / "p.npz"), val_split=0.0)))
        assert data.train[0].dtype == np.float32 and data.train[0].shape == (4, 2, 2, 1)
        assert np.allclose(data.train[0][..., 0], expected.astype(np.float32)) and data.validation is None


@pytest.mark.keras
def test_an_npz_split_matches_real_keras(tmp_path):
    pytest.importorskip("keras")
    from keras.src.trainers.data_adapters.array_slicing import train_validation_split
    for n, fraction in SPLITS:
        x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2)
        keras_train, keras_validation = train_validation_split(x, validation_split=fraction)
        train, validation = npz_split(tmp_path, n, fraction)
        assert np.array_equal(train, np.asarray(keras_train)) and np.array_equal(validation,
                                                                                 np.asarray(keras_validation))


def test_strict_refuses_before_training(folders, tmp_path):
    code, _, err = run_main("train", "--data", str(folders["train"]), "--strict", "--out", str(tmp_path / "run"),
                              "--verbose", "0")
    assert code == 2
    lines = err.splitlines()
    assert lines[0] == ("convnet train: error: `strict`: 2 image file(s) cannot be used, so nothing was trained "
                        "(without --strict they are skipped and listed in the run's bad_files.json); remove or "
                        "repair them:")
    assert sorted(line.split(": ")[0].strip() for line in lines[1:]) == sorted(str(folders["train"] / name)
                                                                               for name in PLANTED)
    assert not (tmp_path / "run" / "checkpoints").exists()


def bad_usage_cases(root: Path) -> list[tuple[list[str], str]]:
    train, test = str(root / "train"), str(root / "test")
    (root / "notes.txt").write_text("not images")
    (root / "one" / "cat").mkdir(parents=True, exist_ok=True)
    (root / "fewer" / "circle").mkdir(parents=True, exist_ok=True)
    (root / "fewer" / "dog").mkdir(parents=True, exist_ok=True)
    image_size = ("`image_size` must be HEIGHTxWIDTH in pixels (e.g. 64x48: height 64, width 48) or one number for "
                  "a square (e.g. 28). Received: image_size=")
    return [
        (["--data", str(root / "missing")], f"`data`: no such folder or file: {str(root / 'missing')!r}"),
        (["--data", str(root / "notes.txt")], "`data` must be a folder holding one subfolder of images per class, "
                                              "or an .npz file"),
        (["--data", train, "--image-size", "abc"], image_size + "'abc'"),
        (["--data", train, "--image-size", "0"], image_size + "'0'"),
        (["--data", train, "--image-size", "64x"], image_size + "'64x'"),
        (["--data", train, "--val-split", "1"], "`val_split` must be < 1.0. Received: val_split=1.0"),
        (["--data", train, "--val-split", "-0.1"], "`val_split` must be >= 0.0. Received: val_split=-0.1"),
        (["--test-data", test], "`test_data` goes with `data` (training on your own images), which is not given"),
        (["--strict"], "`strict` goes with `data`"),
        (["--data", train, "--dataset", "mnist"], "--dataset cannot be used with --data"),
        (["--data", train, "--val-size", "10"], "--val-size cannot be used with --data"),
        (["--data", train, "--limit", "10"], "`limit` takes the built-in datasets and .npz files"),
        (["--data", train, "--test-data", str(root / "fewer")],
         f"`test_data`: the class folders of {str(root / 'fewer')!r} differ from those of {train!r}, so a label would "
         f"not mean one class: only in the training folder: ['square', 'stripe']; only in the test folder: ['dog']"),
        (["--data", str(root / "one")], f"`data`: the folder {str(root / 'one')!r} must hold one subfolder of images "
                                        f"per class, two at least"),
        (["--data", train, "--color-mode", "cmyk"], "`color_mode`"),
        (["--data", train, "--nproc-per-node", "0"], "--nproc-per-node must be a positive number of processes"),
    ]


def test_bad_usage_exits_2_with_one_line(folders, capsys):
    for argv, message in bad_usage_cases(folders["root"]):
        code = main(["train", *argv, "--out", str(folders["root"] / "never")])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.startswith(f"convnet train: error: {message}"), (argv, err)
        assert len(err.splitlines()) == 1, err
    assert not (folders["root"] / "never").exists()


# A real process, killed and resumed

TIMEOUT_S = 120


def position(run: Path) -> int:
    """The global step of RUN/checkpoints/last.ckpt (from the JSON in its safetensors header), -1 without one."""
    try:
        with open(run / "checkpoints" / "last.ckpt", "rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            header = json.loads(stream.read(length))
    except FileNotFoundError:
        return -1
    return json.loads(header["__metadata__"]["convnet.config"])["state"]["global_step"]


@pytest.mark.slow
def test_a_killed_folder_run_resumes_to_the_uninterrupted_result(folders, tmp_path):
    command = [sys.executable, "-m", "convnet", "train", "--data", str(folders["train"]), "--test-data",
               str(folders["test"]), "--epochs", "3", "--batch-size", "8", "--checkpoint-minutes", "0",
               "--verbose", "2", "--seed", "3"]  # 7 steps an epoch, a checkpoint after each
    env = {key: value for key, value in os.environ.items() if key != "CONVNET_DEBUG"}
    reference = subprocess.run([*command, "--out", str(tmp_path / "reference")], env=env, capture_output=True,
                               text=True, timeout=TIMEOUT_S)
    assert reference.returncode == 0, reference.stderr
    run = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([*command, "--out", str(run)], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + TIMEOUT_S
    while position(run) < 3:  # mid-epoch 1
        assert process.poll() is None, (tmp_path / "killed.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=TIMEOUT_S) == -signal.SIGKILL
    assert not (run / "model.convnet").exists()
    resumed = subprocess.run([sys.executable, "-m", "convnet", "train", "--resume", str(run)], env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout and position(run) == 21
    assert (run / "model.convnet").read_bytes() == (tmp_path / "reference" / "model.convnet").read_bytes()
    assert json.loads((run / "history.json").read_text()) == json.loads(
        (tmp_path / "reference" / "history.json").read_text())
    ours, theirs = (json.loads((folder / "metrics.json").read_text()) for folder in (run, tmp_path / "reference"))
    for key in ("test_loss", "test_accuracy", "val_accuracy", "train_images", "val_images", "test_images", "bad_files"):
        assert ours[key] == theirs[key], key


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "npz"])
def test_a_data_run_trains_data_parallel_as_in_one_process(kind, folders, tmp_path):
    """2 processes (gloo) on a folder (each reads its slice of every global batch) or an .npz file: the same
    counts and class names as one process, and the same result up to the gradient sums' rounding (LeNet-5:
    no dropout or BatchNorm, whose ranks draw and normalise apart)."""
    if kind == "npz":
        rng = np.random.default_rng(0)
        y = np.arange(80) % 3
        x = (rng.integers(0, 50, (80, 32, 32)) + 90 * y[:, None, None]).astype(np.uint8)  # (N, 32, 32)
        np.savez(tmp_path / "tiny.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:],
                 class_names=np.array(CLASSES))
        data = ["--data", str(tmp_path / "tiny.npz")]
    else:
        data = ["--data", str(folders["train"]), "--test-data", str(folders["test"]), "--image-size", "32"]
    env = {key: value for key, value in os.environ.items() if key != "CONVNET_DEBUG"}
    command = [sys.executable, "-m", "convnet", "train", *data, "--model", "lenet5", "--epochs", "2", "--batch-size",
               "10", "--verbose", "0"]
    runs = {}
    for processes in (1, 2):
        launch = ["--nproc-per-node", "2"] if processes == 2 else []
        result = subprocess.run([*command, *launch, "--out", str(tmp_path / f"run{processes}")], env=env,
                                capture_output=True, text=True, timeout=TIMEOUT_S)
        assert result.returncode == 0, result.stderr
        runs[processes] = json.loads((tmp_path / f"run{processes}" / "metrics.json").read_text())
    assert (runs[1]["world_size"], runs[2]["world_size"]) == (1, 2)
    for key in ("train_images", "val_images", "test_images", "class_names"):
        assert runs[1][key] == runs[2][key], key
    assert runs[2]["test_accuracy"] == pytest.approx(runs[1]["test_accuracy"], abs=1 / runs[1]["test_images"])
    assert runs[2]["test_loss"] == pytest.approx(runs[1]["test_loss"], rel=1e-4)
