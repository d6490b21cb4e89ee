"""Honest confidence: how far a model's probabilities can be trusted, and temperature scaling to fix them.

Every function takes ``y_true_idx`` -- each clip's true label as a column index into ``proba`` (``-1``, or any
index outside the columns, for a label the model does not know: always a wrong answer) -- and ``proba``
``(n_clips, n_classes)`` with rows summing to 1.

    >>> ece = expected_calibration_error(y_idx, proba)          # 0 = confidence matches accuracy
    >>> T = TemperatureScaler().fit(proba_val, y_val).temperature_
    >>> calibrated = apply_temperature(proba_new, T)            # same arg-max, honest confidence
    >>> cal, temps = cross_fitted_calibration(oof, y_idx, fold)  # each fold calibrated by the other folds

Temperature scaling (Guo et al., 2017) divides the logits by one number ``T > 0``: ``T > 1`` flattens
over-confident probabilities, ``T < 1`` sharpens timid ones; the arg-max (so accuracy and UAR) never changes.
Models here return probabilities, so ``log(p)`` (clipped at ``EPS``) serves as the logits.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12  # probabilities are clipped here before the log: log(0) would be -inf
N_BINS = 15  # equal-width confidence bins of the expected calibration error (the usual choice, Guo et al.)
OVERCONFIDENT = 0.9  # a wrong answer given with more than this probability is an over-confident error
OVERCONFIDENT_LIMIT = 0.03  # at most this share of the wrong answers may be over-confident, else a ceiling
TEMPERATURE_BOUNDS = (0.05, 20.0)  # search range of T: from 20x sharper to 20x flatter
UNSURE_BELOW = 1 / 3  # "not sure": answers of a confidence that is right less than 1 time in 3 (out-of-fold)


def label_indices(y, classes) -> np.ndarray:
    """``(n,)`` int: each label's column in ``classes`` order, ``-1`` for a label not among ``classes``."""
    index = {str(c): i for i, c in enumerate(classes)}
    return np.array([index.get(str(v), -1) for v in np.asarray(y).ravel()], dtype=int)


def _check(y_true_idx, proba):
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true_idx, dtype=int).ravel()
    if proba.ndim != 2 or len(proba) != len(y):
        raise ValueError(f"proba must be (n_clips, n_classes) with one row per label; got {proba.shape} for "
                         f"{len(y)} labels.")
    return y, proba


def _correct(y, proba) -> np.ndarray:
    """``(n,)`` bool: the arg-max is the true label (never for a label outside the columns)."""
    return proba.argmax(1) == y if proba.shape[1] else np.zeros(len(y), bool)


def reliability_curve(y_true_idx, proba, n_bins: int = N_BINS) -> dict:
    """Top-label reliability diagram data over ``n_bins`` equal-width confidence bins ``(lower, upper]`` (the
    first bin includes 0): ``{"lower", "upper", "count", "confidence", "accuracy"}``, one list entry per bin;
    ``confidence`` (mean top probability) and ``accuracy`` are ``None`` for an empty bin. JSON-ready;
    ``pandas.DataFrame(curve)`` gives one row per bin."""
    y, proba = _check(y_true_idx, proba)
    conf, correct = proba.max(1) if proba.size else np.zeros(len(y)), _correct(y, proba)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    sum_correct = np.bincount(bins, weights=correct.astype(float), minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": count.tolist(),
            "confidence": [float(s / c) if c else None for s, c in zip(sum_conf, count)],
            "accuracy": [float(s / c) if c else None for s, c in zip(sum_correct, count)]}


def expected_calibration_error(y_true_idx, proba, n_bins: int = N_BINS) -> float:
    """Top-label ECE: ``sum_b (n_b / n) |accuracy_b - mean confidence_b|`` over ``n_bins`` equal-width bins of
    the top probability. 0 when confidence matches accuracy; 0.0 for no clips."""
    curve = reliability_curve(y_true_idx, proba, n_bins)
    n = sum(curve["count"])
    return float(sum(c * abs(a - p) for c, a, p in zip(curve["count"], curve["accuracy"], curve["confidence"])
                     if c) / n) if n else 0.0


def brier_score(y_true_idx, proba) -> float:
    """Multi-class Brier score: mean over clips of ``sum_k (p_k - onehot_k)^2`` (0 best, 2 worst; a label
    outside the columns has an all-zero one-hot)."""
    y, proba = _check(y_true_idx, proba)
    if not len(y):
        return 0.0
    onehot = (y[:, None] == np.arange(proba.shape[1])[None]).astype(float)
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def overconfident_errors(y_true_idx, proba, threshold: float = OVERCONFIDENT) -> float:
    """Fraction of the WRONG answers whose top probability is above ``threshold`` (0.0 when none is wrong)."""
    y, proba = _check(y_true_idx, proba)
    wrong = ~_correct(y, proba)
    return float(np.mean(proba[wrong].max(1) > threshold)) if wrong.any() and proba.shape[1] else 0.0


