"""Background training jobs: a small executor interface and a local one that runs each job in its own process.

A :class:`Job` is one data source x one evaluation protocol x several models (``folds x models`` fits). An
:class:`Executor` takes jobs (``submit``), reports on them (``status``, ``list``) and stops them (``cancel``);
the same interface could be served by a distributed engine. :class:`LocalProcessExecutor` keeps every job as
files in a jobs folder (``$SER_JOBS_DIR``, default ``~/.cache/ser_studio/jobs``), so a browser reload or a new
app session finds them again::

    <jobs>/<job_id>/job.json       the Job (what to run)
                    status.json    state (queued | running | done | failed | cancelled), pid, run ids, per model
                    events.jsonl   progress events, one JSON object a line (fold start/done, metrics, ETA)
                    log.txt        the worker's stdout and stderr
                    cancel         present once a cancel was requested

The worker is a separate OS process (``python -m ser_core.jobs run <job_dir>``, detached in its own session),
never a thread or a fork of the app. Only one job runs at a time: a worker holds an exclusive ``flock`` on
``<jobs>/runner.lock`` while it runs; later jobs wait, first submitted first served.

Who changes what: reading (``status``, ``list``, ``events``, ``log``) never changes a job. The worker writes its
own job's state and enforces a cancel itself (it stops at the next check -- after each clip's features, between
folds, after the final fit, before the model is swapped in -- so a cancelled run saves no model; a step running
past the grace period is interrupted by its watchdog thread). A worker killed outright (SIGKILL, out of memory)
cannot record its end: :meth:`LocalProcessExecutor.reap` does (job failed, its unfinished runs in the results
store interrupted), called by ``wait`` and ``cancel`` and by the Train page on its refresh timer; and the next
``ResultsStore`` opened on this host fails its runs whose process is gone (``fail_stale_runs``). Unix only
(``fcntl``).

:class:`RayExecutor` runs the same jobs, files and queue with each (model, fold) a Ray task and every model of a
job at once (``ser_core.cluster``); ``make_executor`` picks one of the two by ``$SER_EXECUTOR``.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Protocol

from . import events
from .cluster import executor_name, ray_address
from .errors import ConfigError, SERError

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
LOCK_FILE = "runner.lock"
POLL_S = 0.5  # how often a queued worker looks at the lock and the cancel flag
CANCEL_GRACE_S = 10.0  # after a cancel request, how long a running worker may take to reach a fold boundary
REPO = Path(__file__).resolve().parents[1]


def default_jobs_dir() -> Path:
    return Path(os.environ.get("SER_JOBS_DIR", Path.home() / ".cache" / "ser_studio" / "jobs"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Job:
    """What to run: every model of ``models`` ({registry name: parameter overrides}) cross-validated on the
    corpus at ``data_root`` (and the corpora of ``more_data_roots``, read as one) with the same protocol.
    ``results_db``/``models_dir`` None: the defaults at submit
    time ($SER_RESULTS_DB, your models folder ``saved.user_models_dir()``), pinned into the job so the worker
    writes where the app reads. Each model is saved in ``models_dir`` under a name of its own
    (``saved.user_model_name``: ``<name_prefix><model>-<data>-run<id>``), never over another model, and never
    into the shipped models folder. With ``test_data_root`` every model is trained on the corpus at ``data_root``
    and tested on that one instead (split ``cross-corpus``, ``ser_core.cross_corpus``; no model is saved)."""

    data_root: str
    models: dict  # {"svm": {"C": 10}, "cnn": {}}; insertion order is the order of training
    corpus: str = "auto"
    more_data_roots: tuple = ()  # more corpora read with data_root as one (corpora.load_corpora; their own adapters)
    taxonomy: str | None = None  # how their labels are mapped (ser_core.taxonomy; None: native for one, shared for
    #                              several)
    feature_set: str | None = None  # None: each model's own
    folds: int = 4
    split: str = "speaker"  # speaker-grouped by default; "random" is speaker-dependent (optimistic)
    augment: tuple = ()
    speaker_norm: bool = False
    seed: int = 0
    force: bool = False  # retrain even when an identical run on identical data is stored
    save: bool = True  # train a final model on all clips and save it with its card
    name_prefix: str = ""  # saved model folder = <models_dir>/<name_prefix><model>-<data>-run<id>
    results_db: str | None = None
    models_dir: str | None = None
    data_roots: list | None = None  # folders the corpus may read (ser_core.roots); None: any (the command line)
    test_data_root: str | None = None  # another corpus: train on data_root, test on this (split cross-corpus)
    test_corpus: str = "auto"
    executor: str = "local"  # where the folds run: local (the worker, one after another) or ray (ser_core.cluster)
    ray_address: str | None = None  # executor ray: the cluster (ser_core.cluster.ray_address); None: a local Ray
    sweep: dict | None = None  # {"space", "trials", "early_stop", ...} of ser_core.sweep.SweepConfig: a sweep of
    # the job's one model instead of a run per model; the best configuration saved as above

    def run_configs(self) -> dict:
        """``{model: RunConfig}``: the run of every model, in training order."""
        from .evaluation import RunConfig

        return {name: RunConfig(model=name, params=dict(params), feature_set=self.feature_set, split=self.split,
                                folds=int(self.folds), seed=int(self.seed), augment=tuple(self.augment),
                                speaker_norm=bool(self.speaker_norm)) for name, params in self.models.items()}

    def check(self, corpus, test=None) -> "Job":
        """Refuse the job before it starts if any of its runs cannot work on ``corpus`` (and on the test corpus
        ``test`` of a cross-corpus job): ``check_run``'s or ``check_cross_corpus``'s sentence, naming the model when
        there are several; returns self."""
        from .cross_corpus import check_cross_corpus
        from .evaluation import check_run

        for name, cfg in self.run_configs().items():
            try:
                check_run(cfg, corpus) if test is None else check_cross_corpus(cfg, corpus, test)
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}" if len(self.models) > 1 else str(exc)) from None
        if self.sweep is not None:
            self.sweep_config().check(corpus)
        return self

    def sweep_config(self):
        """The ``ser_core.sweep.SweepConfig`` of a sweep job (``sweep`` set), refused when the job asks for what
        a sweep does not do."""
        from .sweep import SweepConfig

        if len(self.models) != 1:
            raise ConfigError("A sweep searches the parameters of one model; choose exactly one.")
        if self.split != "speaker" or self.augment or self.speaker_norm or self.test_data_root:
            raise ConfigError("A sweep scores its trials by speaker-grouped K-fold without augmentation or speaker "
                              "normalisation; choose the split 'speaker' and turn those off.")
        unknown = set(self.sweep) - {"space", "trials", "early_stop", "concurrency"}
        if unknown:
            raise ConfigError(f"Unknown sweep field(s) {', '.join(sorted(unknown))}.")
        (name, params), = self.models.items()
        return SweepConfig(name, params=dict(params), folds=int(self.folds), seed=int(self.seed),
                           feature_set=self.feature_set, **self.sweep)

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"Unknown job field(s) {', '.join(sorted(unknown))}.")
        return cls(**d)

    def validate(self) -> "Job":
        """Check names and options cheaply (no corpus read, no framework import); returns self."""
        from .augment import parse_augment
        from .features import get_feature_set
        from .models import get_spec
        from .splits import CROSS_CORPUS, get_split

        if not self.models:
            raise ConfigError("Choose at least one model to train.")
        for name, params in self.models.items():
            get_spec(name)
            if not isinstance(params, dict):
                raise ConfigError(f"Parameters of model '{name}' must be a dict of name -> value.")
        if self.feature_set:
            get_feature_set(self.feature_set)
        if get_split(self.split).uses_k and int(self.folds) < 2:
            raise ConfigError("K-fold needs at least 2 folds.")
        if bool(self.test_data_root) != (not get_split(self.split).within_corpus):
            raise ConfigError(f"A job tests on another corpus exactly when its split is '{CROSS_CORPUS}'; give both "
                              "or neither.")
        if self.test_data_root and not Path(self.test_data_root).expanduser().exists():
            raise ConfigError(f"'{self.test_data_root}' does not exist; choose a test corpus folder or CSV file.")
        self.augment = parse_augment(self.augment)
        if self.sweep is not None:
            self.sweep_config().check()
        for root in (self.data_root, *self.more_data_roots):
            if not Path(root).expanduser().exists():
                raise ConfigError(f"'{root}' does not exist; choose a corpus folder or CSV file.")
        if self.taxonomy is not None:
            from .taxonomy import get_taxonomy

            get_taxonomy(self.taxonomy)
        executor_name(self.executor)
        return self


class Executor(Protocol):
    """Where jobs run. ``status`` and ``list`` return plain dicts (the content of status.json plus ``id``) and
    change nothing; ``reap`` records the jobs whose worker died (returns their ids)."""

    def submit(self, job: Job) -> str: ...

    def status(self, job_id: str) -> dict: ...

    def cancel(self, job_id: str) -> dict: ...

    def list(self) -> list[dict]: ...

    def reap(self, job_id: str | None = None) -> list[str]: ...


# -- files of one job ------------------------------------------------------------------------------------------
def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def _write_json(path: Path, obj):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def _update_status(job_dir: Path, **fields) -> dict:
    """Read-modify-write status.json under a per-job lock (the worker, and ``reap`` once a worker is gone, write it)."""
    with open(job_dir / ".status.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        st = _read_json(job_dir / "status.json", {})
        for k, v in fields.items():
            if k == "models":  # merge per-model entries
                for name, m in v.items():
                    st.setdefault("models", {}).setdefault(name, {}).update(m)
            else:
                st[k] = v
        _write_json(job_dir / "status.json", st)
        return st


def read_events(job_dir, since: int = 0) -> list[dict]:
    """Events from line ``since`` on (a half-written last line is left for the next read)."""
    path = Path(job_dir) / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines()[since:]:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


_CHILDREN: dict[int, subprocess.Popen] = {}  # workers this process started: collected so they never linger as zombies


def _collect_children():
    """Collect the exit status of finished workers started here, so none lingers as a zombie."""
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)


def _alive(pid: int | None, job_id: str) -> bool:
    """True while ``pid`` is a live worker of ``job_id`` (not gone, not a zombie, not a reused pid)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):  # no /proc (macOS), or a read that raced with the process: trust kill(0)
        return True
    # a pid reused by another program: only a readable command line without the job id proves it (the kernel
    # can return an empty one for a live, busy process)
    return not cmdline or job_id in cmdline


