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

from app_shared import PUBLIC_OPTIONS, WORD_JOINER, apply_public_options, plain, plain_data, public_text
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


HOSTILE_LABELS = {"05": "[click](http://evil.example/label)", "03": "**bold**", "04": "\u202egnp.exe", "02": "$x^2$",
                  "06": ":red[red]", "07": "<script>alert(1)</script>"}  # RAVDESS emotion codes -> labels as stored


def hostile_model(shared_ravdess: Path, folder: Path, store=None) -> Path:
    """An svm saved in ``folder`` (2 speaker-grouped folds, then all clips: a few seconds) on a CSV corpus of
    RAVDESS actors 01-02 whose calm, happy, sad, angry, fearful and disgust clips are labelled ``HOSTILE_LABELS``
    (none with a space or a capital: labels are stored lower case, spaces as underscores), its run recorded
    in ``store`` when given; returns ``folder``."""
    import csv

    from ser_core.corpora import load_corpus
    from ser_core.evaluation import RunConfig, cross_validate

    clips = [f for a in ("Actor_01", "Actor_02") for f in sorted((shared_ravdess / a).glob("*.flac"))
             if f.name.split("-")[2] in HOSTILE_LABELS]
    table = folder.parent / f"{folder.name}.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows([("path", "label", "speaker")] + [
            (str(f), HOSTILE_LABELS[f.name.split("-")[2]], f.parent.name) for f in clips])
    corpus = load_corpus(table)
    assert sorted(corpus.manifest["emotion"].unique()) == sorted(HOSTILE_LABELS.values())
    cross_validate(RunConfig(model="svm", folds=2), corpus, save_to=folder, n_jobs=2, store=store)
    return folder


def sure_copy(folder: Path) -> Path:
    """``folder``'s model saved beside it as ``<name>-sure`` without a "not sure" threshold: its top emotion is
    always one of its labels (the model itself is unsure of these clips)."""
    import shutil

    sure = shutil.copytree(folder, folder.with_name(folder.name + "-sure"))
    card = json.loads((sure / "card.json").read_text())
    card.update(name=sure.name, calibration=None)
    (sure / "card.json").write_text(json.dumps(card))
    return sure


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


HOSTILE = {  # what a label, name or CSV cell may hold -> what every widget must show (as_shown)
    "[click](http://evil.example)": "[click](http://evil.example)",
    "**bold** __b__ _i_ ~~s~~": "**bold** __b__ _i_ ~~s~~",
    ":red[x] :material/delete: :smile:": ":red[x] :material/delete: :smile:",
    "$x^2$ $$y$$": "$x^2$ $$y$$",
    "<script>alert(1)</script><img src=x onerror=alert(1)>": "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "\u202egnp.exe": "\\u202egnp.exe",  # drawn as "exe.png" if left in
    "a\u2066b\u2069 \u200ec\u200f \u061cd \u202ae\u202c": "a\\u2066b\\u2069 \\u200ec\\u200f \\u061cd \\u202ae\\u202c",
    "one\ntwo\r\nthree\tfour\u2028five": "one two  three four five",
    "nul\x00 esc\x1b[31m c1\x9b bell\x07 del\x7f": "nul\\x00 esc\\x1b[31m c1\\x9b bell\\x07 del\\x7f",
}
BIDI_AND_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@pytest.mark.parametrize("text", list(HOSTILE))
def test_plain_is_one_rule_for_markdown_and_text_widgets(text):
    """Markdown (messages, captions, metrics) and plain-text widgets (options, dataframe cells) show the same
    characters: the text as typed, with line breaks as spaces and invisible controls as visible escapes."""
    shown = plain(text)
    assert as_shown(shown) == HOSTILE[text] == plain(text, markdown=False)
    assert re.fullmatch(r"[A-Za-z0-9 \u2060]*", re.sub(r"&#\d+;", "", shown)), shown  # nothing markup starts from
    assert not BIDI_AND_CONTROLS.search(html.unescape(shown)) and not BIDI_AND_CONTROLS.search(plain(text, False))


