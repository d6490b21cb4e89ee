"""Several corpora as one: the taxonomy that maps their labels, speakers kept apart by corpus, metrics per corpus,
and leave-one-corpus-out (no held-out clip or speaker reaches the model, its scaler or its calibrator). On three
tiny corpora in their official layouts: a few clips of the shared RAVDESS, TESS and EmoDB, linked."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ser_core import evaluation
from ser_core.calibration import ConfidenceCalibrator, cross_fitted_calibration, label_indices
from ser_core.cli import main
from ser_core.corpora import load_corpora
from ser_core.errors import ConfigError
from ser_core.features import compute_files
from ser_core.evaluation import RunConfig, check_run, compute_metrics, cross_validate, dimension_metrics
from ser_core.results import ResultsStore
from ser_core.taxonomy import dimension_proba, dimension_reading, get_taxonomy


def _link(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f)


@pytest.fixture(scope="module")
def tiny(shared_corpora, tmp_path_factory):
    """Three small corpora: RAVDESS actors 01-03 (every 3rd clip: 20 each, every emotion), TESS (6 words of each
    emotion per speaker: 84 clips) and EmoDB speakers 03 and 10 (all their clips, boredom included). RAVDESS
    actor 03 and EmoDB speaker 03 share the id "03"."""
    base = tmp_path_factory.mktemp("multi")
    rav, tess, emodb = base / "ravdess", base / "tess", base / "emodb" / "wav"
    for actor in ("01", "02", "03"):
        _link(sorted((shared_corpora["ravdess"] / f"Actor_{actor}").glob("*.flac"))[::3], rav / f"Actor_{actor}")
    for folder in sorted(shared_corpora["tess"].iterdir()):
        _link(sorted(folder.glob("*.flac"))[:6], tess / folder.name)
    _link([f for f in sorted((shared_corpora["emodb"] / "wav").glob("*.flac")) if f.name[:2] in ("03", "10")], emodb)
    return {"ravdess": rav, "tess": tess, "emodb": emodb.parent}


def test_the_shared_taxonomy_maps_calm_to_neutral_and_leaves_boredom_out():
    shared = get_taxonomy(None, n_corpora=3)
    assert shared.name == "shared" and get_taxonomy(None, n_corpora=1).name == "native"
    assert [shared.map_label(l) for l in ("calm", "boredom", "contempt", "angry", "surprised")] == \
        ["neutral", None, None, "angry", "surprised"]
    assert get_taxonomy("native").map_label("calm") == "calm"
    with pytest.raises(ConfigError, match=r"^Unknown taxonomy 'basic'; choose from native, shared\.$"):
        get_taxonomy("basic")


def test_arousal_and_valence_are_sums_of_their_categories():
    p, levels = dimension_proba(np.array([[0.5, 0.2, 0.2, 0.1]]), ["angry", "sad", "neutral", "happy"], "arousal")
    assert levels == ("high", "low") and np.allclose(p, [[0.6, 0.4]])
    reading = dimension_reading({"angry": 0.5, "sad": 0.2, "neutral": 0.2, "happy": 0.1})
    assert reading["valence"] == pytest.approx({"negative": 0.7, "neutral": 0.2, "positive": 0.1})
    assert dimension_reading({"frustrated": 0.6, "excited": 0.4}) == {}  # a custom corpus's own labels: none
    # scored like the categories: recall per level averaged; a wrong category of the right level is right here
    m = dimension_metrics(["angry", "fearful", "sad", "sad"], np.array([[0.1, 0.9, 0], [0.9, 0.1, 0],
                                                                         [0, 0.2, 0.8], [0.6, 0, 0.4]]),
                          ["angry", "fearful", "sad"])
    assert m["arousal_uar"] == pytest.approx((1.0 + 0.5) / 2)
    assert "arousal_ece" in m and "valence_uar" not in m  # all three are negative: no valence to tell apart


def test_several_corpora_are_one_manifest_with_speakers_namespaced_and_labels_mapped(tiny):
    c = load_corpora([tiny["ravdess"], tiny["tess"], tiny["emodb"]])
    m = c.manifest
    assert c.name == "ravdess+tess+emodb" and c.corpora == ["ravdess", "tess", "emodb"] and c.taxonomy == "shared"
    assert list(m["corpus"].unique()) == ["ravdess", "tess", "emodb"]
    # RAVDESS actor 03 and EmoDB speaker 03 are two people
    assert {"ravdess:03", "emodb:03"} <= set(m["speaker"]) and "03" not in set(m["speaker"])
    assert m.groupby("speaker")["corpus"].nunique().max() == 1
    assert "calm" not in set(m["emotion"]) and "boredom" not in set(m["emotion"])
    assert set(m.loc[m["native_emotion"] == "calm", "emotion"]) == {"neutral"}
    boredom = [p for p, reason in c.skipped if "left out by the shared taxonomy" in reason]
    assert boredom and all(p.endswith(("La.flac", "Lb.flac", "Lc.flac", "Ld.flac")) for p in boredom)
    native = load_corpora([tiny["ravdess"], tiny["emodb"]], taxonomy="native")
    assert {"calm", "boredom"} <= set(native.manifest["emotion"])
    one = load_corpora(tiny["ravdess"])  # one corpus, own labels: exactly load_corpus (speakers not renamed)
    assert one.parts == () and "01" in set(one.manifest["speaker"]) and "calm" in set(one.manifest["emotion"])
    with pytest.raises(ConfigError, match="at least two corpora"):
        check_run(RunConfig("lda", split="corpus"), load_corpora(tiny["ravdess"], taxonomy="shared"))


class _Spy:
    """Records every training matrix a run's models are fitted on (wraps the real model)."""

    seen: list = []

    def __init__(self, model):
        self.model = model

    def fit(self, X, y):
        _Spy.seen.append(np.asarray(X).copy())
        self.model.fit(X, y)
        return self

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def loco(tiny, tmp_path_factory):
    """A leave-one-corpus-out lda run on the three corpora, its training matrices recorded."""
    corpus = load_corpora([tiny["ravdess"], tiny["tess"], tiny["emodb"]])
    new_model = evaluation._new_model
    _Spy.seen = []
    store = ResultsStore(tmp_path_factory.mktemp("loco") / "r.sqlite")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluation, "_new_model", lambda config, fs: _Spy(new_model(config, fs)))
        res = cross_validate(RunConfig("lda", split="corpus", feature_set="prosody"), corpus, store=store)
    return corpus, res, list(_Spy.seen), store


