"""The shipped recipe over several seeds: how much of each model's CV UAR is the luck of one fold assignment.

    python benchmarks/bench_seeds.py [--seeds 1,2] [--work /tmp/ser_seeds] [--data DIR] [--json-out PATH]

For every seed in ``--seeds`` it runs ``scripts/train_defaults.py --seed N --models-dir WORK/seedN`` (the whole
recipe: speaker-grouped 4-fold CV with that seed's fold assignment and training seed, then the final models and
the ensemble, saved in that folder; the shipped models are left alone), unless that folder already holds a
trained ensemble. Seed 0 is the shipped models themselves (``trained_models/``). It then reads each model's
out-of-fold predictions (``oof.npz``) and card in every folder and prints, per model, the UAR mean ± std over
the 4 folds of each seed and over all folds of all seeds, and the pooled calibrated ECE and share of wrong
answers above 90 % of each seed. About 17 minutes per seed on 2 cores with a warm feature cache.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fold_uars(directory: Path) -> list[float]:
    """Per-fold UAR of a saved model's out-of-fold predictions (its card's calibration never moves the answer)."""
    from ser_core.evaluation import compute_metrics
    from ser_core.saved import load_oof

    oof = load_oof(directory)
    classes = [str(c) for c in oof["classes"]]
    pred = np.asarray(classes)[oof["proba"].argmax(1)]
    return [compute_metrics(oof["y"][oof["fold"] == f], pred[oof["fold"] == f], classes)["uar"]
            for f in np.unique(oof["fold"])]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2", help="seeds to train besides the shipped seed 0")
    p.add_argument("--work", default="/tmp/ser_seeds", help="folder for each seed's models (WORK/seedN)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    from ser_core.saved import read_card

    folders = {0: REPO / "trained_models"}
    for seed in [int(s) for s in a.seeds.split(",") if s.strip()]:
        folder = Path(a.work) / f"seed{seed}"
        if not (folder / "ensemble" / "oof.npz").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(REPO / "scripts" / "train_defaults.py"), a.data, "--seed", str(seed),
                            "--models-dir", str(folder), "--db", str(folder / "runs.sqlite"),
                            "--json-out", str(folder / "train_defaults.json")], check=True)
        folders[seed] = folder
    names = sorted(d.name for d in folders[0].iterdir() if (d / "oof.npz").is_file())
    rows = []
    for name in names:
        per_seed = {s: fold_uars(f / name) for s, f in folders.items() if (f / name / "oof.npz").is_file()}
        cards = {s: read_card(f / name)["calibration"] for s, f in folders.items() if s in per_seed}
        every = [u for v in per_seed.values() for u in v]
        rows.append({"model": name, "seeds": sorted(per_seed), "uar_by_seed": {s: float(np.mean(v)) for s, v in
                                                                                per_seed.items()},
                     "uar_mean": float(np.mean(every)), "uar_std": float(np.std(every)), "folds": len(every),
                     "ece_by_seed": {s: c["ece"] for s, c in cards.items()},
                     "wrong_over_90_by_seed": {s: c["wrong_over_90"] for s, c in cards.items()}})
    rows.sort(key=lambda r: -r["uar_mean"])
    seeds = sorted(folders)
    print("| model | " + " | ".join(f"seed {s}" for s in seeds) + " | all folds | pooled ECE by seed | wrong > 90 % by seed |")
    print("|---|" + "---|" * (len(seeds) + 3))
    for r in rows:
        cells = [f"{r['uar_by_seed'][s]:.3f}" if s in r["uar_by_seed"] else "–" for s in seeds]
        ece = " / ".join(f"{r['ece_by_seed'][s]:.3f}" for s in r["seeds"])
        w90 = " / ".join(f"{100 * r['wrong_over_90_by_seed'][s]:.1f} %" for s in r["seeds"])
        print(f"| `{r['model']}` | " + " | ".join(cells) + f" | {r['uar_mean']:.3f} ± {r['uar_std']:.3f} "
              f"({r['folds']}) | {ece} | {w90} |")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"folders": {s: str(f) for s, f in folders.items()}, "rows": rows},
                                               indent=1))


if __name__ == "__main__":
    main()
