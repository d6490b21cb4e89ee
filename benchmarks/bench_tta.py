"""Test-time augmentation for the utterance models: does averaging a clip's answer with its speed-perturbed
copies' answers help on unseen speakers? (It did not, consistently: README, table of techniques.)

    python benchmarks/bench_tta.py [--model lda] [--seeds 0,1] [--data DIR]

Speaker-grouped 4-fold CV with the shipped recipe's training copies (expressive_denoised, speed*4, channel*2,
channel:noise*2, channel:phone). Each fold's model scores its test clips alone ("plain"), and averaged (mean
log-probability) with the same clips' first 2 or all 4 speed-perturbed copies (speed 0.85-1.15, the copies the
training folds use; computed for every clip, so the test clips have theirs). UAR, mean over folds, per seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHIPPED_AUG = ("speed*4", "channel*2", "channel:noise*2", "channel:phone")
SPEED_COPIES = ("speed", "speed#2", "speed#3", "speed#4")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lda")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    a = p.parse_args()
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, compute_metrics, fit_fold, fold_data, make_splitter

    corpus = load_corpus(a.data)
    print("| seed | plain | + 2 speed copies | + 4 speed copies |\n|---|---|---|---|")
    for seed in [int(s) for s in a.seeds.split(",")]:
        config = RunConfig(a.model, feature_set="expressive_denoised", folds=4, seed=seed, augment=SHIPPED_AUG)
        _, fs = config.resolved()
        data = fold_data(config, fs, corpus.manifest, lambda e: None)
        uars = {n: [] for n in (1, 3, 5)}
        for train, test in make_splitter("speaker", 4, seed).split(np.zeros(len(data.y)), data.y, data.speakers):
            model, X_test, _, _ = fit_fold(config, fs, data.X[train], data.y[train], data.speakers[train],
                                           {k: x[train] for k, x in data.X_aug.items()}, data.X[test],
                                           data.speakers[test])
            logs = [np.log(np.clip(model.predict_proba(x), 1e-6, 1)) for x in
                    [X_test] + [data.X_aug[k][test] for k in SPEED_COPIES]]
            for n in uars:
                pred = np.asarray(model.classes_)[np.mean(logs[:n], axis=0).argmax(1)]
                uars[n].append(compute_metrics(data.y[test], pred, data.labels)["uar"])
        print(f"| {seed} | " + " | ".join(f"{np.mean(v):.3f}" for v in uars.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
