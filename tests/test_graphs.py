"""The CUDA-graph training step's bookkeeping (training/graphs.py), run on a CPU through `EagerCapture`, the
stand-in for a real capture; the real capture under `-m gpu`."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import convnet
from convnet import layers
from convnet._internal.fileformat import decode
from convnet.models import Sequential
from convnet.training import checkpoint, graphs


class Captures:
    """A capture factory for `Engine.capture_factory` that keeps what it made."""

    def __init__(self, kind: type = graphs.EagerCapture, capturable: bool = True):
        self.kind, self.capturable, self.made = kind, capturable, []

    def __call__(self):
        self.made.append(self.kind(self.capturable))
        return self.made[-1]


class FailingCapture(graphs.EagerCapture):
    """Warms up (really training, as a CUDA warm-up does), then fails to capture."""

    def capture(self, step):
        raise RuntimeError("operation not permitted when stream is capturing")


def bn_dropout_cnn() -> Sequential:
    return Sequential([layers.Input(shape=(12, 12, 1)), layers.Conv2D(4, 3, activation="relu"),
                       layers.BatchNormalization(), layers.MaxPooling2D(2), layers.Flatten(), layers.Dropout(0.5),
                       layers.Dense(3, activation="softmax")])


def make(optimizer="nadam", captures=None) -> Sequential:
    convnet.utils.set_random_seed(0)
    model = bn_dropout_cnn()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    if captures is not None:
        model.engine.capture_factory = captures
    return model


def batches(synthetic, count=100, size=32):
    """Three full batches of 32 and a partial one of 4."""
    images, labels = (torch.from_numpy(a) for a in synthetic)
    return [(images[i:min(i + size, count)], labels[i:min(i + size, count)]) for i in range(0, count, size)]


def train(model, synthetic, seed=1):
    torch.manual_seed(seed)
    model.train()
    sums = [model.engine.train_step(x, y, full_batch=32) for x, y in batches(synthetic)]
    return torch.stack(sums)


def assert_same_training_state(a: Sequential, b: Sequential) -> None:
    """Weights, BatchNorm statistics, optimizer state and param groups equal, bit for bit."""
    for (name, mine), theirs in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(mine, theirs), name
    for p, q in zip(a.parameters(), b.parameters()):
        mine, theirs = a.optimizer_.state[p], b.optimizer_.state[q]
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.equal(torch.as_tensor(mine[key]), torch.as_tensor(theirs[key])), key
    for mine, theirs in zip(a.optimizer_.param_groups, b.optimizer_.param_groups):
        assert {k: v for k, v in mine.items() if k != "params"} == {k: v for k, v in theirs.items() if k != "params"}


@pytest.mark.parametrize("optimizer", ["nadam", "rmsprop", "sgd"])
def test_training_through_the_capture_stand_in_equals_eager_training_bit_for_bit(synthetic, optimizer):
    """Dropout, BatchNorm, shuffling and a partial last batch: fit through the graph bookkeeping (warm-up,
    rollback, tensor lr, static inputs, in-place zeroed gradients) gives eager training's numbers exactly."""
    images, labels = synthetic
    runs = {}
    for name, captures in (("eager", None), ("graphed", Captures())):
        model = make(optimizer, captures)
        history = model.fit(images[:100], labels[:100], batch_size=32, epochs=2, verbose=0)
        runs[name] = model, history.history
    graphed, eager = runs["graphed"][0], runs["eager"][0]
    assert graphed.engine.graph is not None and graphed.engine.capture_factory.made[0].replays == 2 * 3 - 1
    assert runs["graphed"][1] == runs["eager"][1]
    assert isinstance(graphed.optimizer_.param_groups[0]["lr"], torch.Tensor)  # the graph's lr is live
    graphed.engine.release()
    assert_same_training_state(graphed, eager)


def test_the_partial_last_batch_steps_on_its_own_gradients(synthetic):
    """After replays, the eager step of the partial batch zeroes the gradients the graph left (in place, where
    the graph reads them) instead of adding its own to them."""
    def weights_after_each_step(model):
        torch.manual_seed(1)
        model.train()
        weights = []
        for x, y in batches(synthetic):
            if x.shape[0] < 32:
                grads = [p.grad for p in model.parameters()]
            model.engine.train_step(x, y, full_batch=32)
            weights.append(model.layers[-1].kernel.detach().clone())
        model.kept_grads = all(p.grad is g for p, g in zip(model.parameters(), grads))
        return weights
    graphed, eager = make(captures=Captures()), make()
    graphed_weights, eager_weights = weights_after_each_step(graphed), weights_after_each_step(eager)
    assert graphed.engine.graph is not None and graphed.engine.capture_factory.made[0].replays == 2
    for step, (mine, theirs) in enumerate(zip(graphed_weights, eager_weights)):
        assert torch.equal(mine, theirs), f"step {step}"
    assert graphed.kept_grads  # the graph's gradients stay where it reads them


