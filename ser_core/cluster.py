"""Where distributed work runs: the executor a job uses and the Ray cluster behind the ``ray`` one.

Two environment variables choose it, for the app and the command line alike:

- ``SER_EXECUTOR``: ``local`` (default: one worker process on this machine, folds one after another) or
  ``ray`` (each (model, fold) a Ray task, on the cluster below);
- ``SER_RAY_ADDRESS``: ``auto`` (the cluster this machine's ``ray start`` joined), ``ray://host:10001`` (Ray
  Client), ``host:6379`` (a head's GCS address), or unset: a local Ray started on demand with this machine's
  CPUs (``SER_RAY_CPUS`` caps them), which listens on the loopback address only (127.0.0.1): nothing on
  another machine can reach it. Whoever reaches a Ray port without its token runs code there.

Every node must have the same Python packages as this machine (``requirements.txt``); ``ser_core`` itself is
shipped to the nodes with the job (Ray's ``py_modules``). The feature cache (``SER_CACHE_DIR``) must be a
path that every node sees (a shared filesystem, mounted at the same path): the feature tasks write a run's
cache misses there and the driver reads them back, so a clip's features are computed once, on the cluster
(see :meth:`RayRunner.features`, and what happens where the path is not shared). Ray is imported only here and
only when a job asks for it.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from . import events
from .cache import CACHE_ENV
from .errors import ConfigError

EXECUTORS = ("local", "ray")
EXECUTOR_ENV = "SER_EXECUTOR"
ADDRESS_ENV = "SER_RAY_ADDRESS"
CPUS_ENV = "SER_RAY_CPUS"
PACKAGE = Path(__file__).resolve().parent
GPU_FRAMEWORKS = ("torch", "tensorflow")  # families whose fold tasks ask for a GPU where the cluster has one
MAX_RETRIES = 3  # a fold task whose worker process or node dies is run again (elsewhere), this many times
POLL_S = 0.5  # how often a driver waiting for its tasks looks at should_stop
FEATURE_CHUNK = 32  # clips per feature task: a few seconds of work each, next to ~1 ms of scheduling
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # off: Ray gives its node the loopback address (see _loopback)


def executor_name(name: str | None = None) -> str:
    """``name`` or ``$SER_EXECUTOR`` (default ``local``), checked."""
    name = (name or os.environ.get(EXECUTOR_ENV) or "local").strip().lower()
    if name not in EXECUTORS:
        raise ConfigError(f"Unknown executor '{name}' ({EXECUTOR_ENV}); choose one of: {', '.join(EXECUTORS)}.")
    return name


def ray_address(address: str | None = None) -> str | None:
    """``address`` or ``$SER_RAY_ADDRESS``; None: a local Ray started on demand."""
    address = address if address is not None else os.environ.get(ADDRESS_ENV)
    return (address or "").strip() or None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("The Ray executor needs Ray: pip install 'ray[tune,client]' (see requirements.txt).") \
            from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None):
    """Connect this process to the Ray cluster at ``address`` (see :func:`ray_address`), once; returns the
    ``ray`` module. A local Ray (no address) gets ``num_cpus`` or ``$SER_RAY_CPUS`` or every core. An
    unreachable cluster raises a ``ConfigError`` naming the address. A local Ray listens on 127.0.0.1 only
    (:func:`_loopback`); a cluster's own addresses are its own business."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    address = ray_address(address)
    if num_cpus is None and os.environ.get(CPUS_ENV):
        try:
            num_cpus = int(os.environ[CPUS_ENV])
        except ValueError:
            raise ConfigError(f"{CPUS_ENV} must be a whole number of CPUs, not '{os.environ[CPUS_ENV]}'.") \
                from None
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  runtime_env={"py_modules": [str(PACKAGE)], "env_vars": _forwarded_env()})
    if address is None:
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1)
    handler = _sigterm_handler()
    try:
        with _loopback() if address is None else nullcontext():
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise ConfigError(f"Could not connect to the Ray cluster at {where} ({ADDRESS_ENV}): "
                          f"{str(exc).splitlines()[0][:200]}") from None
    finally:
        _restore_sigterm(handler)
    return ray


