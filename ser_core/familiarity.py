"""How familiar a clip sounds to a model: how far its features lie from the clips the model was trained on.

A model trained on three studio corpora is right about half as often on a fourth corpus as on new speakers of
the three, so one confidence scale cannot be honest for both (docs/cross_corpus.md). The calibration of a model
trained on several corpora therefore lets its temperature grow with this score (``ser_core.calibration``,
method ``familiarity``), fitted on out-of-fold predictions of both kinds: new speakers of the training corpora
(speaker-grouped folds) and corpora held out entirely (leave-one-corpus-out).

The score is a Mahalanobis distance in the main directions of the training clips' reference features (the
``expressive`` set, whatever set the model reads): the features z-scored with the training statistics,
projected on their first ``N_COMPONENTS`` principal components, each divided by its spread there, and
``log(mean(w ** 2))`` of those ``w``. About 0 for a typical training clip; higher the stranger the clip.

    >>> fam = Familiarity().fit(X_train)        # (n, d) reference features of the training clips
    >>> fam.score(X_new)                        # (m,) log mean squared whitened distance
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError

REFERENCE_SET = "expressive"  # the feature set the score reads, for every model
N_COMPONENTS = 50  # principal directions kept: the rest of the 1,206 are mostly noise for 3,000 clips
FAMILIARITY_FILE = "familiarity.npz"  # beside a saved model whose calibration reads the score


class Familiarity:
    """``fit(X)`` on the training clips' reference features ``(n, d)``; ``score(X)`` -> ``(m,)``."""

    def __init__(self, n_components: int = N_COMPONENTS):
        self.n_components = n_components

    def fit(self, X) -> "Familiarity":
        X = _check(X)
        self.mean_ = X.mean(0)
        scale = X.std(0)
        self.scale_ = np.where(scale > 1e-8, scale, 1.0)
        Z = (X - self.mean_) / self.scale_
        k = max(1, min(self.n_components, len(X) - 1, X.shape[1]))
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        self.components_ = vt[:k].astype(np.float32)  # (k, d)
        spread = s[:k] / np.sqrt(max(1, len(X) - 1))
        self.spread_ = np.where(spread > 1e-8, spread, 1.0)
        return self

    def score(self, X) -> np.ndarray:
        if not hasattr(self, "components_"):
            raise ConfigError("Familiarity is not fitted yet; call fit() first.")
        Z = (_check(X) - self.mean_) / self.scale_
        W = (Z @ self.components_.T) / self.spread_
        return np.log(np.mean(np.square(W), axis=1) + 1e-12)

    def save(self, path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, mean=self.mean_, scale=self.scale_, components=self.components_, spread=self.spread_)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "Familiarity":
        with np.load(path) as z:
            fam = cls(len(z["components"]))
            fam.mean_, fam.scale_, fam.components_, fam.spread_ = (z[k] for k in ("mean", "scale", "components",
                                                                                  "spread"))
        return fam


def _check(X) -> np.ndarray:
    X = np.nan_to_num(np.asarray(X, dtype=np.float64))
    if X.ndim != 2:
        raise ConfigError(f"Familiarity reads (n, d) utterance features; got shape {X.shape}.")
    return X


def fold_familiarity(R, train, test) -> np.ndarray:
    """``(len(test),)`` scores of the ``test`` rows of ``R`` (reference features) against the ``train`` rows: what a
    fold's model would have thought of its test clips."""
    return Familiarity().fit(R[train]).score(R[test])


__all__ = ["FAMILIARITY_FILE", "Familiarity", "N_COMPONENTS", "REFERENCE_SET", "fold_familiarity"]
