"""Command line: ``python -m ser_core <command> ...`` (``--help`` on every command).

User mistakes (a wrong folder, a bad file, a missing model) print one line ``error: ...`` on stderr and exit
with status 2; progress goes to stderr, results (``--json``) to stdout. ``predict`` on several files reports a
bad file as a row with its error, goes on with the others, and exits with status 1 when any file failed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import events
from .ensemble import INPUTS as ENSEMBLE_INPUTS
from .errors import ConfigError, SERError
from .evaluation import BALANCE, NORM_BY
from .splits import LEAVE_CORPUS_OUT, SPLIT_CHOICES, SPLITS
from .taxonomy import TAXONOMIES


def _print_json(obj):
    print(json.dumps(obj, indent=None, default=str))


def _err(msg):
    print(msg, file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------------------
def cmd_data_info(a):
    from .corpora import corpus_info, load_corpus

    info = corpus_info(load_corpus(a.dir, corpus=a.corpus))
    if a.json:
        _print_json(info)
    else:
        print(f"{info['corpus']}: {info['clips']} clips, {info['speakers']} speakers, "
              f"{info['duration_s'] / 60:.1f} min")
        for k, v in info["emotions"].items():
            print(f"  {k:<10} {v}")
        if info.get("skipped_count"):
            print(f"skipped {info['skipped_count']} files, e.g.:")
            for s in info["skipped"][:5]:
                print(f"  {s['path']}: {s['reason']}")


def cmd_data_download(a):
    from .download import download_dataset

    path = download_dataset(a.name, a.to, url=a.url, archive=a.archive, progress=True)
    print(path)


def cmd_features(a):
    from .corpora import load_corpus
    from .features import compute_files, get_feature_set

    fs = get_feature_set(a.set)
    corpus = load_corpus(a.dir, corpus=a.corpus)
    t0 = time.perf_counter()
    X = compute_files(corpus.manifest["path"].tolist(), fs, n_jobs=a.jobs, cache=not a.no_cache, progress=True)
    dt = time.perf_counter() - t0
    audio_s = float(corpus.manifest["duration_s"].sum())
    summary = {"corpus": corpus.name, "feature_set": fs.name, "clips": len(X), "shape": list(X.shape[1:]),
               "seconds": round(dt, 2), "clips_per_s": round(len(X) / dt, 1), "realtime_factor": round(audio_s / dt, 1)}
    _print_json(summary) if a.json else print(
        f"{summary['clips']} clips -> {fs.name} {tuple(X.shape[1:])} in {dt:.1f} s "
        f"({summary['clips_per_s']} clips/s, {summary['realtime_factor']}x real time)")


def cmd_feature_sets(a):
    from .features import FEATURE_SETS

    rows = [{"name": k, "kind": v.kind, "shape": list(v.shape)} for k, v in FEATURE_SETS.items()]
    _print_json(rows) if a.json else [print(f"{r['name']:<28} {r['kind']:<10} {tuple(r['shape'])}") for r in rows]


# -- training and evaluation ---------------------------------------------------------------------------------
def _parse_params(items):
    """``--param svm.C=10 --param cnn.epochs=5`` -> {"svm": {"C": 10}, "cnn": {"epochs": 5}}."""
    out = {}
    for item in items or []:
        try:
            key, value = item.split("=", 1)
            model, name = key.split(".", 1)
        except ValueError:
            raise ConfigError(f"Bad --param '{item}'; use MODEL.NAME=VALUE, e.g. svm.C=10.") from None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        out.setdefault(model, {})[name] = value
    return out


def cmd_train(a):
    from pathlib import Path

    from .channels import parse_channels
    from .cluster import describe, folds_runner, summary_line
    from .corpora import load_corpora
    from .evaluation import DEFAULT_FOLDS, RunConfig, check_run, cross_validate, default_folds
    from .models import get_spec
    from .results import ResultsStore

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in models:
        get_spec(m)  # fail early on a typo
    params = _parse_params(a.param)
    if a.test_data:  # train on one corpus, test on another
        return _train_cross_corpus(a, models, params)
    corpus = load_corpora(a.data, corpus=a.corpus, taxonomy=a.taxonomy)
    if corpus.parts:
        _err(f"{corpus.name}: {len(corpus.manifest)} clips, {corpus.manifest['speaker'].nunique()} speakers, labels "
             f"by the {corpus.taxonomy} taxonomy ({', '.join(sorted(corpus.manifest['emotion'].unique()))})")
    folds = a.folds if a.folds is not None else default_folds(corpus, a.split)
    configs = [RunConfig(model=name, params=params.get(name, {}), feature_set=a.feature_set, split=a.split,
                         folds=folds, seed=a.seed, augment=a.augment, speaker_norm=a.speaker_norm,
                         channels=parse_channels(a.channels), norm_by=a.norm_by, balance=a.balance,
                         ood_calibration=a.ood_calibration) for name in models]
    for cfg in configs:  # every impossible choice is refused before anything trains
        check_run(cfg, corpus)
    if folds < DEFAULT_FOLDS and a.folds is None and SPLITS[a.split].uses_k:
        _err(f"note: {folds}-fold, the most this data's speakers and emotions allow (--folds to choose)")
    save_to = _save_target(a, corpus)
    store = ResultsStore(a.db)
    runner = folds_runner()  # $SER_EXECUTOR: this process, or a Ray cluster ($SER_RAY_ADDRESS)
    if runner is not None:
        _err(summary_line(describe()))
    results = []
    for name, cfg in zip(models, configs):
        res = cross_validate(cfg, corpus, store=store, use_cache=not a.force, n_jobs=a.jobs,
                             progress=_train_progress(name), save_to=save_to(name), replace_shipped=a.replace_shipped,
                             folds_runner=runner)
        s = res.summary
        _err(_scores_line(name, s) + (" (speaker-DEPENDENT split)" if SPLITS[a.split].speaker_dependent else ""))
        if a.split == LEAVE_CORPUS_OUT:
            rows = held_out_rows(res, corpus)
            results += [{"model": name, "run_id": res.run_id, "cached": res.cached, "saved_model": res.saved_model,
                         **r} for r in rows]
            _print_held_out(name, rows)
            continue
        results.append({"model": name, "run_id": res.run_id, "cached": res.cached, "split": a.split,
                        "folds": folds, "uar": s["uar"], "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
                        **{m: s[m] for m in ("ece", "arousal_uar", "valence_uar") if m in s},
                        **({"per_corpus": {c: _corpus_row(m) for c, m in s["per_corpus"].items()}}
                           if "per_corpus" in s else {}),
                        "saved_model": res.saved_model})
        for c, m in s.get("per_corpus", {}).items():
            _err(f"[{name}]   {c:<10} UAR {m['uar']:.3f}, ECE {m['ece']:.3f}" +
                 (f", arousal UAR {m['arousal_uar']:.3f}" if "arousal_uar" in m else "") + f" ({m['n']} clips)")
    if a.json:
        _print_json(results)


CORPUS_METRICS = ("n", "speakers", "uar", "accuracy", "macro_f1", "ece", "brier", "wrong_over_90", "arousal_uar",
                  "arousal_ece", "valence_uar", "valence_ece", "uncertain_fraction")  # a corpus's row, in order


def _corpus_row(m: dict) -> dict:
    return {k: m[k] for k in CORPUS_METRICS if k in m}


def held_out_rows(res, corpus) -> list[dict]:
    """`train --split corpus`: one row per corpus held out (its clips' calibrated out-of-fold predictions, by a
    model trained on every other corpus): ``held_out``, ``train_corpora``, then ``CORPUS_METRICS``."""
    per = res.summary.get("per_corpus") or {}
    return [{"held_out": c, "train_corpora": [o for o in corpus.corpora if o != c], **_corpus_row(per[c])}
            for c in corpus.corpora if c in per]


def _print_held_out(name: str, rows: list[dict]) -> None:
    for r in rows:
        _err(f"[{name}] held out {r['held_out']:<10} UAR {r['uar']:.3f}, ECE {r['ece']:.3f}" +
             (f", arousal UAR {r['arousal_uar']:.3f}" if "arousal_uar" in r else "") +
             f" ({r['n']} clips; trained on {' + '.join(r['train_corpora'])})")


def _train_progress(name: str):
    """The ``progress`` callback of `train` for model ``name``: what a run is doing, as lines on stderr."""
    t0 = time.perf_counter()

    def progress(e):
        el = time.perf_counter() - t0
        if e["event"] == events.FOLD_DONE:
            m = e["metrics"]
            _err(f"[{name}] fold {e['fold'] + 1}/{e['folds']}: UAR {m['uar']:.3f} acc {m['accuracy']:.3f} "
                 f"({e['train_time_s']:.1f} s train, {el:.0f} s elapsed)")
        elif e["event"] == events.CACHED:
            _err(f"[{name}] identical configuration on identical data: reusing stored run {e['run_id']} "
                 "(use --force to retrain)")
        elif e["event"] in (events.CACHED_WITHOUT_MODEL, events.LABELS, events.FEATURES_NOT_SHARED):
            _err(f"[{name}] {e['message']}")
        elif e["event"] == events.HELD_OUT:
            m = e["metrics"]
            _err(f"[{name}] held out {e['corpus']} ({e['fold'] + 1}/{e['folds']}): UAR {m['uar']:.3f} "
                 f"({el:.0f} s elapsed)")
        elif e["event"] in (events.FEATURES, events.FINAL):
            _err(f"[{name}] {'computing features' if e['event'] == events.FEATURES else 'training final model'}"
                 f" ({el:.0f} s elapsed)")

    return progress


def _scores_line(name: str, s: dict) -> str:
    return (f"[{name}] UAR {s['uar']['mean']:.3f} ± {s['uar']['std']:.3f}, accuracy {s['accuracy']['mean']:.3f} ± "
            f"{s['accuracy']['std']:.3f}")


def _train_cross_corpus(a, models: list[str], params: dict):
    """`train --test-data`: each model trained on every clip of --data and tested on every clip of --test-data
    (``ser_core.cross_corpus``); stored with split cross-corpus, no model saved. JSON: the test corpus's
    metrics, as the other runs give them (``{"mean", "std"}``; one test set: std 0)."""
    from .corpora import load_corpora
    from .cross_corpus import check_cross_corpus, cross_corpus
    from .evaluation import RunConfig
    from .results import ResultsStore
    from .splits import CROSS_CORPUS

    train = load_corpora(a.data, corpus=a.corpus, taxonomy=a.taxonomy)
    test = load_corpora([a.test_data], corpus=a.test_corpus, taxonomy=train.taxonomy)  # labels mapped alike
    configs = [RunConfig(model=name, params=params.get(name, {}), feature_set=a.feature_set, split=CROSS_CORPUS,
                         folds=1, seed=a.seed, augment=a.augment, speaker_norm=a.speaker_norm, norm_by=a.norm_by,
                         balance=a.balance) for name in models]
    for cfg in configs:  # every impossible choice is refused before anything trains
        dropped = check_cross_corpus(cfg, train, test).to_dict()["dropped"]
    store = ResultsStore(a.db)
    results = []
    for name, cfg in zip(models, configs):
        res = cross_corpus(cfg, train, test, store=store, use_cache=not a.force, n_jobs=a.jobs,
                           progress=_train_progress(name))
        s, fold = res.summary, res.folds[0]
        results.append({"model": name, "run_id": res.run_id, "cached": res.cached, "split": CROSS_CORPUS,
                        "train_corpus": train.name, "test_corpus": test.name, "labels": res.labels,
                        "dropped": dropped, "n_train": fold["n_train"],
                        "n_test": fold["n_test"], **{m: s[m] for m in ("uar", "accuracy", "macro_f1",
                                                                       "weighted_precision", "weighted_recall",
                                                                       "ece", "brier") if m in s},
                        "per_class_recall": s["per_class_recall"], "saved_model": None})
        _err(_scores_line(name, s) + f" on {test.name} ({fold['n_test']} clips; trained on {train.name})")
    if a.json:
        _print_json(results)


def _save_target(a, corpus):
    """``model name -> save_to`` of ``cross_validate`` for `train`: with --replace-shipped the folder of that
    name in the shipped models folder (or --models-dir), replaced; otherwise a new folder of its own in your
    models folder (or --models-dir), named after the model, the data and the run; None with --no-save."""
    from functools import partial
    from pathlib import Path

    from .saved import check_writable, data_label, shipped_models_dir, user_model_path, user_models_dir

    if a.no_save:
        return lambda name: None
    if a.replace_shipped:
        root = Path(a.models_dir) if a.models_dir else shipped_models_dir()
        return lambda name: root / (a.name_prefix + name)
    root = Path(a.models_dir) if a.models_dir else user_models_dir()
    check_writable(root)
    label = data_label(corpus.name, corpus.root)
    return lambda name: partial(user_model_path, a.name_prefix + name, label, root=root)


def cmd_sweep(a):
    from .corpora import load_corpus
    from .evaluation import default_folds
    from .results import ResultsStore
    from .sweep import SweepConfig, format_params, run_sweep

    params = _parse_params(a.param)
    if set(params) - {a.model}:
        raise ConfigError(f"--param names model(s) {', '.join(sorted(set(params) - {a.model}))} and this sweep is of "
                          f"'{a.model}'; write --param {a.model}.NAME=VALUE.")
    corpus = load_corpus(a.data, corpus=a.corpus)
    config = SweepConfig(a.model, a.space, trials=a.trials, seed=a.seed, params=params.get(a.model, {}),
                         folds=a.folds if a.folds is not None else default_folds(corpus),
                         feature_set=a.feature_set, early_stop=a.early_stop, concurrency=a.concurrency).check(corpus)
    save_to = _save_target(a, corpus)(a.model)
    res = run_sweep(config, corpus, store=ResultsStore(a.db), save_to=save_to, progress=_sweep_progress(config))
    best = res.best
    _err(f"best of {len(res.trials)} trials in {res.wall_s:.0f} s: " + (
        f"trial {best['trial']} ({format_params(best['params'])}) UAR {best['uar']['mean']:.3f} ± "
        f"{best['uar']['std']:.3f}, run {best['run_id']}" if best else "none finished")
        + (f"; saved to {res.saved_model}" if res.saved_model else ""))
    if a.json:
        _print_json(res.to_dict())
    return 0 if best else 1


def _sweep_progress(config):
    """The ``progress`` callback of `sweep`: the features, then a line per ended trial, on stderr."""
    from .sweep import format_params, trial_outcome

    t0 = time.perf_counter()
    features = _train_progress(config.model)

    def progress(e):
        if e["event"] == events.TRIAL_DONE:
            _err(f"[trial {e['trial']}/{config.trials}] {format_params(e['params'])}: "
                 f"{trial_outcome(e, config.folds)} ({time.perf_counter() - t0:.0f} s elapsed)")
        elif e["event"] == events.SWEEP_START:
            _err(f"[{config.model}] sweep {e['sweep_id']}: {e['trials']} trials of {e['space']}, {e['folds']}-fold "
                 "speaker-grouped CV each")
        else:
            features(e)

    return progress


def cmd_evaluate(a):
    from .channels import parse_channels
    from .corpora import load_corpora
    from .inference import evaluate_model
    from .robustness import model_inputs
    from .saved import load_familiarity, load_speaker_norm, load_trained, resolve

    conditions = parse_channels(a.perturb)
    model, card = load_trained(a.model, a.models_dir)
    # the corpus's labels mapped as the model's training data were (calm counted as neutral, boredom left out...)
    taxonomy = (card.get("training_data") or {}).get("taxonomy", "native")
    corpus = load_corpora([a.data], corpus=a.corpus, taxonomy=taxonomy)
    if taxonomy != "native":
        _err(f"labels mapped by the {taxonomy} taxonomy the model was trained with"
             + (f"; {len(corpus.skipped)} clips left out (e.g. {corpus.skipped[0][1]})" if corpus.skipped else ""))
    y = corpus.manifest["emotion"].to_numpy()
    # an ensemble with speaker-adaptive members pools them too: each speaker normalised with its own clips
    adapted = bool(getattr(model, "adapted_members", None))
    voices = corpus.manifest["speaker"].astype(str).to_numpy() if adapted else None
    # features, or for an ensemble its members' probabilities (raw or calibrated, as it pools them)
    X = model_inputs(model, card, corpus.manifest["path"].tolist(), root=a.models_dir, n_jobs=a.jobs,
                     adapt_groups=voices)
    if adapted:
        _err(f"ensemble adapted to each voice: its adaptive members normalise each of the {len(set(voices))} "
             "speakers with its own clips (labels never used)")
    if card.get("speaker_norm"):  # as in CV: each speaker by its own clips (speakers with < 5: training stats)
        by_corpus = (card.get("options") or {}).get("norm_by") == "corpus"  # trained so: the corpus as one group
        speakers = corpus.manifest["corpus" if by_corpus else "speaker"].astype(str).to_numpy()
        X = load_speaker_norm(resolve(a.model, a.models_dir), unseen="self").transform(X, speakers)
        _err(f"speaker-adaptive model: each of the {len(set(speakers))} {'corpora' if by_corpus else 'speakers'} "
             "normalised with its own clips")
    familiarity = None
    fam = load_familiarity(resolve(a.model, a.models_dir))
    if fam is not None:  # its confidence follows how strange each clip is to its training clips
        from .familiarity import REFERENCE_SET
        from .features import compute_files

        familiarity = fam.score(compute_files(corpus.manifest["path"].tolist(), REFERENCE_SET, n_jobs=a.jobs,
                                              progress=False))
    m = evaluate_model(model, card, X, y, familiarity, adapted=adapted)  # calibrated as predict calibrates
    m.update(model=card["name"], corpus=corpus.name, adapted=adapted)
    if conditions:
        from .robustness import evaluate_perturbed

        m["perturbations"] = evaluate_perturbed(model, card, corpus, conditions, n_jobs=a.jobs,
                                                model_dir=resolve(a.model, a.models_dir),
                                                progress=lambda c: _err(f"perturbed: {c}"))
    if a.json:
        _print_json(m)
    else:
        print(f"{card['name']} on {corpus.name} ({m['n']} clips): UAR {m['uar']:.3f}, accuracy {m['accuracy']:.3f}, "
              f"macro F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}, Brier {m['brier']:.3f}" +
              "".join(f", {d} UAR {m[f'{d}_uar']:.3f}" for d in ("arousal", "valence") if f"{d}_uar" in m))
        for c, r in m.get("perturbations", {}).items():
            print(f"  {c:<10} UAR {r['uar']:.3f}, accuracy {r['accuracy']:.3f}, ECE {r['ece']:.3f}")


def cmd_ensemble(a):
    from .ensemble import fit_ensemble
    from .results import ResultsStore

    card = fit_ensemble([m.strip() for m in a.members.split(",") if m.strip()], root=a.models_dir, name=a.name,
                        store=ResultsStore(a.db), replace_shipped=a.replace_shipped, inputs=a.inputs,
                        adaptive=[m.strip() for m in a.adaptive.split(",") if m.strip()])
    metrics, cal = card["cv"]["metrics"], card["calibration"]
    if a.json:
        _print_json({"name": card["name"], "members": card["members"], "weights": card["weights"],
                     "run_id": card["cv"]["run_id"], "uar": metrics["uar"], "accuracy": metrics["accuracy"],
                     "ece": cal["ece"], "brier": cal["brier"], "calibration": cal})
    else:
        weights = ", ".join(f"{k} {v:.2f}" for k, v in card["weights"].items())
        print(f"{card['name']}: UAR {metrics['uar']['mean']:.3f} ± {metrics['uar']['std']:.3f}, ECE {cal['ece']:.3f} "
              f"(weights: {weights})")


def cmd_predict(a):
    from .inference import Predictor, describe_prediction, ensemble
    from .roots import printable
    from .speech import NOT_SPEECH, speech_check_file
    from .taxonomy import dimension_reading

    names = None if a.model == "all" else [m.strip() for m in a.model.split(",")]
    predictor = Predictor.from_dir(names, a.models_dir)
    adaptive = sorted(predictor.calibration_status())
    if a.calibrate and adaptive:
        predictor.calibrate(_audio_files(a.calibrate))
        _err(f"calibrated {', '.join(adaptive)} on {predictor.n_calibration_clips} clips")
    elif adaptive:
        _err(f"note: speaker-adaptive model(s) {', '.join(adaptive)} run uncalibrated (training-data statistics, "
             "less accurate); pass --calibrate with 5+ clips of the same speaker")
    elif a.calibrate:
        _err("note: none of these models is speaker-adaptive; --calibrate is ignored")
    thresholds = predictor.thresholds()
    out, failed = [], 0
    for f in a.files:
        try:
            if a.segments:  # a row per speech segment and model; the pauses are skipped
                out += _segment_rows(f, predictor, a.ensemble)
                continue
            y, is_speech, reason = speech_check_file(f)
        except SERError as exc:  # a bad file is a row too; the other files go on and the exit status says so
            out.append({"file": f, "model": None, "label": None, "error": str(exc)})
            failed += 1
            continue
        if not is_speech:  # a verdict, not an error: one row for the file, and the other files go on
            out.append({"file": f, "model": None, "label": None, "no_speech": True, "reason": reason})
            continue
        preds = predictor.predict(y, 16000)
        out += [{"file": f, **row} for row in predictor.rows(preds)]
        if a.ensemble and predictor.saved_ensemble() is None:  # a saved ensemble already has its row
            ens = ensemble(preds, predictor.weights())
            out.append({"file": f, "model": "ensemble", "label": max(ens, key=ens.get), "probabilities": ens,
                        **dimension_reading(ens)})
    if a.json:
        _print_json(out)
    else:
        for r in out:
            file = printable(r["file"])  # a name that is not UTF-8 as \xff escapes: any terminal can print it
            if r.get("error"):
                print(f"{file}\terror: {r['error']}")
            elif r.get("no_speech"):
                where = f"\t{r['start']:.2f}-{r['end']:.2f} s" if "start" in r else ""
                print(f"{file}{where}\t{NOT_SPEECH} {r['reason']}")
            else:
                said = describe_prediction(r["probabilities"], thresholds.get(r["model"]))
                where = f"\t{r['start']:.2f}-{r['end']:.2f} s" if "start" in r else ""
                print(f"{file}{where}\t{r['model']:<20} {said['text']}{_dimension_text(r)}")
    if failed:
        _err(f"{failed} of {len(a.files)} files could not be analysed (exit status 1)")
    return 1 if failed else 0


def _dimension_text(row: dict) -> str:
    """`predict`'s arousal and valence after the emotion: "  (excited 72 %, negative 61 %)"; "" without them."""
    from .taxonomy import DIMENSIONS, LEVEL_WORDS

    said = [f"{LEVEL_WORDS[d][max(row[d], key=row[d].get)]} {max(row[d].values()):.0%}" for d in DIMENSIONS
            if row.get(d)]
    return f"  ({', '.join(said)})" if said else ""


