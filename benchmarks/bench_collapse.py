"""Why the shipped models collapse on other corpora: measurements behind docs/why_it_collapsed.md.

    python benchmarks/bench_collapse.py --json-out benchmarks/results/collapse.json [--work /tmp/collapse_work]
        [--jobs 2] [--db /tmp/collapse.sqlite] [--sections shipped,signal,acoustics,frontend,lexical]

Read-only with respect to ``trained_models/``. The corpora are read from ``$SER_SHARED_DATA`` (default
``../shared/data``: ``ravdess``, ``tess``, ``emodb``). Features come from the feature cache
(``ser_core.features.compute_files``; ``$SER_CACHE_DIR``); the shipped models' probabilities and the per-clip
signal measures are kept in ``--work`` so that a rerun only re-scores (delete the folder to recompute).

Sections (all by default):

- ``shipped``: every shipped model (and the saved ensemble) on TESS and EmoDB, and its out-of-fold predictions
  on RAVDESS for reference: predicted-class histograms, confusion matrices, UAR on the shared emotions (the
  model's own 8-way answer; with calm counted as neutral; the answer restricted to the shared emotions), arousal
  UAR, ECE, confidence, per speaker and gender; label-free prior correction (EM, Saerens et al. 2002) and an
  oracle per-class bias fitted on the test labels (best class-balanced likelihood); how much
  the answers depend on sentence/word and speaker (adjusted mutual information).
- ``signal``: per clip, at 16 kHz before normalisation: leading/trailing silence and what trimming (top_db 20)
  cuts, zero padding, speech-region loudness (RMS dBFS), noise floor, SNR, bandwidth, and what the shipped
  denoiser (``reduce_noise``, over=2) does to the speech region (energy, frames attenuated by > 6 dB, bands).
- ``acoustics``: per corpus x emotion (and gender): loudness, duration, voiced-stretch rate, pitch level and range,
  spectral centroid, alpha ratio, Hammarberg index, pause share; how much of each feature's variance is corpus vs
  emotion; where each corpus's emotions land in a RAVDESS-fitted discriminant space.
- ``frontend``: the shipped lda/svm recipe (without its augmentation copies, for speed) retrained on RAVDESS's
  960 clips with and without denoising, scored on TESS and EmoDB as the shipped models are; the same with each
  test corpus (or each test speaker) z-scored by its own statistics; and the cross-corpus runs of
  ``ser_core.cross_corpus`` (trained on the shared emotions only, as ``train --test-data`` does), stored in
  ``--db``; the shipped utterance models fed z-scored test corpora; leave one corpus out (RAVDESS plus the other
  corpus as training data).
- ``lexical``: within RAVDESS, trained on one statement and tested on the same or the other statement (speaker
  folds of the shipped run); how well the features tell the sentence / word itself.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data"))
CORPORA = ("ravdess", "tess", "emodb")
TARGETS = ("tess", "emodb")
HIGH_AROUSAL = ("angry", "fearful", "happy", "surprised")  # the two-class arousal view
ALL_THREE = ("angry", "disgust", "fearful", "happy", "neutral", "sad")  # the emotions every corpus has
MAIN_MODELS = ("ensemble", "lda", "svm", "cnn")
SECTIONS = ("shipped", "signal", "acoustics", "frontend", "lexical")
SR = 16000


# -- small helpers -------------------------------------------------------------------------------------------
def _r(x, nd=3):
    """JSON-friendly rounding of floats, arrays, dicts and lists."""
    if isinstance(x, dict):
        return {str(k): _r(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_r(v, nd) for v in x]
    if isinstance(x, np.ndarray):
        return _r(x.tolist(), nd)
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else round(float(x), nd)
    if isinstance(x, np.integer):
        return int(x)
    return x


def corpora():
    from ser_core.corpora import load_corpus

    return {name: load_corpus(DATA / name) for name in CORPORA}


def table(rows, headers) -> str:
    """A Markdown table."""
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def say(text=""):
    print(text, flush=True)


def uar(y, pred, labels) -> float:
    """Mean recall over the labels of ``labels`` that occur in ``y``."""
    y, pred = np.asarray(y), np.asarray(pred)
    recalls = [np.mean(pred[y == l] == l) for l in labels if np.any(y == l)]
    return float(np.mean(recalls)) if recalls else float("nan")


def ece(y, proba, classes) -> float:
    from ser_core.calibration import expected_calibration_error, label_indices

    return expected_calibration_error(label_indices(y, classes), proba)


# -- scoring one set of probabilities ------------------------------------------------------------------------
def score(proba, classes, y, *, shared, groups=None) -> dict:
    """Everything section ``shipped`` reports of one model on one corpus.

    proba: (n, k) calibrated probabilities in ``classes`` order, over every clip of the corpus; y: (n,) true
    labels; shared: the emotions the model and the corpus both have (the clips of other emotions, EmoDB's
    boredom, count only in the histogram and the arousal view); groups: {name: (n,) array} for breakdowns."""
    classes = [str(c) for c in classes]
    y = np.asarray(y).astype(str)
    proba = np.asarray(proba, dtype=np.float64)
    pred = np.asarray(classes)[proba.argmax(1)]
    keep = np.isin(y, shared)
    ys, ps, P = y[keep], pred[keep], proba[keep]
    cols = [classes.index(c) for c in shared]
    restricted = np.asarray(shared)[P[:, cols].argmax(1)]
    to_neutral = np.vectorize(lambda v: "neutral" if v == "calm" else v)
    merged = sorted(set(to_neutral(np.asarray(shared))))
    high = np.isin(classes, HIGH_AROUSAL)
    ar_true = np.where(np.isin(y, HIGH_AROUSAL), "high", "low")
    ar_pred = np.where(proba[:, high].sum(1) > 0.5, "high", "low")
    hist_all = {c: int(np.sum(pred == c)) for c in classes}
    hist_shared = {c: int(np.sum(ps == c)) for c in classes}
    n = max(1, len(ps))
    shares = np.array(list(hist_shared.values())) / n
    nz = shares[shares > 0]
    true_labels = sorted(set(y), key=lambda v: (v not in classes, classes.index(v) if v in classes else 0, v))
    confusion = {t: {c: int(np.sum((y == t) & (pred == c))) for c in classes} for t in true_labels}
    conf = P.max(1)
    out = {
        "n": int(len(y)), "n_shared": int(keep.sum()), "shared": list(shared),
        "uar": uar(ys, ps, shared), "accuracy": float(np.mean(ys == ps)),
        "uar_calm_as_neutral": uar(to_neutral(ys), to_neutral(ps), merged),
        "uar_restricted": uar(ys, restricted, shared),
        "uar_arousal": uar(ar_true, ar_pred, ["high", "low"]),
        "arousal_high_share_pred": float(np.mean(ar_pred == "high")),
        "ece": ece(ys, P, classes), "mean_confidence": float(conf.mean()),
        "wrong_over_90": float(np.mean((conf > 0.9) & (ps != ys))),
        "top_class": max(hist_shared, key=hist_shared.get), "top_class_share": float(shares.max()),
        "pred_entropy": float(-(nz * np.log(nz)).sum() / np.log(len(classes))),  # 1: all answers equally often
        "hist_all": hist_all, "hist_shared": hist_shared, "confusion": confusion,
        "per_class_recall": {c: float(np.mean(ps[ys == c] == c)) for c in shared if np.any(ys == c)},
    }
    for name, g in (groups or {}).items():
        g = np.asarray(g).astype(str)[keep]
        out[f"uar_by_{name}"] = {v: uar(ys[g == v], ps[g == v], shared) for v in sorted(set(g))}
    return out


def em_prior(proba, train_prior, iters=100):
    """Saerens, Latinne & Decaestecker (2002): re-estimate the test class prior from unlabelled posteriors and
    adjust them (label-free). Returns (adjusted proba, estimated prior)."""
    prior = train_prior.copy()
    for _ in range(iters):
        adj = proba * (prior / train_prior)
        adj /= adj.sum(1, keepdims=True)
        new = adj.mean(0)
        if np.abs(new - prior).max() < 1e-6:
            break
        prior = new
    return adj, prior


def oracle_bias(proba, classes, y, shared):
    """Per-class log-bias over the shared columns fitted on the TEST labels: an oracle (the bias of best
    class-balanced log-likelihood), which no label-free prior or bias correction has. Returns the biased argmax
    labels and the true labels of those clips."""
    from scipy.optimize import minimize

    cols = [list(classes).index(c) for c in shared]
    keep = np.isin(y, shared)
    L = np.log(np.clip(proba[keep][:, cols], 1e-9, 1))
    yi = np.array([list(shared).index(v) for v in y[keep]])
    w = 1.0 / np.bincount(yi, minlength=len(shared))[yi]

    def nll(b):
        z = L + b
        z = z - z.max(1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -(w * lp[np.arange(len(yi)), yi]).sum() / w.sum() + 1e-4 * (b @ b)

    b = minimize(nll, np.zeros(len(cols)), method="L-BFGS-B").x
    return np.asarray(shared)[(L + b).argmax(1)], y[keep]


def oracle_temperature_ece(raw, classes, y, shared) -> float:
    """ECE on the shared clips after a temperature fitted on the TEST labels (how much of the ECE a temperature
    alone could remove)."""
    from scipy.optimize import minimize_scalar

    keep = np.isin(y, shared)
    L = np.log(np.clip(raw[keep], 1e-12, 1))
    yi = np.array([list(classes).index(v) for v in y[keep]])

    def soft(t):
        z = L / t
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    t = minimize_scalar(lambda t: -np.log(soft(t)[np.arange(len(yi)), yi] + 1e-12).mean(), bounds=(0.05, 50),
                        method="bounded").x
    return ece(y[keep], soft(t), classes)


def dependence(pred, groups: dict) -> dict:
    """Adjusted mutual information between the predicted labels and each grouping (emotion, sentence, speaker)."""
    from sklearn.metrics import adjusted_mutual_info_score

    return {k: float(adjusted_mutual_info_score(np.asarray(v).astype(str), pred)) for k, v in groups.items()}


# -- section: shipped models -----------------------------------------------------------------------------------
def shipped_probas(corpus, models, work: Path, jobs):
    """{model: (raw, calibrated, classes)} of the shipped models on every clip of ``corpus`` (cached in work)."""
    from ser_core.calibration import apply_calibration
    from ser_core.robustness import model_inputs
    from ser_core.saved import load_speaker_norm, load_trained, resolve

    cache = work / f"shipped_{corpus.name}.npz"
    paths = corpus.manifest["path"].tolist()
    if cache.is_file():
        z = dict(np.load(cache))
        if list(z["paths"]) == paths and all(f"raw:{m}" in z for m in models):
            return {m: (z[f"raw:{m}"], z[f"cal:{m}"], list(z[f"classes:{m}"])) for m in models}
    out = {}
    raws = {}
    for m in [m for m in models if m != "ensemble"] + ["ensemble"]:
        t0 = time.perf_counter()
        model, card = load_trained(m)
        if m == "ensemble":
            X = {k: model.member_proba(raws[k], load_trained(k)[1]) for k in model.members}
        else:
            X = model_inputs(model, card, paths, n_jobs=jobs)
            if card.get("speaker_norm"):  # as `evaluate` does: each speaker by its own clips
                speakers = corpus.manifest["speaker"].astype(str).to_numpy()
                X = load_speaker_norm(resolve(m), unseen="self").transform(X, speakers)
        raw = model.predict_proba(X)
        raws[m] = raw
        out[m] = (raw, apply_calibration(raw, card.get("calibration")), [str(c) for c in model.classes_])
        say(f"  {corpus.name}: {m} predicted in {time.perf_counter() - t0:.1f} s")
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.asarray(paths), **{f"raw:{m}": v[0] for m, v in out.items()},
             **{f"cal:{m}": v[1] for m, v in out.items()}, **{f"classes:{m}": np.asarray(v[2]) for m, v in out.items()})
    return out


def ravdess_oof(models, manifest):
    """{model: (raw, calibrated, classes, y, rows of the manifest, fold)} from each shipped model's oof.npz (the
    card's final calibration applied: the same map the other corpora get)."""
    from ser_core.calibration import apply_calibration
    from ser_core.saved import load_oof, load_trained, resolve

    index = {p: i for i, p in enumerate(manifest["path"])}
    out = {}
    for m in models:
        oof = load_oof(resolve(m))
        card = load_trained(m)[1]
        rows = np.array([index[p] for p in oof["paths"]])
        out[m] = (oof["proba"], apply_calibration(oof["proba"], card.get("calibration")), list(oof["classes"]),
                  oof["y"].astype(str), rows, oof["fold"])
    return out


