"""Retrain the default models shipped in trained_models/ from a RAVDESS folder.

    python scripts/train_defaults.py [DATA_DIR] [--models svm,cnn] [--db PATH] [--no-adaptive] [--no-ensemble]
        [--seed N --models-dir DIR] [--json-out PATH]

Runs speaker-grouped 4-fold cross-validation for each default model (results go to the results store), then
trains each on all clips and saves it with its model card (calibration included) and its out-of-fold
predictions into trained_models/ (`--replace-shipped`: training anything else never writes there); finally fits
the ensemble on those out-of-fold predictions. The groups run in two lanes side by side (LANES), each process on
its lane's share of the cores. Prints each group's time and the total.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (models, extra `train` options): each group is cross-validated with the same folds (seed 0, K=4).
# Utterance models: the expressive set computed after the denoising front end, plus 4 speed-perturbed copies,
# 2 copies through a random channel, 2 through pink noise (0-20 dB) and 1 through a telephone line of every
# training clip (speaker and channel variation; see the README's tables of techniques and robustness).
UTTERANCE = ["--feature-set", "expressive_denoised", "--augment", "speed*4,channel*2,channel:noise*2,channel:phone"]
# the two networks see 10x the clips: batches of 128 instead of 32 (4x fewer steps, the same UAR: README)
NETWORKS = ["--param", "mlp_tf.batch_size=128", "--param", "fcnn_torch.batch_size=128"]
# the RBF SVM's training time grows with the square of its rows: half the copies (a subset of the ones above,
# the same cached features) score as well as all of them (0.579 vs 0.576 UAR) in half the time (README)
SVM = ["--feature-set", "expressive_denoised", "--augment", "speed*2,channel,channel:noise,channel:phone"]
# every single-clip model's test folds are also scored through a phone line and 10 dB noise: its card gets a
# robustness block, and the ensemble fits its weights on those predictions too (members that break weigh less)
CHANNELS = ["--channels", "phone,noise10"]
SEQUENCES = ["--feature-set", "mfcc_seq_denoised"]
# the cnn_lstm with 2 speed-perturbed copies of every training clip: 0.396 -> 0.493 UAR over three seeds (on every
# second frame, which halves its time); the cnn with one speed copy and one through a telephone line (the same
# number of clips): 0.449 -> 0.549 clean, and 0.52 instead of 0.30 through a phone line, where it broke with two
# speed copies (three seeds). With the lda the ensemble's most useful members (README); the other sequence models
# without copies (they weigh nothing in the ensemble, and 3x the clips would push the recipe past 20 minutes)
SPEED = ["--augment", "speed*2"]  # the cnn_lstm's
SPEED_PHONE = ["--augment", "speed,channel:phone"]  # the cnn's
# each group runs in a process of its own, PyTorch and TensorFlow models apart (see cli() below); the groups of a
# lane run one after another, the two lanes side by side, each on half the cores (on 2 cores one thread: one
# TensorFlow thread trains the cnn at 2.5 s an epoch against 2.4 s on two, so the second core is worth more to
# the other lane)
LANES = [
    [("lda,fcnn_torch", UTTERANCE + NETWORKS + CHANNELS),
     ("mlp_tf", UTTERANCE + NETWORKS + CHANNELS),
     ("svm", SVM + CHANNELS),
     ("random_forest", ["--feature-set", "expressive_denoised"] + CHANNELS),  # augmented: 25 MB for +0.02 UAR
     ("decision_tree", CHANNELS),
     ("transformer_torch", SEQUENCES + CHANNELS),
     ("lstm", SEQUENCES + CHANNELS)],
    # the spectrogram and frame-sequence models on their sets computed after the same denoising front end
    [("cnn", ["--feature-set", "logmel_image_denoised"] + SPEED_PHONE + CHANNELS),
     ("cnn_lstm", SEQUENCES + SPEED + ["--param", "cnn_lstm.frame_stride=2"] + CHANNELS)],
]
# speaker-adaptive variants (per-speaker normalisation; calibrate with 5+ clips of the user), saved as adaptive_*
ADAPTIVE = ("svm,lda", ["--speaker-norm", "--feature-set", "expressive_denoised", "--name-prefix", "adaptive_"])
# the ensemble pools these single-clip models (weights fitted on their out-of-fold predictions)
ENSEMBLE_MEMBERS = "lda,mlp_tf,fcnn_torch,svm,random_forest,cnn,cnn_lstm,lstm,transformer_torch"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--models", default=None, help="only these models (comma-separated; default: all groups)")
    p.add_argument("--db", default=None)
    p.add_argument("--no-adaptive", action="store_true", help="skip the speaker-adaptive variants")
    p.add_argument("--no-ensemble", action="store_true", help="skip fitting the ensemble")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="fold assignment and training seed (the shipped models: 0)")
    p.add_argument("--models-dir", default=str(REPO / "trained_models"),
                   help="where the models go (default: the shipped folder, replaced); another folder, e.g. for "
                        "other seeds, leaves the shipped models alone")
    p.add_argument("--json-out", default=None, help="write the runs' summaries here")
    a = p.parse_args()
    import json
    import subprocess

    lanes = [LANES[0] + ([] if a.no_adaptive else [ADAPTIVE]), *LANES[1:]]
    from ser_core.models.base import usable_cores

    threads = str(max(1, usable_cores() // len(lanes)))

    def cli(args) -> tuple[int, str]:
        """``python -m ser_core ARGS`` in a process of its own (TensorFlow's and PyTorch's thread pools slow
        each other down in one process: fcnn_torch's folds took 1.6x as long after mlp_tf's), on its lane's
        share of the cores; its stdout."""
        env = {**os.environ, "SER_TF_THREADS": threads, "SER_TORCH_THREADS": threads}
        done = subprocess.run([sys.executable, "-m", "ser_core", *args], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env=env)
        return done.returncode, done.stdout

    t0 = time.perf_counter()
    db = ["--db", a.db] if a.db else []
    ship = ["--models-dir", a.models_dir, "--replace-shipped"]  # the one writer of the shipped models
    base = (["train", "--data", a.data, "--folds", str(a.folds), "--split", "speaker", "--seed", str(a.seed),
             "--force", "--json"] + ship + db)
    only = set(a.models.split(",")) if a.models else None
    runs, codes = [], []

    def run_lane(groups):
        for models, extra in groups:
            models = ",".join(m for m in models.split(",") if only is None or m in only)
            if not models:
                continue
            t1 = time.perf_counter()
            code, out = cli(base + ["--models", models] + extra)
            group_s = round(time.perf_counter() - t1, 1)
            codes.append(code)
            runs.extend({**r, "speaker_norm": "--speaker-norm" in extra, "group_seconds": group_s}
                        for r in json.loads(out or "[]"))
            print(f"{models}: {group_s:.0f} s", file=sys.stderr)

    workers = [threading.Thread(target=run_lane, args=(groups,)) for groups in lanes]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rc = next((c for c in codes if c), 0)
    if not a.no_ensemble:
        code, out = cli(["ensemble", "--members", ENSEMBLE_MEMBERS, "--json"] + ship + db)
        rc = code or rc
        runs.append({"model": "ensemble", **json.loads(out or "{}")})
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s", file=sys.stderr)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"total_s": round(total, 1), "runs": runs}, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
