"""Leaderboard: the shipped models' runs and every stored cross-validation run with confidence intervals, tables
for papers (a hyperparameter sweep as its best trial, its trials apart); one run's confusion matrix, reliability
diagram, folds and breakdown by voice; two runs compared."""
import os

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_shared import (chart, plain, plain_data, plain_options, public_mode, public_text, sweep_figure,
                        trained_model_cards)
from ser_core.channels import CHANNELS
from ser_core.corpora import CORPUS_JOIN
from ser_core.cross_corpus import LabelAlignment
from ser_core.errors import SERError
from ser_core.export import to_csv
from ser_core.leaderboard import (METRIC_NAMES, SHIPPED, Leaderboard, best_of_sweeps, latex_table, markdown_table,
                                  sweep_trials)
from ser_core.results import METRICS, REFERENCE_RESULTS, ResultsStore
from ser_core.robustness import robustness_table
from ser_core.splits import CROSS_CORPUS
from ser_core.stats import ALPHA, CONFIDENCE, GENDER_GAP
from ser_core.transfer import MATRIX_METRICS, PROTOCOLS, transfer_cells, transfer_matrix

CALIBRATION_LABELS = {"ece": "ECE", "brier": "Brier"}  # of calibrated probabilities; older runs have none
OPTIMISTIC = "random ⚠"  # speaker-dependent (optimistic): the caption under the table says so
CI_LABEL = f"UAR {CONFIDENCE * 100:.0f} % CI"

st.title("Leaderboard")
board = Leaderboard(ResultsStore(create=not public_mode()))  # a public demo creates no database
runs = board.runs()
if runs.empty:
    st.info("No runs stored yet: train models on the Train page (or `python -m ser_core train`).")


@st.cache_data(show_spinner="Computing confidence intervals...", max_entries=64)
def _statistics(db: str, runs_key: tuple) -> pd.DataFrame:
    """``Leaderboard.statistics`` of the runs ``runs_key`` ((id, created_at) pairs: a finished run never changes)."""
    return Leaderboard(ResultsStore(db, create=not public_mode())).statistics([rid for rid, _ in runs_key])


@st.cache_data(max_entries=256)
def _breakdown(db: str, run_id, created_at) -> dict | None:
    return Leaderboard(ResultsStore(db, create=not public_mode())).breakdown(run_id)


@st.cache_data(max_entries=256)
def _compare(db: str, a, b, created: tuple) -> dict:
    return Leaderboard(ResultsStore(db, create=not public_mode())).compare(a, b)


def _key(df: pd.DataFrame) -> tuple:
    return tuple(zip(df["id"], df["created_at"]))


# -- the table ----------------------------------------------------------------------------------------------------
every_trial = st.session_state.get("lb_every_trial", False)
listed = runs if every_trial else best_of_sweeps(runs)  # a sweep: its best trial (the others under Sweeps)
c1, c2, c3, c4 = st.columns([4, 4, 4, 3], vertical_alignment="bottom")
datasets = c1.multiselect("Dataset", sorted(runs["dataset"].unique()), key="lb_datasets",
                          placeholder="all datasets", format_func=plain_options())
splits = c2.multiselect("Split", sorted(runs["split"].unique()), key="lb_splits", placeholder="all splits",
                        format_func=plain_options())
sources = c3.multiselect("Source", sorted(runs["source"].unique()), key="lb_sources", placeholder="shipped and yours",
                         format_func=plain_options())
every_column = c4.toggle("All columns", key="lb_every_column",
                         help="Also each metric's ±, weighted precision and recall, Brier, training time, latency, "
                              "size, clips and date (the CSV download has them all).")
view = listed[listed["dataset"].isin(datasets or runs["dataset"]) & listed["split"].isin(splits or runs["split"])
              & listed["source"].isin(sources or runs["source"])]
view = view.merge(_statistics(str(board.store.path), _key(view)), left_on="id", right_index=True, how="left")


def _versus_best(r) -> str:
    """The table's "vs best" cell: how the run's UAR compares with the best run on the same clips and folds."""
    if pd.isna(r["best_run"]) or r["comparable"] < 2:
        return ""
    if r["best_run"] == r["id"]:
        return f"best of {r['comparable']:.0f}"
    return f"{'≈ best' if r['not_worse_than_best'] else 'worse'} (p {r['p_vs_best']:.3f})"


