"""Browser end-to-end: a fresh install (empty home folder, no results store yet) opens the Leaderboard full: the
shipped models' runs with a confusion matrix, confidence intervals, a breakdown by voice and the tables for
papers. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import os

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, REPO, require_chromium, streamlit_server
from ser_core.results import ResultsStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a Streamlit server
SHOTS = REPO / "test-artifacts" / "screenshots"


@pytest.fixture
def fresh_app(tmp_path):
    """``(url, home)``: a server whose user has an empty home folder and the default results store."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "SER_JOBS_DIR": str(tmp_path / "jobs"),
           "SER_USER_MODELS_DIR": str(tmp_path / "models")}
    env.pop("SER_RESULTS_DB", None)
    with streamlit_server(env, tmp_path / "streamlit.log") as url:
        yield url, home


def test_fresh_install_leaderboard_shows_the_shipped_runs(fresh_app):
    from playwright.sync_api import sync_playwright

    import json

    url, home = fresh_app
    require_chromium()
    cards = [json.loads(p.read_text()) for p in (REPO / "trained_models").glob("*/card.json")]
    best = max(cards, key=lambda c: c["cv"]["metrics"]["uar"]["mean"])["name"]  # whichever shipped run leads
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 4200})
        page.goto(url)
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Leaderboard").click()
        page.get_by_role("heading", name="One run").wait_for(timeout=120_000)
        assert page.get_by_text("No runs stored yet").count() == 0
        assert page.get_by_text("UAR 95 % CI: 95 % of intervals").count() == 1
        one_run = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Run", exact=True)).first
        picked = one_run.evaluate(
            "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
        assert f"{best} (shipped) on ravdess+tess+emodb" in picked, picked  # it opens on the best run
        # the shipped models, calibrated out of domain, bring their held-out corpora: the matrix across corpora
        page.get_by_text("Across corpora: trained on → tested on").wait_for()
        page.get_by_text("interval from resampling the test corpus's speakers", exact=False).wait_for()
        assert page.get_by_role("radio", name="arousal UAR").count() == 1
        page.get_by_text("Confidence intervals (95 %, bootstrap over speakers)").wait_for()
        page.get_by_text("By voice: UAR (%) per speaker, gender and intensity").wait_for()
        charts = page.locator(".js-plotly-plot")
        charts.first.wait_for()
        titles = " ".join(charts.locator(".gtitle").all_text_contents())
        assert "confusion (row-normalised)" in titles and "UAR per speaker (%)" in titles, titles
        page.get_by_text("Copy the table for a paper").click()
        code = page.get_by_test_id("stCode").first
        code.wait_for()
        assert f"| **{best}** | ravdess+tess+emodb | speaker | 4 |" in code.inner_text()
        assert "Traceback" not in page.content()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "leaderboard_fresh_install.png"), full_page=True)
        browser.close()
    store = home / ".cache" / "ser_studio" / "results.sqlite"  # the default store, created and left empty
    assert store.is_file() and ResultsStore(store).runs().empty
