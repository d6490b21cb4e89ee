"""Cross-corpus runs: train on every clip of one corpus, test on every clip of another.

Both corpora's labels are on the shared taxonomy already (``ser_core.corpora`` maps every corpus's spellings onto
it), so a run keeps the emotions both corpora have and drops, and names, those only one of them has. Speakers
never cross: the test corpus's voices are new by construction, so the score says how a model carries over to
other speakers, recording conditions and actors. The run is stored like any other (split ``cross-corpus``, one
"fold": the whole test corpus, the dataset ``"<train> → <test>"``), with the test clips' predictions, so the
Leaderboard gives it confidence intervals over the test speakers and a breakdown by voice.

    >>> train, test = load_corpus("data/ravdess"), load_corpus("data/emodb")
    >>> align_labels(train, test).message
    'Tested on the 6 emotions both corpora have (...); dropped calm, surprised (only in ravdess) and boredom (...).'
    >>> res = cross_corpus(RunConfig("svm"), train, test, store=ResultsStore())
    >>> res.summary["uar"]["mean"]                  # on the test corpus
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import events
from .errors import ConfigError
from .evaluation import (CLIP_GROUPS, MIN_TRAIN_CLIPS, RunConfig, RunResult, augmented_copies, check_run,
                         compute_metrics, data_fingerprint, features_of, fit_fold, in_label_order,
                         package_versions, record_failure, summarize)
from .splits import CROSS_CORPUS, get_split

ARROW = " → "  # between the two corpora's names in a run's dataset


@dataclass(frozen=True)
class LabelAlignment:
    """The emotions of a cross-corpus run: ``shared`` (kept, sorted) and those only one corpus has (dropped)."""

    train_name: str
    test_name: str
    shared: tuple[str, ...]
    train_only: tuple[str, ...]
    test_only: tuple[str, ...]

    @property
    def message(self) -> str:
        """One sentence: what the run tests on and which emotions it drops."""
        same = self.train_name == self.test_name
        names = ("the training corpus", "the test corpus") if same else (self.train_name, self.test_name)
        dropped = [f"{', '.join(labels)} (only in {name})"
                   for labels, name in zip((self.train_only, self.test_only), names) if labels]
        said = f"; dropped {' and '.join(dropped)}" if dropped else "; no emotion dropped"
        return f"Tested on the {len(self.shared)} emotions both corpora have ({', '.join(self.shared)}){said}."

    def to_dict(self) -> dict:
        """What a run records: ``{"labels": shared, "dropped": {"train": [...], "test": [...]}}``."""
        return {"labels": list(self.shared), "dropped": {"train": list(self.train_only), "test": list(self.test_only)}}


def align_labels(train, test) -> LabelAlignment:
    """The emotions two corpora (``ser_core.corpora.Corpus``) share; fewer than two is a ``ConfigError``."""
    a, b = set(train.manifest["emotion"]), set(test.manifest["emotion"])
    out = LabelAlignment(train.name, test.name, tuple(sorted(a & b)), tuple(sorted(a - b)), tuple(sorted(b - a)))
    if len(out.shared) < 2:
        raise ConfigError(f"The two corpora share {len(out.shared)} emotion(s) ({', '.join(out.shared) or 'none'}) "
                          f"and a test needs at least two; {train.name} has {', '.join(sorted(a))} and "
                          f"{test.name} has {', '.join(sorted(b))}.")
    return out


def check_cross_corpus(config: RunConfig, train, test) -> LabelAlignment:
    """Refuse a cross-corpus run that cannot work before anything is computed (a ``ConfigError`` whose one
    sentence says what to change): the model's and feature set's checks of ``check_run`` on the training corpus,
    fewer than two shared emotions, fewer than ``MIN_TRAIN_CLIPS`` training clips of one. Reads labels only."""
    check_run(replace(config, split=CROSS_CORPUS, folds=1), train)
    labels = align_labels(train, test)
    counts = train.manifest["emotion"].value_counts()[list(labels.shared)]
    if counts.min() < MIN_TRAIN_CLIPS:
        raise ConfigError(f"{train.name} has {counts.min()} clip(s) of '{counts.idxmin()}' and every model needs at "
                          f"least {MIN_TRAIN_CLIPS} of each emotion it learns; train on a corpus with more clips.")
    return labels


def dataset_name(train_name: str, test_name: str) -> str:
    """How the store and the Leaderboard name a cross-corpus run's data: ``"ravdess → emodb"``."""
    return f"{train_name}{ARROW}{test_name}"


