"""Data-parallel training on a FolderDataset: real processes joined by a gloo group (forked, as in
test_distributed.py), each reading only its slice of every global batch, end with one process's weights and
history; a streamed run resumes mid-epoch exactly, on the same world size or on another; an iterable of batches is
refused with a clear error."""
from __future__ import annotations

import collections
import shutil
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

import convnet
from convnet import layers
from convnet.datasets import BadImageWarning, FolderDataset, image_dataset_from_directory
from convnet.datasets.local import pipeline
from convnet.datasets.shapes import draw_shapes

from .test_distributed import assert_history_close, assert_weights_close, kill_at_step, run_ranks, weights_of

CLASSES = ("circle", "square", "triangle")
SIDE, COUNT, BATCH = 6, 49, 12  # 4 full batches and one of 1 sample: rank 1's slice of it is empty


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    labels = np.arange(COUNT) % 3
    for i, (image, label) in enumerate(zip(draw_shapes(labels, SIDE, np.random.default_rng(0), classes=CLASSES),
                                           labels)):
        (root / CLASSES[label]).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / CLASSES[label] / f"{i:03d}.png")
    return root


def load(root: Path, **options) -> FolderDataset:
    return image_dataset_from_directory(root, **{"image_size": (SIDE, SIDE), "color_mode": "grayscale",
                                                 "batch_size": BATCH, "seed": 3, "verbose": False, **options})


