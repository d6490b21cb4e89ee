"""Runs that never mix: `train` processes sharing one models folder and one results store at once, and a cached
run served only with the model that run produced. Real subprocesses on 4 shared RAVDESS actors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import symlink_actors
from ser_core.results import ResultsStore
from ser_core.saved import LOCK_NAME, read_card

REPO = Path(__file__).resolve().parents[1]
MODELS = ("svm", "decision_tree")  # fast: each run is mostly process start-up


@pytest.fixture(scope="module")
def data(shared_ravdess, tmp_path_factory):
    """48 clips: 12 of each of four actors (symlinks)."""
    return symlink_actors(shared_ravdess, tmp_path_factory.mktemp("ravdess48"), ("01", "02", "03", "04"), 12)


def _train(data, tmp_path, *args):
    """Start `train --json --replace-shipped` on the test's shared store and (shipped) models folder, where
    each model has one folder that every run replaces; returns the process."""
    env = {**os.environ, "SER_RESULTS_DB": str(tmp_path / "r.sqlite"), "SER_MODELS_DIR": str(tmp_path / "models")}
    return subprocess.Popen([sys.executable, "-m", "ser_core", "train", "--data", str(data), "--json",
                             "--replace-shipped", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc) -> tuple[list, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    return json.loads(out), err


@pytest.mark.slow
def test_concurrent_trains_into_one_models_folder_and_store(data, tmp_path):
    runs = [("--folds", "2", "--seed", "1"), ("--folds", "3", "--seed", "2"), ("--folds", "2", "--seed", "3")]
    procs = [_train(data, tmp_path, "--models", ",".join(MODELS), *args) for args in runs]
    reported = [r for p in procs for r in _finish(p)[0]]
    store = ResultsStore(tmp_path / "r.sqlite")
    stored = store.runs(status=None)
    assert sorted(stored["id"]) == sorted(r["run_id"] for r in reported) and len(stored) == 6
    assert set(stored["status"]) == {"done"}
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == sorted([LOCK_NAME, *MODELS])  # no temporary folders
    for name in MODELS:
        card = read_card(models / name)
        mine = stored[stored["model"] == name]
        claiming = mine[mine["saved_model"] == str(models / name)]
        assert list(claiming["id"]) == [card["cv"]["run_id"]]  # only the run whose model is there names it
        run = store.get_run(card["cv"]["run_id"])
        assert (card["cv"]["k"], card["cv"]["seed"], card["cv"]["config_hash"]) == (run["k"], run["seed"],
                                                                                    run["config_hash"])
        assert card["cv"]["metrics"]["uar"] == run["summary"]["uar"]
        assert card["cv"]["results_store"] == str((tmp_path / "r.sqlite").resolve())
        finished = [store.get_run(int(i))["finished_at"] for i in mine["id"]]
        assert run["finished_at"] == max(finished)  # the last to finish is the one that saved last


@pytest.mark.slow
def test_a_cached_run_comes_with_its_own_model_or_none(data, tmp_path, capsys):
    from ser_core.cli import main

    def train(*args):  # in this process: the sequence, not the start-up, is under test
        assert main(["train", "--data", str(data), "--models", "svm", "--json", "--db", str(tmp_path / "r.sqlite"),
                     "--models-dir", str(tmp_path / "models"), "--replace-shipped", *args]) == 0
        out = capsys.readouterr()
        return json.loads(out.out), out.err

    folder = str(tmp_path / "models" / "svm")
    (first,), _ = train("--folds", "2", "--seed", "1")
    (second,), _ = train("--folds", "3", "--seed", "2")  # replaces the first run's model
    assert read_card(folder)["cv"]["run_id"] == second["run_id"]
    assert ResultsStore(tmp_path / "r.sqlite").get_run(first["run_id"])["saved_model"] is None

    (no_save,), _ = train("--folds", "2", "--seed", "1", "--no-save")  # served, and says it has no model
    assert no_save["cached"] and no_save["run_id"] == first["run_id"] and no_save["saved_model"] is None

    (third,), err = train("--folds", "2", "--seed", "1")  # wants a model: trained again to save one
    assert not third["cached"] and third["run_id"] not in (first["run_id"], second["run_id"])
    assert f"Stored run {first['run_id']} has this configuration but no saved model of its own" in err
    assert third["uar"] == first["uar"]  # same configuration, same data, same seed
    card = read_card(folder)
    assert (card["cv"]["run_id"], card["cv"]["k"], card["cv"]["seed"]) == (third["run_id"], 2, 1)

    (fourth,), _ = train("--folds", "2", "--seed", "1")
    assert fourth["cached"] and fourth["run_id"] == third["run_id"] and fourth["saved_model"] == folder
