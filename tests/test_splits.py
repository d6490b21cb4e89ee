"""The split registry is the one definition of the evaluation protocols: the CLI offers its names, the checks
read its flags, and each name builds the splitter it promises."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.cli import build_parser
from ser_core.errors import ConfigError
import pandas as pd

from ser_core.splits import CROSS_CORPUS, LEAVE_CORPUS_OUT, SPLIT_CHOICES, SPLITS, fold_groups, get_split, make_splitter


def test_the_cli_offers_every_within_corpus_split_and_no_other():
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "split")
    assert list(train.choices) == SPLIT_CHOICES == ["speaker", "random", "loso", "holdout", "corpus"]
    assert CROSS_CORPUS in SPLITS and CROSS_CORPUS not in SPLIT_CHOICES  # chosen by giving a test corpus


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by StratifiedKFold")  # random: on purpose
def test_each_split_keeps_its_promise_about_speakers():
    y = np.repeat(["angry", "sad"], 40)
    speakers = np.tile(np.repeat(list("abcdefgh"), 5), 2)
    manifest = pd.DataFrame({"emotion": y, "speaker": speakers, "corpus": np.where(speakers < "d", "one", "two")})
    for name in SPLIT_CHOICES:
        folds = list(make_splitter(name, 4, seed=0).split(np.zeros(len(y)), y, fold_groups(name, manifest)))
        shared = [set(speakers[tr]) & set(speakers[te]) for tr, te in folds]
        assert any(shared) == get_split(name).speaker_dependent, name  # only "random" mixes speakers
        assert (len(folds) == 4) == get_split(name).uses_k, name  # loso: one fold per speaker; holdout: one
    corpora = manifest["corpus"].to_numpy()
    folds = list(make_splitter(LEAVE_CORPUS_OUT).split(np.zeros(len(y)), y, fold_groups(LEAVE_CORPUS_OUT, manifest)))
    assert [set(corpora[te]) for _, te in folds] == [{"one"}, {"two"}]  # each corpus held out whole, once
    assert all(not set(corpora[tr]) & set(corpora[te]) for tr, te in folds)


def test_unknown_and_cross_corpus_names_are_one_sentence():
    with pytest.raises(ConfigError, match=r"^Unknown split 'bogus'; choose from speaker, random, loso, holdout, "
                                          r"corpus\.$"):
        get_split("bogus")
    with pytest.raises(ConfigError, match="tests on another corpus"):
        make_splitter(CROSS_CORPUS)
