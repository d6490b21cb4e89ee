"""Speech segments (Silero VAD) against the fixed 3 s windows, on long recordings with known labels.

    python benchmarks/bench_segments.py [--data ../shared/data/ravdess] [--actors 06-16] [--clips 12]
                                        [--json-out benchmarks/results/segments.json]

Each recording is one actor's RAVDESS clips (``--clips`` of them, emotions drawn evenly), each scaled to the
same speech level (``LEVEL_DB``), joined by pauses of 0.5-2.5 s, about a minute long: a voice memo of one
speaker with known labels. The truth of a clip is its speech region (``trim_silence`` at
``ser_core.speech.TRIM_DB``) and its emotion. Two conditions: a quiet room (faint noise at -70 dBFS all
through) and ``noise20`` (pink noise 20 dB below the speech over the whole recording, ``ser_core.channels``).

Segmentations compared, every unit judged by the shipped models' best estimate (``Predictor.judge``):
- ``windows``: the Demo's fixed windows before (``Predictor.timeline`` as ``analyse_audio`` calls it: 3 s,
  hop max(1 s, duration / 60)); its boundaries are those of the Demo's "dominant emotion per stretch" table
  (neighbouring speech windows with the same answer merged);
- ``silero``: ``ser_core.segments.predict_segments`` with ``DEFAULT_VAD``;
- ``energy``: a prototype kept here only (frame energy above the recording's noise floor, the same pause,
  length and padding rules), to show what a plain energy detector gives;
- ``oracle``: the true speech regions judged the same way: the ceiling that segmentation alone can reach.

Per method and condition: boundary recall (true clips whose best-overlapping unit starts and ends within
0.3 s of theirs), precision (units that are such a match), segment-level UAR (each clip labelled by the
overlap-weighted mean probabilities of the units overlapping it; a clip no speech unit overlaps counts as
wrong), the share of pause time given an emotion, and seconds per recording. Silero's own speed (x real time)
is timed on the recordings alone. The shipped models were trained on all 16 actors: with them the UARs are on
seen speakers and so optimistic. For unseen speakers, train on some actors and judge the others, e.g.
``train --data ACTORS_01-08 --models lda --feature-set expressive --augment 'speed*4,channel*2' --models-dir M``
then ``--models-dir M --actors 09-16``. The VAD settings were chosen by looking at recordings of actor 05 only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SR = 16000
TOLERANCE_S = 0.3  # a boundary within this of the truth counts as found (the criterion)
PAUSE_S = (0.5, 2.5)  # pauses between clips, drawn uniformly
LEVEL_DB = -26.0  # every clip's speech power (dBFS): one actor's RAVDESS takes differ by up to 37 dB, more than
#                  a voice memo's sentences do; unscaled, the soft ones sat at -12 dB SNR in the noisy condition


def build_recording(paths, labels, rng, condition: str, seed: int):
    """(y, truth): the clips joined by pauses, and ``[(start_s, end_s, label)]`` of their speech regions."""
    from ser_core.audio import load_audio, trim_silence
    from ser_core.channels import apply_channel, speech_power
    from ser_core.speech import TRIM_DB

    parts, truth, t = [], [], 0
    for path, label in zip(paths, labels):
        pause = np.zeros(int(rng.uniform(*PAUSE_S) * SR), dtype=np.float32)
        clip = load_audio(path, trim=False, normalize=None)
        clip = clip * np.sqrt(10 ** (LEVEL_DB / 10) / speech_power(clip, SR))  # one speaker, one level
        _, (s, e) = trim_silence(clip, top_db=TRIM_DB)
        truth.append(((t + len(pause) + s) / SR, (t + len(pause) + e) / SR, label))
        parts += [pause, clip]
        t += len(pause) + len(clip)
    parts.append(np.zeros(int(rng.uniform(*PAUSE_S) * SR), dtype=np.float32))
    y = np.concatenate(parts)
    y = y + rng.normal(0, 10 ** (-70 / 20), len(y)).astype(np.float32)  # a quiet room, never digital silence
    if condition != "quiet":
        y = apply_channel(y, SR, condition, seed=seed)
    return y, truth


def energy_segments(y, vad) -> list[tuple[float, float]]:
    """Prototype: 25 ms frames (10 ms hop) whose energy is 12 dB above the recording's noise floor (its 10th
    percentile frame), pauses shorter than ``vad.min_silence_s`` bridged, bursts under ``vad.min_speech_s``
    dropped, ``vad.pad_s`` added to both ends."""
    hop, win = SR // 100, SR // 40
    n = 1 + max(0, len(y) - win) // hop
    frames = np.lib.stride_tricks.sliding_window_view(y, win)[::hop][:n]
    db = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
    active = db > np.percentile(db, 10) + 12
    edges = np.diff(np.concatenate([[0], active.astype(int), [0]]))
    spans = list(zip(np.flatnonzero(edges == 1) * hop / SR, (np.flatnonzero(edges == -1) * hop + win) / SR))
    merged = []
    for s, e in spans:
        if merged and s - merged[-1][1] < vad.min_silence_s:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    duration = len(y) / SR
    return [(max(0.0, s - vad.pad_s), min(duration, e + vad.pad_s)) for s, e in merged if e - s >= vad.min_speech_s]


def judged(y, spans, predictor) -> list[dict]:
    return [{"start_s": s, "end_s": e, **predictor.judge(y[int(s * SR):int(e * SR)], SR)} for s, e in spans]


def merged_stretches(windows, threshold) -> list[dict]:
    """The Demo's table: neighbouring speech windows with the same answer merged (pauses end a stretch)."""
    from ser_core.inference import describe_prediction

    out = []
    for w in windows:
        if not w["speech"]:
            out.append(None)
            continue
        answer = describe_prediction(w["ensemble"], threshold)["answer"]
        if out and out[-1] is not None and out[-1]["answer"] == answer:
            out[-1]["end_s"] = w["end_s"]
        else:
            out.append({"start_s": w["start_s"], "end_s": w["end_s"], "answer": answer})
    return [s for s in out if s is not None]


def overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def score(truth, units, boundary_units, classes, duration) -> dict:
    """Boundary recall/precision, per-clip predicted label, pause time given an emotion."""
    found, matched_units, predicted = 0, set(), []
    for t0, t1, _ in truth:
        best = max(range(len(boundary_units)), key=lambda i: overlap(t0, t1, *boundary_units[i]), default=None)
        if best is not None and overlap(t0, t1, *boundary_units[best]) > 0 \
                and abs(boundary_units[best][0] - t0) <= TOLERANCE_S and abs(boundary_units[best][1] - t1) <= TOLERANCE_S:
            found += 1
            matched_units.add(best)
        probs, weight = np.zeros(len(classes)), 0.0
        for u in units:
            w = overlap(t0, t1, u["start_s"], u["end_s"])
            if w > 0 and u["speech"]:
                probs += w * np.array([u["ensemble"].get(c, 0.0) for c in classes])
                weight += w
        predicted.append(classes[int(probs.argmax())] if weight > 0 else None)
    pauses = [(0.0, truth[0][0])] + [(a[1], b[0]) for a, b in zip(truth, truth[1:])] + [(truth[-1][1], duration)]
    pause_s = sum(e - s for s, e in pauses)
    claimed = sum(overlap(ps, pe, u["start_s"], u["end_s"]) for ps, pe in pauses for u in _flat(units) if u["speech"])
    return {"found": found, "units": len(boundary_units), "matched_units": len(matched_units),
            "predicted": predicted, "pause_s": pause_s, "pause_claimed_s": claimed}


def _flat(units):
    """Units as disjoint stretches of time (overlapping windows would count a pause twice)."""
    out = []
    for u in sorted(units, key=lambda u: u["start_s"]):
        if out and u["start_s"] < out[-1]["end_s"]:
            if u["speech"]:
                out.append({**u, "start_s": out[-1]["end_s"]})
        else:
            out.append(u)
    return [u for u in out if u["end_s"] > u["start_s"]]