def _table(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"run": df["id"].astype(str),  # numbers and shipped:NAME: one type for the table
                        "source": df["source"],
                        "model": [m if pd.isna(w) else f"{m} (sweep)" for m, w in zip(df["model"], df["sweep"])],
                        "dataset": df["dataset"],
                        "split": [OPTIMISTIC if d else s for s, d in zip(df["split"], df["speaker_dependent"])],
                        "K": df["k"]})
    for m in sorted(METRICS, key=lambda m: m != "uar"):  # UAR first; mean and std apart: the table sorts by mean
        out[METRIC_NAMES[m]] = df[f"{m}_mean"].to_numpy() * 100
        out[f"{METRIC_NAMES[m]} ±"] = df[f"{m}_std"].to_numpy() * 100
        if m == "uar":
            out[CI_LABEL] = [f"{lo * 100:.1f}–{hi * 100:.1f}" if lo == lo else ""
                             for lo, hi in zip(df["uar_ci_low"], df["uar_ci_high"])]
            out["vs best"] = [_versus_best(r) for _, r in df.iterrows()]
    for m, label in CALIBRATION_LABELS.items():
        if df[f"{m}_mean"].notna().any():
            out[label] = df[f"{m}_mean"].to_numpy(dtype=float)
    out["train s/fold"] = df["train_time_s"].to_numpy()
    out["ms/clip"] = df["latency_ms"].to_numpy()
    out["size MB"] = df["model_size_bytes"].to_numpy(dtype=float) / 1e6
    out["clips"] = df["n_clips"].to_numpy()
    out["created"] = df["created_at"].to_numpy()
    return out


table = _table(view)
COMPACT = ["run", "model", "dataset", "split", "UAR", CI_LABEL, "vs best", "accuracy", "ECE"]
# ^ what fits the page width (1280 px wide windows); "All columns" shows the rest
pct = {c: st.column_config.NumberColumn(c, format="%.1f") for c in table if c in METRIC_NAMES.values()}  # in %
pct |= {c: st.column_config.NumberColumn("±", format="± %.1f", help=f"{c}: standard deviation over the folds")
        for c in table if c.endswith(" ±")}  # short headers keep the table within the page width
pct[CI_LABEL] = st.column_config.TextColumn(f"{CONFIDENCE * 100:.0f} % CI", help=CI_LABEL)
st.dataframe(plain_data(table.sort_values("UAR", ascending=False)), hide_index=True, width="stretch",
             column_order=None if every_column else [c for c in COMPACT if c in table],
             column_config=pct | {"train s/fold": st.column_config.NumberColumn(format="%.2f"),
                                  "ms/clip": st.column_config.NumberColumn(format="%.2f"),
                                  "size MB": st.column_config.NumberColumn(format="%.2f")}
             | {c: st.column_config.NumberColumn(format="%.3f") for c in CALIBRATION_LABELS.values()})
st.caption("Mean ± standard deviation over the folds, in %. UAR = unweighted average recall (mean of the "
           "per-class recalls), the fair score when classes are unbalanced. Rows marked ⚠ used random splits: the "
           "same speakers were in training and test folds, so they overstate what a model does on a new voice. "
           "ECE (expected calibration error: the gap between confidence and accuracy, 0 = honest) and Brier "
           "(0 = best) score the calibrated probabilities, each fold calibrated on the other folds. "
           "Shipped: the cross-validation of a model this app ships with, read from its model card. Cross-corpus: "
           "trained on every clip of the first corpus, tested on every clip of the second, on the emotions both "
           "have (one test set: ± 0; ECE and Brier of the model's own probabilities).")
st.caption(f"{CI_LABEL}: {CONFIDENCE * 100:.0f} % of intervals drawn this way hold the true score (bootstrap: "
           "whole test speakers resampled); “≈ best”: a paired permutation test over speakers finds no "
           f"significant UAR gap (p ≥ {ALPHA:.2f}) to the best run on the same clips and folds.")
