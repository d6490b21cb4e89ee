"""Decode any audio to a mono float32 signal at 16 kHz, trim silence, normalise and validate it.

``load_audio(src)`` reads a path, ``bytes`` or a binary file object: WAV/FLAC/OGG/MP3 through libsndfile
(``soundfile``), anything else (m4a/AAC, webm/Opus, ...) through FFmpeg (``av``). ``prepare(y, sr_in)`` runs
the same pipeline on a signal already in memory (microphone input, sliding windows).

Pipeline: mix to mono -> validate (empty, NaN/inf, too long) -> resample with soxr (high quality) -> reject
an all-silent clip -> trim leading/trailing silence -> check the minimum duration -> normalise.

Bounded: the header's sample rate, length and channels are checked before anything is decoded (``AudioLimitError``
beyond ``MAX_SAMPLE_RATE`` or ``MAX_DECODED_SAMPLES``, ``LowSampleRateError`` below ``MIN_SAMPLE_RATE``), the
running size again while decoding (a header may lie), and ``load_audio`` mixes down and resamples block by
block, so memory holds the 16 kHz result and one block, never the file's full decoded size.

>>> y = load_audio("clip.flac")            # (n,) float32 at 16 kHz, peak 1.0
>>> y, (start, end) = trim_silence(y, top_db=20)
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, Iterator

import numpy as np

from .errors import (AudioLimitError, AudioTooLongError, ConfigError, AudioTooShortError, EmptyAudioError,
                     InvalidSamplesError, LowSampleRateError, SilentAudioError, UnreadableAudioError)
from .roots import printable, user_path

SILENCE_DBFS = -60.0  # a clip whose peak stays below this is "all silent" (a muted mic, digital silence)
LOUDNESS_TARGET_DBFS = -23.0  # RMS level for normalize="loudness" (the EBU R128 programme level)
NORMALIZE_MODES = ("peak", "loudness", None)
_TRIM_FRAME, _TRIM_HOP = 1024, 256  # frame RMS for trimming: 64 ms / 16 ms at 16 kHz
MAX_SAMPLE_RATE = 384_000  # the highest rate audio interfaces record; a header above it is broken or hostile
MIN_SAMPLE_RATE = 4_000  # below any speech recording (telephone speech: 8 kHz); a 1 Hz header holds no voice
MAX_DECODED_SAMPLES = 600 * 48_000 * 2  # frames x channels: 10 minutes of 48 kHz stereo (57.6 million samples)
_BLOCK_SAMPLES = 1 << 20  # decode this many samples (frames x channels) at a time: 4 MB of float32
_SF_UNKNOWN_LENGTH = 2 ** 63 - 1  # libsndfile's frame count when the header does not say (a streamed FLAC)


def load_audio(src, *, sr: int = 16000, trim: bool = True, top_db: float = 20, normalize: str | None = "peak",
               max_duration_s: float | None = 600.0, min_duration_s: float = 0.05,
               max_samples: int = MAX_DECODED_SAMPLES) -> np.ndarray:
    """Decode ``src`` (path, bytes or binary file object) to a prepared mono signal.

    Returns ``(n,)`` float32 at ``sr`` Hz. The limits (duration, sample rate, ``max_samples`` = frames x
    channels) are checked from the header before decoding whenever the container states its length, and
    while decoding. Raises the ``AudioError`` subclasses of ``ser_core.errors``.
    """
    y, _ = decode(src, max_duration_s=max_duration_s, sr=sr, max_samples=max_samples)
    return prepare(y, sr, sr=sr, trim=trim, top_db=top_db, normalize=normalize,
                   max_duration_s=max_duration_s, min_duration_s=min_duration_s)


def decode(src, *, max_duration_s: float | None = None, sr: int | None = None,
           max_samples: int = MAX_DECODED_SAMPLES) -> tuple[np.ndarray, int]:
    """Decode without processing: ``((n, channels) float32, native rate)``; with ``sr``: ``((n,) float32, sr)``,
    the channels averaged and resampled block by block (memory holds the result, not the decoded file).

    Refused before decoding, from the header: a rate above ``MAX_SAMPLE_RATE`` or more than ``max_samples``
    samples (frames x channels) (``AudioLimitError``), a rate below ``MIN_SAMPLE_RATE`` (``LowSampleRateError``),
    more than ``max_duration_s`` (``AudioTooLongError``); the same limits stop the decoding as soon as the
    running size passes them.
    """
    name, data = _open_source(src)
    try:
        return _read(_soundfile_stream(data, name), max_duration_s, sr, max_samples)
    except _NotForSoundfile:  # a container libsndfile does not know, or one it fails on midway (FFmpeg skips
        return _read(_av_stream(data, name), max_duration_s, sr, max_samples)  # a corrupt frame and goes on)


def prepare(y, sr_in: int, *, sr: int = 16000, trim: bool = True, top_db: float = 20,
            normalize: str | None = "peak", max_duration_s: float | None = 600.0,
            min_duration_s: float = 0.05) -> np.ndarray:
    """Prepare an in-memory signal: ``y`` is ``(n,)``, ``(n, channels)`` or ``(channels, n)`` at ``sr_in`` Hz.

    A 2-D array is read as (samples, channels) when its first axis is the longer one, else as
    (channels, samples). Returns ``(n',)`` float32 at ``sr`` Hz.
    """
    if normalize not in NORMALIZE_MODES:
        raise ConfigError(f"normalize must be one of {NORMALIZE_MODES}, not {normalize!r}.")
    if not sr_in or sr_in <= 0:
        raise ConfigError(f"The sample rate must be a positive number of Hz, not {sr_in!r}.")
    check_sample_rate(sr_in)
    _check_size(np.size(y), MAX_DECODED_SAMPLES)
    y = to_mono(y)
    if y.size == 0:
        raise EmptyAudioError("The audio contains no samples; record or choose a longer clip.")
    if not np.isfinite(np.sum(y, dtype=np.float64)):  # a NaN or inf anywhere makes the sum non-finite
        raise InvalidSamplesError("The audio contains NaN or infinite samples; the file or signal is corrupt.")
    duration = y.size / sr_in
    _check_too_long(duration, max_duration_s)
    if sr_in != sr:
        y = resample(y, sr_in, sr)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak <= 10 ** (SILENCE_DBFS / 20):
        raise SilentAudioError(f"The clip is silent (peak below {SILENCE_DBFS:.0f} dBFS); check the microphone "
                               "or choose another file.")
    if trim:
        y, _ = trim_silence(y, top_db=top_db)
    if y.size < min_duration_s * sr:
        raise AudioTooShortError(f"The clip holds only {y.size / sr:.3f} s of sound; at least "
                                 f"{min_duration_s:g} s is needed.")
    return np.ascontiguousarray(normalize_signal(y, normalize), dtype=np.float32)


def to_mono(y) -> np.ndarray:
    """Average the channels: ``(n,)``, ``(n, ch)`` or ``(ch, n)`` -> ``(n,)`` float32; integer PCM is scaled
    to [-1, 1)."""
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise InvalidSamplesError(f"Expected a 1-D or 2-D signal, got an array of shape {y.shape}.")
    return _mix_down(y.T if y.ndim == 2 and y.shape[0] < y.shape[1] else y)


def _mix_down(y: np.ndarray) -> np.ndarray:
    """``(n,)`` or ``(n, channels)`` -> ``(n,)`` float32, the channels averaged, integer PCM scaled to [-1, 1)."""
    scale = 1.0 / (np.iinfo(y.dtype).max + 1) if np.issubdtype(y.dtype, np.integer) else 1.0
    if y.ndim == 1:
        mono = y.astype(np.float32, copy=False)
    else:
        mono = y[:, 0].astype(np.float32)  # a column loop: numpy's mean over a short axis is slow
        for c in range(1, y.shape[1]):
            mono += y[:, c]
        scale /= y.shape[1]
    return mono * np.float32(scale) if scale != 1.0 else mono


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality band-limited resampling (soxr "HQ"). ``(n,)`` -> ``(round(n * sr_out / sr_in),)``."""
    import soxr

    return soxr.resample(y, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def check_sample_rate(sr: int, name: str = "The clip") -> None:
    """Refuse a rate above ``MAX_SAMPLE_RATE`` (``AudioLimitError``) or below ``MIN_SAMPLE_RATE``
    (``LowSampleRateError``: no speech can be in it); ``name`` starts the message."""
    if sr > MAX_SAMPLE_RATE:
        raise AudioLimitError(f"{name} claims a sample rate of {sr} Hz, above the {MAX_SAMPLE_RATE} Hz limit; "
                              "resample it to 48000 Hz or less.")
    if sr < MIN_SAMPLE_RATE:
        raise LowSampleRateError(f"{name} is sampled at {sr} Hz, far below the {MIN_SAMPLE_RATE} Hz that speech "
                                 "needs.")


def trim_silence(y: np.ndarray, top_db: float = 20) -> tuple[np.ndarray, tuple[int, int]]:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest frame.

    Same rule as ``librosa.effects.trim`` (centred frame RMS) with 1024/256-sample frames: the edges are
    exact to about half a frame (32 ms at 16 kHz), erring on the side of keeping sound. Returns
    ``(y[start:end], (start, end))`` with sample indices into ``y``; an all-zero signal gives ``(y[:0], (0, 0))``.
    """
    y = np.asarray(y)
    if y.size == 0:
        return y, (0, 0)
    power = _frame_power(y)
    if power.max() <= 0:
        return y[:0], (0, 0)
    loud = np.flatnonzero(10 * np.log10(np.maximum(power, 1e-20) / power.max()) > -top_db)
    start = int(loud[0] * _TRIM_HOP)
    end = int(min(y.size, (loud[-1] + 1) * _TRIM_HOP))
    return y[start:end], (start, end)


def _frame_power(y: np.ndarray) -> np.ndarray:
    """The mean power of ``trim_silence``'s centred frames, from one running sum of squares computed a block at a
    time (``_BLOCK_SAMPLES``): the same float64 sums as one cumulative sum over the whole signal, in memory that
    does not grow with it."""
    padded = np.pad(y, _TRIM_FRAME // 2)
    starts = np.arange(1 + y.size // _TRIM_HOP) * _TRIM_HOP  # centred frames, as librosa
    power, carry, step = np.empty(len(starts)), 0.0, _BLOCK_SAMPLES // _TRIM_HOP
    for a in range(0, len(starts), step):
        b = min(a + step, len(starts))
        lo = starts[a]
        squares = np.square(padded[lo:starts[b - 1] + _TRIM_FRAME], dtype=np.float64)
        csum = np.cumsum(np.concatenate([[carry], squares]))
        power[a:b] = (csum[starts[a:b] + _TRIM_FRAME - lo] - csum[starts[a:b] - lo]) / _TRIM_FRAME
        carry = csum[min(b * _TRIM_HOP - lo, len(csum) - 1)]  # the sum up to the next block's first frame
    return power


def normalize_signal(y: np.ndarray, mode: str | None = "peak", *, target_dbfs: float = LOUDNESS_TARGET_DBFS):
    """``"peak"``: scale the largest sample to 1.0; ``"loudness"``: scale the RMS to ``target_dbfs`` and clip
    to [-1, 1]; ``None``: unchanged."""
    if mode is None or y.size == 0:
        return y
    if mode == "peak":
        peak = np.max(np.abs(y))
        return y / peak if peak > 0 else y
    if mode == "loudness":
        rms = np.sqrt(np.mean(np.square(y, dtype=np.float64)))
        return np.clip(y * (10 ** (target_dbfs / 20) / rms), -1.0, 1.0) if rms > 0 else y
    raise ConfigError(f"normalize must be one of {NORMALIZE_MODES}, not {mode!r}.")


# -- decoding ----------------------------------------------------------------------------------------------
def envelope(y, sr: int, n_points: int = 3000):
    """Min/max envelope of ``y`` (n,) for plotting: ``(times, values)``, at most ``n_points`` each.

    Each block contributes its minimum then its maximum, so peaks survive the decimation."""
    y = np.asarray(y, dtype=np.float32)
    block = max(1, int(np.ceil(2 * len(y) / n_points)))
    if block == 1:
        return np.arange(len(y)) / sr, y
    n = len(y) // block * block
    b = y[:n].reshape(-1, block)
    t = (np.arange(b.shape[0]) * block + block / 2) / sr
    return np.repeat(t, 2), np.stack([b.min(1), b.max(1)], axis=1).ravel()


class _NotForSoundfile(Exception):
    """libsndfile does not know the container: try FFmpeg."""


def _open_source(src) -> tuple[str, object]:
    """-> (name for messages, path string or BytesIO). Rejects missing and empty inputs."""
    if isinstance(src, (str, os.PathLike)):
        path = user_path(src)  # a NUL, a name too long, ~ of no such user: one sentence, not an OSError
        if not path.is_file():
            raise UnreadableAudioError(f"Audio file '{printable(path)}' does not exist.")
        if path.stat().st_size == 0:
            raise EmptyAudioError(f"Audio file '{printable(path.name)}' is empty (0 bytes).")
        return printable(path.name), str(path)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif hasattr(src, "read"):
        data = src.read()
        if not isinstance(data, (bytes, bytearray)):
            raise UnreadableAudioError("The file object must be opened in binary mode ('rb').")
    else:
        raise UnreadableAudioError(f"Cannot read audio from a {type(src).__name__}; pass a path, bytes or a "
                                   "binary file object.")
    name = getattr(src, "name", "uploaded audio")
    if len(data) == 0:
        raise EmptyAudioError(f"The audio '{name}' is empty (0 bytes).")
    return Path(str(name)).name, io.BytesIO(data)


def _rewind(data):
    if isinstance(data, io.BytesIO):
        data.seek(0)
    return data


def _check_too_long(duration: float, max_duration_s: float | None, name: str = "The clip"):
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioTooLongError(f"{name} lasts {duration:.0f} s, longer than the {max_duration_s:g} s limit; "
                                "cut it or raise max_duration_s.")


def _check_size(samples: int, max_samples: int, name: str = "The clip"):
    if samples > max_samples:
        raise AudioLimitError(f"{name} holds {samples / 1e6:.1f} million samples (frames x channels), more than "
                              f"the {max_samples / 1e6:.1f} million limit; cut it or mix it down to mono first.")


@dataclass
class _Stream:
    """An opened file: its header (``frames`` None when it does not say), its decoded blocks, how to close it."""
    name: str
    sr: int
    channels: int
    frames: int | None
    blocks: Generator[np.ndarray, None, None]  # (frames, channels) float32 each
    close: Callable[[], None]


def _read(stream: _Stream, max_duration_s: float | None, sr: int | None, max_samples: int):
    """``decode``'s result from an opened stream, which it closes."""
    try:
        _check_header(stream, max_duration_s, max_samples)
        blocks = _bounded(stream, max_duration_s, max_samples)
        if sr is None:
            y = np.concatenate(list(blocks) or [np.zeros((0, max(stream.channels, 1)), np.float32)])
        else:
            y = _mono_resampled(blocks, stream.sr, sr)
    finally:  # the blocks first: a PyAV decoder left suspended past its container's close crashes the process
        stream.blocks.close()
        stream.close()
    if len(y) == 0:
        raise EmptyAudioError(f"'{stream.name}' decodes to zero samples.")
    return y, int(stream.sr if sr is None else sr)


def _check_header(s: _Stream, max_duration_s: float | None, max_samples: int):
    if s.sr <= 0:
        raise UnreadableAudioError(f"'{s.name}' states no valid sample rate; the file is corrupt.")
    if s.channels < 1:
        raise UnreadableAudioError(f"'{s.name}' states no valid number of channels; the file is corrupt.")
    check_sample_rate(s.sr, f"'{s.name}'")
    if s.frames:
        _check_too_long(s.frames / s.sr, max_duration_s, f"'{s.name}'")
        _check_size(s.frames * s.channels, max_samples, f"'{s.name}'")


def _bounded(s: _Stream, max_duration_s: float | None, max_samples: int) -> Iterator[np.ndarray]:
    """``s.blocks``, stopped with the header's error as soon as the decoded size passes a limit."""
    frames = samples = 0
    for block in s.blocks:
        frames, samples = frames + block.shape[0], samples + block.size
        _check_size(samples, max_samples, f"'{s.name}'")
        if max_duration_s is not None and frames > (max_duration_s + 1) * s.sr:  # 1 s for encoder padding
            _check_too_long(frames / s.sr, max_duration_s, f"'{s.name}'")
        yield block


def _mono_resampled(blocks: Iterator[np.ndarray], sr_in: int, sr_out: int) -> np.ndarray:
    """Average each ``(frames, channels)`` block and resample it with a streaming soxr "HQ" resampler: the same
    samples as ``resample(to_mono(whole), sr_in, sr_out)``, holding one block at the input rate."""
    import soxr

    stream = None if sr_in == sr_out else soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality="HQ")
    out = []
    for block in blocks:
        mono = _mix_down(block)
        out.append(mono if stream is None else stream.resample_chunk(mono))
    if stream is not None:
        out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _block_frames(channels: int) -> int:
    return max(1, _BLOCK_SAMPLES // max(channels, 1))


def _soundfile_stream(data, name: str) -> _Stream:
    """libsndfile's view of ``data``; ``_NotForSoundfile`` for a container it does not know, a file of unknown
    length (which libsndfile cannot read in blocks) or, from the blocks, a read error midway."""
    import soundfile as sf

    try:
        f = sf.SoundFile(_rewind(data))
    except Exception as exc:  # noqa: BLE001 -- whatever libsndfile makes of hostile bytes: let FFmpeg try
        raise _NotForSoundfile(str(exc)) from None
    if f.frames >= _SF_UNKNOWN_LENGTH:
        f.close()
        raise _NotForSoundfile("unknown length")

    def blocks():
        try:
            while len(block := f.read(_block_frames(f.channels), dtype="float32", always_2d=True)):
                yield block
        except Exception as exc:  # noqa: BLE001 -- a read error midway: FFmpeg skips a corrupt frame and goes on
            raise _NotForSoundfile(str(exc)) from None

    return _Stream(name, int(f.samplerate), int(f.channels), int(f.frames) or None, blocks(), f.close)


def _av_stream(data, name: str) -> _Stream:
    """FFmpeg's view of ``data``: frames decoded to float at the native rate (channels are mixed and the rate
    converted by the caller, as for libsndfile)."""
    import av

    corrupt = f"'{name}' is not a readable audio file (unknown format or corrupt header)."
    try:
        container = av.open(_rewind(data), mode="r")
    except Exception as exc:  # noqa: BLE001 -- FFmpeg's and PyAV's errors on hostile bytes are not documented
        raise UnreadableAudioError(corrupt) from exc
    try:  # PyAV describes a stream from its header: a 0-bit or 0-channel one raises AttributeError or ValueError
        if not container.streams.audio:
            raise UnreadableAudioError(f"'{name}' holds no audio stream.")
        stream = container.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.channels or 0)
        layout = stream.layout.name if stream.layout else None
        frames = round(container.duration / 1e6 * sr) if container.duration else None  # header, microseconds
    except UnreadableAudioError:
        container.close()
        raise
    except Exception as exc:  # noqa: BLE001
        container.close()
        raise UnreadableAudioError(corrupt) from exc

    def blocks():
        try:
            # Packed float: PyAV's planar to_ndarray() reads past its 8 data pointers (a 7.1 file crashes the
            # process).
            resampler = av.AudioResampler(format="flt", layout=layout, rate=sr)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1, len(out.layout.channels))  # (1, n * ch) -> (n, ch)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1, len(out.layout.channels))
        except Exception as exc:  # noqa: BLE001 -- as above, for the frames
            raise UnreadableAudioError(f"'{name}' is corrupt and could not be decoded.") from exc

    return _Stream(name, sr, channels, frames, blocks(), container.close)


__all__ = ["load_audio", "decode", "prepare", "to_mono", "resample", "check_sample_rate", "trim_silence", "envelope",
           "normalize_signal", "SILENCE_DBFS", "LOUDNESS_TARGET_DBFS", "MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE",
           "MAX_DECODED_SAMPLES"]
