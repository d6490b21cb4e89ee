"""A hyperparameter sweep of the SVM on the shared RAVDESS clips: wall time, and the best UAR found against the
default configuration's on the same folds (the README's "Sweeps").

    python benchmarks/bench_sweep.py [--data DIR] [--trials 20] [--folds 4] [--space SPACE] [--json-out PATH]

The default configuration (the registry's svm: C=10, gamma=scale) is cross-validated first, then the sweep runs
through ``ser_core.sweep.run_sweep`` (Ray Tune on a local Ray with this machine's CPUs, or ``$SER_RAY_CPUS`` of
them; Optuna TPE seeded with --seed; every trial on the same speaker-grouped folds), into a temporary results
store and models folder. The features are computed (or read from the cache) before either is timed. The load
average before and after is recorded: this machine's cores are shared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPACE = "C=loguniform(0.1,100);gamma=choice(scale,auto)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--space", default=SPACE)
    p.add_argument("--json-out", default=str(REPO / "benchmarks" / "results" / "sweep.json"))
    a = p.parse_args()

    from ser_core import cluster
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate, features_of
    from ser_core.leaderboard import Leaderboard
    from ser_core.results import ResultsStore
    from ser_core.saved import user_model_path
    from ser_core.sweep import SweepConfig, run_sweep

    corpus = load_corpus(a.data)
    default = RunConfig("svm", folds=a.folds, seed=a.seed)
    _, fs = default.resolved()
    features_of(corpus.manifest["path"].tolist(), fs, lambda e: None)  # cached before anything is timed
    load_before = os.getloadavg()

    def progress(e):
        if e["event"] == "trial_done":
            print(f"trial {e['trial']}: {e['params']} UAR {e['uar']['mean']:.3f}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "results.sqlite")
        t0 = time.perf_counter()
        base = cross_validate(default, corpus, store=store, use_cache=False)
        default_s = time.perf_counter() - t0
        print(f"default svm: UAR {base.summary['uar']['mean']:.3f} ± {base.summary['uar']['std']:.3f} "
              f"({default_s:.0f} s)", file=sys.stderr)
        config = SweepConfig("svm", a.space, trials=a.trials, folds=a.folds, seed=a.seed)
        t0 = time.perf_counter()
        res = run_sweep(config, corpus, store=store, progress=progress,
                        save_to=partial(user_model_path, "svm", "ravdess", root=Path(tmp) / "models"))
        sweep_s = time.perf_counter() - t0
        cpus = cluster.cluster_info()["cpus"]
        best = res.best  # against the default on the same folds: paired over speakers (ser_core.stats)
        paired = Leaderboard(store, shipped_dir=Path(tmp) / "none").compare(best["run_id"], base.run_id)["uar"] \
            if best else None
    load_after = os.getloadavg()
    out = {
        "command": "python benchmarks/bench_sweep.py " + " ".join(sys.argv[1:]),
        "data": {"corpus": corpus.name, "clips": len(corpus.manifest),
                 "speakers": int(corpus.manifest["speaker"].nunique())},
        "protocol": f"speaker-grouped {a.folds}-fold CV, seed {a.seed}, the same folds for every trial and the default",
        "space": res.space, "trials": a.trials, "ray_cpus": cpus, "cpu_count": os.cpu_count(),
        "default": {"params": {"C": 10.0, "gamma": "scale"}, "uar": base.summary["uar"],
                    "accuracy": base.summary["accuracy"], "wall_s": round(default_s, 1)},
        "best": {k: best[k] for k in ("trial", "params", "uar", "accuracy")} if best else None,
        "uar_gain_over_default": round(best["uar"]["mean"] - base.summary["uar"]["mean"], 4) if best else None,
        "best_minus_default_paired": paired,  # difference of pooled UAR, 95 % CI (speaker bootstrap), permutation p
        "sweep_wall_s": round(sweep_s, 1),  # Ray start, the trials, and the best trained on every clip and saved
        "trials_run": [{k: t[k] for k in ("trial", "params", "state", "uar")} for t in res.trials],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "note": "2 cores shared with other engineers' work; see the load averages",
    }
    Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json_out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("default", "best", "uar_gain_over_default", "best_minus_default_paired",
                                          "sweep_wall_s",
                                          "loadavg_before", "loadavg_after")}, indent=1))


if __name__ == "__main__":
    main()
