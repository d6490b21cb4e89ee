"""Speaker-grouped 4-fold CV of the scikit-learn and PyTorch models on the 960 shared RAVDESS clips.

    .venv/bin/python benchmarks/bench_sklearn_torch.py                       # defaults of the four models
    .venv/bin/python benchmarks/bench_sklearn_torch.py svm:C=3 random_forest:n_estimators=300 majority
    .venv/bin/python benchmarks/bench_sklearn_torch.py fcnn_torch@rich transformer_torch:augment=True

A run spec is ``model[@feature_set][:key=value,...]``; values are Python literals. Folds: StratifiedGroupKFold
(4 folds, shuffled, seed 0) with the actor as group, so no speaker is in both training and test. Prints UAR
(balanced accuracy) and accuracy, mean +- std over folds, and the seconds one fold's fit takes.
``--speaker-norm`` z-scores every actor's features with that actor's own statistics before the split.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ser_core.features import SpeakerNormalizer, compute_files, get_feature_set  # noqa: E402
from ser_core.models import create_model, get_spec  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("SER_SHARED_RAVDESS", REPO.parent / "shared" / "data" / "ravdess"))
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
DEFAULT_RUNS = ["majority", "svm", "random_forest", "fcnn_torch", "transformer_torch"]


def parse_run(spec: str):
    """``"svm@rich:C=3,gamma=0.01"`` -> ("svm", "rich", {"C": 3, "gamma": 0.01})."""
    head, _, tail = spec.partition(":")
    name, _, fset = head.partition("@")
    params = {}
    for item in filter(None, re.split(r",(?=\s*\w+=)", tail)):  # commas before the next key=
        key, _, value = item.partition("=")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return name, fset or get_spec(name).feature_set, params


def ravdess(root: Path):
    paths = sorted(root.glob("Actor_*/*.[fw][la][av]*"))  # .flac or .wav
    parts = [p.stem.split("-") for p in paths]
    return paths, np.array([EMOTIONS[q[2]] for q in parts]), np.array([q[6] for q in parts])


def speaker_normalise(X, speakers):
    """Z-score each speaker's clips with that speaker's own statistics (labels unused; for a test speaker
    this is transductive, as ``SpeakerNormalizer(unseen="self")``). Sequences: over the non-padding frames,
    padding stays zero."""
    X = X.astype(np.float32, copy=True)
    for s in np.unique(speakers):
        rows = speakers == s
        if X.ndim == 2:
            X[rows] = SpeakerNormalizer(unseen="self").fit(X[rows], speakers[rows]).transform(X[rows],
                                                                                                speakers[rows])
            continue
        block = X[rows]
        valid = np.any(block != 0, axis=2)
        frames = block[valid]
        block[valid] = (frames - frames.mean(0)) / np.maximum(frames.std(0), 1e-8)
        X[rows] = block
    return X


def cross_validate(name, params, X, y, groups, folds: int, seed: int, speaker_norm: bool = False):
    uar, acc, secs = [], [], []
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    if speaker_norm:  # per speaker, so it commutes with the folds: no training statistics reach a test actor
        X = speaker_normalise(X, groups)
    for tr, te in splitter.split(X, y, groups):
        t0 = time.perf_counter()
        model = create_model(name, seed=seed, **params).fit(X[tr], y[tr])
        secs.append(time.perf_counter() - t0)
        pred = model.predict(X[te])
        uar.append(balanced_accuracy_score(y[te], pred))
        acc.append(accuracy_score(y[te], pred))
    return {"uar": float(np.mean(uar)), "uar_std": float(np.std(uar)), "acc": float(np.mean(acc)),
            "acc_std": float(np.std(acc)), "fit_s": float(np.mean(secs))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", default=DEFAULT_RUNS, help="model[@feature_set][:k=v,...]")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=2, help="feature-extraction workers")
    ap.add_argument("--speaker-norm", action="store_true",
                    help="z-score every actor's features with that actor's own statistics first")
    ap.add_argument("--json", type=Path, help="append one JSON line per run to this file")
    args = ap.parse_args(argv)

    paths, y, groups = ravdess(args.data)
    if not len(paths):
        sys.exit(f"No RAVDESS clips under {args.data}.")
    features = {}
    print(f"{len(paths)} clips, {len(set(groups))} actors, {args.folds}-fold StratifiedGroupKFold by actor")
    print(f"{'run':58s} {'UAR':>13s} {'accuracy':>13s} {'fit s':>7s}")
    for spec in args.runs:
        name, fset, params = parse_run(spec)
        if fset not in features:
            features[fset] = compute_files(paths, get_feature_set(fset), n_jobs=args.n_jobs, progress=False)
        params = {"feature_set": fset, **params}
        r = cross_validate(name, params, features[fset], y, groups, args.folds, args.seed, args.speaker_norm)
        print(f"{spec:58s} {r['uar']:.3f}+-{r['uar_std']:.3f} {r['acc']:.3f}+-{r['acc_std']:.3f} "
              f"{r['fit_s']:7.1f}", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"run": spec, "model": name, "params": params,
                                     "speaker_norm": args.speaker_norm, **r}) + "\n")


if __name__ == "__main__":
    main()
