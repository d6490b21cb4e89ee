"""The default models shipped in trained_models/: trained on RAVDESS, TESS and EmoDB with the shared taxonomy,
complete cards (the corpora, the calibration out of domain), small enough, and usable from the CLI on a RAVDESS
folder in the official download's format (48 kHz WAV in Actor_XX/)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ravdess_48k

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "trained_models"
REQUIRED = {"svm", "lda", "random_forest", "decision_tree", "fcnn_torch", "adaptive_svm", "adaptive_lda", "ensemble"}
SHARED_LABELS = {"neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"}  # taxonomy "shared"


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
        data = card["training_data"]
        assert data["taxonomy"] == "shared" and list(data["corpora"]) == ["ravdess", "tess", "emodb"]
        assert data["clips"] == 4214 and data["speakers"] == 28
        assert card["cv"]["split"] == "speaker" and card["cv"]["k"] == 4 and not card["cv"]["speaker_dependent"]
        assert set(card["labels"]) == SHARED_LABELS
        assert 1 / 7 < card["cv"]["metrics"]["uar"]["mean"] <= 1  # above the majority baseline
        assert set(card["cv"]["per_corpus"]) == {"ravdess", "tess", "emodb"}
        # calibrated out of domain: each corpus held out in turn, the scores kept beside the model
        assert card["calibration"]["method"] == "familiarity" and set(card["transfer"]["per_corpus"]) == \
            {"ravdess", "tess", "emodb"}
        for f in ("README.md", "familiarity.npz", "transfer_oof.npz"):
            assert (SHIPPED / m["name"] / f).is_file(), (m["name"], f)


@pytest.fixture(scope="module")
def ravdess_48k_folder(shared_ravdess, tmp_path_factory):
    return ravdess_48k(shared_ravdess, tmp_path_factory.mktemp("dl"), ("15", "16"), step=4)


@pytest.mark.slow
def test_evaluate_every_shipped_model_on_original_layout(ravdess_48k_folder):
    for m in cli("models", "--json"):
        ev = cli("evaluate", "--model", m["name"], "--data", ravdess_48k_folder, "--json")
        assert ev["n"] == 30 and ev["corpus"] == "ravdess"  # calm clips counted as neutral (shared taxonomy)
        assert ev["uar"] > 1 / 7, (m["name"], ev["uar"])  # seen speakers: far above chance


@pytest.mark.slow
def test_predict_all_on_a_clip(ravdess_48k_folder):
    clip = next(ravdess_48k_folder.glob("Actor_15/*.wav"))
    preds = cli("predict", "--model", "all", clip, "--ensemble", "--json")
    names = {p["model"] for p in preds}
    assert REQUIRED | {"ensemble"} <= names
    for p in preds:
        assert set(p["probabilities"]) == SHARED_LABELS
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert set(p["arousal"]) == {"high", "low"} and set(p["valence"]) == {"negative", "neutral", "positive"}
