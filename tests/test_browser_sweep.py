"""Browser end-to-end: the Train page's Sweep mode runs a small sweep as a background job (Ray Tune on a local Ray),
its trials appear in a table and a plot, the best is named and saved, and the Leaderboard lists the sweep.
Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, REPO, require_chromium, streamlit_server, symlink_actors

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, a Streamlit server, a sweep job
SHOTS = REPO / "test-artifacts" / "screenshots"


def test_a_sweep_from_the_train_page_to_the_leaderboard(tmp_path, shared_ravdess, tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    data = symlink_actors(shared_ravdess, tmp_path / "data", ("01", "02", "03", "04"))
    env = {**os.environ, "SER_JOBS_DIR": str(tmp_path / "jobs"), "SER_RESULTS_DB": str(tmp_path / "results.sqlite"),
           "SER_MODELS_DIR": str(tmp_path / "shipped"), "SER_USER_MODELS_DIR": str(tmp_path / "models"),
           "SER_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "feature-cache"), "SER_RAY_CPUS": "2"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(env, tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.goto(f"{url}/train?data=folder&path={data}")
        page.get_by_text("240 clips, 4 speakers").wait_for(timeout=60_000)
        page.get_by_text("Sweep hyperparameters").click()
        expect(page.get_by_role("textbox", name="Search space")).to_have_value(  # svm's suggestion
            "C=loguniform(0.1,100);gamma=choice(scale,auto)", timeout=30_000)
        for name, value in (("K (folds)", "2"), ("Trials", "3")):
            box = page.get_by_role("spinbutton", name=name)
            box.fill(value)
            box.press("Enter")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Run sweep").click()

        page.get_by_text(re.compile(r"svm: [123]/3 trials")).first.wait_for(timeout=120_000)  # trials stream in
        page.locator(".js-plotly-plot").first.wait_for()
        page.screenshot(path=str(SHOTS / "sweep_01_trials.png"), full_page=True)
        best = page.get_by_text(re.compile(r"Best: trial \d \(C=[\d.]+, gamma=\w+\), UAR 0\.\d{3}"))
        best.wait_for(timeout=120_000)
        assert "saved as your model svm-ravdess-run" in best.inner_text()
        page.screenshot(path=str(SHOTS / "sweep_02_best.png"), full_page=True)
        assert len(list(Path(env["SER_USER_MODELS_DIR"]).glob("svm-ravdess-run*/card.json"))) == 1

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Leaderboard").click()
        page.get_by_text(re.compile(r"Sweeps \(1\)")).click()
        page.get_by_text("UAR per trial (%)").wait_for(timeout=30_000)
        expect(page.get_by_role("combobox", name="Sweep")).to_have_value(  # the space as written, not escaped
            re.compile(r"^sweep-[\d-]+-\w{4}: C=loguniform\(0\.1,100\);gamma=choice\(scale,auto\)$"))
        page.screenshot(path=str(SHOTS / "sweep_03_leaderboard.png"), full_page=True)
        browser.close()