def section_shipped(cs, work, jobs) -> dict:
    from ser_core.saved import load_trained

    ens_card = load_trained("ensemble")[1]
    models = ["ensemble"] + list(ens_card["params"]["members"]) + ["adaptive_lda", "adaptive_svm"]
    res = {"models": models, "ensemble_weights": dict(zip(ens_card["params"]["members"],
                                                          ens_card["params"]["weights"])), "corpora": {}}
    rav = cs["ravdess"].manifest
    train_prior = rav["emotion"].value_counts(normalize=True)
    oof = ravdess_oof(models, rav)
    for m, (raw, cal, classes, y, rows, fold) in oof.items():
        groups = {"gender": rav["gender"].to_numpy()[rows], "speaker": rav["speaker"].to_numpy()[rows]}
        r = {"all8": score(cal, classes, y, shared=classes, groups=groups)}
        for t in TARGETS:  # RAVDESS's own out-of-fold answers on the emotions the target corpus shares
            shared = sorted(set(cs[t].manifest["emotion"]) & set(classes))
            r[f"on_{t}_labels"] = score(cal, classes, y, shared=shared)
        r["dependence"] = dependence(np.asarray(classes)[cal.argmax(1)], {
            "emotion": y, "sentence": rav["statement"].to_numpy()[rows], "speaker": rav["speaker"].to_numpy()[rows]})
        res["corpora"].setdefault("ravdess", {})[m] = r
    for t in TARGETS:
        c = cs[t]
        man = c.manifest
        probas = shipped_probas(c, models, work, jobs)
        y = man["emotion"].to_numpy().astype(str)
        for m, (raw, cal, classes) in probas.items():
            shared = sorted(set(y) & set(classes))
            groups = {"gender": man["gender"].to_numpy(), "speaker": man["speaker"].to_numpy()}
            r = score(cal, classes, y, shared=shared, groups=groups)
            r["ece_raw"] = ece(y[np.isin(y, shared)], raw[np.isin(y, shared)], classes)
            r["ece_oracle_temperature"] = oracle_temperature_ece(raw, classes, y, shared)
            src = oof[m][1].mean(0)  # what the model answers on average in its own domain
            adj, prior = em_prior(cal, src)
            r["uar_em_prior"] = score(adj, classes, y, shared=shared)["uar"]
            r["em_prior"] = dict(zip(classes, prior))
            pb, yb = oracle_bias(cal, classes, y, shared)
            r["uar_oracle_bias"] = uar(yb, pb, shared)
            pred = np.asarray(classes)[cal.argmax(1)]
            r["dependence"] = dependence(pred, {"emotion": y, "sentence": man["statement"].to_numpy(),
                                                "speaker": man["speaker"].to_numpy()})
            res["corpora"].setdefault(t, {})[m] = r
    res["train_prior"] = train_prior.to_dict()
    res["test_prior"] = {t: cs[t].manifest["emotion"].value_counts(normalize=True).to_dict() for t in TARGETS}
    print_shipped(res)
    return res