if not public_mode():  # a public demo exports nothing: no file, no table as text to copy
    st.download_button("Download the table as CSV", to_csv(table).encode(), "ser_leaderboard.csv",
                       "text/csv", key="lb_csv", disabled=table.empty)
    with st.expander("Copy the table for a paper (Markdown, LaTeX: mean ± std [95 % CI])"):
        paper = plain_data(view.sort_values("uar_mean", ascending=False))
        formats = {"Markdown": (markdown_table, "markdown"), "LaTeX": (latex_table, "latex")}
        for tab, (render, language) in zip(st.tabs(list(formats)), formats.values()):
            tab.code(render(paper) if not paper.empty else "", language=language)

sweeps = board.sweeps()
if not sweeps.empty:
    with st.expander(f"Sweeps ({len(sweeps)}): each in the table above as its best trial, marked (sweep)"):
        st.toggle("Every sweep trial in the table above", key="lb_every_trial")
        st.dataframe(plain_data(sweeps.assign(uar_mean=sweeps["uar_mean"] * 100, saved_model=sweeps["saved_model"].map(
            lambda p: os.path.basename(p) if isinstance(p, str) else None))), hide_index=True,
            column_order=["id", "model", "dataset", "space", "trials", "uar_mean", "best_run", "saved_model",
                          "created_at"],
            column_config={"id": "sweep", "uar_mean": st.column_config.NumberColumn("best UAR", format="%.1f"),
                           "best_run": st.column_config.NumberColumn("best run", format="%d"),
                           "saved_model": "saved as"})
        shown = st.selectbox("Sweep", sweeps["id"], key="lb_sweep",
                             format_func=plain_options(lambda i: f"{i}: {sweeps.set_index('id').loc[i, 'space']}"))
        trials = sweep_trials(runs, shown)
        chart(sweep_figure(trials), "lb_sweep_plot")
        searched = [c for c in trials if c not in runs and c != "trial"]  # the parameters searched
        st.dataframe(plain_data(trials), hide_index=True,
                     column_order=plain_data(["trial", "id", *searched, "uar_mean", "uar_std"]),
                     column_config={"id": st.column_config.NumberColumn("run", format="%d"),
                                    "uar_mean": st.column_config.NumberColumn("UAR", format="%.3f"),
                                    "uar_std": st.column_config.NumberColumn("±", format="%.3f")})

st.markdown("##### Reference figures: reported elsewhere, not measured here")
st.dataframe(pd.DataFrame([{"model": r["model"], "dataset": r["dataset"],
                            "split": f"{r['split']} (speaker-dependent)", "accuracy": r["accuracy"] * 100,
                            "as reported": r["metric"], "status": r["note"]}
                           for r in REFERENCE_RESULTS]),
             hide_index=True, column_config={"accuracy": st.column_config.NumberColumn(format="%.2f %%")},
             column_order=["model", "dataset", "split", "accuracy", "as reported"])  # status: the heading says it
st.caption("From the projects SER Studio grew from, on RAVDESS with random splits and their own protocols; "
           "not comparable with the speaker-grouped runs above.")

cards = [c for c in trained_model_cards() if c.get("robustness")]
if cards:  # written by benchmarks/bench_robustness.py --write-cards
    st.markdown("##### Saved models on perturbed clips: UAR (%) per channel")
    robust = robustness_table(cards) * 100
    fig = go.Figure(go.Heatmap(z=robust.values, x=robust.columns, y=robust.index.map(plain), colorscale="RdYlGn",
                               zmin=0, text=robust.map(lambda v: f"{v:.0f}").values, texttemplate="%{text}",
                               hovertemplate="%{y} under %{x}<br>UAR %{z:.1f} %<extra></extra>"))
    fig.update_layout(height=80 + 32 * len(robust), margin=dict(l=10, r=10, t=10, b=10))
    chart(fig, "lb_robustness")
    st.caption("Measured on: " + plain("; ".join(sorted({c.get("robustness_protocol", "?") for c in cards}))) + ". "
               + "Channels: " + "; ".join(f"{k}: {v}" for k, v in CHANNELS.items() if k in robust.columns) + ".")
if view.empty:
    st.stop()


