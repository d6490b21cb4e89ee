"""Dataset downloads: progress bar, resume, checksum, safe extraction.

``download_file(url, dest)`` streams ``url`` (http, https or file) into ``dest.part`` with a tqdm bar on
stderr, resumes a partial ``.part`` with an HTTP Range request (and restarts when the server ignores Range),
verifies the checksum and renames atomically. ``download_dataset("ravdess", data_dir)`` downloads the
official archive (or takes ``archive=PATH``), extracts it without path traversal and returns the corpus
folder, e.g. ``data_dir/"ravdess"``; an already extracted folder is returned as is.
"""
from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, DownloadError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    page: str  # official page (licence, manual download)
    folder: str  # sub-folder of data_dir the corpus is extracted into
    url: str | None = None  # direct archive URL; None where the corpus needs registration or a manual step
    checksum: str | None = None  # "md5:<hex>" or "sha256:<hex>" of the archive at ``url``
    archive_format: str = "zip"  # "zip" | "tar" (any compression tarfile reads)
    license: str = ""


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("ravdess", "RAVDESS speech (Audio_Speech_Actors_01-24.zip, 1440 clips, 24 actors, 48 kHz WAV)",
                "https://doi.org/10.5281/zenodo.1188976", "ravdess",
                "https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1",
                "md5:bc696df654c87fed845eb13823edef8a", "zip", "CC BY-NC-SA 4.0"),
    DatasetSpec("ravdess_song", "RAVDESS song (Audio_Song_Actors_01-24.zip, 1012 clips, 23 actors)",
                "https://doi.org/10.5281/zenodo.1188976", "ravdess_song",
                "https://zenodo.org/records/1188976/files/Audio_Song_Actors_01-24.zip?download=1",
                None, "zip", "CC BY-NC-SA 4.0"),
    DatasetSpec("tess", "Toronto emotional speech set (TESS), 2800 clips", "https://doi.org/10.5683/SP2/E8H2MF",
                "tess", license="CC BY-NC-ND 4.0"),
    DatasetSpec("crema_d", "CREMA-D (AudioWAV/ and VideoDemographics.csv; audio is stored with Git LFS)",
                "https://github.com/CheyneyComputerScience/CREMA-D", "crema_d", license="ODbL 1.0"),
    DatasetSpec("savee", "Surrey Audio-Visual Expressed Emotion (SAVEE), registration required",
                "http://kahlan.eps.surrey.ac.uk/savee/", "savee", license="free for research; see the page"),
    DatasetSpec("emodb", "Berlin Database of Emotional Speech (EmoDB)", "http://emodb.bilderbar.info/",
                "emodb", "http://emodb.bilderbar.info/download/download.zip", None, "zip", "see the page"),
]}


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:ab.."``, ``"sha256:.."`` or a bare hex digest (told apart by its length) -> (algorithm, hex)."""
    algo, _, digest = checksum.strip().lower().rpartition(":")
    algo = algo or {32: "md5", 64: "sha256"}.get(len(digest), "")
    if algo not in ("md5", "sha256") or not all(c in "0123456789abcdef" for c in digest):
        raise ConfigError(f"Bad checksum '{checksum}'; give 'md5:<32 hex>' or 'sha256:<64 hex>'.")
    return algo, digest


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, expected: dict[str, str], label: str, remove: bool = True) -> None:
    """Raise DownloadError when a digest in ``expected`` {algo: hex} does not match (deleting ``path``
    when ``remove``; a user's own archive is kept)."""
    for algo, digest in expected.items():
        actual = file_digest(path, algo)
        if actual != digest.lower():
            if remove:
                path.unlink(missing_ok=True)
            what = "the file was removed, download it again or check the URL" if remove else \
                "check that it is the right archive"
            raise DownloadError(f"Checksum mismatch for {label}: expected {algo} {digest.lower()}, got {actual}; "
                                f"{what}.")


def _unreachable(url: str, exc: BaseException) -> DownloadError:
    parsed = urllib.parse.urlsplit(url)
    reason = getattr(exc, "reason", None) or exc
    verb, where = ("read", parsed.path) if parsed.scheme == "file" else ("reach", parsed.netloc or url)
    return DownloadError(f"Could not {verb} {where}: {reason}. Download the archive by hand from {url} "
                         f"and pass --archive PATH.")


