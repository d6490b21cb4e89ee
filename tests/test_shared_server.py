"""The app on a shared server (AppTest): data outside the roots refused from the URL, the sidebar and the Train
page's weights field; public mode keeps only Demo and Leaderboard; a corpus's Markdown/HTML shown as text."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from app_shared import WORD_JOINER, plain
from ser_core.roots import PATH_REFUSAL, configured_roots, outside_message

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "streamlit_app.py")
EVIL_PATH = "/x/[Session expired - log in again](https://evil.example/login) ![p](https://evil.example/pixel.png)"
EVIL_LABEL = "[x](http://evil.example/label)"
EVIL_SPEAKER = "<a href=http://evil.example/s>spk10</a>"
PIXEL_LABEL = "![p](http://evil.example/pixel.png)"


def markup_corpus(folder: Path) -> Path:
    """A CSV corpus of 7 short clips whose labels and speaker names hold Markdown and HTML: 4 angry, 2
    ``PIXEL_LABEL`` and 1 ``EVIL_LABEL`` (so the imbalance note names it); returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("angry", "spk2")] * 4 + [(PIXEL_LABEL, "spk3")] * 2 + [(EVIL_LABEL, EVIL_SPEAKER)]
    lines = ["path,label,speaker"]
    for i, (label, speaker) in enumerate(rows):
        sf.write(folder / f"c{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(8000).astype(np.float32),
                 16000)
        lines.append(f'c{i}.wav,"{label}","{speaker}"')
    (folder / "corpus.csv").write_text("\n".join(lines) + "\n")
    return folder / "corpus.csv"


def as_shown(text: str) -> str:
    """What a browser shows of Markdown or a Plotly label that went through plain()."""
    return html.unescape(text).replace(WORD_JOINER, "")


def explore(**query) -> AppTest:
    """A new session opened on ``/?query`` that then goes to Explore."""
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_url_paths_outside_the_roots_get_one_sentence_whether_or_not_they_exist(tmp_path):
    roots = configured_roots()
    escape = str(tmp_path / "/".join([".."] * 12) / "etc")  # starts inside a root, '..' climbs out
    shown = {}
    for path in ("/etc", "/nonexistent-folder/x", escape, EVIL_PATH):
        at = explore(data="folder", path=path)
        assert not at.metric  # nothing of the corpus is read
        (error,) = at.error
        assert as_shown(error.value) == outside_message(Path(path), roots)
        shown[path] = as_shown(error.value).replace(str(Path(path)), "<path>")
    assert len(set(shown.values())) == 1
    evil = at.error[0].value  # the last one: Markdown link and image syntax arrive escaped
    assert "](" not in evil and "![" not in evil and "https:" not in evil


@pytest.mark.slow
def test_a_corpus_inside_the_roots_shows_its_markup_as_text(tmp_path):
    at = explore(data="folder", path=str(markup_corpus(tmp_path / "markup")))
    assert {m.label: m.value for m in at.metric}["Clips"] == "7"
    note = at.warning[0].value
    assert f"'{EVIL_LABEL}' only 1" in as_shown(note) and "[" not in note and "](" not in note
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in at.get("plotly_chart")}
    speakers = [x for t in charts["Clips per speaker"]["data"] for x in t["x"]]
    assert as_shown(" ".join(speakers)).count(EVIL_SPEAKER) == 1 and "<" not in " ".join(speakers)
    emotions = [x for t in charts["Clips per emotion"]["data"] for x in t["x"]]
    assert sorted(as_shown(e) for e in emotions) == sorted(["angry", EVIL_LABEL, PIXEL_LABEL])
    assert not any("<" in str(t.get("hovertemplate", "")).replace("<br>", "").replace("<extra></extra>", "")
                   for c in charts.values() for t in c["data"])  # px writes group values into its tooltips


@pytest.mark.slow
def test_public_mode_offers_only_demo_and_leaderboard(monkeypatch, tmp_path):
    monkeypatch.setenv("SER_PUBLIC", "1")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["data"], at.query_params["path"] = "folder", "/etc"
    at.run()
    assert not at.exception
    assert not at.sidebar.radio and not at.sidebar.text_input and not at.sidebar.button  # no data source at all
    home = at.markdown[0].value
    assert "**Demo**" in home and "**Leaderboard**" in home and "Explore" not in home and "Train" not in home
    for hidden in ("app_pages/explore.py", "app_pages/train.py"):
        with pytest.raises(ValueError, match="Known pages"):
            at.switch_page(hidden)
    at.switch_page("app_pages/leaderboard.py").run()
    assert not at.exception and at.title[0].value == "Leaderboard"
    monkeypatch.delenv("SER_PUBLIC")  # the same server without the flag: every page and the data source
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.sidebar.radio
    at.switch_page("app_pages/train.py")  # registered again: no ValueError