def cross_corpus(config: RunConfig, train, test, *, store=None, use_cache: bool = True, n_jobs=None,
                 progress=None) -> RunResult:
    """Train ``config.model`` on every clip of ``train`` and score it on every clip of ``test`` (both
    ``ser_core.corpora.Corpus``), on the emotions both have (``align_labels``). ``config.split`` and ``folds`` are
    set to ``cross-corpus`` and 1; augmentation and per-speaker normalisation apply as in cross-validation
    (augmented copies of training clips only; each speaker z-scored with its own clips).

    progress: callable(event: dict) receiving the ``ser_core.events`` of a run, ``LABELS`` first (``message``: the
    alignment's sentence). store: a ``ResultsStore`` (None: no record). use_cache: serve an identical stored run
    (same configuration, same clips of both corpora). No model is saved: train on a corpus's K-fold run for that.
    The result's ``folds`` hold one entry, the test corpus; ``oof`` the test clips' probabilities."""
    emit = progress or (lambda e: None)
    config = replace(config, split=CROSS_CORPUS, folds=1)
    labels = check_cross_corpus(config, train, test)
    _, fs = config.resolved()
    emit({"event": events.LABELS, **labels.to_dict(), "message": labels.message})
    tr, te = (m[m["emotion"].isin(labels.shared)].reset_index(drop=True) for m in (train.manifest, test.manifest))
    fingerprint, chash = f"{data_fingerprint(tr)}>{data_fingerprint(te)}", config.hash(fs)
    if store is not None and use_cache and (hit := store.find_cached(chash, fingerprint)) is not None:
        emit({"event": events.CACHED, "run_id": hit["id"]})
        return RunResult(hit["id"], config, hit["summary"], hit["folds"], hit["labels"], hit["confusion"],
                         hit["train_time_s"], hit["latency_ms"], hit["model_size_bytes"], cached=True,
                         oof=store.oof(hit["id"]))
    X_tr, X_te, y_tr, y_te, spk_tr, spk_te, X_aug = _features(config, fs, tr, te, emit, n_jobs)
    run_id = None
    if store is not None:
        run_id = store.start_run(
            model=config.model, params=config.params, feature_set=fs.params(),
            dataset=dataset_name(train.name, test.name), data_root=train.root, data_fingerprint=fingerprint,
            n_clips=len(te), n_speakers=int(te["speaker"].nunique()), split=CROSS_CORPUS,
            splitter=f"train on {train.name} ({len(tr)} clips, {tr['speaker'].nunique()} speakers), test on "
                     f"{test.name} ({len(te)} clips, {te['speaker'].nunique()} speakers)",
            k=1, seed=config.seed, speaker_dependent=get_split(CROSS_CORPUS).speaker_dependent,
            options={"augment": list(config.augment), "speaker_norm": config.speaker_norm, **config.later_options(),
                     "train_dataset": train.name, "test_dataset": test.name, "test_data_root": str(test.root),
                     "train_clips": len(tr), **labels.to_dict()},
            config_hash=chash, versions=package_versions())
    try:
        emit({"event": events.FOLD_START, "fold": 0, "folds": 1, "run_id": run_id})
        fold, proba, size = _fit_and_score(config, fs, labels.shared, X_tr, y_tr, spk_tr, X_aug, X_te, y_te, spk_te,
                                           tr["corpus"].astype(str).to_numpy())
        oof = {"proba": proba, "classes": np.asarray(labels.shared, dtype=str), "fold": np.zeros(len(te), int),
               "y": y_te.astype(str), "paths": te["path"].to_numpy(dtype=str),
               **{g: te[g].to_numpy(dtype=str) for g in CLIP_GROUPS}}
        summary = summarize([fold["metrics"]])
        if store is not None:
            store.add_fold(run_id, 0, metrics=fold["metrics"], n_train=fold["n_train"], n_test=fold["n_test"],
                           test_speakers=fold["test_speakers"], train_time_s=fold["train_time_s"],
                           latency_ms=fold["latency_ms"])
            store.add_oof(run_id, oof)
            store.finish_run(run_id, summary=summary, labels=list(labels.shared),
                             confusion=fold["metrics"]["confusion"], train_time_s=fold["train_time_s"],
                             latency_ms=fold["latency_ms"], model_size_bytes=size)
        emit({"event": events.FOLD_DONE, **fold, "folds": 1, "run_id": run_id})
    except BaseException as exc:
        record_failure(store, run_id, exc)
        raise
    emit({"event": events.DONE, "run_id": run_id, "summary": summary})
    return RunResult(run_id, config, summary, [fold], list(labels.shared), fold["metrics"]["confusion"],
                     fold["train_time_s"], fold["latency_ms"], size, oof=oof)