def print_shipped(res):
    say("\n## Shipped models: UAR on the shared emotions (calibrated probabilities)")
    rows = []
    for m in res["models"]:
        for c in CORPORA:
            r = res["corpora"][c][m]
            r = r.get("all8", r)
            rows.append([m, c, r["n_shared"], r["uar"], r["uar_calm_as_neutral"], r["uar_restricted"],
                         r.get("uar_em_prior", ""), r.get("uar_oracle_bias", ""), r["uar_arousal"], r["ece"],
                         r["mean_confidence"], r["top_class"], r["top_class_share"], r["pred_entropy"]])
    say(table(rows, ["model", "corpus", "n", "UAR", "calm=neutral", "restricted", "EM prior", "oracle bias",
                     "arousal", "ECE", "conf", "top class", "top share", "entropy"]))
    say("\n## Predicted-class histograms (shared-emotion clips)")
    for m in MAIN_MODELS:
        for c in CORPORA:
            r = res["corpora"][c][m]
            r = r.get("all8", r)
            h = r["hist_shared"]
            say(f"{m:9s} {c:8s} " + "  ".join(f"{k[:4]} {v / r['n_shared']:.2f}" for k, v in h.items()))


# -- section: signal -------------------------------------------------------------------------------------------
def _frame_power(y, n=512, hop=160):
    """Mean power of centred frames (n samples every hop), as the features' STFT frames."""
    k = 1 + len(y) // hop
    p = np.pad(np.asarray(y, np.float64), (n // 2, n // 2 + hop))
    fr = np.lib.stride_tricks.sliding_window_view(p, n)[::hop][:k]
    return np.mean(fr ** 2, axis=1)


def _db(x):
    return 10 * np.log10(np.maximum(x, 1e-20))


def _band_power(y, lo, hi, sr=SR):
    F = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / sr)
    return F[(f >= lo) & (f < hi)].sum()


def signal_measures(path) -> dict:
    """One clip's measures at 16 kHz, before normalisation (see the module docstring)."""
    import scipy.signal

    from ser_core.audio import decode, prepare, trim_silence
    from ser_core.features import reduce_noise

    y, sr = decode(path)
    y = y.mean(1)
    nz = np.flatnonzero(np.abs(y) > 0)
    out = {"sr": sr, "dur_native_s": len(y) / sr, "lead_zero_s": nz[0] / sr,
           "trail_zero_s": (len(y) - 1 - nz[-1]) / sr}
    F = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / sr)
    out["native_share_above_8k"] = float(F[f >= 8000].sum() / F.sum())
    y16 = prepare(y, sr, trim=False, normalize=None)
    _, (s, e) = trim_silence(y16, 20)
    _, (s40, e40) = trim_silence(y16, 40)
    n = len(y16)
    out.update(dur_s=n / SR, lead_trim20_s=s / SR, trail_trim20_s=(n - e) / SR, kept20_s=(e - s) / SR,
               lead_trim40_s=s40 / SR, trail_trim40_s=(n - e40) / SR)
    fp = _frame_power(y16)
    fdb = _db(fp) - _db(fp.max())
    speech = y16[s:e]
    _, (s30, e30) = trim_silence(y16, 30)
    out["edge_20to30db_s"] = ((e30 - s30) - (e - s)) / SR  # edges 20-30 dB below the loudest frame: trimmed away
    out["speech_rms_dbfs"] = float(_db(np.mean(speech.astype(np.float64) ** 2)))
    out["peak_dbfs"] = float(20 * np.log10(np.abs(y16).max()))
    out["crest_db"] = out["peak_dbfs"] - out["speech_rms_dbfs"]
    out["first_frame_re_max_db"] = float(fdb[3])  # the frame centred at 30 ms
    out["last_frame_re_max_db"] = float(fdb[-4])
    q10 = np.quantile(fp, 0.1)
    out["floor_re_max_db"] = float(_db(fp[fp <= q10].mean()) - _db(fp.max()))  # the quietest 10 % of frames
    out["snr_db"] = float(_db(np.mean(speech.astype(np.float64) ** 2)) - _db(fp[fp <= q10].mean()))
    # the denoiser's own view: its high-pass, STFT frames (512 / 128) and the quietest 10 % of them
    hp = scipy.signal.sosfilt(scipy.signal.butter(4, 60.0, "highpass", fs=SR, output="sos"), y16)
    _, _, Z = scipy.signal.stft(hp, SR, window="hann", nperseg=512, noverlap=512 - 128)
    frame_power = (np.abs(Z) ** 2).sum(0)
    quiet = frame_power <= np.quantile(frame_power, 0.1)
    centres = np.arange(len(frame_power)) * 128
    out["noise_frames_in_speech"] = float(np.mean((centres[quiet] >= s) & (centres[quiet] < e)))
    noise_db = _db(frame_power[quiet].mean()) - _db(frame_power[(centres >= s) & (centres < e)].mean())
    out["noise_estimate_re_speech_db"] = float(noise_db)
    d = reduce_noise(y16, SR, over=2.0)
    hs, ds = hp[s:e], d[s:e]
    out["denoise_speech_energy_db"] = float(_db(np.sum(ds ** 2.0)) - _db(np.sum(hs ** 2.0)))
    fb, fa = _frame_power(hs), _frame_power(ds)
    att = _db(fb) - _db(fa)
    loud = _db(fb) > _db(fb.max()) - 30  # frames within 30 dB of the loudest: speech, not pauses
    out["denoise_frames_att6"] = float(np.mean(att > 6))
    out["denoise_loud_frames_att6"] = float(np.mean(att[loud] > 6))
    out["denoise_median_frame_att_db"] = float(np.median(att))
    for name, lo, hi in (("low", 60, 1000), ("mid", 1000, 4000), ("high", 4000, 8000)):
        out[f"denoise_{name}_band_db"] = float(_db(_band_power(ds, lo, hi)) - _db(_band_power(hs, lo, hi)))
    dp = _frame_power(d)
    out["snr_after_denoise_db"] = float(_db(np.mean(ds.astype(np.float64) ** 2))
                                        - _db(dp[dp <= np.quantile(dp, 0.1)].mean()))
    _, (sd, ed) = trim_silence(d, 20)
    out["kept20_after_denoise_s"] = (ed - sd) / SR
    S = np.abs(np.fft.rfft(speech)) ** 2
    fs = np.fft.rfftfreq(len(speech), 1 / SR)
    cum = np.cumsum(S) / S.sum()
    out["rolloff99_hz"] = float(fs[np.searchsorted(cum, 0.99)])
    out["share_above_4k"] = float(S[fs >= 4000].sum() / S.sum())
    # pause share as the features compute it (frames > 30 dB below the loudest), on the trimmed clip
    for tag, sig in (("plain", y16), ("denoised", d)):
        tr, _ = trim_silence(sig, 20)
        p = _db(_frame_power(tr))
        out[f"pause_share_{tag}"] = float(np.mean(p < p.max() - 30))
    return out


