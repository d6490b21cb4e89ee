"""ser_core.stats on synthetic runs whose answer is known: metrics from confusion counts equal compute_metrics,
identical runs differ by 0 with p = 1, a clearly better run is significant, the intervals cover the true score
about 95 % of the time, and equal runs are rarely called different."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.evaluation import SUMMARY_METRICS, compute_metrics, summarize
from ser_core.stats import ALPHA, bootstrap_ci, breakdown, confusion_metrics, group_uar, paired_difference

LABELS = ["angry", "calm", "happy", "sad"]


def synthetic_run(rng, *, speakers=16, clips=40, folds=4, skill=None, labels=LABELS):
    """``(y, pred, speaker, fold)``: each speaker's clips in one fold (speaker-grouped), every clip right with its
    speaker's probability ``skill[s]`` and otherwise a random other label."""
    skill = np.full(speakers, 0.6) if skill is None else np.asarray(skill)
    spk = np.repeat([f"{s:02d}" for s in range(speakers)], clips)
    fold = np.repeat(np.arange(speakers) % folds, clips)
    y = np.asarray(labels)[rng.integers(0, len(labels), len(spk))]
    return y, answers(rng, y, np.repeat(skill, clips), labels), spk, fold


def answers(rng, y, p_right, labels=LABELS):
    """Each clip right with probability ``p_right`` (per clip), else one of the other labels at random."""
    other = np.asarray(labels)[(np.searchsorted(labels, y) + rng.integers(1, len(labels), len(y))) % len(labels)]
    return np.where(rng.random(len(y)) < p_right, y, other)


def test_confusion_metrics_are_compute_metrics():
    rng = np.random.default_rng(0)
    for labels in (LABELS, ["a", "b", "c", "d", "e"]):  # "e" never a true label: left out of UAR and macro F1
        y = rng.choice(labels[:4], 200)
        pred = np.where(rng.random(200) < 0.5, y, rng.choice(labels, 200))
        m = compute_metrics(y, pred, labels)
        from_counts = confusion_metrics(m["confusion"])
        for k in SUMMARY_METRICS:
            assert from_counts[k] == pytest.approx(m[k]), k


def test_the_estimate_is_the_mean_over_folds_and_a_perfect_run_has_no_spread():
    rng = np.random.default_rng(1)
    y, pred, spk, fold = synthetic_run(rng)
    ci = bootstrap_ci(y, pred, spk, fold, LABELS, n_boot=300)
    means = summarize([compute_metrics(y[fold == f], pred[fold == f], LABELS) for f in range(4)])
    for m in SUMMARY_METRICS:
        assert ci[m]["estimate"] == pytest.approx(means[m]["mean"])
        assert ci[m]["low"] < ci[m]["estimate"] < ci[m]["high"]
    assert ci["unit"] == "speaker" and ci["n_units"] == 16
    perfect = bootstrap_ci(y, y, spk, fold, LABELS, n_boot=100)
    assert (perfect["uar"]["low"], perfect["uar"]["high"]) == (1.0, 1.0)


def test_identical_runs_differ_by_nothing_with_p_1():
    y, pred, spk, fold = synthetic_run(np.random.default_rng(2))
    d = paired_difference(y, pred, pred.copy(), spk, fold, LABELS, n_boot=200, n_perm=500)
    for m in SUMMARY_METRICS:
        assert d[m]["difference"] == 0 and d[m]["low"] == 0 and d[m]["high"] == 0
        assert d[m]["p"] == 1.0


def test_a_clearly_better_run_is_significant_and_the_sign_follows_the_order():
    rng = np.random.default_rng(3)
    y, good, spk, fold = synthetic_run(rng, skill=np.full(16, 0.8))
    bad = answers(rng, y, 0.55)  # a worse run on the same clips
    d = paired_difference(y, good, bad, spk, fold, LABELS, n_boot=500, n_perm=2000)
    assert d["uar"]["difference"] > 0.1 and d["uar"]["low"] > 0 and d["uar"]["p"] < 0.01
    back = paired_difference(y, bad, good, spk, fold, LABELS, n_boot=500, n_perm=2000)
    assert back["uar"]["difference"] == pytest.approx(-d["uar"]["difference"])
    assert back["uar"]["high"] < 0 and back["uar"]["p"] < 0.01


