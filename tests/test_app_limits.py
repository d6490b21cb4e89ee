"""AppTest of the Demo page's limits on a shared server: hostile and oversized uploads refused with one sentence
and dropped, heavy work queued one analysis at a time with a visible waiting state."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf
import streamlit
from streamlit import config

import app_shared
from app_shared import plain
from test_app_pages import ANGRY, demo, models_dir, no_exception, wav_bytes  # noqa: F401  (fixtures)
from test_hostile_inputs import constant_flac


def top_emotions(at) -> list:
    return [m.value for m in at.metric if m.label == "top emotion"]


@pytest.mark.slow
def test_demo_refuses_an_absurd_flac_and_empties_the_uploader(demo, tmp_path):
    """The issue's FLAC shape (655 kHz, 8 channels; 5 s instead of 119: the header alone refuses it)."""
    flac = constant_flac(tmp_path / "hostile.flac", 655_350, 8, 5)
    demo.file_uploader[0].set_value((flac.name, flac.read_bytes(), "audio/flac")).run()
    no_exception(demo)
    assert [e.value for e in demo.error] == [plain("'hostile.flac' claims a sample rate of 655350 Hz, above the "
                                                   "384000 Hz limit; resample it to 48000 Hz or less.")]
    assert demo.file_uploader[0].value is None  # a fresh, empty uploader: the refused bytes are dropped
    assert not top_emotions(demo) and not demo.get("audio")  # no analysis, no player holding the bytes
    demo.file_uploader[0].set_value((ANGRY.name, ANGRY.read_bytes(), "audio/flac")).run()
    no_exception(demo)
    assert not demo.error and len(top_emotions(demo)) == 3  # the next upload works as usual


@pytest.mark.slow
@pytest.mark.parametrize("name, y, sr, reason", [
    ("onehz.wav", np.random.default_rng(0).normal(0, 0.3, 100), 1, "sampled at 1 Hz"),
    ("short.wav", 0.5 * np.sin(2 * np.pi * 200 * np.arange(800) / 16000), 16000, "too short to carry an emotion"),
    ("dc.wav", np.full(48000, 0.5), 16000, "constant offset"),
    ("square.wav", np.sign(np.sin(2 * np.pi * 220 * np.arange(48000) / 16000 + 0.1)), 16000, "pitch"),
])
def test_demo_says_no_speech_or_too_short(demo, name, y, sr, reason):
    demo.file_uploader[0].set_value((name, wav_bytes(y.astype(np.float32), sr), "audio/wav")).run()
    no_exception(demo)
    assert not demo.error and not top_emotions(demo)
    assert demo.warning[0].value.startswith("This does not sound like speech.") and reason in demo.warning[0].value


@pytest.mark.slow
def test_demo_refuses_an_upload_over_the_server_limit(demo):
    """Streamlit refuses larger uploads itself; the page refuses them too when that is bypassed."""
    before = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)
    try:
        big = wav_bytes(np.zeros(400_000, np.float32))  # 1.5 MB
        demo.file_uploader[0].set_value(("big.wav", big, "audio/wav")).run()
    finally:
        config.set_option("server.maxUploadSize", before)
    no_exception(demo)
    assert [e.value for e in demo.error] == [plain("'big.wav' is 2 MB, more than this server's 1 MB limit; cut it or "
                                                   "convert it to FLAC or MP3.")]
    assert demo.file_uploader[0].value is None and not top_emotions(demo)


@pytest.mark.slow
def test_demo_waits_for_another_users_analysis(demo, monkeypatch):
    """With the server's one analysis slot taken, the page shows the waiting state and analyses once it is free."""
    shown = []
    real_spinner = streamlit.spinner

    def spinner(text="", *a, **k):
        shown.append(text)
        return real_spinner(text, *a, **k)

    monkeypatch.setattr(streamlit, "spinner", spinner)
    assert app_shared._ANALYSIS_SLOTS.acquire(timeout=5)  # another user's analysis
    threading.Timer(1.5, app_shared._ANALYSIS_SLOTS.release).start()
    t0 = time.monotonic()
    demo.file_uploader[0].set_value((ANGRY.name, ANGRY.read_bytes(), "audio/flac")).run()
    no_exception(demo)
    assert time.monotonic() - t0 >= 1.5 and app_shared.WAITING in shown
    assert len(top_emotions(demo)) == 3


@pytest.mark.slow
def test_demo_gives_up_when_the_queue_does_not_move(demo, monkeypatch):
    monkeypatch.setattr(app_shared, "BUSY_WAIT_S", 0.3)
    assert app_shared._ANALYSIS_SLOTS.acquire(timeout=5)
    try:
        y, sr = sf.read(ANGRY, dtype="float32")
        demo.file_uploader[0].set_value(("angry.wav", wav_bytes(y, sr), "audio/wav")).run()
    finally:
        app_shared._ANALYSIS_SLOTS.release()
    no_exception(demo)
    assert demo.warning[0].value == "The server is busy with other users' analyses; try again in a minute."
    assert not top_emotions(demo)
