"""UAR, accuracy and calibration (ECE) of models on clips passed through realistic channels.

    python benchmarks/bench_robustness.py --data ../shared/data/ravdess [--models svm,cnn]
        [--conditions phone,noise10,reverb,mp3] [--write-cards] [--out benchmarks/results/robustness.json]
    python benchmarks/bench_robustness.py --data ../shared/data/ravdess --cv --models svm --folds 4
        [--augment channel,vtlp] [--speaker-norm] [--shipped-recipe] [--ensemble] [--save-oof DIR]

Default mode: the saved models (default: all in trained_models/ or $SER_MODELS_DIR) on the corpus, every clip
perturbed. The shipped models were trained on RAVDESS actors 01-16, so on that folder the speakers are SEEN:
the drop from "clean" says what a channel costs, not what a new voice gets. --write-cards stores the results
in each model's card (``"robustness"``), which the Leaderboard page shows.

--cv: the honest mode. Speaker-grouped K-fold; each fold's model (the registry family, trained from scratch on
clean training clips plus any --augment copies) is tested on the clean and perturbed clips of its unseen test
speakers; mean ± std over folds. --save-oof DIR keeps each family's out-of-fold probabilities per condition
(``DIR/<family>.npz``: ``proba@<condition>``, ``y``, ``fold``, ``classes``), so that other poolings
(``ser_core.robustness.ensemble_perturbed`` with other ``fit_on``) can be scored without training again:
``--from-oof DIR`` reads them back, and ``--ensemble-fit-on`` repeated gives one ensemble row per list.

Writes a JSON (--out) and prints a Markdown table of UAR per condition.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_CONDITIONS = "phone,noise0,noise10,noise20,babble10,reverb,mp3,opus,gain,browser"


def _saved_models(a, corpus, conditions) -> dict:
    from ser_core.robustness import CLEAN, evaluate_perturbed, record_robustness
    from ser_core.saved import list_trained, load_trained, resolve

    names = [m.strip() for m in a.models.split(",")] if a.models else [c["name"] for c in list_trained(a.models_dir)]
    n_clips, n_speakers = len(corpus.manifest), corpus.manifest["speaker"].nunique()
    protocol = (f"{corpus.name} at {a.data}, {n_clips} clips, {n_speakers} speakers, each clip perturbed "
                f"once per condition (seeded by its file name); the same speakers as in training unless the "
                f"data is new to the model ({datetime.now(timezone.utc).date()})")
    out = {}
    for name in names:
        t0 = time.perf_counter()
        model, card = load_trained(name, a.models_dir)
        results = evaluate_perturbed(model, card, corpus, (CLEAN, *conditions), model_dir=resolve(name, a.models_dir),
                                     n_jobs=a.jobs, progress=lambda c, n=name: print(f"{n}: {c}", file=sys.stderr))
        out[name] = {"conditions": results, "seconds": round(time.perf_counter() - t0, 1)}
        if a.write_cards:
            record_robustness(resolve(name, a.models_dir), results, protocol=protocol)
    return {"mode": "saved models", "protocol": protocol, "models": out}


def _cross_validated(a, corpus, conditions) -> dict:
    from ser_core.robustness import cross_validate_perturbed

    out, oofs = {}, []
    for name in [m.strip() for m in (a.models or "svm").split(",")]:
        if a.from_oof:  # saved by an earlier --save-oof run: no training
            from ser_core.robustness import summarize_perturbed

            oof = _load_oof(Path(a.from_oof) / f"{name}.npz")
            scores = summarize_perturbed(oof)
            out[name] = {"conditions": scores["summary"], "folds": scores["folds"]}
            oofs.append(oof)
            continue
        t0 = time.perf_counter()
        recipe = _card_recipe(a, name) if a.shipped_recipe else {
            "feature_set": a.feature_set, "augment": a.augment.split(",") if a.augment else (),
            "speaker_norm": a.speaker_norm}
        res = cross_validate_perturbed(name, corpus, conditions, folds=a.folds, seed=a.seed, **recipe, n_jobs=a.jobs,
                                       progress=lambda e, n=name: print(f"{n}: {e}", file=sys.stderr))
        out[name] = {"conditions": res["summary"], "folds": res["folds"], "splitter": res["splitter"],
                     "seconds": round(time.perf_counter() - t0, 1)}
        oofs.append(res["oof"])
        if a.save_oof:
            _save_oof(Path(a.save_oof) / f"{name}.npz", res["oof"])
        if a.write_cards:
            _write_cv_card(a, corpus, name, res["summary"])
    if a.ensemble and len(oofs) > 1:  # the families pooled as the saved ensemble pools them
        from ser_core.robustness import ensemble_perturbed

        members = ", ".join(out)
        for fit_on_list in a.ensemble_fit_on or ["clean"]:
            fit_on = ("clean", *[c for c in fit_on_list.split(",") if c and c != "clean"])
            label = f"ensemble ({members})" + (f", fitted on {'+'.join(fit_on)}" if len(fit_on) > 1 else "")
            out[label] = {"conditions": ensemble_perturbed(oofs, fit_on=fit_on)}
    return {"mode": f"speaker-grouped {a.folds}-fold CV (unseen speakers)", "seed": a.seed,
            "augment": a.augment, "speaker_norm": a.speaker_norm, "models": out}


def _load_oof(path: Path) -> dict:
    """What ``_save_oof`` wrote, as ``cross_validate_perturbed`` returns it."""
    import numpy as np

    if not path.is_file():
        raise SystemExit(f"{path} not found: run with --save-oof {path.parent} first")
    with np.load(path, allow_pickle=False) as z:
        return {"proba": {k[len("proba@"):]: z[k] for k in z.files if k.startswith("proba@")},
                **{k: z[k] for k in z.files if not k.startswith("proba@")}}


def _save_oof(path: Path, oof: dict):
    """``cross_validate_perturbed``'s ``oof`` (``proba`` a dict per condition) as one ``.npz`` of arrays."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"proba@{c}": p for c, p in oof["proba"].items()},
             **{k: np.asarray(v) for k, v in oof.items() if k != "proba"})


