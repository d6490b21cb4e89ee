"""Speaker-adaptive models end to end: saving a speaker-normalised run, calibrated and uncalibrated prediction,
per-speaker normalisation in `evaluate`, `predict --calibrate`, and the Demo page's calibration expander.

One SVM (``rich`` features, 2-fold CV) is trained with speaker normalisation on shared RAVDESS actors 01-03;
actors 04-06 are never seen in training. Expected values are computed by hand with numpy, not with
SpeakerNormalizer, so the tests check the normalisation itself.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest

from ser_core.audio import load_audio
from ser_core.features import compute, compute_files, get_feature_set

TRAIN_ACTORS = ("Actor_01", "Actor_02", "Actor_03")
NAME, PLAIN = "svm_adaptive", "svm_plain"
EMOTION_CODES = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                 "07": "disgust", "08": "surprised"}


def emotion(path: Path) -> str:
    return EMOTION_CODES[path.name.split("-")[2]]


def link(shared: Path, root: Path, actor: str, files=slice(None)) -> list[Path]:
    (root / actor).mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted((shared / actor).glob("*.flac"))[files]:
        (root / actor / f.name).symlink_to(f)
        out.append(root / actor / f.name)
    return out


def zscore(X, mean, std):
    """What per-speaker normalisation should do: (X - mean) / std, constant features kept at scale 1."""
    return ((np.asarray(X, np.float64) - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def calibrated_zscore(X, own, within, prior=10):
    """z-scores with a speaker's own mean and its variance pooled with ``prior`` clips of the training speakers'
    typical spread ``within`` (saved models calibrate this way: ser_core.saved.CALIBRATION_PRIOR_CLIPS)."""
    own = np.asarray(own, np.float64)
    std = np.sqrt((len(own) * own.var(0) + prior * within ** 2) / (len(own) + prior))
    return zscore(X, own.mean(0), std)


def features(paths) -> np.ndarray:
    """(n, d) rich features the way Predictor computes them (decoded at 16 kHz, untrimmed, not normalised)."""
    fs = get_feature_set("rich")
    return np.stack([compute(load_audio(p, trim=False, normalize=None), 16000, fs) for p in paths])


@pytest.fixture(scope="module")
def trained(shared_ravdess, tmp_path_factory):
    """``(models_dir, training paths, held-out Actor_04 paths)`` with a speaker-normalised and a plain SVM."""
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate

    root = tmp_path_factory.mktemp("adapt_train")
    paths = [p for a in TRAIN_ACTORS for p in link(shared_ravdess, root, a)]
    models = tmp_path_factory.mktemp("adapt_models")
    events = []
    with pytest.MonkeyPatch.context() as mp:  # the same feature cache as conftest's per-test isolation
        mp.setenv("SER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        corpus = load_corpus(root)
        res = cross_validate(RunConfig(model="svm", feature_set="rich", folds=2, speaker_norm=True), corpus,
                             save_to=models / NAME, n_jobs=2, progress=events.append)
        cross_validate(RunConfig(model="svm", feature_set="rich", folds=2), corpus, save_to=models / PLAIN, n_jobs=2)
    assert res.saved_model and "note" not in [e["event"] for e in events]
    held_out = link(shared_ravdess, tmp_path_factory.mktemp("adapt_user"), "Actor_04", slice(0, 60, 6))
    return models, paths, held_out


@pytest.mark.slow
def test_saved_speaker_norm_model_has_card_and_training_statistics(trained):
    from ser_core.saved import list_trained, load_trained

    models, paths, _ = trained
    model, card = load_trained(NAME, models)
    assert card["speaker_norm"] is True and card["options"]["speaker_norm"] is True
    assert [c["speaker_norm"] for c in list_trained(models)] == [True, False]
    assert not (models / PLAIN / "speaker_norm.npz").exists()
    assert "Speaker-adaptive" in (models / NAME / "README.md").read_text()
    X = compute_files([str(p) for p in paths], get_feature_set("rich"), n_jobs=2).astype(np.float64)
    spk = np.repeat(np.arange(len(TRAIN_ACTORS)), 60)
    with np.load(models / NAME / "speaker_norm.npz") as z:
        assert np.allclose(z["mean"], X.mean(0)) and np.allclose(z["scale"], np.where(X.std(0) > 1e-8, X.std(0), 1))
        within = np.mean([X[spk == s].std(0) for s in range(3)], axis=0)  # a typical speaker's spread
        assert np.allclose(z["within_scale"], np.where(within > 1e-8, within, 1))
    # the final model was fitted on per-speaker z-scores: its own training clips look like its training data
    Z = np.concatenate([zscore(X[spk == s], X[spk == s].mean(0), X[spk == s].std(0)) for s in range(3)])
    y = [emotion(p) for p in paths]
    fits_z, fits_raw = np.mean(model.predict(Z) == y), np.mean(model.predict(X.astype(np.float32)) == y)
    assert fits_z > 0.8 and fits_z > fits_raw + 0.2


@pytest.mark.slow
def test_uncalibrated_uses_training_statistics_and_calibrated_uses_the_users(trained):
    from ser_core.calibration import apply_temperature
    from ser_core.errors import ConfigError
    from ser_core.inference import Predictor
    from ser_core.saved import load_trained

    models, _, user = trained
    model, card = load_trained(NAME, models)
    T = card["calibration"]["temperature"]  # predictions are temperature-scaled as the card says
    p = Predictor.from_dir([NAME], models)
    clip = user[-1]
    x = features([clip])
    with np.load(models / NAME / "speaker_norm.npz") as z:
        expected = apply_temperature(model.predict_proba(((x - z["mean"]) / z["scale"]).astype(np.float32)), T)[0]
        within = z["within_scale"]
    assert p.calibration_status() == {NAME: False} and not p.calibrated
    got = p.predict_file(clip)[NAME]
    assert np.allclose([got[str(c)] for c in model.classes_], expected, atol=1e-6)

    with pytest.raises(ConfigError, match="at least 5 clips"):
        p.calibrate(user[:4])
    cal = user[:6]
    Xc = features(cal)
    expected = apply_temperature(model.predict_proba(calibrated_zscore(x, Xc, within)), T)[0]
    assert p.calibrate(cal) is p and p.calibrated and p.n_calibration_clips == 6
    got = p.predict_file(clip)[NAME]
    assert np.allclose([got[str(c)] for c in model.classes_], expected, atol=1e-6)
    # (y, sr) pairs calibrate exactly like paths; clearing goes back to the training statistics
    q = Predictor.from_dir([NAME], models).calibrate([(load_audio(c, trim=False, normalize=None), 16000)
                                                      for c in cal])
    assert q.predict_file(clip) == p.predict_file(clip)
    q.clear_calibration()
    assert q.calibration_status() == {NAME: False}


@pytest.mark.slow
def test_calibration_leaves_plain_models_and_the_shared_predictor_alone(trained):
    import copy

    from ser_core.inference import Predictor

    models, _, user = trained
    assert Predictor.from_dir([PLAIN], models).calibration_status() == {}
    p = Predictor.from_dir(None, models)
    before = p.predict_file(user[-1])
    calibrated = copy.copy(p).calibrate(user[:5])
    assert calibrated.calibration_status() == {NAME: True} and not p.calibrated
    after = calibrated.predict_file(user[-1])
    assert after[PLAIN] == before[PLAIN] and after[NAME] != before[NAME]
    assert p.predict_file(user[-1]) == before  # the shared predictor is untouched


@pytest.mark.slow
def test_evaluate_normalises_each_speaker_with_its_own_clips(trained, shared_ravdess, tmp_path, capsys):
    from ser_core.cli import main
    from ser_core.evaluation import compute_metrics
    from ser_core.saved import load_trained

    models, _, _ = trained
    paths = {a: link(shared_ravdess, tmp_path / "eval", a, sl)
             for a, sl in (("Actor_04", slice(0, 60, 3)), ("Actor_05", slice(0, 60, 3)), ("Actor_06", slice(0, 3)))}
    assert main(["evaluate", "--model", NAME, "--models-dir", str(models), "--data", str(tmp_path / "eval"),
                 "--jobs", "1", "--json"]) == 0
    out = capsys.readouterr()
    got = json.loads(out.out.strip().splitlines()[-1])
    assert "each of the 3 speakers normalised with its own clips" in out.err

    model, _ = load_trained(NAME, models)
    fs = get_feature_set("rich")
    with np.load(models / NAME / "speaker_norm.npz") as z:
        train_mean, train_scale, within = z["mean"], z["scale"], z["within_scale"]
    y_true, y_pred = [], []
    for actor, ps in paths.items():
        X = compute_files([str(p) for p in ps], fs, n_jobs=1).astype(np.float64)
        # 5+ clips: the speaker's own statistics; Actor_06 has 3, so it falls back to the training statistics
        Z = calibrated_zscore(X, X, within) if len(ps) >= 5 else ((X - train_mean) / train_scale).astype(np.float32)
        y_pred += list(model.predict(Z))
        y_true += [emotion(p) for p in ps]
    m = compute_metrics(y_true, y_pred, got["labels"])
    assert got["n"] == 43 and got["confusion"] == m["confusion"] and got["uar"] == pytest.approx(m["uar"])


@pytest.mark.slow
def test_cli_predict_with_and_without_calibration(trained, capsys):
    from ser_core.cli import main
    from ser_core.inference import Predictor

    models, _, user = trained
    clip = str(user[-1])
    assert main(["predict", "--model", NAME, "--models-dir", str(models), clip, "--json"]) == 0
    out = capsys.readouterr()
    assert "run uncalibrated" in out.err and NAME in out.err and len(out.err.strip().splitlines()) == 1
    row = json.loads(out.out)[0]
    assert row["calibrated"] is False
    assert row["probabilities"] == pytest.approx(Predictor.from_dir([NAME], models).predict_file(clip)[NAME])

    cal_dir = user[0].parent  # a folder: its audio files (the 10 Actor_04 clips) calibrate
    assert main(["predict", "--model", NAME, "--models-dir", str(models), clip, "--calibrate", str(cal_dir),
                 "--json"]) == 0
    out = capsys.readouterr()
    assert "uncalibrated" not in out.err and "calibrated" in out.err
    row = json.loads(out.out)[0]
    expected = Predictor.from_dir([NAME], models).calibrate(sorted(map(str, user))).predict_file(clip)[NAME]
    assert row["calibrated"] is True and row["probabilities"] == pytest.approx(expected)

    assert main(["predict", "--model", NAME, "--models-dir", str(models), clip, "--calibrate", clip]) == 2
    assert "at least 5 clips" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_calibration_expander(trained, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ser_core.inference import Predictor, describe_prediction

    models, _, user = trained
    monkeypatch.setenv("SER_MODELS_DIR", str(models))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/demo.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect[0].format_func(NAME).endswith("(speaker-adaptive)")
    assert not at.multiselect[0].format_func(PLAIN).endswith("(speaker-adaptive)")
    at.multiselect[0].set_value([NAME]).run()
    assert [e.label for e in at.expander] == ["Calibrate to your voice"]
    uploader = at.file_uploader(key="calib_upload_0")
    assert uploader.accept_multiple_files
    files = [(p.name, p.read_bytes(), "audio/flac") for p in user[:6]]
    uploader.set_value(files[:3]).run()
    assert "3 of 5 clips in" in at.info[0].value
    assert at.file_uploader(key="calib_upload_1").value in (None, [])  # taken in: the uploader empties

    at.file_uploader(key="calib_upload_1").set_value(files[2:]).run()  # one clip again: counted once
    assert not at.exception, [e.value for e in at.exception]
    assert f"6 clips in: {NAME} calibrated to your voice" in html.unescape(at.success[0].value)  # plain()
    assert html.unescape(at.caption[-1].value) == "Clips in: " + ", ".join(p.name for p in user[:6])
    main = next(u for u in at.file_uploader if not u.key.startswith("calib_"))
    main.set_value((user[-1].name, user[-1].read_bytes(), "audio/flac")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "calibrated to your voice (6 clips)" in [c.value for c in at.caption]
    predictor = Predictor.from_dir([NAME], models)
    expected = predictor.calibrate(user[:6]).predict_file(user[-1])[NAME]
    top = [m.value for m in at.metric if m.label == "top emotion"]
    assert top == [describe_prediction(expected, predictor.thresholds()[NAME])["answer"]]  # label or "not sure"

    next(b for b in at.button if b.label == "Clear calibration clips").click().run()
    assert "0 of 5 clips in" in at.info[0].value and at.file_uploader(key="calib_upload_3").value in (None, [])


CALIBRATION_MAX = 20  # app_pages/demo.py: the clips of one voice a session keeps


@pytest.mark.slow
def test_demo_calibration_keeps_at_most_its_cap_and_drops_every_file(trained, shared_ravdess, monkeypatch):
    """Clips are taken in up to CALIBRATION_MAX; the files past it are not read, an unreadable one is named; the
    bytes of every file, kept or refused, leave the server's upload store in the same run and the session holds
    only decoded signals."""
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.uploaded_file_manager import UploadedFile
    from streamlit.testing.v1 import AppTest

    import ser_core.audio
    from app_shared import plain

    removed, decoded = [], []
    remove_file, load_audio = MemoryUploadedFileManager.remove_file, ser_core.audio.load_audio
    monkeypatch.setattr(MemoryUploadedFileManager, "remove_file",
                        lambda self, session, file_id: (removed.append(file_id), remove_file(self, session, file_id)))
    monkeypatch.setattr(ser_core.audio, "load_audio", lambda src, **kw: (decoded.append(src), load_audio(src, **kw))[1])
    monkeypatch.setenv("SER_MODELS_DIR", str(trained[0]))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("app_pages/demo.py").run()
    at.multiselect[0].set_value([NAME]).run()
    assert at.file_uploader(key="calib_upload_0").label == f"Clips of your voice (at most {CALIBRATION_MAX})"
    clips = sorted((shared_ravdess / "Actor_05").glob("*.flac"))[:CALIBRATION_MAX + 2]  # never trained on
    files = [("notes.wav", b"not audio\n" * 100, "audio/wav")] + [(p.name, p.read_bytes(), "audio/flac")
                                                                    for p in clips]
    at.file_uploader(key="calib_upload_0").set_value(files).run()  # 23 files at once
    assert not at.exception, [e.value for e in at.exception]
    assert len(decoded) == CALIBRATION_MAX and len(removed) == len(files)  # 3 never read; every file dropped
    (warning,) = at.warning
    assert html.unescape(warning.value).startswith("Left out: 'notes.wav' (") and warning.value.endswith(
        plain("; 3 more files, not read: at most 20 clips are kept"))
    assert f"{CALIBRATION_MAX - 1} clips in: {NAME} calibrated" in html.unescape(at.success[0].value)
    assert at.file_uploader(key="calib_upload_1").value in (None, [])
    held = list(at.session_state.to_dict().values())
    assert not [v for v in held if isinstance(v, (bytes, UploadedFile)) or (
        isinstance(v, list) and any(isinstance(f, UploadedFile) for f in v))], held

    more = [(p.name, p.read_bytes(), "audio/flac") for p in sorted((shared_ravdess / "Actor_06").glob("*.flac"))[:3]]
    at.file_uploader(key="calib_upload_1").set_value(more).run()  # room for one more
    assert f"{CALIBRATION_MAX} clips in" in html.unescape(at.success[0].value)
    assert at.warning[0].value == plain("Left out: 2 more files, not read: at most 20 clips are kept")
    assert len(decoded) == CALIBRATION_MAX + 1 and len(removed) == len(files) + 3


@pytest.mark.slow
def test_augmented_copies_are_normalised_like_their_speaker(shared_ravdess, tmp_path, monkeypatch):
    """With augmentation, the final model's extra rows are the augmented clips z-scored with the statistics of
    their speaker's clean clips (not raw features beside normalised ones)."""
    import ser_core.models as registry
    from ser_core.augment import augmented_features
    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate

    root = tmp_path / "data"
    paths = [p for a in ("Actor_01", "Actor_02") for p in link(shared_ravdess, root, a, slice(0, 60, 4))]
    seen, create = [], registry.create_model

    def recording_create(*a, **kw):
        model = create(*a, **kw)
        fit = model.fit
        model.fit = lambda X, y: (seen.append(np.array(X)), fit(X, y))[1]
        return model

    monkeypatch.setattr(registry, "create_model", recording_create)
    corpus = load_corpus(root)
    cross_validate(RunConfig(model="svm", feature_set="rich", folds=2, speaker_norm=True, augment=("noise",)),
                   corpus, save_to=tmp_path / "m", n_jobs=1)
    fs = get_feature_set("rich")
    manifest_paths = corpus.manifest["path"].tolist()  # the order the run used
    X = compute_files(manifest_paths, fs, n_jobs=1).astype(np.float64)
    Xa = augmented_features(manifest_paths, fs, "noise", 0, n_jobs=1).astype(np.float64)
    spk = corpus.manifest["speaker"].to_numpy()
    expected = np.empty_like(Xa, dtype=np.float32)
    for s in np.unique(spk):
        rows = spk == s
        expected[rows] = zscore(Xa[rows], X[rows].mean(0), X[rows].std(0))
    final = seen[-1]  # (2n, d): normalised clean clips, then normalised augmented copies
    assert final.shape == (2 * len(paths), X.shape[1])
    assert np.allclose(final[len(paths):], expected, atol=1e-4)


