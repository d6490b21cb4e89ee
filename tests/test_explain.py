"""Why this emotion: occlusion maps and feature attributions, and the sanity check that what they point at
matters to the model more than a random part of the same size."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import istft, stft

from ser_core.audio import load_audio
from ser_core.cli import main
from ser_core.corpora import load_corpus
from ser_core.ensemble import EnsembleModel
from ser_core.errors import ConfigError
from ser_core.explain import (Occlusion, Reference, explain, feature_groups, heard_audio, log_odds, occlude_groups,
                              silence_tile)
from ser_core.features import compute, compute_files, get_feature_set, prepare_for
from ser_core.inference import LoadedModel, Predictor
from ser_core.models import create_model
from ser_core.saved import save_trained

SR = 16000
EMOTIONS = ["angry", "calm", "happy", "sad"]
COARSE = Occlusion(time_s=0.5, bands=4)  # 4 x 7 tiles: enough for the check, quick on two cores


@pytest.fixture(scope="module")
def data(shared_ravdess):
    manifest = load_corpus(shared_ravdess).manifest
    of = manifest[manifest["emotion"].isin(EMOTIONS)]
    train = of[of["speaker"].isin(["01", "02", "03"])]
    test = of[of["speaker"] == "06"].sort_values("path").iloc[::5].head(6)  # 6 clips of an unseen actor
    return train, test


@pytest.fixture(scope="module")
def models(data):
    """A small PyTorch transformer on MFCC sequences and an LDA on the expressive utterance features, both
    trained on 96 clips of four emotions, with the LDA's training features as its reference."""
    train, _ = data
    y = train["emotion"].to_numpy()
    seq = create_model("transformer_torch", d_model=32, n_heads=2, n_layers=1, dim_feedforward=64, epochs=20,
                       patience=20).fit(compute_files(train["path"].tolist(), "mfcc_seq", cache=False,
                                                      progress=False, n_jobs=1), y)
    X = compute_files(train["path"].tolist(), "expressive", cache=False, progress=False, n_jobs=1)
    lda = create_model("lda", feature_set="expressive", shrinkage=0.5).fit(X, y)  # "auto" fits 3x slower
    return seq, lda, Reference(X, y, "test clips")


def _predictor(models, with_ensemble=False):
    seq, lda, _ = models
    loaded = [LoadedModel("seq", seq, {}, 0.0), LoadedModel("lda", lda, {}, 0.0)]
    if with_ensemble:
        ens = EnsembleModel(members=["seq", "lda"], weights=[0.3, 0.9])
        ens.classes_ = np.asarray(EMOTIONS)
        loaded.append(LoadedModel("ens", ens, {}, 0.0))
    return Predictor(loaded)


def test_feature_groups_cover_every_column_once():
    for name in ("expressive", "rich", "prosody", "mfcc_chroma_mel"):
        fs = get_feature_set(name)
        cols = sorted(c for g in feature_groups(fs) for c in g.columns)
        assert cols == list(range(fs.shape[0])), name
    f0_std = next(g for g in feature_groups("expressive") if g.name == "f0_std")
    assert f0_std.words == "pitch variability" and f0_std.unit == "st"
    assert get_feature_set("expressive").feature_names()[f0_std.columns[0]] == "f0_std"
    d = get_feature_set("prosody").shape[0]
    x, base = np.arange(d, dtype=np.float32), -np.ones(d, dtype=np.float32)
    groups = feature_groups("prosody")[:2]
    X = occlude_groups(x, groups, base)
    assert X.shape == (2, d)
    for row, g in zip(X, groups):  # each row: its group's columns from the baseline, the rest from x
        assert (row[list(g.columns)] == -1).all() and np.array_equal(np.delete(row, g.columns), np.delete(x, g.columns))


