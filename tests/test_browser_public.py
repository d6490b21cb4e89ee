"""A public demo (``SER_PUBLIC=1``) in Chromium, page by page: every widget that writes to the server or downloads
from it is absent (no Delete, no Run, no download button, no "Download as CSV" in a table's toolbar, no "Download
plot as a png", no developer menu or Deploy button, no table as text to copy), the widgets left are the visitor's
own (their audio, an explanation) and no server path shows; and a saved model whose labels hold Markdown, HTML,
a KaTeX formula, a colour directive and U+202E shows them as text on the Demo (its top emotion, candidates, bars)
and on the Leaderboard. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import REPO, streamlit_server
from test_app_pages import SAMPLES, train_quick_models
from test_browser import no_exception, settle
from test_browser_navigation import SHOTS, chromium  # noqa: F401  (fixture: headless Chromium)
from test_browser_shared_server import INJECTED, assert_nothing_points_at_the_injected_address
from test_shared_server import HOSTILE_LABELS, as_shown, hostile_model, sure_copy

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a Streamlit server
HOSTILE = "svm-hostile"  # the visitor-facing name of "your" model trained on HOSTILE_LABELS
# Widgets a public page may show that take something from a visitor, and why each writes nothing to the server
# and exports nothing: any other button, field or uploader fails the test until it is judged and listed here.
ALLOWED = {
    "stButton": {"Explain": "computes an explanation of the visitor's recording, in memory",
                 "Clear calibration clips": "empties the visitor's own calibration clips (session memory)"},
    "stFileUploader": {"Speech recording": "the visitor's recording, analysed in memory, dropped when refused",
                       "Clips of your voice": "the visitor's calibration clips: at most 20, decoded, files dropped"},
    "stAudioInput": {"Or record them one at a time": "the visitor's own calibration clip, as the uploader",
                     "Record a few seconds of speech": "the visitor's own recording, as the uploader"},
}
WRITES = ["stDownloadButton", "stTextInput", "stTextArea", "stNumberInput", "stDataEditor", "stChatInput",
          "stCameraInput", "stFormSubmitButton", "stCode", "stAppDeployButton", "stMainMenu"]
# ^ none on a public page: downloads, fields that name paths or weights, editable tables, tables as text to
#   copy, the Deploy button and the developer menu (Rerun, Clear cache: that one would empty every user's cache)


@pytest.fixture(scope="module")
def public_server(shared_ravdess, tmp_path_factory):
    """A ``SER_PUBLIC=1`` server: shipped svm and random_forest (2 actors) and the speaker-adaptive LDA; "your"
    model trained on HOSTILE_LABELS (its run in the server's results store, beside the shipped models' runs) and
    its copy without a "not sure" threshold."""
    from ser_core.results import ResultsStore

    base = tmp_path_factory.mktemp("public")
    env = {**os.environ, "SER_PUBLIC": "1", "SER_RESULTS_DB": str(base / "results.sqlite"),
           "SER_USER_MODELS_DIR": str(base / "yours"), "SER_JOBS_DIR": str(base / "jobs")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        shipped = train_quick_models(shared_ravdess, base / "shipped")
        shutil.copytree(REPO / "trained_models" / "adaptive_lda", shipped / "adaptive_lda")
        sure_copy(hostile_model(shared_ravdess, base / "yours" / HOSTILE, store=ResultsStore(env["SER_RESULTS_DB"])))
    env["SER_MODELS_DIR"] = str(shipped)
    with streamlit_server(env, base / "streamlit.log") as url:
        yield url, base


@pytest.fixture
def page(chromium):
    pg = chromium.new_page(viewport={"width": 1400, "height": 1100})
    pg.set_default_timeout(120_000)
    dialogs = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))  # an alert() would be injected script
    yield pg
    pg.close()
    assert not dialogs, dialogs


def recording(folder: Path) -> Path:
    """About 14 s: four sample clips in a row (over 6 s, so the Demo lists its speech segments in a table)."""
    y = np.concatenate([sf.read(SAMPLES / "Actor_02" / f"03-01-0{e}-02-01-01-02.flac", dtype="float32")[0]
                        for e in (2, 3, 4, 5)])
    sf.write(folder / "long.wav", y, 16000)
    return folder / "long.wav"


def open_page(pg, url: str):
    pg.goto(url)
    settle(pg)
    no_exception(pg)


def widget_labels(pg, testid: str) -> list[str]:
    """The labels of the page's ``testid`` widgets (a button's text without its icon, a widget's label)."""
    return pg.evaluate("""testid => [...document.querySelectorAll(`[data-testid=${testid}]`)].map(e =>
        (e.querySelector('[data-testid=stWidgetLabel], [data-testid=stMarkdownContainer]') || e).innerText.trim())""",
                       testid)


def assert_read_only(pg, server_dirs: list[str]):
    """Nothing on the page writes to the server or downloads from it, and no server folder is named."""
    for testid in WRITES:
        assert pg.get_by_test_id(testid).count() == 0, testid
    for testid, allowed in ALLOWED.items():
        for label in widget_labels(pg, testid):
            assert any(label.startswith(a) for a in allowed), f"{testid} {label!r}: judge it and list it in ALLOWED"
    for table in pg.get_by_test_id("stDataFrame").all():  # the toolbar each table shows on hover
        table.scroll_into_view_if_needed()
        table.hover()
        pg.wait_for_timeout(300)
    toolbar = pg.evaluate("() => [...document.querySelectorAll('[data-testid=stElementToolbarButton] button, "
                          "[data-testid=stElementToolbarButton]')].map(b => b.getAttribute('aria-label') || "
                          "b.innerText)")
    assert not [t for t in toolbar if t and "download" in t.lower()], toolbar
    for chart in pg.locator(".js-plotly-plot").all():
        assert chart.locator('.modebar-btn[data-title*="Download"]').count() == 0
    text = pg.evaluate("() => document.body.innerText")
    assert not [d for d in server_dirs if d in text], [d for d in server_dirs if d in text]


