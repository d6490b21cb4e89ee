"""Hyperparameter sweeps: Ray Tune trials chosen by an Optuna search, scored by speaker-grouped cross-validation.

A sweep cross-validates one model many times, each trial with other values of the parameters named in its
search space, and keeps the configuration with the best mean UAR over the folds. Every trial uses the same
folds (drawn from the sweep's seed), so trials differ only in their parameters. ::

    >>> space = parse_space("C=loguniform(0.1,100);gamma=choice(scale,auto)", "svm")
    >>> result = run_sweep(SweepConfig("svm", "C=loguniform(0.1,100)", trials=20), corpus, store=ResultsStore())
    >>> result.best["params"], result.saved_model

A search space is ``NAME=DISTRIBUTION(ARGS)`` items separated by ``;``, one per parameter of the model's registry
entry (``ser_core.models``); the distributions are the rows of ``DISTRIBUTIONS``. Values in ``choice`` are typed
as written: ``10`` an int, ``0.5`` a float, ``true``/``false`` a bool, ``none`` None, anything else a string.

Where it runs: each trial is one Ray Tune trial holding 1 CPU that runs its folds one after another, on the
cluster of ``ser_core.cluster`` (``SER_RAY_ADDRESS``), or on a local Ray started on demand (``SER_RAY_CPUS``
caps its CPUs). Trials never write the results store: the sweep's own process (the driver) records each
finished trial as a run carrying the sweep's id, and at the end trains the best configuration on every clip and
saves it as one of your models, its stored run pointing at it. Ray and Optuna are imported only here, and only
when a sweep runs.
"""
from __future__ import annotations

import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from difflib import get_close_matches
from pathlib import Path

from . import events
from .errors import ConfigError

NOT_SEARCHABLE = ("feature_set", "seed")  # a sweep compares parameters on fixed features and fixed folds
SUGGESTED_SPACES = {  # where a search of each model may start (the Train page offers it)
    "svm": "C=loguniform(0.1,100);gamma=choice(scale,auto)",
    "lda": "shrinkage=uniform(0.0,1.0)",
    "random_forest": "n_estimators=randint(100,800);max_depth=choice(none,8,16,32);max_features=choice(sqrt,log2)",
    "decision_tree": "max_depth=randint(3,30);min_samples_leaf=randint(1,10)",
}



MAX_TRIALS = 500  # the most trials one sweep runs (the Train page offers the same)

@dataclass(frozen=True)
class Distribution:
    """How values of one parameter are drawn: ``signature`` as the user writes it, the number of arguments
    (None: one or more), and the Ray Tune domain built from the arguments."""

    signature: str
    n_args: int | None
    tune_domain: str  # the ray.tune function (randint: our upper bound is inclusive, Tune's exclusive)
    integer: bool = False  # arguments (and so the values) are whole numbers


DISTRIBUTIONS = {
    "loguniform": Distribution("loguniform(low, high)", 2, "loguniform"),
    "uniform": Distribution("uniform(low, high)", 2, "uniform"),
    "quniform": Distribution("quniform(low, high, step)", 3, "quniform"),
    "randint": Distribution("randint(low, high)", 2, "randint", integer=True),
    "choice": Distribution("choice(value, value, ...)", None, "choice"),
}


@dataclass(frozen=True)
class Dimension:
    """One parameter of a search space: ``name`` drawn from ``DISTRIBUTIONS[kind]`` with ``args``."""

    name: str
    kind: str
    args: tuple

    def __str__(self) -> str:
        return f"{self.name}={self.kind}({','.join(map(_text, self.args))})"

    def domain(self):
        """The Ray Tune search domain (``tune.loguniform(low, high)``, ...)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        args = (self.args[0], self.args[1] + 1) if self.kind == "randint" else self.args
        return getattr(tune, DISTRIBUTIONS[self.kind].tune_domain)(*args)


def _value(token: str):
    """A written value, typed: int, float, bool, None or string (quotes dropped)."""
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    words = {"true": True, "false": False, "none": None, "null": None}
    if token.lower() in words:
        return words[token.lower()]
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token


def _text(value) -> str:
    """A value written so that ``_value`` reads it back as it is."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return f"'{value}'" if isinstance(value, str) and _value(value) != value else str(value)


_ITEM = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)


