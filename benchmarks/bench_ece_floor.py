"""How large the 15-bin ECE of a PERFECTLY calibrated model is, from sampling noise alone, on as many clips as
a cross-validation fold (240) or a whole run (960) of the shared RAVDESS data.

    python benchmarks/bench_ece_floor.py [--reps 200] [--json]

Probabilities are drawn from a Dirichlet(0.5) over 8 classes and each label is drawn from its own
probabilities, so the model is calibrated by construction: every ECE above 0 is estimation noise. This is why
SER Studio judges calibration on all out-of-fold clips pooled (``calibration.ece`` in a model card) and shows
the per-fold mean beside it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    from ser_core.calibration import expected_calibration_error

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    out = {}
    for n in (240, 960):
        eces = []
        for _ in range(a.reps):
            proba = rng.dirichlet(np.full(8, 0.5), n)
            y = (proba.cumsum(1) > rng.random((n, 1))).argmax(1)  # a label drawn from each row
            eces.append(expected_calibration_error(y, proba))
        out[n] = {"mean": float(np.mean(eces)), "std": float(np.std(eces))}
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        for n, r in out.items():
            print(f"{n} clips: ECE of a perfectly calibrated model {r['mean']:.3f} ± {r['std']:.3f}")


if __name__ == "__main__":
    main()
