"""Data roots (ser_core.roots) and the corpus loaders under them: inside, outside, symbolic links that escape,
'..' in CSV entries, one message for missing and existing targets, no file content in errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_core.corpora import detect_corpus, load_corpus
from helpers import one_sentence
from ser_core.errors import CorpusError, OutsideRootsError, UserPathError
from ser_core.roots import (ALWAYS, NOT_UTF8_REASON, OUTSIDE_REASON, PATH_REFUSAL, configured_roots, outside_message,
                            printable, resolve_in_roots, user_path, weights_source)

RAVDESS_NAMES = ["03-01-05-01-01-01-{a}.wav", "03-01-04-01-01-01-{a}.wav"]  # angry, sad


def clip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(3200).astype(np.float32), 16000)
    return path


def actor(folder: Path, a: str) -> Path:
    for name in RAVDESS_NAMES:
        clip(folder / name.format(a=a))
    return folder


@pytest.fixture
def tree(tmp_path):
    """``root`` and ``other`` (both roots), ``outside`` (not a root) with a secret file and an actor each."""
    root, other, outside = tmp_path / "root", tmp_path / "other", tmp_path / "outside"
    actor(other / "Actor_02", "02")
    actor(outside / "Actor_03", "03")
    (outside / "secret.csv").write_text("alice,s3cr3t-token-12345\nbob,hunter2\n")
    root.mkdir()
    return root, other, outside, configured_roots(os.pathsep.join([str(root), str(other)]))


def message_without(exc, path) -> str:
    return str(exc).replace(str(path), "<path>")


def test_configured_roots_are_the_env_folders_then_data_and_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_DATA_ROOTS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "a" / ".")]))
    assert configured_roots() == ((tmp_path / "a").resolve(), *(p.resolve() for p in ALWAYS))
    monkeypatch.delenv("SER_DATA_ROOTS")
    assert configured_roots() == tuple(p.resolve() for p in ALWAYS)  # a laptop: data/ and samples/


def test_inside_is_resolved_outside_and_dotdot_are_refused(tree):
    root, other, outside, roots = tree
    assert resolve_in_roots(other / "Actor_02" / ".." / "Actor_02", roots) == (other / "Actor_02").resolve()
    for bad in (outside, root / ".." / "outside", "/", "/etc/passwd"):
        with pytest.raises(OutsideRootsError, match="not inside a data folder this server reads"):
            resolve_in_roots(bad, roots)
    assert resolve_in_roots(outside, None) == outside.resolve()  # the command line reads any path


def test_missing_and_existing_outside_targets_get_one_message(tree):
    root, other, outside, roots = tree
    messages = set()
    for target in (outside / "secret.csv", outside / "missing.csv", "/etc/passwd", "/nonexistent/x.csv"):
        with pytest.raises(OutsideRootsError) as exc:
            load_corpus(target, roots=roots)
        messages.add(message_without(exc.value, target))
        with pytest.raises(OutsideRootsError) as exc:
            detect_corpus(target, roots=roots)
        messages.add(message_without(exc.value, target))
    (root / "link.csv").symlink_to(outside / "secret.csv")  # a link inside a root to a file outside
    (root / "dangling.csv").symlink_to(outside / "gone.csv")
    for target in (root / "link.csv", root / "dangling.csv"):
        with pytest.raises(OutsideRootsError) as exc:
            load_corpus(target, roots=roots)
        messages.add(message_without(exc.value, target))
    assert len(messages) == 1, messages
    assert "s3cr3t" not in messages.pop()


def test_linked_actor_folders_inside_the_roots_are_read_outside_skipped(tree):
    root, other, outside, roots = tree
    corpus = root / "ravdess"
    actor(corpus / "Actor_01", "01")
    (corpus / "Actor_02").symlink_to(other / "Actor_02")  # inside another root: read
    (corpus / "Actor_03").symlink_to(outside / "Actor_03")  # outside: refused
    (corpus / "Actor_01" / "03-01-01-01-01-01-01.wav").symlink_to(
        clip(outside / "03-01-01-01-01-01-01.wav"))  # one linked file outside
    (corpus / "loop").symlink_to(corpus)  # a link back up the tree is read once
    c = load_corpus(corpus, roots=roots)
    assert sorted(c.manifest["speaker"].unique()) == ["01", "02"] and len(c.manifest) == 4
    skipped = dict(c.skipped)
    assert skipped[str(corpus / "Actor_03")] == OUTSIDE_REASON
    assert skipped[str(corpus / "Actor_01" / "03-01-01-01-01-01-01.wav")] == OUTSIDE_REASON
    assert str(corpus / "loop") in skipped
    assert not any(str(outside) in p for p in skipped)  # where a link points is never shown
    assert len(load_corpus(corpus).manifest) == 7  # the command line (no roots) reads every link


def test_csv_entries_outside_the_roots_are_skipped_alike(tree):
    root, other, outside, roots = tree
    good = clip(root / "clips" / "a.wav")
    clip(outside / "private.wav")
    table = root / "corpus.csv"
    entries = ["clips/a.wav", "../outside/private.wav", "../outside/missing.wav", "../../../../../../etc/shadow",
               str(outside / "secret.csv"), str(other / "Actor_02" / RAVDESS_NAMES[0].format(a="02")), "~root/x.wav",
               "~nosuchuser/x.wav", "~/x.wav"]
    table.write_text("path,label,speaker\n" + "".join(f"{e},angry,s{i}\n" for i, e in enumerate(entries)))
    c = load_corpus(table, roots=roots)
    assert sorted(c.manifest["path"]) == sorted([str(good), str(other / "Actor_02" / RAVDESS_NAMES[0].format(a="02"))])
    reasons = dict(c.skipped)
    assert len(reasons) == 7 and set(reasons.values()) == {OUTSIDE_REASON}  # the same for missing ones, and for
    assert {"../outside/private.wav", "~root/x.wav", "~nosuchuser/x.wav", "~/x.wav"} <= set(reasons)  # users that
    assert not any(str(Path.home()) in p for p in reasons)  # exist or not: as written, never expanded or resolved
    c_any = load_corpus(table)  # the command line: existing entries anywhere are read
    assert str((outside / "private.wav").resolve()) in set(c_any.manifest["path"])


@pytest.mark.parametrize("content", [
    "alice,s3cr3t-token-12345\nbob,hunter2\n",  # no path/label header: the first line is a secret
    "path,label\n\"s3cr3t-token-12345,unclosed\nx,y,z,w\n",  # a parser error
    b"\xff\xfes3cr3t-token-12345\x00\x01",  # not text
])
def test_csv_errors_never_quote_the_file(tree, content):
    root, _, _, roots = tree
    bad = root / "bad.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CorpusError) as exc:
        load_corpus(bad, roots=roots)
    text = str(exc.value)
    assert "s3cr3t" not in text and "alice" not in text and "hunter2" not in text
    assert text.count(". ") == 0 and "path,label" in text  # one sentence that says what to write


def test_weights_names_download_or_a_local_path_inside_the_roots(tree):
    root, other, outside, roots = tree
    (root / "w2v2").mkdir()
    assert weights_source("imagenet", roots) == "imagenet"
    assert weights_source("facebook/wav2vec2-base", roots) == "facebook/wav2vec2-base"
    assert weights_source(str(root / "w2v2"), roots) == str((root / "w2v2").resolve())
    for bad in (str(outside), "/etc/passwd", "../../etc", "~/.ssh/id_rsa", "ser_core/models", "a/../../b"):
        with pytest.raises(OutsideRootsError) as exc:
            weights_source(bad, roots)
        assert f"'{bad}'" in str(exc.value)


NAMES_NO_FILE = ["a\x00b", "clips/\x00.wav", "tab\there", "x" * 256, "/srv/" + "y" * 300 + "/z", "a/" * 2100,
                 "\ud800.wav"]  # NUL, controls, a name over 255 bytes, a path over 4096, a lone surrogate


@pytest.mark.parametrize("value", NAMES_NO_FILE)
def test_a_path_that_can_name_no_file_is_refused_in_one_sentence_everywhere(value, tree):
    root, other, outside, roots = tree
    for call in (lambda: user_path(value), lambda: resolve_in_roots(value, roots),
                 lambda: resolve_in_roots(value, None), lambda: load_corpus(value, roots=roots),
                 lambda: load_corpus(value), lambda: weights_source(value, roots), lambda: weights_source(value, None)):
        with pytest.raises(UserPathError) as e:
            call()
        assert str(e.value) == PATH_REFUSAL
    one_sentence(PATH_REFUSAL)


def test_tilde_users_that_exist_or_not_are_refused_alike_and_never_expanded_in_the_message(tree):
    root, other, outside, roots = tree
    said = {}
    for value in ("~nosuchuser/x", "~root/x", "~", "~/corpora"):
        with pytest.raises(OutsideRootsError) as e:
            resolve_in_roots(value, roots)
        said[value] = str(e.value)
        assert said[value] == outside_message(value, roots)  # quoted as typed, not as /root/x
        with pytest.raises(OutsideRootsError):
            weights_source(value, roots)
    assert len({m.replace(v, "<path>") for v, m in said.items()}) == 1
    assert user_path("~/x") == Path.home() / "x" and user_path("x", base=root) == root / "x"
    with pytest.raises(UserPathError, match="~user only for a user of this machine"):  # the command line may say so
        user_path("~nosuchuser/x")
    with pytest.raises(UserPathError):
        load_corpus("~nosuchuser/x")


def test_files_whose_names_are_not_utf8_are_listed_as_skipped_never_read(tree):
    root, other, outside, roots = tree
    folder = actor(root / "Actor_04", "04")
    odd = os.fsdecode(bytes(folder) + b"/03-01-05-01-02-01-04-caf\xe9.wav")  # a Latin-1 name
    os.rename(clip(folder / "odd.wav"), odd)
    for c in (load_corpus(root, roots=roots), load_corpus(root)):
        assert len(c.manifest) == 2 and all(p.encode("utf-8") for p in c.manifest["path"])
        assert dict(c.skipped) == {printable(odd): NOT_UTF8_REASON}
        assert printable(odd).endswith("caf\\xe9.wav") and printable(odd).encode("utf-8")
