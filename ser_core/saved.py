"""Trained models on disk: ``<root>/<name>/`` holds the model (``model.json`` + weights) and its model card
(``card.json`` for programs, ``README.md`` for people).

Two folders, and this module is the one place that knows them:

- the **shipped** models (``shipped_models_dir()``: the repository's ``trained_models/``, or ``$SER_MODELS_DIR``)
  are read-only: only ``save_trained(..., replace_shipped=True)`` (``train --replace-shipped``, which
  ``scripts/train_defaults.py`` passes) writes there, and none is ever deleted;
- **your** models (``user_models_dir()``: ``$SER_USER_MODELS_DIR``, default ``~/.cache/ser_studio/models``
  beside the results store) are the ones the Train page and ``train`` save, each under a name of its own
  (``user_model_name``: model, data, run, e.g. ``svm-samples-run12``), never over another; you may delete them.

Readers (``list_trained``, ``resolve``, ``load_trained``) see both, the shipped ones first.
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import secrets
import shutil
import socket
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import ConfigError, ModelNotFoundError
from .roots import SAMPLES

CARD_JSON = "card.json"
LOCK_NAME = ".ser-models.lock"  # see models_lock
SPEAKER_NORM = "speaker_norm.npz"  # global feature statistics of a speaker-adaptive model's training data
OOF = "oof.npz"  # the cross-validation's out-of-fold predictions (proba, classes, fold, y, paths), for stacking
TRANSFER_OOF = "transfer_oof.npz"  # those of its leave-one-corpus-out run (models trained on several corpora)
CALIBRATION_PRIOR_CLIPS = 10  # a calibrated speaker's spread is shrunk toward the training speakers' (see
# SpeakerNormalizer: with 5 calibration clips UAR 0.50 instead of 0.15 on held-out RAVDESS actors)
SHIPPED, YOURS = "shipped", "yours"  # where a saved model comes from (a card's ``source`` in list_trained)
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "trained_models"  # what the app ships with


def shipped_models_dir() -> Path:
    """The shipped models: ``$SER_MODELS_DIR``, default the repository's ``trained_models/``. Read-only."""
    env = os.environ.get("SER_MODELS_DIR")
    return Path(env) if env else SHIPPED_MODELS


