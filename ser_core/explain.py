"""Why a model said what it said about one clip: an attribution, measured by occlusion, and words for it.

    >>> ex = explain(y, 16000, predictor, "cnn")     # what the Demo draws and `explain --json` prints
    >>> ex["label"], ex["regions"][0]                # "angry", {"start": 1.25, "end": 1.5, "low_hz": 301, ...}
    >>> explain(y, 16000, predictor, "lda")["features"][0]["text"]
    'pitch variability (f0_std) 5.1 st: far above a typical neutral clip (2.2 st); typical angry: 4.6 st'

Both methods are occlusion (Zeiler & Fergus, 2014): take something away, predict again, and measure how much
the explained emotion loses. They need nothing but the model's calibrated ``predict_proba``, so they work
alike for scikit-learn, Keras and PyTorch models. The loss is the ``effect``: the fall of the emotion's
log-odds, ``ln(p / (1 - p))`` (1.0: its odds fall 2.7-fold). Log-odds, not probability points, because a
confident model's 99.9 % barely moves in points while its odds still fall tenfold; each part also keeps its
``probability_without``.

- **Spectrogram, sequence and waveform models** (feature kinds image, sequence, raw: cnn, cnn_lstm, lstm,
  transformer_torch, ...): the audio the model hears (resampled, trimmed and normalised as its feature set
  says) is cut into tiles of ``Occlusion.time_s`` seconds by ``1 / Occlusion.bands`` of the mel scale
  (0-8 kHz); each tile in turn is silenced in the short-time Fourier domain and the features are recomputed
  from the result. The map is the effect of each tile; the top tiles are the
  ``regions``, in seconds of the recording and Hz, so they line up with its waveform.
- **Utterance-feature models** (svm, lda, mlp_tf, fcnn_torch, random_forest, ...): the features are grouped
  as they were computed (one statistic of one frame track, e.g. the standard deviation of the pitch, or of
  all 20 MFCCs; each voice summary on its own), and each group in turn is set to its mean over the model's
  training clips (the clip made ordinary in that one respect). The groups whose removal lowers the emotion
  most are the ``features`` that pushed it; those that raise it held it back. Each is worded against the
  training clips: the clip's value beside the median of a typical neutral clip and of a typical clip of
  the emotion. The training clips are those of the model's cross-validation (``oof.npz``) that exist on
  this machine, at most ``REFERENCE_PER_CLASS`` per emotion, else the bundled samples; their features come
  from the feature cache after the first time.
- **The ensemble** pools its members' probabilities: it is explained through its highest-weight member,
  and says so (``note``).

An occlusion shows what this model relies on for this clip, not what makes speech angry in general; a
region or feature with no effect may still be what another model uses.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import normalize_signal, prepare, trim_silence
from .errors import ConfigError
from .features import (BLOCK_DIMS, SUMMARY_DIMS, VOICE_VALUES, VOICED_SPECTRUM_PARTS, compute_prepared,
                       get_feature_set, reduce_noise)
from .inference import calibrated_proba

SR = 16000
REFERENCE_PER_CLASS = 30  # training clips per emotion for the means and medians (240 for RAVDESS's eight)
TOP_REGIONS = 3
TOP_FEATURES = 5
SMALL_EFFECT = 0.1  # log-odds: a part whose removal changes the odds by less than 10 % is not worth a sentence


@dataclass(frozen=True)
class Occlusion:
    """The tiles of a spectrogram model's occlusion map."""

    time_s: float = 0.25  # about a syllable: finer tiles change too little of a 3.5 s clip to move a model
    bands: int = 8  # equal steps of the mel scale from 0 to 8 kHz (each about 1/8 of what the ear resolves)
    fmax: float = 8000.0  # Nyquist at 16 kHz
    n_fft: int = 512  # the silencing STFT: 32 ms, 75 % overlap (exact overlap-add)


DEFAULT_OCCLUSION = Occlusion()

# Words for the utterance features (``FeatureSet.feature_names``): a frame track and one statistic of it.
TRACK_WORDS = {
    "mfcc": "timbre (MFCCs)", "mfcc_delta": "timbre change (MFCC deltas)",
    "mfcc_delta2": "timbre acceleration (MFCC delta-deltas)", "mel": "mel spectrum", "chroma": "chroma",
    "contrast": "spectral contrast", "tonnetz": "tonal centroids", "zcr": "zero-crossing rate",
    "centroid": "brightness (spectral centroid)", "rms": "loudness", "f0": "pitch", "voicing": "voicing strength",
    "mel40": "spectrum (40 mel bands)", "spectral_shape": "spectral shape", "energy": "energy and its change",
}
STATISTIC_WORDS = {"mean": "mean", "std": "variability", "min": "minimum", "max": "maximum", "p10": "low end",
                   "p50": "median", "p90": "high end", "slope": "trend"}
