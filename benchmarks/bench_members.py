"""What the ensemble gains from its inputs and members, on saved out-of-fold predictions of several seeds.

    python benchmarks/bench_members.py [--dirs trained_models,/tmp/seed1,/tmp/seed2] [--lda-variants]
        [--bag-db PATH] [--swap MODEL=PATH ...]

For each folder of models (the shipped ones, and the other seeds' folders ``bench_seeds.py`` writes) the
ensemble's members' out-of-fold predictions (clean, phone, noise10) are pooled fold by fold as
``ser_core.ensemble.fit_ensemble`` does (fold k with a pooling fitted on the other folds), and the UAR (mean over
folds) is printed for:

- the members' raw probabilities (what the ensemble pools) against their calibrated ones, and the phone line's
  predictions counted once (what the ensemble does, ``ensemble.CONDITION_WEIGHTS``), twice or three times in
  the fit;
- stronger L2 on the pooling (``ensemble.L2``);
- the ensemble without each member in turn;
- ``--lda-variants``: the ensemble with a mixture LDA (each emotion split into 2 k-means subclasses) or a
  gender-aware LDA (emotion x gender classes from the training labels, summed over gender) added, both on the
  lda's features and copies (about 10 s a seed; their features must be in the cache);
- ``--bag-db``: ``fcnn_torch`` replaced by the mean of its probabilities and those of the runs with other
  training seeds in that results database, made by (for each seed N, training seeds 11 and 12)::

      python -m ser_core train --data DIR --models fcnn_torch --seed N --param fcnn_torch.seed=11 --no-save \\
          --feature-set expressive_denoised --augment "speed*4,channel*2,channel:noise*2,channel:phone" \\
          --param fcnn_torch.batch_size=128 --channels phone,noise10 --db PATH --force
- ``--swap MODEL=PATH``: member ``MODEL`` replaced by that model's last finished run of the folder's seed in the
  results database PATH (another recipe for one member, cross-validated with ``--channels phone,noise10 --seed N
  --no-save --db PATH``; ``{seed}`` in PATH stands for the folder's seed), every other row repeated with it in
  place (but the calibrated ones: the run has no calibration of its own). Repeatable.

Numbers in the README's table of techniques.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MEMBERS = "lda,mlp_tf,fcnn_torch,svm,random_forest,cnn,cnn_lstm,lstm,transformer_torch".split(",")
CONDITIONS = ("clean", "phone", "noise10")
LDA_AUGMENT = "speed*4,channel*2,channel:noise*2,channel:phone"


def fold_uar(y, fold, proba) -> float:
    """UAR mean over folds of ``proba``'s answers (``y``: class indices into its columns)."""
    from ser_core.evaluation import compute_metrics

    pred, labels = proba.argmax(1), range(proba.shape[1])
    return float(np.mean([compute_metrics(y[fold == f], pred[fold == f], labels)["uar"] for f in np.unique(fold)]))


def pooled_cv(probas: dict, oof: dict, members, condition_weights=None) -> dict:
    """``{condition: UAR}`` of the ensemble of ``members`` (``probas[condition][member]``) on ``oof``'s clips and
    folds (``ser_core.robustness.ensemble_perturbed``): fold k pooled with weights fitted on the other folds'
    clean, phone and noise10 predictions together, each counted as ``condition_weights`` says (default: as the
    ensemble does, ``ensemble.CONDITION_WEIGHTS``)."""
    from ser_core.ensemble import CONDITION_WEIGHTS
    from ser_core.robustness import ensemble_perturbed

    weights = CONDITION_WEIGHTS if condition_weights is None else condition_weights
    counted = tuple(c for c in CONDITIONS for _ in range(weights.get(c, 1)))
    member_oofs = [{"proba": {c: probas[c][m] for c in CONDITIONS}, "fold": oof["fold"], "y": oof["y"],
                    "classes": oof["classes"]} for m in members]
    return {c: s["uar"]["mean"] for c, s in ensemble_perturbed(member_oofs, fit_on=counted).items()}


