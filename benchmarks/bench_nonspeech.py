"""How often music, noise and babble are taken for speech: the voice activity detector, then the speech check.

    python benchmarks/bench_nonspeech.py [--data ../shared/data/ravdess] [--takes 5] [--seconds 20]
                                         [--json-out benchmarks/results/nonspeech.json]
    python benchmarks/bench_nonspeech.py --speech-clips --json-out benchmarks/results/vad_ravdess.json

Synthetic signals, ``--takes`` of each kind (``--seconds`` long, peak at -6 dBFS, different seeds):
- ``melody``: notes of a harmonic tone (6 partials, 1/k amplitude, 10 ms attack, exponential decay) drawn
  from a major scale, 0.25-0.5 s each at 120 bpm, a rest now and then;
- ``chords_drums``: three-note chords changing every 2 s over a kick (a 60-40 Hz decaying sine) on each beat
  and a hi-hat (10 ms noise bursts, high-passed) between;
- ``vibrato``: a sung-like tone, 5.5 Hz vibrato of 0.5 semitone, notes held 0.6-1.2 s, harmonics falling 6 dB
  per octave: the music nearest a voice;
- ``white``, ``pink``, ``brown`` noise (constant level), ``hum`` (50 Hz mains hum and harmonics at -40 dBFS
  under faint noise);
- ``babble``: six RAVDESS speakers (different actors) talking at once, each clip at a random offset and looped:
  speech, but no single voice to judge; reported apart.

For each signal: the share of its time the detector (Silero, ``ser_core.segments.speech_segments`` on the
whole file; ``ser_core.live.StreamSegmenter`` on it as a 20 ms stream) calls speech; its segments; and those
segments that also pass the speech check (``ser_core.speech.speech_check``), i.e. that the Demo and the live
mode would give an emotion; plus the speech check of the whole file (what an upload of 6 s or less gets).

``--speech-clips``: the other side, every clip of ``--data`` (RAVDESS: 960 single sentences) through the
detector on the whole file: the clips in which it finds no speech segment (and whether the speech check
passes them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SR = 16000
MUSIC = ("melody", "chords_drums", "vibrato")
NOISE = ("white", "pink", "brown", "hum")
SCALE = np.array([0, 2, 4, 5, 7, 9, 11, 12])  # major scale, semitones


def harmonic(f0, n, partials=6, tilt=1.0):
    """(n,) a harmonic tone of fundamental ``f0`` (Hz, scalar or (n,)), partial k at amplitude k ** -tilt."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0, (n,))) / SR
    return sum(np.sin(k * phase) / k ** tilt for k in range(1, partials + 1) if k * np.max(f0) < SR / 2)


def melody(rng, n):
    y, t = np.zeros(n), 0
    while t < n:
        dur = int(rng.choice([0.25, 0.5]) * SR)
        if rng.random() > 0.15:  # a rest now and then
            f0 = 261.6 * 2 ** (rng.choice(SCALE) / 12)
            m = min(dur, n - t)
            env = np.minimum(np.arange(m) / (0.01 * SR), 1) * np.exp(-np.arange(m) / (0.3 * SR))
            y[t:t + m] += env * harmonic(f0, m)
        t += dur
    return y


def chords_drums(rng, n):
    y = np.zeros(n)
    for t in range(0, n, 2 * SR):
        root = 130.8 * 2 ** (rng.choice(SCALE[:6]) / 12)
        m = min(2 * SR, n - t)
        y[t:t + m] += 0.4 * sum(harmonic(root * 2 ** (s / 12), m) for s in (0, 4, 7))
    beat = SR // 2
    k = np.arange(int(0.15 * SR))
    kick = np.sin(2 * np.pi * np.cumsum(np.linspace(60, 40, len(k))) / SR) * np.exp(-k / (0.04 * SR))
    hat = np.diff(rng.standard_normal(int(0.01 * SR) + 1)) * np.exp(-np.arange(int(0.01 * SR)) / 40)
    for t in range(0, n - len(kick), beat):
        y[t:t + len(kick)] += 1.5 * kick
        h = t + beat // 2
        if h + len(hat) < n:
            y[h:h + len(hat)] += 0.5 * hat
    return y


def vibrato(rng, n):
    y, t = np.zeros(n), 0
    while t < n:
        m = min(int(rng.uniform(0.6, 1.2) * SR), n - t)
        base = 220 * 2 ** (rng.choice(SCALE) / 12)
        f0 = base * 2 ** (0.5 / 12 * np.sin(2 * np.pi * 5.5 * np.arange(m) / SR))
        env = np.minimum(np.arange(m) / (0.05 * SR), 1) * np.minimum((m - np.arange(m)) / (0.05 * SR), 1)
        y[t:t + m] = env * harmonic(f0, m, partials=10)
        t += m
    return y


