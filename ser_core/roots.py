"""Data roots: the folders a shared server may read corpora and weights from.

The app reads data only inside its roots: the folders of ``$SER_DATA_ROOTS`` (separated by ``os.pathsep``) plus
the repository's ``data/`` (downloads) and ``samples/`` (bundled clips). Every path a browser can influence is
resolved first (``~`` expanded, ``..`` removed, symbolic links followed) and refused outside the roots with
one sentence that reads the same whether or not the target exists. The library's loaders take the roots as
an argument (``load_corpus(path, roots=...)``); ``None`` reads any path, which is what the command line,
run by the machine's own user, does.

Example::

    roots = configured_roots()                       # (Path('/srv/corpora'), Path('.../data'), ...)
    folder = resolve_in_roots("/srv/corpora/ravdess", roots)
    resolve_in_roots("/etc", roots)                  # OutsideRootsError
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from .errors import OutsideRootsError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"  # the bundled clips (samples/README.md)
ALWAYS = (REPO / "data", SAMPLES)  # downloads and the bundled clips: always readable
ENV = "SER_DATA_ROOTS"
OUTSIDE_REASON = "outside the data folders this server reads"  # for a skipped file; the same for missing ones


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


def _resolve(path: str | Path) -> Path | None:
    """``path`` with ``~`` expanded and symbolic links and ``..`` resolved; None when that fails (a link loop)."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


def is_inside(path: str | Path, roots: Iterable[Path]) -> bool:
    """Whether ``path``, resolved, lies in (or is) one of ``roots`` (folders; resolved here too, so that a root
    named through a symbolic link, e.g. ``../shared`` linked elsewhere, holds what lies under its target)."""
    p = _resolve(path)
    return p is not None and any(p.is_relative_to(_resolve(r) or Path(r)) for r in roots)


def outside_message(path: str | Path, roots: Iterable[Path]) -> str:
    """The one sentence of a refusal: it names what was asked and where data may be, never whether it exists."""
    where = ", ".join(str(r) for r in roots)
    return (f"'{path}' is not inside a data folder this server reads ({where}); use a path inside one of them, "
            f"or ask whoever runs the server to add its folder to {ENV}.")


def resolve_in_roots(path: str | Path, roots: Iterable[Path] | None) -> Path:
    """``path`` resolved (``~``, ``..``, symbolic links); raises :class:`OutsideRootsError` unless it lies inside
    one of ``roots``. ``roots`` None: any path (the command line)."""
    resolved = _resolve(path)
    if roots is None:
        return resolved or Path(path).expanduser()
    roots = tuple(roots)
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
    if re.fullmatch(downloads, value) and not (base / value).exists():
        return value
    local = base / Path(value).expanduser()
    if roots is not None and not is_inside(local, roots):
        raise OutsideRootsError(outside_message(value, roots))
    return str(resolve_in_roots(local, roots))


__all__ = ["ALWAYS", "ENV", "OUTSIDE_REASON", "SAMPLES", "configured_roots", "is_inside", "outside_message",
           "resolve_in_roots", "weights_source"]
