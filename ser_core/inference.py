"""Predictions of several trained models on one clip, computing each feature set once.

    >>> p = Predictor.from_dir()                    # every model in trained_models/
    >>> res = p.predict_file("speech.wav")          # {model_name: {label: probability}}
    >>> tl = p.timeline(y, sr, window_s=3, hop_s=1)  # emotion over time for long recordings
    >>> p.calibrate(["me1.wav", ..., "me5.wav"])     # speaker-adaptive models: 5+ clips of the same speaker
    >>> p.thresholds()                              # {model_name: top probability below which it is not sure}
    >>> describe_prediction(res["svm"], p.thresholds()["svm"])["text"]   # "angry 87%" or "not sure: angry 38%, ..."
    >>> analyse_audio("speech.wav", p)               # what the Demo page shows: speech check, region, timeline

Probabilities are calibrated as the model card says (card ``calibration``, fitted on the model's
out-of-fold predictions; cards without it: unchanged), so a model's confidence is an honest estimate of how
often it is right; an answer below the card's ``threshold`` is "not sure" (``is_uncertain``).

Speaker-adaptive models (trained with ``speaker_norm``) see features z-scored per speaker. After
``calibrate`` they z-score with the statistics of the user's own clips; before, with their training data's
global statistics (less accurate). ``calibration_status()`` says which applies to each of them.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import load_audio, prepare, trim_silence
from .calibration import apply_calibration
from .ensemble import ENSEMBLE
from .errors import ConfigError
from .features import SpeakerNormalizer, compute, get_feature_set
from .familiarity import REFERENCE_SET
from .saved import list_trained, load_familiarity, load_speaker_norm, load_trained, models_lock, resolve
from .speech import speech_check, speech_check_file
from .taxonomy import dimension_reading


@dataclass
class LoadedModel:
    name: str
    model: object
    card: dict
    load_time_s: float
    speaker_norm: SpeakerNormalizer | None = None  # the training data's statistics (speaker-adaptive models)
    auxiliary: bool = False  # loaded only as an ensemble's member: computed, not reported by predict()
    familiarity: object = None  # ser_core.familiarity.Familiarity its calibration reads (several corpora), or None

    @property
    def uar(self):
        return (self.card.get("cv", {}).get("metrics", {}).get("uar") or {}).get("mean")

    @property
    def threshold(self) -> float | None:
        """Top probability below which this model's answer is "not sure" (None: its card has no calibration)."""
        return (self.card.get("calibration") or {}).get("threshold")


