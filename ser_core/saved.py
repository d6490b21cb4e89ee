"""Trained models on disk: ``<root>/<name>/`` holds the model (``model.json`` + weights) and its model card
(``card.json`` for programs, ``README.md`` for people).

The default root is the repo's ``trained_models/`` (the models the app ships with), or ``$SER_MODELS_DIR``.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .errors import ModelNotFoundError

CARD_JSON = "card.json"
SPEAKER_NORM = "speaker_norm.npz"  # global feature statistics of a speaker-adaptive model's training data
OOF = "oof.npz"  # the cross-validation's out-of-fold predictions (proba, classes, fold, y, paths), for stacking
CALIBRATION_PRIOR_CLIPS = 10  # a calibrated speaker's spread is shrunk toward the training speakers' (see
# SpeakerNormalizer: with 5 calibration clips UAR 0.50 instead of 0.15 on held-out RAVDESS actors)


def default_models_dir() -> Path:
    env = os.environ.get("SER_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "trained_models"


def save_trained(model, directory, *, card: dict | None = None, speaker_norm=None, oof=None) -> Path:
    """Save a fitted model into ``directory`` (replaced atomically) with its model card; returns the folder.

    speaker_norm: the ``SpeakerNormalizer`` fitted on the training data of a model trained on per-speaker
    z-scored features; its global statistics are saved (``speaker_norm.npz``) as the un-calibrated fallback.
    oof: the out-of-fold predictions of the cross-validation that judged it, saved as ``oof.npz`` (arrays
    ``proba``, ``classes``, ``fold``, ``y``, ``paths``; see ``load_oof``)."""
    import numpy as np

    from .features import get_feature_set

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp-save")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    features = get_feature_set(model.feature_set).params() if model.feature_set else {"name": None, "kind": None}
    full = {
        "name": directory.name,
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
        np.savez(tmp / SPEAKER_NORM, mean=speaker_norm.global_mean_, scale=speaker_norm.global_scale_,
                 within_scale=speaker_norm.within_scale_)
    if oof is not None:
        np.savez(tmp / OOF, **{k: np.asarray(v) for k, v in oof.items()})
    extra = getattr(model, "card_notes", None)  # e.g. VGG16: which weights were loaded
    if callable(extra):
        full["notes"] = extra()
    full["size_bytes"] = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    (tmp / CARD_JSON).write_text(json.dumps(full, indent=2, default=str))
    (tmp / "README.md").write_text(render_card(full))
    old = directory.with_name(directory.name + ".tmp-old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _is_json(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def resolve(name_or_path, root=None) -> Path:
    p = Path(name_or_path)
    if (p / "model.json").is_file():
        return p
    root = Path(root) if root else default_models_dir()
    if (root / str(name_or_path) / "model.json").is_file():
        return root / str(name_or_path)
    names = [c["name"] for c in list_trained(root)]
    raise ModelNotFoundError(
        f"No trained model '{name_or_path}' in {root}. Available: {', '.join(names) or 'none'}; "
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


def load_oof(directory) -> dict | None:
    """A saved model's out-of-fold predictions ``{"proba": (n, k) float, "classes": (k,) str, "fold": (n,) int,
    "y": (n,) str, "paths": (n,) str}`` (numpy arrays), or None when the folder has none (older models)."""
    import numpy as np

    path = Path(directory) / OOF
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_trained(name_or_path, root=None):
    """``(model, card)`` for a saved model given by name (under ``root``) or by folder path."""
    from .models.base import load_model_dir

    directory = resolve(name_or_path, root)
    return load_model_dir(directory), read_card(directory)


def list_trained(root=None) -> list[dict]:
    """The cards of all saved models under ``root``, sorted by name."""
    root = Path(root) if root else default_models_dir()
    if not root.is_dir():
        return []
    return [read_card(d) for d in sorted(root.iterdir())
            if d.is_dir() and (d / "model.json").is_file() and not d.name.endswith((".tmp-save", ".tmp-old"))]


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
