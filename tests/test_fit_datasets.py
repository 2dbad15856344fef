"""fit, evaluate and predict on a FolderDataset and on iterables of batches (generators, DataLoaders): the same
weights as the same images given as arrays in the same order, validation in every form, exact resume in the
middle of an epoch without decoding the skipped batches, and Keras 3's refusals and warnings."""
from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convnet
from convnet import layers, optimizers
from convnet.callbacks import Callback
from convnet.datasets import BadImageWarning, FolderDataset, image_dataset_from_directory
from convnet.datasets.local import pipeline
from convnet.datasets.shapes import draw_shapes

CLASSES = ("circle", "square", "triangle")
SIDE, COUNT, BATCH = 12, 120, 16  # 120 images in batches of 16: 7 full batches and one of 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder per class of the synthetic shapes, 12x12 greyscale PNGs."""
    root = tmp_path_factory.mktemp("shapes")
    labels = np.arange(COUNT) % 3
    images = draw_shapes(labels, SIDE, np.random.default_rng(0), classes=CLASSES)
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / CLASSES[label]).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / CLASSES[label] / f"{i:03d}.png")
    return root


def load(root: Path, **options) -> FolderDataset:
    options = {"image_size": (SIDE, SIDE), "color_mode": "grayscale", "batch_size": BATCH, "verbose": False,
               "shuffle": False, **options}
    return image_dataset_from_directory(root, **options)


