"""Data-parallel training (convnet.distributed): the bookkeeping in one process, then real processes joined by a
gloo process group on the CPU (forked, so that they start in milliseconds), then real `convnet train
--nproc-per-node` launches through torch.distributed.run (the slow ones behind the `slow` marker).

The reference for every multi-process result is the same fit in one process: the weights, the history and the
evaluation must agree within float rounding (the sums over ranks add in another order), and a resumed run must
equal an uninterrupted one bit for bit.
"""
from __future__ import annotations

import doctest
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import convnet
from convnet import callbacks, distributed, layers, regularizers
from convnet.cli.main import main
from convnet.training import checkpoint, graphs, loop
from convnet.training.engine import Part, batch_loss, batch_sums, loss_sum

from .conftest import fashion_or_skip

WORKER_TIMEOUT_S = 60  # for a group of forked ranks; a healthy one takes a second or two


# -- one process: the arithmetic -----------------------------------------------------------------------------

def test_the_module_examples_run():
    assert doctest.testmod(distributed, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize("count, parts", [(count, parts) for count in range(0, 30) for parts in range(1, 6)])
def test_shard_cuts_contiguous_near_equal_parts_that_cover_everything_once(count, parts):
    pieces = [distributed.shard(count, parts, index) for index in range(parts)]
    assert [p.start for p in pieces[1:]] == [p.stop for p in pieces[:-1]] and pieces[0].start == 0
    assert pieces[-1].stop == count
    sizes = [p.stop - p.start for p in pieces]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    if count % parts == 0:
        assert sizes == [count // parts] * parts  # a full batch: equal slices of batch / N
    if count:
        assert sizes[0] > 0  # rank 0 always has samples: its BatchNorm statistics are the ones kept


@pytest.mark.parametrize("batch, processes, message", [
    (100, 3, r"`batch_size` \(=100\) must be divisible by the number of processes \(=3\): each process takes an "
             r"equal slice of every batch. Use a batch size of 99 or 102"),
    (2, 3, r"`batch_size` \(=2\) cannot be split across 3 processes: each takes batch_size / processes samples "
           r"of every batch, so use a batch size of at least 3"),
])
def test_a_batch_that_does_not_split_into_equal_slices_is_refused(batch, processes, message):
    with pytest.raises(ValueError, match=message):
        distributed.check_batch_size(batch, processes)


def test_outside_torchrun_init_leaves_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init() is False and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.backend()) == (0, 1, None)
    assert distributed.on_rank0(lambda: 42) == 42 and distributed.broadcast_object("x") == "x"


@pytest.mark.parametrize("timeout", [0, -1, "soon", True])
def test_init_refuses_a_bad_timeout(monkeypatch, timeout):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ValueError, match=r"`timeout` must be a positive number of seconds. Received: timeout="):
        distributed.init(timeout=timeout)


def tiny_model(dropout: float = 0.0, l2: float = 0.0, seed: int = 0) -> convnet.Sequential:
    """A convolution, an optional dropout, and a softmax layer: a few hundred weights."""
    convnet.utils.set_random_seed(seed)
    stack = [layers.Input(shape=(6, 6, 1)), layers.Conv2D(4, 3, activation="relu")]
    if dropout:
        stack.append(layers.Dropout(dropout))
    regularizer = regularizers.L2(l2) if l2 else None
    stack += [layers.Flatten(), layers.Dense(3, activation="softmax", kernel_regularizer=regularizer)]
    model = convnet.Sequential(stack)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    return model


def tiny_data(count: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 6, 6, 1)).astype(np.float32)
    x[np.arange(count), 1, 1, 0] += 2.0 * (np.arange(count) % 3)  # something to learn
    return x, np.arange(count) % 3, rng.uniform(0.5, 2.0, count).astype(np.float32)