@pytest.mark.slow
def test_missing_training_statistics_is_a_plain_error(trained, tmp_path):
    import shutil

    from ser_core.errors import ModelNotFoundError
    from ser_core.inference import Predictor

    models, _, _ = trained
    shutil.copytree(models / NAME, tmp_path / NAME)
    (tmp_path / NAME / "speaker_norm.npz").unlink()
    with pytest.raises(ModelNotFoundError, match="lacks its training statistics"):
        Predictor.from_dir([NAME], tmp_path)


def test_speaker_normalizer_prior_and_add_speaker():
    from ser_core.errors import ConfigError
    from ser_core.features import SpeakerNormalizer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * [1.0, 2.0, 4.0]
    spk = np.repeat(["a", "b"], 20)
    plain = SpeakerNormalizer().fit(X, spk)
    assert np.allclose(plain.transform(X[:20], spk[:20]), zscore(X[:20], X[:20].mean(0), X[:20].std(0)), atol=1e-5)
    assert np.allclose(plain.within_scale_, (X[:20].std(0) + X[20:].std(0)) / 2)
    new = rng.normal(size=(6, 3)) * 10 + 5
    shrunk = SpeakerNormalizer(prior_clips=10).fit(X, spk).add_speaker("c", new)
    assert np.allclose(shrunk.stats_["c"][0], new.mean(0))  # the mean is the speaker's own
    w = shrunk.within_scale_  # the spread: 6 clips' variance pooled with 10 clips of the typical spread
    assert np.allclose(shrunk.stats_["c"][1], np.sqrt((6 * new.var(0) + 10 * w ** 2) / 16))
    with pytest.raises(ConfigError, match="at least 5 clips"):
        plain.add_speaker("d", new[:4])
    assert "c" not in plain.stats_
