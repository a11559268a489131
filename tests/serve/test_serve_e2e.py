"""The page in a real headless Chromium against a real uvicorn: upload, draw, clear, touch.

Screenshots are saved under test-artifacts/ at the repository root.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from serve_helpers import LiveServer, png_bytes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="the playwright package is missing"
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists() and shutil.which("chromium") is None,
        reason=f"no Chromium at {CHROMIUM}: install Debian's chromium package",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    """The page, loaded, refusing any request to another host (the page must work offline)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    foreign: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if _is_error(message) else None)
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(live_server.url)
            else (foreign.append(route.request.url), route.abort())
        ),
    )
    page.goto(live_server.url)
    page.wait_for_function("document.getElementById('model-name').textContent === 'tiny'")
    yield page
    assert not foreign, f"the page asked another host: {foreign}"
    assert not errors, f"errors in the page: {errors}"
    context.close()


def _is_error(message: ConsoleMessage) -> bool:
    """A console error, except the browser's note on a 4xx answer (the tests expect some)."""
    expected = "Failed to load resource: the server responded with a status of 4"
    return message.type == "error" and not message.text.startswith(expected)


def top_classes(page: Page) -> list[tuple[str, float]]:
    # One evaluate reads all rows at once: read row by row, an answer arriving in between (the
    # page asks again as a stroke goes on) mixed two answers, summing to 1.005 under load.
    rows = page.evaluate(
        "() => [...document.querySelectorAll('#top li')]"
        ".map(r => [r.dataset.class, Number(r.dataset.probability)])"
    )
    return [(str(name), float(probability)) for name, probability in rows]


def wait_for_new_answer(page: Page, before: list[tuple[str, float]]) -> list[tuple[str, float]]:
    page.wait_for_function(
        """before => {
            const rows = [...document.querySelectorAll('#top li')];
            const now = rows.map(r => [r.dataset.class, Number(r.dataset.probability)]);
            return rows.length > 0 && JSON.stringify(now) !== JSON.stringify(before);
        }""",
        arg=[list(item) for item in before],
    )
    return top_classes(page)


def canvas_stats(page: Page) -> dict[str, Any]:
    """How many canvas pixels are not pure black, and the canvas size."""
    return page.evaluate(
        """() => {
            const canvas = document.getElementById('canvas');
            const pen = canvas.getContext('2d');
            const { data } = pen.getImageData(0, 0, canvas.width, canvas.height);
            let lit = 0, opaque = true;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] || data[i + 1] || data[i + 2]) lit++;
                if (data[i + 3] !== 255) opaque = false;
            }
            return { lit, opaque, pixels: data.length / 4 };
        }"""
    )


def drag(page: Page, points: list[tuple[float, float]]) -> None:
    """Draw through `points`, given as fractions of the canvas, with the mouse."""
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"serve-{name}.png", full_page=True)


def test_uploading_an_image_shows_its_class(
    page: Page, images: list[tuple[str, Any]], tmp_path: Path
) -> None:
    label, array = images[5]
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes(array))
    page.set_input_files("#file", path)
    page.wait_for_function("document.querySelectorAll('#top li').length > 0")
    top = top_classes(page)
    assert top[0][0] == label and top[0][1] > 0.5
    assert page.locator("#status strong").inner_text() == label
    assert page.locator("#input-image").is_visible()
    # The input and one grid per conv/pooling layer.
    page.wait_for_function("document.querySelectorAll('#maps img').length === 3")
    page.wait_for_function("[...document.images].every(image => image.complete)")
    assert page.locator("#model-picture").evaluate("image => image.naturalWidth") > 0
    assert page.locator("#history-picture").evaluate("image => image.naturalWidth") > 0
    screenshot(page, "upload")


def test_a_chosen_photo_shows_the_box_that_was_found(page: Page, tmp_path: Path) -> None:
    import numpy as np
    from photoset import CANVAS, make_photo

    from cnnlab.prediction.preprocess import prepare_image

    garment = np.zeros((28, 28), np.uint8)
    garment[3:25, 7:21] = 220  # a dress-like block, drawn off-centre on paper with a shadow
    path = tmp_path / "photo.jpg"
    path.write_bytes(make_photo(garment, "shadow", 1, np.random.default_rng(3)).jpeg())
    found = prepare_image(path).box
    assert found is not None

    page.set_input_files("#file", path)
    outline = page.locator("#found-box")
    outline.wait_for(state="visible")
    assert outline.get_attribute("data-box") == ",".join(map(str, found))
    zone, drawn = page.locator("#drop-zone").bounding_box(), outline.bounding_box()
    assert zone is not None and drawn is not None
    scale = zone["width"] / CANVAS  # the square photo fills the square pad
    assert abs(drawn["x"] - zone["x"] - found[0] * scale) < 3
    assert abs(drawn["width"] - (found[2] - found[0]) * scale) < 4
    screenshot(page, "photo-box")

    page.click("#clear")
    assert not outline.is_visible()