class Predictor:
    """Holds loaded models; ``predict(y, sr)`` returns ``{name: {label: prob}}`` for each model."""

    def __init__(self, models: list[LoadedModel]):
        self.models = models
        self.calibration: dict = {}  # model name -> its training SpeakerNormalizer plus the user's statistics
        self.n_calibration_clips = 0

    @classmethod
    def from_dir(cls, names=None, root=None) -> "Predictor":
        cards = list_trained(root)
        wanted = [c["name"] for c in cards] if names in (None, "all", ["all"]) else list(names)
        loaded, queue = {}, [(name, False) for name in wanted]
        while queue:  # an ensemble's members are loaded too (as auxiliary models unless asked for)
            name, auxiliary = queue.pop(0)
            if name in loaded:
                continue
            t0 = time.perf_counter()
            directory = resolve(name, root)
            with models_lock(directory.parent, shared=True):  # the model and its statistics from one save
                model, card = load_trained(directory)
                norm = load_speaker_norm(directory) if card.get("speaker_norm") else None
                familiarity = load_familiarity(directory)
            loaded[name] = LoadedModel(card["name"], model, card, time.perf_counter() - t0, norm, auxiliary,
                                       familiarity)
            queue += [(member, True) for member in getattr(model, "all_members", getattr(model, "members", []))]
        ensembles = [m for m in loaded.values() if m.model.feature_set is None]
        return cls([m for m in loaded.values() if m.model.feature_set is not None] + ensembles)

    def calibrate(self, clips, min_clips: int = 5) -> "Predictor":
        """Calibrate the speaker-adaptive models to one speaker: ``clips`` are at least ``min_clips`` paths or
        ``(y, sr)`` pairs of that speaker. Labels are never needed, but the clips should span the speaker's
        range (several moods), as the training speakers' clips did: their mean is what a model compares with.
        Replaces an earlier calibration and returns self (``copy.copy(p).calibrate(...)`` leaves a shared
        predictor ``p`` untouched)."""
        clips = list(clips)
        if len(clips) < min_clips:
            raise ConfigError(f"Calibration needs at least {min_clips} clips of the same speaker; got {len(clips)}.")
        signals = [(load_audio(c, trim=False, normalize=None), 16000) if isinstance(c, (str, Path)) else c
                   for c in clips]
        feats, calibration = {}, {}
        for m in self.models:
            if m.speaker_norm is not None:
                fs_name = m.model.feature_set
                if fs_name not in feats:
                    feats[fs_name] = np.stack([compute(y, sr, get_feature_set(fs_name)) for y, sr in signals])
                calibration[m.name] = copy.copy(m.speaker_norm).add_speaker(_USER, feats[fs_name])
        self.calibration, self.n_calibration_clips = calibration, len(clips)
        return self

    def clear_calibration(self) -> None:
        self.calibration, self.n_calibration_clips = {}, 0

    def calibration_status(self) -> dict:
        """``{model name: True (calibrated to the user's clips) | False (training statistics)}`` for the
        speaker-adaptive models; other models are not listed."""
        return {m.name: m.name in self.calibration for m in self.models if m.speaker_norm is not None}

    @property
    def calibrated(self) -> bool:
        """True when there are speaker-adaptive models and all of them are calibrated."""
        status = self.calibration_status()
        return bool(status) and all(status.values())

    def normalise(self, m: LoadedModel, x: np.ndarray) -> np.ndarray:
        """A speaker-adaptive model's input ``(1, d)`` z-scored with the calibration (or training) statistics."""
        if m.speaker_norm is None:
            return x
        return self.calibration.get(m.name, m.speaker_norm).transform(x, [_USER] * len(x))

    def predict(self, y: np.ndarray, sr: int, *, timings: dict | None = None) -> dict:
        feats = {}
        results, raws = {}, {}  # {model: {label: p}} calibrated, and {model: (1, classes) raw predict_proba}
        for m in self.models:  # ensembles come last: their members' results are there by then
            fs_name = m.model.feature_set
            t0 = time.perf_counter()
            adapted = fs_name is None and self.adapted(m.model)
            if fs_name is None:
                X = {k: self._member_input(m.model, k, raws[k])
                     for k in (m.model.all_members if adapted else m.model.members)}
            else:
                if fs_name not in feats:
                    feats[fs_name] = compute(y, sr, get_feature_set(fs_name))[None]
                X = self.normalise(m, feats[fs_name])
            familiarity = None
            if m.familiarity is not None:  # how strange this clip is to the model's training clips
                if REFERENCE_SET not in feats:
                    feats[REFERENCE_SET] = compute(y, sr, get_feature_set(REFERENCE_SET))[None]
                familiarity = m.familiarity.score(feats[REFERENCE_SET])
            t1 = time.perf_counter()
            raw = m.model.predict_proba(X, adapted=True) if adapted else m.model.predict_proba(X)
            calibration = (m.card.get("adapted") or {}).get("calibration") if adapted else m.card.get("calibration")
            proba = apply_calibration(raw, calibration, familiarity)[0]
            t2 = time.perf_counter()
            if timings is not None:
                timings[m.name] = {"features_ms": 1000 * (t1 - t0), "model_ms": 1000 * (t2 - t1)}
            raws[m.name] = raw
            results[m.name] = {str(c): float(p) for c, p in zip(m.model.classes_, proba)}
        auxiliary = {m.name for m in self.models if m.auxiliary}
        return {k: v for k, v in results.items() if k not in auxiliary}

    def adapted(self, ensemble) -> bool:
        """True when ``ensemble`` pools its speaker-adaptive members too: it has some, and all of them are
        calibrated to the user's voice."""
        names = getattr(ensemble, "adapted_members", [])
        return bool(names) and all(n in self.calibration for n in names)

    def _member_input(self, ensemble, name: str, raw: np.ndarray) -> np.ndarray:
        """What ``ensemble`` pools of member ``name``, whose ``predict_proba`` gave ``raw`` (``member_proba``),
        in the ensemble's class order (a class the member does not know: 0)."""
        from .evaluation import in_label_order

        member = next(m for m in self.models if m.name == name)
        return in_label_order(ensemble.member_proba(raw, member.card), member.model.classes_, ensemble.classes_)

    def warm_up(self) -> "Predictor":
        """Predict once on a second of a synthetic vowel, so that the first real answer does not pay for the
        frameworks' first call (graph tracing, lazy set-up: 0.52 s for the shipped models, against a 56 ms
        median after it; ``benchmarks/bench_inference.py``). Returns ``self``."""
        t = np.arange(16000) / 16000
        vowel = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * (1.2 + np.sin(2 * np.pi * 4 * t))
        self.predict((0.1 * vowel).astype(np.float32), 16000)
        return self

    def predict_file(self, path, **kw) -> dict:
        y = load_audio(path, trim=False, normalize=None)
        return self.predict(y, 16000, **kw)

    def timeline(self, y: np.ndarray, sr: int, *, window_s: float = 3.0, hop_s: float = 1.0) -> list[dict]:
        """Sliding-window predictions: a list of ``{"start_s", "end_s", "speech": bool, "models": {...},
        "ensemble": {...}}`` (``ensemble``: the ``best_estimate``). Windows that do not sound like speech
        (``ser_core.speech.speech_check``) are marked, with the ``reason``, and not classified."""
        y = prepare(y, sr, trim=False, normalize=None)
        sr = 16000
        win, hop = int(window_s * sr), int(hop_s * sr)
        starts = range(0, max(1, len(y) - win + hop), hop) if len(y) > win else [0]
        return [{"start_s": s / sr, "end_s": min(s + win, len(y)) / sr, **self.judge(y[s:s + win], sr)}
                for s in starts]

    def judge(self, y: np.ndarray, sr: int) -> dict:
        """One stretch of audio as the timeline shows it: ``{"speech": True, "models": predict(y, sr),
        "ensemble": best_estimate's probabilities}``, or ``{"speech": False, "reason", "models": {},
        "ensemble": {}}`` when it does not sound like speech (``ser_core.speech.speech_check``: silence, noise
        and music are marked, not classified)."""
        is_speech, reason = speech_check(y, sr)
        if not is_speech:
            return {"speech": False, "reason": reason, "models": {}, "ensemble": {}}
        preds = self.predict(y, sr)
        return {"speech": True, "models": preds, "ensemble": self.best_estimate(preds)[1]}

    def rows(self, preds: dict) -> list[dict]:
        """``predict``'s ``preds`` as the command line reports them: one ``{"model", "label", "probabilities"}``
        per model with its ``"arousal"`` and ``"valence"`` (``taxonomy.dimension_reading``: the levels'
        probabilities, where its labels have them), plus ``"uncertain": True`` below the model's "not sure" threshold (absent otherwise) and, for
        speaker-adaptive models, ``"calibrated"`` (``calibration_status``)."""
        thresholds, status, out = self.thresholds(), self.calibration_status(), []
        for name, probs in preds.items():
            row = {"model": name, "label": max(probs, key=probs.get), "probabilities": probs,
                   **dimension_reading(probs)}
            if is_uncertain(probs, thresholds.get(name)):
                row["uncertain"] = True
            out.append({**row, "calibrated": status[name]} if name in status else row)
        return out

    def thresholds(self) -> dict:
        """``{model name: threshold or None}``: below its threshold a model's top probability means "not sure"
        (an ensemble pooling its adaptive members too: its adapted pooling's threshold)."""
        return {m.name: ((m.card.get("adapted") or {}).get("calibration") or {}).get("threshold", m.threshold)
                if m.model.feature_set is None and self.adapted(m.model) else m.threshold for m in self.models}

    def weights(self) -> dict:
        """Ensemble weights: each model's CV UAR (models without one weigh as the mean of the others)."""
        uars = {m.name: m.uar for m in self.models}
        known = [u for u in uars.values() if u is not None]
        fill = float(np.mean(known)) if known else 1.0
        return {k: (v if v is not None else fill) for k, v in uars.items()}

    def saved_ensemble(self) -> LoadedModel | None:
        """The saved ensemble (card ``model`` "ensemble") among the reported models, or None."""
        return next((m for m in self.models if m.card.get("model") == ENSEMBLE and not m.auxiliary), None)

    def best_estimate(self, preds: dict) -> tuple[str | None, dict]:
        """The answer to lead with, from ``predict``'s ``preds``: ``(name, probabilities)`` of the saved ensemble
        when one is loaded, else ``(None, the models' CV-UAR-weighted mean)`` (``ensemble``)."""
        saved = self.saved_ensemble()
        return (saved.name, preds[saved.name]) if saved else (None, ensemble(preds, self.weights()))