def test_leave_one_corpus_out_never_trains_or_calibrates_on_the_corpus_held_out(loco):
    corpus, res, seen, _ = loco
    m = corpus.manifest
    X = compute_files(m["path"].tolist(), "prosody", progress=False)
    oof = res.oof
    assert len(res.folds) == 3 and len(seen) == 3
    for fold, fitted in zip(res.folds, seen):
        held = set(oof["corpus"][oof["fold"] == fold["fold"]])
        assert len(held) == 1  # a fold is one corpus, whole
        held_rows = X[(m["corpus"] == held.pop()).to_numpy()]
        # the model (and the scaler inside it) saw every clip of the other corpora and none of the held-out one
        assert not {r.tobytes() for r in fitted} & {r.tobytes() for r in held_rows}
        assert len(fitted) == len(m) - len(held_rows)
        assert not set(fold["test_speakers"]) & set(np.unique(oof["speaker"][oof["fold"] != fold["fold"]]))
    # each corpus's temperature is fitted on the other corpora's out-of-fold predictions only
    y_idx = label_indices(oof["y"], oof["classes"])
    for f, t in zip(np.unique(oof["fold"]), res.summary["calibration"]["fold_temperatures"]):
        others = oof["fold"] != f
        cal = ConfidenceCalibrator(res.summary["calibration"]["method"]).fit(oof["proba"][others], y_idx[others])
        assert cal.temperature_ == pytest.approx(t)