def test_a_public_demo_offers_nothing_that_writes_or_exports(page, public_server):
    url, base = public_server
    server_dirs = [str(REPO), str(base), str(Path.home()) + "/"]
    open_page(page, url)
    assert page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()[-1].endswith("Leaderboard")
    assert_read_only(page, server_dirs)

    open_page(page, f"{url}/demo")
    yours = page.get_by_test_id("stMultiSelect").filter(has_text="Your models")
    assert yours.count() == 1  # your model is listed: a public demo still shows it, and offers no Delete
    assert page.get_by_text("Delete one of your models").count() == 0
    page.get_by_text("Calibrate to your voice").click()
    settle(page)
    assert set(widget_labels(page, "stFileUploader")) >= {"Clips of your voice (at most 20)"}
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').last.set_input_files(str(recording(base)))
    page.get_by_text("Emotion over time (speech segments)").wait_for(timeout=180_000)
    settle(page)
    no_exception(page)
    assert page.get_by_test_id("stDataFrame").count() >= 1  # the segments: a table, no CSV
    assert_read_only(page, server_dirs)
    page.screenshot(path=str(SHOTS / "public-demo.png"), full_page=True)

    open_page(page, f"{url}/leaderboard")
    page.get_by_text("Compare two runs").wait_for()
    settle(page)
    assert page.get_by_test_id("stDataFrame").count() >= 5 and page.locator(".js-plotly-plot").count() >= 3
    page.get_by_text("Configuration").click()
    settle(page)
    assert page.get_by_test_id("stJson").count() == 1
    assert_read_only(page, server_dirs)
    page.screenshot(path=str(SHOTS / "public-leaderboard.png"), full_page=True)

    for hidden in ("train", "explore"):
        open_page(page, f"{url}/{hidden}")
        assert page.get_by_text("This page is not available on this public demo").count() == 1
        assert_read_only(page, server_dirs)


def shown_labels() -> list[str]:
    """HOSTILE_LABELS as the page must show them: as typed, U+202E as a visible escape."""
    return [label.replace("\u202e", "\\u202e") for label in HOSTILE_LABELS.values()]


MARKUP = "a, img, strong, em, code, .katex, .stMarkdownColoredText, script, iframe"  # what Markdown or HTML made
BIDI = "[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"


def test_hostile_labels_show_as_text_on_the_demo_and_leaderboard(page, public_server):
    url, _ = public_server
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    open_page(page, f"{url}/demo")
    for box in page.get_by_test_id("stMultiSelect").filter(has_text="Shipped models").all():
        box.get_by_role("button", name="Clear all").click()  # only your two models
        settle(page)
    angry = SAMPLES / "Actor_01" / "03-01-05-02-01-01-01.flac"
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').last.set_input_files(str(angry))
    page.get_by_test_id("stMetric").first.wait_for()
    settle(page)
    no_exception(page)
    metrics = page.get_by_test_id("stMetric")  # the two models' mean, then each model's top emotion
    assert metrics.count() == 3
    for metric in metrics.all():
        assert metric.locator(MARKUP).count() == 0, metric.inner_html()
        value = as_shown(metric.get_by_test_id("stMetricValue").inner_text())
        delta = as_shown(metric.get_by_test_id("stMetricDelta").inner_text())
        assert value in shown_labels() + ["not sure"], value
        if value == "not sure":  # the candidates, as typed
            assert any(label in delta for label in shown_labels()), delta
    assert as_shown(metrics.last.get_by_test_id("stMetricValue").inner_text()) in shown_labels()  # the sure copy
    bars = page.locator(".js-plotly-plot", has=page.locator(".barlayer")).first.locator(".ytick text")
    bars = bars.all_text_contents()
    assert sorted(as_shown(b) for b in bars) == sorted(shown_labels())
    page.screenshot(path=str(SHOTS / "public-demo-hostile-labels.png"), full_page=True)
    check_page_shows_text(page)

    open_page(page, f"{url}/leaderboard")  # your run opens: its confusion matrix and recall per class
    page.get_by_text("Compare two runs").wait_for()
    settle(page)
    ticks = page.locator(".js-plotly-plot").filter(has_text="confusion").first.locator(".ytick text")
    assert sorted(as_shown(t) for t in ticks.all_text_contents()) == sorted(shown_labels())
    page.screenshot(path=str(SHOTS / "public-leaderboard-hostile-labels.png"), full_page=True)
    check_page_shows_text(page)
    assert not [u for u in asked if INJECTED in u]  # nothing fetched from it
    assert not re.search(BIDI, "".join(asked))


def check_page_shows_text(page):
    """No element that Markdown or HTML would make from a label, no link or image to the injected host, no
    bidirectional control anywhere in the page's text."""
    main = page.get_by_test_id("stMain")
    made = main.locator(".katex, .stMarkdownColoredText, script, img").count()
    assert made == 0, main.locator(".katex, .stMarkdownColoredText, script, img").first.evaluate("e => e.outerHTML")
    assert_nothing_points_at_the_injected_address(page)
    text = page.evaluate("() => document.body.innerText")
    assert not re.search(BIDI, text), [hex(ord(c)) for c in re.findall(BIDI, text)]
    assert "\\u202egnp.exe" in as_shown(text) or "gnp.exe" not in text  # the override shown as an escape
