"""The live stream cut into speech segments as it comes (ser_core.live): known boundaries on RAVDESS clips joined
by pauses, an answer soon after speech starts and every second after, nothing for silence, noise or a tone, and
a busy server said plainly."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from ser_core.audio import load_audio, trim_silence
from ser_core.inference import LoadedModel, Predictor
from ser_core.live import BUSY, DEFAULT_TIMING, FrameResampler, LiveStream, StreamSegmenter
from ser_core.segments import DEFAULT_VAD, speech_segments
from ser_core.speech import TRIM_DB
from test_segments import SR, TOLERANCE_S, _clips, _recording, manifest, tiny  # noqa: F401  (fixtures)

FRAME = 320  # 20 ms at 16 kHz, as WebRTC delivers audio


def stream(seg: StreamSegmenter, y: np.ndarray) -> list:
    """Push ``y`` in 20 ms frames; every span with the sample count pushed when it came out."""
    out = []
    for i in range(0, len(y), FRAME):
        out += [(span, i + FRAME) for span in seg.push(y[i:i + FRAME])]
    return out


def test_frame_resampler_mixes_and_resamples_webrtc_frames():
    import av

    sr, f = 48000, 440.0
    t = np.arange(5 * sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * f * t) * 32767).astype(np.int16)
    frames = FrameResampler(16000)
    out = []
    for i in range(0, len(t), 960):  # 20 ms packed stereo s16 frames, as WebRTC delivers them
        chunk = np.repeat(tone[i:i + 960], 2)[None]  # (1, 2 * n) interleaved L R
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate = sr
        out.append(frames([frame]))
    y = np.concatenate(out)
    assert frames.received_s == pytest.approx(5.0)
    assert 0 <= 5 * 16000 - len(y) < 400  # the resampler holds back a few ms
    spec = np.abs(np.fft.rfft(y))
    assert np.fft.rfftfreq(len(y), 1 / 16000)[spec.argmax()] == pytest.approx(f, abs=1)
    assert 0.45 < np.abs(y[16000:]).max() < 0.55


@pytest.mark.slow
def test_stream_segments_find_known_boundaries_and_update_every_second(manifest):  # noqa: F811
    rng = np.random.default_rng(0)
    clips = _clips(manifest, "09", 5, ("angry", "happy", "fearful", "surprised"), ("strong",))
    y, truth = _recording(clips["path"].tolist(), [0.6, 1.8, 0.9, 2.4, 0.7, 1.2], rng)
    speech = [trim_silence(load_audio(p, trim=False, normalize=None), top_db=TRIM_DB)[0] for p in clips["path"]]
    long = np.concatenate([np.zeros(SR, np.float32)] + speech + [np.zeros(SR, np.float32)])  # 9 s without a pause
    spans = stream(StreamSegmenter(), y)
    finals = [(s.start / SR, s.end / SR) for s, _ in spans if s.final]
    assert len(finals) == len(truth), (finals, truth)
    for (s, e), (ts, te) in zip(finals, truth):
        assert abs(s - ts) <= TOLERANCE_S and abs(e - te) <= TOLERANCE_S, ((s, e), (ts, te))
    file_segments = speech_segments(y, SR)
    assert np.abs(np.subtract(finals, file_segments)).max() < 0.1  # the stream cuts where the whole file does
    for (s, e), (ts, te) in zip(finals, truth):
        came = [pushed / SR for span, pushed in spans if span.start / SR == s]
        assert came[0] - ts <= DEFAULT_TIMING.first_s + 0.1  # the first answer, counted from the true onset
        assert max(np.diff(came[:-1]), default=0) <= DEFAULT_TIMING.update_s + 0.06  # then as often (+ chunk, frame)
        assert came[-1] - e <= 0.45  # the final one once the pause is long enough (min_silence_s)
    pause = DEFAULT_VAD.min_silence_s  # an update in a pause that turns out to end the segment reaches into it
    assert all(any(s <= span.start / SR and span.end / SR <= e + pause for s, e in finals) for span, _ in spans)

    spans = stream(StreamSegmenter(), long)  # continuous speech longer than max_segment_s: cut, updates go on
    came = [pushed / SR for _, pushed in spans]
    assert max(np.diff(came)) <= DEFAULT_TIMING.update_s + 0.06
    assert sum(s.final for s, _ in spans) >= 2 and all(s.end - s.start <= 6 * SR + 512 for s, _ in spans)


@pytest.mark.slow  # PyTorch and Silero load, 16 s of audio through the detector
def test_stream_finds_nothing_in_silence_noise_and_a_tone():
    rng = np.random.default_rng(1)
    t = np.arange(4 * SR) / SR
    for y in (np.zeros(4 * SR), 0.1 * rng.standard_normal(4 * SR), 0.3 * np.sin(2 * np.pi * 220 * t),
              1e-4 * rng.standard_normal(4 * SR)):  # the last: a room at -80 dBFS, not scaled up to speech level
        seg = StreamSegmenter()
        assert stream(seg, y.astype(np.float32)) == [] and not seg.speaking


@pytest.mark.slow
def test_live_stream_judges_segments_and_says_when_the_server_is_busy(manifest, tiny):  # noqa: F811
    rng = np.random.default_rng(2)
    clips = _clips(manifest, "12", 2)
    y, truth = _recording(clips["path"].tolist(), [1.0, 1.5, 1.0], rng)
    predictor = Predictor([LoadedModel("tiny", tiny, {}, 0.0)])
    live = LiveStream(predictor)
    out = [r for i in range(0, len(y), FRAME) for r in live.feed_samples(y[i:i + FRAME])]
    finals = [r for r in out if r["final"]]
    assert len(finals) == 2 and live.segments == finals
    assert all(r["speech"] and not r["busy"] and set(r["models"]) == {"tiny"} for r in finals)
    updates = [r for r in out if not r["final"]]
    assert updates and all(r["end_s"] - r["start_s"] >= DEFAULT_TIMING.first_s - 0.04 for r in updates)
    assert all(r["speech"] for r in updates[1:])  # the first may be too short for the speech check (retried)

    free = threading.Semaphore(0)  # no slot: every judgement is refused, plainly, and the stream goes on

    def busy():
        import contextlib

        @contextlib.contextmanager
        def slot():
            yield free.acquire(timeout=0.01)
        return slot()

    live = LiveStream(predictor, slot=busy)
    out = [r for i in range(0, len(y), FRAME) for r in live.feed_samples(y[i:i + FRAME])]
    assert out and all(r["busy"] and not r["speech"] and r["reason"] == BUSY for r in out)
    assert [r["final"] for r in live.segments] == [True, True]  # the segments were still found, marked busy


def test_live_slot_waits_briefly_then_says_no():
    import time

    from app_shared import _ANALYSIS_SLOTS, live_slot

    with live_slot(0.1) as got:
        assert got
    held = 0
    while _ANALYSIS_SLOTS.acquire(blocking=False):  # what another user's analyses would hold
        held += 1
    try:
        t0 = time.monotonic()
        with live_slot(0.2) as got:
            assert not got
        assert 0.15 < time.monotonic() - t0 < 1.0
    finally:
        for _ in range(held):
            _ANALYSIS_SLOTS.release()
