"""Your models beside the shipped ones, and runs refused before they start (issue 9, items 2 and 3).

- ``check_run``: every impossible choice is one sentence that says what to change; the bundled samples train
  with the defaults.
- Saving: a model you train gets a folder of its own (model, data, run) in your models folder; the shipped
  folder's files never change unless ``--replace-shipped``; you can delete your models, never a shipped one.
- The CLI: one ``error:`` line and exit status 2 for each refusal, before anything is trained.

Shipped folders here are temporary ($SER_MODELS_DIR); the repository's trained_models/ is never written.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from ser_core.corpora import Corpus, load_corpus
from ser_core.errors import ConfigError, ModelNotFoundError
from ser_core.evaluation import RunConfig, check_run, cross_validate, default_folds
from ser_core.features import FEATURE_SETS
from ser_core.jobs import Job
from ser_core.models import MODEL_SPECS, create_model
from ser_core.results import ResultsStore
from ser_core.saved import (delete_user_model, list_trained, read_card, save_trained, user_model_path,
                            user_models_dir)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "ravdess"
IMAGE_SETS = ", ".join(n for n, f in FEATURE_SETS.items() if f.kind == "image")  # what a CNN takes


@pytest.fixture(scope="module")
def samples() -> Corpus:
    """The bundled clips: RAVDESS actors 01-04, 60 each (only labels and speakers are read here)."""
    return load_corpus(SAMPLES)


def _subset(corpus: Corpus, keep) -> Corpus:
    m = corpus.manifest
    return Corpus(corpus.name, corpus.root, m[keep(m)].reset_index(drop=True))


def _two_speakers(corpus):
    return _subset(corpus, lambda m: m["speaker"].isin(["01", "02"]))


def _old_samples(corpus):
    """What samples/ held before: actors 01 and 02, one clip per emotion each (statement 01, strong, first
    repetition; normal for neutral)."""
    return _subset(corpus, lambda m: m["speaker"].isin(["01", "02"]) & m["path"].str.contains(
        r"-0(?:1-01|[2-8]-02)-01-01-0[12]\.flac$"))


# -- check_run: one sentence per impossible choice ----------------------------------------------------------------
REFUSED = {
    "K above the speakers": (lambda c: c, dict(model="svm", folds=5),
                             "K=5 needs at least 5 speakers (each test fold holds out whole speakers) and this data "
                             "has 4; choose K of 4 or less."),
    "K above the speakers (2)": (_two_speakers, dict(model="svm", folds=4),
                                 "K=4 needs at least 4 speakers (each test fold holds out whole speakers) and this "
                                 "data has 2; choose K of 2 or less."),
    "K above a class's clips": (lambda c: c, dict(model="svm", split="random", folds=17),
                                "K=17 is more than the 16 clips of 'neutral', so some folds could not test it; "
                                "choose K of 16 or less."),
    "one speaker": (lambda c: _subset(c, lambda m: m["speaker"] == "03"), dict(model="svm", folds=2),
                    "Speaker-independent evaluation needs at least two speakers and this data has one speaker; "
                    "choose data with more speakers, or the random split (speaker-dependent)."),
    "no speaker labels": (lambda c: Corpus(c.name, c.root, c.manifest.assign(speaker="unknown")),
                          dict(model="svm", split="loso"),
                          "Speaker-independent evaluation needs at least two speakers and this data has no speaker "
                          "labels; choose data with more speakers, or the random split (speaker-dependent)."),
    "one emotion": (lambda c: _subset(c, lambda m: m["emotion"] == "angry"), dict(model="svm"),
                    "Training needs at least two emotions and this data has only 'angry'; choose data with more "
                    "emotions."),
    "feature set of another kind": (lambda c: c, dict(model="cnn", feature_set="rich"),
                                    "Model 'cnn' takes image features and 'rich' holds utterance features; choose "
                                    f"the model's own feature set or one of {IMAGE_SETS}."),
    "speaker normalisation of sequences": (lambda c: c, dict(model="lstm", speaker_norm=True),
                                           "Per-speaker normalisation applies to utterance features and 'mfcc_seq' "
                                           "holds sequence features; turn it off or choose an utterance set such as "
                                           "'rich'."),
    "80/20 on 4 speakers": (lambda c: c, dict(model="svm", split="holdout"),
                            "An 80/20 split by speaker needs at least 5 speakers and this data has 4; choose "
                            "leave-one-speaker-out or speaker-grouped K-fold."),
    "a training fold without 2 clips of an emotion": (_old_samples, dict(model="svm", folds=2),
                                                      "A training fold would hold 1 clip of 'angry' and every model "
                                                      "needs at least 2 of each emotion; choose data with more clips "
                                                      "per emotion and speaker."),
}


@pytest.mark.parametrize("case", REFUSED)
def test_each_impossible_choice_is_refused_with_its_sentence(samples, case):
    data, config, sentence = REFUSED[case]
    with pytest.raises(ConfigError) as err:
        check_run(RunConfig(**config), data(samples))
    message = str(err.value)
    assert message == sentence
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message  # one sentence


def test_the_bundled_samples_train_with_the_defaults(samples):
    assert len(samples.manifest) == 240 and samples.manifest["speaker"].nunique() == 4
    assert set(samples.manifest["gender"]) == {"male", "female"}
    assert default_folds(samples) == 4  # the form's and the CLI's default K fits
    for name, spec in MODEL_SPECS.items():  # every model on its own feature set
        check_run(RunConfig(model=name, folds=default_folds(samples)), samples)
    check_run(RunConfig(model="svm", split="loso"), samples)
    check_run(RunConfig(model="svm", split="random", folds=16), samples)
    assert default_folds(_two_speakers(samples)) == 2 and default_folds(_two_speakers(samples), "random") == 4
    check_run(RunConfig(model="svm", folds=2, augment=("noise",)), _old_samples(samples))  # copies train too


def test_a_job_is_refused_before_it_starts_naming_the_model(samples):
    job = Job(data_root=str(SAMPLES), models={"svm": {}, "cnn": {}}, feature_set="rich")
    with pytest.raises(ConfigError, match="^cnn: Model 'cnn' takes image features"):
        job.check(samples)
    assert Job(data_root=str(SAMPLES), models={"svm": {}}).check(samples).folds == 4


def test_a_crash_is_one_short_line_and_the_traceback_stays_in_the_log():
    from ser_core.jobs import crash_message

    exc = ValueError("n_splits=4 cannot be greater than the number of members in each class.\n" + "x" * 500)
    line = crash_message(exc)
    assert line.startswith("unexpected error (ValueError: n_splits=4") and line.endswith("the log has the details")
    assert "\n" not in line and len(line) < 250


# -- saving: yours beside the shipped ones, never over them --------------------------------------------------------
def _fitted(label: str):
    X = np.random.default_rng(0).normal(size=(6, 32)).astype(np.float32)
    return create_model("majority").fit(X, np.array([label, "other"] * 3))


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A shipped models folder ($SER_MODELS_DIR) holding one model, ``svm``."""
    folder = tmp_path / "shipped"
    monkeypatch.setenv("SER_MODELS_DIR", str(folder))
    save_trained(_fitted("angry"), folder / "svm", replace_shipped=True)
    return folder


