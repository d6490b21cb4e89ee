"""Statistics of cross-validation runs, with the speaker as the unit: confidence intervals, paired comparisons,
and breakdowns by speaker, gender and intensity, all from a run's out-of-fold predictions.

Clips of one speaker are not independent (a voice the model handles badly drags all of its clips down), so
every resampling here draws whole speakers. A run's score is the mean over its folds of each fold's metric
(what the leaderboard shows); a resampled run keeps each drawn speaker's clips in their folds and scores each
fold on the clips it got.

- ``bootstrap_ci``: percentile interval of that score over speakers drawn with replacement.
- ``paired_difference``: two runs on the same clips and folds; the interval of the difference comes from the
  same speaker draws for both runs, and the p-value from a permutation test that swaps, speaker by speaker, which
  run predicted that speaker's clips (under "no difference" the swap changes nothing).
- ``breakdown``: UAR of the pooled out-of-fold predictions of each speaker, gender and intensity.

Every metric is computed from confusion counts exactly as ``ser_core.evaluation.compute_metrics`` computes it,
so the point estimates equal the stored means. Without speaker labels (a custom folder) the unit is the clip.

    >>> ci = bootstrap_ci(y, pred, speaker, fold, labels)        # {"uar": {"estimate", "low", "high"}, ..., "unit"}
    >>> d = paired_difference(y, pred_a, pred_b, speaker, fold, labels)   # {"uar": {"difference", "low", "high", "p"}}
"""
from __future__ import annotations

import numpy as np

from .evaluation import SUMMARY_METRICS

CONFIDENCE = 0.95  # two-sided level of every interval
N_BOOTSTRAP = 2000  # speaker draws per interval: the 2.5 % and 97.5 % quantiles move by < 0.005 UAR between seeds
N_PERMUTATIONS = 5000  # speaker swaps per p-value: smallest p 1/5001, and p = 0.05 is known to about ±0.006
ALPHA = 1 - CONFIDENCE  # "significantly worse": p below this
GENDER_GAP = 0.10  # a UAR gap between genders above this is flagged
UNKNOWN = "unknown"  # the manifest's value for a speaker, gender or intensity the corpus does not give
_CHUNK = 500  # resamples evaluated at once: (chunk, folds, k, k) counts in memory


def confusion_metrics(cm) -> dict[str, np.ndarray]:
    """``(..., k, k)`` confusion counts (rows: true label, columns: predicted) -> ``{metric: (...)}`` for
    ``SUMMARY_METRICS``, as ``compute_metrics`` defines them: UAR and macro F1 average over the labels that
    have a true clip; precision, F1 or a recall with nothing to divide is 0."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)  # true clips, predictions per label
    n, present = support.sum(-1), support > 0
    n_present = present.sum(-1)
    recall, precision = _ratio(tp, support), _ratio(tp, predicted)
    f1 = _ratio(2 * tp, support + predicted)
    return {"accuracy": _ratio(tp.sum(-1), n),
            "weighted_precision": _ratio((precision * support).sum(-1), n),
            "weighted_recall": _ratio((recall * support).sum(-1), n),
            "uar": _ratio((recall * present).sum(-1), n_present),
            "macro_f1": _ratio((f1 * present).sum(-1), n_present)}


def _ratio(a, b):
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _cells(y, pred, unit, fold, labels) -> np.ndarray:
    """``(units, folds, k, k)`` confusion counts of each unit (speaker or clip) in each fold; units and folds in
    sorted order."""
    index = {l: i for i, l in enumerate(labels)}
    yi = np.array([index[v] for v in np.asarray(y, dtype=str)], dtype=int)
    pi = np.array([index[v] for v in np.asarray(pred, dtype=str)], dtype=int)
    _, ui = np.unique(np.asarray(unit, dtype=str), return_inverse=True)
    _, fi = np.unique(np.asarray(fold), return_inverse=True)
    cells = np.zeros((ui.max(initial=-1) + 1, fi.max(initial=-1) + 1, len(labels), len(labels)))
    np.add.at(cells, (ui, fi, yi, pi), 1)
    return cells


def _scores(cells, weights) -> dict[str, np.ndarray]:
    """Mean over folds of each fold's metric, for each row of ``weights`` ``(r, units)`` (how often each unit
    is drawn); a fold that got no clip in a draw is left out of that draw's mean."""
    out = {m: [] for m in SUMMARY_METRICS}
    flat = cells.reshape(len(cells), -1)
    for start in range(0, len(weights), _CHUNK):
        cm = (weights[start:start + _CHUNK] @ flat).reshape(-1, *cells.shape[1:])  # (chunk, folds, k, k)
        used = cm.sum((-1, -2)) > 0
        for m, v in confusion_metrics(cm).items():
            out[m].append((v * used).sum(-1) / np.maximum(used.sum(-1), 1))
    return {m: np.concatenate(v) for m, v in out.items()}


