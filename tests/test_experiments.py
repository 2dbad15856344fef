"""The experiments behind the README's claims: real quick runs, their files and the effects they measure."""
from __future__ import annotations

import argparse
import doctest
import json
import os

import pytest

from convnet import experiments
from convnet.cli.experiments import add_commands
from convnet.experiments import (
    get_experiment,
    list_experiments,
    run_experiment,
)

from .conftest import fashion_or_skip

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """One quick run of each experiment, run on first use (pooling needs Fashion-MNIST)."""
    cache = {}

    def get(name):
        if name not in cache:
            if name == "pooling":
                fashion_or_skip()
            cache[name] = run_experiment(name, quick=True, out_dir=tmp_path_factory.mktemp(name))
        return cache[name]
    return get


def test_registry():
    assert list_experiments() == ["depthpool", "params", "pooling", "translation"]
    assert list_experiments("p*") == ["params", "pooling"]
    assert get_experiment("Translation").name == "translation"
    with pytest.raises(ValueError, match=r"`name`: unknown experiment 'translaton'\. Did you mean 'translation'\?"
                                         r" Available: depthpool, params, pooling, translation\."):
        run_experiment("translaton")


@pytest.mark.parametrize("name", list_experiments())
def test_settings(name):
    experiment = get_experiment(name)
    assert experiment.title and experiment.claim
    assert set(experiment.quick) == set(experiment.full)  # quick overrides some full settings, adds none


def test_unknown_setting():
    with pytest.raises(ValueError, match=r"`settings`: unknown setting of experiment 'translation' 'epoch'\. "
                                         r"Did you mean 'epochs'\?"):
        run_experiment("translation", quick=True, epoch=3)


@pytest.mark.parametrize("name", list_experiments())
def test_files_written(name, quick_results):
    result = quick_results(name)
    assert sorted(os.listdir(result.out_dir)) == sorted(["results.json", "results.md",
                                                         *(os.path.basename(p) for p in result.plots)])
    assert result.plots and all(open(p, "rb").read(8) == PNG_MAGIC for p in result.plots)
    record = json.load(open(result.json_path))
    assert record["experiment"] == name and record["quick"] is True and record["seed"] == 0
    assert record["numbers"] == json.loads(json.dumps(result.numbers, default=experiments._json_default))
    assert record["settings"] == json.loads(json.dumps(get_experiment(name).quick, default=list))
    assert record["environment"]["torch"] and record["seconds"] >= 0
    markdown = open(result.markdown_path).read()
    assert markdown.startswith(f"## {get_experiment(name).title}\n") and result.table_markdown in markdown
    assert "| ---" in result.table_markdown


