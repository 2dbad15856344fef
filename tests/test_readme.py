"""The README's Python examples run as written, and its `>>>` examples as doctests, so they cannot go stale."""
from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_blocks() -> list[str]:
    text = open(README, encoding="utf-8").read()
    return [block for block in re.findall(r"```python\n(.*?)```", text, flags=re.S) if ">>>" not in block]


def test_the_readme_opens_with_install_train_and_test_commands():
    text = open(README, encoding="utf-8").read()
    bash = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert bash[0].splitlines()[0].startswith("pip install -e")
    assert "convnet train" in bash[0].splitlines()[1]
    assert "python -m pytest" in bash[1]


def test_the_seed_demo_runs_as_written(monkeypatch):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    scope: dict = {}
    exec(python_blocks()[0], scope)
    assert tuple(scope["outputs"].shape) == (2, 427, 640, 2)
    assert tuple(scope["depth_pooled"].shape) == (2, 427, 640, 1)
    plt.close("all")


def test_the_keras_style_example_runs_as_written(monkeypatch, tmp_path, fashion):
    """The example as written, on a slice of Fashion-MNIST and for 1 epoch instead of 10 (to stay quick)."""
    import convnet.datasets
    (x_train, y_train), (x_test, y_test) = fashion
    small = ((x_train[:5256], y_train[:5256]), (x_test[:100], y_test[:100]))  # 256 to train, 5000 to validate
    real = convnet.datasets.fashion_mnist

    class SmallFashion:
        def __getattr__(self, name):
            return getattr(real, name)

        def load_data(self, *args, **kwargs):
            return small

    monkeypatch.setattr(convnet.datasets, "fashion_mnist", SmallFashion())
    monkeypatch.chdir(tmp_path)  # model.save("fashion.convnet") lands here
    code = python_blocks()[1]
    assert "epochs=10" in code
    scope: dict = {}
    exec(code.replace("epochs=10", "epochs=1"), scope)
    assert scope["model"].count_params() == 1_406_218
    assert len(scope["history"].history["val_accuracy"]) == 1
    assert np.isfinite(scope["history"].history["loss"]).all()
    assert (tmp_path / "fashion.convnet").exists()


# The `>>>` examples: every fenced block that holds them runs as a doctest, its printed output checked

EXCEPTION = re.compile(r"[A-Z]\w*(Error|Exception|Warning): ")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def doctest_blocks() -> dict[int, str]:
    """{README line of the opening fence: text} for every fenced block with `>>>` examples, whatever its language."""
    text = open(README, encoding="utf-8").read()
    return {text.count("\n", 0, match.start()) + 1: match.group(1)
            for match in re.finditer(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M) if ">>>" in match.group(1)}


def as_doctest(block: str) -> str:
    """The README shows an exception as Python's last traceback line only (`ValueError: ...`); doctest wants
    the traceback header before it, and then compares the exception's type and message."""
    lines, previous = [], ""
    for line in block.splitlines():
        if EXCEPTION.match(line) and previous.startswith((">>>", "...")):
            lines.append("Traceback (most recent call last):")
        lines.append(line)
        previous = line
    return "\n".join(lines) + "\n"


def run_doctest(line: int, scope: dict) -> None:
    test = doctest.DocTestParser().get_doctest(as_doctest(doctest_blocks()[line]), scope, f"README.md:{line}",
                                               README, line)
    report: list[str] = []
    results = doctest.DocTestRunner(optionflags=FLAGS).run(test, out=report.append, clear_globs=False)
    assert results.attempted > 0
    assert results.failed == 0, "".join(report)


@pytest.fixture
def earlier_examples(monkeypatch, fashion) -> dict:
    """The names the `>>>` examples take from the README's earlier ones: `images`, `filters` and `nn` from
    the seed demo (run as written), and `model`, `layers`, `x_train`, `y_train` from the Keras-style example
    up to, not including, its 10-epoch `fit`."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    scope: dict = {}
    exec(python_blocks()[0], scope)
    plt.close("all")
    keras_style = python_blocks()[1]
    exec(keras_style[:keras_style.index("history = model.fit(")], scope)
    return scope


def test_every_doctest_block_is_run():
    """The tests below cover every `>>>` block: a new block must be given its setup here."""
    assert set(doctest_blocks()) == set(FAST_BLOCKS) | {lenet5_block()}


def lenet5_block() -> int:
    return next(line for line, block in doctest_blocks().items() if "runs/lenet5" in block)


FAST_BLOCKS = [line for line, block in doctest_blocks().items() if "runs/lenet5" not in block]


@pytest.mark.parametrize("line", FAST_BLOCKS)
def test_readme_examples_print_what_the_readme_shows(line, earlier_examples, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_doctest(line, earlier_examples)


@pytest.mark.slow
def test_the_inspection_examples_print_what_the_readme_shows(fashion, tmp_path, monkeypatch):
    """On the run the README's inspection section describes (`convnet train --model lenet5 --limit 6000
    --epochs 3 --test-limit 1000 --out runs/lenet5`, seeded) and `boot.png`, the first test image. About a
    minute on two busy CPU cores."""
    from PIL import Image
    (_, _), (x_test, _) = fashion
    monkeypatch.chdir(tmp_path)
    Image.fromarray(x_test[0]).save("boot.png")
    command = [sys.executable, "-m", "convnet", "train", "--model", "lenet5", "--limit", "6000", "--epochs", "3",
               "--test-limit", "1000", "--out", "runs/lenet5", "--verbose", "0"]
    trained = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert "runs/lenet5" in doctest_blocks()[lenet5_block()]
    run_doctest(lenet5_block(), {})
    assert {"boot-gradcam.png", "c1.png", "report"} <= set(os.listdir(tmp_path))
