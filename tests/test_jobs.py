"""Background jobs: a real worker process per job on 4 RAVDESS actors (symlinks to the shared clips)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from ser_core.errors import ConfigError
from ser_core.jobs import Job, LocalProcessExecutor, progress
from ser_core.results import ResultsStore

ACTORS = ("01", "02", "03", "04")
SLOW_RF = {"random_forest": {"n_estimators": 1500, "n_jobs": 1}}  # a few seconds a fold: time to interfere


@pytest.fixture(scope="module")
def space(tmp_path_factory, shared_ravdess):
    """A 240-clip corpus of symlinks, plus a results database and a models folder shared by the tests."""
    root = tmp_path_factory.mktemp("jobs")
    for a in ACTORS:
        d = root / "data" / f"Actor_{a}"
        d.mkdir(parents=True)
        for f in (shared_ravdess / f"Actor_{a}").glob("*.flac"):
            (d / f.name).symlink_to(f)
    return {"data": str(root / "data"), "db": str(root / "results.sqlite"), "models": str(root / "models")}


def _job(space, models, **kw):
    return Job(data_root=space["data"], models=models, folds=kw.pop("folds", 2), results_db=space["db"],
               models_dir=space["models"], **kw)


def _wait_event(ex, job_id, kind, timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        evs = [e for e in ex.events(job_id) if e["event"] == kind]
        if evs:
            return evs[0]
        assert ex.status(job_id)["state"] in ("queued", "running"), ex.log(job_id)
        time.sleep(0.1)
    raise AssertionError(f"no '{kind}' event within {timeout} s:\n{ex.log(job_id)}")


def test_submit_rejects_bad_jobs(tmp_path, space):
    ex = LocalProcessExecutor(tmp_path / "jobs")
    with pytest.raises(ConfigError, match="Unknown model 'svn'"):
        ex.submit(_job(space, {"svn": {}}))
    with pytest.raises(ConfigError, match="does not exist"):
        ex.submit(Job(data_root=str(tmp_path / "nowhere"), models={"svm": {}}))
    with pytest.raises(ConfigError, match="at least 2 folds"):
        ex.submit(_job(space, {"svm": {}}, folds=1))
    assert ex.list() == []


@pytest.mark.slow
def test_job_runs_in_a_worker_then_is_served_from_the_cache(tmp_path, space):
    from app_shared import models_dir_version

    ex = LocalProcessExecutor(tmp_path / "jobs")
    version = models_dir_version(space["models"])
    first = ex.submit(_job(space, {"svm": {}}))
    st = ex.wait(first, timeout=120)
    assert st["state"] == "done", ex.log(first)
    assert st["pid"] != os.getpid()
    m = st["models"]["svm"]
    assert m["state"] == "done" and m["cached"] is False
    run = ResultsStore(space["db"]).get_run(m["run_id"])
    assert run["status"] == "done" and run["k"] == 2 and len(run["folds"]) == 2 and run["n_clips"] == 240
    saved = os.path.join(space["models"], f"svm-ravdess-run{m['run_id']}")  # a name of its own: model, data, run
    assert m["saved_model"] == saved and os.path.isfile(os.path.join(saved, "model.json"))
    card = json.load(open(os.path.join(saved, "card.json")))
    assert card["cv"]["run_id"] == m["run_id"] and card["training_data"]["speakers"] == 4
    assert models_dir_version(space["models"]) > version  # the demo's cached predictors refresh
    events = ex.events(first)
    done = [e for e in events if e["event"] == "fold_done"]
    assert [e["fold"] for e in done] == [0, 1] and all(e["eta_s"] >= 0 and e["elapsed_s"] > 0 for e in done)
    p = progress(events)["svm"]
    assert p["state"] == "done" and len(p["done"]) == 2 and 0 < p["summary"]["uar"]["mean"] <= 1
    assert "fold 2/2" in ex.log(first)

    again = ex.submit(_job(space, {"svm": {}}))  # identical configuration, identical data
    st2 = ex.wait(again, timeout=60)
    assert st2["state"] == "done" and st2["models"]["svm"]["cached"] is True
    assert st2["models"]["svm"]["run_id"] == m["run_id"]
    assert [e["event"] for e in ex.events(again) if e.get("model")][:2] == ["model_start", "cached"]
    assert progress(ex.events(again))["svm"]["cached"]

    forced = ex.submit(_job(space, {"svm": {}}, force=True))
    st3 = ex.wait(forced, timeout=60)
    assert st3["state"] == "done" and not st3["models"]["svm"]["cached"]
    assert st3["models"]["svm"]["run_id"] != m["run_id"]
    assert [j["id"] for j in ex.list()] == [forced, again, first]  # newest first


@pytest.mark.slow
def test_jobs_queue_and_cancel(tmp_path, space):
    ex = LocalProcessExecutor(tmp_path / "jobs")
    slow = ex.submit(_job(space, SLOW_RF, folds=4))
    _wait_event(ex, slow, "fold_start")
    queued = ex.submit(_job(space, {"svm": {}}))
    doomed = ex.submit(_job(space, {"majority": {}}))
    _wait_event(ex, queued, "queued")
    assert ex.status(slow)["state"] == "running"
    assert ex.status(queued)["state"] == ex.status(doomed)["state"] == "queued"

    assert ex.wait(ex.cancel(doomed)["id"], timeout=10)["state"] == "cancelled"  # never started
    assert "started_at" not in ex.status(doomed)

    ex.cancel(slow)  # stops at the next fold boundary
    st = ex.wait(slow, timeout=60)
    assert st["state"] == "cancelled" and st["models"]["random_forest"]["state"] == "cancelled"
    assert ResultsStore(space["db"]).get_run(st["run_ids"][0])["status"] == "cancelled"
    assert not os.path.exists(os.path.join(space["models"], "random_forest"))

    st_q = ex.wait(queued, timeout=90)  # the queued job ran only after the running one let go
    assert st_q["state"] == "done", ex.log(queued)
    assert st_q["started_at"] >= st["finished_at"]


@pytest.mark.slow
def test_a_cancel_during_the_final_fit_ends_the_job_cancelled_with_no_model(tmp_path, space):
    """Before, a cancel while the final model trained (shorter than the grace period) was not looked at again:
    the job ended "done" and saved the model. The run now checks after the fit and before the swap. (The grace
    period is long here: the watchdog's SIGTERM, which interrupts a fit running past it, must not be what stops
    it.)"""
    ex = LocalProcessExecutor(tmp_path / "jobs", cancel_grace_s=120)
    job_id = ex.submit(_job(space, SLOW_RF, name_prefix="cancelled-final-"))
    _wait_event(ex, job_id, "final")
    ex.cancel(job_id)
    st = ex.wait(job_id, timeout=120)
    assert st["state"] == "cancelled" and st["models"]["random_forest"]["state"] == "cancelled", ex.log(job_id)
    run = ResultsStore(space["db"]).get_run(st["run_ids"][0])
    assert run["status"] == "cancelled" and run["saved_model"] is None
    assert not list(Path(space["models"]).glob("*cancelled-final-*"))  # no model, no half-written folder


@pytest.mark.parametrize("phase", ["features", "fold_start", "final", "saving"])
def test_a_cancel_in_any_phase_stops_the_run_and_saves_nothing(phase, tmp_path):
    """should_stop is looked at after every clip's features, between folds, after the final fit and once the
    model is written but not yet swapped in: each cancel ends the run "cancelled" (when it was started) and
    leaves no model behind."""
    from functools import partial

    from ser_core.corpora import Corpus, load_corpus
    from ser_core.evaluation import RunConfig, cross_validate
    from ser_core.roots import SAMPLES
    from ser_core.saved import user_model_path

    samples = load_corpus(SAMPLES)
    m = samples.manifest
    data = Corpus(samples.name, samples.root, m[m["emotion"].isin(["angry", "sad"])].reset_index(drop=True))
    seen, asked_after_final = set(), []

    def progress(e):
        seen.add(e["event"])

    def should_stop():
        if phase == "saving":  # the first question after the fit says go on, the one before the swap says stop
            if "final" in seen:
                asked_after_final.append(1)
            return len(asked_after_final) > 1
        return phase in seen

    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(KeyboardInterrupt):
        cross_validate(RunConfig(model="svm", feature_set="prosody", folds=2), data, store=store, progress=progress,
                       save_to=partial(user_model_path, "svm", "samples", root=tmp_path / "models"),
                       should_stop=should_stop, use_cache=False)
    runs = store.runs(status=None)
    assert list(runs["status"]) == ([] if phase == "features" else ["cancelled"])
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


@pytest.mark.slow
def test_sigkilled_worker_leaves_a_failed_job_and_an_intact_store(tmp_path, space):
    ex = LocalProcessExecutor(tmp_path / "jobs")
    job_id = ex.submit(_job(space, SLOW_RF, folds=4))
    _wait_event(ex, job_id, "fold_done")
    pid = ex.status(job_id)["pid"]
    os.killpg(pid, signal.SIGKILL)  # the worker is its own process group
    _wait_gone(pid, job_id)
    assert ex.status(job_id)["state"] == ex.list()[0]["state"] == "running"  # reading changes nothing
    st = ex.wait(job_id, timeout=10)  # waiting reaps the dead worker
    assert st["state"] == "failed" and "stopped unexpectedly" in st["error"]
    assert st["models"]["random_forest"]["state"] == "failed"
    run = ResultsStore(space["db"]).get_run(st["run_ids"][0])
    assert run["status"] == "failed" and "killed" in run["error"] and len(run["folds"]) >= 1
    with sqlite3.connect(space["db"]) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert ex.status(job_id)["state"] == "failed" and ex.reap() == []  # stable on later reads


def _wait_gone(pid, job_id, timeout=30):
    """Wait for a worker to end, watching the process only (no executor call)."""
    from ser_core.jobs import _alive

    end = time.time() + timeout
    while _alive(pid, job_id) and time.time() < end:
        time.sleep(0.1)
    assert not _alive(pid, job_id)


def _dead_job(ex, job_id, store, cancel=False):
    """A job folder left by a worker that died mid-run: status running, a pid that is gone, a run still open."""
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    rid = store.start_run(model="svm", params={}, feature_set={}, dataset="ravdess", data_root="/d",
                          data_fingerprint="f", n_clips=6, n_speakers=2, split="speaker", splitter="s", k=2, seed=0,
                          speaker_dependent=False, options={}, config_hash=job_id, versions={})
    d = Path(ex.jobs_dir) / job_id
    d.mkdir()
    (d / "job.json").write_text(json.dumps({"data_root": "/d", "models": {"svm": {}, "knn": {}},
                                            "results_db": str(store.path)}))
    (d / "status.json").write_text(json.dumps({"state": "running", "pid": gone.pid, "run_ids": [rid],
                                               "models": {"svm": {"state": "running"}, "knn": {"state": "queued"}}}))
    if cancel:
        (d / "cancel").touch()
    return rid


def test_reading_a_dead_workers_job_changes_nothing_until_it_is_reaped(tmp_path):
    ex, store = LocalProcessExecutor(tmp_path / "jobs"), ResultsStore(tmp_path / "r.sqlite")
    killed, cancelled = _dead_job(ex, "job-1", store), _dead_job(ex, "job-2", store, cancel=True)
    before = {f: f.read_bytes() for f in Path(ex.jobs_dir).rglob("*.json")}
    assert [j["state"] for j in ex.list()] == ["running", "running"] and ex.status("job-1")["state"] == "running"
    assert {f: f.read_bytes() for f in Path(ex.jobs_dir).rglob("*.json")} == before
    assert store.get_run(killed)["status"] == "running"

    assert ex.reap() == ["job-1", "job-2"]
    one, two = ex.status("job-1"), ex.status("job-2")
    assert one["state"] == "failed" and "stopped unexpectedly" in one["error"]
    assert {m: v["state"] for m, v in one["models"].items()} == {"svm": "failed", "knn": "failed"}
    assert two["state"] == "cancelled" and two["error"] is None and two["models"]["knn"]["state"] == "cancelled"
    assert store.get_run(killed)["status"] == "failed" and "killed" in store.get_run(killed)["error"]
    assert store.get_run(cancelled)["status"] == "cancelled"
    assert ex.reap() == []


@pytest.mark.slow
def test_cancel_escalates_to_sigterm_when_a_fold_runs_long(tmp_path, space):
    ex = LocalProcessExecutor(tmp_path / "jobs", cancel_grace_s=0.5)
    job_id = ex.submit(_job(space, {"random_forest": {"n_estimators": 20000, "n_jobs": 1}}))  # ~minutes a fold
    _wait_event(ex, job_id, "fold_start")
    pid = ex.status(job_id)["pid"]
    t0 = time.time()
    ex.cancel(job_id)
    _wait_gone(pid, job_id, timeout=20)  # the worker's watchdog interrupts the fold; nobody reads the status
    assert time.time() - t0 < 20
    st = ex.status(job_id)
    assert st["state"] == "cancelled" and st["models"]["random_forest"]["state"] == "cancelled", ex.log(job_id)
    assert "interrupting the fold" in ex.log(job_id)
    assert ResultsStore(space["db"]).get_run(st["run_ids"][0])["status"] == "cancelled"
    assert not [e for e in ex.events(job_id) if e["event"] == "fold_done"]


@pytest.mark.slow
def test_a_worker_deaf_to_sigterm_records_its_cancel_then_kills_itself(tmp_path):
    """The watchdog's last resort: a main thread that does not turn SIGTERM into a cancellation (here it ignores
    it) is ended with SIGKILL at 3 x the grace period, after the job's end and its open runs are written."""
    import subprocess
    import sys

    ex, store = LocalProcessExecutor(tmp_path / "jobs"), ResultsStore(tmp_path / "r.sqlite")
    rid = _dead_job(ex, "job-1", store)
    d = Path(ex.jobs_dir) / "job-1"
    script = ("import signal, sys, time; from pathlib import Path; from ser_core.jobs import _CancelWatchdog, _Worker\n"
              "w = _Worker(Path(sys.argv[1])); w.run_ids = [int(sys.argv[2])]\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); _CancelWatchdog(w, 0.2).start()\n"
              "(w.dir / 'cancel').touch(); time.sleep(30)\n")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", script, str(d), str(rid)], start_new_session=True, timeout=20,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL and time.time() - t0 < 10, proc.stderr
    st = ex.status("job-1")
    assert st["state"] == "cancelled" and st["models"]["svm"]["state"] == st["models"]["knn"]["state"] == "cancelled"
    assert [e["event"] for e in ex.events("job-1")] == ["job_cancelled"]
    assert store.get_run(rid)["status"] == "cancelled" and ex.reap() == []


