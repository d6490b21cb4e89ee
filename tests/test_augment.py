import numpy as np
import pytest

from ser_core.augment import augment_signal, parse_augment
from ser_core.errors import ConfigError

SR = 16000


def _tone(seconds=1.0, f=220.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def _peak_hz(y):
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.fft.rfftfreq(len(y), 1 / SR)[spec.argmax()]


def test_noise_snr_and_determinism():
    y = _tone()
    a, b = augment_signal(y, SR, "noise", seed=3), augment_signal(y, SR, "noise", seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, augment_signal(y, SR, "noise", seed=4))
    snr = 10 * np.log10(np.mean(y**2) / np.mean((a - y) ** 2))
    assert 14 < snr < 31


@pytest.mark.slow
def test_stretch_changes_length_not_pitch():
    y = _tone()
    z = augment_signal(y, SR, "stretch", seed=1)
    assert 0.85 * len(y) / 1.16 < len(z) < len(y) / 0.84 and len(z) != len(y)
    assert abs(_peak_hz(z) - 220) < 10


@pytest.mark.slow
def test_pitch_shift_moves_the_peak():
    z = augment_signal(_tone(), SR, "pitch", seed=2)
    ratio = _peak_hz(z) / 220
    assert len(z) == SR and 2 ** (-2.1 / 12) < ratio < 2 ** (2.1 / 12) and abs(ratio - 1) > 0.02


def test_parse_augment():
    assert parse_augment("noise, pitch") == ("noise", "pitch")
    assert parse_augment(None) == () and parse_augment("none") == ()
    with pytest.raises(ConfigError):
        parse_augment("reverb")


@pytest.mark.slow
def test_cv_adds_augmented_copies_of_training_clips_only(shared_ravdess, tmp_path, monkeypatch):
    from ser_core import evaluation, models
    from ser_core.corpora import load_corpus

    from helpers import symlink_actors

    corpus = load_corpus(symlink_actors(shared_ravdess, tmp_path, ("01", "02"), per_actor=16))
    seen = []
    real_create = models.create_model

    def spy(name, **params):
        m = real_create(name, **params)
        fit, proba = m.fit, m.predict_proba
        m.fit = lambda X, y: seen.append(("fit", len(X))) or fit(X, y)
        m.predict_proba = lambda X: seen.append(("test", len(X))) or proba(X)
        return m

    monkeypatch.setattr(models, "create_model", spy)
    res = evaluation.cross_validate(evaluation.RunConfig(model="majority", folds=2, augment=("noise",)), corpus)
    fits = [n for k, n in seen if k == "fit"]
    tests = [n for k, n in seen if k == "test"]
    assert fits == [2 * f["n_train"] for f in res.folds]  # originals + one noisy copy each
    assert tests == [f["n_test"] for f in res.folds]  # test folds never augmented


@pytest.mark.slow
def test_copies_syntax_gives_several_distinct_copies(shared_ravdess, tmp_path, monkeypatch):
    from ser_core import evaluation
    from ser_core.augment import augment_copies
    from ser_core.corpora import load_corpus

    assert parse_augment("speed*3,noise") == ("speed*3", "noise")
    assert augment_copies(("speed*3", "noise")) == [("speed", "speed", 0), ("speed#2", "speed", 1),
                                                    ("speed#3", "speed", 2), ("noise", "noise", 0)]
    for bad in ("speed*0", "speed*x", "speed*17", "warp*2"):
        with pytest.raises(ConfigError):
            parse_augment(bad)
    from helpers import symlink_actors

    corpus = load_corpus(symlink_actors(shared_ravdess, tmp_path, ("01", "02"), per_actor=8))
    seen = []
    real = evaluation.with_augmented
    monkeypatch.setattr(evaluation, "with_augmented",
                        lambda X, y, X_aug, *a, **k: seen.append(X_aug) or real(X, y, X_aug, *a, **k))
    evaluation.cross_validate(evaluation.RunConfig(model="majority", folds=2, augment="speed*3"), corpus)
    copies = seen[0]
    assert list(copies) == ["speed", "speed#2", "speed#3"]
    a, b, c = copies.values()
    assert not np.allclose(a, b) or not np.allclose(b, c)  # independent draws, not one copy three times
