"""Honest evaluation: speaker-grouped splitters, the field's metrics, and K-fold cross-validation.

Speaker-grouped stratified K-fold is the default everywhere: no speaker is in both the training and the test
fold. ``split="random"`` (stratified K-fold ignoring speakers) is offered for comparison with published
figures and is always labelled *speaker-dependent* (optimistic). Everything learned from data -- scalers,
speaker normalisation, oversampling, augmentation, the early-stopping split -- happens inside the training
fold: models learn it in ``fit``; augmentation adds copies of training clips only.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .saved import load_oof

from . import events
from .splits import (LEAVE_CORPUS_OUT, SPLITS, HoldoutBySpeaker, fold_groups, get_split,  # noqa: F401  (here too)
                     make_splitter)


def compute_metrics(y_true, y_pred, labels, *, proba=None, classes=None) -> dict:
    """Accuracy, weighted precision/recall, UAR (unweighted average recall), macro F1, per-class recall and the
    confusion matrix (rows = true label, columns = predicted, in ``labels`` order).

    proba: ``(n, len(classes))`` predicted probabilities, columns in ``classes`` order; when given, the
    calibration metrics of ``ser_core.calibration.probability_metrics`` are added (``ece``, ``brier``,
    ``wrong_over_90``; a true label not among ``classes`` counts as a wrong answer)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(labels)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(len(labels)), where=support > 0)
    present = support > 0
    wp, wr, _, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted",
                                                   zero_division=0)
    _, _, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=[l for l, p in zip(labels, present) if p],
                                                  average="macro", zero_division=0)
    calibration = {}
    if proba is not None:
        from .calibration import label_indices, probability_metrics

        calibration = probability_metrics(label_indices(y_true, labels if classes is None else classes), proba)
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "weighted_precision": float(wp),
        "weighted_recall": float(wr),
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1),
        "per_class_recall": {l: float(r) for l, r, p in zip(labels, recall, present) if p},
        "confusion": cm.tolist(),
        "labels": labels,
        **calibration,
    }


def dimension_metrics(y_true, proba, classes) -> dict:
    """Arousal and valence scored like the categories (``ser_core.taxonomy``): the levels' probabilities are the
    sums of their categories' columns of ``proba`` (``(n, len(classes))``), the answer their argmax, and
    ``arousal_uar`` / ``valence_uar`` the recall averaged over the levels the true labels have, with
    ``arousal_ece`` / ``valence_ece`` (top-level ECE). A dimension is left out where a class or a true label has
    no level on it (a custom corpus's own labels)."""
    from .calibration import expected_calibration_error, label_indices
    from .taxonomy import DIMENSIONS, dimension_labels, dimension_proba, has_dimension

    out = {}
    y_true = np.asarray(y_true).astype(str)
    for dim in DIMENSIONS:
        if not len(y_true) or not has_dimension(list(classes), dim) or \
                not all(str(l) in DIMENSIONS[dim] for l in set(y_true)):
            continue
        p, levels = dimension_proba(proba, classes, dim)
        truth = dimension_labels(y_true, dim)
        pred = np.asarray(levels)[p.argmax(1)]
        present = [lv for lv in levels if (truth == lv).any()]
        out[f"{dim}_uar"] = float(np.mean([np.mean(pred[truth == lv] == lv) for lv in present]))
        out[f"{dim}_ece"] = expected_calibration_error(label_indices(truth, levels), p)
    return out


SUMMARY_METRICS = ("accuracy", "weighted_precision", "weighted_recall", "uar", "macro_f1")
CALIBRATION_METRICS = ("ece", "brier", "wrong_over_90", "ece_uncalibrated")  # when every fold has them
DIMENSION_METRICS = ("arousal_uar", "arousal_ece", "valence_uar", "valence_ece")  # likewise (dimension_metrics)
RUN_ENTRIES = ("calibration", "reliability", "reliability_uncalibrated", "robustness",
               "per_corpus", "transfer")  # summary entries that are no metric
CHANNEL_PROBA = "proba@"  # out-of-fold arrays "proba@phone": the test folds through a channel (RunConfig.channels)
CHANNEL_OOF_PROTOCOL = ("the cross-validation's own folds: each test clip also passed through the channel and "
                        "scored by its fold's model (unseen speakers), means over folds")


def summarize(fold_metrics: list[dict]) -> dict:
    """``{metric: {"mean", "std"}}`` over folds, including each class's recall; the calibration metrics too
    when every fold carries them (older stored runs do not)."""
    present = [m for m in (*CALIBRATION_METRICS, *DIMENSION_METRICS)
               if fold_metrics and all(m in f for f in fold_metrics)]
    out = {m: {"mean": float(np.mean([f[m] for f in fold_metrics])),
               "std": float(np.std([f[m] for f in fold_metrics]))} for m in (*SUMMARY_METRICS, *present)}
    classes = sorted({c for f in fold_metrics for c in f["per_class_recall"]})
    out["per_class_recall"] = {
        c: float(np.mean([f["per_class_recall"][c] for f in fold_metrics if c in f["per_class_recall"]]))
        for c in classes}
    return out


