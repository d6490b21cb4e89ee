"""Retrain the default models shipped in trained_models/ from a RAVDESS folder.

    python scripts/train_defaults.py [DATA_DIR] [--models svm,cnn] [--db PATH]

Runs speaker-grouped 4-fold cross-validation for each default model (results go to the results store), then
trains each on all clips and saves it with its model card into trained_models/. Prints the total time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODELS = ["svm", "random_forest", "mlp_tf", "fcnn_torch", "transformer_torch", "cnn", "cnn_lstm",
                  "lstm", "decision_tree"]
# speaker-adaptive variants (per-speaker normalisation; calibrate with 5+ clips of the user), saved as adaptive_*
ADAPTIVE_MODELS = ["svm", "fcnn_torch"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--db", default=None)
    p.add_argument("--adaptive", default=",".join(ADAPTIVE_MODELS), help="speaker-adaptive variants ('' for none)")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--json-out", default=None, help="write the runs' summaries here")
    a = p.parse_args()
    from ser_core.cli import main as cli

    import contextlib
    import io
    import json

    t0 = time.perf_counter()
    base = ["train", "--data", a.data, "--folds", str(a.folds), "--split", "speaker", "--force", "--json",
            "--models-dir", str(REPO / "trained_models")] + (["--db", a.db] if a.db else [])
    runs, rc = [], 0
    for models, extra in ((a.models, []), (a.adaptive, ["--speaker-norm", "--name-prefix", "adaptive_"])):
        if not models:
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = cli(base + ["--models", models] + extra) or rc
        runs += [{**r, "speaker_norm": bool(extra)} for r in json.loads(out.getvalue() or "[]")]
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s", file=sys.stderr)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"total_s": round(total, 1), "runs": runs}, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
