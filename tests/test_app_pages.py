"""AppTest of the Home, Explore and Demo pages (the Train and Leaderboard pages have their own tests).

The Demo tests train two quick models (svm, random_forest) on two shared RAVDESS actors into a temp folder
and point the app at it with SER_MODELS_DIR.
"""
from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "streamlit_app.py")
SAMPLES = REPO / "samples" / "ravdess"
ANGRY = SAMPLES / "Actor_01" / "03-01-05-02-01-01-01.flac"
TIMEOUT = 120


def train_quick_models(shared_ravdess: Path, out: Path, models=("svm", "random_forest")) -> Path:
    """2-fold speaker-grouped CV + final model of each of ``models`` on actors 01-02 (120 clips), saved to
    ``out/<model>``; a few seconds per model."""
    from ser_core.corpora import Corpus, load_corpus
    from ser_core.evaluation import RunConfig, cross_validate

    c = load_corpus(shared_ravdess)
    keep = sorted(c.manifest["speaker"].unique())[:2]
    sub = Corpus(c.name, c.root, c.manifest[c.manifest["speaker"].isin(keep)].reset_index(drop=True))
    for name in models:
        cross_validate(RunConfig(model=name, folds=2), sub, save_to=out / name, n_jobs=2)
    return out


@pytest.fixture(scope="module")
def models_dir(shared_ravdess, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # the same feature cache as conftest's per-test isolation
        mp.setenv("SER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        return train_quick_models(shared_ravdess, tmp_path_factory.mktemp("models"))


def wav_bytes(y, sr=16000, subtype="FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def no_exception(at: AppTest):
    assert not at.exception, [e.value for e in at.exception]


def page(path: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if path:
        at.switch_page(path).run()
    no_exception(at)
    return at


def figure(chart) -> dict:
    return json.loads(chart.proto.spec)


# -- Home ----------------------------------------------------------------------------------------------------
def test_home_renders_with_data_source_picker():
    at = page()
    assert at.title[0].value == "SER Studio"
    assert "Bundled samples" in at.sidebar.radio[0].value
    assert "speaker-grouped" in at.markdown[0].value


@pytest.mark.slow
def test_data_source_is_kept_in_the_url_across_a_reload(shared_ravdess):
    at = page(data_kind="Local folder or CSV", data_path=str(shared_ravdess))
    assert at.query_params["data"] in ("folder", ["folder"])
    assert at.query_params["path"] in (str(shared_ravdess), [str(shared_ravdess)])
    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a new session opened on the same URL
    reloaded.query_params["data"], reloaded.query_params["path"] = "folder", str(shared_ravdess)
    reloaded.run()
    assert reloaded.sidebar.radio[0].value == "Local folder or CSV"
    reloaded.switch_page("app_pages/explore.py").run()
    no_exception(reloaded)
    assert {m.label: m.value for m in reloaded.metric}["Clips"] == "960"


# -- Explore -------------------------------------------------------------------------------------------------
def test_explore_overview_of_bundled_samples():
    at = page("app_pages/explore.py")
    assert [t.label for t in at.tabs] == ["Overview", "One clip", "Compare two clips", "Across emotions"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Clips"] == "240" and metrics["Speakers"] == "4"  # RAVDESS actors 01-04, every speech clip
    assert len(at.get("plotly_chart")) == 4  # emotion, speaker, gender x intensity, durations
    assert "imbalanced" in at.warning[0].value and "'neutral'" in at.warning[0].value  # 16 neutral, 32 of the rest


def test_explore_calls_out_imbalance_of_full_ravdess(shared_ravdess):
    at = page("app_pages/explore.py", data_kind="Local folder or CSV", data_path=str(shared_ravdess))
    assert {m.label: m.value for m in at.metric}["Clips"] == "960"
    text = at.warning[0].value
    assert "imbalanced" in text and "'neutral'" in text and "2.0 to 1" in text and "UAR" in text


@pytest.mark.slow
def test_explore_one_clip_shares_time_axis_and_filters():
    at = page("app_pages/explore.py")
    at.session_state["explore_tab"] = "One clip"
    at.run()
    no_exception(at)
    assert [s.label for s in at.selectbox] == ["Emotion", "Speaker", "Clip"]
    fig = figure(at.get("plotly_chart")[0])
    assert [t["type"] for t in fig["data"]] == ["scatter", "heatmap", "scatter", "scatter", "scatter"]
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert any("Pitch" in t for t in titles) and any("centroid" in t for t in titles)
    assert all(fig["layout"][f"xaxis{i if i > 1 else ''}"].get("matches") == "x5" for i in range(1, 5))  # shared time
    at.selectbox(key="one_emo").set_value("sad").run()
    no_exception(at)
    assert "· sad ·" in at.selectbox(key="one_clip").format_func(at.selectbox(key="one_clip").value)
    assert len(at.selectbox(key="one_clip").options) == 32  # 8 sad clips of each of the 4 actors


@pytest.mark.slow
def test_explore_compare_defaults_to_angry_vs_sad_same_sentence():
    at = page("app_pages/explore.py")
    at.session_state["explore_tab"] = "Compare two clips"
    at.run()
    no_exception(at)
    a, b = at.selectbox(key="cmp_a_clip").value, at.selectbox(key="cmp_b_clip").value
    assert (a.emotion, b.emotion) == ("angry", "sad")
    assert a.speaker == b.speaker and a.statement == b.statement and a.intensity == b.intensity
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    assert figure(charts[0])["layout"]["yaxis3"]["range"] == figure(charts[1])["layout"]["yaxis3"]["range"]
    table = at.dataframe[0].value
    assert list(table["emotion"]) == ["angry", "sad"] and (table["mean f0 (Hz)"] > 60).all()


@pytest.mark.slow
def test_explore_across_emotions_distributions_and_projections():
    at = page("app_pages/explore.py")
    at.session_state["explore_tab"] = "Across emotions"
    at.run()
    no_exception(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 5  # pitch, RMS, centroid, duration per emotion + projection
    box = figure(charts[0])
    assert box["data"][0]["type"] == "box" and len(box["data"]) == 8
    pitch = np.concatenate([_decode(t["y"]) for t in box["data"]])
    assert np.nanmin(pitch) > 60 and np.nanmax(pitch) < 600  # plausible speaking f0 in Hz
    assert "PC 1" in at.caption[-1].value or "PC 1" in figure(charts[4])["layout"]["xaxis"]["title"]["text"]
    next(r for r in at.radio if r.label == "Projection").set_value("t-SNE").run()
    no_exception(at)
    assert "t-SNE on 240 of 240 clips" in at.caption[-1].value


def _decode(arr):
    """Plotly 6+ typed-array encoding ({"dtype", "bdata"} base64) or a plain list -> numpy."""
    import base64

    if isinstance(arr, dict):
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr, dtype=float)


# -- Demo ----------------------------------------------------------------------------------------------------
@pytest.fixture
def demo(models_dir, monkeypatch):
    monkeypatch.setenv("SER_MODELS_DIR", str(models_dir))
    return page("app_pages/demo.py")


def test_demo_without_models_explains_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path))
    at = page("app_pages/demo.py")
    assert "No trained models" in at.info[0].value and "Train" in at.info[0].value
    assert "python -m ser_core train" in at.info[0].value


@pytest.mark.slow
def test_demo_lists_models_with_cv_uar(demo, models_dir):
    ms = demo.multiselect[0]
    assert sorted(ms.value) == ["random_forest", "svm"]
    uar = json.loads((models_dir / "svm" / "card.json").read_text())["cv"]["metrics"]["uar"]["mean"]
    assert ms.format_func("svm") == f"svm (CV UAR {uar:.2f})"
    assert [r.value for r in demo.radio if r.label == "Input"] == ["Upload a file"]


@pytest.mark.slow
def test_demo_calibration_caption_quotes_the_saved_ensembles_cv_uar(models_dir, tmp_path, monkeypatch):
    """"Calibrate to your voice" compares with the ensemble's cross-validated UAR read from its card (no number
    written into the page to go stale), and says nothing of an ensemble where none is saved."""
    import shutil

    from ser_core.ensemble import fit_ensemble

    caption = lambda at: next(c.value for c in at.caption if "Speaker-adaptive models" in c.value)  # noqa: E731
    for folder in ("plain", "with_ensemble"):  # + a speaker-adaptive model, which brings the expander
        shutil.copytree(models_dir, tmp_path / folder)
        shutil.copytree(REPO / "trained_models" / "adaptive_lda", tmp_path / folder / "adaptive_lda")
    card = fit_ensemble(["svm", "random_forest"], root=tmp_path / "with_ensemble", name="ensemble")
    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path / "plain"))
    assert "the ensemble scores" not in caption(page("app_pages/demo.py"))
    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path / "with_ensemble"))
    uar = card["cv"]["metrics"]["uar"]["mean"]
    assert f"Without calibration the ensemble scores {uar:.2f} on one clip" in caption(page("app_pages/demo.py"))


