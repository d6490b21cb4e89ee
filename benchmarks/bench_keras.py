"""Speaker-grouped 4-fold CV of the Keras models on the shared RAVDESS clips (960 clips, 16 actors, 8 emotions).

    .venv/bin/python benchmarks/bench_keras.py                       # mlp_tf, cnn, lstm, cnn_lstm
    .venv/bin/python benchmarks/bench_keras.py cnn --params '{"epochs": 30}' --folds 2

Prints UAR (balanced accuracy) and accuracy per fold and their mean, and the mean training time per fold.
Chance / majority baseline UAR is 1/8 = 0.125. Features come from ``ser_core.features`` (cached on disk).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RAVDESS = Path(os.environ.get("SER_SHARED_RAVDESS", Path(__file__).resolve().parents[2] / "shared/data/ravdess"))
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
DEFAULT = ["mlp_tf", "cnn", "lstm", "cnn_lstm"]


def ravdess(root: Path):
    """Paths, emotions and actor ids from RAVDESS file names ``03-01-EE-II-SS-RR-AA``."""
    paths = sorted(p for p in root.glob("Actor_*/*") if p.suffix.lower() in (".wav", ".flac"))
    parts = [p.stem.split("-") for p in paths]
    return [str(p) for p in paths], np.array([EMOTIONS[q[2]] for q in parts]), np.array([q[6] for q in parts])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--params", default="{}", help="JSON overrides applied to every model")
    ap.add_argument("--folds", type=int, default=4, help="how many of the 4 folds to run")
    ap.add_argument("--out", help="append one JSON line per model to this file")
    args = ap.parse_args(argv)

    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    from ser_core.features import compute_files, get_feature_set
    from ser_core.models import create_model, get_spec

    paths, y, actors = ravdess(RAVDESS)
    print(f"{len(paths)} clips, {len(set(actors))} actors, {len(set(y))} emotions", flush=True)
    folds = list(StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=0).split(paths, y, actors))
    features = {}
    params = json.loads(args.params)
    for name in args.models:
        fs = params.get("feature_set", get_spec(name).feature_set)
        if fs not in features:
            t = time.time()
            features[fs] = compute_files(paths, get_feature_set(fs), n_jobs=2, progress=False)
            print(f"features {fs} {features[fs].shape} in {time.time() - t:.0f}s", flush=True)
        X = features[fs]
        uar, acc, secs, epochs = [], [], [], []
        for k, (tr, te) in enumerate(folds[: args.folds]):
            model = create_model(name, **params)
            t = time.time()
            model.fit(X[tr], y[tr])
            secs.append(time.time() - t)
            pred = model.predict(X[te])
            uar.append(balanced_accuracy_score(y[te], pred))
            acc.append(accuracy_score(y[te], pred))
            epochs.append(getattr(model, "epochs_trained_", None))
            print(f"  {name} fold {k}: UAR {uar[-1]:.3f} acc {acc[-1]:.3f} train {secs[-1]:.0f}s "
                  f"({epochs[-1]} epochs, {len(tr)} clips)", flush=True)
        row = {"model": name, "feature_set": fs, "params": model.get_params(), "uar": float(np.mean(uar)),
               "uar_std": float(np.std(uar)), "acc": float(np.mean(acc)), "train_s": float(np.mean(secs)),
               "epochs": epochs, "folds": len(uar)}
        print(f"{name:10s} {fs:16s} UAR {row['uar']:.3f} ± {row['uar_std']:.3f}  acc {row['acc']:.3f}  "
              f"train {row['train_s']:.0f}s/fold", flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
