"""What moved single-clip accuracy on unseen speakers, and what did not: the README's table of techniques.

    python benchmarks/bench_techniques.py [--data DIR] [--seeds 0,1,2] [--only NAME,...] [--json-out PATH]

Every row is speaker-grouped 4-fold cross-validation (StratifiedGroupKFold by actor) on the shared RAVDESS
clips, repeated for each seed (different fold assignments); UAR mean ± std over all folds of all seeds. Rows
run through ``ser_core.evaluation.cross_validate`` (augmented copies of training clips only), except the two
prototypes marked *, which are small custom loops kept here to document ideas that did not help:

- *gender normalisation*: a gender classifier (logistic regression, trained on the training fold) predicts each
  test clip's gender; features are z-scored with that gender's training-fold statistics;
- *modulation spectrum*: 20 log-mel bands' energy modulation in 0.5-2, 2-4, 4-8, 8-16, 16-32 Hz plus mean and
  spread of their frame-to-frame change (140 values) appended to the expressive set.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

UTTERANCE_AUG = "speed*4,channel*2"
SHIPPED_AUG = "speed*4,channel*2,channel:noise*2,channel:phone"
HALF_AUG = "speed*2,channel,channel:noise,channel:phone"
PLATT = {"probability": "platt"}  # the SVM as these rows were measured (Platt-scaled; its answers follow them)
CONFIGS = [  # (name, model, feature set, augmentation[, model parameters])
    ("svm, rich (the shipped recipe before)", "svm", "rich", "", PLATT),
    ("lda, rich", "lda", "rich", ""),
    ("svm, expressive", "svm", "expressive", "", PLATT),
    ("lda, expressive", "lda", "expressive", ""),
    ("lda, expressive, pitch*2", "lda", "expressive", "pitch*2"),
    ("lda, expressive, vtlp*2", "lda", "expressive", "vtlp*2"),
    ("lda, expressive, speed*2", "lda", "expressive", "speed*2"),
    ("lda, expressive, speed*4", "lda", "expressive", "speed*4"),
    ("lda, expressive, speed*4,pitch*2", "lda", "expressive", "speed*4,pitch*2"),
    ("lda, expressive, channel*2", "lda", "expressive", "channel*2"),
    ("lda, expressive, speed*4,channel*2", "lda", "expressive", UTTERANCE_AUG),
    ("svm, expressive, speed*4,channel*2", "svm", "expressive", UTTERANCE_AUG, PLATT),
    ("fcnn_torch, expressive, speed*4,channel*2", "fcnn_torch", "expressive", UTTERANCE_AUG),
    ("mlp_tf, expressive, speed*4,channel*2", "mlp_tf", "expressive", UTTERANCE_AUG),
    ("* svm, rich, gender normalisation", "svm", "rich", "gender", PLATT),
    ("* lda, expressive + modulation spectrum", "lda", "expressive", "modulation"),
    # the shipped recipe's training copies (scripts/train_defaults.py): batch size of the networks, the SVM's
    # probabilities and copies (names without a comma inside a tag, for --only)
    ("mlp_tf b32, shipped copies", "mlp_tf", "expressive_denoised", SHIPPED_AUG),
    ("mlp_tf b128, shipped copies", "mlp_tf", "expressive_denoised", SHIPPED_AUG, {"batch_size": 128}),
    ("fcnn_torch b32, shipped copies", "fcnn_torch", "expressive_denoised", SHIPPED_AUG),
    ("fcnn_torch b128, shipped copies", "fcnn_torch", "expressive_denoised", SHIPPED_AUG, {"batch_size": 128}),
    ("svm votes, shipped copies", "svm", "expressive_denoised", SHIPPED_AUG),
    ("svm votes, half the copies", "svm", "expressive_denoised", HALF_AUG),
    ("svm platt, half the copies", "svm", "expressive_denoised", HALF_AUG, {"probability": "platt"}),
]


def _prototype(kind, model, fs, corpus, seed, params):
    """Per-fold UARs of a prototype (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ser_core.evaluation import compute_metrics, make_splitter
    from ser_core.features import compute_files, get_feature_set
    from ser_core.models import create_model

    m = corpus.manifest
    paths, y, spk = m["path"].tolist(), m["emotion"].to_numpy(), m["speaker"].astype(str).to_numpy()
    X = compute_files(paths, get_feature_set(fs), progress=False)
    if kind == "modulation":
        from joblib import Parallel, delayed

        X = np.hstack([X, np.stack(Parallel(n_jobs=-1)(delayed(_modulation)(p) for p in paths))])
    gender = m["gender"].to_numpy()
    uars = []
    for tr, te in make_splitter("speaker", 4, seed).split(X, y, spk):
        Xtr, Xte = X[tr].copy(), X[te].copy()
        if kind == "gender":
            guess = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(
                X[tr], gender[tr]).predict(X[te])
            for g in np.unique(gender[tr]):
                rows = gender[tr] == g
                mu, sd = X[tr][rows].mean(0), X[tr][rows].std(0) + 1e-8
                Xtr[rows], Xte[guess == g] = (X[tr][rows] - mu) / sd, (X[te][guess == g] - mu) / sd
        clf = create_model(model, feature_set=fs, seed=seed, **params).fit(Xtr, y[tr])
        uars.append(compute_metrics(y[te], clf.predict(Xte), sorted(set(y)))["uar"])
    return uars


def _modulation(path):
    from ser_core import features as F
    from ser_core.audio import load_audio

    y = load_audio(path)
    mel = F.power_to_db(F.mel_filters(16000, 512, 20) @ np.square(F._spectrogram(y, None, 512, 160)))
    mel = mel - mel.mean(1, keepdims=True)
    n = max(256, mel.shape[1])
    spectrum = np.abs(np.fft.rfft(mel * np.hanning(mel.shape[1]), n=n, axis=1))
    freqs = np.fft.rfftfreq(n, 1 / 100)
    bands = [(0.5, 2), (2, 4), (4, 8), (8, 16), (16, 32)]
    mod = np.log(np.stack([spectrum[:, (freqs >= a) & (freqs < b)].mean(1) for a, b in bands], 1) + 1e-6)
    step = np.diff(mel, axis=1)
    return np.concatenate([mod.ravel(), np.abs(step).mean(1), step.std(1)]).astype(np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", default=None, help="comma-separated model names, row-name substrings, or * for the "
                   "prototypes")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate

    corpus = load_corpus(a.data)
    seeds = [int(s) for s in a.seeds.split(",")]
    wanted = a.only.split(",") if a.only else None
    rows = []
    print("| technique | UAR mean ± std | folds | s |\n|---|---|---|---|")
    for name, model, fs, augment, *params in CONFIGS:
        params = params[0] if params else {}
        if wanted and not any(w == model or (name.startswith("*") if w == "*" else w in name) for w in wanted):
            continue
        t0, uars = time.perf_counter(), []
        for seed in seeds:
            if augment in ("gender", "modulation"):
                uars += _prototype(augment, model, fs, corpus, seed, params)
            else:
                res = cross_validate(RunConfig(model, feature_set=fs, folds=4, seed=seed, augment=augment,
                                               params=params), corpus)
                uars += [f["metrics"]["uar"] for f in res.folds]
        row = {"technique": name, "model": model, "feature_set": fs, "augment": augment, "params": params,
               "seeds": seeds,
               "uar_mean": float(np.mean(uars)), "uar_std": float(np.std(uars)), "folds": len(uars),
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"| {name} | {row['uar_mean']:.3f} ± {row['uar_std']:.3f} | {len(uars)} | {row['seconds']:.0f} |",
              flush=True)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
