"""Evaluation protocols by name: the one definition the CLI's choices, the Train page's labels, validation,
the results store and the model cards read.

Speaker-grouped stratified K-fold is the default everywhere: no speaker is in both the training and the test
fold. ``random`` (stratified K-fold ignoring speakers) is offered for comparison with published figures and is
always labelled *speaker-dependent* (optimistic). ``corpus`` (leave one corpus out) holds out each corpus of a
run on several corpora in turn, entirely: its folds are grouped by the manifest's ``corpus`` column instead of
its speakers (``Split.group_by``). ``cross-corpus`` is no splitter: a model is trained on every clip of one
corpus and tested on every clip of another (``ser_core.cross_corpus``).

    >>> get_split("loso").speaker_dependent
    False
    >>> make_splitter("speaker", n_splits=4, seed=0)   # its repr is stored with the results
    StratifiedGroupKFold(n_splits=4, random_state=0, shuffle=True)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .errors import ConfigError

CROSS_CORPUS = "cross-corpus"


@dataclass(frozen=True)
class Split:
    name: str
    label: str  # what the Train page shows
    description: str  # the results' and model cards' record of the protocol
    speaker_dependent: bool = False  # the same speakers in training and test folds: optimistic scores
    uses_k: bool = True  # the user chooses K; False: the protocol fixes the folds
    build: Callable | None = field(default=None, repr=False)  # (n_splits, seed) -> splitter; None: cross-corpus
    group_by: str = "speaker"  # the manifest column whose values never straddle a training and a test fold

    @property
    def within_corpus(self) -> bool:
        """False for a protocol that trains on one corpus and tests on another (it has no splitter)."""
        return self.build is not None


def get_split(name: str) -> Split:
    """The protocol called ``name``; an unknown name is a ``ConfigError`` that lists the choices."""
    try:
        return SPLITS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown split '{name}'; choose from {', '.join(SPLIT_CHOICES)}.") from None


class HoldoutBySpeaker:
    """One stratified split holding out about ``test_size`` of the speakers."""

    def __init__(self, test_size=0.2, random_state=0):
        self.test_size, self.random_state = test_size, random_state

    def split(self, X, y, groups):
        from sklearn.model_selection import StratifiedGroupKFold

        k = max(2, round(1 / self.test_size))
        yield next(StratifiedGroupKFold(k, shuffle=True, random_state=self.random_state).split(X, y, groups))

    def get_n_splits(self, X=None, y=None, groups=None):
        return 1

    def __repr__(self):
        return f"HoldoutBySpeaker(test_size={self.test_size}, random_state={self.random_state})"


def _speaker(n_splits, seed):
    from sklearn.model_selection import StratifiedGroupKFold

    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def _random(n_splits, seed):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def _loso(n_splits, seed):
    from sklearn.model_selection import LeaveOneGroupOut

    return LeaveOneGroupOut()


def _holdout(n_splits, seed):
    return HoldoutBySpeaker(0.2, random_state=seed)


LEAVE_CORPUS_OUT = "corpus"


SPLITS: dict[str, Split] = {s.name: s for s in [
    Split("speaker", "speaker-grouped K-fold (speaker-independent)",
          "stratified K-fold grouped by speaker (speaker-independent)", build=_speaker),
    Split("random", "random K-fold (speaker-dependent, optimistic)",
          "stratified K-fold ignoring speakers (speaker-DEPENDENT: optimistic)", speaker_dependent=True,
          build=_random),
    Split("loso", "leave one speaker out", "leave-one-speaker-out (speaker-independent)", uses_k=False,
          build=_loso),
    Split("holdout", "one 80/20 split by speaker", "one 80/20 split by speaker (speaker-independent)",
          uses_k=False, build=_holdout),
    Split(LEAVE_CORPUS_OUT, "leave one corpus out (several corpora)",
          "leave-one-corpus-out: each corpus in turn held out entirely, trained on the others (speaker- and "
          "corpus-independent)", uses_k=False, build=_loso, group_by="corpus"),
    Split(CROSS_CORPUS, "train on one corpus, test on another",
          "trained on every clip of one corpus, tested on every clip of another (speaker-independent)",
          uses_k=False),
]}
SPLIT_CHOICES = [name for name, s in SPLITS.items() if s.within_corpus]  # what --split and the Train page offer


def make_splitter(split: str = "speaker", n_splits: int = 4, seed: int = 0):
    """A splitter with ``split(X, y, groups)`` for a within-corpus protocol; its ``repr`` is stored with the
    results."""
    if not get_split(split).within_corpus:
        raise ConfigError(f"Split '{split}' tests on another corpus; pass the test corpus instead of a split.")
    return get_split(split).build(n_splits, seed)


def fold_groups(split: str, manifest):
    """``(n,)`` str: what each clip of ``manifest`` is grouped by under ``split`` (its speaker, or its corpus for
    leave-one-corpus-out), the ``groups`` of the splitter's ``split(X, y, groups)``."""
    return manifest[get_split(split).group_by].astype(str).to_numpy()


__all__ = ["CROSS_CORPUS", "LEAVE_CORPUS_OUT", "fold_groups", "SPLIT_CHOICES", "SPLITS", "Split", "HoldoutBySpeaker",
           "get_split", "make_splitter"]
