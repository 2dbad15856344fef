"""convnet.optimizers applies Keras 3's update rules: against a NumPy transcription of Keras's source
(tests/keras_rules.py) for every registered name, and against real Keras 3 under `-m keras`."""
from __future__ import annotations

import doctest
import math
from typing import Any

import numpy as np
import pytest
import torch

from convnet import layers, optimizers, schedules
from convnet.models import Sequential

from . import keras_rules
from .keras_rules import RULES

SHAPES = [(3, 3, 2, 4), (4,), (5, 3), ()]  # a conv kernel, a bias, a dense kernel, a scalar
STEPS = 20
RTOL = 1e-6

# For each optimizer, the settings to try besides the defaults (issue 8: weight decay, amsgrad, nesterov,
# centered, momentum). Every name gets a weight-decay setting and a larger rate.
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "sgd": [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.5, "weight_decay": 0.1}],
    "adam": [{"amsgrad": True}, {"amsgrad": True, "weight_decay": 0.05}, {"beta_1": 0.5, "epsilon": 1e-3}],
    "adamw": [{"amsgrad": True}, {"weight_decay": 0.3}],
    "nadam": [{"beta_1": 0.8, "beta_2": 0.99}],
    "rmsprop": [{"centered": True}, {"momentum": 0.5}, {"centered": True, "momentum": 0.9, "rho": 0.8}],
    "adagrad": [{"initial_accumulator_value": 0.5, "epsilon": 1e-3}],
    "adamax": [{"beta_1": 0.5, "beta_2": 0.9}],
}
CASES: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in optimizers.list_optimizers()] + \
        [(name, {"weight_decay": 0.02}) for name in optimizers.list_optimizers() if name != "adamw"] + \
        [(name, {"learning_rate": 0.1}) for name in optimizers.list_optimizers()] + \
        [(name, setting) for name, settings in SETTINGS.items() for setting in settings]


def random_weights(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def random_gradients(steps=STEPS, seed=1, dtype=np.float64):
    """Gradients of mixed scales, with exact zeros, as real ones have (a dead ReLU's weights)."""
    rng = np.random.default_rng(seed)
    grads = []
    for _ in range(steps):
        step = []
        for shape in SHAPES:
            g = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1, shape)
            step.append(np.where(rng.random(shape) < 0.1, 0.0, g).astype(dtype))
        grads.append(step)
    return grads


def run_convnet(name, hyper, weights, grads, rates=None):
    """`weights` after one step per entry of `grads`, through the torch optimizer that `get(name)` builds."""
    hyper = dict(hyper)
    learning_rate = hyper.pop("learning_rate", None)
    description = optimizers.get(name) if learning_rate is None else optimizers.get(name, learning_rate)
    description = type(description)(learning_rate=description.learning_rate, **hyper)
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    optimizer = description.build(params)
    for index, step in enumerate(grads):
        if rates is not None:
            optimizer.param_groups[0]["lr"] = rates[index]
        for param, grad in zip(params, step):
            param.grad = torch.tensor(grad)
        optimizer.step()
    return [p.detach().numpy() for p in params], optimizer


def run_reference(name, hyper, weights, grads, rates=None):
    variables = [w.copy() for w in weights]
    rule = RULES[name](variables, **hyper)
    for index, step in enumerate(grads):
        rule.apply(step, learning_rate=None if rates is None else rates[index])
    return variables


def assert_same_steps(got, want, start, rtol=RTOL):
    """Equal weights, and equal displacements from `start` (the updates themselves, which a weight-sized
    tolerance would hide)."""
    for g, w, s in zip(got, want, start):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=0)
        np.testing.assert_allclose(g - s, w - s, rtol=rtol, atol=1e-12)


def test_every_registered_optimizer_has_a_reference_rule():
    assert optimizers.list_optimizers() == sorted(RULES)


@pytest.mark.parametrize("name, hyper", CASES, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items()) or 'defaults'}"
                                                     for n, h in CASES])
def test_steps_follow_keras_rule(name, hyper):
    weights, grads = random_weights(), random_gradients()
    got, _ = run_convnet(name, hyper, weights, grads)
    assert_same_steps(got, run_reference(name, hyper, weights, grads), weights)


@pytest.mark.parametrize("name", optimizers.list_optimizers())
def test_float32_steps_follow_keras_rule(name):
    """In float32, as a model trains: Keras's casts (the step count in the variable's dtype) are kept."""
    weights, grads = random_weights(dtype=np.float32), random_gradients(dtype=np.float32)
    got, _ = run_convnet(name, {}, weights, grads)
    want = run_reference(name, {}, weights, grads)
    for g, w, s in zip(got, want, weights):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g - s, w - s, rtol=1e-4, atol=1e-6)  # atol: a few ulps of weights ~ 1