@pytest.mark.slow
def test_demo_upload_predicts_with_every_model_and_ensemble(demo):
    from ser_core.inference import Predictor, describe_prediction

    demo.file_uploader[0].set_value((ANGRY.name, ANGRY.read_bytes(), "audio/flac")).run()
    no_exception(demo)
    assert not demo.error
    tops = [m.value for m in demo.metric if m.label == "top emotion"]
    assert len(tops) == 3  # ensemble + two models
    p = Predictor.from_dir()
    direct, thresholds = p.predict_file(ANGRY), p.thresholds()  # the page shows the library's own predictions
    expected = [describe_prediction(probs, thresholds[name])["answer"] for name, probs in direct.items()]
    assert sorted(tops[1:]) == sorted(expected)  # each a label, or "not sure" below the model's threshold
    markdown = html.unescape(" ".join(m.value for m in demo.markdown))  # user text arrives escaped (plain())
    assert "random_forest (CV UAR" in markdown and "svm (CV UAR" in markdown
    assert [s.value for s in demo.main.subheader] == ["Ensemble (weighted by CV UAR)", "Each model",
                                                       "Why this emotion?"]
    bars = figure(demo.get("plotly_chart")[0])  # the answer leads, then the waveform
    probs = _decode(bars["data"][0]["x"])
    assert np.isclose(probs.sum(), 1.0, atol=1e-3) and len(probs) == 8
    wave = figure(demo.get("plotly_chart")[1])
    assert wave["layout"]["shapes"][0]["type"] == "rect"  # the trimmed speech region is highlighted