def _segment_rows(f, predictor, mean_row: bool) -> list[dict]:
    """`predict --segments` rows of file ``f`` (``ser_core.segments.segment_rows``), or one ``no_speech`` row
    when it holds no speech segment."""
    from .segments import predict_file_segments, segment_rows

    segments, reason = predict_file_segments(f, predictor)
    if not segments:
        return [{"file": f, "model": None, "label": None, "no_speech": True, "reason": reason}]
    return [{"file": f, **row} for row in segment_rows(segments, predictor, mean_row=mean_row)]


def cmd_explain(a):
    from .explain import explain
    from .inference import Predictor
    from .speech import NOT_SPEECH, speech_check, speech_check_file

    y, is_speech, reason = speech_check_file(a.file)
    start = int(a.start * 16000) if a.start is not None else 0
    if y is not None and (a.start is not None or a.end is not None):  # the part asked for is what must be speech
        y = y[start:int(a.end * 16000) if a.end is not None else None]
        is_speech, reason = speech_check(y, 16000)
    if not is_speech:
        if a.json:
            _print_json({"file": a.file, "model": a.model, "no_speech": True, "reason": reason})
        else:
            print(f"{a.file}\t{NOT_SPEECH} {reason}")
        return 0
    predictor = Predictor.from_dir([a.model], a.models_dir)
    ex = explain(y, 16000, predictor, a.model, label=a.label, root=a.models_dir, offset_s=start / 16000)
    if a.json:
        _print_json({"file": a.file, **ex})
        return 0
    print(ex["text"])
    for r in ex.get("regions", []):
        print(f"  {r['start']:6.2f}-{r['end']:.2f} s  {r['low_hz']:>5}-{r['high_hz']} Hz  effect {r['effect']:+.2f}"
              f"  (without it {r['probability_without']:.0%})")
    for r in ex.get("features", []) + ex.get("against", []):
        print(f"  effect {r['effect']:+.2f}  (without it {r['probability_without']:.0%})  {r['text']}")
    print(f"({ex['method']})")
    return 0


