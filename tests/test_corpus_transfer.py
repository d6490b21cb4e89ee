"""Training the PyTorch families on several corpora: domain-adversarial training and mixup across corpora
(small synthetic data; fast)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ser_core.errors import ConfigError, ModelError
from ser_core.models import create_model
from ser_core.models import torch_models as tm
from ser_core.models.base import load_model_dir

LABELS = np.array(["angry", "happy", "neutral", "sad"])
CORPORA = np.array(["emodb", "ravdess", "tess"])
FAST = {"hidden": (32,), "epochs": 30, "patience": 30, "lr": 3e-3}  # every epoch runs: no early stop
TRANSFORMER_FAST = {"d_model": 16, "n_heads": 2, "n_layers": 1, "dim_feedforward": 32, "frame_stride": 2,
                    "epochs": 3}


def corpora(n=300, d=16, shift=0.5, seed=0):
    """Class k shifts dim k by 2.5; each corpus shifts dims 8-15 by its own random offset (``shift`` sd): a
    nuisance the network can read the corpus from. Returns X (n, d), labels (n,), corpora (n,)."""
    rng = np.random.default_rng(seed)
    y, c = rng.integers(0, 4, n), rng.integers(0, 3, n)
    X = rng.normal(0, 1, (n, d)) + 2.5 * np.eye(d)[y]
    X[:, 8:] += shift * rng.normal(0, 1, (3, d - 8))[c]
    return X.astype(np.float32), LABELS[y], CORPORA[c]


def sequences(n=80, frames=12, d=6, seed=0):
    """(n, frames, d) frames with zero padding at the end of each clip, labels and two corpora."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, frames, d)).astype(np.float32)
    for i in range(n):
        X[i, rng.integers(frames // 2, frames + 1):] = 0.0
    return X, LABELS[rng.integers(0, 4, n)], CORPORA[rng.integers(0, 2, n)]


@pytest.fixture(scope="module")
def data():
    return corpora()


# -- the pieces ----------------------------------------------------------------------------------------------
def test_gradient_reversal_is_the_identity_forward_and_flips_the_gradient_scaled_backward():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = tm.grad_reverse(x, 0.4)
    torch.testing.assert_close(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.4 * w)
    assert tm.dann_ramp(0.0) == 0.0 and tm.dann_ramp(0.2) == pytest.approx(0.762, abs=1e-3)
    assert tm.dann_ramp(1.0) > 0.999


def test_mixup_partners_come_from_another_corpus_and_from_any_row_without_corpora():
    rng = np.random.default_rng(0)
    domains = rng.integers(0, 3, 200)
    pool = np.arange(0, 200, 2)  # the training rows (the others: validation)
    rows = rng.permutation(pool)[:64]
    partners = tm.mixup_partners(rows, domains, pool, rng)
    assert np.isin(partners, pool).all()
    assert (domains[partners] != domains[rows]).all()
    anywhere = tm.mixup_partners(rows, None, pool, rng)
    assert np.isin(anywhere, pool).all() and (domains[anywhere] == domains[rows]).any()
    one = np.zeros(200, dtype=int)  # a single corpus: any row, as without corpora
    assert np.isin(tm.mixup_partners(rows, one, pool, rng), pool).all()


def test_the_mix_of_sequences_keeps_every_valid_frame():
    a, b = torch.ones(2, 4, 3), torch.zeros(2, 4, 3)
    mixed = tm._mix(a, b, torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(mixed[:, 0, 0], torch.tensor([0.25, 1.0]))
    va, vb = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool), torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    assert tm._mix(va, vb, torch.tensor([0.9])).tolist() == [[True, True, True, False]]


def test_soft_targets_that_are_one_hot_give_the_hard_loss():
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 1])
    hot = torch.nn.functional.one_hot(target, 4).float()
    weight = torch.tensor([1.0, 0.5, 2.0, 3.0])
    for w, gamma in ((None, 0.0), (weight, 0.0), (weight, 2.0)):
        torch.testing.assert_close(tm._soft_loss(logits, hot, w, gamma), tm._loss(logits, target, w, gamma))