UNITS = {"f0": "st", "rms": "dB", "centroid": "Hz"}  # pitch in semitones above 55 Hz, level in dB


@dataclass(frozen=True)
class Group:
    """Columns of an utterance feature vector that one occlusion removes together."""

    name: str  # "f0_std", "mfcc_std", "voice1"
    words: str  # "pitch variability"
    columns: tuple[int, ...]
    unit: str = ""


@dataclass
class Reference:
    """Training clips' features ``X`` ``(n, d)`` (not normalised), their ``labels`` and where they came from."""

    X: np.ndarray
    labels: np.ndarray
    source: str


# -- entry point ---------------------------------------------------------------------------------------------
def explain(y, sr: int, predictor, name: str, *, label: str | None = None, reference: Reference | None = None,
            root=None, offset_s: float = 0.0, occlusion: Occlusion = DEFAULT_OCCLUSION) -> dict:
    """Explain model ``name`` (loaded in ``predictor``, a ``ser_core.inference.Predictor``) on ``y``.

    label: the emotion to explain (default: the model's answer). reference: the training data for an utterance
    model (default: ``training_reference`` of the saved model under ``root``). offset_s: added to every time
    (``y`` is a segment starting there). Returns ``{"model", "explained_model", "note", "kind"
    ("time_frequency" | "features"), "method", "label", "probability", "probabilities", "text"}`` and, for a
    time-frequency map, ``"regions"`` (``[{"start", "end", "low_hz", "high_hz", "effect",
    "probability_without"}]``, largest effect first), ``"map"`` (``{"times": [[start, end], ...], "bands_hz":
    [[low, high], ...], "effect": (bands, times) nested list}``) and ``"heard"`` (``[start, end]`` of the audio
    the model hears); for features, ``"features"`` (what pushed toward ``label``) and ``"against"`` (what held
    it back), each ``[{"name", "words", "effect", "probability_without", "text", ...}]`` (one number: ``value``,
    ``typical``, ``typical_of_label``, ``z``; several: ``values``, ``distance_sd``), and ``"reference"``."""
    loaded = _loaded(predictor, name)
    note = None
    if loaded.model.feature_set is None:  # an ensemble: its members' probabilities are its input
        weights = dict(zip(loaded.model.members, loaded.model.weights))
        member = max(weights, key=weights.get)
        note = (f"The ensemble pools {len(weights)} models; it is explained through its highest-weight member, "
                f"{member} (weight {weights[member] / sum(weights.values()):.0%}).")
        loaded = _loaded(predictor, member)
    fs = get_feature_set(loaded.model.feature_set)

    def proba(X):
        return calibrated_proba(loaded.model, loaded.card, predictor.normalise(loaded, X))

    classes = [str(c) for c in loaded.model.classes_]
    if label is not None and label not in classes:
        raise ConfigError(f"Model '{loaded.name}' does not know the emotion '{label}'; it knows "
                          f"{', '.join(classes)}.")
    if fs.kind == "utterance":
        if reference is None:
            reference = training_reference(loaded.name, fs, root)
        out = _explain_features(y, sr, fs, proba, classes, label, reference)
    else:
        out = _explain_map(y, sr, fs, proba, classes, label, occlusion, offset_s)
    out = {"model": name, "explained_model": loaded.name, "note": note, **out}
    out["text"] = f"{note} {out['text']}" if note else out["text"]
    return out


def _loaded(predictor, name: str):
    for m in predictor.models:
        if m.name == name:
            return m
    raise ConfigError(f"Model '{name}' is not loaded; load it with Predictor.from_dir([...]).")


def _answer(p0: np.ndarray, classes, label):
    k = classes.index(label) if label is not None else int(p0.argmax())
    return k, classes[k], {c: float(v) for c, v in zip(classes, p0)}


def log_odds(P: np.ndarray, k: int) -> np.ndarray:
    """``ln(p_k / (1 - p_k))`` of each row of probabilities ``P`` ``(n, classes)``; ``1 - p_k`` is summed from
    the other classes, so that a saturated 1.0 still has finite log-odds."""
    P = np.asarray(P, dtype=np.float64)
    return np.log(P[:, k] + 1e-300) - np.log(np.delete(P, k, axis=1).sum(axis=1) + 1e-300)