def _units(speaker, n) -> tuple[np.ndarray, str]:
    """The resampling unit of each clip: its speaker, or the clip itself when speakers are not known."""
    if speaker is None or len(set(np.asarray(speaker, dtype=str)) - {UNKNOWN}) < 2:
        return np.arange(n).astype(str), "clip"
    return np.asarray(speaker, dtype=str), "speaker"


def _interval(values) -> tuple[float, float]:
    low, high = np.quantile(values, [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


def bootstrap_ci(y, pred, speaker, fold, labels, *, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Percentile ``CONFIDENCE`` interval of each ``SUMMARY_METRICS`` score (mean over folds) of one run,
    resampling speakers with replacement.

    y, pred: ``(n,)`` true and predicted labels; speaker: ``(n,)`` (None or all ``"unknown"``: clips are
    resampled); fold: ``(n,)`` test fold of each clip; labels: the run's labels. Returns ``{metric: {"estimate",
    "low", "high"}, "unit": "speaker" | "clip", "n_units": int}``."""
    unit, kind = _units(speaker, len(y))
    cells = _cells(y, pred, unit, fold, labels)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(cells), np.full(len(cells), 1 / len(cells)), size=n_boot)
    point, boot = _scores(cells, np.ones((1, len(cells)))), _scores(cells, draws)
    out = {m: dict(zip(("low", "high"), _interval(boot[m])), estimate=float(point[m][0])) for m in SUMMARY_METRICS}
    return {**out, "unit": kind, "n_units": len(cells)}


def bootstrap_ece(y_idx, proba, speaker, *, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Percentile ``CONFIDENCE`` interval of the pooled top-label ECE (``ser_core.calibration``) of ``proba``
    (``(n, k)``, calibrated) against ``y_idx`` (``(n,)`` column of each true label, -1: none), resampling
    speakers as ``bootstrap_ci`` does: ``{"estimate", "low", "high", "unit", "n_units"}``. Exact: each draw's
    ECE comes from the drawn units' per-bin counts, confidence and correct answers."""
    from .calibration import N_BINS

    unit, kind = _units(speaker, len(y_idx))
    proba = np.asarray(proba, dtype=float)
    conf = proba.max(1)
    correct = (proba.argmax(1) == np.asarray(y_idx)).astype(float)
    bins = np.clip(np.ceil(conf * N_BINS).astype(int) - 1, 0, N_BINS - 1)
    _, ui = np.unique(unit, return_inverse=True)
    cells = np.zeros((ui.max(initial=-1) + 1, 3, N_BINS))  # per unit and bin: clips, confidence, correct
    for row, values in enumerate((np.ones(len(conf)), conf, correct)):
        np.add.at(cells[:, row], (ui, bins), values)
    draws = np.random.default_rng(seed).multinomial(len(cells), np.full(len(cells), 1 / len(cells)), size=n_boot)

    def ece(weights):
        count, sconf, scorrect = np.einsum("ru,ubk->rbk", weights, cells).transpose(1, 0, 2)
        return np.abs(scorrect - sconf).sum(-1) / np.maximum(count.sum(-1), 1)

    low, high = _interval(ece(draws))
    return {"estimate": float(ece(np.ones((1, len(cells))))[0]), "low": low, "high": high, "unit": kind,
            "n_units": len(cells)}


def paired_difference(y, pred_a, pred_b, speaker, fold, labels, *, n_boot: int = N_BOOTSTRAP,
                      n_perm: int = N_PERMUTATIONS, seed: int = 0) -> dict:
    """Run A minus run B, judged on the same clips in the same folds (rows aligned: ``y``, ``speaker`` and
    ``fold`` shared). Per metric: ``difference`` (A - B of the scores), ``low``/``high`` (paired bootstrap over
    speakers) and ``p`` (two-sided permutation test: each speaker's predictions swapped between A and B with
    probability 1/2; ``(1 + #|swapped difference| >= |difference|) / (1 + n_perm)``, 1 for identical runs).
    Also ``"unit"`` and ``"n_units"`` as in ``bootstrap_ci``."""
    unit, kind = _units(speaker, len(y))
    a, b = _cells(y, pred_a, unit, fold, labels), _cells(y, pred_b, unit, fold, labels)
    rng = np.random.default_rng(seed)
    n_units = len(a)
    ones = np.ones((1, n_units))
    observed = {m: float(_scores(a, ones)[m][0] - _scores(b, ones)[m][0]) for m in SUMMARY_METRICS}
    draws = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_boot)
    boot_a, boot_b = _scores(a, draws), _scores(b, draws)
    swap = (rng.random((n_perm, n_units)) < 0.5).astype(float)
    perm_a = _scores(np.concatenate([a, b]), np.hstack([1 - swap, swap]))
    perm_b = _scores(np.concatenate([a, b]), np.hstack([swap, 1 - swap]))
    out = {}
    for m in SUMMARY_METRICS:
        low, high = _interval(boot_a[m] - boot_b[m])
        extreme = np.abs(perm_a[m] - perm_b[m]) >= abs(observed[m]) - 1e-12
        out[m] = {"difference": observed[m], "low": low, "high": high,
                  "p": float((1 + extreme.sum()) / (1 + n_perm))}
    return {**out, "unit": kind, "n_units": n_units}


