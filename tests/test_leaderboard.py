"""The leaderboard library and CLI: the shipped models' runs on an empty store (rebuilt from card.json + oof.npz,
consistent with the cards), your runs beside them and compared on the same folds, breakdowns of a real run,
tables for papers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import store_run
from ser_core.cli import main
from ser_core.evaluation import SUMMARY_METRICS, summarize
from ser_core.leaderboard import SHIPPED_DIR, Leaderboard, latex_table, markdown_table
from ser_core.results import ResultsStore
from ser_core.saved import load_oof, read_card

SHIPPED = sorted(d.name for d in SHIPPED_DIR.iterdir() if (d / "card.json").is_file() and (d / "oof.npz").is_file())


@pytest.mark.slow
def test_fresh_install_lists_the_shipped_runs(tmp_path, monkeypatch, capsys):
    """An empty home folder: `leaderboard --json` lists every shipped model's run with intervals and breakdowns."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SER_RESULTS_DB")
    assert main(["leaderboard", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(SHIPPED) >= 8 and sorted(r["id"] for r in rows) == [f"shipped:{n}" for n in SHIPPED]
    uar = [r["uar_mean"] for r in rows]
    assert uar == sorted(uar, reverse=True)
    for r in rows:
        card = read_card(SHIPPED_DIR / r["id"].split(":")[1])
        assert r["source"] == "shipped" and r["uar_mean"] == card["cv"]["metrics"]["uar"]["mean"]
        low, high = r["ci"]["uar"]
        assert low < r["uar_mean"] < high and r["ci_unit"] == "speaker" and r["ci_level"] == 0.95
        assert r["vs_best"]["best_run"] == rows[0]["id"] and r["vs_best"]["comparable_runs"] == len(rows)
        assert set(r["breakdown"]["gender"]) == {"female", "male"} and len(r["breakdown"]["speaker"]) == 28
        assert set(r["breakdown"]["corpus"]) == {"ravdess", "tess", "emodb"}
        assert set(r["breakdown"]["intensity"]) == {"normal", "strong", "unknown"}  # TESS and EmoDB: not coded
    assert rows[0]["vs_best"]["not_significantly_worse"] and rows[0]["vs_best"]["p"] is None
    worst = rows[-1]["vs_best"]
    assert worst["p"] < 0.05 and not worst["not_significantly_worse"] and worst["high"] < 0
    assert (tmp_path / ".cache" / "ser_studio" / "results.sqlite").is_file()  # the default store, left empty
    assert ResultsStore(tmp_path / ".cache" / "ser_studio" / "results.sqlite").runs().empty


@pytest.mark.parametrize("name", ["svm", "ensemble", "adaptive_lda"])
def test_a_shipped_run_is_its_card_fold_by_fold(name, tmp_path):
    run = Leaderboard(ResultsStore(tmp_path / "r.sqlite")).get_run(f"shipped:{name}")
    card = read_card(SHIPPED_DIR / name)
    folds = run["folds"]
    assert len(folds) == card["cv"]["k"] == 4
    means = summarize([f["metrics"] for f in folds])
    for m in (*SUMMARY_METRICS, "ece", "brier", "wrong_over_90"):
        assert means[m]["mean"] == pytest.approx(card["cv"]["metrics"][m]["mean"]), m
        assert means[m]["std"] == pytest.approx(card["cv"]["metrics"][m]["std"]), m
    assert np.sum(run["confusion"]) == card["training_data"]["clips"] == sum(f["n_test"] for f in folds)
    speakers = [set(f["test_speakers"]) for f in folds]
    every = ({f"ravdess:{a:02d}" for a in range(1, 17)} | {"tess:OAF", "tess:YAF"}
             | {f"emodb:{s}" for s in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")})  # namespaced
    assert set().union(*speakers) == every and sum(map(len, speakers)) == card["training_data"]["speakers"] == 28
    assert run["summary"]["reliability"] and run["summary"]["calibration"] == card["calibration"]
    assert set(folds[0]["metrics"]["per_class_recall"]) == set(card["labels"])


@pytest.mark.slow
def test_your_runs_join_the_shipped_ones_and_compare_on_the_same_folds(tmp_path, capsys):
    store = ResultsStore(tmp_path / "r.sqlite")
    oof = load_oof(SHIPPED_DIR / "lda")
    elsewhere = {**oof, "paths": np.array([p.replace("/work/shared/data", "/home/me/corpora") for p in oof["paths"]])}
    same = store_run(store, elsewhere, model="lda")  # lda again, from another copy of RAVDESS: the same folds
    half = {k: (v if k == "classes" else v[oof["fold"] < 2]) for k, v in oof.items()}
    other = store_run(store, half, model="svm")  # other clips: comparable with nothing
    board = Leaderboard(store)
    runs = board.runs().set_index("id")
    assert runs.loc[same, "source"] == runs.loc[other, "source"] == "yours"
    assert runs.loc["shipped:lda", "source"] == "shipped" and len(runs) == len(SHIPPED) + 2

    stats = board.statistics([same, other, "shipped:lda"])
    assert stats.loc[same, "comparable"] == 2 and stats.loc[other, "comparable"] == 1
    assert stats.loc[same, "best_run"] in (same, "shipped:lda")
    assert stats.loc[same, "uar_ci_low"] == stats.loc["shipped:lda", "uar_ci_low"]  # same predictions, same draws
    assert board.breakdown(same) == board.breakdown("shipped:lda")  # speakers read from the file names
    d = board.compare(same, "shipped:lda")
    assert d["uar"]["difference"] == 0 and d["uar"]["p"] == 1.0
    assert main(["compare", str(other), "shipped:lda", "--db", str(store.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "same clips and folds" in err and len(err.splitlines()) == 1
    assert main(["breakdown", "99", "--db", str(store.path)]) == 2
    assert "No finished run '99'" in capsys.readouterr().err


def test_a_shipped_model_trained_into_this_store_is_listed_once(tmp_path):
    """scripts/train_defaults.py trains the shipped models into a store: that run is the shipped row."""
    store = ResultsStore(tmp_path / "r.sqlite")
    rid = store_run(store, load_oof(SHIPPED_DIR / "svm"))
    shipped = tmp_path / "shipped"
    for name in ("svm", "lda"):
        shutil.copytree(SHIPPED_DIR / name, shipped / name, ignore=shutil.ignore_patterns("*.joblib"))
    card = json.loads((shipped / "svm" / "card.json").read_text())
    card["cv"] |= {"run_id": rid, "results_store": str(store.path.resolve())}
    (shipped / "svm" / "card.json").write_text(json.dumps(card))
    runs = Leaderboard(store, shipped_dir=shipped).runs().set_index("id")
    assert sorted(map(str, runs.index)) == [str(rid), "shipped:lda"]
    assert runs.loc[rid, "source"] == "shipped"


@pytest.mark.slow
def test_cross_validate_keeps_its_out_of_fold_predictions_with_the_speakers(shared_ravdess, tmp_path):
    from ser_core.corpora import Corpus, load_corpus
    from ser_core.evaluation import RunConfig, cross_validate

    c = load_corpus(shared_ravdess)
    m = c.manifest[c.manifest["speaker"].isin(["01", "02", "03", "04"])].reset_index(drop=True)
    store = ResultsStore(tmp_path / "r.sqlite")
    res = cross_validate(RunConfig(model="majority", folds=2), Corpus(c.name, c.root, m), store=store, n_jobs=2)
    oof = store.oof(res.run_id)
    assert list(oof["paths"]) == m["path"].tolist() and np.array_equal(oof["proba"], res.oof["proba"])
    for g in ("speaker", "gender", "intensity"):
        assert list(oof[g]) == m[g].tolist()
    out = Leaderboard(store).breakdown(res.run_id)
    assert set(out["speaker"]) == {"01", "02", "03", "04"} and set(out["gender"]) == {"male", "female"}
    assert all(v["uar"] == pytest.approx(1 / 8) for v in out["speaker"].values())  # one label for every clip


def _paper_input():
    import pandas as pd

    row = {"k": 4, "dataset": "ravdess", "split": "speaker", "speaker_dependent": False, "comparable": 2}
    rows = [{**row, "id": 1, "model": "random_forest", "best_run": 1, "not_worse_than_best": True},
            {**row, "id": "shipped:svm", "model": "svm", "best_run": 1, "not_worse_than_best": True},
            {**row, "id": 3, "model": "cnn", "split": "random", "speaker_dependent": True, "comparable": 1,
             "best_run": 3, "not_worse_than_best": True}]
    for r, (mean, std, low, high) in zip(rows, [(0.6, 0.05, 0.55, 0.65), (0.58, 0.04, 0.5, 0.62),
                                                (0.7, 0.1, None, None)]):
        for m in SUMMARY_METRICS:
            r |= {f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci_low": low, f"{m}_ci_high": high}
    return pd.DataFrame(rows)


def test_tables_for_papers():
    md = markdown_table(_paper_input(), metrics=("uar", "accuracy"))
    assert md.splitlines()[:5] == [
        "| model | dataset | split | K | UAR | accuracy |",
        "|---|---|---|---|---|---|",
        "| **random_forest** | ravdess | speaker | 4 | 60.0 ± 5.0 [55.0, 65.0] | 60.0 ± 5.0 [55.0, 65.0] |",
        "| svm † | ravdess | speaker | 4 | 58.0 ± 4.0 [50.0, 62.0] | 58.0 ± 4.0 [50.0, 62.0] |",
        "| cnn | ravdess | random (speaker-dependent) | 4 | 70.0 ± 10.0 | 70.0 ± 10.0 |"]
    assert "95 % confidence interval, bootstrap over speakers" in md and "†: not significantly worse" in md
    tex = latex_table(_paper_input(), metrics=("uar",))
    lines = tex.splitlines()
    assert lines[1:5] == ["\\begin{tabular}{llllr}", "\\toprule", "model & dataset & split & $K$ & UAR \\\\",
                          "\\midrule"]
    assert lines[5] == "\\textbf{random\\_forest} & ravdess & speaker & 4 & 60.0 $\\pm$ 5.0 [55.0, 65.0] \\\\"
    assert lines[6] == "svm$^\\dagger$ & ravdess & speaker & 4 & 58.0 $\\pm$ 4.0 [50.0, 62.0] \\\\"
    assert lines[-2:] == ["\\bottomrule", "\\end{tabular}"] and lines[0].startswith("% mean +- std")
