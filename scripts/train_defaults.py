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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--db", default=None)
    p.add_argument("--folds", type=int, default=4)
    a = p.parse_args()
    from ser_core.cli import main as cli

    t0 = time.perf_counter()
    argv = ["train", "--data", a.data, "--models", a.models, "--folds", str(a.folds), "--split", "speaker",
            "--force", "--models-dir", str(REPO / "trained_models")]
    if a.db:
        argv += ["--db", a.db]
    rc = cli(argv)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
