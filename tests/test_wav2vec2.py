"""Wav2Vec2Probe with a tiny random local encoder (no internet needed)."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.errors import ModelError
from ser_core.models import create_model
from ser_core.models.base import load_model_dir
from ser_core.models.wav2vec2 import load_backbone, make_tiny_wav2vec2

SR = 16000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny"))


def tones(n=24, seed=0):
    """Low versus high tones of varying length, zero-padded to 1.25 s."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, 20000), np.float32)
    y = np.array(["low", "high"])[np.arange(n) % 2]
    for i in range(n):
        length = rng.integers(6000, 16000)
        t = np.arange(length) / SR
        f = (200 if y[i] == "low" else 2000) * (1 + 0.05 * rng.normal())
        X[i, :length] = 0.5 * np.sin(2 * np.pi * f * t) + 0.01 * rng.normal(size=length)
    return X, y


@pytest.mark.slow
@pytest.mark.parametrize("pooling,classifier", [("mean", "random_forest"), ("mean_std", "logreg"),
                                                ("max", "random_forest")])
def test_fit_predict_save_load(tiny, tmp_path, pooling, classifier):
    X, y = tones()
    model = create_model("wav2vec2_probe", model_id=tiny, layer=-1, pooling=pooling, classifier=classifier,
                         n_estimators=50, batch_size=5)
    model.fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2) and list(model.classes_) == ["high", "low"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (model.predict(X) == y).mean() >= 0.9
    loaded = load_model_dir(model.save(tmp_path / "probe"))
    assert (loaded.model_id, loaded.layer, loaded.pooling) == (tiny, -1, pooling)
    np.testing.assert_allclose(loaded.predict_proba(X), proba)


def test_embeddings_ignore_padding_and_batching(tiny):
    X, _ = tones(6)
    model = create_model("wav2vec2_probe", model_id=tiny, layer=1, pooling="mean_std", batch_size=4)
    emb = model.embed(X)
    assert emb.shape == (6, 2 * 32)
    padded = np.pad(X, ((0, 0), (0, 8000)))  # more zero padding: same embeddings
    np.testing.assert_allclose(create_model("wav2vec2_probe", model_id=tiny, layer=1, pooling="mean_std",
                                            batch_size=1).embed(padded), emb, atol=1e-4)


def test_bad_layer_and_input_are_model_errors(tiny):
    X, y = tones(6)
    with pytest.raises(ModelError, match="Layer 7 does not exist"):
        create_model("wav2vec2_probe", model_id=tiny, layer=7).fit(X, y)
    with pytest.raises(ModelError, match="raw audio"):
        create_model("wav2vec2_probe", model_id=tiny).fit(X[:, None, :], y)


def test_missing_model_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_backbone.cache_clear()
    X, y = tones(4)
    with pytest.raises(ModelError, match="no internet and no local copy.*model_id=/path/to/folder"):
        create_model("wav2vec2_probe", model_id="nobody/no-such-wav2vec2").fit(X, y)