def signal_table(cs, work, jobs):
    """Per-clip signal measures of every clip of the three corpora (cached in work/signal.csv)."""
    import pandas as pd
    from joblib import Parallel, delayed

    cache = work / "signal.csv"
    man = pd.concat([c.manifest[["path", "corpus", "speaker", "gender", "emotion", "statement"]]
                     for c in cs.values()], ignore_index=True)
    if cache.is_file():
        df = pd.read_csv(cache, dtype={"speaker": str})
        if df["path"].tolist() == man["path"].tolist():
            return df
    t0 = time.perf_counter()
    rows = Parallel(n_jobs=jobs, batch_size=8)(delayed(signal_measures)(p) for p in man["path"])
    df = pd.concat([man, pd.DataFrame(rows)], axis=1)
    df["padded"] = df["trail_zero_s"] > 0.01
    work.mkdir(parents=True, exist_ok=True)
    df.to_csv(cache, index=False)
    say(f"  signal measures of {len(df)} clips in {time.perf_counter() - t0:.0f} s")
    return df


def resampling_check(cs, n=20) -> dict:
    """TESS (24,414 Hz) through the front end's resampler (soxr HQ), on ``n`` clips: the mean power in each band
    against the native file's (dB; 0 = kept), and the agreement with scipy's polyphase resampler (8000 /
    12207) below 7 kHz (the level of their difference below the signal, dB)."""
    import scipy.signal

    from ser_core.audio import decode, resample

    def band(y, sr, lo, hi):  # mean square of the signal's part in [lo, hi) Hz (Parseval)
        F = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(len(y), 1 / sr)
        return F[(f >= lo) & (f < hi)].sum() / len(y) ** 2

    bands = ((60, 1000), (1000, 4000), (4000, 7000), (7000, 7800))
    rows, agree = [], []
    sos = scipy.signal.butter(8, 7000, fs=SR, output="sos")
    for p in cs["tess"].manifest["path"].tolist()[::len(cs["tess"].manifest) // n][:n]:
        y, sr = decode(p)
        y = y.mean(1)
        a = resample(y, sr, SR)
        rows.append([_db(band(a, SR, lo, hi)) - _db(band(y, sr, lo, hi)) for lo, hi in bands])
        b = scipy.signal.resample_poly(y, 8000, 12207)[:len(a)]
        a7, b7 = scipy.signal.sosfiltfilt(sos, a), scipy.signal.sosfiltfilt(sos, b)
        agree.append(_db(np.sum(b7 ** 2)) - _db(np.sum((a7 - b7) ** 2)))
    return {"clips": n, "band_power_change_db_median": {f"{lo}-{hi}": float(v) for (lo, hi), v in
                                                         zip(bands, np.median(rows, axis=0))},
            "soxr_vs_polyphase_below_7k_db_median": float(np.median(agree)),
            "soxr_vs_polyphase_below_7k_db_min": float(np.min(agree))}


SIGNAL_COLUMNS = ("dur_s", "lead_trim20_s", "trail_trim20_s", "kept20_s", "edge_20to30db_s", "lead_trim40_s",
                  "trail_trim40_s", "first_frame_re_max_db", "last_frame_re_max_db", "speech_rms_dbfs", "peak_dbfs",
                  "crest_db", "floor_re_max_db", "snr_db", "snr_after_denoise_db", "noise_frames_in_speech",
                  "noise_estimate_re_speech_db", "denoise_speech_energy_db", "denoise_frames_att6",
                  "denoise_loud_frames_att6", "denoise_median_frame_att_db", "denoise_low_band_db",
                  "denoise_mid_band_db", "denoise_high_band_db", "kept20_after_denoise_s", "rolloff99_hz",
                  "share_above_4k", "native_share_above_8k", "pause_share_plain", "pause_share_denoised")


def _group_key(row):
    if row["corpus"] == "emodb":
        return "emodb (zero-padded)" if row["padded"] else "emodb (cut)"
    return row["corpus"]


def section_signal(cs, work, jobs, quiet=False) -> dict:
    df = signal_table(cs, work, jobs)
    if quiet:
        return None, df
    df["group"] = df.apply(_group_key, axis=1)
    res = {"n_clips": int(len(df)), "native_sr": {c: sorted(set(df[df.corpus == c]["sr"].astype(int)))
                                                  for c in CORPORA}}
    agg = {}
    for g, sub in list(df.groupby("corpus")) + list(df[df.corpus == "emodb"].groupby("group")):
        agg[g] = {col: {"median": float(sub[col].median()), "p10": float(sub[col].quantile(0.1)),
                        "p90": float(sub[col].quantile(0.9)), "mean": float(sub[col].mean())}
                  for col in SIGNAL_COLUMNS}
        agg[g]["n"] = int(len(sub))
        agg[g]["starts_within_30db_of_max"] = float(np.mean(sub["first_frame_re_max_db"] > -30))
        agg[g]["clips_with_loud_frames_att6_over_5pct"] = float(np.mean(sub["denoise_loud_frames_att6"] > 0.05))
    res["by_group"] = agg
    res["emodb_padded"] = int(df[(df.corpus == "emodb") & df.padded].shape[0])
    res["tess_resampling"] = resampling_check(cs)
    say("\n## Signal (16 kHz, before normalisation): medians [p10, p90]")
    groups = list(CORPORA) + ["emodb (cut)", "emodb (zero-padded)"]
    rows = [[col] + [f"{agg[g][col]['median']:.3g} [{agg[g][col]['p10']:.3g}, {agg[g][col]['p90']:.3g}]"
                     for g in groups] for col in SIGNAL_COLUMNS]
    say(table(rows, ["measure"] + groups))
    return res, df


# -- features ----------------------------------------------------------------------------------------------
def features(cs, fs, jobs):
    """{corpus: (n, d) features of ``fs``} from the feature cache (misses computed with ``jobs`` processes)."""
    from ser_core.features import compute_files

    return {c: compute_files(cs[c].manifest["path"].tolist(), fs, n_jobs=jobs, progress=False) for c in CORPORA}


def columns(fs):
    from ser_core.features import get_feature_set

    return {n: i for i, n in enumerate(get_feature_set(fs).feature_names())}


# -- section: acoustics ----------------------------------------------------------------------------------------
ACOUSTIC = (  # (key, words, source): "sig" columns of the signal table, else feature columns of `expressive`
    ("speech_rms_dbfs", "loudness (RMS dBFS of the speech region)", "sig"),
    ("snr_db", "speech over the quietest 10 % of frames (dB)", "sig"),
    ("voice11", "duration after trimming (s)", "feat"),
    ("voice8", "voiced stretches per second", "feat"),
    ("voice7", "voiced share", "feat"),
    ("voice12", "pause share", "feat"),
    ("voice0", "pitch mean (st re 55 Hz)", "feat"),
    ("voice4", "pitch range p5-p95 (st)", "feat"),
    ("spectral_shape0_mean", "spectral centroid (Hz)", "feat"),
    ("spectral_shape5_mean", "alpha ratio (dB, 1-5 kHz over 0.05-1 kHz)", "feat"),
    ("spectral_shape6_mean", "Hammarberg index (dB)", "feat"),
)


def section_acoustics(cs, sig, jobs) -> dict:
    import pandas as pd

    X = features(cs, "expressive", jobs)
    col = columns("expressive")
    frames = []
    for c in CORPORA:
        m = cs[c].manifest[["path", "corpus", "speaker", "gender", "emotion"]].copy()
        for key, _, src in ACOUSTIC:
            if src == "feat":
                m[key] = X[c][:, col[key]]
        frames.append(m)
    df = pd.concat(frames, ignore_index=True)
    s = sig.set_index("path")
    for key, _, src in ACOUSTIC:
        if src == "sig":
            df[key] = s.loc[df["path"], key].to_numpy()
    res = {"measures": {k: w for k, w, _ in ACOUSTIC}, "by_corpus_emotion": {}, "by_corpus_gender": {},
           "by_corpus_gender_emotion": {}}
    for (c, e), sub in df.groupby(["corpus", "emotion"]):
        res["by_corpus_emotion"].setdefault(c, {})[e] = {k: float(sub[k].median()) for k, _, _ in ACOUSTIC}
        res["by_corpus_emotion"][c][e]["n"] = int(len(sub))
    for (c, g), sub in df.groupby(["corpus", "gender"]):
        res["by_corpus_gender"].setdefault(c, {})[g] = {k: float(sub[k].median()) for k, _, _ in ACOUSTIC}
    for (c, g, e), sub in df.groupby(["corpus", "gender", "emotion"]):
        res["by_corpus_gender_emotion"].setdefault(c, {}).setdefault(g, {})[e] = {
            k: float(sub[k].median()) for k in ("voice0", "voice4")}
    # corpus offset (neutral vs neutral) against emotion effect (angry - neutral, sad - neutral) within a corpus
    eff = {}
    for k, _, _ in ACOUSTIC:
        med = lambda c, e: res["by_corpus_emotion"][c][e][k]  # noqa: E731
        eff[k] = {"neutral_offset_vs_ravdess": {t: med(t, "neutral") - med("ravdess", "neutral") for t in TARGETS},
                  "angry_minus_neutral": {c: med(c, "angry") - med(c, "neutral") for c in CORPORA},
                  "sad_minus_neutral": {c: med(c, "sad") - med(c, "neutral") for c in CORPORA}}
    res["offsets"] = eff
    # EmoDB's zero-padded clips against its cut ones, through the plain and the denoised front end
    pad = s.loc[cs["emodb"].manifest["path"], "padded"].to_numpy().astype(bool)
    Xd = features(cs, "expressive_denoised", jobs)
    res["emodb_padding"] = {
        grp: {fs: {k: float(np.median(src["emodb"][rows, col[k]])) for k in ("voice11", "voice12", "voice7", "voice8")}
              for fs, src in (("expressive", X), ("expressive_denoised", Xd))} | {"n": int(rows.sum())}
        for grp, rows in (("cut", ~pad), ("zero-padded", pad))}
    res["variance"] = variance_split(cs, jobs)
    res["lda_space"] = lda_space(cs, jobs)
    print_acoustics(res)
    return res


def variance_split(cs, jobs, fs="expressive_denoised") -> dict:
    """Per feature of the models' input: the share of variance the corpus explains (eta squared, the clips of
    the six emotions all three corpora have) against the share the emotion explains within each corpus."""
    X = features(cs, fs, jobs)
    Xs, cs_lab, em = [], [], []
    for c in CORPORA:
        y = cs[c].manifest["emotion"].to_numpy()
        k = np.isin(y, ALL_THREE)
        Xs.append(X[c][k])
        cs_lab += [c] * int(k.sum())
        em.append(y[k])
    A = np.concatenate(Xs).astype(np.float64)
    cs_lab, em = np.asarray(cs_lab), np.concatenate(em)

    def eta2(A, g):
        tot = ((A - A.mean(0)) ** 2).sum(0)
        between = sum((g == v).sum() * (A[g == v].mean(0) - A.mean(0)) ** 2 for v in np.unique(g))
        return between / np.maximum(tot, 1e-12)

    corpus = eta2(A, cs_lab)
    within = {c: eta2(A[cs_lab == c], em[cs_lab == c]) for c in CORPORA}
    ok = np.isfinite(corpus)
    emotion_mean = np.mean([within[c] for c in CORPORA], axis=0)
    names = list(columns(fs))
    top = np.argsort(-corpus)[:15]
    return {"feature_set": fs, "n_features": int(ok.sum()),
            "corpus_eta2_median": float(np.median(corpus[ok])),
            "emotion_eta2_median": {c: float(np.median(within[c][ok])) for c in CORPORA},
            "share_features_corpus_gt_emotion": float(np.mean(corpus[ok] > emotion_mean[ok])),
            "top_corpus_features": {names[i]: {"corpus_eta2": float(corpus[i]),
                                               **{f"emotion_eta2_{c}": float(within[c][i]) for c in CORPORA}}
                                    for i in top}}


def lda_space(cs, jobs, fs="expressive_denoised") -> dict:
    """Fit a shrinkage LDA (eigen solver, to project) on RAVDESS's 960 clips and place every corpus's emotion
    centroids in its 7-D space: how far each corpus sits from RAVDESS compared with how far RAVDESS's emotions sit
    from one another, and which RAVDESS emotion each corpus's emotion lands nearest to."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.preprocessing import StandardScaler

    X = features(cs, fs, jobs)
    y = {c: cs[c].manifest["emotion"].to_numpy() for c in CORPORA}
    sc = StandardScaler().fit(X["ravdess"])
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(sc.transform(X["ravdess"]), y["ravdess"])
    Z = {c: lda.transform(sc.transform(X[c])) for c in CORPORA}
    rc = {e: Z["ravdess"][y["ravdess"] == e].mean(0) for e in lda.classes_}
    pair = [np.linalg.norm(rc[a] - rc[b]) for i, a in enumerate(lda.classes_) for b in lda.classes_[i + 1:]]
    within = np.mean([np.linalg.norm(Z["ravdess"][y["ravdess"] == e] - rc[e], axis=1).mean() for e in rc])
    out = {"ravdess_emotion_centroid_distance_mean": float(np.mean(pair)),
           "ravdess_clip_to_own_centroid_mean": float(within)}
    for t in TARGETS:
        offset = Z[t].mean(0) - Z["ravdess"][np.isin(y["ravdess"], list(set(y[t])))].mean(0)
        out[t] = {"corpus_offset": float(np.linalg.norm(offset)), "emotions": {}}
        for e in sorted(set(y[t])):
            ce = Z[t][y[t] == e].mean(0)
            dist = {r: float(np.linalg.norm(ce - rc[r])) for r in rc}
            ce_shift = ce - offset
            dist_c = {r: float(np.linalg.norm(ce_shift - rc[r])) for r in rc}
            out[t]["emotions"][e] = {"nearest": min(dist, key=dist.get), "dist_to_same": dist.get(e),
                                     "dist_to_nearest": min(dist.values()),
                                     "nearest_after_removing_offset": min(dist_c, key=dist_c.get)}
    return out


def print_acoustics(res):
    say("\n## Acoustics: medians per corpus x emotion")
    keys = [k for k, _, _ in ACOUSTIC]
    rows = []
    for c in CORPORA:
        for e, v in res["by_corpus_emotion"][c].items():
            rows.append([c, e, v["n"]] + [f"{v[k]:.3g}" for k in keys])
    say(table(rows, ["corpus", "emotion", "n"] + keys))
    say("\n## Pitch (st re 55 Hz) by gender: neutral / angry / sad medians, range in brackets")
    for c, gs in res["by_corpus_gender_emotion"].items():
        for g, es in gs.items():
            say(f"{c:8s} {g:7s} " + "  ".join(f"{e} {v['voice0']:.1f} [{v['voice4']:.1f}]" for e, v in es.items()))
    say("\nEmoDB cut vs zero-padded (medians; duration, pause share, voiced share, voiced stretches/s): " +
        json.dumps(_r(res["emodb_padding"])))
    v = res["variance"]
    say(f"\nvariance: corpus eta2 median {v['corpus_eta2_median']:.3f}, emotion eta2 medians "
        f"{_r(v['emotion_eta2_median'])}, features where corpus > emotion: {v['share_features_corpus_gt_emotion']:.2f}")
    l = res["lda_space"]
    say(f"LDA space: RAVDESS emotion centroids {l['ravdess_emotion_centroid_distance_mean']:.2f} apart on average, "
        f"a clip {l['ravdess_clip_to_own_centroid_mean']:.2f} from its own")
    for t in TARGETS:
        say(f"  {t}: corpus offset {l[t]['corpus_offset']:.2f}; " + ", ".join(
            f"{e}->{d['nearest']} ({d['nearest_after_removing_offset']} w/o offset)"
            for e, d in l[t]["emotions"].items()))


# -- retraining (sections frontend and lexical) ------------------------------------------------------------------
def shipped_params(name):
    from ser_core.saved import load_trained

    card = load_trained(name)[1]
    return {k: v for k, v in card["params"].items() if k != "feature_set"}


def fit_predict(name, fs, X_train, y_train, X_tests, *, norm=None):
    """A fresh model of the shipped recipe's parameters (no augmentation copies), fitted on X_train; returns its
    probabilities on each X_tests entry and its classes. norm: None, "corpus" (each test set z-scored by its own
    statistics before the model's scaler, which then sees it as RAVDESS-like) or a (train speakers, {test:
    speakers}) pair (per-speaker z-scoring, ``SpeakerNormalizer``, test speakers by their own clips)."""
    from ser_core.features import SpeakerNormalizer
    from ser_core.models import create_model

    model = create_model(name, feature_set=fs, **shipped_params(name))
    if isinstance(norm, tuple):
        spk_train, spk_tests = norm
        sn = SpeakerNormalizer(unseen="self").fit(X_train, spk_train)
        X_train = sn.transform(X_train, spk_train)
        X_tests = {k: sn.transform(v, np.char.add("test:", spk_tests[k].astype(str))) for k, v in X_tests.items()}
    elif norm == "corpus":
        mu, sd = X_train.mean(0), X_train.std(0) + 1e-8
        X_tests = {k: (v - v.mean(0)) / (v.std(0) + 1e-8) * sd + mu for k, v in X_tests.items()}
    model.fit(X_train, y_train)
    return {k: model.predict_proba(v) for k, v in X_tests.items()}, [str(c) for c in model.classes_]


def ravdess_folds(manifest) -> np.ndarray:
    """The shipped run's fold of every RAVDESS clip (from lda's oof.npz), in ``manifest`` order."""
    from ser_core.saved import load_oof, resolve

    oof = load_oof(resolve("lda"))
    fold = dict(zip(oof["paths"], oof["fold"]))
    return np.array([fold[p] for p in manifest["path"]])


def cv_uar(name, fs, X, y, fold, speakers=None, norm=None) -> float:
    """Mean over the shipped run's speaker folds of the UAR of a model trained on the other folds."""
    scores = []
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        n = ((speakers[tr], {"t": speakers[te]}) if norm == "speaker" else
             "corpus" if norm == "corpus" else None)
        P, classes = fit_predict(name, fs, X[tr], y[tr], {"t": X[te]}, norm=n)
        scores.append(uar(y[te], np.asarray(classes)[P["t"].argmax(1)], sorted(set(y))))
    return float(np.mean(scores))


