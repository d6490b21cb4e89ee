"""Cross-corpus runs: train on RAVDESS actors 01-04 (its own layout), test on a second corpus in another layout (a
CSV over actors 05-06 with other label spellings, other speaker names and an emotion RAVDESS lacks). Through the CLI,
the results store, the Leaderboard (library, CLI and page) and the job worker."""
from __future__ import annotations

import csv
import html
import json

import numpy as np
import pandas as pd
import pytest

from helpers import symlink_actors
from ser_core.cli import main
from ser_core.corpora import Corpus
from ser_core.cross_corpus import align_labels
from ser_core.errors import ConfigError

# the second corpus's label spellings (the shared taxonomy maps them) for RAVDESS emotion codes; calm clips play
# "boredom", an emotion only this corpus has
SPELLINGS = {"01": "Neutral", "02": "Boredom", "03": "Happiness", "04": "Sadness", "05": "Anger"}


def csv_corpus(shared_ravdess, folder, spellings=SPELLINGS, per_emotion: int = 4):
    """A CSV corpus (path,label,speaker,gender) over RAVDESS actors 05 and 06: ``per_emotion`` clips of each
    emotion code in ``spellings`` per actor, labelled with its spelling; speakers named spk5 and spk6."""
    folder.mkdir(parents=True)
    rows = []
    for actor, gender in (("05", "male"), ("06", "female")):
        for code, label in spellings.items():
            clips = sorted((shared_ravdess / f"Actor_{actor}").glob(f"03-01-{code}-*.flac"))[:per_emotion]
            rows += [{"path": str(c), "label": label, "speaker": f"spk{int(actor)}", "gender": gender} for c in clips]
    path = folder / "labels.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "speaker", "gender"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def corpora(shared_ravdess, tmp_path_factory):
    base = tmp_path_factory.mktemp("cross")
    return symlink_actors(shared_ravdess, base / "ravdess", ("01", "02", "03", "04")), \
        csv_corpus(shared_ravdess, base / "other")


def fake_corpus(name, emotions) -> Corpus:
    return Corpus(name, None, pd.DataFrame({"emotion": list(emotions)}))


def test_labels_both_corpora_have_are_kept_and_the_others_named():
    a = align_labels(fake_corpus("ravdess", ["angry", "calm", "happy", "sad", "surprised"]),
                     fake_corpus("emodb", ["angry", "boredom", "happy", "sad"]))
    assert a.shared == ("angry", "happy", "sad") and a.train_only == ("calm", "surprised")
    assert a.test_only == ("boredom",)
    assert a.message == ("Tested on the 3 emotions both corpora have (angry, happy, sad); dropped calm, surprised "
                         "(only in ravdess) and boredom (only in emodb).")
    assert a.to_dict() == {"labels": ["angry", "happy", "sad"], "dropped": {"train": ["calm", "surprised"],
                                                                            "test": ["boredom"]}}
    same = align_labels(fake_corpus("csv", ["angry", "sad"]), fake_corpus("csv", ["angry", "sad"]))
    assert same.message == "Tested on the 2 emotions both corpora have (angry, sad); no emotion dropped."
    with pytest.raises(ConfigError, match=r"^The two corpora share 1 emotion\(s\) \(angry\) and a test needs at "
                                          r"least two; ravdess has angry, calm and emodb has angry, boredom\.$"):
        align_labels(fake_corpus("ravdess", ["angry", "calm"]), fake_corpus("emodb", ["angry", "boredom"]))


