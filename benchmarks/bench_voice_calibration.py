"""What calibrating a speaker-adaptive model to a new voice earns, measured the way a user uses it.

    python benchmarks/bench_voice_calibration.py --data ../shared/data/ravdess [--data ... --split corpus]
        [--models svm,lda] [--feature-set rich] [--folds 4] [--seed 0] [--reps 5] [--ks 0,5,10,20]
        [--priors 0,5,10,20,40] [--out benchmarks/results/voice_calibration.json]

Protocol: speaker-grouped K-fold CV (``make_splitter("speaker", K, seed)``); the test speakers are never seen in
training. In each fold, for each model family:

* adaptive: trained as the shipped ``adaptive_*`` models are (``_train_final`` with ``speaker_norm``): every
  training speaker z-scored with its own statistics (``SpeakerNormalizer().fit``), the normaliser's global
  mean, global scale and within-speaker scale kept, as ``speaker_norm.npz`` keeps them;
* plain: the same family trained on the un-normalised features (the shipped single-clip model).

Then for every test speaker, every k and every repetition (``--reps`` draws with different seeds) k of that
speaker's clips are drawn at random (any moods) and the speaker-adaptive model is calibrated exactly as
``Predictor.calibrate`` does: ``SpeakerNormalizer.from_stats(mean, scale, within_scale, unseen="global",
prior_clips=P)`` plus ``add_speaker`` with those k clips' features. k = 0 is the uncalibrated model (the
training data's global statistics). Only the speaker's REMAINING clips are scored, by the calibrated adaptive
model and by the plain model (the same clips, so the gain is paired). Predictions are the argmax of
``predict_proba``, as ``Predictor`` (temperature scaling does not change the argmax).

UAR is computed per (fold, repetition) over the fold's test speakers' remaining clips; tables give mean ± std
over folds x repetitions, and the gain is the paired difference to the plain model on the same clips.

Settings tried (all on this CV only; a chosen one is therefore slightly optimistic): the spread prior
``prior_clips`` P in ``--priors`` (the shipped value is ``ser_core.saved.CALIBRATION_PRIOR_CLIPS``), and
"mean only" (the speaker's mean from the k clips, its scale the training speakers' within-speaker scale, i.e.
P = infinity). "all clips" is the transductive CV number (each test speaker normalised by all its clips, the
same clips scored), a ceiling rather than something a user gets.

Writes a JSON (--out) and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

USER = "__user__"
MEAN_ONLY = "mean_only"


def setting_name(prior) -> str:
    return MEAN_ONLY if prior == MEAN_ONLY else f"prior={prior}"


def calibrated(train_norm, X_cal, prior):
    """A ``SpeakerNormalizer`` as ``Predictor.calibrate`` builds it from a saved model's statistics and the
    user's clips ``X_cal`` (None: uncalibrated). ``prior``: ``prior_clips``, or MEAN_ONLY (scale = the training
    speakers' within-speaker scale)."""
    from ser_core.features import SpeakerNormalizer

    norm = SpeakerNormalizer.from_stats(train_norm.global_mean_, train_norm.global_scale_, train_norm.within_scale_,
                                        unseen="global", prior_clips=0 if prior == MEAN_ONLY else int(prior))
    if X_cal is None:
        return norm
    norm.add_speaker(USER, X_cal)
    if prior == MEAN_ONLY:
        norm.stats_[USER] = (norm.stats_[USER][0], norm.within_scale_)
    return norm


def uar(y_true, y_pred, labels) -> float:
    from ser_core.evaluation import compute_metrics

    return float(compute_metrics(y_true, y_pred, labels)["uar"])


def predict(model, X):
    return np.asarray(model.classes_)[model.predict_proba(X).argmax(1)]


