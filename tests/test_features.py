"""Feature sets, signal functions, the pitch tracker, compute_files and the speaker normaliser."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser_core import features as F
from ser_core.cache import FeatureCache
from ser_core.errors import AudioError, ConfigError, SilentAudioError
from ser_core.features import (FEATURE_SETS, FeatureSet, SpeakerNormalizer, compute, compute_files,
                               frame_features, functionals, get_feature_set, list_feature_sets, pitch)


def voice(f0=150.0, sr=16000, dur=1.5, seed=0):
    """A crude vowel: harmonics of a gliding f0 with an amplitude envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * dur)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 12)) * np.hanning(len(t))
    return (0.3 * y + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def write_clips(folder, n, sr=16000):
    paths = []
    for i in range(n):
        p = folder / f"clip{i}.wav"
        sf.write(p, voice(120 + 20 * i, sr=sr, seed=i), sr)
        paths.append(p)
    return paths


@pytest.mark.parametrize("name", list(FEATURE_SETS))
def test_every_set_has_its_declared_shape(name):
    fs = get_feature_set(name)
    for sr, dur in [(16000, 1.5), (8000, 5.0)]:  # shorter and longer than the fixed sizes
        x = compute(voice(sr=sr, dur=dur), sr, fs)
        assert x.shape == fs.shape and x.dtype == np.float32
        assert np.all(np.isfinite(x))
    if fs.kind == "utterance":
        assert fs.dim == fs.shape[0] == len(fs.feature_names())
    if fs.kind == "sequence":
        assert fs.dim == fs.shape[1] == len(fs.feature_names())


def test_registry_and_known_sizes():
    assert set(list_feature_sets()) >= {"mfcc_chroma_mel", "mfcc13_chroma_contrast_zcr", "rich", "prosody",
                                        "mfcc_seq", "logmel_image", "raw_audio"}
    assert list_feature_sets("image") == ["logmel_image", "logmel_image_denoised"]
    assert get_feature_set("mfcc_chroma_mel").shape == (40 + 12 + 128 + 7 + 6,)
    assert get_feature_set("raw_audio").shape == (64000,)
    fs = get_feature_set("rich")
    assert (fs.sr, fs.trim, fs.top_db, fs.normalize) == (16000, True, 20, "peak")
    with pytest.raises(ConfigError, match="Available: .*rich"):
        get_feature_set("rcih")
    with pytest.raises(ConfigError):
        FeatureSet("bad", "utterance", ("mfcc", "loudness"))
    with pytest.raises(ConfigError):
        FeatureSet("bad", "sequence", ("mfcc",))  # no max_frames
    with pytest.raises(Exception):
        fs.n_mfcc = 13  # frozen


def test_key_is_stable_and_covers_every_field(monkeypatch):
    fs = get_feature_set("rich")
    assert fs.key() == get_feature_set("rich").replace().key()
    assert fs.key() == fs.replace(description="other words").key()  # prose is not part of the features
    keys = {fs.key(), fs.replace(n_mfcc=13).key(), fs.replace(top_db=30).key(), fs.replace(trim=False).key(),
            fs.replace(normalize="loudness").key(), fs.replace(sr=8000).key()}
    assert len(keys) == 6
    assert fs.replace(denoise=2.0).key() not in keys
    assert fs.key() == "rich-e17941c79f47eb1c"  # the key before ``denoise`` existed: caches stay valid
    monkeypatch.setattr(F, "FEATURE_VERSION", F.FEATURE_VERSION + 1)
    assert fs.key() not in keys


def test_reduce_noise_removes_a_stationary_floor_and_leaves_clean_speech():
    """A voiced signal with pauses: pink noise at 10 dB SNR drops by over 15 dB in the pauses; the clean signal
    (silent pauses) comes back nearly unchanged, and the length is kept."""
    from ser_core.channels import apply_channel
    from ser_core.features import prepare_for, reduce_noise

    sr = 16000
    t = np.arange(int(2.0 * sr)) / sr
    voice = sum(np.sin(2 * np.pi * 140 * h * t) / h for h in range(1, 12)) * (np.sin(2 * np.pi * 3 * t) > 0)
    y = np.concatenate([np.zeros(sr // 2), voice, np.zeros(sr // 2)]).astype(np.float32) * 0.3
    noisy = apply_channel(y, sr, "noise10", seed=1)
    cleaned, same = reduce_noise(noisy, sr), reduce_noise(y, sr)
    assert cleaned.shape == same.shape == y.shape
    pauses = np.r_[0:sr // 2 - 512, -(sr // 2) + 512:0]
    assert 10 * np.log10(np.mean(noisy[pauses] ** 2) / np.mean(cleaned[pauses] ** 2)) > 15  # the floor goes
    assert np.mean((cleaned - same) ** 2) < 0.5 * np.mean((noisy - y) ** 2)  # and the whole is nearer the clean
    # the clean clip keeps its spectrum (the 60 Hz high-pass shifts the phase of the low harmonics, nothing more)
    spectrum = lambda x: np.abs(np.fft.rfft(x))[200:]  # above 100 Hz
    assert np.abs(spectrum(same) - spectrum(y)).sum() < 0.05 * spectrum(y).sum()
    fs = get_feature_set("expressive_denoised")
    assert fs.denoise and fs.shape == get_feature_set("expressive").shape
    assert prepare_for(noisy, sr, fs).size < prepare_for(noisy, sr, "expressive").size  # the pauses trim again


def test_utterance_vector_layout_matches_names():
    fs = get_feature_set("prosody")
    x = compute(voice(150), 16000, fs)
    named = dict(zip(fs.feature_names(), x))
    assert 12 * np.log2(140 / 55) < named["f0_p50"] < 12 * np.log2(160 / 55)  # semitones re 55 Hz
    assert named["voicing_mean"] > 0.7
    assert named["f0_min"] <= named["f0_p10"] <= named["f0_p50"] <= named["f0_p90"] <= named["f0_max"]


def test_functionals_on_a_ramp():
    X = np.arange(101, dtype=float)[None] / 100  # one feature rising by 1.0 per second at 100 frames/s
    stats = dict(zip(F.FUNCTIONALS, functionals(X, frame_rate=100.0)))
    assert stats["mean"] == pytest.approx(0.5) and stats["min"] == 0 and stats["max"] == 1
    assert stats["p10"] == pytest.approx(0.1) and stats["p90"] == pytest.approx(0.9)
    assert stats["slope"] == pytest.approx(1.0)
    assert functionals(np.zeros((3, 0))).shape == (24,)


@pytest.mark.parametrize("f0", [85.0, 150.0, 310.0])
def test_pitch_of_a_tone(f0):
    t = np.arange(16000) / 16000
    y = (0.5 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(4 * np.pi * f0 * t)).astype(np.float32)
    track, voiced, periodicity = pitch(y=y, sr=16000, hop_length=160)
    assert track.shape == voiced.shape == periodicity.shape == (101,)
    assert voiced[5:-5].all()
    assert abs(np.nanmedian(track) - f0) < 2.0


def test_noise_is_unvoiced():
    y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.3
    _, voiced, _ = pitch(y=y, sr=16000)
    assert voiced.mean() < 0.1


def test_frame_features_share_one_time_axis():
    y = np.concatenate([np.zeros(4000, np.float32), voice(200, dur=1.0), np.zeros(4000, np.float32)])
    tracks = frame_features(y, 16000, hop_length=160)
    assert {"times", "rms", "centroid", "f0", "voiced", "zcr"} <= set(tracks)
    n = 1 + len(y) // 160
    assert all(len(v) == n for v in tracks.values())
    assert tracks["voiced"].dtype == bool and np.isnan(tracks["f0"][~tracks["voiced"]]).all()
    assert not tracks["voiced"][:20].any()  # the leading silence
    assert abs(np.nanmedian(tracks["f0"]) - 200) < 8
    assert np.all(np.diff(tracks["times"]) > 0)


def test_signal_functions_match_librosa():
    """The features are re-implemented on numpy (worker processes start 2 s faster without librosa and
    scipy.signal); they must equal librosa's."""
    import librosa

    y = voice(180, dur=1.2)
    S = F._spectrogram(y, None, 512, 160)
    np.testing.assert_allclose(S, np.abs(librosa.stft(y, n_fft=512, hop_length=160, pad_mode="constant")),
                               atol=1e-4)
    for n_fft, n_mels in [(512, 128), (1024, 64), (640, 128)]:
        np.testing.assert_allclose(F.mel_filters(16000, n_fft, n_mels),
                                   librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels), atol=1e-7)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=S ** 2, sr=16000, n_fft=512), top_db=80)
    np.testing.assert_allclose(F.log_mel(S=S), mel_db, atol=1e-3)
    m = F.mfcc(S=S, n_mfcc=20)
    np.testing.assert_allclose(m, librosa.feature.mfcc(S=mel_db, n_mfcc=20), atol=1e-2)
    for order in (1, 2):
        np.testing.assert_allclose(F.deltas(m, order=order), librosa.feature.delta(m, order=order, mode="nearest"),
                                   atol=1e-4)
    np.testing.assert_allclose(F.deltas(m[:, :3]), librosa.feature.delta(m[:, :3], mode="nearest"), atol=1e-4)
    c = F.chroma(S=S)
    np.testing.assert_allclose(c, librosa.feature.chroma_stft(S=S ** 2, sr=16000, n_fft=512, tuning=0.0),
                               atol=1e-5)
    np.testing.assert_allclose(F.tonnetz(chroma_=c), librosa.feature.tonnetz(chroma=c), atol=1e-5)
    np.testing.assert_allclose(F.spectral_contrast(S=S),
                               librosa.feature.spectral_contrast(S=S, sr=16000, n_fft=512, fmin=100), atol=1e-3)
    np.testing.assert_allclose(F.rms(S=S), librosa.feature.rms(S=S, frame_length=512), rtol=1e-5)
    np.testing.assert_allclose(F.zero_crossing_rate(y=y),
                               librosa.feature.zero_crossing_rate(y, frame_length=512, hop_length=160))
    np.testing.assert_allclose(F.spectral_centroid(S=S),
                               librosa.feature.spectral_centroid(S=S, sr=16000, n_fft=512), rtol=1e-4)


def test_compute_raises_audio_errors():
    with pytest.raises(SilentAudioError):
        compute(np.zeros(16000, np.float32), 16000, "rich")


def test_compute_files_uses_the_cache(tmp_path, monkeypatch):
    paths = write_clips(tmp_path, 4)
    calls = []
    real = F.compute_file
    monkeypatch.setattr(F, "compute_file", lambda p, fs: calls.append(p) or real(p, fs))
    cache = FeatureCache(tmp_path / "cache")
    seen = []
    X1 = compute_files(paths, "prosody", cache=cache, n_jobs=1, progress=lambda d, t: seen.append((d, t)))
    assert X1.shape == (4, 32) and len(calls) == 4 and seen[-1] == (4, 4)
    X2 = compute_files(paths, "prosody", cache=FeatureCache(tmp_path / "cache"), n_jobs=1, progress=False)
    assert len(calls) == 4  # all hits
    np.testing.assert_array_equal(X1, X2)
    changed = get_feature_set("prosody").replace(f0_fmax=400.0)
    compute_files(paths, changed, cache=cache, n_jobs=1, progress=False)
    assert len(calls) == 8  # a changed config misses
    compute_files(paths, "prosody", cache=False, n_jobs=1, progress=False)
    assert len(calls) == 12


def test_compute_files_default_cache_and_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "env-cache"))
    compute_files(write_clips(tmp_path, 1), "prosody", n_jobs=1, progress=False)
    assert any((tmp_path / "env-cache").rglob("*.npy"))
    assert compute_files([], "mfcc_seq", cache=False).shape == (0, 175, 120)