def _audio_files(items) -> list[str]:
    """Files and folders (their audio files, recursively, sorted) -> a list of audio file paths."""
    from pathlib import Path

    from .corpora import AUDIO_EXTS

    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTS)
        else:
            out.append(str(p))
    return out


def cmd_models(a):
    from .models import MODEL_SPECS
    from .saved import list_trained

    if a.registry:
        rows = [{"name": s.name, "framework": s.framework, "feature_set": s.feature_set,
                 "description": s.description} for s in MODEL_SPECS.values()]
    else:
        rows = []
        for c in list_trained(a.models_dir):
            metrics, cal = c.get("cv", {}).get("metrics", {}), c.get("calibration")
            cv = {m: dict(metrics[m]) for m in ("uar", "accuracy", "macro_f1", "ece", "brier") if m in metrics}
            for m in ("ece", "brier"):  # over all out-of-fold clips: per-fold ECE on ~240 clips is biased upwards
                if m in cv and cal and m in cal:
                    cv[m]["pooled"] = cal[m]
            rows.append({"name": c["name"], "source": c["source"], "model": c.get("model"),
                         "framework": c.get("framework"),
                         "labels": c.get("labels"), "feature_set": c.get("feature_set", {}).get("name"),
                         "cv": {"split": c.get("cv", {}).get("split"), "k": c.get("cv", {}).get("k"), **cv},
                         "calibration": {k: cal[k] for k in ("temperature", "threshold")} if cal else None,
                         "size_bytes": c.get("size_bytes"), "speaker_norm": bool(c.get("speaker_norm"))})
    if a.json:
        _print_json(rows)
    else:
        for r in rows:
            cv = r.get("cv", {})
            score = f"UAR {cv['uar']['mean']:.3f}" if "uar" in cv else r.get("description", "")
            notes = [r["source"]] if "source" in r else []
            notes += ["speaker-adaptive"] if r.get("speaker_norm") else []
            print(f"{r['name']:<28} {r['framework']:<12} {score}" + "".join(f" ({n})" for n in notes))


