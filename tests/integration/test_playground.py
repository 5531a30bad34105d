"""The playground (`GET /`) and the API docs in a real headless Chromium (Debian's, driven
by Playwright) against real gateways: the local engine with the tiny model, and a
gateway in front of a scripted upstream whose answer has boxes at known places.

The browser may reach 127.0.0.1 only: every other request is refused and recorded, so a
page that needs the internet fails here. Screenshots of the main states are written to
tests/artifacts/ (not committed).
"""

from __future__ import annotations

import io
import os
import random
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from vlserve.config import Settings
from vlserve.server.app import create_app

from ..inprocess import InProcessServer
from ..scripted_upstream import ScriptedUpstream

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
# Flags for a closed network: no background services that would try to phone home.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
BOXES_ANSWER = ('```json\n[{"bbox_2d": [100, 250, 500, 750], "label": "cat"},'
                ' {"bbox_2d": [600, 100, 900, 400], "label": "dog"}]\n```')

STROKE_PX = 3  # .overlay .box in style.css

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class Page:
    """A page in a fresh context that may reach 127.0.0.1 only, with its console watched."""

    def __init__(self, browser, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.external: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def console_errors(self, expected_statuses: tuple[int, ...] = ()) -> list[str]:
        # Chromium logs every failed fetch; one the test provoked on purpose is not a page bug.
        allowed = [f"status of {status}" for status in expected_statuses]
        return [e for e in self.errors if not any(a in e for a in allowed)]

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser):
    opened = Page(browser)
    yield opened
    opened.close()


def image_file(tmp_path: Path, size=(400, 300), name="photo.png", noise=False) -> Path:
    if noise:  # incompressible: its PNG is about 3 bytes a pixel
        rng = random.Random(0)
        img = Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        data = buf.getvalue()
    else:  # a picture with a round thing and a square thing where the scripted boxes are
        img = Image.linear_gradient("L").resize(size).convert("RGB")
        draw = ImageDraw.Draw(img)
        draw.ellipse((50, 85, 190, 215), fill=(220, 120, 40))
        draw.rectangle((250, 40, 350, 110), fill=(60, 90, 200))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        data = buf.getvalue()
    path = tmp_path / name
    path.write_bytes(data)
    return path


def engine_idle(server) -> bool:
    health = httpx.get(f"{server.url}/health").json()
    return not health["generating"] and health["requests_in_engine"] == 0


def test_chat_streams_into_the_page_and_stop_cancels_the_engine(page, local_server, tmp_path):
    p = page.page
    p.goto(f"{local_server.url}/")
    p.wait_for_selector("#health.badge-ok")
    p.set_input_files("#file-input", str(image_file(tmp_path)))
    p.wait_for_selector("#image-list li")
    assert "400×300" in p.inner_text("#image-list")

    # Stream: count the text updates of the answer while it arrives.
    p.fill("#max-tokens", "60")
    p.fill("#message", "What is in this picture?")
    p.evaluate("""() => { window.updates = 0;
        new MutationObserver(() => { window.updates += 1; })
            .observe(document.getElementById('result'), {subtree: true, childList: true, characterData: true}); }""")
    p.click("#send")
    p.wait_for_function("() => document.getElementById('stats').textContent.includes('finish')", timeout=60_000)
    assert p.evaluate("window.updates") >= 5  # many updates, not one at the end
    answer = p.inner_text(".turn.assistant .text:not(.reasoning)")
    assert answer.strip()
    stats = p.inner_text("#stats")
    assert "first token" in stats and "tokens/s" in stats and stats.startswith("tiny")  # SERVED_MODEL_NAME
    page.screenshot("chat")

    # Stop: a long answer, stopped after it started; the engine stops generating.
    p.fill("#max-tokens", "3500")
    p.fill("#message", "Tell me a long story.")
    p.click("#send")
    p.wait_for_function("() => document.querySelectorAll('.turn.assistant').length === 2 && "
                        "document.querySelectorAll('.turn.assistant')[1].innerText.length > 20", timeout=30_000)
    p.click("#stop")
    p.wait_for_function("() => document.getElementById('stats').textContent.includes('stopped')")
    stopped_at = time.monotonic()
    while not engine_idle(local_server):
        assert time.monotonic() - stopped_at < 2.0, "the engine kept generating after stop"
        time.sleep(0.05)
    assert not p.is_disabled("#send")
    assert page.console_errors() == [] and page.external == []


