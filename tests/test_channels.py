"""Realistic channels (ser_core.channels), the augmentations built on them, and evaluation under perturbations."""
import json
from pathlib import Path

import numpy as np
import pytest

from ser_core.augment import augment_signal, parse_augment
from ser_core.channels import (BABBLE_CHANNELS, CHANNELS, apply_channel, babble_sources, parse_channels,
                               random_channel)
from ser_core.errors import ConfigError

SR = 16000
CODECS = {"mp3": "libmp3lame", "opus": "libopus"}


def _voice(seconds=1.0, f0=140.0, seed=0):
    """A speech-like signal: a harmonic series with a syllable-rate envelope and a little breath noise."""
    t = np.arange(int(seconds * SR)) / SR
    y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20))
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


POOL = [_voice(0.7, f0, seed) for seed, f0 in enumerate((110, 180, 220, 95))]


def _skip_missing_codec(name):
    import av

    if name in CODECS and CODECS[name] not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {CODECS[name]} encoder")


def _band_db(y, lo, hi):
    from scipy.signal import welch

    f, p = welch(y, SR, nperseg=1024)
    return 10 * np.log10(p[(f >= lo) & (f <= hi)].mean())


@pytest.mark.parametrize("name", list(CHANNELS))
def test_each_channel_is_deterministic_and_seeded(name):
    _skip_missing_codec(name)
    y = _voice()
    a, b = (apply_channel(y, SR, name, seed=5, babble=POOL) for _ in range(2))
    c = apply_channel(y, SR, name, seed=6, babble=POOL)
    assert a.dtype == np.float32 and a.shape == y.shape and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.allclose(a, y, atol=1e-4)  # never the clean signal


def test_phone_keeps_the_telephone_band_only():
    white = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    z = apply_channel(white, SR, "phone", seed=1)
    inside = _band_db(z, 500, 3000)
    assert _band_db(z, 30, 200) < inside - 25
    assert _band_db(z, 3800, 7900) < inside - 30
    assert abs(_band_db(white, 3800, 7900) - _band_db(white, 500, 3000)) < 1  # the input was flat


@pytest.mark.parametrize("snr", [0, 5, 10, 20])
def test_noise_reaches_its_snr(snr):
    y = _voice(2.0)
    z = apply_channel(y, SR, f"noise{snr}", seed=2)
    measured = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean((z - y).astype(np.float64) ** 2))
    assert abs(measured - snr) < 0.5