def test_saving_into_the_shipped_folder_needs_replace_shipped(shipped):
    before = _hashes(shipped)
    with pytest.raises(ConfigError, match="holds the shipped models.*--replace-shipped"):
        save_trained(_fitted("sad"), shipped / "svm")
    with pytest.raises(ConfigError, match="holds the shipped models"):
        save_trained(_fitted("sad"), shipped / "new_one")  # not even beside them
    assert _hashes(shipped) == before
    save_trained(_fitted("sad"), shipped / "svm", replace_shipped=True)
    assert _hashes(shipped) != before


def test_your_models_get_names_of_their_own_and_are_listed_after_the_shipped(shipped):
    mine = user_models_dir()
    first = save_trained(_fitted("sad"), user_model_path("svm", "samples", 3), replace=False)
    second = save_trained(_fitted("happy"), user_model_path("svm", "samples", 3), replace=False)  # another store's
    assert (first.name, second.name) == ("svm-samples-run3", "svm-samples-run3-2")
    assert read_card(second)["name"] == "svm-samples-run3-2"  # the card names the folder it got
    assert [(c["name"], c["source"]) for c in list_trained()] == [
        ("svm", "shipped"), ("svm-samples-run3", "yours"), ("svm-samples-run3-2", "yours")]
    assert first.parent == mine


