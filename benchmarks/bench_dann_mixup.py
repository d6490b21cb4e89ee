"""Do domain-adversarial training and mixup across corpora help a model on a corpus it never trained on?

    python benchmarks/bench_dann_mixup.py [--seeds 0,1] [--only NAME,...] [--json-out PATH] [--db PATH]

Leave-one-corpus-out (``--split corpus``) on the three shared corpora (RAVDESS, TESS, EmoDB; labels by the
shared taxonomy): each corpus in turn is the test set of an ``fcnn_torch`` trained on the other two, on the
``expressive`` feature set, with and without per-speaker normalisation, for each seed (the network's seed; the
folds are the corpora). Every row is one run of ``ser_core.evaluation.cross_validate`` with its own results
database (cached: a rerun with the same code serves finished runs from it), the same run as

    python -m ser_core train --data /work/shared/data/ravdess --data /work/shared/data/tess \\
        --data /work/shared/data/emodb --split corpus --models fcnn_torch --feature-set expressive \\
        --param fcnn_torch.batch_size=128 [--param fcnn_torch.domain_adversarial=0.3] \\
        [--param fcnn_torch.mixup=0.4] [--speaker-norm] --seed SEED --no-save --json

Per held-out corpus: UAR, ECE (of the cross-fitted temperature-calibrated out-of-fold probabilities) and arousal
UAR (the levels' summed probabilities), as the CLI prints them; "mean" is the mean over the three held-out corpora.
Each cell is the mean over the seeds ± half their range (two seeds: the two values are mean ± that).
batch_size 128 for speed (the registry's 32 took 2.3x as long; one seed, plain: mean UAR 0.331 at 32, 0.355 at 128).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = [Path("/work/shared/data") / c for c in ("ravdess", "tess", "emodb")]
MODEL, FEATURE_SET = "fcnn_torch", "expressive"
BASE = {"batch_size": 128}
TECHNIQUES = [  # (name, parameters beside BASE)
    ("baseline", {}),
    ("dann 0.1", {"domain_adversarial": 0.1}),
    ("dann 0.3", {"domain_adversarial": 0.3}),
    ("mixup 0.2", {"mixup": 0.2}),
    ("mixup 0.4", {"mixup": 0.4}),
    ("dann 0.1 + mixup 0.2", {"domain_adversarial": 0.1, "mixup": 0.2}),
    ("dann 0.3 + mixup 0.4", {"domain_adversarial": 0.3, "mixup": 0.4}),
]
CONDITIONS = [("plain", False), ("speaker-norm", True)]  # (name, per-speaker z-scoring)
METRICS = ("uar", "ece", "arousal_uar")


def command(params: dict, speaker_norm: bool, seed: int) -> str:
    """The CLI command of one run."""
    data = " ".join(f"--data {d}" for d in DATA)
    ps = " ".join(f"--param {MODEL}.{k}={v}" for k, v in params.items())
    return (f"python -m ser_core train {data} --split corpus --models {MODEL} --feature-set {FEATURE_SET} {ps}"
            + (" --speaker-norm" if speaker_norm else "") + f" --seed {seed} --no-save --json")


def run_one(corpus, store, params: dict, speaker_norm: bool, seed: int) -> dict:
    from ser_core.cli import held_out_rows
    from ser_core.evaluation import RunConfig, cross_validate, default_folds

    config = RunConfig(MODEL, params=params, feature_set=FEATURE_SET, split="corpus",
                       folds=default_folds(corpus, "corpus"), seed=seed, speaker_norm=speaker_norm)
    t0 = time.perf_counter()
    res = cross_validate(config, corpus, store=store)
    rows = held_out_rows(res, corpus)
    per = {r["held_out"]: {m: r[m] for m in METRICS} for r in rows}
    return {"run_id": res.run_id, "cached": res.cached, "wall_s": round(time.perf_counter() - t0, 1),
            "train_time_s": res.train_time_s, "per_corpus": per,
            "mean": {m: float(np.mean([p[m] for p in per.values()])) for m in METRICS}}


def aggregate(runs: list[dict], corpora: list[str]) -> list[dict]:
    """One row per (condition, technique): each metric per held-out corpus and their mean, as mean and half-range
    over the seeds, and the paired change of mean UAR against the baseline of the same condition and seed."""
    base = {(r["condition"], r["seed"]): r["mean"]["uar"] for r in runs if r["technique"] == "baseline"}
    rows = []
    for cond, _ in CONDITIONS:
        for tech, _ in TECHNIQUES:
            mine = [r for r in runs if r["condition"] == cond and r["technique"] == tech]
            if not mine:
                continue
            row = {"condition": cond, "technique": tech, "seeds": [r["seed"] for r in mine]}
            for m in METRICS:
                for c in corpora + ["mean"]:
                    v = [r["mean"][m] if c == "mean" else r["per_corpus"][c][m] for r in mine]
                    row[f"{c}_{m}"] = {"mean": float(np.mean(v)), "spread": float(np.ptp(v) / 2), "values": v}
            deltas = [r["mean"]["uar"] - base[(cond, r["seed"])] for r in mine if (cond, r["seed"]) in base]
            row["delta_mean_uar"] = {"mean": float(np.mean(deltas)), "values": deltas} if deltas else None
            rows.append(row)
    return rows


def print_table(rows: list[dict], corpora: list[str]) -> None:
    def cell(x):
        return f"{x['mean']:.3f} ± {x['spread']:.3f}"

    head = (f"{'condition':<13} {'technique':<22} " + " ".join(f"{'UAR ' + c:<15}" for c in corpora)
            + f" {'mean UAR':<15} {'Δ mean UAR':<11} {'mean ECE':<15} {'mean arousal UAR':<16}")
    print(head)
    for r in rows:
        d = r["delta_mean_uar"]
        print(f"{r['condition']:<13} {r['technique']:<22} " + " ".join(f"{cell(r[c + '_uar']):<15}" for c in corpora)
              + f" {cell(r['mean_uar']):<15} {'' if d is None else format(d['mean'], '+.3f'):<11}"
              f" {cell(r['mean_ece']):<15} {cell(r['mean_arousal_uar']):<16}")
    print("\nper held-out corpus, ECE and arousal UAR:")
    for r in rows:
        print(f"{r['condition']:<13} {r['technique']:<22} " + "  ".join(
            f"{c}: ECE {cell(r[c + '_ece'])}, arousal {cell(r[c + '_arousal_uar'])}" for c in corpora))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--only", default="", help="comma-separated technique names (default: all)")
    p.add_argument("--conditions", default="", help="comma-separated: plain, speaker-norm (default: both)")
    p.add_argument("--db", default="/tmp/ser_bench_dann_mixup.sqlite", help="this benchmark's results database")
    p.add_argument("--json-out", default=str(REPO / "benchmarks" / "results" / "dann_mixup.json"))
    a = p.parse_args(argv)

    from ser_core.corpora import load_corpora
    from ser_core.results import ResultsStore

    corpus = load_corpora([str(d) for d in DATA])
    store = ResultsStore(a.db)
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    conds = {s.strip() for s in a.conditions.split(",") if s.strip()}
    runs, t0 = [], time.perf_counter()
    for cond, norm in CONDITIONS:
        if conds and cond not in conds:
            continue
        for seed in (int(s) for s in a.seeds.split(",")):
            for tech, extra in TECHNIQUES:
                if only and tech not in only:
                    continue
                params = {**BASE, **extra}
                r = run_one(corpus, store, params, norm, seed)
                runs.append({"condition": cond, "technique": tech, "seed": seed, "params": params,
                             "command": command(params, norm, seed), **r})
                print(f"{cond:<13} {tech:<22} seed {seed}: mean UAR {r['mean']['uar']:.3f} "
                      + " ".join(f"{c} {v['uar']:.3f}" for c, v in r["per_corpus"].items())
                      + f" ({r['wall_s']:.0f} s{', cached' if r['cached'] else ''})", file=sys.stderr, flush=True)
    corpora = list(corpus.corpora)
    rows = aggregate(runs, corpora)
    print_table(rows, corpora)
    out = {"description": __doc__.split("\n")[0], "model": MODEL, "feature_set": FEATURE_SET, "base_params": BASE,
           "corpora": corpora, "split": "corpus (leave-one-corpus-out)", "spread": "half the range over the seeds",
           "wall_s": round(time.perf_counter() - t0, 1), "table": rows, "runs": runs}
    Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json_out).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {a.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