@pytest.mark.slow
def test_demo_record_with_audio_input(demo):
    demo.radio(key="demo_mode").set_value("Record").run()
    y, sr = sf.read(ANGRY, dtype="float32")
    demo.audio_input[0].set_value(("recording.wav", wav_bytes(y, sr, "PCM_16"), "audio/wav")).run()
    no_exception(demo)
    assert len([m for m in demo.metric if m.label == "top emotion"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name, make, expect", [
    ("notes.wav", lambda: b"this is a text file, not audio\n" * 50, "not a readable audio file"),
    ("empty.wav", lambda: b"", "empty"),
    ("long.wav", lambda: wav_bytes(np.zeros(8000 * 60 * 20, np.int16), 8000, "PCM_16"), "120 s limit"),
])
def test_demo_bad_input_is_a_friendly_error(demo, name, make, expect):
    demo.file_uploader[0].set_value((name, make(), "audio/wav")).run()
    no_exception(demo)
    assert expect in demo.error[0].value
    assert not [m for m in demo.metric if m.label == "top emotion"]


@pytest.mark.slow
@pytest.mark.parametrize("name, y, reason", [
    ("noise.wav", np.random.default_rng(0).normal(0, 0.3, 3 * 16000), "noise"),
    ("tone.wav", 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * 16000) / 16000), "tone"),
    ("silence.wav", np.zeros(32000), "silent"),
])
def test_demo_says_when_it_does_not_sound_like_speech(demo, name, y, reason):
    demo.file_uploader[0].set_value((name, wav_bytes(y.astype(np.float32)), "audio/wav")).run()
    no_exception(demo)
    assert not demo.error
    assert demo.warning[0].value.startswith("This does not sound like speech.") and reason in demo.warning[0].value
    assert not [m for m in demo.metric if m.label == "top emotion"]  # no emotion claimed


@pytest.mark.slow
def test_demo_not_sure_below_a_models_threshold(models_dir, tmp_path, monkeypatch):
    """A model whose card says "not sure below 0.99" lists its top candidates; the same model without
    calibration names its top emotion."""
    import shutil

    from ser_core.inference import Predictor, describe_prediction

    for name, calibration in (("rf_sure", None), ("rf_unsure", {"temperature": 1.0, "threshold": 0.99})):
        shutil.copytree(models_dir / "random_forest", tmp_path / name)
        card = json.loads((tmp_path / name / "card.json").read_text())
        card.update(name=name, calibration=calibration)
        (tmp_path / name / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path))
    at = page("app_pages/demo.py")
    at.file_uploader[0].set_value((ANGRY.name, ANGRY.read_bytes(), "audio/flac")).run()
    no_exception(at)
    probs = Predictor.from_dir(["rf_sure"], tmp_path).predict_file(ANGRY)["rf_sure"]
    sure, unsure = describe_prediction(probs), describe_prediction(probs, 0.99)
    assert unsure["uncertain"] and len(unsure["candidates"]) >= 2
    shown = [(html.unescape(m.value), html.unescape(m.proto.delta)) for m in at.metric if m.label == "top emotion"]
    assert shown[1:] == [(sure["label"], sure["detail"]), ("not sure", unsure["detail"])]


@pytest.mark.slow
def test_demo_long_recording_gets_a_timeline(demo):
    clips = [sf.read(SAMPLES / "Actor_02" / f"03-01-0{e}-02-01-01-02.flac", dtype="float32")[0] for e in (2, 3, 4, 5)]
    y = np.concatenate(clips)  # about 14 s, four emotions in a row (each clip with its own pauses)
    demo.file_uploader[0].set_value(("long.wav", wav_bytes(y), "audio/wav")).run()
    no_exception(demo)
    assert "Emotion over time (speech segments)" in [s.value for s in demo.subheader]
    segments = demo.dataframe[0].value  # tests/test_app_demo_segments.py checks them against known boundaries
    assert len(segments) == 4 and 0 < segments["start"].iloc[0] and segments["end"].iloc[-1] < len(y) / 16000


