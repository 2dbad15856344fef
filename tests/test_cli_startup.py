"""The command line answers at once: `--help`, `--version`, each command's `--help`, argparse's usage errors
and `completion` run without importing PyTorch, NumPy-heavy or plotting modules (the reason they are fast;
benchmarks/cli_latency.py measures the time). Also: `import convnet` is light and its public names still
load, the static name lists the parser offers equal the registries, and the shell completion scripts work."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import pytest

from convnet import __version__
from convnet._internal.names import MODELS

HEAVY = ("torch", "matplotlib", "PIL", "safetensors", "pooch", "jinja2", "sklearn")

# runs `python -m convnet ARGS` in this process, then reports the exit code and the heavy modules it imported
WRAPPER = f"""
import json, runpy, sys
sys.argv = ["convnet", *sys.argv[1:]]
try:
    runpy.run_module("convnet", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r})
print("\\nSTARTUP " + json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def run_cli(*argv: str) -> tuple[int, list[str], str, str]:
    done = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, timeout=120)
    err, _, report = done.stderr.rpartition("\nSTARTUP ")
    assert report, done.stderr  # the wrapper ran to its end
    found = json.loads(report)
    return found["code"], found["heavy"], done.stdout, err


COMMANDS = ["train", "evaluate", "predict", "summary", "featuremaps", "filters", "explain", "report", "experiment",
            "bench", "completion"]


@pytest.mark.parametrize("argv, code, stream, text", [
    (["--help"], 0, "out", "usage: convnet"),
    (["--version"], 0, "out", f"convnet {__version__}"),
    (["train", "--help"], 0, "out", "--epochs EPOCHS"),
    (["bench", "--help"], 0, "out", "--batch-size"),
    (["featuremaps", "--help"], 0, "out", "--max-maps N"),
    (["experiment", "--help"], 0, "out", "one of: depthpool, params, pooling, translation"),
    (["train", "--epochs", "x"], 2, "err", "argument --epochs: invalid int value: 'x'"),
    (["trian"], 2, "err", "invalid choice: 'trian'"),
    (["explain", "model.convnet"], 2, "err", "the following arguments are required: IMAGE"),
    (["completion", "bash"], 0, "out", "complete -F _convnet convnet"),
    # a mistyped name is checked against the static lists before anything heavy loads, in the registries' words
    (["train", "--model", "sed"], 2, "err", "`model`: unknown model 'sed'. Did you mean 'seed'? Available: "
     + ", ".join(MODELS)),
    (["train", "--dataset", "fashon"], 2, "err", "unknown dataset 'fashon'. Did you mean 'fashion-mnist'?"),
    (["train", "--optimizer", "nadamm"], 2, "err", "unknown optimizer 'nadamm'. Did you mean 'nadam'"),
    (["train", "--schedule", "cosin"], 2, "err", "unknown schedule 'cosin'. Did you mean 'cosine'?"),
    (["train", "--augment", "flip-shfit"], 2, "err",
     "unknown augment 'flip-shfit'. Did you mean 'flip-shift' or 'flip' or 'shift'?"),
    (["train", "--recipe", "fsat"], 2, "err", "unknown recipe 'fsat'. Did you mean 'fast'?"),
])
def test_help_version_and_usage_errors_import_nothing_heavy(argv, code, stream, text):
    exit_code, heavy, out, err = run_cli(*argv)
    assert heavy == []
    assert exit_code == code
    assert text in (out if stream == "out" else err)
    if argv == ["--help"]:
        assert all(command in out for command in COMMANDS)


def test_the_check_sees_a_heavy_import():
    """The wrapper reports what a command imports: a command that runs (summary of a preset) loads torch."""
    code, heavy, out, _ = run_cli("summary", "--model", "lenet5")
    assert code == 0 and "torch" in heavy and "c5" in out


