"""scikit-learn and PyTorch model families on small synthetic data (fast; no audio)."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.errors import ConfigError, ModelError
from ser_core.models import create_model
from ser_core.models.base import load_model_dir

LABELS = np.array(["angry", "calm", "happy", "sad"])
FAST = {  # small but sufficient settings, so the whole file stays well under a minute
    "decision_tree": {},
    "random_forest": {"n_estimators": 60},
    "svm": {},
    "fcnn_torch": {"hidden": (64, 32), "epochs": 40, "patience": 8},
}
TRANSFORMER_FAST = {"d_model": 32, "n_heads": 4, "n_layers": 1, "dim_feedforward": 64, "frame_stride": 2,
                    "epochs": 30, "patience": 10, "lr": 3e-3}


def blobs(n=240, d=16, seed=0, counts=None):
    """Gaussian blobs: class k has mean 4 * e_k (plus noise dims). ``counts`` gives an imbalanced set."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), counts) if counts is not None else rng.integers(0, 4, n)
    X = rng.normal(0, 1, (len(y), d)) + 4.0 * np.eye(d)[y]
    scales = np.random.default_rng(99)  # the same feature scales for every seed
    X = X * scales.uniform(0.5, 20, d) + scales.uniform(-50, 50, d)  # features of very different scales
    return X.astype(np.float32), LABELS[y]