def _end_job(job_dir: Path, state: str, error: str | None) -> dict:
    """Write a job's end: its unfinished models take ``state`` (failed | cancelled), then the job; returns the
    status."""
    st = _read_json(job_dir / "status.json", {})
    unfinished = {m: {"state": state} for m, v in st.get("models", {}).items() if v.get("state") in ACTIVE}
    return _update_status(job_dir, state=state, error=error, finished_at=_now(), models=unfinished)


def _end_runs(results_db, run_ids, cancelled: bool, error: str):
    """Close the job's runs still ``running`` in the results store: cancelled, or failed with ``error``."""
    if not run_ids:
        return
    from .results import ResultsStore

    store = ResultsStore(results_db)
    if cancelled:
        for rid in run_ids:
            store.fail_run(rid, "cancelled by the user", status="cancelled")
    else:
        store.mark_interrupted(run_ids, error=error)


# -- the local executor ----------------------------------------------------------------------------------------
class LocalProcessExecutor:
    """Runs jobs one at a time, each in a detached worker process; jobs live as folders under ``jobs_dir``.
    ``cancel_grace_s``: how long a cancelled worker may take to reach a fold boundary before it ends itself
    (written into each job's status at submit; the worker reads it)."""

    def __init__(self, jobs_dir=None, cancel_grace_s: float = CANCEL_GRACE_S):
        self.jobs_dir = Path(jobs_dir) if jobs_dir else default_jobs_dir()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.cancel_grace_s = cancel_grace_s

    def job_dir(self, job_id: str) -> Path:
        d = self.jobs_dir / job_id
        if not (d / "job.json").is_file():
            raise SERError(f"No job '{job_id}' in {self.jobs_dir}.")
        return d

    def submit(self, job: Job) -> str:
        """Validate ``job``, write it to its folder and start its worker; returns the job id at once."""
        from .results import default_db_path
        from .saved import check_writable, user_models_dir

        job.validate()
        job.data_root = str(Path(job.data_root).expanduser().resolve())
        job.more_data_roots = tuple(str(Path(r).expanduser().resolve()) for r in job.more_data_roots)
        job.results_db = str(Path(job.results_db or default_db_path()).resolve())
        job.models_dir = str(Path(job.models_dir or user_models_dir()).resolve())
        check_writable(job.models_dir)  # a job never writes into the shipped models folder
        job_id = f"{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}-{secrets.token_hex(2)}"  # sorts by time
        d = self.jobs_dir / job_id
        d.mkdir(parents=True)
        _write_json(d / "job.json", {**asdict(job), "augment": list(job.augment)})
        _update_status(d, state="queued", submitted_at=_now(), pid=None, cancel_grace_s=self.cancel_grace_s,
                       models={m: {"state": "queued"} for m in job.models})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        with open(d / "log.txt", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "ser_core.jobs", "run", str(d)], cwd=REPO, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # own process group: survives the app, killable
        _CHILDREN[proc.pid] = proc
        _update_status(d, pid=proc.pid)
        return job_id

    def status(self, job_id: str) -> dict:
        """status.json plus ``id`` and ``job``. Only reads: a job whose worker died stays ``running`` here until
        :meth:`reap` records it."""
        d = self.job_dir(job_id)
        return {"id": job_id, **_read_json(d / "status.json", {}), "job": _read_json(d / "job.json", {})}

    def reap(self, job_id: str | None = None) -> list[str]:
        """Record the jobs (``job_id``, or all) whose worker is gone while they are queued or running (killed
        outright, out of memory, never started): the job and its unfinished models end failed, or cancelled when
        a cancel was requested, and its unfinished runs in the results store likewise. Returns the ids it ended.
        :meth:`wait` and :meth:`cancel` call it; the Train page calls it on its refresh timer."""
        _collect_children()
        ids = [job_id] if job_id else [d.name for d in sorted(self.jobs_dir.iterdir()) if (d / "job.json").is_file()]
        gone = [i for i in ids if self._worker_gone(i)]
        if gone:
            time.sleep(0.5)  # declaring a job dead is final: look twice (the worker may have just finished)
        gone = [i for i in gone if self._worker_gone(i)]
        for i in gone:
            self._record_dead_worker(i)
        return gone

    def _worker_gone(self, job_id: str) -> bool:
        """True when the job is queued or running but its worker is not alive (and not just being started)."""
        d = self.job_dir(job_id)
        st = _read_json(d / "status.json", {})
        if st.get("state") not in ACTIVE or _alive(st.get("pid"), job_id):
            return False
        return st.get("pid") is not None or time.time() - os.path.getmtime(d / "status.json") > 30

    def _record_dead_worker(self, job_id: str):
        d = self.job_dir(job_id)
        st = _read_json(d / "status.json", {})
        pid, cancelled = st.get("pid"), (d / "cancel").exists()
        _end_runs(_read_json(d / "job.json", {}).get("results_db"), st.get("run_ids"), cancelled,
                  f"the worker of job {job_id} was killed before it finished")
        error = None if cancelled else "The worker process never started; see the log." if pid is None else (
            f"The worker process (pid {pid}) stopped unexpectedly (killed or out of memory); see the log.")
        _end_job(d, "cancelled" if cancelled else "failed", error)

    def cancel(self, job_id: str) -> dict:
        """Ask the job to stop: a queued job stops at once, a running one at its next check; a fold that
        runs past ``cancel_grace_s`` is interrupted by the worker itself (see ``_CancelWatchdog``). Returns the
        status."""
        d = self.job_dir(job_id)
        self.reap(job_id)
        if self.status(job_id).get("state") in ACTIVE and not (d / "cancel").exists():
            (d / "cancel").touch()  # its age is the worker's clock: a second cancel does not restart it
            _update_status(d, cancel_requested_at=time.time())
        return self.status(job_id)

    def list(self) -> list[dict]:
        """Every job's status, newest first (only reads, as :meth:`status`)."""
        return [self.status(d.name) for d in sorted(self.jobs_dir.iterdir(), reverse=True)
                if (d / "job.json").is_file()]

    # -- conveniences of the local executor (the page and the tests) -------------------------------------------
    def events(self, job_id: str, since: int = 0) -> list[dict]:
        return read_events(self.job_dir(job_id), since)

    def log(self, job_id: str, tail_chars: int = 20_000) -> str:
        path = self.job_dir(job_id) / "log.txt"
        return path.read_text(errors="replace")[-tail_chars:] if path.is_file() else ""

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.2) -> dict:
        """Block until the job is no longer queued or running (or ``timeout`` seconds); a worker that dies
        meanwhile is reaped. Returns the status."""
        end = None if timeout is None else time.time() + timeout
        while True:
            self.reap(job_id)
            st = self.status(job_id)
            if st.get("state") not in ACTIVE or (end is not None and time.time() > end):
                return st
            time.sleep(poll)


