"""Does this sound like speech? A cheap check before any emotion is claimed for music, noise, tones or silence.

    >>> is_speech, reason = speech_check(y, sr)     # (False, "Its pitch holds still ... like a tone or music; ...")
    >>> speech_cues(y, sr)                          # the measurements behind the verdict
    >>> y, is_speech, reason = speech_check_file("clip.wav")   # decoded to 16 kHz, then checked

A speaking voice is voiced only part of the time (consonants and pauses are not), its pitch keeps moving
(intonation), its loudness rises and falls with the syllables (2-8 a second), and its spectrum is far from
flat. Hiss fails the last, noise and clicks the first; a tone, a chord or a melody of steady notes holds its
pitch; a steady sound keeps its loudness. Before any cue: a rate below ``MIN_SAMPLE_RATE`` (a 1 Hz header)
holds no voice, a DC offset or rumble is silence once high-passed, and less than ``MIN_SPEECH_S`` of sound is
too short to carry an emotion. Each cue comes from the project's own frame features (YIN voicing and
pitch, frame RMS, spectral flatness); ``SPEECH_RULES`` holds the range speech falls in for each, set with wide
margins around all 960 RAVDESS clips (every one passes; so do RAVDESS clips through the telephone, reverb,
codec, gain and browser channels of ``ser_core.channels`` and in pink noise down to 10 dB SNR).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import load_audio, prepare
from .errors import AudioTooShortError, EmptyAudioError, LowSampleRateError, SilentAudioError
from .features import pitch, rms, spectral_shape

NOT_SPEECH = "This does not sound like speech."  # what the app and the CLI say instead of an emotion
MIN_SPEECH_S = 0.5  # less sound than this (after trimming) is too short to carry an emotion; RAVDESS clips: 1.07 s+
TRIM_DB = 30.0  # leading/trailing frames this far below the loudest are silence (generous: soft onsets stay)
STEADY_SEMITONES = 0.05  # a voiced frame whose F0 moves less than this from the previous one holds its pitch
HIGH_PASS_HZ = 80.0  # below a voice's pitch: DC, 50/60 Hz hum and rumble (which YIN would take as aperiodic)
SYLLABLE_HZ = (2.0, 8.0)  # syllable rate: the band of the energy envelope's modulation that speech fills
_HOP = 160  # 10 ms frames at 16 kHz, as every frame feature here


@dataclass(frozen=True)
class Rule:
    """Speech has ``cue`` in ``[low, high]`` (None: unbounded); outside it, ``reason`` (formatted with the value)."""
    cue: str
    low: float | None
    high: float | None
    reason: str


# Checked in this order; the first broken rule gives the reason. Margins on the 960 RAVDESS clips (16 kHz):
# flatness <= -3.4, voiced_fraction >= 0.18, pitch_steadiness <= 0.62, syllable_modulation >= 0.25. White
# noise has flatness -0.6 (pink -1.1, caught by voicing); a tone, chord or square wave steadiness 1.0, a melody 0.9.
SPEECH_RULES = (
    Rule("flatness", None, -0.8, "Its spectrum is as flat as hiss or static: noise, not a voice."),
    Rule("voiced_fraction", 0.05, None, "Only {:.0%} of it is voiced (speech: 20-90%): noise, clicks or a "
                                       "whisper?"),
    Rule("pitch_steadiness", None, 0.8, "Its pitch holds still {:.0%} of the time, like a tone or music; a "
                                        "speaking voice's pitch keeps moving."),
    Rule("syllable_modulation", 0.1, None, "Its loudness hardly rises and falls (modulation {:.2f}); speech "
                                           "pulses with its syllables."),
)


def speech_cues(y, sr: int) -> dict:
    """The cues of ``SPEECH_RULES`` for a signal ``y`` (``(n,)`` or multichannel, any rate, any level).

    The signal is resampled to 16 kHz, high-passed at ``HIGH_PASS_HZ`` (DC offset, hum), silence beyond
    ``TRIM_DB`` trimmed from both ends. Returns ``{"duration_s", "voiced_fraction", "pitch_steadiness",
    "syllable_modulation", "flatness"}``, each over the trimmed sound. Raises ``SilentAudioError`` (silent, or
    nothing left once the DC offset and rumble are removed), ``AudioTooShortError`` (less than
    ``MIN_SPEECH_S`` of sound), ``LowSampleRateError`` or ``EmptyAudioError``, as ``ser_core.audio.prepare``
    does."""
    y = _high_pass(prepare(y, sr, trim=False, normalize=None, max_duration_s=None, min_duration_s=0))
    try:
        y = prepare(y, 16000, trim=True, top_db=TRIM_DB, max_duration_s=None, min_duration_s=0)
    except SilentAudioError:  # audible before the high-pass: a constant offset or a rumble, nothing else
        raise SilentAudioError(f"It holds only a constant offset (DC) or a rumble below {HIGH_PASS_HZ:g} Hz, "
                               "not a voice.") from None
    if len(y) < MIN_SPEECH_S * 16000:
        raise AudioTooShortError(f"It holds only {len(y) / 16000:.2f} s of sound, too short to carry an emotion "
                                 f"(at least {MIN_SPEECH_S:g} s is needed).")
    f0, voiced, _ = pitch(y=y, sr=16000, hop_length=_HOP)
    semitones = 12 * np.log2(np.nan_to_num(f0, nan=1.0))
    both = voiced[1:] & voiced[:-1]
    steps = np.abs(np.diff(semitones))[both]
    envelope = rms(y=y, hop_length=_HOP)[0].astype(np.float64)
    level = 20 * np.log10(envelope + 1e-9)
    loud = level > level.max() - 40
    return {"duration_s": len(y) / 16000, "voiced_fraction": float(voiced.mean()),
            "pitch_steadiness": float(np.mean(steps < STEADY_SEMITONES)) if steps.size else 0.0,
            "syllable_modulation": _modulation(envelope, 16000 / _HOP, SYLLABLE_HZ),
            "flatness": float(np.median(spectral_shape(y=y, hop_length=_HOP)[3][loud]))}


def _high_pass(y: np.ndarray) -> np.ndarray:
    """``y`` at 16 kHz without what lies below ``HIGH_PASS_HZ`` (DC offset, mains hum, rumble), zero phase."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, HIGH_PASS_HZ, btype="highpass", fs=16000, output="sos")
    padding = 3 * (2 * len(sos) + 1)  # sosfiltfilt's default edge padding needs a longer signal
    return sosfiltfilt(sos, y).astype(np.float32) if len(y) > padding else y - y.mean()