@pytest.mark.parametrize("name", optimizers.list_optimizers())
def test_a_changing_rate_is_read_at_each_step_including_the_weight_decay(name):
    """A schedule sets param_groups' "lr" before each step; Keras's weight decay uses that step's rate."""
    weights, grads = random_weights(), random_gradients(steps=6)
    rates = [0.1, 0.05, 0.2, 0.01, 0.3, 0.02]
    got, _ = run_convnet(name, {"weight_decay": 0.1}, weights, grads, rates)
    assert_same_steps(got, run_reference(name, {"weight_decay": 0.1}, weights, grads, rates), weights)


@pytest.mark.parametrize("name", optimizers.list_optimizers())
def test_a_tensor_rate_gives_the_same_steps_without_reading_tensors_on_the_host(name, monkeypatch):
    """The CUDA-graph form: "lr" is a 0-d tensor and the step may not read a tensor's value on the host
    (no .item(), no `if tensor`), which a capture forbids."""
    weights, grads = random_weights(), random_gradients(steps=5)
    want, _ = run_convnet(name, {"weight_decay": 0.01}, weights, grads)
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    optimizer = type(optimizers.get(name))(weight_decay=0.01).build(params)
    for group in optimizer.param_groups:
        assert "capturable" in group
        group["capturable"], group["lr"] = True, torch.tensor(float(group["lr"]), dtype=torch.float64)

    def host_read(*args, **kwargs):
        raise AssertionError("the step read a tensor's value on the host")

    for step in grads:
        for param, grad in zip(params, step):
            param.grad = torch.tensor(grad)
        with monkeypatch.context() as patch:
            for method in ("item", "__bool__", "__float__", "__int__", "tolist"):
                patch.setattr(torch.Tensor, method, host_read)
            optimizer.step()
    for g, w in zip(params, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=1e-12)


@pytest.mark.parametrize("name, hyper", [(name, {}) for name in optimizers.list_optimizers()] +
                         [("adam", {"amsgrad": True}), ("rmsprop", {"centered": True, "momentum": 0.5}),
                          ("sgd", {"momentum": 0.9})])
def test_state_dict_resumes_exactly_and_holds_parameter_shaped_tensors(name, hyper):
    weights, grads = random_weights(), random_gradients(steps=10)
    straight, _ = run_convnet(name, hyper, weights, grads)
    half, first = run_convnet(name, hyper, weights, grads[:5])
    saved = first.state_dict()
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            assert isinstance(value, torch.Tensor), key
            assert value.shape in (torch.Size([]), torch.Size(SHAPES[index])), (key, value.shape)
    params = [torch.nn.Parameter(torch.tensor(w)) for w in half]
    second = type(optimizers.get(name))(**hyper).build(params)
    second.load_state_dict(saved)
    for step in grads[5:]:
        for param, grad in zip(params, step):
            param.grad = torch.tensor(grad)
        second.step()
    for got, want in zip(params, straight):
        np.testing.assert_array_equal(got.detach().numpy(), want)


def test_state_saved_by_another_optimizer_or_incomplete_is_refused():
    param = torch.nn.Parameter(torch.zeros(3))
    adam = optimizers.Adam().build([param])
    with pytest.raises(ValueError, match=r"TorchRMSprop: the saved optimizer has the settings \['amsgrad', "
                                         r"'beta_1', .*\], this one \['capturable', 'centered', 'epsilon'"):
        optimizers.RMSprop().build([param]).load_state_dict(adam.state_dict())
    saved = adam.state_dict()
    del saved["state"][0]["velocity"]
    with pytest.raises(ValueError, match=r"TorchAdam: the saved optimizer state holds \['momentum', 'step'\], "
                                         r"this optimizer keeps \['momentum', 'step', 'velocity'\]"):
        optimizers.Adam().build([param]).load_state_dict(saved)


def test_state_exists_before_the_first_step_with_keras_initial_values():
    """Made at build time, so that a CUDA graph captures fixed addresses; Adagrad starts at 0.1."""
    param = torch.nn.Parameter(torch.zeros(2, 3))
    state = optimizers.Adagrad().build([param]).state[param]
    assert state["step"].item() == 0 and torch.equal(state["accumulator"], torch.full((2, 3), 0.1))
    assert optimizers.Nadam().build([param]).state[param]["u_product"].item() == 1.0