def tiny_model(seed: int = 0) -> convnet.Sequential:
    convnet.utils.set_random_seed(seed)
    model = convnet.Sequential([layers.Input((SIDE, SIDE, 1)), layers.Rescaling(1 / 255),
                                layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                                layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    return model


def count_reads() -> list[str]:
    """Record every file decoded for a batch from now on (in this process: a forked rank)."""
    reads: list[str] = []
    read = pipeline.ImageReader.read

    def counted(self, path: str) -> np.ndarray:
        reads.append(path)
        return read(self, path)
    pipeline.ImageReader.read = counted  # type: ignore[method-assign]
    return reads


@pytest.mark.parametrize("memory_budget", [None, 0], ids=["cached", "streamed"])
def test_two_ranks_train_on_a_folder_as_one_process_each_reading_its_slice(folder, tmp_path, memory_budget):
    """Shuffled batches of 12 (the last of 1 sample), validation on a FolderDataset split across the ranks too: the
    weights and history of one process within float rounding. No seed is given and each rank draws another one:
    rank 0's decides the order. Streamed, every file is decoded once an epoch, by one rank only."""
    options = {"seed": None} if memory_budget is None else {"seed": None, "memory_budget": memory_budget}

    def work(rank: int):
        np.random.seed(rank)  # each rank draws another shuffling seed
        data = load(folder, **options)
        drawn = data.seed
        validation = load(folder, shuffle=False, batch_size=10)
        reads = count_reads()
        model = tiny_model()
        history = model.fit(data, epochs=2, verbose=0, validation_data=validation).history
        return weights_of(model), history, (drawn, data.seed), reads

    results = run_ranks(2, work, tmp_path)
    (_, rank0_seed), (rank1_drawn, rank1_seed) = results[0][2], results[1][2]
    assert rank1_drawn != rank0_seed and rank1_seed == rank0_seed
    reference = tiny_model()
    data = load(folder, **options)
    data.seed = rank0_seed
    expected = reference.fit(data, epochs=2, verbose=0, validation_data=load(folder, shuffle=False, batch_size=10))
    for weights, history, *_ in results:
        assert_weights_close(weights, weights_of(reference))
        assert_history_close(history, expected.history)
    if memory_budget == 0:
        files = collections.Counter(path for *_, reads in results for path in reads if "/" in path)
        training = load(folder, **options).file_paths
        assert all(files[path] == 2 for path in training)  # once an epoch, by one rank (validation is cached)
        assert all(0 < len(reads) < 3 * COUNT for *_, reads in results)


def test_files_that_fail_after_the_scan_leave_every_rank_one_training(folder, tmp_path):
    """Streamed, 3 files deleted after the scan: the rank whose slice holds one leaves it out (and warns), the ranks
    add up what they kept, and the result is one process's with the same files gone (within float rounding)."""
    def without_three(root: Path) -> tuple[FolderDataset, list[str]]:
        data = load(root, memory_budget=0)
        return data, data.file_paths[:3]

    reference = tiny_model()
    data, gone = without_three(Path(shutil.copytree(folder, tmp_path / "one")))
    for path in gone:
        Path(path).unlink()
    with pytest.warns(BadImageWarning, match="passed the scan but fails now"):
        expected = reference.fit(data, epochs=2, verbose=0).history
    copy = Path(shutil.copytree(folder, tmp_path / "two"))

    def work(rank: int):
        data, gone = without_three(copy)
        dist.barrier()  # every rank has scanned the files
        if rank == 0:
            for path in gone:
                Path(path).unlink()
        dist.barrier()
        model = tiny_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImageWarning)
            history = model.fit(data, epochs=2, verbose=0).history
        return weights_of(model), history

    for weights, history in run_ranks(2, work, tmp_path):
        assert_weights_close(weights, weights_of(reference))
        assert_history_close(history, expected)


def fit_with_checkpoints(root: Path, folder: Path, resume: bool = False, stop_at: int | None = None):
    """A streamed, shuffled fit of 3 epochs (5 steps each) with a checkpoint after every step; `stop_at` raises at
    that global step, as if the process were killed."""
    model = tiny_model(seed=5 if resume else 0)  # a resumed run's weights come from the checkpoint
    hooks = kill_at_step(model, stop_at)
    history = model.fit(load(root, memory_budget=0), epochs=3, verbose=0, callbacks=hooks, checkpoint_dir=str(folder),
                        resume=resume, checkpoint_interval=0)
    return weights_of(model), history.history


def test_a_streamed_folder_run_resumes_mid_epoch_exactly_on_the_same_or_another_world_size(folder, tmp_path):
    """Killed after step 7 (epoch 2, step 2): resumed on 2 processes, bit for bit the uninterrupted run; resumed on
    1 process, the same samples in the same order (within float rounding), with the warning that says so."""
    expected = run_ranks(2, lambda rank: fit_with_checkpoints(folder, tmp_path / "whole"), tmp_path)

    def killed(rank: int):
        try:
            fit_with_checkpoints(folder, tmp_path / "run", stop_at=7)
        except SystemExit:
            return "killed"

    assert run_ranks(2, killed, tmp_path) == ["killed", "killed"]
    for (weights, history), (reference, reference_history) in zip(
            run_ranks(2, lambda rank: fit_with_checkpoints(folder, tmp_path / "run", resume=True), tmp_path),
            expected):
        for a, b in zip(weights, reference):
            np.testing.assert_array_equal(a, b)
        assert history == reference_history
    run_ranks(2, killed, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.warns(UserWarning, match=r"resuming with 1 process\(es\) where the run had 2"):
            weights, history = fit_with_checkpoints(folder, tmp_path / "run", resume=True)
    assert_weights_close(weights, expected[0][0])
    assert_history_close(history, expected[0][1])


def test_different_folders_on_the_ranks_are_refused_on_every_rank(folder, tmp_path):
    def work(rank: int):
        data = load(folder, validation_split=0.2, subset="training" if rank == 0 else "validation")
        with pytest.raises(ValueError, match=r"the fit settings and data differ between the processes \(dataset: "):
            tiny_model().fit(data, epochs=1, verbose=0)
        return "refused"

    assert run_ranks(2, work, tmp_path) == ["refused", "refused"]


def test_data_parallel_fit_refuses_iterables_of_batches(folder, monkeypatch):
    """Every rank would need the very same batches from its iterable, which nothing can check without reading them
    all: refused, naming what works (test_fit_datasets.py pins the one-process forms)."""
    from convnet import distributed
    from convnet.training import loop
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(loop, "_collective", lambda model, batch_size: types.SimpleNamespace(rank=0, world=2))
    x, y = load(folder, shuffle=False).as_arrays()
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                          batch_size=BATCH)
    with pytest.raises(ValueError, match=r"data-parallel training \(a process group of 2 processes\) takes in-memory "
                                         r"arrays or a FolderDataset.*an iterable of batches "
                                         r"\(.*\(type DataLoader\)\) cannot be split"):
        tiny_model().fit(batches)
    with pytest.raises(ValueError, match=r"data-parallel training validates on arrays or a FolderDataset .*"
                                         r"`validation_data` as an iterable of batches"):
        tiny_model().fit(load(folder), validation_data=batches)