def test_params_counts_match_hand_formulas(quick_results):
    rows = {tuple(r["input_shape"]): r for r in quick_results("params").numbers["rows"]}
    assert list(rows) == [(28, 28, 1), (100, 100, 1), (427, 640, 3)]
    for (h, w, c), row in rows.items():
        assert row["conv_params"] == 3 * 3 * c * 32 + 32
        assert row["dense_params"] == (h * w * c + 1) * (h * w * 32)
        assert row["ratio"] == pytest.approx(row["dense_params"] / row["conv_params"])
    assert rows[(28, 28, 1)]["dense_params"] == 19_694_080 and rows[(28, 28, 1)]["dense_counted_by"] == "layer"
    assert rows[(100, 100, 1)]["dense_counted_by"] == rows[(427, 640, 3)]["dense_counted_by"] == "formula"

    def seed_trunk(c):  # conv 7x7x64, then 3x3 convs 64->128, 128->128, 128->256, 256->256
        return (49 * c * 64 + 64) + (9 * 64 * 128 + 128) + (9 * 128 * 128 + 128) + (9 * 128 * 256 + 256) + \
            (9 * 256 * 256 + 256)

    head = 128 * 10 + 10
    for (h, w, c), row in rows.items():
        flat = (h // 8) * (w // 8) * 256  # three VALID 2x2 max pools
        assert row["seed_cnn_params"] == seed_trunk(c) + (flat + 1) * 128 + head
        assert row["seed_gap_params"] == seed_trunk(c) + (256 + 1) * 128 + head
    assert rows[(28, 28, 1)]["seed_cnn_params"] == 1_406_218  # the seed's published count
    assert rows[(427, 640, 3)]["seed_cnn_counted_by"] == "formula"


def test_translation_cnn_with_global_pooling_recognises_shifted_objects(quick_results):
    result = quick_results("translation")
    found = result.numbers["datasets"]["shapes"]
    dense, cnn, gap = (found[k]["accuracy"] for k in ("dense", "cnn", "cnn_gap"))
    chance = found["chance"]
    assert result.numbers["shifts"][0] == 0 and result.numbers["shifts"][-1] == 20
    assert min(dense[0], cnn[0], gap[0]) > chance + 0.4  # all three learned the task where they saw it
    assert gap[-1] > dense[-1] + 0.4  # the measured gap at the largest shift
    assert gap[-1] > 0.7 and dense[-1] < chance + 0.15  # the dense net is near chance far from its training spot
    assert cnn[-1] < cnn[0] - 0.5  # the Flatten head is NOT invariant: it forgets what it saw elsewhere
    assert found["cnn_gap"]["params"] < found["dense"]["params"] < found["cnn"]["params"]
    assert "| 20 |" in result.table_markdown


def test_translation_is_deterministic(tmp_path):
    tiny = {"train_size": 140, "test_size": 70, "epochs": 1, "shift_step": 10}
    first = run_experiment("translation", quick=True, out_dir=tmp_path / "a", **tiny)
    second = run_experiment("translation", quick=True, out_dir=tmp_path / "b", **tiny)
    assert first.numbers == second.numbers and first.numbers["shifts"] == [0, 10, 20]


def test_pooling_trades_shift_sensitivity_for_information(quick_results):
    numbers = quick_results("pooling").numbers
    change = numbers["change"]
    conv, pool2, pool4 = change["conv maps"], change["after 2x2 max pool"], change["after 4x4 max pool"]
    assert max(conv[0], pool2[0], pool4[0]) < 1e-6  # no shift, no change (to float rounding)
    assert max(numbers["aligned_change"]) < 1e-5  # the convolution itself is exactly equivariant
    for s in (1, 2, 3):
        assert conv[s] > pool2[s] > pool4[s] > 0  # bigger pools change less under the same shift...
    recon = numbers["reconstruction"]
    errors = [recon[k]["unexplained_variance"] for k in ("conv maps", "after 2x2 max pool", "after 4x4 max pool")]
    assert errors[0] < 0.01 < errors[1] < errors[2]  # ...and keep less of the input
    assert [recon[k]["features_per_block"] for k in recon] == [256, 64, 16]


def test_depthpool_is_rotation_invariant(quick_results):
    banks = quick_results("depthpool").numbers["banks"]
    angles = quick_results("depthpool").numbers["angles"]
    assert angles == [0, 45, 90, 135, 180, 225, 270, 315]
    quarter_turns = [angles.index(a) for a in (90, 180, 270)]
    for rotations in ("4 rotations", "8 rotations"):
        pooled, plain = banks[rotations + " + DepthMaxPool"], banks[rotations]
        for i in quarter_turns:
            assert pooled["maps_change"][i] < 1e-5 and pooled["global_change"][i] < 1e-5  # exactly invariant
            assert plain["maps_change"][i] > 0.5  # the same filters without the depth pool: channels swap
    at_45 = angles.index(45)
    eight, four = banks["8 rotations + DepthMaxPool"], banks["4 rotations + DepthMaxPool"]
    assert eight["maps_change"][at_45] < 0.5 * four["maps_change"][at_45]  # 45-degree filters cover 45 degrees
    assert eight["maps_change"][at_45] < 0.5 * banks["8 rotations"]["maps_change"][at_45]
    assert (eight["channels"], banks["8 rotations"]["channels"], four["channels"]) == (4, 32, 4)


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="convnet")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["experiment", "params", "--quick", "--out", str(tmp_path), "--seed", "3"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "| 28x28x1 | 320 | 19,694,080 |" in out and str(tmp_path / "results.json") in out
    assert json.load(open(tmp_path / "results.json"))["seed"] == 3
    args = parser.parse_args(["experiment", "depthpol", "--quick"])
    with pytest.raises(ValueError, match=r"unknown experiment 'depthpol'\. Did you mean 'depthpool'\?"):
        args.run(args)


def test_the_command_is_registered_by_the_cli_layer(capsys):
    from convnet.cli import main
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert "one of: depthpool, params, pooling, translation" in capsys.readouterr().out
    with pytest.raises(AttributeError, match=r"add_cli moved: .* convnet\.cli\.experiments\.add_commands"):
        experiments.add_cli  # noqa: B018


def test_doctests():
    assert doctest.testmod(experiments, optionflags=doctest.ELLIPSIS).failed == 0
