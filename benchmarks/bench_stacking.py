"""The ensemble's pooling against a learned stacker, on the members' saved out-of-fold predictions.

    python benchmarks/bench_stacking.py [--dirs trained_models,/tmp/ser_seeds/seed1,/tmp/ser_seeds/seed2]

For each folder of models (the shipped ones, and e.g. ``bench_seeds.py``'s other seeds), the ensemble's
members' calibrated out-of-fold predictions (clean, phone, noise10) are pooled fold by fold, each fold with a
pooling fitted on the other folds: by ``ser_core.ensemble.fit_pooling`` (what the shipped ensemble does), and
by a class-balanced multinomial logistic regression on the members' concatenated log-probabilities (C = 0.01,
0.1, 1). UAR over all clips of each condition. The stacker did far worse (README, table of techniques).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MEMBERS = "lda,mlp_tf,fcnn_torch,svm,random_forest,cnn,cnn_lstm,lstm,transformer_torch"
CONDITIONS = ("clean", "phone", "noise10")


def uar(y, proba) -> float:
    pred = proba.argmax(1)
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dirs", default=str(REPO / "trained_models"))
    p.add_argument("--members", default=MEMBERS)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    from sklearn.linear_model import LogisticRegression

    from ser_core.calibration import apply_calibration, label_indices
    from ser_core.ensemble import _aligned_oofs, _log, fit_pooling, pool
    from ser_core.evaluation import CHANNEL_PROBA

    members = a.members.split(",")
    print("| models | pooling | " + " | ".join(f"stacker C={c}" for c in (0.01, 0.1, 1)) + " |\n|---|---|---|---|---|")
    for root in a.dirs.split(","):
        cards, oofs = _aligned_oofs(members, Path(root))
        classes = [str(c) for c in oofs[0]["classes"]]
        y, fold = label_indices(oofs[0]["y"], classes), oofs[0]["fold"]
        probas = {c: [apply_calibration(o["proba" if c == "clean" else CHANNEL_PROBA + c], card.get("calibration"))
                      for card, o in zip(cards, oofs)] for c in CONDITIONS}
        logs = {c: np.hstack([_log(p) for p in probas[c]]) for c in CONDITIONS}
        scores = []
        for method in ("pooling", 0.01, 0.1, 1.0):
            out = {c: np.zeros_like(probas["clean"][0]) for c in CONDITIONS}
            for f in np.unique(fold):
                test = fold == f
                if method == "pooling":
                    w, b = fit_pooling([np.concatenate([probas[c][m][~test] for c in CONDITIONS])
                                        for m in range(len(members))], np.tile(y[~test], len(CONDITIONS)))
                    for c in CONDITIONS:
                        out[c][test] = pool([p[test] for p in probas[c]], w, b)
                else:
                    lr = LogisticRegression(C=method, max_iter=3000, class_weight="balanced").fit(
                        np.vstack([logs[c][~test] for c in CONDITIONS]), np.tile(y[~test], len(CONDITIONS)))
                    for c in CONDITIONS:
                        out[c][test] = lr.predict_proba(logs[c][test])
            scores.append(" / ".join(f"{uar(y, out[c]):.3f}" for c in CONDITIONS))
        print(f"| {root} | " + " | ".join(scores) + " |", flush=True)


if __name__ == "__main__":
    main()