# Live mode (streamlit-webrtc) needs a real server session; tests/test_browser.py covers it.


# -- helpers behind the Demo page -----------------------------------------------------------------------------
@pytest.mark.slow
def test_analyse_audio_reports_speech_region_and_predictions(models_dir):
    from ser_core.inference import analyse_audio
    from ser_core.audio import trim_silence
    from ser_core.inference import Predictor
    from ser_core.speech import speech_check

    y, sr = sf.read(ANGRY, dtype="float32")
    padded = np.concatenate([np.zeros(sr), y, np.zeros(sr)]).astype(np.float32)  # 1 s of silence each side
    res = analyse_audio(wav_bytes(padded, sr), Predictor.from_dir(None, models_dir))
    _, (s0, e0) = trim_silence(y, top_db=20)  # the clip's own speech region
    assert res["speech"] == pytest.approx((sr + s0, sr + e0), abs=512)  # one trimming hop
    assert set(res["predictions"]) == {"svm", "random_forest"}
    assert len(padded) / sr > 6 and res["timeline"][-1]["end_s"] == pytest.approx(len(padded) / sr)
    assert res["is_speech"] and res["lead"] is None and abs(sum(res["ensemble"].values()) - 1) < 1e-6
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)
    res = analyse_audio(wav_bytes(tone, sr), Predictor.from_dir(None, models_dir))
    assert res == {"is_speech": False, "reason": speech_check(tone, sr)[1]}  # no prediction at all


@pytest.mark.slow
def test_timeline_marks_windows_that_do_not_sound_like_speech(models_dir):
    from ser_core.inference import Predictor

    y, sr = sf.read(ANGRY, dtype="float32")
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(5 * sr) / sr).astype(np.float32)
    windows = Predictor.from_dir(None, models_dir).timeline(np.concatenate([y, tone, y]), sr)
    t0, t1 = len(y) / sr, (len(y) + len(tone)) / sr
    inside = [w for w in windows if t0 <= w["start_s"] and w["end_s"] <= t1]
    assert len(inside) == 2 and all(not w["speech"] and "pitch" in w["reason"] and not w["models"] for w in inside)
    assert windows[0]["speech"] and windows[-1]["speech"] and windows[0]["models"]


@pytest.mark.slow
def test_demo_leads_with_a_saved_ensemble(models_dir, tmp_path, monkeypatch):
    """A saved ensemble is picked first by default and its answer leads; the single models follow."""
    import shutil

    from ser_core.ensemble import fit_ensemble
    from ser_core.inference import Predictor, describe_prediction

    for name in ("svm", "random_forest"):
        shutil.copytree(models_dir / name, tmp_path / name)
    fit_ensemble(["svm", "random_forest"], root=tmp_path)
    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path))
    at = page("app_pages/demo.py")
    assert at.multiselect[0].value == ["ensemble", "random_forest", "svm"]
    at.file_uploader[0].set_value((ANGRY.name, ANGRY.read_bytes(), "audio/flac")).run()
    no_exception(at)
    assert [s.value for s in at.main.subheader] == ["Best estimate (ensemble of 2 models)", "Each model",
                                                    "Why this emotion?"]
    p = Predictor.from_dir(None, tmp_path)
    direct, thresholds = p.predict_file(ANGRY), p.thresholds()
    shown = [m.value for m in at.metric if m.label == "top emotion"]
    assert shown == [describe_prediction(direct[n], thresholds[n])["answer"] for n in ("ensemble", "random_forest",
                                                                                       "svm")]


@pytest.mark.slow
def test_pages_import_no_deep_learning_framework(models_dir, tmp_path):
    """Home, Explore and Demo (with scikit-learn models) run without importing TensorFlow, PyTorch or
    transformers: frameworks load only with a model that needs them (and after aiortc, see the Demo page)."""
    import os
    import subprocess
    import sys

    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({APP!r}, default_timeout={TIMEOUT}).run()
at.switch_page("app_pages/explore.py").run()
at.switch_page("app_pages/demo.py").run()
at.file_uploader[0].set_value(("a.flac", open({str(ANGRY)!r}, "rb").read(), "audio/flac")).run()
assert not at.exception and len([m for m in at.metric if m.label == "top emotion"]) == 3
print(sorted(m for m in ("tensorflow", "torch", "transformers", "keras") if m in sys.modules))
print("aiortc" in sys.modules)
"""
    env = {**os.environ, "SER_MODELS_DIR": str(models_dir), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-3:-1] == ["[]", "True"]