# -- across corpora -----------------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Scoring each corpus's speakers...", max_entries=32)
def _transfer(db: str, runs_key: tuple) -> pd.DataFrame:
    """``transfer_cells`` of the runs ``runs_key`` ((id, created_at) pairs: a finished run never changes)."""
    board_ = Leaderboard(ResultsStore(db, create=not public_mode()))
    all_runs = board_.runs()
    return transfer_cells(board_, all_runs[all_runs["id"].isin([rid for rid, _ in runs_key])])


across = view[view["split"].isin(list(PROTOCOLS)) | view["dataset"].str.contains(CORPUS_JOIN, regex=False)]
cells = _transfer(str(board.store.path), _key(across)) if not across.empty else pd.DataFrame()
if not cells.empty:  # runs on several corpora, or tested on another corpus
    st.markdown("##### Across corpora: trained on → tested on")
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    chosen = c1.selectbox("Model", list(dict.fromkeys(cells["model"])), key="lb_transfer_model",
                          format_func=plain_options())
    metric = c2.radio("Score", list(MATRIX_METRICS), format_func=MATRIX_METRICS.get, horizontal=True,
                      key="lb_transfer_metric")
    st.dataframe(plain_data(transfer_matrix(cells, chosen, metric)), width="stretch")
    st.caption(f"{MATRIX_METRICS[metric]} [{CONFIDENCE * 100:.0f} % interval from resampling the test corpus's "
               "speakers] of each corpus's clips, from the run's calibrated out-of-fold predictions. A row of "
               "several corpora left the column's corpus out (leave-one-corpus-out) or is a cross-corpus run; the "
               "same corpus in the row and the column: its unseen speakers (speaker-grouped K-fold). A corpus of "
               "two speakers (TESS) gives a wide interval. Chance UAR is 1 / the number of emotions.")


# -- one run ------------------------------------------------------------------------------------------------------
def _label(rid):
    r = runs.set_index("id").loc[rid]
    name = f"{r['model']} (shipped)" if r["source"] == SHIPPED and isinstance(rid, str) else f"#{rid} {r['model']}"
    return f"{name} on {r['dataset']} ({r['split']}, K={r['k']}, UAR {r['uar_mean'] * 100:.1f} %)"


def _confusion(run: dict, height=420):
    labels = [plain(l) for l in run["labels"]]  # the corpus's labels: Plotly would render HTML in them
    cm = pd.DataFrame(run["confusion"], index=labels, columns=labels).astype(float)
    norm = cm.div(cm.sum(axis=1).replace(0, 1), axis=0)  # rows: true label, normalised to recall
    fig = go.Figure(go.Heatmap(z=norm.values, x=norm.columns, y=norm.index, colorscale="Blues", zmin=0, zmax=1,
                               text=norm.map(lambda v: f"{v:.2f}").values, texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.2f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="predicted",
                      yaxis_title="true", yaxis_autorange="reversed", title="confusion (row-normalised)")
    return fig


def _reliability(summary: dict, height=380):
    """Accuracy per confidence bin of the out-of-fold predictions (summary ``reliability``) against the diagonal."""
    fig = go.Figure()
    for name, key in (("calibrated", "reliability"), ("uncalibrated", "reliability_uncalibrated")):
        curve = pd.DataFrame(summary.get(key) or {}).dropna()
        if not curve.empty:
            fig.add_bar(x=(curve["lower"] + curve["upper"]) / 2, y=curve["accuracy"], name=name,
                        width=(curve["upper"] - curve["lower"]) * 0.45, customdata=curve[["count", "confidence"]],
                        hovertemplate="confidence %{customdata[1]:.2f}<br>accuracy %{y:.2f}<br>%{customdata[0]} "
                                      "clips<extra>" + name + "</extra>")
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="honest (accuracy = confidence)",
                    line=dict(dash="dash", color="grey"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), barmode="group",
                      title="reliability: accuracy per confidence bin", xaxis_title="top probability",
                      yaxis_title="accuracy", xaxis_range=[0, 1], yaxis_range=[0, 1])
    return fig


def _intervals(row: pd.Series) -> pd.DataFrame:
    """The run's mean of each metric with its confidence interval (NaN without out-of-fold predictions)."""
    return pd.DataFrame({"metric": [METRIC_NAMES[m] for m in METRICS],
                         "mean %": [row[f"{m}_mean"] * 100 for m in METRICS],
                         "low %": [row.get(f"{m}_ci_low", float("nan")) * 100 for m in METRICS],
                         "high %": [row.get(f"{m}_ci_high", float("nan")) * 100 for m in METRICS]})


