"""Keras model family on small separable synthetic data (few epochs, tiny networks)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ser_core.errors import ModelError
from ser_core.models import create_model
from ser_core.models.base import load_model_dir

REPO = Path(__file__).resolve().parents[1]
CLASSES = np.array(["angry", "happy", "sad"])


def _labels(n):
    return np.arange(n) % 3


def utterances(n=90, seed=0):
    rng = np.random.default_rng(seed)
    lab = _labels(n)
    X = rng.normal(size=(n, 12))
    X[:, :3] += 3 * np.eye(3)[lab]
    return X.astype(np.float32), CLASSES[lab]


def images(n=60, seed=0):
    """(n, 16, 24) images whose class lights up one band of mel rows; padding filled with the minimum."""
    rng = np.random.default_rng(seed)
    lab = _labels(n)
    X = rng.normal(size=(n, 16, 24)) - 40
    for c in range(3):
        X[lab == c, 5 * c:5 * c + 5] += 4
    X[::2, :, 20:] = X.min()
    return X.astype(np.float32), CLASSES[lab]


def sequences(n=60, seed=0):
    """(n, 20, 6) frame sequences with class-dependent means; every other clip zero-padded after frame 12."""
    rng = np.random.default_rng(seed)
    lab = _labels(n)
    X = rng.normal(size=(n, 20, 6))
    X[:, :, :3] += 2 * np.eye(3)[lab][:, None, :]
    X[::2, 12:] = 0
    return X.astype(np.float32), CLASSES[lab]


CASES = {
    "mlp_tf": (utterances, dict(hidden=(16,), epochs=30, patience=30)),
    "cnn": (images, dict(filters=(8, 8), epochs=15, patience=15, batch_size=16, lr=3e-3, freq_mask=3, time_mask=4)),
    "lstm": (sequences, dict(units=8, dense=8, epochs=15, patience=15, lr=1e-2, frame_stride=1)),
    "cnn_lstm": (sequences, dict(filters=(8,), units=8, epochs=15, patience=15, lr=1e-2)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_trains_predicts_and_round_trips(name, tmp_path):
    make, params = CASES[name]
    X, y = make()
    seen = []
    model = create_model(name, **params).fit(X, y, progress=lambda epoch, logs: seen.append((epoch, logs)))
    assert list(model.classes_) == list(CLASSES)
    assert seen and seen[0][0] == 0 and "loss" in seen[0][1] and "val_loss" in seen[0][1]
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (model.predict(X) == y).mean() > 0.6  # separable: well above chance (1/3)

    loaded = load_model_dir(model.save(tmp_path / name))
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    np.testing.assert_allclose(loaded.predict_proba(X), proba, rtol=1e-5, atol=1e-6)
    assert loaded.history_["loss"] == model.history_["loss"]


@pytest.mark.slow
def test_same_seed_same_model():
    X, y = utterances(60)
    a = create_model("mlp_tf", hidden=(8,), epochs=5, seed=3).fit(X, y).predict_proba(X)
    b = create_model("mlp_tf", hidden=(8,), epochs=5, seed=3).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_focal_loss_and_oversampling_train():
    X, y = utterances(90)
    keep = (y != "sad") | (np.arange(90) < 30)  # imbalanced: 30 angry, 30 happy, 10 sad
    X, y = X[keep], y[keep]
    model = create_model("mlp_tf", hidden=(16,), epochs=20, patience=20, lr=1e-2, focal_gamma=2.0,
                         oversample=True, class_weight=None).fit(X, y)
    assert (model.predict(X) == y).mean() > 0.6


def test_focal_loss_down_weights_easy_examples():
    from ser_core.models.keras_models import focal_loss

    y_true = np.eye(2, dtype=np.float32)[[0, 0]]
    y_pred = np.array([[0.9, 0.1], [0.3, 0.7]], np.float32)
    ce = -np.log([0.9, 0.3])
    np.testing.assert_allclose(np.asarray(focal_loss(0.0)(y_true, y_pred)), ce, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(focal_loss(2.0)(y_true, y_pred)), ce * np.array([0.1, 0.7]) ** 2,
                               rtol=1e-5)


@pytest.mark.slow
def test_sequence_padding_is_ignored():
    """A clip padded with extra zero frames gets the same prediction as the unpadded one."""
    X, y = sequences(60)
    model = create_model("lstm", units=8, dense=8, epochs=3, frame_stride=1).fit(X, y)
    clip = X[1:2].copy()  # 20 real frames
    longer = np.concatenate([clip[:, :12], np.zeros_like(clip[:, 12:])], axis=1)
    ref = model.predict_proba(clip[:, :12])  # same 12 frames, no padding at all
    np.testing.assert_allclose(model.predict_proba(longer), ref, atol=1e-5)


def test_wrong_input_shape_is_a_model_error():
    X, y = utterances(30)
    with pytest.raises(ModelError, match="log-mel images"):
        create_model("cnn").fit(X, y)
    with pytest.raises(ModelError, match="not fitted"):
        create_model("mlp_tf").predict_proba(X)


@pytest.mark.slow
def test_vgg16_imagenet_offline_falls_back_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # no cached weights file
    X, y = images(24)
    model = create_model("vgg16_transfer", image_size=(32, 32), epochs=1, dense=8)
    with pytest.warns(RuntimeWarning, match="ImageNet weights could not be loaded .*training VGG16 from scratch"):
        model.fit(X, y)
    assert model.weights_loaded_ == "none"
    assert model.predict_proba(X).shape == (24, 3)
    assert load_model_dir(model.save(tmp_path / "vgg")).weights_loaded_ == "none"


@pytest.mark.slow
def test_vgg16_local_weights_file_freezes_early_blocks(tmp_path):
    import keras

    path = tmp_path / "vgg_backbone.weights.h5"
    keras.utils.set_random_seed(1)
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    backbone.save_weights(path)
    X, y = images(24)
    model = create_model("vgg16_transfer", weights=str(path), image_size=(32, 32), epochs=2, dense=8,
                         trainable_blocks=1).fit(X, y)
    assert model.weights_loaded_ == str(path)
    trained = {l.name: l for l in model.model_.layers}
    np.testing.assert_array_equal(trained["block1_conv1"].get_weights()[0],
                                  backbone.get_layer("block1_conv1").get_weights()[0])  # frozen, from the file
    assert not np.allclose(trained["block5_conv3"].get_weights()[0],
                           backbone.get_layer("block5_conv3").get_weights()[0])  # fine-tuned
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ModelError, match="does not exist"):
        create_model("vgg16_transfer", weights=str(tmp_path / "missing.h5"), image_size=(32, 32)).fit(X, y)


@pytest.mark.slow
def test_tensorflow_is_imported_only_when_a_keras_model_is_created():
    code = textwrap.dedent("""
        import sys
        import ser_core
        from ser_core.models import create_model, list_models, get_spec
        assert "vgg16_transfer" in list_models() and get_spec("cnn").framework == "tensorflow"
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        create_model("wav2vec2_probe")
        assert "tensorflow" not in sys.modules
        create_model("cnn")
        assert "tensorflow" in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