@contextmanager
def _loopback():
    """While a local Ray starts, its node's address is the loopback one, so that its GCS, raylet, object
    manager, agents, driver and workers listen on 127.0.0.1 only -- not on every interface, where anyone who
    reaches a port runs code (Ray's own grpc servers bind to 127.0.0.1 exactly when the node's address is it).
    Ray does this on macOS and Windows, where ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off; it is turned off
    here for the start (the environment the node's processes inherit, and the constant Ray's Python side read at
    import), on every system, then restored for later connections to a real cluster. ``ray.init`` itself turns
    a ``_node_ip_address`` of 127.0.0.1 into the machine's address, so that cannot do it. Checked by
    ``tests/test_ray.py::test_a_local_ray_listens_on_the_loopback_only``."""
    from ray._private import ray_constants  # private: no public switch exists in Ray 2.60

    saved_env, saved = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved_env


def _sigterm_handler():
    """This process's SIGTERM handler, where it can be read and set again (the main thread), else None."""
    import signal

    return signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None


def _restore_sigterm(handler) -> None:
    """Put back the SIGTERM handler ``ray.init`` replaced (with ``sys.exit``): a job worker turns SIGTERM into a
    clean cancellation (``jobs._interrupt``), which Ray's handler would make a crash."""
    import signal

    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _forwarded_env() -> dict:
    """The settings a task on another node needs to read and cache features as this machine does."""
    keys = (CACHE_ENV, "SER_DATA_ROOTS")
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


def disconnect() -> None:
    """Leave the cluster (a local Ray started by :func:`connect` stops with it)."""
    ray = _import_ray()
    if ray.is_initialized():
        ray.shutdown()


def cluster_info() -> dict:
    """The connected cluster: ``{"address", "nodes": [{"id", "host", "cpus", "gpus", "alive"}], "cpus",
    "gpus"}`` (alive nodes only in the totals)."""
    ray = _import_ray()
    nodes = []
    for n in ray.nodes():
        res = n.get("Resources", {})
        nodes.append({"id": n["NodeID"], "host": n.get("NodeManagerAddress"), "cpus": float(res.get("CPU", 0)),
                      "gpus": float(res.get("GPU", 0)), "alive": bool(n.get("Alive"))})
    alive = [n for n in nodes if n["alive"]]
    ctx = ray.get_runtime_context()
    return {"address": getattr(ctx, "gcs_address", None), "nodes": nodes,
            "cpus": sum(n["cpus"] for n in alive), "gpus": sum(n["gpus"] for n in alive)}


def folds_runner(executor: str | None = None, address: str | None = None):
    """The ``folds_runner`` of ``evaluation.cross_validate`` for ``executor`` (see :func:`executor_name`): None
    (in this process) for ``local``; for ``ray``, connects to ``address`` (see :func:`ray_address`) and returns
    :data:`ray_folds` (a :class:`RayRunner`)."""
    if executor_name(executor) == "local":
        return None
    connect(address)
    return ray_folds