def probability_metrics(y_true_idx, proba) -> dict:
    """``{"ece", "brier", "wrong_over_90"}``: the calibration metrics stored with every fold."""
    return {"ece": expected_calibration_error(y_true_idx, proba), "brier": brier_score(y_true_idx, proba),
            "wrong_over_90": overconfident_errors(y_true_idx, proba, OVERCONFIDENT)}


def _log_proba(proba) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), EPS, 1.0))


def _softmax(z) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def apply_temperature(proba, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row, ``(n, k)`` -> ``(n, k)`` (or one clip ``(k,)`` -> ``(k,)``); ``T > 1``
    flattens, ``T < 1`` sharpens. ``temperature``: one number, or one per row ``(n,)``.

    >>> apply_temperature([[0.9, 0.1]], 2.0)   # array([[0.75, 0.25]])"""
    t = np.asarray(temperature, dtype=np.float64)
    if not np.all(t > 0):
        raise ValueError(f"The temperature must be > 0; got {temperature}.")
    proba = np.asarray(proba, dtype=np.float64)
    if proba.size == 0:
        return proba.copy()
    return _softmax(_log_proba(proba) / (t[..., None] if t.ndim else float(t)))


class TemperatureScaler:
    """Learns one temperature ``T`` minimising the negative log-likelihood of ``softmax(log(p) / T)``.

    ``fit(proba, y_idx)`` searches ``log T`` in ``log(bounds)`` (bounded 1-D minimisation) and sets
    ``temperature_``; ``transform(proba)`` applies it. Clips whose label is outside the columns carry no
    information about T and are ignored; with no usable clip ``temperature_`` is 1 (no change)."""

    def __init__(self, bounds: tuple = TEMPERATURE_BOUNDS):
        self.bounds = bounds

    def fit(self, proba, y_idx) -> "TemperatureScaler":
        from scipy.optimize import minimize_scalar

        y, proba = _check(y_idx, proba)
        known = (y >= 0) & (y < proba.shape[1])
        if not known.any():
            self.temperature_ = 1.0
            return self
        logits, y = _log_proba(proba[known]), y[known]

        def nll(log_t):
            z = logits / np.exp(log_t)
            z = z - z.max(1, keepdims=True)
            return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))

        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
        self.temperature_ = float(np.exp(res.x))
        return self

    def transform(self, proba) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise ValueError("TemperatureScaler is not fitted yet; call fit() first.")
        return apply_temperature(proba, self.temperature_)

    def __repr__(self):
        return f"TemperatureScaler(bounds={self.bounds})"


CALIBRATION_METHODS = ("temperature", "ece_temperature", "top_label", "top_logistic", "familiarity")
FAMILIARITY_SLOPE_BOUNDS = (0.0, 5.0)  # the temperature never shrinks as a clip grows stranger
_ECE_TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 81))  # ece_temperature's grid


def _ece_temperature(proba, y) -> float:
    """The temperature of ``_ECE_TEMPERATURES`` with the lowest ECE on ``(proba, y)`` (the smallest on a tie)."""
    eces = [expected_calibration_error(y, apply_temperature(proba, t)) for t in _ECE_TEMPERATURES]
    return float(_ECE_TEMPERATURES[int(np.argmin(eces))])


