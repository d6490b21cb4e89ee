"""The results store: every cross-validation run, kept in one SQLite database.

SQLite in WAL mode: readers (the leaderboard) never block the writer (a training job), and a killed run can
at worst leave its own row marked ``running``. Each run records the process that runs it (host, pid and the
process's start time); opening the store marks ``failed`` every ``running`` run of this host whose process is
gone (killed with -9, out of memory, a restart), with a sentence (``fail_stale_runs``). Rows are only ever
inserted or completed, never replaced, so later runs never overwrite earlier ones.
"""
from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .evaluation import CALIBRATION_METRICS, DIMENSION_METRICS  # runs() columns too; None for runs stored before

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,              -- running | done | failed | cancelled
    model TEXT NOT NULL,
    params TEXT NOT NULL,              -- JSON
    feature_set TEXT NOT NULL,         -- JSON of the FeatureSet config
    dataset TEXT NOT NULL,             -- corpus name
    data_root TEXT,
    data_fingerprint TEXT NOT NULL,
    n_clips INTEGER,
    n_speakers INTEGER,
    split TEXT NOT NULL,               -- speaker | loso | holdout | random
    splitter TEXT NOT NULL,            -- repr of the splitter
    k INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    speaker_dependent INTEGER NOT NULL,
    options TEXT NOT NULL,             -- JSON: augmentation, oversampling, speaker_norm ...
    config_hash TEXT NOT NULL,
    versions TEXT NOT NULL,            -- JSON
    summary TEXT,                      -- JSON: metric -> {mean, std}
    labels TEXT,                       -- JSON list
    confusion TEXT,                    -- JSON, summed over folds
    train_time_s REAL,
    latency_ms REAL,
    model_size_bytes INTEGER,
    saved_model TEXT,
    error TEXT,
    sweep TEXT,                        -- the id of the sweep whose trial it was (sweeps.id), or NULL
    host TEXT,                         -- the process that runs it: its host, pid and start (s after boot), so
    pid INTEGER,                       -- that a run whose process is gone is marked failed (fail_stale_runs);
    process_start REAL                 -- NULL: stored before processes were recorded
);
CREATE TABLE IF NOT EXISTS folds (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    fold INTEGER NOT NULL,
    metrics TEXT NOT NULL,             -- JSON
    n_train INTEGER, n_test INTEGER,
    test_speakers TEXT,                -- JSON list
    train_time_s REAL, latency_ms REAL,
    PRIMARY KEY (run_id, fold)
);
CREATE TABLE IF NOT EXISTS oof (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id),
    arrays BLOB NOT NULL               -- the run's out-of-fold predictions, an .npz file (see add_oof)
);
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,               -- sweep-<date>-<time>-<hex> (ser_core.sweep)
    created_at TEXT NOT NULL,
    finished_at TEXT,                  -- NULL: stopped before its end (cancelled, failed, killed)
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    data_fingerprint TEXT NOT NULL,
    space TEXT NOT NULL,               -- the search space, as ser_core.sweep.format_space writes it
    settings TEXT NOT NULL,            -- JSON: trials, folds, seed, fixed params, early_stop ...
    best_run INTEGER REFERENCES runs(id),
    saved_model TEXT
);
"""
MIGRATIONS = (  # (table, column, its definition) added to databases created before it existed
    ("runs", "sweep", "TEXT"), ("runs", "host", "TEXT"), ("runs", "pid", "INTEGER"), ("runs", "process_start", "REAL"),
)
INDEXES = """
CREATE INDEX IF NOT EXISTS runs_cache ON runs(config_hash, data_fingerprint, status);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""
STALE = "its process (pid {pid}) stopped before the run finished (killed, out of memory or a restart); train it again"

METRICS = ("accuracy", "weighted_precision", "weighted_recall", "uar", "macro_f1")