# -- in training ---------------------------------------------------------------------------------------------
def _corpus_probe_accuracy(model, X, domains) -> float:
    """How well a fresh logistic regression reads the corpus from the network's last hidden layer (3-fold CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    with torch.no_grad():
        h = model.net_.embed(torch.from_numpy(model._inputs(X)[0])).numpy()
    return cross_val_score(LogisticRegression(max_iter=1000), h, domains, cv=3).mean()


def test_domain_adversarial_training_trains_the_corpus_head_and_hides_the_corpus(data):
    X, y, dom = data
    plain = create_model("fcnn_torch", **FAST).fit(X, y, domains=dom)
    dann = create_model("fcnn_torch", **FAST, domain_adversarial=0.3).fit(X, y, domains=dom)
    losses = [h["domain_loss"] for h in dann.history_]
    assert np.isfinite(losses).all()
    assert min(losses) < 0.95 * np.log(3), "the corpus head never learned to tell the corpora apart"
    assert "domain_loss" not in plain.history_[0]
    before, after = _corpus_probe_accuracy(plain, X, dom), _corpus_probe_accuracy(dann, X, dom)
    assert after < before - 0.05, f"corpus read from the hidden layer: {before:.2f} plain, {after:.2f} with DANN"
    assert (dann.predict(X) == y).mean() >= 0.85  # and the emotions are still learned


def test_mixup_draws_partners_from_another_corpus_in_training(data, monkeypatch):
    X, y, dom = data
    seen, draw = [], tm.mixup_partners

    def recording(rows, domains, pool, rng):
        seen.append((rows, domains, draw(rows, domains, pool, rng)))
        return seen[-1][2]

    monkeypatch.setattr(tm, "mixup_partners", recording)
    model = create_model("fcnn_torch", **{**FAST, "epochs": 2}, mixup=0.4).fit(X, y, domains=dom)
    assert len(seen) == 2 * int(np.ceil(270 / 32))  # every batch of the 270 training rows (10 % validation)
    for rows, domains, partners in seen:
        assert (CORPORA[domains] == dom).all()  # each row's corpus, as an index into the sorted names
        assert (domains[partners] != domains[rows]).all()
    assert np.isfinite(model.history_[-1]["loss"])


def test_defaults_train_exactly_as_before_and_one_corpus_changes_nothing(data):
    X, y, dom = data
    params = {**FAST, "epochs": 4}
    reference = create_model("fcnn_torch", **params).fit(X, y).predict_proba(X)
    same = [create_model("fcnn_torch", **params).fit(X, y, domains=dom),  # the defaults: both off
            create_model("fcnn_torch", **params, domain_adversarial=0.3).fit(X, y),  # no corpora
            create_model("fcnn_torch", **params, domain_adversarial=0.3).fit(X, y, domains=np.full(len(y), "tess"))]
    for model in same:
        np.testing.assert_array_equal(model.predict_proba(X), reference)
    changed = create_model("fcnn_torch", **params, domain_adversarial=0.3).fit(X, y, domains=dom)
    assert not np.array_equal(changed.predict_proba(X), reference)


def test_cross_validation_hands_the_corpora_to_the_torch_models(data):
    from ser_core.evaluation import fit_model

    X, y, dom = data
    model = fit_model(create_model("fcnn_torch", **{**FAST, "epochs": 2}, domain_adversarial=0.3), X, y, dom)
    assert "domain_loss" in model.history_[0]


@pytest.mark.parametrize("params", [{"domain_adversarial": 0.3}, {"mixup": 0.4},
                                    {"domain_adversarial": 0.3, "mixup": 0.4}])
def test_fits_with_the_options_repeat_with_a_seed_and_save_and_load(data, tmp_path, params):
    X, y, dom = data
    fit = {**FAST, "epochs": 3, **params}
    model = create_model("fcnn_torch", **fit).fit(X, y, domains=dom)
    np.testing.assert_array_equal(create_model("fcnn_torch", **fit).fit(X, y, domains=dom).predict_proba(X),
                                  model.predict_proba(X))
    model.save(tmp_path / "m")
    state = torch.load(tmp_path / "m" / tm.WEIGHTS_FILE, weights_only=True)["state_dict"]
    assert state.keys() == create_model("fcnn_torch", **FAST).fit(X, y).net_.state_dict().keys()  # no corpus head
    again = load_model_dir(tmp_path / "m")
    assert {k: getattr(again, k) for k in params} == params
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


def test_the_transformer_takes_both_options_repeatably():
    X, y, dom = sequences()
    params = {**TRANSFORMER_FAST, "domain_adversarial": 0.3, "mixup": 0.2}
    a = create_model("transformer_torch", **params).fit(X, y, domains=dom)
    b = create_model("transformer_torch", **params).fit(X, y, domains=dom)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.isfinite([h["domain_loss"] for h in a.history_]).all()
    plain = create_model("transformer_torch", **TRANSFORMER_FAST)
    np.testing.assert_array_equal(plain.fit(X, y, domains=dom).predict_proba(X),
                                  create_model("transformer_torch", **TRANSFORMER_FAST).fit(X, y).predict_proba(X))


def test_bad_values_are_one_sentence():
    X, y, dom = corpora(n=40)
    with pytest.raises(ConfigError, match="non-negative"):
        create_model("fcnn_torch", mixup=-0.2)
    with pytest.raises(ModelError, match="domains"):
        create_model("fcnn_torch", **FAST).fit(X, y, domains=dom[:-1])
