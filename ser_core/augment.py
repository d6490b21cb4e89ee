"""Waveform augmentation (noise, time stretch, pitch shift), applied to training clips only.

``augment_signal(y, sr, kind, seed)`` returns a new signal; it is deterministic for a given seed so augmented
features can be cached. Cross-validation adds augmented copies of the *training* fold's clips only.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

AUGMENTATIONS = ("noise", "stretch", "pitch")


def augment_signal(y: np.ndarray, sr: int, kind: str, seed: int = 0) -> np.ndarray:
    """``y``: (samples,) float32 mono. ``kind``: one of ``AUGMENTATIONS``.

    - noise: white noise at a random SNR in [15, 30] dB;
    - stretch: time stretch by a random rate in [0.85, 1.15];
    - pitch: pitch shift by a random number of semitones in [-2, 2] (non-zero).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.float32)
    if kind == "noise":
        snr_db = rng.uniform(15, 30)
        power = float(np.mean(y**2)) or 1e-8
        noise = rng.standard_normal(len(y)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
        return (y + noise).astype(np.float32)
    import librosa

    if kind == "stretch":
        return librosa.effects.time_stretch(y, rate=float(rng.uniform(0.85, 1.15))).astype(np.float32)
    if kind == "pitch":
        steps = float(rng.choice([-2, -1.5, -1, -0.5, 0.5, 1, 1.5, 2]))
        return librosa.effects.pitch_shift(y, sr=sr, n_steps=steps, res_type="soxr_hq").astype(np.float32)
    raise ConfigError(f"Unknown augmentation '{kind}'; choose from {', '.join(AUGMENTATIONS)}.")


def parse_augment(spec) -> tuple[str, ...]:
    """``"noise,pitch"`` or a list -> validated tuple; ``None``/``""``/``"none"`` -> ()."""
    if not spec or spec == "none":
        return ()
    kinds = tuple(s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip())
    for k in kinds:
        if k not in AUGMENTATIONS:
            raise ConfigError(f"Unknown augmentation '{k}'; choose from {', '.join(AUGMENTATIONS)}.")
    return kinds


def _augmented_file(path, fs, kind: str, seed: int) -> np.ndarray:
    import zlib

    from .audio import load_audio, prepare
    from .features import compute_prepared

    y = load_audio(path, sr=fs.sr, trim=fs.trim, top_db=fs.top_db, normalize=fs.normalize)
    y = augment_signal(y, fs.sr, kind, seed=seed * 1_000_003 + zlib.crc32(str(path).encode()))
    y = prepare(y, fs.sr, sr=fs.sr, trim=False, normalize=fs.normalize)
    return compute_prepared(y, fs)


def augmented_features(paths, fs, kind: str, seed: int = 0, *, n_jobs=None, cache=True) -> np.ndarray:
    """Features of one augmented copy of every clip, ``(n, *fs.shape)``; cached under a key that includes the
    augmentation and seed. Cross-validation uses the rows of training-fold clips only."""
    import os

    from .cache import FeatureCache

    parse_augment([kind])
    afs = fs.replace(name=f"{fs.name}+{kind}{seed}")  # the name is part of the cache key
    store = FeatureCache() if cache is True else (cache or None)
    out = store.get_many(paths, afs) if store is not None else [None] * len(paths)
    misses = [i for i, a in enumerate(out) if a is None]
    if misses:
        from joblib import Parallel, delayed

        n = min(n_jobs or os.cpu_count() or 1, len(misses))
        arrays = Parallel(n_jobs=n)(delayed(_augmented_file)(paths[i], fs, kind, seed) for i in misses)
        for i, arr in zip(misses, arrays):
            out[i] = arr
            if store is not None:
                store.put(paths[i], afs, arr)
    return np.stack(out).astype(np.float32, copy=False)
