"""FeatureCache: content keys, config keys, the hash memo, damaged entries and concurrent writers."""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil

import numpy as np
import pytest

from ser_core import cache as cache_mod
from ser_core import features as F
from ser_core.cache import FeatureCache
from ser_core.features import get_feature_set


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / "audio" / f"f{i}.wav"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(os.urandom(2000) + bytes([i]))
        paths.append(p)
    return paths


def test_put_get_and_content_keys(tmp_path, files):
    fs = get_feature_set("prosody")
    c = FeatureCache(tmp_path / "c")
    assert c.get(files[0], fs) is None
    x = np.arange(32, dtype=np.float32)
    c.put(files[0], fs, x)
    np.testing.assert_array_equal(c.get(files[0], fs), x)
    copy = tmp_path / "renamed.flac"  # same bytes under another name: a hit
    shutil.copy(files[0], copy)
    np.testing.assert_array_equal(c.get(copy, fs), x)
    files[0].write_bytes(b"edited" + files[0].read_bytes())  # changed content: a miss
    assert c.get(files[0], fs) is None
    assert c.get_many([copy, files[1], tmp_path / "missing.wav"], fs)[1:] == [None, None]
    assert c.size_bytes() > 0
    c.clear()
    assert c.size_bytes() == 0 and c.get(copy, fs) is None


def test_config_and_version_changes_miss(tmp_path, files, monkeypatch):
    fs = get_feature_set("prosody")
    c = FeatureCache(tmp_path / "c")
    c.put(files[0], fs, np.ones(32, np.float32))
    assert c.get(files[0], fs.replace(top_db=30)) is None
    assert c.get(files[0], fs.replace(description="same features")) is not None
    monkeypatch.setattr(F, "FEATURE_VERSION", F.FEATURE_VERSION + 1)
    assert c.get(files[0], fs) is None


def test_warm_runs_do_not_rehash(tmp_path, files, monkeypatch):
    fs = get_feature_set("prosody")
    c = FeatureCache(tmp_path / "c")
    for p in files:
        c.put(p, fs, np.zeros(32, np.float32))
    hashed = []
    real = cache_mod.file_hash
    monkeypatch.setattr(cache_mod, "file_hash", lambda p: hashed.append(p) or real(p))
    fresh = FeatureCache(tmp_path / "c")  # a new process: reads the index from disk
    assert all(a is not None for a in fresh.get_many(files, fs))
    assert hashed == []
    os.utime(files[2], ns=(1, 1))  # a touched file is hashed again (and still hits: same bytes)
    assert fresh.get(files[2], fs) is not None and len(hashed) == 1


def test_damaged_or_wrong_shape_entries_are_misses(tmp_path, files):
    fs = get_feature_set("prosody")
    c = FeatureCache(tmp_path / "c")
    c.put(files[0], fs, np.ones(32, np.float32))
    entry = next((tmp_path / "c").rglob("*.npy"))
    entry.write_bytes(b"\x93NUMPY garbage")
    assert c.get(files[0], fs) is None and not entry.exists()
    c.put(files[1], fs, np.ones(7, np.float32))  # not fs.shape: never stored
    c.put(files[2], fs, np.full(32, np.nan, np.float32))  # not finite: never stored
    assert c.get(files[1], fs) is None and c.get(files[2], fs) is None
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 0


BAD_ENTRIES = {  # what a full disk, a manual edit or an older bug can leave instead of a clip's array x
    "nan": lambda x: np.full_like(x, np.nan),
    "inf": lambda x: np.where(np.arange(x.size) % 2, np.inf, x),
    "shape": lambda x: x[:7],
    "strings": lambda x: np.array(["a"] * x.size),
    "truncated": None,
}


