"""Corpus adapters: read a corpus in its official layout and file names into one manifest table.

``load_corpus(root)`` detects the corpus from its file names (or takes ``corpus=`` explicitly) and returns a
:class:`Corpus` whose ``manifest`` has one row per clip with the columns of :data:`MANIFEST_COLUMNS` (RAVDESS
adds ``vocal_channel``: speech | song). Files with an audio extension that cannot be used -- a name that does
not follow the corpus's convention, a corrupt header, a video-only RAVDESS file, a duplicate in another
format -- are listed in ``Corpus.skipped`` with the reason, never dropped silently. Other files (README, CSV,
text, images) and hidden files are ignored. Links to folders are followed (once each).

``roots`` (see :mod:`ser_core.roots`): the app passes the data folders the server may read; the corpus path must
resolve inside them, and a file, CSV entry or linked folder that resolves outside them is skipped with the same
reason whether or not its target exists. ``None`` (the command line) reads any path.

Example::

    corpus = load_corpus("data/ravdess")          # -> Corpus(name="ravdess", manifest=960 rows, ...)
    corpus.manifest.groupby("emotion").size()
"""
from __future__ import annotations

import csv
import difflib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .errors import ConfigError, CorpusError, OutsideRootsError, UserPathError
from .roots import NOT_UTF8_REASON, OUTSIDE_REASON, PATH_REASON, is_inside, printable, resolve_in_roots
from .taxonomy import EMOTIONS, EXTRA_EMOTIONS, LABEL_ALIASES, get_taxonomy, normalize_label  # noqa: F401

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".webm")  # preference order when a clip is duplicated
VIDEO_EXTS = (".mp4", ".flv", ".avi", ".mov", ".mkv")  # listed only to report them as skipped
MANIFEST_COLUMNS = ("path", "corpus", "speaker", "gender", "emotion", "intensity", "statement", "duration_s")


class _Skip(Exception):
    """A file whose name matches a corpus but that cannot be used (the reason is the message)."""


@dataclass
class Corpus:
    """A loaded corpus. ``manifest``: one row per usable clip, sorted by path; ``skipped``: (path, reason)."""

    name: str
    root: Path
    manifest: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    parts: tuple[tuple[str, Path], ...] = ()  # several corpora read as one (load_corpora): (name, root) of each
    taxonomy: str = "native"  # the ser_core.taxonomy mapping its labels went through

    @property
    def corpora(self) -> list[str]:
        """The names of the corpora its clips come from (the manifest's ``corpus`` column), in reading order."""
        return [name for name, _ in self.parts] if self.parts else [self.name]

    @property
    def has_speakers(self) -> bool:
        """True when every clip has a known speaker and there are at least two (speaker-grouped splits work)."""
        spk = self.manifest["speaker"]
        return bool(len(spk)) and not (spk == "unknown").any() and spk.nunique() >= 2

    def __repr__(self) -> str:
        return (f"Corpus(name={self.name!r}, root={str(self.root)!r}, clips={len(self.manifest)}, "
                f"skipped={len(self.skipped)})")


CORPUS_JOIN = "+"  # between the names of corpora read as one: "ravdess+tess+emodb"
SPEAKER_SEP = ":"  # between a corpus's name and its own speaker id: "emodb:03" is not "ravdess:03"


# -- one parser per corpus: (path, root) -> row fields, None when the name does not follow the convention ----
def _parse_ravdess(path: Path, root: Path) -> dict | None:
    m = re.fullmatch(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)", path.stem)
    if not m:
        return None
    modality, channel, emo, inten, stmt, _rep, actor = m.groups()
    if modality != "03" or path.suffix.lower() in VIDEO_EXTS:
        raise _Skip(f"video file (modality {modality}); only audio-only files (modality 03) are used")
    if channel not in ("01", "02") or not 1 <= int(emo) <= 8 or inten not in ("01", "02") \
            or stmt not in ("01", "02") or int(actor) < 1:
        raise _Skip("a file-name field is out of range for RAVDESS")
    return dict(speaker=actor, gender="male" if int(actor) % 2 else "female", emotion=EMOTIONS[int(emo) - 1],
                intensity="normal" if inten == "01" else "strong",
                statement=("Kids are talking by the door", "Dogs are sitting by the door")[int(stmt) - 1],
                vocal_channel="speech" if channel == "01" else "song")