def lda_variants(root: Path, oof: dict, seed: int) -> dict:
    """Out-of-fold ``{variant: {condition: (n, k)}}`` of the mixture and gender-aware LDAs on ``oof``'s folds."""
    from sklearn.cluster import KMeans
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.preprocessing import StandardScaler

    from ser_core.augment import parse_augment
    from ser_core.evaluation import augmented_copies, channel_copies
    from ser_core.features import compute_files, get_feature_set

    fs = get_feature_set("expressive_denoised")
    paths, speakers = list(oof["paths"]), np.asarray(oof["speaker"]).astype(str)
    X = {"clean": compute_files(paths, fs, progress=False),
         **channel_copies(paths, fs, "phone,noise10", speakers)}
    copies = list(augmented_copies(paths, fs, parse_augment(LDA_AUGMENT), seed, speakers).values())
    classes = [str(c) for c in oof["classes"]]
    y, gender = np.asarray(oof["y"]).astype(str), np.asarray(oof["gender"]).astype(str)
    out = {v: {c: np.zeros((len(y), len(classes))) for c in CONDITIONS} for v in ("mixture LDA", "gender LDA")}
    for f in np.unique(oof["fold"]):
        tr, te = oof["fold"] != f, oof["fold"] == f
        Xtr = np.concatenate([X["clean"][tr]] + [a[tr] for a in copies])
        ytr, gtr = np.tile(y[tr], 1 + len(copies)), np.tile(gender[tr], 1 + len(copies))
        scaler = StandardScaler().fit(Xtr)
        Z = scaler.transform(Xtr)
        sub = ytr.astype(object).copy()
        for k in classes:
            rows = ytr == k
            sub[rows] = [f"{k}|{j}" for j in KMeans(2, n_init=4, random_state=seed).fit(Z[rows]).labels_]
        for variant, labels in (("mixture LDA", sub.astype(str)), ("gender LDA", np.char.add(ytr + "|", gtr))):
            lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(Z, labels)
            emotion = np.array([c.split("|")[0] for c in lda.classes_])
            for c in CONDITIONS:
                p = lda.predict_proba(scaler.transform(X[c][te]))
                out[variant][c][te] = np.stack([p[:, emotion == k].sum(1) for k in classes], 1)
    return out


def by_condition(oof: dict, what: str) -> dict:
    """``{condition: (n, k)}`` of one member's out-of-fold arrays: clean, and through each of ``CONDITIONS``'
    channels (``proba@<channel>``, from cross-validation with ``--channels phone,noise10``)."""
    from ser_core.evaluation import CHANNEL_PROBA

    keys = {c: "proba" if c == "clean" else CHANNEL_PROBA + c for c in CONDITIONS}
    missing = [k for k in keys.values() if k not in oof]
    if missing:
        raise SystemExit(f"{what} has no {', '.join(missing)}: cross-validate it with --channels phone,noise10")
    return {c: oof[k] for c, k in keys.items()}


