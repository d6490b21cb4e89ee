"""The Ray executor on a real two-node Ray cluster started on this machine (a head and a second node, 1 CPU each):
the same numbers as the local executor, folds on both nodes, a killed worker process or node retried, cancel,
the command line, a job's models at once, and features computed by tasks into the cache (and what comes back
when the nodes do not share its path). The cluster is this module's own (its own ports and temp folder; never ``ray stop``, never
``address="auto"``), stopped at the end."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, ray_cluster, symlink_actors
from test_jobs import _wait_event
from ser_core import cluster
from ser_core.errors import ConfigError
from ser_core.evaluation import RunConfig, cross_validate
from ser_core.jobs import Job, LocalProcessExecutor, RayExecutor, make_executor, progress
from ser_core.results import ResultsStore

SLOW_RF = {"n_estimators": 600, "n_jobs": 1}  # about a second a fold: time to kill its worker


def test_the_executor_is_chosen_by_its_name_and_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("SER_EXECUTOR", "ray")
    assert type(make_executor(tmp_path)) is RayExecutor
    monkeypatch.delenv("SER_EXECUTOR")
    assert type(make_executor(tmp_path)) is LocalProcessExecutor and cluster.folds_runner() is None
    with pytest.raises(ConfigError, match="Unknown executor 'spark'.*local, ray"):
        Job(data_root=str(tmp_path), models={"svm": {}}, executor="spark").validate()
    assert [cluster.gpus_per_fold(m, g) for m, g in (("cnn", 1), ("fcnn_torch", 2), ("svm", 1), ("cnn", 0))] == \
        [1, 1, 0, 0]
    assert cluster.summary_line({"executor": "ray", "address": "ray://h:10001", "cluster": {
        "nodes": [{"alive": True}, {"alive": True}, {"alive": False}], "cpus": 4.0, "gpus": 0.0}}) == \
        "executor ray at ray://h:10001: 2 nodes, 4 CPUs, 0 GPUs"


@pytest.fixture(scope="module")
def data(shared_ravdess, tmp_path_factory):
    """Every other clip of four actors: 120 clips, 30 a speaker."""
    root = tmp_path_factory.mktemp("ray-data")
    symlink_actors(shared_ravdess, root / "full", ("01", "02", "03", "04"))
    for d in (root / "full").iterdir():  # keep every other clip (all emotions, fewer repetitions)
        for f in sorted(d.iterdir())[1::2]:
            f.unlink()
    from ser_core.corpora import load_corpus

    return load_corpus(root / "full")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a second node on this machine; this process connected to it as a driver. Yields the
    ``ray_cluster`` dict plus ``nodes`` (the two node ids) and ``head_node`` (the head's)."""
    temp = Path(tempfile.mkdtemp(prefix="ser-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    with pytest.MonkeyPatch.context() as mp, ray_cluster(temp) as c:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # this driver and the job workers it starts
        ray = cluster.connect(c["address"])
        deadline = time.time() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.time() < deadline, "the second Ray node did not join"
            time.sleep(0.2)
        try:
            alive = [n for n in ray.nodes() if n["Alive"]]
            yield {**c, "nodes": {n["NodeID"] for n in alive},
                   "head_node": next(n["NodeID"] for n in alive if "worker_node_0" not in n["Resources"])}
        finally:
            cluster.disconnect()
    shutil.rmtree(temp, ignore_errors=True)


def _fold_rows(store, run_id) -> list[dict]:
    run = store.get_run(run_id)
    assert run["status"] == "done", run.get("error")
    return [{"fold": f["fold"], "test_speakers": f["test_speakers"], "n_test": f["n_test"], **f["metrics"]}
            for f in run["folds"]]


def _assert_same_numbers(a: list[dict], b: list[dict]):
    assert [r["fold"] for r in a] == [r["fold"] for r in b] and a
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys() and ra["test_speakers"] == rb["test_speakers"]  # the same fold assignment
        for k, v in ra.items():
            if isinstance(v, float):
                assert v == pytest.approx(rb[k], abs=1e-9), k
            else:
                assert v == rb[k], k


@pytest.mark.slow
def test_ray_stores_the_local_numbers_with_folds_on_both_nodes(two_nodes, data, tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    cfg = RunConfig("svm", folds=4, seed=3)
    local = cross_validate(cfg, data, store=store, use_cache=False)
    on_ray = cross_validate(cfg, data, store=store, use_cache=False, folds_runner=cluster.ray_folds)
    assert on_ray.run_id != local.run_id
    _assert_same_numbers(_fold_rows(store, local.run_id), _fold_rows(store, on_ray.run_id))
    for k in ("accuracy", "uar", "macro_f1", "ece"):
        assert on_ray.summary[k]["mean"] == pytest.approx(local.summary[k]["mean"], abs=1e-9)
    np.testing.assert_array_equal(on_ray.oof["fold"], local.oof["fold"])
    np.testing.assert_allclose(on_ray.oof["proba"], local.oof["proba"], rtol=0, atol=1e-9)
    assert {f["node"] for f in on_ray.folds} == two_nodes["nodes"]  # both nodes ran folds
    assert all("node" not in f for f in local.folds)


@pytest.mark.slow
def test_a_models_own_error_on_ray_is_the_one_it_raises_locally(two_nodes, data, tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    cfg = RunConfig("svm", params={"C": -1.0}, folds=2)
    with pytest.raises(ValueError, match="'C' parameter") as local:
        cross_validate(cfg, data)
    with pytest.raises(type(local.value), match="'C' parameter"):  # not a RayTaskError with a traceback in it
        cross_validate(cfg, data, store=store, folds_runner=cluster.ray_folds)
    (run,) = store.runs(status="failed").to_dict("records")
    assert "'C' parameter" in run["error"]


def _fold_task_pids(node) -> list[int]:
    """Processes of ``node`` (a ``ray start`` Popen: its process tree) running a fold task now (Ray titles a
    worker ``ray::<function>`` while it runs one)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            children.setdefault(int(rest.rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [node.pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::fold_task"):
                found.append(pid)
        except OSError:
            pass
    return found


def _kill_first_fold_task(nodes, killed: list, timeout: float = 60):
    """SIGKILL the first worker process seen running a fold task on any of ``nodes``; its pid into ``killed``."""
    deadline = time.time() + timeout
    while time.time() < deadline and not killed:
        for node in nodes:
            for pid in _fold_task_pids(node):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def rf_local(data, tmp_path_factory):
    """The slow random forest's folds, run locally: what every Ray run of it must store."""
    store = ResultsStore(tmp_path_factory.mktemp("rf") / "results.sqlite")
    res = cross_validate(RunConfig("random_forest", params=SLOW_RF, folds=2, seed=1), data, store=store)
    return _fold_rows(store, res.run_id)


@pytest.mark.slow
def test_a_killed_worker_process_is_retried_and_the_run_keeps_its_numbers(two_nodes, data, rf_local, tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_fold_task, args=([two_nodes["head"], *two_nodes["workers"]],
                                                                  killed))
    killer.start()
    res = cross_validate(RunConfig("random_forest", params=SLOW_RF, folds=2, seed=1), data, store=store,
                         folds_runner=cluster.ray_folds)
    killer.join()
    assert killed, "no fold task was seen running"
    _assert_same_numbers(_fold_rows(store, res.run_id), rf_local)


@pytest.mark.slow
def test_the_command_line_obeys_ser_executor_through_ray_client(two_nodes, data, tmp_path):
    from test_cli import run_cli

    proc = run_cli("train", "--data", data.root, "--models", "svm", "--folds", 4, "--seed", 2, "--json",
                   "--no-save", "--db", tmp_path / "results.sqlite",
                   env={"SER_EXECUTOR": "ray", "SER_RAY_ADDRESS": two_nodes["client_address"]})  # Ray Client
    assert "executor ray at" in proc.stderr and "2 nodes, 2 CPUs" in proc.stderr
    on_ray = json.loads(proc.stdout)[0]
    local = cross_validate(RunConfig("svm", folds=4, seed=2), data).summary  # what `train` prints without it
    for k in ("uar", "accuracy", "macro_f1"):
        for stat in ("mean", "std"):
            assert on_ray[k][stat] == pytest.approx(local[k][stat], abs=1e-9)


def _job(data, tmp_path, **kw):
    return Job(data_root=str(data.root), models={"random_forest": SLOW_RF}, folds=2, seed=1, force=True,
               results_db=str(tmp_path / "results.sqlite"), models_dir=str(tmp_path / "models"), **kw)


@pytest.mark.slow
def test_a_ray_job_cancels_its_running_tasks(two_nodes, data, tmp_path):
    ex = RayExecutor(tmp_path / "jobs", address=two_nodes["address"])
    job_id = ex.submit(_job(data, tmp_path, save=False))
    _wait_event(ex, job_id, "fold_start")
    deadline = time.time() + 30
    while not any(_fold_task_pids(n) for n in (two_nodes["head"], *two_nodes["workers"])):
        assert time.time() < deadline, ex.log(job_id)
        time.sleep(0.05)
    ex.cancel(job_id)
    st = ex.wait(job_id, timeout=20)
    assert st["state"] == "cancelled", ex.log(job_id)
    assert ResultsStore(tmp_path / "results.sqlite").get_run(st["run_ids"][0])["status"] == "cancelled"
    deadline = time.time() + 10  # the tasks were cancelled, not left to finish
    while any(_fold_task_pids(n) for n in (two_nodes["head"], *two_nodes["workers"])):
        assert time.time() < deadline, "fold tasks still running after the job was cancelled"
        time.sleep(0.1)


def _in_flight(job_events, model) -> list[tuple[float, float]]:
    """``(submitted, done)`` wall clock of each fold task of ``model``, from the job's events. Whether two tasks in
    flight also run at the same moment is up to Ray's scheduler (a fold of milliseconds may run while another
    model's waits for a CPU), so the job's promise is the one tested: no model waits for another's folds."""
    start = {e["fold"]: e["t"] for e in job_events if e["event"] == "fold_start" and e["model"] == model}
    return [(start[e["fold"]], e["t"]) for e in job_events if e["event"] == "fold_done" and e["model"] == model]


@pytest.mark.slow
def test_a_ray_job_runs_its_models_at_once_and_stores_the_local_numbers(two_nodes, data, tmp_path):
    """Two models' folds are in flight at the same time; each stores the local executor's numbers; a third model's own
    error fails that model only; the final fits, Ray tasks, are saved by the driver."""
    from ser_core.features import compute_files
    from ser_core.saved import load_trained

    models = {"svm": {}, "random_forest": SLOW_RF}
    store = ResultsStore(tmp_path / "results.sqlite")
    local = {m: cross_validate(RunConfig(m, params=p, folds=3, seed=1), data, store=store,
                               save_to=tmp_path / "local" / m) for m, p in models.items()}
    ex = RayExecutor(tmp_path / "jobs", address=two_nodes["address"])
    broken = {"decision_tree": {"max_depth": -1}}  # fails in its folds: the other models go on
    job_id = ex.submit(Job(data_root=str(data.root), models={**models, **broken}, folds=3, seed=1, force=True,
                           results_db=str(store.path), models_dir=str(tmp_path / "models")))
    st = ex.wait(job_id, timeout=120)
    assert st["state"] == "failed" and st["error"].startswith("decision_tree: ") and "max_depth" in st["error"]
    assert [st["models"][m]["state"] for m in (*models, *broken)] == ["done", "done", "failed"], ex.log(job_id)
    job_events = ex.events(job_id)
    assert any(a0 < b1 and b0 < a1 for a0, a1 in _in_flight(job_events, "svm")
               for b0, b1 in _in_flight(job_events, "random_forest")), "one model's folds waited for the other's"
    for m in models:
        _assert_same_numbers(_fold_rows(store, st["models"][m]["run_id"]), _fold_rows(store, local[m].run_id))
    # the final svm was trained by a Ray task and saved by the driver: it answers as the one trained here
    X = compute_files(data.manifest["path"].tolist()[:30], "rich", progress=False)
    (on_ray, card), (here, _) = load_trained(st["models"]["svm"]["saved_model"]), load_trained(local["svm"].saved_model)
    np.testing.assert_allclose(on_ray.predict_proba(X), here.predict_proba(X), rtol=0, atol=1e-9)
    assert card["cv"]["run_id"] == st["models"]["svm"]["run_id"] and card["final_train_time_s"] > 0


def _not_in_the_driver(*args, **kwargs):
    raise AssertionError("the driver computed a clip's features")


@pytest.mark.slow
def test_ray_tasks_compute_the_features_into_the_cache(two_nodes, data, tmp_path, monkeypatch):
    from ser_core import features

    cfg = RunConfig("svm", folds=4, seed=3)
    local = cross_validate(cfg, data)  # features from the session's cache
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))  # a fresh cache, which the tasks fill
    monkeypatch.setattr(features, "compute_file", _not_in_the_driver)
    on_ray = cross_validate(cfg, data, folds_runner=cluster.ray_folds)
    entries = list((tmp_path / "cache" / cfg.resolved()[1].key()).rglob("*.npy"))
    assert len(entries) == len(data.manifest)
    for k in ("accuracy", "uar", "macro_f1", "ece"):
        assert on_ray.summary[k]["mean"] == pytest.approx(local.summary[k]["mean"], abs=1e-9)
    np.testing.assert_allclose(on_ray.oof["proba"], local.oof["proba"], rtol=0, atol=1e-9)


@pytest.mark.slow
def test_a_cache_path_the_nodes_do_not_share_comes_back_through_the_object_store(two_nodes, data, tmp_path,
                                                                                   monkeypatch):
    from ser_core import features
    from ser_core.cache import FeatureCache

    paths, rich = data.manifest["path"].tolist()[:40], features.get_feature_set("rich")
    expected = features.compute_files(paths, rich, progress=False)  # from the session's cache
    monkeypatch.setattr(cluster, "_node_cache_dir", lambda store: str(tmp_path / "nodes-only"))
    monkeypatch.setattr(features, "compute_file", _not_in_the_driver)
    driver_cache, said = FeatureCache(tmp_path / "driver"), []
    X = features.compute_files(paths, rich, cache=driver_cache, progress=False,
                               compute_misses=partial(cluster.ray_folds.features, emit=said.append))
    np.testing.assert_allclose(X, expected, rtol=1e-5, atol=1e-6)
    assert said and all(e["event"] == "features_not_shared" and "not shared" in e["message"] for e in said)
    assert len(said) == len({e["node"] for e in said})  # once per node
    assert all(a is not None for a in driver_cache.get_many(paths, rich))  # the driver cached what came back
    assert len(list((tmp_path / "nodes-only").rglob("*.npy"))) == len(paths)


@pytest.mark.slow
def test_a_ray_job_survives_losing_a_node(two_nodes, data, rf_local, tmp_path):
    """Last in this module: it stops the second node."""
    ex = RayExecutor(tmp_path / "jobs", address=two_nodes["address"])
    job_id = ex.submit(_job(data, tmp_path))
    second = two_nodes["workers"][0]
    deadline = time.time() + 90
    while not _fold_task_pids(second):  # a fold is running on the second node: take the node away
        assert time.time() < deadline and ex.status(job_id)["state"] in ("queued", "running"), ex.log(job_id)
        time.sleep(0.02)
    os.killpg(second.pid, signal.SIGKILL)  # the node's ray start, raylet and workers at once
    st = ex.wait(job_id, timeout=120)
    assert st["state"] == "done", ex.log(job_id)
    assert st["executor"] == "ray" and st["address"] == two_nodes["address"]
    assert st["cluster"]["cpus"] == 2 and len(st["cluster"]["nodes"]) == 2  # as the job found it
    assert "executor ray at" in ex.log(job_id)
    done = [e for e in ex.events(job_id) if e["event"] == "fold_done"]
    assert {e["node"] for e in done} == {two_nodes["head_node"]}  # the second node's fold was run again there
    assert {f["node"] for f in progress(ex.events(job_id))["random_forest"]["done"]} == \
        {two_nodes["head_node"][:8]}  # the Train page's fold table names it
    m = st["models"]["random_forest"]
    _assert_same_numbers(_fold_rows(ResultsStore(tmp_path / "results.sqlite"), m["run_id"]), rf_local)
    assert os.path.isfile(os.path.join(m["saved_model"], "card.json"))  # saved by the job's driver



@pytest.mark.slow
def test_connecting_keeps_the_callers_sigterm_handler(tmp_path):
    """ray.init installs a SIGTERM handler that exits; a job worker's own (a clean cancel) must survive it."""
    code = ("import signal, sys\n"
            "from ser_core import cluster\n"
            "def mine(signum, frame): raise KeyboardInterrupt\n"
            "signal.signal(signal.SIGTERM, mine)\n"
            "cluster.connect()\n"
            "assert signal.getsignal(signal.SIGTERM) is mine, signal.getsignal(signal.SIGTERM)\n"
            "cluster.disconnect()\n")
    env = {**os.environ, "SER_RAY_CPUS": "1", "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


LISTENERS = r"""
import json, os, sys
from ser_core import cluster

def descendants(pid):
    children = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out

def listening(pids):
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    out = []
    for family in ("tcp", "tcp6"):
        for line in open(f"/proc/net/{family}").read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                out.append(f[1].split(":")[0])
    return out

ray = cluster.connect(address=None if sys.argv[1] == "local" else sys.argv[1])
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
addresses = listening(descendants(os.getpid()))
print(json.dumps({"addresses": addresses, "gcs": ray.get_runtime_context().gcs_address,
                  "env_after": os.environ.get(cluster.LOOPBACK_ENV)}))
cluster.disconnect()
"""
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}  # /proc/net/tcp*


@pytest.mark.slow
def test_a_local_ray_listens_on_the_loopback_only(tmp_path):
    """A local Ray started on demand (no SER_RAY_ADDRESS): its GCS, raylet, agents, this driver and its workers
    listen on 127.0.0.1 only, never on every interface (before: '*:port', reachable from other machines)."""
    env = {**os.environ, "SER_RAY_CPUS": "1", "PYTHONPATH": str(REPO)}
    env.pop(cluster.ADDRESS_ENV, None)
    proc = subprocess.run([sys.executable, "-c", LISTENERS, "local"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert len(out["addresses"]) >= 4 and set(out["addresses"]) <= LOOPBACK, out
    assert out["gcs"].startswith("127.0.0.1:") and out["env_after"] is None  # restored for later connections