def user_models_dir() -> Path:
    """The models a user trains: ``$SER_USER_MODELS_DIR``, default ``~/.cache/ser_studio/models``."""
    env = os.environ.get("SER_USER_MODELS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ser_studio" / "models"


def _same_dir(a, b) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_writable(root, *, replace_shipped: bool = False) -> None:
    """Refuse to save into the shipped models folder ``root`` unless ``replace_shipped`` (a ``ConfigError``
    that says what to do); any other folder is fine."""
    if not replace_shipped and _same_dir(root, shipped_models_dir()):
        raise ConfigError(f"'{root}' holds the shipped models, which training never overwrites; save into your "
                          "models folder (leave out --models-dir), or pass --replace-shipped to replace them.")


def data_label(corpus_name: str, root) -> str:
    """How a model's name calls its training data: ``samples`` for the bundled clips, else the corpus name."""
    inside = os.path.realpath(root).startswith(os.path.realpath(SAMPLES) + os.sep)
    return "samples" if inside else corpus_name


def user_model_name(model: str, data: str, run_id) -> str:
    """The folder name of a model a user trains: ``<model>-<data>-run<id>`` (``svm-samples-run12``; the run is
    the results store's, so the Leaderboard and the Demo name the same thing), or a time stamp without a run."""
    slug = re.sub(r"[^a-z0-9_]+", "_", str(data).lower()).strip("_") or "data"
    run = f"run{run_id}" if run_id is not None else datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{model}-{slug}-{run}"


def user_model_path(model: str, data: str, run_id, root=None) -> Path:
    """``<root>/<user_model_name(...)>``; root None: ``user_models_dir()``. Pass it to ``cross_validate`` as
    ``save_to=partial(user_model_path, model, data, root=...)``: the run id is known once the run starts."""
    return Path(root or user_models_dir()) / user_model_name(model, data, run_id)


def model_roots(root=None) -> list[tuple[str, Path]]:
    """``[(source, folder)]`` to read saved models from: ``root`` alone, or the shipped folder then yours."""
    if root is not None:
        return [(SHIPPED if _same_dir(root, shipped_models_dir()) else YOURS, Path(root))]
    return [(SHIPPED, shipped_models_dir()), (YOURS, user_models_dir())]


def save_trained(model, directory, *, card: dict | None = None, speaker_norm=None, oof=None, transfer_oof=None,
                 familiarity=None, on_saved=None, replace: bool = True, replace_shipped: bool = False,
                 should_stop=None, extra_oofs: dict | None = None) -> Path:
    """Save a fitted model into ``directory`` with its model card; returns the folder (absolute).

    The model is written into a temporary folder of its own beside ``directory`` (``.<name>.tmp-...``, which
    readers skip) and then swapped in while the models folder is locked (see ``models_lock``): readers see the
    previous model until the new one is complete, and two processes saving at once never mix their files;
    the one that swaps last wins. on_saved: callable(directory, card of the model replaced or None), called
    after the swap while the folder is still locked (e.g. to record which run the folder now holds).

    replace: False never replaces a model: when ``directory`` exists the model is saved as ``<name>-2``,
    ``-3``, ... (picked under the lock; the card names the folder it got). replace_shipped: without it, saving
    into the shipped models folder is a ``ConfigError`` (see ``check_writable``).

    speaker_norm: the ``SpeakerNormalizer`` fitted on the training data of a model trained on per-speaker
    z-scored features; its global statistics are saved (``speaker_norm.npz``) as the un-calibrated fallback.
    oof: the out-of-fold predictions of the cross-validation that judged it, saved as ``oof.npz`` (arrays
    ``proba``, ``classes``, ``fold``, ``y``, ``paths``; see ``load_oof``); transfer_oof: those of its
    leave-one-corpus-out run, ``transfer_oof.npz`` (``load_oof(directory, TRANSFER_OOF)``); familiarity: the
    ``ser_core.familiarity.Familiarity`` of its training clips, ``familiarity.npz``, which its calibration
    reads (``load_familiarity``); extra_oofs: ``{file name: arrays}`` of more predictions (an ensemble's
    adapted pooling). should_stop: callable() -> bool, asked once the model is written, before it
    is swapped in: True (a cancel) raises ``KeyboardInterrupt`` and leaves nothing behind."""
    directory = Path(os.path.abspath(directory))
    check_writable(directory.parent, replace_shipped=replace_shipped)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_dir(directory, "tmp")
    try:
        _write_model(model, tmp, directory.name, card, speaker_norm, oof)
        import numpy as np

        for file, arrays in {TRANSFER_OOF: transfer_oof, **(extra_oofs or {})}.items():
            if arrays is not None:
                np.savez_compressed(tmp / file, **{k: np.asarray(v) for k, v in arrays.items()})
        if familiarity is not None:
            from .familiarity import FAMILIARITY_FILE

            familiarity.save(tmp / FAMILIARITY_FILE)
        if transfer_oof is not None or familiarity is not None or extra_oofs:
            _resize_card(tmp)
        if should_stop is not None and should_stop():  # the last moment a save can be undone
            raise KeyboardInterrupt("cancelled")
        with models_lock(directory.parent):
            _remove_stale_temps(directory)
            if not replace:
                directory = _free_name(directory)
                _rename_card(tmp, directory.name)
            previous = read_card(directory) if (directory / CARD_JSON).is_file() else None
            _swap_in(tmp, directory)
            if on_saved is not None:
                on_saved(directory, previous)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless the save failed
    return directory


class PackedModel:
    """A fitted model as the bytes of its saved folder (an uncompressed tar of what ``model.save`` writes), with
    what a model card reads of the model: how a Ray task hands the driver a model it trained, whatever its
    family (a Keras or torch model need not pickle). ``save_trained`` saves it as it saves the model itself."""

    def __init__(self, blob: bytes, *, name, framework, feature_set, classes_, params, notes=None):
        self.blob, self.name, self.framework, self.feature_set = blob, name, framework, feature_set
        self.classes_, self.params, self.notes = classes_, params, notes

    @classmethod
    def pack(cls, model) -> "PackedModel":
        import io
        import tarfile
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            folder = model.save(Path(tmp) / "m")
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for f in sorted(folder.rglob("*")):
                    tar.add(f, arcname=str(f.relative_to(folder)), recursive=False)
        notes = getattr(model, "card_notes", None)
        return cls(buf.getvalue(), name=model.name, framework=model.framework, feature_set=model.feature_set,
                   classes_=list(model.classes_), params=model.get_params(),
                   notes=notes() if callable(notes) else None)

    def save(self, directory) -> Path:
        """Unpack the saved folder into ``directory``."""
        import io
        import tarfile

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(self.blob)) as tar:
            tar.extractall(directory, filter="data")
        return directory

    def get_params(self) -> dict:
        return self.params

    def card_notes(self):
        return self.notes


