"""The default models shipped in trained_models/: complete cards, small enough, and usable from the CLI on
a RAVDESS folder in the official download's format (48 kHz WAV in Actor_XX/)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ravdess_48k

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "trained_models"
REQUIRED = {"svm", "random_forest", "mlp_tf", "fcnn_torch", "transformer_torch", "cnn", "cnn_lstm"}


def cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "SER_MODELS_DIR"}
    proc = subprocess.run([sys.executable, "-m", "ser_core", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_cards_and_size():
    models = cli("models", "--json")
    names = {m["name"] for m in models}
    assert REQUIRED <= names
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 60e6, f"shipped models take {total / 1e6:.1f} MB"
    for m in models:
        card = json.loads((SHIPPED / m["name"] / "card.json").read_text())
        assert card["training_data"]["clips"] == 960 and card["training_data"]["speakers"] == 16
        assert card["cv"]["split"] == "speaker" and card["cv"]["k"] == 4 and not card["cv"]["speaker_dependent"]
        assert len(card["labels"]) == 8
        assert 0.125 < card["cv"]["metrics"]["uar"]["mean"] <= 1  # above the majority baseline
        assert (SHIPPED / m["name"] / "README.md").is_file()


@pytest.fixture(scope="module")
def ravdess_48k_folder(shared_ravdess, tmp_path_factory):
    return ravdess_48k(shared_ravdess, tmp_path_factory.mktemp("dl"), ("15", "16"), step=4)


@pytest.mark.slow
def test_evaluate_every_shipped_model_on_original_layout(ravdess_48k_folder):
    for m in cli("models", "--json"):
        ev = cli("evaluate", "--model", m["name"], "--data", ravdess_48k_folder, "--json")
        assert ev["n"] == 30 and ev["corpus"] == "ravdess"
        assert ev["uar"] > 0.125, (m["name"], ev["uar"])  # seen speakers: far above chance


@pytest.mark.slow
def test_predict_all_on_a_clip(ravdess_48k_folder):
    clip = next(ravdess_48k_folder.glob("Actor_15/*.wav"))
    preds = cli("predict", "--model", "all", clip, "--ensemble", "--json")
    names = {p["model"] for p in preds}
    assert REQUIRED | {"ensemble"} <= names
    for p in preds:
        assert set(p["probabilities"]) == {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                                           "surprised"}
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