def test_corpora_without_two_shared_emotions_are_one_line(shared_ravdess, tmp_path, capsys, corpora):
    other = csv_corpus(shared_ravdess, tmp_path / "two", {"05": "anger", "02": "bored"}, per_emotion=2)
    assert main(["train", "--data", str(corpora[0]), "--test-data", str(other), "--models", "svm",
                 "--db", str(tmp_path / "r.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The two corpora share 1 emotion(s) (angry)") and len(err.splitlines()) == 1


@pytest.mark.slow
def test_cross_corpus_run_through_cli_store_and_leaderboard(corpora, tmp_path, capsys, monkeypatch):
    from ser_core.leaderboard import Leaderboard
    from ser_core.results import ResultsStore

    train, test = corpora
    db = tmp_path / "results.sqlite"
    args = ["train", "--data", str(train), "--test-data", str(test), "--models", "svm", "--db", str(db), "--json"]
    assert main(args) == 0
    out = capsys.readouterr()
    [row] = json.loads(out.out)
    assert "Tested on the 4 emotions both corpora have (angry, happy, neutral, sad); dropped calm, disgust, " \
           "fearful, surprised (only in ravdess) and boredom (only in csv)." in out.err
    assert row["split"] == "cross-corpus" and (row["train_corpus"], row["test_corpus"]) == ("ravdess", "csv")
    assert row["labels"] == ["angry", "happy", "neutral", "sad"]
    assert row["dropped"] == {"train": ["calm", "disgust", "fearful", "surprised"], "test": ["boredom"]}
    assert (row["n_train"], row["n_test"]) == (4 * 28, 2 * 4 * 4)  # 4 actors x 28 clips of the 4 emotions
    for m in ("uar", "accuracy", "macro_f1", "ece", "brier"):
        assert 0 <= row[m]["mean"] <= 1 and row[m]["std"] == 0  # one test set
    assert row["uar"]["mean"] > 0.4  # chance is 0.25: acted anger, joy, sadness and neutral carry over
    assert row["cached"] is False and row["saved_model"] is None

    store = ResultsStore(db)
    run = store.get_run(row["run_id"])
    assert (run["split"], run["dataset"], run["k"], run["n_clips"]) == ("cross-corpus", "ravdess → csv", 1, 32)
    assert run["options"]["test_dataset"] == "csv" and run["options"]["test_data_root"] == str(test)
    assert run["folds"][0]["test_speakers"] == ["spk5", "spk6"]
    oof = store.oof(row["run_id"])  # the test clips' predictions give the metrics printed
    pred = oof["classes"][oof["proba"].argmax(1)]
    recall = [np.mean(pred[oof["y"] == c] == c) for c in oof["classes"]]
    assert row["uar"]["mean"] == pytest.approx(np.mean(recall))
    assert set(oof["speaker"]) == {"spk5", "spk6"} and set(oof["gender"]) == {"male", "female"}

    board = Leaderboard(store, shipped_dir=tmp_path / "none")
    table = board.table()
    listed = table.set_index("id").loc[row["run_id"]]
    assert (listed["dataset"], listed["split"]) == ("ravdess → csv", "cross-corpus")
    assert listed["uar_ci_low"] <= row["uar"]["mean"] <= listed["uar_ci_high"]  # bootstrap over the test speakers
    assert set(board.breakdown(row["run_id"])["speaker"]) == {"spk5", "spk6"}
    assert main(["leaderboard", "--db", str(db), "--split", "cross-corpus", "--json"]) == 0
    [listed] = [r for r in json.loads(capsys.readouterr().out) if r["source"] == "yours"]
    assert (listed["id"], listed["dataset"]) == (row["run_id"], "ravdess → csv")

    assert main(args) == 0  # the identical run again: served from the store
    again = json.loads(capsys.readouterr().out)[0]
    assert again["cached"] is True and again["run_id"] == row["run_id"] and again["uar"] == row["uar"]

    from streamlit.testing.v1 import AppTest

    from helpers import REPO

    monkeypatch.setenv("SER_RESULTS_DB", str(db))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    at.switch_page("app_pages/leaderboard.py")
    at.session_state["lb_sources"] = ["yours"]
    at.run()
    assert not at.exception, at.exception
    shown = at.dataframe[0].value.set_index("run").loc[str(row["run_id"])]
    assert (shown["dataset"], shown["split"]) == ("ravdess → csv", "cross-corpus")
    assert at.selectbox(key="lb_run").value == row["run_id"]  # one run: both corpora and the emotions dropped
    said = "Cross-corpus: train on ravdess (112 clips, 4 speakers), test on csv (32 clips, 2 speakers). Tested on"
    assert any(html.unescape(c.value).startswith(said) for c in at.caption)


@pytest.mark.slow
def test_train_page_tests_on_another_corpus_in_a_job(corpora, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app_shared import REPO, SOURCES
    from ser_core.jobs import LocalProcessExecutor
    from ser_core.results import ResultsStore

    for k, sub in (("SER_JOBS_DIR", "jobs"), ("SER_RESULTS_DB", "results.sqlite"), ("SER_USER_MODELS_DIR", "mine")):
        monkeypatch.setenv(k, str(tmp_path / sub))
    train, test = corpora
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    at.switch_page("app_pages/train.py")
    at.session_state["data_kind"], at.session_state["data_path"] = SOURCES[1], str(train)
    at.run()
    at.toggle(key="train_cross").set_value(True).run()
    assert at.selectbox(key="train_split").disabled and at.number_input(key="train_k").disabled
    assert at.button(key="train_run").disabled  # no test corpus yet: refused, in one sentence
    assert [html.unescape(e.value) for e in at.error] == ["Choose the corpus to test on: a folder or CSV file."]
    at.text_input(key="train_test_path").set_value(str(test)).run()
    assert not at.exception and not at.error, at.exception
    assert any("Tested on the 4 emotions both corpora have (angry, happy, neutral, sad)" in html.unescape(c.value)
               for c in at.caption)
    at.button(key="train_run").click().run()
    ex = LocalProcessExecutor()
    (job,) = ex.list()
    assert (job["job"]["split"], job["job"]["test_data_root"], job["job"]["save"]) == ("cross-corpus", str(test), False)
    assert ex.wait(job["id"], timeout=120)["state"] == "done", ex.log(job["id"])
    assert "Tested on the 4 emotions" in ex.log(job["id"])
    [run] = ResultsStore().runs().to_dict("records")
    assert (run["model"], run["split"], run["dataset"]) == ("svm", "cross-corpus", "ravdess → csv")
    assert not (tmp_path / "mine").exists() or not any((tmp_path / "mine").iterdir())  # no model saved