def _free_name(directory: Path) -> Path:
    """``directory``, or ``<name>-2``, ``-3``, ... where that one is taken (call under the folder's lock)."""
    candidate, n = directory, 1
    while candidate.exists():
        n += 1
        candidate = directory.with_name(f"{directory.name}-{n}")
    return candidate


def _rename_card(folder: Path, name: str) -> None:
    """Give the model card in ``folder`` the name ``name`` (the folder it is about to become)."""
    card = json.loads((folder / CARD_JSON).read_text())
    if card.get("name") != name:
        card["name"] = name
        (folder / CARD_JSON).write_text(json.dumps(card, indent=2, default=str))
        (folder / "README.md").write_text(render_card(card))


def delete_user_model(name: str, *, root=None, store=None) -> Path:
    """Delete your model ``name`` (a folder of ``user_models_dir()``, or of ``root``), under the folder's lock;
    a shipped model is refused (``ConfigError``), and so is a name that is no saved model of yours. store: a
    ``ResultsStore`` whose run named this folder as its saved model forgets it. Returns the folder deleted."""
    root, name = Path(os.path.abspath(root or user_models_dir())), str(name)  # absolute, as the store names it
    plain_name = Path(name).name == name and not is_temporary(name)  # a folder name, not a path
    if plain_name and (shipped_models_dir() / name / "model.json").is_file() or _same_dir(root, shipped_models_dir()):
        raise ConfigError(f"'{name}' is a shipped model; shipped models cannot be deleted, only your own.")
    directory = root / name
    if not plain_name or not (directory / "model.json").is_file():
        mine = [c["name"] for c in list_trained(root)]
        raise ModelNotFoundError(f"You have no model '{name}'; yours are: {', '.join(mine) or 'none'}.")
    with models_lock(root):
        card = read_card(directory)
        gone = _temp_dir(directory, "old")  # renamed away at once: readers never see half a folder
        gone.rmdir()
        directory.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)
    run_id = card.get("cv", {}).get("run_id")
    if store is not None and run_id is not None:
        store.forget_saved_model(run_id, directory)
    return directory


