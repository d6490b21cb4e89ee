"""Chromium on freshly started servers: a deep link shows the app's own navigation (not Streamlit's automatic page
list of a pages/ folder), a public demo answers a deep link to a page it leaves out with one sentence, and the
leaderboard's table fits the page width. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import os

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, REPO, require_chromium, streamlit_server
from test_browser import no_exception, settle

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = REPO / "test-artifacts" / "screenshots"
NAV = '[data-testid="stSidebarNav"] a'


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    require_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def fresh_server(tmp_path, public: bool = False):
    env = {**os.environ, "SER_JOBS_DIR": str(tmp_path / "jobs"), "SER_RESULTS_DB": str(tmp_path / "results.sqlite")}
    env.pop("SER_PUBLIC", None)
    if public:
        env["SER_PUBLIC"] = "1"
    return streamlit_server(env, tmp_path / "streamlit.log")


def open_first(chromium, url: str, width: int = 1280):
    """A new browser page whose first request to the server is ``url``."""
    page = chromium.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url)
    settle(page)
    no_exception(page)
    return page


def nav_titles(page) -> list[str]:
    return [t.split()[-1] for t in page.locator(NAV).all_inner_texts()]  # "model_training\n\nTrain" -> "Train"


def test_a_deep_link_to_a_fresh_server_shows_the_apps_navigation(chromium, tmp_path):
    with fresh_server(tmp_path) as url:
        page = open_first(chromium, f"{url}/train")
        assert nav_titles(page) == ["Home", "Explore", "Demo", "Train", "Leaderboard"]
        assert page.locator("h1").first.inner_text() == "Train"
        assert page.get_by_text("Data source").count() == 1  # the entry script ran: its sidebar is there
        page.screenshot(path=str(SHOTS / "deep-link-train.png"))
        page.close()


def test_a_public_demo_answers_a_deep_link_to_a_page_it_leaves_out(chromium, tmp_path):
    with fresh_server(tmp_path, public=True) as url:
        page = open_first(chromium, f"{url}/train")
        assert nav_titles(page) == ["Home", "Demo", "Leaderboard"]
        assert page.get_by_text("This page is not available on this public demo; use the Demo and Leaderboard "
                                "pages.").count() == 1
        assert page.locator("h1").count() == 0 and page.get_by_role("button", name="Run").count() == 0
        page.close()


def table_widths(page) -> list[tuple[int, int]]:
    """``(content width, visible width)`` of every dataframe on the page, in pixels."""
    return [tuple(w) for w in page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=stDataFrame] .dvn-scroller')]"
        ".map(e => [e.scrollWidth, e.clientWidth])")]


def main_width(page) -> tuple[int, int]:
    """``(content width, visible width)`` of the page's main area, in pixels."""
    return tuple(page.evaluate("() => { const m = document.querySelector('[data-testid=stMain]');"
                               " return [m.scrollWidth, m.clientWidth]; }"))


def test_the_leaderboard_tables_fit_the_page_width(chromium, tmp_path):
    """A 1280 px wide window, the shipped runs of a fresh install: no horizontal scrolling in any table of the page
    (the main table's other columns are one toggle away, and then it scrolls) nor in the page itself."""
    with fresh_server(tmp_path) as url:
        page = open_first(chromium, f"{url}/leaderboard")
        page.get_by_text("Per-fold scores (%)").wait_for()
        page.get_by_text("Compare two runs").wait_for()
        settle(page)
        widths = table_widths(page)
        assert len(widths) >= 6, widths  # leaderboard, reference figures, per fold, intervals, compared runs
        assert all(content <= visible for content, visible in widths), f"(content, visible) px: {widths}"
        assert main_width(page)[0] <= main_width(page)[1]
        page.screenshot(path=str(SHOTS / "leaderboard-1280.png"))
        page.get_by_text("All columns").click()
        settle(page)
        content, visible = table_widths(page)[0]
        assert content > visible  # every column: the table scrolls (the measure sees an overflow)
        assert main_width(page)[0] <= main_width(page)[1]  # inside the table, not the page
        page.close()