def sequences(n=200, frames=40, d=12, seed=0):
    """Class k is a sinusoid of (k + 1) cycles per clip in the first 6 dims, so telling classes apart needs
    the frame order; the tail of each clip is zero padding of random length."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.arange(frames)
    X = rng.normal(0, 0.5, (n, frames, d)).astype(np.float32)
    for i in range(n):
        X[i, :, :6] += 2.0 * np.sin(2 * np.pi * (y[i] + 1) * t / frames)[:, None]
        X[i, rng.integers(frames * 3 // 4, frames + 1):] = 0.0
    return X, LABELS[y]


@pytest.fixture(scope="module")
def utt():
    X, y = blobs(300)
    return X[:200], y[:200], X[200:], y[200:]


@pytest.fixture(scope="module")
def fitted(utt):
    Xtr, ytr, _, _ = utt
    return {name: create_model(name, **params).fit(Xtr, ytr) for name, params in FAST.items()}


@pytest.fixture(scope="module")
def seq():
    X, y = sequences(260)
    return X[:200], y[:200], X[200:], y[200:]


@pytest.fixture(scope="module")
def transformer(seq):
    Xtr, ytr, _, _ = seq
    return create_model("transformer_torch", **TRANSFORMER_FAST, augment=True).fit(Xtr, ytr)


# -- learning ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAST))
def test_utterance_models_learn_blobs(fitted, utt, name):
    _, _, Xte, yte = utt
    acc = (fitted[name].predict(Xte) == yte).mean()
    assert acc >= (0.75 if name == "decision_tree" else 0.9), f"{name} accuracy {acc:.2f} (chance 0.25)"


def test_transformer_learns_frequency_patterns(transformer, seq):
    _, _, Xte, yte = seq
    acc = (transformer.predict(Xte) == yte).mean()
    assert acc >= 0.8, f"transformer accuracy {acc:.2f} (chance 0.25)"
    assert 1 <= len(transformer.history_) <= TRANSFORMER_FAST["epochs"]


@pytest.mark.parametrize("name", list(FAST) + ["majority"])
def test_proba_rows_sum_to_one_with_sorted_class_columns(fitted, utt, name):
    Xtr, ytr, Xte, _ = utt
    model = fitted.get(name) or create_model(name).fit(Xtr, ytr)
    p = model.predict_proba(Xte)
    assert p.shape == (len(Xte), 4)
    assert list(model.classes_) == sorted(LABELS)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert (p >= 0).all()
    np.testing.assert_array_equal(model.predict(Xte), model.classes_[p.argmax(1)])


def test_majority_predicts_the_most_frequent_label():
    X, y = blobs(counts=[5, 30, 10, 8])
    model = create_model("majority").fit(X, y)
    assert set(model.predict(X)) == {"calm"}
    np.testing.assert_allclose(model.predict_proba(X[:1])[0], np.array([5, 30, 10, 8]) / 53)


# -- persistence and repeatability ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAST))
def test_save_load_round_trip(fitted, utt, tmp_path, name):
    _, _, Xte, _ = utt
    model = fitted[name]
    model.save(tmp_path / name)
    again = load_model_dir(tmp_path / name)
    assert type(again) is type(model) and again.get_params().keys() == model.get_params().keys()
    np.testing.assert_array_equal(again.classes_, model.classes_)
    np.testing.assert_array_equal(again.predict_proba(Xte), model.predict_proba(Xte))


def test_svm_support_vectors_are_stored_as_float32_and_predict_the_same(fitted, utt, tmp_path):
    import joblib

    from ser_core.models.sklearn_models import PIPELINE_FILE, _support_vector_holders

    model = fitted["svm"]
    model.save(tmp_path / "svm")
    stored = _support_vector_holders(joblib.load(tmp_path / "svm" / PIPELINE_FILE))
    assert stored and all(s.support_vectors_.dtype == np.float32 for s in stored)
    assert all(s.support_vectors_.dtype == np.float64 for s in _support_vector_holders(model.pipeline_))
    again = load_model_dir(tmp_path / "svm")
    assert all(s.support_vectors_.dtype == np.float64 for s in _support_vector_holders(again.pipeline_))
    np.testing.assert_array_equal(again.predict_proba(utt[2]), model.predict_proba(utt[2]))


def test_svm_probabilities_are_a_softmax_of_its_votes_or_platt_scaled(fitted, utt, tmp_path):
    """The default SVM is fitted once and ranks the classes by its one-vs-rest decision values (the answer is
    the SVC's own); ``probability="platt"`` keeps the internal cross-validated Platt scaling; other values are
    refused."""
    from sklearn.svm import SVC

    Xtr, ytr, Xte, _ = utt
    model = fitted["svm"]
    clf = model.pipeline_.named_steps["clf"]
    assert type(clf).__name__ == "VoteSVC" and model.probability == "votes"
    proba = model.predict_proba(Xte)
    decision = clf.decision_function(model.pipeline_.named_steps["scale"].transform(Xte))
    expected = np.exp(decision - decision.max(1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(1, keepdims=True), rtol=1e-6)
    plain = SVC(C=model.C, gamma=model.gamma).fit(model.pipeline_.named_steps["scale"].transform(Xtr), ytr)
    assert (model.predict(Xte) == plain.predict(model.pipeline_.named_steps["scale"].transform(Xte))).mean() > 0.95
    platt = create_model("svm", probability="platt", seed=0).fit(Xtr, ytr)
    assert type(platt.pipeline_.named_steps["clf"]).__name__ == "CalibratedClassifierCV"
    np.testing.assert_allclose(platt.predict_proba(Xte).sum(1), 1)
    again = load_model_dir(platt.save(tmp_path / "platt"))
    assert again.probability == "platt"
    np.testing.assert_array_equal(again.predict_proba(Xte), platt.predict_proba(Xte))
    with pytest.raises(ConfigError, match="probability"):
        create_model("svm", probability="isotonic")
    two = ytr == ytr[0]  # two classes: SVC gives one margin per clip, the model still two probabilities
    binary = create_model("svm").fit(Xtr, np.where(two, "a", "b"))
    p2 = binary.predict_proba(Xte)
    assert p2.shape == (len(Xte), 2) and np.allclose(p2.sum(1), 1)
    assert (binary.predict(Xte) == binary.pipeline_.predict(Xte)).all()


def test_transformer_save_load_round_trip(transformer, seq, tmp_path):
    _, _, Xte, _ = seq
    transformer.save(tmp_path / "tr")
    again = load_model_dir(tmp_path / "tr")
    np.testing.assert_array_equal(again.predict_proba(Xte), transformer.predict_proba(Xte))
    assert again.history_ == transformer.history_


def test_torch_fits_repeat_exactly_with_a_seed(utt, seq):
    Xtr, ytr, Xte, _ = utt
    params = {**FAST["fcnn_torch"], "epochs": 5}
    a = create_model("fcnn_torch", seed=3, **params).fit(Xtr, ytr).predict_proba(Xte)
    b = create_model("fcnn_torch", seed=3, **params).fit(Xtr, ytr).predict_proba(Xte)
    c = create_model("fcnn_torch", seed=4, **params).fit(Xtr, ytr).predict_proba(Xte)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    Xs, ys, Xst, _ = seq
    params = {**TRANSFORMER_FAST, "epochs": 2, "augment": True}
    a = create_model("transformer_torch", seed=1, **params).fit(Xs, ys).predict_proba(Xst)
    b = create_model("transformer_torch", seed=1, **params).fit(Xs, ys).predict_proba(Xst)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["decision_tree", "random_forest", "svm"])
def test_sklearn_fits_repeat_with_a_seed(utt, name):
    Xtr, ytr, Xte, _ = utt
    a = create_model(name, **FAST[name], seed=7).fit(Xtr, ytr).predict_proba(Xte)
    b = create_model(name, **FAST[name], seed=7).fit(Xtr, ytr).predict_proba(Xte)
    np.testing.assert_array_equal(a, b)


# -- options -----------------------------------------------------------------------------------------------
def test_registry_overrides_and_unknown_parameters():
    assert create_model("svm", C=3.0).C == 3.0
    assert create_model("fcnn_torch", hidden=(8,)).hidden == (8,)
    assert create_model("transformer_torch").feature_set == "mfcc_seq"
    with pytest.raises(ConfigError, match="svm"):
        create_model("svm", bogus=1)
    with pytest.raises(ConfigError, match="transformer_torch"):
        create_model("transformer_torch", n_head=2)
    with pytest.raises(ConfigError, match="class_weight"):
        create_model("random_forest", class_weight="auto")
    with pytest.raises(ConfigError, match="divisible"):
        create_model("transformer_torch", d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="val_fraction"):
        create_model("fcnn_torch", val_fraction=0.9)


@pytest.mark.parametrize("name,params", [
    ("svm", {"class_weight": "balanced"}),
    ("random_forest", {"n_estimators": 60, "oversample": True}),
    ("decision_tree", {"class_weight": "balanced"}),
    ("fcnn_torch", {**FAST["fcnn_torch"], "class_weight": "balanced", "oversample": True}),
    ("fcnn_torch", {**FAST["fcnn_torch"], "focal_gamma": 2.0}),
])
def test_imbalance_options_find_the_minority_classes(name, params):
    X, y = blobs(counts=[120, 12, 12, 12], seed=1)
    Xte, yte = blobs(counts=[30, 30, 30, 30], seed=2)
    model = create_model(name, **params).fit(X, y)
    recall = [(model.predict(Xte[yte == c]) == c).mean() for c in LABELS]
    assert min(recall) >= 0.6, f"{name} {params} per-class recall {np.round(recall, 2)}"


def test_progress_callback_and_early_stopping(utt):
    Xtr, ytr, _, _ = utt
    seen = []
    model = create_model("fcnn_torch", hidden=(16,), epochs=400, patience=3, lr=3e-2)
    model.fit(Xtr, ytr, progress=lambda epoch, logs: seen.append((epoch, logs)))
    assert [e for e, _ in seen] == list(range(1, len(seen) + 1))
    assert len(seen) < 400, "early stopping never stopped"
    assert {"loss", "val_loss", "val_acc", "lr"} <= seen[0][1].keys()
    seen.clear()
    create_model("svm").fit(Xtr, ytr, progress=lambda epoch, logs: seen.append(epoch))
    assert seen == [1]


def test_sklearn_flattens_sequences(seq):
    Xtr, ytr, Xte, _ = seq
    model = create_model("decision_tree").fit(Xtr[:, :10], ytr)
    assert model.predict_proba(Xte[:, :10]).shape == (len(Xte), 4)


def test_padded_frames_do_not_change_the_transformer_output():
    import torch

    from ser_core.models.torch_models import _Encoder

    torch.manual_seed(0)
    net = _Encoder(6, 10, 3, 16, 2, 1, 32, 0.0, "sinusoidal", True).eval()
    x = torch.randn(2, 10, 6)
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[:, 7:] = False
    garbage = x.clone()
    garbage[:, 7:] = 100 * torch.randn(2, 3, 6)
    with torch.no_grad():
        torch.testing.assert_close(net(x, valid), net(garbage, valid))


# -- errors ------------------------------------------------------------------------------------------------
def test_user_errors_are_model_errors(utt, seq, fitted):
    Xtr, ytr, Xte, _ = utt
    with pytest.raises(ModelError, match="not fitted"):
        create_model("svm").predict(Xte)
    with pytest.raises(ModelError, match="labels"):
        create_model("svm").fit(Xtr, ytr[:-1])
    with pytest.raises(ModelError, match="NaN"):
        create_model("fcnn_torch").fit(np.full_like(Xtr, np.nan), ytr)
    with pytest.raises(ModelError, match="at least 2 emotion classes"):
        create_model("random_forest").fit(Xtr, np.full(len(Xtr), "sad"))
    with pytest.raises(ModelError, match="features"):
        fitted["svm"].predict(Xte[:, :5])
    with pytest.raises(ModelError, match="shape"):
        fitted["fcnn_torch"].predict(Xte[:, :5])
    with pytest.raises(ModelError, match="mfcc_seq"):
        create_model("transformer_torch").fit(Xtr, ytr)  # utterance features into a sequence model


def test_select_device_prefers_what_it_is_told():
    import torch

    from ser_core.models.torch_models import select_device

    assert select_device("cpu") == torch.device("cpu")
    auto = select_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert auto.type in {"cuda", "mps", "cpu"}
