"""`convnet report` and `convnet.report.build_report`: the page has every section, its per-class table agrees
with an independent count over the test set, it is self-contained (every image a data: URI, nothing
fetched), text is escaped, and a folder that is not a finished run exits 2 with a pinned line."""
from __future__ import annotations

import base64
import contextlib
import doctest
import html.parser
import io
import json
import shutil

import jinja2
import numpy as np
import pytest
from PIL import Image

from convnet import report
from convnet.cli import main
from convnet.inspection import pages
from tests.test_cli_inspect import FASHION_NAMES, train_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, fashion):
    return train_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def written(tiny_run, tmp_path_factory):
    """`convnet report RUN --out DIR` run once: (its stdout lines, the output folder)."""
    out = tmp_path_factory.mktemp("report")
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(["report", str(tiny_run), "--out", str(out), "--device", "cpu"]) == 0
    return capture.getvalue().splitlines(), out


class Page(html.parser.HTMLParser):
    """The parts of the page the tests look at: h2 headings, img sources, every URL-bearing attribute, and
    the rows (lists of cell texts) of each table, by the id of the section holding it."""

    def __init__(self, text: str):
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.tags: set[str] = set()
        self._section, self._text, self._cell, self._h2 = "", "", None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.urls += [value for key, value in attrs.items() if key in ("src", "href", "action") and value]
        if tag == "section":
            self._section = attrs["id"]
        elif tag == "h2":
            self._h2, self._text = True, ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables.setdefault(self._section, []).append([])
        elif tag == "tr":
            self.tables[self._section][-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "h2":
            self.headings.append(self._text)
            self._h2 = False
        elif tag in ("td", "th"):
            self.tables[self._section][-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._h2:
            self._text += data
        if self._cell is not None:
            self._cell += data


def test_report_command_prints_the_accuracy_and_the_paths(written, tiny_run):
    lines, out = written
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert lines == [f"Test accuracy recomputed on 200 images: {metrics['test_accuracy']:.4f} (metrics.json: "
                     f"{metrics['test_accuracy']:.4f} on 200 images)",
                     *(str(out / name) for name in ("history.png", "confusion_matrix.png", "misclassified.png",
                                                    "report.html"))]
    for name in ("history.png", "confusion_matrix.png", "misclassified.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300 and max(image.size) <= 2000, (name, image.size)
            assert np.asarray(image.convert("L")).std() > 10  # drawn on, not blank


def test_the_page_has_every_section_and_is_self_contained(written):
    _, out = written
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.headings == [heading for _, heading in report.SECTIONS] == [
        "Summary", "Training curves", "Test metrics", "Per-class accuracy", "Confusion matrix",
        "Misclassified examples"]
    assert len(page.images) == 3
    for source, name in zip(page.images, ("history.png", "confusion_matrix.png", "misclassified.png")):
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]) == (out / name).read_bytes()  # the very PNG file
    assert all(url.startswith(("data:", "#")) for url in page.urls), page.urls
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text


def test_the_tables_agree_with_an_independent_count(written, tiny_run, fashion):
    from convnet.models import load_model
    _, out = written
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    (_, _), (x_test, y_test) = fashion
    model = load_model(tiny_run / "model.convnet", device="cpu")
    predicted = model.predict(x_test[:200, :, :, None].astype(np.float32) / 255, verbose=0).argmax(axis=1)
    truth = y_test[:200]
    header, *rows = page.tables["per-class-accuracy"][0]
    assert header == ["#", "Class", "Test images", "Correct", "Accuracy", "Most often predicted instead"]
    assert len(rows) == 10 and [row[1] for row in rows] == FASHION_NAMES
    for k, row in enumerate(rows):
        total, correct = int((truth == k).sum()), int(((truth == k) & (predicted == k)).sum())
        assert row[2:5] == [str(total), str(correct), f"{correct / total:.1%}"], row
    summary = page.tables["summary"][1]
    assert summary[0] == ["Layer", "Type", "Output shape", "Params", "MACs", "Receptive field", "Jump"]
    assert summary[1] == ["c1", "Conv2D", "(None, 28, 28, 6)", "156", "117.60K", "5x5", "1x1"]
    assert summary[-1][0] == "Total" and summary[-1][3] == "61,706"
    recomputed = dict(page.tables["test-metrics"][1][1:])
    assert recomputed == {"test images": "200", "accuracy": f"{(predicted == truth).mean():.4f}",
                          "misclassified": str(int((predicted != truth).sum()))}


def test_build_report_returns_what_it_measured(tiny_run, tmp_path):
    result = report.build_report(tiny_run, out_dir=tmp_path, limit=100, device="cpu")
    assert result.paths == [str(tmp_path / name) for name in ("history.png", "confusion_matrix.png",
                                                              "misclassified.png", "report.html")]
    assert result.test_images == 100 and result.confusion.shape == (10, 10) and result.confusion.sum() == 100
    assert sum(item.total for item in result.per_class) == 100
    assert result.accuracy == pytest.approx(sum(item.correct for item in result.per_class) / 100)
    assert [item.name for item in result.per_class] == FASHION_NAMES
    worst = max(result.per_class, key=lambda item: item.confused_count)
    assert result.confusion[worst.index].max() in (worst.confused_count, worst.correct)
    text = open(result.html, encoding="utf-8").read()
    assert "The recomputed figures use 100 test images, metrics.json 200" in text


def test_text_is_escaped_and_the_default_folder_is_inside_the_run(tiny_run, tmp_path):
    odd = tmp_path / 'run <b>&"quoted"'
    shutil.copytree(tiny_run, odd)
    result = report.build_report(odd, limit=20, device="cpu")
    assert result.html == str(odd / "report" / "report.html")
    text = open(result.html, encoding="utf-8").read()
    escaped = "Run report: run &lt;b&gt;&amp;&#34;quoted&#34;"  # markupsafe writes " as &#34;
    assert f"<title>{escaped}</title>" in text and f"<h1>{escaped}</h1>" in text
    assert "<b>" not in text and '&"quoted"' not in text and f"Run folder {odd}" not in text


@pytest.mark.parametrize("setup, message", [
    ("no metrics", "{run}: the run has no metrics.json, so it did not finish (interrupted, or the loss diverged); "
                   "resume it with: convnet train --resume {run}"),
    ("no model", "{run}: the run has no model.convnet; a finished run folder holds model.convnet, history.json, "
                 "metrics.json and config.json"),
    ("no config", "'{run}' is not a run folder: it has no config.json"),
    ("missing", "{run}: no such run folder"),
    ("a file", "{run}: not a run folder (it is a file); pass the folder `convnet train` wrote"),
    ("bad limit", "`limit` must be >= 1. Received: limit=0"),
])
def test_a_folder_that_is_not_a_finished_run_exits_2(setup, message, tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["report", str(run)]
    if setup == "a file":
        run.write_text("not a folder")
    elif setup != "missing":
        shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report"))
        removed = {"no metrics": "metrics.json", "no model": "model.convnet", "no config": "config.json"}.get(setup)
        if removed:
            (run / removed).unlink()
        if setup == "bad limit":
            argv += ["--limit", "0"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"convnet report: error: {message.format(run=run)}\n"
    assert captured.out == ""
    assert not (tmp_path / "run" / "report").exists() or setup == "a file"


def test_pages_escape_every_value_and_refuse_undefined_names():
    assert doctest.testmod(pages).failed == 0
    assert pages.render_string("{{ x }}", x='<a href="y">&') == "&lt;a href=&#34;y&#34;&gt;&amp;"
    with pytest.raises(jinja2.UndefinedError, match="'missing' is undefined"):
        pages.render_string("<p>{{ missing }}</p>")  # a typo in a template fails, instead of an empty cell


def test_the_base_layout_serves_other_pages():
    """What the explorer will do: extend base.html, fill its blocks, keep the shared inline style sheet."""
    page = pages.render_string('{% extends "base.html" %}{% block title %}Explorer{% endblock %}'
                               '{% block content %}<p>{{ body }}</p>{% endblock %}', body="<script>")
    assert page.startswith("<!DOCTYPE html>") and "<title>Explorer</title>" in page and "<h1>Explorer</h1>" in page
    assert "<p>&lt;script&gt;</p>" in page and "<script>" not in page
    assert "td.n { text-align: right;" in page  # style.css, inline


def test_the_templates_ship_with_the_package():
    import pathlib
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = pathlib.Path(pages.__file__).parent
    shipped = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    templates = sorted(str(p.relative_to(root.parent)) for p in (root / "templates").rglob("*") if p.is_file())
    assert templates and all(any(pathlib.PurePath(t).match(pattern) for pattern in shipped["convnet"])
                             for t in templates), (templates, shipped)