def gradients(model: convnet.Sequential) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_parts_of_a_batch_add_up_to_the_global_batch_loss_gradient_and_sums(reduction, weighted):
    """What each rank differentiates (`engine.Part`: its slice's loss sum reduced over the global batch, plus its
    share of the kernel and activity penalties), summed over 3 uneven slices (5 samples: 2, 2, 1), gives the global
    batch's gradient and sums: the property the all-reduce relies on."""
    convnet.utils.set_random_seed(0)
    model = convnet.Sequential([layers.Input(shape=(6, 6, 1)), layers.Conv2D(2, 3, activation="relu"), layers.Flatten(),
                                layers.Dense(3, activation="softmax", kernel_regularizer=regularizers.L2(0.1),
                                             activity_regularizer=regularizers.L1(0.01))])
    model.compile(optimizer="sgd", device="cpu", metrics=["accuracy"],
                  loss=convnet.losses.SparseCategoricalCrossentropy(reduction=reduction))
    x, y, w = (torch.from_numpy(a) for a in tiny_data(5))
    weights = w if weighted else None

    def run(index: slice, part: Part | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        model.zero_grad(set_to_none=True)
        outputs = model(x[index])
        wb = None if weights is None else weights[index]
        value, reported = batch_loss(model, loss_sum(model.loss, y[index], outputs, None, wb), int(x[index].shape[0]),
                                     wb, part)
        value.backward()
        return gradients(model), batch_sums(model, reported.detach(), y[index], outputs.detach(), None, wb)

    whole, whole_sums = run(slice(0, 5), None)
    parts = [run(distributed.shard(5, 3, r), Part(5, (distributed.shard(5, 3, r).stop - distributed.shard(5, 3, r).start)
                                                  / 5, None if weights is None else weights.sum()))
             for r in range(3)]
    for index, expected in enumerate(whole):
        torch.testing.assert_close(sum(grads[index] for grads, _ in parts), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sum(sums for _, sums in parts), whole_sums, rtol=1e-6, atol=1e-7)


def test_a_checkpoint_keeps_every_ranks_generators(tmp_path):
    """Rank r takes back its own generators; a rank the checkpoint has none for (a larger world) takes rank 0's."""
    model = tiny_model()
    model.fit(*tiny_data()[:2], epochs=1, verbose=0)
    states = []
    for seed in (10, 11, 12):
        torch.manual_seed(seed)
        np.random.seed(seed)
        states.append(checkpoint.process_rng())
    checkpoint.save(str(tmp_path), model, checkpoint.TrainingState(), rng=states)
    for rank, source in ((0, 0), (1, 1), (2, 2), (3, 0)):
        torch.manual_seed(99)
        state = checkpoint.load(str(tmp_path), model, rank=rank)
        assert state.rng_ranks == 3
        assert torch.equal(torch.get_rng_state(), states[source][0]["torch_cpu"])
        assert np.random.get_state(legacy=True)[2] == states[source][1]["numpy"][1]
    payload = checkpoint.read(str(tmp_path))  # what rank 0 hands the others: the same state
    torch.manual_seed(99)
    assert checkpoint.load(str(tmp_path), model, rank=1, payload=payload).rng_ranks == 3
    assert torch.equal(torch.get_rng_state(), states[1][0]["torch_cpu"])


# -- the command line, before anything starts -------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--nproc-per-node", "0"], "--nproc-per-node must be a positive number of processes. Received: 0"),
    (["--nnodes", "0"], "--nnodes must be a positive number of machines. Received: 0"),
    (["--nnodes", "2"], "--nnodes 2 needs --rdzv-endpoint HOST:PORT: the address, reachable from every machine"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"], "--node-rank must be 0 to 1 (--nnodes 2). "
                                                                       "Received: 2"),
    (["--nnodes", "2", "--rdzv-endpoint", "node0"], "--rdzv-endpoint must be HOST:PORT, e.g. 10.0.0.1:29400. "
                                                    "Received: 'node0'"),
    (["--nproc-per-node", "2", "--rdzv-timeout", "0"], "--rdzv-timeout must be a positive number of seconds"),
    (["--nproc-per-node", "3", "--batch-size", "100"], "`batch_size` (=100) must be divisible by the number of "
                                                       "processes (=3): each process takes an equal slice of every "
                                                       "batch. Use a batch size of 99 or 102"),
    (["--nproc-per-node", "4", "--nnodes", "2", "--rdzv-endpoint", "h:1", "--batch-size", "4"],
     "`batch_size` (=4) cannot be split across 8 processes"),
])
def test_bad_launcher_options_are_one_line_errors_before_any_process_starts(argv, message, capsys, tmp_path):
    started = time.monotonic()
    assert main(["train", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convnet train: error: {message}") and err.count("\n") == 1, err
    assert time.monotonic() - started < 10 and not (tmp_path / "run").exists()


def test_launcher_options_are_refused_inside_a_process_torchrun_started(monkeypatch, capsys):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert main(["train", "--nproc-per-node", "2"]) == 2
    assert capsys.readouterr().err.startswith("convnet train: error: this process was started by torchrun already; "
                                              "--nproc-per-node belong on the command line of the launcher")


def test_resume_with_another_model_is_refused_naming_the_options(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "lenet5", "batch_size": 64}))
    assert main(["train", "--resume", str(run), "--model", "seed", "--batch-size", "64"]) == 2
    assert capsys.readouterr().err == (f"convnet train: error: --resume {run} continues that run with the settings it "
                                       f"was started with; --model seed (the run has lenet5): drop that option, or "
                                       f"start a new run in another folder (--out)\n")