def test_heard_audio_is_what_the_features_see(data):
    _, test = data
    y = load_audio(test["path"].iloc[0], trim=False, normalize=None)
    for name in ("logmel_image", "mfcc_seq_denoised", "expressive"):
        heard, start = heard_audio(y, SR, name)
        assert np.array_equal(heard, prepare_for(y, SR, name)), name
        assert 0 < start < len(y) - len(heard)  # RAVDESS clips begin with silence, which is trimmed
    # silencing a tile removes its energy there and leaves the rest as it was
    heard, _ = heard_audio(y, SR, "logmel_image")
    out = silence_tile(heard, 4000, 12000, 300.0, 3000.0)
    f, t, before = stft(heard, SR, nperseg=512, noverlap=384)
    after = stft(out, SR, nperseg=512, noverlap=384)[2]
    inside = np.ix_((f >= 400) & (f < 2900), (t * SR >= 4800) & (t * SR < 11200))
    assert np.abs(after[inside]).sum() < 0.05 * np.abs(before[inside]).sum()
    assert np.allclose(out[14000:], heard[14000:], atol=1e-5) and np.allclose(out[:2500], heard[:2500], atol=1e-5)


def _log_odds(probs: dict, label: str) -> float:
    classes = sorted(probs)
    return float(log_odds(np.array([[probs[c] for c in classes]]), classes.index(label))[0])


def _attenuate(y, t0, t1, low, high, gain=0.1):
    """``y`` with the STFT bins between ``low`` and ``high`` Hz, in frames between ``t0`` and ``t1`` seconds, scaled
    by ``gain`` (-20 dB): another perturbation than the explanation's (silence, of the trimmed audio)."""
    f, t, Z = stft(y, SR, nperseg=1024, noverlap=768)
    Z[np.ix_((f >= low) & (f < high), (t >= t0) & (t < t1))] *= gain
    return istft(Z, SR, nperseg=1024, noverlap=768)[1][:len(y)].astype(np.float32)


@pytest.mark.slow
def test_attenuating_the_most_salient_region_moves_a_spectrogram_model_more_than_a_random_one(data, models):
    _, test = data
    predictor, rng = _predictor(models), np.random.default_rng(0)
    top_drops, random_drops = [], []
    for path in test["path"]:
        y = load_audio(path, trim=False, normalize=None)
        ex = explain(y, SR, predictor, "seq", occlusion=COARSE)
        label, p0 = ex["label"], predictor.predict(y, SR)["seq"]
        assert p0[label] == pytest.approx(ex["probability"], abs=1e-6)
        times, bands = ex["map"]["times"], ex["map"]["bands_hz"]
        assert times[0][0] == ex["heard"][0] and times[-1][1] == pytest.approx(ex["heard"][1], abs=1e-3)

        def drop(t0, t1, low, high):  # the fall of the label's log-odds, through the ordinary prediction path
            p = predictor.predict(_attenuate(y, t0, t1, low, high), SR)["seq"]
            return float(np.diff([_log_odds(p, label), _log_odds(p0, label)])[0])

        top = ex["regions"][0]
        top_drops.append(drop(top["start"], top["end"], top["low_hz"], top["high_hz"]))
        for _ in range(3):  # random tiles of the same size (one time step by one band)
            i, j = rng.integers(len(times) - 1), rng.integers(len(bands))
            random_drops.append(drop(times[i][0], times[i][1], *bands[j]))
    assert np.mean(top_drops) > np.mean(random_drops) + 0.01, (top_drops, random_drops)


