"""Hyperparameter sweeps: the search-space parser, the store's sweeps and their migration, the Leaderboard's
grouping, and real sweeps (Ray Tune on a local Ray, Optuna) from the command line and as a background job."""
from __future__ import annotations

import json
import re
import sqlite3
import time

import numpy as np
import pytest

from helpers import store_run, symlink_actors
from ser_core.errors import ConfigError
from ser_core.jobs import Job, LocalProcessExecutor
from ser_core.leaderboard import Leaderboard, best_of_sweeps, sweep_trials
from ser_core.results import ResultsStore
from ser_core.sweep import (MAX_TRIALS, SUGGESTED_SPACES, Dimension, SweepConfig, format_space, parse_space,
                            trials_table)
from test_cli import run_cli


# -- the search space ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(SUGGESTED_SPACES))
def test_the_suggested_spaces_parse(model):
    assert format_space(parse_space(SUGGESTED_SPACES[model], model)) == SUGGESTED_SPACES[model]


def test_parse_space_types_every_distribution():
    space = parse_space("C=loguniform(0.1,100); gamma=choice(scale, auto, 0.01);kernel=choice('rbf',\"linear\")",
                        "svm")
    assert space["C"] == Dimension("C", "loguniform", (0.1, 100))
    assert space["gamma"].args == ("scale", "auto", 0.01)
    assert space["kernel"].args == ("rbf", "linear")
    rf = parse_space("n_estimators=randint(50,500)\nmax_depth=choice(none,8,16)\noversample=choice(true,false)",
                     "random_forest")
    assert rf["max_depth"].args == (None, 8, 16) and rf["oversample"].args == (True, False)
    assert [type(v) for v in rf["n_estimators"].args] == [int, int]
    assert parse_space("shrinkage=quniform(0,1,0.1)", "lda")["shrinkage"].args == (0, 1, 0.1)
    assert format_space(space) == "C=loguniform(0.1,100);gamma=choice(scale,auto,0.01);kernel=choice(rbf,linear)"


def test_randint_includes_its_high_bound_in_the_tune_domain():
    domain = parse_space("max_depth=randint(2,4)", "decision_tree")["max_depth"].domain()
    assert (domain.lower, domain.upper) == (2, 5)  # Tune's upper bound is exclusive