class RayExecutor(LocalProcessExecutor):
    """The local executor's jobs (files, a driver process per job, the queue, cancel), with every (model, fold)
    a Ray task on the cluster at ``address`` (``ser_core.cluster.ray_address``: ``$SER_RAY_ADDRESS``, or a local
    Ray started on demand), all of a job's models in flight at once (``_Worker.run_models``), and the features
    and final fits as Ray tasks too. The driver alone writes the results store and the saved models."""

    def __init__(self, jobs_dir=None, cancel_grace_s: float = CANCEL_GRACE_S, address: str | None = None):
        super().__init__(jobs_dir, cancel_grace_s)
        self.address = ray_address(address)

    def submit(self, job: Job) -> str:
        job.executor, job.ray_address = "ray", self.address
        return super().submit(job)


def make_executor(jobs_dir=None, name: str | None = None) -> Executor:
    """The executor ``name`` or ``$SER_EXECUTOR`` chooses (``ser_core.cluster.executor_name``)."""
    return RayExecutor(jobs_dir) if executor_name(name) == "ray" else LocalProcessExecutor(jobs_dir)


def progress(job_events: list[dict], now: float | None = None) -> dict:
    """Per-model progress from a job's events: ``{model: {"state", "folds", "done": [fold metrics...],
    "current_fold", "elapsed_s", "eta_s", "cached", "run_id", "summary", "error"}}`` in training order.
    ``now`` (a ``time.time()``): the elapsed time of a model still working counts up to it."""
    out: dict = {}
    for e in job_events:
        name = e.get("model")
        if name is None:
            continue
        m = out.setdefault(name, {"state": "queued", "folds": None, "done": [], "current_fold": None,
                                  "elapsed_s": 0.0, "eta_s": None, "cached": False, "run_id": None,
                                  "summary": None, "error": None, "started_t": e.get("t")})
        kind = e["event"]
        m["elapsed_s"] = e.get("model_elapsed_s", m["elapsed_s"])
        m["eta_s"] = e.get("eta_s", m["eta_s"])
        m["run_id"] = e.get("run_id") or m["run_id"]
        if kind in (events.MODEL_START, events.FEATURES):
            m["state"] = events.FEATURES if kind == events.FEATURES else "running"
        elif kind == events.FEATURES_PROGRESS:
            m["features_done"] = (e["done"], e["total"])
        elif kind == events.FOLD_START:
            m.update(state="running", folds=e["folds"], current_fold=e["fold"])
        elif kind == events.FOLD_DONE:
            m["done"].append({"fold": e["fold"], "test_speakers": e.get("test_speakers"),
                              **{k: e["metrics"][k] for k in ("accuracy", "uar", "macro_f1")},
                              "train_time_s": e.get("train_time_s"), **({"node": e["node"][:8]} if e.get("node")
                                                                        else {})})
            m["folds"] = e["folds"]
        elif kind == events.FINAL:
            m["state"] = events.FINAL
        elif kind == events.CACHED:
            m["cached"] = True
        elif kind == events.MODEL_DONE:
            m.update(state="done", summary=e.get("summary"), eta_s=0.0, current_fold=None)
        elif kind == events.MODEL_FAILED:
            m.update(state=e.get("state", "failed"), error=e.get("error"), eta_s=None, current_fold=None)
    if now is not None:
        for m in out.values():
            if m["state"] in (events.FEATURES, "running", events.FINAL) and m["started_t"]:
                m["elapsed_s"] = max(m["elapsed_s"], now - m["started_t"])
    return out


