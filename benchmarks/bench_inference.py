"""Latency of predicting one clip with every shipped model together (features shared between models).

    python benchmarks/bench_inference.py [--clip PATH] [--repeat 20] [--json]

Loads all models in trained_models/ (reports each load time), then times Predictor.predict on a ~4 s clip:
the first call (warm-up) and the median of --repeat calls, with per-model feature and model time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clip", default=str(REPO / "samples/ravdess/Actor_01/03-01-05-02-01-01-01.flac"))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    import numpy as np

    from ser_core.audio import load_audio
    from ser_core.inference import Predictor
    from ser_core.saved import shipped_models_dir

    y = load_audio(a.clip, trim=False, normalize=None)
    y = np.resize(y, 4 * 16000)  # a 4 s clip
    t0 = time.perf_counter()
    pred = Predictor.from_dir(None, shipped_models_dir())  # the shipped models, not the ones you trained
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred.predict(y, 16000)
    first_ms = 1000 * (time.perf_counter() - t0)
    totals, per_model = [], {m.name: [] for m in pred.models}
    for _ in range(a.repeat):
        timings = {}
        t0 = time.perf_counter()
        pred.predict(y, 16000, timings=timings)
        totals.append(1000 * (time.perf_counter() - t0))
        for k, v in timings.items():
            per_model[k].append(v["features_ms"] + v["model_ms"])
    out = {
        "models": len(pred.models),
        "feature_sets": sorted({m.model.feature_set for m in pred.models} - {None}),  # an ensemble computes none
        "load_s_total": round(load_s, 2),
        "load_s": {m.name: round(m.load_time_s, 2) for m in pred.models},
        "first_call_ms": round(first_ms, 1),
        "median_total_ms": round(statistics.median(totals), 1),
        "median_ms_per_model (incl. its feature set when first to need it)": {
            k: round(statistics.median(v), 1) for k, v in per_model.items()},
    }
    print(json.dumps(out, indent=None if a.json else 2))


if __name__ == "__main__":
    main()