class ConfidenceCalibrator:
    """Temperature scaling, optionally followed by top-label calibration (Gupta & Ramdas, 2022).

    ``method="temperature"``: ``softmax(log(p) / T)``, ``T`` fitted by log-likelihood; ``"ece_temperature"``: the
    same with the ``T`` of lowest ECE on a grid (0.1-10), for probabilities whose log-likelihood temperature
    is dragged by a few near-certain mistakes (the Platt-scaled SVM: cross-fitted ECE 0.138 by log-likelihood,
    0.045 by ECE). The top-label methods, after the temperature, replace
    the top probability ``c`` by the out-of-fold accuracy of answers of that confidence, the other classes
    keeping their ratios and sharing ``1 - c``; the arg-max never changes:

    - ``"top_label"``: a non-decreasing isotonic map of ``c``, linearly interpolated (flexible, but with a few
      hundred clips it follows the noise);
    - ``"top_logistic"``: ``sigmoid(a * logit(c) + b)``, two numbers fitted by log-loss on whether each answer
      was right (Platt scaling of the top label).

    They serve models whose probabilities are mis-shaped rather than just too sharp (the SVM's Platt-scaled
    outputs: temperature leaves its ECE at 0.13, the isotonic map brings it to 0.05), and models whose most
    confident answers are wrong too often (fcnn_torch: 4.2 % of its errors above 90 % after temperature, 1.4 %
    after the logistic map).

    Ceiling: where, after all this, more than ``OVERCONFIDENT_LIMIT`` of the fitting clips' wrong answers are
    still above ``OVERCONFIDENT``, the top probability is capped at ``OVERCONFIDENT`` (``ceiling_``): a model
    that is often confidently wrong never shows more than 90 %. ``to_dict()`` / ``from_dict()`` keep it all in
    a model card (``calibration``)."""

    def __init__(self, method: str = "temperature", ceiling: bool = True):
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"Unknown calibration method '{method}'; choose from {', '.join(CALIBRATION_METHODS)}.")
        self.method = method
        self.ceiling = ceiling  # allow the 90 % ceiling where the fitting clips ask for it

    def fit(self, proba, y_idx, familiarity=None) -> "ConfidenceCalibrator":
        """``familiarity`` (``(n,)``, ``ser_core.familiarity`` scores of the clips): needed by the method
        ``familiarity``, whose temperature is ``T * exp(slope * familiarity)``; ignored by the others."""
        y, proba = _check(y_idx, proba)
        self.slope_ = None
        if self.method == "familiarity":
            if familiarity is None:
                raise ValueError("The familiarity calibration needs each clip's familiarity score.")
            self.temperature_, self.slope_ = _fit_familiarity(proba, y, np.asarray(familiarity, float))
        else:
            self.temperature_ = (_ece_temperature(proba, y) if self.method == "ece_temperature" and len(y)
                                 else TemperatureScaler().fit(proba, y).temperature_)
        self.confidence_in_ = self.confidence_out_ = self.logistic_ = self.ceiling_ = None
        if self.method == "top_logistic" and len(y):
            scaled = apply_temperature(proba, self.temperature_)
            self.logistic_ = _fit_logistic(_logit(scaled.max(1)), _correct(y, scaled).astype(float))
        if self.method == "top_label" and len(y):
            scaled = apply_temperature(proba, self.temperature_)
            conf, inverse = np.unique(scaled.max(1), return_inverse=True)
            count = np.bincount(inverse, minlength=len(conf))
            right = np.bincount(inverse, weights=_correct(y, scaled).astype(float), minlength=len(conf))
            fitted = _increasing_fit(right / count, count)
            keep = np.r_[True, fitted[1:] != fitted[:-1]] | np.r_[fitted[:-1] != fitted[1:], True]  # step ends
            self.confidence_in_, self.confidence_out_ = conf[keep], fitted[keep]
        if self.ceiling and len(y) and overconfident_errors(y, self.transform(proba, familiarity)) > \
                OVERCONFIDENT_LIMIT:
            self.ceiling_ = OVERCONFIDENT
        return self

    def temperatures(self, familiarity=None):
        """The temperature, or one per clip of ``familiarity`` (``(n,)``) for the ``familiarity`` method (a clip
        whose score is unknown gets ``temperature_``, a typical training clip's)."""
        slope = getattr(self, "slope_", None)
        if slope is None or familiarity is None:
            return self.temperature_
        return self.temperature_ * np.exp(slope * np.asarray(familiarity, dtype=np.float64))

    def transform(self, proba, familiarity=None) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise ValueError("ConfidenceCalibrator is not fitted yet; call fit() first.")
        out = apply_temperature(proba, self.temperatures(familiarity))
        ceiling = getattr(self, "ceiling_", None)
        if (self.confidence_in_ is None and self.logistic_ is None and ceiling is None) or out.size == 0:
            return out
        one = out.ndim == 1
        out = np.atleast_2d(out).copy()
        rows, top = np.arange(len(out)), out.argmax(1)
        c = out[rows, top]
        second = np.sort(out, axis=1)[:, -2] if out.shape[1] > 1 else np.zeros(len(out))
        # at least the value that keeps the top class on top, at most just under 1
        lowest = second / np.maximum(1 - c + second, EPS) + 1e-9
        if self.logistic_ is not None:
            a, b = self.logistic_
            mapped = 1 / (1 + np.exp(-(a * _logit(c) + b)))
        elif self.confidence_in_ is not None:
            mapped = np.interp(c, self.confidence_in_, self.confidence_out_)
        else:
            mapped = c
        c_new = np.clip(mapped, lowest, 1 - 1e-4 if ceiling is None else max(ceiling, 1 / out.shape[1]))
        rest = 1 - c
        out *= np.where(rest > EPS, (1 - c_new) / np.maximum(rest, EPS), 0.0)[:, None]
        out[rows, top] = c_new
        return out[0] if one else out

    def to_dict(self) -> dict:
        d = {"method": self.method, "temperature": float(self.temperature_)}
        if getattr(self, "slope_", None) is not None:
            d["familiarity_slope"] = float(self.slope_)
        if self.confidence_in_ is not None:
            d["confidence_map"] = {"in": self.confidence_in_.tolist(), "out": self.confidence_out_.tolist()}
        if self.logistic_ is not None:
            d["confidence_logistic"] = [float(v) for v in self.logistic_]
        if getattr(self, "ceiling_", None) is not None:
            d["ceiling"] = float(self.ceiling_)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ConfidenceCalibrator":
        cal = cls(d.get("method", "temperature"))
        cal.temperature_ = float(d.get("temperature", 1.0))
        cal.slope_ = float(d["familiarity_slope"]) if d.get("familiarity_slope") is not None else None
        cmap = d.get("confidence_map") if cal.method == "top_label" else None
        cal.confidence_in_ = np.asarray(cmap["in"], float) if cmap else None
        cal.confidence_out_ = np.asarray(cmap["out"], float) if cmap else None
        logistic = d.get("confidence_logistic") if cal.method == "top_logistic" else None
        cal.logistic_ = tuple(float(v) for v in logistic) if logistic else None
        cal.ceiling_ = float(d["ceiling"]) if d.get("ceiling") is not None else None
        return cal