def test_reverb_lengthens_the_decay():
    y = np.zeros(SR, dtype=np.float32)
    y[2000:4000] = np.random.default_rng(0).standard_normal(2000) * 0.3
    tail = slice(4000 + SR // 20, 4000 + SR // 5)  # 50-200 ms after the burst ends
    z = apply_channel(y, SR, "reverb", seed=3)
    assert np.mean(y[tail] ** 2) == 0
    assert np.mean(z[tail] ** 2) > 1e-3 * np.mean(z[2000:4000] ** 2)  # a tail within 30 dB of the burst


@pytest.mark.parametrize("name", ["mp3", "opus"])
def test_codec_round_trip_is_lossy_but_aligned(name):
    _skip_missing_codec(name)
    y = _voice(1.5)
    z = apply_channel(y, SR, name, seed=4)
    assert len(z) == len(y)
    assert not np.allclose(z, y, atol=1e-3)
    assert np.corrcoef(y, z)[0, 1] > 0.9  # aligned: the codec delay is removed


def test_babble_needs_a_pool_of_other_speakers():
    assert BABBLE_CHANNELS == {"babble10"}
    with pytest.raises(ConfigError, match="other speakers"):
        apply_channel(_voice(), SR, "babble10", seed=0)
    paths = [f"clip{i}.wav" for i in range(12)]
    speakers = [str(i % 3) for i in range(12)]
    for i in range(12):
        chosen = babble_sources(paths, speakers, i, seed=i)
        assert len(chosen) == 4 and all(speakers[paths.index(p)] != speakers[i] for p in chosen)
    with pytest.raises(ConfigError):
        babble_sources(paths[:2], ["a", "a"], 0, seed=0)


def test_parse_channels():
    assert parse_channels("phone, noise10,reverb,mp3") == ("phone", "noise10", "reverb", "mp3")
    assert parse_channels("") == () and parse_channels(None) == ()
    with pytest.raises(ConfigError) as err:
        parse_channels("phone,noise15")
    assert "noise15" in str(err.value) and "babble10" in str(err.value) and str(err.value).count(".") == 1
    with pytest.raises(ConfigError):
        apply_channel(_voice(), SR, "telephone")


def test_random_channel_draws_every_family():
    drawn = {random_channel(s) for s in range(400)}
    families = {n.rstrip("0123456789") for n in drawn}
    assert families == {n.rstrip("0123456789") for n in CHANNELS}


def test_channel_family_augmentation_draws_only_that_family():
    from ser_core.channels import channel_families

    assert channel_families()["noise"] == ["noise0", "noise5", "noise10", "noise20"]
    assert {random_channel(s, "noise") for s in range(200)} == set(channel_families()["noise"])
    assert {random_channel(s, "phone") for s in range(20)} == {"phone"}
    # the plain draw is unchanged by the family option (cached channel copies stay valid); the room and
    # microphone families (CHANNEL_VERSION 3) changed it once
    assert [random_channel(s) for s in range(8)] == ["noise20", "noise5", "mic", "room_mic", "mp3", "browser",
                                                     "babble10", "room"]
    assert parse_augment("speed*2,channel:noise*2,channel:phone") == ("speed*2", "channel:noise*2", "channel:phone")
    for bad in ("channel:foo", "channel:noise10", "chanel:noise"):
        with pytest.raises(ConfigError, match="choose from"):
            parse_augment(bad)
    y = _voice(1.0)
    noisy = augment_signal(y, SR, "channel:noise", seed=5)
    assert np.allclose(noisy, apply_channel(y, SR, random_channel(5, "noise"), 5))
    assert not np.allclose(noisy, y)


@pytest.mark.parametrize("kind", ["channel", "vtlp", "speed"])
def test_new_augmentations(kind):
    assert kind in parse_augment(kind)
    y = _voice(1.0)
    outs = [augment_signal(y, SR, kind, seed=s, babble=POOL) for s in (0, 1, 0)]
    for z in outs:
        assert z.dtype == np.float32 and np.isfinite(z).all()
        n = min(len(z), len(y))
        assert not np.allclose(z[:n], y[:n], atol=1e-3)
    assert np.array_equal(outs[0], outs[2]) and not np.array_equal(outs[0], outs[1])
    if kind == "vtlp":
        assert all(len(z) == len(y) for z in outs)
    if kind == "speed":
        assert all(0.84 < len(y) / len(z) < 1.16 and abs(len(y) / len(z) - 1) > 0.05 for z in outs)


def _vowel(f0=150.0, formants=((700, 80), (1200, 90), (2600, 120)), seconds=1.0):
    """An /a/-like vowel: an impulse train at ``f0`` through cascaded formant resonators."""
    from scipy.signal import lfilter

    x = np.zeros(int(seconds * SR))
    x[:: int(SR / f0)] = 1.0
    for f, bw in formants:
        r = np.exp(-np.pi * bw / SR)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def test_vtlp_moves_formants_not_pitch():
    from ser_core.augment import vtlp_warp

    f = np.array([0.0, 1000.0, 8000.0])
    assert np.allclose(vtlp_warp(f, 1.1, SR), [0, 1100, 8000]) and np.allclose(vtlp_warp(f, 0.9, SR), [0, 900, 8000])

    def f0(x):
        ac = np.correlate(x[4000:8000], x[4000:8000], "full")[3999:]
        return SR / (40 + ac[40:400].argmax())

    def centroid(x):
        mag = np.abs(np.fft.rfft(x))
        return np.sum(np.fft.rfftfreq(len(x), 1 / SR) * mag) / np.sum(mag)

    y = _vowel()
    ratios = []
    for seed in range(6):
        z = augment_signal(y, SR, "vtlp", seed=seed)
        assert len(z) == len(y) and abs(f0(z) - f0(y)) < 2  # the pitch stays
        ratios.append(centroid(z) / centroid(y))
    assert all(0.8 < r < 1.2 for r in ratios) and max(abs(r - 1) for r in ratios) > 0.04  # the formants move


def test_channel_augmentation_with_babble_uses_other_speakers_clips(shared_ravdess, tmp_path):
    from ser_core.augment import _clip_seed, augmented_features
    from ser_core.features import get_feature_set

    paths = [str(p) for a in ("01", "02") for p in sorted((shared_ravdess / f"Actor_{a}").glob("*.flac"))[:6]]
    speakers = ["01"] * 6 + ["02"] * 6
    seed = next(s for s in range(100) if any(random_channel(_clip_seed(p, s)) == "babble10" for p in paths))
    fs = get_feature_set("prosody")
    X = augmented_features(paths, fs, "channel", seed, speakers=speakers, n_jobs=1, cache=False)
    assert X.shape == (12, *fs.shape) and np.isfinite(X).all()


@pytest.mark.slow
def test_evaluate_perturb_through_the_cli(shared_ravdess, tmp_path):
    from test_cli import run_cli

    data = tmp_path / "data"
    for a in ("01", "02", "03"):
        (data / f"Actor_{a}").mkdir(parents=True)
        for f in sorted((shared_ravdess / f"Actor_{a}").glob("*.flac"))[::6]:
            (data / f"Actor_{a}" / f.name).symlink_to(f)
    env = {"SER_RESULTS_DB": str(tmp_path / "r.sqlite"), "SER_MODELS_DIR": str(tmp_path / "models"),
           "SER_CACHE_DIR": str(tmp_path / "cache")}
    (trained,) = json.loads(run_cli("train", "--data", data, "--models", "svm", "--feature-set", "prosody",
                                    "--folds", "3", "--json", env=env).stdout)
    svm = Path(trained["saved_model"]).name  # one of yours: svm-ravdess-run1
    out = json.loads(run_cli("evaluate", "--model", svm, "--data", data, "--perturb", "phone,noise0,babble10",
                             "--json", env=env).stdout)
    assert list(out["perturbations"]) == ["phone", "noise0", "babble10"]
    for r in out["perturbations"].values():
        assert set(r) >= {"uar", "accuracy", "ece"} and 0 <= r["uar"] <= 1 and 0 <= r["ece"] <= 1
    assert out["perturbations"]["noise0"]["accuracy"] != out["accuracy"]
    bad = run_cli("evaluate", "--model", svm, "--data", data, "--perturb", "phone,noise15", env=env, check=False)
    assert bad.returncode == 2 and "noise15" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_robustness_cards_and_table(tmp_path):
    from ser_core.robustness import record_robustness, robustness_table
    from ser_core.saved import read_card

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "card.json").write_text(json.dumps({"name": "m", "model": "svm"}))
    record_robustness(tmp_path / "m", {"reverb": {"uar": 0.4, "accuracy": 0.45, "ece": 0.1, "n": 9},
                                       "clean": {"uar": 0.5, "accuracy": 0.55, "ece": 0.05, "n": 9}},
                      protocol="9 clips of seen speakers")
    card = read_card(tmp_path / "m")
    assert card["model"] == "svm" and card["robustness"]["reverb"]["uar"] == 0.4
    assert card["robustness_protocol"] == "9 clips of seen speakers"
    table = robustness_table([card, {"name": "no_block"}])
    assert list(table.index) == ["m"] and list(table.columns) == ["clean", "reverb"]  # clean first
    assert table.loc["m", "reverb"] == 0.4
    assert robustness_table([{"name": "x"}]).empty