@pytest.mark.parametrize("text, message", [
    ("", "search space is empty"),
    ("C=10", "Cannot read 'C=10'"),
    ("c=loguniform(0.1,100)", "has no parameter 'c' to search. Did you mean C\\? Choose among: .*gamma"),
    ("seed=randint(0,9)", "has no parameter 'seed'"),
    ("C=normal(0,1)", "Unknown distribution 'normal' for 'C'; use one of: loguniform"),
    ("C=loguniform(0,100)", "bounds above 0"),
    ("C=uniform(5,1)", "low bound below its high bound"),
    ("C=uniform(1)", "takes 2 numbers"),
    ("C=uniform(a,b)", "takes numbers"),
    ("gamma=choice(scale)", "at least two values"),
    ("gamma=choice(scale,scale)", "lists a value twice"),
    ("C=randint(1.5,10)", "whole numbers"),
    ("C=quniform(0,1,2)", "step above 0 and at most"),
    ("C=uniform(1,2);C=uniform(3,4)", "names 'C' twice"),
    ("C=choice(1,big)", "'C=choice\\(...\\)' takes numbers"),
    ("oversample=choice(yes,no)", "takes true or false"),
    ("probability=choice(votes,isotonic)", "'probability=choice\\(...\\)': Model 'svm': probability must be one of"),
    ("class_weight=choice(none,heavy)", "class_weight must be 'balanced' or None"),
])
def test_parse_space_refuses_mistakes_in_one_sentence(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_space(text, "svm")
    assert "\n" not in str(err.value)


def test_integer_parameters_refuse_continuous_distributions():
    with pytest.raises(ConfigError, match="'n_estimators' takes whole numbers; use n_estimators=randint"):
        parse_space("n_estimators=uniform(10,100)", "random_forest")


def test_sweep_config_check_refuses_before_anything_runs():
    for trials in (0, MAX_TRIALS + 1):  # a browser cannot ask for a billion trials either
        with pytest.raises(ConfigError, match=f"1 to {MAX_TRIALS} trials"):
            SweepConfig("svm", "C=uniform(1,2)", trials=trials).check()
    with pytest.raises(ConfigError, match="'C' is both fixed and searched"):
        SweepConfig("svm", "C=uniform(1,2)", params={"C": 3}).check()
    with pytest.raises(ConfigError, match="Unknown model"):
        SweepConfig("svn", "C=uniform(1,2)").check()


def test_a_sweep_job_is_checked_at_submit(tmp_path):
    ex = LocalProcessExecutor(tmp_path / "jobs")
    base = dict(data_root=str(tmp_path), results_db=str(tmp_path / "r.sqlite"), models_dir=str(tmp_path / "m"))
    with pytest.raises(ConfigError, match="one model; choose exactly one"):
        ex.submit(Job(models={"svm": {}, "lda": {}}, sweep={"space": "C=uniform(1,2)"}, **base))
    with pytest.raises(ConfigError, match="has no parameter 'Q'"):
        ex.submit(Job(models={"svm": {}}, sweep={"space": "Q=uniform(1,2)"}, **base))
    with pytest.raises(ConfigError, match="choose the split 'speaker'"):
        ex.submit(Job(models={"svm": {}}, split="random", sweep={"space": "C=uniform(1,2)"}, **base))
    assert ex.list() == []


# -- the store and the Leaderboard ----------------------------------------------------------------------------
def _oof(seed: int, accuracy: float) -> dict:
    """Out-of-fold predictions of 4 speakers x 2 folds, right about ``accuracy`` of the time."""
    rng = np.random.default_rng(seed)
    classes = np.array(["angry", "happy", "neutral", "sad"])
    y = np.tile(np.repeat(classes, 5), 4)
    right = rng.random(len(y)) < accuracy
    pred = np.where(right, y, rng.choice(classes, len(y)))
    proba = np.full((len(y), 4), 0.1)
    proba[np.arange(len(y)), np.searchsorted(classes, pred)] = 0.7
    speaker = np.repeat(["1", "2", "3", "4"], 20)
    return {"proba": proba, "classes": classes, "fold": np.repeat([0, 0, 1, 1], 20), "y": y,
            "paths": np.array([f"03-01-0{i % 8 + 1}-01-01-01-{s}.wav" for i, s in enumerate(speaker)]),
            "speaker": speaker, "gender": np.repeat(["female", "male"] * 2, 20), "intensity": np.repeat(["normal"], 80)}


def test_old_databases_gain_the_sweep_column_and_keep_their_runs(tmp_path):
    db = tmp_path / "old.sqlite"
    store = ResultsStore(db)
    rid = store_run(store, _oof(0, 0.6))
    with sqlite3.connect(db) as con:  # as a database written before sweeps existed
        con.execute("DROP INDEX runs_sweep")
        con.execute("ALTER TABLE runs DROP COLUMN sweep")
        con.execute("DROP TABLE sweeps")
    reopened = ResultsStore(db)
    assert reopened.runs()["id"].tolist() == [rid] and reopened.runs()["sweep"].isna().all()
    assert reopened.sweeps().empty
    reopened.start_sweep("sweep-x", model="svm", dataset="ravdess", data_fingerprint="f", space="C=uniform(1,2)",
                         settings={"trials": 2})
    assert store_run(reopened, _oof(1, 0.6), sweep="sweep-x") == rid + 1


def test_the_leaderboard_shows_a_sweep_as_its_best_trial(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    lone = store_run(store, _oof(0, 0.5), model="lda")
    store.start_sweep("sweep-a", model="svm", dataset="ravdess", data_fingerprint="f", space="C=loguniform(0.1,100)",
                      settings={"trials": 3})
    trials = [store_run(store, _oof(i, acc), params={"C": c}, sweep="sweep-a")
              for i, (acc, c) in enumerate([(0.4, 0.1), (0.9, 10.0), (0.6, 1.0)], start=1)]
    store.finish_sweep("sweep-a", best_run=trials[1])
    board = Leaderboard(store, shipped_dir=tmp_path / "none")
    runs = board.runs()
    assert best_of_sweeps(runs)["id"].tolist() == [lone, trials[1]]  # the others are in the sweep, not the table
    table = sweep_trials(runs, "sweep-a")
    assert table["trial"].tolist() == [1, 2, 3] and table["C"].tolist() == [0.1, 10.0, 1.0]
    sweeps = board.sweeps()
    assert sweeps["id"].tolist() == ["sweep-a"] and sweeps["trials"].tolist() == [3]
    assert sweeps["best_run"].tolist() == [trials[1]]
    assert sweeps["uar_mean"].iloc[0] == runs.set_index("id").loc[trials[1], "uar_mean"]


def test_the_leaderboard_numbers_trials_and_breaks_ties_as_the_sweep_does(tmp_path):
    """Trials end, and are stored, in any order: the Leaderboard numbers them as the sweep did (the order the
    search suggested them) and, on a tie, shows the first trial, the one the sweep saved."""
    store = ResultsStore(tmp_path / "r.sqlite")
    store.start_sweep("sweep-t", model="svm", dataset="ravdess", data_fingerprint="f", space="C=uniform(1,9)",
                      settings={"trials": 3})
    same = _oof(5, 0.7)
    stored = {trial: store_run(store, oof, params={"C": c}, sweep="sweep-t", trial=trial)
              for trial, oof, c in [(3, same, 3.0), (1, _oof(6, 0.3), 1.0), (2, same, 2.0)]}  # the order they ended
    runs = Leaderboard(store, shipped_dir=tmp_path / "none").runs()
    assert best_of_sweeps(runs)["id"].tolist() == [stored[2]]  # trials 2 and 3 tie: the sweep keeps trial 2
    table = sweep_trials(runs, "sweep-t")
    assert table["trial"].tolist() == [1, 2, 3] and table["C"].tolist() == [1.0, 2.0, 3.0]
    assert table["id"].tolist() == [stored[1], stored[2], stored[3]]


@pytest.mark.slow
def test_the_leaderboard_page_lists_a_sweep_as_its_best_trial_and_its_trials_apart(tmp_path, monkeypatch):
    from test_app_train_leaderboard import _charts, _page, _values

    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path / "no-shipped-models"))
    store = ResultsStore()
    lone = store_run(store, _oof(0, 0.5), model="lda")
    store.start_sweep("sweep-a", model="svm", dataset="ravdess", data_fingerprint="f", space="C=loguniform(0.1,100)",
                      settings={"trials": 3})
    trials = [store_run(store, _oof(i, acc), params={"C": c}, sweep="sweep-a")
              for i, (acc, c) in enumerate([(0.4, 0.1), (0.9, 10.0), (0.6, 1.0)], start=1)]
    at = _page("leaderboard.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("run")
    assert sorted(table.index) == sorted([str(lone), str(trials[1])])
    assert table.loc[str(trials[1]), "model"] == "svm (sweep)" and table.loc[str(lone), "model"] == "lda"
    sweeps = at.dataframe[1].value
    assert sweeps["id"].tolist() == ["sweep-a"] and sweeps["trials"].tolist() == [3]
    assert at.dataframe[2].value["C"].tolist() == [0.1, 10.0, 1.0]
    assert _values(_charts(at)["UAR per trial (%)"]["data"][0]["x"]) == [1, 2, 3]
    at.toggle(key="lb_every_trial").set_value(True).run()
    assert sorted(at.dataframe[0].value["run"]) == sorted(map(str, [lone, *trials]))


def test_trials_table_reads_the_trial_events():
    evs = [{"event": "sweep_start", "trials": 2},
           {"event": "trial_done", "trial": 1, "state": "done", "params": {"C": 2.0}, "uar": {"mean": 0.5, "std": 0.1},
            "run_id": 7},
           {"event": "trial_done", "trial": 2, "state": "failed", "params": {"C": 9.0}, "uar": None, "run_id": None,
            "error": "boom"}]
    assert trials_table(evs) == [
        {"trial": 1, "state": "done", "uar_mean": 0.5, "uar_std": 0.1, "run_id": 7, "C": 2.0},
        {"trial": 2, "state": "failed", "uar_mean": None, "uar_std": None, "run_id": None, "C": 9.0, "error": "boom"}]


# -- real sweeps ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_actors(shared_ravdess, tmp_path_factory):
    """240 clips of 4 actors (symlinks)."""
    return symlink_actors(shared_ravdess, tmp_path_factory.mktemp("sweep4"), ("01", "02", "03", "04"))


@pytest.mark.slow
def test_cli_sweep_stores_every_trial_and_saves_the_best(four_actors, tmp_path):
    env = {"SER_RESULTS_DB": str(tmp_path / "r.sqlite"), "SER_USER_MODELS_DIR": str(tmp_path / "models"),
           "SER_RAY_CPUS": "2", "SER_MODELS_DIR": str(tmp_path / "no-shipped-models")}  # the leaderboard: ours only
    proc = run_cli("sweep", "--data", four_actors, "--model", "svm", "--space", "C=loguniform(0.01,100)",
                   "--param", "svm.gamma=auto", "--trials", "3", "--folds", "2", "--seed", "1", "--json", env=env)
    out = json.loads(proc.stdout)  # svm on rich features: the clips' features are cached by test_cli and test_jobs
    assert [t["trial"] for t in out["trials"]] == [1, 2, 3] and {t["state"] for t in out["trials"]} == {"done"}
    assert len({t["params"]["C"] for t in out["trials"]}) == 3
    assert all(0.01 <= t["params"]["C"] <= 100 for t in out["trials"])
    assert "[trial 3/3] C=" in proc.stderr
    best = out["best"]
    assert best["uar"]["mean"] == max(t["uar"]["mean"] for t in out["trials"])
    store = ResultsStore(tmp_path / "r.sqlite")
    runs = store.runs().set_index("id")
    assert sorted(runs.index) == sorted(t["run_id"] for t in out["trials"])
    assert set(runs["sweep"]) == {out["sweep_id"]}
    for t in out["trials"]:  # each trial's run is its cross-validation: params, folds, out-of-fold predictions
        run = store.get_run(t["run_id"])
        assert run["params"] == {"gamma": "auto", **t["params"]} and len(run["folds"]) == 2 and run["seed"] == 1
        assert run["summary"]["uar"] == t["uar"] and store.oof(t["run_id"])["proba"].shape == (240, 8)
    assert len({json.dumps(store.get_run(t["run_id"])["folds"][0]["test_speakers"]) for t in out["trials"]}) == 1
    assert out["saved_model"] == runs.loc[best["run_id"], "saved_model"]
    card = json.loads((tmp_path / "models" / f"svm-ravdess-run{best['run_id']}" / "card.json").read_text())
    assert (card["params"]["C"], card["params"]["gamma"]) == (best["params"]["C"], "auto")
    assert card["cv"]["run_id"] == best["run_id"] and card["cv"]["metrics"]["uar"] == best["uar"]
    sweep = store.sweeps().iloc[0]
    assert (sweep["id"], sweep["best_run"], sweep["trials"]) == (out["sweep_id"], best["run_id"], 3)
    board = json.loads(run_cli("leaderboard", "--json", env=env).stdout)
    assert [r["id"] for r in board] == [best["run_id"]] and board[0]["sweep"] == out["sweep_id"]
    board = json.loads(run_cli("leaderboard", "--sweep", out["sweep_id"], "--json", env=env).stdout)
    assert sorted(r["id"] for r in board) == sorted(runs.index)
    failing = run_cli("sweep", "--data", four_actors, "--model", "svm", "--space", "kernel=choice(nope,nada)",
                      "--trials", "2", "--folds", "2", "--json", env=env, check=False)
    assert failing.returncode == 1 and "Traceback" not in failing.stderr  # a failed trial is one line
    assert [t["state"] for t in json.loads(failing.stdout)["trials"]] == ["failed", "failed"]
    assert len(re.findall(r"\[trial \d/2\] kernel=\w+: failed: .*'kernel' parameter", failing.stderr)) == 2
    assert "none finished" in failing.stderr and len(ResultsStore(tmp_path / "r.sqlite").runs()) == 3
    bad = run_cli("sweep", "--data", four_actors, "--model", "lda", "--space", "shrink=uniform(0,1)", env=env,
                  check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: Model 'lda' has no parameter 'shrink' to search. Did you mean shrinkage? Choose among: "
        "class_weight, oversample, shrinkage."]


@pytest.mark.slow
def test_a_sweep_job_streams_its_trials_and_a_cancel_stops_it(four_actors, tmp_path, monkeypatch):
    monkeypatch.setenv("SER_RAY_CPUS", "1")  # one trial at a time: the cancel lands between trials
    ex = LocalProcessExecutor(tmp_path / "jobs")
    job_id = ex.submit(Job(data_root=str(four_actors), models={"svm": {}}, folds=2,
                           results_db=str(tmp_path / "r.sqlite"), models_dir=str(tmp_path / "models"),
                           sweep={"space": "C=loguniform(0.1,100)", "trials": 50}))
    end = time.time() + 120
    while not trials_table(ex.events(job_id)):
        assert time.time() < end and ex.status(job_id)["state"] in ("queued", "running"), ex.log(job_id)
        time.sleep(0.2)
    first = trials_table(ex.events(job_id))[0]
    assert first["state"] == "done" and first["run_id"] is not None and 0.1 <= first["C"] <= 100
    assert ex.status(job_id)["executor"] == "ray"  # on the local executor too: a sweep's trials run on Ray
    assert "executor ray at local Ray" in ex.log(job_id)
    assert "[svm] trial 1: C=" in ex.log(job_id)  # the job log words a trial as the CLI does (trial_outcome)
    ex.cancel(job_id)
    st = ex.wait(job_id, timeout=60)
    assert st["state"] == "cancelled", ex.log(job_id)
    stored = ResultsStore(tmp_path / "r.sqlite").runs()
    assert 1 <= len(stored) < 50 and stored["sweep"].nunique() == 1
    assert not list((tmp_path / "models").glob("*"))  # a cancelled sweep saves nothing
    assert (tmp_path / "jobs" / job_id / "tune").is_dir()  # Ray Tune's folders stay inside the job's

    from test_app_train_leaderboard import _charts, _page, _values  # the Train page shows the trials

    monkeypatch.setenv("SER_JOBS_DIR", str(tmp_path / "jobs"))
    at = _page("train.py", four_actors)
    at.session_state["train_sweep"] = True
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="train_space_svm").value == SUGGESTED_SPACES["svm"]
    assert at.button(key="train_run").label == "Run sweep" and not at.button(key="train_run").disabled
    shown = at.dataframe[0].value
    assert shown["run_id"].dropna().astype(int).tolist() == sorted(stored["id"].astype(int), reverse=True)
    assert len(_values(_charts(at)["UAR per trial (%)"]["data"][0]["x"])) == len(stored)
