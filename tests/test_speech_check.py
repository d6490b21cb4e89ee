"""The speech check: RAVDESS speech passes, silence, noise, tones, music and clicks do not; the CLI and the
timeline use it. The pass rate on all 960 RAVDESS clips is measured once (all pass); here a sample of 80."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_core.cli import main
from ser_core.speech import MIN_SPEECH_S, NOT_SPEECH, speech_check, speech_check_file, speech_cues

REPO = Path(__file__).resolve().parents[1]
SR = 16000
T = np.arange(3 * SR) / SR
RNG = np.random.default_rng(0)


def harmonic_note(f0: float, seconds: float) -> np.ndarray:
    """A steady note: six harmonics, 10 ms attack, 30 ms release."""
    t = np.arange(int(seconds * SR)) / SR
    envelope = np.minimum(1, np.minimum(t / 0.01, (seconds - t) / 0.03))
    return envelope * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 7))


def melody() -> np.ndarray:
    notes = [261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 392.0, 329.63, 261.63, 293.66, 329.63, 261.63]
    gap = np.zeros(int(0.02 * SR))
    return 0.3 * np.concatenate([np.concatenate([harmonic_note(f, 0.25), gap]) for f in notes])


def pink_noise(n: int) -> np.ndarray:
    spectrum = np.fft.rfft(RNG.normal(size=n))
    spectrum[1:] /= np.sqrt(np.fft.rfftfreq(n)[1:])
    spectrum[0] = 0
    y = np.fft.irfft(spectrum, n)
    return 0.3 * y / np.abs(y).max()


def clicks() -> np.ndarray:
    y = np.zeros(3 * SR)
    y[RNG.choice(len(y), 12, replace=False)] = 0.9
    return y


NON_SPEECH = {  # name: (signal, a word of the reason)
    "silence": (np.zeros(3 * SR), "silent"),
    "DC offset": (np.full(3 * SR, 0.5), "constant offset"),
    "DC offset with a faint hum": (0.5 + 1e-4 * np.sin(2 * np.pi * 50 * T), "constant offset"),
    "white noise": (RNG.normal(0, 0.3, 3 * SR), "flat"),
    "pink noise": (pink_noise(3 * SR), "voiced"),
    "clicks": (clicks(), "flat"),
    "440 Hz tone": (0.5 * np.sin(2 * np.pi * 440 * T), "pitch"),
    "C major chord": (0.2 * sum(np.sin(2 * np.pi * f * T) for f in (261.63, 329.63, 392.0)), "pitch"),
    "square wave": (0.5 * np.sign(np.sin(2 * np.pi * 220 * T)), "pitch"),
    "melody of steady notes": (melody(), "pitch"),
    "0.05 s tone": (0.5 * np.sin(2 * np.pi * 200 * T[:int(0.05 * SR)]), f"too short to carry an emotion (at "
                    f"least {MIN_SPEECH_S:g} s"),
}


@pytest.mark.parametrize("name", list(NON_SPEECH))
def test_non_speech_is_rejected_with_a_reason(name):
    y, word = NON_SPEECH[name]
    is_speech, reason = speech_check(y.astype(np.float32), SR)
    assert not is_speech and word in reason, reason


def test_ravdess_speech_passes(shared_ravdess):
    paths = sorted(shared_ravdess.glob("Actor_*/*.flac"))[::12]  # 80 clips: every actor, emotion and sentence
    assert len(paths) == 80
    verdicts = {p.name: speech_check(*sf.read(p, dtype="float32")) for p in paths}
    assert not {name: reason for name, (is_speech, reason) in verdicts.items() if not is_speech}


def test_speech_passes_at_any_rate_level_and_offset(shared_ravdess):
    import soxr

    y, sr = sf.read(next(shared_ravdess.glob("Actor_03/*.flac")), dtype="float32")
    y48 = soxr.resample(y, sr, 48000)
    hum = 0.02 * np.sin(2 * np.pi * 50 * np.arange(len(y)) / sr)
    for signal, rate in [(y48, 48000), (0.01 * y, sr), (y + 0.3, sr), (y + hum, sr),
                         (np.stack([y, y], axis=1), sr)]:
        assert speech_check(signal, rate) == (True, "")
    cues = speech_cues(y, sr)
    assert set(cues) == {"duration_s", "voiced_fraction", "pitch_steadiness", "syllable_modulation", "flatness"}


def test_speech_check_file_decodes_then_checks(shared_ravdess):
    clip = next(shared_ravdess.glob("Actor_01/*.flac"))
    y, is_speech, reason = speech_check_file(clip)
    assert is_speech and reason == "" and y.dtype == np.float32
    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR, np.float32), SR, format="WAV")
    y, is_speech, reason = speech_check_file(buf.getvalue())
    assert y is None and not is_speech and "silent" in reason


@pytest.mark.slow
def test_cli_predict_answers_no_speech_per_file_and_goes_on(shared_ravdess, tmp_path, capsys):
    clip = next(shared_ravdess.glob("Actor_01/*.flac"))
    tone = tmp_path / "tone.wav"
    sf.write(tone, NON_SPEECH["440 Hz tone"][0], SR)
    argv = ["predict", "--model", "svm", "--models-dir", str(REPO / "trained_models"), str(tone), str(clip)]
    assert main(argv + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {"file": str(tone), "model": None, "label": None, "no_speech": True,
                       "reason": speech_check(NON_SPEECH["440 Hz tone"][0], SR)[1]}
    assert rows[1]["file"] == str(clip) and rows[1]["model"] == "svm" and rows[1]["label"]
    assert main(argv) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"{tone}\t{NOT_SPEECH} Its pitch") and text[1].startswith(f"{clip}\tsvm")