def draws(te, speakers, spk_index, k, rep, seed):
    """``{speaker: (calibration rows, remaining rows)}`` for the test rows ``te``; the draw depends only on
    (seed, speaker, k, rep), so every model and setting sees the same clips."""
    out = {}
    for s in sorted(set(speakers[te])):
        rows = te[speakers[te] == s]
        if k == 0:
            out[s] = (rows[:0], rows)
            continue
        rng = np.random.default_rng([seed, spk_index[s], k, rep])
        cal = np.sort(rng.choice(rows, size=k, replace=False))
        out[s] = (cal, np.setdiff1d(rows, cal))
    return out


def run_model(name, a, X, y, speakers, labels, splits, settings, ks, progress) -> dict:
    from ser_core.evaluation import speaker_normalise
    from ser_core.features import SpeakerNormalizer
    from ser_core.models import create_model

    spk_index = {s: i for i, s in enumerate(sorted(set(speakers)))}
    # records[(setting or "plain", k)] -> list of (fold, rep, uar, gain over plain); per_speaker likewise
    records: dict = {}
    per_speaker: dict = {}
    transductive = []
    for f, (tr, te) in enumerate(splits):
        t0 = time.perf_counter()
        norm = SpeakerNormalizer().fit(X[tr], speakers[tr])  # as _train_final: training speakers by their own stats
        adaptive = create_model(name, feature_set=a.feature_set, seed=a.seed).fit(
            norm.transform(X[tr], speakers[tr]), y[tr])
        plain = create_model(name, feature_set=a.feature_set, seed=a.seed).fit(X[tr], y[tr])
        # the transductive CV number (cross_validate with speaker_norm): each test speaker by all its clips
        _, Xte_self, _ = speaker_normalise(X[tr], speakers[tr], X[te], speakers[te])
        transductive.append(uar(y[te], predict(adaptive, Xte_self), labels))
        for k in ks:
            for rep in range(a.reps if k else 1):  # k = 0 draws nothing: one repetition
                d = draws(te, speakers, spk_index, k, rep, a.seed)
                rem = np.concatenate([r for _, r in d.values()])
                rem_spk = speakers[rem]
                y_plain = predict(plain, X[rem])
                u_plain = uar(y[rem], y_plain, labels)
                records.setdefault(("plain", k), []).append((f, rep, u_plain, 0.0))
                for prior in (settings if k else [settings[0]]):
                    X_norm = np.empty_like(X[rem])
                    for s, (cal, r) in d.items():
                        cn = calibrated(norm, X[cal] if k else None, prior)
                        X_norm[rem_spk == s] = cn.transform(X[r], [USER] * len(r))
                    y_ad = predict(adaptive, X_norm)
                    key = setting_name(prior) if k else "uncalibrated"
                    u = uar(y[rem], y_ad, labels)
                    records.setdefault((key, k), []).append((f, rep, u, u - u_plain))
                    for s in d:
                        m = rem_spk == s
                        per_speaker.setdefault(s, {}).setdefault(f"{key}@{k}", []).append(
                            uar(y[rem][m], y_ad[m], labels) - uar(y[rem][m], y_plain[m], labels))
        progress(f"{name}: fold {f + 1}/{len(splits)} done in {time.perf_counter() - t0:.1f} s "
                 f"(test speakers {', '.join(sorted(set(speakers[te])))})")

    def agg(rows):
        u, g = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
        return {"uar_mean": round(float(u.mean()), 4), "uar_std": round(float(u.std()), 4),
                "gain_mean": round(float(g.mean()), 4), "gain_std": round(float(g.std()), 4), "n": len(rows),
                "gain_positive": int((g > 0).sum())}

    curves: dict = {}
    shipped = setting_name(settings[0])
    for (key, k), rows in records.items():
        entry = agg(rows)
        if key == "plain":
            entry = {kk: v for kk, v in entry.items() if not kk.startswith("gain")}
        elif k:  # paired difference to the shipped setting on the same draws
            d = np.array([r[2] for r in rows]) - np.array([r[2] for r in records[(shipped, k)]])
            entry.update(vs_shipped_mean=round(float(d.mean()), 4), vs_shipped_std=round(float(d.std()), 4),
                         vs_shipped_positive=int((d > 0).sum()), vs_shipped_negative=int((d < 0).sum()))
        curves.setdefault(key, {})[str(k)] = entry
    speakers_better = {key: int(sum(np.mean(v[key]) > 0 for v in per_speaker.values()))
                       for key in next(iter(per_speaker.values()))}
    return {"curves": curves,
            "transductive_all_clips": {"uar_mean": round(float(np.mean(transductive)), 4),
                                       "uar_std": round(float(np.std(transductive)), 4), "n": len(transductive)},
            "per_speaker_gain": {s: {key: round(float(np.mean(v)), 4) for key, v in d.items()}
                                 for s, d in sorted(per_speaker.items())},
            "speakers_better_than_plain": speakers_better}


