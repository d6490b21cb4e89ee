"""The leaderboard: the results store's runs and the shipped models' runs, read together, with their statistics
(``ser_core.stats``) and tables for papers.

A shipped model (``trained_models/<name>/``) carries the cross-validation that judged it: ``card.json`` (the
summary, the calibration) and ``oof.npz`` (every clip's out-of-fold probabilities and test fold). Its run is
rebuilt from those two files -- each fold's metrics, confusion matrix and per-class recall from the out-of-fold
predictions, each fold's calibration metrics by cross-fitting the card's calibration method again -- and listed
beside the store's runs with ``source`` ``"shipped"`` and the id ``shipped:<folder>``. Nothing is retrained and
nothing is written: the store stays the training jobs' alone (one writer at a time), a fresh install shows the
shipped runs at once, and a shipped model replaced by a new version shows its new run.

    >>> board = Leaderboard()                       # the store of $SER_RESULTS_DB and trained_models/
    >>> board.runs()                                # one row per run, yours and shipped
    >>> board.statistics(["shipped:lda", 3])        # 95 % intervals; who is not significantly worse than the best
    >>> board.breakdown("shipped:lda")              # UAR per speaker, gender, intensity
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError
from .evaluation import CLIP_GROUPS, SUMMARY_METRICS
from .results import RUN_COLUMNS, ResultsStore, runs_table
from .saved import SHIPPED, SHIPPED_MODELS, YOURS, shipped_models_dir
from .stats import ALPHA, CONFIDENCE, bootstrap_ci, breakdown, paired_difference

SHIPPED_PREFIX = SHIPPED + ":"  # + the model folder's name: the id of a shipped run (source: SHIPPED or YOURS)
SHIPPED_DIR = SHIPPED_MODELS  # the repository's trained_models/: what the app ships with, read-only
METRIC_NAMES = {"uar": "UAR", "accuracy": "accuracy", "macro_f1": "macro F1", "weighted_precision": "w. precision",
                "weighted_recall": "w. recall"}  # labels on the page too; column order of the tables for papers


class Leaderboard:
    """``Leaderboard(store=None, shipped_dir=None)``: the runs of ``store`` (a ``ResultsStore``; None opens the
    default one) and of the shipped models in ``shipped_dir`` (None: ``saved.shipped_models_dir()``)."""

    def __init__(self, store: ResultsStore | None = None, shipped_dir=None):
        self.store = store if store is not None else ResultsStore()
        self.shipped_dir = Path(shipped_dir) if shipped_dir else shipped_models_dir()
        self._shipped_runs = None  # read once per Leaderboard: open a new one to see models changed since

    # -- runs --------------------------------------------------------------------------------------------
    def _shipped(self) -> tuple[dict[str, dict], set[int]]:
        """``({id: run}, store run ids that are shipped runs)``: a shipped model trained into this very store
        (its card names the store and the run) is that store run, not a second row."""
        if self._shipped_runs is not None:
            return self._shipped_runs
        store_id = str(Path(self.store.path).resolve())
        runs, in_store = {}, set()
        for folder in sorted(self.shipped_dir.glob("*/card.json")):
            run = shipped_run(folder.parent)
            if run is None:
                continue
            stamp = run.pop("_stamp")
            if stamp.get("results_store") == store_id and self.store.get_run(stamp.get("run_id") or -1):
                in_store.add(stamp["run_id"])
            else:
                runs[run["id"]] = run
        self._shipped_runs = runs, in_store
        return self._shipped_runs

    def runs(self) -> pd.DataFrame:
        """One row per finished run (``ser_core.results.RUN_COLUMNS`` and ``source``), stored runs first."""
        shipped, in_store = self._shipped()
        mine = self.store.runs()
        mine["source"] = [SHIPPED if i in in_store else YOURS for i in mine["id"]]
        theirs = runs_table(list(shipped.values()))
        theirs["source"] = SHIPPED
        both = pd.concat([df for df in (mine, theirs) if not df.empty] or [mine], ignore_index=True)
        numeric = [c for c in both if c.endswith(("_mean", "_std"))] + ["train_time_s", "latency_ms",
                                                                        "model_size_bytes"]
        both[numeric] = both[numeric].apply(pd.to_numeric, errors="coerce")
        return both

    def sweeps(self) -> pd.DataFrame:
        """Every hyperparameter sweep of the store (``ResultsStore.sweeps``) with its best trial's ``uar_mean`` and
        ``uar_std`` (NaN before a trial finished), newest first."""
        best = best_of_sweeps(self.store.runs()).dropna(subset=["sweep"]).set_index("sweep")
        return self.store.sweeps().join(best[["uar_mean", "uar_std"]], on="id")

    def get_run(self, run_id) -> dict:
        """A run with its folds (as ``ResultsStore.get_run``) and ``source``; ``run_id``: a stored run's number
        (int or digits) or ``shipped:<name>``."""
        shipped, in_store = self._shipped()
        if str(run_id) in shipped:
            return shipped[str(run_id)]
        rid = _store_id(run_id)
        run = self.store.get_run(rid) if rid is not None else None
        if run is None or run["status"] != "done":
            known = ", ".join([*map(str, self.store.runs()["id"]), *shipped][:12])
            raise ConfigError(f"No finished run '{run_id}'; choose one of: {known or 'none'} "
                              "(`python -m ser_core leaderboard` lists them).")
        return {**run, "source": SHIPPED if rid in in_store else YOURS}

    def oof(self, run_id) -> dict | None:
        """The run's out-of-fold predictions with every clip's ``CLIP_GROUPS`` (read from the file names where
        the run did not keep them), or None for a run stored before they were kept whose model is gone."""
        from .evaluation import _own_saved_model
        from .saved import load_oof

        run = self.get_run(run_id)
        if run["source"] == SHIPPED and str(run["id"]).startswith(SHIPPED_PREFIX):
            oof = load_oof(run["saved_model"])
        else:
            oof = self.store.oof(run["id"])
            if oof is None:
                own = _own_saved_model(run, self.store)
                oof = load_oof(own) if own else None
        return None if oof is None else with_clip_groups(oof, run["dataset"])

    # -- statistics --------------------------------------------------------------------------------------
    def statistics(self, run_ids) -> pd.DataFrame:
        """Per run (index ``id``): ``<metric>_ci_low`` / ``_ci_high`` (``CONFIDENCE`` interval of every summary
        metric, bootstrap over speakers), ``ci_unit``, and against the best run (highest UAR) among the runs of
        ``run_ids`` cross-validated on the same clips and folds: ``best_run``, ``comparable`` (how many runs
        share those folds), ``uar_diff_vs_best`` with ``uar_diff_low`` / ``_high`` (this run minus the best),
        ``p_vs_best`` (paired permutation test over speakers) and ``not_worse_than_best`` (p >= ``ALPHA``; True
        for the best itself). NaN / None for a run without out-of-fold predictions."""
        oofs = {rid: self.oof(rid) for rid in run_ids}
        rows, groups = {}, defaultdict(list)
        for rid, oof in oofs.items():
            rows[rid] = {}
            if oof is None:
                continue
            ci = bootstrap_ci(oof["y"], predictions(oof), oof["speaker"], oof["fold"], list(oof["classes"]))
            for m in SUMMARY_METRICS:
                rows[rid] |= {f"{m}_ci_low": ci[m]["low"], f"{m}_ci_high": ci[m]["high"]}
            rows[rid] |= {"ci_unit": ci["unit"], "_uar": ci["uar"]["estimate"]}
            groups[folds_key(oof)].append(rid)
        for ids in groups.values():
            best = max(ids, key=lambda r: rows[r]["_uar"])
            for rid in ids:
                rows[rid] |= {"best_run": best, "comparable": len(ids), "uar_diff_vs_best": 0.0,
                              "not_worse_than_best": True}
                if rid != best:
                    d = _paired(oofs[rid], oofs[best])["uar"]
                    rows[rid] |= {"uar_diff_vs_best": d["difference"], "uar_diff_low": d["low"],
                                  "uar_diff_high": d["high"], "p_vs_best": d["p"],
                                  "not_worse_than_best": d["p"] >= ALPHA}
        cols = [*(f"{m}_ci_{s}" for m in SUMMARY_METRICS for s in ("low", "high")), "ci_unit", "best_run",
                "comparable", "uar_diff_vs_best", "uar_diff_low", "uar_diff_high", "p_vs_best",
                "not_worse_than_best"]
        out = pd.DataFrame([{"id": rid, **{c: r.get(c) for c in cols}} for rid, r in rows.items()],
                           columns=["id", *cols])
        numeric = [c for c in cols if c not in ("ci_unit", "best_run", "not_worse_than_best")]
        out[numeric] = out[numeric].apply(pd.to_numeric, errors="coerce")
        return out.set_index("id")

    def table(self, runs: pd.DataFrame | None = None) -> pd.DataFrame:
        """``runs`` (rows of ``runs()``; default: all) with their ``statistics`` as columns, best UAR first."""
        runs = self.runs() if runs is None else runs
        stats = self.statistics(runs["id"].tolist())
        return (runs.merge(stats, left_on="id", right_index=True, how="left")
                .sort_values("uar_mean", ascending=False, ignore_index=True))

    def records(self, table: pd.DataFrame) -> list[dict]:
        """JSON-ready rows of ``table()``: the run's columns (not its params, feature set and options), ``ci``
        (``{metric: [low, high]}``, ``ci_level``, ``ci_unit``), ``vs_best`` and ``breakdown``; None for what a
        run does not have."""
        out = []
        for r in table.astype(object).where(table.notna(), None).to_dict("records"):
            rec = {k: r[k] for k in (*RUN_COLUMNS, "source") if k not in ("params", "feature_set", "options")}
            has_ci = r["uar_ci_low"] is not None
            rec["ci"] = {m: [r[f"{m}_ci_low"], r[f"{m}_ci_high"]] for m in SUMMARY_METRICS} if has_ci else None
            rec |= {"ci_level": CONFIDENCE, "ci_unit": r["ci_unit"]}
            rec["vs_best"] = None if r["best_run"] is None else {
                "best_run": r["best_run"], "comparable_runs": r["comparable"], "uar_difference": r["uar_diff_vs_best"],
                "low": r["uar_diff_low"], "high": r["uar_diff_high"], "p": r["p_vs_best"],
                "not_significantly_worse": bool(r["not_worse_than_best"])}
            rec["breakdown"] = self.breakdown(r["id"])
            out.append(rec)
        return out

    def compare(self, run_a, run_b) -> dict:
        """Run A minus run B on the same clips and folds: ``{metric: {"difference", "low", "high", "p"}, "unit",
        "n_units"}`` (``ser_core.stats.paired_difference``)."""
        a, b = self.oof(run_a), self.oof(run_b)
        for rid, oof in ((run_a, a), (run_b, b)):
            if oof is None:
                raise ConfigError(f"Run {rid} kept no out-of-fold predictions (stored by an older version); "
                                  "train it again with --force to compare it.")
        if folds_key(a) != folds_key(b):
            raise ConfigError(f"Runs {run_a} and {run_b} were not cross-validated on the same clips and folds; "
                              "compare runs with the same data, split, K and seed.")
        return _paired(a, b)

    def breakdown(self, run_id) -> dict | None:
        """UAR per speaker, gender and intensity of the run's out-of-fold predictions, with the gender gap
        (``ser_core.stats.breakdown``); None without out-of-fold predictions."""
        oof = self.oof(run_id)
        if oof is None:
            return None
        return breakdown(oof["y"], predictions(oof), list(oof["classes"]),
                         **{g: oof[g] for g in CLIP_GROUPS})


def _trial_numbers(trials: pd.DataFrame) -> pd.Series:
    """Each trial run's number in its sweep, as the sweep numbered it (the order the search suggested it, kept in
    the run's options); a run stored before the number was kept counts in the order it was stored."""
    stored = trials.groupby("sweep")["id"].rank(method="first")
    kept = trials["options"].map(lambda o: o.get("trial") if isinstance(o, dict) else None)
    return kept.where(kept.notna(), stored).astype(int)


