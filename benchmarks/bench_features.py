"""Feature-extraction speed: cold extraction, warm cache, and the pitch tracker's cost per clip.

    .venv/bin/python benchmarks/bench_features.py                    # 960 shared RAVDESS clips, "rich"
    .venv/bin/python benchmarks/bench_features.py --set mfcc_seq --limit 200 --json

Targets (2-core machine, rich set, 960 clips / 59 min of audio): cold >= 100x real time (< 36 s), warm < 2 s.
The cold run includes starting the worker processes; the cache lives in a temporary folder that is deleted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ser_core.audio import load_audio  # noqa: E402
from ser_core.cache import FeatureCache  # noqa: E402
from ser_core.features import compute_files, compute_prepared, get_feature_set, pitch  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("SER_SHARED_RAVDESS", REPO.parent / "shared" / "data" / "ravdess"))


def per_clip_costs(paths, fs, n: int, pyin: int):
    """Mean seconds per clip of the pitch tracker and of the whole feature computation (one process)."""
    from threadpoolctl import threadpool_limits

    ys = [load_audio(p, sr=fs.sr, trim=fs.trim, top_db=fs.top_db, normalize=fs.normalize) for p in paths[:n]]
    with threadpool_limits(1, user_api="blas"):
        compute_prepared(ys[0], fs)  # warm-up: imports and filter banks
        t0 = time.perf_counter()
        for y in ys:
            pitch(y=y, sr=fs.sr, hop_length=fs.hop_length, fmin=fs.f0_fmin, fmax=fs.f0_fmax)
        t_pitch = (time.perf_counter() - t0) / len(ys)
        t0 = time.perf_counter()
        for y in ys:
            compute_prepared(y, fs)
        t_all = (time.perf_counter() - t0) / len(ys)
        t_pyin = None
        if pyin:
            import librosa

            t0 = time.perf_counter()
            for y in ys[:pyin]:
                librosa.pyin(y, fmin=fs.f0_fmin, fmax=fs.f0_fmax, sr=fs.sr, frame_length=1024,
                             hop_length=fs.hop_length)
            t_pyin = (time.perf_counter() - t0) / min(pyin, len(ys))
    return t_pitch, t_all, t_pyin


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder searched for .flac/.wav files")
    ap.add_argument("--set", default="rich", help="feature set name")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N files")
    ap.add_argument("--n-jobs", type=int, default=None, help="worker processes (default: all cores)")
    ap.add_argument("--pitch-clips", type=int, default=50, help="clips for the per-clip pitch timing")
    ap.add_argument("--pyin-clips", type=int, default=0, help="also time librosa.pyin on this many clips")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = ap.parse_args(argv)

    paths = sorted(str(p) for p in args.data.rglob("*") if p.suffix.lower() in (".flac", ".wav"))[:args.limit]
    if not paths:
        sys.exit(f"No .flac/.wav files under {args.data}.")
    fs = get_feature_set(args.set)
    audio_s = sum(sf.info(p).duration for p in paths)
    load_before = os.getloadavg()[0]  # other work on the machine slows every number below

    with tempfile.TemporaryDirectory(prefix="ser-bench-cache-") as tmp:
        t0 = time.perf_counter()
        X_cold = compute_files(paths, fs, cache=FeatureCache(tmp), n_jobs=args.n_jobs, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()  # a fresh FeatureCache object, as a new process would have
        X_warm = compute_files(paths, fs, cache=FeatureCache(tmp), n_jobs=args.n_jobs, progress=False)
        warm = time.perf_counter() - t0
        cache_mb = FeatureCache(tmp).size_bytes() / 1e6
    if not np.array_equal(X_cold, X_warm):
        sys.exit("The warm run returned different features than the cold run.")
    t_pitch, t_all, t_pyin = per_clip_costs(paths, fs, args.pitch_clips, args.pyin_clips)

    summary = {
        "feature_set": fs.name, "shape": list(X_cold.shape), "clips": len(paths), "audio_min": audio_s / 60,
        "cpu_count": os.cpu_count(), "n_jobs": args.n_jobs, "cold_s": cold, "cold_clips_per_s": len(paths) / cold,
        "cold_realtime_x": audio_s / cold, "warm_s": warm, "warm_clips_per_s": len(paths) / warm,
        "cache_mb": cache_mb, "features_ms_per_clip_1proc": 1000 * t_all, "pitch_ms_per_clip": 1000 * t_pitch,
        "pyin_ms_per_clip": None if t_pyin is None else 1000 * t_pyin,
        "load_avg_1min": [load_before, os.getloadavg()[0]],
    }
    print(f"{fs.name}: {len(paths)} clips, {audio_s / 60:.1f} min of audio, output {tuple(X_cold.shape)}, "
          f"{os.cpu_count()} cores, 1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"cold : {cold:6.2f} s  {len(paths) / cold:7.1f} clips/s  {audio_s / cold:6.1f}x real time")
    print(f"warm : {warm:6.2f} s  {len(paths) / warm:7.1f} clips/s  (cache {cache_mb:.1f} MB)")
    print(f"one process: {1000 * t_all:.1f} ms/clip for all features, of which pitch (YIN + voicing) "
          f"{1000 * t_pitch:.1f} ms/clip" + (f"; librosa.pyin {1000 * t_pyin:.0f} ms/clip" if t_pyin else ""))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