def test_capture_leaves_the_random_generators_as_eager_training_has_them(synthetic):
    """Warm-up and capture run dropout: without restoring the generator, every later mask would differ (and a
    resumed run would differ from an uninterrupted one)."""
    eager, graphed = make(), make(captures=Captures())
    for model in (eager, graphed):
        torch.manual_seed(1)
        model.train()
        for x, y in batches(synthetic)[:2]:  # the second is captured (after warm-up) and replayed
            model.engine.train_step(x, y, full_batch=32)
        model.rng_after = torch.get_rng_state()
    assert graphed.engine.graph is not None
    assert torch.equal(graphed.rng_after, eager.rng_after)


def test_a_failed_capture_is_rolled_back_and_said_once_at_verbose_level(synthetic, capsys):
    eager, failed = make(), make(captures=Captures(FailingCapture))
    failed.engine.verbose = 1
    failed_sums, failed_rng = train(failed, synthetic), torch.get_rng_state()
    eager_sums, eager_rng = train(eager, synthetic), torch.get_rng_state()
    assert torch.equal(failed_sums, eager_sums) and torch.equal(failed_rng, eager_rng)
    assert failed.engine.graph is None and not failed.engine.use_graphs
    assert_same_training_state(failed, eager)  # the warm-up's steps on weights, moments and BN statistics are undone
    assert failed.optimizer_.param_groups[0]["capturable"] is False
    assert isinstance(failed.optimizer_.param_groups[0]["lr"], float)
    said = capsys.readouterr().err
    assert said.count("convnet: CUDA graph capture is not possible for this model (RuntimeError: operation not "
                      "permitted when stream is capturing); training runs eagerly.") == 1
    quiet = make(captures=Captures(FailingCapture))
    train(quiet, synthetic)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_fit_says_why_capture_fell_back_once_at_verbose_1_and_2(synthetic, capsys, verbose):
    model = make(captures=Captures(FailingCapture))
    images, labels = synthetic
    model.fit(images[:100], labels[:100], batch_size=32, epochs=2, verbose=verbose)
    said = capsys.readouterr().err.count("convnet: CUDA graph capture is not possible for this model")
    assert said == (1 if verbose else 0)


def test_an_optimizer_that_refuses_its_capturable_form_is_rolled_back(synthetic):
    """torch's own Adam refuses capturable=True on a CPU, in the warm-up step (after the forward pass moved
    the BatchNorm statistics): its param groups get their float lr and capturable=False back."""
    def torch_adam():
        convnet.utils.set_random_seed(0)
        model = bn_dropout_cnn()
        model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), loss="sparse_categorical_crossentropy",
                      device="cpu")
        return model
    eager, refused = torch_adam(), torch_adam()
    refused.engine.capture_factory = Captures()
    assert torch.equal(train(refused, synthetic), train(eager, synthetic))
    assert refused.engine.graph is None
    assert refused.optimizer_.param_groups[0]["capturable"] is False
    assert_same_training_state(refused, eager)


def test_jit_graphs_raises_after_rolling_back(synthetic):
    model, eager = make(captures=Captures(FailingCapture)), make()
    model.engine.jit = "graphs"
    x, y = batches(synthetic)[0]
    torch.manual_seed(1)
    model.train()
    model.engine.train_step(x, y, full_batch=32)
    with pytest.raises(RuntimeError, match=r"jit='graphs': capturing the training step in a CUDA graph failed: "
                                           r"operation not permitted"):
        model.engine.train_step(x, y, full_batch=32)
    torch.manual_seed(1)
    eager.train()
    eager.engine.train_step(x, y, full_batch=32)
    assert_same_training_state(model, eager)


def test_an_optimizer_without_a_capturable_form_trains_eagerly(synthetic):
    model = make(captures=Captures())
    model.compile(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss="sparse_categorical_crossentropy",
                  device="cpu")
    model.engine.capture_factory = Captures()
    with pytest.raises(RuntimeError, match=r"SGD has no capturable \(CUDA-graph-safe\) form"):
        graphs.check_capturable(model.optimizer_)
    train(model, synthetic)
    assert model.engine.graph is None and not model.engine.use_graphs