# Figures reported by the projects SER Studio grew from, on RAVDESS with random (speaker-DEPENDENT) splits. They
# were not measured here, under different protocols; the leaderboard shows them apart from the stored runs.
REFERENCE_RESULTS = (
    {"model": "CNN+LSTM", "dataset": "ravdess", "split": "random", "accuracy": 0.6389,
     "metric": "test accuracy", "note": "reported elsewhere, not measured here"},
    {"model": "VGG16 (fine-tuned)", "dataset": "ravdess", "split": "random", "accuracy": 0.792,
     "metric": "accuracy", "note": "reported elsewhere, not measured here"},
    {"model": "wav2vec2 + random forest", "dataset": "ravdess", "split": "random", "accuracy": 0.4861,
     "metric": "accuracy", "note": "reported elsewhere, not measured here"},
)


def _create_schema(con) -> None:
    """The tables and indexes, the columns added since a store was first written included."""
    con.executescript(SCHEMA)
    for table, column, definition in MIGRATIONS:
        if column not in {r["name"] for r in con.execute(f"PRAGMA table_info({table})")}:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    con.executescript(INDEXES)


def default_db_path() -> Path:
    return Path(os.environ.get("SER_RESULTS_DB", Path.home() / ".cache" / "ser_studio" / "results.sqlite"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultsStore:
    """``ResultsStore(path=None)``: open (and create) the database; ``None`` uses ``$SER_RESULTS_DB``. Opening it
    ends the runs of this host whose process is gone (``fail_stale_runs``). ``create=False`` (a public demo,
    which writes nothing): a database that does not exist is not created, and the store reads as empty."""

    def __init__(self, path=None, *, create: bool = True):
        self.path = Path(path) if path else default_db_path()
        self.absent = not create and not self.path.is_file()  # read as an empty store; nothing is written
        if self.absent:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            _create_schema(con)
        self.fail_stale_runs()

    @contextmanager
    def _connect(self):
        con = sqlite3.connect(":memory:" if self.absent else self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            if self.absent:  # a fresh empty database in memory for each connection: reads find nothing
                _create_schema(con)
            else:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
            yield con
        finally:
            con.close()

    @contextmanager
    def _tx(self):
        with self._connect() as con:
            for attempt in range(50):
                try:
                    con.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:  # locked by another writer
                    time.sleep(0.1)
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # -- writing -------------------------------------------------------------------------------------------
    def start_run(self, *, model, params, feature_set, dataset, data_root, data_fingerprint, n_clips,
                  n_speakers, split, splitter, k, seed, speaker_dependent, options, config_hash,
                  versions, sweep=None) -> int:
        """A new run, ``running``; sweep: the id of the sweep it is a trial of (``start_sweep``)."""
        with self._tx() as con:
            cur = con.execute(
                "INSERT INTO runs (created_at, status, model, params, feature_set, dataset, data_root,"
                " data_fingerprint, n_clips, n_speakers, split, splitter, k, seed, speaker_dependent, options,"
                " config_hash, versions, sweep, host, pid, process_start) VALUES (?, 'running', ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_now(), model, json.dumps(params, default=str), json.dumps(feature_set, default=str), dataset,
                 str(data_root) if data_root else None, data_fingerprint, n_clips, n_speakers, split, splitter,
                 k, seed, int(bool(speaker_dependent)), json.dumps(options, default=str), config_hash,
                 json.dumps(versions), sweep, socket.gethostname(), os.getpid(), process_started(os.getpid())),
            )
            return int(cur.lastrowid)

    def start_sweep(self, sweep_id: str, *, model, dataset, data_fingerprint, space, settings):
        """Record a hyperparameter sweep (``ser_core.sweep``) before its first trial; its trials are runs whose
        ``sweep`` is ``sweep_id``."""
        with self._tx() as con:
            con.execute("INSERT INTO sweeps (id, created_at, model, dataset, data_fingerprint, space, settings)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", (sweep_id, _now(), model, dataset, data_fingerprint, space,
                                                         json.dumps(settings, default=str)))

    def finish_sweep(self, sweep_id: str, *, best_run=None, saved_model=None):
        with self._tx() as con:
            con.execute("UPDATE sweeps SET finished_at=?, best_run=?, saved_model=? WHERE id=?",
                        (_now(), best_run, str(saved_model) if saved_model else None, sweep_id))

    def add_fold(self, run_id: int, fold: int, *, metrics, n_train, n_test, test_speakers, train_time_s,
                 latency_ms):
        with self._tx() as con:
            con.execute(
                "INSERT INTO folds VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, fold, json.dumps(metrics), n_train, n_test, json.dumps(list(test_speakers)),
                 train_time_s, latency_ms),
            )

    def update_fold_metrics(self, run_id: int, fold: int, metrics: dict):
        """Complete a fold's metrics with what needs every fold first (the cross-fitted calibration metrics)."""
        with self._tx() as con:
            con.execute("UPDATE folds SET metrics=? WHERE run_id=? AND fold=?", (json.dumps(metrics), run_id, fold))

    def finish_run(self, run_id: int, *, summary, labels, confusion, train_time_s, latency_ms,
                   model_size_bytes, saved_model=None):
        with self._tx() as con:
            con.execute(
                "UPDATE runs SET status='done', finished_at=?, summary=?, labels=?, confusion=?, train_time_s=?,"
                " latency_ms=?, model_size_bytes=?, saved_model=? WHERE id=?",
                (_now(), json.dumps(summary), json.dumps(list(labels)), json.dumps(confusion), train_time_s,
                 latency_ms, model_size_bytes, str(saved_model) if saved_model else None, run_id),
            )

    def add_oof(self, run_id: int, oof: dict):
        """Keep the run's out-of-fold predictions (``ser_core.evaluation._out_of_fold``: numpy arrays ``proba``,
        ``classes``, ``fold``, ``y``, ``paths`` and the clips' ``speaker``, ``gender``, ``intensity``), for
        confidence intervals, paired comparisons and breakdowns (``ser_core.stats``)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in oof.items()})
        with self._tx() as con:
            con.execute("INSERT INTO oof VALUES (?, ?)", (run_id, buf.getvalue()))

    def fail_run(self, run_id: int, error: str, status: str = "failed"):
        with self._tx() as con:
            con.execute("UPDATE runs SET status=?, finished_at=?, error=? WHERE id=? AND status='running'",
                        (status, _now(), error, run_id))

    def set_saved_model(self, run_id: int, path):
        with self._tx() as con:
            con.execute("UPDATE runs SET saved_model=? WHERE id=?", (str(path), run_id))

    def forget_saved_model(self, run_id: int, path):
        """Record that the model ``run_id`` saved at ``path`` is gone (another run's replaced it)."""
        with self._tx() as con:
            con.execute("UPDATE runs SET saved_model=NULL WHERE id=? AND saved_model=?", (run_id, str(path)))

    def mark_interrupted(self, run_ids=None, error="the worker stopped before the run finished") -> int:
        """Mark ``running`` rows (all, or ``run_ids``) as failed; returns how many changed."""
        with self._tx() as con:
            if run_ids is None:
                cur = con.execute("UPDATE runs SET status='failed', finished_at=?, error=? WHERE status='running'",
                                  (_now(), error))
            else:
                ids = list(run_ids)
                cur = con.execute(
                    f"UPDATE runs SET status='failed', finished_at=?, error=? WHERE status='running' AND id IN "
                    f"({','.join('?' * len(ids))})", (_now(), error, *ids))
            return cur.rowcount

    def fail_stale_runs(self) -> list[int]:
        """Mark ``failed`` every run still ``running`` whose process, on this host, is gone (or whose pid now
        belongs to another process), with the sentence ``STALE``; returns their ids. Runs of other hosts (a
        store on a shared disk) and runs stored before processes were recorded are left as they are."""
        with self._connect() as con:
            rows = con.execute("SELECT id, pid, process_start FROM runs WHERE status='running' AND host=? AND pid"
                               " IS NOT NULL", (socket.gethostname(),)).fetchall()
        stale = [r for r in rows if not process_alive(r["pid"], r["process_start"])]
        for r in stale:
            self.fail_run(r["id"], STALE.format(pid=r["pid"]))  # only while still running
        return [r["id"] for r in stale]

    # -- reading -------------------------------------------------------------------------------------------
    def get_run(self, run_id: int) -> dict | None:
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                return None
            run = _decode(dict(row))
            run["folds"] = [_decode(dict(r)) for r in
                            con.execute("SELECT * FROM folds WHERE run_id=? ORDER BY fold", (run_id,))]
            return run

    def oof(self, run_id: int) -> dict | None:
        """The arrays ``add_oof`` kept for the run, or None (a run stored before they were kept)."""
        with self._connect() as con:
            row = con.execute("SELECT arrays FROM oof WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row["arrays"]), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def find_cached(self, config_hash: str, data_fingerprint: str) -> dict | None:
        """The latest finished run with this exact configuration on this exact data, if any."""
        with self._connect() as con:
            row = con.execute(
                "SELECT id FROM runs WHERE config_hash=? AND data_fingerprint=? AND status='done'"
                " ORDER BY id DESC LIMIT 1", (config_hash, data_fingerprint)).fetchone()
        return self.get_run(row["id"]) if row else None

    def sweeps(self) -> pd.DataFrame:
        """One row per sweep (the ``sweeps`` table, ``settings`` decoded, newest first) with ``trials``: how many
        of its runs finished."""
        with self._connect() as con:
            rows = [dict(r) for r in con.execute(
                "SELECT s.*, (SELECT COUNT(*) FROM runs r WHERE r.sweep = s.id AND r.status = 'done') AS trials"
                " FROM sweeps s ORDER BY s.created_at DESC, s.id DESC")]
        for r in rows:
            r["settings"] = json.loads(r["settings"])
        return pd.DataFrame(rows, columns=SWEEP_COLUMNS)

    def runs(self, status: str | None = "done") -> pd.DataFrame:
        """One row per run with the summary metrics flattened (``uar_mean``, ``uar_std``, ...)."""
        with self._connect() as con:
            q = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY id"
            rows = [_decode(dict(r)) for r in con.execute(q, (status,) if status else ())]
        return runs_table(rows)


def process_started(pid: int) -> float | None:
    """When process ``pid`` started, in seconds after the machine booted (the kernel's clock ticks, which no
    change of the wall clock moves), from ``/proc``; None where that cannot be read (no ``/proc``: macOS; or no
    such process)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` of this host is alive (not a zombie) and, with ``started``
    (``process_started``), is still the process that started then, not another that got its pid since."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc: kill(0) is all there is
        return True
    now = process_started(pid)
    return state != "Z" and (started is None or now is None or abs(now - started) < 1e-6)


RUN_COLUMNS = ["id", "created_at", "status", "model", "dataset", "split", "k", "speaker_dependent",
               *[f"{m}_{s}" for m in (*METRICS, *CALIBRATION_METRICS, *DIMENSION_METRICS) for s in ("mean", "std")],
               "train_time_s", "latency_ms", "model_size_bytes", "n_clips", "n_speakers", "seed", "params",
               "feature_set", "options", "saved_model", "error", "config_hash", "data_fingerprint", "sweep"]
SWEEP_COLUMNS = ["id", "created_at", "finished_at", "model", "dataset", "data_fingerprint", "space", "settings",
                 "best_run", "saved_model", "trials"]


def runs_table(runs: list[dict]) -> pd.DataFrame:
    """Runs (as ``get_run`` returns them) -> one row each, ``RUN_COLUMNS``, the summary metrics flattened."""
    rows = []
    for run in runs:
        r = dict(run)
        for m in (*METRICS, *CALIBRATION_METRICS, *DIMENSION_METRICS):
            s = (r.get("summary") or {}).get(m) or {}
            r[f"{m}_mean"], r[f"{m}_std"] = s.get("mean"), s.get("std")
        rows.append(r)
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


_JSON_COLS = {"params", "feature_set", "options", "versions", "summary", "labels", "confusion", "metrics",
              "test_speakers"}


def _decode(row: dict) -> dict:
    for k in _JSON_COLS & row.keys():
        if row[k] is not None:
            row[k] = json.loads(row[k])
    if "speaker_dependent" in row:
        row["speaker_dependent"] = bool(row["speaker_dependent"])
    return row
