"""AppTest of the Train and Leaderboard pages (Streamlit's headless script runner)."""
from __future__ import annotations

import html
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_shared import SOURCES, REPO
from ser_core.evaluation import compute_metrics, summarize
from ser_core.jobs import LocalProcessExecutor
from helpers import store_run
from ser_core.results import ResultsStore

LABELS = ["angry", "happy", "neutral", "sad"]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for k, sub in (("SER_JOBS_DIR", "jobs"), ("SER_RESULTS_DB", "results.sqlite"), ("SER_USER_MODELS_DIR", "models")):
        monkeypatch.setenv(k, str(tmp_path / sub))
    return tmp_path


@pytest.fixture(scope="module")
def two_actors(tmp_path_factory, shared_ravdess):
    root = tmp_path_factory.mktemp("corpus")
    for a in ("01", "02"):
        (root / f"Actor_{a}").mkdir()
        for f in (shared_ravdess / f"Actor_{a}").glob("*.flac"):
            (root / f"Actor_{a}" / f.name).symlink_to(f)
    return root


def _page(name, data=None) -> AppTest:
    """The app through its entry script (navigation and sidebar included), switched to ``app_pages/<name>``."""
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    at.switch_page(f"app_pages/{name}")
    if data is not None:
        at.session_state["data_kind"] = SOURCES[1]
        at.session_state["data_path"] = str(data)
    return at


def _store_run(store, model, split="speaker", seed=0):
    """A finished run with real metrics of synthetic predictions (what cross_validate would store)."""
    rng = np.random.default_rng(seed)
    folds = []
    rid = store.start_run(model=model, params={}, feature_set={"name": "mfcc_chroma_mel"}, dataset="ravdess",
                          data_root="/data", data_fingerprint="f" * 16, n_clips=80, n_speakers=4, split=split,
                          splitter="StratifiedGroupKFold(n_splits=2)", k=2, seed=seed,
                          speaker_dependent=split == "random", options={}, config_hash=f"h{model}{split}",
                          versions={})
    for i in range(2):
        y = np.repeat(LABELS, 10)
        pred = np.where(rng.random(40) < 0.6, y, rng.choice(LABELS, 40))
        m = compute_metrics(y, pred, LABELS)
        folds.append(m)
        store.add_fold(rid, i, metrics=m, n_train=40, n_test=40, test_speakers=[f"{2 * i + 1}", f"{2 * i + 2}"],
                       train_time_s=0.5, latency_ms=0.2)
    confusion = (np.asarray(folds[0]["confusion"]) + np.asarray(folds[1]["confusion"])).tolist()
    store.finish_run(rid, summary=summarize(folds), labels=LABELS, confusion=confusion, train_time_s=0.5,
                     latency_ms=0.2, model_size_bytes=12345)
    return rid


def _charts(at) -> dict:
    """Plotly charts of the page by title."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {c["layout"].get("title", {}).get("text", ""): c for c in specs}


@pytest.mark.slow
def test_leaderboard_on_a_fresh_install_shows_the_shipped_runs(dirs):
    """An empty store: the shipped models' runs, with intervals, "vs best", breakdowns and tables for papers."""
    at = _page("leaderboard.py").run()
    assert not at.exception, at.exception
    assert not at.info  # nothing to explain: the table is full
    table = at.dataframe[0].value.set_index("run")
    shipped = sorted(d.name for d in (REPO / "trained_models").iterdir() if (d / "oof.npz").is_file())
    assert sorted(table.index) == [f"shipped:{n}" for n in shipped] and (table["source"] == "shipped").all()
    card = json.loads((REPO / "trained_models" / "lda" / "card.json").read_text())
    assert table.loc["shipped:lda", "UAR"] == pytest.approx(card["cv"]["metrics"]["uar"]["mean"] * 100)
    low, high = map(float, table.loc["shipped:lda", "UAR 95 % CI"].split("–"))
    assert low < table.loc["shipped:lda", "UAR"] < high
    best = table["UAR"].idxmax()
    assert table.loc[best, "vs best"] == f"best of {len(table)}"
    assert table.loc["shipped:decision_tree", "vs best"].startswith("worse (p ")
    for mark in table["vs best"].drop(best):  # "≈ best (p 0.703)" or "worse (p 0.002)"
        assert (mark.startswith("≈ best") == (float(mark.split("p ")[1].rstrip(")")) >= 0.05)), mark
    assert any("paired permutation test over speakers" in c.value for c in at.caption)
    assert any("reported elsewhere, not measured here" in md.value for md in at.markdown)
    markdown, latex = (c.value for c in at.code)
    assert markdown.startswith("| model | dataset | split | K | UAR |") and f"| **{best.split(':')[1]}** |" in markdown
    assert "\\begin{tabular}" in latex and "decision\\_tree" in latex
    assert at.get("download_button")

    assert at.selectbox(key="lb_run").value == best  # one run: the best, with its confusion matrix and intervals
    charts = _charts(at)
    assert "confusion (row-normalised)" in charts and "reliability: accuracy per confidence bin" in charts
    assert len(charts["UAR per speaker (%)"]["data"][0]["x"]) == 28  # RAVDESS 16, TESS 2, EmoDB 10
    assert sorted(charts["UAR per gender (%)"]["data"][0]["x"]) == ["female", "male"]
    intervals = next(d.value for d in at.dataframe if "low %" in d.value).set_index("metric")
    assert (intervals["low %"] < intervals["mean %"]).all() and (intervals["mean %"] < intervals["high %"]).all()