def _group_bars(groups: dict, title: str, height: int = 300):
    names = [plain(g) for g in groups]  # speaker names come from the corpus: Plotly would render HTML in them
    fig = go.Figure(go.Bar(x=names, y=[v["uar"] * 100 for v in groups.values()],
                           customdata=[v["clips"] for v in groups.values()],
                           hovertemplate="%{x}<br>UAR %{y:.1f} %<br>%{customdata} clips<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title=f"UAR {title} (%)",
                      yaxis_range=[0, 100], xaxis_type="category")
    return fig


def _metrics_table(run: dict) -> pd.DataFrame:
    s = run["summary"]
    return pd.DataFrame({"metric": [METRIC_NAMES[m] for m in METRICS],
                         "mean %": [s[m]["mean"] * 100 for m in METRICS],
                         "std %": [s[m]["std"] * 100 for m in METRICS]})


st.divider()
st.subheader("One run")
ranked = view.sort_values("uar_mean", ascending=False, ignore_index=True)
ids = ranked["id"].tolist()
yours = ranked[ranked["source"] != SHIPPED]
first = int(yours["id"].astype(int).idxmax()) if not yours.empty else 0  # your latest run, else the best
rid = st.selectbox("Run", ids, index=first, format_func=plain_options(_label), key="lb_run")
run = board.get_run(rid)
if run["source"] == SHIPPED:
    st.caption("A shipped model's cross-validation, read from its model card and out-of-fold predictions.")
if run["split"] == CROSS_CORPUS:  # both corpora, and the emotions the run kept and dropped
    o = run["options"]
    kept = LabelAlignment(o.get("train_dataset", "?"), o.get("test_dataset", "?"), tuple(o.get("labels", [])),
                          tuple(o.get("dropped", {}).get("train", [])), tuple(o.get("dropped", {}).get("test", [])))
    st.caption(plain(f"Cross-corpus: {run['splitter']}. {kept.message}"))
if run["speaker_dependent"]:
    st.warning("Speaker-dependent (random) split: optimistic, not a speaker-independent estimate.")
left, right = st.columns([3, 2])
chart(_confusion(run), "lb_cm", left)
recall = pd.Series(run["summary"]["per_class_recall"]).sort_values().rename(plain)
fig = go.Figure(go.Bar(x=recall.values * 100, y=recall.index, orientation="h"))
fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), title="recall per class (%)",
                  xaxis_range=[0, 100])
chart(fig, "lb_recall", right)
calibration = run["summary"].get("calibration")
_METHODS = {"temperature": "temperature scaling", "top_label": "temperature, then top-label isotonic map",
            "top_logistic": "temperature, then top-label logistic map"}
if calibration:
    chart(_reliability(run["summary"]), "lb_reliability")
    st.caption(f"Out-of-fold predictions of all folds pooled (the table's ECE is the mean of each fold's own). "
               f"ECE {calibration['ece_uncalibrated']:.3f} as the model "
               f"says, {calibration['ece']:.3f} after calibration ({_METHODS.get(calibration.get('method'), 'temperature scaling')}, "
               f"each fold calibrated on the other folds; the saved model uses T = {calibration['temperature']:.2f}). "
               "Answers below "
               f"{calibration['threshold']:.2f} are shown as \"not sure\" "
               f"({calibration['uncertain_fraction'] * 100:.0f} % of these clips): at that confidence they are right "
               "less than 1 time in 3.")
folds = pd.DataFrame([{"fold": f["fold"] + 1, "test speakers": ", ".join(map(str, f["test_speakers"] or [])),
                       "clips train/test": f"{f['n_train']}/{f['n_test']}",
                       **{METRIC_NAMES[m]: f["metrics"][m] * 100 for m in METRICS},
                       **{label: f["metrics"][m] for m, label in CALIBRATION_LABELS.items() if m in f["metrics"]}}
                      for f in run["folds"]])  # scores only, so the table fits a 1280 px window (timing: above)
