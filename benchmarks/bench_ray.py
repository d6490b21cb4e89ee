"""The same K-fold job with the local executor and on Ray: wall time of each, and Ray's overhead.

    python benchmarks/bench_ray.py [--data ../shared/data/ravdess] [--models svm,mlp_tf,cnn] [--folds 4]
                                   [--cpus 2] [--out benchmarks/results/ray.json]

Features are computed (or read from the cache) first and timed apart, so both executors train on the same cached
arrays. Then every model is cross-validated with the local executor (folds one after another in this process),
then on a local Ray started with ``--cpus`` CPUs (``ser_core.cluster.ray_folds``: one task per fold). Reported:
the wall time of each model under each executor, the time Ray takes to start, each fold's own time (inside the
task), the largest difference between the two executors' fold metrics, the round trip of an empty task, and the
load average before and after (other people's work on the same cores shows there). Nothing is stored.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _run(models, corpus, folds, seed, runner) -> dict:
    from ser_core.evaluation import RunConfig, cross_validate

    out = {}
    for name in models:
        t0 = time.perf_counter()
        res = cross_validate(RunConfig(name, folds=folds, seed=seed), corpus, folds_runner=runner)
        out[name] = {"wall_s": time.perf_counter() - t0, "uar": res.summary["uar"]["mean"],
                     "fold_s": [f["fold_time_s"] for f in res.folds],
                     "metrics": [{k: f["metrics"][k] for k in ("accuracy", "uar", "macro_f1")} for f in res.folds],
                     "nodes": sorted({f.get("node", "local")[:8] for f in res.folds})}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--models", default="svm,mlp_tf,cnn")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ray.json"))
    a = p.parse_args()
    models = [m.strip() for m in a.models.split(",") if m.strip()]

    from ser_core import cluster
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, features_of

    load_before = os.getloadavg()
    corpus = load_corpus(a.data)
    paths = corpus.manifest["path"].tolist()
    t0 = time.perf_counter()
    for fs in {RunConfig(m).resolved()[1] for m in models}:
        features_of(paths, fs, lambda e: None)
    features_s = time.perf_counter() - t0

    local = _run(models, corpus, a.folds, a.seed, None)

    t0 = time.perf_counter()
    ray = cluster.connect(num_cpus=a.cpus)
    ray_start_s = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def noop():
        return None

    ray.get([noop.remote() for _ in range(4)])  # workers started
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(100)])
    noop_ms = 1000 * (time.perf_counter() - t0) / 100
    on_ray = _run(models, corpus, a.folds, a.seed, cluster.ray_folds)
    cluster.disconnect()

    diff = max(abs(fl[k] - fr[k]) for m in models for fl, fr in zip(local[m]["metrics"], on_ray[m]["metrics"])
               for k in fl)
    result = {"command": " ".join(["python", "benchmarks/bench_ray.py", *sys.argv[1:]]), "clips": len(paths),
              "models": models, "folds": a.folds, "ray_cpus": a.cpus, "cores": os.cpu_count(),
              "features_s": features_s, "local": local, "ray": on_ray, "ray_start_s": ray_start_s,
              "noop_task_ms": noop_ms, "max_metric_diff": diff,
              "load_before": load_before, "load_after": os.getloadavg()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))

    print(f"{len(paths)} clips, K={a.folds}, {os.cpu_count()} cores; features {features_s:.1f} s (cache); "
          f"load average before {load_before[0]:.2f}, after {result['load_after'][0]:.2f}")
    print(f"{'model':<10} {'local s':>9} {'ray s':>9} {'speed-up':>9}  fold s (inside the task, ray)")
    for m in models:
        lw, rw = local[m]["wall_s"], on_ray[m]["wall_s"]
        print(f"{m:<10} {lw:9.1f} {rw:9.1f} {lw / rw:9.2f}  {', '.join(f'{s:.1f}' for s in on_ray[m]['fold_s'])}")
    lt, rt = sum(v["wall_s"] for v in local.values()), sum(v["wall_s"] for v in on_ray.values())
    print(f"{'total':<10} {lt:9.1f} {rt:9.1f} {lt / rt:9.2f}  (+ {ray_start_s:.1f} s to start Ray)")
    print(f"empty task round trip {noop_ms:.1f} ms; largest fold-metric difference local vs ray {diff:.1e}")


if __name__ == "__main__":
    main()