def section_frontend(cs, jobs, db, sig) -> dict:
    rav = cs["ravdess"].manifest
    fold = ravdess_folds(rav)
    y_r = rav["emotion"].to_numpy().astype(str)
    spk = {c: cs[c].manifest["speaker"].to_numpy().astype(str) for c in CORPORA}
    res = {"note": "shipped lda/svm parameters, trained on RAVDESS's 960 clips without the shipped recipe's "
                   "augmentation copies", "runs": {}}
    rows, preds = [], {}
    for fs in ("expressive", "expressive_denoised"):
        X = features(cs, fs, jobs)
        for name in ("lda", "svm"):
            for norm in (None, "corpus", "speaker"):
                t0 = time.perf_counter()
                n = (spk["ravdess"], {t: spk[t] for t in TARGETS}) if norm == "speaker" else norm
                P, classes = fit_predict(name, fs, X["ravdess"], y_r, {t: X[t] for t in TARGETS}, norm=n)
                r = {"cv_uar_ravdess": cv_uar(name, fs, X["ravdess"], y_r, fold, spk["ravdess"], norm)}
                for t in TARGETS:
                    y = cs[t].manifest["emotion"].to_numpy().astype(str)
                    s = score(P[t], classes, y, shared=sorted(set(y) & set(classes)))
                    r[t] = {k: s[k] for k in ("uar", "uar_calm_as_neutral", "uar_restricted", "uar_arousal", "ece",
                                              "top_class", "top_class_share", "pred_entropy", "hist_shared")}
                key = f"{name}|{fs}|{norm or 'none'}"
                res["runs"][key] = r
                preds[key] = {t: np.asarray(classes)[P[t].argmax(1)] for t in TARGETS}
                rows.append([name, fs, norm or "-", r["cv_uar_ravdess"]] +
                            [r[t][k] for t in TARGETS
                             for k in ("uar", "uar_restricted", "uar_arousal", "top_class_share")])
                say(f"  {key}: {time.perf_counter() - t0:.0f} s")
    say("\n## Retrained (no augmentation): RAVDESS CV UAR and cross-corpus scores")
    say(table(rows, ["model", "features", "z-score", "RAVDESS CV"] +
              [f"{t} {k}" for t in TARGETS for k in ("UAR", "restricted", "arousal", "top share")]))
    res["denoise_vs_plain"] = denoise_vs_plain(cs, preds)
    res["leave_one_corpus_out"] = leave_one_corpus_out(cs, jobs)
    padded = sig.set_index("path").loc[cs["emodb"].manifest["path"], "padded"].to_numpy().astype(bool)
    res["feature_shift"] = feature_shift(cs, jobs, padded)
    res["shipped_corpus_zscore"] = shipped_corpus_zscore(cs, jobs)
    res["cross_corpus_runs"] = cross_corpus_runs(cs, jobs, db)
    return res


