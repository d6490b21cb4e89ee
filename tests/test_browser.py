"""End-to-end: the real app in headless Chromium (Playwright). Opens every page through the sidebar, uploads a
clip and records one through Chromium's fake microphone on the Demo page, and reads every model's prediction
off the page. Screenshots go to test-artifacts/screenshots/.

Needs /usr/bin/chromium (Debian: ``apt-get install chromium``); missing it is a failure, not a skip.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import CHROMIUM, CHROMIUM_ARGS, require_chromium, streamlit_server
from test_app_pages import ANGRY, REPO, train_quick_models

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a Streamlit server
SHOTS = REPO / "test-artifacts" / "screenshots"
PAGES = {"Home": "SER Studio", "Explore": "Explore the data", "Demo": "Try the models", "Train": None,
         "Leaderboard": None}  # expected h1 (None: the page's own title, written elsewhere)
ARGS = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def app_url(shared_ravdess, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    env = {**os.environ, "SER_CACHE_DIR": str(base / "feature-cache"), "SER_RESULTS_DB": str(base / "results.sqlite")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_CACHE_DIR", env["SER_CACHE_DIR"])
        models = train_quick_models(shared_ravdess, tmp_path_factory.mktemp("browser-models"))
    env["SER_MODELS_DIR"] = str(models)
    with streamlit_server(env, base / "streamlit-server.log", "--client.toolbarMode", "minimal") as url:
        yield url, models


@pytest.fixture(scope="module")
def fake_mic_wav(tmp_path_factory) -> Path:
    """The angry sample at 48 kHz PCM16 with silence around it: what Chromium's fake microphone plays (looped)."""
    import soxr

    y, sr = sf.read(ANGRY, dtype="float32")
    y48 = soxr.resample(y, sr, 48000)
    path = tmp_path_factory.mktemp("mic") / "speech48k.wav"
    sf.write(path, np.concatenate([np.zeros(4800, np.float32), 0.9 * y48, np.zeros(4800, np.float32)]), 48000,
             subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(fake_mic_wav):
    from playwright.sync_api import sync_playwright

    require_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=ARGS + [f"--use-file-for-fake-audio-capture={fake_mic_wav}"])
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url[0])
    settle(pg)
    yield pg
    ctx.close()


def settle(pg, quiet_ms: int = 600):
    """Wait until the script run is over (the app root's ``data-test-script-state``) for ``quiet_ms``."""
    app = pg.locator('[data-testid="stApp"]')
    app.wait_for()
    deadline = time.time() + 90
    quiet_since = None
    while time.time() < deadline:
        running = app.get_attribute("data-test-script-state") in ("initial", "running", "rerunRequested") or \
            pg.locator('[data-testid="stSpinner"], [data-testid="stSkeleton"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif (time.time() - quiet_since) * 1000 >= quiet_ms:
            return
        pg.wait_for_timeout(100)
    raise AssertionError("the app kept running for 90 s")


def no_exception(pg):
    boxes = pg.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def goto(pg, name: str):
    pg.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name).click()
    title = PAGES.get(name)
    if title:
        pg.locator("h1", has_text=title).wait_for()
    settle(pg)
    no_exception(pg)


def shot(pg, name: str):
    """Screenshot of the whole page: the app scrolls inside its own container, so grow the viewport to fit."""
    size = pg.viewport_size
    height = pg.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                         "[data-testid=stAppViewContainer]')].map(e => e.scrollHeight), innerHeight)")
    pg.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 5000)})
    pg.wait_for_timeout(700)  # plotly relayout
    pg.screenshot(path=str(SHOTS / f"{name}.png"))
    pg.set_viewport_size(size)


def predictions_on_page(pg) -> dict:
    """``{model: top emotion}`` read off the Demo page's model cards (plus "ensemble" when shown)."""
    values = pg.locator('[data-testid="stMetricValue"]').all_inner_texts()
    names = [m.group(1) for t in pg.locator('[data-testid="stMarkdownContainer"] strong').all_inner_texts()
             if (m := re.match(r"^(\S+) \((?:CV UAR|no CV score)", t))]
    has_ensemble = pg.get_by_text("Ensemble (weighted by CV UAR)").count() > 0
    keys = (["ensemble"] if has_ensemble else []) + names
    assert len(keys) == len(values), (keys, values)
    return dict(zip(keys, values))


