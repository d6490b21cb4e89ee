"""The ensemble as a saved model: pooling maths, weights fitted on out-of-fold predictions, cross-validation
with fold-held-out weights, save/load, prediction through its members, and the refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ser_core.ensemble
from ser_core.ensemble import EnsembleModel, fit_ensemble, fit_pooling, fit_pooling_on, pool, pool_out_of_fold
from ser_core.errors import ConfigError


def test_pool_is_a_normalised_weighted_geometric_mean():
    a = np.array([[0.7, 0.2, 0.1]])
    b = np.array([[0.2, 0.6, 0.2]])
    p = pool([a, b], [1.0, 1.0])
    expected = a * b / (a * b).sum()
    assert np.allclose(p, expected) and np.allclose(p.sum(1), 1)
    assert np.allclose(pool([a, b], [1.0, 0.0]), a)  # a zero weight ignores that member
    assert np.allclose(pool([a, b], [0.0, 0.0]), 1 / 3)  # no information: uniform


def test_pool_adds_the_per_class_bias_to_the_log_probabilities():
    a = np.array([[0.5, 0.25, 0.25]])
    p = pool([a], [1.0], [0.0, np.log(2.0), 0.0])
    assert np.allclose(p, [[0.4, 0.4, 0.2]])
    assert np.allclose(pool([a], [1.0], []), a)  # an ensemble saved without a bias


def test_fit_pooling_prefers_the_informative_member():
    rng = np.random.default_rng(0)
    n, k = 3000, 4
    y = rng.integers(0, k, n)
    good = np.full((n, k), 0.1)
    good[np.arange(n), y] = 0.7  # right 100 %, moderately confident
    noise = rng.dirichlet(np.ones(k), n)  # unrelated to the labels
    w, b = fit_pooling([good, noise], y)
    assert w[0] > 1.0 and w[1] < 0.05 and (w >= 0).all() and b.shape == (k,)


def test_fit_pooling_balances_the_classes():
    """A member that leans toward the rare class is corrected by the bias only as far as balance asks: with
    class-balanced weights the pooled probabilities recall both classes alike."""
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(900, int), np.ones(100, int)]  # class 1 is rare
    signal = np.where(y == 1, 0.8, -0.8) + rng.normal(0, 1.0, len(y))
    p1 = 1 / (1 + np.exp(-(signal - 1.5)))  # a member biased against the rare class
    member = np.c_[1 - p1, p1]
    w, b = fit_pooling([member], y)
    pred = pool([member], w, b).argmax(1)
    recall = [np.mean(pred[y == c] == c) for c in (0, 1)]
    raw = [np.mean(member.argmax(1)[y == c] == c) for c in (0, 1)]
    assert abs(recall[0] - recall[1]) < 0.15 < abs(raw[0] - raw[1])
    assert np.mean(recall) > np.mean(raw)


def test_pool_out_of_fold_never_lets_a_fold_see_its_own_labels():
    """Each fold is pooled with weights fitted on the other folds only: scrambling one fold's labels changes the
    other folds' pooled probabilities and leaves its own alone; a condition listed twice in ``fit_on`` counts
    twice (the same fit as its rows stacked twice by hand)."""
    rng = np.random.default_rng(0)
    n, k = 300, 3
    y = rng.integers(0, k, n)
    fold = np.repeat(np.arange(3), n // 3)
    good = np.full((n, k), 0.1)
    good[np.arange(n), y] = 0.8
    probas = {"clean": [good, rng.dirichlet(np.ones(k), n)], "phone": [rng.dirichlet(np.ones(k), n), good]}
    pooled = pool_out_of_fold(probas, y, fold, ["clean", "phone"])
    assert set(pooled) == {"clean", "phone"} and pooled["clean"].shape == (n, k)
    y2 = y.copy()
    y2[fold == 0] = rng.permutation(y[fold == 0] + 1) % k
    scrambled = pool_out_of_fold(probas, y2, fold, ["clean", "phone"])
    for c in probas:
        assert np.allclose(scrambled[c][fold == 0], pooled[c][fold == 0])
        assert not np.allclose(scrambled[c][fold != 0], pooled[c][fold != 0])
    rows = fold != 0
    w, b = fit_pooling_on(probas, y, rows, ["clean", "phone", "phone"])
    by_hand = fit_pooling([np.concatenate([probas[c][m][rows] for c in ("clean", "phone", "phone")]) for m in (0, 1)],
                          np.tile(y[rows], 3))
    assert np.allclose(w, by_hand[0]) and np.allclose(b, by_hand[1])
    twice = pool_out_of_fold(probas, y, fold, ["clean", "phone", "phone"])
    assert np.allclose(twice["clean"][fold == 0], pool([p[fold == 0] for p in probas["clean"]], w, b))


@pytest.fixture(scope="module")
def members(shared_ravdess, tmp_path_factory):
    """lda and svm cross-validated with the same folds (3 actors, 3 folds) and saved with oof.npz."""
    from helpers import symlink_actors
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate
    from ser_core.results import ResultsStore

    base = tmp_path_factory.mktemp("ensemble")
    corpus = load_corpus(symlink_actors(shared_ravdess, base / "data", ("01", "02", "03")))
    store = ResultsStore(base / "results.sqlite")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        for name in ("lda", "svm"):
            cross_validate(RunConfig(model=name, feature_set="rich", folds=3), corpus, store=store,
                           save_to=base / "models" / name, n_jobs=2)
        cross_validate(RunConfig(model="svm", feature_set="rich", folds=2), corpus, store=store,
                       save_to=base / "models" / "svm_k2", n_jobs=2)
    return base, corpus, store


@pytest.mark.slow
@pytest.mark.parametrize("inputs", ["raw", "calibrated"])
def test_fit_ensemble_cross_validates_saves_and_records_a_run(members, inputs):
    base, corpus, store = members
    name = f"ensemble_{inputs}"
    card = fit_ensemble(["lda", "svm"], root=base / "models", store=store, name=name, inputs=inputs)
    folder = base / "models" / name
    assert card["inputs"] == inputs
    assert (folder / "model.json").is_file() and (folder / "oof.npz").is_file()
    assert card["model"] == "ensemble" and card["members"] == ["lda", "svm"]
    assert set(card["weights"]) == {"lda", "svm"} and all(w >= 0 for w in card["weights"].values())
    uar = card["cv"]["metrics"]["uar"]["mean"]
    assert 0.125 < uar <= 1 and 0 <= card["calibration"]["ece"] < 1
    runs = store.runs()
    row = runs[runs["model"] == "ensemble"].iloc[-1]
    assert row["uar_mean"] == pytest.approx(uar) and row["k"] == 3
    # fold f's out-of-fold predictions come from weights fitted without fold f: recompute one fold by hand
    from ser_core.calibration import apply_calibration, label_indices
    from ser_core.saved import load_oof

    oof, member = load_oof(folder), {m: load_oof(base / "models" / m) for m in ("lda", "svm")}
    assert sorted(oof["paths"]) == sorted(corpus.manifest["path"])
    cals = {m: json.loads((base / "models" / m / "card.json").read_text())["calibration"] for m in member}
    order = {m: np.argsort(member[m]["paths"]) for m in member}
    probas = [member[m]["proba"][order[m]] for m in ("lda", "svm")]  # raw: each member's predict_proba
    if inputs == "calibrated":
        probas = [apply_calibration(p, cals[m]) for p, m in zip(probas, ("lda", "svm"))]
    y_idx = label_indices(member["lda"]["y"][order["lda"]], list(oof["classes"]))
    test = oof["fold"] == 0
    w, b = fit_pooling([p[~test] for p in probas], y_idx[~test])
    assert np.allclose(oof["proba"][test], pool([p[test] for p in probas], w, b), atol=1e-6)


@pytest.mark.slow
def test_saved_ensemble_loads_and_predicts_through_its_members(members):
    from ser_core.inference import Predictor
    from ser_core.saved import load_trained

    base, corpus, store = members
    fit_ensemble(["lda", "svm"], root=base / "models", store=store)
    model, card = load_trained("ensemble", base / "models")
    assert isinstance(model, EnsembleModel) and model.members == ["lda", "svm"]
    assert model.weights == pytest.approx(list(card["weights"].values()))
    assert model.bias == pytest.approx([card["bias"][c] for c in model.classes_])

    p = Predictor.from_dir(["ensemble"], base / "models")  # members load as auxiliary models
    assert sorted(m.name for m in p.models) == ["ensemble", "lda", "svm"]
    path = corpus.manifest["path"].iloc[0]
    only = p.predict_file(path)
    assert list(only) == ["ensemble"] and sum(only["ensemble"].values()) == pytest.approx(1)
    both = Predictor.from_dir(["svm", "ensemble"], base / "models").predict_file(path)
    assert sorted(both) == ["ensemble", "svm"]
    assert both["ensemble"] == pytest.approx(only["ensemble"])
    # by hand: pool the members' raw probabilities with the saved weights, then the ensemble's calibration
    from ser_core.calibration import apply_calibration
    from ser_core.features import compute_files

    assert model.inputs == "raw"
    classes = list(model.classes_)
    raw = {}
    for m in model.members:
        member, _ = load_trained(m, base / "models")
        raw[m] = member.predict_proba(compute_files([path], member.feature_set, progress=False))
        assert list(member.classes_) == classes
    expected = apply_calibration(pool([raw[m] for m in model.members], model.weights, model.bias),
                                 card["calibration"])[0]
    assert [only["ensemble"][c] for c in classes] == pytest.approx(expected.tolist())
    # an ensemble that pools calibrated probabilities, as every one saved before the option did (its model.json
    # without "inputs"): the members' calibrated answers, as Predictor reports them, pooled
    fit_ensemble(["lda", "svm"], root=base / "models", name="ensemble_old", inputs="calibrated")
    meta = json.loads((base / "models" / "ensemble_old" / "model.json").read_text())
    assert meta["params"].pop("inputs") == "calibrated"
    (base / "models" / "ensemble_old" / "model.json").write_text(json.dumps(meta))
    old, old_card = load_trained("ensemble_old", base / "models")
    assert old.inputs == "calibrated"
    full = Predictor.from_dir(["lda", "svm", "ensemble_old"], base / "models").predict_file(path)
    probs = [np.array([[full[m][c] for c in classes]]) for m in old.members]
    expected = apply_calibration(pool(probs, old.weights, old.bias), old_card["calibration"])[0]
    assert [full["ensemble_old"][c] for c in classes] == pytest.approx(expected.tolist())
    with pytest.raises(ConfigError, match="raw or calibrated"):
        EnsembleModel(["lda", "svm"], inputs="softmax")


@pytest.mark.slow
def test_ensemble_refuses_members_from_other_folds_or_without_oof(members, tmp_path):
    base, _, _ = members
    with pytest.raises(ConfigError, match="other clips, folds or labels"):
        fit_ensemble(["lda", "svm_k2"], root=base / "models", name="mixed")
    with pytest.raises(ConfigError, match="at least two"):
        fit_ensemble(["lda"], root=base / "models", name="single")
    import shutil

    shutil.copytree(base / "models" / "svm", tmp_path / "svm")
    shutil.copytree(base / "models" / "lda", tmp_path / "lda")
    (tmp_path / "svm" / "oof.npz").unlink()
    with pytest.raises(ConfigError, match="no out-of-fold predictions"):
        fit_ensemble(["lda", "svm"], root=tmp_path)
    with pytest.raises(ConfigError, match="out-of-fold"):
        EnsembleModel(["lda", "svm"], [1, 1]).fit(np.zeros((2, 2)), ["a", "b"])


@pytest.mark.slow
def test_cli_ensemble_models_and_evaluate(members, tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    base, corpus, _ = members
    run = lambda *args: subprocess.run([sys.executable, "-m", "ser_core", *args], cwd=REPO, capture_output=True,
                                       text=True, timeout=300)
    db = str(tmp_path / "r.sqlite")
    out = run("ensemble", "--members", "lda,svm", "--models-dir", str(base / "models"), "--db", db, "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["members"] == ["lda", "svm"] and 0 < res["uar"]["mean"] <= 1 and "ece" in res
    listed = json.loads(run("models", "--models-dir", str(base / "models"), "--json").stdout)
    ens = next(r for r in listed if r["name"] == "ensemble")
    assert "uar" in ens["cv"] and "ece" in ens["cv"]
    out = run("evaluate", "--model", "ensemble", "--models-dir", str(base / "models"), "--data",
              str(base / "data"), "--perturb", "phone", "--json")
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["n"] == len(corpus.manifest) and {"uar", "accuracy", "ece", "brier"} <= set(m)
    # through a channel: the members' raw probabilities on the same perturbed clips, pooled
    from ser_core.inference import evaluate_model
    from ser_core.robustness import model_inputs, perturbed_features
    from ser_core.saved import load_trained

    model, card = load_trained("ensemble", base / "models")
    paths = corpus.manifest["path"].tolist()
    speakers = corpus.manifest["speaker"].astype(str).to_numpy()
    inputs = model_inputs(model, card, paths, "phone", root=base / "models", speakers=speakers, n_jobs=1)
    assert set(inputs) == {"lda", "svm"}
    lda, _ = load_trained("lda", base / "models")
    X_phone = perturbed_features(paths, lda.feature_set, "phone", speakers=speakers, n_jobs=1)
    assert np.allclose(inputs["lda"], lda.predict_proba(X_phone))
    phone = evaluate_model(model, card, inputs, corpus.manifest["emotion"])
    assert m["perturbations"]["phone"]["uar"] == pytest.approx(phone["uar"])
    out = run("ensemble", "--members", "lda", "--models-dir", str(base / "models"), "--db", db)
    assert out.returncode == 2 and out.stderr.strip().startswith("error:")


def test_ensemble_under_perturbations_pools_with_clean_weights_from_other_folds():
    from ser_core.robustness import ensemble_perturbed

    rng = np.random.default_rng(0)
    n, classes = 400, np.array(["angry", "calm", "sad"])
    y_idx = rng.integers(0, 3, n)
    fold = np.arange(n) % 4

    def member(right_clean, right_phone):
        proba = {}
        for c, right in (("clean", right_clean), ("phone", right_phone)):
            guess = np.where(rng.random(n) < right, y_idx, (y_idx + 1) % 3)
            p = np.full((n, 3), 0.1)
            p[np.arange(n), guess] = 0.8
            proba[c] = p
        return {"proba": proba, "classes": classes, "fold": fold, "y": classes[y_idx]}

    out = ensemble_perturbed([member(1.0, 0.5), member(0.4, 0.4)])
    assert set(out) == {"clean", "phone"} and set(out["clean"]) == {"uar", "accuracy"}
    assert out["clean"]["uar"]["mean"] == pytest.approx(1.0)  # the perfect member dominates the weights
    assert out["phone"]["uar"]["mean"] < 0.8
    # a member perfect on clean clips that breaks on the phone line, and one that holds up on both: weights
    # fitted on clean and phone predictions together lean on the second, and the phone UAR rises
    members = [member(1.0, 0.3), member(0.85, 0.85)]
    clean_only, robust = ensemble_perturbed(members), ensemble_perturbed(members, fit_on=("clean", "phone"))
    assert robust["phone"]["uar"]["mean"] > clean_only["phone"]["uar"]["mean"] + 0.1
    other = member(1.0, 1.0)
    other["fold"] = (np.arange(n) + 1) % 4
    with pytest.raises(ConfigError):
        ensemble_perturbed([member(1.0, 1.0), other])


@pytest.mark.slow
def test_channel_out_of_fold_predictions_give_robustness_and_robust_weights(shared_ravdess, tmp_path, monkeypatch):
    """Members cross-validated with channels=("phone",) keep their test folds' phone predictions (oof.npz
    "proba@phone"), their cards get a robustness block from them, and the ensemble fits its weights on clean
    and phone predictions together: a member that breaks on the phone line gets less weight than on clean
    predictions alone."""
    from helpers import symlink_actors
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate
    from ser_core.robustness import channel_summary, cross_validate_perturbed
    from ser_core.saved import load_oof, read_card

    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    corpus = load_corpus(symlink_actors(shared_ravdess, tmp_path / "data", ("01", "02", "03")))
    models = tmp_path / "models"
    for name, fs, augment in (("lda", "rich", ("channel:phone",)), ("random_forest", "rich", ())):
        cross_validate(RunConfig(model=name, feature_set=fs, folds=3, augment=augment, channels=("phone",)),
                       corpus, save_to=models / name, n_jobs=2)
    oof = load_oof(models / "lda")
    assert oof["proba@phone"].shape == oof["proba"].shape
    card = read_card(models / "lda")
    assert set(card["robustness"]) == {"clean", "phone"} and card["options"]["channels"] == ["phone"]
    assert card["robustness"] == channel_summary(oof)
    # the same numbers as the robustness benchmark's CV of the same recipe (same folds, same perturbed clips)
    bench = cross_validate_perturbed("lda", corpus, ["phone"], folds=3, feature_set="rich",
                                     augment=["channel:phone"], n_jobs=2)
    for c in ("clean", "phone"):
        assert card["robustness"][c]["uar"] == pytest.approx(bench["summary"][c]["uar"]["mean"])

    robust = fit_ensemble(["lda", "random_forest"], root=models, name="robust")
    assert robust["weights_fitted_on"] == ["clean", "phone"] and set(robust["robustness"]) == {"clean", "phone"}
    assert robust["condition_weights"] == {"clean": 1, "phone": 1}
    # the final weights by hand: the members' raw probabilities, clean rows and phone rows
    from ser_core.calibration import label_indices

    member_oofs = [load_oof(models / m) for m in ("lda", "random_forest")]
    order = [np.argsort(o["paths"]) for o in member_oofs]
    y_idx = label_indices(member_oofs[0]["y"][order[0]], list(member_oofs[0]["classes"]))

    def by_hand(counted):
        stacked = [np.concatenate([o[k][i] for k in counted]) for o, i in zip(member_oofs, order)]
        return fit_pooling(stacked, np.tile(y_idx, len(counted)))[0].tolist()

    assert list(robust["weights"].values()) == pytest.approx(by_hand(("proba", "proba@phone")), abs=1e-6)
    with monkeypatch.context() as mp:  # a condition CONDITION_WEIGHTS counts twice: its rows stacked twice
        mp.setattr(ser_core.ensemble, "CONDITION_WEIGHTS", {"phone": 2})
        twice = fit_ensemble(["lda", "random_forest"], root=models, name="robust_twice")
    assert twice["condition_weights"] == {"clean": 1, "phone": 2}
    assert list(twice["weights"].values()) == pytest.approx(by_hand(("proba", "proba@phone", "proba@phone")),
                                                            abs=1e-6)
    assert load_oof(models / "robust")["proba@phone"].shape == oof["proba"].shape
    # without the channel arrays: weights from clean predictions only
    for name in ("lda", "random_forest"):
        (tmp_path / "plain" / name).mkdir(parents=True)
        for f in (models / name).iterdir():
            if f.name != "oof.npz":
                (tmp_path / "plain" / name / f.name).symlink_to(f)
        arrays = {k: v for k, v in load_oof(models / name).items() if not k.startswith("proba@")}
        np.savez(tmp_path / "plain" / name / "oof.npz", **arrays)
    plain = fit_ensemble(["lda", "random_forest"], root=tmp_path / "plain", name="plain", inputs="calibrated")
    assert plain["weights_fitted_on"] == ["clean"] and "robustness" not in plain
    # the weights as each member's importance: on calibrated inputs (on raw ones a weight is also a temperature,
    # and the LDA's raw probabilities of 0 and 1 make its share swing with the phone line's random hiss on 180 clips)
    robust_calibrated = fit_ensemble(["lda", "random_forest"], root=models, name="robust_calibrated",
                                     inputs="calibrated")
    share = lambda card: card["weights"]["lda"] / sum(card["weights"].values())
    assert share(robust_calibrated) >= share(plain)  # lda was trained with phone copies, the forest was not
