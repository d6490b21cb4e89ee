"""Train: K-fold cross-validation of the chosen models in a background worker process, with live progress; or a
hyperparameter sweep of one model (Ray Tune trials, streamed to a table and a plot of UAR per trial).

The job runs outside the app (``ser_core.jobs``): leaving the page, reloading the browser or opening a new
session does not stop it, and the page finds it again in the jobs folder.
"""
import json
import os
import time

import pandas as pd
import streamlit as st

from app_shared import (corpus_at, current_corpus, data_root, job_executor, local_only, plain, plain_data,
                        plain_options, sweep_figure)
from ser_core import events
from ser_core.augment import AUGMENTATIONS
from ser_core.cluster import summary_line
from ser_core.corpora import Corpus, combine_corpora
from ser_core.cross_corpus import align_labels
from ser_core.errors import OutsideRootsError, SERError, UserPathError
from ser_core.evaluation import default_folds
from ser_core.features import FEATURE_SETS
from ser_core.jobs import ACTIVE, Job, progress
from ser_core.models import MODEL_SPECS, PARAM_HELP, list_models
from ser_core.roots import configured_roots, user_path, weights_source
from ser_core.splits import CROSS_CORPUS, SPLIT_CHOICES, SPLITS
from ser_core.sweep import DISTRIBUTIONS, MAX_TRIALS, SUGGESTED_SPACES, format_params, trials_table
from ser_core.taxonomy import DEFAULT_MULTI, TAXONOMIES