def test_a_graphed_optimizers_state_dict_is_the_eager_ones(synthetic):
    model = make(captures=Captures())
    train(model, synthetic)
    group = model.optimizer_.param_groups[0]
    assert isinstance(group["lr"], torch.Tensor) and group["capturable"] is True
    saved = model.optimizer_.state_dict()["param_groups"][0]
    assert saved["lr"] == pytest.approx(0.001) and type(saved["lr"]) is float and saved["capturable"] is False
    model.engine.release()  # the optimizer gets its eager form back
    assert type(group["lr"]) is float and group["capturable"] is False


def test_a_checkpoint_written_while_the_lr_is_a_tensor_is_json_and_resumes(synthetic, tmp_path):
    """The checkpoint writer turns a tensor lr into a number (json.dumps failed on it: the first checkpoint of
    every GPU `convnet train`)."""
    model = make()
    model.optimizer_.param_groups[0]["lr"] = torch.tensor(0.01, dtype=torch.float64)
    checkpoint.save(str(tmp_path), model, checkpoint.TrainingState())
    _, config = decode(str(tmp_path / checkpoint.LAST), "checkpoint")
    assert config["optimizer"]["groups"][0]["lr"] == 0.01
    restored = make()
    checkpoint.load(str(tmp_path), restored)
    assert restored.optimizer_.param_groups[0]["lr"] == 0.01


def test_a_graphed_fit_checkpoints_and_resumes_as_an_uninterrupted_eager_fit(synthetic, tmp_path):
    images, labels = synthetic[0][:100], synthetic[1][:100]
    first = make(captures=Captures())
    first.fit(images, labels, batch_size=32, epochs=1, verbose=0, checkpoint_dir=tmp_path)
    assert first.engine.graph is not None
    _, config = decode(str(tmp_path / checkpoint.LAST), "checkpoint")
    assert config["optimizer"]["groups"][0]["capturable"] is False
    resumed = make(captures=Captures())
    history = resumed.fit(images, labels, batch_size=32, epochs=3, verbose=0, checkpoint_dir=tmp_path, resume=True)
    assert resumed.engine.graph is not None
    uninterrupted = make()
    expected = uninterrupted.fit(images, labels, batch_size=32, epochs=3, verbose=0)
    assert history.history == expected.history
    resumed.engine.release()
    assert_same_training_state(resumed, uninterrupted)


def test_loading_an_optimizer_state_makes_the_graph_stale_and_training_goes_on_as_eager(synthetic):
    eager, graphed = make(), make(captures=Captures())
    train(eager, synthetic)
    train(graphed, synthetic)
    start = copy.deepcopy(eager.optimizer_.state_dict())
    for model in (eager, graphed):
        model.optimizer_.load_state_dict(copy.deepcopy(start))
    assert graphed.engine.graph is not None and graphed.engine.graph.stale
    assert torch.equal(train(graphed, synthetic, seed=2), train(eager, synthetic, seed=2))
    assert graphed.engine.graph is not None and not graphed.engine.graph.stale  # captured again
    assert len(graphed.engine.capture_factory.made) == 2
    graphed.engine.release()
    assert_same_training_state(graphed, eager)


@pytest.mark.gpu
def test_cuda_graph_training_with_dropout_a_partial_batch_and_a_resume_matches_eager(tmp_path):
    """The real capture: the seed CNN (dropout 0.5, nadam), 600 samples in batches of 128 (the fifth is partial),
    graphs against eager, then a run checkpointed after 2 epochs and resumed for the third."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(0)
    x, y = rng.random((600, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 600)

    def run(jit, epochs, folder=None, resume=False):
        convnet.utils.set_random_seed(0)
        model = convnet.zoo.seed_cnn()
        model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      device="cuda", precision="float32", jit=jit)
        history = model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, checkpoint_dir=folder, resume=resume)
        return model, history.history

    eager, eager_history = run("eager", 3)
    graphed, graphed_history = run("graphs", 3)
    assert graphed.engine.graph is not None
    np.testing.assert_allclose(graphed_history["loss"], eager_history["loss"], rtol=1e-4)
    for a, b in zip(graphed.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)
    run("graphs", 2, tmp_path)
    resumed, resumed_history = run("graphs", 3, tmp_path, resume=True)
    assert resumed.engine.graph is not None
    np.testing.assert_allclose(resumed_history["loss"], graphed_history["loss"], rtol=1e-4)
    for a, b in zip(resumed.get_weights(), graphed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)