def cmd_models_delete(a):
    from .saved import delete_user_model

    folder = delete_user_model(a.name, root=a.models_dir, store=_store(a))
    if a.json:
        _print_json({"deleted": a.name, "path": str(folder)})
    else:
        print(f"deleted {folder}")


def cmd_leaderboard(a):
    from .leaderboard import Leaderboard, best_of_sweeps, latex_table, markdown_table

    board = Leaderboard(_store(a))
    df = board.runs()
    df = df[df["sweep"] == a.sweep] if a.sweep else best_of_sweeps(df)
    for column in ("dataset", "split", "source"):
        if getattr(a, column):
            df = df[df[column] == getattr(a, column)]
    if a.matrix:
        return _print_matrix(board, df, a.json)
    table = board.table(df)
    if a.json:
        _print_json(board.records(table))
    elif table.empty:
        print("No runs match; run `python -m ser_core train --data DIR --models svm`.")
    elif a.markdown or a.latex:
        print(markdown_table(table) if a.markdown else latex_table(table), end="")
    else:
        _print_leaderboard(table)


def _print_matrix(board, runs, as_json: bool) -> None:
    """`leaderboard --matrix`: the transfer cells of ``runs`` (``ser_core.transfer``), as JSON rows or one
    matrix per model and metric."""
    from .transfer import MATRIX_METRICS, transfer_cells, transfer_matrix

    cells = transfer_cells(board, runs)
    if as_json:
        _print_json(cells.astype(object).where(cells.notna(), None).to_dict("records"))
        return
    if cells.empty:
        print("No run tested on unseen speakers; run `python -m ser_core train --data A --data B --split corpus`.")
        return
    for model in dict.fromkeys(cells["model"]):
        for metric, label in MATRIX_METRICS.items():
            print(f"\n{model}: {label} [95 % CI over the test speakers]")
            print(transfer_matrix(cells, model, metric).to_string())


