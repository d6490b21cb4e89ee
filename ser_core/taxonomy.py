"""The emotion taxonomy: one set of labels across corpora, and the arousal and valence each label stands for.

Every corpus adapter (``ser_core.corpora``) maps its own codes onto the labels of :data:`EMOTIONS` (plus
:data:`EXTRA_EMOTIONS`): RAVDESS ``05`` and EmoDB ``W`` are both ``angry``, TESS's "pleasant surprise" is
``surprised``. A run on several corpora then maps those labels once more with a named :class:`Taxonomy`:

- ``native``: every label as its corpus has it (the default for one corpus, as before).
- ``shared`` (the default for several corpora): the seven labels that emotional-speech corpora share (neutral,
  happy, sad, angry, fearful, disgust, surprised). RAVDESS's *calm* becomes *neutral*: it is a second neutral
  (both low arousal, neither positive nor negative), only RAVDESS has it, and a model trained with it labels
  other corpora's neutral clips *calm* -- a wrong answer on every corpus without it. EmoDB's *boredom* and
  *contempt* (in no shared corpus) are left out of the categories: a label that one corpus of 10 German
  speakers has cannot be learnt so that it carries to other corpora, and no other corpus could test it.

Arousal (calm <-> excited) and valence (negative <-> positive) are read from a model's category probabilities:
the probability of "high" arousal is the sum of the probabilities of angry, fearful, happy and surprised. These
two-class and three-class views carry across corpora better than the categories do (see docs/cross_corpus.md).

    >>> get_taxonomy("shared").map_label("calm"), get_taxonomy("shared").map_label("boredom")
    ('neutral', None)
    >>> dimension_proba(np.array([[0.5, 0.3, 0.2]]), ["angry", "sad", "neutral"], "arousal")
    (array([[0.5, 0.5]]), ('high', 'low'))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
EXTRA_EMOTIONS = ("boredom", "contempt")

# Label spellings of custom folders / CSVs mapped onto the taxonomy; anything else is kept lower-case.
LABEL_ALIASES = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "happiness": "happy", "happy": "happy", "joy": "happy",
    "sadness": "sad", "sad": "sad",
    "fear": "fearful", "fearful": "fearful", "afraid": "fearful", "scared": "fearful",
    "disgust": "disgust", "disgusted": "disgust",
    "surprise": "surprised", "surprised": "surprised", "ps": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
    "neutral": "neutral", "neutrality": "neutral", "calm": "calm", "calmness": "calm",
    "boredom": "boredom", "bored": "boredom", "contempt": "contempt",
}


def normalize_label(label: str) -> str:
    """Map a free-form label onto the taxonomy where obvious (``"Anger"`` -> ``"angry"``), else lower-case it."""
    key = str(label).strip().lower().replace(" ", "_").replace("-", "_")
    return LABEL_ALIASES.get(key, key)


@dataclass(frozen=True)
class Taxonomy:
    """A mapping of labels applied to every clip of a run. ``mapping``: label -> label, or None to leave the clip
    out; a label it does not name stays as it is."""

    name: str
    description: str
    mapping: dict = field(default_factory=dict)

    def map_label(self, label: str) -> str | None:
        """The label ``label`` becomes (None: the clip is left out)."""
        return self.mapping.get(label, label)

    def dropped(self) -> tuple[str, ...]:
        """Labels whose clips this taxonomy leaves out."""
        return tuple(k for k, v in self.mapping.items() if v is None)


TAXONOMIES: dict[str, Taxonomy] = {t.name: t for t in [
    Taxonomy("native", "every corpus's own labels (RAVDESS keeps calm, EmoDB keeps boredom)"),
    Taxonomy("shared", "the 7 labels emotional-speech corpora share: calm counted as neutral, boredom and "
                       "contempt left out", {"calm": "neutral", "boredom": None, "contempt": None}),
]}
DEFAULT_SINGLE, DEFAULT_MULTI = "native", "shared"  # the taxonomy of a run on one corpus / on several


def get_taxonomy(name: str | None, n_corpora: int = 1) -> Taxonomy:
    """The taxonomy called ``name`` (None: ``native`` for one corpus, ``shared`` for several)."""
    name = name or (DEFAULT_SINGLE if n_corpora <= 1 else DEFAULT_MULTI)
    try:
        return TAXONOMIES[name]
    except KeyError:
        raise ConfigError(f"Unknown taxonomy '{name}'; choose from {', '.join(TAXONOMIES)}.") from None


# -- arousal and valence -------------------------------------------------------------------------------------
# Each label's level on the two dimensions (Russell's circumplex, as used in cross-corpus work): arousal high for
# the "excited" emotions; valence positive for happy and (pleasant) surprise, neutral for neutral and calm.
DIMENSIONS: dict[str, dict[str, str]] = {
    "arousal": {"angry": "high", "fearful": "high", "happy": "high", "surprised": "high",
                "neutral": "low", "calm": "low", "sad": "low", "disgust": "low", "boredom": "low", "contempt": "low"},
    "valence": {"happy": "positive", "surprised": "positive", "neutral": "neutral", "calm": "neutral",
                "angry": "negative", "fearful": "negative", "sad": "negative", "disgust": "negative",
                "boredom": "negative", "contempt": "negative"},
}
LEVELS = {"arousal": ("high", "low"), "valence": ("negative", "neutral", "positive")}
LEVEL_WORDS = {"arousal": {"high": "excited", "low": "calm"},  # what the Demo and the CLI say
               "valence": {"negative": "negative", "neutral": "neutral", "positive": "positive"}}


def has_dimension(labels, dimension: str) -> bool:
    """True when every label of ``labels`` has a level on ``dimension`` and at least two levels occur."""
    levels = DIMENSIONS[dimension]
    return all(str(l) in levels for l in labels) and len({levels[str(l)] for l in labels}) >= 2


def dimension_labels(labels, dimension: str) -> np.ndarray:
    """Each label's level on ``dimension`` (``(n,)`` str; a label without one: ``""``)."""
    levels = DIMENSIONS[dimension]
    return np.asarray([levels.get(str(l), "") for l in labels], dtype=object).astype(str)


def dimension_proba(proba, classes, dimension: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(n, k)`` category probabilities (columns in ``classes`` order) -> ``(n, levels)`` probabilities of the
    levels of ``dimension`` (sums of their categories' columns) and the levels, in :data:`LEVELS` order. A class
    without a level adds to none (the rows then sum to less than 1)."""
    proba = np.asarray(proba, dtype=float)
    levels = LEVELS[dimension]
    of = dimension_labels(classes, dimension)
    out = np.stack([proba[:, of == lv].sum(axis=1) for lv in levels], axis=1)
    return out, levels


def dimension_reading(probs: dict) -> dict:
    """What the Demo and the CLI say of one prediction (``{label: probability}``) on each dimension its labels
    allow: ``{"arousal": {"high": 0.7, "low": 0.3}, "valence": {...}}``."""
    labels, p = list(probs), np.asarray([list(probs.values())], dtype=float)
    out = {}
    for dim in DIMENSIONS:
        if has_dimension(labels, dim):
            values, levels = dimension_proba(p, labels, dim)
            out[dim] = {lv: float(v) for lv, v in zip(levels, values[0])}
    return out


__all__ = ["EMOTIONS", "EXTRA_EMOTIONS", "LABEL_ALIASES", "normalize_label", "Taxonomy", "TAXONOMIES",
           "get_taxonomy", "DIMENSIONS", "LEVELS", "LEVEL_WORDS", "has_dimension", "dimension_labels",
           "dimension_proba", "dimension_reading"]