def test_metrics_per_corpus_are_those_of_its_own_clips(loco):
    corpus, res, _, _ = loco
    per, oof = res.summary["per_corpus"], res.oof
    assert list(per) == ["ravdess", "tess", "emodb"]
    calibrated, _ = cross_fitted_calibration(oof["proba"], label_indices(oof["y"], oof["classes"]), oof["fold"],
                                             method=res.summary["calibration"]["method"])
    classes = [str(c) for c in oof["classes"]]
    for name, m in per.items():
        rows = oof["corpus"] == name
        assert m["n"] == rows.sum() == (corpus.manifest["corpus"] == name).sum()
        p, y = calibrated[rows], oof["y"][rows]
        expected = compute_metrics(y, np.asarray(classes)[p.argmax(1)], sorted(set(classes) | set(y)), proba=p,
                                   classes=classes)
        assert m["uar"] == pytest.approx(expected["uar"]) and m["ece"] == pytest.approx(expected["ece"])
        assert m["arousal_uar"] == pytest.approx(dimension_metrics(y, p, classes)["arousal_uar"])
        fold = res.folds[int(np.unique(oof["fold"][rows])[0])]["metrics"]  # leaving a corpus out: its fold
        assert m["ece"] == pytest.approx(fold["ece"]) and m["arousal_uar"] == pytest.approx(fold["arousal_uar"])
    # UAR over the emotions EmoDB has: an emotion it lacks is no class of its own there
    assert set(per["emodb"]["per_class_recall"]) == set(np.unique(oof["y"][oof["corpus"] == "emodb"]))
    assert "surprised" in classes and "surprised" not in per["emodb"]["per_class_recall"]


def test_the_cli_prints_one_row_per_corpus_held_out(tiny, tmp_path, capsys):
    code = main(["train", "--data", str(tiny["ravdess"]), "--data", str(tiny["tess"]), "--data", str(tiny["emodb"]),
                 "--split", "corpus", "--models", "lda", "--feature-set", "prosody", "--no-save", "--json",
                 "--db", str(tmp_path / "r.sqlite")])
    assert code in (None, 0)
    rows = json.loads(capsys.readouterr().out)
    assert [r["held_out"] for r in rows] == ["ravdess", "tess", "emodb"]
    assert rows[2]["train_corpora"] == ["ravdess", "tess"]
    for r in rows:
        assert {"uar", "ece", "arousal_uar", "valence_uar", "n"} <= set(r) and 0 <= r["uar"] <= 1
    # speaker-grouped CV on the same corpora: overall and per corpus
    main(["train", "--data", str(tiny["ravdess"]), "--data", str(tiny["tess"]), "--data", str(tiny["emodb"]),
          "--models", "lda", "--feature-set", "prosody", "--folds", "2", "--no-save", "--json",
          "--db", str(tmp_path / "r.sqlite")])
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row["per_corpus"]) == {"ravdess", "tess", "emodb"} and "arousal_uar" in row


def test_the_transfer_matrix_has_a_cell_per_held_out_corpus_with_its_intervals(loco, tmp_path):
    from ser_core.leaderboard import Leaderboard
    from ser_core.transfer import transfer_cells, transfer_matrix

    _, res, _, store = loco
    cells = transfer_cells(Leaderboard(store, shipped_dir=tmp_path / "none"))
    assert list(cells["test"]) == ["ravdess", "tess", "emodb"] and set(cells["protocol"]) == {"held out"}
    assert list(cells["train"]) == ["tess+emodb", "ravdess+emodb", "ravdess+tess"]
    per = res.summary["per_corpus"]
    for c in cells.to_dict("records"):
        m = per[c["test"]]
        assert c["uar"] == pytest.approx(m["uar"]) and c["ece"] == pytest.approx(m["ece"])
        assert c["arousal_uar"] == pytest.approx(m["arousal_uar"])
        for k in ("uar", "ece", "arousal_uar"):
            assert c[f"{k}_low"] <= c[k] + 1e-9 and c[k] <= c[f"{k}_high"] + 1e-9
    matrix = transfer_matrix(cells, "lda")
    assert matrix.loc["ravdess+tess", "emodb"].startswith(f"{per['emodb']['uar']:.2f} [")
    assert matrix.loc["ravdess+tess", "ravdess"] == ""  # no run trained on both and tested on one of them


def test_corpus_normalisation_and_balance_reach_the_model(tiny, monkeypatch):
    """norm_by="corpus" z-scores each corpus by its own statistics; balance="corpus" weighs every corpus alike."""
    corpus = load_corpora([tiny["ravdess"], tiny["tess"], tiny["emodb"]])
    seen = {}

    class Recorder:
        name = "svm"

        def fit(self, X, y, sample_weight=None):
            seen.update(X=np.asarray(X), w=sample_weight)
            return self

    monkeypatch.setattr(evaluation, "_new_model", lambda config, fs: Recorder())
    config = RunConfig("svm", feature_set="prosody", speaker_norm=True, norm_by="corpus", balance="corpus")
    data = evaluation.fold_data(config, config.resolved()[1], corpus.manifest, lambda e: None)
    evaluation.fit_final(data)
    names = corpus.manifest["corpus"].to_numpy()
    for c in corpus.corpora:  # each corpus z-scored with its own mean
        assert np.allclose(seen["X"][names == c].mean(0), 0, atol=1e-4)
        assert seen["w"][names == c].sum() == pytest.approx(len(names) / 3)
    assert RunConfig("svm", balance="corpus").hash(data.fs) != RunConfig("svm").hash(data.fs)
    assert "balance" not in RunConfig("svm").later_options()  # runs stored before the options keep their hash
    from ser_core.models import create_model

    with pytest.raises(ConfigError, match="takes no sample weights"):
        evaluation.fit_model(create_model("lda", feature_set="prosody"), data.X, data.y, data.corpora,
                             balance="corpus")