_USER = "user"  # the speaker label of prediction-time clips


MAX_RECORDING_S = 120.0  # longer recordings are refused: the timeline costs one prediction per second per model
TIMELINE_AFTER_S = 6.0  # recordings longer than this get an emotion-over-time chart, not just one label


def analyse_audio(src, predictor, *, max_duration_s: float = MAX_RECORDING_S,
                  timeline_after_s: float = TIMELINE_AFTER_S, window_s: float = 3.0,
                  segments_after_s: float = float("inf")) -> dict:
    """Everything the Demo page shows for one recording (``src``: path, bytes or binary file object).

    Returns ``{"is_speech": True, "y": (n,) float32 at 16 kHz (untrimmed), "sr", "speech": (start, end) sample
    indices of the trimmed region the models hear, "predictions": {model: {label: p}}, "lead": the saved
    ensemble's name or None, "ensemble": {label: p} (``Predictor.best_estimate``), "weights", "timings",
    "timeline": list of windows or None, "segments": ``ser_core.segments.predict_segments`` of a recording longer
    than ``segments_after_s``, else None}``; for a recording that does not sound like speech (silence included,
    ``ser_core.speech.speech_check``), or a long one in which the voice activity detector finds no speech
    segment (``NO_SEGMENTS``: music the speech check lets through, e.g. a sung tone with vibrato), only
    ``{"is_speech": False, "reason"}``. Raises the ``SERError`` subclasses for unusable audio (unreadable,
    empty, longer than ``max_duration_s``)."""
    from .segments import NO_SEGMENTS, predict_segments

    y, is_speech, reason = speech_check_file(src, max_duration_s=max_duration_s)
    if not is_speech:
        return {"is_speech": False, "reason": reason}
    sr = 16000
    segments = predict_segments(y, sr, predictor) if len(y) / sr > segments_after_s else None
    if segments == []:
        return {"is_speech": False, "reason": NO_SEGMENTS}
    top_db = next((get_feature_set(m.model.feature_set).top_db for m in predictor.models if m.model.feature_set),
                  20)
    _, (start, end) = trim_silence(y, top_db=top_db)
    timings: dict = {}
    preds = predictor.predict(y, sr, timings=timings)
    lead, best = predictor.best_estimate(preds)
    duration = len(y) / sr
    timeline = None
    if duration > timeline_after_s:  # at most ~60 windows, at least one per second
        timeline = predictor.timeline(y, sr, window_s=window_s, hop_s=max(1.0, round(duration / 60)))
    return {"is_speech": True, "y": y, "sr": sr, "speech": (int(start), int(end)), "predictions": preds,
            "lead": lead, "ensemble": best, "weights": predictor.weights(), "timings": timings, "timeline": timeline,
            "segments": segments}