def _card_recipe(a, name) -> dict:
    """The saved model ``name``'s recipe, from its card: feature set, parameters, training copies, speaker
    normalisation (``--shipped-recipe``: each family cross-validated as it was trained for shipping)."""
    from ser_core.saved import read_card, resolve

    card = read_card(resolve(name, a.models_dir))
    options = card.get("options", {})
    return {"feature_set": card["feature_set"]["name"], "params": card.get("params", {}),
            "augment": tuple(options.get("augment", ())), "speaker_norm": bool(card.get("speaker_norm"))}


def _write_cv_card(a, corpus, name, summary):
    """Store a family's CV robustness in the saved model of that name, when it was trained with the same recipe
    (feature set and augmentation): the means over folds, plus each UAR's spread."""
    from ser_core.augment import parse_augment
    from ser_core.models import get_spec
    from ser_core.robustness import record_robustness
    from ser_core.saved import read_card, resolve

    directory = resolve(name, a.models_dir)
    card = read_card(directory)
    recipe = (a.feature_set or get_spec(name).feature_set, list(parse_augment(a.augment)), bool(a.speaker_norm))
    saved = (card.get("feature_set", {}).get("name"), card.get("options", {}).get("augment", []),
             bool(card.get("speaker_norm")))
    if recipe != saved and not a.shipped_recipe:
        print(f"{name}: not written, the saved model's recipe {saved} differs from this CV's {recipe}",
              file=sys.stderr)
        return
    results = {c: {**{m: v["mean"] for m, v in r.items() if isinstance(v, dict)}, "uar_std": r["uar"]["std"]}
               for c, r in summary.items()}
    record_robustness(directory, results, protocol=f"speaker-grouped {a.folds}-fold CV on {corpus.name} "
                      f"({len(corpus.manifest)} clips, unseen speakers), seed {a.seed}, the saved model's recipe; "
                      "each test clip passed through the channel, means over folds")


def markdown(result: dict) -> str:
    """UAR per model and condition: ``0.493`` (saved models) or ``0.493 ± 0.040`` (CV)."""
    models = result["models"]
    conditions = list(next(iter(models.values()))["conditions"]) if models else []
    lines = [f"UAR under perturbations, {result['mode']}", "",
             "| model | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for name, r in models.items():
        cells = []
        for c in conditions:
            v = r["conditions"][c]["uar"]
            cells.append(f"{v['mean']:.3f} ± {v['std']:.3f}" if isinstance(v, dict) else f"{v:.3f}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a labelled corpus folder or CSV")
    p.add_argument("--corpus", default="auto")
    p.add_argument("--models", default="", help="comma-separated; saved models (default: all) or, with --cv, "
                                                "registry families (default: svm)")
    p.add_argument("--conditions", default=DEFAULT_CONDITIONS)
    p.add_argument("--models-dir", default=None, help="default: the shipped models (trained_models/ or $SER_MODELS_DIR)")
    p.add_argument("--cv", action="store_true", help="speaker-grouped CV on unseen speakers (honest mode)")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-set", default=None, help="with --cv: override the family's feature set")
    p.add_argument("--augment", default="", help="with --cv: training-fold augmentation, e.g. channel,vtlp")
    p.add_argument("--speaker-norm", action="store_true", help="with --cv: per-speaker z-scoring")
    p.add_argument("--shipped-recipe", action="store_true", help="with --cv: each family's feature set, parameters, "
                   "training copies and speaker normalisation from its saved model's card (instead of "
                   "--feature-set, --augment, --speaker-norm)")
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--ensemble", action="store_true", help="with --cv: also score the families pooled into an "
                   "ensemble (weights fitted on the other folds' clean out-of-fold predictions)")
    p.add_argument("--ensemble-fit-on", action="append", default=None, metavar="LIST",
                   help="with --ensemble: conditions whose out-of-fold predictions fit the weights together "
                        "(e.g. clean,phone,noise10, as the shipped ensemble; default: clean); repeat it for one "
                        "ensemble row per list")
    p.add_argument("--save-oof", default=None, metavar="DIR", help="with --cv: keep each family's out-of-fold "
                   "probabilities per condition in DIR/<family>.npz")
    p.add_argument("--from-oof", default=None, metavar="DIR", help="with --cv: read them back from DIR instead of "
                   "training (the families' rows and the ensembles from the saved predictions)")
    p.add_argument("--write-cards", action="store_true", help="store the results in the saved models' cards (with "
                   "--cv: in the saved model of each family trained with the same feature set and augmentation)")
    p.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/robustness[_cv].json)")
    a = p.parse_args()
    from ser_core.channels import parse_channels
    from ser_core.corpora import load_corpus
    from ser_core.saved import shipped_models_dir

    a.models_dir = a.models_dir or str(shipped_models_dir())  # the shipped models, not the ones you trained

    conditions = parse_channels(a.conditions)
    corpus = load_corpus(a.data, corpus=a.corpus)
    result = (_cross_validated if a.cv else _saved_models)(a, corpus, conditions)
    result |= {"data": str(a.data), "clips": len(corpus.manifest), "conditions": list(conditions)}
    out = Path(a.out or REPO / "benchmarks" / "results" / f"robustness{'_cv' if a.cv else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
