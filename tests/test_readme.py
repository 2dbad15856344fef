"""The README's Python examples run as written, so they cannot go stale."""
from __future__ import annotations

import os
import re

import matplotlib
import numpy as np

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