def calibrated_proba(model, card: dict, X, familiarity=None) -> np.ndarray:
    """``model.predict_proba(X)`` calibrated as its card's ``calibration`` says (temperature, or temperature
    plus top-label map, or a temperature that grows with the clips' ``familiarity`` scores; unchanged when the
    card has none: models saved before calibration existed)."""
    return apply_calibration(model.predict_proba(X), card.get("calibration"), familiarity)


def is_uncertain(probs: dict, threshold: float | None) -> bool:
    """True when the top probability of ``probs`` ({label: probability}) is below ``threshold`` (None: never)."""
    return threshold is not None and bool(probs) and max(probs.values()) < threshold


NOT_SURE = "not sure"  # said instead of a label when the top probability is below the model's threshold
CANDIDATES = 3  # "not sure" lists the top 2 labels, and a third ...
CANDIDATE_MIN = 0.1  # ... when it has at least this probability (below, it adds noise, not information)


def describe_prediction(probs: dict, threshold: float | None = None) -> dict:
    """What to say about one model's probabilities ``probs`` ({label: probability}) given its "not sure"
    ``threshold`` (``LoadedModel.threshold``; None: always sure). Returns ``{"label", "confidence"}`` (the top
    label and its probability), ``"uncertain"`` (``is_uncertain``), ``"candidates"`` (the top 2-3 ``(label,
    probability)``), ``"answer"`` (the label, or "not sure"), ``"detail"`` ("87% confidence", or the candidates
    "angry 38%, fearful 31%, happy 12%") and ``"text"`` ("angry 87%", or "not sure: angry 38%, fearful 31%,
    happy 12%")."""
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    label, confidence = ranked[0]
    candidates = ranked[:2] + [kv for kv in ranked[2:CANDIDATES] if kv[1] >= CANDIDATE_MIN]
    uncertain = is_uncertain(probs, threshold)
    listed = ", ".join(f"{l} {p:.0%}" for l, p in candidates)
    return {"label": label, "confidence": confidence, "uncertain": uncertain, "candidates": candidates,
            "answer": NOT_SURE if uncertain else label,
            "detail": listed if uncertain else f"{confidence:.0%} confidence",
            "text": f"{NOT_SURE}: {listed}" if uncertain else f"{label} {confidence:.0%}"}