def _gender_gap_oof() -> dict:
    """Out-of-fold predictions of four speakers in two folds: the men's clips (01, 03) all right, the women's
    (02, 04) half right."""
    y = np.tile(LABELS, 8)  # 8 clips per speaker
    speaker = np.repeat(["01", "02", "03", "04"], 8)
    female = np.isin(speaker, ["02", "04"])
    pred = np.where(female & (np.arange(32) % 2 == 1), np.roll(y, 1), y)
    proba = (pred[:, None] == np.asarray(LABELS)[None]).astype(float)
    return {"proba": proba, "classes": np.asarray(LABELS), "fold": np.isin(speaker, ["03", "04"]).astype(int),
            "y": y, "paths": np.char.add(np.char.add("/data/Actor_", speaker), [f"/{i}.wav" for i in range(32)]),
            "speaker": speaker, "gender": np.where(female, "female", "male"), "intensity": np.full(32, "unknown")}


@pytest.mark.slow
def test_leaderboard_breaks_a_run_down_by_voice_and_flags_a_gender_gap(dirs):
    rid = store_run(ResultsStore(), _gender_gap_oof())
    at = _page("leaderboard.py")
    at.session_state["lb_sources"] = ["yours"]
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="lb_run").value == rid
    charts = _charts(at)
    speakers = charts["UAR per speaker (%)"]["data"][0]
    assert speakers["x"] == ["01", "02", "03", "04"] and _values(speakers["y"]) == [100, 50, 100, 50]
    assert _values(charts["UAR per gender (%)"]["data"][0]["y"]) == [50, 100]  # female, male
    assert "UAR per intensity (%)" not in charts  # unknown for every clip
    assert any("differs by 50.0 points between genders" in w.value for w in at.warning)
    assert any("Gap between genders: 50.0 UAR points" in c.value for c in at.caption)


def _values(y) -> list:
    """A Plotly array as sent to the browser (a list, or {"dtype", "bdata": base64})."""
    import base64

    return list(np.frombuffer(base64.b64decode(y["bdata"]), y["dtype"])) if isinstance(y, dict) else list(y)


@pytest.mark.slow
def test_a_public_leaderboard_creates_no_database_and_still_shows_the_shipped_runs(dirs, monkeypatch):
    monkeypatch.setenv("SER_PUBLIC", "1")
    at = _page("leaderboard.py").run()
    assert not at.exception, at.exception
    assert (at.dataframe[0].value["source"] == "shipped").sum() >= 8 and at.selectbox(key="lb_run").value
    assert not (dirs / "results.sqlite").exists() and not list(dirs.glob("results.sqlite*"))  # wrote nothing
    store_run(ResultsStore(), _gender_gap_oof(), dataset="my_corpus")  # a store the owner filled: read, not written
    at = _page("leaderboard.py").run()
    assert "my_corpus" in set(at.dataframe[0].value["dataset"])


@pytest.mark.slow
def test_leaderboard_in_public_mode_exports_nothing_and_shows_no_server_paths(dirs, monkeypatch):
    at = _page("leaderboard.py").run()
    assert at.get("download_button") and [c.language for c in at.code] == ["markdown", "latex"]  # for a paper
    monkeypatch.setenv("SER_PUBLIC", "1")
    at = _page("leaderboard.py").run()
    assert not at.exception, at.exception
    assert not at.get("download_button") and not at.code  # no file, no table as text to copy
    at.selectbox(key="lb_run").set_value("shipped:svm").run()
    config = json.loads(at.json[0].value)
    assert config["data_root"] == "ravdess+tess+emodb" and config["saved_model"] == "svm"
    assert "/" not in json.dumps({k: config[k] for k in ("data_root", "saved_model")})
    rid = store_run(ResultsStore(), _gender_gap_oof(), dataset="my_corpus", params={"weights": "/srv/w/vgg.h5"})
    at.run()  # the new run among the options
    at.selectbox(key="lb_run").set_value(rid).run()
    config = json.loads(at.json[0].value)
    assert config["data_root"] == "my_corpus" and config["params"] == {"weights": "vgg.h5"}


