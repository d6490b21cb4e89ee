"""End-to-end in headless Chromium: the Demo on a one-minute recording with pauses shows its speech segments over
the waveform, offers their CSV, and explains a segment; screenshot test-artifacts/screenshots/demo-segments.png."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from test_app_pages import SAMPLES
from test_browser import app_url, browser, fake_mic_wav, goto, no_exception, page, settle, shot  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a Streamlit server


@pytest.fixture(scope="module")
def memo(tmp_path_factory):
    """About 60 s: twelve sample clips (actors 01 and 02, six emotions each) joined by pauses of 0.8-2.4 s."""
    rng = np.random.default_rng(0)
    clips = sorted(SAMPLES.glob("Actor_0[12]/03-01-0[2-7]-02-01-01-*.flac"))
    assert len(clips) == 12
    parts = []
    for path in clips:
        parts += [np.zeros(int(rng.uniform(0.8, 2.4) * 16000), np.float32), sf.read(path, dtype="float32")[0]]
    y = np.concatenate(parts + [np.zeros(16000, np.float32)])
    out = tmp_path_factory.mktemp("memo") / "memo.wav"
    sf.write(out, y + rng.normal(0, 1e-4, len(y)).astype(np.float32), 16000)
    return out, len(clips), len(y) / 16000


def test_demo_segments_csv_and_explanation_in_the_browser(page, memo):
    path, n_clips, duration = memo
    assert 50 < duration < 70
    goto(page, "Demo")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.get_by_text("Emotion over time (speech segments)").wait_for(timeout=180_000)
    settle(page)
    no_exception(page)
    rows = page.locator('[data-testid="stDataFrame"]').first
    rows.wait_for()
    assert page.get_by_text(f"{n_clips} speech segments found").count() == 1
    assert page.get_by_role("button", name="Download the segments (CSV)").count() == 1
    part = page.locator('[data-testid="stSelectbox"]').filter(has_text="Part")
    part.locator("input").click()  # open it, then the third segment (the options start with the whole recording)
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    settle(page)
    page.get_by_role("button", name="Explain").click()
    page.get_by_text("Compared with").wait_for(timeout=120_000)
    settle(page)
    no_exception(page)
    shot(page, "demo-segments")
