"""Chromium, a newcomer's first training run: a fresh server (empty jobs, store and models of yours), the Train page
on the bundled samples with its defaults. An impossible K is refused in one sentence with Run disabled; Run with
the defaults finishes a real speaker-grouped 4-fold job; no traceback anywhere on the page; the model is saved as
yours and the Demo lists it there, while the shipped ``svm`` keeps the same file hashes. The shipped folder is a
copy of trained_models/svm ($SER_MODELS_DIR): the repository's own is never written, even by a broken build.
Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from helpers import streamlit_server
from ser_core.results import ResultsStore
from ser_core.saved import SHIPPED_MODELS, models_lock
from test_browser_train import _nav, _shot, browser  # noqa: F401  (fixture)
from test_user_models import _hashes

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """``(url, env)`` of a server whose shipped folder holds a copy of the shipped ``svm``."""
    tmp = tmp_path_factory.mktemp("first-train")
    with models_lock(SHIPPED_MODELS, shared=True):  # a whole model, never one being retrained
        shutil.copytree(SHIPPED_MODELS / "svm", tmp / "shipped" / "svm")
    env = {**os.environ, "SER_JOBS_DIR": str(tmp / "jobs"), "SER_RESULTS_DB": str(tmp / "results.sqlite"),
           "SER_MODELS_DIR": str(tmp / "shipped"), "SER_USER_MODELS_DIR": str(tmp / "models"),
           "SER_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "feature-cache")}
    with streamlit_server(env, tmp / "streamlit.log") as url:
        yield url, env


def test_first_run_on_the_bundled_samples_with_the_defaults(fresh, browser):
    url, env = fresh
    shipped_svm = Path(env["SER_MODELS_DIR"]) / "svm"
    before = _hashes(shipped_svm)
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    page.goto(url)
    page.get_by_text("Bundled samples (240 RAVDESS clips)").wait_for(timeout=60_000)
    _nav(page, "Train")
    page.get_by_text("240 clips, 4 speakers").wait_for(timeout=60_000)
    k, run = page.get_by_role("spinbutton", name="K (folds)"), page.get_by_role("button", name="Run", exact=True)
    expect(k).to_have_value("4", timeout=30_000)  # the default fits the data: one actor per test fold (once the
    # page has settled: a loaded machine may show the form before its script run has finished)

    k.fill("5")  # more folds than speakers: refused before any job starts
    k.press("Enter")
    page.get_by_text("K=5 needs at least 5 speakers (each test fold holds out whole speakers) and this data has 4; "
                     "choose K of 4 or less.").wait_for(timeout=30_000)
    assert run.is_disabled()
    _shot(page, "first_train_01_refused")
    k.fill("4")
    k.press("Enter")
    page.wait_for_function("() => ![...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Run')"
                           ".disabled", timeout=30_000)
    assert "No training jobs yet" in page.locator("body").inner_text()

    run.click()
    page.get_by_text("See the runs on the Leaderboard").wait_for(timeout=300_000)
    page.get_by_text(re.compile(r"svm\*?\*?: done .*UAR 0\.\d{3} ± 0\.\d{3}")).first.wait_for()
    page.get_by_text("Saved as your model svm-samples-run1").wait_for()
    _shot(page, "first_train_02_done")
    html = page.content()  # collapsed expanders included
    assert "Traceback" not in html and page.get_by_test_id("stException").count() == 0
    run = ResultsStore(env["SER_RESULTS_DB"]).get_run(1)
    assert (run["status"], run["k"], len(run["folds"]), run["n_speakers"]) == ("done", 4, 4, 4)
    assert run["saved_model"] == str(Path(env["SER_USER_MODELS_DIR"]) / "svm-samples-run1")

    assert _hashes(shipped_svm) == before  # the shipped model: same files, same bytes
    assert (Path(env["SER_USER_MODELS_DIR"]) / "svm-samples-run1" / "model.json").is_file()
    assert sorted(p.name for p in Path(env["SER_MODELS_DIR"]).iterdir() if not p.name.startswith(".")) == ["svm"]

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Demo").click()
    page.get_by_role("heading", name="Try the models").wait_for(timeout=60_000)
    page.get_by_text("Your models", exact=True).wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"svm-samples-run1 \(CV UAR 0\.\d\d\)")).first.wait_for(timeout=60_000)
    _shot(page, "first_train_03_demo")
    assert "Traceback" not in page.content()
    assert _hashes(shipped_svm) == before
    page.close()