# -- the worker ------------------------------------------------------------------------------------------------
class _Worker:
    """One job in its own process: wait for the runner lock, load the corpora, run each model, record the end.
    The worker is the only writer of its job's state while it lives; a cancel is honoured at fold boundaries,
    and enforced by ``_CancelWatchdog`` when a fold runs long."""

    def __init__(self, job_dir: Path):
        self.dir = job_dir
        self.job = Job.from_dict(_read_json(job_dir / "job.json"))
        self.t0 = time.time()
        self.run_ids: list[int] = []
        self.ending = threading.Lock()  # held while the job's end is written (by the main thread or the watchdog)
        self.ended = False
        self.writing = threading.Lock()  # one thread at a time appends to the log and the events, whole lines
        self.stop = threading.Event()  # set by the main thread to stop the models' threads (see run_models)
        self.grace_s = CANCEL_GRACE_S  # the job's own, read from its status in run()

    def log(self, msg: str):
        with self.writing:
            print(f"{datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)

    def emit(self, event: dict):
        event = {"t": time.time(), "elapsed_s": round(time.time() - self.t0, 2), **event}
        line = json.dumps(event, default=str) + "\n"
        with self.writing, open(self.dir / "events.jsonl", "a") as fh:
            fh.write(line)

    def cancelled(self) -> bool:
        return (self.dir / "cancel").exists()

    def should_stop(self) -> bool:
        """A cancel was requested, or the main thread stops the models' threads."""
        return self.cancelled() or self.stop.is_set()

    def cancel_age(self) -> float | None:
        """Seconds since the cancel request, None without one."""
        try:
            return time.time() - os.path.getmtime(self.dir / "cancel")
        except FileNotFoundError:
            return None

    # -- the steps of a job --------------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM (the watchdog's, or anyone's) cancels cleanly
        st = _update_status(self.dir, pid=os.getpid())
        self.grace_s = float(st.get("cancel_grace_s", CANCEL_GRACE_S))
        _CancelWatchdog(self, self.grace_s).start()
        state, error, lock = "failed", None, None
        try:
            lock = self.wait_for_turn()
            self.start()
            errors = self.run_models()
            state, error = ("failed", "; ".join(errors)) if errors else ("done", None)
        except BaseException as exc:
            state, error = self.outcome(exc)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the bookkeeping finish
            self.end(state, error, close_runs=True)  # a run still open here (a model thread given up) ends too
            if lock is not None:
                lock.close()  # releases the flock: the next queued job starts
        return 0 if state == "done" else 1

    def _earlier_queued_alive(self) -> bool:
        for d in sorted(self.dir.parent.iterdir()):
            if d.name >= self.dir.name:
                break
            st = _read_json(d / "status.json", {})
            if st.get("state") == "queued" and _alive(st.get("pid"), d.name):
                return True
        return False

    def wait_for_turn(self):
        """Hold the runner lock (returns its open file); queued jobs go first-submitted first."""
        fh = open(self.dir.parent / LOCK_FILE, "a")
        announced = False
        while True:
            if self.cancelled():
                fh.close()
                raise KeyboardInterrupt("cancelled while queued")
            if not self._earlier_queued_alive():
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fh
                except BlockingIOError:
                    pass
            if not announced:
                self.log("queued: another job is running; waiting for it to finish")
                self.emit({"event": events.QUEUED})
                announced = True
            time.sleep(POLL_S)

    def start(self):
        self.t0 = time.time()
        _update_status(self.dir, state="running", started_at=_now())
        self.emit({"event": events.STARTED})
        os.nice(5)  # keep the app responsive on a small machine

    def outcome(self, exc: BaseException) -> tuple[str, str | None]:
        """(state, error) of a job that raised ``exc``: cancelled, or failed with ``describe(exc)``."""
        if isinstance(exc, KeyboardInterrupt):
            self.log("cancelled")
            return "cancelled", None
        msg = self.describe(exc)
        self.log(f"error: {msg}")
        return "failed", msg

    def describe(self, exc: BaseException) -> str:
        """The sentence of an error: a user's mistake (``SERError``) says what to change; a bug is one line, with
        its traceback in the log."""
        if isinstance(exc, SERError):
            return str(exc)
        self.log(traceback.format_exc())
        return crash_message(exc)

    def end(self, state: str, error: str | None, close_runs: bool = False) -> bool:
        """Write the job's end once (unfinished models, state, last event, log line), and with ``close_runs`` its
        runs still open in the store; False when it was written already."""
        with self.ending:
            if self.ended:
                return False
            if close_runs:
                _end_runs(self.job.results_db, self.run_ids, state == "cancelled", f"the worker of job "
                          f"{self.dir.name} ended before the run finished")
            _end_job(self.dir, state, error)
            self.emit({"event": events.job_finished(state), "error": error})
            self.log(f"job {state}" + (f": {error}" if error else ""))
            self.ended = True
            return True

    # -- the models ----------------------------------------------------------------------------------------------
    def run_models(self) -> list[str]:
        """Train and evaluate every model of the job; returns the failures (``"<model>: <sentence>"``). One
        model's failure does not stop the others; a cancel does.

        With the local executor (and for a cross-corpus job, which trains in this process) the models run one
        after another. On Ray each model's run has a thread of its own, all started at once, so that every
        (model, fold) of the job is in flight together rather than one model's K folds: the threads only wait
        on Ray tasks (features, folds and the final fit all run on the cluster, ``cluster.RayRunner``) and write
        -- the results store (a connection per call), status.json (``_update_status``: an flock per call, which
        excludes threads too), the events and the log (whole lines under ``self.writing``). Signals reach the
        main thread only: it sets ``self.stop``, which the threads' runs poll (``should_stop``)."""
        from .results import ResultsStore

        corpus, test = self.load_corpora()
        self.runner = self.connect()
        store = ResultsStore(self.job.results_db)
        if self.job.sweep is not None:
            return self.run_sweep(corpus, store)
        runs = {name: partial(self.run_model, name, cfg, corpus, test, store)
                for name, cfg in self.job.run_configs().items()}
        if self.runner is None or test is not None:
            errors = []
            for name, run in runs.items():
                if self.cancelled():
                    raise KeyboardInterrupt("cancelled")
                self.model_started(name)
                errors.append(run())
        else:
            for name in runs:  # in the job's order: the Train page lists the models as they started
                self.model_started(name)
            errors = self.in_threads(list(runs.values()))
        return [e for e in errors if e]

    def run_model(self, name: str, cfg, corpus, test, store) -> str | None:
        """One model's run, started already (``model_started``), to its end in the status and the events;
        returns its failure (``"<model>: <sentence>"``) or None, and re-raises a cancel."""
        try:
            res = self.evaluate(name, cfg, corpus, test, store)
        except KeyboardInterrupt:
            self.model_ended(name, "cancelled", "cancelled")
            raise
        except Exception as exc:
            return f"{name}: {self.model_ended(name, 'failed', self.describe(exc))}"
        self.model_done(name, res)
        return None

    def in_threads(self, runs: list) -> list:
        """Call every one of ``runs`` at once, each in a thread of its own; returns what each returned, in order.
        A signal to this thread (a cancel's SIGTERM) stops the others (``self.stop``) and is re-raised once they
        have ended, or after the job's cancel grace; a thread's own cancel or crash is re-raised here."""
        outcomes: list = [None] * len(runs)

        def call(i):
            try:
                outcomes[i] = runs[i]()
            except BaseException as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=call, args=(i,), name=f"model-{i}", daemon=True) for i in range(len(runs))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(POLL_S)
        except KeyboardInterrupt:
            self.stop.set()
            deadline = time.time() + self.grace_s
            for t in threads:
                t.join(max(0.0, deadline - time.time()))
            raise
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    def load_corpora(self):
        """The corpus to train on and the one to test on (None but for a cross-corpus job), checked against every
        run of the job: an impossible choice stops the job before any model trains."""
        from .corpora import load_corpora

        job = self.job
        roots = [job.data_root, *job.more_data_roots]
        self.log(f"loading the corpus at {', '.join(roots)}")
        corpus = load_corpora(roots, corpus=[job.corpus] + ["auto"] * len(job.more_data_roots),
                              roots=job.data_roots, taxonomy=job.taxonomy)
        self.log(f"{corpus.name}: {len(corpus.manifest)} clips, {corpus.manifest['speaker'].nunique()} speakers"
                 + (f", labels by the {corpus.taxonomy} taxonomy" if corpus.parts else ""))
        test = None
        if job.test_data_root:
            self.log(f"loading the test corpus at {job.test_data_root}")
            test = load_corpora([job.test_data_root], corpus=job.test_corpus, roots=job.data_roots,
                                taxonomy=corpus.taxonomy)
        job.check(corpus, test)
        return corpus, test

    def connect(self):
        """The folds runner of the job's executor (None: in this process), after recording where the folds run
        (the executor, its address, the cluster's nodes, CPUs and GPUs) in the status and the log. A sweep's
        trials always run on Ray (Tune), on the local executor too: its job says so."""
        from . import cluster

        executor = "ray" if self.job.sweep is not None else self.job.executor
        runner = cluster.folds_runner(executor, self.job.ray_address)
        where = cluster.describe(executor, self.job.ray_address)
        _update_status(self.dir, **where)
        self.log(cluster.summary_line(where))
        return runner

    def save_to(self, name: str, corpus):
        """Where the model's final fit goes: a callable that names a new folder of its own in the job's models
        folder (``saved.user_model_path``), or None when the job saves nothing."""
        from .saved import data_label, user_model_path

        job = self.job
        return partial(user_model_path, job.name_prefix + name, data_label(corpus.name, corpus.root),
                       root=job.models_dir) if job.save else None

    def evaluate(self, name: str, cfg, corpus, test, store):
        """One model's run: cross-validation on ``corpus``, or trained on it and tested on ``test``."""
        from .cross_corpus import cross_corpus
        from .evaluation import cross_validate

        use_cache, progress_cb = not self.job.force, self._progress(name, self.job)
        if test is not None:
            return cross_corpus(cfg, corpus, test, store=store, use_cache=use_cache, progress=progress_cb)
        return cross_validate(cfg, corpus, store=store, use_cache=use_cache, progress=progress_cb,
                              save_to=self.save_to(name, corpus), should_stop=self.should_stop,
                              folds_runner=self.runner)

    def model_started(self, name: str):
        params = self.job.models[name]
        _update_status(self.dir, models={name: {"state": "running"}})
        self.emit({"event": events.MODEL_START, "model": name, "params": params})
        self.log(f"[{name}] start ({self.job.folds}-fold, split {self.job.split}, params {json.dumps(params)})")

    def model_ended(self, name: str, state: str, msg: str) -> str:
        """Record a model that ended ``state`` (failed | cancelled) with the sentence ``msg``; returns ``msg``."""
        if state == "failed":
            self.log(f"[{name}] failed: {msg}")
        _update_status(self.dir, models={name: {"state": state, **({"error": msg} if state == "failed" else {})}})
        self.emit({"event": events.MODEL_FAILED, "model": name, "state": state, "error": msg})
        return msg

    def model_done(self, name: str, res):
        s = res.summary
        _update_status(self.dir, models={name: {"state": "done", "run_id": res.run_id, "cached": res.cached,
                                                "saved_model": res.saved_model}})
        self.emit({"event": events.MODEL_DONE, "model": name, "run_id": res.run_id, "cached": res.cached,
                   "saved_model": res.saved_model,
                   "summary": {k: s[k] for k in ("accuracy", "uar", "macro_f1") if k in s}})
        self.log(f"[{name}] {'cached result of run' if res.cached else 'run'} {res.run_id}: UAR "
                 f"{s['uar']['mean']:.3f} ± {s['uar']['std']:.3f}, accuracy {s['accuracy']['mean']:.3f}"
                 + (f"; saved to {res.saved_model}" if res.saved_model else ""))

    def record_run_id(self, name: str, run_id):
        with self.writing:  # models' threads: the list in status.json grows, never loses an id
            if run_id is not None and run_id not in self.run_ids:
                self.run_ids.append(run_id)
                _update_status(self.dir, run_ids=self.run_ids, models={name: {"run_id": run_id}})

    def run_sweep(self, corpus, store) -> list[str]:
        """The job's sweep (``ser_core.sweep.run_sweep``): its events into events.jsonl with the model's name, a
        log line per trial, Ray Tune's folders inside the job's; a cancel stops every trial."""
        from .sweep import format_params, run_sweep, trial_outcome

        job, name = self.job, next(iter(self.job.models))
        _update_status(self.dir, models={name: {"state": "running"}})
        self.log(f"[{name}] sweep of {job.sweep.get('space')}: {job.sweep.get('trials')} trials, {job.folds}-fold")

        def progress(e: dict):
            if e["event"] == events.TRIAL_DONE:
                self.log(f"[{name}] trial {e['trial']}: {format_params(e['params'])}: {trial_outcome(e, job.folds)}")
            self.emit({**e, "model": name})

        res = run_sweep(job.sweep_config(), corpus, store=store, save_to=self.save_to(name, corpus),
                        progress=progress, should_stop=self.cancelled, storage_path=self.dir / "tune")
        best = res.best or {}
        _update_status(self.dir, sweep_id=res.sweep_id, models={name: {
            "state": "done" if best else "failed", "run_id": best.get("run_id"), "saved_model": res.saved_model}})
        self.log(f"[{name}] sweep {res.sweep_id} done in {res.wall_s:.0f} s" + (
            f": best UAR {best['uar']['mean']:.3f} ({json.dumps(best['params'])}), run {best['run_id']}" if best
            else ": no trial finished"))
        return [] if best else [f"{name}: no trial of the sweep finished; see the log"]

    def _progress(self, name: str, job: Job):
        """The run's progress callback: records run ids, adds the model and its timing (``_FoldClock``), logs a
        line (``_LOG_LINES``) and writes the event (fold metrics without the confusion matrix, which stays in the
        store)."""
        clock = _FoldClock(extra_fits=1 if job.save else 0)  # the final model on all clips counts as a fold

        def cb(e: dict):
            self.record_run_id(name, e.get("run_id"))
            extra = {"model": name, **clock.tick(e)}
            line = _LOG_LINES.get(e["event"])
            if line:
                self.log(f"[{name}] {line(e, extra)}")
            if e["event"] == events.FOLD_DONE:
                e = {**e, "metrics": {k: v for k, v in e["metrics"].items() if k != "confusion"}}
            self.emit({**e, **extra})

        return cb


