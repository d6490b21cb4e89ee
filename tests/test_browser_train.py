"""Browser end-to-end: the real app in Chromium trains a model in a background job, the leaderboard shows the run,
and the identical job again is served from the stored result. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, REPO, require_chromium, streamlit_server, symlink_actors

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a Streamlit server
SHOTS = REPO / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def app(tmp_path_factory, shared_ravdess):
    """``(url, corpus folder, env)`` of a Streamlit server with its own jobs, results and models folders."""
    tmp = tmp_path_factory.mktemp("browser")
    data = tmp / "data"
    symlink_actors(shared_ravdess, data, ("01", "02", "03", "04"))
    env = {**os.environ, "SER_JOBS_DIR": str(tmp / "jobs"), "SER_RESULTS_DB": str(tmp / "results.sqlite"),
           "SER_MODELS_DIR": str(tmp / "shipped"), "SER_USER_MODELS_DIR": str(tmp / "models"),
           "SER_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "feature-cache")}
    with streamlit_server(env, tmp / "streamlit.log") as url:
        yield url, data, env


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _nav(page, title):
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=30_000)


def test_train_job_progress_leaderboard_and_cache(app, browser):
    url, data, env = app
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    page.goto(url)
    page.get_by_text("Local folder or CSV").click()
    box = page.get_by_role("textbox", name=re.compile("^Folder"))
    box.fill(str(data))
    box.press("Enter")
    _nav(page, "Train")
    page.get_by_text("240 clips, 4 speakers").wait_for(timeout=60_000)
    k = page.get_by_role("spinbutton", name="K (folds)")
    k.fill("2")
    k.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Run", exact=True).click()

    page.get_by_text(re.compile(r"svm\*?\*?: (computing features|fold|training the final|done)")).first.wait_for(
        timeout=60_000)
    _shot(page, "train_01_progress")
    page.get_by_text("See the runs on the Leaderboard").wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"UAR 0\.\d{3} ± 0\.\d{3}")).first.wait_for()
    _shot(page, "train_02_done")

    _nav(page, "Leaderboard")
    page.get_by_role("heading", name="One run").wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for()
    picked = page.get_by_test_id("stSelectbox").first.evaluate(  # the chosen option may sit in an <input>
        "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
    assert re.search(r"#1 svm on ravdess \(speaker, K=2, UAR \d+\.\d %\)", picked), picked
    _shot(page, "train_03_leaderboard")

    _nav(page, "Train")
    page.get_by_role("spinbutton", name="K (folds)").wait_for()
    assert page.get_by_role("spinbutton", name="K (folds)").input_value() == "2"  # the session kept the form
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("identical configuration on identical data").first.wait_for(timeout=60_000)
    _shot(page, "train_04_cached")
    assert (Path(env["SER_USER_MODELS_DIR"]) / "svm-ravdess-run1" / "card.json").is_file()  # yours, run #1

    page.reload()  # a new session still finds the jobs
    page.get_by_text("identical configuration on identical data").first.wait_for(timeout=60_000)
    page.close()
