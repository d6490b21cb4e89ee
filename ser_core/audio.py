"""Decode any audio to a mono float32 signal at 16 kHz, trim silence, normalise and validate it.

``load_audio(src)`` reads a path, ``bytes`` or a binary file object: WAV/FLAC/OGG/MP3 through libsndfile
(``soundfile``), anything else (m4a/AAC, webm/Opus, ...) through FFmpeg (``av``). ``prepare(y, sr_in)`` runs
the same pipeline on a signal already in memory (microphone input, sliding windows).

Pipeline: mix to mono -> validate (empty, NaN/inf, too long) -> resample with soxr (high quality) -> reject
an all-silent clip -> trim leading/trailing silence -> check the minimum duration -> normalise.

>>> y = load_audio("clip.flac")            # (n,) float32 at 16 kHz, peak 1.0
>>> y, (start, end) = trim_silence(y, top_db=20)
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .errors import (AudioTooLongError, ConfigError, AudioTooShortError, EmptyAudioError, InvalidSamplesError,
                     SilentAudioError, UnreadableAudioError)

SILENCE_DBFS = -60.0  # a clip whose peak stays below this is "all silent" (a muted mic, digital silence)
LOUDNESS_TARGET_DBFS = -23.0  # RMS level for normalize="loudness" (the EBU R128 programme level)
NORMALIZE_MODES = ("peak", "loudness", None)
_TRIM_FRAME, _TRIM_HOP = 1024, 256  # frame RMS for trimming: 64 ms / 16 ms at 16 kHz


def load_audio(src, *, sr: int = 16000, trim: bool = True, top_db: float = 20, normalize: str | None = "peak",
               max_duration_s: float | None = 600.0, min_duration_s: float = 0.05) -> np.ndarray:
    """Decode ``src`` (path, bytes or binary file object) to a prepared mono signal.

    Returns ``(n,)`` float32 at ``sr`` Hz. The duration limit is checked from the header before decoding
    whenever the container states its length. Raises the ``AudioError`` subclasses of ``ser_core.errors``.
    """
    y, sr_in = decode(src, max_duration_s=max_duration_s)
    return prepare(y, sr_in, sr=sr, trim=trim, top_db=top_db, normalize=normalize,
                   max_duration_s=max_duration_s, min_duration_s=min_duration_s)


def decode(src, *, max_duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode without any processing: returns ``((n, channels) float32, native_sr)``."""
    name, data = _open_source(src)
    try:
        return _decode_soundfile(data, name, max_duration_s)
    except _NotForSoundfile:
        return _decode_av(data, name, max_duration_s)


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
    scale = 1.0 / (np.iinfo(y.dtype).max + 1) if np.issubdtype(y.dtype, np.integer) else 1.0
    if y.ndim == 1:
        mono = y.astype(np.float32, copy=False)
    else:
        if y.shape[0] < y.shape[1]:
            y = y.T  # (samples, channels)
        mono = y[:, 0].astype(np.float32)  # a column loop: numpy's mean over a short axis is slow
        for c in range(1, y.shape[1]):
            mono += y[:, c]
        scale /= y.shape[1]
    return mono * np.float32(scale) if scale != 1.0 else mono


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality band-limited resampling (soxr "HQ"). ``(n,)`` -> ``(round(n * sr_out / sr_in),)``."""
    import soxr

    return soxr.resample(y, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def trim_silence(y: np.ndarray, top_db: float = 20) -> tuple[np.ndarray, tuple[int, int]]:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest frame.

    Same rule as ``librosa.effects.trim`` (centred frame RMS) with 1024/256-sample frames: the edges are
    exact to about half a frame (32 ms at 16 kHz), erring on the side of keeping sound. Returns
    ``(y[start:end], (start, end))`` with sample indices into ``y``; an all-zero signal gives ``(y[:0], (0, 0))``.
    """
    y = np.asarray(y)
    if y.size == 0:
        return y, (0, 0)
    padded = np.pad(y, _TRIM_FRAME // 2)
    csum = np.concatenate([[0.0], np.cumsum(np.square(padded, dtype=np.float64))])
    starts = np.arange(1 + y.size // _TRIM_HOP) * _TRIM_HOP  # centred frames, as librosa
    power = (csum[starts + _TRIM_FRAME] - csum[starts]) / _TRIM_FRAME
    if power.max() <= 0:
        return y[:0], (0, 0)
    loud = np.flatnonzero(10 * np.log10(np.maximum(power, 1e-20) / power.max()) > -top_db)
    start = int(loud[0] * _TRIM_HOP)
    end = int(min(y.size, (loud[-1] + 1) * _TRIM_HOP))
    return y[start:end], (start, end)


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
class _NotForSoundfile(Exception):
    """libsndfile does not know the container: try FFmpeg."""


def _open_source(src) -> tuple[str, object]:
    """-> (name for messages, path string or BytesIO). Rejects missing and empty inputs."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise UnreadableAudioError(f"Audio file '{path}' does not exist.")
        if path.stat().st_size == 0:
            raise EmptyAudioError(f"Audio file '{path.name}' is empty (0 bytes).")
        return path.name, str(path)
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


def _decode_soundfile(data, name: str, max_duration_s):
    import soundfile as sf

    try:
        with sf.SoundFile(_rewind(data)) as f:
            if f.frames > 0 and f.samplerate > 0:  # the header's length: refuse before decoding
                _check_too_long(f.frames / f.samplerate, max_duration_s, f"'{name}'")
            y = f.read(dtype="float32", always_2d=True)
            sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise _NotForSoundfile(str(exc)) from None
    if y.shape[0] == 0:
        raise EmptyAudioError(f"'{name}' decodes to zero samples.")
    return y, int(sr)


def _decode_av(data, name: str, max_duration_s):
    import av

    try:
        container = av.open(_rewind(data), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UnreadableAudioError(f"'{name}' is not a readable audio file (unknown format or corrupt "
                                   "header).") from exc
    with container:
        if not container.streams.audio:
            raise UnreadableAudioError(f"'{name}' holds no audio stream.")
        stream = container.streams.audio[0]
        if container.duration:  # microseconds, from the container header
            _check_too_long(container.duration / 1e6, max_duration_s, f"'{name}'")
        sr = stream.rate or stream.codec_context.sample_rate
        # Decode to planar float at the native rate; channels are mixed by prepare(), resampling by soxr.
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name if stream.layout else None,
                                      rate=sr)
        chunks, n = [], 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())  # (channels, samples)
                    n += chunks[-1].shape[1]
                    if max_duration_s is not None and n > (max_duration_s + 1) * sr:
                        _check_too_long(n / sr, max_duration_s, f"'{name}'")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.FFmpegError as exc:
            raise UnreadableAudioError(f"'{name}' is corrupt and could not be decoded.") from exc
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise EmptyAudioError(f"'{name}' decodes to zero samples.")
    return np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False), int(sr)


__all__ = ["load_audio", "decode", "prepare", "to_mono", "resample", "trim_silence", "normalize_signal",
           "SILENCE_DBFS", "LOUDNESS_TARGET_DBFS"]