@pytest.mark.slow
def test_your_runs_join_the_shipped_ones_and_the_page_opens_on_your_latest(dirs):
    store = ResultsStore()
    a, b = _store_run(store, "svm"), _store_run(store, "majority", seed=2)
    at = _page("leaderboard.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("run")
    assert table.loc[[str(a), str(b)], "source"].eq("yours").all() and (table["source"] == "shipped").sum() >= 8
    assert table.loc[str(a), "UAR 95 % CI"] == table.loc[str(a), "vs best"] == ""  # no out-of-fold predictions
    assert at.selectbox(key="lb_run").value == b


@pytest.mark.slow
def test_leaderboard_shows_runs_details_and_comparison(dirs):
    store = ResultsStore()
    a = _store_run(store, "svm")
    b = _store_run(store, "random_forest", split="random", seed=1)
    at = _page("leaderboard.py")
    at.session_state["lb_sources"] = ["yours"]
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["run"]) == {str(a), str(b)} and set(table["model"]) == {"svm", "random_forest"}
    assert (table["source"] == "yours").all()
    assert table.set_index("run").loc[str(b), "split"].startswith("random ⚠")
    uar = store.get_run(a)["summary"]["uar"]["mean"] * 100
    assert table.set_index("run").loc[str(a), "UAR"] == pytest.approx(uar)
    ref = at.dataframe[1].value
    assert list(ref["accuracy"].round(2)) == [63.89, 79.2, 48.61]
    assert (ref["status"] == "reported elsewhere, not measured here").all()
    assert at.get("download_button")
    charts = [c for c in at.get("plotly_chart") if c.key != "lb_robustness"]  # the shipped models' channels
    assert len(charts) == 4  # one run: confusion + recall; comparison: two confusions
    assert at.selectbox(key="lb_run").value in (a, b)
    folds = at.dataframe[2].value
    assert list(folds["fold"]) == [1, 2] and "UAR" in folds
    at.selectbox(key="lb_run").set_value(b).run()
    assert any("Speaker-dependent" in w.value for w in at.warning)
    assert any("without a paired test" in c.value for c in at.caption)  # stored before they kept predictions

    at.multiselect(key="lb_splits").set_value(["speaker"]).run()
    assert list(at.dataframe[0].value["run"]) == [str(a)]


@pytest.mark.slow
def test_train_page_renders_widgets_and_runs_a_job(dirs, two_actors):
    at = _page("train.py", two_actors).run()
    assert not at.exception, at.exception
    assert at.multiselect(key="train_models").value == ["svm"]
    assert at.selectbox(key="train_split").value == "speaker"
    assert at.number_input(key="train_k").value == 2  # the default fits the data: 2 speakers
    assert any(e.label == "svm hyperparameters" for e in at.expander)
    assert at.number_input(key="hp_svm_C").value == 10.0
    assert "No training jobs yet" in at.info[0].value
    assert "120 clips, 2 speakers" in at.caption[0].value

    at.number_input(key="train_k").set_value(3).run()  # refused before any job starts, in one sentence
    assert [html.unescape(e.value) for e in at.error] == [
        "K=3 needs at least 3 speakers (each test fold holds out whole speakers) and this data has 2; choose K of 2 "
        "or less."]
    assert at.button(key="train_run").disabled and not LocalProcessExecutor().list()
    at.selectbox(key="train_split").set_value("random").run()
    assert "speaker-dependent" in at.warning[0].value and not at.error  # 3 random folds are fine
    at.selectbox(key="train_split").set_value("speaker")
    at.number_input(key="train_k").set_value(2)
    at.multiselect(key="train_models").set_value(["majority"]).run()
    at.text_input(key="hp_majority_class_weight").set_value("balanced")
    at.checkbox(key="train_oversample").check()
    at.button(key="train_run").click().run()
    assert not at.exception, at.exception
    ex = LocalProcessExecutor()
    (job,) = ex.list()
    assert job["job"]["models"] == {"majority": {"class_weight": "balanced", "oversample": True}}
    assert job["job"]["folds"] == 2 and job["job"]["split"] == "speaker"
    assert ex.wait(job["id"], timeout=90)["state"] == "done", ex.log(job["id"])

    fresh = _page("train.py", two_actors).run()  # a new session (a reload) finds the finished job
    assert not fresh.exception
    assert fresh.selectbox(key="job_show").value == job["id"]
    assert any("majority" in p.proto.text and "UAR" in p.proto.text for p in fresh.get("progress"))
    assert any("executor local" in c.value for c in fresh.caption)  # where the job's folds ran
    assert ResultsStore().runs()["model"].tolist() == ["majority"]
