"""Speech segments of a long recording, and an emotion for each: silences are skipped, not classified.

    >>> speech_segments(y, 16000)                    # [(0.52, 3.61), (5.10, 8.02), ...] seconds
    >>> segs = predict_segments(y, 16000, predictor)  # one dict per segment, shaped like a timeline window
    >>> segment_rows(segs, predictor)                # `predict --segments --json`: one row per segment and model
    >>> segment_table(segs, threshold)               # one row per segment: start, end, emotion, confidence

The voice activity detector is Silero VAD (the ``silero-vad`` package, MIT licence): a 2 MB TorchScript model
that ships inside the package (nothing is downloaded) and judges every 32 ms of 16 kHz audio. Its speech
probabilities become segments with Silero's own rule (hysteresis, shortest speech, shortest pause, padding,
longest segment), set by ``VADConfig``. Each segment then gets the speech check every prediction gets
(``ser_core.speech``: a cough, music or a tone that the detector let through is marked "not speech" with the
reason) and, when it passes, the predictions of ``Predictor.judge``.

Measured against the fixed 3 s windows the Demo used before, on recordings made of RAVDESS clips with known
labels and pauses between them: ``benchmarks/bench_segments.py``.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

from .audio import load_audio, prepare
from .errors import LowSampleRateError, SilentAudioError
from .inference import describe_prediction
from .speech import MIN_SPEECH_S
from .taxonomy import dimension_reading

SR = 16000  # Silero VAD judges 16 kHz audio in 512-sample (32 ms) chunks
CHUNK = 512
NO_SEGMENTS = "No speech found: the voice activity detector heard no speech in it."


@dataclass(frozen=True)
class VADConfig:
    """How speech probabilities become segments (Silero's ``get_speech_timestamps_from_probs``)."""

    threshold: float = 0.5  # speech probability that starts a segment (Silero's default)
    end_threshold: float = 0.35  # ... and below which it may end (Silero's default: threshold - 0.15)
    min_speech_s: float = MIN_SPEECH_S  # shorter bursts (a cough, a click) carry no emotion (the speech check's rule)
    min_silence_s: float = 0.4  # a pause shorter than this stays inside the segment: pauses between words are
    #                             0.1-0.3 s; an emotion belongs to an utterance, not to a word
    pad_s: float = 0.1  # added to both ends: Silero's onsets are tight, and soft consonants start earlier
    max_segment_s: float = 6.0  # longer speech is split at a pause near the limit (else at it): the models
    #                             learnt on 3-4 s clips, and the sequence models hear only 3.5 s of a segment


DEFAULT_VAD = VADConfig()
_LOCK = threading.Lock()  # the detector is stateful (an LSTM): one recording at a time per process


def load_detector():
    """A fresh Silero model (0.03-0.05 s, 2 MB). It keeps the state of the audio it last heard, so each stream
    (``ser_core.live``) needs its own. Importing ``silero_vad`` sets PyTorch to one thread for the whole
    process; the setting in force before is restored, so the emotion models keep their threads."""
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad

    model = load_silero_vad()
    torch.set_num_threads(threads)
    return model


_silero = functools.lru_cache(maxsize=1)(load_detector)  # the one for whole recordings (under _LOCK)


def speech_probabilities(y, sr: int) -> np.ndarray:
    """Silero's speech probability of each 32 ms chunk of ``y`` (any rate; ``(ceil(n / 512),)`` float32 at
    16 kHz). The recording's peak is scaled to 1.0 first, so the level it was recorded at does not matter (in a
    recording of clips joined by digital silence, a calm clip peaking at -37 dBFS went unheard without it). A
    silent signal (below ``ser_core.audio.SILENCE_DBFS``) gives zeros."""
    import torch

    try:
        y = prepare(y, sr, sr=SR, trim=False, normalize="peak", max_duration_s=None, min_duration_s=0)
    except SilentAudioError:
        return np.zeros(-(-len(y) * SR // sr // CHUNK), dtype=np.float32)
    x = torch.from_numpy(np.pad(y, (0, -len(y) % CHUNK)))
    model = _silero()
    with _LOCK, torch.inference_mode():
        model.reset_states()
        return np.asarray([float(model(chunk, SR)) for chunk in x.split(CHUNK)], dtype=np.float32)


def speech_segments(y, sr: int, vad: VADConfig = DEFAULT_VAD) -> list[tuple[float, float]]:
    """The speech in ``y`` (any rate) as ``[(start_s, end_s), ...]``, in order, silences between them left out
    (``[]`` when there is none)."""
    return segments_from_probabilities(speech_probabilities(y, sr), len(y) / sr, vad)


def segments_from_probabilities(probs: np.ndarray, duration_s: float, vad: VADConfig = DEFAULT_VAD):
    """``speech_segments`` from ``speech_probabilities`` of a recording of ``duration_s`` seconds."""
    from silero_vad import get_speech_timestamps_from_probs

    n = int(round(duration_s * SR))
    spans = get_speech_timestamps_from_probs(
        np.asarray(probs).tolist(), sampling_rate=SR, threshold=vad.threshold, neg_threshold=vad.end_threshold,
        min_speech_duration_ms=1000 * vad.min_speech_s, max_speech_duration_s=vad.max_segment_s,
        min_silence_duration_ms=1000 * vad.min_silence_s, speech_pad_ms=1000 * vad.pad_s, audio_length_samples=n)
    return [(round(s["start"] / SR, 3), round(min(s["end"], n) / SR, 3)) for s in spans]


def predict_segments(y, sr: int, predictor, vad: VADConfig = DEFAULT_VAD) -> list[dict]:
    """Every speech segment of ``y`` with its predictions: ``{"start_s", "end_s", **predictor.judge(segment)}``
    (``speech``, ``models``, ``ensemble`` and, when the speech check fails, ``reason``), the shape of
    ``Predictor.timeline``'s windows. Silences are left out; ``[]`` when there is no speech at all."""
    y = prepare(y, sr, sr=SR, trim=False, normalize=None, max_duration_s=None, min_duration_s=0)
    return [{"start_s": s, "end_s": e, **predictor.judge(y[int(s * SR):int(e * SR)], SR)}
            for s, e in speech_segments(y, SR, vad)]


def predict_file_segments(src, predictor, vad: VADConfig = DEFAULT_VAD, **load_kw) -> tuple[list[dict], str]:
    """``(predict_segments of the file, reason)``: ``src`` (path, bytes or binary file object) decoded as
    ``load_audio(src, trim=False, normalize=None, **load_kw)``. With no segment, ``reason`` says why (a silent
    file, a sample rate too low for a voice, or ``NO_SEGMENTS``), else it is ``""``. Unusable files
    (unreadable, too long, ...) raise as ``load_audio`` does."""
    try:
        y = load_audio(src, trim=False, normalize=None, min_duration_s=0, **load_kw)
    except (SilentAudioError, LowSampleRateError) as exc:  # verdicts on the file, not errors
        return [], str(exc)
    segments = predict_segments(y, SR, predictor, vad)
    return segments, "" if segments else NO_SEGMENTS


def segment_rows(segments: list[dict], predictor, *, mean_row: bool = False) -> list[dict]:
    """What `predict --segments --json` prints: for each segment (``segment``: its index) and each model one
    ``{"segment", "start", "end", "model", "label", "probabilities"}`` (+ ``uncertain``, ``calibrated`` as
    ``Predictor.rows``); a segment that fails the speech check gives one row with ``"model": None, "label":
    None, "no_speech": True, "reason"``. mean_row: add the CV-UAR-weighted mean as model ``"ensemble"`` when
    no saved ensemble is loaded (a saved one has its row already)."""
    mean_row = mean_row and predictor.saved_ensemble() is None
    out = []
    for i, seg in enumerate(segments):
        where = {"segment": i, "start": seg["start_s"], "end": seg["end_s"]}
        if not seg["speech"]:
            out.append({**where, "model": None, "label": None, "no_speech": True, "reason": seg["reason"]})
            continue
        out += [{**where, **row} for row in predictor.rows(seg["models"])]
        if mean_row:
            mean = seg["ensemble"]
            out.append({**where, "model": "ensemble", "label": max(mean, key=mean.get), "probabilities": mean,
                        **dimension_reading(mean)})
    return out


def segment_table(segments: list[dict], threshold: float | None = None) -> list[dict]:
    """One row per segment for a timeline or a CSV: ``{"start", "end", "emotion", "confidence", "uncertain",
    "answer"}`` from the segment's best estimate (``ensemble``) and its "not sure" ``threshold``
    (``describe_prediction``); a segment that is not speech has ``emotion`` None and its ``reason``."""
    out = []
    for seg in segments:
        row = {"start": seg["start_s"], "end": seg["end_s"]}
        if seg["speech"]:
            said = describe_prediction(seg["ensemble"], threshold)
            row.update(emotion=said["label"], confidence=round(said["confidence"], 4), uncertain=said["uncertain"],
                       answer=said["answer"], reason="")
        else:
            row.update(emotion=None, confidence=None, uncertain=None, answer=None, reason=seg["reason"])
        out.append(row)
    return out


__all__ = ["VADConfig", "DEFAULT_VAD", "NO_SEGMENTS", "speech_probabilities", "speech_segments",
           "predict_segments", "predict_file_segments", "segment_rows", "segment_table"]