def test_parallel_equals_serial_and_names_the_bad_file(tmp_path, shared_ravdess):
    paths = sorted((shared_ravdess / "Actor_02").glob("*.flac"))[:3] + write_clips(tmp_path, 2, sr=44100)
    serial = compute_files(paths, "rich", cache=False, n_jobs=1, progress=False)
    parallel = compute_files(paths, "rich", cache=False, n_jobs=2, progress=False)
    np.testing.assert_allclose(parallel, serial, rtol=1e-5, atol=1e-5)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all" * 100)
    for n_jobs in (1, 2):
        with pytest.raises(AudioError, match="broken.wav"):
            compute_files(paths + [bad], "rich", cache=False, n_jobs=n_jobs, progress=False)


def test_rich_on_real_speech_is_plausible(shared_ravdess):
    fs = get_feature_set("rich")
    path = next((shared_ravdess / "Actor_03").glob("03-01-05-02-*.flac"))  # angry, strong, male actor
    named = dict(zip(fs.feature_names(), F.compute_file(path, fs)))
    f0_median = 55 * 2 ** (named["f0_p50"] / 12)
    assert 70 < f0_median < 400, f0_median
    assert 0.2 < named["voicing_mean"] <= 1.0


def test_speaker_normalizer_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    X_train = np.r_[rng.normal(5, 2, (50, 3)), rng.normal(-5, 0.5, (50, 3))]
    spk_train = np.array(["a"] * 50 + ["b"] * 50)
    norm = SpeakerNormalizer().fit(X_train, spk_train)
    Z = norm.transform(X_train, spk_train)
    for s in "ab":
        np.testing.assert_allclose(Z[spk_train == s].mean(0), 0, atol=1e-6)
        np.testing.assert_allclose(Z[spk_train == s].std(0), 1, atol=1e-6)
    # an unseen test speaker gets the global statistics of the training data, not its own
    X_test = rng.normal(100, 1, (10, 3))
    Zt = norm.transform(X_test, ["c"] * 10)
    np.testing.assert_allclose(Zt, (X_test - X_train.mean(0)) / X_train.std(0), rtol=1e-5)
    assert np.abs(Zt.mean(0)).min() > 5  # not re-centred on the test speaker
    # a test clip of a training speaker uses that speaker's training statistics
    one = norm.transform(X_train[:1], ["a"])
    np.testing.assert_allclose(one, Z[:1], rtol=1e-6)
    # unseen="self": an unseen speaker with enough clips is normalised by its own (unlabeled) clips
    Zs = SpeakerNormalizer(unseen="self").fit(X_train, spk_train).transform(X_test, ["c"] * 10)
    np.testing.assert_allclose(Zs.mean(0), 0, atol=1e-5)
    few = SpeakerNormalizer(unseen="self", min_clips=20).fit(X_train, spk_train).transform(X_test, ["c"] * 10)
    np.testing.assert_allclose(few, Zt, rtol=1e-5)  # too few clips: global statistics
    with pytest.raises(ConfigError):
        SpeakerNormalizer().transform(X_test, ["c"] * 10)
    with pytest.raises(ConfigError):
        norm.fit(X_train, spk_train[:3])