def test_import_convnet_is_light_and_every_public_name_still_loads():
    code = ("import sys, convnet\n"
            f"heavy = [m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r} or m == 'numpy']\n"
            "listed = set(convnet.__all__) <= set(dir(convnet))\n"
            "from convnet import layers, Sequential\n"
            "loaded = {name: type(getattr(convnet, name)).__name__ for name in convnet.__all__}\n"
            "print(__import__('json').dumps([heavy, listed, loaded, layers.Dense.__name__, Sequential.__name__]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, listed, loaded, dense, sequential = json.loads(out)
    assert heavy == [] and listed
    assert (dense, sequential) == ("Dense", "Sequential")
    assert loaded.pop("Sequential") == "type" and loaded.pop("Model") == "type" and loaded.pop("load_model") == "function"
    assert loaded.pop("Input") == "function"  # as keras.Input: it returns a symbolic tensor
    assert loaded.pop("__version__") == "str"
    assert set(loaded.values()) == {"module"}


def test_loading_models_registers_every_layer_class_without_importing_the_namespaces_first():
    """`import convnet` no longer imports every namespace, so a model file's layer classes (augmentation layers
    too) must be known once `convnet.models` is imported, as `load_model` needs them."""
    code = ("import convnet.models, json\n"
            "from convnet.layers.base import LAYER_CLASSES\n"
            "before = LAYER_CLASSES.names()\n"
            "import convnet\n"
            "for name in convnet.__all__: getattr(convnet, name)\n"
            "print(json.dumps([before, LAYER_CLASSES.names()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, everything = json.loads(out)
    assert "RandomFlip" in everything and before == everything


def test_an_unknown_name_is_still_an_attribute_error():
    import convnet
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        convnet.nonesuch  # noqa: B018


def test_train_config_is_one_class_under_all_its_names():
    import convnet.runs
    import convnet.runs.config
    import convnet.runs.job
    assert convnet.runs.TrainConfig is convnet.runs.job.TrainConfig is convnet.runs.config.TrainConfig
    assert convnet.runs.load_config is convnet.runs.job.load_config
    assert convnet.runs.train is convnet.runs.job.train  # the function, whatever was imported first
    assert callable(convnet.runs.RunResult) and convnet.runs.CHECKPOINTS == "checkpoints"


def test_the_static_name_lists_equal_the_registries():
    from convnet import optimizers, schedules, zoo
    from convnet._internal import names
    from convnet.datasets import list_datasets, list_sample_images
    from convnet.inspection.experiments import list_experiments
    from convnet.runs.config import PRECISIONS
    from convnet.training.engine import PRECISIONS as ENGINE_PRECISIONS
    assert list(names.MODELS) == zoo.list_models()
    assert list(names.DATASETS) == list_datasets()
    assert list(names.OPTIMIZERS) == optimizers.list_optimizers()
    assert list(names.SCHEDULES) == schedules.list_schedules()
    assert list(names.EXPERIMENTS) == list_experiments()
    assert list(names.SAMPLE_IMAGES) == list_sample_images()
    assert PRECISIONS == ENGINE_PRECISIONS


def test_the_explain_method_names_are_the_explain_registry():
    from convnet.cli.inspect import EXPLAIN_METHODS
    from convnet.inspection.explain import list_methods
    assert sorted(EXPLAIN_METHODS.values()) == sorted(list_methods())


# --- shell completion ---------------------------------------------------------------------------------------

def bash_complete(script: str, line: str, cwd: str | None = None) -> list[str]:
    """The candidates bash offers for `line` (the cursor at its end), with the script sourced."""
    program = ('source /dev/stdin\n'
               'read -ra COMP_WORDS <<< "$1"\n'
               '[[ $1 == *" " ]] && COMP_WORDS+=("")\n'
               'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
               '_convnet\n'
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", program, "bash", line], input=script, capture_output=True, text=True,
                          check=True, cwd=cwd)
    return [word for word in done.stdout.splitlines() if word]


@pytest.fixture(scope="module")
def bash_script():
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    done = subprocess.run([sys.executable, "-m", "convnet", "completion", "bash"], capture_output=True, text=True,
                          check=True)
    return done.stdout


def test_bash_completes_commands_options_and_names(bash_script):
    from convnet import zoo
    from convnet.runs.config import AUGMENTATIONS
    assert bash_complete(bash_script, "convnet tr") == ["train"]
    assert bash_complete(bash_script, "convnet train --mo") == ["--model"]
    assert bash_complete(bash_script, "convnet train --model ") == zoo.list_models()
    assert bash_complete(bash_script, "convnet train --augment ") == list(AUGMENTATIONS)
    assert bash_complete(bash_script, "convnet train --recipe ") == ["fast"]
    assert bash_complete(bash_script, "convnet train --precision b") == ["bfloat16"]
    assert bash_complete(bash_script, "convnet explain --method o") == ["occlusion"]
    assert bash_complete(bash_script, "convnet evaluate --dataset f") == ["fashion-mnist"]
    assert bash_complete(bash_script, "convnet experiment p") == ["params", "pooling"]
    assert bash_complete(bash_script, "convnet completion ") == ["bash", "zsh"]
    assert bash_complete(bash_script, "convnet train --epochs ") == []  # a number: nothing to offer


def test_bash_completes_paths_for_file_arguments_and_skips_option_values(bash_script, tmp_path):
    (tmp_path / "net.convnet").write_bytes(b"")
    (tmp_path / "runs").mkdir()
    assert bash_complete(bash_script, "convnet predict n", cwd=str(tmp_path)) == ["net.convnet"]
    # after --device's value the next word is still the first positional (a file)
    assert bash_complete(bash_script, "convnet evaluate --device cpu n", cwd=str(tmp_path)) == ["net.convnet"]
    assert bash_complete(bash_script, "convnet train --out ", cwd=str(tmp_path)) == ["runs"]
    assert bash_complete(bash_script, "convnet report r", cwd=str(tmp_path)) == ["runs"]


def test_a_new_option_completes_without_touching_the_generator():
    from convnet.cli.completion import complete_with, script
    parser = argparse.ArgumentParser(prog="convnet")
    commands = parser.add_subparsers(dest="command")
    command = commands.add_parser("fresh", help="a new command")
    command.add_argument("--colour", choices=["red", "green"])
    complete_with(command.add_argument("--preset"), "model")
    bash = script(parser, "bash")
    assert "fresh)" in bash and "--colour) _convnet_reply 'red green'" in bash
    assert f"--preset) _convnet_reply '{' '.join(MODELS)}'" in bash
    assert "'--colour[]:colour:(red green)'" in script(parser, "zsh")


def test_complete_with_and_script_refuse_unknown_kinds():
    from convnet.cli.completion import complete_with, script
    with pytest.raises(ValueError, match=r"`what` must be 'file', 'dir', one of model, .* Received: 'modle'"):
        complete_with(argparse.ArgumentParser().add_argument("--x"), "modle")
    with pytest.raises(ValueError, match=r"`shell` must be one of bash, zsh\. Received: 'fish'"):
        script(argparse.ArgumentParser(), "fish")


def test_the_zsh_script_is_valid_zsh():
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    done = subprocess.run([sys.executable, "-m", "convnet", "completion", "zsh"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.startswith("#compdef convnet\n")
    assert "--model[model preset" in done.stdout and f":model:({' '.join(MODELS)})" in done.stdout
    checked = subprocess.run(["zsh", "-n"], input=done.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; fpath=(%(folder)s $fpath); autoload -Uz compinit; compinit -u -D; setopt nobeep'
sleep 1
for line in %(lines)s; do
  zpty -w -n z "$line"$'\t'
  sleep 1.5
  out=""
  while zpty -r -t z more 2>/dev/null; do out+=$more; done
  print -r -- "=== $line"; print -r -- "${out//$'\r'/}"
  zpty -w -n z $'\x15'
  sleep 0.3
  while zpty -r -t z more 2>/dev/null; do :; done
done
zpty -d z
"""


@pytest.mark.slow
def test_zsh_completes_commands_options_and_names_in_a_real_shell(tmp_path):
    """An interactive zsh (driven through zpty) with the script on its fpath completes as bash does."""
    import re
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    done = subprocess.run([sys.executable, "-m", "convnet", "completion", "zsh"], capture_output=True, text=True,
                          check=True)
    (tmp_path / "_convnet").write_text(done.stdout)
    lines = ["convnet tr", "convnet train --mo", "convnet train --model ", "convnet explain --method o"]
    driver = ZSH_DRIVER % {"folder": tmp_path, "lines": " ".join(f"'{line}'" for line in lines)}
    out = subprocess.run(["zsh", "-f", "-c", driver], capture_output=True, text=True, timeout=60).stdout
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|.\x08", "", out)  # without terminal escapes and backspaces
    sections = dict(part.split("\n", 1) for part in plain.split("=== ")[1:])
    assert "convnet train" in sections["convnet tr"]
    assert "convnet train --model" in sections["convnet train --mo"]
    assert all(name in sections["convnet train --model "] for name in ("homl", "lenet5", "seed"))
    assert "convnet explain --method occlusion" in sections["convnet explain --method o"]