def simulated_runs(seed: int, sims: int, clips: int = 30):
    """``sims`` runs of 16 speakers whose skills differ (Beta(6, 4): mean 0.6): ``(rng, per-clip skill, y, pred,
    speaker, fold)``."""
    rng = np.random.default_rng(seed)
    for _ in range(sims):
        skill = rng.beta(6, 4, 16)
        yield (rng, np.repeat(skill, clips), *synthetic_run(rng, skill=skill, clips=clips))


def test_interval_covers_the_true_score_about_95_percent_of_the_time():
    """With equal clips per speaker the true accuracy is the mean skill, 0.6."""
    hits = [bootstrap_ci(y, pred, spk, fold, LABELS, n_boot=400, seed=int(rng.integers(1 << 30)))["accuracy"]
            for rng, _, y, pred, spk, fold in simulated_runs(5, 150)]
    assert 0.85 <= np.mean([ci["low"] <= 0.6 <= ci["high"] for ci in hits]) <= 0.99


@pytest.mark.slow
def test_equal_runs_are_rarely_called_different():
    """Two runs of the same skill on the same clips: p < ALPHA in about ALPHA of the draws, not more."""
    p = [paired_difference(y, a, answers(rng, y, skill), spk, fold, LABELS, n_boot=50, n_perm=400)["uar"]["p"]
         for rng, skill, y, a, spk, fold in simulated_runs(6, 100)]
    assert np.mean(np.asarray(p) < ALPHA) <= 0.12


def test_without_speakers_the_unit_is_the_clip():
    y, pred, _, fold = synthetic_run(np.random.default_rng(7))
    ci = bootstrap_ci(y, pred, np.full(len(y), "unknown"), fold, LABELS, n_boot=100)
    assert ci["unit"] == "clip" and ci["n_units"] == len(y)
    assert bootstrap_ci(y, pred, None, fold, LABELS, n_boot=100)["unit"] == "clip"


def test_breakdown_on_a_tiny_run():
    # speaker 01 (male): all 4 right; speaker 02 (female): angry and calm right, happy and sad wrong
    y = np.array(["angry", "calm", "happy", "sad"] * 2)
    pred = np.array(["angry", "calm", "happy", "sad", "angry", "calm", "angry", "angry"])
    spk = np.array(["01"] * 4 + ["02"] * 4)
    gender = np.array(["male"] * 4 + ["female"] * 4)
    intensity = np.array(["normal", "strong"] * 4)
    out = breakdown(y, pred, LABELS, speaker=spk, gender=gender, intensity=intensity)
    assert out["speaker"] == {"01": {"uar": 1.0, "clips": 4}, "02": {"uar": 0.5, "clips": 4}}
    assert out["gender"]["male"]["uar"] == 1.0 and out["gender"]["female"]["uar"] == 0.5
    # normal: angry, happy twice each (3 of 4 right: happy of 02 wrong) -> recall angry 1, happy 0.5 -> 0.75
    # strong: calm, sad twice each (sad of 02 wrong) -> calm 1, sad 0.5 -> 0.75
    assert out["intensity"] == {"normal": {"uar": 0.75, "clips": 4}, "strong": {"uar": 0.75, "clips": 4}}
    assert out["gender_gap"] == 0.5 and out["gender_gap_flag"] is True
    close = breakdown(y, y, LABELS, gender=gender, intensity=np.full(8, "unknown"))
    assert close["gender_gap"] == 0 and close["gender_gap_flag"] is False
    assert "intensity" not in close and "speaker" not in close  # unknown everywhere, or not given


def test_group_uar_names_are_plain_strings():
    out = group_uar(np.array(["sad", "sad"]), np.array(["sad", "calm"]), np.array(["b", "a"]), LABELS)
    assert list(out) == ["a", "b"] and all(type(k) is str for k in out)
    assert out["a"]["uar"] == 0.0 and out["b"]["uar"] == 1.0


def test_the_ece_interval_resamples_speakers_and_its_estimate_is_the_pooled_ece():
    from ser_core.calibration import expected_calibration_error
    from ser_core.stats import bootstrap_ece

    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(4), 400)
    y = np.where(rng.random(400) < 0.6, proba.argmax(1), rng.integers(0, 4, 400))
    speaker = np.repeat(np.arange(8), 50).astype(str)
    out = bootstrap_ece(y, proba, speaker, n_boot=300)
    assert out["estimate"] == pytest.approx(expected_calibration_error(y, proba))
    assert out["low"] < out["estimate"] < out["high"] and out["unit"] == "speaker" and out["n_units"] == 8
    one = bootstrap_ece(y[:50], proba[:50], speaker[:50], n_boot=50)  # one speaker: clips are the unit
    assert one["unit"] == "clip"