def test_alive_tells_a_worker_from_a_reused_pid_and_a_dead_one():
    import subprocess
    import sys

    from ser_core.jobs import _alive

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "/jobs/job-123"])
    other = subprocess.Popen(["sleep", "30"])
    deadline = time.time() + 10  # just after exec the kernel may still show an empty command line
    while b"sleep" not in Path(f"/proc/{other.pid}/cmdline").read_bytes() and time.time() < deadline:
        time.sleep(0.05)
    try:
        assert _alive(worker.pid, "job-123")
        assert not _alive(other.pid, "job-123")  # a live process that is not this job's worker
    finally:
        worker.kill(), other.kill()
        worker.wait(), other.wait()
    assert not _alive(worker.pid, "job-123") and not _alive(None, "job-123")


@pytest.mark.slow
def test_a_cached_job_comes_with_its_own_model(tmp_path, space):
    """The Train page's path: every job saves a model of its own (never over another); a job is served from the
    store with that run's model while it exists, and trains again once the user deleted it."""
    from ser_core.saved import delete_user_model

    ex = LocalProcessExecutor(tmp_path / "jobs")
    own = {**space, "models": str(tmp_path / "models")}

    def run(seed):
        job_id = ex.submit(_job(own, {"svm": {}}, seed=seed))
        st = ex.wait(job_id, timeout=120)
        assert st["state"] == "done", ex.log(job_id)
        return st["models"]["svm"], ex.log(job_id)

    (first, _), (second, _) = run(5), run(6)
    assert first["saved_model"] != second["saved_model"]  # side by side
    (third, _) = run(5)
    assert third["cached"] and third["run_id"] == first["run_id"] and third["saved_model"] == first["saved_model"]
    delete_user_model(os.path.basename(first["saved_model"]), root=own["models"])
    (fourth, log) = run(5)
    assert not fourth["cached"] and fourth["run_id"] not in (first["run_id"], second["run_id"])
    assert f"Stored run {first['run_id']} has this configuration but no saved model of its own" in log
    card = json.load(open(os.path.join(fourth["saved_model"], "card.json")))
    assert (card["cv"]["run_id"], card["cv"]["seed"]) == (fourth["run_id"], 5)
    assert sorted(os.listdir(own["models"])) == sorted(
        [".ser-models.lock", *(os.path.basename(m["saved_model"]) for m in (second, fourth))])