st.markdown("**Per-fold scores (%)**")
st.dataframe(plain_data(folds), hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.1f")
                                                     for c in METRIC_NAMES.values()}
             | {c: st.column_config.NumberColumn(format="%.3f") for c in CALIBRATION_LABELS.values()}
             | {"test speakers": st.column_config.TextColumn(width="medium")})  # several corpora's names: cut,
#                                                                                   whole on hover
st.markdown(f"**Confidence intervals ({CONFIDENCE * 100:.0f} %, bootstrap over speakers)**")
st.dataframe(_intervals(view.set_index("id").loc[rid]), hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.1f") for c in ("mean %", "low %", "high %")})
split_by_voice = _breakdown(str(board.store.path), rid, run["created_at"])
if split_by_voice:
    st.markdown("**By voice: UAR (%) per speaker, gender and intensity, out-of-fold**")
    left, right = st.columns([3, 2])
    chart(_group_bars(split_by_voice.get("speaker", {}), "per speaker"), "lb_by_speaker", left)
    with right:
        for group in ("gender", "intensity"):
            if group in split_by_voice:
                chart(_group_bars(split_by_voice[group], f"per {group}", height=200), f"lb_by_{group}")
    if split_by_voice["gender_gap"] is not None:
        st.caption(f"Gap between genders: {split_by_voice['gender_gap'] * 100:.1f} UAR points (flagged above "
                   f"{GENDER_GAP * 100:.0f}).")
    if split_by_voice["gender_gap_flag"]:
        st.warning(f"UAR differs by {split_by_voice['gender_gap'] * 100:.1f} points between genders (more than "
                   f"{GENDER_GAP * 100:.0f}): this model does not work equally well for every voice.")
with st.expander("Configuration"):
    config = {k: run[k] for k in ("model", "params", "feature_set", "splitter", "seed", "options", "data_root",
                                  "data_fingerprint", "n_clips", "n_speakers", "saved_model", "versions",
                                  "created_at", "finished_at")}
    if public_mode():  # no server paths on a public demo: the corpus's name, the model's folder name
        config = public_text({**config, "data_root": run["dataset"]})
    st.json(plain_data(config))

# -- two runs -----------------------------------------------------------------------------------------------------
st.divider()
st.subheader("Compare two runs")
if len(ids) < 2:
    st.info("Store at least two runs to compare them.")
    st.stop()
cols = st.columns(2)
pair = [cols[i].selectbox(f"Run {'AB'[i]}", ids, index=i, format_func=plain_options(_label), key=f"lb_cmp{i}")
        for i in range(2)]
both = [board.get_run(r) for r in pair]
for col, r, tag in zip(cols, both, "AB"):
    with col:
        if r["speaker_dependent"]:
            st.caption("⚠ speaker-dependent split (optimistic)")
        st.dataframe(_metrics_table(r), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.1f") for c in ("mean %", "std %")})
        chart(_confusion(r, height=360), f"lb_cmp_cm{tag}")
diff = pd.DataFrame({"metric": [METRIC_NAMES[m] for m in METRICS],
                     "B - A (points)": [(both[1]["summary"][m]["mean"] - both[0]["summary"][m]["mean"]) * 100
                                        for m in METRICS]})
paired = view.set_index("id").loc[list(pair), "best_run"].notna().all() and pair[0] != pair[1]
try:
    test = _compare(str(board.store.path), pair[1], pair[0], tuple(r["created_at"] for r in both)) if paired else None
except SERError:  # not on the same clips and folds
    test = None
if test:
    diff["low"] = [test[m]["low"] * 100 for m in METRICS]
    diff["high"] = [test[m]["high"] * 100 for m in METRICS]
    diff["p"] = [test[m]["p"] for m in METRICS]
fmt = {c: st.column_config.NumberColumn(format="%+.1f") for c in ("B - A (points)", "low", "high")}
st.dataframe(diff, hide_index=True, column_config=fmt | {"p": st.column_config.NumberColumn(format="%.4f")})
st.caption(f"Paired: the same clips in the same folds; low-high is the {CONFIDENCE * 100:.0f} % interval of the "
           f"difference (bootstrap over {test['n_units']} {test['unit']}s) and p that of a permutation test swapping "
           "each speaker's predictions between A and B." if test else
           "These runs were not cross-validated on the same clips and folds: the difference of their means is shown "
           "without a paired test.")
