"""Waveform augmentation, applied to training clips only: noise, time stretch, pitch shift, vocal tract length
perturbation, speed perturbation, and a realistic channel (telephone, noise, babble, room, codec, ...).

``augment_signal(y, sr, kind, seed)`` returns a new signal; it is deterministic for a given seed so augmented
features can be cached. Cross-validation adds augmented copies of the *training* fold's clips only.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError


def _noise(y, sr, rng):
    """White noise at a random SNR in [15, 30] dB."""
    snr_db = rng.uniform(15, 30)
    power = float(np.mean(y**2)) or 1e-8
    return y + rng.standard_normal(len(y)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))


def _stretch(y, sr, rng):
    """Time stretch by a random rate in [0.85, 1.15]."""
    import librosa

    return librosa.effects.time_stretch(y, rate=float(rng.uniform(0.85, 1.15)))


def _pitch(y, sr, rng):
    """Pitch shift by a random number of semitones in [-2, 2] (non-zero)."""
    import librosa

    steps = float(rng.choice([-2, -1.5, -1, -0.5, 0.5, 1, 1.5, 2]))
    return librosa.effects.pitch_shift(y, sr=sr, n_steps=steps, res_type="soxr_hq")


def vtlp_warp(f, alpha: float, sr: int, f_hi: float = 4800.0):
    """The piecewise-linear frequency warp of VTLP (Jaitly & Hinton, 2013): ``f -> alpha * f`` up to a
    boundary near ``f_hi`` Hz, then linear so that ``sr / 2`` maps to itself."""
    nyq = sr / 2
    edge = f_hi * min(alpha, 1.0) / alpha
    f = np.asarray(f, dtype=np.float64)
    return np.where(f <= edge, alpha * f, nyq - (nyq - alpha * edge) / (nyq - edge) * (nyq - f))


def _vtlp(y, sr, rng):
    """Vocal tract length perturbation: the spectral envelope (formants) warped by a random factor in
    [0.85, 1.15] with ``vtlp_warp``, while F0, harmonics and duration stay. Per 32 ms frame, the STFT is
    multiplied by warped / original cepstrally smoothed envelope (quefrencies below 1.7 ms: F0 < 600 Hz)."""
    import librosa

    alpha = rng.uniform(0.85, 1.15)
    n_fft = 1 << int(np.ceil(np.log2(0.032 * sr)))
    S = librosa.stft(y, n_fft=n_fft, hop_length=n_fft // 4)  # (1 + n_fft / 2, frames)
    cep = np.fft.irfft(np.log(np.abs(S) + 1e-6), n=n_fft, axis=0)
    lifter = max(2, int(sr / 600))
    cep[lifter:n_fft - lifter + 1] = 0.0
    env = np.fft.rfft(cep, axis=0).real  # log envelope, (bins, frames)
    f = np.fft.rfftfreq(n_fft, 1 / sr)
    src = np.interp(f, vtlp_warp(f, alpha, sr), f) * n_fft / sr  # bin whose envelope lands on each bin
    lo = np.minimum(src.astype(int), len(f) - 2)
    frac = (src - lo)[:, None]
    warped = env[lo] * (1 - frac) + env[lo + 1] * frac
    S *= np.exp(np.clip(warped - env, -np.log(10), np.log(10)))  # at most +-20 dB per bin
    return librosa.istft(S, hop_length=n_fft // 4, length=len(y))


def _speed(y, sr, rng):
    """Speed perturbation by 0.85, 0.9, 1.1 or 1.15 (Ko et al., 2015): resampled, so tempo, pitch and formants
    all change and the length changes by 1 / factor."""
    from .audio import resample

    return resample(y, int(round(sr * rng.choice([0.85, 0.9, 1.1, 1.15]))), sr)


_WAVEFORM = {"noise": _noise, "stretch": _stretch, "pitch": _pitch, "vtlp": _vtlp, "speed": _speed}
AUGMENTATIONS = (*_WAVEFORM, "channel")  # channel: a realistic channel of ser_core.channels, drawn per clip
# "channel:FAMILY" (e.g. channel:noise, channel:phone) draws the channel from one family of ser_core.channels


def _channel_family(kind: str) -> tuple[bool, str | None]:
    """``"channel"`` -> (True, None); ``"channel:noise"`` -> (True, "noise"); any other kind -> (False, None)."""
    base, _, family = kind.partition(":")
    return base == "channel", family or None


def _check_kind(kind: str) -> None:
    is_channel, family = _channel_family(kind)
    if is_channel and family is not None:
        from .channels import channel_families

        if family not in channel_families():
            raise ConfigError(f"Unknown channel family '{family}' in '{kind}'; choose from "
                              f"{', '.join(sorted(channel_families()))}.")
    elif kind not in AUGMENTATIONS:
        raise ConfigError(f"Unknown augmentation '{kind}'; choose from {', '.join(AUGMENTATIONS)} "
                          f"(or channel:FAMILY, e.g. channel:noise).")


def augment_signal(y: np.ndarray, sr: int, kind: str, seed: int = 0, *, babble=None) -> np.ndarray:
    """``y``: (samples,) float32 mono. ``kind``: one of ``AUGMENTATIONS``:

    - noise: white noise at a random SNR in [15, 30] dB;
    - stretch: time stretch by a random rate in [0.85, 1.15];
    - pitch: pitch shift by a random number of semitones in [-2, 2] (non-zero);
    - vtlp: formants moved by a warp factor in [0.85, 1.15], pitch and duration kept;
    - speed: speed perturbation 0.85, 0.9, 1.1 or 1.15 (tempo and pitch);
    - channel: ``ser_core.channels.random_channel(seed)`` (phone, noise 0-20 dB, babble, reverb, mp3, opus,
      gain or browser); babble needs ``babble=`` (other speakers' signals at ``sr``);
    - channel:FAMILY: the same, from one family only (``channel:noise``: 0, 5, 10 or 20 dB pink noise).
    """
    y = np.asarray(y, dtype=np.float32)
    _check_kind(kind)
    is_channel, family = _channel_family(kind)
    if is_channel:
        from .channels import apply_channel, random_channel

        return apply_channel(y, sr, random_channel(seed, family), seed, babble=babble)
    return np.asarray(_WAVEFORM[kind](y, sr, np.random.default_rng(seed)), dtype=np.float32)


def parse_augment(spec) -> tuple[str, ...]:
    """``"noise,pitch,speed*4,channel:noise*2"`` or a list -> validated tuple; ``None``/``""``/``"none"`` -> ().

    ``KIND*N`` asks for ``N`` augmented copies of each training clip (each with its own random draw)."""
    if not spec or spec == "none":
        return ()
    kinds = tuple(s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip())
    for k in kinds:
        kind, _, count = k.partition("*")
        _check_kind(kind)
        if count and not (count.isdigit() and 1 <= int(count) <= 16):
            raise ConfigError(f"Bad augmentation '{k}': the number of copies after '*' must be 1 to 16.")
    return kinds


def augment_copies(kinds) -> list[tuple[str, str, int]]:
    """``parse_augment``'s tuple -> one ``(key, kind, seed offset)`` per augmented copy: ``"speed*2"`` gives
    ``("speed", "speed", 0)`` and ``("speed#2", "speed", 1)``."""
    out = []
    for k in kinds:
        kind, _, count = k.partition("*")
        out += [(kind if i == 0 else f"{kind}#{i + 1}", kind, i) for i in range(int(count or 1))]
    return out


SEEDING = "n"  # in the cache key: copies are seeded by the clip's file name ("n"; before: its full path)


def _clip_seed(path, seed: int) -> int:
    """A clip's seed from its file name, not its folder: a corpus copied elsewhere draws the same copies (as
    ``channels.condition_seed`` draws the same test channels), so a measured number reproduces at any path."""
    import os
    import zlib

    return seed * 1_000_003 + zlib.crc32(os.path.basename(str(path)).encode())


def _augmented_file(path, fs, kind: str, seed: int, babble_paths=()) -> np.ndarray:
    from .audio import load_audio, prepare
    from .channels import channel_features, random_channel
    from .features import compute_prepared, prepare_for

    is_channel, family = _channel_family(kind)
    if is_channel:  # a channel acts on the recording as made, silence included; trimmed afterwards
        return channel_features(path, fs, random_channel(seed, family), seed, babble_paths)
    y = prepare_for(load_audio(path, sr=fs.sr, trim=False, normalize=None), fs.sr, fs)
    y = augment_signal(y, fs.sr, kind, seed=seed)
    y = prepare(y, fs.sr, sr=fs.sr, trim=False, normalize=fs.normalize)
    return compute_prepared(y, fs)


def augmented_features(paths, fs, kind: str, seed: int = 0, *, speakers=None, n_jobs=None,
                       cache=True) -> np.ndarray:
    """Features of one augmented copy of every clip, ``(n, *fs.shape)``; cached under a key that includes the
    augmentation and seed. Cross-validation uses the rows of training-fold clips only.

    The ``channel`` kind acts on each recording as made (silence kept; trimmed and normalised afterwards, as
    ``ser_core.robustness`` perturbs test clips), the other kinds on the prepared clip.

    speakers : the speaker of each clip (aligned with ``paths``). The ``channel`` kind's babble for a clip is
        made of ``ser_core.channels.BABBLE_TALKERS`` clips of OTHER speakers of ``paths`` (without
        ``speakers``: any other clips). The copies are computed once for all folds, so that they cache: in
        cross-validation a training clip's babble may come from test-fold clips -- their unlabelled audio,
        10 dB under another speaker's voice; never their labels.
    """
    from .channels import BABBLE_CHANNELS, CHANNEL_VERSION, babble_sources, random_channel

    parse_augment([kind])
    is_channel, family = _channel_family(kind)
    seeds = [_clip_seed(p, seed) for p in paths]
    babble = [babble_sources(paths, speakers, i, s) if is_channel and random_channel(s, family) in BABBLE_CHANNELS
              else () for i, s in enumerate(seeds)]
    version = f".v{CHANNEL_VERSION}" if is_channel else ""
    key = fs.replace(name=f"{fs.name}+{kind}{seed}{version}{SEEDING}")  # the name is part of the cache key
    return transformed_features(paths, key, _augmented_file, [(fs, kind, s, b) for s, b in zip(seeds, babble)],
                                n_jobs=n_jobs, cache=cache)


def transformed_features(paths, key_fs, fn, args, *, n_jobs=None, cache=True) -> np.ndarray:
    """``fn(path, *args[i])`` (a transformed clip's features, ``key_fs.shape``) for every clip, stacked into
    ``(n, *key_fs.shape)``; cached under ``key_fs``, whose name tells the transform (``"rich+noise0"``), and
    computed in ``n_jobs`` processes where missing."""
    import os

    from .cache import FeatureCache

    store = FeatureCache() if cache is True else (cache or None)
    out = store.get_many(paths, key_fs) if store is not None else [None] * len(paths)
    misses = [i for i, a in enumerate(out) if a is None]
    if misses:
        from joblib import Parallel, delayed
        from threadpoolctl import threadpool_limits

        n = min(n_jobs or os.cpu_count() or 1, len(misses))
        with threadpool_limits(limits=1, user_api="blas"):  # small matrices: BLAS threads only add contention
            arrays = Parallel(n_jobs=n)(delayed(_one_of_many)(fn, key_fs, paths[i], *args[i]) for i in misses)
        for i, arr in zip(misses, arrays):
            out[i] = arr
            if store is not None:
                store.put(paths[i], key_fs, arr)
    return np.stack(out).astype(np.float32, copy=False)


def _one_of_many(fn, key_fs, path, *args) -> np.ndarray:
    """``fn(path, *args)`` in a worker computing many clips (``features.ready_for_many``)."""
    from .features import ready_for_many

    ready_for_many(key_fs)
    return fn(path, *args)
