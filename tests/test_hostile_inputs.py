"""Hostile and careless inputs (all generated here): absurd rates and sizes, lying headers, non-speech, corrupt and
mislabelled files. Each gets a verdict or one sentence, never a traceback, in bounded memory; the CLI reports
each bad file of a batch and still returns the good ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import one_sentence, wav_bytes
from ser_core.audio import MAX_DECODED_SAMPLES, decode, load_audio
from ser_core.errors import (AudioLimitError, EmptyAudioError, InvalidSamplesError, LowSampleRateError,
                             UnreadableAudioError)
from ser_core.speech import MIN_SPEECH_S, speech_check, speech_check_file

REPO = Path(__file__).resolve().parents[1]
ANGRY = REPO / "samples" / "ravdess" / "Actor_01" / "03-01-05-02-01-01-01.flac"
SR = 16000
MB = 1024  # ru_maxrss is in KiB on Linux


def constant_flac(path: Path, sr: int, channels: int, seconds: int, unknown_length: bool = False) -> Path:
    """A constant signal, second by second (FLAC compresses it to almost nothing); ``unknown_length`` zeroes the
    STREAMINFO sample count, as a streaming encoder leaves it."""
    block = np.full((sr, channels), 8192, np.int16)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16", format="FLAC") as f:
        for _ in range(seconds):
            f.write(block)
    if unknown_length:
        data = bytearray(path.read_bytes())
        data[21] &= 0xF0  # "fLaC", block header (4), then total samples = the low 36 bits of bytes 21-25
        data[22:26] = bytes(4)
        path.write_bytes(bytes(data))
    return path


def many_channels_wav(path: Path, channels: int, frames: int, sr: int = 8000) -> Path:
    """A quiet constant in ``channels`` channels of 8-bit PCM, written a block at a time."""
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_U8") as f:
        for _ in range(frames // 1000):
            f.write(np.full((1000, channels), 0.1, np.float32))
    return path


def write(path: Path, y, sr: int = SR, subtype: str = "FLOAT") -> Path:
    sf.write(path, np.asarray(y, np.float32), sr, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    t = np.arange(3 * SR) / SR
    rng = np.random.default_rng(0)
    clicks = np.zeros(3 * SR)
    clicks[rng.choice(len(clicks), 12, replace=False)] = 0.9
    angry = ANGRY.read_bytes()
    corrupt = bytearray(angry)
    corrupt[2000:6000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    files = {
        "655 kHz, 8 channels, 119 s FLAC": constant_flac(d / "hostile.flac", 655_350, 8, 119),
        "384 kHz, 8 channels, 20 s FLAC": constant_flac(d / "wide384k.flac", 384_000, 8, 20),
        "the same of unknown length": constant_flac(d / "stream384k.flac", 384_000, 8, 20, unknown_length=True),
        "1024-channel WAV": many_channels_wav(d / "channels.wav", 1024, 60_000),
        "1 Hz rate": write(d / "onehz.wav", rng.normal(0, 0.3, 100), 1),
        "0.05 s clip": write(d / "short.wav", 0.5 * np.sin(2 * np.pi * 200 * t[:SR // 20])),
        "DC offset": write(d / "dc.wav", np.full(3 * SR, 0.5)),
        "full-scale square wave": write(d / "square.wav", np.sign(np.sin(2 * np.pi * 220 * t + 0.1))),
        "clicks": write(d / "clicks.wav", clicks),
        "NaN samples": write(d / "nan.wav", np.r_[np.full(SR, 0.1), np.nan, np.full(SR, 0.1)]),
        "truncated FLAC": d / "truncated.flac",
        "corrupt frames": d / "corrupt.flac",
        "random bytes named .mp3": d / "noise.mp3",
        "text named .m4a": d / "notes.m4a",
        "zero-length file": d / "empty.wav",
        "header only": write(d / "header_only.wav", np.zeros(0)),
        "FLAC named .mp3": d / "speech.mp3",
        "WAV header of 0 channels": d / "zero_channels.wav",
        "WAV header of 65,535 channels": d / "many_channels.wav",
        "WAV header of 0 bits per sample": d / "zero_bits.wav",
    }
    for name, header in (("WAV header of 0 channels", {"channels": 0}),
                         ("WAV header of 65,535 channels", {"channels": 65535}),
                         ("WAV header of 0 bits per sample", {"bits": 0})):
        files[name].write_bytes(wav_bytes(**header))  # the issue's files: tracebacks from PyAV before
    files["truncated FLAC"].write_bytes(angry[:len(angry) // 2])
    files["corrupt frames"].write_bytes(bytes(corrupt))
    files["random bytes named .mp3"].write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    files["text named .m4a"].write_bytes(b"this is a text file, not audio\n" * 100)
    files["zero-length file"].write_bytes(b"")
    files["FLAC named .mp3"].write_bytes(angry)
    return files


# name: (the error raised, or None for a verdict; a phrase of the message; is it speech)
EXPECTED = {
    "655 kHz, 8 channels, 119 s FLAC": (AudioLimitError, "above the 384000 Hz limit", None),
    "384 kHz, 8 channels, 20 s FLAC": (AudioLimitError, "61.4 million samples", None),
    "the same of unknown length": (AudioLimitError, "more than the 57.6 million limit", None),
    "1024-channel WAV": (AudioLimitError, "61.4 million samples", None),
    "1 Hz rate": (None, "sampled at 1 Hz", False),
    "0.05 s clip": (None, "too short to carry an emotion", False),
    "DC offset": (None, "constant offset", False),
    "full-scale square wave": (None, "pitch holds still", False),
    "clicks": (None, "", False),
    "NaN samples": (InvalidSamplesError, "NaN", None),
    "truncated FLAC": (UnreadableAudioError, "corrupt", None),
    "corrupt frames": (None, "", True),  # FFmpeg skips the damaged frames: the rest is speech
    "random bytes named .mp3": (UnreadableAudioError, "not a readable audio file", None),
    "text named .m4a": (UnreadableAudioError, "not a readable audio file", None),
    "zero-length file": (EmptyAudioError, "empty", None),
    "header only": (EmptyAudioError, "zero samples", None),
    "FLAC named .mp3": (None, "", True),  # the content decides, not the name
    "WAV header of 0 channels": (UnreadableAudioError, "no valid number of channels", None),
    # PyAV 18.1.0 opens it and reports no channel layout; 18.1.1 refuses to open it: one sentence either way
    "WAV header of 65,535 channels": (UnreadableAudioError, "corrupt", None),
    "WAV header of 0 bits per sample": (UnreadableAudioError, "corrupt header", None),
}
BROKEN_HEADERS = [name for name in EXPECTED if name.startswith("WAV header of")]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_hostile_file_gets_a_verdict_or_one_sentence(hostile, name):
    error, phrase, is_speech = EXPECTED[name]
    if error:
        with pytest.raises(error) as e:
            speech_check_file(hostile[name])
        one_sentence(str(e.value))
        assert phrase in str(e.value)
    else:
        y, speech, reason = speech_check_file(hostile[name])
        assert speech == is_speech and phrase in reason, reason
        if not speech:
            one_sentence(reason)


@pytest.mark.slow
def test_limits_are_checked_from_the_header_before_decoding(hostile, monkeypatch):
    def no_decoding(*a, **k):
        raise AssertionError("decoded a file its header already refuses")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    for name in ("655 kHz, 8 channels, 119 s FLAC", "384 kHz, 8 channels, 20 s FLAC", "1024-channel WAV"):
        with pytest.raises(AudioLimitError):
            decode(hostile[name])
    with pytest.raises(LowSampleRateError):
        decode(hostile["1 Hz rate"])


@pytest.mark.slow
def test_a_header_without_length_is_bounded_while_decoding(hostile):
    path = hostile["the same of unknown length"]
    assert sf.info(path).frames >= 2 ** 63 - 1  # libsndfile does not know its length: FFmpeg decodes it
    with pytest.raises(AudioLimitError):
        decode(path, sr=SR)
    y, sr = decode(path, sr=SR, max_samples=10 ** 9)  # within a larger limit the same file decodes
    assert sr == SR and len(y) == pytest.approx(20 * SR, abs=SR // 100)


def test_blockwise_downmix_and_resampling_give_the_whole_files_result(tmp_path):
    """Channel averaging and soxr resampling block by block equal the in-memory pipeline on the whole signal,
    also when a block holds fewer frames than there are channels."""
    from ser_core.audio import prepare

    rng = np.random.default_rng(1)
    wide = rng.uniform(-0.5, 0.5, (3000, 700)).astype(np.float32)  # a 1 Mi-sample block holds 1497 frames
    path = write(tmp_path / "wide.wav", wide, 44100)
    y = load_audio(path, trim=False, normalize=None)
    np.testing.assert_allclose(y, prepare(wide, 44100, trim=False, normalize=None), atol=1e-6)
    np.testing.assert_allclose(decode(path)[0], wide, atol=1e-7)  # without sr: every channel, native rate


PEAK_MB = r"""
def peak_mb():  # this process's own peak RSS (VmHWM): ru_maxrss also holds the peak of the process it forked from
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
"""
MEASURE = PEAK_MB + r"""
import json, sys
from ser_core.audio import load_audio
from ser_core.errors import SERError
from ser_core.speech import speech_check_file