def test_the_step_count_of_bfloat16_parameters_counts_past_256():
    param = torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))
    optimizer = optimizers.Adam().build([param])
    for _ in range(300):
        param.grad = torch.ones(2, dtype=torch.bfloat16)
        optimizer.step()
    assert optimizer.state[param]["step"].item() == 300


def test_parameters_without_gradients_are_left_alone():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = optimizers.AdamW().build([used, unused])
    used.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(unused.detach(), torch.ones(2)) and optimizer.state[unused]["step"].item() == 0


# Keras 3's defaults, read from keras/src/optimizers/<name>.py (`__init__` signatures)
KERAS_DEFAULTS = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": None},
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False,
             "weight_decay": None},
    "adamw": {"learning_rate": 0.001, "weight_decay": 0.004, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
              "amsgrad": False},
    "nadam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": None},
    "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False,
                "weight_decay": None},
    "adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7, "weight_decay": None},
    "adamax": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": None},
}


@pytest.mark.parametrize("name", optimizers.list_optimizers())
def test_defaults_are_keras_defaults(name):
    assert optimizers.get(name).get_config() == KERAS_DEFAULTS[name]


@pytest.mark.parametrize("name", optimizers.list_optimizers())
def test_serialize_round_trips(name):
    description = type(optimizers.get(name))(learning_rate=0.05, epsilon=1e-3) if name != "sgd" else \
        optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True)
    again = optimizers.get(optimizers.serialize(description))
    assert type(again) is type(description) and again.get_config() == description.get_config()


def test_names_are_a_registry_with_patterns_and_suggestions():
    assert optimizers.list_optimizers("adam*") == ["adam", "adamax", "adamw"]
    assert isinstance(optimizers.get("NAdam"), optimizers.Nadam)
    with pytest.raises(ValueError, match=r"`optimizer`: unknown optimizer 'nadamm'. Did you mean 'nadam'"):
        optimizers.get("nadamm")


@pytest.mark.parametrize("call, error, message", [
    (lambda: optimizers.AdamW(weight_decay=None), ValueError,
     r"Argument `weight_decay` must be a float. Received: weight_decay=None"),
    (lambda: optimizers.Adam(momentum=0.9), TypeError, r"Adam: unexpected argument 'momentum'"),
    (lambda: optimizers.SGD(momentum=1.5), ValueError, r"momentum"),
    (lambda: optimizers.RMSprop(centered=1), TypeError, r"`centered` must be True or False. Received: centered=1"),
    (lambda: optimizers.Nadam(learning_rate=0), ValueError, r"learning_rate"),
    (lambda: optimizers.get(3), TypeError, r"`optimizer` must be a name such as 'nadam'.*Received: optimizer=3"),  # type: ignore[arg-type]
])
def test_bad_arguments_are_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_doctests():
    assert doctest.testmod(optimizers).failed == 0
    assert doctest.testmod(keras_rules).failed == 0
    assert doctest.testmod(schedules).failed == 0


# -- weight decay exclusions, the iteration count -----------------------------------------------------------

@pytest.mark.parametrize("name", optimizers.list_optimizers())
def test_excluded_weights_follow_keras_rule_without_decay(name):
    """base_optimizer.py `_use_weight_decay`: a weight in `var_list`, or whose name a `var_names` entry is
    found in (re.search), is not decayed; the others are. Each follows the NumPy rule with or without it."""
    weights, grads = random_weights(), random_gradients(steps=8)
    names = ["kernel", "bias", "dense_kernel", "gamma"]
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    description = type(optimizers.get(name))(weight_decay=0.1)
    description.exclude_from_weight_decay(var_list=[params[3]], var_names=["bias"])
    optimizer = description.build(params, names=names)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.1, None]
    for step in grads:
        for param, grad in zip(params, step):
            param.grad = torch.tensor(grad)
        optimizer.step()
    decayed = run_reference(name, {"weight_decay": 0.1}, [weights[0], weights[2]], [[g[0], g[2]] for g in grads])
    kept = run_reference(name, {"weight_decay": None}, [weights[1], weights[3]], [[g[1], g[3]] for g in grads])
    got = [p.detach().numpy() for p in params]
    assert_same_steps([got[0], got[2], got[1], got[3]], [*decayed, *kept],
                      [weights[0], weights[2], weights[1], weights[3]])
    assert description.iterations == optimizers.iterations(optimizer) == 8