def leave_one_corpus_out(cs, jobs, fs="expressive") -> dict:
    """Training data: each target corpus scored by the shipped lda/svm recipe (no augmentation) trained on RAVDESS
    alone and on RAVDESS plus the other target corpus (every clip, labels on the shared taxonomy, so EmoDB brings
    boredom as a class of its own), without and with per-speaker z-scoring."""
    X = features(cs, fs, jobs)
    y = {c: cs[c].manifest["emotion"].to_numpy().astype(str) for c in CORPORA}
    spk = {c: np.char.add(f"{c}:", cs[c].manifest["speaker"].to_numpy().astype(str)) for c in CORPORA}
    out, rows = {}, []
    for name in ("lda", "svm"):
        for norm in (None, "speaker"):
            for t in TARGETS:
                for train in (["ravdess"], ["ravdess", next(c for c in TARGETS if c != t)]):
                    Xtr = np.concatenate([X[c] for c in train])
                    ytr = np.concatenate([y[c] for c in train])
                    n = (np.concatenate([spk[c] for c in train]), {t: spk[t]}) if norm else None
                    P, classes = fit_predict(name, fs, Xtr, ytr, {t: X[t]}, norm=n)
                    r = score(P[t], classes, y[t], shared=sorted(set(y[t]) & set(classes)))
                    key = f"{name}|{norm or 'none'}|{'+'.join(train)}->{t}"
                    out[key] = {k: r[k] for k in ("uar", "uar_restricted", "uar_arousal", "ece", "top_class_share")}
                    rows.append([name, norm or "-", "+".join(train), t, r["uar"], r["uar_restricted"],
                                 r["uar_arousal"], r["top_class_share"]])
    say(f"\n## Leave one corpus out ({fs}, no augmentation)")
    say(table(rows, ["model", "z-score", "trained on", "tested on", "UAR", "restricted", "arousal", "top share"]))
    return out