@pytest.mark.slow
@pytest.mark.parametrize("script", ["explore.py", "train.py"])
def test_public_mode_stops_a_deep_linked_page(monkeypatch, script):
    """The page script run by itself (without the entry script, which answers a deep link with the same sentence:
    see test_browser_shared_server) stops before it reads anything."""
    monkeypatch.setenv("SER_PUBLIC", "1")
    at = AppTest.from_file(str(REPO / "app_pages" / script), default_timeout=60).run()
    assert not at.exception and not at.title and not at.metric and not at.button
    assert at.error[0].value == "This page is not available on this public demo; use the Demo and Leaderboard pages."


@pytest.mark.slow
def test_train_refuses_a_weights_path_outside_the_roots(tmp_path, monkeypatch):
    for k in ("JOBS", "MODELS"):
        monkeypatch.setenv(f"SER_{k}_DIR", str(tmp_path / k.lower()))
    (tmp_path / "weights.h5").write_bytes(b"")
    at = AppTest.from_file(APP, default_timeout=60)  # the bundled samples: data a run can train on
    at.session_state["train_models"] = ["vgg16_transfer"]
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and not at.error and not at.button(key="train_run").disabled  # "imagenet": a download
    for bad in ("/etc/passwd", "../../../../etc/passwd", "/nonexistent/w.h5"):
        at.text_input(key="hp_vgg16_transfer_weights").set_value(bad).run()
        assert as_shown(at.error[0].value) == outside_message(bad, configured_roots())
        assert at.button(key="train_run").disabled
    for bad, said in (("~nosuchuser/w.h5", outside_message("~nosuchuser/w.h5", configured_roots())),
                      ("~root/w.h5", outside_message("~root/w.h5", configured_roots())),  # not /root/w.h5
                      ("w\x00.h5", PATH_REFUSAL), ("w" * 300, PATH_REFUSAL)):
        at.text_input(key="hp_vgg16_transfer_weights").set_value(bad).run()
        assert not at.exception and as_shown(at.error[0].value) == said and at.button(key="train_run").disabled
    at.text_input(key="hp_vgg16_transfer_weights").set_value(str(tmp_path / "weights.h5")).run()
    assert not at.error and not at.button(key="train_run").disabled


@pytest.mark.slow
def test_url_paths_that_name_no_file_get_one_sentence_that_reveals_nothing(tmp_path):
    """``~user`` of a user that exists or not, a NUL (``%00`` in the URL) and a 300-character name: one sentence,
    never a traceback, never the expanded home folder (which would tell which users exist)."""
    roots, said = configured_roots(), {}
    for path in ("~nosuchuser/x", "~root/x", "~", "a\x00b", "x" * 300, "/srv/" + "y" * 300 + "/z"):
        at = explore(data="folder", path=path)
        assert not at.metric
        (error,) = at.error
        said[path] = as_shown(error.value)
        assert str(Path.home()) not in said[path] and "Traceback" not in said[path]
    assert said["~nosuchuser/x"] == outside_message("~nosuchuser/x", roots)  # as for a user who exists:
    assert said["~root/x"] == outside_message("~root/x", roots)
    assert said["a\x00b"] == said["x" * 300] == said["/srv/" + "y" * 300 + "/z"] == PATH_REFUSAL


def test_plain_shows_user_text_literally_and_inert():
    evil = ("/x/[Session expired](https://evil.example) ![p](https://evil.example/pixel.png) "
            "<a href=http://evil.example>spk10</a> **b** _i_ `c` $x$ :red[r] www.evil.example a@evil.example\n# h")
    shown = plain(evil)
    assert as_shown(shown) == evil.replace("\n", " ")  # what the page shows
    bare = re.sub(r"&#\d+;", "", shown)  # besides the references: letters, digits, spaces, word joiners
    assert re.fullmatch(r"[A-Za-z0-9 \u2060]*", bare), bare  # nothing Markdown or HTML can start from
    for autolink in ("https://evil", "www.evil", "a@evil", "x@evil"):  # GFM links these after decoding
        assert autolink not in html.unescape(shown)