_TESS_EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
                  "neutral": "neutral", "ps": "surprised", "surprised": "surprised", "sad": "sad"}


def _parse_tess(path: Path, root: Path) -> dict | None:
    m = re.fullmatch(r"(OAF|YAF)_(\w+?)_([a-z]+)", path.stem, flags=re.IGNORECASE)
    if not m:
        return None
    speaker, word, label = m.group(1).upper(), m.group(2).lower(), m.group(3).lower()
    if label not in _TESS_EMOTIONS:
        raise _Skip(f"unknown TESS emotion '{label}'")
    return dict(speaker=speaker, gender="female", emotion=_TESS_EMOTIONS[label], intensity="unknown",
                statement=word)


_CREMA_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral",
                   "SAD": "sad"}
_CREMA_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unknown"}
_CREMA_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}


def _parse_crema(path: Path, root: Path) -> dict | None:
    m = re.fullmatch(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})", path.stem)
    if not m:
        return None
    speaker, sentence, emo, level = m.groups()
    if emo not in _CREMA_EMOTIONS or level not in _CREMA_LEVELS:
        raise _Skip(f"unknown CREMA-D emotion or level code '{emo}_{level}'")
    return dict(speaker=speaker, gender="unknown", emotion=_CREMA_EMOTIONS[emo], intensity=_CREMA_LEVELS[level],
                statement=_CREMA_SENTENCES.get(sentence, sentence))


_SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
_SAVEE_EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad",
                   "su": "surprised"}


def _parse_savee(path: Path, root: Path) -> dict | None:
    m = re.fullmatch(r"(?:(DC|JE|JK|KL)_)?(sa|su|a|d|f|h|n)(\d\d)", path.stem)
    speaker = m and (m.group(1) or (path.parent.name if path.parent.name in _SAVEE_SPEAKERS else None))
    if not speaker:  # a bare "a01.wav" counts only inside AudioData/<speaker>/
        return None
    return dict(speaker=speaker, gender="male", emotion=_SAVEE_EMOTIONS[m.group(2)], intensity="unknown",
                statement=m.group(2) + m.group(3))


_EMODB_EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad",
                   "N": "neutral"}
_EMODB_MALE, _EMODB_FEMALE = {"03", "08", "09", "10", "11", "15"}, {"12", "13", "14", "16"}


def _parse_emodb(path: Path, root: Path) -> dict | None:
    m = re.fullmatch(r"(\d\d)([ab]\d\d)([WLEAFTN])([a-z])", path.stem)
    if not m:
        return None
    speaker = m.group(1)
    gender = "male" if speaker in _EMODB_MALE else "female" if speaker in _EMODB_FEMALE else "unknown"
    return dict(speaker=speaker, gender=gender, emotion=_EMODB_EMOTIONS[m.group(3)], intensity="unknown",
                statement=m.group(2))


def _parse_folder(path: Path, root: Path) -> dict | None:
    rel = path.relative_to(root).parts
    if len(rel) < 2:
        raise _Skip("not inside a label folder (expected <root>/<label>/<file>)")
    return dict(speaker="unknown", gender="unknown", emotion=normalize_label(rel[0]), intensity="unknown",
                statement="")


@dataclass(frozen=True)
class _Adapter:
    name: str
    title: str
    expected: str  # what the layout looks like, for error messages
    parse: Callable[[Path, Path], "dict | None"]


_ADAPTERS = {a.name: a for a in [
    _Adapter("ravdess", "RAVDESS", "RAVDESS Actor_XX/03-01-05-01-01-01-01.wav", _parse_ravdess),
    _Adapter("tess", "TESS", "TESS OAF_angry/OAF_back_angry.wav", _parse_tess),
    _Adapter("crema_d", "CREMA-D", "CREMA-D 1001_DFA_ANG_XX.wav", _parse_crema),
    _Adapter("savee", "SAVEE", "SAVEE DC_a01.wav or AudioData/DC/a01.wav", _parse_savee),
    _Adapter("emodb", "EmoDB", "EmoDB 03a01Fa.wav", _parse_emodb),
    _Adapter("folder", "custom folder", "one sub-folder per label (angry/clip1.wav)", _parse_folder),
]}
_NAMED = [a for a in _ADAPTERS.values() if a.name != "folder"]
_ALIASES = {"crema-d": "crema_d", "cremad": "crema_d", "emo_db": "emodb", "emo-db": "emodb", "custom": "folder"}