def test_drawing_updates_the_prediction_and_clear_really_clears(page: Page) -> None:
    assert canvas_stats(page)["lit"] == 0
    drag(page, [(0.2, 0.2), (0.8, 0.2)])
    # Once seen under heavy load in CI: the first answer showed 3 rows, not 4. Not diagnosed
    # yet; the page must settle on all classes, which is what is checked here.
    page.wait_for_function("document.querySelectorAll('#top li').length === 4")
    first = wait_for_new_answer(page, [])
    assert canvas_stats(page)["lit"] > 1000  # a thick, light stroke
    assert abs(sum(probability for _, probability in first) - 1) < 1e-3  # all 4 classes shown
    drag(page, [(0.5, 0.2), (0.5, 0.9)])
    second = wait_for_new_answer(page, first)
    assert second != first
    screenshot(page, "drawing")

    page.click("#clear")
    stats = canvas_stats(page)
    assert stats["lit"] == 0 and stats["opaque"]  # every pixel black again
    assert page.locator("#top li").count() == 0
    assert page.locator("#maps img").count() == 0
    page.wait_for_timeout(500)  # an answer still on its way must not come back
    assert page.locator("#top li").count() == 0


def test_an_error_is_shown_and_the_page_recovers(page: Page, tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not a picture")
    page.set_input_files("#file", path)
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "not an image" in page.locator("#status").inner_text()
    drag(page, [(0.3, 0.5), (0.7, 0.5)])
    wait_for_new_answer(page, [])
    assert "error" not in str(page.locator("#status").get_attribute("class"))


def test_a_finger_draws_on_a_phone(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(live_server.url)
    box = page.locator("#canvas").bounding_box()
    assert box is not None and box["width"] > 300  # the pad fills the phone's width
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    scroll_before = page.evaluate("window.scrollY")
    session = context.new_cdp_session(page)
    x0, y = box["x"] + 0.2 * box["width"], box["y"] + 0.5 * box["height"]
    session.send(
        "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y}]}
    )
    for step in range(1, 11):
        x = x0 + step * 0.06 * box["width"]
        session.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]}
        )
    session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    wait_for_new_answer(page, [])
    assert canvas_stats(page)["lit"] > 1000
    assert page.evaluate("window.scrollY") == scroll_before  # the finger drew, not scrolled
    screenshot(page, "phone")
    context.close()


def test_a_colour_photo_run_gets_its_own_page(
    browser: Browser, colour_app: Any, tmp_path: Path
) -> None:
    """A folder-trained RGB run: its classes listed, no drawing pad and no garment wording, a
    chosen photo's answer, and the input the model received shown in colour."""
    from colour_run import colour_picture, encoded

    with LiveServer(colour_app) as server:
        page, errors = open_page(browser, server, "colour_cnn")
        page.wait_for_function("document.getElementById('canvas').hidden")
        assert page.locator("#model-classes").inner_text() == "Classes: red, green, blue"
        assert page.locator("#drop-invite").is_visible()
        words = page.locator("#try").inner_text().lower()
        assert "light on dark" not in words and "garment" not in words
        assert "16×16 (squash) in colour" in page.locator("#pad-hint").inner_text()

        path = tmp_path / "green.jpg"
        path.write_bytes(encoded(colour_picture("green", (64, 48)), "jpeg"))
        page.set_input_files("#file", path)
        page.wait_for_function("document.querySelectorAll('#top li').length === 3")
        assert page.locator("#status strong").inner_text() == "green"
        assert not page.locator("#drop-invite").is_visible()
        assert not page.locator("#found-box").is_visible()
        page.wait_for_function("document.getElementById('input-image').naturalWidth === 16")
        green_over_red = page.locator("#input-image").evaluate(
            """image => {
                const canvas = document.createElement('canvas');
                canvas.width = 16; canvas.height = 16;
                const pen = canvas.getContext('2d');
                pen.drawImage(image, 0, 0);
                const [r, g] = pen.getImageData(8, 8, 1, 1).data;
                return g - r;
            }"""
        )
        assert green_over_red > 100  # the model's input is shown in colour, not grey
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "serve-colour-run.png", full_page=True)
        page.context.close()
    assert not errors, f"errors in the page: {errors}"