def data_fingerprint(manifest) -> str:
    """Hash of what defines the data for a result: file names, sizes, labels and speakers (not the folder)."""
    h = hashlib.sha256()
    for row in manifest.sort_values("path").itertuples():
        p = Path(row.path)
        size = p.stat().st_size if p.exists() else -1
        h.update(f"{p.name}|{size}|{row.emotion}|{row.speaker}\n".encode())
    return h.hexdigest()[:16]


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("ser_studio", "numpy", "scipy", "librosa", "scikit-learn", "torch", "tensorflow-cpu", "keras",
                "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    import platform

    out["python"] = platform.python_version()
    from . import __version__

    out["ser_core"] = __version__
    return out


@dataclass
class RunConfig:
    """Everything that defines a cross-validation run (its hash is the cache key of the results)."""

    model: str
    params: dict = field(default_factory=dict)
    feature_set: str | None = None  # None: the model's default
    split: str = "speaker"
    folds: int = 4
    seed: int = 0
    augment: tuple = ()  # subset of ser_core.augment.AUGMENTATIONS, training folds only
    speaker_norm: bool = False  # per-speaker z-scoring of utterance features (stats from each speaker's clips)
    channels: tuple = ()  # ser_core.channels conditions the test folds are also scored through (robust ensembles)
    norm_by: str = "speaker"  # with speaker_norm: z-score by each clip's speaker, or by its whole corpus ("corpus")
    balance: str = ""  # "corpus": training clips weighted so that every corpus counts alike (models taking weights)
    ood_calibration: bool = False  # several corpora: calibrate on held-out corpora too (leave-one-corpus-out first)

    def resolved(self):
        from .features import get_feature_set
        from .models import get_spec

        spec = get_spec(self.model)
        fs = get_feature_set(self.feature_set or self.params.get("feature_set") or spec.feature_set)
        if get_split(self.split).uses_k and self.folds < 2:
            raise ConfigError("K-fold needs at least 2 folds.")
        from .augment import parse_augment

        self.augment = parse_augment(self.augment)
        if self.norm_by not in NORM_BY:
            raise ConfigError(f"Normalise by {', '.join(NORM_BY)}, not '{self.norm_by}'.")
        if self.balance not in BALANCE:
            raise ConfigError(f"balance must be one of {', '.join(repr(b) for b in BALANCE)}, not '{self.balance}'.")
        return spec, fs

    def later_options(self) -> dict:
        """The options added after runs were first stored (``LATER_OPTIONS``) that differ from their defaults:
        what a run's options and a model card record of them, and what its hash includes."""
        return {k: getattr(self, k) for k, default in LATER_OPTIONS.items() if getattr(self, k) != default}

    def hash(self, fs) -> str:
        d = asdict(self)
        d["feature_set"] = fs.key()
        d["augment"] = list(d["augment"])
        if not self.channels:  # runs stored before the option existed keep their hash
            del d["channels"]
        else:
            d["channels"] = list(d["channels"])
        for name in LATER_OPTIONS:  # likewise, at their defaults
            if name not in self.later_options():
                del d[name]
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


LATER_OPTIONS = {"norm_by": "speaker", "balance": "",  # RunConfig fields added after runs were stored, and defaults
                 "ood_calibration": False}
NORM_BY = ("speaker", "corpus")  # the manifest column per-speaker normalisation groups by (RunConfig.norm_by)
BALANCE = ("", "corpus")  # RunConfig.balance: none, or every corpus weighing alike in training
DEFAULT_FOLDS = 4  # K when the user names none and the data allows it (see default_folds)
MIN_TRAIN_CLIPS = 2  # clips of every emotion a training fold needs (the SVM's calibration cross-validates on them)


def default_folds(corpus, split: str = "speaker") -> int:
    """The K to offer for ``corpus``: ``DEFAULT_FOLDS``, or fewer where the data allows fewer -- the number of
    speakers (speaker-grouped K-fold) and the clips of the smallest emotion -- but at least 2."""
    m = corpus.manifest
    allowed = [DEFAULT_FOLDS, int(m["emotion"].value_counts().min()) if len(m) else DEFAULT_FOLDS]
    if not get_split(split).speaker_dependent:
        allowed.append(_n_speakers(m))
    return max(2, min(allowed))


def _n_speakers(manifest) -> int:
    """Labelled speakers of a manifest (``unknown`` is none)."""
    return int(manifest.loc[manifest["speaker"].astype(str) != "unknown", "speaker"].nunique())


def check_run(config: RunConfig, corpus) -> None:
    """Refuse a run that cannot work on ``corpus`` before anything is computed: a ``ConfigError`` whose one
    sentence says what to change. The CLI, the training jobs and the Train page all call it (and
    ``cross_validate`` does, first). Reads labels and speakers only, never audio (milliseconds).

    Refused: unknown names; a feature set of another kind than the model takes (``ModelSpec.feature_set``'s
    kind), per-speaker normalisation of a non-utterance set; data with one emotion; a speaker-independent
    split on fewer than two speakers; K above the number of speakers (speaker-grouped) or above the clips of an
    emotion; an 80/20 split by speaker on fewer than 5 speakers; and any split whose training part would hold
    fewer than ``MIN_TRAIN_CLIPS`` clips of an emotion (the folds are drawn as the run would draw them)."""
    from .features import FEATURE_SETS, get_feature_set

    spec, fs = config.resolved()
    kind = get_feature_set(spec.feature_set).kind
    if fs.kind != kind:
        fitting = ", ".join(n for n, f in FEATURE_SETS.items() if f.kind == kind)
        raise ConfigError(f"Model '{config.model}' takes {kind} features and '{fs.name}' holds {fs.kind} "
                          f"features; choose the model's own feature set or one of {fitting}.")
    if config.speaker_norm and fs.kind != "utterance":
        raise ConfigError(f"Per-speaker normalisation applies to utterance features and '{fs.name}' holds "
                          f"{fs.kind} features; turn it off or choose an utterance set such as 'rich'.")
    m, split, k = corpus.manifest, get_split(config.split), int(config.folds)
    if m.empty:
        raise ConfigError(f"The data at '{corpus.root}' has no labelled clips; choose a corpus folder or CSV.")
    counts = m["emotion"].value_counts()
    if len(counts) < 2:
        raise ConfigError(f"Training needs at least two emotions and this data has only '{counts.index[0]}'; "
                          "choose data with more emotions.")
    if not split.within_corpus:  # cross-corpus: no folds; the two corpora are checked by ser_core.cross_corpus
        return
    if split.group_by == "corpus" and m["corpus"].nunique() < 2:
        raise ConfigError(f"Leave-one-corpus-out needs at least two corpora and this data is one "
                          f"({m['corpus'].iloc[0]}); add another corpus (--data A --data B).")
    if config.ood_calibration and (m["corpus"].nunique() < 2 or split.group_by == "corpus"):
        raise ConfigError("Calibrating out of domain holds each corpus out in turn, so it needs at least two corpora "
                          "and a split within them (speaker-grouped K-fold); add a corpus or turn it off.")
    n_spk = _n_speakers(m)
    if not split.speaker_dependent and n_spk < 2:
        has = "one speaker" if n_spk == 1 else "no speaker labels"
        raise ConfigError(f"Speaker-independent evaluation needs at least two speakers and this data has {has}; "
                          "choose data with more speakers, or the random split (speaker-dependent).")
    if split.uses_k and not split.speaker_dependent and k > n_spk:
        raise ConfigError(f"K={k} needs at least {k} speakers (each test fold holds out whole speakers) and this "
                          f"data has {n_spk}; choose K of {n_spk} or less.")
    if split.uses_k and k > counts.min():
        raise ConfigError(f"K={k} is more than the {counts.min()} clips of '{counts.idxmin()}', so some folds "
                          f"could not test it; choose K of {counts.min()} or less.")
    if config.split == "holdout" and n_spk < 5:
        raise ConfigError(f"An 80/20 split by speaker needs at least 5 speakers and this data has {n_spk}; choose "
                          "leave-one-speaker-out or speaker-grouped K-fold.")
    _check_training_folds(config, m)


def _check_training_folds(config: RunConfig, manifest) -> None:
    """Draw the run's folds from labels and speakers and refuse one whose training part lacks an emotion (each
    clip counted with its augmented copies, which train with it)."""
    import warnings

    from .augment import augment_copies

    per_clip = 1 + len(augment_copies(config.augment))
    y, groups = manifest["emotion"].to_numpy(), fold_groups(config.split, manifest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns of small classes; the checks above cover them
            splits = list(make_splitter(config.split, config.folds, config.seed).split(np.zeros(len(y)), y,
                                                                                           groups))
    except ValueError:  # a limit of the splitter the checks above missed: still a sentence, not a traceback
        raise ConfigError(f"The split '{config.split}' cannot be drawn on this data ({len(y)} clips, "
                          f"{_n_speakers(manifest)} speakers); choose fewer folds or more data.") from None
    for train, _ in splits:
        emotions, n = np.unique(y[train], return_counts=True)
        have = dict(zip(emotions, n))
        if len(have) < 2:
            raise ConfigError(f"A training fold would hold only '{emotions[0]}' clips and training needs at least "
                              "two emotions; choose data with more emotions in every corpus.")
        # a corpus held out may have an emotion no other corpus has: those clips are left out of its test
        needed = sorted(set(y)) if get_split(config.split).group_by != "corpus" else sorted(have)
        short = min(needed, key=lambda e: have.get(e, 0))
        if have.get(short, 0) * per_clip < MIN_TRAIN_CLIPS:
            fewer = "fewer folds or " if get_split(config.split).uses_k and config.folds > 2 else ""
            clips = f"{have.get(short, 0)} clip{'' if have.get(short, 0) == 1 else 's'}"
            raise ConfigError(f"A training fold would hold {clips} of '{short}' and every model needs at least "
                              f"{MIN_TRAIN_CLIPS} of each emotion; choose {fewer}data with more clips per emotion "
                              "and speaker.")


@dataclass
class RunResult:
    run_id: int | None
    config: RunConfig
    summary: dict
    folds: list
    labels: list
    confusion: list
    train_time_s: float
    latency_ms: float
    model_size_bytes: int | None
    cached: bool = False
    saved_model: str | None = None
    calibration: dict | None = None  # summary["calibration"]: temperature, "not sure" threshold, pooled ECE
    oof: dict | None = None  # out-of-fold predictions (see _out_of_fold); a cached run: its saved model's oof.npz


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def speaker_normalise(X_train, spk_train, X_test, spk_test):
    """Per-speaker z-scoring: each speaker's statistics come from that speaker's own clips -- for test speakers,
    their unlabelled test clips (transductive, as in the speaker-normalisation literature; the run's options
    record it). Labels are never used, and no statistic crosses from test to training data."""
    from .features import SpeakerNormalizer

    norm = SpeakerNormalizer(unseen="self").fit(X_train, spk_train)
    return norm.transform(X_train, spk_train), norm.transform(X_test, spk_test), norm


def cross_validate(config: RunConfig, corpus, *, store=None, use_cache: bool = True, n_jobs=None,
                   progress=None, save_to=None, should_stop=None, replace_shipped: bool = False,
                   folds_runner=None) -> RunResult:
    """K-fold cross-validate ``config.model`` on ``corpus`` (a ``ser_core.corpora.Corpus``).

    progress: callable(event: dict) receiving ``{"event": name, ...}`` (the names of ``ser_core.events``).
    store: a ``ResultsStore`` (None: no record). use_cache: reuse a finished stored run with the same config hash
    and data fingerprint instead of retraining. save_to: when given, a final model is trained on all clips and
    saved with its model card: a folder (replacing the model there), or a function of the run id that names a
    new folder (never replacing one: ``partial(saved.user_model_path, ...)``). replace_shipped: allow saving into
    the shipped models folder (``saved.check_writable``). should_stop: callable() -> bool, checked in every
    phase -- after each clip's features, between folds, after the final fit and before its model is swapped in
    (a cancel raises ``KeyboardInterrupt``: the run is stored ``cancelled`` and no model is saved).
    folds_runner: where the folds run (see :func:`local_folds`, the default: in this process, one after
    another; ``ser_core.cluster.ray_folds``: as Ray tasks, and with them the feature cache misses and the final
    model). Whatever runs them, this process alone writes the store and the saved
    model, and the results are aggregated in fold order, so the numbers do not depend on the runner. The
    result carries the out-of-fold predictions (``oof``) and their cross-fitted temperature calibration
    (``calibration``, also ``summary["calibration"]``; see ``calibrate_out_of_fold``).
    """
    emit = progress or (lambda e: None)
    spec, fs = config.resolved()
    check_run(config, corpus)
    manifest = corpus.manifest
    fingerprint = data_fingerprint(manifest)
    chash = config.hash(fs)
    if store is not None and use_cache:
        cached = _stored_result(config, store, chash, fingerprint, save_to, emit)
        if cached is not None:
            return cached

    transfer = None
    if config.ood_calibration:  # first each corpus held out in turn: predictions on corpora never trained on
        transfer = cross_validate(replace(config, split=LEAVE_CORPUS_OUT, ood_calibration=False), corpus, store=store,
                                  use_cache=use_cache, n_jobs=n_jobs, progress=_held_out_progress(emit),
                                  should_stop=should_stop, folds_runner=folds_runner)
        if transfer.oof is None:  # served from the store without them (stored by an older version)
            transfer = cross_validate(replace(config, split=LEAVE_CORPUS_OUT, ood_calibration=False), corpus,
                                      store=store, use_cache=False, n_jobs=n_jobs, progress=_held_out_progress(emit),
                                      should_stop=should_stop, folds_runner=folds_runner)
    data = fold_data(config, fs, manifest, emit, n_jobs, runner=folds_runner, should_stop=should_stop)
    splits = draw_folds(config, manifest, emit)
    versions = package_versions()
    run_id = None
    if store is not None:
        run_id = store.start_run(**_run_fields(config, fs, corpus, fingerprint, k=len(splits), versions=versions))
    try:
        results = _run_folds(data, splits, folds_runner or local_folds, store, run_id, emit, should_stop)
        folds = [_fold_record(r) for r in results]
        oof = _out_of_fold(manifest["path"].tolist(), data.y, data.labels, *_oof_arrays(data, splits, results),
                           manifest, _oof_channels(data, splits, results), _oof_familiarity(data, splits, results))
        # also adds the calibrated metrics to every fold's
        calibration = calibrate_out_of_fold(folds, oof, transfer=transfer.oof if transfer is not None else None)
        if transfer is not None:
            calibration["transfer"]["run_id"] = transfer.run_id
        robustness = {}
        if data.X_channels:
            from .robustness import channel_summary

            robustness = {"robustness": channel_summary(oof)}
        if store is not None:
            for f in folds:
                store.update_fold_metrics(run_id, f["fold"], f["metrics"])
            store.add_oof(run_id, oof)
        summary = {**summarize([f["metrics"] for f in folds]), **calibration, **robustness}
        confusion = np.sum([f["metrics"]["confusion"] for f in folds], axis=0)
        train_time, latency = float(np.mean([f["train_time_s"] for f in folds])), \
            float(np.mean([f["latency_ms"] for f in folds]))
        size = results[0]["model_size_bytes"]
        record = {"summary": summary, "labels": data.labels, "confusion": confusion.tolist(),
                  "train_time_s": train_time, "latency_ms": latency, "model_size_bytes": size}
        saved = None
        if save_to is not None:
            emit({"event": events.FINAL, "run_id": run_id})
            fit = getattr(folds_runner, "fit_final", None)
            saved = _train_final(data, corpus, summary, fingerprint, versions, save_to,
                                 _run_stamp(store, run_id, chash), oof,
                                 transfer_oof=transfer.oof if transfer is not None else None,
                                 on_saved=None if store is None else partial(_record_saved, store, run_id, record),
                                 replace_shipped=replace_shipped,
                                 fit=partial(fit, should_stop=should_stop) if fit else fit_final,
                                 should_stop=should_stop)
        elif store is not None:
            store.finish_run(run_id, **record)
    except BaseException as exc:
        record_failure(store, run_id, exc)
        raise
    emit({"event": events.DONE, "run_id": run_id, "summary": summary})
    return RunResult(run_id, config, summary, folds, data.labels, confusion.tolist(), train_time, latency, size,
                     saved_model=str(saved) if saved else None, calibration=summary["calibration"], oof=oof)


def _held_out_progress(emit):
    """The ``progress`` of the leave-one-corpus-out run a calibration out of domain starts with: each fold's end
    as a ``HELD_OUT`` event (the corpus and its metrics); features pass through; the rest is its own business."""
    def progress(e):
        if e["event"] == events.FOLD_DONE:
            emit({"event": events.HELD_OUT, "fold": e["fold"], "folds": e["folds"], "metrics": e["metrics"],
                  "corpus": (e.get("test_corpora") or ["?"])[0], "run_id": e.get("run_id")})
        elif e["event"] in (events.FEATURES, events.FEATURES_PROGRESS, events.LABELS):
            emit(e)

    return progress


def _stored_result(config, store, chash, fingerprint, save_to, emit) -> RunResult | None:
    """The stored run of this configuration on this data, when it can serve the call (with a saved model of its
    own when ``save_to`` asks for one); None: train."""
    hit = store.find_cached(chash, fingerprint)
    own_model = _own_saved_model(hit, store) if hit is not None else None
    if hit is not None and (save_to is None or own_model is not None):
        emit({"event": events.CACHED, "run_id": hit["id"]})
        return RunResult(hit["id"], config, hit["summary"], hit["folds"], hit["labels"], hit["confusion"],
                         hit["train_time_s"], hit["latency_ms"], hit["model_size_bytes"], cached=True,
                         saved_model=own_model, calibration=hit["summary"].get("calibration"),
                         oof=load_oof(own_model) if own_model else store.oof(hit["id"]))
    if hit is not None:
        emit({"event": events.CACHED_WITHOUT_MODEL, "run_id": hit["id"], "message": (
            f"Stored run {hit['id']} has this configuration but no saved model of its own any more (another "
            "run may have replaced it); training again to save one.")})
    return None


def draw_folds(config: RunConfig, manifest, emit=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's ``(train, test)`` index pairs: the split's splitter on the manifest's labels, grouped by its
    speakers (or corpora: ``Split.group_by``). Leaving a corpus out, its clips of an emotion that no other
    corpus has are left out of its test (no model could name it; ``emit`` gets a ``LABELS`` event saying so)."""
    y = manifest["emotion"].to_numpy()
    splitter = make_splitter(config.split, config.folds, config.seed)
    splits = list(splitter.split(np.zeros(len(y)), y, fold_groups(config.split, manifest)))
    if get_split(config.split).group_by != "corpus":
        return splits
    out, said = [], []
    for train, test in splits:
        known = np.isin(y[test], np.unique(y[train]))
        if not known.all():
            held = manifest["corpus"].iloc[test[0]]
            said.append(f"{held}'s {', '.join(sorted(set(y[test][~known])))} ({(~known).sum()} clips)")
        out.append((train, test[known]))
    if said and emit:
        emit({"event": events.LABELS, "message": "Left out of the test of the corpus held out, as no other corpus "
                                                 f"has that emotion: {'; '.join(said)}."})
    return out


@dataclass
class FoldData:
    """What every fold of a run reads: the clips' features (``X``: ``(n, *fs.shape)``), labels and speakers
    (``(n,)``), their augmented copies (``X_aug``: key -> rows aligned with ``X``) and channel copies
    (``X_channels``: condition -> rows aligned with ``X``), and the run's sorted ``labels``. Computed once by
    the process that runs the run; a Ray run puts it in the object store once for all its folds."""

    config: RunConfig
    fs: object  # the resolved ser_core.features.FeatureSet
    X: np.ndarray
    y: np.ndarray
    speakers: np.ndarray
    labels: list
    X_aug: dict
    X_channels: dict
    corpora: np.ndarray  # (n,) each clip's corpus (the manifest's corpus column)
    R: np.ndarray | None = None  # (n, d) reference features of a run on several corpora (ser_core.familiarity)

    @property
    def norm_groups(self) -> np.ndarray:
        """``(n,)`` what per-speaker normalisation groups clips by: their speakers, or their corpora
        (``RunConfig.norm_by``)."""
        return self.corpora if self.config.norm_by == "corpus" else self.speakers


_FEATURES_LOCK = threading.Lock()  # one run of this process computes features at a time (see fold_data)


def fold_data(config: RunConfig, fs, manifest, emit, n_jobs=None, *, runner=None, should_stop=None) -> FoldData:
    """The features a run's folds read, from the feature cache. The misses of the clips' own features are
    computed by the folds runner's ``features`` where it has one (``ser_core.cluster.RayRunner``: as Ray
    tasks), else here in ``n_jobs`` processes; augmented and channel copies are computed here. Runs in threads
    of one process (a Ray job's models) take turns, so that a clip shared by two runs is computed once and the
    second run reads it from the cache."""
    if config.speaker_norm and config.channels:
        raise ConfigError("Channel predictions serve ensembles of single-clip models; drop them with speaker "
                          "normalisation.")
    paths = manifest["path"].tolist()
    y = manifest["emotion"].to_numpy()
    speakers = manifest["speaker"].astype(str).to_numpy()
    compute = getattr(runner, "features", None)
    with _FEATURES_LOCK:
        X = features_of(paths, fs, emit, n_jobs, should_stop=should_stop,
                        compute_misses=partial(compute, emit=emit, should_stop=should_stop) if compute else None)
        stop_if(should_stop)
        X_aug = augmented_copies(paths, fs, config.augment, config.seed, speakers, n_jobs)
        stop_if(should_stop)
        X_channels = channel_copies(paths, fs, config.channels, speakers, n_jobs)
        R = reference_features(paths, fs, X, manifest, n_jobs)
    return FoldData(config, fs, X, y, speakers, sorted(np.unique(y)), X_aug, X_channels,
                    manifest["corpus"].astype(str).to_numpy(), R)


def reference_features(paths, fs, X, manifest, n_jobs=None):
    """The features every clip's familiarity score reads (``ser_core.familiarity.REFERENCE_SET``; ``X`` itself
    when the run reads that set) for a run on several corpora, the only runs whose calibration learns how
    confidence should fall on unfamiliar clips; None for a run on one corpus."""
    from .familiarity import REFERENCE_SET

    if manifest["corpus"].nunique() < 2:
        return None
    if fs.name == REFERENCE_SET:
        return X
    from .features import compute_files

    return compute_files(paths, REFERENCE_SET, n_jobs=n_jobs, progress=False)


def run_fold(data: FoldData, fold: int, train, test) -> dict:
    """One fold, with no side effect: a fresh model fitted on the ``train`` rows (``fit_fold``), then scored on
    the ``test`` rows and on their channel copies. Returns ``{"fold", "metrics", "n_train", "n_test",
    "test_speakers", "train_time_s", "latency_ms", "proba": (n_test, len(labels)) in label order, "channels":
    {condition: (n_test, len(labels))}, "model_size_bytes", "fold_time_s"}`` (model size: on disk, of fold 0's
    model, else None; fold time: this whole call, seconds), and for a run on several corpora ``"familiarity"``
    (``(n_test,)``: how strange each test clip is to the fold's training clips, ``ser_core.familiarity``)."""
    t_fold = time.perf_counter()
    y, speakers = data.y, data.speakers
    groups = data.norm_groups
    model, X_test, _, t_train = fit_fold(data.config, data.fs, data.X[train], y[train], groups[train],
                                         {k: a[train] for k, a in data.X_aug.items()}, data.X[test],
                                         groups[test], data.corpora[train])
    t0 = time.perf_counter()
    proba = model.predict_proba(X_test)
    latency = 1000 * (time.perf_counter() - t0) / max(1, len(test))
    pred = np.asarray(model.classes_)[proba.argmax(1)]
    size = None
    if fold == 0:  # model size: what a saved fold model takes on disk
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            size = _dir_size(model.save(Path(tmp) / "m"))
    familiarity = {}
    if data.R is not None:
        from .familiarity import fold_familiarity

        familiarity = {"familiarity": fold_familiarity(data.R, train, test)}
    return {"fold": fold, "metrics": compute_metrics(y[test], pred, data.labels), "n_train": len(train),
            **familiarity, "n_test": len(test), "test_speakers": sorted(set(speakers[test])),
            "test_corpora": sorted(set(data.corpora[test])), "train_time_s": t_train,
            "latency_ms": latency, "proba": in_label_order(proba, model.classes_, data.labels),
            "channels": {c: in_label_order(model.predict_proba(Xc[test]), model.classes_, data.labels)
                         for c, Xc in data.X_channels.items()},
            "model_size_bytes": size, "fold_time_s": time.perf_counter() - t_fold}


def local_folds(data: FoldData, splits, *, on_start=None, should_stop=None):
    """The default folds runner of ``cross_validate``: every fold in this process, one after another. Yields
    :func:`run_fold`'s results; calls ``on_start(fold)`` as a fold starts; raises ``KeyboardInterrupt`` when
    ``should_stop()`` says so between folds. Another runner (``ser_core.cluster.ray_folds``) keeps this
    signature and may yield the folds in any order; it may also compute the run's other work where its folds
    run: ``runner.features(paths, fs, store, *, emit, should_stop)`` the feature cache misses (see
    ``features.compute_files``'s ``compute_misses``), ``runner.fit_final(data, *, should_stop)`` the final model
    (as :func:`fit_final`). A runner without them leaves both to this process."""
    for i, (train, test) in enumerate(splits):
        stop_if(should_stop)
        if on_start:
            on_start(i)
        yield run_fold(data, i, train, test)


def stop_if(should_stop) -> None:
    """Raise ``KeyboardInterrupt`` (a cancel) when ``should_stop`` (callable() -> bool, or None) says so."""
    if should_stop is not None and should_stop():
        raise KeyboardInterrupt("cancelled")


FOLD_FIELDS = ("fold", "metrics", "n_train", "n_test", "test_speakers", "train_time_s", "latency_ms")
FOLD_EXTRAS = ("fold_time_s", "test_corpora", "node", "host", "started_at")  # not stored: the fold's wall time,
#                  its test clips' corpora; where and when (time.time() there) a cluster ran it


def _fold_record(result: dict) -> dict:
    """What a run keeps of a fold's result (``RunResult.folds``, the ``FOLD_DONE`` event): its numbers, and its
    time and node (when it ran on a cluster)."""
    return {k: result[k] for k in (*FOLD_FIELDS, *FOLD_EXTRAS) if k in result}


def _run_folds(data, splits, runner, store, run_id, emit, should_stop) -> list[dict]:
    """Run the folds with ``runner``; store each as it finishes (this process is the store's only writer) and
    return them in fold order."""
    results = {}

    def started(i):
        emit({"event": events.FOLD_START, "fold": i, "folds": len(splits), "run_id": run_id})

    for r in runner(data, splits, on_start=started, should_stop=should_stop):
        results[r["fold"]] = r
        fold = _fold_record(r)
        if store is not None:
            store.add_fold(run_id, r["fold"], **{k: fold[k] for k in FOLD_FIELDS if k != "fold"})
        emit({"event": events.FOLD_DONE, **fold, "folds": len(splits), "run_id": run_id})
    if len(results) != len(splits):
        raise RuntimeError(f"The folds runner returned {len(results)} of {len(splits)} folds.")
    return [results[i] for i in range(len(splits))]


def _oof_arrays(data, splits, results):
    """``(proba (n, len(labels)), fold (n,))`` of every clip from the folds' results; fold -1: never tested."""
    proba, fold = np.zeros((len(data.y), len(data.labels))), np.full(len(data.y), -1)
    for (_, test), r in zip(splits, results):
        proba[test], fold[test] = r["proba"], r["fold"]
    return proba, fold


def _oof_familiarity(data, splits, results) -> dict:
    """``{"familiarity": (n,)}`` from the folds' results of a run on several corpora, else ``{}``."""
    if data.R is None:
        return {}
    out = np.zeros(len(data.y))
    for (_, test), r in zip(splits, results):
        out[test] = r["familiarity"]
    return {"familiarity": out}


def _oof_channels(data, splits, results) -> dict:
    """``{condition: (n, len(labels))}``: the test folds through each channel, from the folds' results."""
    out = {c: np.zeros((len(data.y), len(data.labels))) for c in data.X_channels}
    for (_, test), r in zip(splits, results):
        for c, p in r["channels"].items():
            out[c][test] = p
    return out


def _run_fields(config: RunConfig, fs, corpus, fingerprint: str, *, k: int, versions: dict) -> dict:
    """What the store records of a run before its folds (``ResultsStore.start_run``'s fields): the config, the
    data, the splitter."""
    m = corpus.manifest
    return dict(model=config.model, params=config.params, feature_set=fs.params(), dataset=corpus.name,
                data_root=corpus.root, data_fingerprint=fingerprint, n_clips=len(m),
                n_speakers=int(m["speaker"].astype(str).nunique()), split=config.split,
                splitter=repr(make_splitter(config.split, config.folds, config.seed)), k=k, seed=config.seed,
                speaker_dependent=get_split(config.split).speaker_dependent,
                options={"augment": list(config.augment), "speaker_norm": config.speaker_norm, **data_options(corpus),
                         **config.later_options()},
                config_hash=config.hash(fs), versions=versions)


def data_options(corpus) -> dict:
    """What a run records of data read from several corpora (none for one corpus in its own labels): each
    corpus's name and folder, and the taxonomy its labels went through."""
    if not corpus.parts:
        return {}
    return {"corpora": [name for name, _ in corpus.parts], "data_roots": [str(root) for _, root in corpus.parts],
            "taxonomy": corpus.taxonomy}


def record_run(store, result: RunResult, corpus, *, sweep: str | None = None, trial: int | None = None) -> RunResult:
    """Store a run that was cross-validated without a store (``cross_validate(store=None)``: a sweep's trial in
    a Ray worker, which never writes the store) as ``cross_validate`` stores one: its config, folds, out-of-fold
    predictions and summary, finished. sweep: the id of the sweep it is a trial of; trial: its number there
    (kept in the run's options as ``trial``). Returns ``result`` with its ``run_id``."""
    config = result.config
    _, fs = config.resolved()
    fields = _run_fields(config, fs, corpus, data_fingerprint(corpus.manifest), k=len(result.folds),
                         versions=package_versions())
    if trial is not None:
        fields["options"]["trial"] = int(trial)
    run_id = store.start_run(**fields, sweep=sweep)
    try:
        for f in result.folds:
            store.add_fold(run_id, f["fold"], **{k: f[k] for k in FOLD_FIELDS if k != "fold"})
        store.add_oof(run_id, result.oof)
        store.finish_run(run_id, summary=result.summary, labels=result.labels, confusion=result.confusion,
                         train_time_s=result.train_time_s, latency_ms=result.latency_ms,
                         model_size_bytes=result.model_size_bytes)
    except BaseException as exc:  # never leave the run "running"
        record_failure(store, run_id, exc)
        raise
    return replace(result, run_id=run_id)


def save_final_model(result: RunResult, corpus, save_to, *, store=None, n_jobs=None):
    """Train the configuration of the finished run ``result`` on every clip of ``corpus`` and save it with its
    model card, as ``cross_validate(..., save_to=save_to)`` does at its end; the stored run (``result.run_id``
    in ``store``) then names the folder. For a run recorded apart from its training (``record_run``: the best
    trial of a sweep). Returns the folder."""
    config = result.config
    _, fs = config.resolved()
    data = fold_data(config, fs, corpus.manifest, lambda e: None, n_jobs)
    on_saved = None if store is None else partial(_record_saved_model, store, result.run_id)
    return _train_final(data, corpus, result.summary, data_fingerprint(corpus.manifest), package_versions(),
                        save_to, _run_stamp(store, result.run_id, config.hash(fs)), result.oof, on_saved=on_saved)


def _record_saved_model(store, run_id, folder, previous) -> None:
    """``save_trained``'s ``on_saved`` for a run already finished (``record_run``): it names its folder, and the
    run whose model it replaced there no longer does (as ``_record_saved``)."""
    store.set_saved_model(run_id, folder)
    _unclaim_replaced(store, run_id, folder, previous)


def fit_fold(config: RunConfig, fs, X_train, y_train, spk_train, X_aug: dict, X_test, spk_test, dom_train=None):
    """One training step of a run (a CV fold, or a cross-corpus train/test pair): per-speaker normalisation when
    the config asks for it, the training clips' augmented copies (``X_aug``: kind -> rows aligned with
    ``X_train``), then a fresh model of the config fitted on them (with each row's corpus, ``dom_train``, where
    the model learns from it: ``fit_model``). Returns ``(model, X_test as the model expects it, the fitted
    SpeakerNormalizer or None, training seconds)``: the normaliser transforms other rows of the test speakers
    the same way (e.g. their clips through a channel)."""
    norm = None
    if config.speaker_norm:
        X_train, X_test, norm = speaker_normalise(X_train, spk_train, X_test, spk_test)
    X_fit, y_fit = with_augmented(X_train, y_train, X_aug, spk_train, norm)
    model = _new_model(config, fs)
    t0 = time.perf_counter()
    fit_model(model, X_fit, y_fit, _with_copies(dom_train, len(y_fit)), balance=config.balance)
    return model, X_test, norm, time.perf_counter() - t0


def fit_model(model, X, y, domains=None, *, balance: str = ""):
    """``model.fit(X, y)``, with ``domains=`` (each row's corpus, ``(n,)``) for a model whose ``fit`` takes it
    (domain-adversarial training, mixup across corpora); the others never see it. ``balance="corpus"``: each
    row weighs ``n / (corpora * rows of its corpus)`` (``sample_weight=``; a model that takes no weights is a
    ``ConfigError``)."""
    import inspect

    kw, takes = {}, inspect.signature(model.fit).parameters
    if domains is not None and "domains" in takes:
        kw["domains"] = np.asarray(domains, dtype=str)
    if balance == "corpus":
        if "sample_weight" not in takes:
            raise ConfigError(f"Model '{model.name}' takes no sample weights, so it cannot balance the corpora; "
                              "choose svm, random_forest or decision_tree, or leave balance off.")
        _, index, counts = np.unique(np.asarray(domains, dtype=str), return_inverse=True, return_counts=True)
        kw["sample_weight"] = len(index) / (len(counts) * counts[index])
    return model.fit(X, y, **kw)


def _with_copies(values, n: int):
    """``values`` (one per training clip) repeated for the augmented copies that follow the clips in a fit of
    ``n`` rows (``with_augmented``); None stays None."""
    if values is None:
        return None
    values = np.asarray(values)
    return np.tile(values, n // len(values)) if len(values) else values


def _new_model(config: RunConfig, fs):
    """A fresh, unfitted model of ``config`` on the feature set ``fs`` (seeded by the run unless its params
    name a seed)."""
    from .models import create_model

    return create_model(config.model, **{**config.params, "feature_set": fs.name,
                                         "seed": config.params.get("seed", config.seed)})


def record_failure(store, run_id, exc: BaseException) -> None:
    """Mark a started run in ``store`` (if any) as cancelled (``KeyboardInterrupt``: the user's cancel) or as
    failed with the error, so that it never stays "running"."""
    if store is not None and run_id is not None:
        cancelled = isinstance(exc, KeyboardInterrupt)
        store.fail_run(run_id, "cancelled by the user" if cancelled else f"{type(exc).__name__}: {exc}",
                       status="cancelled" if cancelled else "failed")


def _run_stamp(store, run_id, config_hash) -> dict:
    """What a saved model's card (``cv``) records of the run that produced it: a cached run is served with a
    saved model only when the model's stamp is the run's (see ``_own_saved_model``)."""
    return {"run_id": run_id, "config_hash": config_hash, "results_store": _store_id(store)}


def _store_id(store) -> str | None:
    return str(Path(store.path).resolve()) if store is not None else None


def _own_saved_model(run: dict, store) -> str | None:
    """The folder of the model the stored ``run`` saved, if that folder still holds it (its card carries the
    run's stamp); None when the run saved none or the model was replaced or deleted since."""
    from .saved import CARD_JSON, read_card

    folder = run.get("saved_model")
    if not folder or not (Path(folder) / CARD_JSON).is_file():
        return None
    stamp = _run_stamp(store, run["id"], run["config_hash"])
    cv = read_card(folder).get("cv", {})
    return folder if all(cv.get(k) == v for k, v in stamp.items()) else None


def _record_saved(store, run_id, record, folder, previous) -> None:
    """Finish the run with its saved model, while the models folder is still locked (``save_trained``'s
    ``on_saved``), and un-claim the folder for the run of this store whose model it replaced: the store never
    names a folder that holds another run's model, and the last run to save is the last to finish."""
    store.finish_run(run_id, **record, saved_model=folder)
    _unclaim_replaced(store, run_id, folder, previous)


def _unclaim_replaced(store, run_id, folder, previous) -> None:
    """The run of this store whose model (card ``previous``) the model of ``run_id`` replaced in ``folder`` no
    longer names that folder."""
    cv = (previous or {}).get("cv", {})
    if cv.get("run_id") not in (None, run_id) and cv.get("results_store") == _store_id(store):
        store.forget_saved_model(cv["run_id"], folder)


def in_label_order(proba, classes, labels) -> np.ndarray:
    """``(n, len(classes))`` probabilities -> ``(n, len(labels))`` in ``labels`` order (0 for a label the fold's
    model never saw)."""
    from .calibration import label_indices

    out = np.zeros((len(proba), len(labels)))
    out[:, label_indices(classes, labels)] = proba
    return out


CLIP_GROUPS = ("speaker", "gender", "intensity", "corpus")  # manifest columns kept with the out-of-fold predictions


def _out_of_fold(paths, y, labels, proba, fold, manifest, channels=None, per_clip=None) -> dict:
    """The run's out-of-fold predictions, one row per clip that was in a test fold (every clip of a K-fold or
    LOSO run, in manifest order): ``{"proba": (n, k) float, "classes": (k,) str, "fold": (n,) int, "y": (n,)
    str true labels, "paths": (n,) str}`` plus each clip's ``CLIP_GROUPS`` (``(n,)`` str, for the speaker
    bootstrap and breakdowns of ``ser_core.stats``) and, per channel of ``channels`` ({condition: (n, k)}),
    ``"proba@<condition>"`` -- numpy arrays, as ``ser_core.saved.load_oof`` returns them; ``per_clip``: more
    ``{name: (n,) array}`` in manifest order (the clips' ``familiarity``)."""
    tested = fold >= 0
    return {"proba": proba[tested], "classes": np.asarray(labels, dtype=str), "fold": fold[tested],
            "y": np.asarray(y, dtype=str)[tested], "paths": np.asarray(paths, dtype=str)[tested],
            **{g: manifest[g].to_numpy(dtype=str)[tested] for g in CLIP_GROUPS},
            **{f"{CHANNEL_PROBA}{c}": p[tested] for c, p in (channels or {}).items()},
            **{k: np.asarray(v)[tested] for k, v in (per_clip or {}).items()}}


def calibrate_out_of_fold(folds, oof, method: str | None = None, transfer: dict | None = None) -> dict:
    """Calibration of the out-of-fold probabilities, cross-fitted: each fold is calibrated on the other folds.
    Every ``SINGLE_PROTOCOL_METHODS`` is cross-fitted and the one with the lowest pooled ECE is kept
    (temperature on a tie), or only ``method`` when given (a saved run's own, to derive its per-fold metrics
    again). With ``transfer`` -- the out-of-fold predictions of the same configuration leaving each corpus out
    (the run's ``ood_calibration``), both with each clip's ``familiarity`` -- the method is ``familiarity``:
    one temperature that grows with how strange a clip is, fitted on both kinds of predictions at once and
    cross-fitted so that no clip's label calibrates either of its own predictions (``cross_fitted_by_clip``).
    Adds the calibrated ``ece``, ``brier``, ``wrong_over_90``, the raw ``ece_uncalibrated`` and the arousal and
    valence scores to each fold's metrics, and returns the run's summary entries:

    - ``calibration``: ``method``, ``temperature`` (and ``confidence_map``, ``confidence_logistic`` or
      ``familiarity_slope``, and ``ceiling`` where one was needed) fitted on every fold: the final model's;
      ``fold_temperatures``; ``threshold`` (top probability below which an answer is "not sure", see
      ``uncertainty_threshold``; chosen on the held-out corpora's predictions too with ``transfer``);
      ``uncertain_fraction`` (of the clips, calibrated); ``ece``, ``brier``, ``wrong_over_90`` of all calibrated
      out-of-fold predictions pooled, with ``ece_uncalibrated``, ``brier_uncalibrated`` and ``ece_by_method``
      (every method's pooled ECE);
    - ``reliability``, ``reliability_uncalibrated``: ``reliability_curve`` of the pooled predictions;
    - ``per_corpus`` (several corpora): ``per_corpus_metrics``; ``transfer`` (with ``transfer``): the same for
      each corpus held out, and the pooled ``ece`` and ``uar`` of those predictions."""
    from .calibration import (ConfidenceCalibrator, best_cross_fitted, cross_fitted_calibration,
                              expected_calibration_error, label_indices, probability_metrics, reliability_curve,
                              uncertainty_threshold)

    y_idx, raw = label_indices(oof["y"], oof["classes"]), oof["proba"]
    if transfer is not None or method == "familiarity":
        if transfer is None:
            raise ConfigError("A familiarity calibration is fitted on the held-out corpora's predictions too; pass "
                              "the run's leave-one-corpus-out predictions (transfer).")
        method = "familiarity"
        stacked = _stacked(oof, transfer)
        calibrated_all, params = _cross_fit_stacked(stacked)  # calibrated_both, with the per-block parameters
        calibrated, calibrated_t = calibrated_all[:len(raw)], calibrated_all[len(raw):]
        temperatures = np.asarray([params[f"cv:{f}"][0] for f in np.unique(oof["fold"])])
        final = ConfidenceCalibrator(method).fit(stacked["proba"], stacked["y_idx"], stacked["familiarity"])
        ece_by_method = {method: expected_calibration_error(y_idx, calibrated)}
        threshold = uncertainty_threshold(calibrated_all, stacked["y_idx"])  # new corpora's answers count too
    else:
        if method is None:
            method, calibrated, temperatures, ece_by_method = best_cross_fitted(raw, y_idx, oof["fold"])
        else:
            calibrated, temperatures = cross_fitted_calibration(raw, y_idx, oof["fold"], method=method)
            ece_by_method = {method: expected_calibration_error(y_idx, calibrated)}
        final = ConfidenceCalibrator(method).fit(raw, y_idx)
        threshold = uncertainty_threshold(calibrated, y_idx)
    for f in folds:
        rows = oof["fold"] == f["fold"]
        f["metrics"].update(probability_metrics(y_idx[rows], calibrated[rows]),
                            ece_uncalibrated=expected_calibration_error(y_idx[rows], raw[rows]),
                            **dimension_metrics(oof["y"][rows], calibrated[rows], oof["classes"]))
    before = probability_metrics(y_idx, raw)
    out = {"calibration": {**final.to_dict(),
                           "fold_temperatures": temperatures.tolist(), "threshold": threshold,
                           "uncertain_fraction": float(np.mean(calibrated.max(1) < threshold)),
                           **probability_metrics(y_idx, calibrated), "ece_uncalibrated": before["ece"],
                           "brier_uncalibrated": before["brier"], "ece_by_method": ece_by_method,
                           **dimension_metrics(oof["y"], calibrated, oof["classes"])},
           "reliability": reliability_curve(y_idx, calibrated),
           "reliability_uncalibrated": reliability_curve(y_idx, raw)}
    if len(set(oof.get("corpus", ()))) > 1:
        out["per_corpus"] = per_corpus_metrics(oof, calibrated, threshold)
    if transfer is not None:
        t_idx = label_indices(transfer["y"], transfer["classes"])
        out["transfer"] = {"per_corpus": per_corpus_metrics(transfer, calibrated_t, threshold),
                           **probability_metrics(t_idx, calibrated_t),
                           "uncertain_fraction": float(np.mean(calibrated_t.max(1) < threshold))}
    return out


def _stacked(oof: dict, transfer: dict) -> dict:
    """A run's out-of-fold predictions and its leave-one-corpus-out ones as one set of rows (``proba``, ``y_idx``,
    ``familiarity``, ``blocks``: ``cv:<fold>`` / ``out:<corpus>``, ``clips``: the paths), ``transfer``'s columns
    put in ``oof``'s class order."""
    from .calibration import label_indices

    for name, o in (("the run", oof), ("its leave-one-corpus-out run", transfer)):
        if "familiarity" not in o:
            raise ConfigError(f"The out-of-fold predictions of {name} carry no familiarity scores; train it on "
                              "several corpora with this version.")
    classes = [str(c) for c in oof["classes"]]
    t_proba = in_label_order(transfer["proba"], [str(c) for c in transfer["classes"]], classes)
    proba = np.concatenate([oof["proba"], t_proba])
    y = np.concatenate([np.asarray(oof["y"], str), np.asarray(transfer["y"], str)])
    return {"proba": proba, "y_idx": label_indices(y, classes),
            "familiarity": np.concatenate([oof["familiarity"], transfer["familiarity"]]).astype(float),
            "blocks": np.concatenate([[f"cv:{f}" for f in oof["fold"]],
                                      [f"out:{c}" for c in transfer["corpus"]]]),
            "clips": np.concatenate([np.asarray(oof["paths"], str), np.asarray(transfer["paths"], str)])}


def calibrated_both(oof: dict, transfer: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(oof's probabilities, transfer's)`` calibrated as a familiarity calibration cross-fits them (each clip
    by a calibrator that never saw its label), ``transfer``'s in ``oof``'s class order."""
    calibrated, _ = _cross_fit_stacked(_stacked(oof, transfer))
    return calibrated[:len(oof["proba"])], calibrated[len(oof["proba"]):]


def _cross_fit_stacked(stacked: dict):
    from .calibration import cross_fitted_by_clip

    return cross_fitted_by_clip(stacked["proba"], stacked["y_idx"], stacked["familiarity"], stacked["blocks"],
                                stacked["clips"])


def per_corpus_metrics(oof, calibrated, threshold: float | None = None) -> dict:
    """``{corpus: metrics}`` of a run's out-of-fold predictions on each corpus's clips (``oof["corpus"]``) from
    their calibrated probabilities: ``compute_metrics`` (UAR over the emotions that corpus has; an answer it
    lacks counts as wrong), ``dimension_metrics``, ``n``, ``speakers`` and, with ``threshold``, the share of
    "not sure" answers (``uncertain_fraction``)."""
    out = {}
    classes = [str(c) for c in oof["classes"]]
    for corpus in dict.fromkeys(oof["corpus"]):  # in the order of the clips
        rows = oof["corpus"] == corpus
        y, p = oof["y"][rows], calibrated[rows]
        labels = sorted(set(classes) | set(y))
        m = compute_metrics(y, np.asarray(classes)[p.argmax(1)], labels, proba=p, classes=classes)
        m.update(dimension_metrics(y, p, classes), speakers=int(len(set(oof["speaker"][rows]))))
        if threshold is not None:
            m["uncertain_fraction"] = float(np.mean(p.max(1) < threshold))
        out[str(corpus)] = m
    return out


def fit_final(data: FoldData):
    """The final model of a run: a fresh model of ``data.config`` trained on every clip (and the augmented
    copies). With speaker normalisation every training speaker is z-scored with its own statistics. Returns
    ``(model, the fitted SpeakerNormalizer or None, training seconds)``; no side effect, so a Ray task can run it
    (``ser_core.cluster.RayRunner.fit_final``, which returns the model as a ``saved.PackedModel``)."""
    X, y, speakers, norm = data.X, data.y, data.norm_groups, None
    if data.config.speaker_norm:
        from .features import SpeakerNormalizer

        norm = SpeakerNormalizer().fit(X, speakers)
        X = norm.transform(X, speakers)
    X, y = with_augmented(X, y, data.X_aug, speakers, norm)
    model = _new_model(data.config, data.fs)
    t0 = time.perf_counter()
    fit_model(model, X, y, _with_copies(data.corpora, len(y)), balance=data.config.balance)
    return model, norm, time.perf_counter() - t0


def _train_final(data: FoldData, corpus, summary, fingerprint, versions, save_to, stamp, oof, on_saved=None,
                 replace_shipped=False, fit=fit_final, should_stop=None, transfer_oof=None):
    """Train on every clip (``fit(data)``: :func:`fit_final` here, or a folds runner's ``fit_final`` where the
    folds ran) and save with a model card carrying the CV metrics it was judged by and the run that produced it
    (``stamp``, see ``_run_stamp``), the temperature and "not sure" threshold calibrated on its out-of-fold
    predictions (card ``calibration``), and those predictions (``oof.npz``, for stacking). save_to: a folder,
    or a function of the run id naming a new one (see ``cross_validate``); on_saved and replace_shipped: passed
    to ``save_trained``. With speaker normalisation the global statistics of the training data are saved with
    the model (the fallback when a user does not calibrate). should_stop: a cancel during the fit or the saving
    raises ``KeyboardInterrupt`` before the model is swapped in (nothing is saved)."""
    from .saved import save_trained

    config, y, speakers = data.config, data.y, data.speakers
    model, norm, train_s = fit(data)
    stop_if(should_stop)  # cancelled while it trained (a fit is not interrupted): nothing is saved
    card = {
        "training_data": {"corpus": corpus.name, "root": str(corpus.root), "clips": int(len(y)),
                          "speakers": int(len(set(speakers))), "fingerprint": fingerprint,
                          "emotions": {str(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))},
                          **training_corpora(corpus)},
        "cv": {"split": config.split, "split_description": get_split(config.split).description,
               "k": config.folds, "seed": config.seed, "speaker_dependent": get_split(config.split).speaker_dependent,
               "metrics": {k: v for k, v in summary.items() if k not in RUN_ENTRIES},
               **({"per_corpus": summary["per_corpus"]} if "per_corpus" in summary else {}), **stamp},
        "calibration": summary["calibration"],
        **({"transfer": summary["transfer"]} if "transfer" in summary else {}),
        **({"robustness": summary["robustness"], "robustness_protocol": CHANNEL_OOF_PROTOCOL}
           if "robustness" in summary else {}),
        "options": {"augment": list(config.augment), "speaker_norm": config.speaker_norm,
                    **({"channels": list(config.channels)} if config.channels else {}),
                    **config.later_options()},
        "final_train_time_s": train_s,
        "versions": versions,
    }
    folder = save_to(stamp["run_id"]) if callable(save_to) else save_to
    familiarity = None
    if summary["calibration"].get("method") == "familiarity":  # its calibration reads each clip's score
        from .familiarity import Familiarity

        familiarity = Familiarity().fit(data.R)
    return save_trained(model, folder, card=card, speaker_norm=norm, oof=oof, on_saved=on_saved,
                        replace=not callable(save_to), replace_shipped=replace_shipped, should_stop=should_stop,
                        transfer_oof=transfer_oof, familiarity=familiarity)


def training_corpora(corpus) -> dict:
    """What a model card records of training data read from several corpora: the taxonomy and, per corpus,
    its folder, clips, speakers and clips per emotion (none for one corpus in its own labels)."""
    if not corpus.parts:
        return {}
    m = corpus.manifest
    return {"taxonomy": corpus.taxonomy, "corpora": {
        name: {"root": str(root), "clips": int((m["corpus"] == name).sum()),
               "speakers": int(m.loc[m["corpus"] == name, "speaker"].nunique()),
               "emotions": {str(k): int(v) for k, v in m.loc[m["corpus"] == name, "emotion"].value_counts()
                            .sort_index().items()}}
        for name, root in corpus.parts}}


def with_augmented(X, y, X_aug: dict, speakers, norm=None):
    """Training rows ``X`` plus one augmented copy of each per augmentation (``X_aug``: kind -> rows aligned with
    ``X``), the copies z-scored like their speaker when ``norm`` (a fitted SpeakerNormalizer) is given."""
    if not X_aug:
        return X, y
    parts, labels = [X], [y]
    for Xa in X_aug.values():
        parts.append(Xa if norm is None else norm.transform(Xa, speakers))
        labels.append(y)
    return np.concatenate(parts), np.concatenate(labels)


def channel_copies(paths, fs, channels, speakers, n_jobs=None) -> dict:
    """``{condition: (n, *fs.shape)}``: every clip's features through each channel of ``channels`` (the
    ``ser_core.robustness`` perturbation, seeded by file name and cached), scored by each fold's model on its
    test clips."""
    if not channels:
        return {}
    from .channels import parse_channels
    from .robustness import perturbed_features

    return {c: perturbed_features(paths, fs, c, speakers=speakers, n_jobs=n_jobs) for c in parse_channels(channels)}


def features_of(paths, fs, emit, n_jobs=None, compute_misses=None, should_stop=None) -> np.ndarray:
    """``compute_files(paths, fs)`` (cached) as a run does it: ``emit`` gets the ``FEATURES`` event, then about 20
    ``FEATURES_PROGRESS`` events (not one per clip); ``should_stop`` is checked after every clip (see
    :func:`stop_if`). compute_misses: see ``compute_files``."""
    from .features import compute_files

    emit({"event": events.FEATURES, "feature_set": fs.name, "n": len(paths)})
    step = max(1, len(paths) // 20)

    def feature_progress(done, total):
        stop_if(should_stop)
        if done == total or done % step == 0:
            emit({"event": events.FEATURES_PROGRESS, "done": done, "total": total})

    return compute_files(paths, fs, n_jobs=n_jobs, progress=feature_progress, compute_misses=compute_misses)


def augmented_copies(paths, fs, augment, seed, speakers, n_jobs=None) -> dict:
    """``{copy key: features of that augmented copy of every clip}`` for a run's ``augment`` tuple (see
    ``ser_core.augment.augment_copies``); each copy has its own seed, so ``speed*4`` draws four times."""
    from .augment import augment_copies

    return {key: _augmented(paths, fs, kind, seed + 7919 * i, speakers, n_jobs)
            for key, kind, i in augment_copies(augment)}


def _augmented(paths, fs, kind, seed, speakers, n_jobs):
    """Features of augmented copies of every clip (only the training fold's rows are ever used), cached; a
    babble channel mixes in other speakers' clips (see ``augmented_features``)."""
    from .augment import augmented_features

    return augmented_features(paths, fs, kind, seed, speakers=speakers, n_jobs=n_jobs)
