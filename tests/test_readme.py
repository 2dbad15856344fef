"""The README is the front door, and cannot go stale: its opening commands are the ones CI and a newcomer run,
its tour's Python examples run as written (the `>>>` ones as doctests, their printed output checked), its
command lines parse, every link into docs/ reaches a page (and a heading) that exists, and every headline
number stands with how it was measured. The rest of the documentation is checked by tests/test_docs.py.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from . import markdown_blocks
from .markdown_blocks import Block, run_doctest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def text() -> str:
    return README.read_text(encoding="utf-8")


def blocks() -> list[Block]:
    return markdown_blocks.blocks(README)


def python_blocks() -> list[str]:
    return [block.body for block in blocks() if block.lang == "python" and ">>>" not in block.body]


def doctest_blocks() -> list[Block]:
    return [block for block in blocks() if ">>>" in block.body]


def section(title: str) -> str:
    """The README's text under `## title`, up to the next `## ` heading."""
    start = text().index(f"\n## {title}\n")
    end = text().find("\n## ", start + 1)
    return text()[start:end if end > 0 else None]


# The opening commands: install, the main job, the test command (CI and a newcomer run exactly these)

OPENING = """```bash
pip install -e ".[test]"                      # convnet, PyTorch and the test tools
CONVNET_DATA=../shared/data convnet train     # train the seed CNN on Fashion-MNIST, save the run
```

Run the tests:

```bash
CONVNET_DATA=../shared/data python -m pytest
```
"""


def test_the_readme_opens_with_install_train_and_test_commands():
    bash = [block.body for block in blocks() if block.lang == "bash"]
    assert bash[0].splitlines()[0].startswith("pip install -e")
    assert "convnet train" in bash[0].splitlines()[1]
    assert "python -m pytest" in bash[1]
    assert OPENING in text(), "the README's opening commands changed: .ci/run and newcomers run them as written"
    assert text().index(OPENING) < text().index("\n## "), "the set-up commands come before any section"


# The tour's examples

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
    markdown_blocks.shrink_fashion_mnist(monkeypatch, fashion, train=5256, test=100)  # 256 to train, 5000 to validate
    monkeypatch.chdir(tmp_path)  # model.save("fashion.convnet") lands here
    code = python_blocks()[1]
    assert "epochs=10" in code
    scope: dict = {}
    exec(code.replace("epochs=10", "epochs=1"), scope)
    assert scope["model"].count_params() == 1_406_218
    assert len(scope["history"].history["val_accuracy"]) == 1
    assert np.isfinite(scope["history"].history["loss"]).all()
    assert (tmp_path / "fashion.convnet").exists()


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


def test_the_tour_has_the_seed_the_keras_model_the_functional_api_and_the_cli():
    tour = section("A short tour")
    assert "nn.conv2d(images, filters" in tour and "convnet.Sequential([" in tour
    assert "convnet.Model(inputs, outputs" in tour and "```bash\nconvnet train" in tour
    assert len(python_blocks()) == 2 and len(doctest_blocks()) == 1


@pytest.mark.parametrize("index", range(len(doctest_blocks())))
def test_readme_examples_print_what_the_readme_shows(index, earlier_examples, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_doctest(doctest_blocks()[index], earlier_examples, README)


def test_the_tours_command_lines_parse():
    """Each command of the tour's command-line block is one the parser accepts, options and all (parsed,
    not run)."""
    from convnet.cli.main import build_parser
    tour = [block for block in blocks() if block.lang == "bash" and block.body.startswith("convnet train --model")]
    assert len(tour) == 1
    commands = [line.split("#")[0].strip() for line in tour[0].body.splitlines() if line.strip()]
    assert len(commands) >= 4
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "convnet"
        build_parser().parse_args(words[1:])


# Links into the documentation

LINK = re.compile(r"\]\((?!https?://)([^)#\s]+)(?:#([^)\s]+))?\)")


def test_every_link_from_the_readme_reaches_a_page_and_a_heading_that_exist():
    links = LINK.findall(text())
    assert len(links) > 12
    for path, anchor in links:
        target = ROOT / path
        assert target.exists(), f"README links to {path}, which does not exist"
        if anchor:
            assert target.suffix == ".md", f"README links to #{anchor} in {path}, which is not a page"
            assert anchor in markdown_blocks.headings(target), f"README links to {path}#{anchor}: no such heading"


def test_the_readme_links_to_every_guide_and_says_how_to_build_the_site():
    guides = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "docs" / "guides").glob("*.md"))
    linked = {path for path, _ in LINK.findall(section("Documentation"))}
    assert [guide for guide in guides if guide not in linked] == []
    assert "mkdocs serve" in section("Documentation") and "mkdocs build --strict" in section("Documentation")


def test_the_anchors_are_those_mkdocs_gives_the_headings():
    """The link check above computes a heading's anchor itself; Python-Markdown's toc extension (what MkDocs
    uses) must agree on every heading of every guide."""
    toc = pytest.importorskip("markdown.extensions.toc", reason="Python-Markdown comes with the docs extra")
    for page in sorted((ROOT / "docs" / "guides").glob("*.md")):
        titles = re.findall(r"^#{1,6} +(.+?) *$", markdown_blocks.FENCE.sub("", page.read_text(encoding="utf-8")),
                            re.M)
        theirs = {toc.slugify(re.sub(r"`([^`]*)`", r"\1", title), "-") for title in titles}
        assert markdown_blocks.headings(page) == theirs, page.name


# The headline numbers: each with its command, hardware and date, and the same as in the guide it links to

def test_each_headline_number_stands_with_its_measurement_and_agrees_with_its_guide():
    """A row of the headline table: what, the number, then the command (in backticks), the hardware and the
    date, or "the same run" as the row above. Its link leads to the guide where the full measurement stands,
    and each number of the row's number cell is written there too."""
    table = markdown_blocks.tables(README)
    headline = next(rows for rows in table if rows[0] == ["what", "number", "command, hardware, date"])
    above = None
    assert len(headline) > 4
    for what, number, measured in headline[1:]:
        if measured == "the same run":
            assert above, f"{what}: 'the same run' needs a row above"
            measured = above
        assert "`" in measured and DATE.search(measured), f"{what}: no command or no date in {measured!r}"
        assert re.search(r"CPU|GPU|EPYC|core", measured), f"{what}: no hardware in {measured!r}"
        links = LINK.findall(what)
        assert len(links) == 1, f"{what}: link the guide where the measurement stands"
        guide = (ROOT / links[0][0]).read_text(encoding="utf-8")
        for value in re.findall(r"\d[\d,.]*\d%?|\d", number):
            assert value in guide, f"{what}: {value} is not in {links[0][0]}"
        date = DATE.search(measured)
        assert date and date.group() in guide, f"{what}: the date {date} is not in {links[0][0]}"
        above = measured