def list_corpora() -> list[str]:
    """Names accepted by ``load_corpus(root, corpus=...)``, besides ``"auto"``."""
    return [*_ADAPTERS, "csv"]


def _canonical(name: str) -> str:
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in list_corpora():
        close = difflib.get_close_matches(key, list_corpora(), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown corpus '{name}'.{hint} Available: auto, {', '.join(list_corpora())}.")
    return key


# -- listing, detection, durations ---------------------------------------------------------------------------
def _list_media(root: Path, roots=None, skipped: list | None = None) -> list[Path]:
    """Audio and video files under ``root`` (recursively, following links to folders once each; hidden
    files/folders and __MACOSX left out), sorted. With ``roots``, files and linked folders that resolve outside
    them are left out and added to ``skipped`` with :data:`OUTSIDE_REASON`; so are links to a folder already read
    (no link loops) and links to a folder that holds ``root`` (which would read what lies beside the corpus)."""
    skipped = [] if skipped is None else skipped
    out, seen = [], {root.resolve()}
    above = set(root.resolve().parents)  # a link to one of these would read the corpus's surroundings

    def allowed(p: Path) -> bool:
        if not _is_text(p.name):  # a name the pages, the store and JSON cannot hold: listed, never read
            skipped.append((printable(p), NOT_UTF8_REASON))
            return False
        if roots is None or is_inside(p, roots):
            return True
        skipped.append((str(p), OUTSIDE_REASON))
        return False

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            full = Path(dirpath, d)
            if d.startswith(".") or d == "__MACOSX" or not allowed(full):
                continue
            real = full.resolve()
            if real in seen:  # a second link to a folder, or a link back to a folder on the way down
                skipped.append((str(full), "a link to a folder that is already read"))
                continue
            if real in above:  # a link up the tree, past the corpus folder (to its parent, or to /)
                skipped.append((str(full), "a link to a folder that holds the corpus"))
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        out += [Path(dirpath, f) for f in filenames
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTS + VIDEO_EXTS
                and allowed(Path(dirpath, f))]
    return sorted(out)


def _is_text(name: str) -> bool:
    """Whether ``name`` (from the file system) is UTF-8 text, not bytes Python holds as surrogates."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _matches(adapter: _Adapter, path: Path, root: Path) -> bool:
    try:
        return adapter.parse(path, root) is not None
    except _Skip:
        return True  # the name follows the convention even if the file is unusable


def _detect(files: list[Path], root: Path) -> str | None:
    counts = {a.name: sum(_matches(a, f, root) for f in files) for a in _NAMED}
    best = max(counts, key=counts.get)
    audio = [f for f in files if f.suffix.lower() in AUDIO_EXTS]
    label_dirs = {f.relative_to(root).parts[0] for f in audio if len(f.relative_to(root).parts) > 1}
    if counts[best] and (counts[best] * 2 >= len(files) or len(label_dirs) < 2):
        return best
    return "folder" if len(label_dirs) >= 2 else None


def _expected_message(root: Path, n_files: int, skipped=()) -> str:
    kinds = "; ".join(a.expected for a in _ADAPTERS.values())
    outside = sum(reason == OUTSIDE_REASON for _, reason in skipped)
    left_out = f", {outside} more {OUTSIDE_REASON}" if outside else ""
    return (f"No supported corpus found in {root} ({n_files} audio files{left_out}); expected one of: {kinds}; "
            f"or a CSV file with path,label columns.")


def detect_corpus(root: str | Path, roots=None) -> str:
    """Name of the corpus at ``root`` (a folder, or a CSV file -> ``"csv"``), judged by its file names."""
    root = _check_root(root, roots)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if root.is_file():
        raise CorpusError(f"{root} is a file; pass a corpus folder or a CSV file with path,label columns.")
    skipped: list[tuple[str, str]] = []
    files = _list_media(root, roots, skipped)
    name = _detect(files, root)
    if name is None:
        raise CorpusError(_expected_message(root, len(files), skipped))
    return name


def audio_duration(path: str | Path) -> float:
    """Seconds of audio in ``path`` from the file header (libsndfile), else from PyAV (m4a/webm/mp3).

    Raises ``ValueError`` when neither can read it.
    """
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
        if info.frames == 0:
            raise ValueError("the file holds no samples")
    except (RuntimeError, sf.LibsndfileError):
        pass
    return _av_duration(path)


def _av_duration(path: str | Path) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / 1_000_000  # AV_TIME_BASE
            samples = sum(frame.samples for frame in container.decode(stream))  # no header duration: decode
            if not samples:
                raise ValueError("the file holds no samples")
            return samples / stream.rate
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"unreadable audio ({getattr(exc, 'strerror', None) or exc})") from None


# -- loading ---------------------------------------------------------------------------------------------------
def _check_root(root: str | Path, roots=None) -> Path:
    root = resolve_in_roots(root, roots)  # outside the roots: refused before anything is read
    if not root.exists():
        raise CorpusError(f"{printable(root)} does not exist; pass a corpus folder or a CSV file with path,label "
                          "columns.")
    return root


def _rows_from_files(adapter: _Adapter, files: list[Path], root: Path, skipped: list) -> list[dict]:
    rows, seen = [], {}
    for f in files:
        try:
            fields = adapter.parse(f, root)
            if fields is None:
                raise _Skip(f"name does not follow the {adapter.title} convention ({adapter.expected})")
            if f.suffix.lower() in VIDEO_EXTS:
                raise _Skip("video file; only audio files are used")
        except _Skip as exc:
            skipped.append((str(f), str(exc)))
            continue
        # the same clip in two formats (CREMA-D AudioWAV + AudioMP3, a RAVDESS wav + flac copy): keep one
        key = str(f.parent / f.stem) if adapter.name == "folder" else (fields["speaker"], f.stem)
        seen.setdefault(key, []).append((f, fields))
    for versions in seen.values():
        versions.sort(key=lambda v: AUDIO_EXTS.index(v[0].suffix.lower()))
        (f, fields), dups = versions[0], versions[1:]
        skipped += [(str(d), f"duplicate of {f.name}") for d, _ in dups]
        rows.append({"path": str(f), **fields})
    return rows


def _crema_genders(root: Path, roots=None) -> dict[str, str]:
    """ActorID -> gender from CREMA-D's VideoDemographics.csv anywhere under root ({} if absent or outside
    ``roots``)."""
    demo = next((p for p in root.rglob("*") if p.name.lower() == "videodemographics.csv"), None)
    if demo is None or (roots is not None and not is_inside(demo, roots)):
        return {}
    try:
        with open(demo, newline="", encoding="utf-8-sig") as fh:
            return {str(r.get("ActorID", "")).strip(): _gender(r.get("Sex", "")) for r in csv.DictReader(fh)}
    except (UnicodeDecodeError, csv.Error):
        raise CorpusError(f"{demo} is not a readable CSV file; save it as UTF-8 text or remove it.") from None


def _gender(value) -> str:
    v = str(value).strip().lower() if value is not None and not pd.isna(value) else ""
    return {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female",
            "woman": "female"}.get(v, "unknown")


def _rows_from_csv(csv_path: Path, skipped: list, roots=None) -> list[dict]:
    # The messages never quote the file (its header or cells): a CSV may be something else renamed.
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise CorpusError(f"{csv_path} is not a readable CSV file; save it as UTF-8 text with a header row "
                          "path,label (optional: speaker, gender).") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    label_col = "label" if "label" in table else "emotion" if "emotion" in table else None
    if "path" not in table or label_col is None:
        raise CorpusError(f"{csv_path} has no path and label columns; give it a header row path,label "
                          "(optional: speaker, gender).")
    rows = []
    for rec in table.to_dict("records"):
        entry = rec["path"].strip()
        try:
            p = resolve_in_roots(entry, roots, base=csv_path.parent)
        except OutsideRootsError:
            skipped.append((entry, OUTSIDE_REASON))  # as written: neither its expansion nor its target is shown
            continue
        except UserPathError:
            skipped.append((printable(entry), PATH_REASON))
            continue
        if not entry or not p.is_file():
            skipped.append((str(p), "file not found"))
        elif not rec[label_col].strip():
            skipped.append((str(p), "empty label"))
        else:
            rows.append(dict(path=str(p), speaker=rec.get("speaker", "").strip() or "unknown",
                             gender=_gender(rec.get("gender")), emotion=normalize_label(rec[label_col]),
                             intensity=rec.get("intensity", "").strip() or "unknown",
                             statement=rec.get("statement", "").strip()))
    return rows


def load_corpus(root: str | Path, corpus: str = "auto", roots=None) -> Corpus:
    """Read the corpus at ``root`` (a folder, or a CSV with ``path,label[,speaker][,gender]``) into a manifest.

    ``corpus``: ``"auto"`` (detect from the file names) or one of :func:`list_corpora`. Durations come from
    the file headers; files whose header cannot be read are skipped with the reason. ``roots``: the folders
    that may be read (``ser_core.roots``; a path outside them raises ``OutsideRootsError``, files outside them
    are skipped), or None for any path.
    """
    root = _check_root(root, roots)
    name = ("csv" if root.suffix.lower() == ".csv" else None) if corpus == "auto" else _canonical(corpus)
    skipped: list[tuple[str, str]] = []
    if name == "csv":
        if not root.is_file():
            raise CorpusError(f"{root} is a folder; corpus='csv' needs the path of a CSV file.")
        name, rows = "csv", _rows_from_csv(root, skipped, roots)
    else:
        if root.is_file():
            raise CorpusError(f"{root} is a file; pass a corpus folder or a CSV file with path,label columns.")
        files = _list_media(root, roots, skipped)
        name = name or _detect(files, root)
        if name is None:
            raise CorpusError(_expected_message(root, len(files), skipped))
        rows = _rows_from_files(_ADAPTERS[name], files, root, skipped)
        if name == "crema_d":
            genders = _crema_genders(root, roots)
            for r in rows:
                r["gender"] = genders.get(r["speaker"], "unknown")
    usable = []
    for r in rows:
        try:
            r["duration_s"] = audio_duration(r["path"])
            usable.append(r)
        except ValueError as exc:
            skipped.append((r["path"], str(exc)))
    if not usable:
        hint = f" ({len(skipped)} files skipped, e.g. {Path(skipped[0][0]).name}: {skipped[0][1]})" if skipped else ""
        raise CorpusError(f"No usable clips in {root} as {name}{hint}.")
    df = pd.DataFrame(usable)
    df.insert(1, "corpus", name)
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    df = df[list(MANIFEST_COLUMNS) + extra].sort_values("path", ignore_index=True)
    df["duration_s"] = df["duration_s"].astype(float)
    return Corpus(name=name, root=root, manifest=df, skipped=sorted(skipped))


def load_corpora(roots_or_root, corpus="auto", roots=None, taxonomy: str | None = None) -> Corpus:
    """Read one corpus or several as one :class:`Corpus` (several: ``["data/ravdess", "data/tess"]``).

    corpus: ``"auto"`` or an adapter name for all of them, or a list with one per path. taxonomy: a name of
    ``ser_core.taxonomy.TAXONOMIES`` (None: ``native`` for one corpus, ``shared`` for several). See
    :func:`combine_corpora`; one path with the ``native`` taxonomy is exactly ``load_corpus``."""
    paths = [roots_or_root] if isinstance(roots_or_root, (str, Path)) else list(roots_or_root)
    if not paths:
        raise ConfigError("No corpus given; pass at least one corpus folder or CSV file.")
    kinds = [corpus] * len(paths) if isinstance(corpus, str) else list(corpus)
    if len(kinds) != len(paths):
        raise ConfigError(f"{len(kinds)} corpus names for {len(paths)} corpora; give one name, or one per corpus.")
    get_taxonomy(taxonomy, len(paths))  # an unknown name fails before anything is read
    return combine_corpora([load_corpus(p, corpus=k, roots=roots) for p, k in zip(paths, kinds)], taxonomy)


def combine_corpora(loaded: list[Corpus], taxonomy: str | None = None) -> Corpus:
    """Loaded corpora as one :class:`Corpus`, their labels mapped by ``taxonomy`` (None: ``native`` for one,
    ``shared`` for several); clips whose label it leaves out are listed in ``skipped``. With several corpora
    each clip's ``corpus`` column names its corpus (a name two of them share gets ``-2``, ``-3``), its
    ``speaker`` is namespaced by it (``emodb:03`` is not ``ravdess:03``; ``unknown`` stays unknown) and
    ``native_emotion`` keeps the corpus's own label. One corpus with the ``native`` taxonomy comes back as it is."""
    tax = get_taxonomy(taxonomy, len(loaded))
    if len(loaded) == 1 and tax.name == "native":
        return loaded[0]
    names, parts, frames, skipped = [], [], [], []
    for c in loaded:
        name = c.name if c.name not in names else f"{c.name}-{sum(n.split('-')[0] == c.name for n in names) + 1}"
        names.append(name)
        parts.append((name, c.root))
        m = c.manifest.copy()
        m["corpus"], m["native_emotion"] = name, m["emotion"]
        if len(loaded) > 1:
            known = m["speaker"].astype(str) != "unknown"
            m.loc[known, "speaker"] = name + SPEAKER_SEP + m.loc[known, "speaker"].astype(str)
        frames.append(m)
        skipped += c.skipped
    df = pd.concat(frames, ignore_index=True)
    df["emotion"] = df["emotion"].map(tax.map_label)
    left_out = df["emotion"].isna()
    skipped += [(p, f"label '{e}' is left out by the {tax.name} taxonomy")
                for p, e in zip(df.loc[left_out, "path"], df.loc[left_out, "native_emotion"])]
    df = df[~left_out].reset_index(drop=True)
    if df.empty:
        raise CorpusError(f"No clips left: the {tax.name} taxonomy leaves out every label of {', '.join(names)}.")
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    df = df[list(MANIFEST_COLUMNS) + extra]
    return Corpus(name=CORPUS_JOIN.join(names), root=loaded[0].root, manifest=df, skipped=sorted(skipped),
                  parts=tuple(parts), taxonomy=tax.name)