def test_expressive_set_adds_voice_quality_and_timing(shared_ravdess):
    from ser_core.features import SUMMARY_DIMS, spectral_shape

    fs = get_feature_set("expressive")
    rich = get_feature_set("rich")
    assert fs.shape == (rich.shape[0] + (40 + 7 + 2) * len(fs.functionals) + sum(SUMMARY_DIMS.values()),)
    assert len(fs.feature_names()) == fs.shape[0] and fs.feature_names()[-1] == "voiced_spectrum79"
    path = next((shared_ravdess / "Actor_03").glob("03-01-05-02-*.flac"))  # angry, strong, male actor
    x = F.compute_file(path, fs)
    assert x.shape == fs.shape and np.isfinite(x).all()
    assert np.allclose(x[:rich.shape[0] // 8], F.compute_file(path, rich)[:rich.shape[0] // 8])  # rich means
    named = dict(zip(fs.feature_names(), x))
    assert 0 < named["voice7"] < 1 and 0.5 < named["voice11"] < 6  # voiced fraction, duration in s
    # spectral shape of white noise: flat (log flatness near 0), centroid near the middle of the band
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    shape = spectral_shape(y=noise, sr=16000)
    assert shape.shape[0] == 7 and abs(np.median(shape[0]) - 4000) < 300 and np.median(shape[3]) > -1.0
    tone = np.sin(2 * np.pi * 300 * np.arange(16000) / 16000).astype(np.float32)
    assert np.median(spectral_shape(y=tone, sr=16000)[3]) < -5  # a pure tone is far from flat


def test_a_recording_longer_than_a_block_gets_the_features_of_one_block(monkeypatch):
    """Long recordings are analysed a block of frames at a time (``BLOCK_FRAMES``: bounded memory); with blocks of
    300 frames, 43 s of speech with pauses gets the features, the denoised signal and the pitch of one block, to
    float32 rounding; the frame counts that do not divide into blocks (a last block of one frame) included."""
    from ser_core.audio import load_audio
    from ser_core.roots import SAMPLES

    clips = sorted(SAMPLES.rglob("*.flac"))[:10]
    rng = np.random.default_rng(0)
    y = np.concatenate([np.r_[load_audio(c, trim=False, normalize=None), 1e-3 * rng.standard_normal(4000)]
                        for c in clips]).astype(np.float32)  # clips, and pauses of a quiet room between them
    y = y[:len(y) // 160 * 160 + 37]  # 1 + n // 160 frames: one more than whole blocks of 300 (at hop 160)
    sets = [n for n, fs in FEATURE_SETS.items() if fs.kind != "raw"]
    whole = {"denoised": F.reduce_noise(y, 16000), "f0": pitch(y=y)[0], **{n: compute(y, 16000, n) for n in sets}}
    monkeypatch.setattr(F, "BLOCK_FRAMES", 300)
    blocks = {"denoised": F.reduce_noise(y, 16000), "f0": pitch(y=y)[0], **{n: compute(y, 16000, n) for n in sets}}
    for name, expected in whole.items():
        np.testing.assert_allclose(blocks[name], expected, rtol=1e-5, atol=5e-5, err_msg=name)