class RayRunner:
    """``evaluation.cross_validate``'s ``folds_runner`` on Ray: every step of a run that computes is a Ray task,
    and the driver (this process) keeps what writes -- the results store and the saved model. Called as
    ``evaluation.local_folds``, it runs the folds; :meth:`features` computes the run's feature cache misses and
    :meth:`fit_final` its final model. A task whose worker process or node dies is run again (elsewhere),
    ``MAX_RETRIES`` times; a task's own error is raised as it was raised in the task. While waiting,
    ``should_stop()`` is checked every ``POLL_S`` seconds; a stop cancels the tasks still running and raises
    ``KeyboardInterrupt``. It holds no state: threads of one driver may use it at once."""

    def __call__(self, data, splits, *, on_start=None, should_stop=None):
        """The folds: the run's ``FoldData`` is put in the object store once, each fold is a task (1 CPU; 1 GPU
        for the torch and Keras families when the cluster has GPUs, see :func:`gpus_per_fold`), and the results
        are yielded as they finish, each with the ``node`` (Ray node id) and ``host`` that ran it and the wall
        clock it ``started_at`` there."""
        ray = connect()
        task = _task("fold").options(num_gpus=gpus_per_fold(data.config.model, _cluster_gpus(ray)))
        shared = ray.put(data)
        pending = {}
        for i, (train, test) in enumerate(splits):
            pending[task.remote(shared, i, train, test)] = i
            if on_start:
                on_start(i)
        for _, result in _finished(ray, pending, should_stop):
            yield result

    def features(self, paths, fs, store, *, emit=None, should_stop=None):
        """``features.compute_files``'s ``compute_misses``: the features of ``paths`` as tasks of
        ``FEATURE_CHUNK`` clips (1 CPU each), which write them into the driver's feature cache ``store`` -- its
        path, which every node must see (a shared filesystem, the same path everywhere). Yields ``(position in
        paths, array)`` as chunks finish, the arrays read back from ``store``.

        A chunk whose entries the driver does not find there was cached where only its node sees it: that chunk
        runs again on the same node (which reads its own copy) and returns its arrays, which the driver caches;
        ``emit`` gets one ``FEATURES_NOT_SHARED`` event per such node, saying so. With no ``store`` (no cache)
        every chunk returns its arrays."""
        from .features import cache_put

        ray = connect()
        task, cache_dir = _task("features"), _node_cache_dir(store)
        writable = store  # None once a cache write failed (full or read-only disk): the arrays still come back
        chunks = [list(range(i, min(i + FEATURE_CHUNK, len(paths)))) for i in range(0, len(paths), FEATURE_CHUNK)]
        pending = {task.remote([paths[j] for j in c], fs, cache_dir, store is None): c for c in chunks}
        unshared: set = set()
        for chunk, out in _finished(ray, pending, should_stop):
            chunk_paths = [paths[j] for j in chunk]
            returned = out["arrays"]  # None where the task cached the clip's features instead
            cached = store.get_many(chunk_paths, fs) if store is not None else [None] * len(chunk)
            arrays = [r if r is not None else c for r, c in zip(returned, cached)]
            if any(a is None for a in arrays):  # cached where the driver does not see it: ask for the arrays
                if out["node"] not in unshared and emit:
                    emit(_not_shared(out, cache_dir))
                unshared.add(out["node"])
                pending[task.options(scheduling_strategy=_on_node(out["node"])).remote(
                    chunk_paths, fs, cache_dir, True)] = chunk
                continue
            for j, r, a in zip(chunk, returned, arrays):
                if r is not None:  # came back through the object store: cache it here
                    writable = cache_put(writable, paths[j], fs, a)
                yield j, a

    def fit_final(self, data, *, should_stop=None):
        """``evaluation.fit_final`` as a task (the same resources as a fold): ``(model, normaliser, seconds)``,
        the model as a ``saved.PackedModel`` (the bytes of its saved folder: no family needs to pickle), which
        the driver saves. Heavy framework training thus never runs in the driver, whose threads (a Ray job's
        models) only wait and write."""
        ray = connect()
        task = _task("final").options(num_gpus=gpus_per_fold(data.config.model, _cluster_gpus(ray)))
        for _, out in _finished(ray, {task.remote(data): None}, should_stop):
            return out


ray_folds = RayRunner()  # the one instance: what folds_runner returns and callers pass as folds_runner


def _finished(ray, pending: dict, should_stop=None):
    """Yield ``(pending[ref], result)`` of the task refs in ``pending`` as they finish; refs the caller adds to
    ``pending`` meanwhile are waited for too. A task's own error is raised as the task raised it (not a
    ``RayTaskError``); a stop (``should_stop()``, checked every ``POLL_S`` seconds) raises
    ``KeyboardInterrupt``. On any exit -- done, failed, cancelled, or abandoned by the caller -- the tasks still
    pending are cancelled: their worker processes killed on a stop (``force``), asked to stop otherwise. (Force-
    cancelling the siblings of a failed fold, from threads of one driver, once aborted the driver inside Ray
    2.60's task manager: "Tried to complete task that was not pending".)"""
    stopped = False
    try:
        while pending:
            if should_stop and should_stop():
                stopped = True
                raise KeyboardInterrupt("cancelled")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the task's own error, as the local runner raises it
                    raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
                yield key, result
    except KeyboardInterrupt:
        stopped = True
        raise
    finally:
        if pending:
            with _CANCELLING:  # one thread of the driver at a time (a Ray job's models stop together)
                _, running = ray.wait(list(pending), num_returns=len(pending), timeout=0)  # finished: leave be
                for ref in running:
                    ray.cancel(ref, force=stopped)


_CANCELLING = threading.Lock()