def _modulation(envelope: np.ndarray, rate: float, band: tuple[float, float]) -> float:
    """Standard deviation of ``envelope`` (frames at ``rate`` Hz) within the modulation ``band`` (Hz), relative
    to its mean: 0 for a steady sound, about 0.3-1 for speech."""
    e = envelope / max(float(envelope.mean()), 1e-12)
    power = np.square(np.abs(np.fft.rfft(e - e.mean())))
    freqs = np.fft.rfftfreq(len(e), 1 / rate)
    in_band = (freqs >= band[0]) & (freqs <= band[1])
    return float(np.sqrt(2 * power[in_band].sum()) / len(e))  # Parseval: the band-passed signal's RMS


_NO_SPEECH = (SilentAudioError, AudioTooShortError, LowSampleRateError)  # verdicts on a file, not errors


def speech_check(y, sr: int) -> tuple[bool, str]:
    """``(True, "")`` when ``y`` (a signal at ``sr`` Hz, any level) sounds like speech, else ``(False, reason)``
    with one sentence saying why: a rate too low for a voice, silent (or only a DC offset), too short, or the
    first cue of ``SPEECH_RULES`` outside speech's range. Show ``NOT_SPEECH`` and the reason instead of an
    emotion. A corrupt signal (NaN or infinite samples) raises ``InvalidSamplesError``, an absurd one
    (``ser_core.audio`` limits) ``AudioLimitError``."""
    try:
        cues = speech_cues(y, sr)
    except (*_NO_SPEECH, EmptyAudioError) as exc:  # an empty signal (an empty file is an error)
        return False, str(exc)
    for rule in SPEECH_RULES:
        value = cues[rule.cue]
        if (rule.low is not None and value < rule.low) or (rule.high is not None and value > rule.high):
            return False, rule.reason.format(value)
    return True, ""


def speech_check_file(src, **load_kw) -> tuple[np.ndarray | None, bool, str]:
    """Decode ``src`` (path, bytes or binary file object) as ``load_audio(src, trim=False, normalize=None,
    min_duration_s=0, **load_kw)`` and ``speech_check`` it: ``(y (n,) float32 at 16 kHz, is_speech, reason)``,
    with ``y`` None when the file is silent or its sample rate too low for a voice (not speech either; judged
    from the header, before decoding). Unreadable, empty, too long or too large files raise, as ``load_audio``
    does."""
    try:
        y = load_audio(src, trim=False, normalize=None, min_duration_s=0, **load_kw)
    except _NO_SPEECH as exc:
        return None, False, str(exc)
    return (y, *speech_check(y, 16000))


__all__ = ["NOT_SPEECH", "SPEECH_RULES", "MIN_SPEECH_S", "speech_check", "speech_check_file", "speech_cues"]