def test_an_unsure_answer_says_so(
    browser: Browser, evaluated_run: Path, images: list[tuple[str, Any]], tmp_path: Path
) -> None:
    """An evaluated run whose unsure threshold is above any probability: every answer reads
    "Not sure: maybe X", and the calibration figures are among the test metrics."""
    import json

    from cnnlab.serve import create_app

    run = Path(shutil.copytree(evaluated_run, tmp_path / "tiny"))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["unsure_threshold"] = 1.01  # above any probability
    metrics["unsure_energy_threshold"] = -1e9  # below any energy
    (run / "metrics.json").write_text(json.dumps(metrics))
    label, array = images[5]
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes(array))
    with LiveServer(create_app(run)) as server:
        page, errors = open_page(browser, server, "tiny")
        assert "calibration error (ECE)" in page.locator("#metrics").inner_text()
        page.set_input_files("#file", path)
        page.wait_for_function("document.querySelectorAll('#top li').length > 0")
        assert page.locator("#status").inner_text() == f"Not sure: maybe {label}"
        page.context.close()
        assert not errors, errors


def open_page(browser: Browser, server: LiveServer, model_name: str) -> tuple[Page, list[str]]:
    """A fresh page on `server`, loaded, with the page's errors collected."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if _is_error(message) else None)
    page.goto(server.url)
    page.wait_for_function(f"document.getElementById('model-name').textContent === {model_name!r}")
    return page, errors


def shown_mistakes(page: Page, count: int) -> list[str]:
    """The captions of the mistakes grid, once it shows `count` loaded pictures."""
    page.wait_for_function(
        """count => {
            const images = [...document.querySelectorAll('#mistakes-grid img')];
            return images.length === count && images.every(i => i.complete && i.naturalWidth);
        }""",
        arg=count,
    )
    return page.locator("#mistakes-grid figcaption").all_inner_texts()


def test_a_confusion_cell_opens_its_test_images(
    browser: Browser, colour_folder_app: Any, evaluated_app: Any
) -> None:
    """The confusion matrix is a table whose non-zero cells open their test images: a click
    (or Enter) shows as many pictures as the cell counts, captioned with its pair; "Biggest
    mistakes" shows the top losses, at most 24."""
    with LiveServer(colour_folder_app) as server:
        page, errors = open_page(browser, server, "colour_cnn")
        table = page.locator("table.confusion")
        assert table.locator("tbody th[scope=row]").all_inner_texts() == ["blue", "green", "red"]
        cell = table.locator("button[data-true='green'][data-predicted='blue']")
        assert cell.inner_text() == "2"
        cell.click()
        captions = shown_mistakes(page, 2)
        assert all(c.startswith("true green · predicted blue · ") for c in captions)
        assert page.locator("#mistakes-count").inner_text() == "showing all 2"
        assert page.locator("#mistakes-title").inner_text() == "true green · predicted blue"
        # the keyboard opens a cell too
        red = table.locator("button[data-true='red'][data-predicted='green']")
        red.focus()
        page.keyboard.press("Enter")
        assert shown_mistakes(page, 1)[0].startswith("true red · predicted green · ")
        assert red.get_attribute("aria-pressed") == "true"
        assert cell.get_attribute("aria-pressed") == "false"
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#training").screenshot(path=ARTIFACTS / "serve-mistakes-colour.png")
        page.context.close()
    assert not errors, errors

    with LiveServer(evaluated_app) as server:
        page, errors = open_page(browser, server, "tiny")
        diagonal = page.locator("table.confusion td.diagonal button").first
        count = int(diagonal.inner_text())
        name = diagonal.get_attribute("data-true")
        diagonal.click()
        captions = shown_mistakes(page, min(count, 24))
        assert all(c.startswith(f"true {name} · predicted {name} · ") for c in captions)
        page.locator("#top-losses").click()
        page.wait_for_function(
            "document.getElementById('mistakes-count').textContent === 'showing 24 of 80'"
        )
        assert len(shown_mistakes(page, 24)) == 24
        assert page.locator("#mistakes-grid img.pixelated").count() == 24  # 28x28: pixelated
        page.locator("#training").screenshot(path=ARTIFACTS / "serve-mistakes-tiny.png")
        page.context.close()
    assert not errors, errors


