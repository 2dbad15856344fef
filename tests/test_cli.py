"""The `convnet` command line, in-process and as a real subprocess."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from convnet.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, fashion):
    """One real quick training run shared by the tests below: LeNet-5 on 1,000 images, 1 epoch."""
    folder = tmp_path_factory.mktemp("run")
    code = main(["train", "--model", "lenet5", "--limit", "1000", "--epochs", "1", "--test-limit", "300",
                 "--batch-size", "32", "--out", str(folder), "--verbose", "0"])
    assert code == 0
    return folder


def test_train_writes_the_run_folder(quick_run, capsys):
    assert sorted(os.listdir(quick_run)) == ["checkpoints", "config.json", "history.csv", "history.json",
                                             "metrics.json", "model.convnet"]
    assert sorted(os.listdir(quick_run / "checkpoints")) == ["best.ckpt", "last.ckpt"]
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["train_images"] == 900 and metrics["val_images"] == 100 and metrics["test_images"] == 300
    assert 0.3 < metrics["test_accuracy"] <= 1.0
    history = json.loads((quick_run / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    rows = list(csv.DictReader(open(quick_run / "history.csv")))
    assert len(rows) == 1 and float(rows[0]["val_accuracy"]) == pytest.approx(history["val_accuracy"][0])
    config = json.loads((quick_run / "config.json").read_text())
    assert config["model"] == "lenet5" and config["limit"] == 1000


def test_train_prints_validation_and_test_accuracy(tmp_path, fashion, capsys):
    code = main(["train", "--model", "lenet5", "--limit", "400", "--epochs", "1", "--test-limit", "100",
                 "--out", str(tmp_path / "r"), "--verbose", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Epoch 1/1" in out and "val_accuracy:" in out
    assert "Test accuracy: " in out and "on 100 test images" in out
    assert f"Run saved in {tmp_path / 'r'}" in out


def test_train_without_the_data_is_a_usage_error_that_writes_nothing(tmp_path, monkeypatch, capsys):
    """Missing dataset files are the user's input, not a failed write: exit 2, no advice about free space.
    Offline is a mirror on a local port that nothing listens on (port 9, discard), so no test downloads."""
    monkeypatch.setenv("CONVNET_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVNET_MIRROR", "http://127.0.0.1:9/")
    code = main(["train", "--model", "lenet5", "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("convnet train: error: fashion-mnist: the files") and "free some space" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_evaluate_uses_the_dataset_recorded_in_the_model(quick_run, capsys):
    assert main(["evaluate", str(quick_run / "model.convnet"), "--limit", "300", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert "on 300 fashion-mnist test images" in out
    assert f"accuracy {metrics['test_accuracy']:.4f}" in out


def test_predict_shows_top_k_class_names_and_conversions(quick_run, fashion, tmp_path, capsys):
    from PIL import Image
    (_, _), (x_test, _) = fashion
    path = tmp_path / "boot.png"
    Image.fromarray(x_test[0]).convert("RGB").resize((56, 56)).save(path)
    assert main(["predict", str(quick_run / "model.convnet"), str(path), "--top-k", "2", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}  (note: resized from 56x56 to 28x28, converted from 3 to 1 channel(s) to fit the model)"
    assert lines[1].startswith("  1. ") and lines[2].startswith("  2. ") and len(lines) == 3
    names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
    assert lines[1].split()[1] in {n.split()[0] for n in names} and lines[1].endswith("%")


def test_summary_of_a_preset_and_of_a_file(quick_run, capsys):
    assert main(["summary", "--model", "seed"]) == 0
    assert "Total params: 1,406,218" in capsys.readouterr().out
    assert main(["summary", str(quick_run / "model.convnet")]) == 0
    assert "Total params: 61,706" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "sed"], "convnet train: error: `model`: unknown model 'sed'. Did you mean 'seed'?"),
    (["train", "--epochs", "0"], "convnet train: error: `epochs` must be >= 1. Received: epochs=0"),
    (["train", "--dataset", "cifar"], "convnet train: error: `dataset`: unknown dataset 'cifar'"),
    (["train", "--optimizer", "adamm"], "convnet train: error: `optimizer`: unknown optimizer 'adamm'. Did you mean"),
    (["train", "--lr", "-1"], "convnet train: error: `learning_rate` must be > 0.0"),
    (["summary"], "convnet summary: error: summary takes a model file or --model NAME"),
    (["summary", "--model", "vgg"], "convnet summary: error: `model`: unknown model 'vgg'"),
    (["predict", "nothing.convnet", "x.png"], "convnet predict: error: nothing.convnet: no such file"),
])
def test_bad_usage_exits_2_with_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err


def test_device_cuda_without_a_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["train", "--device", "cuda"]) == 2
    assert "CUDA is not available on this machine" in capsys.readouterr().err


def test_unwritable_output_folder_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", "--out", str(blocker / "run"), "--limit", "100"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"convnet train: error: the output folder '{blocker / 'run'}' is not writable")
    assert "Epoch" not in captured.out and blocker.read_text() == "not a folder"


def test_predict_refuses_non_images_and_non_models(quick_run, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["predict", str(quick_run / "model.convnet"), str(text)]) == 2
    assert "not an image Pillow can read" in capsys.readouterr().err
    assert main(["predict", str(text), str(text)]) == 2
    assert "not a convnet file" in capsys.readouterr().err


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "ten"])
    assert exit_info.value.code == 2


def test_real_subprocess_help_version_and_train(tmp_path, fashion):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    version = subprocess.run([sys.executable, "-m", "convnet", "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("convnet ")
    help_text = subprocess.run([sys.executable, "-m", "convnet", "train", "--help"], capture_output=True, text=True)
    assert "--batch-size" in help_text.stdout and "--limit" in help_text.stdout
    run = subprocess.run([sys.executable, "-m", "convnet", "train", "--model", "lenet5", "--limit", "300",
                          "--epochs", "1", "--test-limit", "100", "--out", str(tmp_path / "sub")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Test accuracy:" in run.stdout
    assert (tmp_path / "sub" / "model.convnet").exists()
    bad = subprocess.run([sys.executable, "-m", "convnet", "train", "--model", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert np.isfinite(json.loads((tmp_path / "sub" / "metrics.json").read_text())["test_loss"])


# field: (the text given on the command line, the value the TrainConfig field must receive)
OPTION_SAMPLES = {
    "model": ("lenet5", "lenet5"), "dataset": ("shapes", "shapes"), "epochs": ("3", 3), "batch_size": ("64", 64),
    "optimizer": ("adam", "adam"), "lr": ("0.01", 0.01), "seed": ("7", 7), "limit": ("500", 500),
    "val_size": ("100", 100), "test_limit": ("50", 50), "device": ("cpu", "cpu"), "data_dir": ("/d", "/d"),
    "out": ("runs/x", "runs/x"), "verbose": ("2", 2), "checkpoint_minutes": ("1", 1.0), "schedule": ("cosine", "cosine"),
    "label_smoothing": ("0.1", 0.1), "augment": ("flip-shift", "flip-shift"), "precision": ("auto", "auto"),
    "recipe": ("fast", "fast"),
}
# the options of your own images (None: a switch, given without text); validated in tests/test_cli_data.py
DATA_SAMPLES = {"data": ("imgs", "imgs"), "test_data": ("t", "t"), "image_size": ("64x48", "64x48"),
                "color_mode": ("rgb", "rgb"), "val_split": ("0.2", 0.2), "strict": (None, True)}


def train_parser():
    import argparse

    from convnet.cli.main import build_parser
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices["train"]


def test_every_train_config_field_is_an_option_of_its_type():
    """One --flag per TrainConfig field, its text converted to the field's type (an int stays an int, a float
    option given "1" becomes 1.0); options not given are left out, so recipes can tell them from defaults."""
    import dataclasses

    from convnet.runs.job import TrainConfig
    fields = {item.name: item for item in dataclasses.fields(TrainConfig)}
    samples = {**OPTION_SAMPLES, **DATA_SAMPLES}
    assert set(samples) == set(fields)  # a new field needs a sample here
    argv = [part for name, (text, _) in samples.items()
            for part in ("--" + name.replace("_", "-"), *([] if text is None else [text]))]
    args = train_parser().parse_args(argv)
    for name, (_, expected) in samples.items():
        value = getattr(args, name)
        assert value == expected and type(value) is type(expected), (name, value)
    assert TrainConfig(**{name: getattr(args, name) for name in OPTION_SAMPLES}).validate()
    assert not any(hasattr(train_parser().parse_args([]), name) for name in fields)
    assert train_parser().parse_args(["--verbose", "auto"]).verbose == "auto"  # int | str: text unless digits


@pytest.mark.parametrize("argv", [["--epochs", "2.5"], ["--lr", "fast"], ["--limit", "many"], ["--seed", "1e3"]])
def test_options_of_the_wrong_type_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[0]}: invalid" in capsys.readouterr().err


def test_train_help_shows_each_option_with_its_default_and_choices():
    from convnet.runs.job import AUGMENTATIONS, RECIPES
    text = " ".join(train_parser().format_help().split())  # unwrapped
    assert "--epochs EPOCHS passes over the training images (default: 10)" in text
    assert "--augment {" + ",".join(AUGMENTATIONS) + "}" in text and "--recipe {" + ",".join(RECIPES) + "}" in text
    assert "--precision {auto,float32,bfloat16}" in text
    assert "--lr LR learning rate (default: the optimizer's Keras default" in text  # None: no "(default: None)"


def test_augment_and_recipe_choices_are_checked_by_the_config_with_suggestions(capsys):
    assert main(["train", "--augment", "flip-shfit"]) == 2
    assert capsys.readouterr().err.startswith("convnet train: error: `augment`: unknown augment 'flip-shfit'. "
                                              "Did you mean 'flip-shift'")
    assert main(["train", "--recipe", "fsat"]) == 2
    assert capsys.readouterr().err.startswith("convnet train: error: `recipe`: unknown recipe 'fsat'. "
                                              "Did you mean 'fast'")


def test_a_field_type_the_command_line_cannot_read_is_refused():
    import argparse
    import dataclasses

    from convnet.cli.main import add_dataclass_options

    @dataclasses.dataclass
    class Settings:
        sizes: tuple = (1, 2)

    with pytest.raises(TypeError, match="cannot read field `sizes`"):
        add_dataclass_options(argparse.ArgumentParser(), Settings)
