"""The fenced code blocks of a Markdown page, and how the docs' tests run them: shared by tests/test_readme.py
(README.md) and tests/test_docs.py (the pages under docs/), so both read Markdown and run examples one way.

A `python` block is executed; a block with `>>>` prompts (any fence) runs as a doctest whose printed output
must match the page; a `console` block's `$ ` lines are commands followed by the output the page shows.
"""
from __future__ import annotations

import doctest
import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class Block:
    page: str  # the name shown in failures, e.g. "guides/seed.md" or "README.md"
    line: int  # of the opening fence, 1-based
    lang: str
    body: str


def blocks(path: Path, page: str | None = None) -> list[Block]:
    """Every fenced block of the file at `path`, in order."""
    text = path.read_text(encoding="utf-8")
    return [Block(page or path.name, text.count("\n", 0, match.start()) + 1, match.group("lang"),
                  match.group("body")) for match in FENCE.finditer(text)]


def examples(path: Path, page: str | None = None) -> list[Block]:
    """The blocks a reader would run: Python code, and sessions with `>>>` prompts in any fence."""
    return [block for block in blocks(path, page) if block.lang == "python" or ">>>" in block.body]


def run_doctest(block: Block, scope: dict, path: Path) -> None:
    """Runs the `>>>` session of `block` in `scope`, which then holds the names it defined; fails with
    doctest's report when a printed output differs from the page."""
    test = doctest.DocTestParser().get_doctest(block.body, scope, f"{block.page}:{block.line}", str(path),
                                               block.line)
    report: list[str] = []
    results = doctest.DocTestRunner(optionflags=FLAGS).run(test, out=report.append, clear_globs=False)
    scope.update(test.globs)  # the DocTest ran on a copy; later blocks see its names
    assert results.attempted > 0, f"{block.page}:{block.line}: no example ran"
    assert results.failed == 0, "".join(report)


def run_example(block: Block, scope: dict, path: Path, source: str | None = None) -> None:
    """A doctest block as a doctest, a `python` block executed (`source`, when given, instead of its body)."""
    if ">>>" in block.body:
        run_doctest(block, scope, path)
    else:
        exec(compile(block.body if source is None else source, f"{block.page}:{block.line}", "exec"), scope)


def console_runs(block: Block) -> list[tuple[str, str]]:
    """[(command, the output shown after it)] of a console block; `$ ` starts a command, and a comment
    after the command is dropped."""
    runs: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            runs.append((re.sub(r"\s+#.*$", "", line[2:]).strip(), []))
        elif runs:
            runs[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in runs]


def same_lines(actual: str, shown: str) -> bool:
    """The same lines, trailing blanks and surrounding empty lines aside."""
    return [line.rstrip() for line in actual.strip().splitlines()] == \
        [line.rstrip() for line in shown.strip().splitlines()]


def headings(path: Path) -> set[str]:
    """The anchors MkDocs's toc extension gives the headings of a page (outside code blocks): lower case,
    punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    anchors = set()
    for title in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\s-]", "", title.replace("`", "")).strip().lower()
        anchors.add(re.sub(r"[-\s]+", "-", slug))
    return anchors


def tables(path: Path) -> list[list[list[str]]]:
    """Every Markdown table of a page (outside code blocks), as rows of cells: the header row first, the
    separator row left out; `\\|` inside a cell stays part of it."""
    found: list[list[list[str]]] = []
    previous_was_table = False
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if not previous_was_table:
                found.append([])
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                found[-1].append(cells)
            previous_was_table = True
        else:
            previous_was_table = False
    return found


def numbers(cell: str) -> list[float]:
    """The numbers written in a table cell, in order: `**187** (174-193), 65% of peak` gives [187, 174, 193, 65]."""
    return [float(number.replace(",", "")) for number in re.findall(r"\d[\d,]*(?:\.\d+)?", cell)]


def shrink_fashion_mnist(monkeypatch, fashion, train: int, test: int) -> None:
    """Makes `convnet.datasets.fashion_mnist.load_data()` give the first `train` training and `test` test
    images of `fashion` (the session's Fashion-MNIST), so that a page's example runs as written, quickly."""
    import convnet.datasets
    (x_train, y_train), (x_test, y_test) = fashion
    small = ((x_train[:train], y_train[:train]), (x_test[:test], y_test[:test]))
    real = convnet.datasets.fashion_mnist

    class SmallFashion:
        def __getattr__(self, name):
            return getattr(real, name)

        def load_data(self, *args, **kwargs):
            return small

    monkeypatch.setattr(convnet.datasets, "fashion_mnist", SmallFashion())