def test_plain_data_makes_every_string_of_a_table_or_document_plain():
    import pandas as pd

    evil = "\u202egnp.exe"
    table = pd.DataFrame({"label": [evil, "angry"], f"by {evil}": ["a\nb", 3], "n": [1.5, 2.0]},
                         index=[evil, "x"])
    shown = plain_data(table)
    assert shown.to_dict(orient="list") == {"label": ["\\u202egnp.exe", "angry"], "by \\u202egnp.exe": ["a b", 3],
                                            "n": [1.5, 2.0]}
    assert list(shown.index) == ["\\u202egnp.exe", "x"] and table.loc[evil, "label"] == evil  # a copy
    assert plain_data({"path": [evil, 3, None], evil: {"k": "x\x00"}}) == {
        "path": ["\\u202egnp.exe", 3, None], "\\u202egnp.exe": {"k": "x\\x00"}}


@pytest.mark.slow
def test_demo_shows_a_models_hostile_labels_as_text(shared_ravdess, tmp_path, monkeypatch):
    """A model trained on hostile labels: its top emotion (st.metric, Markdown), the candidates under it, its
    probability bars and the model pickers show every label as typed, inert, controls visible (the browser test
    test_browser_public checks what Chromium draws)."""
    from ser_core.saved import user_models_dir

    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path / "no-shipped-models"))
    name = hostile_model(shared_ravdess, user_models_dir() / "svm-[x](http:evil.example)").name
    sure = sure_copy(user_models_dir() / name).name
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/demo.py").run()
    angry = REPO / "samples" / "ravdess" / "Actor_01" / "03-01-05-02-01-01-01.flac"
    at.file_uploader[0].set_value((angry.name, angry.read_bytes(), "audio/flac")).run()
    assert not at.exception, [e.value for e in at.exception]
    labels = {plain(label) for label in HOSTILE_LABELS.values()}
    metrics = [m for m in at.metric if m.label == "top emotion"]  # the ensemble's, then each model's
    assert len(metrics) == 3 and {m.value for m in metrics} <= labels | {"not sure"}
    assert metrics[2].value in labels  # the sure copy names one
    for text in [t for m in metrics for t in (m.value, m.proto.delta)]:  # delta: "87% confidence" or candidates
        assert re.fullmatch(r"[A-Za-z0-9 \u2060]*", re.sub(r"&#\d+;", "", text)), text
        assert not BIDI_AND_CONTROLS.search(html.unescape(text))
    bars = next(t["y"] for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t["type"] == "bar")
    assert sorted(as_shown(y) for y in bars) == sorted(HOSTILE_LABELS[c].replace("\u202e", "\\u202e")
                                                       for c in HOSTILE_LABELS)
    picker = next(m for m in at.multiselect if m.label == "Your models")  # options: text, never Markdown
    assert picker.value == [name, sure] and picker.format_func(name).startswith(f"{name} (CV UAR ")


def test_public_text_cuts_server_paths_to_their_last_part(monkeypatch):
    message = "The speaker-adaptive model in '/srv/models/adaptive_lda' lacks its training statistics."
    config = {"data_root": "/srv/corpora/ravdess", "params": {"weights": ["C:\\w\\vgg.h5", "imagenet"], "C": 1}}
    assert public_text(message) == message and public_text(config) == config  # not public: as they are
    monkeypatch.setenv("SER_PUBLIC", "1")
    assert public_text(message) == "The speaker-adaptive model in 'adaptive_lda' lacks its training statistics."
    assert public_text(config) == {"data_root": "ravdess", "params": {"weights": ["vgg.h5", "imagenet"], "C": 1}}


def test_public_options_are_set_once_for_the_server_process(monkeypatch):
    from streamlit import config

    before = {k: config.get_option(k) for k in PUBLIC_OPTIONS}
    assert not apply_public_options() and {k: config.get_option(k) for k in PUBLIC_OPTIONS} == before
    monkeypatch.setenv("SER_PUBLIC", "1")
    assert apply_public_options()  # the entry script reruns once
    assert {k: config.get_option(k) for k in PUBLIC_OPTIONS} == PUBLIC_OPTIONS == {
        "client.toolbarMode": "minimal", "client.disableDataExport": True, "client.showErrorDetails": "none"}
    assert not apply_public_options()  # and not again
