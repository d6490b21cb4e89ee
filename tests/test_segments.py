"""Speech segments (Silero VAD): known boundaries on recordings made of RAVDESS clips and pauses, predictions
per segment, and `predict --segments --json`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_core.audio import load_audio, trim_silence
from ser_core.cli import main
from ser_core.corpora import load_corpus
from ser_core.features import compute_files
from ser_core.inference import LoadedModel, Predictor
from ser_core.models import create_model
from ser_core.saved import save_trained
from ser_core.segments import (DEFAULT_VAD, NO_SEGMENTS, predict_segments, segment_rows, segment_table,
                               speech_probabilities, speech_segments)
from ser_core.speech import TRIM_DB

SR = 16000
TOLERANCE_S = 0.3
EMOTIONS = ["angry", "calm", "happy", "sad"]


@pytest.fixture(scope="module")
def manifest(shared_ravdess):
    return load_corpus(shared_ravdess).manifest


def _recording(paths, pauses, rng, noise_dbfs=-70.0, between=None):
    """The clips joined by the given pauses (seconds; one more than clips, for the end), faint noise all
    through; ``between``: a signal put in the middle of the second pause. Returns (y, [(start_s, end_s)])."""
    parts, truth, t = [], [], 0
    for i, path in enumerate(paths):
        pause = np.zeros(int(pauses[i] * SR), dtype=np.float32)
        if between is not None and i == 1:
            mid = (len(pause) - len(between)) // 2
            pause[mid:mid + len(between)] = between
        clip = load_audio(path, trim=False, normalize=None)
        _, (s, e) = trim_silence(clip, top_db=TRIM_DB)
        truth.append(((t + len(pause) + s) / SR, (t + len(pause) + e) / SR))
        parts += [pause, clip]
        t += len(pause) + len(clip)
    parts.append(np.zeros(int(pauses[-1] * SR), dtype=np.float32))
    y = np.concatenate(parts)
    return y + rng.normal(0, 10 ** (noise_dbfs / 20), len(y)).astype(np.float32), truth


def _clips(manifest, actor, n, emotions=EMOTIONS, intensity=("normal", "strong")):
    """``n`` clips of ``actor`` whose speech has clear edges (trimmed at 20 and at 40 dB below the loudest frame,
    the edges agree within 0.15 s): their boundaries are known. A clip that starts with a breath or a murmur
    at -60 dB has no such truth, nor one whose last word fades out softly (the benchmark keeps them all)."""
    rows = manifest[(manifest["speaker"] == actor) & manifest["emotion"].isin(emotions)
                    & manifest["intensity"].isin(intensity)].sort_values("path")
    clear = []
    for _, row in rows.iterrows():
        clip = load_audio(row["path"], trim=False, normalize=None)
        (a0, a1), (b0, b1) = trim_silence(clip, top_db=20)[1], trim_silence(clip, top_db=40)[1]
        if abs(a0 - b0) <= 0.15 * SR and abs(a1 - b1) <= 0.15 * SR:
            clear.append(row)
        if len(clear) == n:
            break
    return pd.DataFrame(clear)


@pytest.mark.slow
def test_segments_find_each_clip_within_tolerance(manifest):
    rng = np.random.default_rng(0)
    clips = _clips(manifest, "09", 5, ("angry", "happy", "fearful", "surprised"), ("strong",))
    y, truth = _recording(clips["path"].tolist(), [0.6, 1.8, 0.9, 2.4, 0.7, 1.2], rng)
    found = speech_segments(y, SR)
    assert len(found) == len(truth), (found, truth)
    for (s, e), (ts, te) in zip(found, truth):
        assert abs(s - ts) <= TOLERANCE_S and abs(e - te) <= TOLERANCE_S, ((s, e), (ts, te))
    assert found == sorted(found) and all(a[1] <= b[0] for a, b in zip(found, found[1:]))  # disjoint, in order


def test_quiet_speech_is_found_and_silence_noise_and_tones_are_not(manifest):
    rng = np.random.default_rng(1)
    clip = _clips(manifest, "11", 1)["path"].iloc[0]
    y, truth = _recording([clip], [1.0, 1.0], rng)
    found = speech_segments(y, SR)
    assert len(found) == 1 and speech_segments(0.05 * y, SR) == found  # 26 dB quieter: the same segment
    t = np.arange(3 * SR) / SR
    assert speech_segments(np.zeros(3 * SR, dtype=np.float32), SR) == []
    assert speech_segments((0.1 * rng.standard_normal(3 * SR)).astype(np.float32), SR) == []
    assert speech_segments((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR) == []
    assert speech_probabilities(np.zeros(SR, dtype=np.float32), SR).shape == (-(-SR // 512),)


def test_loading_the_detector_keeps_torch_threads():
    import torch

    before = torch.get_num_threads()
    speech_segments(np.zeros(SR, dtype=np.float32), SR)  # silero_vad's import sets one thread for the process
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def tiny(manifest):
    """An LDA on prosody features of 64 clips of four emotions (actors 01-02), as a Predictor."""
    train = manifest[manifest["speaker"].isin(["01", "02"]) & manifest["emotion"].isin(EMOTIONS)]
    X = compute_files(train["path"].tolist(), "prosody", cache=False, progress=False, n_jobs=1)
    model = create_model("lda", feature_set="prosody").fit(X, train["emotion"].to_numpy())
    return model


@pytest.mark.slow
def test_predict_segments_judges_speech_and_skips_pauses_and_a_tone(manifest, tiny):
    rng = np.random.default_rng(2)
    clips = _clips(manifest, "12", 3)
    t = np.arange(int(1.5 * SR)) / SR
    tone = (0.02 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    y, truth = _recording(clips["path"].tolist(), [1.0, 3.0, 1.0, 0.8], rng, between=tone)
    predictor = Predictor([LoadedModel("tiny", tiny, {}, 0.0)])
    segs = predict_segments(y, SR, predictor)
    assert len(segs) == 3  # the tone in the second pause is no segment
    for seg, (ts, te) in zip(segs, truth):
        assert abs(seg["start_s"] - ts) <= TOLERANCE_S and abs(seg["end_s"] - te) <= TOLERANCE_S
        assert seg["speech"] and set(seg["models"]) == {"tiny"}
        assert sum(seg["models"]["tiny"].values()) == pytest.approx(1.0)
        assert seg["ensemble"] == pytest.approx(seg["models"]["tiny"])  # one model: its own probabilities
    table = segment_table(segs)
    assert [r["start"] for r in table] == [s["start_s"] for s in segs]
    assert all(r["emotion"] in EMOTIONS and 0.25 <= r["confidence"] <= 1 for r in table)

    not_speech = {"start_s": 5.0, "end_s": 6.0, **predictor.judge(np.tile(tone, 2), SR)}
    rows = segment_rows(segs[:1] + [not_speech], predictor, mean_row=True)
    assert [(r["segment"], r["model"]) for r in rows] == [(0, "tiny"), (0, "ensemble"), (1, None)]
    assert rows[0]["label"] == max(rows[0]["probabilities"], key=rows[0]["probabilities"].get)
    assert rows[2]["no_speech"] and "pitch holds still" in rows[2]["reason"] and rows[2]["label"] is None
    assert segment_table([not_speech])[0]["emotion"] is None


def test_cli_predict_segments_json(manifest, tiny, tmp_path, capsys):
    rng = np.random.default_rng(3)
    clips = _clips(manifest, "13", 2)
    y, truth = _recording(clips["path"].tolist(), [0.8, 1.5, 0.9], rng)
    long, silent = tmp_path / "long.wav", tmp_path / "silent.wav"
    sf.write(long, y, SR)
    sf.write(silent, np.zeros(2 * SR, dtype=np.float32), SR)
    save_trained(tiny, tmp_path / "models" / "tiny")
    assert main(["predict", "--segments", "--model", "tiny", "--models-dir", str(tmp_path / "models"), str(long),
                 str(silent), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    speech = [r for r in rows if r["file"] == str(long)]
    assert [r["segment"] for r in speech] == [0, 1]
    for r, (ts, te) in zip(speech, truth):
        assert r["model"] == "tiny" and r["label"] in EMOTIONS and set(r["probabilities"]) == set(EMOTIONS)
        assert abs(r["start"] - ts) <= TOLERANCE_S and abs(r["end"] - te) <= TOLERANCE_S
    (quiet,) = [r for r in rows if r["file"] == str(silent)]
    assert quiet["no_speech"] and quiet["label"] is None and "silent" in quiet["reason"]
    assert NO_SEGMENTS.startswith("No speech found") and DEFAULT_VAD.min_speech_s == 0.5


@pytest.mark.slow
def test_a_long_recording_without_speech_segments_gets_no_emotion(tmp_path):
    """A sung tone with vibrato moves its pitch like a voice and passes the speech check; the voice activity
    detector hears no speech in it, so a recording long enough for segments is 'no speech found'."""
    from ser_core.inference import analyse_audio
    from ser_core.speech import speech_check

    rng = np.random.default_rng(4)
    notes = []
    for _ in range(9):  # 9 notes of 0.8 s, 5.5 Hz vibrato of half a semitone, 10 harmonics
        n = int(0.8 * SR)
        f0 = 220 * 2 ** (rng.choice([0, 2, 4, 5, 7, 9]) / 12) * 2 ** (0.5 / 12 * np.sin(2 * np.pi * 5.5 *
                                                                                     np.arange(n) / SR))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        env = np.minimum(np.minimum(np.arange(n), n - np.arange(n)) / (0.05 * SR), 1)
        notes.append(env * sum(np.sin(k * phase) / k for k in range(1, 11)))
    y = (0.3 * np.concatenate(notes) / np.abs(np.concatenate(notes)).max()).astype(np.float32)
    assert speech_check(y, SR)[0] and speech_segments(y, SR) == []
    path = tmp_path / "vibrato.wav"
    sf.write(path, y, SR)
    assert analyse_audio(path, Predictor([]), segments_after_s=6.0) == {"is_speech": False, "reason": NO_SEGMENTS}
