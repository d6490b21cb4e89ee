"""The same K-fold job with the local executor and on Ray: wall time of each, and Ray's overhead.

    python benchmarks/bench_ray.py [--data ../shared/data/ravdess] [--models svm,mlp_tf,cnn] [--folds 4]
                                   [--cpus 2] [--out benchmarks/results/ray.json]

Features are computed (or read from the cache) first and timed apart, so every executor trains on the same cached
arrays. Then every model is cross-validated three ways: with the local executor (folds one after another in this
process); on a local Ray started with ``--cpus`` CPUs, one model after another (``ser_core.cluster.ray_folds``:
one task per fold); and as a training job of the Ray executor (``jobs.RayExecutor``, its worker's own local Ray
of ``--cpus`` CPUs), which puts every (model, fold) in flight at once. Reported: the wall time of each model
under each, the job's wall time from submit to done (worker start and Ray start included), the time Ray takes to
start, each fold's own time (inside the task), the largest difference between the executors' fold metrics, the
round trip of an empty task, and the load average before and after (other people's work on the same cores shows
there). Nothing is kept: the job writes into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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


def _run_job(models, data, folds, seed, cpus) -> dict:
    """The models as one job of the Ray executor (save off, force on), in a temporary folder: the job's wall time
    and, from its events, each model's wall time (model_start to model_done), fold times and metrics."""
    from ser_core.jobs import Job, RayExecutor

    os.environ["SER_RAY_CPUS"] = str(cpus)  # the worker's local Ray
    with tempfile.TemporaryDirectory() as tmp:
        ex = RayExecutor(Path(tmp) / "jobs")
        t0 = time.perf_counter()
        job_id = ex.submit(Job(data_root=data, models={m: {} for m in models}, folds=folds, seed=seed, force=True,
                               save=False, results_db=str(Path(tmp) / "results.sqlite"),
                               models_dir=str(Path(tmp) / "models")))
        st = ex.wait(job_id)
        wall = time.perf_counter() - t0
        if st["state"] != "done":
            raise SystemExit(f"the Ray job ended {st['state']}: {st.get('error')}\n{ex.log(job_id)}")
        evs = ex.events(job_id)
    out = {}
    for m in models:
        mine = [e for e in evs if e.get("model") == m]
        start = next(e["t"] for e in mine if e["event"] == "model_start")
        done = sorted((e for e in mine if e["event"] == "fold_done"), key=lambda e: e["fold"])
        out[m] = {"wall_s": next(e["t"] for e in mine if e["event"] == "model_done") - start,
                  "fold_s": [e["fold_time_s"] for e in done],
                  "metrics": [{k: e["metrics"][k] for k in ("accuracy", "uar", "macro_f1")} for e in done]}
    return {"wall_s": wall, "models": out}


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
    job = _run_job(models, a.data, a.folds, a.seed, a.cpus)

    diff = max(abs(fl[k] - fr[k]) for other in (on_ray, job["models"]) for m in models
               for fl, fr in zip(local[m]["metrics"], other[m]["metrics"]) for k in fl)
    result = {"command": " ".join(["python", "benchmarks/bench_ray.py", *sys.argv[1:]]), "clips": len(paths),
              "models": models, "folds": a.folds, "ray_cpus": a.cpus, "cores": os.cpu_count(),
              "features_s": features_s, "local": local, "ray": on_ray, "ray_job": job, "ray_start_s": ray_start_s,
              "noop_task_ms": noop_ms, "max_metric_diff": diff,
              "load_before": load_before, "load_after": os.getloadavg()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))

    print(f"{len(paths)} clips, K={a.folds}, {os.cpu_count()} cores; features {features_s:.1f} s (cache); "
          f"load average before {load_before[0]:.2f}, after {result['load_after'][0]:.2f}")
    print(f"{'model':<10} {'local s':>9} {'ray s':>9} {'job s':>9}  fold s (inside the task: ray; job)")
    for m in models:
        jm = job["models"][m]
        print(f"{m:<10} {local[m]['wall_s']:9.1f} {on_ray[m]['wall_s']:9.1f} {jm['wall_s']:9.1f}  "
              f"{', '.join(f'{s:.1f}' for s in on_ray[m]['fold_s'])}; {', '.join(f'{s:.1f}' for s in jm['fold_s'])}")
    lt, rt = sum(v["wall_s"] for v in local.values()), sum(v["wall_s"] for v in on_ray.values())
    print(f"{'total':<10} {lt:9.1f} {rt:9.1f} {job['wall_s']:9.1f}  (ray: + {ray_start_s:.1f} s to start Ray; job: "
          f"submit to done, models at once; speed-up over local {lt / rt:.2f}x and {lt / job['wall_s']:.2f}x)")
    print(f"empty task round trip {noop_ms:.1f} ms; largest fold-metric difference local vs ray {diff:.1e}")


if __name__ == "__main__":
    main()
