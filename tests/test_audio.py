"""Audio loading: formats, resampling, channels, trimming, normalisation and every bad-input error."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
import soundfile as sf

from ser_core import audio
from ser_core.audio import decode, load_audio, prepare, trim_silence
from ser_core.errors import (AudioError, ConfigError, AudioTooLongError, AudioTooShortError, EmptyAudioError,
                             InvalidSamplesError, SilentAudioError, UnreadableAudioError)


def tone(freq=440.0, sr=16000, dur=1.0, amp=0.5):
    t = np.arange(int(sr * dur)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(y, sr=16000):
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.argmax(spec) * sr / len(y)


def write_av(path, y, sr, fmt, codec, rate):
    """Encode a mono signal with PyAV (FFmpeg), e.g. AAC in MP4 or Opus in WebM."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_soundfile_formats(tmp_path, ext):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, tone(sr=44100), 44100)
    y = load_audio(path, trim=False)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) < 1200  # mp3 adds encoder delay/padding
    assert abs(peak_hz(y) - 440) < 3
    assert np.max(np.abs(y)) == pytest.approx(1.0)


@pytest.mark.parametrize("ext,fmt,codec", [("m4a", "mp4", "aac"), ("webm", "webm", "libopus")])
def test_pyav_formats(tmp_path, ext, fmt, codec):
    path = tmp_path / f"tone.{ext}"
    write_av(path, tone(sr=44100), 44100, fmt, codec, rate=48000)
    with pytest.raises(Exception):  # libsndfile cannot read it: the FFmpeg path is exercised
        sf.info(str(path))
    y = load_audio(path, trim=False)
    assert abs(len(y) - 16000) < 1200
    assert abs(peak_hz(y) - 440) < 3


@pytest.mark.parametrize("sr_in", [8000, 44100, 96000])
def test_resampling_keeps_frequency(tmp_path, sr_in):
    path = tmp_path / f"tone{sr_in}.wav"
    sf.write(path, tone(sr=sr_in), sr_in, subtype="PCM_16" if sr_in != 96000 else "PCM_24")
    y = load_audio(path, trim=False, normalize=None)
    assert len(y) == 16000
    assert abs(peak_hz(y) - 440) < 2
    assert np.max(np.abs(y)) == pytest.approx(0.5, abs=0.02)  # no gain change from resampling


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = tone(440, sr=96000), tone(1000, sr=96000, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 96000, subtype="FLOAT")
    y = load_audio(path, trim=False, normalize=None)
    assert y.shape == (16000,)
    spec = np.abs(np.fft.rfft(y))
    assert spec[440] > 0 and spec[1000] > 0 and spec[440] / spec[1000] == pytest.approx(2.0, rel=0.05)
    # in memory, both (channels, n) and (n, channels) layouts
    a = prepare(np.stack([left, right]), 96000, trim=False, normalize=None)
    b = prepare(np.stack([left, right], axis=1), 96000, trim=False, normalize=None)
    np.testing.assert_allclose(a, y, atol=1e-4)
    np.testing.assert_allclose(a, b)


def test_bytes_and_file_objects(tmp_path):
    path = tmp_path / "t.flac"
    sf.write(path, tone(), 16000)
    data = path.read_bytes()
    from_path = load_audio(path)
    np.testing.assert_array_equal(load_audio(data), from_path)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), from_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), from_path)


def test_integer_pcm_in_memory():
    y16 = (tone() * 32767).astype(np.int16)
    y = prepare(y16, 16000, trim=False, normalize=None)
    assert np.max(np.abs(y)) == pytest.approx(0.5, abs=1e-3)


def test_trim_silence_reports_region():
    y = np.concatenate([np.zeros(8000), tone(dur=1.0), np.zeros(8000)]).astype(np.float32)
    trimmed, (start, end) = trim_silence(y, top_db=20)
    assert 8000 - 600 <= start <= 8000 and 24000 <= end <= 24000 + 600
    np.testing.assert_array_equal(trimmed, y[start:end])
    assert len(load_audio(io.BytesIO(_wav_bytes(y)))) == end - start
    assert len(load_audio(io.BytesIO(_wav_bytes(y)), trim=False)) == len(y)


def test_normalisation_modes():
    y = tone(amp=0.1)
    assert np.max(np.abs(prepare(y, 16000, trim=False, normalize="peak"))) == pytest.approx(1.0)
    loud = prepare(y, 16000, trim=False, normalize="loudness")
    assert 20 * np.log10(np.sqrt(np.mean(loud ** 2))) == pytest.approx(audio.LOUDNESS_TARGET_DBFS, abs=0.1)
    np.testing.assert_allclose(prepare(y, 16000, trim=False, normalize=None), y)
    clipped = prepare(np.r_[np.full(100, 1e-3), 0.9, np.full(16000, 1e-3)].astype(np.float32), 16000,
                      trim=False, normalize="loudness")
    assert np.max(np.abs(clipped)) <= 1.0
    with pytest.raises(ConfigError):
        prepare(y, 16000, normalize="rms")
    with pytest.raises(ConfigError):
        prepare(y, 0)


