"""`convnet explore`'s page in a real browser: Playwright driving Chromium (Debian's `chromium` package; Playwright's
own browser download is not needed). Every view is exercised against the API's numbers: the network graph,
an upload and its prediction, a drawing, feature maps and filters drawn (their canvas pixels), a click on a
unit outlining its receptive field at the right place on the input, explanations, the run's curves, confusion
matrix and a mistake loaded as the input, the kernel playground's output and size; first paint is timed.

One browser for the module, servers in this process (uvicorn in a thread). Skipped, saying why, without
Playwright or Chromium. The executable is $CONVNET_CHROMIUM, else `chromium` (or `chromium-browser`,
`google-chrome`) on PATH. Screenshots of the main views are written to a temporary folder, or to
$CONVNET_SCREENSHOTS_DIR (`CONVNET_SCREENSHOTS_DIR=docs/assets/explorer` writes the README's
docs/assets/explorer/explorer-*.png), each stored as a 256-colour PNG under 200 KB.
"""
from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the explorer's web server is the `explore` extra: pip install 'convnet[explore]'")
pytest.importorskip("uvicorn", reason="the explorer's web server is the `explore` extra: pip install 'convnet[explore]'")
pytest.importorskip("playwright.sync_api", reason="browser tests need Playwright: pip install playwright (it drives "
                                                  "Debian's chromium; no browser download)")

from PIL import Image
from playwright.sync_api import sync_playwright

from convnet.explorer import Explorer, create_app, load_explorer
from convnet.explorer import server as explorer_server
from convnet.inspection import explain
from tests.test_explorer import explorer_run, graph_model, png_bytes, unpack

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and says so on import; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

MAX_SCREENSHOT_BYTES = 200_000
FIRST_PAINT_S = 1.0  # the target for the page's first contentful paint


def chromium_path() -> str | None:
    given = os.environ.get("CONVNET_CHROMIUM")
    if given:
        return given if os.path.isfile(given) else None
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                None)


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium, or set "
                                                         "CONVNET_CHROMIUM to a Chromium executable")