def _print_leaderboard(table):
    print(f"{'id':>20} {'model':<18} {'dataset':<9} {'split':<8} {'k':>2} {'UAR':>13} {'95 % CI':>13} "
          f"{'accuracy':>13} {'macro F1':>13} {'train s':>8} {'ms/clip':>8}")
    for r in table.itertuples():
        ci = f"{r.uar_ci_low:.3f}-{r.uar_ci_high:.3f}" if r.uar_ci_low == r.uar_ci_low else "-"
        mark = (" *" if r.speaker_dependent else "") + (" =" if r.not_worse_than_best is True and
                                                        r.comparable > 1 else "")
        print(f"{r.id!s:>20} {r.model:<18} {r.dataset:<9} {r.split:<8} {r.k:>2} {r.uar_mean:.3f} ± {r.uar_std:.3f} "
              f"{ci:>13} {r.accuracy_mean:.3f} ± {r.accuracy_std:.3f} {r.macro_f1_mean:.3f} ± {r.macro_f1_std:.3f} "
              f"{_or_dash(r.train_time_s, '8.1f')} {_or_dash(r.latency_ms, '8.2f')}{mark}")
    if table["speaker_dependent"].any():
        print("* speaker-dependent (random) split: optimistic, speakers appear in both training and test folds")
    print("= not significantly worse than the best UAR on the same folds (paired permutation test over speakers, "
          "p >= 0.05); CI: 95 % bootstrap over speakers")