# -- spectrogram models: a time-frequency occlusion map --------------------------------------------------------
def heard_audio(y, sr: int, fs) -> tuple[np.ndarray, int]:
    """``(prepared, start)``: what a model on feature set ``fs`` hears of ``y`` (``prepare_for``: resampled,
    denoised, trimmed, normalised) and the sample of ``y`` at 16 kHz where it begins."""
    fs = get_feature_set(fs)
    y16 = prepare(y, sr, sr=fs.sr, trim=False, normalize=None)
    base = reduce_noise(y16, fs.sr, over=fs.denoise) if fs.denoise else y16
    start, end = trim_silence(base, top_db=fs.top_db)[1] if fs.trim else (0, len(base))
    prepared = np.ascontiguousarray(normalize_signal(base[start:end], fs.normalize), dtype=np.float32)
    return prepared, start


def _heard_span(n: int, fs) -> tuple[int, int]:
    """Samples of a prepared signal of ``n`` samples that reach the model (sequences and images keep the
    centre ``max_frames``, raw audio the centre ``max_samples``)."""
    keep = fs.max_samples if fs.kind == "raw" else fs.max_frames * fs.hop_length
    start = max(0, (n - keep) // 2)
    return start, min(n, start + keep)


def _band_edges(occ: Occlusion) -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(n_mels=occ.bands + 1, fmin=0.0, fmax=occ.fmax)  # Slaney, as the features


def _tiles(n: int, fs, occ: Occlusion) -> tuple[np.ndarray, np.ndarray]:
    """``(time edges in samples (t + 1,), band edges in Hz (b + 1,))`` covering what the model hears."""
    h0, h1 = _heard_span(n, fs)
    step = int(occ.time_s * SR)
    edges = np.arange(h0, h1, step)
    edges = np.append(edges if h1 - edges[-1] >= step / 2 or len(edges) == 1 else edges[:-1], h1)
    return edges, _band_edges(occ)


def silence_tile(y: np.ndarray, t0: int, t1: int, low_hz: float, high_hz: float, n_fft: int = 512) -> np.ndarray:
    """``y`` (16 kHz) with the STFT bins from ``low_hz`` to ``high_hz`` zeroed in the frames centred between
    samples ``t0`` and ``t1`` (Hann window, 75 % overlap, so the rest comes back unchanged)."""
    from scipy.signal import istft, stft

    hop = n_fft // 4
    f, t, Z = stft(y, SR, nperseg=n_fft, noverlap=n_fft - hop)
    frames = (t * SR >= t0) & (t * SR < t1)
    bins = (f >= low_hz) & (f < high_hz)
    Z[np.ix_(bins, frames)] = 0
    out = istft(Z, SR, nperseg=n_fft, noverlap=n_fft - hop)[1][:len(y)]
    return np.pad(out, (0, len(y) - len(out))).astype(np.float32)


def _explain_map(y, sr, fs, proba, classes, label, occ: Occlusion, offset_s: float) -> dict:
    prepared, start = heard_audio(y, sr, fs)
    p0 = proba(compute_prepared(prepared, fs)[None])[0]
    k, label, probabilities = _answer(p0, classes, label)
    t_edges, f_edges = _tiles(len(prepared), fs, occ)
    tiles = [(i, j) for j in range(len(f_edges) - 1) for i in range(len(t_edges) - 1)]
    X = np.stack([compute_prepared(silence_tile(prepared, t_edges[i], t_edges[i + 1], f_edges[j], f_edges[j + 1],
                                                occ.n_fft), fs) for i, j in tiles])
    P = proba(X)
    p, effect = P[:, k], log_odds(p0[None], k)[0] - log_odds(P, k)
    grid = np.zeros((len(f_edges) - 1, len(t_edges) - 1))
    for (i, j), v in zip(tiles, effect):
        grid[j, i] = v

    def seconds(sample):
        return round(offset_s + (start + int(sample)) / SR, 3)

    order = np.argsort(-effect, kind="stable")[:TOP_REGIONS]
    regions = [{"start": seconds(t_edges[tiles[n][0]]), "end": seconds(t_edges[tiles[n][0] + 1]),
                "low_hz": round(float(f_edges[tiles[n][1]])), "high_hz": round(float(f_edges[tiles[n][1] + 1])),
                "effect": round(float(effect[n]), 4), "probability_without": round(float(p[n]), 4)}
               for n in order]
    top = regions[0]
    if top["effect"] < SMALL_EFFECT:
        text = (f"{label} {p0[k]:.0%}: no single region matters much (silencing any one leaves it at "
                f"{top['probability_without']:.0%} or more); the answer rests on the clip as a whole.")
    else:
        text = (f"{label} {p0[k]:.0%}: silencing {top['start']:.2f}-{top['end']:.2f} s between {top['low_hz']} "
                f"and {top['high_hz']} Hz lowers it to {top['probability_without']:.0%} (its odds fall "
                f"{np.exp(top['effect']):.1f}-fold), more than any other tile of {occ.time_s:g} s x 1/{occ.bands} "
                f"of the mel scale.")
    method = (f"occlusion: each {occ.time_s:g} s x 1/{occ.bands}-mel-band tile of the audio the model hears is "
              f"silenced in turn (STFT, {occ.n_fft} samples) and the features recomputed; effect = fall of the "
              f"log-odds of {label} (calibrated)")
    return {"kind": "time_frequency", "method": method, "label": label, "probability": float(p0[k]),
            "probabilities": probabilities, "regions": regions, "heard": [seconds(0), seconds(len(prepared))],
            "map": {"times": [[seconds(a), seconds(b)] for a, b in zip(t_edges[:-1], t_edges[1:])],
                    "bands_hz": [[round(float(a)), round(float(b))] for a, b in zip(f_edges[:-1], f_edges[1:])],
                    "effect": np.round(grid, 4).tolist()},
            "text": text}


# -- utterance models: grouped feature occlusion against the training data --------------------------------------
def feature_groups(fs) -> list[Group]:
    """The groups of an utterance feature set's columns (``fs.feature_names()`` order): one per frame track and
    statistic (``f0_std``: 1 column, ``mfcc_std``: ``n_mfcc`` columns), one per ``voice`` summary value, two
    for ``voiced_spectrum``."""
    fs = get_feature_set(fs)
    if fs.kind != "utterance":
        raise ConfigError(f"Feature set '{fs.name}' is not an utterance feature set.")
    index = {n: i for i, n in enumerate(fs.feature_names())}
    groups = []
    for stat in fs.functionals:
        for track in fs.blocks:
            d = BLOCK_DIMS[track](fs)
            cols = tuple(index[f"{track}{i}_{stat}" if d > 1 else f"{track}_{stat}"] for i in range(d))
            groups.append(Group(f"{track}_{stat}", f"{TRACK_WORDS[track]} {STATISTIC_WORDS[stat]}", cols,
                                UNITS.get(track, "") if d == 1 else ""))
    for summary in fs.summaries:
        first = index[f"{summary}0"]
        if summary == "voice":
            groups += [Group(f"voice{i}", w, (first + i,), u) for i, (w, u) in enumerate(VOICE_VALUES)]
        else:
            width = SUMMARY_DIMS[summary] // len(VOICED_SPECTRUM_PARTS)
            groups += [Group(f"{summary}_{part}", w, tuple(range(first + p * width, first + (p + 1) * width)))
                       for p, (part, w) in enumerate(VOICED_SPECTRUM_PARTS)]
    return groups


def occlude_groups(x: np.ndarray, groups, baseline: np.ndarray) -> np.ndarray:
    """``(len(groups), d)``: ``x`` ``(d,)`` with each group's columns in turn replaced by ``baseline``'s."""
    X = np.repeat(np.asarray(x, dtype=np.float32)[None], len(groups), axis=0)
    for n, g in enumerate(groups):
        X[n, list(g.columns)] = baseline[list(g.columns)]
    return X


def _explain_features(y, sr, fs, proba, classes, label, ref: Reference) -> dict:
    from .features import compute

    x = compute(y, sr, fs)
    p0 = proba(x[None])[0]
    k, label, probabilities = _answer(p0, classes, label)
    groups = feature_groups(fs)
    P = proba(occlude_groups(x, groups, ref.X.mean(axis=0)))
    p, effect = P[:, k], log_odds(p0[None], k)[0] - log_odds(P, k)
    order = np.argsort(-effect, kind="stable")
    rows = [dict(_describe(x, g, ref, label), effect=round(float(effect[n]), 4),
                 probability_without=round(float(p[n]), 4)) for n, g in enumerate(groups)]
    pushed = [rows[n] for n in order[:TOP_FEATURES] if effect[n] > 0]
    held = [rows[n] for n in order[::-1][:2] if effect[n] < 0]
    if pushed and pushed[0]["effect"] >= SMALL_EFFECT:
        top = pushed[0]
        text = (f"{label} {p0[k]:.0%}. What pushed it most, against the training clips (made ordinary, the first "
                f"leaves {label} at {top['probability_without']:.0%}, its odds {np.exp(top['effect']):.1f}-fold "
                f"lower): " + "; ".join(r["text"] for r in pushed[:3]) + ".")
    else:
        text = f"{label} {p0[k]:.0%}: no group of features, made ordinary on its own, lowers it much."
    method = (f"grouped occlusion: each of {len(groups)} feature groups in turn set to its mean over "
              f"{len(ref.X)} training clips ({ref.source}); effect = fall of the log-odds of {label} (calibrated)")
    return {"kind": "features", "method": method, "label": label, "probability": float(p0[k]),
            "probabilities": probabilities, "features": pushed, "against": held,
            "reference": {"source": ref.source, "clips": int(len(ref.X))}, "text": text}


def _describe(x, g: Group, ref: Reference, label: str) -> dict:
    """The group's value in words against the training clips: a typical neutral clip (or a typical clip,
    when the emotion is neutral or there is no neutral class) and a typical clip of ``label``."""
    cols = list(g.columns)
    scale = ref.X[:, cols].std(axis=0) + 1e-9
    base = "neutral" if label != "neutral" and "neutral" in set(ref.labels) else None
    typical = np.median(ref.X[ref.labels == base][:, cols] if base else ref.X[:, cols], axis=0)
    own = ref.X[ref.labels == label][:, cols]
    of_label = np.median(own, axis=0) if len(own) else None
    versus = f"a typical {base} clip" if base else "a typical training clip"
    if len(cols) == 1:
        z = float((x[cols[0]] - typical[0]) / scale[0])
        rel = ("close to" if abs(z) < 0.5 else ("above" if z > 0 else "below") if abs(z) < 1.5
               else ("far above" if z > 0 else "far below"))
        unit = f" {g.unit}" if g.unit else ""
        text = f"{g.words} ({g.name}) {x[cols[0]]:.3g}{unit}: {rel} {versus} ({typical[0]:.3g}{unit})"
        if of_label is not None and base != label:
            text += f"; typical {label}: {of_label[0]:.3g}{unit}"
        return {"name": g.name, "words": g.words, "value": float(x[cols[0]]), "typical": float(typical[0]),
                "typical_of_label": None if of_label is None else float(of_label[0]), "z": round(z, 2), "text": text}
    dist = float(np.sqrt(np.mean(np.square((x[cols] - typical) / scale))))
    rel = "close to" if dist < 0.75 else "unlike" if dist < 1.5 else "far from"
    text = f"{g.words} ({g.name}, {len(cols)} values): {rel} {versus} ({dist:.1f} SD)"
    if of_label is not None:
        d_label = float(np.sqrt(np.mean(np.square((x[cols] - of_label) / scale))))
        text += f", {d_label:.1f} SD from a typical {label} clip"
    return {"name": g.name, "words": g.words, "values": len(cols), "distance_sd": round(dist, 2), "text": text}


# -- the training data of a saved model --------------------------------------------------------------------------
def training_reference(name: str, fs, root=None) -> Reference:
    """Features (``fs``) of up to ``REFERENCE_PER_CLASS`` training clips per emotion of saved model ``name``:
    the clips of its cross-validation (``oof.npz``) that exist here, else the bundled samples (``samples/``,
    RAVDESS actors the shipped models were trained on). Cached per model folder and feature set."""
    from .saved import OOF, resolve

    directory = resolve(name, root)
    oof = directory / OOF
    return _reference(str(directory), get_feature_set(fs), oof.stat().st_mtime if oof.is_file() else 0.0)


@functools.lru_cache(maxsize=8)
def _reference(directory: str, fs, _stamp: float) -> Reference:
    from .features import compute_files
    from .saved import load_oof

    oof = load_oof(directory)
    paths, labels, source = [], [], "the bundled samples"
    if oof is not None:
        here = np.array([Path(p).is_file() for p in oof["paths"]], dtype=bool)
        paths, labels = oof["paths"][here], oof["y"][here]
        source = "the model's training clips"
    if len(paths) == 0:
        from .corpora import load_corpus
        from .roots import SAMPLES

        manifest = load_corpus(SAMPLES).manifest
        paths, labels = manifest["path"].to_numpy(), manifest["emotion"].to_numpy()
    keep = np.concatenate([np.flatnonzero(labels == c)[np.linspace(0, (labels == c).sum() - 1,
                                                                   min(REFERENCE_PER_CLASS, (labels == c).sum()))
                                                       .astype(int)] for c in np.unique(labels)])
    X = compute_files([str(p) for p in paths[keep]], fs, progress=False)
    return Reference(X, np.asarray(labels[keep]).astype(str), source)


__all__ = ["explain", "log_odds", "Occlusion", "DEFAULT_OCCLUSION", "Group", "Reference", "feature_groups", "occlude_groups",
           "silence_tile", "heard_audio", "training_reference", "REFERENCE_PER_CLASS"]