def apply_calibration(proba, calibration: dict | None, familiarity=None) -> np.ndarray:
    """``proba`` calibrated as a model card's ``calibration`` says (unchanged without one); ``familiarity``: the
    clips' scores, read by the ``familiarity`` method (without them it uses a typical training clip's)."""
    if not calibration:
        return np.asarray(proba, dtype=np.float64)
    return ConfidenceCalibrator.from_dict(calibration).transform(proba, familiarity)


def _fit_familiarity(proba, y, familiarity) -> tuple[float, float]:
    """``(T, slope)`` minimising the log-likelihood of ``softmax(log(p) / (T exp(slope u)))``, ``T`` within
    ``TEMPERATURE_BOUNDS`` and ``slope`` within ``FAMILIARITY_SLOPE_BOUNDS``."""
    from scipy.optimize import minimize

    known = (y >= 0) & (y < proba.shape[1])
    if not known.any():
        return 1.0, 0.0
    logits, y, u = _log_proba(proba[known]), y[known], familiarity[known]
    rows = np.arange(len(y))

    def nll(theta):
        z = logits / np.exp(theta[0] + theta[1] * u)[:, None]
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[rows, y]))

    res = minimize(nll, [0.0, 0.0], method="L-BFGS-B",
                   bounds=[tuple(np.log(TEMPERATURE_BOUNDS)), FAMILIARITY_SLOPE_BOUNDS])
    return float(np.exp(res.x[0])), float(res.x[1])