class _FoldClock:
    """A model's timing from its run's events: elapsed time, each fold's duration, and the remaining-time estimate
    (mean fold duration x (folds left + ``extra_fits``))."""

    def __init__(self, extra_fits: int = 0):
        self.t0 = self.fold_t0 = time.time()
        self.durations: list[float] = []
        self.extra_fits = extra_fits

    def tick(self, e: dict) -> dict:
        now = time.time()
        out = {"model_elapsed_s": round(now - self.t0, 2)}
        if e["event"] == events.FOLD_START:
            self.fold_t0 = now
        elif e["event"] == events.FOLD_DONE:  # the fold's own time where its runner measured it (Ray: in its task,
            self.durations.append(e.get("fold_time_s") or now - self.fold_t0)  # the folds run side by side)
            left = e["folds"] - len(self.durations) + self.extra_fits
            out.update(eta_s=round(sum(self.durations) / len(self.durations) * left, 1),
                       fold_s=round(self.durations[-1], 2))
        return out


_LOG_LINES = {  # event -> its line in the job log, from the event and the worker's timing fields
    events.FOLD_START: lambda e, x: f"fold {e['fold'] + 1}/{e['folds']} started",
    events.FOLD_DONE: lambda e, x: (f"fold {e['fold'] + 1}/{e['folds']}: UAR {e['metrics']['uar']:.3f}, accuracy "
                                    f"{e['metrics']['accuracy']:.3f} ({x['fold_s']:.1f} s; about {x['eta_s']:.0f} s "
                                    "left)"),
    events.FEATURES: lambda e, x: f"computing features '{e['feature_set']}' for {e['n']} clips",
    events.FINAL: lambda e, x: "training the final model on all clips",
    events.CACHED: lambda e, x: (f"identical configuration on identical data: reusing stored run {e['run_id']} "
                                 "(tick 'force' to retrain)"),
    events.CACHED_WITHOUT_MODEL: lambda e, x: e["message"],
    events.FEATURES_NOT_SHARED: lambda e, x: e["message"],
    events.LABELS: lambda e, x: e["message"],
}


