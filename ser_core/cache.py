"""On-disk feature cache keyed by file content, feature configuration and ``FEATURE_VERSION``.

Layout: ``<dir>/<fs.key()>/<hash[:2]>/<hash>.npy``, one array per clip, where ``hash`` is the BLAKE2b digest
of the file's bytes (a copied or renamed file still hits; an edited one misses). A changed feature set or
``FEATURE_VERSION`` changes ``fs.key()`` and so recomputes everything. ``content-index.json`` memoises
``path -> (size, mtime_ns, hash)`` so warm runs stat the files instead of re-reading them.

Safe for several processes filling it at once: every file is written to a temporary name in the same folder
and moved into place with ``os.replace`` (atomic), so readers see either nothing or a complete entry. Two
processes may compute the same entry; the last write wins and both are identical.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

INDEX_NAME = "content-index.json"
CACHE_ENV = "SER_CACHE_DIR"  # where the cache is; on a Ray cluster, a path every node sees (ser_core.cluster)


def default_cache_dir() -> Path:
    """``$SER_CACHE_DIR`` or ``~/.cache/ser_studio/features``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ser_studio" / "features"


def file_hash(path) -> str:
    """BLAKE2b-128 hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _valid(arr: np.ndarray, fs) -> bool:
    """A usable entry: numbers, all finite, of the feature set's ``shape`` (when ``fs`` is a ``FeatureSet``)."""
    shape = getattr(fs, "shape", None)
    return (arr.dtype.kind in "fiu" and (shape is None or arr.shape == tuple(shape))
            and bool(np.isfinite(arr).all()))


def _key(fs) -> str:
    return fs if isinstance(fs, str) else fs.key()


class FeatureCache:
    """Feature arrays on disk. ``fs`` arguments are ``FeatureSet`` objects (or their ``key()`` strings).

    >>> cache = FeatureCache("/tmp/feats")
    >>> cache.put("a.wav", fs, x); cache.get("a.wav", fs)   # -> x, or None on a miss
    """

    def __init__(self, directory=None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, list] | None = None  # abs path -> [size, mtime_ns, hash]
        self._dirty = False

    def __repr__(self) -> str:
        return f"FeatureCache('{self.directory}')"

    # -- content hashes ------------------------------------------------------------------------------------
    def _load_index(self) -> dict:
        if self._index is None:
            try:
                self._index = json.loads((self.directory / INDEX_NAME).read_text())
            except (FileNotFoundError, ValueError):
                self._index = {}
        return self._index

    def _save_index(self) -> None:
        if not self._dirty:
            return
        try:  # merge what other processes added meanwhile
            on_disk = json.loads((self.directory / INDEX_NAME).read_text())
        except (FileNotFoundError, ValueError):
            on_disk = {}
        on_disk.update(self._index)
        self._index = on_disk
        _atomic_write(self.directory / INDEX_NAME, lambda f: f.write(json.dumps(on_disk).encode()))
        self._dirty = False

    def content_hash(self, path) -> str:
        """Hash of the file's bytes, memoised by (path, size, mtime_ns)."""
        path = os.path.abspath(path)
        st = os.stat(path)
        index = self._load_index()
        entry = index.get(path)
        if entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return entry[2]
        digest = file_hash(path)
        index[path] = [st.st_size, st.st_mtime_ns, digest]
        self._dirty = True
        return digest

    # -- entries -------------------------------------------------------------------------------------------
    def _entry_path(self, digest: str, fs) -> Path:
        return self.directory / _key(fs) / digest[:2] / f"{digest}.npy"

    def _read(self, entry: Path, fs):
        """The entry's array, or None on a miss. A damaged entry (truncated, not an array, wrong shape, NaN or
        infinite values: a full disk, manual edits, an older bug) is deleted, so it is computed again."""
        try:
            arr = np.load(entry, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError):
            arr = None
        if arr is None or not _valid(arr, fs):
            entry.unlink(missing_ok=True)
            return None
        return arr

    def get(self, path, fs):
        """The cached array for this file and feature set, or None."""
        try:
            arr = self._read(self._entry_path(self.content_hash(path), fs), fs)
        finally:
            self._save_index()
        return arr

    def get_many(self, paths, fs) -> list:
        """``[array or None]`` in the order of ``paths``; missing files are misses."""
        out = []
        try:
            for p in paths:
                try:
                    out.append(self._read(self._entry_path(self.content_hash(p), fs), fs))
                except OSError:  # missing or unreadable: a miss, and compute_file reports why
                    out.append(None)
        finally:
            self._save_index()
        return out

    def put(self, path, fs, array) -> None:
        """Store ``array`` for this file and feature set (atomic); one that ``get`` would discard (wrong shape,
        NaN or infinite values) is not stored."""
        array = np.ascontiguousarray(array)
        if not _valid(array, fs):
            return
        entry = self._entry_path(self.content_hash(path), fs)
        _atomic_write(entry, lambda f: np.save(f, array, allow_pickle=False))
        self._save_index()

    # -- housekeeping --------------------------------------------------------------------------------------
    def clear(self) -> None:
        """Delete every cached entry and the index."""
        for child in self.directory.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        self._index, self._dirty = {}, False

    def size_bytes(self) -> int:
        """Total size of the cache folder in bytes."""
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())


__all__ = ["FeatureCache", "default_cache_dir", "file_hash"]