def test_exclusions_are_refused_after_build_and_names_are_needed_for_var_names():
    param = torch.nn.Parameter(torch.zeros(2))
    adam = optimizers.Adam(weight_decay=0.1)
    adam.exclude_from_weight_decay(var_names=["bias"])
    with pytest.raises(ValueError, match=r"Adam: `exclude_from_weight_decay\(var_names=...\)` needs the weights' "
                                         r"names"):
        adam.build([param])
    with pytest.raises(ValueError, match=r"`names` must hold one name per parameter: 1 parameters, 2 names"):
        adam.build([param], names=["a", "b"])
    adam.build([param], names=["kernel"])
    with pytest.raises(ValueError, match=r"Adam: `exclude_from_weight_decay\(\)` can only be configured before the "
                                         r"optimizer is built"):
        adam.exclude_from_weight_decay(var_names=["kernel"])
    with pytest.raises(TypeError, match=r"`var_names` must be a list of strings. Received: var_names='bias'"):
        optimizers.Adam().exclude_from_weight_decay(var_names="bias")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`var_list` must be a list of weights \(tensors\)"):
        optimizers.Adam().exclude_from_weight_decay(var_list=[1.0])  # type: ignore[list-item]


def test_without_weight_decay_exclusions_change_nothing():
    param = torch.nn.Parameter(torch.zeros(2))
    adam = optimizers.Adam()
    adam.exclude_from_weight_decay(var_list=[param])
    assert len(adam.build([param]).param_groups) == 1


def test_iterations_counts_the_steps_taken():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    description = optimizers.Nadam()
    assert description.iterations == 0  # not built yet
    optimizer = description.build(params)
    for step in range(3):
        params[0].grad = torch.ones(2)
        params[1].grad = torch.ones(2) if step == 0 else None  # a weight without gradient counts fewer
        optimizer.step()
    assert optimizers.iterations(optimizer) == description.iterations == 3
    assert optimizers.iterations(torch.optim.SGD(params, lr=0.1)) == 0  # keeps no count


# -- schedules: Keras 3's formulas -----------------------------------------------------------------------

def keras_cosine_decay(step, initial, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    """learning_rate_schedule.py `CosineDecay.__call__`, transcribed: without a warm-up target the step is
    clipped to decay_steps and decayed from the initial rate (warmup_steps plays no part); with one, the
    step is clipped to decay_steps + warmup_steps, warms up linearly below warmup_steps, then decays from
    the target."""
    def decay(t, decay_from):
        cosine_decayed = 0.5 * (1.0 + math.cos(math.pi * (t / decay_steps)))
        return decay_from * ((1 - alpha) * cosine_decayed + alpha)

    if warmup_target is None:
        return decay(min(step, decay_steps), initial)
    step = min(step, decay_steps + warmup_steps)
    if step < warmup_steps:
        return (warmup_target - initial) * (step / warmup_steps) + initial
    return decay(step - warmup_steps, warmup_target)


@pytest.mark.parametrize("settings", [
    {"initial": 0.1, "decay_steps": 20},
    {"initial": 0.1, "decay_steps": 20, "alpha": 0.25},
    {"initial": 0.1, "decay_steps": 20, "warmup_steps": 5},  # no target: Keras ignores the warm-up
    {"initial": 0.1, "decay_steps": 20, "alpha": 0.1, "warmup_steps": 5},
    {"initial": 0.0, "decay_steps": 20, "warmup_target": 0.2, "warmup_steps": 5},
    {"initial": 0.05, "decay_steps": 20, "alpha": 0.3, "warmup_target": 0.2, "warmup_steps": 7},
    {"initial": 0.05, "decay_steps": 20, "warmup_target": 0.2},  # a target without warm-up steps
], ids=lambda settings: "-".join(f"{k}={v}" for k, v in settings.items()))
def test_cosine_decay_is_keras_formula(settings):
    arguments = dict(settings)
    schedule = schedules.CosineDecay(arguments.pop("initial"), **arguments)
    for step in range(40):
        assert schedule(step) == pytest.approx(keras_cosine_decay(step, **settings), rel=1e-12, abs=1e-15), step


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_is_keras_formula(staircase):
    """learning_rate_schedule.py `ExponentialDecay`: initial * rate ** (step / decay_steps), floored when
    staircase."""
    schedule = schedules.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.3, staircase=staircase)
    for step in range(30):
        exponent = math.floor(step / 7) if staircase else step / 7
        assert schedule(step) == pytest.approx(0.1 * 0.3 ** exponent, rel=1e-12)


# -- real Keras 3 ---------------------------------------------------------------------------------



KERAS_CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "nadam": "Nadam", "rmsprop": "RMSprop",
                 "adagrad": "Adagrad", "adamax": "Adamax"}