def evaluate_model(model, card: dict, X, y, familiarity=None, adapted: bool = False) -> dict:
    """``compute_metrics`` of a saved model (``load_trained``'s ``(model, card)``) on features ``X`` -- already
    normalised as the model expects -- against true labels ``y``, from its calibrated probabilities: UAR,
    accuracy, ..., ``ece``, ``brier``, ``wrong_over_90``, arousal and valence (``dimension_metrics``), plus
    ``unknown_labels`` (labels of ``y`` the model does not know; they count as errors). ``familiarity``: the
    clips' scores (``ser_core.familiarity``), for a model whose calibration reads them. ``adapted``: an
    ensemble's adapted pooling (``X`` from ``robustness.model_inputs(..., adapt_groups=...)``)."""
    from .evaluation import compute_metrics, dimension_metrics

    if adapted:  # an ensemble pooling its speaker-adaptive members too, calibrated as that pooling was
        proba = apply_calibration(model.predict_proba(X, adapted=True), card["adapted"]["calibration"], familiarity)
    else:
        proba = calibrated_proba(model, card, X, familiarity)
    classes = [str(c) for c in model.classes_]
    y = np.asarray(y).astype(str)
    pred = np.asarray(classes)[proba.argmax(1)]
    m = compute_metrics(y, pred, sorted(set(classes) | set(y)), proba=proba, classes=classes)
    m.update(dimension_metrics(y, proba, classes), unknown_labels=sorted(set(y) - set(classes)))
    return m


def ensemble(preds: dict, weights: dict | None = None) -> dict:
    """Weighted mean of the models' probabilities over the union of their labels (missing label = 0)."""
    if not preds:
        return {}
    labels = sorted({l for p in preds.values() for l in p})
    w = {k: (weights or {}).get(k, 1.0) for k in preds}
    total = sum(w.values()) or 1.0
    return {l: float(sum(w[k] * p.get(l, 0.0) for k, p in preds.items()) / total) for l in labels}