speech_check_file(sys.argv[1])  # warm up on a real clip: lazy imports, FFT plans
base, out = peak_mb(), {}
for arg in sys.argv[2:]:
    check, path = arg.split(":", 1)
    try:
        speech_check_file(path) if check == "speech" else load_audio(path)
    except SERError:
        pass
    out[path] = round(peak_mb() - base)
print(json.dumps({"baseline_mb": round(base), "peak_above_baseline_mb": out}))
"""


@pytest.mark.slow
def test_peak_memory_stays_bounded(hostile, tmp_path):
    """In one fresh process, the speech check of every hostile file and the decoding of the largest file within
    the limits (8 channels, 48 kHz, 140 s: 53.8 million samples, 215 MB as float32) raise its peak RSS by less
    than 100 MB (before decoding was bounded: 3 GB for the issue's FLAC, 250 MB for the large file). The
    analysis of a long recording costs more (features of the whole signal): the app runs one at a time."""
    rng = np.random.default_rng(2)
    big = tmp_path / "big.wav"
    frames = MAX_DECODED_SAMPLES // 8 - 48_000 * 10  # 140 s
    with sf.SoundFile(big, "w", 48_000, 8, subtype="PCM_16") as f:
        block = (rng.normal(0, 2000, (48_000, 8))).astype(np.int16)
        for _ in range(frames // 48_000):
            f.write(block)
    args = [f"speech:{p}" for p in hostile.values()] + [f"load:{big}"]
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(ANGRY), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    peaks = json.loads(proc.stdout)["peak_above_baseline_mb"]
    assert max(peaks.values()) < 100, peaks


# -- the command line ----------------------------------------------------------------------------------------
def run_predict(*files, extra=()):
    proc = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--model", "svm", "--models-dir",
                           str(REPO / "trained_models"), *map(str, files), *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ})
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_cli_batch_reports_bad_files_and_returns_the_good_ones(hostile):
    bad = [hostile["655 kHz, 8 channels, 119 s FLAC"], hostile["text named .m4a"], hostile["zero-length file"]]
    no_speech = [hostile["1 Hz rate"], hostile["0.05 s clip"], hostile["DC offset"], hostile["full-scale square wave"]]
    files = [ANGRY, *bad, *no_speech, hostile["FLAC named .mp3"]]
    proc = run_predict(*files, extra=["--json"])
    assert proc.returncode == 1, proc.stderr  # some files failed
    rows = {r["file"]: r for r in json.loads(proc.stdout)}
    assert list(rows) == [str(f) for f in files]  # one row each (one model), in order
    for f in (ANGRY, hostile["FLAC named .mp3"]):
        assert rows[str(f)]["model"] == "svm" and rows[str(f)]["label"] and "error" not in rows[str(f)]
    for f in bad:
        assert rows[str(f)]["label"] is None
        one_sentence(rows[str(f)]["error"])
    for f in no_speech:
        assert rows[str(f)]["no_speech"] and rows[str(f)]["label"] is None and "error" not in rows[str(f)]
        one_sentence(rows[str(f)]["reason"])
    assert "3 of 9 files could not be analysed" in proc.stderr

    text = run_predict(ANGRY, hostile["text named .m4a"])
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"{ANGRY}\tsvm") and lines[1].startswith(f"{hostile['text named .m4a']}\terror: ")


@pytest.mark.slow
def test_cli_reports_the_issues_broken_headers_in_one_sentence_each(hostile):
    proc = run_predict(*[hostile[name] for name in BROKEN_HEADERS], extra=["--json"])
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["file"] for r in rows] == [str(hostile[name]) for name in BROKEN_HEADERS]
    for r in rows:
        assert r["label"] is None
        one_sentence(r["error"])


@pytest.mark.slow
def test_cli_exit_status_0_when_every_file_was_analysed_and_2_for_usage_errors(hostile):
    assert run_predict(ANGRY, hostile["DC offset"], extra=["--json"]).returncode == 0  # "no speech" is an answer
    usage = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--model", "no_such_model", str(ANGRY)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and usage.stderr.startswith("error: ")


CLI_PEAK = PEAK_MB + r"""
import sys
from ser_core.cli import main
status = main(sys.argv[1:])
print(status, peak_mb())
"""


@pytest.mark.slow
def test_cli_peak_memory_on_the_issues_flac(hostile):
    """The CLI on the issue's FLAC (3.25 GB before) peaks within 100 MB of the same CLI on a real clip."""
    def peak(path) -> float:
        proc = subprocess.run([sys.executable, "-c", CLI_PEAK, "predict", "--model", "svm", "--models-dir",
                               str(REPO / "trained_models"), str(path)], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return float(proc.stdout.split()[-1])

    assert peak(hostile["655 kHz, 8 channels, 119 s FLAC"]) - peak(ANGRY) < 100


def long_recording(path: Path, seconds: float, sr: int = 48_000) -> Path:
    """``seconds`` of the bundled speech clips one after another (9.8 minutes hold 170 of the 240, none twice),
    at ``sr`` Hz in stereo (the right channel at 80 %), written a clip at a time: a long recording as a phone or
    a meeting recorder leaves it."""
    import soxr

    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        written = 0
        for clip in sorted((REPO / "samples").rglob("*.flac")):
            y, clip_sr = sf.read(clip, dtype="float32")
            y = soxr.resample(y, clip_sr, sr)[:int(seconds * sr) - written]
            f.write(np.stack([y, 0.8 * y], axis=1))
            written += len(y)
            if written >= seconds * sr:
                break
    return path


@pytest.mark.slow
def test_cli_whole_file_predict_of_a_long_recording_in_bounded_memory(tmp_path):
    """The CLI's whole-file `predict` of 590 s of 48 kHz stereo speech (FLAC, 19 MB; inside the decoding limits)
    peaks at most 700 MB, within 300 MB of the same command on a 3 s clip (measured: 640 and 404 MB): the
    recording is decoded, resampled and analysed a block at a time, the speaker encoder's LSTM states carried
    from block to block, in numpy (before: 2,035 MB, growing 3 MB per second of audio; with the encoder over the
    whole recording at once on PyTorch: 1,060 MB; a block at a time on PyTorch: 794 MB)."""
    path = long_recording(tmp_path / "meeting.flac", 590)

    def peak(f) -> float:
        proc = subprocess.run([sys.executable, "-c", CLI_PEAK, "predict", "--model", "svm", "--models-dir",
                               str(REPO / "trained_models"), str(f)], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return float(proc.stdout.split()[-1])

    long_mb, short_mb = peak(path), peak(ANGRY)
    assert long_mb <= 700 and long_mb - short_mb < 300, (long_mb, short_mb)


def test_in_memory_signals_get_the_same_verdicts():
    """``speech_check`` on arrays (the microphone, timeline windows) decides as on files."""
    rng = np.random.default_rng(3)
    assert speech_check(rng.normal(0, 0.3, 100).astype(np.float32), 1)[1].endswith(
        "far below the 4000 Hz that speech needs.")
    short = speech_check(np.sin(np.arange(SR // 20) / 5).astype(np.float32), SR)[1]
    assert "too short" in short and f"{MIN_SPEECH_S:g} s" in short
    with pytest.raises(AudioLimitError):
        speech_check(np.zeros(10, np.float32), 1_000_000)
