"""The command line as a user runs it: real subprocesses, real shared RAVDESS clips."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ravdess_48k, symlink_actors

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "ser_core", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.mark.slow
def test_data_info_on_shared_ravdess(shared_ravdess):
    info = json.loads(run_cli("data", "info", shared_ravdess, "--json").stdout)
    assert info["corpus"] == "ravdess"
    assert info["clips"] == 960 and info["speakers"] == 16
    assert info["emotions"] == {"neutral": 64, "calm": 128, "happy": 128, "sad": 128, "angry": 128,
                                "fearful": 128, "disgust": 128, "surprised": 128}
    assert 55 * 60 < info["duration_s"] < 63 * 60
    assert info["skipped"] == []


@pytest.mark.parametrize("args, needle", [
    (("data", "info", "/no/such/folder"), "error:"),
    (("predict", "--model", "no_such_model", "x.wav"), "error:"),
    (("train", "--data", "/no/such/folder", "--models", "svm"), "error:"),
    (("train", "--data", ".", "--models", "svn"), "svm"),  # a typo lists the close match
    (("features", ".", "--set", "nope"), "error:"),
])
def test_user_mistakes_are_one_line(args, needle):
    proc = run_cli(*args, check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_help_everywhere():
    for cmd in ([], ["data", "info"], ["data", "download"], ["features"], ["train"], ["evaluate"], ["predict"],
                ["models"], ["models", "delete"], ["leaderboard"], ["sweep"]):
        proc = run_cli(*cmd, "--help")
        assert "usage:" in proc.stdout


@pytest.fixture(scope="module")
def small_ravdess(shared_ravdess, tmp_path_factory):
    """Four shared actors (symlinked, original names)."""
    return symlink_actors(shared_ravdess, tmp_path_factory.mktemp("ravdess4"), ("01", "02", "03", "04"))


@pytest.fixture(scope="module")
def original_layout(shared_ravdess, tmp_path_factory):
    """Two actors in the official download's format: 48 kHz 16-bit WAV in Actor_XX/ folders."""
    return ravdess_48k(shared_ravdess, tmp_path_factory.mktemp("ravdess48k"), ("05", "06"), step=3)


@pytest.mark.slow
def test_train_evaluate_predict_leaderboard(small_ravdess, original_layout, tmp_path):
    env = {"SER_RESULTS_DB": str(tmp_path / "r.sqlite"), "SER_MODELS_DIR": str(tmp_path / "models")}
    out = json.loads(run_cli("train", "--data", small_ravdess, "--models", "svm,majority", "--folds", "2",
                             "--json", env=env).stdout)
    assert [r["model"] for r in out] == ["svm", "majority"]
    svm, majority = out
    assert not svm["cached"] and svm["uar"]["mean"] > majority["uar"]["mean"]
    # identical config on identical data: served from the store
    again = json.loads(run_cli("train", "--data", small_ravdess, "--models", "svm", "--folds", "2", "--json",
                               env=env).stdout)
    assert again[0]["cached"] and again[0]["run_id"] == svm["run_id"]

    models = json.loads(run_cli("models", "--json", env=env).stdout)  # yours: named after model, data and run
    names = {f"svm-ravdess-run{svm['run_id']}", f"majority-ravdess-run{majority['run_id']}"}
    assert {m["name"] for m in models} == names and {m["source"] for m in models} == {"yours"}
    assert all(m["labels"] and "uar" in m["cv"] for m in models)
    assert {Path(svm["saved_model"]).name, Path(majority["saved_model"]).name} == names

    ev = json.loads(run_cli("evaluate", "--model", f"svm-ravdess-run{svm['run_id']}", "--data", original_layout,
                            "--json", env=env).stdout)
    assert ev["n"] == 40 and 0 <= ev["uar"] <= 1
    for key in ("accuracy", "weighted_precision", "weighted_recall", "macro_f1", "per_class_recall", "confusion"):
        assert key in ev

    clip = next(original_layout.glob("Actor_05/*.wav"))
    preds = json.loads(run_cli("predict", "--model", "all", clip, "--json", env=env).stdout)
    assert {p["model"] for p in preds} == names
    for p in preds:
        assert p["file"] == str(clip)
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-5
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)

    board = run_cli("leaderboard", env=env).stdout
    assert "svm" in board and "majority" in board


@pytest.mark.slow
def test_predict_rejects_non_audio(tmp_path):
    bad = tmp_path / "fake.wav"
    bad.write_text("this is not audio")
    proc = run_cli("predict", "--model", "all", bad, "--models-dir", REPO / "trained_models", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