def parse_space(text: str, model: str) -> dict[str, Dimension]:
    """``"C=loguniform(0.1,100);gamma=choice(scale,auto)"`` -> ``{"C": Dimension, "gamma": Dimension}``, checked
    against ``model``'s registry parameters; a mistake is a ``ConfigError`` of one sentence."""
    from .models import get_spec

    spec = get_spec(model)
    searchable = [p for p in spec.params if p not in NOT_SEARCHABLE]
    items = [t for t in re.split(r"[;\n]", text or "") if t.strip()]
    if not items:
        raise ConfigError(f"The search space is empty; give NAME=DISTRIBUTION(...) items separated by ';', e.g. "
                          f"{searchable[-1] if searchable else 'C'}=choice(...), for any of: {', '.join(searchable)}.")
    space = {}
    for item in items:
        m = _ITEM.match(item)
        if not m:
            raise ConfigError(f"Cannot read '{item.strip()}' of the search space; write NAME=DISTRIBUTION(ARGS), "
                              "e.g. C=loguniform(0.1,100).")
        name, kind, raw = m.groups()
        if name not in searchable:
            close = [p for p in searchable if p.lower() == name.lower()] or get_close_matches(name, searchable, 1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"Model '{model}' has no parameter '{name}' to search.{hint} Choose among: "
                              f"{', '.join(searchable)}.")
        if name in space:
            raise ConfigError(f"The search space names '{name}' twice; give each parameter once.")
        space[name] = _dimension(name, kind, [_value(a) for a in raw.split(",")] if raw.strip() else [],
                                 spec.params[name], model)
    return space


def _check_choices(name: str, values: list, default, model: str) -> None:
    """A ``choice``'s values must suit the parameter: true/false where its default is, numbers (whole where its
    default is whole) where its default is a number -- ``none`` always passes, as "no limit" -- and, for a
    scikit-learn model, each value must pass the model's own checks when the model is made with it (the other
    frameworks' models are checked when a trial makes them: importing TensorFlow or PyTorch here would load it
    into the app's process)."""
    from .models import create_model, get_spec

    given = [v for v in values if v is not None]
    if isinstance(default, bool):
        if not all(isinstance(v, bool) for v in given):
            raise ConfigError(f"'{name}=choice(...)' takes true or false.")
    elif isinstance(default, (int, float)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given):
            raise ConfigError(f"'{name}=choice(...)' takes numbers, e.g. {name}=choice({default}, ...).")
        if isinstance(default, int) and not all(isinstance(v, int) for v in given):
            raise ConfigError(f"'{name}=choice(...)' takes whole numbers, e.g. {name}=choice({default}, ...).")
    for v in values if get_spec(model).framework == "sklearn" else ():
        try:
            create_model(model, **{name: v})
        except ConfigError as exc:
            raise ConfigError(f"'{name}=choice(...)': {exc}") from None


def _dimension(name: str, kind: str, args: list, default, model: str) -> Dimension:
    """``Dimension(name, kind, args)`` once its arguments make sense for ``model``'s parameter (default
    ``default``)."""
    dist = DISTRIBUTIONS.get(kind)
    if dist is None:
        raise ConfigError(f"Unknown distribution '{kind}' for '{name}'; use one of: "
                          f"{', '.join(d.signature for d in DISTRIBUTIONS.values())}.")
    if dist.n_args is None and len(args) < 2 or dist.n_args is not None and len(args) != dist.n_args:
        want = "at least two values" if dist.n_args is None else f"{dist.n_args} numbers"
        raise ConfigError(f"'{name}={kind}(...)' takes {want}: {name}={dist.signature}.")
    if kind == "choice":
        if len(set(map(repr, args))) < len(args):
            raise ConfigError(f"'{name}=choice(...)' lists a value twice; give each value once.")
        _check_choices(name, args, default, model)
        return Dimension(name, kind, tuple(args))
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"'{name}={kind}(...)' takes numbers: {name}={dist.signature}.")
    if dist.integer and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"'{name}={kind}(...)' takes whole numbers, e.g. {name}=randint(2, 20).")
    if isinstance(default, int) and not isinstance(default, bool) and not dist.integer:
        raise ConfigError(f"'{name}' takes whole numbers; use {name}=randint(low, high) or choice(...).")
    low, high = args[0], args[1]
    if not low < high:
        raise ConfigError(f"'{name}={kind}({low},{high})' needs its low bound below its high bound.")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"'{name}=loguniform(...)' needs bounds above 0 (it draws their logarithm).")
    if kind == "quniform" and not 0 < args[2] <= high - low:
        raise ConfigError(f"'{name}=quniform(...)' needs a step above 0 and at most high - low.")
    return Dimension(name, kind, tuple(args))


def format_space(space: dict[str, Dimension]) -> str:
    """The canonical text of a parsed space (what a sweep records)."""
    return ";".join(str(d) for d in space.values())


