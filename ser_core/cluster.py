"""Where distributed work runs: the executor a job uses and the Ray cluster behind the ``ray`` one.

Two environment variables choose it, for the app and the command line alike:

- ``SER_EXECUTOR``: ``local`` (default: one worker process on this machine, folds one after another) or
  ``ray`` (each (model, fold) a Ray task, on the cluster below);
- ``SER_RAY_ADDRESS``: ``auto`` (the cluster this machine's ``ray start`` joined), ``ray://host:10001`` (Ray
  Client), ``host:6379`` (a head's GCS address), or unset: a local Ray started on demand with this machine's
  CPUs (``SER_RAY_CPUS`` caps them).

Every node must have the same Python packages as this machine (``requirements.txt``); ``ser_core`` itself is
shipped to the nodes with the job (Ray's ``py_modules``). The feature cache (``SER_CACHE_DIR``) should be a
path that every node sees (a shared filesystem), so that a clip's features are computed once. Ray is imported
only here and only when a job asks for it.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import ConfigError

EXECUTORS = ("local", "ray")
EXECUTOR_ENV = "SER_EXECUTOR"
ADDRESS_ENV = "SER_RAY_ADDRESS"
CPUS_ENV = "SER_RAY_CPUS"
PACKAGE = Path(__file__).resolve().parent
GPU_FRAMEWORKS = ("torch", "tensorflow")  # families whose fold tasks ask for a GPU where the cluster has one
MAX_RETRIES = 3  # a fold task whose worker process or node dies is run again (elsewhere), this many times
POLL_S = 0.5  # how often a driver waiting for its folds looks at should_stop


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
    unreachable cluster raises a ``ConfigError`` naming the address."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    address = ray_address(address)
    if num_cpus is None and os.environ.get(CPUS_ENV):
        num_cpus = int(os.environ[CPUS_ENV])
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  runtime_env={"py_modules": [str(PACKAGE)], "env_vars": _forwarded_env()})
    if address is None:
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise ConfigError(f"Could not connect to the Ray cluster at {where} ({ADDRESS_ENV}): "
                          f"{str(exc).splitlines()[0][:200]}") from None
    return ray


def _forwarded_env() -> dict:
    """The settings a task on another node needs to read and cache features as this machine does."""
    keys = ("SER_CACHE_DIR", "SER_DATA_ROOTS")
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
    :func:`ray_folds`."""
    if executor_name(executor) == "local":
        return None
    connect(address)
    return ray_folds


def ray_folds(data, splits, *, on_start=None, should_stop=None):
    """``evaluation.local_folds`` on Ray: the run's ``FoldData`` is put in the object store once, each fold is
    a task (1 CPU; 1 GPU for the torch and Keras families when the cluster has GPUs; retried ``MAX_RETRIES``
    times when its worker process or node dies), and the results are yielded as they finish, each with the
    ``node`` (Ray node id) and ``host`` that ran it. While waiting, ``should_stop()`` is checked every
    ``POLL_S`` seconds; a stop cancels the folds still running and raises ``KeyboardInterrupt``. A fold's own
    error (a model's) is raised as it was raised in the task, and cancels the other folds too."""
    ray = connect()
    task = _fold_task().options(num_gpus=gpus_per_fold(data.config.model, ray.cluster_resources().get("GPU", 0)))
    shared = ray.put(data)
    pending = {}
    try:
        for i, (train, test) in enumerate(splits):
            pending[task.remote(shared, i, train, test)] = i
            if on_start:
                on_start(i)
        while pending:
            if should_stop and should_stop():
                raise KeyboardInterrupt("cancelled")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the fold's own error, as the local runner raises it
                    raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
                yield result
    finally:
        for ref in pending:  # cancelled, failed, or abandoned by the caller: stop the folds still running
            ray.cancel(ref, force=True)


def gpus_per_fold(model: str, cluster_gpus: float) -> int:
    """GPUs a fold task of ``model`` asks for: 1 for the torch and Keras families on a cluster with a GPU (the
    model then finds it: ``torch_models.select_device``, TensorFlow's own placement), else 0 (CPU)."""
    from .models import get_spec

    return 1 if get_spec(model).framework in GPU_FRAMEWORKS and cluster_gpus >= 1 else 0


_TASKS: dict = {}


def _fold_task():
    """The Ray remote function of one fold (defined once, on first use, so ``import ray`` stays lazy)."""
    if "fold" not in _TASKS:
        ray = _import_ray()

        @ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)
        def fold_task(data, fold, train, test):
            from ser_core.evaluation import run_fold

            return {**run_fold(data, fold, train, test), "node": ray.get_runtime_context().get_node_id(),
                    "host": socket.gethostname()}

        _TASKS["fold"] = fold_task
    return _TASKS["fold"]


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