def clip_fields(paths, corpus: str, fields=("speaker", "gender", "intensity")) -> pd.DataFrame:
    """``fields`` of clips as their file names tell them under ``corpus``'s naming convention (e.g. the paths of a
    saved run's out-of-fold predictions, whose clips may no longer be on disk); ``"unknown"`` where the name says
    nothing (a custom folder or CSV, CREMA-D's gender). One row per path, in order."""
    adapter = _ADAPTERS.get(_ALIASES.get(corpus, corpus))
    rows = []
    for p in map(Path, paths):
        try:
            parsed = adapter.parse(p, p.parent) if adapter else None
        except _Skip:
            parsed = None
        rows.append({f: str((parsed or {}).get(f, "unknown")) for f in fields})
    return pd.DataFrame(rows, columns=list(fields))


def _ordered_counts(values: pd.Series, order: tuple[str, ...]) -> dict[str, int]:
    counts = Counter(values)
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    return {k: int(counts[k]) for k in keys}


def corpus_info(corpus: Corpus) -> dict:
    """JSON-ready summary: clips, speakers, clip counts per emotion (taxonomy order first) and per gender,
    total duration in seconds, and the first 20 skipped files."""
    m = corpus.manifest
    return {
        "corpus": corpus.name,
        "root": str(corpus.root),
        "clips": int(len(m)),
        "speakers": int(m["speaker"].nunique()),
        "emotions": _ordered_counts(m["emotion"], EMOTIONS + EXTRA_EMOTIONS),
        "genders": _ordered_counts(m["gender"], ("male", "female", "unknown")),
        "duration_s": round(float(m["duration_s"].sum()), 1),
        "skipped": [{"path": p, "reason": r} for p, r in corpus.skipped[:20]],
        "skipped_count": len(corpus.skipped),
    }


__all__ = ["EMOTIONS", "EXTRA_EMOTIONS", "AUDIO_EXTS", "MANIFEST_COLUMNS", "LABEL_ALIASES", "Corpus",
           "CorpusError", "CORPUS_JOIN", "SPEAKER_SEP", "clip_fields", "combine_corpora", "load_corpus", "load_corpora",
           "detect_corpus", "list_corpora", "corpus_info", "normalize_label", "audio_duration"]