def _your_model_and_its_run(store) -> tuple[Path, int]:
    """A model of yours saved by a finished run of ``store`` that names it: ``(folder, run id)``."""
    rid = store.start_run(model="majority", params={}, feature_set={}, dataset="ravdess", data_root="/d",
                          data_fingerprint="f", n_clips=6, n_speakers=2, split="speaker", splitter="s", k=2, seed=0,
                          speaker_dependent=False, options={}, config_hash="h", versions={})
    folder = save_trained(_fitted("sad"), user_model_path("majority", "samples", rid),
                          card={"cv": {"run_id": rid}}, replace=False)
    store.finish_run(rid, summary={}, labels=[], confusion=[], train_time_s=0, latency_ms=0, model_size_bytes=0,
                     saved_model=folder)
    return folder, rid


def test_delete_your_own_but_never_a_shipped_model(shipped, tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    folder, rid = _your_model_and_its_run(store)
    before = _hashes(shipped)
    with pytest.raises(ConfigError, match="'svm' is a shipped model; shipped models cannot be deleted"):
        delete_user_model("svm", store=store)
    with pytest.raises(ConfigError, match="shipped model"):
        delete_user_model("svm", root=shipped)
    with pytest.raises(ModelNotFoundError, match="You have no model '../shipped/svm'; yours are: majority-samples"):
        delete_user_model("../shipped/svm")
    assert _hashes(shipped) == before

    assert delete_user_model(folder.name, store=store) == folder
    assert not folder.exists() and [c["name"] for c in list_trained()] == ["svm"]
    assert store.get_run(rid)["saved_model"] is None  # the run stays, and no longer names a model
    assert sorted(p.name for p in user_models_dir().iterdir() if not p.name.startswith(".ser")) == []


def test_the_cli_lists_and_deletes_your_models_but_never_a_shipped_one(shipped, tmp_path, monkeypatch, capsys):
    """`models delete` is the Demo's delete (``delete_user_model``): the folder goes, its run stays without it."""
    from ser_core.cli import main

    db = tmp_path / "r.sqlite"
    folder, rid = _your_model_and_its_run(ResultsStore(db))
    before = _hashes(shipped)
    assert main(["models", "list", "--json"]) == 0
    assert [(m["name"], m["source"]) for m in json.loads(capsys.readouterr().out)] == [("svm", "shipped"),
                                                                                      (folder.name, "yours")]
    assert main(["models", "delete", "svm", "--db", str(db)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: 'svm' is a shipped model; shipped models cannot be deleted, only your own."]
    assert _hashes(shipped) == before

    monkeypatch.chdir(folder.parent.parent)  # a relative --models-dir names the same folder the store names
    assert main(["models", "--json", "delete", folder.name, "--models-dir", folder.parent.name, "--db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": folder.name, "path": str(folder)}
    assert not folder.exists() and ResultsStore(db).get_run(rid)["saved_model"] is None
    assert main(["models"]) == 0 and capsys.readouterr().out.split()[0] == "svm"
    assert main(["models", "delete", folder.name, "--db", str(db)]) == 2
    assert capsys.readouterr().err.strip() == "error: You have no model 'majority-samples-run1'; yours are: none."


@pytest.mark.slow
def test_a_run_you_train_saves_its_own_model_and_the_store_points_to_it(shipped, samples, tmp_path):
    from ser_core.leaderboard import Leaderboard

    before = _hashes(shipped)
    store = ResultsStore(tmp_path / "r.sqlite")
    data = _subset(samples, lambda m: m["emotion"].isin(["angry", "sad"]))  # 64 clips: a quick run
    config = RunConfig(model="svm", feature_set="prosody", folds=2)
    res = cross_validate(config, data, store=store, save_to=partial(user_model_path, "svm", "samples"))
    assert res.saved_model == str(user_models_dir() / f"svm-samples-run{res.run_id}")
    assert store.get_run(res.run_id)["saved_model"] == res.saved_model
    assert read_card(res.saved_model)["cv"]["run_id"] == res.run_id
    again = cross_validate(config, data, store=store, save_to=partial(user_model_path, "svm", "samples"))
    assert again.cached and again.saved_model == res.saved_model  # served with its own model, no new folder
    board = Leaderboard(store)
    assert board.get_run(res.run_id)["source"] == "yours" and board.oof(res.run_id) is not None
    assert _hashes(shipped) == before


# -- the command line --------------------------------------------------------------------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ser_core", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def old_samples(tmp_path_factory) -> Path:
    """The samples/ of before: 2 speakers, one clip per emotion each (symlinks to the bundled clips)."""
    root = tmp_path_factory.mktemp("two-speakers")
    for f in _old_samples(load_corpus(SAMPLES)).manifest["path"]:
        (root / Path(f).parent.name).mkdir(exist_ok=True)
        (root / Path(f).parent.name / Path(f).name).symlink_to(f)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("args, sentence", [
    (("--folds", "4"), "error: K=4 needs at least 4 speakers (each test fold holds out whole speakers) and this data "
                       "has 2; choose K of 2 or less."),
    (("--split", "holdout"), "error: An 80/20 split by speaker needs at least 5 speakers and this data has 2; "
                             "choose leave-one-speaker-out or speaker-grouped K-fold."),
    ((), "error: A training fold would hold 1 clip of 'angry' and every model needs at least 2 of each emotion; "
         "choose data with more clips per emotion and speaker."),  # the default K is 2 on 2 speakers
    (("--models", "cnn,svm", "--feature-set", "rich"), "error: Model 'cnn' takes image features and 'rich' holds "
                                                       "utterance features; choose the model's own feature set or one "
                                                       f"of {IMAGE_SETS}."),
])
def test_train_refuses_impossible_runs_with_one_error_line(old_samples, tmp_path, args, sentence):
    env = {"SER_RESULTS_DB": str(tmp_path / "r.sqlite")}
    models = () if "--models" in args else ("--models", "svm")
    proc = _cli("train", "--data", old_samples, *models, *args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [sentence]  # one line, nothing before it
    assert "n_splits" not in proc.stderr and not (tmp_path / "r.sqlite").exists()  # nothing ran, nothing stored


@pytest.mark.slow
def test_train_saves_yours_and_only_replace_shipped_writes_the_shipped_folder(samples, tmp_path):
    data = tmp_path / "data"
    for f in samples.manifest["path"][samples.manifest["emotion"].isin(["angry", "sad"])]:
        (data / Path(f).parent.name).mkdir(parents=True, exist_ok=True)
        (data / Path(f).parent.name / Path(f).name).symlink_to(f)
    shipped = tmp_path / "shipped"
    env = {"SER_RESULTS_DB": str(tmp_path / "r.sqlite"), "SER_MODELS_DIR": str(shipped)}
    args = ("train", "--data", data, "--models", "svm", "--feature-set", "prosody", "--json")
    first = _cli(*args, "--replace-shipped", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)[0]["saved_model"] == str(shipped / "svm")
    before = _hashes(shipped / "svm")

    yours = _cli(*args, "--force", env=env)  # the same model, trained again as yours
    assert yours.returncode == 0, yours.stderr
    (run,) = json.loads(yours.stdout)
    assert run["saved_model"] == str(user_models_dir() / f"svm-ravdess-run{run['run_id']}")
    assert _hashes(shipped / "svm") == before

    refused = _cli(*args, "--models-dir", shipped, env=env)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "--replace-shipped" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and _hashes(shipped / "svm") == before

    listed = json.loads(_cli("models", "--json", env=env).stdout)
    assert [(m["name"], m["source"]) for m in listed] == [("svm", "shipped"), (Path(run["saved_model"]).name, "yours")]

    replaced = _cli(*args, "--force", "--seed", "1", "--replace-shipped", env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert _hashes(shipped / "svm") != before
    assert read_card(shipped / "svm")["cv"]["run_id"] == json.loads(replaced.stdout)[0]["run_id"]