def _not_shared(task_out: dict, cache_dir: str) -> dict:
    """The ``FEATURES_NOT_SHARED`` event of the node that ran ``task_out``'s feature task."""
    node, host = task_out["node"], task_out["host"]
    return {"event": events.FEATURES_NOT_SHARED, "node": node, "host": host, "cache": cache_dir,
            "message": f"the feature cache {cache_dir} is not shared with node {host} ({node[:8]}): its features "
                       f"come back through Ray's object store; set {CACHE_ENV} to a path every node sees"}


def _cluster_gpus(ray) -> float:
    return ray.cluster_resources().get("GPU", 0)


def _node_cache_dir(store) -> str | None:
    """The feature cache folder the tasks write into: the driver's own, as an absolute path (the README's
    shared path); None without a cache."""
    return os.path.abspath(store.directory) if store is not None else None


def _on_node(node_id: str):
    """The scheduling strategy of a task that should run on ``node_id`` (elsewhere if that node is gone)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=True)


def gpus_per_fold(model: str, cluster_gpus: float) -> int:
    """GPUs a fold task of ``model`` asks for: 1 for the torch and Keras families on a cluster with a GPU (the
    model then finds it: ``torch_models.select_device``, TensorFlow's own placement), else 0 (CPU)."""
    from .models import get_spec

    return 1 if get_spec(model).framework in GPU_FRAMEWORKS and cluster_gpus >= 1 else 0


_TASKS: dict = {}


def _task(name: str):
    """The Ray remote function ``name`` (``fold``, ``features``, ``final``), defined on first use so that
    ``import ray`` stays lazy. Each takes 1 CPU and is retried ``MAX_RETRIES`` times when its worker process or
    node dies (never for its own error), and returns what it computed with the ``node`` and ``host`` that ran
    it."""
    if not _TASKS:
        ray = _import_ray()
        retried = dict(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)

        def where() -> dict:
            return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}

        @ray.remote(**retried)
        def fold_task(data, fold, train, test):
            from ser_core.evaluation import run_fold

            started_at = time.time()
            return {**run_fold(data, fold, train, test), "started_at": started_at, **where()}

        @ray.remote(**retried)
        def features_task(paths, fs, cache_dir, return_arrays):
            """The features of ``paths``, cached in ``cache_dir`` (None: no cache); each array is returned when
            ``return_arrays`` or when it could not be cached (``FeatureCache.put`` refuses non-finite values),
            else None: the driver reads it from the cache."""
            from ser_core.cache import FeatureCache
            from ser_core.features import compute_files

            cache = FeatureCache(cache_dir) if cache_dir else None
            X = compute_files(paths, fs, cache=cache, n_jobs=1, progress=False)
            cached = cache.get_many(paths, fs) if cache and not return_arrays else [None] * len(paths)
            return {"arrays": [None if c is not None else x for x, c in zip(X, cached)], **where()}

        @ray.remote(**retried)
        def final_task(data):
            from ser_core.evaluation import fit_final
            from ser_core.saved import PackedModel

            model, norm, seconds = fit_final(data)
            return PackedModel.pack(model), norm, seconds

        _TASKS.update(fold=fold_task, features=features_task, final=final_task)
    return _TASKS[name]


def describe(executor: str | None = None, address: str | None = None) -> dict:
    """What a job records of where it runs: ``{"executor"}``, plus for ``ray`` the ``address`` asked for and
    :func:`cluster_info` (the process must be connected)."""
    name = executor_name(executor)
    if name == "local":
        return {"executor": name}
    return {"executor": name, "address": ray_address(address) or "local Ray (started on demand)",
            "cluster": cluster_info()}


def summary_line(info: dict) -> str:
    """One line for the CLI, the job log and the Train page: ``executor ray at ADDRESS: 2 nodes, 2 CPUs, 0
    GPUs``, or ``executor local (this machine, folds one after another)``."""
    if info.get("executor") != "ray":
        return "executor local (this machine, folds one after another)"
    c = info.get("cluster") or {}
    alive = [n for n in c.get("nodes", []) if n.get("alive")]
    counts = [(len(alive), "node"), (c.get("cpus", 0), "CPU"), (c.get("gpus", 0), "GPU")]
    return f"executor ray at {info.get('address')}: " + ", ".join(f"{n:g} {what}{'' if n == 1 else 's'}"
                                                                   for n, what in counts)
