"""Corpus adapters on tiny generated corpora with the official names, and RAVDESS on the shared folder."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_core.corpora import (EMOTIONS, MANIFEST_COLUMNS, audio_duration, corpus_info, detect_corpus,
                              list_corpora, load_corpus, normalize_label)
from ser_core.errors import ConfigError, CorpusError


def clip(path: Path, seconds: float = 0.3, sr: int = 16000) -> Path:
    """Write a short noisy sine (mono) in the format of the file extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, y.astype(np.float32), sr)
    return path


def make(root: Path, names: list[str], **kw) -> Path:
    for n in names:
        clip(root / n, **kw)
    return root


def row(corpus, name: str):
    m = corpus.manifest
    hits = m[m.path.str.endswith(name)]
    assert len(hits) == 1, name
    return hits.iloc[0]


# -- RAVDESS ---------------------------------------------------------------------------------------------------
def test_shared_ravdess_manifest(shared_ravdess):
    t0 = time.perf_counter()
    corpus = load_corpus(shared_ravdess)
    elapsed = time.perf_counter() - t0
    m = corpus.manifest
    assert corpus.name == "ravdess" and detect_corpus(shared_ravdess) == "ravdess"
    assert list(m.columns[:len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert len(m) == 960 and m.speaker.nunique() == 16 and corpus.skipped == []
    counts = m.emotion.value_counts()
    assert counts["neutral"] == 64 and all(counts[e] == 128 for e in EMOTIONS[1:])
    assert m.groupby("gender").speaker.nunique().to_dict() == {"female": 8, "male": 8}
    assert 57 * 60 < m.duration_s.sum() < 61 * 60
    assert m.path.is_monotonic_increasing and all(Path(p).is_absolute() for p in m.path)
    assert set(m.vocal_channel) == {"speech"} and set(m.intensity) == {"normal", "strong"}
    assert (m[m.emotion == "neutral"].intensity == "normal").all()
    r = row(corpus, "Actor_02/03-01-05-02-02-01-02.flac")
    assert (r.speaker, r.gender, r.emotion, r.intensity, r.statement) == (
        "02", "female", "angry", "strong", "Dogs are sitting by the door")
    assert elapsed < 2.0, f"listing 960 clips took {elapsed:.2f} s"
    info = corpus_info(corpus)
    assert info["clips"] == 960 and info["speakers"] == 16 and list(info["emotions"]) == list(EMOTIONS)
    assert info["genders"] == {"male": 480, "female": 480} and info["skipped_count"] == 0
    json.dumps(info)


def test_ravdess_original_layout_speech_song_video_and_skips(tmp_path):
    root = tmp_path / "ravdess"
    speech = root / "Audio_Speech_Actors_01-24"
    make(speech, ["Actor_01/03-01-05-02-01-01-01.wav", "Actor_01/03-01-01-01-02-02-01.wav",
                  "Actor_24/03-01-08-01-01-01-24.wav"], sr=48000)
    clip(root / "Audio_Song_Actors_01-24/Actor_02/03-02-03-02-02-01-02.wav", sr=48000)
    clip(speech / "Actor_01/03-01-05-02-01-01-01.flac")  # the same clip again as FLAC: a duplicate
    (speech / "Actor_01/01-01-05-02-01-01-01.mp4").write_bytes(b"\0" * 64)  # full audio-video
    (speech / "Actor_01/02-01-05-02-01-01-01.mp4").write_bytes(b"\0" * 64)  # video-only
    (speech / "Actor_01/notes.wav").write_bytes(b"RIFF")  # a name outside the convention
    (speech / "Actor_24/03-01-02-01-01-01-24.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")  # corrupt header
    (root / "README.txt").write_text("not audio")
    (root / "__MACOSX/Actor_01").mkdir(parents=True)
    (root / "__MACOSX/Actor_01/._03-01-05-02-01-01-01.wav").write_bytes(b"mac")
    (speech / "Actor_01/.hidden.wav").write_bytes(b"x")

    corpus = load_corpus(root)
    m = corpus.manifest
    assert corpus.name == "ravdess" and len(m) == 4
    r = row(corpus, "Actor_01/03-01-05-02-01-01-01.wav")  # WAV preferred over the FLAC copy
    assert (r.emotion, r.intensity, r.gender, r.speaker, r.vocal_channel) == ("angry", "strong", "male", "01",
                                                                              "speech")
    assert r.duration_s == pytest.approx(0.3, abs=1e-3)
    assert row(corpus, "03-02-03-02-02-01-02.wav").vocal_channel == "song"
    assert row(corpus, "03-01-08-01-01-01-24.wav")[["emotion", "gender"]].tolist() == ["surprised", "female"]
    reasons = {Path(p).name: why for p, why in corpus.skipped}
    assert set(reasons) == {"03-01-05-02-01-01-01.flac", "01-01-05-02-01-01-01.mp4", "02-01-05-02-01-01-01.mp4",
                            "notes.wav", "03-01-02-01-01-01-24.wav"}
    assert "duplicate" in reasons["03-01-05-02-01-01-01.flac"]
    assert "video" in reasons["01-01-05-02-01-01-01.mp4"] and "video" in reasons["02-01-05-02-01-01-01.mp4"]
    assert "convention" in reasons["notes.wav"] and "unreadable" in reasons["03-01-02-01-01-01-24.wav"]
    info = corpus_info(corpus)
    assert info["skipped_count"] == 5 and {"path", "reason"} == set(info["skipped"][0])
    assert info["duration_s"] == pytest.approx(1.2, abs=0.05)


# -- other corpora -----------------------------------------------------------------------------------------------
def test_tess(tmp_path):
    root = make(tmp_path / "TESS", ["OAF_angry/OAF_back_angry.wav", "YAF_pleasant_surprised/YAF_bean_ps.wav",
                                    "OAF_Fear/OAF_dog_fear.wav", "YAF_neutral/YAF_youth_neutral.wav"])
    corpus = load_corpus(root)
    m = corpus.manifest
    assert corpus.name == "tess" and len(m) == 4 and set(m.gender) == {"female"}
    assert sorted(m.speaker.unique()) == ["OAF", "YAF"]
    assert row(corpus, "YAF_bean_ps.wav")[["emotion", "statement"]].tolist() == ["surprised", "bean"]
    assert row(corpus, "OAF_dog_fear.wav").emotion == "fearful"


def test_crema_d_with_and_without_demographics(tmp_path):
    root = make(tmp_path / "CREMA-D", ["AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1002_IEO_HAP_HI.wav",
                                       "AudioWAV/1091_TIE_SAD_LO.wav"])
    clip(root / "AudioMP3/1001_DFA_ANG_XX.flac")  # the same clip in a second format
    corpus = load_corpus(root)
    assert corpus.name == "crema_d" and len(corpus.manifest) == 3 and set(corpus.manifest.gender) == {"unknown"}
    assert [Path(p).name for p, _ in corpus.skipped] == ["1001_DFA_ANG_XX.flac"]
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n")
    corpus = load_corpus(root, "crema-d")
    r = row(corpus, "1001_DFA_ANG_XX.wav")
    assert (r.speaker, r.gender, r.emotion, r.intensity, r.statement) == (
        "1001", "male", "angry", "unknown", "Don't forget a jacket")
    assert row(corpus, "1002_IEO_HAP_HI.wav")[["gender", "intensity"]].tolist() == ["female", "high"]
    assert row(corpus, "1091_TIE_SAD_LO.wav")[["gender", "emotion", "intensity"]].tolist() == [
        "unknown", "sad", "low"]


def test_savee_flat_and_nested(tmp_path):
    root = make(tmp_path / "SAVEE", ["ALL/DC_a01.wav", "ALL/JK_sa02.wav", "ALL/KL_su03.wav",
                                     "AudioData/JE/n01.wav", "AudioData/DC/h05.wav"])
    corpus = load_corpus(root)
    m = corpus.manifest
    assert corpus.name == "savee" and len(m) == 5 and set(m.gender) == {"male"}
    assert sorted(m.speaker.unique()) == ["DC", "JE", "JK", "KL"]
    assert dict(zip(m.path.map(lambda p: Path(p).name), m.emotion)) == {
        "DC_a01.wav": "angry", "JK_sa02.wav": "sad", "KL_su03.wav": "surprised", "n01.wav": "neutral",
        "h05.wav": "happy"}


def test_emodb_and_info_order(tmp_path):
    root = make(tmp_path / "emodb", ["wav/03a01Fa.wav", "wav/16b10Lb.wav", "wav/12a02Wc.wav", "wav/15a05Td.wav"])
    corpus = load_corpus(root)
    assert corpus.name == "emodb"
    r = row(corpus, "03a01Fa.wav")
    assert (r.speaker, r.gender, r.emotion, r.statement) == ("03", "male", "happy", "a01")
    assert row(corpus, "16b10Lb.wav")[["gender", "emotion"]].tolist() == ["female", "boredom"]
    info = corpus_info(corpus)
    assert list(info["emotions"]) == ["happy", "sad", "angry", "boredom"]  # taxonomy order, extras after
    assert info["genders"] == {"male": 2, "female": 2} and corpus.has_speakers


def test_custom_folder(tmp_path):
    root = make(tmp_path / "mine", ["anger/a.wav", "Happiness/b.flac", "Excited/c.ogg", "loose.wav"])
    assert detect_corpus(root) == "folder"
    corpus = load_corpus(root)
    assert sorted(corpus.manifest.emotion) == ["angry", "excited", "happy"]
    assert set(corpus.manifest.speaker) == {"unknown"} and not corpus.has_speakers
    assert [(Path(p).name, "label folder" in why) for p, why in corpus.skipped] == [("loose.wav", True)]


def test_csv_adapter(tmp_path):
    clip(tmp_path / "clips/a.wav"), clip(tmp_path / "clips/b.wav"), clip(tmp_path / "elsewhere/c.wav")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,speaker,gender\nclips/a.wav,Anger,s1,M\nclips/b.wav,joy,s2,female\n"
                        f"{tmp_path / 'elsewhere/c.wav'},neutral,s1,\nclips/missing.wav,sad,s3,f\n")
    assert detect_corpus(csv_path) == "csv"
    corpus = load_corpus(csv_path)
    m = corpus.manifest
    assert corpus.name == "csv" and len(m) == 3 and corpus.has_speakers
    assert row(corpus, "clips/a.wav")[["emotion", "speaker", "gender"]].tolist() == ["angry", "s1", "male"]
    assert row(corpus, "clips/b.wav")[["emotion", "gender"]].tolist() == ["happy", "female"]
    assert row(corpus, "c.wav").gender == "unknown"
    assert [(Path(p).name, why) for p, why in corpus.skipped] == [("missing.wav", "file not found")]
    (tmp_path / "bad.csv").write_text("file,emotion\na.wav,sad\n")
    with pytest.raises(CorpusError, match="path and label"):
        load_corpus(tmp_path / "bad.csv")


# -- errors, durations, helpers ----------------------------------------------------------------------------------
def test_nothing_matches_and_bad_arguments(tmp_path):
    root = make(tmp_path / "junk", ["recording1.wav", "recording2.wav"])
    (root / "README.txt").write_text("hello")
    with pytest.raises(CorpusError) as err:
        load_corpus(root)
    msg = str(err.value)
    assert "No supported corpus" in msg and "RAVDESS" in msg and "EmoDB" in msg and "CSV" in msg
    with pytest.raises(CorpusError, match="is a file"):
        load_corpus(root / "recording1.wav")
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(ConfigError, match="Did you mean tess"):
        load_corpus(root, "tes")
    with pytest.raises(CorpusError, match="No usable clips"):  # the names are not EmoDB names
        load_corpus(root, "emodb")
    assert "ravdess" in list_corpora() and "csv" in list_corpora()


def test_durations_of_compressed_and_empty_files(tmp_path):
    import av

    path = tmp_path / "x.m4a"
    with av.open(str(path), "w") as out:  # 0.5 s of AAC: libsndfile cannot read it, PyAV can
        stream = out.add_stream("aac", rate=16000, layout="mono")
        samples = (0.3 * np.sin(np.arange(8000) / 10)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert audio_duration(path) == pytest.approx(0.5, abs=0.15)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="no samples"):
        audio_duration(tmp_path / "empty.wav")


def test_normalize_label():
    assert [normalize_label(x) for x in ["Anger", "HAPPINESS", "pleasant surprise", "Fear", "Excited"]] == [
        "angry", "happy", "surprised", "fearful", "excited"]


def test_a_corpus_of_linked_actor_folders_is_read(shared_ravdess, tmp_path):
    """The issue's case: every Actor_XX of the folder is a symbolic link (to the shared RAVDESS)."""
    from ser_core.roots import OUTSIDE_REASON

    corpus = tmp_path / "linked"
    corpus.mkdir()
    for a in ("01", "02"):
        (corpus / f"Actor_{a}").symlink_to(shared_ravdess / f"Actor_{a}", target_is_directory=True)
    assert detect_corpus(corpus) == "ravdess"
    for roots in (None, (tmp_path, shared_ravdess)):  # the command line, and a server that may read both
        c = load_corpus(corpus, roots=roots)
        assert (c.name, len(c.manifest), sorted(c.manifest["speaker"].unique())) == ("ravdess", 120, ["01", "02"])
        assert all(p.startswith(str(corpus / "Actor_0")) for p in c.manifest["path"]) and not c.skipped
    with pytest.raises(CorpusError, match=f"0 audio files, 2 more {OUTSIDE_REASON}"):
        load_corpus(corpus, roots=(tmp_path,))  # a server that may not read where they point


def test_links_that_loop_or_climb_out_of_the_corpus_are_not_followed(tmp_path):
    import signal

    corpus, beside = tmp_path / "corpus", tmp_path / "beside"
    make(corpus / "Actor_01", ["03-01-05-01-01-01-01.wav", "03-01-04-01-01-01-01.wav"])
    make(beside / "Actor_02", ["03-01-05-01-01-01-02.wav", "03-01-04-01-01-01-02.wav"])
    make(beside / "Actor_09", ["03-01-05-01-01-01-09.wav"])
    links = {corpus / "Actor_02": beside / "Actor_02",  # a linked actor: read
             corpus / "Actor_01" / "self": corpus / "Actor_01",  # loops of every kind: read once, then skipped
             corpus / "Actor_01" / "up": corpus, beside / "Actor_02" / "back": corpus,
             corpus / "Actor_01" / "parent": tmp_path, corpus / "Actor_01" / "root": Path("/")}  # out of it
    for link, target in links.items():
        link.symlink_to(target, target_is_directory=True)
    def too_long(signum, frame):
        raise TimeoutError("the walk of the corpus folder did not end")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(30)  # a walk that loops (or reads the whole disk) fails here instead of hanging the suite
    try:
        c = load_corpus(corpus)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sorted(c.manifest["speaker"]) == ["01", "01", "02", "02"]  # never Actor_09, which lies beside
    assert dict(c.skipped) == {
        str(corpus / "Actor_01" / "self"): "a link to a folder that is already read",
        str(corpus / "Actor_01" / "up"): "a link to a folder that is already read",
        str(corpus / "Actor_02" / "back"): "a link to a folder that is already read",
        str(corpus / "Actor_01" / "parent"): "a link to a folder that holds the corpus",
        str(corpus / "Actor_01" / "root"): "a link to a folder that holds the corpus"}