def _wav_bytes(y, sr=16000, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _one_sentence(exc: Exception):
    msg = str(exc)
    assert msg and msg[0].isupper() or msg.startswith("'"), msg
    assert msg.endswith(".") and "\n" not in msg, msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudioError) as e:
        load_audio(path)
    _one_sentence(e.value)
    with pytest.raises(EmptyAudioError):
        load_audio(b"")


def test_zero_samples(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(_wav_bytes(np.zeros(0, dtype=np.float32)))
    with pytest.raises(EmptyAudioError) as e:
        load_audio(path)
    _one_sentence(e.value)
    with pytest.raises(EmptyAudioError):
        prepare(np.zeros(0), 16000)


def test_all_silent_clip(tmp_path):
    path = tmp_path / "silent.wav"
    path.write_bytes(_wav_bytes(np.zeros(16000, dtype=np.float32)))
    with pytest.raises(SilentAudioError) as e:
        load_audio(path)
    _one_sentence(e.value)


@pytest.mark.parametrize("content", [b"this is a text file, not audio " * 40, b"RIFF\x24\x00\x00\x00WAVEfmt "])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "fake.wav"
    path.write_bytes(content)
    with pytest.raises(UnreadableAudioError) as e:
        load_audio(path)
    _one_sentence(e.value)
    assert "fake.wav" in str(e.value)


def test_truncated_real_header(tmp_path):
    path = tmp_path / "cut.wav"
    path.write_bytes(_wav_bytes(tone())[:30])
    with pytest.raises(AudioError):
        load_audio(path)


def test_missing_file_and_bad_source(tmp_path):
    with pytest.raises(UnreadableAudioError):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(UnreadableAudioError):
        load_audio(12345)


def test_nan_and_inf_samples(tmp_path):
    y = tone()
    y[100] = np.nan
    path = tmp_path / "nan.wav"
    path.write_bytes(_wav_bytes(y, subtype="FLOAT"))
    with pytest.raises(InvalidSamplesError) as e:
        load_audio(path)
    _one_sentence(e.value)
    y[100] = np.inf
    with pytest.raises(InvalidSamplesError):
        prepare(y, 16000)


def test_too_long_is_refused_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "long.flac"
    sf.write(path, tone(dur=3.0), 16000)

    def no_decoding(*a, **k):
        raise AssertionError("decoded a file the header says is too long")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(AudioTooLongError) as e:
        load_audio(path, max_duration_s=2.0)
    _one_sentence(e.value)
    with pytest.raises(AudioTooLongError):
        prepare(tone(dur=3.0), 16000, max_duration_s=2.0)


def test_too_long_pyav(tmp_path):
    path = tmp_path / "long.m4a"
    write_av(path, tone(dur=3.0), 16000, "mp4", "aac", rate=16000)
    with pytest.raises(AudioTooLongError):
        load_audio(path, max_duration_s=2.0)


def test_too_short(tmp_path):
    with pytest.raises(AudioTooShortError) as e:
        load_audio(io.BytesIO(_wav_bytes(tone(dur=0.02))))
    _one_sentence(e.value)
    # a long file whose speech is a 20 ms blip is too short once trimmed
    y = np.concatenate([np.zeros(16000), tone(dur=0.02), np.zeros(16000)]).astype(np.float32)
    with pytest.raises(AudioTooShortError):
        load_audio(io.BytesIO(_wav_bytes(y)), top_db=20, min_duration_s=0.2)


@pytest.mark.slow
def test_ten_minute_file_loads_fast(tmp_path):
    sr = 16000
    t = np.arange(sr * 600) / sr
    y = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
    path = tmp_path / "ten_minutes.wav"
    sf.write(path, y, sr, subtype="PCM_16")
    t0 = time.perf_counter()
    out = load_audio(path)
    elapsed = time.perf_counter() - t0
    assert abs(len(out) - len(y)) <= 1024
    assert elapsed < 5.0, f"10 minutes of audio took {elapsed:.1f} s to load"


def test_decode_returns_native_rate_and_channels(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, np.zeros((800, 2)) + 0.1, 8000)
    y, sr = decode(path)
    assert sr == 8000 and y.shape == (800, 2)


def test_real_ravdess_clip(shared_ravdess):
    path = next((shared_ravdess / "Actor_01").glob("*.flac"))
    y = load_audio(path)
    raw, sr = decode(path)
    assert sr == 16000 and y.dtype == np.float32
    assert 0.5 * 16000 < len(y) <= len(raw)
    assert np.max(np.abs(y)) == pytest.approx(1.0)


def test_envelope_keeps_every_peak_of_a_long_signal_in_few_points():
    from ser_core.audio import envelope

    y = np.zeros(16000 * 60, dtype=np.float32)  # a minute of silence with two clicks
    y[123_456], y[700_001] = 0.9, -0.8
    t, v = envelope(y, 16000, n_points=3000)
    assert len(t) == len(v) <= 3000 and np.all(np.diff(t) >= 0)
    assert v.max() == pytest.approx(0.9) and v.min() == pytest.approx(-0.8)
    assert abs(t[v.argmax()] - 123_456 / 16000) < 0.05 and abs(t[v.argmin()] - 700_001 / 16000) < 0.05
    t, v = envelope(y[:1000], 16000)  # short enough: every sample as it is
    assert len(v) == 1000 and t[1] == 1 / 16000