def run_oofs(db, model: str, seed: int, ref: dict) -> list[tuple[int, dict]]:
    """``(run id, {condition: (n, k)})`` of each of ``model``'s finished runs with ``seed`` in the results
    database ``db``, oldest first, rows in ``ref``'s clip order and columns in its class order (the same clips
    and folds, or an error)."""
    from ser_core.evaluation import in_label_order
    from ser_core.results import ResultsStore

    store = ResultsStore(db)
    runs = store.runs()  # the finished ones
    out = []
    for run_id in sorted(runs[(runs["model"] == model) & (runs["seed"] == seed)]["id"]):
        o = store.oof(int(run_id))
        if o is None:
            raise SystemExit(f"{db}: {model} run {run_id} kept no out-of-fold predictions (stored by an old version)")
        order = np.argsort(o["paths"])
        if not np.array_equal(o["paths"][order], ref["paths"]) or not np.array_equal(o["fold"][order], ref["fold"]):
            raise SystemExit(f"{db}: {model} run {run_id} was cross-validated on other clips or folds")
        out.append((int(run_id), {c: in_label_order(p[order], o["classes"], ref["classes"])
                                  for c, p in by_condition(o, f"{db}: {model} run {run_id}").items()}))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dirs", default=",".join([str(REPO / "trained_models"), "/tmp/seed1", "/tmp/seed2"]))
    p.add_argument("--lda-variants", action="store_true")
    p.add_argument("--bag-db", default=None)
    p.add_argument("--swap", action="append", default=[], metavar="MODEL=PATH")
    a = p.parse_args()
    swaps = [s.split("=", 1) for s in a.swap]
    for s, swap in zip(a.swap, swaps):
        if len(swap) != 2 or swap[0] not in MEMBERS:
            p.error(f"--swap {s}: MODEL=PATH with MODEL one of {', '.join(MEMBERS)}")
    import ser_core.ensemble as ensemble
    from ser_core.calibration import apply_calibration, label_indices

    rows: dict = {}
    for root in map(Path, a.dirs.split(",")):
        cards, oofs = ensemble._aligned_oofs(MEMBERS, root)
        ref = oofs[0]
        classes = [str(c) for c in ref["classes"]]
        y, fold = label_indices(ref["y"], classes), ref["fold"]
        seed = int(cards[0]["cv"]["seed"])
        member_probas = {m: by_condition(o, f"{root / m}") for m, o in zip(MEMBERS, oofs)}
        for member, db in swaps:
            db = db.replace("{seed}", str(seed))
            runs = run_oofs(db, member, seed, ref)
            if not runs:
                raise SystemExit(f"no finished {member} run with seed {seed} in {db}")
            run_id, member_probas[member] = runs[-1]
            print(f"{root}: {member} from {db} run {run_id}: " + ", ".join(
                f"{c} {fold_uar(y, fold, p):.3f}" for c, p in member_probas[member].items()), flush=True)
        raw = {c: {m: member_probas[m][c] for m in MEMBERS} for c in CONDITIONS}

        def add(name, probas, members=MEMBERS, condition_weights=None):
            rows.setdefault(name, []).append(pooled_cv(probas, ref, members, condition_weights))

        add("raw probabilities, each condition counted as the ensemble does (CONDITION_WEIGHTS)", raw)
        for times, weights in (("once", {}), ("twice", {"phone": 2}), ("three times", {"phone": 3})):
            add(f"raw, phone counted {times}", raw, condition_weights=weights)
        if not swaps:  # a swapped member's run has no calibration of its own (its card's belongs to the other)
            calibrated = {c: {m: apply_calibration(raw[c][m], card.get("calibration"))
                              for m, card in zip(MEMBERS, cards)} for c in CONDITIONS}
            add("calibrated probabilities, every condition counted once", calibrated, condition_weights={})
            add("calibrated, phone counted twice", calibrated, condition_weights={"phone": 2})
        for l2 in (0.01, 0.03, 0.1):
            ensemble.L2, default = l2, ensemble.L2
            add(f"raw, L2 {l2} instead of {default}", raw)
            ensemble.L2 = default
        for m in MEMBERS:
            add(f"raw, without {m}", raw, [x for x in MEMBERS if x != m])
        if a.lda_variants:
            for variant, probas in lda_variants(root, ref, seed).items():
                add(f"raw, + {variant}", {c: {**raw[c], variant: probas[c]} for c in CONDITIONS}, MEMBERS + [variant])
        if a.bag_db:
            bag = {c: [raw[c]["fcnn_torch"]] for c in CONDITIONS}
            for _, probas in run_oofs(a.bag_db, "fcnn_torch", seed, ref):
                for c in CONDITIONS:
                    bag[c].append(probas[c])
            print(f"{root}: fcnn_torch alone {fold_uar(y, fold, bag['clean'][0]):.3f}, bag of {len(bag['clean'])} "
                  f"{fold_uar(y, fold, np.mean(bag['clean'], 0)):.3f}", flush=True)
            add("raw, fcnn_torch bagged over training seeds",
                {c: {**raw[c], "fcnn_torch": np.mean(bag[c], 0)} for c in CONDITIONS})
        print(f"{root}: done", flush=True)
    print("| ensemble | " + " | ".join(f"seed folder {i}" for i in range(len(a.dirs.split(",")))) +
          " | mean | phone / noise10 (mean) |\n|---|" + "---|" * (len(a.dirs.split(",")) + 2))
    for name, results in rows.items():
        clean = [r["clean"] for r in results]
        print(f"| {name} | " + " | ".join(f"{u:.3f}" for u in clean) + f" | {np.mean(clean):.4f} | "
              f"{np.mean([r['phone'] for r in results]):.3f} / {np.mean([r['noise10'] for r in results]):.3f} |")


if __name__ == "__main__":
    main()
