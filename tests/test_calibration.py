"""Honest confidence: calibration metrics on hand-computed examples, temperature scaling on synthetic data with a
known temperature, cross-fitting that never uses a fold's own labels, and the calibration of a real
cross-validation run (3 shared RAVDESS actors, SVM) through the store, the saved model card, ``oof.npz``,
prediction, the CLI and the Leaderboard page."""
from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from ser_core.calibration import (ConfidenceCalibrator, TemperatureScaler, apply_calibration, apply_temperature,
                                  brier_score, cross_fitted_calibration, expected_calibration_error, label_indices,
                                  overconfident_errors, reliability_curve, uncertainty_threshold)
from ser_core.evaluation import compute_metrics, summarize

# top probabilities 0.75 (right), 0.55 (wrong), 0.65 (right), 0.95 (right): each in its own of the 15 bins
P4 = np.array([[0.75, 0.25], [0.55, 0.45], [0.35, 0.65], [0.95, 0.05]])
Y4 = np.array([0, 1, 1, 0])


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def synthetic(n=6000, k=5, scale=1.5, seed=0):
    """Logits ``z`` and labels drawn from ``softmax(z)``: ``softmax(z)`` is calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, scale, (n, k))
    y = (rng.random(n)[:, None] > np.cumsum(softmax(z), 1)).sum(1)
    return z, y


# -- metrics ------------------------------------------------------------------------------------------------
def test_ece_brier_and_overconfident_errors_by_hand():
    # one clip per bin: ECE is the mean |right - confidence| = (0.25 + 0.55 + 0.35 + 0.05) / 4
    assert expected_calibration_error(Y4, P4) == pytest.approx(0.3)
    # two bins (0, .5] and (.5, 1]: all four in the upper one, accuracy 3/4 vs mean confidence 0.725
    assert expected_calibration_error(Y4, P4, n_bins=2) == pytest.approx(0.025)
    # sum of squared differences to the one-hot row: 0.125, 0.605, 0.245, 0.005
    assert brier_score(Y4, P4) == pytest.approx(0.245)
    assert brier_score([-1], [[0.75, 0.25]]) == pytest.approx(0.625)  # unknown label: all-zero one-hot
    assert overconfident_errors(Y4, P4) == 0.0  # the only error has 0.55
    assert overconfident_errors([0, 1, 1], [[0.95, 0.05], [0.55, 0.45], [0.95, 0.05]]) == pytest.approx(0.5)
    assert overconfident_errors([0], [[0.95, 0.05]]) == 0.0  # no wrong answer
    curve = reliability_curve(Y4, P4, n_bins=2)
    assert curve["count"] == [0, 4] and curve["accuracy"] == [None, 0.75]
    assert curve["confidence"][1] == pytest.approx(0.725) and curve["lower"] == [0.0, 0.5]
    assert sum(reliability_curve(Y4, P4)["count"]) == 4


def test_unknown_labels_count_as_wrong():
    assert list(label_indices(["sad", "calm", "angry"], ["angry", "sad"])) == [1, -1, 0]
    right = expected_calibration_error([0], [[0.8, 0.2]])
    assert right == pytest.approx(0.2) and expected_calibration_error([-1], [[0.8, 0.2]]) == pytest.approx(0.8)


def test_compute_metrics_with_probabilities_in_class_order():
    y = np.array(["sad", "angry", "angry", "sad", "calm"])  # "calm" is no class of the model
    classes = ["sad", "angry"]  # columns in the model's order, not sorted
    proba = np.array([[0.75, 0.25], [0.45, 0.55], [0.35, 0.65], [0.05, 0.95], [0.9, 0.1]])
    pred = np.asarray(classes)[proba.argmax(1)]
    m = compute_metrics(y, pred, ["angry", "calm", "sad"], proba=proba, classes=classes)
    y_idx = np.array([0, 1, 1, 0, -1])
    assert m["ece"] == pytest.approx(expected_calibration_error(y_idx, proba))
    assert m["brier"] == pytest.approx(brier_score(y_idx, proba))
    assert m["wrong_over_90"] == pytest.approx(0.5)  # wrong: 0.95 (sad said angry) and 0.9 (calm said sad)
    assert m["accuracy"] == pytest.approx(0.6)
    assert "ece" not in compute_metrics(y, pred, ["angry", "calm", "sad"])


def test_summarize_calibration_metrics_only_when_every_fold_has_them():
    y = ["a", "b", "a", "b"]
    with_p = [compute_metrics(y, y, ["a", "b"], proba=np.eye(2)[[0, 1, 0, 1]] * 0.8 + 0.1) for _ in range(2)]
    old = compute_metrics(y, y, ["a", "b"])
    s = summarize(with_p)
    assert s["ece"]["mean"] == pytest.approx(0.1) and s["brier"]["mean"] == pytest.approx(0.02)
    assert "ece" not in summarize([with_p[0], old]) and summarize([old])["uar"]["mean"] == 1.0


# -- temperature scaling ------------------------------------------------------------------------------------
def test_temperature_scaling_recovers_a_known_temperature():
    z, y = synthetic()
    over = softmax(3 * z)  # the same ranking, three times too sharp
    scaler = TemperatureScaler().fit(over, y)
    assert scaler.temperature_ == pytest.approx(3.0, rel=0.1)
    fixed = scaler.transform(over)
    assert np.array_equal(fixed.argmax(1), over.argmax(1))  # accuracy and UAR untouched
    assert expected_calibration_error(y, fixed) < 0.03 < 0.1 < expected_calibration_error(y, over)
    assert brier_score(y, fixed) < brier_score(y, over)
    assert overconfident_errors(y, fixed) < overconfident_errors(y, over)
    # timid probabilities are sharpened
    assert TemperatureScaler().fit(softmax(z / 2), y).temperature_ == pytest.approx(0.5, rel=0.1)
    assert apply_temperature([[0.9, 0.1]], 2.0) == pytest.approx(np.array([[0.75, 0.25]]))


def test_cross_fitting_never_uses_a_folds_own_labels():
    z, y = synthetic(3000)
    over = softmax(3 * z)
    fold = np.arange(len(y)) % 3
    adversarial = y.copy()
    adversarial[fold == 0] = over[fold == 0].argmin(1)  # fold 0: always the least likely class
    cal, temps = cross_fitted_calibration(over, adversarial, fold)
    others = TemperatureScaler().fit(over[fold != 0], adversarial[fold != 0]).temperature_
    assert temps[0] == pytest.approx(others) and temps[0] == pytest.approx(3.0, rel=0.15)
    assert np.allclose(cal[fold == 0], apply_temperature(over[fold == 0], temps[0]))
    honest, _ = cross_fitted_calibration(over, y, fold)
    assert np.allclose(cal[fold == 0], honest[fold == 0])  # fold 0's own labels change nothing of fold 0
    assert temps[1] > 5  # while the other folds do see fold 0's labels (and flatten a lot)
    _, single = cross_fitted_calibration(over, y, np.zeros(len(y)))
    assert list(single) == [1.0]  # nothing else to learn from: left as it is


def test_uncertainty_threshold_rule():
    conf = np.array([0.25, 0.28, 0.3, 0.35, 0.5, 0.6, 0.7, 0.8])
    right = np.array([0, 0, 0, 1, 1, 1, 0, 1], bool)
    proba = np.column_stack([conf, *[(1 - conf) / 4] * 4])  # class 0 is always the top answer
    y = np.where(right, 0, 1)
    # isotonic accuracy: 0, 0, 0, then 0.75: the three least confident are below 1/3
    assert uncertainty_threshold(proba, y) == pytest.approx((0.3 + 0.35) / 2)
    assert uncertainty_threshold(proba, np.zeros(8, int)) == 0.0  # always right: never unsure
    assert uncertainty_threshold(proba, np.ones(8, int)) == 1.0  # always wrong: never sure
    # a calibrated model about 47 % right: a minority is "not sure", and those answers are mostly wrong
    z, y = synthetic(scale=1.0)
    p = softmax(z)
    t = uncertainty_threshold(p, y)
    unsure, ok = p.max(1) < t, p.argmax(1) == y
    assert t == pytest.approx(1 / 3, abs=0.05)  # calibrated: about where the probability itself says 1 in 3
    assert 0.1 < unsure.mean() < 0.4 and ok[unsure].mean() < 1 / 3 < 0.5 < ok[~unsure].mean()


# -- a real cross-validation run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(shared_ravdess, tmp_path_factory):
    """3-fold speaker-grouped CV of an SVM on actors 01-03 (one actor per fold), stored and saved."""
    from helpers import symlink_actors
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate
    from ser_core.results import ResultsStore

    base = tmp_path_factory.mktemp("calibration")
    corpus = load_corpus(symlink_actors(shared_ravdess, base / "data", ("01", "02", "03")))
    store = ResultsStore(base / "results.sqlite")
    config = RunConfig(model="svm", feature_set="rich", folds=3)
    with pytest.MonkeyPatch.context() as mp:  # the same feature cache as conftest's per-test isolation
        mp.setenv("SER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        res = cross_validate(config, corpus, store=store, save_to=base / "models" / "svm", n_jobs=2)
        again = cross_validate(config, corpus, store=store, save_to=base / "models" / "svm", n_jobs=2)
    return res, again, corpus, store, base


@pytest.mark.slow
def test_cross_validate_returns_out_of_fold_predictions_and_calibration(run):
    res, _, corpus, _, _ = run
    manifest = corpus.manifest
    oof = res.oof
    assert list(oof["paths"]) == manifest["path"].tolist() and list(oof["y"]) == manifest["emotion"].tolist()
    assert list(oof["classes"]) == res.labels and oof["proba"].shape == (len(manifest), len(res.labels))
    assert np.allclose(oof["proba"].sum(1), 1)
    speakers = manifest["speaker"].astype(str).to_numpy()
    for f in res.folds:  # each clip's fold id is the fold that tested it
        assert sorted(set(speakers[oof["fold"] == f["fold"]])) == f["test_speakers"]
    y_idx = label_indices(oof["y"], oof["classes"])
    c = res.calibration
    cal, temps = cross_fitted_calibration(oof["proba"], y_idx, oof["fold"], method=c["method"])
    for f in res.folds:
        rows = oof["fold"] == f["fold"]
        acc = np.mean(np.asarray(oof["classes"])[oof["proba"][rows].argmax(1)] == oof["y"][rows])
        assert f["metrics"]["accuracy"] == pytest.approx(acc)
        assert f["metrics"]["ece"] == pytest.approx(expected_calibration_error(y_idx[rows], cal[rows]))
        assert f["metrics"]["ece_uncalibrated"] == pytest.approx(
            expected_calibration_error(y_idx[rows], oof["proba"][rows]))
        assert {"brier", "wrong_over_90"} <= f["metrics"].keys()
    assert c is res.summary["calibration"] and c["fold_temperatures"] == pytest.approx(list(temps))
    assert c["temperature"] == pytest.approx(ConfidenceCalibrator(c["method"]).fit(oof["proba"], y_idx).temperature_)
    assert c["ece"] == pytest.approx(min(c["ece_by_method"].values()))
    assert c["threshold"] == pytest.approx(uncertainty_threshold(cal, y_idx))
    assert c["uncertain_fraction"] == pytest.approx(np.mean(cal.max(1) < c["threshold"]))
    assert c["ece"] == pytest.approx(expected_calibration_error(y_idx, cal))
    assert c["ece"] < c["ece_uncalibrated"] / 2  # the SVM's softmax of votes is no probability until calibrated
    assert res.summary["ece"]["mean"] == pytest.approx(np.mean([f["metrics"]["ece"] for f in res.folds]))
    assert res.summary["reliability"]["count"] == np.bincount(
        np.clip(np.ceil(cal.max(1) * 15).astype(int) - 1, 0, 14), minlength=15).tolist()


@pytest.mark.slow
def test_store_card_and_oof_file_carry_the_calibration(run):
    from ser_core.saved import load_oof, load_trained

    res, again, _, store, base = run
    stored = store.get_run(res.run_id)
    assert stored["summary"]["calibration"] == res.calibration  # JSON keeps floats exactly
    assert [f["metrics"]["ece"] for f in stored["folds"]] == pytest.approx([f["metrics"]["ece"] for f in res.folds])
    assert store.runs().set_index("id").loc[res.run_id, "ece_mean"] == pytest.approx(res.summary["ece"]["mean"])
    _, card = load_trained(base / "models" / "svm")
    assert card["calibration"] == res.calibration
    assert "ece" in card["cv"]["metrics"] and "reliability" not in card["cv"]["metrics"]
    assert "probabilities rescaled by temperature" in (base / "models" / "svm" / "README.md").read_text()
    saved = load_oof(base / "models" / "svm")
    for k in ("proba", "classes", "fold", "y", "paths"):
        assert np.array_equal(saved[k], res.oof[k]), k
    assert again.cached and again.calibration == res.calibration
    assert np.array_equal(again.oof["proba"], res.oof["proba"])


@pytest.mark.slow
def test_prediction_applies_the_cards_temperature_and_threshold(run, tmp_path, capsys):
    from ser_core.cli import main
    from ser_core.inference import Predictor, evaluate_model
    from ser_core.saved import load_trained

    res, _, corpus, _, base = run
    models = tmp_path / "models"
    for name, calibration in (("t1", None), ("t2", {"temperature": 2.0, "threshold": 1.0})):
        shutil.copytree(base / "models" / "svm", models / name)
        card = json.loads((models / name / "card.json").read_text())
        card.update(name=name, calibration=calibration)  # t1: as cards saved before calibration existed
        (models / name / "card.json").write_text(json.dumps(card))
    clip = corpus.manifest["path"].iloc[0]
    p = Predictor.from_dir(None, models)
    got = p.predict_file(clip)
    classes = list(got["t1"])
    sharp, flat = np.array([got["t1"][c] for c in classes]), np.array([got["t2"][c] for c in classes])
    assert np.allclose(flat, apply_temperature(sharp, 2.0)) and flat.max() < sharp.max()
    assert p.thresholds() == {"t1": None, "t2": 1.0}

    assert main(["predict", "--model", "all", clip, "--models-dir", str(models), "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["t2"]["uncertain"] is True and "uncertain" not in rows["t1"]  # t2: every answer is below 1.0

    assert main(["models", "--models-dir", str(models), "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["t2"]["calibration"] == {"temperature": 2.0, "threshold": 1.0} and listed["t1"]["calibration"] is None
    assert listed["t1"]["cv"]["ece"] == pytest.approx(res.summary["ece"])

    from ser_core.features import compute_files, get_feature_set

    model, card = load_trained(base / "models" / "svm")
    X = compute_files(corpus.manifest["path"].tolist()[:30], get_feature_set("rich"), n_jobs=1)
    y = corpus.manifest["emotion"].to_numpy()[:30]
    m = evaluate_model(model, card, X, y)
    proba = apply_calibration(model.predict_proba(X), card["calibration"])
    assert m["ece"] == pytest.approx(expected_calibration_error(label_indices(y, model.classes_), proba))
    assert m["accuracy"] == pytest.approx(np.mean(model.predict(X) == y)) and m["unknown_labels"] == []


@pytest.mark.slow
def test_leaderboard_shows_ece_and_a_reliability_diagram(run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app_shared import REPO

    res, _, _, store, _ = run
    monkeypatch.setenv("SER_RESULTS_DB", str(store.path))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    at.switch_page("app_pages/leaderboard.py")
    at.session_state["lb_sources"] = ["yours"]  # this run, not the shipped ones
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("run")
    assert table.loc[str(res.run_id), "ECE"] == pytest.approx(res.summary["ece"]["mean"])
    assert table.loc[str(res.run_id), "Brier"] == pytest.approx(res.summary["brier"]["mean"])
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    reliability = next(c for c in charts if "reliability" in c["layout"].get("title", {}).get("text", ""))
    bars = {t["name"]: t for t in reliability["data"] if t["type"] == "bar"}
    curve = res.summary["reliability"]
    y = bars["calibrated"]["y"]  # plotly sends arrays as {"dtype", "bdata": base64}
    y = np.frombuffer(base64.b64decode(y["bdata"]), y["dtype"]) if isinstance(y, dict) else y
    assert list(y) == pytest.approx([a for a in curve["accuracy"] if a is not None])
    assert "uncalibrated" in bars
    assert any("not sure" in c.value for c in at.caption)


@pytest.mark.parametrize("method", ["top_label", "top_logistic"])
def test_top_label_calibration_fixes_mis_shaped_confidence_and_keeps_the_answer(method):
    from ser_core.calibration import ConfidenceCalibrator, apply_calibration, cross_fitted_calibration

    rng = np.random.default_rng(1)
    n, k = 4000, 6
    y = rng.integers(0, k, n)
    right = rng.random(n) < 0.5  # half of the answers are right, whatever the confidence says
    top = np.where(right, y, (y + rng.integers(1, k, n)) % k)
    conf = rng.uniform(0.5, 0.99, n)  # confident regardless of being right: no temperature can fix that
    proba = np.full((n, k), 0.0)
    proba += ((1 - conf) / (k - 1))[:, None]
    proba[np.arange(n), top] = conf
    folds = np.arange(n) % 4
    by_t, _ = cross_fitted_calibration(proba, y, folds, method="temperature")
    by_top, temps = cross_fitted_calibration(proba, y, folds, method=method)
    assert expected_calibration_error(y, by_top) < 0.03 < expected_calibration_error(y, by_t)
    assert (by_top.argmax(1) == proba.argmax(1)).all() and np.allclose(by_top.sum(1), 1)
    assert len(temps) == 4
    cal = ConfidenceCalibrator(method).fit(proba, y)
    again = ConfidenceCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))  # as stored in a card
    assert np.allclose(again.transform(proba[:50]), cal.transform(proba[:50]))
    assert np.allclose(apply_calibration(proba[:5], cal.to_dict()), cal.transform(proba[:5]))
    assert np.allclose(apply_calibration(proba[0], cal.to_dict()), cal.transform(proba[:1])[0])  # one clip
    assert np.allclose(apply_calibration(proba[:5], None), proba[:5])
    with pytest.raises(ValueError):
        ConfidenceCalibrator("isotonic")


def test_top_logistic_lowers_confident_wrong_answers_that_temperature_cannot():
    """A model whose timid answers (0.3-0.6) are right 80 % of the time and whose 0.95-confident ones too: the
    temperature sharpens everything, pushing the confident wrong answers higher still; the logistic top-label
    map sets every answer near 0.8."""
    from ser_core.calibration import best_cross_fitted, cross_fitted_calibration

    rng = np.random.default_rng(3)
    n, k = 3000, 8
    y = rng.integers(0, k, n)
    conf = np.where(rng.random(n) < 0.3, 0.95, rng.uniform(0.3, 0.6, n))
    p_right = 0.8
    top = np.where(rng.random(n) < p_right, y, (y + rng.integers(1, k, n)) % k)
    proba = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    proba[np.arange(n), top] = conf
    folds = np.arange(n) % 4
    by_t, _ = cross_fitted_calibration(proba, y, folds, method="temperature", ceiling=False)
    by_log, _ = cross_fitted_calibration(proba, y, folds, method="top_logistic", ceiling=False)
    assert overconfident_errors(y, by_log) < 0.5 * overconfident_errors(y, by_t)
    assert expected_calibration_error(y, by_log) < expected_calibration_error(y, by_t)
    method, _, _, ece_by_method = best_cross_fitted(proba, y, folds)
    assert set(ece_by_method) == {"temperature", "ece_temperature", "top_label", "top_logistic"}
    assert ece_by_method[method] == min(ece_by_method.values())


def test_ece_temperature_fixes_what_the_likelihood_temperature_leaves():
    """Answers whose confidence is right on average but with a heavy tail of near-certain mistakes: the
    log-likelihood temperature flattens everything to pay for those mistakes (under-confident for the rest);
    the temperature chosen by ECE is calibrated on the fitting clips and, cross-fitted, on held-out folds."""
    from ser_core.calibration import ConfidenceCalibrator, cross_fitted_calibration

    rng = np.random.default_rng(5)
    n, k = 4000, 8
    y = rng.integers(0, k, n)
    conf = rng.uniform(0.5, 0.9, n)
    right = rng.random(n) < conf
    top = np.where(right, y, (y + rng.integers(1, k, n)) % k)
    proba = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    proba[np.arange(n), top] = conf
    wrong = np.flatnonzero(~right)
    other = (top[wrong] + rng.integers(1, k - 1, len(wrong))) % k  # neither the answer nor, mostly, the truth
    other = np.where(other == y[wrong], (other + 1) % k, other)
    other = np.where(other == top[wrong], (other + 1) % k, other)
    proba[wrong, other] += proba[wrong, y[wrong]] - 1e-9
    proba[wrong, y[wrong]] = 1e-9  # the true class of a mistake is ruled out: a huge log-loss, same confidence
    folds = np.arange(n) % 4
    by_nll, _ = cross_fitted_calibration(proba, y, folds, method="temperature", ceiling=False)
    by_ece, temps = cross_fitted_calibration(proba, y, folds, method="ece_temperature", ceiling=False)
    assert expected_calibration_error(y, by_ece) < 0.03 < expected_calibration_error(y, by_nll)
    assert (by_ece.argmax(1) == proba.argmax(1)).all() and len(temps) == 4
    cal = ConfidenceCalibrator("ece_temperature").fit(proba, y)
    assert cal.to_dict()["method"] == "ece_temperature"


def test_a_model_often_confidently_wrong_gets_a_ceiling():
    """Two fifths of the answers at 0.99 of which 7 % are wrong: calibrated, those stay above 0.9 and hold
    most of the over-confident errors, so the calibrator caps the top probability at 0.9 (kept in the card); a
    model that is not confidently wrong gets no ceiling."""
    from ser_core.calibration import OVERCONFIDENT, ConfidenceCalibrator, apply_calibration

    rng = np.random.default_rng(7)
    n, k = 4000, 8
    y = rng.integers(0, k, n)
    sure = rng.random(n) < 0.4
    conf = np.where(sure, 0.99, rng.uniform(0.2, 0.5, n))
    right = rng.random(n) < np.where(sure, 0.93, 0.35)
    top = np.where(right, y, (y + rng.integers(1, k, n)) % k)
    proba = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    proba[np.arange(n), top] = conf
    for method in ("top_label", "top_logistic"):
        assert overconfident_errors(y, ConfidenceCalibrator(method, ceiling=False).fit(proba, y).transform(proba)) > 0.03
        cal = ConfidenceCalibrator(method).fit(proba, y)
        assert cal.ceiling_ == OVERCONFIDENT and cal.to_dict()["ceiling"] == OVERCONFIDENT
        out = apply_calibration(proba, cal.to_dict())
        assert out.max() <= OVERCONFIDENT + 1e-9 and overconfident_errors(y, out) == 0.0
        assert (out.argmax(1) == proba.argmax(1)).all() and np.allclose(out.sum(1), 1)
    modest = np.tile(np.full(k, 0.5 / (k - 1)), (n, 1))
    modest[np.arange(n), y] = 0.5  # always right: no over-confident error however sure it becomes
    assert ConfidenceCalibrator("temperature").fit(modest, y).ceiling_ is None