def coloured(rng, n, exponent):
    """Noise whose power falls as f ** -exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[1:] /= f[1:] ** (exponent / 2)
    spec[0] = 0
    return np.fft.irfft(spec, n)


def hum(rng, n):
    t = np.arange(n) / SR
    y = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5))
    return 10 ** (-40 / 20) * y / np.abs(y).max() + 10 ** (-70 / 20) * rng.standard_normal(n)


def babble(rng, n, data: Path):
    from ser_core.audio import load_audio

    actors = rng.choice(sorted(p.name for p in data.glob("Actor_*")), 6, replace=False)
    y = np.zeros(n)
    for a in actors:
        clips = sorted((data / a).glob("*.*"))
        voice = np.concatenate([load_audio(clips[i], trim=True, normalize="peak")
                                for i in rng.choice(len(clips), 8, replace=False)])
        voice = np.roll(np.resize(voice, n), rng.integers(n))
        y += voice / np.sqrt(np.mean(voice ** 2))
    return y


def make(kind: str, rng, n: int, data: Path) -> np.ndarray:
    makers = {"melody": melody, "chords_drums": chords_drums, "vibrato": vibrato, "hum": hum,
              "white": lambda r, m: coloured(r, m, 0), "pink": lambda r, m: coloured(r, m, 1),
              "brown": lambda r, m: coloured(r, m, 2), "babble": lambda r, m: babble(r, m, data)}
    y = makers[kind](rng, n)
    peak = 0.5 if kind != "hum" else np.abs(y).max()
    return (peak * y / np.abs(y).max()).astype(np.float32)


def judge(y: np.ndarray) -> dict:
    from ser_core.live import StreamSegmenter
    from ser_core.segments import speech_segments
    from ser_core.speech import speech_check

    duration = len(y) / SR
    out = {"whole_file_speech_check": bool(speech_check(y, SR)[0])}
    stream = StreamSegmenter()
    spans = [s for i in range(0, len(y), 320) for s in stream.push(y[i:i + 320])]
    ways = {"file": speech_segments(y, SR), "live": [(s.start / SR, s.end / SR) for s in spans if s.final]}
    for way, segs in ways.items():
        passed = [(s, e) for s, e in segs if speech_check(y[int(s * SR):int(e * SR)], SR)[0]]
        out[way] = {"segments": len(segs), "speech_share": round(sum(e - s for s, e in segs) / duration, 3),
                    "segments_given_an_emotion": len(passed),
                    "emotion_share": round(sum(e - s for s, e in passed) / duration, 3)}
    return out


def speech_clips(data: Path) -> dict:
    from ser_core.audio import load_audio
    from ser_core.segments import speech_segments
    from ser_core.speech import speech_check

    paths = sorted(data.glob("Actor_*/*.*"))
    missed = []
    for p in paths:
        y = load_audio(p, trim=False, normalize=None)
        if not speech_segments(y, SR):
            missed.append({"clip": p.name, "passes_speech_check": bool(speech_check(y, SR)[0])})
    return {"clips": len(paths), "no_segment": len(missed), "missed": missed}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--takes", type=int, default=5)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--speech-clips", action="store_true", help="instead: the speech clips the detector misses")
    p.add_argument("--json-out")
    a = p.parse_args()
    t0 = time.time()
    if a.speech_clips:
        return report({"benchmark": "vad_speech_clips", "command": "python " + " ".join(sys.argv),
                       **speech_clips(Path(a.data)), "elapsed_s": round(time.time() - t0, 1)}, a.json_out)
    kinds, per_kind = MUSIC + NOISE + ("babble",), {}
    for kind in kinds:
        takes = [judge(make(kind, np.random.default_rng(seed), int(a.seconds * SR), Path(a.data)))
                 for seed in range(a.takes)]
        row = {"whole_file_passes_speech_check": sum(t["whole_file_speech_check"] for t in takes)}
        for way in ("file", "live"):
            row[way] = {"takes_with_a_segment": sum(t[way]["segments"] > 0 for t in takes),
                        "segments": sum(t[way]["segments"] for t in takes),
                        "speech_share_mean": round(float(np.mean([t[way]["speech_share"] for t in takes])), 3),
                        "segments_given_an_emotion": sum(t[way]["segments_given_an_emotion"] for t in takes),
                        "emotion_share_mean": round(float(np.mean([t[way]["emotion_share"] for t in takes])), 3)}
        per_kind[kind] = row
        print(kind, json.dumps(row), flush=True)
    report({"benchmark": "nonspeech", "command": "python " + " ".join(sys.argv), "takes": a.takes,
            "seconds": a.seconds, "kinds": per_kind, "elapsed_s": round(time.time() - t0, 1)}, a.json_out)


def report(result: dict, json_out: str | None) -> None:
    text = json.dumps({**result, "loadavg": [round(x, 2) for x in os.getloadavg()], "machine": platform.platform()},
                      indent=1)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
