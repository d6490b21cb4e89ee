"""Data roots: the folders a shared server may read corpora and weights from.

The app reads data only inside its roots: the folders of ``$SER_DATA_ROOTS`` (separated by ``os.pathsep``) plus
the repository's ``data/`` (downloads) and ``samples/`` (bundled clips). Every path a browser can influence is
resolved first (``~`` expanded, ``..`` removed, symbolic links followed) and refused outside the roots with
one sentence that reads the same whether or not the target exists. The library's loaders take the roots as
an argument (``load_corpus(path, roots=...)``); ``None`` reads any path, which is what the command line,
run by the machine's own user, does.

Every path a user gives -- typed in the sidebar, in a URL, in a CSV entry, in the Train page's weights field, on
the command line -- goes through one function first, :func:`user_path`: ``~`` and ``~user`` are expanded, and a
control character (NUL included), more than ``MAX_PATH_BYTES`` or a name of more than ``MAX_NAME_BYTES``, text
that no file name can hold, or a ``~user`` of no such user is refused with :data:`PATH_REFUSAL`, the same
sentence each time, naming nothing on the server. On a server (``roots`` given) a ``~user`` of no such user is
refused exactly as one whose home lies outside the roots, so the answers do not tell which users exist.

Example::

    roots = configured_roots()                       # (Path('/srv/corpora'), Path('.../data'), ...)
    folder = resolve_in_roots("/srv/corpora/ravdess", roots)
    resolve_in_roots("/etc", roots)                  # OutsideRootsError
    user_path("~/corpora")                           # Path('/home/me/corpora')
    user_path("a\x00b")                              # UserPathError: PATH_REFUSAL
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from .errors import OutsideRootsError, UserPathError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"  # the bundled clips (samples/README.md)
ALWAYS = (REPO / "data", SAMPLES)  # downloads and the bundled clips: always readable
ENV = "SER_DATA_ROOTS"
OUTSIDE_REASON = "outside the data folders this server reads"  # for a skipped file; the same for missing ones
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX of Linux and macOS)
MAX_PATH_BYTES = 4096  # a whole path (PATH_MAX of Linux)
PATH_REFUSAL = (f"That is not a usable path: give a file or folder path without control characters, of at most "
                f"{MAX_PATH_BYTES} bytes and names of at most {MAX_NAME_BYTES}, with ~user only for a user of this "
                "machine.")
PATH_REASON = "not a usable path (a control character, too long, or ~ of no such user)"  # a skipped CSV entry
NOT_UTF8_REASON = "its name is not UTF-8 text; rename it"  # a skipped file of a corpus folder
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def configured_roots(value: str | None = None) -> tuple[Path, ...]:
    """The roots, resolved: ``value`` (default ``$SER_DATA_ROOTS``; folders separated by ``os.pathsep``), then
    the repository's ``data/`` and ``samples/``. Read at every call, so a test or a restart can change it."""
    value = os.environ.get(ENV, "") if value is None else value
    named = [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for p in [*named, *ALWAYS]:
        p = p.resolve()
        if p not in out:
            out.append(p)
    return tuple(out)


def user_path(value: str | os.PathLike, base: str | Path | None = None) -> Path:
    """The one way a path a user gave becomes a ``Path``: ``~`` and ``~user`` expanded, a relative path taken
    relative to ``base`` (None: as it is). Raises :class:`UserPathError` with :data:`PATH_REFUSAL` for a control
    character (a NUL included), more than ``MAX_PATH_BYTES`` or a name of more than ``MAX_NAME_BYTES`` (as UTF-8,
    the file system's encoding), text that no file name can hold (a lone surrogate), or ``~user`` of no such user.
    Nothing is read from the disk."""
    path = _expand(value, base)
    if path is None:
        raise UserPathError(PATH_REFUSAL)
    return path


def _expand(value, base=None) -> Path | None:
    """``user_path``'s path, or None for ``~user`` of no such user; ``UserPathError`` for the other refusals."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    try:
        raw = os.fsencode(text) if isinstance(text, str) else None
    except UnicodeEncodeError:  # a lone surrogate: no file name holds it
        raw = None
    if raw is None or _CONTROL.search(text) or len(raw) > MAX_PATH_BYTES or \
            any(len(name) > MAX_NAME_BYTES for name in raw.split(b"/")):
        raise UserPathError(PATH_REFUSAL)
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "Could not determine home directory": ~user of no such user
        return None
    return path if base is None or path.is_absolute() else Path(base) / path


def printable(path: str | Path) -> str:
    """``path`` as text any page or terminal can show: the bytes of a name that is not UTF-8 (which Python holds
    as surrogates) written as ``\\xff`` escapes."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def _resolve(path: str | Path) -> Path | None:
    """``path`` with ``~`` expanded and symbolic links and ``..`` resolved; None when that fails (a link loop, a
    name too long, no such user)."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def is_inside(path: str | Path, roots: Iterable[Path]) -> bool:
    """Whether ``path``, resolved, lies in (or is) one of ``roots`` (folders; resolved here too, so that a root
    named through a symbolic link, e.g. ``../shared`` linked elsewhere, holds what lies under its target)."""
    p = _resolve(path)
    return p is not None and any(p.is_relative_to(_resolve(r) or Path(r)) for r in roots)


def outside_message(path: str | Path, roots: Iterable[Path]) -> str:
    """The one sentence of a refusal: it names what was asked and where data may be, never whether it exists."""
    where = ", ".join(str(r) for r in roots)
    return (f"'{printable(path)}' is not inside a data folder this server reads ({where}); use a path inside one of "
            f"them, or ask whoever runs the server to add its folder to {ENV}.")


def resolve_in_roots(path: str | Path, roots: Iterable[Path] | None, base: str | Path | None = None) -> Path:
    """``path`` as a user gave it (:func:`user_path`, relative to ``base``), resolved (``..``, symbolic links);
    raises :class:`OutsideRootsError` unless it lies inside one of ``roots``, quoting ``path`` as given (never its
    expansion: ``~root`` is not shown as ``/root``). ``roots`` None: any path (the command line)."""
    expanded = _expand(path, base)
    if roots is None:
        if expanded is None:
            raise UserPathError(PATH_REFUSAL)
        return _resolve(expanded) or expanded
    roots = tuple(roots)
    resolved = _resolve(expanded) if expanded is not None else None  # no such user: as a home outside the roots
    if resolved is None or not is_inside(resolved, roots):
        raise OutsideRootsError(outside_message(path, roots))
    return resolved


# A Hugging Face hub id ("facebook/wav2vec2-base") or a keyword like Keras' "imagenet": one or two name parts,
# no "..", nothing absolute.
DOWNLOAD_ID = r"(?!.*\.\.)[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?"


def weights_source(value: str, roots: Iterable[Path] | None, downloads: str = DOWNLOAD_ID, base: Path = REPO) -> str:
    """A pretrained-weights parameter as a worker (cwd ``base``) will read it: a name matching ``downloads`` that
    is not a path under ``base`` is fetched from the internet and returned as it is; anything else is a local
    file or folder, returned resolved when it lies inside ``roots`` and refused (:class:`OutsideRootsError`)
    otherwise. The existence test touches only ``base`` (the repository, whose layout is public)."""
    local = _expand(value, base)  # a malformed value is refused (PATH_REFUSAL) before anything is looked up
    if re.fullmatch(downloads, value) and not (local is not None and local.exists()):
        return value
    return str(resolve_in_roots(value, roots, base=base))


__all__ = ["ALWAYS", "ENV", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "NOT_UTF8_REASON", "OUTSIDE_REASON", "PATH_REASON",
           "PATH_REFUSAL", "SAMPLES", "configured_roots", "is_inside", "outside_message", "printable",
           "resolve_in_roots", "user_path", "weights_source"]
