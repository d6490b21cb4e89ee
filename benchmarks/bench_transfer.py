"""Transfer techniques under leave-one-corpus-out on the shared corpora: the table of docs/cross_corpus.md.

    python benchmarks/bench_transfer.py [--data DIR ...] [--only NAME,...] [--db PATH] [--json-out PATH]

Every row is one configuration cross-validated with ``--split corpus`` on RAVDESS (actors 01-16), TESS and EmoDB
read as one (the shared taxonomy unless the row says otherwise): each corpus held out in turn, the model trained
on the other two, its test clips scored with probabilities calibrated on the other held-out corpora (so every
number is out of corpus). Printed and written per held-out corpus, with the mean and standard deviation over
the three: UAR (7 emotions; an emotion the held-out corpus lacks counts as a wrong answer), ECE, arousal UAR.
Runs are stored in ``--db`` (default benchmarks/out/transfer.sqlite), so a second call reuses them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class Row:
    name: str  # the technique, as the table names it
    model: str
    feature_set: str = "expressive"
    options: dict = field(default_factory=dict)  # RunConfig fields: speaker_norm, norm_by, balance, augment, params
    taxonomy: str = "shared"
    group: str = ""  # the table's section


SINGLE, ADAPTIVE = "single clip (one recording, nothing else known)", "with the statistics of the speaker's clips"
ROWS = [
    Row("our expressive set (global scaler)", "svm", group=SINGLE),
    Row("lda on the expressive set", "lda", group=SINGLE),
    Row("the shipped front end: expressive after denoising", "svm", "expressive_denoised", group=SINGLE),
    Row("per-utterance normalisation (CMN of MFCC and log-mel frames)", "svm", "expressive_cmn", group=SINGLE),
    Row("eGeMAPS (openSMILE)", "svm", "egemaps", group=SINGLE),
    Row("ComParE (openSMILE)", "svm", "compare", group=SINGLE),
    Row("speaker encoder states (GE2E, resemblyzer's weights)", "svm", "voice_encoder", group=SINGLE),
    Row("expressive + eGeMAPS", "svm", "expressive_egemaps", group=SINGLE),
    Row("expressive + speaker encoder", "svm", "expressive_voice", group=SINGLE),
    Row("corpus-balanced training (each corpus weighs alike)", "svm", options={"balance": "corpus"}, group=SINGLE),
    Row("training copies through random channels (x2)", "svm", options={"augment": ("channel*2",)}, group=SINGLE),
    Row("training copies through rooms and laptop microphones", "svm",
        options={"augment": ("channel:room", "channel:room_mic")}, group=SINGLE),
    Row("training copies at other speeds (x2)", "svm", options={"augment": ("speed*2",)}, group=SINGLE),
    Row("native taxonomy (calm, boredom kept)", "svm", taxonomy="native", group=SINGLE),
    Row("fcnn_torch (MLP) on the expressive set", "fcnn_torch", options={"params": {"batch_size": 128}},
        group=SINGLE),
    Row("per-corpus normalisation (each corpus by its own statistics)", "svm",
        options={"speaker_norm": True, "norm_by": "corpus"}, group=ADAPTIVE),
    Row("per-speaker normalisation", "svm", options={"speaker_norm": True}, group=ADAPTIVE),
    Row("per-speaker normalisation, lda", "lda", options={"speaker_norm": True}, group=ADAPTIVE),
    Row("per-speaker normalisation, eGeMAPS", "svm", "egemaps", options={"speaker_norm": True}, group=ADAPTIVE),
    Row("per-speaker normalisation, speaker encoder", "svm", "voice_encoder", options={"speaker_norm": True},
        group=ADAPTIVE),
    Row("per-speaker normalisation, expressive + eGeMAPS", "svm", "expressive_egemaps",
        options={"speaker_norm": True}, group=ADAPTIVE),
    Row("per-speaker normalisation, expressive + speaker encoder", "svm", "expressive_voice",
        options={"speaker_norm": True}, group=ADAPTIVE),
    Row("per-speaker normalisation + corpus-balanced", "svm", options={"speaker_norm": True, "balance": "corpus"},
        group=ADAPTIVE),
    Row("per-speaker normalisation + channel copies (x2)", "svm",
        options={"speaker_norm": True, "augment": ("channel*2",)}, group=ADAPTIVE),
]
CORPORA = ("ravdess", "tess", "emodb")
METRICS = ("uar", "ece", "arousal_uar")


def run_row(row: Row, corpora: dict, store) -> dict:
    from ser_core.corpora import load_corpora
    from ser_core.evaluation import RunConfig, cross_validate

    corpus = corpora.setdefault(row.taxonomy, load_corpora([DATA_DIRS[c] for c in CORPORA], taxonomy=row.taxonomy))
    opts = dict(row.options)
    config = RunConfig(row.model, params=opts.pop("params", {}), feature_set=row.feature_set, split="corpus",
                       **opts)
    t0 = time.perf_counter()
    res = cross_validate(config, corpus, store=store)
    per = res.summary["per_corpus"]
    out = {"name": row.name, "group": row.group, "model": row.model, "feature_set": row.feature_set,
           "options": {k: list(v) if isinstance(v, tuple) else v for k, v in row.options.items()},
           "taxonomy": row.taxonomy, "run_id": res.run_id, "seconds": round(time.perf_counter() - t0, 1),
           "held_out": {c: {m: per[c].get(m) for m in METRICS} for c in CORPORA}}
    for m in METRICS:
        values = [per[c][m] for c in CORPORA if per[c].get(m) is not None]
        out[m] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return out


def markdown(results: list[dict]) -> str:
    head = ("| technique | model, features | " + " | ".join(f"UAR {c}" for c in CORPORA) +
            " | mean UAR ± sd | ECE (mean) | arousal UAR (mean) |")
    lines = []
    for group in dict.fromkeys(r["group"] for r in results):
        lines += [f"\n**{group}**\n", head, "|" + "---|" * (5 + len(CORPORA))]
        for r in (r for r in results if r["group"] == group):
            cells = [f"{r['held_out'][c]['uar']:.3f}" for c in CORPORA]
            lines.append(f"| {r['name']} | {r['model']}, {r['feature_set']} | " + " | ".join(cells) +
                         f" | **{r['uar']['mean']:.3f}** ± {r['uar']['std']:.3f} | {r['ece']['mean']:.3f} | "
                         f"{r['arousal_uar']['mean']:.3f} |")
    return "\n".join(lines) + "\n"


DATA_DIRS: dict[str, Path] = {}


def main():
    from ser_core.results import ResultsStore

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA), help="the folder holding ravdess/, tess/ and emodb/")
    p.add_argument("--only", default=None, help="rows whose name contains one of these (comma-separated)")
    p.add_argument("--db", default=str(REPO / "benchmarks" / "out" / "transfer.sqlite"))
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    DATA_DIRS.update({c: Path(a.data) / c for c in CORPORA})
    Path(a.db).parent.mkdir(parents=True, exist_ok=True)
    store, corpora, results = ResultsStore(a.db), {}, []
    wanted = [w.strip() for w in a.only.split(",")] if a.only else None
    for row in ROWS:
        if wanted and not any(w in row.name for w in wanted):
            continue
        r = run_row(row, corpora, store)
        results.append(r)
        print(f"{r['name']:<62} " + " ".join(f"{r['held_out'][c]['uar']:.3f}" for c in CORPORA) +
              f"  mean {r['uar']['mean']:.3f}  ECE {r['ece']['mean']:.3f}  arousal {r['arousal_uar']['mean']:.3f}"
              f"  ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    print(markdown(results))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"rows": results}, indent=1))


if __name__ == "__main__":
    main()
