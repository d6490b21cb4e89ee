"""How far a model carries: the train -> test matrix of stored runs, each cell with intervals over its speakers.

Every run that tests on speakers it never trained on gives cells of the matrix, one per corpus its test clips
come from, scored on that corpus's out-of-fold predictions (calibrated as the run calibrated them: each fold on
the other folds):

- leave-one-corpus-out (``--split corpus``): the corpus held out, trained on every other corpus
  (``protocol`` "held out");
- a cross-corpus run (``--test-data``): the test corpus, trained on the other (``"other corpus"``);
- speaker-grouped K-fold or leave-one-speaker-out, on one corpus or several: each corpus's unseen speakers,
  trained on the run's data (``"unseen speakers"``, the in-domain diagonal).

A cell holds ``MATRIX_METRICS`` (UAR, ECE, arousal UAR) with ``CONFIDENCE`` intervals from resampling that
corpus's test speakers (``ser_core.stats``), and the clips and speakers it rests on.

    >>> cells = transfer_cells(Leaderboard())               # one row per (run, test corpus)
    >>> transfer_matrix(cells, "svm", "uar")                # rows: training data, columns: test corpus
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .calibration import cross_fitted_calibration, label_indices
from .corpora import CORPUS_JOIN
from .splits import CROSS_CORPUS, LEAVE_CORPUS_OUT, SPLITS
from .stats import bootstrap_ci, bootstrap_ece
from .taxonomy import dimension_labels, dimension_proba, has_dimension

MATRIX_METRICS = {"uar": "UAR", "ece": "ECE", "arousal_uar": "arousal UAR"}  # what a cell holds, and its label
PROTOCOLS = {LEAVE_CORPUS_OUT: "held out", CROSS_CORPUS: "other corpus"}  # the rest: "unseen speakers"
N_BOOTSTRAP = 1000  # speaker draws per interval of a cell (a matrix has many cells; the bounds move < 0.01)
CELL_COLUMNS = ["run", "model", "train", "test", "protocol", "clips", "speakers",
                *(f"{m}{s}" for m in MATRIX_METRICS for s in ("", "_low", "_high"))]


def transfer_cells(board, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run, test corpus) of ``runs`` (rows of ``Leaderboard.runs``; default: all) that tested on
    unseen speakers and kept its out-of-fold predictions: ``CELL_COLUMNS``."""
    runs = board.runs() if runs is None else runs
    rows = []
    for r in runs.to_dict("records"):
        if r["split"] not in SPLITS or SPLITS[r["split"]].speaker_dependent:
            continue
        oof = board.oof(r["id"])
        if oof is None:
            continue
        run = board.get_run(r["id"])
        calibration = (run.get("summary") or {}).get("calibration") or {}
        transfer = _kept_transfer(board, run, calibration)
        if transfer is None:  # (a familiarity calibration whose held-out predictions are gone: temperature)
            method = calibration.get("method")
            rows += _run_cells(r, oof, {"method": "temperature"} if method == "familiarity" else calibration)
            continue
        # a saved model calibrated out of domain: its own cross-validation and its held-out corpora, calibrated
        # together as its card's calibration was (each clip by a calibrator that never saw its label)
        from .evaluation import calibrated_both

        mine, held = calibrated_both(oof, transfer)
        rows += _run_cells(r, {**oof, "proba": mine}, {})
        rows += _run_cells({**r, "split": LEAVE_CORPUS_OUT}, {**transfer, "proba": held, "classes": oof["classes"]},
                           {}, corpora=_corpus_order(r, transfer["corpus"]))
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def _corpus_order(r: dict, corpus) -> list[str]:
    """The corpora of ``corpus`` (one name per clip) in the order the run's dataset names them."""
    present = set(np.asarray(corpus, dtype=str).tolist())
    named = [c for c in str(r["dataset"]).split(CORPUS_JOIN) if c in present]
    return named + sorted(present - set(named))


def _kept_transfer(board, run: dict, calibration: dict):
    """The held-out corpora's predictions a run's calibration was fitted on (method ``familiarity``): kept
    beside its saved model (``saved.TRANSFER_OOF``), else its leave-one-corpus-out run's in the store; None for
    another method."""
    if calibration.get("method") != "familiarity":
        return None
    from .saved import TRANSFER_OOF, load_oof

    kept = load_oof(run["saved_model"], TRANSFER_OOF) if run.get("saved_model") else None
    if kept is None:
        kept = board.store.oof(((run.get("summary") or {}).get("transfer") or {}).get("run_id") or -1)
    return kept