@pytest.mark.slow
def test_occluding_the_top_features_moves_an_utterance_model_more_than_random_ones(data, models):
    _, test = data
    _, lda, ref = models
    predictor, rng = _predictor(models), np.random.default_rng(1)
    groups = {g.name: g for g in feature_groups("expressive")}
    top_drops, random_drops = [], []
    for path in test["path"]:
        y = load_audio(path, trim=False, normalize=None)
        ex = explain(y, SR, predictor, "lda", reference=ref)
        k = list(lda.classes_).index(ex["label"])
        x = compute(y, SR, "expressive")
        cols = list(groups[ex["features"][0]["name"]].columns)
        donors = ref.X[rng.choice(len(ref.X), 6, replace=False)]  # other clips' values, not the mean

        def drop(columns):  # the mean fall of the label's log-odds over the donors
            X = np.repeat(x[None], len(donors), axis=0)
            X[:, columns] = donors[:, columns]
            return float(np.mean(log_odds(lda.predict_proba(x[None]), k)[0] - log_odds(lda.predict_proba(X), k)))

        top_drops.append(drop(cols))
        random_drops += [drop(rng.choice(len(x), len(cols), replace=False)) for _ in range(4)]
        assert ex["features"][0]["effect"] >= max(r["effect"] for r in ex["features"][1:] + ex["against"])
    assert np.mean(top_drops) > np.mean(random_drops) + 0.01, (top_drops, random_drops)


@pytest.mark.slow
def test_words_compare_with_the_training_clips(data, models):
    _, test = data
    y = load_audio(test["path"].iloc[0], trim=False, normalize=None)
    ex = explain(y, SR, _predictor(models), "lda", reference=models[2])
    assert ex["kind"] == "features" and ex["reference"] == {"source": "test clips", "clips": 96}
    assert ex["features"] and ex["text"].startswith(f"{ex['label']} ")
    for r in ex["features"]:
        assert "typical" in r["text"] and r["effect"] > 0
        if "value" in r:  # one number: its value and the training clips' median
            assert r["text"].startswith(f"{r['words']} ({r['name']}) {r['value']:.3g}")


@pytest.mark.slow
def test_ensemble_is_explained_through_its_highest_weight_member(data, models):
    _, test = data
    y = load_audio(test["path"].iloc[1], trim=False, normalize=None)
    ex = explain(y, SR, _predictor(models, with_ensemble=True), "ens", reference=models[2])
    assert ex["model"] == "ens" and ex["explained_model"] == "lda" and ex["kind"] == "features"
    assert "highest-weight member, lda (weight 75%)" in ex["note"] and ex["text"].startswith(ex["note"])
    with pytest.raises(ConfigError, match="does not know the emotion 'boredom'"):
        explain(y, SR, _predictor(models), "lda", label="boredom", reference=models[2])


@pytest.mark.slow
def test_cli_explain_json(data, models, tmp_path, capsys):
    train, test = data
    seq, lda, ref = models
    keep = np.arange(0, len(train), 6)  # the reference: the clips named in oof.npz (16 of them)
    oof = {"proba": np.full((len(keep), 4), 0.25), "classes": np.asarray(EMOTIONS), "fold": np.zeros(len(keep)),
           "y": train["emotion"].to_numpy(str)[keep], "paths": train["path"].to_numpy(str)[keep]}
    save_trained(lda, tmp_path / "models" / "tiny_lda", oof=oof)
    save_trained(seq, tmp_path / "models" / "tiny_seq")
    clip = test["path"].iloc[2]
    assert main(["explain", "--model", "tiny_lda", "--models-dir", str(tmp_path / "models"), clip, "--json"]) == 0
    ex = json.loads(capsys.readouterr().out)
    assert ex["file"] == clip and ex["explained_model"] == "tiny_lda"
    assert ex["reference"] == {"source": "the model's training clips", "clips": 16}
    assert main(["explain", "--model", "tiny_seq", "--models-dir", str(tmp_path / "models"), clip, "--start", "0.5",
                 "--json"]) == 0
    ex = json.loads(capsys.readouterr().out)
    assert ex["kind"] == "time_frequency" and ex["heard"][0] >= 0.5 and len(ex["regions"]) == 3
    effect = np.array(ex["map"]["effect"])
    assert effect.shape == (8, len(ex["map"]["times"])) and effect.max() == pytest.approx(ex["regions"][0]["effect"])
