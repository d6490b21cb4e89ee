"""Live microphone audio: the last few seconds of a stream, mono at 16 kHz, for a prediction every second.

    >>> buf = LiveBuffer(seconds=3.0)
    >>> buf.add(frames)            # av.AudioFrame objects from streamlit-webrtc, any rate, layout and sample format
    >>> buf.buf, buf.seconds       # (<= 48000,) float32, and how many seconds it holds
"""
from __future__ import annotations

import numpy as np


class LiveBuffer:
    """The last ``seconds`` of a live stream, mono at ``sr`` Hz, fed with ``av.AudioFrame`` objects.

    Frames are mixed to mono and resampled with a streaming soxr resampler (no clicks at frame borders); the
    input rate may change between calls (the resampler is then rebuilt)."""

    def __init__(self, seconds: float = 3.0, sr: int = 16000):
        self.sr, self.size = sr, int(seconds * sr)
        self.buf = np.zeros(0, dtype=np.float32)
        self._rate = None
        self._stream = None
        self.received_s = 0.0  # total seconds received

    def add(self, frames) -> None:
        import soxr

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
            y = self._stream.resample_chunk(mono)
            self.received_s += len(mono) / self._rate
            self.buf = np.concatenate([self.buf, y])[-self.size:]

    @property
    def seconds(self) -> float:
        return len(self.buf) / self.sr


__all__ = ["LiveBuffer"]