class _CancelWatchdog(threading.Thread):
    """Enforces a cancel that the worker's main thread does not reach at a fold boundary: ``grace_s`` after the
    request it interrupts the fold (SIGTERM to the worker's process group, which the main thread turns into a clean
    cancellation); a worker still running at 3 x ``grace_s`` has its end written here, then is killed (SIGKILL).
    A main thread that never releases the GIL stops this thread too; such a worker, once killed by someone, is
    recorded by ``LocalProcessExecutor.reap``."""

    def __init__(self, worker: _Worker, grace_s: float):
        super().__init__(name="cancel-watchdog", daemon=True)
        self.worker, self.grace_s = worker, grace_s

    def run(self):
        interrupted = False
        while not self.worker.ended:
            age = self.worker.cancel_age()
            if age is not None and age > 3 * self.grace_s:
                if self.worker.end("cancelled", None, close_runs=True):
                    _signal_own_group(signal.SIGKILL)
                return
            if age is not None and age > self.grace_s and not interrupted:
                self.worker.log(f"the cancel was not reached within {self.grace_s:g} s: interrupting the fold")
                _signal_own_group(signal.SIGTERM)
                interrupted = True
            time.sleep(min(POLL_S, self.grace_s / 4))


def _signal_own_group(sig: int):
    """Signal this worker and its children (its own process group, see ``submit``); only itself otherwise."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), sig)
    else:
        os.kill(os.getpid(), sig)


def crash_message(exc: BaseException) -> str:
    """What a job says of an error that is no user mistake (a bug): one short line; the traceback is in the
    log."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"unexpected error ({type(exc).__name__}: {first[:160]}); the log has the details"


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m ser_core.jobs run <job_dir>", file=sys.stderr)
        return 2
    return _Worker(Path(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main())
