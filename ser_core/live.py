"""Live microphone audio: the stream cut into speech segments as it comes in, an emotion for each.

    >>> live = LiveStream(predictor)
    >>> for r in live.feed(frames):      # av.AudioFrame objects from streamlit-webrtc (any rate, layout, format)
    ...     r["final"], r["start_s"], r["end_s"], r["speech"], r["ensemble"]   # Predictor.judge's keys
    >>> live.segments                    # the finished segments so far, shaped like predict_segments' rows

The stream goes through the detector that cuts whole recordings (Silero VAD, ``ser_core.segments``), 32 ms
at a time, with the same ``VADConfig`` rule: hysteresis between its two thresholds, a pause of
``min_silence_s`` ends a segment, bursts shorter than ``min_speech_s`` are dropped, ``pad_s`` around each,
speech longer than ``max_segment_s`` is cut there. Silences are never judged. A segment is judged
(``Predictor.judge``) when it ends (``final``), and while it goes on once it holds ``LiveTiming.first_s`` of
audio and then every ``LiveTiming.update_s`` on the segment so far (``final`` False), so the first answer comes
about ``first_s`` after speech starts and a long segment is re-judged more often than once a second.

Each stream has its own detector (Silero keeps the state of what it heard). The file path scales a whole
recording's peak to 1 before the detector; a stream's future is unknown, so each chunk is scaled by the peak of
the last ``PEAK_S`` seconds instead (a chunk whose recent peak is below ``SILENCE_DBFS`` is silence).
"""
from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .audio import SILENCE_DBFS
from .segments import CHUNK, DEFAULT_VAD, SR, VADConfig, load_detector

BUSY = "Not judged: the server was busy with other users' analyses."
PEAK_S = 10.0  # the level a stream is scaled by is its peak over this many seconds (the file path: the whole file)
_QUIET = 10 ** (SILENCE_DBFS / 20)


@dataclass(frozen=True)
class LiveTiming:
    """When a segment still going on is judged."""

    first_s: float = 0.6  # audio in the segment before its first judgement: the speech check needs 0.5 s of
    #                       sound; the first 0.6 s of 79 RAVDESS clips' segments passed it 78 times (0.5 s: 53)
    update_s: float = 0.8  # then again this often: the target is an update on screen at least every second, and
    #                        each takes 0.1-0.3 s to judge and show (1.0 gave 1.13 s between updates in Chromium)
    retry_s: float = 0.25  # sooner when the segment so far did not pass the speech check yet


DEFAULT_TIMING = LiveTiming()


class FrameResampler:
    """``av.AudioFrame`` objects to mono float32 at ``sr`` Hz, through a streaming soxr resampler (no clicks at
    frame borders); the input rate may change between calls (the resampler is then rebuilt)."""

    def __init__(self, sr: int = SR):
        self.sr = sr
        self._rate = None
        self._stream = None
        self.received_s = 0.0  # total seconds received

    def __call__(self, frames) -> np.ndarray:
        import soxr

        out = []
        for f in frames:
            x = f.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
            ch = len(f.layout.channels)
            x = x.reshape(ch, -1) if f.format.is_planar else x.reshape(-1, ch).T
            if np.issubdtype(x.dtype, np.integer):
                x = x / float(np.iinfo(x.dtype).max + 1)
            mono = x.mean(axis=0).astype(np.float32)
            if f.sample_rate != self._rate:
                self._rate = f.sample_rate
                self._stream = soxr.ResampleStream(self._rate, self.sr, 1, dtype="float32")
            out.append(self._stream.resample_chunk(mono))
            self.received_s += len(mono) / self._rate
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Span:
    """A stretch of the stream to judge: samples ``[start, end)`` at 16 kHz counted from the stream's start."""

    start: int
    end: int
    final: bool  # the segment has ended (else: the segment so far, still going on)


