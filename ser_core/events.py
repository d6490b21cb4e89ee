"""Progress events: the name of each, defined once. A run (``evaluation.cross_validate``,
``cross_corpus.train_and_test``) passes ``{"event": NAME, ...}`` to its ``progress`` callback; a training job's
worker (``ser_core.jobs``) adds the model and job events and writes them all to ``events.jsonl``; the CLI, the job
progress summary and the Train page read them by these names. The fields each carries are listed beside it.
"""
from __future__ import annotations

# -- a run ---------------------------------------------------------------------------------------------------
CACHED = "cached"  # run_id: an identical configuration on identical data is served from the store
CACHED_WITHOUT_MODEL = "cached_without_model"  # run_id, message: stored, but its saved model is gone; training
FEATURES = "features"  # feature_set, n: computing the features of n clips
FEATURES_PROGRESS = "features_progress"  # done, total: clips computed so far
FEATURES_NOT_SHARED = "features_not_shared"  # node, host, cache, message: a Ray node does not see the feature
#                                               cache's path; its features come back through the object store
FOLD_START = "fold_start"  # fold, folds, run_id
FOLD_DONE = "fold_done"  # fold, folds, run_id, metrics, n_train, n_test, test_speakers, train_time_s, latency_ms,
#                           fold_time_s; node, host, started_at where a cluster ran it (evaluation.FOLD_EXTRAS)
FINAL = "final"  # run_id: training the final model on every clip
DONE = "done"  # run_id, summary
LABELS = "labels"  # labels, dropped, message: the emotions a cross-corpus run keeps and drops (ser_core.cross_corpus)
HELD_OUT = "held_out"  # corpus, fold, folds, metrics, run_id: a run calibrated out of domain first leaves each
#                        corpus out in turn (RunConfig.ood_calibration); one event per corpus held out

# -- a job (ser_core.jobs), around its models' runs ------------------------------------------------------------
QUEUED = "queued"  # another job holds the runner
STARTED = "started"
MODEL_START = "model_start"  # model, params
MODEL_DONE = "model_done"  # model, run_id, cached, saved_model, summary
MODEL_FAILED = "model_failed"  # model, error, state (failed | cancelled)

# -- a hyperparameter sweep (ser_core.sweep), after its FEATURES events -------------------------------------------
SWEEP_START = "sweep_start"  # sweep_id, model, space, trials, folds
TRIAL_DONE = "trial_done"  # trial (1, 2, ... in the order suggested; they end in any order), params, state (done | stopped | failed), uar {mean, std},
# accuracy, run_id (done: the stored run), folds_done, error
SWEEP_DONE = "sweep_done"  # sweep_id, best (the best trial, as TRIAL_DONE, or None), saved_model (then FINAL before)


def job_finished(state: str) -> str:
    """The last event of a job that ended in ``state`` (done | failed | cancelled): ``job_<state>``."""
    return f"job_{state}"