def _run_cells(r: dict, oof: dict, calibration: dict, corpora=None) -> list[dict]:
    """The cells of one run: its out-of-fold predictions split by the corpus of each clip (calibrated by
    cross-fitting ``calibration``'s method; none: as they are). corpora: the corpora of a leave-one-corpus-out
    run (default: its options')."""
    y_idx = label_indices(oof["y"], oof["classes"])
    proba = np.asarray(oof["proba"], dtype=float)
    if calibration.get("method"):
        proba, _ = cross_fitted_calibration(proba, y_idx, oof["fold"], method=calibration["method"])
    options = r.get("options") if isinstance(r.get("options"), dict) else {}
    if corpora is not None:
        options = {**options, "corpora": corpora}
    corpus = np.asarray(oof.get("corpus", np.full(len(y_idx), _test_name(r, options))), dtype=str)
    names = list(dict.fromkeys(corpus.tolist()))
    out = []
    for name in names:
        rows = corpus == name
        if r["split"] == LEAVE_CORPUS_OUT:
            train = CORPUS_JOIN.join(c for c in options.get("corpora", names) if c != name)
        elif r["split"] == CROSS_CORPUS:
            train = options.get("train_dataset", str(r["dataset"]).split(" → ")[0])
        else:
            train = str(r["dataset"])
        cell = cell_metrics(oof["y"][rows], proba[rows], [str(c) for c in oof["classes"]], oof["speaker"][rows])
        out.append({"run": r["id"], "model": _model_name(r, options), "train": train, "test": name,
                    "protocol": PROTOCOLS.get(r["split"], "unseen speakers"), **cell})
    return out


def _model_name(r: dict, options: dict) -> str:
    """A run's model as the matrix names it: a stored run of per-speaker normalisation is another model than the
    same family without it (a shipped model's name says so already: adaptive_svm)."""
    model = str(r["model"])
    adaptive = options.get("speaker_norm") and not model.startswith("adaptive_")
    return f"{model} (per-speaker normalised)" if adaptive else model


def _test_name(r: dict, options: dict) -> str:
    """The test corpus of a run whose predictions do not name their corpus (stored before they did)."""
    if r["split"] == CROSS_CORPUS:
        return options.get("test_dataset", str(r["dataset"]).split(" → ")[-1])
    return str(r["dataset"])


def cell_metrics(y, proba, classes, speaker, *, n_boot: int = N_BOOTSTRAP) -> dict:
    """UAR, ECE and arousal UAR of calibrated ``proba`` (``(n, len(classes))``) against labels ``y``, each with
    its interval from resampling ``speaker``: ``{"uar", "uar_low", "uar_high", ..., "clips", "speakers"}``
    (arousal NaN where the labels have no arousal)."""
    y = np.asarray(y, dtype=str)
    labels = sorted(set(classes) | set(y))
    pred = np.asarray(classes)[proba.argmax(1)]
    fold = np.zeros(len(y), dtype=int)
    uar = bootstrap_ci(y, pred, speaker, fold, labels, n_boot=n_boot)["uar"]
    ece = bootstrap_ece(label_indices(y, classes), proba, speaker, n_boot=n_boot)
    out = {"clips": int(len(y)), "speakers": int(len(set(np.asarray(speaker, dtype=str)))),
           "uar": uar["estimate"], "uar_low": uar["low"], "uar_high": uar["high"],
           "ece": ece["estimate"], "ece_low": ece["low"], "ece_high": ece["high"]}
    nan = {"arousal_uar": np.nan, "arousal_uar_low": np.nan, "arousal_uar_high": np.nan}
    if not (has_dimension(classes, "arousal") and all(v != "" for v in dimension_labels(y, "arousal"))):
        return out | nan
    p, levels = dimension_proba(proba, classes, "arousal")
    ar = bootstrap_ci(dimension_labels(y, "arousal"), np.asarray(levels)[p.argmax(1)], speaker, fold,
                      list(levels), n_boot=n_boot)["uar"]
    return out | {"arousal_uar": ar["estimate"], "arousal_uar_low": ar["low"], "arousal_uar_high": ar["high"]}


def transfer_matrix(cells: pd.DataFrame, model: str, metric: str = "uar") -> pd.DataFrame:
    """The matrix of one model: rows the training data, columns the test corpora, each cell ``"0.41 [0.35,
    0.47]"`` of ``metric`` (the newest run where several give the same cell); empty where no run tested it."""
    mine = cells[cells["model"] == model].drop_duplicates(["train", "test"], keep="last")  # runs: oldest first
    text = [f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if v == v else "" for v, lo, hi in
            zip(mine[metric], mine[f"{metric}_low"], mine[f"{metric}_high"])]
    out = mine.assign(cell=text).pivot(index="train", columns="test", values="cell").fillna("")
    out.index.name, out.columns.name = "trained on", "tested on"
    return out


__all__ = ["CELL_COLUMNS", "MATRIX_METRICS", "PROTOCOLS", "cell_metrics", "transfer_cells", "transfer_matrix"]