class StreamSegmenter:
    """Speech segments of a 16 kHz stream, found as it comes (see the module docstring).

    ``push(y)`` takes any number of new samples and returns the ``Span`` objects due by then, in order;
    ``audio(span)`` gives a span's samples (kept until the next ``push``). ``probability(chunk)`` (a 512-sample
    chunk scaled to the recent peak, in order) defaults to a fresh Silero model's."""

    def __init__(self, vad: VADConfig = DEFAULT_VAD, timing: LiveTiming = DEFAULT_TIMING, probability=None):
        self.vad, self.timing = vad, timing
        self._probability = probability or _silero_probability(load_detector())
        s = lambda seconds: int(round(seconds * SR))  # noqa: E731
        self._pad, self._min_silence, self._min_speech = s(vad.pad_s), s(vad.min_silence_s), s(vad.min_speech_s)
        self._max_segment, self._first, self._update = s(vad.max_segment_s), s(timing.first_s), s(timing.update_s)
        self._pending = np.zeros(0, dtype=np.float32)  # samples short of a whole chunk
        self._kept = np.zeros(0, dtype=np.float32)  # samples [self._kept_from, self.n)
        self._kept_from = 0
        self.n = 0  # samples judged by the detector so far
        self._peaks = deque(maxlen=max(1, int(PEAK_S * SR / CHUNK)))
        self.start: int | None = None  # the current segment's first sample (pad included), None in a pause
        self._silence_from: int | None = None  # where the current pause began, while it is shorter than min_silence
        self._next_update = 0

    def push(self, y) -> list[Span]:
        y = np.concatenate([self._pending, np.asarray(y, dtype=np.float32)])
        whole = len(y) // CHUNK * CHUNK
        self._pending = y[whole:]
        keep_from = self.n - self._pad if self.start is None else self.start
        self._kept = np.concatenate([self._kept[max(0, keep_from - self._kept_from):], y[:whole]])
        self._kept_from = max(0, keep_from)
        spans = []
        for chunk in y[:whole].reshape(-1, CHUNK):
            spans += self._step(chunk)
        return spans

    def audio(self, span: Span) -> np.ndarray:
        return self._kept[span.start - self._kept_from:span.end - self._kept_from]

    def defer(self, seconds: float):
        """Judge the segment so far again ``seconds`` from now rather than at the usual update."""
        self._next_update = self.n + int(seconds * SR)

    @property
    def speaking(self) -> bool:
        return self.start is not None

    def _step(self, chunk: np.ndarray) -> list[Span]:
        self._peaks.append(float(np.abs(chunk).max()))
        peak = max(self._peaks)
        p = self._probability(chunk / peak) if peak >= _QUIET else 0.0
        i, self.n = self.n, self.n + CHUNK
        vad, out = self.vad, []
        if self.start is None:
            if p >= vad.threshold:
                self.start, self._silence_from = max(0, i - self._pad), None
                self._next_update = self.start + self._first
            return out
        if p >= vad.threshold:
            self._silence_from = None
        elif p < vad.end_threshold and self._silence_from is None:
            self._silence_from = i
        if self._silence_from is not None and self.n - self._silence_from >= self._min_silence:
            out += self._close(min(self._silence_from + self._pad, self.n), speaking_on=False)
        elif self.n - self.start >= self._max_segment:
            out += self._close(self.n, speaking_on=True)
        elif self.n >= self._next_update:  # short pauses between words included: an update every update_s
            out.append(Span(self.start, self.n, final=False))
            self._next_update = self.n + self._update
        return out

    def _close(self, end: int, speaking_on: bool) -> list[Span]:
        """End the current segment at ``end``; one that goes on (cut at max_segment_s) starts again there."""
        start, self._silence_from = self.start, None
        self.start = end if speaking_on else None
        self._next_update = end + self._first
        long_enough = end - start - 2 * self._pad >= self._min_speech or speaking_on
        return [Span(start, end, final=True)] if long_enough else []


def _silero_probability(model):
    import torch

    def probability(chunk: np.ndarray) -> float:
        with torch.inference_mode():
            return float(model(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)), SR))

    return probability


class LiveStream:
    """A live stream judged segment by segment (see the module docstring): ``feed(frames)`` returns the new
    judgements, each ``{"start_s", "end_s", "final", "busy": False, **predictor.judge(segment)}``, or, when
    ``slot`` (a context manager factory yielding whether the server has room; by default always) said no,
    ``"busy": True`` and ``judge``'s not-speech keys with the reason ``BUSY``. Only the last update of a batch
    is judged (older ones are stale by then); every final segment is (or marked busy). ``segments``: the final
    ones so far; ``lag_s``: how far behind the microphone the stream is being processed."""

    def __init__(self, predictor, vad: VADConfig = DEFAULT_VAD, timing: LiveTiming = DEFAULT_TIMING, slot=None,
                 segmenter: StreamSegmenter | None = None):
        self.predictor, self.timing = predictor, timing
        self.slot = slot or (lambda: contextlib.nullcontext(True))
        self.frames = FrameResampler(SR)
        self.segmenter = segmenter or StreamSegmenter(vad, timing)
        self.segments: list[dict] = []
        self._t0 = None

    def feed(self, frames) -> list[dict]:
        if self._t0 is None:
            self._t0 = time.monotonic()
        return self.feed_samples(self.frames(frames))

    def feed_samples(self, y: np.ndarray) -> list[dict]:
        """``feed`` for 16 kHz mono samples."""
        spans = self.segmenter.push(y)
        due = [s for s in spans if s.final] + [s for s in spans[-1:] if not s.final]
        if not due:
            return []
        out = []
        with self.slot() as free:
            for span in due:
                where = {"start_s": span.start / SR, "end_s": span.end / SR, "final": span.final}
                if not free:
                    judged = {**where, "busy": True, "speech": False, "reason": BUSY, "models": {}, "ensemble": {}}
                else:
                    judged = {**where, "busy": False, **self.predictor.judge(self.segmenter.audio(span), SR)}
                if span.final:
                    self.segments.append(judged)
                elif not (judged["speech"] or judged["busy"]):
                    self.segmenter.defer(self.timing.retry_s)
                out.append(judged)
        return out

    @property
    def received_s(self) -> float:
        return self.frames.received_s

    @property
    def lag_s(self) -> float:
        """Seconds of wall clock since the first frame minus seconds of audio received: grows when the server
        falls behind the microphone (frames queue up while a prediction runs)."""
        return 0.0 if self._t0 is None else max(0.0, time.monotonic() - self._t0 - self.received_s)


__all__ = ["BUSY", "FrameResampler", "LiveStream", "LiveTiming", "DEFAULT_TIMING", "StreamSegmenter", "Span", "PEAK_S"]