def download_file(url: str, dest: str | Path, *, sha256: str | None = None, md5: str | None = None,
                  progress=True, chunk_size: int = 1 << 20, timeout: float = 30.0) -> Path:
    """Download ``url`` (http, https, file) to ``dest`` and return ``dest``.

    Bytes go to ``dest.part`` first; a ``.part`` left by an interrupted run is resumed (HTTP Range, or a
    seek for file URLs) and restarted when the server answers without the range. With ``sha256``/``md5`` the
    result is verified (mismatch: DownloadError, file removed). An existing ``dest`` that passes the
    checksums (or any existing ``dest`` when none is given) is returned without downloading. ``progress``:
    True (a tqdm bar on stderr), False, or a callable ``(done_bytes, total_bytes_or_None)``.
    """
    dest = Path(dest)
    expected = {k: v for k, v in (("sha256", sha256), ("md5", md5)) if v}
    if dest.is_file():
        try:
            _verify(dest, expected, dest.name)
            return dest
        except DownloadError:
            pass  # a bad leftover: removed by _verify, download again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    scheme = urllib.parse.urlsplit(url).scheme
    request = urllib.request.Request(url, headers={"User-Agent": "ser-studio"})
    if offset and scheme in ("http", "https"):
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at or past the end: .part may already be complete
            total = exc.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return _finish(part, dest, expected)
            part.unlink()
            return download_file(url, dest, sha256=sha256, md5=md5, progress=progress,
                                 chunk_size=chunk_size, timeout=timeout)
        raise DownloadError(f"The server answered HTTP {exc.code} ({exc.reason}) for {url}; check the URL "
                            f"or download the archive by hand and pass --archive PATH.") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
        raise _unreachable(url, exc) from None
    with response:
        length = response.headers.get("Content-Length")
        content_range = response.headers.get("Content-Range", "")
        if offset and scheme == "file" and length and offset <= int(length):
            response.seek(offset)  # file URLs have no Range: emulate it
            remaining = int(length) - offset
        elif offset and getattr(response, "status", 200) == 206 and content_range.startswith(f"bytes {offset}-"):
            remaining = int(length) if length else None
        elif getattr(response, "status", 200) == 206:  # a range we did not ask for: start over next time
            part.unlink(missing_ok=True)
            raise DownloadError(f"The server sent an unexpected byte range for {url}; run again to restart.")
        else:  # no partial file, or the server ignored Range and sends everything: restart
            offset, remaining = 0, int(length) if length else None
        total = offset + remaining if remaining is not None else None
        from tqdm import tqdm

        report = progress if callable(progress) else None  # the app passes callable(done_bytes, total_bytes)
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                   disable=not progress or report is not None, file=sys.stderr, leave=False)
        try:
            with open(part, "ab" if offset else "wb") as out, bar:
                done = offset
                for chunk in iter(lambda: response.read(chunk_size), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
                    done += len(chunk)
                    if report:
                        report(done, total)
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, truncated chunked body
            raise DownloadError(f"The download of {url} broke off ({exc}); run again to resume from "
                                f"{part}.") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"The download of {url} stopped at {size} of {total} bytes; run again to resume.")
    return _finish(part, dest, expected)


def _finish(part: Path, dest: Path, expected: dict[str, str]) -> Path:
    _verify(part, expected, dest.name)
    os.replace(part, dest)
    return dest


# -- extraction ---------------------------------------------------------------------------------------------
def _inside(base: Path, name: str) -> bool:
    target = (base / name).resolve()
    return target == base or base in target.parents


def extract_archive(archive: str | Path, dest: str | Path, archive_format: str | None = None) -> Path:
    """Extract a zip or tar archive into ``dest``, refusing members that would land outside it."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    fmt = archive_format or ("zip" if zipfile.is_zipfile(archive) else "tar")
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                bad = [n for n in zf.namelist() if n.startswith("/") or not _inside(base, n)]
                if bad:
                    raise DownloadError(f"{archive.name} holds a path outside the target folder ({bad[0]}); "
                                        f"refusing to extract it.")
                zf.extractall(base)
        else:
            with tarfile.open(archive) as tf:
                bad = [m.name for m in tf.getmembers() if not _inside(base, m.name)]
                if bad:
                    raise DownloadError(f"{archive.name} holds a path outside the target folder ({bad[0]}); "
                                        f"refusing to extract it.")
                tf.extractall(base, filter="data")  # also rejects links that point outside, device files
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive} is not a valid {fmt} archive ({exc}); delete it and download "
                            f"it again.") from None
    return dest


def get_dataset(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown dataset '{name}'.{hint} Available: {', '.join(DATASETS)}.")
    return DATASETS[key]


def download_dataset(name: str, data_dir: str | Path, *, url: str | None = None, checksum: str | None = None,
                     archive: str | Path | None = None, progress=True,
                     keep_archive: bool = False) -> Path:
    """Download and extract corpus ``name`` into ``data_dir/<folder>`` and return that folder.

    ``url`` overrides the official URL (its checksum is then only checked when ``checksum`` is given);
    ``archive`` uses a local archive file instead of downloading. Extraction goes through a temporary
    folder renamed at the end, so an existing non-empty target means a finished earlier run: it is returned
    without downloading. The downloaded archive is deleted after extraction unless ``keep_archive``.
    """
    spec = get_dataset(name)
    data_dir = Path(data_dir).expanduser()
    target = data_dir / spec.folder
    if target.is_dir() and any(target.iterdir()):
        return target
    if checksum is None and url is None and archive is None:
        checksum = spec.checksum
    expected = dict([_parse_checksum(checksum)]) if checksum else {}
    if archive is not None:
        archive = Path(archive).expanduser()
        if not archive.is_file():
            raise DownloadError(f"Archive {archive} does not exist; give the path of the downloaded file.")
        _verify(archive, expected, archive.name, remove=False)
        downloaded = False
    else:
        url = url or spec.url
        if url is None:
            raise DownloadError(f"{spec.title} has no direct download; get the archive from {spec.page} and "
                                f"pass --archive PATH.")
        file_name = Path(urllib.parse.urlsplit(url).path).name or f"{spec.name}.{spec.archive_format}"
        archive = download_file(url, data_dir / file_name, progress=progress, **expected)
        downloaded = True
    tmp = data_dir / f".{spec.folder}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        extract_archive(archive, tmp, None)
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if downloaded and not keep_archive:
        archive.unlink(missing_ok=True)
    return target


__all__ = ["DATASETS", "DatasetSpec", "DownloadError", "download_file", "download_dataset", "extract_archive",
           "file_digest", "get_dataset"]