def test_familiarity_scores_strange_clips_higher_and_survives_a_save(tmp_path):
    from ser_core.familiarity import Familiarity

    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 30))
    fam = Familiarity(10).fit(train)
    same, strange = fam.score(rng.normal(size=(200, 30))), fam.score(rng.normal(1.5, 1.0, size=(200, 30)))
    assert np.median(strange) > np.median(same) + 0.5
    again = Familiarity.load(fam.save(tmp_path / "f.npz"))
    assert np.allclose(again.score(train[:5]), fam.score(train[:5]))


def test_the_familiarity_temperature_grows_on_strange_clips_and_no_clip_calibrates_itself(monkeypatch):
    from ser_core import calibration
    from ser_core.calibration import cross_fitted_by_clip

    rng = np.random.default_rng(1)
    n = 600
    u = np.r_[rng.normal(0, 0.2, n // 2), rng.normal(1.5, 0.2, n // 2)]  # familiar, then strange clips
    y = rng.integers(0, 4, n)
    right = rng.random(n) < np.where(u < 0.75, 0.8, 0.3)  # the strange clips are mostly wrong
    guess = np.where(right, y, (y + 1) % 4)
    proba = np.full((n, 4), 0.05)
    proba[np.arange(n), guess] = 0.85
    cal = ConfidenceCalibrator("familiarity").fit(proba, y, u)
    assert cal.slope_ > 0.3
    p = cal.transform(proba, u)
    assert p[u > 0.75].max(1).mean() < p[u < 0.75].max(1).mean() - 0.2  # less sure where it is less often right
    assert ConfidenceCalibrator.from_dict(cal.to_dict()).transform(proba[:3], u[:3]) == pytest.approx(p[:3])
    # stacked protocols: each clip appears twice; a block is never calibrated with its own clips' labels
    fitted = []
    real_fit = calibration.ConfidenceCalibrator.fit

    def spy(self, proba_, y_, familiarity=None):
        fitted.append(len(y_))
        return real_fit(self, proba_, y_, familiarity)

    monkeypatch.setattr(calibration.ConfidenceCalibrator, "fit", spy)
    clips = np.r_[np.arange(n // 2), np.arange(n // 2)]  # the second half: the same clips again
    blocks = np.r_[np.repeat(["cv:0", "cv:1"], n // 4), np.repeat(["out:a", "out:b"], n // 4)]
    cross_fitted_by_clip(proba, y, u, blocks, clips)
    assert fitted == [n // 2] * 4  # each block: the rows of the other half of the clips, in both protocols


def test_a_run_calibrated_out_of_domain_saves_what_prediction_needs(tiny, tmp_path):
    from ser_core.inference import Predictor
    from ser_core.saved import TRANSFER_OOF, load_oof

    corpus = load_corpora([tiny["ravdess"], tiny["tess"], tiny["emodb"]])
    store = ResultsStore(tmp_path / "r.sqlite")
    res = cross_validate(RunConfig("lda", feature_set="prosody", ood_calibration=True), corpus, store=store,
                         save_to=tmp_path / "models" / "lda")
    cal, transfer = res.summary["calibration"], res.summary["transfer"]
    assert cal["method"] == "familiarity" and cal["familiarity_slope"] >= 0
    assert set(transfer["per_corpus"]) == {"ravdess", "tess", "emodb"} and 0 <= transfer["ece"] <= 1
    loco = store.get_run(transfer["run_id"])  # the leave-one-corpus-out run is stored as a run of its own
    assert loco["split"] == "corpus" and "familiarity" in store.oof(loco["id"])
    folder = tmp_path / "models" / "lda"
    assert (folder / "familiarity.npz").is_file() and load_oof(folder, TRANSFER_OOF) is not None
    assert "familiarity" in res.oof and len(res.oof["familiarity"]) == len(corpus.manifest)
    predictor = Predictor.from_dir(["lda"], tmp_path / "models")
    assert predictor.models[0].familiarity is not None
    probs = predictor.predict_file(str(corpus.manifest["path"].iloc[0]))["lda"]
    assert sum(probs.values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="needs at least two corpora"):
        check_run(RunConfig("lda", feature_set="prosody", ood_calibration=True), load_corpora(tiny["ravdess"]))


@pytest.fixture(scope="module")
def adapted_ensemble(tiny, tmp_path_factory):
    """lda and svm, their speaker-adaptive twins, all calibrated out of domain on the three tiny corpora, and the
    ensemble of the four (the adaptive pair pooled only where a voice's statistics are known)."""
    from ser_core.ensemble import fit_ensemble

    corpus = load_corpora([tiny["ravdess"], tiny["tess"], tiny["emodb"]])
    root = tmp_path_factory.mktemp("adapted")
    store = ResultsStore(root / "r.sqlite")
    for name, norm in (("lda", False), ("svm", False), ("adaptive_lda", True), ("adaptive_svm", True)):
        cross_validate(RunConfig(name.removeprefix("adaptive_"), feature_set="prosody", speaker_norm=norm,
                                 ood_calibration=True), corpus, store=store, save_to=root / "models" / name)
    card = fit_ensemble(["lda", "svm"], adaptive=["adaptive_lda", "adaptive_svm"], root=root / "models", store=store)
    return corpus, root / "models", card


def test_an_ensemble_pools_its_adaptive_members_only_with_a_voices_statistics(adapted_ensemble, tmp_path, capsys):
    from ser_core.inference import Predictor
    from ser_core.saved import load_trained

    corpus, models, card = adapted_ensemble
    assert set(card["adapted"]["weights"]) == {"lda", "svm", "adaptive_lda", "adaptive_svm"}
    assert card["adapted"]["calibration"]["method"] == "familiarity" and "transfer" in card["adapted"]
    assert set(card["weights"]) == {"lda", "svm"} and (models / "ensemble" / "adapted_oof.npz").is_file()
    model, _ = load_trained("ensemble", models)
    assert model.all_members == ["lda", "svm", "adaptive_lda", "adaptive_svm"]
    with pytest.raises(ConfigError, match="needs the predictions of adaptive_lda"):
        model.predict_proba({"lda": np.full((1, 7), 1 / 7), "svm": np.full((1, 7), 1 / 7)}, adapted=True)
    clip = str(corpus.manifest["path"].iloc[0])
    predictor = Predictor.from_dir(["ensemble"], models)
    single = predictor.predict_file(clip)["ensemble"]
    assert not predictor.adapted(model)
    voice = corpus.manifest.loc[corpus.manifest["speaker"] == "ravdess:02", "path"].tolist()[:8]
    predictor.calibrate(voice)
    assert predictor.adapted(predictor.saved_ensemble().model)
    assert predictor.predict_file(clip)["ensemble"] != pytest.approx(single)  # the adapted pooling answers now
    # evaluate on a corpus: each speaker normalised with its own clips, the adapted pooling judged
    assert main(["evaluate", "--model", "ensemble", "--models-dir", str(models), "--data",
                 str(corpus.parts[2][1]), "--json"]) in (None, 0)
    out = json.loads(capsys.readouterr().out)
    assert out["adapted"] is True and "boredom" not in out["per_class_recall"]


def test_a_saved_model_calibrated_out_of_domain_brings_its_held_out_corpora_to_the_matrix(adapted_ensemble, tmp_path):
    from ser_core.leaderboard import Leaderboard
    from ser_core.transfer import transfer_cells

    _, models, _ = adapted_ensemble
    cells = transfer_cells(Leaderboard(ResultsStore(tmp_path / "empty.sqlite"), shipped_dir=models))
    lda = cells[cells["run"] == "shipped:lda"]
    assert set(lda["protocol"]) == {"unseen speakers", "held out"}
    held = lda[lda["protocol"] == "held out"].set_index("test")
    assert held.loc["emodb", "train"] == "ravdess+tess" and held.loc["ravdess", "train"] == "tess+emodb"
    assert ((0 <= held["uar"]) & (held["uar"] <= 1)).all() and held["ece"].notna().all()
