"""Never lose a training run, never trust a damaged file (issue 5).

Real `convnet train` processes are killed (SIGKILL) at chosen and at random points, interrupted with
Ctrl-C (SIGINT), pointed at unwritable folders and full disks, and resumed; the resumed run must end
with the same bytes as an uninterrupted run of the same command. Damaged model and checkpoint files
must be refused with a ValueError (exit code 2 on the command line) that names the file and the problem.

The command below trains LeNet-5 on 1,080 Fashion-MNIST images for 3 epochs of 17 steps, with a
checkpoint after every step (`--checkpoint-minutes 0`): about 6 s per process on two CPU cores, of which
about 4 s are Python and PyTorch starting up. One slow test does the same with the seed CNN (dropout) and
flip-shift augmentation, killed in the middle of an epoch: its random numbers must resume exactly too.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import convnet
from convnet import layers, zoo
from convnet._internal.fileformat import decode, encode
from convnet.training import checkpoint

from .conftest import fashion_or_skip

TRAIN = ["train", "--model", "lenet5", "--limit", "1200", "--epochs", "3", "--test-limit", "200",
         "--batch-size", "64", "--checkpoint-minutes", "0", "--verbose", "2", "--seed", "0"]
STEPS = 17  # per epoch: 1200 images - 120 held out for validation = 1080, in batches of 64
EPOCHS = 3
TIMEOUT_S = 120  # for one process; a healthy one takes about 6 s


# Running and watching `convnet train`

def convnet_env() -> dict[str, str]:
    fashion_or_skip()  # the commands under test train on Fashion-MNIST
    env = dict(os.environ)
    env.pop("CONVNET_DEBUG", None)  # the command's own error handling is under test
    return env


def run_convnet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convnet", *args], env=convnet_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def start_convnet(*args: str, log: Path) -> subprocess.Popen:
    """`convnet ...` in the background, its stdout and stderr going to `log`.out and `log`.err."""
    with open(f"{log}.out", "w") as stdout, open(f"{log}.err", "w") as stderr:  # the child keeps its copies
        return subprocess.Popen([sys.executable, "-m", "convnet", *args], env=convnet_env(), stdout=stdout,
                                stderr=stderr)


def position(run: Path) -> tuple[int, int, int] | None:
    """(epoch, step, global_step) that RUN/checkpoints/last.ckpt records, read from the JSON in its
    safetensors header; None while there is no checkpoint."""
    try:  # last.ckpt is replaced by a rename: this reads the old file or the new one, never half of one
        with open(run / "checkpoints" / checkpoint.LAST, "rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            header = json.loads(stream.read(length))
    except FileNotFoundError:
        return None
    state = json.loads(header["__metadata__"]["convnet.config"])["state"]
    return state["epoch"], state["step"], state["global_step"]


def wait_for(process: subprocess.Popen, condition, what: str) -> None:
    """Poll `condition()` every 2 ms until it holds; fail if the process ends first or takes too long."""
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"convnet train ended (exit code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    process.send_signal(sig)
    return process.wait(timeout=TIMEOUT_S)


def reached(run: Path, global_step: int):
    return lambda: (position(run) or (0, 0, -1))[2] >= global_step


def resume(run: Path) -> subprocess.CompletedProcess:
    result = run_convnet("train", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    return result


def re_search(pattern: str, text: str) -> tuple[str, ...]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in:\n{text}"
    return match.groups()


def assert_same_run(run: Path, reference: Path) -> None:
    """Bitwise: the same model file (weights, architecture, metadata), history and test results."""
    ours, theirs = (load_safetensors((folder / "model.convnet").read_bytes()) for folder in (run, reference))
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), f"weight {key} differs from the uninterrupted run"
    assert (run / "model.convnet").read_bytes() == (reference / "model.convnet").read_bytes()
    assert json.loads((run / "history.json").read_text()) == json.loads((reference / "history.json").read_text())
    metrics, expected = (json.loads((folder / "metrics.json").read_text()) for folder in (run, reference))
    for key in ("test_loss", "test_accuracy", "epochs_run", "train_images", "val_images", "test_images"):
        assert metrics[key] == expected[key], key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run that every interrupted one must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = run_convnet(*TRAIN, "--out", str(run))
    assert result.returncode == 0, result.stderr
    assert position(run) == (EPOCHS, 0, EPOCHS * STEPS)
    return run


@pytest.mark.slow
def test_two_uninterrupted_runs_are_identical(reference, tmp_path):
    assert run_convnet(*TRAIN, "--out", str(tmp_path / "run")).returncode == 0
    assert_same_run(tmp_path / "run", reference)


# 1. SIGKILL at chosen and random points, then --resume

KILL_POINTS = {  # name: the global step the checkpoint must report before the kill (None: see the test)
    "epoch1-step3": 3,
    "epoch-boundary": STEPS,                  # the end-of-epoch-1 checkpoint: epoch 1, step 0
    "epoch3-step14": 2 * STEPS + 14,
    "after-the-last-epoch": EPOCHS * STEPS,   # while the test set is evaluated and the model saved
}


@pytest.mark.parametrize("name", [pytest.param("epoch1-step3", marks=pytest.mark.slow), "epoch-boundary",
                                  pytest.param("epoch3-step14", marks=pytest.mark.slow),
                                  pytest.param("after-the-last-epoch", marks=pytest.mark.slow)])
def test_sigkill_then_resume_gives_the_same_model(name, reference, tmp_path):
    run = tmp_path / "run"
    process = start_convnet(*TRAIN, "--out", str(run), log=tmp_path / "killed")
    wait_for(process, reached(run, KILL_POINTS[name]), f"a checkpoint at global step {KILL_POINTS[name]}")
    code = kill(process)
    assert code == -signal.SIGKILL or (name == "after-the-last-epoch" and code == 0)  # it may have just finished
    killed_at = position(run)
    decode(str(run / "checkpoints" / checkpoint.LAST), "checkpoint")  # intact
    resume(run)
    assert position(run) == (EPOCHS, 0, EPOCHS * STEPS), f"killed at {killed_at}"
    assert_same_run(run, reference)


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_then_resume_starts_over(reference, tmp_path):
    run = tmp_path / "run"
    process = start_convnet(*TRAIN, "--out", str(run), log=tmp_path / "killed")
    wait_for(process, (run / "config.json").exists, "the run folder's config.json")
    assert kill(process) == -signal.SIGKILL
    assert position(run) is None
    resume(run)
    assert_same_run(run, reference)


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_sigkill_at_a_random_time_then_resume_gives_the_same_model(seed, reference, tmp_path):
    """The kill lands anywhere in training, a checkpoint write included (one every ~20 ms)."""
    run = tmp_path / "run"
    delay = random.Random(seed).uniform(0.0, 1.0)  # training itself takes about 1.2 s
    process = start_convnet(*TRAIN, "--out", str(run), log=tmp_path / "killed")
    wait_for(process, reached(run, 1), "the first checkpoint")
    time.sleep(delay)
    process.kill()
    process.wait(timeout=TIMEOUT_S)
    killed_at = position(run)
    decode(str(run / "checkpoints" / checkpoint.LAST), "checkpoint")  # intact, wherever the kill landed
    resume(run)
    assert position(run) == (EPOCHS, 0, EPOCHS * STEPS), f"killed {delay:.3f} s in, at {killed_at}"
    assert_same_run(run, reference)


def test_sigkill_twice_resumes_twice(reference, tmp_path):
    run = tmp_path / "run"
    first = start_convnet(*TRAIN, "--out", str(run), log=tmp_path / "first")
    wait_for(first, reached(run, 10), "global step 10")
    assert kill(first) == -signal.SIGKILL
    second = start_convnet("train", "--resume", str(run), log=tmp_path / "second")
    wait_for(second, reached(run, 2 * STEPS + 5), "global step 39")
    assert kill(second) == -signal.SIGKILL
    resume(run)
    assert_same_run(run, reference)


# The seed CNN, with dropout and random flips and shifts: the random numbers must resume exactly as well
SEED_TRAIN = ["train", "--model", "seed", "--augment", "flip-shift", "--limit", "512", "--epochs", "2",
              "--test-limit", "100", "--batch-size", "64", "--checkpoint-minutes", "0", "--verbose", "2", "--seed", "0"]
SEED_STEPS = 8  # per epoch: 512 images - 51 held out for validation = 461, in batches of 64 (the last of 13)


@pytest.mark.slow
def test_seed_cnn_with_dropout_and_augmentation_killed_mid_epoch_resumes_bitwise(tmp_path):
    """Dropout masks, flips and shifts draw random numbers at every step: killed in the middle of epoch 2 and
    resumed, the run must end with the same bytes as the uninterrupted one. About 60 s on two busy cores."""
    reference = tmp_path / "reference"
    result = run_convnet(*SEED_TRAIN, "--out", str(reference))
    assert result.returncode == 0, result.stderr
    assert position(reference) == (2, 0, 2 * SEED_STEPS)
    run = tmp_path / "run"
    process = start_convnet(*SEED_TRAIN, "--out", str(run), log=tmp_path / "killed")
    wait_for(process, reached(run, SEED_STEPS + 3), f"a checkpoint at global step {SEED_STEPS + 3}")
    assert kill(process) == -signal.SIGKILL
    killed_at = position(run)
    assert killed_at is not None and killed_at[0] == 1 and 0 < killed_at[1] < SEED_STEPS, killed_at  # mid-epoch 2
    resume(run)
    assert position(run) == (2, 0, 2 * SEED_STEPS), f"killed at {killed_at}"
    assert_same_run(run, reference)


# 2. Ctrl-C (SIGINT)

def test_sigint_saves_a_checkpoint_says_how_to_resume_and_exits_130(reference, tmp_path):
    run = tmp_path / "run"
    process = start_convnet(*TRAIN, "--out", str(run), log=tmp_path / "interrupted")
    wait_for(process, reached(run, 5), "global step 5")
    assert kill(process, signal.SIGINT) == 130
    stderr = Path(f"{tmp_path / 'interrupted'}.err").read_text()
    assert f"Resume with: convnet train --resume {run}" in stderr
    epoch, step = map(int, re_search(r"Interrupted at epoch (\d+), step (\d+)\.", stderr))
    assert position(run) == (epoch - 1, step, (epoch - 1) * STEPS + step)  # the step was finished, then saved
    assert 5 <= (epoch - 1) * STEPS + step < EPOCHS * STEPS
    assert not (run / "model.convnet").exists()
    resume(run)
    assert_same_run(run, reference)


def test_second_sigint_aborts_at_once_and_keeps_the_checkpoint(tmp_path):
    """The first Ctrl-C asks for a checkpoint at the end of the step; a second one, sent once the first was
    handled (two signals sent together arrive as one), ends the command at once. Steps of 1080 images, so
    that the second lands before the step ends."""
    run, err = tmp_path / "run", Path(f"{tmp_path / 'aborted'}.err")
    process = start_convnet(*TRAIN, "--batch-size", "1080", "--out", str(run), log=tmp_path / "aborted")
    wait_for(process, reached(run, 1), "the checkpoint after the first step")
    process.send_signal(signal.SIGINT)
    wait_for(process, lambda: "Interrupted: finishing the current step" in err.read_text(), "the first SIGINT's notice")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=TIMEOUT_S) == 130
    stderr = err.read_text()
    assert stderr.strip().splitlines()[-1] == "convnet train: interrupted", stderr  # not the save-and-stop path
    assert "Resume with" not in stderr and not (run / "model.convnet").exists()
    decode(str(run / "checkpoints" / checkpoint.LAST), "checkpoint")  # the last one written is intact


# 3. Damaged files: load_model, fit(resume=True) and `convnet train --resume`

def small_model() -> convnet.Sequential:
    model = convnet.Sequential([layers.Input(shape=(8, 8, 1)), layers.Conv2D(4, 3, activation="relu", name="conv"),
                                layers.Flatten(), layers.Dense(3, activation="softmax", name="dense")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    return model


SMALL_X = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
SMALL_Y = np.arange(40) % 3


def fit_small(folder: Path, resume: bool = False, epochs: int = 1) -> convnet.Sequential:
    convnet.utils.set_random_seed(0)
    model = small_model()
    model.fit(SMALL_X, SMALL_Y, batch_size=8, epochs=epochs, verbose=0, checkpoint_dir=str(folder), resume=resume)
    return model


class ExecutesCode:
    """A pickle that creates a folder when unpickled: loading must never get that far."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def header(data: bytes) -> tuple[int, dict]:
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8:8 + length])