@contextlib.contextmanager
def serving(explorer: Explorer) -> Iterator[str]:
    """The explorer's app on a free port of 127.0.0.1 (uvicorn in a thread); yields its URL."""
    import uvicorn
    sock = explorer_server.bind("127.0.0.1", 0)
    app = create_app(explorer, allowed_hosts=list(explorer_server.LOOPBACK_NAMES))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield explorer_server.url_for(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def explorer(tmp_path_factory) -> Explorer:
    return load_explorer(explorer_run(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def api(explorer):
    with TestClient(create_app(explorer)) as client:
        yield client


@pytest.fixture(scope="module")
def url(explorer):
    with serving(explorer) as address:
        yield address


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, url):
    """The page, loaded once, with its first test image predicted; the tests below act on it in order."""
    context = browser.new_context(viewport={"width": 1300, "height": 900}, bypass_csp=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(url)
    tab.wait_for_function("document.querySelector('[data-testid=top-class]').textContent.length > 0")
    tab.wait_for_function("document.querySelectorAll('[data-testid=feature-map]').length > 0")
    tab.errors = errors  # type: ignore[attr-defined]
    yield tab
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("CONVNET_SCREENSHOTS_DIR")
    if not folder:
        return tmp_path_factory.mktemp("screenshots")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


def screenshot(locator, folder: Path, name: str) -> Path:
    """The element as docs/assets/explorer-NAME.png would hold it: a 256-colour PNG under 200 KB."""
    image = Image.open(io.BytesIO(locator.screenshot())).convert("RGB")
    path = folder / f"explorer-{name}.png"
    image.quantize(256).save(path, optimize=True)
    assert path.stat().st_size < MAX_SCREENSHOT_BYTES, f"{path}: {path.stat().st_size} bytes"
    return path


def canvas_pixels(page, selector: str) -> np.ndarray:
    """The canvas's own pixels (its width x height, not its CSS size), RGBA uint8 (H, W, 4)."""
    url = page.eval_on_selector(selector, "canvas => canvas.toDataURL('image/png')")  # lossless
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGBA"))


def wait_for_label(page, text: str) -> None:
    page.wait_for_function("text => document.querySelector('[data-testid=input-label]').textContent.includes(text)",
                           arg=text)


def wait_for_prediction(page, class_name: str) -> None:
    page.wait_for_function("name => document.querySelector('[data-testid=top-class]').textContent === name",
                           arg=class_name)


def test_first_paint_is_under_a_second(browser, url):
    context = browser.new_context()
    tab = context.new_page()
    started = time.perf_counter()
    tab.goto(url)
    tab.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
    paint = tab.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime") / 1000
    context.close()
    assert paint < FIRST_PAINT_S, f"first contentful paint after {paint:.3f} s ({time.perf_counter() - started:.3f} s)"


def test_network_view_shows_every_layer(page, api, shots):
    info = api.get("/api/model").json()
    nodes = page.locator("[data-testid=graph-node]")
    assert nodes.count() == len([layer for layer in info["layers"] if layer["nested_in"] is None])
    assert page.locator("#graph path.edge").count() == sum(len(layer["inputs"]) for layer in info["layers"])
    page.locator("[data-testid=graph-node][data-layer=c3]").click()
    detail = page.inner_text("[data-testid=layer-detail]")
    assert "(None, 10, 10, 16)" in detail and "2,416" in detail and "14x14" in detail
    screenshot(page.locator("#network"), shots, "network")


def test_network_view_of_a_graph_draws_branches_and_merges(browser):
    with serving(Explorer(graph_model(), source="graph")) as address:
        context = browser.new_context(bypass_csp=True)
        tab = context.new_page()
        tab.goto(address)
        tab.wait_for_selector("[data-testid=graph-node][data-layer=merge]")
        boxes = {name: tab.locator(f"[data-testid=graph-node][data-layer={name}]").bounding_box()
                 for name in ("stem", "branch", "merge", "block")}
        context.close()
    assert boxes["stem"]["y"] < boxes["branch"]["y"] < boxes["merge"]["y"] < boxes["block"]["y"]


def bar_png() -> bytes:
    """A vertical bar, in colour and of another size than the model's input."""
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[5:35, 13:17] = 250
    return png_bytes(rgb)


def test_upload_an_image_and_read_the_prediction(page, api, tmp_path):
    path = tmp_path / "bar.png"
    path.write_bytes(bar_png())
    expected = api.post("/api/predict", files={"image": ("bar.png", path.read_bytes())}).json()
    page.set_input_files("[data-testid=image-input]", str(path))
    wait_for_label(page, "bar.png")
    wait_for_prediction(page, expected["predictions"][0]["class_name"])
    page.wait_for_function("document.querySelector('[data-testid=conversion]').textContent.includes('bar.png')")
    conversion = page.inner_text("[data-testid=conversion]")
    assert "Original: 30x40, 3 channel(s)" in conversion and "resized from 30x40 to 28x28" in conversion
    bars = page.locator("[data-testid=bar]")
    assert bars.count() == 5
    assert page.inner_text("[data-testid=top-probability]") == f"{expected['predictions'][0]['probability']:.2%}"
    seen = canvas_pixels(page, "[data-testid=input-canvas]")[:, :, 0]
    assert np.array_equal(seen, unpack(expected["input"]["pixels"], "uint8")[:, :, 0])


def test_feature_maps_are_drawn_from_the_api(page, api, explorer):
    wait_for_label(page, "bar.png")
    page.wait_for_function("document.querySelector('[data-testid=feature-map][data-layer=c3]') !== null")
    counts = {layer: page.locator(f"[data-testid=feature-map][data-layer='{layer}']").count()
              for layer in explain.spatial_layers(explorer.model)}
    assert counts == {"c1": 6, "s2": 6, "c3": 16, "s4": 16, "c5": 32}  # c5's 120 maps: the first 32, then a button
    answer = api.post("/api/featuremaps", files={"image": ("bar.png", bar_png())}).json()
    assert [layer["name"] for layer in answer["layers"]] == list(counts)
    for layer, index in (("c1", 2), ("c3", 5), ("c5", 7)):
        drawn = canvas_pixels(page, f"[data-testid=feature-map][data-layer={layer}][data-index='{index}']")
        expected = unpack(next(item for item in answer["layers"] if item["name"] == layer)["maps"], "uint8")[index]
        assert np.array_equal(drawn[:, :, 0], expected) and (drawn[:, :, 0] == drawn[:, :, 2]).all()  # gray
    c1 = canvas_pixels(page, "[data-testid=feature-map][data-layer=c1][data-index='2']")
    assert len(np.unique(c1[:, :, 0])) > 1  # drawn: not one flat colour


def test_a_click_on_a_unit_outlines_its_receptive_field(page, explorer, shots):
    page.locator("[data-testid=feature-map][data-layer=c3][data-index='1']").click()
    zoom = page.locator("[data-testid=enlarged-map]")
    zoom.wait_for()
    assert zoom.get_attribute("data-layer") == "c3"
    box = zoom.bounding_box()
    row, col = 6, 2  # the c3 map is 10x10: click the middle of that unit
    page.mouse.click(box["x"] + (col + 0.5) * box["width"] / 10, box["y"] + (row + 0.5) * box["height"] / 10)
    outline = page.locator("[data-testid=rf-box]")
    page.wait_for_function("document.querySelector('[data-testid=rf-box]').dataset.row === '6'")
    top, left, bottom, right = explain.receptive_field_box(explorer.model, "c3", (row, col))
    assert [int(outline.get_attribute(f"data-{side}")) for side in ("top", "left", "bottom", "right")] == [
        top, left, bottom, right]
    image = page.locator("[data-testid=input-canvas]").bounding_box()
    drawn = outline.bounding_box()
    scale = image["width"] / 28
    assert drawn["x"] - image["x"] == pytest.approx(left * scale + 1, abs=1.5)  # +1: the canvas's border
    assert drawn["y"] - image["y"] == pytest.approx(top * scale + 1, abs=1.5)
    assert drawn["width"] == pytest.approx((right - left) * scale, abs=1.5)
    assert drawn["height"] == pytest.approx((bottom - top) * scale, abs=1.5)
    assert (f"Unit (6, 2) of c3 sees input rows {top} to {bottom - 1} and columns {left} to {right - 1}: "
            f"{bottom - top}x{right - left} pixels") in page.inner_text("[data-testid=rf-text]")
    screenshot(page.locator("#featuremaps"), shots, "featuremaps")
    screenshot(page.locator("#input"), shots, "input")  # with the receptive field outlined


def test_filters_are_drawn(page, explorer, shots):
    filters = page.locator("[data-testid=filter]")
    assert filters.count() == 6
    kernel = explorer.model.get_layer("c1").get_weights()[0][:, :, 0, 4]  # (5, 5)
    drawn = canvas_pixels(page, "[data-testid=filter][data-index='4']")[:, :, 0].astype(float)
    expected = np.round(255 * (kernel - kernel.min()) / (kernel.max() - kernel.min()))
    assert np.abs(drawn - expected).max() <= 1
    page.select_option("[data-testid=filter-layer]", "c3")
    page.wait_for_function("document.querySelectorAll('[data-testid=filter]').length === 16")
    assert canvas_pixels(page, "[data-testid=filter][data-index='0']").shape == (5, 6 * 6 - 1, 4)  # 6 channels side by side
    screenshot(page.locator("#filters"), shots, "filters")


def test_explanations_are_overlaid(page, shots):
    page.wait_for_function("document.querySelector('[data-testid=explain-text]').textContent.includes('Grad-CAM')")
    overlay = canvas_pixels(page, "[data-testid=explain-overlay]")
    assert overlay.shape[:2] == (28, 28) and len(np.unique(overlay[:, :, 0])) > 1
    page.select_option("[data-testid=explain-method]", "occlusion")
    page.wait_for_function("document.querySelector('[data-testid=explain-text]').textContent.startsWith('Occlusion')")
    page.select_option("[data-testid=explain-method]", "grad_cam")
    page.select_option("[data-testid=explain-layer]", "c1")
    page.wait_for_function("document.querySelector('[data-testid=explain-text]').textContent.includes('at layer c1')")
    page.select_option("[data-testid=explain-class]", "2")  # any class, not only the predicted one
    page.wait_for_function("document.querySelector('[data-testid=explain-text]').textContent.startsWith("
                           "'Grad-CAM for triangle')")
    screenshot(page.locator("#explain"), shots, "explanations")


def test_run_view_and_a_mistake_loads_as_the_input(page, api, shots):
    run = api.get("/api/run").json()
    page.wait_for_selector("[data-testid=curve]")
    assert page.locator("[data-testid=curve]").count() == 2  # accuracy and loss, each with its validation curve
    assert page.locator("[data-testid=confusion-cell]").count() == 49
    cell = page.locator("[data-testid=confusion-cell][data-row='2'][data-col='0']")
    assert cell.inner_text() == str(run["confusion"][2][0])
    mistakes = page.locator("[data-testid=mistake]")
    assert mistakes.count() == len(run["mistakes"])
    screenshot(page.locator("#run"), shots, "run")
    chosen = run["mistakes"][1]
    page.locator(f"[data-testid=confusion-cell][data-row='{chosen['true']}'][data-col='{chosen['predicted']}']").click()
    pair = [m["id"] for m in run["mistakes"] if (m["true"], m["predicted"]) == (chosen["true"], chosen["predicted"])]
    page.wait_for_function("n => document.querySelectorAll('[data-testid=mistake]').length === n", arg=len(pair))
    assert [mistakes.nth(i).get_attribute("data-sample-id") for i in range(len(pair))] == pair
    page.locator(f"[data-testid=mistake][data-sample-id={chosen['id']}]").click()
    wait_for_label(page, chosen["id"])
    wait_for_prediction(page, run["class_names"][chosen["predicted"]])
    assert page.inner_text("[data-testid=top-probability]") == f"{chosen['probability']:.2%}"


def test_playground_output_and_size_follow_the_controls(page, shots):
    page.locator("#playground").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('[data-testid=playground-size]').textContent.includes('427x640')")
    vertical = canvas_pixels(page, "[data-testid=playground-output]")
    assert vertical.shape[:2] == (427, 640)
    assert page.get_attribute("[data-testid=playground-output]", "data-kernel") == "vertical"
    page.click("[data-testid=preset-horizontal]")
    page.wait_for_function("document.querySelector('[data-testid=playground-output]').dataset.kernel === 'horizontal'")
    horizontal = canvas_pixels(page, "[data-testid=playground-output]")
    assert horizontal.shape == vertical.shape and not np.array_equal(horizontal, vertical)
    page.select_option("[data-testid=pg-stride]", "2")
    page.wait_for_function("document.querySelector('[data-testid=playground-size]').textContent.includes('214x320')")
    assert canvas_pixels(page, "[data-testid=playground-output]").shape[:2] == (214, 320)
    assert "height ceil(427 / 2) = 214, width ceil(640 / 2) = 320" in page.inner_text("[data-testid=playground-formula]")
    page.select_option("[data-testid=pg-padding]", "VALID")
    page.wait_for_function("document.querySelector('[data-testid=playground-size]').textContent.includes('211x317')")
    assert "ceil((427 - 7 + 1) / 2) = 211" in page.inner_text("[data-testid=playground-formula]")
    cell = page.locator("[data-testid=kernel-cell][data-row='0'][data-col='0']")
    cell.fill("5")
    page.wait_for_function("document.querySelector('[data-testid=playground-output]').dataset.kernel === 'custom'")
    screenshot(page.locator("#playground"), shots, "playground")


def test_a_drawing_is_classified(page, api):
    canvas = page.locator("[data-testid=draw-canvas]")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.5 * box["height"], steps=8)
    page.mouse.up()
    page.click("#draw-use")
    wait_for_label(page, "your drawing")
    drawn = canvas_pixels(page, "[data-testid=input-canvas]")
    assert drawn[14, 5:23, 0].min() > 100 and drawn[3, :, 0].max() == 0  # a horizontal stroke across the middle
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === ''")
    assert page.inner_text("[data-testid=top-class]") and page.errors == []  # type: ignore[attr-defined]
