"""Seconds per explanation (`ser_core.explain.explain`) of each shipped model on RAVDESS clips.

    python benchmarks/bench_explain.py [--models cnn,cnn_lstm,lstm,transformer_torch,lda,mlp_tf,fcnn_torch,svm,
                                        random_forest,ensemble] [--clips 5] [--json-out benchmarks/results/explain.json]

Loads the models once, explains one clip first (the training reference's features come from the cache, or
are computed then), then times ``--clips`` clips of actor 05 (about 3.5 s each) per model: median and maximum
seconds, and the explained label's top region or feature on the first clip.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = "cnn,cnn_lstm,lstm,transformer_torch,lda,mlp_tf,fcnn_torch,svm,random_forest,ensemble"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--models", default=MODELS)
    p.add_argument("--clips", type=int, default=5)
    p.add_argument("--json-out")
    a = p.parse_args()

    from bench_segments import report
    from ser_core.audio import load_audio
    from ser_core.explain import explain
    from ser_core.inference import Predictor

    names = a.models.split(",")
    clips = sorted((Path(a.data) / "Actor_05").glob("*.flac"))[::60 // a.clips][:a.clips]
    signals = [load_audio(c, trim=False, normalize=None) for c in clips]
    predictor = Predictor.from_dir(names)
    out = {}
    for name in names:
        t = time.perf_counter()
        first = explain(signals[0], 16000, predictor, name)
        warm_s = time.perf_counter() - t
        times = []
        for y in signals:
            t = time.perf_counter()
            explain(y, 16000, predictor, name)
            times.append(time.perf_counter() - t)
        top = first["regions"][0] if first["kind"] == "time_frequency" else (first["features"] or [{}])[0]
        out[name] = {"explained_model": first["explained_model"], "kind": first["kind"],
                     "first_call_s": round(warm_s, 2), "median_s": round(statistics.median(times), 2),
                     "max_s": round(max(times), 2), "example": {"clip": clips[0].name, "label": first["label"],
                                                                 "text": first["text"], "top": top}}
        print(f"{name}: median {out[name]['median_s']} s, max {out[name]['max_s']} s", file=sys.stderr, flush=True)
    report({"clips": [c.name for c in clips], "models": out}, a.json_out)


if __name__ == "__main__":
    main()
