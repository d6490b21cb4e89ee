"""The torch families on a GPU: speaker-grouped 4-fold CV on the 960 shared clips, GPU against CPU, and a model
trained on the GPU loaded again as a CPU-only machine loads it.

    python benchmarks/bench_gpu.py --prepare [--data ../shared/data/ravdess] [--features benchmarks/out/gpu_feats.npz]
    python benchmarks/bench_gpu.py [--features benchmarks/out/gpu_feats.npz] [--json-out benchmarks/results/gpu_check.json]

``--prepare`` (here, where the corpus and the feature cache are) writes the cached features of every clip that
the two torch families consume (``rich`` for fcnn_torch; ``mfcc_seq``, stored as float16, for
transformer_torch) with labels and speakers into one ``.npz`` (about 21 MB), so that a GPU machine without the
audio stack (librosa, soundfile) runs the second step with torch, scikit-learn and ``ser_core.models`` alone.
The models are created exactly as a job creates them (``device=None``: CUDA when there is one). Per fold: the
device, fit seconds, epochs (early stopping) and UAR; for fold 0 of each family on the default device, the
largest probability difference after saving and loading the model with ``device="cpu"``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = (("fcnn_torch", "rich"), ("transformer_torch", "mfcc_seq"))


def prepare(data: str, out: Path) -> None:
    from ser_core.corpora import load_corpus
    from ser_core.features import compute_files, get_feature_set

    m = load_corpus(data).manifest
    arrays = {"y": np.asarray(m["emotion"].tolist(), dtype=str),
              "spk": np.asarray(m["speaker"].astype(str).tolist(), dtype=str)}
    for _, fs in FAMILIES:
        X = compute_files(m["path"].tolist(), get_feature_set(fs), progress=False)
        arrays[fs] = X.astype(np.float16 if X.ndim > 2 else np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def run(features: Path, cpu_folds: dict) -> dict:
    import torch
    from sklearn.metrics import balanced_accuracy_score

    from ser_core.models import create_model
    from ser_core.splits import make_splitter

    d = np.load(features)
    y, spk = d["y"], d["spk"]
    splits = list(make_splitter("speaker", 4, 0).split(np.zeros(len(y)), y, spk))
    out = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "cpu_threads": torch.get_num_threads(), "runs": []}
    plan = [(name, fs, None, 4) for name, fs in FAMILIES] + [(name, fs, "cpu", cpu_folds[name]) for name, fs in FAMILIES]
    for name, fs, device, n_folds in plan:
        X = d[fs].astype(np.float32)
        for i, (tr, te) in enumerate(splits[:n_folds]):
            model = create_model(name, device=device)
            t0 = time.perf_counter()
            model.fit(X[tr], y[tr])
            fit_s = time.perf_counter() - t0
            p = model.predict_proba(X[te])
            rec = {"model": name, "device": str(model.device_), "fold": i, "fit_s": round(fit_s, 2),
                   "epochs": len(model.history_),
                   "uar": round(float(balanced_accuracy_score(y[te], model.classes_[p.argmax(1)])), 4)}
            if device is None and i == 0:
                rec.update(_reloaded_on_cpu(model, X[te], p))
            out["runs"].append(rec)
            print(json.dumps(rec), flush=True)
    return out


def _reloaded_on_cpu(model, X, proba) -> dict:
    """Save ``model``, load it as a machine without a GPU would (``device="cpu"``), compare probabilities."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(model.save(Path(tmp) / "m"))
        meta = json.loads((folder / "model.json").read_text())
        meta["params"]["device"] = "cpu"
        (folder / "model.json").write_text(json.dumps(meta))
        loaded = type(model).load(folder)
        return {"loaded_on": str(loaded.device_),
                "max_abs_diff_cpu_vs_gpu": float(np.abs(loaded.predict_proba(X) - proba).max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="write the features file (needs the corpus)")
    ap.add_argument("--data", default="../shared/data/ravdess")
    ap.add_argument("--features", type=Path, default=Path("benchmarks/out/gpu_feats.npz"))
    ap.add_argument("--json-out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    ap.add_argument("--cpu-transformer-folds", type=int, default=1, help="CPU folds of transformer_torch (slow)")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args.data, args.features)
        return 0
    out = run(args.features, {"fcnn_torch": 4, "transformer_torch": args.cpu_transformer_folds})
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