def make_model(seed: int = 0) -> convnet.Sequential:
    torch.manual_seed(seed)
    model = convnet.Sequential([layers.Input((SIDE, SIDE, 1)), layers.Rescaling(1 / 255),
                                layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dropout(0.2),
                                layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu")
    return model


def train(model: convnet.Sequential, *args, **kwargs):
    """`model.fit` from the same generator state every time (Dropout draws its masks from it)."""
    torch.manual_seed(1)
    return model.fit(*args, **kwargs)


def same_weights(a: convnet.Sequential, b: convnet.Sequential) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def loader(x: np.ndarray, y: np.ndarray, size: int = BATCH) -> torch.utils.data.DataLoader:
    """A DataLoader of (x, y) in order; its own generator, as each iter() of one draws a seed from a generator
    (else torch's global one, from which Dropout draws its masks)."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                       batch_size=size, generator=torch.Generator().manual_seed(0))


def batches(x: np.ndarray, y: np.ndarray, size: int = BATCH):
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size]


def test_folder_trains_as_its_arrays_in_the_same_order(folder: Path) -> None:
    data = load(folder)
    x, y = data.as_arrays()
    from_folder, from_arrays = make_model(), make_model()
    history = train(from_folder, data, epochs=2, verbose=0)
    train(from_arrays, x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert same_weights(from_folder, from_arrays)
    assert sorted(history.history) == ["accuracy", "loss"] and len(history.history["loss"]) == 2


def test_shuffled_folder_follows_its_epoch_order(folder: Path) -> None:
    data = load(folder, shuffle=True, seed=5)
    x, y = data.as_arrays()
    from_folder, from_arrays = make_model(), make_model()
    train(from_folder, data, epochs=2, verbose=0)
    torch.manual_seed(1)
    for epoch in range(2):  # the dataset's own order: epoch e visits epoch_order(e)
        order = data.epoch_order(epoch)
        from_arrays.fit(x[order], y[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert same_weights(from_folder, from_arrays)
    assert not np.array_equal(data.epoch_order(0), data.epoch_order(1))


def test_generator_and_dataloader_train_as_arrays(folder: Path) -> None:
    x, y = load(folder).as_arrays()
    reference = make_model()
    train(reference, x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    endless = make_model()  # Keras: a generator with steps_per_epoch keeps one iterator across epochs
    train(endless, itertools.chain.from_iterable(itertools.repeat(list(batches(x, y)))), steps_per_epoch=8, epochs=2,
                verbose=0)
    assert same_weights(endless, reference)
    for steps in (None, 8):  # a sized iterable: a new pass each epoch, with or without steps_per_epoch
        from_loader = make_model()
        train(from_loader, loader(x, y), steps_per_epoch=steps, epochs=2, verbose=0)
        assert same_weights(from_loader, reference)


def test_empty_batches_are_skipped(folder: Path) -> None:
    x, y = load(folder).as_arrays()
    reference, with_empty = make_model(), make_model()
    train(reference, batches(x, y), epochs=1, verbose=0)
    with_holes = [b for pair in zip(batches(x, y), itertools.repeat((x[:0], y[:0]))) for b in pair]
    history = train(with_empty, iter(with_holes), epochs=1, verbose=0)
    assert same_weights(with_empty, reference)
    assert np.isfinite(history.history["loss"][0])


def test_files_that_fail_after_the_scan_are_skipped(folder: Path, tmp_path: Path) -> None:
    """A streamed folder whose first batch's files are deleted after the scan: that batch comes empty and is
    skipped (a warning per file, no crash); the rest trains as the same batches given as arrays."""
    import shutil
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    x, y = load(copy).as_arrays()
    data = load(copy, memory_budget=0, batch_size=4)
    for path in data.file_paths[:4]:
        Path(path).unlink()
    model, reference = make_model(), make_model()
    with pytest.warns(BadImageWarning, match="passes the scan but fails now|passed the scan but fails now"):
        train(model, data, epochs=1, verbose=0)
    train(reference, batches(x[4:], y[4:], 4), epochs=1, verbose=0)
    assert same_weights(model, reference)
    assert len(data.bad_files) == 4


def test_iterable_that_runs_out_warns_and_goes_on(folder: Path) -> None:
    """Keras 3's EpochIterator (test_keras_input_running_out shows it): steps_per_epoch beyond what the input
    holds warns "Your input ran out of data", ends the epoch with the batches it had, and starts the next epoch
    with a new iter(data): a DataLoader's next pass. An epoch that gets no batch at all (an exhausted generator)
    ends the fit without logging that epoch (convnet's choice)."""
    x, y = load(folder).as_arrays()
    reference = make_model()
    train(reference, x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    short = make_model()
    with pytest.warns(UserWarning, match="ran out of data"):
        history = train(short, loader(x, y), steps_per_epoch=10, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 3 and same_weights(short, reference)
    once = make_model()
    train(once, x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for steps in (10, None):  # a generator: one pass, then nothing
        exhausted = make_model()
        with pytest.warns(UserWarning, match="ran out of data"):
            history = train(exhausted, batches(x, y), steps_per_epoch=steps, epochs=3, verbose=0)
        assert len(history.history["loss"]) == 1 and same_weights(exhausted, once)


class Reiterable:
    """Batches of (x, y) that can be iterated again, of unknown length (no __len__): a fit cannot know its steps."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __iter__(self):
        return batches(self.x, self.y)


class Params(Callback):
    def on_train_begin(self, logs=None) -> None:
        self.seen = dict(self.params)


def keras_params(verbose, epochs: int, steps: int | None) -> dict:
    """Keras 3's `params` (backend/torch/trainer.py builds CallbackList(verbose=verbose, epochs=epochs,
    steps=epoch_iterator.num_batches)): fit's verbose as given, the epochs, and the batches per epoch: steps_per_epoch,
    else the input's length (ceil(samples / batch_size) for arrays), else None (a generator)."""
    return {"verbose": verbose, "epochs": epochs, "steps": steps}


def test_callback_params_are_keras_3s(folder: Path) -> None:
    """Keras's three keys with Keras's values (test_keras_callback_params shows real Keras's), and convnet's
    initial_epoch and resumed (which CSVLogger reads on resume); no batch_size."""
    x, y = load(folder).as_arrays()
    x, y = x[:48], y[:48]
    cases = [({"x": x, "y": y, "batch_size": 20, "verbose": "auto", "epochs": 2}, keras_params("auto", 2, 3)),
             ({"x": x, "y": y, "batch_size": 16, "validation_split": 0.25, "verbose": 0}, keras_params(0, 1, 3)),
             ({"x": Reiterable(x, y), "verbose": 2}, keras_params(2, 1, None)),
             ({"x": loader(x, y), "verbose": 0}, keras_params(0, 1, 3)),
             ({"x": Reiterable(x, y), "steps_per_epoch": 2, "verbose": 0}, keras_params(0, 1, 2)),
             ({"x": load(folder), "verbose": 0}, keras_params(0, 1, 8))]
    for arguments, expected in cases:
        recorder = Params()
        make_model().fit(**{"epochs": 1, **arguments}, callbacks=[recorder])
        assert recorder.seen == {**expected, "initial_epoch": 0, "resumed": False}, arguments


def test_progress_of_an_input_of_unknown_length(folder: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras 3's Progbar for a target of None: the counter is "%7d/Unknown" and there is no bar; the epoch's last
    line counts the steps taken as the target, and the later epochs show it (Keras's ProgbarLogger keeps it); so do
    evaluate's and predict's last lines."""
    from convnet.training import loop, progress
    x, y = load(folder).as_arrays()
    monkeypatch.setattr(loop, "Progbar", lambda *args, **kwargs: progress.Progbar(*args, **kwargs, interval=0.0))
    make_model().fit(Reiterable(x, y), epochs=2, verbose=1)
    first, second = capsys.readouterr().out.split("Epoch 2/2")
    for step in range(1, 9):
        assert "\r" + f"{step:7d}/Unknown " in first  # Keras's "%7d/Unknown", transcribed
    assert "8/8 ━━━━━━━━━━━━━━━━━━━━ " in first and "━" not in first.split("8/8")[0]
    assert "\r1/8 ━━" in second and "Unknown" not in second
    make_model().fit(Reiterable(x, y), epochs=2, verbose=2)
    assert [line.split(" - ")[0] for line in capsys.readouterr().out.splitlines()] == [
        "Epoch 1/2", "8/8", "Epoch 2/2", "8/8"]
    model = make_model()
    model.evaluate(Reiterable(x, y), verbose=2)
    model.predict(Reiterable(x, y), verbose=2)
    assert [line.split(" - ")[0] for line in capsys.readouterr().out.splitlines()] == ["8/8", "8/8"]
    bar = progress.Progbar(None, verbose=2)
    bar.finish({"loss": 1.0})  # an epoch of no step: "0/0", as Keras's target of 0 seen steps
    assert bar.target == 0


def test_validation_data_as_dataset_and_iterable(folder: Path) -> None:
    data = load(folder)
    x, y = data.as_arrays()
    scores = {}
    for name, validation in [("arrays", (x, y)), ("dataset", load(folder)),
                             ("loader", loader(x, y, 32))]:
        model = make_model()
        history = train(model, data, epochs=2, validation_data=validation, verbose=0)
        scores[name] = np.array([history.history["val_loss"], history.history["val_accuracy"]])
    np.testing.assert_allclose(scores["dataset"], scores["arrays"], rtol=1e-6)
    np.testing.assert_allclose(scores["loader"], scores["arrays"], rtol=1e-6)


def test_evaluate_and_predict_on_a_dataset(folder: Path) -> None:
    data = load(folder)
    x, y = data.as_arrays()
    model = make_model()
    train(model, x, y, batch_size=BATCH, verbose=0)
    on_arrays = model.evaluate(x, y, verbose=0, return_dict=True)
    on_dataset = model.evaluate(data, verbose=0, return_dict=True)
    assert on_dataset.keys() == on_arrays.keys()
    np.testing.assert_allclose(list(on_dataset.values()), list(on_arrays.values()), rtol=1e-6)
    np.testing.assert_array_equal(model.predict(data, verbose=0), model.predict(x, verbose=0))
    first = model.evaluate(batches(x, y), steps=2, verbose=0, return_dict=True)
    np.testing.assert_allclose(first["loss"], model.evaluate(x[:32], y[:32], verbose=0)[0], rtol=1e-6)
    np.testing.assert_array_equal(model.predict(data, steps=3, verbose=0), model.predict(x[:48], verbose=0))


class _Crash(Callback):
    """Raises after `at` = (epoch, step) has trained, before that step's checkpoint is written."""

    def __init__(self, at: tuple[int, int]):
        super().__init__()
        self.at, self.epoch = at, 0

    def uses_batch_hooks(self) -> bool:
        return True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("crash")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths every ImageReader.read decodes, in any thread."""
    seen: list[str] = []
    lock = threading.Lock()
    read = pipeline.ImageReader.read

    def counting(self, path: str) -> np.ndarray:
        with lock:
            seen.append(path)
        return read(self, path)
    monkeypatch.setattr(pipeline.ImageReader, "read", counting)
    return seen


def test_resume_mid_epoch_is_exact_and_skips_decoding(folder: Path, tmp_path: Path, decodes: list[str]) -> None:
    streamed = {"memory_budget": 0, "shuffle": True}  # read from disk every epoch
    reference = make_model()
    data = load(folder, seed=7, **streamed)
    assert not data.cached
    del decodes[:]
    train(reference, data, epochs=2, verbose=0)
    assert len(decodes) == 2 * COUNT  # every image once per epoch
    crashed = make_model()
    with pytest.raises(RuntimeError, match="crash"):
        train(crashed, load(folder, seed=7, **streamed), epochs=2, verbose=0, checkpoint_dir=tmp_path,
                    checkpoint_interval=0.0, callbacks=[_Crash((1, 3))])
    resumed = make_model(seed=1)  # other weights and generators: the checkpoint restores them
    again = load(folder, seed=7, **streamed)
    del decodes[:]
    train(resumed, again, epochs=2, verbose=0, checkpoint_dir=tmp_path, resume=True)
    assert same_weights(resumed, reference)
    assert resumed.history.history["loss"] == reference.history.history["loss"]
    left = np.concatenate([data.batch_indices(1, step) for step in range(3, len(data))])
    assert sorted(decodes) == sorted(data.file_paths[i] for i in left)  # only batches 3.. of epoch 2


def test_iterable_resumes_only_at_an_epoch_end(folder: Path, tmp_path: Path) -> None:
    x, y = load(folder).as_arrays()
    model = make_model()
    with pytest.raises(RuntimeError, match="crash"):
        train(model, batches(x, y), epochs=2, verbose=0, checkpoint_dir=tmp_path, checkpoint_interval=0.0,
                  callbacks=[_Crash((0, 3))])
    with pytest.raises(ValueError, match=r"at step 3 of epoch 1, and an iterable of batches .* cannot be rewound"):
        train(make_model(), batches(x, y), epochs=2, verbose=0, checkpoint_dir=tmp_path, resume=True)
    reference, interrupted = make_model(), make_model()
    train(reference, list(batches(x, y)), epochs=2, verbose=0) if False else None
    train(reference, loader(x, y), epochs=2, verbose=0)
    end = tmp_path / "end"
    train(interrupted, loader(x, y), epochs=1, verbose=0, checkpoint_dir=end)
    resumed = make_model(seed=1)
    train(resumed, loader(x, y), epochs=2, verbose=0, checkpoint_dir=end, resume=True)
    assert same_weights(resumed, reference)


def test_clear_errors(folder: Path) -> None:
    data = load(folder)
    x, y = data.as_arrays()
    model = make_model()
    with pytest.raises(ValueError, match=r"`batch_size` must be None when `x` is a FolderDataset.*batch_size=16"):
        train(model, data, batch_size=32)
    with pytest.raises(ValueError, match=r"`y` must be None when `x` is a FolderDataset"):
        train(model, data, y)
    with pytest.raises(ValueError, match=r"`batch_size` must be None when `x` is an iterable of batches"):
        model.evaluate(batches(x, y), batch_size=8)
    with pytest.raises(ValueError, match=r"`sample_weight` takes arrays"):
        train(model, data, sample_weight=np.ones(COUNT))
    with pytest.raises(ValueError, match=r"`steps_per_epoch` is for a FolderDataset or an iterable"):
        train(model, x, y, steps_per_epoch=2)
    with pytest.raises(ValueError, match=r"steps \(=9\) must be at most the dataset's 8 batches"):
        train(model, data, steps_per_epoch=9)
    with pytest.raises(ValueError, match=r"`steps_per_epoch` must be"):
        train(model, data, steps_per_epoch=0)
    with pytest.raises(ValueError, match=r"hold no labels"):
        train(model, load(folder, labels=None))
    with pytest.raises(ValueError, match=r"gave no batch"):
        train(model, iter([]))


def test_resume_restores_a_drawn_seed(folder: Path, tmp_path: Path) -> None:
    """Without a seed, the dataset draws one for its epoch orders; the checkpoint keeps it, and the resumed fit
    continues that run's order even though its own dataset drew another."""
    streamed = {"memory_budget": 0, "shuffle": True}
    first = load(folder, **streamed)
    with pytest.raises(RuntimeError, match="crash"):
        train(make_model(), first, epochs=2, verbose=0, checkpoint_dir=tmp_path, checkpoint_interval=0.0,
              callbacks=[_Crash((1, 2))])
    same = load(folder, **streamed)
    same.load_state_dict(first.state_dict())
    reference = make_model()
    train(reference, same, epochs=2, verbose=0)
    again = load(folder, **streamed)
    resumed = make_model(seed=1)
    train(resumed, again, epochs=2, verbose=0, checkpoint_dir=tmp_path, resume=True)
    assert again.seed == first.seed and same_weights(resumed, reference)


@pytest.mark.keras
def test_keras_input_running_out() -> None:
    """Real Keras 3: steps_per_epoch (7) beyond a DataLoader's 5 batches warns "ran out of data" and ends each
    epoch after the 5, then goes on with the next pass (test_iterable_that_runs_out_warns_and_goes_on); a
    generator gives its 5 batches in the first epoch."""
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(0).random((40, 4)).astype("float32")
    y = (x.sum(axis=1) > 2).astype("int32")

    class Count(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps: list[int] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            self.steps[-1] += 1

    def generator():
        for start in range(0, 40, 8):
            yield x[start:start + 8], y[start:start + 8]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    count = Count()
    with pytest.warns(UserWarning, match="ran out of data"):
        history = model.fit(loader(x, y, 8), steps_per_epoch=7, epochs=3, verbose=0, callbacks=[count])
    assert len(history.history["loss"]) == 3 and count.steps == [5, 5, 5]
    with pytest.warns(UserWarning, match="ran out of data"):
        model.fit(generator(), steps_per_epoch=7, epochs=1, verbose=0, callbacks=[count])
    assert count.steps == [5]


@pytest.mark.keras
def test_keras_callback_params() -> None:
    """Real Keras 3 (test_callback_params_are_keras_3s transcribes it): `params` is {"verbose": as given, "epochs",
    "steps": ceil(samples / batch_size) for arrays, len() of a DataLoader, steps_per_epoch, None for a generator}."""
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(0).random((40, 4)).astype("float32")
    y = (x.sum(axis=1) > 2).astype("int32")

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen = dict(self.params)

    def generator():
        yield from batches(x, y, 8)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    cases = [({"x": x, "y": y, "batch_size": 16, "verbose": "auto"}, keras_params("auto", 2, 3)),
             ({"x": x, "y": y, "batch_size": 8, "validation_split": 0.25, "verbose": 0}, keras_params(0, 2, 4)),
             ({"x": generator(), "verbose": 2, "epochs": 1}, keras_params(2, 1, None)),
             ({"x": loader(x, y, 8), "verbose": 0}, keras_params(0, 2, 5)),
             ({"x": loader(x, y, 8), "steps_per_epoch": 3, "verbose": 0}, keras_params(0, 2, 3))]
    for arguments, expected in cases:
        record = Record()
        model.fit(**{"epochs": 2, **arguments}, callbacks=[record])
        assert record.seen == expected, arguments


@pytest.mark.keras
def test_keras_progress_of_an_input_of_unknown_length(capsys: pytest.CaptureFixture) -> None:
    """Real Keras 3 (test_progress_of_an_input_of_unknown_length follows it): a generator's first epoch counts
    "%7d/Unknown" with no bar, and the epoch's last line counts the steps it gave as the target."""
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(0).random((40, 4)).astype("float32")
    y = (x.sum(axis=1) > 2).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    capsys.readouterr()
    model.fit(batches(x, y, 8), epochs=1, verbose=1)
    out = capsys.readouterr().out
    assert "      1/Unknown " in out and "━" not in out.split("5/5")[0]
    assert "5/5 ━━━━━━━━━━━━━━━━━━━━" in out.replace("\x1b[0m", "").replace("\x1b[1m", "").replace(
        "\x1b[32m", "").replace("\x1b[37m", "")


@pytest.mark.gpu
def test_a_cached_folder_lives_on_the_gpu_and_trains_as_its_arrays_there(folder: Path) -> None:
    """The uint8 cache is copied to the GPU once and every batch is gathered there (loop._cached_batches), and
    the training equals the same images given as arrays on the GPU (cuDNN's sums: within 1e-5)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from convnet.training.loop import _cached_batches
    data = load(folder)
    x, y = data.as_arrays()

    def on_gpu(seed: int = 0) -> convnet.Sequential:
        model = make_model(seed)
        model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], device="cuda")
        return model

    model = on_gpu()
    batches, placement = _cached_batches(model, data)
    assert placement.device.type == "cuda" and batches.x.is_cuda and batches.x.dtype == torch.uint8, placement.reason
    from_folder, from_arrays = on_gpu(), on_gpu()
    train(from_folder, data, epochs=2, verbose=0)
    train(from_arrays, x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(from_folder.get_weights(), from_arrays.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