def group_uar(y, pred, groups, labels) -> dict[str, dict]:
    """UAR of the pooled predictions of each group: ``{group: {"uar": float, "clips": int}}``, groups sorted."""
    groups = np.asarray(groups, dtype=str)
    names = sorted(set(groups.tolist()))
    cells = _cells(y, pred, groups, np.zeros(len(groups)), labels)[:, 0]  # (groups, k, k); order of np.unique
    uar = confusion_metrics(cells)["uar"]
    return {g: {"uar": float(u), "clips": int(c.sum())} for g, u, c in zip(names, uar, cells)}


def breakdown(y, pred, labels, **groups) -> dict:
    """UAR per value of each grouping given (e.g. ``speaker=``, ``gender=``, ``intensity=``: ``(n,)`` arrays;
    None or all ``"unknown"`` leaves a grouping out), plus the largest UAR gap between known genders and whether
    it exceeds ``GENDER_GAP``: ``{"speaker": {...}, "gender": {...}, ..., "gender_gap": float | None,
    "gender_gap_flag": bool}``."""
    out = {name: group_uar(y, pred, g, labels) for name, g in groups.items()
           if g is not None and set(np.asarray(g, dtype=str)) != {UNKNOWN}}
    known = [v["uar"] for k, v in out.get("gender", {}).items() if k != UNKNOWN]
    gap = float(max(known) - min(known)) if len(known) >= 2 else None
    return {**out, "gender_gap": gap, "gender_gap_flag": gap is not None and gap > GENDER_GAP}


__all__ = ["ALPHA", "CONFIDENCE", "GENDER_GAP", "N_BOOTSTRAP", "N_PERMUTATIONS", "bootstrap_ci", "bootstrap_ece",
           "breakdown",
           "confusion_metrics", "group_uar", "paired_difference"]
