"""The Demo on a long recording with pauses: its speech segments over the waveform, their CSV (not on a public
server), and the explanation panel for a chosen model and segment (AppTest, two quick models)."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.audio import load_audio, trim_silence
from ser_core.speech import TRIM_DB
from test_app_pages import SAMPLES, figure, models_dir, no_exception, page, wav_bytes  # noqa: F401  (fixture)

SR = 16000
CLIPS = [SAMPLES / "Actor_01" / f"03-01-0{e}-02-01-01-01.flac" for e in (5, 4, 3)]  # angry, sad, happy


def _recording():
    """Three clips with pauses of 1.5-2.5 s between them: (wav bytes, [(start_s, end_s)] of their speech)."""
    rng, parts, truth, t = np.random.default_rng(0), [], [], 0
    for path, pause in zip(CLIPS, (1.5, 2.5, 2.0)):
        clip = load_audio(path, trim=False, normalize=None)
        gap = np.zeros(int(pause * SR), dtype=np.float32)
        _, (s, e) = trim_silence(clip, top_db=TRIM_DB)
        truth.append(((t + len(gap) + s) / SR, (t + len(gap) + e) / SR))
        parts += [gap, clip]
        t += len(gap) + len(clip)
    y = np.concatenate(parts + [np.zeros(SR, dtype=np.float32)])
    return wav_bytes(y + rng.normal(0, 1e-4, len(y)).astype(np.float32)), truth


@pytest.mark.slow  # two Streamlit runs with models, and an explanation
def test_demo_shows_segments_csv_and_an_explanation(models_dir, monkeypatch):
    monkeypatch.setenv("SER_MODELS_DIR", str(models_dir))
    at = page("app_pages/demo.py")
    data, truth = _recording()
    at.file_uploader[0].set_value(("memo.wav", data, "audio/wav")).run()
    no_exception(at)
    table = at.dataframe[0].value
    assert len(table) == 3
    for (_, row), (ts, te) in zip(table.iterrows(), truth):
        assert abs(row["start"] - ts) <= 0.3 and abs(row["end"] - te) <= 0.3
        assert row["emotion"] in {"angry", "sad", "happy", "calm", "neutral", "fearful", "disgust", "surprised"}
    chart = next(figure(c) for c in at.get("plotly_chart") if "segments" in c.proto.id)
    shapes = np.array([(s["x0"], s["x1"]) for s in chart["layout"]["shapes"]])
    assert np.allclose(shapes, table[["start", "end"]].to_numpy(), atol=0.01)  # the pauses left blank
    assert [b.proto.label for b in at.get("download_button")] == ["Download the segments (CSV)"]

    at.selectbox(key="explain_model").set_value("svm")
    at.selectbox(key="explain_part").set_value(2).run()  # the second segment
    at.button(key="explain_go").click().run()
    no_exception(at)
    said = [m.value for m in at.markdown if m.value.split(" ")[0] in table["emotion"].tolist() + ["not"]]
    assert said, [m.value for m in at.markdown]
    assert any("Compared with" in c.value for c in at.caption)
    bars = next(c for c in at.get("plotly_chart") if "explain_features" in c.proto.id)
    assert figure(bars)["data"][0]["x"][0] > 0  # the top feature pushed toward the answer


@pytest.mark.slow
def test_no_csv_download_on_a_public_server(models_dir, monkeypatch):
    monkeypatch.setenv("SER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("SER_PUBLIC", "1")
    at = page("app_pages/demo.py")
    at.file_uploader[0].set_value(("memo.wav", _recording()[0], "audio/wav")).run()
    no_exception(at)
    assert len(at.dataframe[0].value) == 3 and not at.get("download_button")