# -- a sweep -------------------------------------------------------------------------------------------------
@dataclass
class SweepConfig:
    """What a sweep searches: ``trials`` configurations of ``model`` (its other parameters from ``params``),
    drawn by Optuna's TPE from ``space`` (the text ``parse_space`` reads), each scored by ``folds``-fold
    speaker-grouped cross-validation with the folds of ``seed`` (which also seeds the search)."""

    model: str
    space: str
    trials: int = 20
    folds: int = 4
    seed: int = 0
    params: dict = field(default_factory=dict)  # fixed parameters of every trial
    feature_set: str | None = None  # None: the model's own
    early_stop: bool = False  # ASHA: stop a trial whose running UAR over its first folds trails the others'
    concurrency: int | None = None  # trials at once; None: one per CPU of the cluster

    def parsed(self) -> dict[str, Dimension]:
        return parse_space(self.space, self.model)

    def run_config(self, params: dict | None = None):
        """The cross-validation of one trial (``params``: its drawn values)."""
        from .evaluation import RunConfig

        return RunConfig(model=self.model, params={**self.params, **(params or {})}, feature_set=self.feature_set,
                         split="speaker", folds=int(self.folds), seed=int(self.seed))

    def check(self, corpus=None) -> "SweepConfig":
        """Refuse a sweep that cannot run (on ``corpus``, when given) before anything starts; returns self."""
        from .evaluation import check_run
        from .models import check_params

        if not 1 <= int(self.trials) <= MAX_TRIALS:
            raise ConfigError(f"A sweep runs 1 to {MAX_TRIALS} trials; choose --trials in that range.")
        if self.concurrency is not None and int(self.concurrency) < 1:
            raise ConfigError("Run at least one trial at a time; choose a concurrency of 1 or more.")
        check_params(self.model, self.params)
        fixed = set(self.params) & set(self.parsed())
        if fixed:
            raise ConfigError(f"'{', '.join(sorted(fixed))}' is both fixed and searched; leave it out of one.")
        config = self.run_config()
        config.resolved()
        if corpus is not None:
            check_run(config, corpus)
        return self


@dataclass
class SweepResult:
    """A finished sweep: every trial (``{"trial", "params", "state", "uar": {"mean", "std"}, "accuracy",
    "run_id", "folds_done", "error"}``; ``trial`` numbers them in the order the search suggested them) and the
    best one with its saved model."""

    sweep_id: str
    model: str
    space: str
    trials: list
    best: dict | None
    saved_model: str | None
    wall_s: float

    def to_dict(self) -> dict:
        return asdict(self)


RESULT = "cv_result"  # key of a trial's last report: its RunResult (the driver records it)


def run_sweep(config: SweepConfig, corpus, *, store=None, save_to=None, progress=None, should_stop=None,
              storage_path=None) -> SweepResult:
    """Run the sweep ``config`` on ``corpus`` (a ``ser_core.corpora.Corpus``) with Ray Tune and Optuna.

    store: the ``ResultsStore`` every finished trial is recorded in as a run with the sweep's id (None: the
    default store). save_to: as for ``cross_validate`` (a function of the run id naming a new folder, e.g.
    ``partial(saved.user_model_path, ...)``): the best configuration is trained on every clip and saved there,
    and its trial's run names the folder; None: nothing is saved. progress: callable(event) receiving the
    feature events and ``SWEEP_START``, ``TRIAL_DONE``, ``SWEEP_DONE`` (``ser_core.events``). should_stop:
    callable() -> bool, polled while trials run; True stops every trial and raises ``KeyboardInterrupt``.
    storage_path: where Ray Tune keeps its trial folders (None: a temporary folder, removed at the end)."""
    from .evaluation import data_fingerprint, features_of
    from .results import ResultsStore

    t0 = time.perf_counter()
    emit = progress or (lambda e: None)
    store = store if store is not None else ResultsStore()
    config.check(corpus)
    space = config.parsed()
    _, fs = config.run_config().resolved()
    features_of(corpus.manifest["path"].tolist(), fs, emit)  # once, here: the trials read them from the cache
    sweep_id = f"sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    settings = {k: v for k, v in asdict(config).items() if k not in ("model", "space")}
    store.start_sweep(sweep_id, model=config.model, dataset=corpus.name, space=format_space(space),
                      settings=settings, data_fingerprint=data_fingerprint(corpus.manifest))
    emit({"event": events.SWEEP_START, "sweep_id": sweep_id, "model": config.model, "space": format_space(space),
          "trials": int(config.trials), "folds": int(config.folds)})
    trials: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ser-sweep-") as tmp:
        _tune(config, space, corpus, Path(storage_path or tmp), sweep_id,
              on_trial=lambda t: _record_trial(t, store, corpus, sweep_id, trials, emit), should_stop=should_stop)
    trials.sort(key=lambda t: t["trial"])  # they ended in any order
    done = [t for t in trials if t["state"] == "done"]
    best = max(done, key=lambda t: t["uar"]["mean"], default=None)  # the first suggested on a tie (the store
    #                                                                   keeps it: the Leaderboard shows this one)
    if should_stop and should_stop():  # cancelled: the sweep ends with the best trial so far, nothing saved
        store.finish_sweep(sweep_id, best_run=best and best["run_id"])
        raise KeyboardInterrupt("cancelled")
    saved = None
    if best is not None and save_to is not None:
        from .evaluation import save_final_model

        emit({"event": events.FINAL, "run_id": best["run_id"]})
        saved = str(save_final_model(best.pop("_result"), corpus, save_to, store=store))
    for t in trials:
        t.pop("_result", None)
    store.finish_sweep(sweep_id, best_run=best and best["run_id"], saved_model=saved)
    emit({"event": events.SWEEP_DONE, "sweep_id": sweep_id, "best": best, "saved_model": saved})
    return SweepResult(sweep_id, config.model, format_space(space), trials, best, saved,
                       time.perf_counter() - t0)