@pytest.fixture(scope="module")
def scripted_gateway():
    upstream = ScriptedUpstream(BOXES_ANSWER).start()
    settings = Settings(UPSTREAM_BASE_URL=upstream.url, MEDIA_MAX_IMAGE_BYTES=60_000)
    server = InProcessServer(create_app(settings)).start()
    yield server.wait_healthy()
    server.stop()


@pytest.mark.parametrize("width", [1280, 390])
def test_detected_boxes_are_drawn_where_they_are_at_any_width(browser, scripted_gateway, tmp_path, width):
    opened = Page(browser, width=width, height=900)
    try:
        p = opened.page
        p.goto(f"{scripted_gateway.url}/")
        p.wait_for_selector("#health.badge-ok")
        p.select_option("#mode", "detect")
        p.fill("#objects", "cat, dog")
        p.set_input_files("#file-input", str(image_file(tmp_path, (400, 300))))
        p.wait_for_selector("#image-list li")
        p.click("#send")
        p.wait_for_selector("#overlay rect.box")
        img = p.locator("#preview-img").bounding_box()
        scale_x, scale_y = img["width"] / 400, img["height"] / 300
        # Qwen's 0-1000 scale → the image's pixels (as /analyze answers) → the page's pixels.
        expected = {"cat": (40, 75, 200, 225), "dog": (240, 30, 360, 120)}
        for label, (x1, y1, x2, y2) in expected.items():
            drawn = p.locator(f"#overlay rect.box[data-label='{label}']").bounding_box()
            half = STROKE_PX / 2  # the outline is centred on the box's edge
            assert drawn["x"] + half == pytest.approx(img["x"] + x1 * scale_x, abs=1.5)
            assert drawn["y"] + half == pytest.approx(img["y"] + y1 * scale_y, abs=1.5)
            assert drawn["width"] - STROKE_PX == pytest.approx((x2 - x1) * scale_x, abs=1.5)
            assert drawn["height"] - STROKE_PX == pytest.approx((y2 - y1) * scale_y, abs=1.5)
        assert "2 found: cat, dog" in p.inner_text("#result")
        assert p.locator("#overlay .label-bg").count() == 2  # labels on a backing
        opened.screenshot(f"detect-{width}")
        assert opened.console_errors() == [] and opened.external == []
    finally:
        opened.close()


def test_an_oversized_image_shows_the_limit(page, scripted_gateway, tmp_path):
    p = page.page
    p.goto(f"{scripted_gateway.url}/")
    p.select_option("#mode", "caption")
    p.set_input_files("#file-input", str(image_file(tmp_path, (200, 200), noise=True)))  # ~120 KB > 60 KB
    p.wait_for_selector("#image-list li")
    p.click("#send")
    error = p.wait_for_selector("#error:not([hidden])")
    text = error.inner_text()
    assert text.startswith("Too large") and "60,000" in text.replace("60000", "60,000")
    page.screenshot("too-large")
    assert page.console_errors(expected_statuses=(413,)) == []


def test_extract_and_ocr_results_are_rendered(page, scripted_gateway, tmp_path):
    p = page.page
    p.goto(f"{scripted_gateway.url}/")
    p.select_option("#mode", "ocr")
    p.set_input_files("#file-input", str(image_file(tmp_path)))
    p.wait_for_selector("#image-list li")
    p.click("#send")
    p.wait_for_selector("#result .rendered")
    assert not p.is_hidden("#copy")
    assert page.console_errors() == []


@pytest.mark.parametrize("path, ready", [("/docs", ".opblock"), ("/redoc", "text='/v1/chat/completions'")])
def test_docs_render_with_the_network_blocked(page, local_server, path, ready):
    p = page.page
    p.goto(f"{local_server.url}{path}")
    p.wait_for_selector(ready, timeout=30_000)
    if path == "/docs":
        assert p.locator(".opblock").count() >= 10  # every route listed
        page.screenshot("docs")
    # ReDoc's footer links its maker's logo, which fails quietly offline; nothing else leaves.
    logo = [url for url in page.external if url.endswith("cdn.redoc.ly/redoc/logo-mini.svg")]
    assert [url for url in page.external if url not in logo] == []
    assert [e for e in page.console_errors() if not (logo and "net::ERR_FAILED" in e)] == []


