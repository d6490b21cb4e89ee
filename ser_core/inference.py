"""Predictions of several trained models on one clip, computing each feature set once.

    >>> p = Predictor.from_dir()                    # every model in trained_models/
    >>> res = p.predict_file("speech.wav")          # {model_name: {label: probability}}
    >>> tl = p.timeline(y, sr, window_s=3, hop_s=1)  # emotion over time for long recordings
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .audio import load_audio, prepare
from .errors import AudioError
from .features import compute, get_feature_set
from .saved import list_trained, load_trained


@dataclass
class LoadedModel:
    name: str
    model: object
    card: dict
    load_time_s: float

    @property
    def uar(self):
        return (self.card.get("cv", {}).get("metrics", {}).get("uar") or {}).get("mean")


class Predictor:
    """Holds loaded models; ``predict(y, sr)`` returns ``{name: {label: prob}}`` for each model."""

    def __init__(self, models: list[LoadedModel]):
        self.models = models

    @classmethod
    def from_dir(cls, names=None, root=None) -> "Predictor":
        cards = list_trained(root)
        wanted = [c["name"] for c in cards] if names in (None, "all", ["all"]) else list(names)
        loaded = []
        for name in wanted:
            t0 = time.perf_counter()
            model, card = load_trained(name, root)
            loaded.append(LoadedModel(card["name"], model, card, time.perf_counter() - t0))
        return cls(loaded)

    def features(self, y: np.ndarray, sr: int) -> dict:
        """``{feature_set_name: (1, ...) array}``: each set computed once for all models that use it."""
        out = {}
        for m in self.models:
            fs_name = m.model.feature_set
            if fs_name not in out:
                out[fs_name] = compute(y, sr, get_feature_set(fs_name))[None]
        return out

    def predict(self, y: np.ndarray, sr: int, *, timings: dict | None = None) -> dict:
        feats = {}
        results = {}
        for m in self.models:
            fs_name = m.model.feature_set
            t0 = time.perf_counter()
            if fs_name not in feats:
                feats[fs_name] = compute(y, sr, get_feature_set(fs_name))[None]
            t1 = time.perf_counter()
            proba = m.model.predict_proba(feats[fs_name])[0]
            t2 = time.perf_counter()
            if timings is not None:
                timings[m.name] = {"features_ms": 1000 * (t1 - t0), "model_ms": 1000 * (t2 - t1)}
            results[m.name] = {str(c): float(p) for c, p in zip(m.model.classes_, proba)}
        return results

    def predict_file(self, path, **kw) -> dict:
        y = load_audio(path, trim=False, normalize=None)
        return self.predict(y, 16000, **kw)

    def timeline(self, y: np.ndarray, sr: int, *, window_s: float = 3.0, hop_s: float = 1.0) -> list[dict]:
        """Sliding-window predictions: a list of ``{"start_s", "end_s", "speech": bool, "models": {...},
        "ensemble": {...}}``. Windows with no speech are marked and not classified."""
        y = prepare(y, sr, trim=False, normalize=None)
        sr = 16000
        win, hop = int(window_s * sr), int(hop_s * sr)
        starts = range(0, max(1, len(y) - win + hop), hop) if len(y) > win else [0]
        out = []
        for s in starts:
            seg = y[s:s + win]
            entry = {"start_s": s / sr, "end_s": (s + len(seg)) / sr}
            try:
                preds = self.predict(seg, sr)
            except AudioError as exc:  # silence or too short: no speech in this window
                entry.update(speech=False, reason=str(exc), models={}, ensemble={})
            else:
                entry.update(speech=True, models=preds, ensemble=ensemble(preds, self.weights()))
            out.append(entry)
        return out

    def weights(self) -> dict:
        """Ensemble weights: each model's CV UAR (models without one weigh as the mean of the others)."""
        uars = {m.name: m.uar for m in self.models}
        known = [u for u in uars.values() if u is not None]
        fill = float(np.mean(known)) if known else 1.0
        return {k: (v if v is not None else fill) for k, v in uars.items()}


def ensemble(preds: dict, weights: dict | None = None) -> dict:
    """Weighted mean of the models' probabilities over the union of their labels (missing label = 0)."""
    if not preds:
        return {}
    labels = sorted({l for p in preds.values() for l in p})
    w = {k: (weights or {}).get(k, 1.0) for k in preds}
    total = sum(w.values()) or 1.0
    return {l: float(sum(w[k] * p.get(l, 0.0) for k, p in preds.items()) / total) for l in labels}