def _features(config, fs, tr, te, emit, n_jobs):
    """Both corpora's features (training copies augmented as the config says), labels and speakers. The test
    corpus's speakers are prefixed, so that a name both corpora use ("01") stays two people."""
    X = features_of(tr["path"].tolist() + te["path"].tolist(), fs, emit, n_jobs)
    spk_tr = tr["speaker"].astype(str).to_numpy()
    spk_te = np.char.add("test:", te["speaker"].astype(str).to_numpy().astype(str))
    X_aug = augmented_copies(tr["path"].tolist(), fs, config.augment, config.seed, spk_tr, n_jobs)
    return (X[:len(tr)], X[len(tr):], tr["emotion"].to_numpy(), te["emotion"].to_numpy(), spk_tr, spk_te, X_aug)


def _fit_and_score(config, fs, labels, X_tr, y_tr, spk_tr, X_aug, X_te, y_te, spk_te, dom_tr=None):
    """Fit on the training corpus, score the test corpus: ``(fold entry, (n_test, k) probabilities in ``labels``
    order, saved size in bytes)``."""
    groups_tr, groups_te = spk_tr, spk_te  # what per-speaker normalisation groups by: speakers, or whole corpora
    if config.norm_by == "corpus":
        groups_tr, groups_te = dom_tr, np.full(len(spk_te), "test:corpus")
    model, X_te, _, train_time = fit_fold(config, fs, X_tr, y_tr, groups_tr, X_aug, X_te, groups_te, dom_tr)
    t0 = time.perf_counter()
    raw = model.predict_proba(X_te)
    latency = 1000 * (time.perf_counter() - t0) / max(1, len(X_te))
    proba = in_label_order(raw, model.classes_, labels)
    pred = np.asarray(labels)[proba.argmax(1)]
    metrics = compute_metrics(y_te, pred, labels, proba=proba)
    with tempfile.TemporaryDirectory() as tmp:  # what the model takes on disk
        size = sum(p.stat().st_size for p in model.save(Path(tmp) / "m").rglob("*") if p.is_file())
    fold = {"fold": 0, "metrics": metrics, "n_train": len(y_tr), "n_test": len(y_te),
            "test_speakers": sorted({s.removeprefix("test:") for s in spk_te}), "train_time_s": train_time,
            "latency_ms": latency}
    return fold, proba, size


__all__ = ["ARROW", "LabelAlignment", "align_labels", "check_cross_corpus", "cross_corpus", "dataset_name"]