def pick_best(curves, settings, ks_cal) -> dict:
    """The setting with the highest mean UAR over the calibrated k (the shipped one wins ties)."""
    scores = {setting_name(p): float(np.mean([curves[setting_name(p)][str(k)]["uar_mean"] for k in ks_cal]))
              for p in settings}
    best = max(scores, key=lambda s: (round(scores[s], 4), s == setting_name(settings[0])))
    return {"setting": best, "mean_uar_over_k": round(scores[best], 4),
            "shipped_mean_uar_over_k": round(scores[setting_name(settings[0])], 4), "scores": scores}


def fmt(e, gain=True) -> str:
    s = f"{e['uar_mean']:.3f} ± {e['uar_std']:.3f}"
    if gain and "gain_mean" in e:
        s += f" ({e['gain_mean']:+.3f} ± {e['gain_std']:.3f})"
    return s


def markdown(result) -> str:
    ks = result["ks"]
    ks_cal = [k for k in ks if k]
    shipped = setting_name(result["shipped_prior_clips"])
    lines = [f"Voice calibration, {result['protocol_short']}", "",
             f"UAR mean ± std over folds x repetitions on each test speaker's remaining clips; in brackets the "
             f"paired gain over the same family's plain model on the same clips. Shipped setting: {shipped}.", "",
             "| model | " + " | ".join("uncalibrated (k=0)" if k == 0 else f"k={k}" for k in ks)
             + " | all clips (transductive) |",
             "|---|" + "---|" * (len(ks) + 1)]
    for name, r in result["models"].items():
        c = r["curves"]
        lines.append(f"| {name} plain | " + " | ".join(fmt(c["plain"][str(k)]) for k in ks) + " | |")
        cells = [fmt(c["uncalibrated"]["0"]) if k == 0 else fmt(c[shipped][str(k)]) for k in ks]
        t = r["transductive_all_clips"]
        lines.append(f"| adaptive {name}, {shipped} | " + " | ".join(cells)
                     + f" | {t['uar_mean']:.3f} ± {t['uar_std']:.3f} |")
        best = r["best"]["setting"]
        if best != shipped:
            lines.append(f"| adaptive {name}, {best} (best) | {fmt(c['uncalibrated']['0'])} | "
                         + " | ".join(fmt(c[best][str(k)]) for k in ks_cal) + " | |")
    lines += ["", "All settings tried (UAR, gain over plain on the same clips in brackets):", "",
              "| model | setting | " + " | ".join(f"k={k}" for k in ks_cal) + " | speakers better than plain "
              f"(of {result['n_speakers']}, k={'/'.join(map(str, ks_cal))}) | vs shipped, paired "
              f"(k={'/'.join(map(str, ks_cal))}) |",
              "|---|---|" + "---|" * (len(ks_cal) + 2)]
    for name, r in result["models"].items():
        c = r["curves"]
        for p in result["settings"]:
            sname = setting_name(p)
            mark = " (shipped)" if sname == shipped else ""
            mark += " **best**" if sname == r["best"]["setting"] else ""
            better = "/".join(str(r["speakers_better_than_plain"][f"{sname}@{k}"]) for k in ks_cal)
            vs = " / ".join(f"{c[sname][str(k)]['vs_shipped_mean']:+.3f}" for k in ks_cal)
            lines.append(f"| {name} | {sname}{mark} | " + " | ".join(fmt(c[sname][str(k)]) for k in ks_cal)
                         + f" | {better} | {vs} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", action="append", default=None,
                   help="corpus folder (repeat for several corpora read as one; default: the shared RAVDESS)")
    p.add_argument("--split", default="speaker", choices=["speaker", "corpus"],
                   help="speaker: speaker-grouped K-fold; corpus: each corpus held out in turn (its voices are "
                        "strangers from another studio, as a user's is)")
    p.add_argument("--models", default="svm,lda")
    p.add_argument("--feature-set", default="rich")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=5, help="random draws of the calibration clips per speaker and k")
    p.add_argument("--ks", default="0,5,10,20", help="numbers of calibration clips (0: uncalibrated)")
    p.add_argument("--priors", default="0,5,10,20,40", help="prior_clips values tried besides the shipped one")
    p.add_argument("--jobs", type=int, default=1, help="feature workers for cache misses")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "voice_calibration.json"))
    a = p.parse_args(argv)

    from ser_core.corpora import load_corpora
    from ser_core.evaluation import make_splitter
    from ser_core.splits import fold_groups
    from ser_core.features import compute_files, get_feature_set
    from ser_core.saved import CALIBRATION_PRIOR_CLIPS

    t_start = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    corpus = load_corpora(a.data or [str(REPO.parent / "shared" / "data" / "ravdess")])
    m = corpus.manifest
    paths, y = m["path"].tolist(), m["emotion"].to_numpy()
    speakers = m["speaker"].astype(str).to_numpy()
    labels = sorted(np.unique(y))
    ks = [int(k) for k in a.ks.split(",")]
    ks_cal = [k for k in ks if k]
    priors = [int(v) for v in a.priors.split(",") if v.strip()]
    settings = [CALIBRATION_PRIOR_CLIPS] + [v for v in priors if v != CALIBRATION_PRIOR_CLIPS] + [MEAN_ONLY]
    log(f"features {a.feature_set} for {len(paths)} clips")
    X = compute_files(paths, get_feature_set(a.feature_set), n_jobs=a.jobs, progress=False).astype(np.float64)
    splitter = make_splitter(a.split, a.folds, a.seed)
    splits = list(splitter.split(np.zeros(len(y)), y, fold_groups(a.split, m)))

    models = {}
    for name in [s.strip() for s in a.models.split(",") if s.strip()]:
        t0 = time.perf_counter()
        r = run_model(name, a, X, y, speakers, labels, splits, settings, ks, log)
        r["best"] = pick_best(r["curves"], settings, ks_cal)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        models[name] = r
    per_spk = int(np.median(np.bincount(np.unique(speakers, return_inverse=True)[1])))
    result = {
        "protocol_short": (f"{corpus.name}, {len(y)} clips, {len(set(speakers))} speakers, "
                           + ("each corpus held out in turn" if a.split == "corpus" else
                              f"speaker-grouped {a.folds}-fold CV (seed {a.seed})")
                           + f", {a.reps} random draws per speaker and k, feature set {a.feature_set}"),
        "protocol": __doc__.split("\n\n", 2)[2].split("\n\nWrites")[0],
        "date": str(datetime.now(timezone.utc).date()),
        "corpus": corpus.name, "data": a.data, "split": a.split, "n_clips": len(y), "n_speakers": len(set(speakers)),
        "clips_per_speaker": per_spk, "splitter": repr(splitter), "folds": a.folds, "seed": a.seed,
        "reps": a.reps, "ks": ks, "feature_set": a.feature_set, "shipped_prior_clips": CALIBRATION_PRIOR_CLIPS,
        "settings": settings,
        "test_speakers": [sorted(set(speakers[te])) for _, te in splits],
        "models": models,
        "seconds": round(time.perf_counter() - t_start, 1),
        "command": "python benchmarks/bench_voice_calibration.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    log(f"wrote {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
