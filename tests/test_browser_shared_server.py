"""Browser end-to-end on a shared server: a path outside the data roots in the URL is refused, and a corpus inside
them whose labels and speaker names hold Markdown and HTML shows them as text in Chromium: no link and no image
points at the injected address, and the page never requests it. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import os
import re
from urllib.parse import urlencode, urlparse

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, REPO, require_chromium, streamlit_server
from test_browser import settle
from test_shared_server import EVIL_LABEL, EVIL_PATH, EVIL_SPEAKER, as_shown, markup_corpus

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a Streamlit server
SHOTS = REPO / "test-artifacts" / "screenshots"
INJECTED = "evil.example"


@pytest.fixture
def server(tmp_path):
    """A server whose only data root (besides data/ and samples/) holds the generated corpus."""
    root = tmp_path / "corpora"
    csv = markup_corpus(root / "markup")
    env = {**os.environ, "SER_DATA_ROOTS": str(root), "SER_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("SER_PUBLIC", None)
    with streamlit_server(env, tmp_path / "streamlit.log") as url:
        yield url, csv


def test_outside_path_refused_and_corpus_markup_shown_as_text(server):
    from playwright.sync_api import sync_playwright

    require_chromium()
    url, csv = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        asked = []
        page.on("request", lambda r: asked.append(r.url))

        page.goto(f"{url}/?{urlencode({'data': 'folder', 'path': EVIL_PATH})}")
        settle(page)
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Explore").click()
        page.locator("h1", has_text="Explore the data").wait_for()
        settle(page)
        error = as_shown(page.get_by_test_id("stAlertContentError").inner_text())
        assert "is not inside a data folder this server reads" in error
        assert "[Session expired - log in again](https:" in error and "![p](https:" in error  # literally
        page.screenshot(path=str(SHOTS / "shared_server_outside_path.png"))
        assert_nothing_points_at_the_injected_address(page)

        box = page.get_by_role("textbox", name=re.compile("^Folder"))
        box.fill(str(csv))
        box.press("Enter")
        page.get_by_test_id("stMetricValue").first.wait_for()
        settle(page)
        note = as_shown(page.get_by_test_id("stAlertContentWarning").inner_text())
        assert f"'{EVIL_LABEL}' only 1" in note
        speakers = page.locator(".js-plotly-plot", has_text="Clips per speaker")
        ticks = [as_shown(t) for t in speakers.locator(".xtick text").all_text_contents()]
        assert EVIL_SPEAKER in ticks, ticks
        emotions = page.locator(".js-plotly-plot", has_text="Clips per emotion").locator(".xtick text")
        assert EVIL_LABEL in [as_shown(t) for t in emotions.all_text_contents()]
        tooltips = []
        for bar in speakers.locator(".barlayer .point path").all():  # each bar's tooltip
            box = bar.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 3)
            speakers.locator(".hoverlayer .hovertext").first.wait_for()
            tooltips += [as_shown(t) for t in speakers.locator(".hoverlayer .hovertext").all_text_contents()]
        assert any(f"speaker={EVIL_SPEAKER}" in t for t in tooltips), tooltips
        page.screenshot(path=str(SHOTS / "shared_server_markup_as_text.png"))
        assert_nothing_points_at_the_injected_address(page)
        assert not [u for u in asked if INJECTED in (urlparse(u).hostname or "")]  # nothing fetched from it
        browser.close()


def assert_nothing_points_at_the_injected_address(page):
    """No HTML or SVG link, image or frame of the page names the injected host."""
    found = page.evaluate("""host => [...document.querySelectorAll('a, img, image, iframe, source, link')]
        .map(e => e.getAttribute('href') || e.getAttribute('xlink:href') || e.getAttribute('src') || '')
        .filter(v => v.includes(host))""", INJECTED)
    assert found == []