@pytest.mark.keras
@pytest.mark.parametrize("name", optimizers.list_optimizers())
def test_keras_defaults_are_ours(keras, name):
    config = getattr(keras.optimizers, KERAS_CLASSES[name])().get_config()
    ours = optimizers.get(name).get_config()
    assert {key: config[key] for key in ours} == pytest.approx(ours)


@pytest.mark.keras
@pytest.mark.parametrize("name, hyper", CASES, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items()) or 'defaults'}"
                                                     for n, h in CASES])
def test_keras_optimizer_given_the_same_gradients_makes_the_same_steps(keras, name, hyper):
    """Real Keras's optimizer against ours on the same float32 weights and gradients, no model in between."""
    weights, grads = random_weights(dtype=np.float32), random_gradients(dtype=np.float32)
    variables = [keras.Variable(w) for w in weights]
    keras_optimizer = getattr(keras.optimizers, KERAS_CLASSES[name])(**hyper)
    for step in grads:
        keras_optimizer.apply(step, variables)
    got, _ = run_convnet(name, hyper, weights, grads)
    for g, v, s in zip(got, variables, weights):
        np.testing.assert_allclose(g - s, keras.ops.convert_to_numpy(v) - s, rtol=1e-4, atol=1e-6)


KERAS_CASES: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in optimizers.list_optimizers()] + \
              [("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}), ("adam", {"amsgrad": True}),
               ("rmsprop", {"centered": True, "momentum": 0.5}), ("nadam", {"weight_decay": 0.01}),
               # where epsilon's place shows (torch's Adagrad and Adamax put it elsewhere, 1e-6 apart at defaults)
               ("adagrad", {"initial_accumulator_value": 0.0, "epsilon": 0.01}), ("adamax", {"epsilon": 0.01})]


@pytest.mark.keras
@pytest.mark.parametrize("name, hyper", KERAS_CASES, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items())}"
                                                          for n, h in KERAS_CASES])
def test_keras_fit_gives_the_same_weights(keras, name, hyper):
    """Issue 8's criterion: the same small model and data in Keras and convnet, shuffle off, batch 32,
    3 epochs: the weights agree within 1e-4 relative."""
    k = keras.layers
    keras.utils.set_random_seed(0)
    keras_model = keras.models.Sequential([
        keras.Input(shape=(8, 8, 1)), k.Conv2D(4, 3, padding="same", activation="relu"), k.MaxPooling2D(2),
        k.Flatten(), k.Dense(3, activation="softmax")])
    model = Sequential([
        layers.Input(shape=(8, 8, 1)), layers.Conv2D(4, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.set_weights(keras_model.get_weights())
    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 3, 96)
    learning_rate = KERAS_DEFAULTS[name]["learning_rate"] * 10  # large enough that the rules' differences show
    keras_model.compile(optimizer=getattr(keras.optimizers, KERAS_CLASSES[name])(learning_rate=learning_rate,
                                                                                 **hyper),
                        loss="sparse_categorical_crossentropy")
    model.compile(optimizer=type(optimizers.get(name))(learning_rate=learning_rate, **hyper),
                  loss="sparse_categorical_crossentropy", device="cpu")
    start = [w.copy() for w in model.get_weights()]
    keras_model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    for got, want in zip(model.get_weights(), keras_model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(start, model.get_weights())), name  # it trained


@pytest.mark.keras
@pytest.mark.parametrize("name", ["adamw", "sgd", "nadam"])
def test_keras_exclude_from_weight_decay_leaves_the_same_weights_undecayed(keras, name):
    weights, grads = random_weights(dtype=np.float32), random_gradients(steps=6, dtype=np.float32)
    names = ["kernel", "bias", "dense_kernel", "gamma"]
    variables = [keras.Variable(w, name=n) for w, n in zip(weights, names)]
    keras_optimizer = getattr(keras.optimizers, KERAS_CLASSES[name])(weight_decay=0.2)
    keras_optimizer.exclude_from_weight_decay(var_list=[variables[3]], var_names=["bias"])
    for step in grads:
        keras_optimizer.apply(step, variables)
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    description = type(optimizers.get(name))(weight_decay=0.2)
    description.exclude_from_weight_decay(var_list=[params[3]], var_names=["bias"])
    optimizer = description.build(params, names=names)
    for step in grads:
        for param, grad in zip(params, step):
            param.grad = torch.tensor(grad)
        optimizer.step()
    for param, variable, start in zip(params, variables, weights):
        np.testing.assert_allclose(param.detach().numpy() - start, keras.ops.convert_to_numpy(variable) - start,
                                   rtol=1e-4, atol=1e-6)