def reencode(data: bytes, kind: str, tensors=None, config=None) -> bytes:
    """A well-formed file (valid checksums) whose tensors or configuration were changed by the callables."""
    loaded = dict(load_safetensors(data))
    loaded_config = json.loads(header(data)[1]["__metadata__"]["convnet.config"])
    return encode(tensors(loaded) if tensors else loaded, kind, config(loaded_config) if config else loaded_config)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x10]) + data[index + 1:]


def replace_in_header(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    length, _ = header(data)
    head = data[8:8 + length]
    assert old in head, old
    return data[:8] + head.replace(old, new, 1) + data[8 + length:]


def edit_checksum(data: bytes) -> bytes:
    digest = header(data)[1]["__metadata__"]["convnet.sha256"]
    return replace_in_header(data, digest.encode(), digest[::-1].encode())


def deep_json(data: bytes) -> bytes:
    text = b'{"__metadata__":{"convnet.format":"x"},"t":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return struct.pack("<Q", len(text)) + text


def first_tensor(tensors: dict, prefix: str = "") -> str:
    return sorted(key for key in tensors if key.startswith(prefix) and tensors[key].dim() >= 1)[0]


def truncate_tensor(tensors: dict, prefix: str) -> dict:
    key = first_tensor(tensors, prefix)
    return {**tensors, key: tensors[key].reshape(-1)[:-1].clone()}


def drop_tensor(tensors: dict, prefix: str) -> dict:
    key = first_tensor(tensors, prefix)
    return {k: v for k, v in tensors.items() if k != key}


def rename_class(config: dict, model_key: str) -> dict:
    config[model_key]["layers"][-1]["class_name"] = "Conv3D"
    return config


# name: (change the bytes of a good file of `kind`, the message expected after the file's path)
DAMAGE = {
    "empty": (lambda d, kind: b"", r"not a convnet file \(only 0 bytes; truncated or empty\)"),
    "truncated-length": (lambda d, kind: d[:5], r"only 5 bytes; truncated or empty"),
    "truncated-header": (lambda d, kind: d[:300], r"truncated file \(the header announces"),
    "truncated-tensors": (lambda d, kind: d[:-7], r"truncated file \(tensor .* ends past the end of the file\)"),
    "flipped-tensor-byte": (lambda d, kind: flip(d, len(d) - 3), r"the weights do not match the file's checksum"),
    "flipped-header-byte": (lambda d, kind: flip(d, 40), r"not a convnet file \(the header is not JSON\)"),
    "config-edited": (lambda d, kind: replace_in_header(d, b'\\"relu\\"', b'\\"tanh\\"'),
                      r"the configuration does not match the file's checksum"),
    "checksum-edited": (lambda d, kind: edit_checksum(d), r"the weights do not match the file's checksum"),
    "shape-in-header-edited": (lambda d, kind: replace_in_header(d, b'"shape":[3]', b'"shape":[2]'),
                               r"damaged tensor data"),
    "future-version": (lambda d, kind: replace_in_header(d, b'"convnet.version":"1"', b'"convnet.version":"7"'),
                       r"format version '7' is not supported"),
    "pickle": (lambda d, kind: pickle.dumps(ExecutesCode("executed")), r"not a convnet file \(no safetensors header"),
    "torch-save": (lambda d, kind: torch_save_bytes(), r"not a convnet file \(no safetensors header"),
    "hdf5": (lambda d, kind: b"\x89HDF\r\n\x1a\n" + bytes(4096), r"not a convnet file \(no safetensors header"),
    "plain-safetensors": (lambda d, kind: save_safetensors({"kernel": torch.zeros(3)}),
                          r"a safetensors file without convnet's metadata"),
    "deep-json": (lambda d, kind: deep_json(d), r"not a convnet file \(the header is not JSON\)"),
}
MODEL_DAMAGE = {
    **DAMAGE,
    "unknown-layer": (lambda d, kind: reencode(d, kind, config=lambda c: rename_class(c, "model")),
                      r"invalid architecture: unknown layer class 'Conv3D'"),
    "wrong-shape-weights": (lambda d, kind: reencode(d, kind, tensors=lambda t: truncate_tensor(t, "")),
                            r"weight '.*' has shape \(\d+,?\) in the file, the architecture expects \(\d+,?\)"),
    "missing-weights": (lambda d, kind: reencode(d, kind, tensors=lambda t: drop_tensor(t, "")),
                        r"the weights do not match the architecture \(missing: \['.*'\]"),
    "a-checkpoint": (lambda d, kind: None, r"this is a convnet checkpoint file, not a model file"),
}
CHECKPOINT_DAMAGE = {
    **DAMAGE,
    "unknown-layer": (lambda d, kind: reencode(d, kind, config=lambda c: rename_class(c, "model")),
                      r"the checkpoint is of another architecture than the model being trained"),
    "wrong-shape-weights": (lambda d, kind: reencode(d, kind, tensors=lambda t: truncate_tensor(t, "model/")),
                            r"weight '.*' has shape \(\d+,?\) in the file, the model expects \(\d+,?\)"),
    "missing-weights": (lambda d, kind: reencode(d, kind, tensors=lambda t: drop_tensor(t, "model/")),
                        r"the weights do not match the model \(missing: \['.*'\]"),
    "missing-optimizer-state": (lambda d, kind: reencode(d, kind, tensors=lambda t: drop_tensor(t, "optimizer/")),
                                r"invalid checkpoint|incomplete checkpoint"),
    "garbage-state": (lambda d, kind: reencode(d, kind, config=lambda c: {**c, "state": {**c["state"], "step": "x"}}),
                      r"incomplete checkpoint \(TypeError: expected a count, found 'x'\)"),
    "a-model-file": (lambda d, kind: None, r"this is a convnet model file, not a checkpoint file"),
}


def torch_save_bytes() -> bytes:
    import io
    buffer = io.BytesIO()
    torch.save({"kernel": torch.zeros(3)}, buffer)  # a zip holding a pickle
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("good")
    model = fit_small(folder / "checkpoints")
    model.save(folder / "model.convnet")
    return {"model": (folder / "model.convnet").read_bytes(),
            "checkpoint": (folder / "checkpoints" / checkpoint.LAST).read_bytes()}


@pytest.mark.parametrize("damage", MODEL_DAMAGE)
def test_load_model_refuses_a_damaged_file_naming_it(damage, good_files, tmp_path, monkeypatch):
    change, message = MODEL_DAMAGE[damage]
    monkeypatch.chdir(tmp_path)  # where the pickle would create its folder
    path = tmp_path / "model.convnet"
    path.write_bytes(good_files["checkpoint"] if damage == "a-checkpoint" else change(good_files["model"], "model"))
    with pytest.raises(ValueError, match=f"^{path}: .*{message}"):
        convnet.load_model(path)
    assert not (tmp_path / "executed").exists()


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_fit_resume_refuses_a_damaged_checkpoint_naming_it(damage, good_files, tmp_path, monkeypatch):
    change, message = CHECKPOINT_DAMAGE[damage]
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoints" / checkpoint.LAST
    path.parent.mkdir()
    good = good_files["checkpoint"]
    path.write_bytes(good_files["model"] if damage == "a-model-file" else change(good, "checkpoint"))
    with pytest.raises(ValueError, match=f"^{path}: .*{message}"):
        fit_small(path.parent, resume=True, epochs=2)
    assert not (tmp_path / "executed").exists()


def test_fit_resume_of_the_good_checkpoint_works(good_files, tmp_path):
    """The control for the two tests above: the undamaged files load."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / checkpoint.LAST).write_bytes(good_files["checkpoint"])
    fit_small(tmp_path / "checkpoints", resume=True, epochs=2)
    (tmp_path / "model.convnet").write_bytes(good_files["model"])
    convnet.load_model(tmp_path / "model.convnet")


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A run killed in its second epoch, to be copied and damaged."""
    run = tmp_path_factory.mktemp("interrupted") / "run"
    process = start_convnet(*TRAIN, "--out", str(run), log=run.parent / "log")
    wait_for(process, reached(run, STEPS + 3), "a checkpoint in epoch 2")
    kill(process)
    return run


@pytest.mark.parametrize("damage", ["flipped-tensor-byte", "pickle",
                                    pytest.param("truncated-tensors", marks=pytest.mark.slow),
                                    pytest.param("wrong-shape-weights", marks=pytest.mark.slow)])
def test_train_resume_refuses_a_damaged_checkpoint_in_one_line(damage, interrupted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    path = run / "checkpoints" / checkpoint.LAST
    change, message = CHECKPOINT_DAMAGE[damage]
    path.write_bytes(change(path.read_bytes(), "checkpoint"))
    result = run_convnet("train", "--resume", str(run), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert re_search(f"^convnet train: error: ({path}: .*{message}.*)$", result.stderr.strip())
    assert not (tmp_path / "executed").exists()


def _write_checkpoints_forever(folder: str, model: convnet.Sequential, ready) -> None:
    """Child process: write ever newer checkpoints until killed, continuing from the global step in the
    folder's last.ckpt; `ready` is set after this process's first write."""
    torch.set_num_threads(1)  # no OpenMP pool in a forked child
    state = checkpoint.TrainingState(history={"loss": []})
    if checkpoint.exists(folder):
        state.global_step = decode(os.path.join(folder, checkpoint.LAST), "checkpoint")[1]["state"]["global_step"]
    while True:
        state.global_step += 1
        checkpoint.save(folder, model, state)
        ready.set()


def test_kill_during_checkpoint_writes_never_damages_last_ckpt(tmp_path):
    """Kill a process writing checkpoints (6 MB each) 40 times at random moments: last.ckpt always loads,
    in full, and never goes back. Some kills land mid-write: they leave a temporary file behind."""
    model = convnet.Sequential([layers.Input(shape=(32, 32, 3)), layers.Flatten(), layers.Dense(192), layers.Dense(10)])
    model.compile(optimizer="adam", loss="mse", device="cpu")
    model.fit(np.zeros((4, 32, 32, 3), np.float32), np.zeros((4, 10), np.float32), verbose=0)  # Adam's moments
    folder = str(tmp_path)
    fork = multiprocessing.get_context("fork")  # the child inherits the model: no start-up cost
    rng = random.Random(0)
    previous, mid_write = 0, 0
    for _ in range(40):
        ready = fork.Event()
        child = fork.Process(target=_write_checkpoints_forever, args=(folder, model, ready), daemon=True)
        child.start()
        assert ready.wait(TIMEOUT_S), "the child wrote no checkpoint"
        time.sleep(rng.uniform(0.0, 0.12))  # a save takes about 0.06 s, a quarter of it writing
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        _, config = decode(os.path.join(folder, checkpoint.LAST), "checkpoint")
        step = config["state"]["global_step"]
        assert step > previous
        previous = step
        mid_write += any(name.endswith(".tmp") for name in os.listdir(folder))
        checkpoint.remove_stale_temporaries(folder)
    print(f"{mid_write} of 40 kills landed during a write")
    assert mid_write >= 3, f"only {mid_write} of 40 kills landed during a write"


def test_fit_removes_the_temporary_files_of_killed_writes(tmp_path):
    folder = tmp_path / "checkpoints"
    fit_small(folder)
    stale = [folder / ".last.ckpt.k1ll3d.tmp", folder / ".best.ckpt.k1ll3d.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    (folder / "notes.tmp").write_text("not ours")
    fit_small(folder, resume=True, epochs=2)
    assert not any(path.exists() for path in stale)
    assert (folder / "notes.tmp").exists()


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp, which creates files readable by their owner only (0600); the
    files must get the mode open() would give them (0644 under the usual umask 022), or keep the mode of
    the file they replace."""
    umask = os.umask(0o022)
    try:
        model = fit_small(tmp_path / "checkpoints")
        model.save(tmp_path / "model.convnet")
        assert (tmp_path / "model.convnet").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "checkpoints" / checkpoint.LAST).stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "model.convnet", 0o640)
        model.save(tmp_path / "model.convnet")
        assert (tmp_path / "model.convnet").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


# 4. Unwritable folders and full disks: fail before training, exit 2, one line

@contextlib.contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs at `folder` (skip when this process may not mount), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def assert_refused_before_training(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Epoch 1/" not in result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert re_search(f"^convnet train: error: ({message})$", result.stderr.strip())


def test_out_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = run_convnet(*TRAIN, "--out", str(tmp_path / "file" / "run"))
    assert_refused_before_training(result, f"the output folder '{tmp_path}/file/run' is not writable: Not a directory")


def test_out_on_a_read_only_file_system_is_refused(tmp_path):
    with mounted(tmp_path / "ro", "ro,size=1M"):
        result = run_convnet(*TRAIN, "--out", str(tmp_path / "ro" / "run"))
    assert_refused_before_training(result, f"the output folder '{tmp_path}/ro/run' is not writable: "
                                           f"Read-only file system")


def test_out_on_a_full_disk_is_refused_before_training(tmp_path):
    with mounted(tmp_path / "small", "size=2M"):
        result = run_convnet(*TRAIN, "--out", str(tmp_path / "small" / "run"))
        assert not (tmp_path / "small" / "run" / "checkpoints" / checkpoint.LAST).exists()
    assert_refused_before_training(result, f"the checkpoint folder '{tmp_path}/small/run/checkpoints' has "
                                           r"\d+\.\d MiB free; a checkpoint of this model needs about \d+\.\d MiB.*")


def test_disk_filling_up_during_training_keeps_the_last_checkpoint(tmp_path):
    """Room for the checks at the start, then the disk fills: the write fails, last.ckpt is intact and no
    temporary file is left behind."""
    with mounted(tmp_path / "small", "size=6M"):
        run = tmp_path / "small" / "run"
        process = start_convnet(*TRAIN, "--out", str(run), log=tmp_path / "full")
        wait_for(process, reached(run, 3), "global step 3")
        with open(tmp_path / "small" / "filler", "wb") as filler, contextlib.suppress(OSError):
            while True:
                filler.write(bytes(64 * 1024))
                filler.flush()
        code = process.wait(timeout=TIMEOUT_S)
        stderr = Path(f"{tmp_path / 'full'}.err").read_text()
        assert code != 0, stderr
        decode(str(run / "checkpoints" / checkpoint.LAST), "checkpoint")
        assert not [name for name in os.listdir(run / "checkpoints") if name.endswith(".tmp")]
        assert "No space left on device" in stderr
    assert "Traceback" not in stderr, stderr  # one line saying the disk is full and which checkpoint is kept
    assert code == 1 and stderr.strip().splitlines()[-1].startswith("convnet train: error: "), stderr
    assert str(run / "checkpoints" / checkpoint.LAST) in stderr


def test_resume_after_a_kill_between_the_csv_row_and_the_checkpoint_writes_no_duplicate_row(tmp_path):
    """At the end of an epoch, CSVLogger writes its row before the epoch's checkpoint is saved; a kill in
    between leaves history.csv one epoch ahead of last.ckpt. Restoring the older checkpoint recreates
    exactly that state, and resuming must not write the epoch twice."""
    csv_path, folder = tmp_path / "history.csv", tmp_path / "checkpoints"

    def fit(epochs: int) -> None:
        convnet.utils.set_random_seed(0)
        model = small_model()
        model.fit(SMALL_X, SMALL_Y, batch_size=8, epochs=epochs, verbose=0, checkpoint_dir=str(folder), resume=True,
                  callbacks=[convnet.callbacks.CSVLogger(csv_path, append=True)])

    fit(epochs=1)
    after_epoch_1 = (folder / checkpoint.LAST).read_bytes()
    fit(epochs=2)
    (folder / checkpoint.LAST).write_bytes(after_epoch_1)  # as if killed before epoch 2's checkpoint
    fit(epochs=2)
    epochs = [line.split(",")[0] for line in csv_path.read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]  # not ["0", "1", "1"]: epoch 2's row is replaced, not written twice


# 5. Divergence

def test_nan_loss_stops_keeps_the_last_good_checkpoint_and_exits_1(tmp_path):
    """SGD with a learning rate of 1e38 overflows float32 at step 2. (With tanh saturating, LeNet-5's loss
    only grows in proportion to the learning rate: 1e6 gives a loss of 1e11, finite.)"""
    run = tmp_path / "run"
    result = run_convnet(*TRAIN, "--optimizer", "sgd", "--lr", "1e38", "--out", str(run))
    assert result.returncode == 1, result.stderr
    epoch, step = map(int, re_search(r"the loss became NaN or infinite at epoch (\d+), (?:batch|step) (\d+)",
                                     result.stderr))
    last = run / "checkpoints" / checkpoint.LAST
    assert f"the last good checkpoint is {last}" in result.stderr
    tensors, config = decode(str(last), "checkpoint")
    saved = config["state"]
    assert saved["epoch"] * STEPS + saved["step"] < (epoch - 1) * STEPS + step  # saved before the bad step
    assert_finite(tensors)
    assert not (run / "model.convnet").exists()


def test_a_checkpoint_never_holds_weights_that_overflowed(tmp_path):
    """Step 3's loss is finite but its update overflows the kernel to inf (huge inputs, huge learning rate);
    step 4's loss is NaN. The checkpoint after step 3 must not be written: last.ckpt stays at step 2."""
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input(shape=(4,)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer=convnet.optimizers.get("sgd", 1e34), loss="sparse_categorical_crossentropy",
                  device="cpu")
    x = np.zeros((48, 4), np.float32)
    x[16:] = 1e5  # batches 3 to 6; before them only the bias learns
    guard = convnet.callbacks.TerminateOnNaN()
    model.fit(x, np.arange(48) % 3, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[guard],
              checkpoint_dir=str(tmp_path), checkpoint_interval=0)
    assert guard.stopped_at == (0, 3)
    assert not torch.isfinite(model.layers[-1].kernel).all()
    tensors, config = decode(str(tmp_path / checkpoint.LAST), "checkpoint")
    assert (config["state"]["epoch"], config["state"]["step"]) == (0, 2)
    assert_finite(tensors)


def assert_finite(tensors: dict[str, torch.Tensor]) -> None:
    for key, tensor in tensors.items():
        if key.startswith(("model/", "optimizer/")) and tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), f"{key} is not finite in the last good checkpoint"


def test_the_checkpoint_size_estimate_covers_every_optimizers_state(tmp_path):
    """check_room refuses a folder too small for a checkpoint: its estimate must not fall short of what
    `save` writes, for the optimizers with the most state (three moments per weight). The seed CNN's 5.6 MB of
    weights make the estimate's 1 MB margin too small to hide a missing moment."""
    from convnet import optimizers
    for optimizer in (optimizers.Adam(amsgrad=True), optimizers.RMSprop(centered=True, momentum=0.9), "sgd"):
        model = zoo.seed_cnn()
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", device="cpu")
        model.fit(np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, np.int64), batch_size=8, verbose=0)
        folder = tmp_path / type(model.optimizer_).__name__
        folder.mkdir()
        checkpoint.save(str(folder), model, checkpoint.TrainingState(history={}))
        assert (folder / checkpoint.LAST).stat().st_size <= checkpoint.estimated_size(model)