def cross_fitted_calibration(proba, y_idx, fold_ids, method: str = "temperature",
                             ceiling: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Honestly calibrated out-of-fold probabilities: each fold's rows are calibrated (``ConfidenceCalibrator``
    of ``method``, with or without its ``ceiling``) on the OTHER folds' rows, so no fold's labels calibrate its
    own probabilities.

    Returns ``(calibrated (n, k), temperatures)``, ``temperatures[i]`` being the one applied to the fold
    ``np.unique(fold_ids)[i]``. A fold with no other fold (a single hold-out split) is left as it is."""
    y, proba = _check(y_idx, proba)
    fold_ids = np.asarray(fold_ids).ravel()
    out, temps = proba.copy(), []
    for f in np.unique(fold_ids):
        own = fold_ids == f
        if (~own).any():
            cal = ConfidenceCalibrator(method, ceiling).fit(proba[~own], y[~own])
            out[own], t = cal.transform(proba[own]), cal.temperature_
        else:
            t = 1.0
        temps.append(t)
    return out, np.asarray(temps)


def cross_fitted_by_clip(proba, y_idx, familiarity, blocks, clips, method: str = "familiarity"):
    """Out-of-fold predictions of two protocols stacked (the same clips tested twice: among new speakers and in
    a corpus held out), calibrated block by block, each block (``blocks``: one value per row, e.g. a fold or a
    held-out corpus) with a calibrator fitted on the rows of OTHER clips only (``clips``: one id per row), so
    that no clip's label calibrates either of its predictions. Returns ``(calibrated (n, k), {block: (T,
    slope)})``."""
    y, proba = _check(y_idx, proba)
    blocks, clips = np.asarray(blocks).ravel(), np.asarray(clips).ravel()
    out, params = proba.copy(), {}
    for b in dict.fromkeys(blocks.tolist()):
        own = blocks == b
        fit = ~np.isin(clips, clips[own])
        if fit.any():
            cal = ConfidenceCalibrator(method).fit(proba[fit], y[fit], familiarity[fit])
            out[own] = cal.transform(proba[own], familiarity[own])
            params[b] = (cal.temperature_, cal.slope_)
    return out, params


SINGLE_PROTOCOL_METHODS = tuple(m for m in CALIBRATION_METHODS if m != "familiarity")  # need no familiarity


def best_cross_fitted(proba, y_idx, fold_ids):
    """Cross-fit every ``SINGLE_PROTOCOL_METHODS`` and keep the one with the lowest pooled ECE (temperature on
    a tie). Returns ``(method, calibrated (n, k), temperatures, {method: pooled ECE})``."""
    y, proba = _check(y_idx, proba)
    fitted = {m: cross_fitted_calibration(proba, y, fold_ids, method=m) for m in SINGLE_PROTOCOL_METHODS}
    ece_by_method = {m: expected_calibration_error(y, cal) for m, (cal, _) in fitted.items()}
    method = min(SINGLE_PROTOCOL_METHODS, key=lambda m: (round(ece_by_method[m], 4), m != "temperature"))
    return method, fitted[method][0], fitted[method][1], ece_by_method


def uncertainty_threshold(proba, y_idx, min_accuracy: float = UNSURE_BELOW) -> float:
    """The confidence ``t`` below which an answer is called "not sure", chosen on (calibrated, out-of-fold)
    predictions: an answer with top probability ``< t`` is right less than ``min_accuracy`` of the time.

    The chance that an answer is right is estimated as a non-decreasing function of its top probability
    (isotonic regression of right/wrong on confidence, clips of equal confidence pooled); ``t`` lies halfway
    between the most confident answer still under ``min_accuracy`` and the next confidence. 0.0 when no answer
    is that unreliable (never "not sure"), 1.0 when all are (e.g. a majority-class baseline: never sure).
    With the default 1/3 a decent model calls few clips uncertain: those it would mostly get wrong."""
    y, proba = _check(y_idx, proba)
    if not len(y):
        return 1.0
    conf, inverse = np.unique(proba.max(1), return_inverse=True)  # distinct confidences, ascending
    count = np.bincount(inverse, minlength=len(conf))
    right = np.bincount(inverse, weights=_correct(y, proba).astype(float), minlength=len(conf))
    unsure = _increasing_fit(right / count, count) < min_accuracy
    if not unsure.any():
        return 0.0
    if unsure.all():
        return 1.0
    m = int(np.flatnonzero(unsure)[-1])  # the fit is non-decreasing: the unsure ones are a prefix
    return float((conf[m] + conf[m + 1]) / 2)


def _logit(c) -> np.ndarray:
    c = np.clip(np.asarray(c, float), 1e-6, 1 - 1e-6)
    return np.log(c / (1 - c))


def _fit_logistic(z, right) -> tuple[float, float]:
    """``(a, b)`` minimising the log-loss of ``sigmoid(a * z + b)`` against ``right`` (0/1), a >= 0 so that
    a more confident answer never gets a lower confidence."""
    from scipy.optimize import minimize

    def loss(ab):
        q = np.clip(1 / (1 + np.exp(-(ab[0] * z + ab[1]))), 1e-9, 1 - 1e-9)
        return -np.mean(right * np.log(q) + (1 - right) * np.log(1 - q))

    a, b = minimize(loss, [1.0, 0.0], method="L-BFGS-B", bounds=[(0.0, 20.0), (-20.0, 20.0)]).x
    return float(a), float(b)


def _increasing_fit(values, weights) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of ``values`` (pool-adjacent-violators), ``(n,)`` -> ``(n,)``."""
    blocks = []  # [mean, weight, length], merged while a block's mean exceeds the next one's
    for v, w in zip(np.asarray(values, float), np.asarray(weights, float)):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (v2, w2, n2), (v1, w1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([np.full(n, v) for v, _, n in blocks]) if blocks else np.zeros(0)