@pytest.mark.slow
def test_cross_validate_perturbed_tests_unseen_speakers(shared_ravdess, tmp_path):
    from ser_core.corpora import load_corpus
    from ser_core.robustness import cross_validate_perturbed

    for a in ("01", "02", "03", "04"):
        (tmp_path / f"Actor_{a}").mkdir()
        for f in sorted((shared_ravdess / f"Actor_{a}").glob("*.flac"))[::8]:
            (tmp_path / f"Actor_{a}" / f.name).symlink_to(f)
    res = cross_validate_perturbed("svm", load_corpus(tmp_path), "noise0", folds=2, feature_set="prosody")
    assert list(res["summary"]) == ["clean", "noise0"] and len(res["folds"]) == 2
    assert "StratifiedGroupKFold" in res["splitter"]
    assert res["folds"][0]["clean"]["n"] == res["folds"][0]["noise0"]["n"]
    assert res["folds"][0]["clean"] != res["folds"][0]["noise0"]


def test_leaderboard_shows_robustness_of_saved_models(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ser_core.robustness import record_robustness

    for sub in ("jobs", "models"):
        monkeypatch.setenv(f"SER_{sub.upper()}_DIR", str(tmp_path / sub))
    for name, uar in (("svm", 0.3), ("cnn", 0.2)):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "model.json").write_text("{}")
        (tmp_path / "models" / name / "card.json").write_text(json.dumps({"name": name, "model": name}))
        record_robustness(tmp_path / "models" / name, {"clean": {"uar": 0.5, "accuracy": 0.5, "ece": 0.1},
                                                       "phone": {"uar": uar, "accuracy": uar, "ece": 0.2}},
                          protocol="RAVDESS actors 01-16 (seen in training)")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=60)
    at.switch_page("app_pages/leaderboard.py").run()
    assert not at.exception
    assert any("perturbed clips" in md.value for md in at.markdown)
    assert any("seen in training" in c.value for c in at.caption)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heat = next(c["data"][0] for c in charts if c["data"] and c["data"][0]["type"] == "heatmap"
                and c["data"][0]["x"] == ["clean", "phone"])
    assert sorted(heat["y"]) == ["cnn", "svm"] and sorted(heat["text"]) == [["50", "20"], ["50", "30"]]