def denoise_vs_plain(cs, preds) -> dict:
    """UAR without minus with the denoiser, per model, normalisation and test corpus: overall and per test
    speaker (how many of the speakers score better without it)."""
    out = {}
    rows = []
    for key in [k for k in preds if "|expressive|" in k]:
        name, _, norm = key.split("|")
        other = f"{name}|expressive_denoised|{norm}"
        for t in TARGETS:
            man = cs[t].manifest
            y, spk = man["emotion"].to_numpy().astype(str), man["speaker"].to_numpy().astype(str)
            shared = sorted(set(y) - {"boredom"})  # the models know the other emotions of both corpora
            per = {v: uar(y[spk == v], preds[key][t][spk == v], shared) -
                   uar(y[spk == v], preds[other][t][spk == v], shared) for v in sorted(set(spk))}
            d = uar(y, preds[key][t], shared) - uar(y, preds[other][t], shared)
            out[f"{name}|{norm}|{t}"] = {"uar_plain_minus_denoised": d, "per_speaker": per,
                                         "speakers_better_plain": int(sum(v > 0 for v in per.values())),
                                         "speakers": len(per)}
            rows.append([name, norm, t, d, f"{sum(v > 0 for v in per.values())}/{len(per)}"])
    say("\n## Without minus with the denoiser (UAR on the shared emotions; speakers better without it)")
    say(table(rows, ["model", "z-score", "corpus", "UAR difference", "speakers"]))
    return out


def feature_shift(cs, jobs, emodb_padded) -> dict:
    """How far denoising moves each corpus's features, in RAVDESS standard deviations (of the plain features):
    the median over features of |mean(denoised) - mean(plain)| / sd, and the medians of a few named features.
    EmoDB also split into its zero-padded and its cut clips."""
    A, B = features(cs, "expressive", jobs), features(cs, "expressive_denoised", jobs)
    for src in (A, B):
        src["emodb (cut)"], src["emodb (zero-padded)"] = src["emodb"][~emodb_padded], src["emodb"][emodb_padded]
    col = columns("expressive")
    sd = A["ravdess"].std(0) + 1e-8
    out = {}
    named = ("voice12", "voice7", "voice11", "voice0", "voice4", "spectral_shape3_mean", "spectral_shape0_mean",
             "rms_mean", "energy0_std", "mfcc0_mean", "mfcc1_mean")
    for c in list(CORPORA) + ["emodb (cut)", "emodb (zero-padded)"]:
        d = np.abs(B[c].mean(0) - A[c].mean(0)) / sd
        out[c] = {"median_abs_shift_sd": float(np.median(d)), "share_over_0.5sd": float(np.mean(d > 0.5)),
                  "named": {n: {"plain": float(np.median(A[c][:, col[n]])),
                                "denoised": float(np.median(B[c][:, col[n]]))} for n in named}}
    say("\n## Feature shift from denoising (median |shift| in RAVDESS sd; share of features moved > 0.5 sd)")
    for c in out:
        say(f"  {c}: {out[c]['median_abs_shift_sd']:.3f}, {out[c]['share_over_0.5sd']:.3f}; " + ", ".join(
            f"{n} {v['plain']:.3g}->{v['denoised']:.3g}" for n, v in out[c]["named"].items()))
    return out


def shipped_corpus_zscore(cs, jobs) -> dict:
    """The shipped single-clip models on utterance features, unchanged, fed each test corpus z-scored by its own
    statistics and mapped onto RAVDESS's (mean and spread of the 960 clips): a label-free fix that needs no
    retraining."""
    from ser_core.calibration import apply_calibration
    from ser_core.saved import load_trained

    out = {}
    for m in ("lda", "svm", "mlp_tf", "fcnn_torch"):
        model, card = load_trained(m)
        X = features(cs, model.feature_set, jobs)
        mu, sd = X["ravdess"].mean(0), X["ravdess"].std(0) + 1e-8
        for t in TARGETS:
            Z = (X[t] - X[t].mean(0)) / (X[t].std(0) + 1e-8) * sd + mu
            y = cs[t].manifest["emotion"].to_numpy().astype(str)
            classes = [str(c) for c in model.classes_]
            r = score(apply_calibration(model.predict_proba(Z), card.get("calibration")), classes, y,
                      shared=sorted(set(y) & set(classes)))
            out.setdefault(m, {})[t] = {k: r[k] for k in ("uar", "uar_calm_as_neutral", "uar_restricted",
                                                          "uar_arousal", "ece", "top_class_share")}
    say("\n## Shipped models, each test corpus z-scored by its own statistics (no retraining)")
    say(table([[m, t, v["uar"], v["uar_restricted"], v["uar_arousal"], v["ece"], v["top_class_share"]]
               for m, r in out.items() for t, v in r.items()],
              ["model", "corpus", "UAR", "restricted", "arousal", "ECE", "top share"]))
    return out