def _record_trial(trial: dict, store, corpus, sweep_id: str, trials: list, emit) -> None:
    """The driver's part of a finished trial: its run recorded in ``store`` (finished trials only), the
    ``TRIAL_DONE`` event."""
    from .evaluation import record_run

    result = trial.pop("result", None)
    if result is not None:
        result = record_run(store, result, corpus, sweep=sweep_id, trial=trial["trial"])
        s = result.summary
        trial.update(state="done", run_id=result.run_id, uar=s["uar"], accuracy=s["accuracy"],
                     folds_done=len(result.folds))
    trials.append({**trial, "_result": result})
    emit({"event": events.TRIAL_DONE, **trial})


def _trial(params: dict, *, config: SweepConfig, corpus) -> None:
    """One Ray Tune trial, in a Ray worker: the sweep's cross-validation with ``params`` in this process, no
    store (the driver records it). Reports the running mean UAR after every fold but the last (what early
    stopping compares), then the whole result."""
    import numpy as np
    from ray import tune

    from .evaluation import cross_validate

    uars = []

    def on_fold(e):
        if e["event"] == events.FOLD_DONE and e["fold"] < e["folds"] - 1:
            uars.append(e["metrics"]["uar"])
            tune.report({"uar": float(np.mean(uars)), "folds_done": len(uars)})

    result = cross_validate(config.run_config(params), corpus, store=None, use_cache=False, progress=on_fold,
                            n_jobs=1)
    tune.report({"uar": result.summary["uar"]["mean"], "folds_done": len(result.folds), RESULT: result})


def _tune(config: SweepConfig, space: dict, corpus, storage: Path, name: str, *, on_trial, should_stop) -> None:
    """Ray Tune with an Optuna (TPE) search seeded by ``config.seed``: ``on_trial(trial dict)`` is called in this
    process as each trial ends (``{"trial": its number in the order the search suggested it, "params", "state":
    done | stopped | failed, "result": RunResult or absent, "uar": running mean, "folds_done", "error"}``)."""
    import logging
    import os

    from . import cluster

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard copies
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C cancels the sweep, as it stops `train`
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    cluster.connect()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for logger in ("ray.tune", "ray.train", "ray.air"):  # a failed trial's traceback: one line per trial instead
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    concurrency = int(config.concurrency or max(1, int(cluster.cluster_info()["cpus"])))
    scheduler = ASHAScheduler(time_attr="folds_done", max_t=int(config.folds), grace_period=1,
                              reduction_factor=2) if config.early_stop else None
    # reuse_actors: a trial runs in the worker of a finished one instead of a fresh process that imports ser_core
    # and scikit-learn again (on 2 busy cores a 6-trial LDA sweep took 17 s instead of 94 s)
    trainable = tune.with_resources(tune.with_parameters(_trial, config=config, corpus=corpus), {"cpu": 1})
    tuner = tune.Tuner(
        trainable, param_space={n: d.domain() for n, d in space.items()},
        tune_config=tune.TuneConfig(metric="uar", mode="max", num_samples=int(config.trials),
                                    max_concurrent_trials=concurrency, scheduler=scheduler, reuse_actors=True,
                                    search_alg=OptunaSearch(seed=int(config.seed))),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=[_Ended(name)], stop=_Cancel(name),
                                  failure_config=tune.FailureConfig(max_failures=0)))
    _HOOKS[name] = (on_trial, should_stop)
    try:
        tuner.fit()
    finally:
        _HOOKS.pop(name, None)