def uar(y_true, y_pred, classes) -> float:
    recalls = [np.mean([p == c for t, p in zip(y_true, y_pred) if t == c]) for c in classes if c in y_true]
    return float(np.mean(recalls))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--actors", default="06-16", help="a range A-B or a comma list")
    p.add_argument("--clips", type=int, default=12, help="clips per recording")
    p.add_argument("--conditions", default="quiet,noise20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models-dir", help="the models to judge with (default: the shipped ones)")
    p.add_argument("--json-out")
    a = p.parse_args()

    from ser_core.corpora import load_corpus
    from ser_core.inference import Predictor
    from ser_core.segments import DEFAULT_VAD, predict_segments, speech_segments

    if "-" in a.actors:
        lo, hi = (int(x) for x in a.actors.split("-"))
        actors = [f"{i:02d}" for i in range(lo, hi + 1)]
    else:
        actors = [f"{int(x):02d}" for x in a.actors.split(",")]
    manifest = load_corpus(a.data).manifest
    t0 = time.perf_counter()
    predictor = Predictor.from_dir(None, a.models_dir)
    load_s = time.perf_counter() - t0
    classes = sorted({c for m in predictor.models for c in m.model.classes_})
    lead = predictor.saved_ensemble()
    threshold = lead.threshold if lead else None
    speech_segments(np.zeros(SR, dtype=np.float32), SR)  # loads Silero once, outside the timings

    rows = {}
    vad_speed = []
    for ci, condition in enumerate(a.conditions.split(",")):
        results = {m: {"truth": [], "pred": [], "found": 0, "clips": 0, "units": 0, "matched_units": 0,
                       "pause_s": 0.0, "pause_claimed_s": 0.0, "seconds": []} for m in
                   ("windows", "silero", "energy", "oracle")}
        for ai, actor in enumerate(actors):
            rng = np.random.default_rng([a.seed, ai, ci])
            clips = manifest[manifest["speaker"].astype(str).str.zfill(2) == actor]
            emotions = sorted(clips["emotion"].unique())
            wanted = [emotions[i % len(emotions)] for i in rng.permutation(a.clips)]
            chosen = [clips[clips["emotion"] == e].sample(1, random_state=int(rng.integers(1 << 31))).iloc[0]
                      for e in wanted]
            y, truth = build_recording([c["path"] for c in chosen], [c["emotion"] for c in chosen], rng, condition,
                                       seed=a.seed * 1000 + ai)
            duration = len(y) / SR
            t = time.perf_counter()
            spans = speech_segments(y, SR)
            vad_speed.append((duration, time.perf_counter() - t))
            for method in results:
                t = time.perf_counter()
                if method == "windows":
                    units = predictor.timeline(y, SR, window_s=3.0, hop_s=max(1.0, round(duration / 60)))
                    bounds = [(s["start_s"], s["end_s"]) for s in merged_stretches(units, threshold)]
                elif method == "silero":
                    units = predict_segments(y, SR, predictor)
                    bounds = [(u["start_s"], u["end_s"]) for u in units]
                else:
                    found = energy_segments(y, DEFAULT_VAD) if method == "energy" else [(s, e) for s, e, _ in truth]
                    units = judged(y, found, predictor)
                    bounds = [(u["start_s"], u["end_s"]) for u in units]
                r, s = results[method], score(truth, units, bounds, classes, duration)
                r["seconds"].append(time.perf_counter() - t)
                r["truth"] += [lab for _, _, lab in truth]
                r["pred"] += s["predicted"]
                for k in ("found", "units", "matched_units", "pause_s", "pause_claimed_s"):
                    r[k] += s[k]
                r["clips"] += len(truth)
            print(f"{condition} actor {actor}: {duration:.0f} s, {len(truth)} clips, silero {len(spans)} segments",
                  file=sys.stderr, flush=True)
        rows[condition] = {m: {
            "boundary_recall": round(r["found"] / r["clips"], 3),
            "boundary_precision": round(r["matched_units"] / r["units"], 3) if r["units"] else None,
            "units": r["units"], "clips": r["clips"],
            "segment_uar": round(uar(r["truth"], r["pred"], classes), 3),
            "clips_without_label": sum(p is None for p in r["pred"]),
            "pause_given_emotion": round(r["pause_claimed_s"] / r["pause_s"], 3),
            "seconds_per_recording": round(statistics.median(r["seconds"]), 2)} for m, r in results.items()}
    total_audio, total_vad = sum(d for d, _ in vad_speed), sum(t for _, t in vad_speed)
    report({"vad": asdict(DEFAULT_VAD), "tolerance_s": TOLERANCE_S, "pause_s": PAUSE_S, "actors": actors,
            "clips_per_recording": a.clips, "seed": a.seed,
            "models": {m.name: m.card.get("created_at") for m in predictor.models},
            "lead": lead.name if lead else None, "models_load_s": round(load_s, 1),
            "silero_x_real_time": round(total_audio / total_vad, 1), "audio_s": round(total_audio, 1),
            "results": rows,
            "note": "the shipped models were trained on RAVDESS actors 01-16: with them, UARs are on seen speakers"},
           a.json_out)


def report(result: dict, json_out: str | None) -> None:
    """Print ``result`` with the machine it ran on as JSON, and write it to ``json_out`` when given."""
    text = json.dumps({**result, "machine": f"{platform.machine()}, {os.cpu_count()} cores"}, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
