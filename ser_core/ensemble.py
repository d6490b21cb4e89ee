"""The ensemble as a first-class model: log-linear pooling of saved models, fitted on their out-of-fold
predictions.

    >>> run = fit_ensemble(["lda", "svm", "mlp_tf", "cnn"], store=ResultsStore())   # -> trained_models/ensemble
    >>> p = Predictor.from_dir(["ensemble"])        # loads its members too; predict() returns the ensemble only

The ensemble's probability is ``softmax(sum_m w_m log p_m + b)``, where ``p_m`` is member ``m``'s raw
probability (``predict_proba``, before the member's calibration: ``EnsembleModel.inputs``), ``w_m >= 0`` and
the per-class bias ``b`` minimise the class-balanced negative log-likelihood
of the members' **out-of-fold** predictions (the speaker-grouped cross-validation each member was judged by;
each class weighs the same, as in the UAR the models are judged by, and ``b`` lets the pooling undo the
members' shared leanings toward some classes). Members must come from runs with the same
folds (same data, split, K and seed). The ensemble is cross-validated like the others: fold ``k``'s predictions
use weights fitted on the other folds' out-of-fold predictions only (stacking; the members' out-of-fold
predictions of those folds came from models that had seen fold ``k``'s clips in training, the usual caveat of
stacking, but never fold ``k``'s labels through the weights). Its probabilities are then calibrated
like every model's (``ser_core.evaluation``), and the run is stored (model ``ensemble``) for the Leaderboard.

Robust weights: when every member's cross-validation also scored its test folds through channels
(``RunConfig.channels``, ``train --channels phone,noise10``: out-of-fold arrays ``proba@<channel>``), the weights
minimise the log-likelihood of the clean and the channel predictions together (each condition counted as many
times as ``CONDITION_WEIGHTS`` says, once where it says nothing), so a member that breaks through a phone line or
in noise weighs less; the card records ``weights_fitted_on``, ``condition_weights`` and a ``robustness`` block
(the ensemble's own cross-validated UAR per channel, fold ``k`` pooled with the other folds' weights,
``pool_out_of_fold``, which ``robustness.ensemble_perturbed`` shares).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .models.base import SERModel

ENSEMBLE = "ensemble"  # registry-like name of the family, also the default folder name
L2 = 1e-3  # keeps the weights finite when members agree
# what an ensemble pools of each member: its raw probabilities (the default since they measured better: the
# weights scale each member as a temperature would, and a member's 90 % ceiling hid how sure it was; README),
# or its calibrated ones (as every ensemble saved before the option did)
INPUTS = ("raw", "calibrated")
# how many times a condition's out-of-fold predictions count in the robust fit (others: once). Every condition
# once: since the cnn also learns from a phone-line copy of its clips, counting the phone line twice (as the
# previous recipe did, when the cnn broke there) costs clean UAR and buys no robustness the 0.08 target needs
# (README's table of techniques, `benchmarks/bench_members.py`)
CONDITION_WEIGHTS: dict[str, int] = {}


def _log(p):
    return np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1.0))


def pool(member_probas, weights, bias=None) -> np.ndarray:
    """``softmax(sum_m w_m log p_m + bias)`` of ``member_probas`` (a list of ``(n, k)`` arrays in one class
    order); ``bias`` (``(k,)``, optional) is added to every row."""
    z = sum(w * _log(p) for w, p in zip(weights, member_probas))
    if bias is not None and len(bias):
        z = z + np.asarray(bias, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_pooling(member_probas, y_idx) -> tuple[np.ndarray, np.ndarray]:
    """``(weights, bias)`` of ``pool``: non-negative member weights and a per-class bias minimising the
    class-balanced mean negative log-likelihood (each class's clips weigh ``n / (k n_class)``), plus a small L2
    term on both. Class-balanced because the models are judged by UAR (on RAVDESS neutral has half the clips of
    the other emotions); measured against plain weights: +0.011 / -0.003 UAR on clean clips and +0.005 to
    +0.019 through a phone line and in noise on two seeds (README)."""
    from scipy.optimize import minimize

    logs = np.stack([_log(p) for p in member_probas])  # (m, n, k)
    m, n, k = logs.shape
    y_idx = np.asarray(y_idx, dtype=int)
    rows = np.arange(n)
    counts = np.bincount(y_idx, minlength=k).astype(np.float64)
    sample_w = (n / (k * np.maximum(counts, 1.0)))[y_idx]
    sample_w /= sample_w.sum()
    onehot = np.zeros((n, k))
    onehot[rows, y_idx] = 1.0

    def loss(theta):
        w, b = theta[:m], theta[m:]
        z = np.tensordot(w, logs, axes=1) + b
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        p = np.exp(z - lse[:, None])
        nll = float(sample_w @ (lse - z[rows, y_idx]))
        g = (p - onehot) * sample_w[:, None]
        grad = np.concatenate([np.einsum("mnk,nk->m", logs, g), g.sum(axis=0)])
        return nll + L2 * float(theta @ theta), grad + 2 * L2 * theta

    theta0 = np.concatenate([np.full(m, 1.0 / m), np.zeros(k)])
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * m + [(None, None)] * k)
    return res.x[:m], res.x[m:]


def fit_pooling_on(probas: dict, y_idx, rows, fit_on) -> tuple[np.ndarray, np.ndarray]:
    """``fit_pooling`` on the clips ``rows`` (a boolean mask) of the conditions ``fit_on`` stacked (a condition
    listed twice counts twice); ``probas`` is ``{condition: [(n, k) array per member]}``."""
    stacked = [np.concatenate([probas[c][m][rows] for c in fit_on]) for m in range(len(probas[fit_on[0]]))]
    return fit_pooling(stacked, np.tile(np.asarray(y_idx)[rows], len(fit_on)))


def pool_out_of_fold(probas: dict, y_idx, fold, fit_on) -> dict:
    """``{condition: (n, k)}``: every condition of ``probas`` (``{condition: [(n, k) array per member]}``) pooled
    fold by fold, fold ``k``'s clips with the pooling fitted (``fit_pooling_on``) on the other folds' clips of the
    conditions ``fit_on``: the ensemble's own out-of-fold predictions, its labels never seen by its weights."""
    pooled = {c: np.zeros_like(members[0], dtype=np.float64) for c, members in probas.items()}
    for f in np.unique(fold):
        test = fold == f
        w, b = fit_pooling_on(probas, y_idx, ~test, fit_on)
        for c, members in probas.items():
            pooled[c][test] = pool([p[test] for p in members], w, b)
    return pooled


def _checked_inputs(inputs: str) -> str:
    if inputs not in INPUTS:
        raise ConfigError(f"An ensemble pools its members' {' or '.join(INPUTS)} probabilities, not {inputs!r}.")
    return inputs


def member_input(raw, card: dict, inputs: str) -> np.ndarray:
    """What an ensemble pooling ``inputs`` (``INPUTS``) takes of a member whose ``predict_proba`` gave ``raw``
    and whose card is ``card``: ``raw`` itself, or calibrated as the card says."""
    from .calibration import apply_calibration

    return raw if _checked_inputs(inputs) == "raw" else apply_calibration(raw, card.get("calibration"))


class EnsembleModel(SERModel):
    """Saved like any model (``model.json``, no weights file); its input is its members' probabilities.

    ``predict_proba(member_probas)`` takes ``{member name: (n, len(classes_)) probabilities}`` in ``classes_``
    order (each member's ``member_proba``: raw or calibrated, as ``inputs`` says) and returns the pooled
    ``(n, len(classes_))``. ``Predictor`` feeds it; ``feature_set`` is None because it computes no features of
    its own."""

    name = ENSEMBLE
    framework = ENSEMBLE

    def __init__(self, members=(), weights=(), bias=(), feature_set=None, seed: int = 0,
                 inputs: str = "calibrated", adapted_members=(), adapted_weights=(), adapted_bias=()):
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        self.bias = [float(b) for b in bias]  # per class, in classes_ order (empty: none, as saved before it)
        self.feature_set = feature_set
        self.seed = seed
        # the default is what ensembles saved before the option pooled; fit_ensemble: raw
        self.inputs = _checked_inputs(inputs)
        # speaker-adaptive members, pooled with the others (adapted_weights: one per all_members) only when a
        # voice's own statistics normalise them: the user's calibration clips, or a corpus's speakers' clips
        self.adapted_members = list(adapted_members)
        self.adapted_weights = [float(w) for w in adapted_weights]
        self.adapted_bias = [float(b) for b in adapted_bias]

    @property
    def all_members(self) -> list[str]:
        """The single-clip members, then the speaker-adaptive ones (the adapted pooling's order)."""
        return self.members + self.adapted_members

    def member_proba(self, raw, card: dict) -> np.ndarray:
        """What this ensemble pools of a member whose ``predict_proba`` gave ``raw`` and whose card is ``card``:
        ``raw`` itself, or calibrated as the card says (``inputs``)."""
        return member_input(raw, card, self.inputs)

    def fit(self, X, y):
        raise ConfigError("An ensemble is fitted on its members' out-of-fold predictions: use "
                          "ser_core.ensemble.fit_ensemble (or `python -m ser_core ensemble`).")

    def predict_proba(self, member_probas, adapted: bool = False) -> np.ndarray:
        """The pooled probabilities; ``adapted``: the pooling of every member, the speaker-adaptive ones
        normalised with the voice's own statistics (an ensemble without them: a ``ConfigError``)."""
        self._check_fitted()
        if adapted and not self.adapted_members:
            raise ConfigError("This ensemble has no speaker-adaptive members to adapt with.")
        names, weights, bias = ((self.all_members, self.adapted_weights, self.adapted_bias) if adapted
                                else (self.members, self.weights, self.bias))
        missing = [m for m in names if m not in member_probas]
        if missing:
            raise ConfigError(f"The ensemble needs the predictions of {', '.join(missing)}.")
        return pool([member_probas[m] for m in names], weights, bias)

    def _save_state(self, directory: Path):
        pass  # everything is in model.json

    def _load_state(self, directory: Path):
        pass


def _aligned_oofs(names, root, adaptive: bool = False):
    """The members' cards and out-of-fold predictions (rows sorted by path, the same for every member), checked
    to come from the same clips, folds and classes; ``adaptive``: the members are the speaker-adaptive ones."""
    from .saved import load_oof, read_card, resolve

    cards, oofs = [], []
    for name in names:
        directory = resolve(name, root)
        card, oof = read_card(directory), load_oof(directory)
        if card.get("model") == ENSEMBLE:
            raise ConfigError(f"'{name}' is an ensemble itself; choose single models as members.")
        if bool(card.get("speaker_norm")) != adaptive:
            raise ConfigError(f"'{name}' is speaker-adaptive (needs a voice's clips); list it among the adaptive "
                              "members." if card.get("speaker_norm") else
                              f"'{name}' is not speaker-adaptive; list it among the members.")
        if oof is None:
            raise ConfigError(f"'{name}' has no out-of-fold predictions (oof.npz); retrain it with this version.")
        order = np.argsort(oof["paths"])
        cards.append(card)
        oofs.append({k: (v if k == "classes" else v[order]) for k, v in oof.items()})
    ref = oofs[0]
    for name, oof in zip(names, oofs):
        same = (len(oof["paths"]) == len(ref["paths"]) and np.array_equal(oof["paths"], ref["paths"])
                and np.array_equal(oof["fold"], ref["fold"]) and list(oof["classes"]) == list(ref["classes"]))
        if not same:
            raise ConfigError(f"'{name}' was cross-validated on other clips, folds or labels than '{names[0]}'; "
                              "retrain the members with the same data, split, K and seed.")
    return cards, oofs


def fit_ensemble(members, *, root=None, name: str | None = None, store=None, replace_shipped: bool = False,
                 inputs: str = "raw", adaptive=()) -> dict:
    """Fit, cross-validate, calibrate and save an ensemble of the saved models ``members`` (names under
    ``root``; None: the shipped models and yours); record its run in ``store`` (a ``ResultsStore``, optional).
    ``inputs``: what it pools of each member (``INPUTS``: raw or calibrated probabilities). ``adaptive``:
    speaker-adaptive saved models (same folds) for a second pooling of all members, used when a voice's own
    statistics are at hand (``EnsembleModel.predict_proba(..., adapted=True)``; card ``adapted``).
    Saved into ``root``, else your models folder (named like any model you train: ``ensemble-<data>-run<id>``),
    or with ``replace_shipped`` the shipped folder; ``name`` defaults to ``ensemble`` in those two. Returns
    the saved model's card."""
    from .evaluation import CHANNEL_OOF_PROTOCOL, CHANNEL_PROBA, RUN_ENTRIES
    from .robustness import CLEAN
    from .saved import (check_writable, data_label, load_familiarity, resolve, save_trained, shipped_models_dir,
                        user_model_name, user_models_dir)
    from .splits import SPLITS

    members, adaptive = list(dict.fromkeys(members)), list(dict.fromkeys(adaptive))
    if len(members) < 2:
        raise ConfigError("An ensemble needs at least two member models.")
    out = Path(root) if root else shipped_models_dir() if replace_shipped else user_models_dir()
    check_writable(out, replace_shipped=replace_shipped)
    cards, oofs = _aligned_oofs(members, root)
    # each member's probabilities as Predictor feeds them to the ensemble (member_input: raw or calibrated); clean,
    # and through the channels every member's cross-validation also scored (weights favour members that hold up)
    conditions = sorted(set.intersection(*({k[len(CHANNEL_PROBA):] for k in o if k.startswith(CHANNEL_PROBA)}
                                           for o in oofs)))
    probas = {c: [member_input(o[key], card, inputs) for card, o in zip(cards, oofs)]
              for c, key in [(CLEAN, "proba")] + [(c, CHANNEL_PROBA + c) for c in conditions]}
    counted = [c for c in probas for _ in range(CONDITION_WEIGHTS.get(c, 1))]
    single = _pooled_run(members, root, cards, oofs, probas, counted, inputs)
    model = EnsembleModel(members, single["weights"], single["bias"], inputs=inputs)
    classes = [str(c) for c in oofs[0]["classes"]]
    adapted = None
    if adaptive:  # the same pooling over every member, the adaptive ones as their cross-validation normalised them
        a_cards, a_oofs = _aligned_oofs(adaptive, root, adaptive=True)
        if any(not np.array_equal(o["paths"], oofs[0]["paths"]) or not np.array_equal(o["fold"], oofs[0]["fold"])
               for o in a_oofs):
            raise ConfigError("The adaptive members were cross-validated on other clips or folds than the members; "
                              "retrain them with the same data, split, K and seed.")
        every = {CLEAN: probas[CLEAN] + [member_input(o["proba"], c, inputs) for c, o in zip(a_cards, a_oofs)]}
        adapted = _pooled_run(members + adaptive, root, cards + a_cards, oofs + a_oofs, every, [CLEAN], inputs)
        model.adapted_members, model.adapted_weights = adaptive, list(map(float, adapted["weights"]))
        model.adapted_bias = list(map(float, adapted["bias"]))
    model.classes_ = np.asarray(classes)
    summary, cv = single["summary"], cards[0].get("cv", {})
    run_id = None
    if store is not None:
        run_id = _record(store, cards, members, (single["weights"], single["bias"]), single["folds"], summary,
                         classes, single["oof"], inputs)
    card = {
        "training_data": cards[0].get("training_data", {}),
        "members": members,
        "weights": dict(zip(members, map(float, single["weights"]))),
        "bias": dict(zip(classes, map(float, single["bias"]))),  # per-class term of the pooling (class-balanced)
        "inputs": inputs,  # the members' raw or calibrated probabilities
        "weights_fitted_on": list(probas),  # out-of-fold predictions: clean, then through these channels
        "condition_weights": {c: counted.count(c) for c in probas},  # times each counted in the fit
        "cv": {**{k: cv.get(k) for k in ("split", "k", "seed", "speaker_dependent")},
               "split_description": SPLITS[cv["split"]].description if cv.get("split") in SPLITS else cv.get("split"),
               "metrics": {k: v for k, v in summary.items() if k not in RUN_ENTRIES},
               **({"per_corpus": summary["per_corpus"]} if "per_corpus" in summary else {}), "run_id": run_id},
        "calibration": summary["calibration"],
        **({"transfer": summary["transfer"]} if "transfer" in summary else {}),
        **({"robustness": summary["robustness"], "robustness_protocol": CHANNEL_OOF_PROTOCOL} if conditions else {}),
        **({"adapted": _adapted_card(adapted, members + adaptive, classes)} if adapted else {}),
        "versions": cards[0].get("versions", {}),
    }
    new = name is None and not (root or replace_shipped)  # a name of its own, never over another model
    if name is None:
        data = card["training_data"]
        name = user_model_name(ENSEMBLE, data_label(data.get("corpus", "data"), data.get("root") or "."),
                               run_id) if new else ENSEMBLE
    familiarity = load_familiarity(resolve(members[0], root)) if single["transfer"] is not None else None
    folder = save_trained(model, out / name, card=card, oof=single["oof"], replace=not new,
                          replace_shipped=replace_shipped, transfer_oof=single["transfer"], familiarity=familiarity,
                          extra_oofs={ADAPTED_OOF: adapted["oof"], ADAPTED_TRANSFER_OOF: adapted["transfer"]}
                          if adapted else None)
    return json.loads((folder / "card.json").read_text())


ADAPTED_OOF, ADAPTED_TRANSFER_OOF = "adapted_oof.npz", "adapted_transfer_oof.npz"  # the adapted pooling's


def _pooled_run(names, root, cards, oofs, probas, counted, inputs) -> dict:
    """One pooling of ``names`` (their ``cards`` and ``oofs``; ``probas``: ``{condition: [(n, k) per member]}``)
    judged like a model: its cross-validated out-of-fold predictions (``pool_out_of_fold``), the folds' metrics,
    its held-out corpora's predictions where every member kept them (``_held_out_pooled``), the calibration
    (``calibrate_out_of_fold``; the channels' scores too) and the weights fitted on every clip. Returns ``{"oof",
    "transfer", "folds", "summary", "weights", "bias"}``."""
    from .calibration import label_indices
    from .evaluation import CHANNEL_PROBA, CLIP_GROUPS, calibrate_out_of_fold, compute_metrics, summarize
    from .robustness import CLEAN, channel_summary

    classes = [str(c) for c in oofs[0]["classes"]]
    y, fold, paths = oofs[0]["y"], oofs[0]["fold"], oofs[0]["paths"]
    y_idx = label_indices(y, classes)
    pooled = pool_out_of_fold(probas, y_idx, fold, counted)
    transfer = _held_out_pooled(names, root, cards, oofs, probas, y_idx, counted, inputs)
    folds = []
    for f in np.unique(fold):
        test = fold == f
        pred = np.asarray(classes)[pooled[CLEAN][test].argmax(1)]
        folds.append({"fold": int(f), "n_test": int(test.sum()), "n_train": int((~test).sum()),
                      "metrics": compute_metrics(y[test], pred, classes)})
    conditions = [c for c in probas if c != CLEAN]
    oof = {"proba": pooled[CLEAN], "classes": np.asarray(classes), "fold": fold, "y": y, "paths": paths,
           **{g: oofs[0][g] for g in CLIP_GROUPS if g in oofs[0]},  # members saved before them have none
           **{CHANNEL_PROBA + c: pooled[c] for c in conditions},
           **({"familiarity": oofs[0]["familiarity"]} if transfer is not None else {})}
    entries = calibrate_out_of_fold(folds, oof, transfer=transfer)
    if conditions:
        entries["robustness"] = channel_summary(oof)
    weights, bias = fit_pooling_on(probas, y_idx, np.ones(len(y), bool), counted)
    return {"oof": oof, "transfer": transfer, "folds": folds, "weights": weights, "bias": bias,
            "summary": {**summarize([f["metrics"] for f in folds]), **entries}}


def _adapted_card(adapted: dict, names, classes) -> dict:
    """What the card says of the adapted pooling: its members' weights, bias, cross-validated metrics,
    calibration and held-out corpora."""
    from .evaluation import RUN_ENTRIES

    summary = adapted["summary"]
    return {"weights": dict(zip(names, map(float, adapted["weights"]))),
            "bias": dict(zip(classes, map(float, adapted["bias"]))),
            "metrics": {k: v for k, v in summary.items() if k not in RUN_ENTRIES},
            **({"per_corpus": summary["per_corpus"]} if "per_corpus" in summary else {}),
            "calibration": summary["calibration"],
            **({"transfer": summary["transfer"]} if "transfer" in summary else {})}


def _held_out_pooled(members, root, cards, oofs, probas, y_idx, counted, inputs) -> dict | None:
    """The ensemble's own predictions on corpora held out (None unless every member kept its leave-one-corpus-out
    predictions, ``saved.TRANSFER_OOF``, on the same clips): each corpus's clips pooled with the weights fitted on
    the members' cross-validation predictions of the OTHER corpora, so neither the members nor the pooling ever
    learnt from the corpus scored."""
    from .saved import TRANSFER_OOF, load_oof, resolve

    loaded = [load_oof(resolve(m, root), TRANSFER_OOF) for m in members]
    if any(t is None or "familiarity" not in t for t in loaded) or "corpus" not in oofs[0]:
        return None
    order = [np.argsort(t["paths"]) for t in loaded]
    held = [{k: (v if k == "classes" else v[o]) for k, v in t.items()} for t, o in zip(loaded, order)]
    ref = held[0]
    if any(not np.array_equal(t["paths"], ref["paths"]) or list(t["classes"]) != list(ref["classes"]) for t in held):
        return None
    member_probas = [member_input(t["proba"], card, inputs) for t, card in zip(held, cards)]
    pooled = np.zeros_like(member_probas[0], dtype=np.float64)
    for corpus in np.unique(ref["corpus"]):
        rows = ref["corpus"] == corpus
        w, b = fit_pooling_on(probas, y_idx, oofs[0]["corpus"] != corpus, counted)
        pooled[rows] = pool([p[rows] for p in member_probas], w, b)
    return {**{k: v for k, v in ref.items() if not k.startswith("proba")}, "proba": pooled}


def _record(store, cards, members, pooling, folds, summary, classes, oof, inputs) -> int:
    """Store the ensemble's cross-validation as a run, beside its members' runs."""
    data, cv = cards[0].get("training_data", {}), cards[0].get("cv", {})
    weights, bias = pooling
    run_id = store.start_run(
        model=ENSEMBLE, params={"members": members, "weights": [float(w) for w in weights],
                                "bias": [float(b) for b in bias], "inputs": inputs},
        feature_set={"name": "members", "kind": "ensemble"}, dataset=data.get("corpus", "?"),
        data_root=data.get("root"), data_fingerprint=data.get("fingerprint", "?"), n_clips=data.get("clips"),
        n_speakers=data.get("speakers"), split=cv.get("split", "speaker"),
        splitter=f"same folds as {', '.join(members)}", k=len(folds), seed=cv.get("seed", 0),
        speaker_dependent=bool(cv.get("speaker_dependent")), options={"members": members},
        config_hash="ensemble-" + "-".join(members), versions=cards[0].get("versions", {}))
    confusion = np.sum([np.asarray(f["metrics"]["confusion"]) for f in folds], axis=0)
    for f in folds:
        store.add_fold(run_id, f["fold"], metrics=f["metrics"], n_train=f["n_train"], n_test=f["n_test"],
                       test_speakers=[], train_time_s=0.0, latency_ms=0.0)
    store.add_oof(run_id, oof)
    store.finish_run(run_id, summary=summary, labels=classes, confusion=confusion.tolist(), train_time_s=0.0,
                     latency_ms=0.0, model_size_bytes=None)
    return run_id


__all__ = ["ADAPTED_OOF", "ADAPTED_TRANSFER_OOF", "CONDITION_WEIGHTS", "ENSEMBLE", "INPUTS", "EnsembleModel", "fit_ensemble", "fit_pooling", "fit_pooling_on",
           "member_input", "pool", "pool_out_of_fold"]