def test_a_run_evaluated_before_mistakes_were_kept_says_how_to_open_them(
    browser: Browser, evaluated_run: Path, tmp_path: Path
) -> None:
    """metrics.json without test_predictions.npz: the matrix, no buttons, and the hint."""
    from cnnlab.serve import create_app

    run = Path(shutil.copytree(evaluated_run, tmp_path / "tiny"))
    (run / "test_predictions.npz").unlink()
    with LiveServer(create_app(run)) as server:
        page, errors = open_page(browser, server, "tiny")
        page.wait_for_selector("table.confusion")
        assert page.locator("table.confusion button").count() == 0
        assert page.locator("#top-losses").count() == 0
        assert (
            "Run `cnnlab evaluate RUN` again to open mistakes."
            in page.locator("#confusion").inner_text()
        )
        page.context.close()
    assert not errors, errors


def test_a_click_on_a_feature_map_explains_that_cell(
    page: Page, images: list[tuple[str, Any]], tmp_path: Path
) -> None:
    """Issue 29: a click on a conv cell shows its arithmetic, whose shown numbers add up to
    what Keras computed, with its window outlined on the input; Enter on a focused pooling map
    explains its centre cell, with the window's maximum marked."""
    _, array = images[5]
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes(array))
    page.set_input_files("#file", path)
    page.wait_for_function("document.querySelectorAll('#maps img.explorable').length === 2")
    conv = page.locator('#maps figure[data-layer="conv2d"] img')
    box = conv.bounding_box()
    assert box is not None
    # The tiny conv's map: 4 channels of 26x26 in 2 columns, 1 pixel apart (53x53 pixels).
    natural = conv.evaluate("image => [image.naturalWidth, image.naturalHeight]")
    assert natural == [53, 53]
    scale = box["width"] / 53
    conv.click(position={"x": (27 + 25 + 0.5) * scale, "y": 0.5 * scale})  # channel 1, (0, 25)
    panel = page.locator("#explain")
    panel.wait_for(state="visible")
    page.wait_for_function("document.querySelector('#explain [data-role=keras]') !== null")
    assert "conv2d · row 0, column 25, channel 1" in panel.locator("h3").inner_text()
    assert "sum of input x kernel over the 3x3 window" in panel.inner_text()

    def shown(role: str) -> float:
        return float(panel.locator(f"[data-role={role}]").first.inner_text())

    value, keras_value, total = shown("value"), shown("keras"), shown("total")
    tolerance = float(panel.locator(".verdict").inner_text().split("within ")[1].split(" ")[0])
    assert abs(value - keras_value) <= tolerance + 1e-4  # each shown to 4 decimals
    assert value == max(total, 0.0)  # relu of the sum
    sums = [float(s) for s in panel.locator("[data-role=channel-sum]").all_inner_texts()]
    line = panel.locator(".total").inner_text()  # "Sum of all products S + bias B = T ..."
    bias = float(line.split("+ bias ")[1].split(" ")[0])
    assert abs(sum(sums) + bias - total) <= 2e-4
    # The window it read: rows 0-2, columns 25-27 of the 28x28 input, outlined there.
    window = page.locator('#maps figure[data-layer="input"] .mark.window')
    assert window.count() == 1
    drawn, picture = window.bounding_box(), page.locator("#input-image").bounding_box()
    frame = page.locator('#maps figure[data-layer="input"] img').bounding_box()
    assert drawn is not None and frame is not None and picture is not None
    assert abs(drawn["x"] - frame["x"] - 25 / 28 * frame["width"]) < 2
    assert abs(drawn["width"] - 3 / 28 * frame["width"]) < 2
    screenshot(page, "explain-conv")

    pool = page.locator('#maps figure[data-layer="max_pooling2d"] img')
    pool.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "document.querySelector('#explain h3')?.textContent.includes('max_pooling2d')"
    )
    assert "row 6, column 7, channel 0" in panel.locator("h3").inner_text()
    assert panel.locator("td.max").count() == 1
    assert float(panel.locator("td.max").inner_text()) == shown("total")
    assert page.locator('#maps figure[data-layer="conv2d"] .mark.window').count() == 1
    assert page.locator('#maps figure[data-layer="input"] .mark.window').count() == 0
    screenshot(page, "explain-pool")
    page.click("#explain button.close")
    assert not panel.is_visible()
