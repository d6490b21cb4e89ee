"""Robustness to real channels: models scored on clips passed through ``ser_core.channels`` conditions.

Two protocols:

- ``evaluate_perturbed(model, card, corpus, conditions)``: a saved model on a labelled corpus, every clip
  perturbed. On the corpus the model was trained on (the shipped models: RAVDESS actors 01-16) the speakers
  are SEEN, so the numbers say how much a channel costs, not what a new voice gets.
- ``cross_validate_perturbed(model_name, corpus, conditions)``: the honest one. Speaker-grouped K-fold; each
  fold's model learns from clean training clips (plus any augmentation) and is tested on the clean and the
  perturbed clips of its test speakers.

Perturbed features: each clip is decoded as recorded (no trimming, no normalisation), passed through the
condition with a seed from its file name and the condition (``condition_seed``), then prepared and computed
as its feature set says; they are cached as the feature set ``"<name>@<condition>"``. Babble comes from
``BABBLE_TALKERS`` clips of other speakers of the same corpus.

>>> results = evaluate_perturbed(model, card, load_corpus("data/ravdess"), ("phone", "noise10"))
>>> results["phone"]     # {"uar": 0.31, "accuracy": 0.33, "ece": 0.21, "n": 960}
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError

ROBUSTNESS_METRICS = ("uar", "accuracy", "ece")  # per condition; ece: 15-bin top-label calibration error
CLEAN = "clean"  # the unperturbed clips, scored with the same code for comparison


def perturbed_features(paths, fs, condition: str, *, speakers=None, n_jobs=None, cache=True) -> np.ndarray:
    """Features ``(n, *fs.shape)`` of every clip passed through ``condition`` (a ``CHANNELS`` name).

    speakers : each clip's speaker, aligned with ``paths``; babble for a clip is drawn from other speakers'
        clips (``None``: from any other clip). cache : as ``compute_files``.
    """
    from .augment import transformed_features
    from .channels import (BABBLE_CHANNELS, CHANNEL_VERSION, babble_sources, channel_features, condition_seed,
                           parse_channels)
    from .features import get_feature_set

    fs = get_feature_set(fs)
    parse_channels([condition])
    paths = [str(p) for p in paths]
    seeds = [condition_seed(p, condition) for p in paths]
    babble = [babble_sources(paths, speakers, i, s) if condition in BABBLE_CHANNELS else ()
              for i, s in enumerate(seeds)]
    key = fs.replace(name=f"{fs.name}@{condition}.v{CHANNEL_VERSION}")  # the name is part of the cache key
    return transformed_features(paths, key, channel_features, [(fs, condition, s, b) for s, b in zip(seeds, babble)],
                                n_jobs=n_jobs, cache=cache)


def condition_features(paths, fs, condition: str, *, speakers=None, n_jobs=None, cache=True) -> np.ndarray:
    """``perturbed_features``, or for ``"clean"`` the plain features (``compute_files``)."""
    if condition == CLEAN:
        from .features import compute_files

        return compute_files(paths, fs, cache=cache, n_jobs=n_jobs, progress=False)
    return perturbed_features(paths, fs, condition, speakers=speakers, n_jobs=n_jobs, cache=cache)


def model_inputs(model, card: dict, paths, condition: str = CLEAN, *, root=None, speakers=None, n_jobs=None,
                 cache=True, adapt_groups=None):
    """What a saved model's ``predict_proba`` takes for ``paths`` recorded through ``condition``: its features
    ``(n, *fs.shape)``, or for an ensemble (``feature_set`` None) ``{member: its probabilities (n, k), raw or
    calibrated as the ensemble pools them}``, the members loaded from the models folder ``root`` (default: the
    shipped one) as ``Predictor`` loads them. ``card`` is the model's; speakers: as ``perturbed_features``.
    adapt_groups: ``(n,)`` each clip's voice (speaker, or corpus): an ensemble's speaker-adaptive members too,
    each voice z-scored with its own clips (its adapted pooling's inputs); None: its single-clip members only."""
    if model.feature_set is not None:
        return condition_features(paths, model.feature_set, condition, speakers=speakers, n_jobs=n_jobs,
                                  cache=cache)
    from .saved import load_speaker_norm, load_trained, resolve

    members = {}
    for name in model.all_members if adapt_groups is not None else model.members:
        member, member_card = load_trained(name, root)
        X = model_inputs(member, member_card, paths, condition, root=root, speakers=speakers, n_jobs=n_jobs,
                         cache=cache)
        if member_card.get("speaker_norm"):
            if adapt_groups is None:
                raise ConfigError(f"Ensemble member '{name}' is speaker-adaptive; pass each clip's voice.")
            X = load_speaker_norm(resolve(name, root), unseen="self").transform(X, adapt_groups)
        members[name] = model.member_proba(member.predict_proba(X), member_card)
    return members


def _parse_conditions(conditions) -> tuple[str, ...]:
    """``parse_channels`` that also lets ``"clean"`` through."""
    from .channels import parse_channels

    names = conditions.split(",") if isinstance(conditions, str) else list(conditions)
    clean = [n.strip() for n in names if n.strip() == CLEAN]
    return (*clean, *parse_channels([n for n in names if n.strip() != CLEAN]))


def _scores(model, card: dict, X, y) -> dict:
    """``{"uar", "accuracy", "ece", "n"}`` from ``evaluate_model`` (the card's calibrated probabilities)."""
    from .inference import evaluate_model

    m = evaluate_model(model, card, X, y)
    return {k: m[k] for k in (*ROBUSTNESS_METRICS, "n")}


def evaluate_perturbed(model, card: dict, corpus, conditions, *, model_dir=None, n_jobs=None, cache=True,
                       progress=None) -> dict:
    """``{condition: {"uar", "accuracy", "ece", "n"}}`` of a saved model (``load_trained``'s ``(model, card)``,
    its calibrated probabilities) on every clip of ``corpus`` passed through each condition (``CHANNELS``
    names, or ``"clean"``). A speaker-adaptive model (card ``speaker_norm``) normalises each speaker with that
    speaker's own perturbed clips, as ``evaluate`` does for clean ones; it needs its folder ``model_dir``. An
    ensemble pools its members' probabilities (raw or calibrated, ``EnsembleModel.inputs``) on the same
    perturbed clips (members from the folder that holds ``model_dir``).
    progress: ``callable(condition)`` before each condition."""
    conditions = _parse_conditions(conditions)
    norm = None
    if card.get("speaker_norm"):
        from .saved import load_speaker_norm

        if model_dir is None:
            raise ConfigError("A speaker-adaptive model needs its folder (model_dir) for its training statistics.")
        norm = load_speaker_norm(model_dir, unseen="self")
    manifest = corpus.manifest
    paths, y = manifest["path"].tolist(), manifest["emotion"].to_numpy()
    speakers = manifest["speaker"].astype(str).to_numpy()
    out = {}
    for condition in conditions:
        if progress:
            progress(condition)
        X = model_inputs(model, card, paths, condition, root=None if model_dir is None else Path(model_dir).parent,
                         speakers=speakers, n_jobs=n_jobs, cache=cache)
        out[condition] = _scores(model, card, X if norm is None else norm.transform(X, speakers), y)
    return out


def cross_validate_perturbed(model_name: str, corpus, conditions, *, folds: int = 4, seed: int = 0,
                             feature_set=None, params=None, augment=(), speaker_norm: bool = False,
                             n_jobs=None, progress=None) -> dict:
    """Speaker-grouped K-fold: train ``model_name`` on each fold's clean training clips (plus ``augment``
    copies), score it on its test speakers' clean and perturbed clips.

    Returns ``{"folds": [{condition: {"uar", "accuracy", "ece", "n"}}], "summary": {condition: {metric:
    {"mean", "std"}}}, "splitter": repr, "oof": {"proba": {condition: (n, k)}, "classes": (k,), "fold": (n,),
    "y": (n,)}}``, ``"clean"`` first; ``oof`` holds every clip's out-of-fold probabilities (uncalibrated) under
    each condition, for pooling several families (``ensemble_perturbed``). progress: ``callable(event: str)``.
    """
    from .evaluation import RunConfig, augmented_copies, fit_fold, in_label_order, make_splitter

    emit = progress or (lambda e: None)
    conditions = tuple(dict.fromkeys((CLEAN, *_parse_conditions(conditions))))
    config = RunConfig(model=model_name, params=dict(params or {}), feature_set=feature_set, folds=folds,
                       seed=seed, augment=tuple(augment), speaker_norm=speaker_norm)
    _, fs = config.resolved()
    manifest = corpus.manifest
    paths, y = manifest["path"].tolist(), manifest["emotion"].to_numpy()
    speakers = manifest["speaker"].astype(str).to_numpy()
    X = {}
    for c in conditions:
        emit(f"features {fs.name}@{c}")
        X[c] = condition_features(paths, fs, c, speakers=speakers, n_jobs=n_jobs)
    X_aug = augmented_copies(paths, fs, config.augment, seed, speakers, n_jobs)
    splitter = make_splitter("speaker", folds, seed)
    labels = sorted(np.unique(y))
    oof = {"proba": {c: np.zeros((len(y), len(labels))) for c in X}, "classes": np.asarray(labels),
           "fold": np.full(len(y), -1), "y": np.asarray(y, dtype=str)}
    for i, (tr, te) in enumerate(splitter.split(np.zeros(len(y)), y, speakers)):
        emit(f"fold {i + 1}/{folds}")
        model, _, norm, _ = fit_fold(config, fs, X[CLEAN][tr], y[tr], speakers[tr],
                                     {k: a[tr] for k, a in X_aug.items()}, X[CLEAN][te], speakers[te])
        for c, Xc in X.items():
            Xte = Xc[te] if norm is None else norm.transform(Xc[te], speakers[te])
            oof["proba"][c][te] = in_label_order(model.predict_proba(Xte), model.classes_, labels)
        oof["fold"][te] = i
    return {**summarize_perturbed(oof), "splitter": repr(splitter), "oof": oof}


def summarize_perturbed(oof) -> dict:
    """``{"folds": per-fold scores, "summary": {condition: {metric: {"mean", "std"}}}}`` of
    ``cross_validate_perturbed``'s ``oof`` (also of one saved and read back)."""
    fold_scores = _fold_scores(oof)
    summary = {c: {m: {"mean": float(np.mean([f[c][m] for f in fold_scores])),
                       "std": float(np.std([f[c][m] for f in fold_scores]))} for m in ROBUSTNESS_METRICS}
               for c in oof["proba"]}
    return {"folds": fold_scores, "summary": summary}


def channel_summary(oof) -> dict:
    """A run's scores under the channels its out-of-fold predictions were also made through (arrays
    ``"proba@<condition>"``, see ``RunConfig.channels``): ``{condition: {"uar", "accuracy", "ece", "n",
    "uar_std"}}``, ``"clean"`` first, means over folds (a model card's ``"robustness"``, which the Leaderboard
    shows)."""
    from .evaluation import CHANNEL_PROBA

    by_condition = {CLEAN: oof["proba"], **{k[len(CHANNEL_PROBA):]: v for k, v in oof.items()
                                           if k.startswith(CHANNEL_PROBA)}}
    folds = _fold_scores({**oof, "proba": by_condition})
    return {c: {**{m: float(np.mean([f[c][m] for f in folds])) for m in ROBUSTNESS_METRICS},
                "n": int(sum(f[c]["n"] for f in folds)), "uar_std": float(np.std([f[c]["uar"] for f in folds]))}
            for c in by_condition}


def _fold_scores(oof) -> list[dict]:
    """Per fold, ``{condition: {"uar", "accuracy", "ece", "ece_uncalibrated", "n"}}`` from the out-of-fold
    probabilities. ``ece`` is of probabilities calibrated as the saved model would be: the calibrator (method
    chosen as in cross-validation) is fitted on the other folds' CLEAN out-of-fold predictions, since a model
    never sees labelled clips of the channel it meets."""
    from .calibration import ConfidenceCalibrator, best_cross_fitted, expected_calibration_error, label_indices
    from .evaluation import compute_metrics

    classes, y = list(oof["classes"]), oof["y"]
    y_idx, clean = label_indices(y, classes), oof["proba"][CLEAN]
    method = best_cross_fitted(clean, y_idx, oof["fold"])[0]
    out = []
    for i in np.unique(oof["fold"][oof["fold"] >= 0]):
        own = oof["fold"] == i
        cal = ConfidenceCalibrator(method).fit(clean[~own], y_idx[~own]) if (~own).any() else None
        scores = {}
        for c, proba in oof["proba"].items():
            p = proba[own]
            m = compute_metrics(y[own], np.asarray(classes)[p.argmax(1)], classes, proba=p, classes=classes)
            ece = expected_calibration_error(y_idx[own], cal.transform(p)) if cal is not None else m["ece"]
            scores[c] = {"uar": m["uar"], "accuracy": m["accuracy"], "ece": ece, "ece_uncalibrated": m["ece"],
                         "n": m["n"]}
        out.append(scores)
    return out


def ensemble_perturbed(oofs: list[dict], fit_on=(CLEAN,)) -> dict:
    """The ensemble of several families under each condition, from ``cross_validate_perturbed``'s ``oof`` of
    each (same corpus, folds and seed): fold ``k`` pools the members' probabilities with weights fitted on the
    other folds' out-of-fold predictions under the conditions ``fit_on`` together (clean only, or e.g. clean,
    phone and noise10, as ``ser_core.ensemble.fit_ensemble`` does when its members were cross-validated with
    those channels), then scores every condition. Returns ``{condition: {"uar": {"mean", "std"}, "accuracy":
    {...}}}`` over folds."""
    from .calibration import label_indices
    from .ensemble import pool_out_of_fold
    from .evaluation import compute_metrics

    ref = oofs[0]
    if any(not np.array_equal(o["fold"], ref["fold"]) or not np.array_equal(o["y"], ref["y"]) for o in oofs):
        raise ConfigError("The members were cross-validated with different folds or data.")
    y, fold, classes = ref["y"], ref["fold"], list(ref["classes"])
    pooled = pool_out_of_fold({c: [o["proba"][c] for o in oofs] for c in ref["proba"]},
                              label_indices(y, classes), fold, list(fit_on))
    scores = {c: [] for c in pooled}
    for k in np.unique(fold):
        test = fold == k
        for c, p in pooled.items():
            m = compute_metrics(y[test], np.asarray(classes)[p[test].argmax(1)], classes)
            scores[c].append((m["uar"], m["accuracy"]))
    return {c: {m: {"mean": float(np.mean([s[i] for s in v])), "std": float(np.std([s[i] for s in v]))}
                for i, m in enumerate(("uar", "accuracy"))} for c, v in scores.items()}


# -- model cards -------------------------------------------------------------------------------------------
def record_robustness(model_dir, results: dict, *, protocol: str) -> dict:
    """Write ``results`` (``{condition: {"uar", "accuracy", "ece", ...}}``) into the model card of the saved
    model in ``model_dir`` as ``"robustness"``, with a one-line ``"robustness_protocol"`` saying on what data
    they were measured. Returns the updated card."""
    from .cache import _atomic_write
    from .saved import CARD_JSON, read_card

    card = read_card(model_dir)
    card["robustness"] = {c: {k: v for k, v in r.items() if k in (*ROBUSTNESS_METRICS, "n", "uar_std")}
                          for c, r in results.items()}
    card["robustness_protocol"] = protocol
    _atomic_write(Path(model_dir) / CARD_JSON, lambda f: f.write(json.dumps(card, indent=2, default=str).encode()))
    return card


def robustness_table(cards, metric: str = "uar"):
    """One row per model card with a ``"robustness"`` block, one column per condition (``clean`` first, then
    ``CHANNELS`` order): ``metric`` as a ``pandas.DataFrame`` indexed by model name (empty when no card has
    the block)."""
    import pandas as pd

    from .channels import CHANNELS

    rows = {c["name"]: {k: v.get(metric) for k, v in c["robustness"].items()} for c in cards if c.get("robustness")}
    table = pd.DataFrame.from_dict(rows, orient="index")
    order = [k for k in (CLEAN, *CHANNELS) if k in table.columns]
    return table[order + [k for k in table.columns if k not in order]]
