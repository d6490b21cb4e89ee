"""Saving a model: written beside the target, swapped in whole under the models folder's lock; readers never
see half a model or a temporary folder; a failed or killed save leaves the previous model intact."""
from __future__ import annotations

import multiprocessing as mp
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ser_core import saved
from ser_core.models import create_model
from ser_core.saved import LOCK_NAME, list_trained, load_trained, models_lock, read_card, save_trained


def _fitted(label: str):
    """A tiny fitted model whose only class is ``label`` (tells one save from another)."""
    X = np.random.default_rng(0).normal(size=(6, 32)).astype(np.float32)
    return create_model("majority").fit(X, np.array([label] * 6))


def _leftovers(root):
    return sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME and saved.is_temporary(p.name))


def test_save_replaces_the_previous_model_and_leaves_no_temporary_folder(tmp_path):
    root = tmp_path / "models"
    first = save_trained(_fitted("angry"), root / "m", card={"cv": {"run_id": 1}})
    assert first == root / "m" and first.is_absolute()
    seen = []
    second = save_trained(_fitted("sad"), root / "m", card={"cv": {"run_id": 2}},
                          on_saved=lambda folder, previous: seen.append((folder, previous["cv"]["run_id"])))
    assert second == first and seen == [(first, 1)]  # told which model it replaced
    (tmp_path / "plain").mkdir()
    assert first.stat().st_mode == (tmp_path / "plain").stat().st_mode  # readable by whoever may read a folder
    model, card = load_trained("m", root)
    assert list(model.classes_) == ["sad"] and card["cv"]["run_id"] == 2
    assert _leftovers(root) == [] and [c["name"] for c in list_trained(root)] == ["m"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_save_that_fails_midway_keeps_the_previous_model(tmp_path, monkeypatch, exchange):
    if not exchange:  # a kernel or file system without RENAME_EXCHANGE
        monkeypatch.setattr(saved, "_exchange", lambda a, b: False)
    root = tmp_path / "models"
    save_trained(_fitted("angry"), root / "m", card={"cv": {"run_id": 1}})
    broken = _fitted("sad")

    def save_half(directory):  # the weights are written, then the disk fills up
        (directory / "model.json").write_text("{")
        raise OSError(28, "No space left on device")

    broken.save = save_half
    with pytest.raises(OSError, match="No space"):
        save_trained(broken, root / "m", card={"cv": {"run_id": 2}})
    model, card = load_trained("m", root)
    assert list(model.classes_) == ["angry"] and card["cv"]["run_id"] == 1
    assert _leftovers(root) == []
    save_trained(_fitted("happy"), root / "m")  # and the next save works on either path
    assert list(load_trained("m", root)[0].classes_) == ["happy"] and _leftovers(root) == []


def test_leftovers_of_a_killed_save_are_ignored_then_removed(tmp_path):
    root = tmp_path / "models"
    save_trained(_fitted("angry"), root / "m")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host = socket.gethostname()
        killed = root / f".m.tmp-{host}-{dead.pid}-abc123"  # a save killed after writing model.json
        running = root / f".m.tmp-{host}-{live.pid}-def456"  # a save still in progress in another process
        other_host = root / f".m.tmp-elsewhere-{dead.pid}-ghi789"  # a process of another machine
        legacy = root / "m.tmp-save"  # the fixed name of earlier versions
        for d in (killed, running, other_host, legacy):
            d.mkdir()
            (d / "model.json").write_text("{")
        assert [c["name"] for c in list_trained(root)] == ["m"]  # readers skip them all
        save_trained(_fitted("sad"), root / "m")
        assert not killed.exists() and running.exists() and other_host.exists()
    finally:
        live.kill()
        live.wait()
    assert list(load_trained("m", root)[0].classes_) == ["sad"]


def test_a_reader_holding_the_lock_delays_the_swap(tmp_path):
    root = tmp_path / "models"
    save_trained(_fitted("angry"), root / "m")
    with models_lock(root, shared=True):  # e.g. the Demo loading the model
        writer = threading.Thread(target=save_trained, args=(_fitted("sad"), root / "m"))
        writer.start()
        time.sleep(0.5)
        assert writer.is_alive() and read_card(root / "m")["labels"] == ["angry"]
    writer.join(10)
    assert not writer.is_alive() and read_card(root / "m")["labels"] == ["sad"]


def _save_many(root, label, n):
    for i in range(n):
        save_trained(_fitted(label), root / "m", card={"writer": label, "i": i})


@pytest.mark.slow
def test_processes_saving_one_name_at_once_never_mix(tmp_path):
    root = tmp_path / "models"
    labels = ["angry", "sad", "happy", "calm"]
    ctx = mp.get_context("fork")  # separate processes (own locks), without paying the imports again
    procs = [ctx.Process(target=_save_many, args=(root, label, 6)) for label in labels]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    model, card = load_trained("m", root)
    assert card["writer"] in labels and list(model.classes_) == [card["writer"]]  # one writer's files only
    assert card["i"] == 5 and _leftovers(root) == []


def test_a_packed_model_saves_as_the_model_itself(tmp_path):
    """What a Ray task returns of a model it trained (the bytes of its saved folder, picklable whatever the
    family) is saved by the driver with the same files, card and answers as the model."""
    import pickle

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 8)).astype(np.float32), np.array(["angry", "sad"] * 20)
    model = create_model("lda").fit(X, y)
    packed = pickle.loads(pickle.dumps(saved.PackedModel.pack(model)))
    direct = save_trained(model, tmp_path / "direct", card={"cv": {"run_id": 1}})
    via_bytes = save_trained(packed, tmp_path / "packed", card={"cv": {"run_id": 1}})
    assert sorted(p.name for p in via_bytes.iterdir()) == sorted(p.name for p in direct.iterdir())
    a, b = read_card(direct), read_card(via_bytes)
    assert {k: v for k, v in a.items() if k not in ("name", "created_at")} == \
        {k: v for k, v in b.items() if k not in ("name", "created_at")}
    np.testing.assert_array_equal(load_trained(via_bytes)[0].predict_proba(X), model.predict_proba(X))