# The driver's hooks of each running sweep, by sweep id. The Tune callback and stopper hold only the id: Tune
# pickles its run config (callbacks and stopper included) into its experiment folder, and the hooks reach
# objects that do not pickle (a job worker and its watchdog thread, the results store).
_HOOKS: dict = {}


def _hook(sweep_id: str, i: int):
    """The sweep's ``on_trial`` (0) or ``should_stop`` (1) hook, None once it ended. Imported at call time: the
    callback classes are built inside functions, so cloudpickle would copy a global they name (``_HOOKS``)
    into Tune's experiment state."""
    from ser_core.sweep import _HOOKS

    return _HOOKS.get(sweep_id, (None, None))[i]


def format_params(params: dict) -> str:
    """``C=1.714, gamma=scale``: a trial's parameters as the CLI and the Train page print them."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def trial_outcome(event: dict, folds: int) -> str:
    """What a ``TRIAL_DONE`` event says of its trial, for the CLI and the job log: its UAR and run, how far an
    early-stopped trial got, or a failed one's error."""
    if event["state"] == "done":
        return f"UAR {event['uar']['mean']:.3f} ± {event['uar']['std']:.3f} (run {event['run_id']})"
    if event["state"] == "stopped":
        return (f"stopped early after {event['folds_done']} of {folds} folds (UAR so far "
                f"{event['uar']['mean']:.3f}; not stored)")
    return f"failed: {event['error']}"


def _plain(params: dict) -> dict:
    """Drawn values as plain Python (numpy scalars -> int/float), as stored and printed."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in params.items()}


def _error_line(trial) -> str:
    """The last line of a failed trial's error (a ConfigError's sentence; a bug's exception), read from the error
    file Tune has just written in the driver's copy of the trial folder (its storage copy comes later)."""
    try:
        text = Path(trial.error_file).read_text(errors="replace") if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "the trial failed (Ray Tune kept no error)"


def _Ended(sweep_id):
    """A Tune callback (built here: Ray is imported lazily) handing each ended trial to the sweep's
    ``on_trial`` hook (``_HOOKS``)."""
    from ray import tune

    class Ended(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            on_trial = _hook(sweep_id, 0)
            on_trial({"trial": trials.index(trial) + 1, "params": _plain(trial.config),
                      "state": "done" if RESULT in last else "stopped",
                      "result": last.get(RESULT), "uar": {"mean": last.get("uar"), "std": None}, "accuracy": None,
                      "run_id": None, "folds_done": last.get("folds_done", 0), "error": None})

        def on_trial_error(self, iteration, trials, trial, **info):
            on_trial = _hook(sweep_id, 0)
            on_trial({"trial": trials.index(trial) + 1, "params": _plain(trial.config), "state": "failed",
                      "uar": None, "accuracy": None,
                      "run_id": None, "folds_done": 0, "error": _error_line(trial)})

    return Ended()


def _Cancel(sweep_id):
    """A Tune stopper ending every trial once the sweep's ``should_stop()`` hook (``_HOOKS``) says so (the
    user's cancel)."""
    from ray import tune

    class Cancel(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            should_stop = _hook(sweep_id, 1)
            return bool(should_stop and should_stop())

    return Cancel()


def trials_table(job_events: list[dict]) -> list[dict]:
    """The trials of a sweep job so far, from its events: ``[{"trial", "state", "uar_mean", "uar_std", "run_id",
    **params}]`` in the order they ended (the Train page's table and plot)."""
    rows = []
    for e in job_events:
        if e.get("event") == events.TRIAL_DONE:
            uar = e.get("uar") or {}
            rows.append({"trial": e["trial"], "state": e["state"], "uar_mean": uar.get("mean"),
                         "uar_std": uar.get("std"), "run_id": e.get("run_id"), **(e.get("params") or {}),
                         **({"error": e["error"]} if e.get("error") else {})})
    return rows


__all__ = ["DISTRIBUTIONS", "SUGGESTED_SPACES", "Dimension", "SweepConfig", "SweepResult", "format_params",
           "format_space", "parse_space", "run_sweep", "trial_outcome", "trials_table"]