def _write_model(model, folder: Path, name: str, card, speaker_norm, oof) -> None:
    """The model, its card (``card.json``, ``README.md``) and optional arrays, written into ``folder``."""
    import numpy as np

    from .features import get_feature_set

    model.save(folder)
    features = get_feature_set(model.feature_set).params() if model.feature_set else {"name": None, "kind": None}
    full = {
        "name": name,
        "model": model.name,
        "framework": model.framework,
        "labels": [str(c) for c in model.classes_],
        "feature_set": features,
        "params": {k: v for k, v in model.get_params().items() if _is_json(v)},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(card or {}),
        "speaker_norm": speaker_norm is not None,
    }
    if speaker_norm is not None:
        np.savez(folder / SPEAKER_NORM, mean=speaker_norm.global_mean_, scale=speaker_norm.global_scale_,
                 within_scale=speaker_norm.within_scale_)
    if oof is not None:  # compressed: the paths, speakers and labels repeat (2.3 MB -> 0.4 MB for 4,214 clips)
        np.savez_compressed(folder / OOF, **{k: np.asarray(v) for k, v in oof.items()})
    extra = getattr(model, "card_notes", None)  # e.g. VGG16: which weights were loaded
    notes = extra() if callable(extra) else None
    if notes is not None:
        full["notes"] = notes
    full["size_bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    (folder / CARD_JSON).write_text(json.dumps(full, indent=2, default=str))
    (folder / "README.md").write_text(render_card(full))


# -- atomic swap and the models folder's lock ------------------------------------------------------------------
_held = threading.local()  # lock files this thread holds: flock conflicts between two open()s of one process


@contextmanager
def models_lock(root, *, shared: bool = False):
    """Hold the ``fcntl.flock`` of a models folder (``<root>/.ser-models.lock``): exclusive while a model is
    swapped in, ``shared`` while one is read. Re-entrant within a thread. A folder where the lock file cannot
    be created (read-only: nobody can save there) is read without it."""
    path = Path(root) / LOCK_NAME
    held = _held.__dict__.setdefault("modes", {})  # lock file -> shared?
    key = os.path.abspath(path)
    if key in held:
        if held[key] and not shared:
            raise RuntimeError("models_lock: cannot save while this thread holds the folder's lock for reading")
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            if not shared:
                raise
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        held[key] = shared
        try:
            yield
        finally:
            del held[key]
    finally:
        os.close(fd)  # releases the flock


def is_temporary(name: str) -> bool:
    """A folder name that is not a saved model: a save in progress or left by a killed one (``.<name>.tmp-*``,
    ``.<name>.old-*``), the lock file, or a leftover of older versions (``<name>.tmp-save``)."""
    return name.startswith(".") or ".tmp-" in name


def _temp_dir(directory: Path, kind: str) -> Path:
    """A new folder ``.<name>.<kind>-<host>-<pid>-<random>`` beside ``directory`` (same file system), with the
    permissions of any new folder (``tempfile.mkdtemp``'s 0700 would hide the model from other users)."""
    while True:
        path = directory.with_name(f".{directory.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"
                                   f"{secrets.token_hex(4)}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _remove_stale_temps(directory: Path) -> None:
    """Delete the temporary folders of ``directory`` left by processes of this host that are gone (killed mid-
    save); those of live processes, or of other hosts sharing the folder, are theirs."""
    host, prefix = socket.gethostname(), f".{directory.name}."
    for p in directory.parent.glob(f"{glob.escape(prefix)}*-*"):
        kind, _, owner = p.name[len(prefix):].partition("-")
        p_host, _, pid = owner.rpartition("-")[0].rpartition("-")  # <host>-<pid>-<random>
        if kind in ("tmp", "old") and p_host == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _swap_in(new: Path, directory: Path) -> None:
    """Move the complete folder ``new`` to ``directory``. An existing ``directory`` is exchanged with it in one
    step (``renameat2(RENAME_EXCHANGE)``) and then deleted; where the kernel or file system cannot exchange,
    it is renamed away, ``new`` renamed in and the old one deleted (readers hold the lock, see
    ``models_lock``)."""
    if not directory.exists():
        new.rename(directory)
        return
    if _exchange(new, directory):
        shutil.rmtree(new)  # holds the previous model now
        return
    old = _temp_dir(directory, "old")
    old.rmdir()
    directory.rename(old)
    new.rename(directory)
    shutil.rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 (macOS, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _is_json(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def resolve(name_or_path, root=None) -> Path:
    """The folder of a saved model: a path to one, or a name under ``root`` (None: the shipped folder, then
    yours)."""
    p = Path(name_or_path)
    if (p / "model.json").is_file():
        return p
    for _, folder in model_roots(root):
        if (folder / str(name_or_path) / "model.json").is_file():
            return folder / str(name_or_path)
    names = [c["name"] for c in list_trained(root)]
    where = root or f"{shipped_models_dir()} or {user_models_dir()}"
    raise ModelNotFoundError(
        f"No trained model '{name_or_path}' in {where}. Available: {', '.join(names) or 'none'}; "
        f"train one with `python -m ser_core train`.")


def read_card(directory) -> dict:
    path = Path(directory) / CARD_JSON
    card = json.loads(path.read_text()) if path.is_file() else {}
    card.setdefault("name", Path(directory).name)
    return card


def load_speaker_norm(directory, unseen: str = "global"):
    """The training statistics of a speaker-adaptive model (card ``speaker_norm``) as a ``SpeakerNormalizer``
    that knows no speaker (see ``SpeakerNormalizer.from_stats``); a speaker's own statistics (calibration,
    ``unseen="self"``) are shrunk toward the training speakers' spread by ``CALIBRATION_PRIOR_CLIPS``."""
    import numpy as np

    from .features import SpeakerNormalizer

    path = Path(directory) / SPEAKER_NORM
    if not path.is_file():
        raise ModelNotFoundError(f"The speaker-adaptive model in '{directory}' lacks its training statistics "
                                 f"({SPEAKER_NORM}); retrain it.")
    with np.load(path) as z:
        return SpeakerNormalizer.from_stats(z["mean"], z["scale"], z["within_scale"], unseen=unseen,
                                            prior_clips=CALIBRATION_PRIOR_CLIPS)


def load_familiarity(directory):
    """The ``ser_core.familiarity.Familiarity`` saved with a model, or None (a model whose calibration reads no
    familiarity score)."""
    from .familiarity import FAMILIARITY_FILE, Familiarity

    path = Path(directory) / FAMILIARITY_FILE
    return Familiarity.load(path) if path.is_file() else None


def _resize_card(folder: Path) -> None:
    """The card's ``size_bytes`` again, after more files were written beside the model."""
    card = json.loads((folder / CARD_JSON).read_text())
    card["size_bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, default=str))
    (folder / "README.md").write_text(render_card(card))


def load_oof(directory, name: str = OOF) -> dict | None:
    """A saved model's out-of-fold predictions ``{"proba": (n, k) float, "classes": (k,) str, "fold": (n,) int,
    "y": (n,) str, "paths": (n,) str}`` (numpy arrays; ``name``: ``OOF``, or ``TRANSFER_OOF`` for its
    leave-one-corpus-out run), or None when the folder has none (older models)."""
    import numpy as np

    path = Path(directory) / name
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_trained(name_or_path, root=None):
    """``(model, card)`` for a saved model given by name (under ``root``) or by folder path."""
    from .models.base import load_model_dir

    directory = resolve(name_or_path, root)
    with models_lock(directory.parent, shared=True):  # never half of a model being swapped
        return load_model_dir(directory), read_card(directory)


def list_trained(root=None) -> list[dict]:
    """The cards of all saved models under ``root`` (None: the shipped ones, then yours), each sorted by name
    and with its ``source`` (``SHIPPED`` or ``YOURS``); a model of yours with a shipped model's name is hidden."""
    cards: list[dict] = []
    for source, folder in model_roots(root):
        if not folder.is_dir():
            continue
        seen = {c["name"] for c in cards}
        with models_lock(folder, shared=True):
            cards += [{**read_card(d), "source": source} for d in sorted(folder.iterdir())
                      if d.is_dir() and not is_temporary(d.name) and (d / "model.json").is_file()
                      and d.name not in seen]
    return cards


SPEAKER_ADAPTIVE_NOTE = (
    "- Speaker-adaptive: trained on features z-scored per speaker. Calibrate it with 5 or more clips of the "
    "speaker to be judged (`predict --calibrate`); without them it z-scores with the training data's statistics "
    "and is less accurate. Its CV metrics normalise each test speaker with that speaker's own unlabelled clips.")


CALIBRATION_NOTE = (
    "- Calibrated ({method}): probabilities rescaled by temperature {temperature:.2f} (fitted on the CV's "
    "out-of-fold predictions; ECE {ece_uncalibrated:.3f} before, {ece:.3f} after, cross-fitted); an answer whose "
    "top probability is below {threshold:.2f} is reported as not sure.")


def render_card(card: dict) -> str:
    cv = card.get("cv", {})
    metrics = cv.get("metrics", {})
    data = card.get("training_data", {})
    rows = "\n".join(f"| {m} | {metrics[m]['mean']:.3f} ± {metrics[m]['std']:.3f} |"
                     for m in ("uar", "accuracy", "macro_f1", "weighted_precision", "weighted_recall", "ece",
                               "brier") if m in metrics)
    notes = card.get("notes")
    cal = card.get("calibration")
    return f"""# Model card: {card['name']}

- Model: `{card['model']}` ({card['framework']}), parameters: `{json.dumps(card.get('params', {}))}`
- Labels: {', '.join(card['labels'])}
- Features: `{card['feature_set'].get('name')}` ({card['feature_set'].get('kind')})
- Training data: {data.get('corpus', '?')}, {data.get('clips', '?')} clips, {data.get('speakers', '?')} speakers
  (fingerprint `{data.get('fingerprint', '?')}`)
- Evaluation: {cv.get('k', '?')}-fold, {cv.get('split_description', cv.get('split', '?'))}, seed {cv.get('seed', '?')}
{SPEAKER_ADAPTIVE_NOTE if card.get('speaker_norm') else ''}
{('- Notes: ' + json.dumps(notes)) if notes else ''}
{CALIBRATION_NOTE.format(**{'method': 'temperature', **cal}) if cal else ''}

| metric | mean ± std over folds |
|---|---|
{rows}

Created {card.get('created_at')} with {json.dumps(card.get('versions', {}))}.
"""