OWN_FEATURES = "(each model's own)"
GLOBAL_PARAMS = {"feature_set", "seed", "oversample", "focal_gamma", "device", "n_jobs"}  # set elsewhere
STATE_ICONS = {"queued": ":material/schedule:", "running": ":material/directions_run:",
               "done": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:"}

local_only()
st.title("Train")
corpus_name, manifest, _ = current_corpus()
root, roots = data_root(), configured_roots()
st.caption(f"Data: **{plain(corpus_name)}**, {len(manifest)} clips, {manifest['speaker'].nunique()} speakers "
           f"({plain(root)}). Change it in the sidebar.")
corpus = Corpus(corpus_name, root, manifest)  # what check_run reads: labels and speakers
executor = job_executor()


def _keep(key: str, default):
    """Seed a widget's value from the session, so the form survives a visit to another page (Streamlit drops
    the state of widgets that a run does not draw); widgets below take their value from here, not value=."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get("_keep_" + key, default)
    return key


def _param_widget(model: str, name: str, default):
    """One hyperparameter input whose type follows its default; returns the value or raises ValueError."""
    key, about = f"hp_{model}_{name}", PARAM_HELP.get(name)
    if isinstance(default, bool):
        return st.checkbox(name, key=_keep(key, default), help=about)
    if isinstance(default, int):
        return int(st.number_input(name, step=1, key=_keep(key, default), help=about))
    if isinstance(default, float):
        return float(st.number_input(name, format="%g", key=_keep(key, default), help=about))
    shown = "" if default is None else ", ".join(map(str, default)) if isinstance(default, (tuple, list)) \
        else str(default)
    text = st.text_input(name, placeholder="None", key=_keep(key, shown), help=about)
    if isinstance(default, (tuple, list)):
        return tuple(json.loads(f"[{text}]"))
    if text.strip() in ("", "None"):
        return None
    try:
        return json.loads(text)  # numbers typed where the default is None or a string ("auto" or 0.5)
    except json.JSONDecodeError:
        return text.strip()


# -- the configuration ------------------------------------------------------------------------------------------
models = st.multiselect("Models", list_models(), key=_keep("train_models", ["svm"]),
                        format_func=lambda n: f"{n} ({MODEL_SPECS[n].framework})",
                        help="Each model is cross-validated with the same folds, then trained on all clips and "
                             "saved as one of your models (named after model, data and run, e.g. "
                             "svm-samples-run12) for the Demo page. The shipped models are never replaced.")
cross = st.toggle("Test on another corpus", key=_keep("train_cross", False),
                  help="Train on every clip of the data chosen in the sidebar and test on every clip of another "
                       "corpus, on the emotions both have (split cross-corpus). No model is saved.")
sweep = st.toggle("Sweep hyperparameters", key=_keep("train_sweep", False), disabled=cross,
                  help="Search one model's hyperparameters: Ray Tune runs the trials (one CPU each), Optuna chooses "
                       "them, each is scored by the mean UAR of speaker-grouped K-fold CV on the same folds. Every "
                       "trial is stored as a run (the Leaderboard groups them by sweep); the best configuration is "
                       "trained on all clips and saved as your model.") and not cross
sweep_spec = None
if sweep:
    c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
    first = models[0] if models else ""
    space = c1.text_input("Search space", key=_keep(f"train_space_{first}", SUGGESTED_SPACES.get(first, "")),
                          placeholder="NAME=loguniform(low,high);NAME=choice(a,b)",
                          help="NAME=DISTRIBUTION(ARGS) items separated by ';', NAME a hyperparameter of the model; "
                               "distributions: " + ", ".join(d.signature for d in DISTRIBUTIONS.values()) + ".")
    trials = c2.number_input("Trials", min_value=1, max_value=MAX_TRIALS, step=1, key=_keep("train_trials", 20))
    early_stop = c3.checkbox("Early stopping", key=_keep("train_early_stop", False),
                             help="ASHA: stop a trial whose running UAR over its first folds trails the others' "
                                  "(stopped trials are not stored).")
    sweep_spec = {"space": space, "trials": int(trials), "early_stop": early_stop}
more_roots, more_problem = [], None
if st.toggle("Train on several corpora", key=_keep("train_multi", False),
             help="Read more corpora with the sidebar's data as one: their speakers kept apart, their labels "
                  "mapped by one taxonomy. Then 'leave one corpus out' holds each corpus out in turn."):
    c1, c2 = st.columns([3, 1])
    more_text = c1.text_area("More corpora (a folder or CSV per line)", key=_keep("train_more", ""),
                             placeholder="/path/to/tess\n/path/to/emodb", height=90,
                             help="This server reads data inside: " + ", ".join(plain(r) for r in roots) + ".")
    taxonomy = c2.selectbox("Taxonomy", list(TAXONOMIES), index=list(TAXONOMIES).index(DEFAULT_MULTI),
                            key=_keep("train_taxonomy", DEFAULT_MULTI),
                            help="; ".join(f"{t.name}: {t.description}" for t in TAXONOMIES.values()) + ".")
    loaded = [corpus]
    for line in [x.strip() for x in more_text.splitlines() if x.strip()]:
        try:
            name_, manifest_, _ = corpus_at(line)
            loaded.append(Corpus(name_, Path(line).expanduser(), manifest_))
            more_roots.append(line)
        except SERError as exc:
            more_problem = str(exc)
    if len(loaded) > 1 and not more_problem:
        try:
            corpus = combine_corpora(loaded, taxonomy)
            m = corpus.manifest
            st.caption(plain(f"{corpus.name}: {len(m)} clips, {m['speaker'].nunique()} speakers, labels by the "
                             f"{corpus.taxonomy} taxonomy ({', '.join(sorted(m['emotion'].unique()))})"))
        except SERError as exc:
            more_problem = str(exc)
else:
    taxonomy = None
test, test_problem = None, None
if cross:
    test_path = st.text_input("Test corpus (folder or CSV)", key=_keep("train_test_path", ""),
                              placeholder="/path/to/another/corpus",
                              help="This server reads data inside: " + ", ".join(plain(r) for r in roots) + ".")
    if test_path.strip():
        try:
            test_name, test_manifest, _ = corpus_at(test_path.strip())
            test = Corpus(test_name, user_path(test_path.strip()), test_manifest)
        except SERError as exc:
            test_problem = str(exc)
c1, c2, c3, c4 = st.columns(4)
feature_set = c1.selectbox("Feature set", [OWN_FEATURES, *FEATURE_SETS],
                           key=_keep("train_feature_set", OWN_FEATURES))
split = c2.selectbox("Split", SPLIT_CHOICES, format_func=lambda n: SPLITS[n].label,
                     key=_keep("train_split", "speaker"), disabled=cross)
if st.session_state.get("_train_k_data") != str(root):  # new data: K starts at what it allows
    st.session_state["train_k"] = st.session_state["_keep_train_k"] = default_folds(corpus, split)
    st.session_state["_train_k_data"] = str(root)
folds = c3.number_input("K (folds)", min_value=2, max_value=20, step=1, key=_keep("train_k", 4),
                        disabled=cross or not SPLITS[split].uses_k)
seed = c4.number_input("Seed", min_value=0, step=1, key=_keep("train_seed", 0))
if SPLITS[split].speaker_dependent and not cross:
    st.warning("Random splits put the same speakers in training and test folds: scores are speaker-dependent "
               "and optimistic. Use them only to compare with published figures.")

c1, c2, c3, c4 = st.columns(4)
augment = c1.multiselect("Augmentation (training folds only)", AUGMENTATIONS, key=_keep("train_augment", []))
oversample = c2.checkbox("Oversample minority classes", key=_keep("train_oversample", False))
focal_gamma = c3.number_input("Focal loss gamma (0 = cross-entropy)", min_value=0.0, max_value=5.0, step=0.5,
                              key=_keep("train_focal", 0.0))
speaker_norm = c4.checkbox("Per-speaker normalisation", key=_keep("train_spknorm", False),
                           help="z-score utterance features per speaker (utterance feature sets only). The "
                                "saved model is speaker-adaptive: calibrate it to a voice on the Demo page.")
force = st.checkbox("Force rerun (ignore a stored result of the identical configuration)",
                    key=_keep("train_force", False))

params, bad, refused = {}, [], []
for m in models:
    defaults = MODEL_SPECS[m].params
    chosen = {}
    with st.expander(f"{m} hyperparameters"):
        st.caption(MODEL_SPECS[m].description)
        cols = st.columns(3)
        editable = [k for k in defaults if k not in GLOBAL_PARAMS]
        for i, k in enumerate(editable):
            with cols[i % 3]:
                try:
                    v = _param_widget(m, k, defaults[k])
                except (ValueError, json.JSONDecodeError):
                    bad.append(f"{m}.{k}")
                    continue
                if k == MODEL_SPECS[m].weights_param and isinstance(v, str):  # a download id or a local path
                    try:
                        v = weights_source(v, roots)
                    except (OutsideRootsError, UserPathError) as exc:
                        st.error(plain(exc))
                        refused.append(f"{m}.{k}")
                        continue
                if v != defaults[k] and not (isinstance(defaults[k], tuple) and tuple(v) == defaults[k]):
                    chosen[k] = v  # only changes: an unchanged model keeps the CLI's config hash (cache hits)
        if not editable:
            st.caption("No hyperparameters to set.")
    if oversample and "oversample" in defaults:
        chosen["oversample"] = True
    if focal_gamma > 0 and "focal_gamma" in defaults:
        chosen["focal_gamma"] = float(focal_gamma)
    params[m] = chosen
ignored = [m for m in models if (oversample and "oversample" not in MODEL_SPECS[m].params)
           or (focal_gamma > 0 and "focal_gamma" not in MODEL_SPECS[m].params)]
if ignored:
    st.caption(f"Oversampling / focal loss do not apply to: {', '.join(ignored)}.")
if bad:
    st.error(f"Fix these hyperparameters (comma-separated numbers expected): {', '.join(bad)}.")

for k in [k for k in st.session_state if k.startswith(("train_", "hp_"))]:
    st.session_state["_keep_" + k] = st.session_state[k]  # see _keep

job = Job(data_root=str(root), more_data_roots=tuple(more_roots), taxonomy=taxonomy if more_roots else None,
          models=params, feature_set=None if feature_set == OWN_FEATURES else feature_set,
          folds=1 if cross else int(folds), split=CROSS_CORPUS if cross else split, augment=tuple(augment),
          speaker_norm=speaker_norm, seed=int(seed), force=force, save=not cross, data_roots=[str(r) for r in roots],
          test_data_root=str(test.root) if test is not None else None, sweep=sweep_spec)
reason = None  # why Run is refused: one sentence, before any job starts
if not models:
    reason = "Choose at least one model to train."
elif more_problem:
    reason = more_problem
elif cross and test is None:
    reason = test_problem or "Choose the corpus to test on: a folder or CSV file."
elif not bad and not refused:
    try:
        job.check(corpus, test)
    except SERError as exc:
        reason = str(exc)
if test is not None and not reason:
    st.caption(plain(align_labels(corpus, test).message))
if reason:
    st.error(plain(reason), icon=":material/block:")
if st.button("Run sweep" if sweep else "Run", type="primary", disabled=bool(reason or bad or refused), key="train_run",
             help=reason):
    try:
        st.session_state["job_show"] = executor.submit(job)
    except SERError as exc:
        st.error(plain(exc))

# -- jobs ---------------------------------------------------------------------------------------------------------
executor.reap()  # jobs whose worker died (killed, out of memory) are recorded as failed before they are listed
jobs = executor.list()
if not jobs:
    st.info("No training jobs yet: choose models and press Run.")
    st.stop()
ids = [j["id"] for j in jobs]
if st.session_state.get("job_show") not in ids:  # a reload or a new session: the running job, else the latest
    st.session_state["job_show"] = next((j["id"] for j in jobs if j.get("state") in ACTIVE), ids[0])


def _job_label(j):
    spec = j.get("job", {})
    return (f"{j['id']} · {', '.join(spec.get('models', {}))} · "
            + (f"sweep of {spec['sweep'].get('trials')} trials, " if spec.get("sweep") else "")
            + f"{spec.get('split')} K={spec.get('folds')}")


st.divider()
st.subheader("Job")
job_id = st.selectbox("Show job", ids, key="job_show",
                      format_func=plain_options(lambda i: _job_label(next(j for j in jobs if j["id"] == i))))
active = next(j for j in jobs if j["id"] == job_id).get("state") in ACTIVE


def _fmt_s(s):
    return "?" if s is None else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


@st.fragment(run_every=2.0 if active else None)
def job_panel(job_id: str, was_active: bool):
    executor.reap(job_id)  # on this timer: a worker that died ends its job here
    st_ = executor.status(job_id)
    state, spec = st_.get("state"), st_.get("job", {})
    if was_active and state not in ACTIVE:
        st.rerun()  # finished: redraw the whole page once (job list, no more refreshing)
    head, btn = st.columns([4, 1])
    split = SPLITS.get(spec.get("split"))
    protocol = f"tested on {plain(spec['test_data_root'])}" if spec.get("test_data_root") else \
        f"{split.label if split else spec.get('split')}, K={spec.get('folds')}"
    data = " + ".join([spec.get("data_root") or "?", *spec.get("more_data_roots", [])])
    head.markdown(f"**{STATE_ICONS.get(state, '')} {state}** · {plain(data)} · {protocol}, "
                  f"seed {spec.get('seed')}{' · forced rerun' if spec.get('force') else ''}")
    if state in ACTIVE and btn.button("Cancel", key=f"cancel_{job_id}"):
        st_ = executor.cancel(job_id)
        st.toast("Cancel requested: the job stops at the next fold boundary.")
    if state == "queued":
        st.info("Queued: another job is running; this one starts when it finishes.")
    if st_.get("executor"):  # where its folds run: this worker, or a Ray cluster's nodes
        st.caption(plain(summary_line(st_)))
    if st_.get("error"):
        st.error(plain(st_["error"]))
    job_events = executor.events(job_id)
    prog = progress(job_events, now=time.time())
    if spec.get("sweep"):
        sweep_panel(spec, job_events, prog)
    for name in () if spec.get("sweep") else spec.get("models", {}):
        p = prog.get(name)
        if p is None:
            st.markdown(f"**{plain(name)}**: waiting")
            continue
        if p["cached"]:
            st.success(f"**{plain(name)}**: identical configuration on identical data: reused the stored result "
                       f"(run #{p['run_id']}) and its saved model. Tick *Force rerun* to train again.")
        done, total = len(p["done"]), p["folds"]
        text = {events.FEATURES: "computing features", events.FINAL: "training the final model on all clips"}.get(
            p["state"], p["state"])
        if p["state"] == events.FEATURES and p.get("features_done"):
            text = "computing features {}/{} clips".format(*p["features_done"])
        if total and p["state"] == "running" and p["current_fold"] is not None:
            text = f"fold {p['current_fold'] + 1}/{total}"
        text += f" · {_fmt_s(p['elapsed_s'])} elapsed"
        if p["eta_s"] and p["state"] not in ("done", "failed", "cancelled"):
            text += f" · about {_fmt_s(p['eta_s'])} left"
        if p["summary"]:
            s = p["summary"]
            text += f" · UAR {s['uar']['mean']:.3f} ± {s['uar']['std']:.3f}, accuracy {s['accuracy']['mean']:.3f}"
        frac = 1.0 if p["state"] == "done" else (done / total if total else 0.0)
        st.progress(frac, text=f"**{plain(name)}**: {text}")
        if p["error"]:
            st.error(plain(f"{name}: {p['error']}"))
        if p["done"]:
            folds = pd.DataFrame(p["done"]).assign(fold=lambda d: d["fold"] + 1,
                                                   test_speakers=lambda d: d["test_speakers"].map(", ".join))
            st.dataframe(plain_data(folds), hide_index=True, column_config={
                "test_speakers": "test speakers", "accuracy": st.column_config.NumberColumn(format="%.3f"),
                "uar": st.column_config.NumberColumn("UAR", format="%.3f"),
                "macro_f1": st.column_config.NumberColumn("macro F1", format="%.3f"),
                "train_time_s": st.column_config.NumberColumn("train s", format="%.1f")})
    saved = [os.path.basename(m["saved_model"]) for m in st_.get("models", {}).values() if m.get("saved_model")]
    if saved:
        st.caption(f"Saved as your model{'s' if len(saved) > 1 else ''} {plain(', '.join(saved))}: try "
                   f"{'them' if len(saved) > 1 else 'it'} on the Demo page, under *Your models*.")
    if state == "done":
        st.page_link("app_pages/leaderboard.py", label="See the runs on the Leaderboard", icon="🏆")
    with st.expander("Log"):  # a crash's traceback stays in here; the page shows its one-line message
        log = (executor.log(job_id, tail_chars=6000) or "(empty)").splitlines()
        st.code("\n".join(plain_data(log)), language=None)  # each line: a label's controls shown, not obeyed


def sweep_panel(spec: dict, job_events: list, prog: dict):
    """A sweep job: trials done of those asked for, their table and the plot of UAR per trial, the best at the end."""
    name, total = next(iter(spec["models"])), int(spec["sweep"].get("trials", 0))
    rows = pd.DataFrame(trials_table(job_events))
    features = prog.get(name, {}).get("features_done")
    text = f"**{plain(name)}**: {len(rows)}/{total} trials"
    if features and features[0] < features[1]:
        text = f"**{plain(name)}**: computing features {features[0]}/{features[1]} clips"
    st.progress(min(1.0, len(rows) / max(1, total)), text=text)
    st.caption(plain(f"Search space: {spec['sweep'].get('space')} · speaker-grouped {spec.get('folds')}-fold CV, "
                     f"the same folds for every trial"))
    if rows.empty:
        return
    st.plotly_chart(sweep_figure(rows), key=f"sweep_plot_{len(rows)}")
    st.dataframe(plain_data(rows.sort_values("trial", ascending=False)), hide_index=True, column_config={
        "uar_mean": st.column_config.NumberColumn("UAR", format="%.3f"),
        "uar_std": st.column_config.NumberColumn("±", format="%.3f"),
        "run_id": st.column_config.NumberColumn("run", format="%d")})
    done = next((e for e in job_events if e["event"] == events.SWEEP_DONE), None)
    best = done and done.get("best")
    if best:
        st.success(plain(f"Best: trial {best['trial']} ({format_params(best['params'])}), UAR {best['uar']['mean']:.3f} ± "
                         f"{best['uar']['std']:.3f}, run #{best['run_id']}")
                   + (f"; saved as your model {plain(os.path.basename(done['saved_model']))}."
                      if done.get("saved_model") else "."))


job_panel(job_id, active)

with st.expander(f"Recent jobs ({len(jobs)})"):
    st.dataframe(plain_data(pd.DataFrame([{"job": j["id"], "state": j.get("state"),
                                "models": ", ".join(j.get("job", {}).get("models", {})),
                                "data": j.get("job", {}).get("data_root"), "split": j.get("job", {}).get("split"),
                                "K": j.get("job", {}).get("folds"), "submitted": j.get("submitted_at"),
                                "finished": j.get("finished_at"), "error": j.get("error")} for j in jobs])),
                 hide_index=True)