def _or_dash(value, spec: str) -> str:
    """``value`` formatted, or a dash where it is unknown (NaN: the shipped runs' training time)."""
    return format(value, spec) if value == value else format("-", ">" + spec.split(".")[0])


def cmd_breakdown(a):
    from .leaderboard import Leaderboard

    out = Leaderboard(_store(a)).breakdown(a.run)
    if out is None:
        raise ConfigError(f"Run {a.run} kept no out-of-fold predictions (stored by an older version); train it "
                          "again with --force to break it down.")
    if a.json:
        _print_json(out)
        return
    for group in ("gender", "intensity", "speaker"):
        for name, v in out.get(group, {}).items():
            print(f"{group:<10} {name:<12} UAR {v['uar']:.3f} ({v['clips']} clips)")
    if out["gender_gap_flag"]:
        print(f"note: the UAR gap between genders is {out['gender_gap']:.3f}, above 0.10")


def cmd_compare(a):
    from .leaderboard import Leaderboard

    out = Leaderboard(_store(a)).compare(a.run_a, a.run_b)
    if a.json:
        _print_json(out)
        return
    print(f"run {a.run_a} minus run {a.run_b}, same clips and folds; 95 % CI by bootstrap over {out['n_units']} "
          f"{out['unit']}s, p by a paired permutation test")
    for m in ("uar", "accuracy", "macro_f1", "weighted_precision", "weighted_recall"):
        d = out[m]
        print(f"  {m:<19} {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]  p = {d['p']:.4f}")


def _store(a):
    from .results import ResultsStore

    return ResultsStore(a.db)


# -- parser --------------------------------------------------------------------------------------------------
def _models_list_options(parser, default=None):
    """The options of `models` and `models list` (``default`` SUPPRESS on the subcommand, so that it does not
    overwrite an option given before it)."""
    flag = {} if default is None else {"default": default}
    parser.add_argument("--registry", action="store_true", help="every model family, not the saved models", **flag)
    parser.add_argument("--models-dir", default=default, help="list only this folder")
    parser.add_argument("--json", action="store_true", **flag)