def test_every_page_renders_without_exception(page):
    present = [n for n in PAGES if (REPO / "app_pages" / f"{n.lower()}.py").exists() or n == "Home"]
    links = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    assert [l.split()[-1] for l in links] == present  # "🏠\n\nHome" -> "Home"
    for name in present:
        goto(page, name)
        assert page.locator("h1").count() >= 1
        shot(page, name.lower())
    goto(page, "Explore")
    for tab in ["One clip", "Compare two clips", "Across emotions"]:
        page.get_by_role("tab", name=tab).click()
        settle(page)
        no_exception(page)
        page.locator(".js-plotly-plot").first.wait_for()
        shot(page, "explore-" + tab.lower().replace(" ", "-"))
    assert page.locator(".js-plotly-plot").count() == 5


def test_demo_upload_shows_every_models_prediction(page, app_url):
    from ser_core.inference import Predictor, describe_prediction

    goto(page, "Demo")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(ANGRY))
    page.get_by_text("Each model").wait_for()
    settle(page)
    no_exception(page)
    shown = predictions_on_page(page)
    predictor = Predictor.from_dir(None, app_url[1])
    direct, thresholds = predictor.predict_file(ANGRY), predictor.thresholds()
    assert {k: v for k, v in shown.items() if k != "ensemble"} == \
        {k: describe_prediction(p, thresholds[k])["answer"] for k, p in direct.items()}  # a label or "not sure"
    assert shown["ensemble"] in next(iter(direct.values()))
    assert page.locator(".js-plotly-plot").count() == 1 + 1 + len(direct)  # waveform, ensemble, one per model
    # arousal and valence beside each model's emotions, read from its probabilities
    from ser_core.taxonomy import LEVEL_WORDS, dimension_reading

    captions = " | ".join(page.locator('[data-testid="stCaptionContainer"]').all_inner_texts())
    for name, probs in direct.items():
        for dim, levels in dimension_reading(probs).items():
            top = max(levels, key=levels.get)
            assert f"{LEVEL_WORDS[dim][top]} {levels[top]:.0%}" in captions, (name, dim, captions)
    assert captions.count("Arousal (calm ↔ excited):") >= len(direct)
    shot(page, "demo-upload")


def test_demo_record_through_fake_microphone(page):
    goto(page, "Demo")
    page.get_by_text("Record", exact=True).click()
    settle(page)
    button = page.locator('[data-testid="stAudioInputActionButton"]')
    button.click()  # start recording
    page.wait_for_timeout(3000)
    button.click()  # stop: the WAV is uploaded and the script reruns
    page.get_by_text("Each model").wait_for()
    settle(page)
    no_exception(page)
    shown = predictions_on_page(page)
    assert set(shown) == {"ensemble", "random_forest", "svm"}
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    shot(page, "demo-record")


ALERT_TEXTS = "() => [...document.querySelectorAll('[data-testid=stAlertContainer]')].map(e => e.innerText.trim())"


def test_demo_live_microphone_two_tabs_stream_at_once(browser, app_url):
    """streamlit-webrtc (SENDONLY audio) in two tabs at once: each tab's "Now:" line (a segment of speech found
    by the voice activity detector, judged while it goes on) keeps changing, and its segments table fills."""
    pages = []
    for _ in range(2):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(app_url[0])
        settle(pg)
        goto(pg, "Demo")
        pg.get_by_text("Live microphone", exact=True).click()
        pages.append(pg)
    for pg in pages:
        pg.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="START").click()
    emotion = r"(neutral|calm|happy|sad|angry|fearful|disgust|surprised) \d+%"  # describe_prediction's text
    seen = [set(), set()]
    deadline = time.time() + 45
    while time.time() < deadline and min(map(len, seen)) < 3:  # three different answers in each tab
        for pg, texts in zip(pages, seen):
            for t in [t for t in pg.evaluate(ALERT_TEXTS) if t.startswith("Now:")]:
                assert re.match(rf"Now: \d+\.\d-\d+\.\d s: ({emotion}|not sure: {emotion}(, {emotion})+) so far$",
                                t), t
                texts.add(t)
        pages[0].wait_for_timeout(200)
    assert min(map(len, seen)) >= 3, seen
    for pg in pages:
        pg.get_by_text("Speech segments so far").wait_for(timeout=20_000)
        no_exception(pg)
        assert pg.get_by_text("Not judged").count() == 0  # each judgement found a free slot (or waited 1 s)
    shot(pages[0], "demo-live")
    for pg in pages:
        pg.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="STOP").click()
        pg.context.close()