@pytest.mark.parametrize("bad", BAD_ENTRIES)
def test_bad_entries_are_recomputed(tmp_path, shared_ravdess, bad):
    fs = get_feature_set("prosody")
    clips = sorted((shared_ravdess / "Actor_01").glob("*.flac"))[:2]
    c = FeatureCache(tmp_path / "c")
    good = F.compute_files(clips, fs, cache=c, n_jobs=1, progress=False)
    entry = c._entry_path(c.content_hash(clips[0]), fs)
    if BAD_ENTRIES[bad] is None:
        entry.write_bytes(entry.read_bytes()[:100])
    else:
        np.save(entry, BAD_ENTRIES[bad](good[0]))
    again = F.compute_files(clips, fs, cache=c, n_jobs=1, progress=False)
    np.testing.assert_allclose(again, good)
    np.testing.assert_allclose(np.load(entry), good[0])  # the entry is good again


def test_a_failing_cache_write_never_stops_the_features(tmp_path, shared_ravdess, monkeypatch):
    """A full or read-only cache disk: one warning, no more writes, the features all there -- computed here,
    and on the Ray runner's path where they come back through the object store (Ray faked: the tasks run
    inline)."""
    from ser_core import cluster

    fs = get_feature_set("prosody")
    clips = [str(p) for p in sorted((shared_ravdess / "Actor_01").glob("*.flac"))[:3]]
    expected = F.compute_files(clips, fs, cache=False, n_jobs=1, progress=False)
    store, writes = FeatureCache(tmp_path / "c"), []

    def full(*args):
        writes.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "put", full)
    with pytest.warns(UserWarning, match="not written"):
        np.testing.assert_allclose(F.compute_files(clips, fs, cache=store, n_jobs=1, progress=False), expected)
    assert len(writes) == 1

    class Task:  # the features task, returning every array
        def remote(self, paths, fs_, cache_dir, return_arrays):
            return tuple(paths)

        def options(self, **kw):
            return self

    def finished(ray, pending, should_stop=None):
        for ref, chunk in list(pending.items()):
            yield chunk, {"arrays": list(F.compute_files(list(ref), fs, cache=False, n_jobs=1, progress=False)),
                          "node": "n1"}

    monkeypatch.setattr(cluster, "connect", lambda *a, **kw: None)
    monkeypatch.setattr(cluster, "_task", lambda name: Task())
    monkeypatch.setattr(cluster, "_finished", finished)
    writes.clear()
    with pytest.warns(UserWarning, match="not written"):
        got = dict(cluster.RayRunner().features(clips, fs, store))
    assert len(writes) == 1
    np.testing.assert_allclose(np.stack([got[i] for i in range(len(clips))]), expected)


def _fill(directory, paths, key, seed):
    c = FeatureCache(directory)
    for p in paths:
        c.put(p, key, np.full((64, 64), float(os.path.basename(p).split(".")[0]), dtype=np.float32))
        c.get(p, key)


@pytest.mark.slow
def test_two_processes_filling_at_once(tmp_path):
    paths = []
    for i in range(40):
        p = tmp_path / "a" / f"{i}.wav"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(f"clip {i}".encode() * 50)
        paths.append(str(p))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_fill, args=(tmp_path / "c", order, "shared-key", k))
             for k, order in enumerate([paths, paths[::-1]])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    c = FeatureCache(tmp_path / "c")
    for p in paths:
        arr = c.get(p, "shared-key")
        assert arr is not None and arr.shape == (64, 64) and np.all(arr == float(os.path.basename(p)[:-4]))
    assert not [f for f in (tmp_path / "c").rglob(".tmp-*")]  # no leftovers of the atomic writes
    # the merged index knows every file, so a warm run hashes nothing
    assert len(FeatureCache(tmp_path / "c")._load_index()) == 40


def test_default_directory_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "env"))
    assert FeatureCache().directory == tmp_path / "env"
    monkeypatch.delenv("SER_CACHE_DIR")
    assert cache_mod.default_cache_dir().parts[-3:] == (".cache", "ser_studio", "features")