def build_parser() -> argparse.ArgumentParser:
    from .augment import AUGMENTATIONS
    from .channels import CHANNELS
    from .sweep import DISTRIBUTIONS

    p = argparse.ArgumentParser(prog="python -m ser_core", description="SER Studio: speech emotion recognition "
                                "workbench (corpora, features, models, honest evaluation).")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect or download a corpus").add_subparsers(dest="data_cmd", required=True)
    d = data.add_parser("info", help="summarise a corpus folder (auto-detected) or CSV")
    d.add_argument("dir")
    d.add_argument("--corpus", default="auto", help="force a corpus adapter (default: auto-detect)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_data_info)
    d = data.add_parser("download", help="download a corpus from its official archive")
    d.add_argument("name", help="e.g. ravdess")
    d.add_argument("--to", default="data", help="data folder (default: ./data)")
    d.add_argument("--url", help="override the archive URL (e.g. a mirror or file://)")
    d.add_argument("--archive", help="use an archive already downloaded by hand")
    d.set_defaults(func=cmd_data_download)

    f = sub.add_parser("features", help="extract (and cache) a feature set for a corpus")
    f.add_argument("dir")
    f.add_argument("--set", default="rich", help="feature set name (see `feature-sets`)")
    f.add_argument("--corpus", default="auto")
    f.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    f.add_argument("--no-cache", action="store_true")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_features)

    f = sub.add_parser("feature-sets", help="list the named feature sets")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_feature_sets)

    t = sub.add_parser("train", help="K-fold cross-validate models, store the results, save the final models")
    t.add_argument("--data", required=True, action="append", metavar="DIR",
                   help="corpus folder or CSV; repeat it to train on several corpora as one (their speakers kept "
                        "apart, their labels mapped by --taxonomy)")
    t.add_argument("--taxonomy", default=None, choices=sorted(TAXONOMIES),
                   help="; ".join(f"{t.name}: {t.description}" for t in TAXONOMIES.values()) +
                        " (default: native for one corpus, shared for several)")
    t.add_argument("--test-data", default=None, metavar="DIR",
                   help="another corpus folder or CSV: train on every clip of --data, test on every clip of this one "
                        "(split cross-corpus: the emotions both have; --split and --folds do not apply; no model "
                        "is saved)")
    t.add_argument("--test-corpus", default="auto", help="force the test corpus's adapter (default: auto-detect)")
    t.add_argument("--models", required=True, help="comma-separated registry names, e.g. svm,cnn")
    t.add_argument("--folds", type=int, default=None,
                   help="K of K-fold (default: 4, or fewer where the data has fewer speakers or clips of an emotion)")
    t.add_argument("--split", default="speaker", choices=SPLIT_CHOICES,
                   help="; ".join(f"{n}: {SPLITS[n].description}" for n in SPLIT_CHOICES) + " (default: speaker)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--feature-set", default=None, help="override the models' default feature set")
    t.add_argument("--augment", default="",
                   help="training-fold augmentation, comma-separated: " + ", ".join(AUGMENTATIONS))
    t.add_argument("--speaker-norm", action="store_true", help="per-speaker z-scoring (utterance features)")
    t.add_argument("--norm-by", default="speaker", choices=NORM_BY,
                   help="with --speaker-norm: z-score each clip by its speaker's statistics (default) or by its "
                        "whole corpus's")
    t.add_argument("--ood-calibration", action="store_true",
                   help="several corpora: calibrate confidence on corpora held out too (each corpus left out in "
                        "turn first, stored as a run of its own); the saved model's temperature grows with how "
                        "strange a clip is to its training clips")
    t.add_argument("--balance", default="", choices=BALANCE, help="corpus: weigh training clips so that every "
                   "corpus counts alike (models that take sample weights: svm, random_forest, decision_tree)")
    t.add_argument("--channels", default="", metavar="LIST",
                   help="also score every test fold through these channels (e.g. phone,noise10): the model card "
                        "gets a robustness block, and an ensemble of such models fits its weights on them too")
    t.add_argument("--param", action="append", help="MODEL.NAME=VALUE hyperparameter override (repeatable)")
    t.add_argument("--corpus", default="auto", help="force the adapter of every --data (default: auto-detect)")
    t.add_argument("--jobs", type=int, default=None)
    t.add_argument("--db", default=None, help="results database (default: $SER_RESULTS_DB or ~/.cache/ser_studio)")
    t.add_argument("--models-dir", default=None, help="where final models are saved (default: your models folder, "
                   "$SER_USER_MODELS_DIR or ~/.cache/ser_studio/models, each as MODEL-DATA-runID)")
    t.add_argument("--replace-shipped", action="store_true", help="save each model over the shipped model of its "
                   "name (trained_models/ or $SER_MODELS_DIR; what scripts/train_defaults.py does)")
    t.add_argument("--name-prefix", default="", help="prefix for the saved model folders")
    t.add_argument("--no-save", action="store_true", help="cross-validate only; do not train/save final models")
    t.add_argument("--force", action="store_true", help="retrain even if an identical run is stored")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    sw = sub.add_parser("sweep", help="search a model's hyperparameters (Ray Tune + Optuna), scored by "
                        "speaker-grouped CV UAR; every trial stored as a run, the best saved as your model",
                        description="Search a model's hyperparameters: Ray Tune runs the trials (1 CPU each, on "
                        "the cluster of $SER_RAY_ADDRESS or a local Ray), Optuna's TPE chooses them, and each is "
                        "scored by the mean UAR of speaker-grouped K-fold CV on the same folds. Every finished trial "
                        "is stored as a run of the sweep (Leaderboard); the best configuration is trained on every "
                        "clip and saved as your model. Progress on stderr; --json prints the trials and the best "
                        "on stdout.")
    sw.add_argument("--data", required=True, help="corpus folder or CSV")
    sw.add_argument("--model", required=True, help="a registry name, e.g. svm (see `models --registry`)")
    sw.add_argument("--space", required=True, metavar="SPACE",
                    help="NAME=DISTRIBUTION(ARGS) items separated by ';', e.g. 'C=loguniform(0.1,100);"
                         "gamma=choice(scale,auto)'; distributions: " + ", ".join(
                             d.signature for d in DISTRIBUTIONS.values()) + " (randint includes high)")
    sw.add_argument("--trials", type=int, default=20, help="how many configurations to try (default: 20)")
    sw.add_argument("--folds", type=int, default=None, help="K of each trial's speaker-grouped K-fold (default: 4, "
                    "or fewer where the data has fewer speakers or clips of an emotion)")
    sw.add_argument("--seed", type=int, default=0, help="seeds the folds and the search (default: 0)")
    sw.add_argument("--param", action="append", help="MODEL.NAME=VALUE: a fixed parameter of every trial")
    sw.add_argument("--feature-set", default=None, help="override the model's default feature set")
    sw.add_argument("--early-stop", action="store_true", help="ASHA: stop trials whose running UAR after their "
                    "first folds trails the others' (they are not stored)")
    sw.add_argument("--concurrency", type=int, default=None, help="trials at once (default: one per CPU of the "
                    "Ray cluster; 1 makes the whole search reproducible from --seed)")
    sw.add_argument("--corpus", default="auto")
    sw.add_argument("--db", default=None, help="results database (default: $SER_RESULTS_DB or ~/.cache/ser_studio)")
    sw.add_argument("--models-dir", default=None, help="where the best model is saved (default: your models "
                    "folder, as MODEL-DATA-runID)")
    sw.add_argument("--name-prefix", default="", help="prefix for the saved model's folder")
    sw.add_argument("--no-save", action="store_true", help="do not train and save the best configuration")
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(func=cmd_sweep, replace_shipped=False)

    e = sub.add_parser("evaluate", help="score a saved model on a labelled corpus")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--corpus", default="auto")
    e.add_argument("--models-dir", default=None)
    e.add_argument("--jobs", type=int, default=None)
    e.add_argument("--perturb", default="", metavar="CONDITIONS",
                   help="also score clips through realistic channels, comma-separated: " + ", ".join(CHANNELS))
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    en = sub.add_parser("ensemble", help="pool saved models into an ensemble fitted on their out-of-fold "
                        "predictions (same folds), cross-validated and calibrated like any model")
    en.add_argument("--members", required=True, help="comma-separated saved model names, e.g. lda,svm,mlp_tf,cnn")
    en.add_argument("--adaptive", default="", help="speaker-adaptive saved models (same folds), e.g. "
                    "adaptive_svm,adaptive_lda: pooled with the members only where a voice's own clips normalise "
                    "them (predict --calibrate, evaluate on a corpus with speakers)")
    en.add_argument("--name", default=None, help="folder name of the saved ensemble (default: "
                    "ensemble-DATA-runID in your models folder; ensemble with --models-dir or --replace-shipped)")
    en.add_argument("--models-dir", default=None, help="where the members are and the ensemble goes (default: "
                    "members from the shipped models and yours, the ensemble into yours)")
    en.add_argument("--replace-shipped", action="store_true", help="save it over the shipped ensemble")
    en.add_argument("--inputs", choices=ENSEMBLE_INPUTS, default=ENSEMBLE_INPUTS[0],
                    help="pool the members' raw probabilities (default; measured better) or their calibrated ones")
    en.add_argument("--db", default=None)
    en.add_argument("--json", action="store_true")
    en.set_defaults(func=cmd_ensemble)

    pr = sub.add_parser("predict", help="predict the emotion of audio files with saved models",
                        description="Predict the emotion of audio files with saved models. A file that does not "
                        "sound like speech (silence, noise, music, a tone, too short) gets one row with \"label\": "
                        "null, \"no_speech\": true and the reason instead of the models' rows. A file that cannot "
                        "be analysed (unreadable, too long, beyond the decoding limits) gets one row with \"label\": "
                        "null and \"error\": the reason. The other files go on either way. Exit status: 0 when "
                        "every file was analysed (speech or not), 1 when any file failed, 2 for a usage error "
                        "(an unknown model, bad options).")
    pr.add_argument("--model", default="all", help="a saved model name, a comma list, or 'all'")
    pr.add_argument("files", nargs="+")
    pr.add_argument("--models-dir", default=None)
    pr.add_argument("--ensemble", action="store_true", help="add a CV-UAR-weighted mean row named 'ensemble' "
                    "(when the saved ensemble is not among the models)")
    pr.add_argument("--calibrate", action="append", metavar="FILE_OR_DIR",
                    help="clips (5+) of the same speaker for speaker-adaptive models (repeatable; folders too)")
    pr.add_argument("--segments", action="store_true", help="split each file into speech segments (Silero "
                    "VAD) and predict each; the pauses are skipped. Rows gain segment, start and end (seconds)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("explain", help="why a saved model gave its answer for one clip: occlusion map "
                        "(spectrogram models) or the features that pushed it, against the training data")
    ex.add_argument("--model", required=True, help="a saved model name (an ensemble: its highest-weight member)")
    ex.add_argument("file")
    ex.add_argument("--label", default=None, help="the emotion to explain (default: the model's answer)")
    ex.add_argument("--start", type=float, default=None, help="explain from this second of the file on")
    ex.add_argument("--end", type=float, default=None, help="explain up to this second of the file")
    ex.add_argument("--models-dir", default=None)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_explain)

    m = sub.add_parser("models", help="list saved models, shipped and yours (or --registry: all model families); "
                       "`models delete NAME` deletes one of yours")
    _models_list_options(m)
    m.set_defaults(func=cmd_models)
    msub = m.add_subparsers(dest="models_cmd")  # optional: `models` alone lists
    _models_list_options(msub.add_parser("list", help="the same as `models`"), argparse.SUPPRESS)
    md = msub.add_parser("delete", help="delete one of your models (shipped models cannot be deleted); its run "
                         "stays in the results store, without a saved model")
    md.add_argument("name", help="the model's folder name, as `models` lists it")
    md.add_argument("--models-dir", default=argparse.SUPPRESS, help="your models folder (default: "
                    "$SER_USER_MODELS_DIR)")
    md.add_argument("--db", default=None, help="the results store whose run names this model (default: "
                    "$SER_RESULTS_DB)")
    md.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    md.set_defaults(func=cmd_models_delete)

    lb = sub.add_parser("leaderboard", help="the stored runs and the shipped models' runs, with 95 %% confidence "
                        "intervals (bootstrap over speakers) and which runs are not significantly worse than the best")
    lb.add_argument("--db", default=None)
    lb.add_argument("--dataset")
    lb.add_argument("--split")
    lb.add_argument("--source", choices=["shipped", "yours"])
    lb.add_argument("--sweep", metavar="ID", help="every trial of this sweep (by default a sweep shows as its best "
                    "trial)")
    lb.add_argument("--matrix", action="store_true", help="across corpora: for each model, trained on -> tested on "
                    "(UAR, ECE, arousal UAR with 95 %% intervals over the test speakers), from its leave-one-corpus-"
                    "out, cross-corpus and speaker-grouped runs; --json: one row per (run, test corpus)")
    out = lb.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="every run with ci, vs_best and breakdown")
    out.add_argument("--markdown", action="store_true", help="a table for papers: mean ± std [95 %% CI]")
    out.add_argument("--latex", action="store_true", help="the same as a LaTeX tabular (booktabs)")
    lb.set_defaults(func=cmd_leaderboard)

    bd = sub.add_parser("breakdown", help="UAR of a run per speaker, gender and intensity (out-of-fold)")
    bd.add_argument("run", help="a run id from `leaderboard` (a number, or shipped:NAME)")
    bd.add_argument("--db", default=None)
    bd.add_argument("--json", action="store_true")
    bd.set_defaults(func=cmd_breakdown)

    cp = sub.add_parser("compare", help="run A minus run B on the same folds: difference, 95 %% CI, p-value")
    cp.add_argument("run_a")
    cp.add_argument("run_b")
    cp.add_argument("--db", default=None)
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=cmd_compare)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)  # None (success) or an exit status of its own (predict: 1 when a file failed)
    except SERError as exc:
        _err(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    return status or 0