# -- real processes: a gloo group of forked ranks --------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_ranks(world: int, work, folder: Path, timeout: float = 30.0) -> list:
    """`work(rank)` on `world` forked processes joined by a gloo process group (as torchrun's environment would
    join them); returns each rank's result, or raises with the traceback of a rank that failed. A rank that dies
    (a signal) gives None."""
    port = free_port()
    context = multiprocessing.get_context("fork")  # the parent's imports come along: a rank starts in milliseconds

    def rank_main(rank: int) -> None:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        try:
            distributed.init(timeout=timeout)
            result = ("ok", work(rank))
        except BaseException:
            result = ("error", traceback.format_exc())
        torch.save(result, folder / f"rank{rank}.pt")
        os._exit(0)  # no distributed.finish(): a rank's peers may be gone (the failure tests)

    processes = [context.Process(target=rank_main, args=(rank,)) for rank in range(world)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.1))
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
    assert not hung, f"{len(hung)} of {world} ranks hung"
    results = []
    for rank in range(world):
        path = folder / f"rank{rank}.pt"
        kind, value = torch.load(path, weights_only=False) if path.exists() else ("ok", None)
        path.unlink(missing_ok=True)
        if kind == "error":
            raise AssertionError(f"rank {rank} failed:\n{value}")
        results.append(value)
    return results