def test_each_mode_shows_its_own_fields(page, local_server):
    p = page.page
    p.goto(f"{local_server.url}/")
    shown = {"chat": ["#message"], "detect": ["#objects"], "qa": ["#question"], "extract": ["#schema"],
             "document": ["#doc-format"], "ocr": ["#ocr-boxes"]}
    every = sorted({field for fields in shown.values() for field in fields})
    for mode, fields in shown.items():
        p.select_option("#mode", mode)
        assert [field for field in every if p.is_visible(field)] == sorted(fields), mode
    assert '"properties"' in p.input_value("#schema")  # the example schema is there to edit


def test_the_page_is_usable_with_a_keyboard_and_labelled(page, local_server):
    p = page.page
    p.goto(f"{local_server.url}/")
    for control in p.locator("input:not([type=hidden]):not([hidden]), select, textarea").all():
        control_id = control.get_attribute("id")
        labelled = p.locator(f"label[for='{control_id}']").count() or control.evaluate("e => !!e.closest('label')")
        assert labelled, f"#{control_id} has no label"
    # The drop zone opens the file picker from the keyboard (Tab to it, then Enter or Space).
    p.evaluate("document.getElementById('file-input').addEventListener('click', e => { e.preventDefault(); "
               "window.pickerOpened = (window.pickerOpened || 0) + 1; })")
    p.focus("#drop-zone")
    p.keyboard.press("Enter")
    p.keyboard.press("Space")
    assert p.evaluate("window.pickerOpened") == 2
    assert p.evaluate("document.activeElement.id") == "drop-zone"


def test_a_key_with_limits_sees_what_it_has_left(page, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.visitor]\nkey = "sk-visitor-01"\nrequests_per_minute = 5\ntokens_per_minute = 90000\n')
    upstream = ScriptedUpstream("A cat on a mat.").start()
    settings = Settings(UPSTREAM_BASE_URL=upstream.url, API_KEYS_FILE=keys, USAGE_FILE="off")
    server = InProcessServer(create_app(settings)).start().wait_healthy()
    try:
        p = page.page
        p.goto(f"{server.url}/")
        p.click("#key-box summary")
        p.fill("#api-key", "sk-visitor-01")
        p.press("#api-key", "Enter")
        p.select_option("#mode", "caption")
        p.set_input_files("#file-input", str(image_file(tmp_path)))
        p.wait_for_selector("#image-list li")
        p.click("#send")
        shown = p.wait_for_selector("#limits-info:not([hidden])").inner_text()
        assert "4 of 5 requests" in shown and "of 90,000 tokens" in shown
        assert page.console_errors(expected_statuses=(401,)) == []  # the model list asked before the key was in
    finally:
        server.stop()


def test_a_pdf_is_shown_as_pages_to_choose_and_read_page_by_page(page, tmp_path):
    from ..media_helpers import pdf

    upstream = ScriptedUpstream("A page of text.").start()
    server = InProcessServer(create_app(Settings(UPSTREAM_BASE_URL=upstream.url, USAGE_FILE="off"))).start()
    server.wait_healthy()
    try:
        path = tmp_path / "report.pdf"
        path.write_bytes(pdf([(612, 792), (842, 595), (612, 792)]))
        p = page.page
        p.goto(f"{server.url}/")
        p.select_option("#mode", "document")
        p.set_input_files("#file-input", str(path))
        p.wait_for_selector("#image-list li:nth-child(3)")
        assert "report.pdf · page 2" in p.inner_text("#image-list")
        p.click("#image-list li:nth-child(2) button")  # page 2 is not wanted
        p.wait_for_function("document.querySelectorAll('#image-list li').length === 2")
        p.click("#send")
        p.wait_for_selector("#result h3:has-text('Whole document')")
        assert [s.get_attribute("data-page") for s in p.query_selector_all("#result .page-result")] == ["1", "3"]
        whole = p.inner_text("#result")
        assert whole.count("A page of text.") == 4  # two pages, then the document that joins them
        assert not p.is_hidden("#copy")
        page.screenshot("pdf-pages")
        assert page.console_errors() == [] and page.external == []
    finally:
        server.stop()