def best_of_sweeps(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (rows of ``Leaderboard.runs``) with the trials of each sweep reduced to its best (highest mean UAR;
    the first trial on a tie, as the sweep itself chooses the model it saves): one row a sweep, beside the runs
    of no sweep, in the order of ``runs``."""
    trials = runs[runs["sweep"].notna()]
    trials = trials.assign(_trial=_trial_numbers(trials))
    best = trials.sort_values(["uar_mean", "_trial", "id"], ascending=[False, True, True]).drop_duplicates(
        "sweep").index
    return runs[runs["sweep"].isna() | runs.index.isin(best)]


def sweep_trials(runs: pd.DataFrame, sweep_id: str) -> pd.DataFrame:
    """The trials of sweep ``sweep_id`` among ``runs``: ``trial`` (its number in the sweep, as the CLI and the
    Train page number it), the run's columns and each searched parameter as a column of its own (the sweep's
    ``params`` spread out), in trial order."""
    trials = runs[runs["sweep"] == sweep_id]
    trials = trials.assign(trial=_trial_numbers(trials)).sort_values(
        ["trial", "id"], ignore_index=True)
    params = pd.DataFrame(trials["params"].tolist(), index=trials.index)
    return pd.concat([trials, params.drop(columns=[c for c in params if c in trials])], axis=1)


def _store_id(run_id) -> int | None:
    try:
        return int(run_id)
    except (TypeError, ValueError):
        return None


def predictions(oof) -> np.ndarray:
    """The label each out-of-fold row predicts (the most probable class; calibration never changes it)."""
    return np.asarray(oof["classes"], dtype=str)[np.asarray(oof["proba"]).argmax(1)]


def with_clip_groups(oof: dict, corpus: str) -> dict:
    """``oof`` with every ``CLIP_GROUPS`` array, read from the clips' file names (``corpora.clip_fields``)
    where the run did not keep them."""
    from .corpora import clip_fields

    missing = [g for g in CLIP_GROUPS if g not in oof]
    if not missing:
        return oof
    fields = clip_fields(oof["paths"], corpus, missing)
    return {**oof, **{g: fields[g].to_numpy(dtype=str) for g in missing}}


def _clip_keys(oof) -> np.ndarray:
    """What identifies a clip across machines: its file name (not the folder) and its label."""
    names = [os.path.basename(p) for p in np.asarray(oof["paths"], dtype=str).tolist()]
    return np.char.add(np.char.add(names, "\x00"), np.asarray(oof["y"], dtype=str))


def folds_key(oof) -> str:
    """Equal for two runs cross-validated on the same clips, labels and fold assignment."""
    keys = _clip_keys(oof)
    order = np.argsort(keys, kind="stable")
    h = hashlib.sha256("\x01".join(map(str, oof["classes"])).encode())
    for k, f in zip(keys[order], np.asarray(oof["fold"])[order]):
        h.update(f"{k}\x01{f}\n".encode())
    return h.hexdigest()[:16]


def _paired(a: dict, b: dict) -> dict:
    """``paired_difference`` of A minus B, rows matched by clip (runs with the same ``folds_key``)."""
    oa, ob = np.argsort(_clip_keys(a), kind="stable"), np.argsort(_clip_keys(b), kind="stable")
    return paired_difference(np.asarray(a["y"])[oa], predictions(a)[oa], predictions(b)[ob],
                             np.asarray(a["speaker"])[oa], np.asarray(a["fold"])[oa], list(a["classes"]))


# -- shipped runs ----------------------------------------------------------------------------------------------
def shipped_run(folder) -> dict | None:
    """The cross-validation run of the saved model in ``folder`` (as ``Leaderboard.get_run`` returns runs, plus
    ``_stamp``: the card's record of the run that produced it), rebuilt from ``card.json`` and ``oof.npz``;
    None for a folder without both. Cached by the two files' content."""
    folder = Path(folder)
    card, oof = folder / "card.json", folder / "oof.npz"
    if not (card.is_file() and oof.is_file()):
        return None
    digest = hashlib.sha256(card.read_bytes() + oof.read_bytes()).hexdigest()
    run = _shipped_run(str(folder.resolve()), digest)
    return None if run is None else {**run, "_stamp": dict(run["_stamp"])}


@lru_cache(maxsize=128)
def _shipped_run(folder: str, digest: str) -> dict | None:
    from .evaluation import calibrate_out_of_fold, compute_metrics
    from .saved import TRANSFER_OOF, load_oof, read_card

    card, oof = read_card(folder), load_oof(folder)
    cv, data = card.get("cv") or {}, card.get("training_data") or {}
    if not cv.get("metrics"):
        return None
    oof = with_clip_groups(oof, data.get("corpus", "?"))
    labels, pred, fold = [str(c) for c in oof["classes"]], predictions(oof), np.asarray(oof["fold"])
    folds = []
    for f in np.unique(fold):
        test = fold == f
        folds.append({"fold": int(f), "metrics": compute_metrics(oof["y"][test], pred[test], labels),
                      "n_train": int((~test).sum()), "n_test": int(test.sum()),
                      "test_speakers": sorted(set(oof["speaker"][test].tolist())), "train_time_s": None,
                      "latency_ms": None})
    summary = dict(cv["metrics"])
    if card.get("calibration"):  # per-fold ECE, Brier, ... and the reliability curves, as the run computed them
        method = card["calibration"].get("method", "temperature")
        transfer = with_clip_groups(load_oof(folder, TRANSFER_OOF), "?") if method == "familiarity" else None
        entries = calibrate_out_of_fold(folds, oof, method=method, transfer=transfer)
        summary |= {**entries, "calibration": card["calibration"]}
    return {
        "id": SHIPPED_PREFIX + Path(folder).name, "source": SHIPPED, "status": "done",
        "created_at": card.get("created_at"), "finished_at": card.get("created_at"),
        "model": card.get("name", Path(folder).name),  # the name the Demo shows (adaptive_svm, not svm)
        "params": card.get("params", {}), "feature_set": card.get("feature_set", {}),
        "dataset": data.get("corpus", "?"), "data_root": data.get("root"), "data_fingerprint": data.get("fingerprint"),
        "n_clips": data.get("clips", len(pred)), "n_speakers": data.get("speakers"), "split": cv.get("split"),
        "splitter": cv.get("split_description", cv.get("split")), "k": cv.get("k", len(folds)),
        "seed": cv.get("seed"), "speaker_dependent": bool(cv.get("speaker_dependent")),
        "options": card.get("options") or {k: card[k] for k in ("members", "weights") if k in card},
        "config_hash": None, "versions": card.get("versions", {}), "summary": summary, "labels": labels,
        "confusion": np.sum([f["metrics"]["confusion"] for f in folds], axis=0).tolist(),
        "train_time_s": None, "latency_ms": None, "model_size_bytes": card.get("size_bytes"),
        "saved_model": str(folder), "error": None, "folds": folds,
        "_stamp": {k: cv.get(k) for k in ("run_id", "results_store")},
    }


# -- tables for papers -----------------------------------------------------------------------------------------
def _paper_rows(table: pd.DataFrame, metrics) -> list[dict]:
    """Cells of the paper tables: ``table`` has the runs' columns (``Leaderboard.runs``) and their statistics
    (``Leaderboard.statistics``) side by side, in the order to print."""
    rows = []
    for r in table.to_dict("records"):
        cells = {"model": str(r["model"]), "dataset": str(r["dataset"]),
                 "split": str(r["split"]) + (" (speaker-dependent)" if r.get("speaker_dependent") else ""),
                 "K": str(r["k"])}
        for m in metrics:
            mean, std = r[f"{m}_mean"] * 100, r[f"{m}_std"] * 100
            low, high = r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")
            cells[m] = (mean, std, None if low is None or pd.isna(low) else (low * 100, high * 100))
        best = r.get("best_run")
        mark = "" if best is None or pd.isna(best) else "best" if best == r["id"] and r.get("comparable", 1) > 1 \
            else "not worse" if r.get("not_worse_than_best") and r.get("comparable", 1) > 1 else ""
        rows.append({**cells, "mark": mark})
    return rows


_FOOTNOTE = ("mean ± std over the folds (%), [{level:.0f} % confidence interval, bootstrap over speakers]; "
             "best: highest UAR among runs on the same folds; †: not significantly worse than it (paired "
             "permutation test over speakers, p >= {alpha:.2f})")


def markdown_table(table: pd.DataFrame, metrics=tuple(METRIC_NAMES)) -> str:
    """The runs of ``table`` (see ``_paper_rows``) as a Markdown table with a footnote."""
    head = ["model", "dataset", "split", "K", *(METRIC_NAMES[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _paper_rows(table, metrics):
        name = {"best": f"**{r['model']}**", "not worse": f"{r['model']} †"}.get(r["mark"], r["model"])
        cells = [name, r["dataset"], r["split"], r["K"], *(_number(*r[m], pm="±") for m in metrics)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n\n" + _FOOTNOTE.format(level=CONFIDENCE * 100, alpha=ALPHA) + "\n"


def latex_table(table: pd.DataFrame, metrics=tuple(METRIC_NAMES)) -> str:
    """The runs of ``table`` as a LaTeX ``tabular`` (booktabs) with the footnote as a comment."""
    head = ["model", "dataset", "split", "$K$", *(METRIC_NAMES[m] for m in metrics)]
    lines = ["% " + _FOOTNOTE.format(level=CONFIDENCE * 100, alpha=ALPHA).replace("±", "+-"),
             "\\begin{tabular}{llll" + "r" * len(metrics) + "}", "\\toprule", " & ".join(head) + " \\\\",
             "\\midrule"]
    for r in _paper_rows(table, metrics):
        name = _latex_escape(r["model"])
        name = {"best": f"\\textbf{{{name}}}", "not worse": f"{name}$^\\dagger$"}.get(r["mark"], name)
        cells = [name, _latex_escape(r["dataset"]), _latex_escape(r["split"]), r["K"],
                 *(_number(*r[m], pm="$\\pm$") for m in metrics)]
        lines.append(" & ".join(cells) + " \\\\")
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}"]) + "\n"


def _number(mean, std, ci, *, pm) -> str:
    text = f"{mean:.1f} {pm} {std:.1f}"
    return text if ci is None else f"{text} [{ci[0]:.1f}, {ci[1]:.1f}]"


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
                                                     "\\": "\\textbackslash{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


__all__ = ["Leaderboard", "SHIPPED", "SHIPPED_DIR", "YOURS", "best_of_sweeps", "folds_key", "latex_table", "markdown_table",
           "predictions", "shipped_run", "sweep_trials", "with_clip_groups"]
