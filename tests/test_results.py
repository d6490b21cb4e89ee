import os
import socket
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ser_core.evaluation import compute_metrics, make_splitter, summarize
from ser_core.errors import ConfigError
from ser_core.results import STALE, ResultsStore, process_alive, process_started


def _start(store, **kw):
    base = dict(model="svm", params={"C": 1}, feature_set={"name": "x"}, dataset="ravdess", data_root="/d",
                data_fingerprint="fp", n_clips=10, n_speakers=2, split="speaker", splitter="S()", k=2, seed=0,
                speaker_dependent=False, options={}, config_hash="h1", versions={"numpy": "2"})
    base.update(kw)
    return store.start_run(**base)


def test_store_roundtrip_and_cache(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    rid = _start(store)
    m = compute_metrics(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])
    store.add_fold(rid, 0, metrics=m, n_train=5, n_test=3, test_speakers=["01"], train_time_s=1.0, latency_ms=2.0)
    assert store.find_cached("h1", "fp") is None  # running runs are not results
    store.finish_run(rid, summary=summarize([m]), labels=["a", "b"], confusion=m["confusion"], train_time_s=1.0,
                     latency_ms=2.0, model_size_bytes=100)
    hit = store.find_cached("h1", "fp")
    assert hit["id"] == rid and hit["folds"][0]["metrics"]["uar"] == pytest.approx(0.75)
    assert store.find_cached("h1", "other-data") is None
    rid2 = _start(store)  # a later identical run is a new row, never an overwrite
    assert rid2 != rid and store.get_run(rid)["status"] == "done"
    df = store.runs()
    assert list(df["id"]) == [rid] and df.loc[0, "uar_mean"] == pytest.approx(0.75)


def test_killed_writer_leaves_store_intact(tmp_path):
    db = tmp_path / "r.sqlite"
    ResultsStore(db)
    code = textwrap.dedent(f"""
        import os, signal
        from ser_core.results import ResultsStore
        s = ResultsStore({str(db)!r})
        rid = s.start_run(model="svm", params={{}}, feature_set={{}}, dataset="d", data_root=None,
                          data_fingerprint="fp", n_clips=1, n_speakers=1, split="speaker", splitter="S", k=2, seed=0,
                          speaker_dependent=False, options={{}}, config_hash="h", versions={{}})
        import sqlite3
        con = sqlite3.connect({str(db)!r}, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE runs SET status='done' WHERE id=?", (rid,))
        os.kill(os.getpid(), signal.SIGKILL)  # dies inside an open write transaction
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    store = ResultsStore(db)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    run = store.get_run(1)
    assert run["status"] == "failed"  # the uncommitted update was rolled back, and the run's process is gone
    assert run["error"] == STALE.format(pid=run["pid"]) and store.mark_interrupted() == 0


def _start_as(store, **process) -> int:
    """A run started by this process, then recorded as started by ``process`` (host, pid, process_start)."""
    rid = _start(store)
    with sqlite3.connect(store.path) as con:
        con.execute(f"UPDATE runs SET {', '.join(f'{k}=?' for k in process)} WHERE id=?", (*process.values(), rid))
    return rid


def test_a_run_whose_process_is_gone_is_marked_failed_at_the_next_open(tmp_path):
    """A run killed with -9 (or out of memory, or by a restart) no longer stays "running" forever: the next
    ResultsStore() of this host marks it failed with a sentence. A run whose process lives, one of another host,
    and one stored before processes were recorded are left alone; a pid reused by another process is not life."""
    store = ResultsStore(tmp_path / "r.sqlite")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = _start_as(store, pid=int(dead.stdout))
    alive = _start(store)  # this process
    me = store.get_run(alive)
    assert (me["host"], me["pid"], me["process_start"]) == (socket.gethostname(), os.getpid(),
                                                              process_started(os.getpid()))
    reused = _start_as(store, process_start=me["process_start"] - 1.0)  # this pid, another process's start
    elsewhere = _start_as(store, pid=int(dead.stdout), host="another-host")
    unknown = _start_as(store, pid=None, host=None, process_start=None)  # a database from before
    reopened = ResultsStore(store.path)
    status = {rid: reopened.get_run(rid)["status"] for rid in (gone, alive, reused, elsewhere, unknown)}
    assert status == {gone: "failed", alive: "running", reused: "failed", elsewhere: "running", unknown: "running"}
    assert reopened.get_run(gone)["error"] == STALE.format(pid=int(dead.stdout))
    assert reopened.fail_stale_runs() == []  # once
    assert process_alive(os.getpid(), process_started(os.getpid())) and not process_alive(int(dead.stdout))


def test_metrics_known_values():
    y_true = ["angry"] * 4 + ["sad"] * 2
    y_pred = ["angry", "angry", "angry", "sad", "sad", "angry"]
    m = compute_metrics(y_true, y_pred, ["angry", "sad"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["per_class_recall"] == {"angry": 0.75, "sad": 0.5}
    assert m["confusion"] == [[3, 1], [1, 1]]


def test_speaker_splitters_never_share_speakers():
    rng = np.random.default_rng(0)
    speakers = np.repeat([f"{i:02d}" for i in range(8)], 12)
    y = np.tile(["a", "b", "c"], 32)
    X = rng.normal(size=(len(y), 3))
    for split in ("speaker", "loso", "holdout"):
        splitter = make_splitter(split, 4, seed=1)
        folds = list(splitter.split(X, y, speakers))
        assert folds
        for tr, te in folds:
            assert not set(speakers[tr]) & set(speakers[te]), split
    random_folds = list(make_splitter("random", 4).split(X, y, speakers))
    assert any(set(speakers[tr]) & set(speakers[te]) for tr, te in random_folds)  # speaker-dependent
    with pytest.raises(ConfigError):
        make_splitter("bogus")