def cross_corpus_runs(cs, jobs, db) -> dict:
    """``train --data ravdess --test-data T --models lda,svm --feature-set FS`` through the library (trained on the
    shared emotions only), stored in ``db``."""
    from ser_core.cross_corpus import cross_corpus
    from ser_core.evaluation import RunConfig
    from ser_core.results import ResultsStore

    store = ResultsStore(db)
    out = {}
    for fs in ("expressive", "expressive_denoised"):
        for name in ("lda", "svm"):
            for t in TARGETS:
                r = cross_corpus(RunConfig(name, params=shipped_params(name), feature_set=fs), cs["ravdess"], cs[t],
                                 store=store, n_jobs=jobs)
                out[f"{name}|{fs}|{t}"] = {"uar": r.summary["uar"]["mean"], "ece": r.summary["ece"]["mean"],
                                           "labels": r.labels, "run_id": r.run_id}
    say("\n## Cross-corpus runs (trained on the shared emotions only; `train --test-data`)")
    say(table([[k, v["uar"], v["ece"], len(v["labels"])] for k, v in out.items()], ["run", "UAR", "ECE", "classes"]))
    return out


# -- section: lexical ----------------------------------------------------------------------------------------------
def section_lexical(cs, jobs) -> dict:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fs = "expressive_denoised"
    X = features(cs, fs, jobs)
    rav = cs["ravdess"].manifest
    fold = ravdess_folds(rav)
    y = rav["emotion"].to_numpy().astype(str)
    st = rav["statement"].to_numpy().astype(str)
    labels = sorted(set(y))
    res = {"ravdess_statement_cross": {}}
    for name in ("lda", "svm"):
        same, other, both = [], [], []
        for f in np.unique(fold):
            for s in np.unique(st):
                tr = (fold != f) & (st == s)
                tests = {"same": (fold == f) & (st == s), "other": (fold == f) & (st != s)}
                P, classes = fit_predict(name, fs, X["ravdess"][tr], y[tr],
                                         {k: X["ravdess"][v] for k, v in tests.items()})
                same.append(uar(y[tests["same"]], np.asarray(classes)[P["same"].argmax(1)], labels))
                other.append(uar(y[tests["other"]], np.asarray(classes)[P["other"].argmax(1)], labels))
            tr, te = fold != f, fold == f
            P, classes = fit_predict(name, fs, X["ravdess"][tr], y[tr], {"t": X["ravdess"][te]})
            both.append(uar(y[te], np.asarray(classes)[P["t"].argmax(1)], labels))
        res["ravdess_statement_cross"][name] = {"train_one_test_same": float(np.mean(same)),
                                                "train_one_test_other": float(np.mean(other)),
                                                "train_both_speaker_cv": float(np.mean(both))}
    # how well the features tell the sentence itself (speaker-grouped; a shrinkage LDA)

    def decode(Xc, target, groups, splits):
        """UAR of a shrinkage LDA over the splits, and chance."""
        clf = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
        pred = np.empty(len(target), dtype=object)
        for tr, te in splits:
            pred[te] = clf.fit(Xc[tr], target[tr]).predict(Xc[te])
        return uar(target, pred.astype(str), sorted(set(target))), float(1 / len(set(target)))

    res["sentence_decoding"] = {}
    acc, chance = decode(X["ravdess"], st, None, [(np.flatnonzero(fold != f), np.flatnonzero(fold == f))
                                                   for f in np.unique(fold)])
    res["sentence_decoding"]["ravdess_statement"] = {"uar": acc, "chance": chance}
    e = cs["emodb"].manifest
    sp = e["speaker"].to_numpy()
    acc, chance = decode(X["emodb"], e["statement"].to_numpy().astype(str), sp,
                         GroupKFold(5).split(X["emodb"], groups=sp))
    res["sentence_decoding"]["emodb_sentence"] = {"uar": acc, "chance": chance}
    t = cs["tess"].manifest
    sp = t["speaker"].to_numpy()
    acc, chance = decode(X["tess"], t["statement"].to_numpy().astype(str), sp,
                         GroupKFold(2).split(X["tess"], groups=sp))
    res["sentence_decoding"]["tess_word"] = {"uar": acc, "chance": chance}
    acc, chance = decode(X["tess"], t["emotion"].to_numpy().astype(str), sp, GroupKFold(2).split(X["tess"], groups=sp))
    res["within_corpus_emotion"] = {"tess_speaker_cross_lda": {"uar": acc, "chance": chance}}
    sp = e["speaker"].to_numpy()
    acc, chance = decode(X["emodb"], e["emotion"].to_numpy().astype(str), sp,
                         GroupKFold(5).split(X["emodb"], groups=sp))
    res["within_corpus_emotion"]["emodb_speaker_5fold_lda"] = {"uar": acc, "chance": chance}
    say("\n## Lexical content")
    say(json.dumps(_r(res), indent=1))
    return res


# -- main ----------------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json-out", default=str(REPO / "benchmarks" / "results" / "collapse.json"))
    ap.add_argument("--work", default="/tmp/collapse_work", help="cache of probabilities and signal measures")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--db", default="/tmp/collapse.sqlite", help="results store of the cross-corpus runs")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    a = ap.parse_args(argv)
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    work = Path(a.work)
    cs = corpora()
    out_path = Path(a.json_out)
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}  # a partial run keeps the other sections
    out["command"] = "python benchmarks/bench_collapse.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out["data"] = {c: {"clips": int(len(cs[c].manifest)), "speakers": int(cs[c].manifest["speaker"].nunique()),
                       "emotions": cs[c].manifest["emotion"].value_counts().to_dict()} for c in CORPORA}
    timings = out.setdefault("timings_s", {})
    sig = None
    for s in SECTIONS:
        if s not in sections and not (s == "signal" and {"acoustics", "frontend"} & set(sections)):
            continue
        t0 = time.perf_counter()
        say(f"\n# {s}")
        if s == "shipped":
            out[s] = section_shipped(cs, work, a.jobs)
        elif s == "signal":
            res, sig = section_signal(cs, work, a.jobs, quiet="signal" not in sections)
            if "signal" in sections:
                out[s] = res
        elif s == "acoustics":
            out[s] = section_acoustics(cs, sig, a.jobs)
        elif s == "frontend":
            out[s] = section_frontend(cs, a.jobs, a.db, sig)
        elif s == "lexical":
            out[s] = section_lexical(cs, a.jobs)
        timings[s] = round(time.perf_counter() - t0, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_r(out), indent=1) + "\n")
    say(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