def test_gain_never_turns_a_quiet_recording_into_silence():
    from ser_core.audio import prepare
    from ser_core.channels import GAIN_FLOOR_DBFS, apply_channel

    t = np.arange(16000) / 16000
    quiet = (10 ** (-41 / 20) * np.sin(2 * np.pi * 200 * t)).astype(np.float32)  # a real RAVDESS clip peaks here
    for seed in range(30):
        out = apply_channel(quiet, 16000, "gain", seed)
        assert 20 * np.log10(np.abs(out).max()) >= GAIN_FLOOR_DBFS - 0.5
        prepare(out, 16000, trim=True, normalize="peak")  # no SilentAudioError


@pytest.mark.slow
def test_cross_validated_robustness_calibrates_on_clean_other_folds(shared_ravdess, tmp_path):
    from helpers import symlink_actors
    from ser_core.corpora import load_corpus
    from ser_core.robustness import cross_validate_perturbed

    corpus = load_corpus(symlink_actors(shared_ravdess, tmp_path, ("01", "02", "03"), per_actor=24))
    res = cross_validate_perturbed("lda", corpus, ("phone",), folds=3, feature_set="rich")
    oof = res["oof"]
    assert set(oof["proba"]) == {"clean", "phone"} and (oof["fold"] >= 0).all()
    assert oof["proba"]["phone"].shape == (len(corpus.manifest), len(oof["classes"]))
    for fold in res["folds"]:
        for scores in fold.values():
            assert 0 <= scores["ece"] <= 1 and 0 <= scores["ece_uncalibrated"] <= 1
    # LDA's raw probabilities are over-confident: calibration (fitted on clean clips of other folds) helps
    assert res["summary"]["clean"]["ece"]["mean"] < np.mean([f["clean"]["ece_uncalibrated"] for f in res["folds"]])


def test_rooms_are_bundled_impulse_responses_and_the_microphone_band_limits():
    from ser_core.channels import room_bank

    rirs, rt60, rate = room_bank()
    assert rate == SR and len(rirs) == len(rt60) >= 30 and 0.15 < rt60.min() and rt60.max() < 1.5
    y = _voice()
    wet = apply_channel(y, SR, "room", seed=4)
    assert not np.allclose(wet, y) and len(wet) == len(y)
    f = np.fft.rfftfreq(len(y), 1 / SR)

    def top_share(x):  # the share of the energy above the laptop microphone's band (7.5 kHz)
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[f > 7600].sum() / power.sum()

    assert top_share(apply_channel(y, SR, "mic", seed=4)) < 0.25 * top_share(y)  # 2nd-order slopes: gentle
