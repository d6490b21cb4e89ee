"""The shipped models, per corpus: new speakers of the training corpora and each corpus held out entirely.

    python benchmarks/bench_shipped_transfer.py [--models-dir trained_models] [--json-out PATH]

Reads what each shipped model's card and files keep (nothing is retrained): its speaker-grouped 4-fold
cross-validation on RAVDESS (actors 01-16), TESS and EmoDB (``cv.per_corpus``) and its leave-one-corpus-out run
(``transfer.per_corpus``), both calibrated as the model is (``familiarity``), and for the ensemble both poolings
(single clip; adapted: its speaker-adaptive members pooled too, each voice normalised by its own clips). Prints
Markdown tables of UAR, ECE, arousal UAR, the share of wrong answers above 90 % and of "not sure" answers, and
writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = ("ravdess", "tess", "emodb")
COLUMNS = ("uar", "ece", "arousal_uar", "wrong_over_90", "uncertain_fraction")


def rows(card: dict, name: str) -> list[dict]:
    """One row per (protocol, corpus) of a card (or an ensemble's adapted block, whose metrics sit elsewhere)."""
    cv = card.get("cv", {}).get("per_corpus") or card.get("per_corpus") or {}
    held = (card.get("transfer") or {}).get("per_corpus") or {}
    out = []
    for protocol, per in (("new speakers", cv), ("corpus held out", held)):
        for c in CORPORA:
            if c in per:
                out.append({"model": name, "protocol": protocol, "corpus": c,
                            **{k: per[c].get(k) for k in COLUMNS}})
    return out


def table(records: list[dict], protocol: str) -> str:
    models = list(dict.fromkeys(r["model"] for r in records))
    head = "| model | " + " | ".join(f"{c} UAR" for c in CORPORA) + " | mean UAR | " + \
        " | ".join(f"{c} ECE" for c in CORPORA) + " | mean arousal UAR | wrong > 90 % (max) | not sure (mean) |"
    lines = [head, "|" + "---|" * (5 + 2 * len(CORPORA))]
    for m in models:
        mine = {r["corpus"]: r for r in records if r["model"] == m and r["protocol"] == protocol}
        if not mine:
            continue
        get = lambda k: [mine[c][k] for c in CORPORA if c in mine and mine[c].get(k) is not None]  # noqa: E731
        mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
        lines.append(f"| {m} | " + " | ".join(f"{mine[c]['uar']:.3f}" if c in mine else "" for c in CORPORA) +
                     f" | **{mean(get('uar')):.3f}** | " +
                     " | ".join(f"{mine[c]['ece']:.3f}" if c in mine else "" for c in CORPORA) +
                     f" | {mean(get('arousal_uar')):.3f} | {max(get('wrong_over_90') or [float('nan')]):.3f} | "
                     f"{mean(get('uncertain_fraction')):.3f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", default=str(REPO / "trained_models"))
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    records = []
    for folder in sorted(Path(a.models_dir).glob("*/card.json")):
        card = json.loads(folder.read_text())
        records += rows(card, card["name"])
        if card.get("adapted"):
            records += rows(card["adapted"], f"{card['name']} (adapted to each voice)")
    for protocol in ("new speakers", "corpus held out"):
        print(f"\n**{protocol}**\n\n{table(records, protocol)}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"rows": records}, indent=1))


if __name__ == "__main__":
    main()