def weights_of(model: convnet.Sequential) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def assert_weights_close(got: list[np.ndarray], expected: list[np.ndarray], atol: float = 2e-6) -> None:
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def assert_history_close(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-6, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("world", [2, 3])
def test_fit_on_n_processes_ends_with_one_processs_weights_history_and_evaluation(world, tmp_path):
    """50 samples in global batches of 12 (4 full batches and one of 2: with 3 ranks, one has an empty slice), a
    kernel penalty, sample weights (3 ranks) and validation data: the same weights, history (validation counted
    exactly once) and evaluation as one process, within float rounding; the ranks' weights are equal bit for bit."""
    x, y, w = tiny_data()
    sample_weight = w if world == 3 else None

    def fit(model: convnet.Sequential) -> dict:
        convnet.utils.set_random_seed(1)  # the shuffling order
        return model.fit(x, y, batch_size=12, epochs=3, verbose=0, validation_data=(x[:17], y[:17]),
                         sample_weight=sample_weight).history

    reference = tiny_model(l2=0.01)
    expected = fit(reference)
    expected_evaluation = reference.evaluate(x, y, batch_size=7, verbose=0)

    def work(rank: int):
        model = tiny_model(l2=0.01)
        history = fit(model)
        split = loop.evaluate(model, x, y, batch_size=7, verbose=0, across_ranks=True)
        return weights_of(model), history, split, model.evaluate(x, y, batch_size=7, verbose=0)

    results = run_ranks(world, work, tmp_path)
    for weights, history, split, whole in results:
        assert_weights_close(weights, weights_of(reference))
        assert_history_close(history, expected)
        np.testing.assert_allclose(split, whole, rtol=1e-6)  # each sample scored once, by one rank
        np.testing.assert_allclose(split, expected_evaluation, rtol=1e-5)
    for weights, *_ in results[1:]:
        for a, b in zip(weights, results[0][0]):
            np.testing.assert_array_equal(a, b)


def test_the_capture_bookkeeping_serves_data_parallel_steps(tmp_path):
    """The CUDA-graph path (through its CPU stand-in): full slices replay the captured step, the all-reduce inside
    it; the result is eager data-parallel training's."""
    x, y, _ = tiny_data(48)

    def work(rank: int, graphed: bool):
        model = tiny_model()
        captures: list = []
        if graphed:
            model.engine.capture_factory = lambda: captures.append(graphs.EagerCapture()) or captures[-1]
        convnet.utils.set_random_seed(1)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        model.engine.release()
        return weights_of(model), [capture.replays for capture in captures]

    eager = run_ranks(2, lambda rank: work(rank, False), tmp_path)
    graphed = run_ranks(2, lambda rank: work(rank, True), tmp_path)
    for (weights, replays), (reference, _) in zip(graphed, eager):
        assert replays == [11]  # 12 steps: the first runs eagerly, the others replay the graph captured at the second
        for a, b in zip(weights, reference):
            np.testing.assert_array_equal(a, b)


def test_only_rank_0_writes_files_and_prints(tmp_path, capfd):
    x, y, _ = tiny_data(24)

    def work(rank: int):
        logger = callbacks.CSVLogger(str(tmp_path / f"log{rank}.csv"))
        saver = callbacks.ModelCheckpoint(str(tmp_path / f"best{rank}.convnet"))
        tiny_model().fit(x, y, batch_size=8, epochs=2, verbose=2, callbacks=[logger, saver])

    run_ranks(2, work, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best0.convnet", "log0.csv"]
    assert capfd.readouterr().out.count("Epoch 1/2") == 1


@pytest.mark.parametrize("world", [2, 3])
def test_fit_refuses_what_would_not_be_one_training(world, tmp_path):
    x, y, _ = tiny_data(24)

    batch = 10 if world == 3 else 7

    def uneven(rank: int):
        with pytest.raises(ValueError, match=rf"`batch_size` \(={batch}\) must be divisible by the number of "
                                             rf"processes \(={world}\)"):
            tiny_model().fit(x, y, batch_size=batch, epochs=1, verbose=0)
        # refused before any collective: without this, rank 0 (the rendezvous store's host) may exit while
        # another rank is still joining the group, which then fails with "Connection reset by peer"
        torch.distributed.barrier()

    def other_data(rank: int):
        with pytest.raises(ValueError, match=r"the fit settings and data differ between the processes \(x shape: "
                                             r"\(23, 6, 6, 1\) on rank 1, \(24, 6, 6, 1\) on rank 0"):
            count = 23 if rank == 1 else 24
            tiny_model().fit(x[:count], y[:count], batch_size=6, epochs=1, verbose=0)

    run_ranks(world, uneven, tmp_path)
    run_ranks(world, other_data, tmp_path)


def kill_at_step(model: convnet.Sequential, stop_at: int | None) -> list:
    """The callbacks of a fit that stops as if killed (SystemExit) after global step `stop_at` (none for None)."""
    if stop_at is None:
        return []

    def stop(batch, logs):
        if model.optimizer_ is not None and convnet.optimizers.iterations(model.optimizer_) == stop_at:
            raise SystemExit("killed")
    return [callbacks.LambdaCallback(on_train_batch_end=stop)]


def fit_with_checkpoints(model: convnet.Sequential, folder: Path, resume: bool = False, stop_at: int | None = None,
                         epochs: int = 3):
    """The reference fit of the resume tests: 50 samples, batches of 12 (5 steps an epoch, the last of 2 samples), a
    checkpoint after every step; `stop_at` raises at that global step, as if the process were killed (its checkpoint
    is not written)."""
    x, y, _ = tiny_data()
    hooks = kill_at_step(model, stop_at)
    convnet.utils.set_random_seed(1)
    history = model.fit(x, y, batch_size=12, epochs=epochs, verbose=0, validation_data=(x[:9], y[:9]),
                        callbacks=hooks, checkpoint_dir=str(folder), resume=resume, checkpoint_interval=0)
    return weights_of(model), history.history


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_a_run_resumed_at_the_same_world_size_equals_an_uninterrupted_one_bit_for_bit(dropout, tmp_path):
    """Killed after step 7 (epoch 2, step 2) and resumed on 2 processes: every rank's generators come back (the
    dropout masks of rank 1 included), so the weights and history are an uninterrupted run's, bit for bit."""
    def uninterrupted(rank: int):
        return fit_with_checkpoints(tiny_model(dropout), tmp_path / "whole")

    def killed(rank: int):
        try:
            fit_with_checkpoints(tiny_model(dropout), tmp_path / "run", stop_at=7)
        except SystemExit:
            return "killed"

    def resumed(rank: int):
        return fit_with_checkpoints(tiny_model(dropout, seed=5), tmp_path / "run", resume=True)  # other weights:
        # the checkpoint's must replace them

    expected = run_ranks(2, uninterrupted, tmp_path)
    assert run_ranks(2, killed, tmp_path) == ["killed", "killed"]
    for (weights, history), (reference, reference_history) in zip(run_ranks(2, resumed, tmp_path), expected):
        for a, b in zip(weights, reference):
            np.testing.assert_array_equal(a, b)
        assert history == reference_history


def test_a_run_resumed_at_another_world_size_continues_and_says_so(tmp_path):
    """A 2-process run killed after step 7 continues on 3 processes, and on 1: the same samples in the same order, so
    without dropout the weights are the uninterrupted run's within float rounding; a warning says it is not exact."""
    expected = run_ranks(2, lambda rank: fit_with_checkpoints(tiny_model(), tmp_path / "whole"), tmp_path)[0]

    def killed(rank: int):
        try:
            fit_with_checkpoints(tiny_model(), tmp_path / "run", stop_at=7)
        except SystemExit:
            return "killed"

    def resumed(rank: int):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_with_checkpoints(tiny_model(), tmp_path / "run", resume=True)
        return result, [str(w.message) for w in caught]

    run_ranks(2, killed, tmp_path)
    (weights, history), said = run_ranks(3, resumed, tmp_path)[0]
    assert_weights_close(weights, expected[0])
    assert_history_close(history, expected[1])
    assert any(message.startswith("resuming with 3 process(es) where the run had 2: each global batch holds the "
                                  "same samples") for message in said), said
    run_ranks(2, killed, tmp_path)  # the checkpoint of step 7 again, then one process
    with pytest.warns(UserWarning, match=r"resuming with 1 process\(es\) where the run had 2"):
        weights, history = fit_with_checkpoints(tiny_model(), tmp_path / "run", resume=True)
    assert_weights_close(weights, expected[0])


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step_with_one_checkpoint(tmp_path):
    """SIGINT reaches rank 1 alone after step 3: the flag travels with the next step's all-reduce, so both ranks
    finish step 4, rank 0 saves that step once, and both raise TrainingInterrupted naming it."""
    x, y, _ = tiny_data()

    def work(rank: int):
        model = tiny_model()

        def interrupt(batch, logs):
            if rank == 1 and batch == 2:
                os.kill(os.getpid(), signal.SIGINT)
        try:
            model.fit(x, y, batch_size=10, epochs=3, verbose=0, checkpoint_dir=str(tmp_path / "run"),
                      callbacks=[callbacks.LambdaCallback(on_train_batch_end=interrupt)], checkpoint_interval=1e9)
        except convnet.training.TrainingInterrupted as stopped:
            return stopped.epoch, stopped.step, stopped.checkpoint

    results = run_ranks(2, work, tmp_path)
    assert results[0][:2] == results[1][:2] == (0, 4)
    assert results[0][2] == results[1][2] == str(tmp_path / "run" / checkpoint.LAST)
    state = checkpoint.load(str(tmp_path / "run"), tiny_model())
    assert (state.epoch, state.step, state.rng_ranks) == (0, 4, 2)


def test_a_killed_rank_ends_the_others_within_seconds_and_the_checkpoint_stays_intact(tmp_path):
    """Rank 1 is SIGKILLed in the middle of epoch 2: rank 0, waiting for it in the next all-reduce, fails at once
    (gloo sees the connection close; the process group's timeout bounds any other wait), and last.ckpt loads."""
    x, y, _ = tiny_data()

    def work(rank: int):
        model = tiny_model()

        def die(batch, logs):
            if rank == 1 and batch == 2 and logs is not None and model.history.epoch:
                os.kill(os.getpid(), signal.SIGKILL)
        started = time.monotonic()
        try:
            model.fit(x, y, batch_size=10, epochs=3, verbose=0, checkpoint_dir=str(tmp_path / "run"),
                      callbacks=[callbacks.LambdaCallback(on_train_batch_end=die)], checkpoint_interval=0)
        except RuntimeError as error:
            return time.monotonic() - started, str(error)

    started = time.monotonic()
    results = run_ranks(2, work, tmp_path, timeout=20)
    assert results[1] is None  # killed
    seconds, error = results[0]
    assert re.search(r"Connection (closed|reset) by peer", error), error  # gloo noticed: no wait for the timeout
    assert seconds < 20 and time.monotonic() - started < 25
    state = checkpoint.load(str(tmp_path / "run"), tiny_model())
    assert (state.epoch, state.step) == (1, 2)  # rank 1 died after epoch 2's third step, before its checkpoint


# -- real launches: `convnet train --nproc-per-node` through torch.distributed.run -----------------------------

TRAIN = ["train", "--model", "lenet5", "--limit", "600", "--epochs", "2", "--test-limit", "100", "--batch-size", "64",
         "--seed", "0", "--verbose", "2", "--checkpoint-minutes", "0"]
LAUNCH_TIMEOUT_S = 180


def convnet_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    fashion_or_skip()
    env = {key: value for key, value in os.environ.items() if key != "CONVNET_DEBUG"}
    return subprocess.run([sys.executable, "-m", "convnet", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S)


def test_convnet_train_launches_the_run_on_two_processes(tmp_path):
    """`convnet train --nproc-per-node 2`: torchrun starts two processes; rank 0 alone prints and writes the run
    folder; metrics.json records the world size, the backend and the batch per rank."""
    result = convnet_command(*TRAIN, "--out", "run2", "--nproc-per-node", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Epoch 1/2") == 1 and result.stdout.count("Test accuracy") == 1, result.stdout
    assert "x 2 processes" in result.stdout
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["backend"], metrics["per_rank_batch"]) == (2, "gloo", 32)
    assert sorted(p.name for p in (tmp_path / "run2").iterdir()) == [
        "checkpoints", "config.json", "history.csv", "history.json", "metrics.json", "model.convnet"]


def test_an_unreachable_rendezvous_is_a_clear_error_after_the_timeout(tmp_path, capsys):
    """The launcher runs in this process (it starts no worker: the rendezvous fails first)."""
    fashion_or_skip()
    port = free_port()  # nothing listens there
    environment = dict(os.environ)  # torch.distributed.run sets variables for the processes it would start
    started = time.monotonic()
    try:
        code = main([*TRAIN, "--out", str(tmp_path / "run"), "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint",
                     f"127.0.0.1:{port}", "--rdzv-timeout", "1"])
    finally:
        os.environ.clear()
        os.environ.update(environment)
    assert code == 2
    assert capsys.readouterr().err.startswith(f"convnet train: error: the 2 machine(s) did not meet at the rendezvous "
                                              f"on 127.0.0.1:{port} within 1 s (RendezvousConnectionError: ")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "run").exists()


def worker_pids(launcher: int) -> dict[int, int]:
    """The processes torchrun started, by rank (read from their environment)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if parent == launcher:
            variables = dict(item.split(b"=", 1) for item in environ if b"=" in item)
            if b"RANK" in variables:
                ranks[int(variables[b"RANK"])] = int(entry.name)
    return ranks


def checkpoint_step(run: Path) -> int:
    try:
        return checkpoint.read(str(run / "checkpoints"))[1]["state"]["global_step"]
    except (FileNotFoundError, ValueError):
        return -1


def start_launch(folder: Path, *args: str, threads: int | None = None) -> subprocess.Popen:
    """`convnet ARGS` in the background, in `folder`, its output going to out.txt and err.txt there."""
    fashion_or_skip()
    folder.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "CONVNET_DEBUG"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(folder / "out.txt", "w") as stdout, open(folder / "err.txt", "w") as stderr:  # the child keeps copies
        return subprocess.Popen([sys.executable, "-m", "convnet", *args], env=env, cwd=folder, stdout=stdout,
                                stderr=stderr)


def wait_until(process: subprocess.Popen, condition, what: str) -> None:
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the launcher ended ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


SLOW_TRAIN = [*TRAIN[:TRAIN.index("--epochs")], "--epochs", "3", *TRAIN[TRAIN.index("--epochs") + 2:]]


@pytest.mark.slow
def test_sigkill_of_one_rank_stops_the_launch_quickly_keeps_the_checkpoint_and_resume_continues(tmp_path):
    """A rank SIGKILLed during epoch 2: the launcher exits non-zero within seconds (torchrun's monitor stops the
    other rank; gloo fails its all-reduce), names the rank, keeps last.ckpt, and `convnet train --resume RUN
    --nproc-per-node 2` ends with the uninterrupted run's model, bit for bit."""
    whole = convnet_command(*SLOW_TRAIN, "--out", "whole", "--nproc-per-node", "2", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    launcher = start_launch(tmp_path, *SLOW_TRAIN, "--out", "run", "--nproc-per-node", "2")
    wait_until(launcher, lambda: checkpoint_step(tmp_path / "run") >= 11, "a checkpoint in epoch 2")
    os.kill(worker_pids(launcher.pid)[1], signal.SIGKILL)
    killed = time.monotonic()
    code = launcher.wait(timeout=LAUNCH_TIMEOUT_S)
    assert time.monotonic() - killed < 15
    err = (tmp_path / "err.txt").read_text()
    assert code == 1 and "convnet train: error: rank 1 was killed by SIGKILL, so the other processes were stopped; " \
                          "the last checkpoint is intact" in err, err
    checkpoint.read(str(tmp_path / "run" / "checkpoints"))  # intact
    resumed = convnet_command("train", "--resume", "run", "--nproc-per-node", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "run" / "model.convnet").read_bytes() == (tmp_path / "whole" / "model.convnet").read_bytes()


@pytest.mark.slow
def test_ctrl_c_on_the_launcher_saves_once_exits_130_and_resumes_bitwise(tmp_path):
    whole = convnet_command(*SLOW_TRAIN, "--out", "whole", "--nproc-per-node", "2", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    launcher = start_launch(tmp_path, *SLOW_TRAIN, "--out", "run", "--nproc-per-node", "2")
    wait_until(launcher, lambda: checkpoint_step(tmp_path / "run") >= 11, "a checkpoint in epoch 2")
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=LAUNCH_TIMEOUT_S) == 130
    err = (tmp_path / "err.txt").read_text()
    assert err.count("Resume with: convnet train --resume run --nproc-per-node 2") == 1, err
    resumed = convnet_command("train", "--resume", "run", "--nproc-per-node", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "run" / "model.convnet").read_bytes() == (tmp_path / "whole" / "model.convnet").read_bytes()


@pytest.mark.slow
def test_resuming_a_run_with_another_model_is_one_error_and_loses_nothing(tmp_path):
    """A run's config.json edited to another model: every process refuses the checkpoint (another architecture),
    the launcher exits 2 with rank 0's one line, and the run folder is as it was."""
    done = convnet_command(*TRAIN, "--out", "run", "--nproc-per-node", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "run" / "config.json"
    config.write_text(config.read_text().replace('"model": "lenet5"', '"model": "fast"'))
    before = {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()}
    result = convnet_command("train", "--resume", "run", "--nproc-per-node", "2", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("convnet train: error:")]
    assert errors == ["convnet train: error: run/checkpoints/last.ckpt: the checkpoint is of another architecture "
                      "than the model being trained"], result.stderr
    assert {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_torchrun_runs_the_same_training_as_the_launcher_and_one_process_the_same_figures(tmp_path):
    """`torchrun -m convnet train` and `convnet train --nproc-per-node 2` write the same model, byte for byte; one
    process training the same run (lenet5 has no dropout) gets the same test figures within float rounding."""
    launched = convnet_command(*TRAIN, "--out", "launched", "--nproc-per-node", "2", cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    single = convnet_command(*TRAIN, "--out", "single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    two, one = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("launched", "single"))
    assert two["test_accuracy"] == one["test_accuracy"]
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
    torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "convnet", *TRAIN, "--out", "torchrun"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=LAUNCH_TIMEOUT_S)
    assert torchrun.returncode == 0, torchrun.stderr
    assert (tmp_path / "torchrun" / "model.convnet").read_bytes() == \
        (tmp_path / "launched" / "model.convnet").read_bytes()


@pytest.mark.slow
def test_two_machines_meet_at_a_c10d_rendezvous(tmp_path):
    """Two launchers on this machine, as two nodes of one process each (--nnodes 2), meet at 127.0.0.1: the same
    run as two processes on one node, byte for byte (with one thread each, as torchrun gives the processes of a node
    running several)."""
    port = free_port()
    nodes = [start_launch(tmp_path / f"node{rank}", *TRAIN, "--out", str(tmp_path / "run"), "--nnodes", "2",
                          "--nproc-per-node", "1", "--node-rank", str(rank), "--rdzv-endpoint", f"127.0.0.1:{port}",
                          "--rdzv-timeout", "60", threads=1)
             for rank in range(2)]
    assert [node.wait(timeout=LAUNCH_TIMEOUT_S) for node in nodes] == [0, 0], \
        [(tmp_path / f"node{rank}" / "err.txt").read_text() for rank in range(2)]
    one_node = convnet_command(*TRAIN, "--out", "one-node", "--nproc-per-node", "2", cwd=tmp_path)
    assert one_node.returncode == 0, one_node.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert (tmp_path / "run" / "model.convnet").read_bytes() == (tmp_path / "one-node" / "model.convnet").read_bytes()
