"""Realistic recording and transmission channels: telephone, noise, babble, reverberation, simulated rooms, a
laptop microphone, lossy codecs, gain, a browser capture chain.

``apply_channel(y, sr, name, seed)`` passes a clean signal through one named condition of ``CHANNELS``. It is
deterministic for a seed (the cache of perturbed features relies on it), returns float32 mono at the same
rate and exactly the same length, and never returns the clean signal in place of a condition it cannot apply:
a codec missing from FFmpeg raises ``ConfigError``. Used to evaluate models under perturbations
(``ser_core.robustness``) and, through ``random_channel``, as the ``channel`` training augmentation.

>>> y_phone = apply_channel(y, 16000, "phone", seed=3)
>>> y_cafe = apply_channel(y, 16000, "babble10", seed=3, babble=[other1, other2, other3, other4])
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from .errors import ConfigError

CHANNEL_VERSION = 3  # bump when any condition changes: cached perturbed / channel-augmented features then miss
BABBLE_TALKERS = 4  # talkers mixed into babble (more sounds like a crowd, fewer like competing speakers)
_ACTIVE_DB = 40.0  # frames within this many dB of the loudest count as speech for the SNR


# -- helpers -------------------------------------------------------------------------------------------------
def speech_power(y: np.ndarray, sr: int) -> float:
    """Mean power of the active frames (20 ms frames within 40 dB of the loudest), so that leading and
    trailing silence does not lower a clip's "speech" level; a continuous signal gives its plain mean power."""
    n = max(1, int(0.02 * sr))
    usable = len(y) // n * n
    if usable == 0:
        return float(np.mean(np.square(y, dtype=np.float64))) if len(y) else 0.0
    frames = np.mean(np.square(y[:usable].reshape(-1, n), dtype=np.float64), axis=1)
    if frames.max() <= 0:
        return 0.0
    return float(frames[frames >= frames.max() * 10 ** (-_ACTIVE_DB / 10)].mean())


def _fit(z: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad the end to ``n`` samples, as float32."""
    z = np.asarray(z, dtype=np.float32)
    return z[:n] if len(z) >= n else np.pad(z, (0, n - len(z)))


def _at_power(x: np.ndarray, sr: int, power: float) -> np.ndarray:
    """``x`` scaled so that its ``speech_power`` is ``power``."""
    p = speech_power(x, sr)
    return x * np.sqrt(power / p) if p > 0 else x


def _mix_at_snr(y, sr, noise, snr_db: float) -> np.ndarray:
    """``y + noise`` with the noise scaled to ``snr_db`` below the speech power of ``y``."""
    return (y + _at_power(noise, sr, speech_power(y, sr) / 10 ** (snr_db / 10))).astype(np.float32)


def _pink(n: int, rng) -> np.ndarray:
    """Pink (1/f power) noise of ``n`` samples by spectral shaping of white noise."""
    from scipy.fft import irfft, next_fast_len, rfft

    m = next_fast_len(n, real=True)  # a prime length would make the FFT slow
    spec = rfft(rng.standard_normal(m))
    spec[1:] /= np.sqrt(np.arange(1, len(spec)))
    spec[0] = 0.0
    return irfft(spec, m)[:n]


def _butter(y, sr, cutoff, btype, order):
    from scipy.signal import butter, sosfilt

    return sosfilt(butter(order, cutoff, btype=btype, fs=sr, output="sos"), y)


def _align(z: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """``z`` shifted so that it best matches ``y`` (cross-correlation within ``max_lag`` samples), then fitted
    to ``len(y)``: removes a codec's algorithmic delay."""
    from scipy.signal import correlate

    m = min(len(z), len(y))
    xc = correlate(z[:m], y[:m], mode="full", method="fft")[m - 1 - max_lag: m + max_lag]  # lags -max..max
    lag = int(np.argmax(xc)) - max_lag
    return _fit(z[lag:] if lag >= 0 else np.pad(z, (-lag, 0)), len(y))


# -- the conditions ------------------------------------------------------------------------------------------
def _phone(y, sr, rng):
    """Narrow-band telephone: 8 kHz, 300-3400 Hz band-pass, line hiss 30-40 dB down, G.711 mu-law (8 bit)."""
    from .audio import resample

    x = resample(y, sr, 8000)
    x = _mix_at_snr(x, 8000, rng.standard_normal(len(x)), rng.uniform(30, 40))  # hiss on the analogue line
    x = _butter(x, 8000, [300, 3400], "bandpass", 6)
    scale = rng.uniform(0.5, 1.0) / (np.max(np.abs(x)) or 1.0)  # the level into the codec
    mu = np.sign(x * scale) * np.log1p(255 * np.abs(x * scale)) / np.log1p(255)
    mu = np.round(mu * 127) / 127  # 8-bit code words
    x = np.sign(mu) * np.expm1(np.abs(mu) * np.log1p(255)) / 255 / scale
    return _fit(resample(x.astype(np.float32), 8000, sr), len(y))


def _noise(y, sr, rng, snr_db):
    """Pink noise at ``snr_db`` below the speech power."""
    return _mix_at_snr(y, sr, _pink(len(y), rng), snr_db)


def _babble(y, sr, rng, snr_db, babble):
    """Up to ``BABBLE_TALKERS`` of the given other speakers' signals, each from a random offset (looped to the
    clip's length) at equal level, together ``snr_db`` below the speech power."""
    pool = [np.asarray(b, dtype=np.float64) for b in (babble or ()) if len(b)]
    if not pool:
        raise ConfigError("The babble condition needs signals of other speakers: pass babble=[arrays].")
    talkers = rng.choice(len(pool), size=min(BABBLE_TALKERS, len(pool)), replace=False)
    mix = np.zeros(len(y))
    for t in talkers:
        b = pool[t]
        looped = np.resize(np.roll(b, -int(rng.integers(len(b)))), len(y))
        mix += _at_power(looped, sr, 1.0)
    return _mix_at_snr(y, sr, mix, snr_db)


def _reverb(y, sr, rng):
    """A synthetic room: a direct path plus exponentially decaying noise (RT60 0.2-0.8 s, first reflections
    after 2-10 ms, direct-to-reverberant ratio -3..+6 dB); the output keeps the input's speech power."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.2, 0.8)
    t = np.arange(int(1.2 * rt60 * sr)) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-3 * np.log(10) * t / rt60)  # -60 dB at rt60
    tail[: int(rng.uniform(0.002, 0.010) * sr)] = 0.0
    tail *= np.sqrt(10 ** (-rng.uniform(-3, 6) / 10) / np.sum(tail**2))
    tail[0] = 1.0  # the direct path
    wet = fftconvolve(y, tail)[: len(y)]
    return _at_power(wet, sr, speech_power(y, sr)).astype(np.float32)


ROOMS = Path(__file__).with_name("assets") / "rooms.npz"  # made by scripts/make_rooms.py (pyroomacoustics)


@lru_cache(maxsize=1)
def room_bank() -> tuple[list[np.ndarray], np.ndarray, int]:
    """``(impulse responses, their measured RT60 in s, rate)`` of the bundled simulated rooms."""
    with np.load(ROOMS) as z:
        edges = np.concatenate([[0], np.cumsum(z["lengths"])])
        flat = z["rirs"].astype(np.float64)
        return [flat[a:b] for a, b in zip(edges[:-1], edges[1:])], z["rt60"].astype(float), int(z["sr"])


def _room(y, sr, rng):
    """A simulated room: the clip convolved with one of the bundled impulse responses (shoebox rooms, image
    sources and ray tracing, talker 0.7-3 m from the microphone, RT60 0.2-1.2 s, median 0.6), aligned on the
    direct path; the output keeps the input's speech power."""
    from scipy.signal import fftconvolve

    rirs, _, rate = room_bank()
    h = rirs[int(rng.integers(len(rirs)))]
    if rate != sr:
        from .audio import resample

        h = resample(h.astype(np.float32), rate, sr).astype(np.float64)
    onset = int(np.argmax(np.abs(h)))
    wet = fftconvolve(y, h)[onset:onset + len(y)]
    return _at_power(wet, sr, speech_power(y, sr)).astype(np.float32)


def _mic(y, sr, rng):
    """A laptop's built-in microphone: a 120-7000 Hz band (2nd-order slopes, a random few hundred Hz either
    way), the fan and room noise as pink noise 15-25 dB below the speech, and a fast compressor (ratio 3-4,
    threshold 15-25 dB below the peak, 5 ms attack, 100 ms release), as 16-bit samples."""
    low, high = rng.uniform(90, 250), min(rng.uniform(6000, 7500), 0.45 * sr)
    x = _butter(y, sr, [low, high], "bandpass", 2)
    x = _mix_at_snr(x, sr, _butter(_pink(len(x), rng), sr, [low, high], "bandpass", 2), rng.uniform(15, 25))
    env, level = np.abs(x), np.empty(len(x))
    attack, release = np.exp(-1 / (0.005 * sr)), np.exp(-1 / (0.1 * sr))
    from scipy.signal import lfilter

    # a peak follower: the attack coefficient while the level rises, release while it falls (two passes of
    # one-pole filters bound it from above and below; exact enough for a compressor's gain)
    level = np.maximum(lfilter([1 - attack], [1, -attack], env), lfilter([1 - release], [1, -release], env))
    level_db = 20 * np.log10(level + 1e-9)
    threshold = level_db.max() - rng.uniform(15, 25)
    ratio = rng.uniform(3, 4)
    gain_db = np.where(level_db > threshold, (threshold - level_db) * (1 - 1 / ratio), 0.0)
    x = x * 10 ** (gain_db / 20)
    x = x / (np.max(np.abs(x)) or 1.0) * 10 ** (rng.uniform(-6, -1) / 20)  # make-up gain
    return (np.round(x * 32767) / 32767).astype(np.float32)


def _room_mic(y, sr, rng):
    """A room (``_room``), then a laptop microphone (``_mic``)."""
    return _mic(_room(y, sr, rng), sr, rng)


def _codec(y, sr, rng, codec, container, bit_rate, rate):
    """Encode and decode in memory with FFmpeg (PyAV) at ``bit_rate``; the codec's frame boundaries fall at a
    random offset and its delay is removed, so the output lines up with the input."""
    import av

    from .audio import decode, resample

    if codec not in av.codecs_available:
        raise ConfigError(f"This FFmpeg build lacks the {codec} encoder, so the {codec} channel cannot be "
                          "applied; install an FFmpeg/PyAV build with it.")
    lead = int(rng.integers(0, 1152))  # up to one MP3 frame: the framing phase differs per seed
    pcm = np.clip(np.pad(y, (lead, 0)) * 32767, -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    z, sr_out = decode(buf.getvalue())
    z = z[:, 0] if sr_out == sr else resample(z[:, 0], sr_out, sr)
    return _align(z[lead:], y, max_lag=int(0.05 * sr))


GAIN_FLOOR_DBFS = -50.0  # the gain channel never pushes a recording's peak below this (near the silence check)


def _gain(y, sr, rng):
    """A random gain of -20..+6 dB, clipped at full scale (a hot microphone clips), as 16-bit samples (a quiet
    one loses resolution). An already quiet recording is attenuated at most down to a peak of
    ``GAIN_FLOOR_DBFS``: below -60 dBFS the clip would count as silent, not as speech through a channel."""
    peak_db = 20 * np.log10(max(float(np.max(np.abs(y), initial=0.0)), 1e-12))
    gain_db = max(rng.uniform(-20, 6), min(0.0, GAIN_FLOOR_DBFS - peak_db))
    return (np.round(np.clip(y * 10 ** (gain_db / 20), -1.0, 1.0) * 32767) / 32767).astype(np.float32)


def _browser(y, sr, rng):
    """A browser's capture chain: 80-100 Hz high-pass, then automatic gain control (a slow compressor, ratio
    3, towards -26..-18 dBFS, at most +25 dB of boost), a hard limit at full scale and 16-bit samples."""
    x = _butter(y, sr, rng.uniform(80, 100), "highpass", 2)
    hop = max(1, int(0.01 * sr))
    n = len(x) // hop * hop
    if n == 0:
        return _fit(x, len(y))
    level = 10 * np.log10(np.mean(np.square(x[:n].reshape(-1, hop)), axis=1) + 1e-12)  # dB per 10 ms
    level = np.maximum(level, level.max() - 45)  # a noise gate: silence gets no more boost than quiet speech
    gain_db = np.clip((rng.uniform(-26, -18) - level) * (1 - 1 / 3), -20, 25)
    from scipy.signal import lfilter

    a = np.exp(-1 / 30)  # one-pole smoothing, 300 ms time constant (AGC adapts slowly)
    gain_db = lfilter([1 - a], [1, -a], gain_db, zi=[a * gain_db[0]])[0]
    centres = np.arange(len(gain_db)) * hop + hop / 2
    x = x * 10 ** (np.interp(np.arange(len(x)), centres, gain_db) / 20)
    return (np.round(np.clip(x, -1.0, 1.0) * 32767) / 32767).astype(np.float32)


@dataclass(frozen=True)
class Channel:
    description: str
    apply: callable  # (y, sr, rng[, babble=...]) -> signal
    needs_babble: bool = False  # takes other speakers' signals (``babble=``)


_CHANNELS = {
    "phone": Channel("telephone: 8 kHz, 300-3400 Hz band, G.711 mu-law, line hiss", _phone),
    **{f"noise{snr}": Channel(f"pink noise at {snr} dB SNR", partial(_noise, snr_db=snr)) for snr in (0, 5, 10, 20)},
    "babble10": Channel(f"babble of {BABBLE_TALKERS} other speakers at 10 dB SNR", partial(_babble, snr_db=10),
                        needs_babble=True),
    "reverb": Channel("synthetic room, RT60 0.2-0.8 s", _reverb),
    "room": Channel("simulated room (image sources and ray tracing), talker 0.7-3 m away, RT60 0.2-1.2 s", _room),
    "mic": Channel("laptop microphone: 120-7000 Hz, pink noise 15-25 dB down, compression", _mic),
    "room_mic": Channel("a simulated room heard through a laptop microphone", _room_mic),
    "mp3": Channel("MP3 at 32 kbit/s (LAME)", partial(_codec, codec="libmp3lame", container="mp3",
                                                      bit_rate=32000, rate=16000)),
    "opus": Channel("Opus at 16 kbit/s", partial(_codec, codec="libopus", container="ogg", bit_rate=16000,
                                                rate=16000)),
    "gain": Channel("gain -20..+6 dB, clipped at full scale, 16-bit", _gain),
    "browser": Channel("browser capture: 80-100 Hz high-pass, automatic gain control, limiter", _browser),
}
CHANNELS: dict[str, str] = {name: c.description for name, c in _CHANNELS.items()}
BABBLE_CHANNELS = frozenset(name for name, c in _CHANNELS.items() if c.needs_babble)


# -- the API -------------------------------------------------------------------------------------------------
def apply_channel(y, sr: int, name: str, seed: int = 0, *, babble=None) -> np.ndarray:
    """Pass ``y`` (``(n,)`` float mono at ``sr`` Hz) through the condition ``name`` of ``CHANNELS``.

    seed : int, the random draws (noise, room, gain, codec framing); the same seed gives the same output.
    babble : list of ``(m,)`` arrays at ``sr``, other speakers' speech; required by ``babble10``.
    Returns ``(n,)`` float32 at ``sr``. Raises ``ConfigError`` for an unknown name, a missing babble pool or
    a codec this FFmpeg lacks.
    """
    channel = _CHANNELS.get(name)
    if channel is None:
        raise ConfigError(f"Unknown channel '{name}'; choose from {', '.join(CHANNELS)}.")
    y = np.asarray(y, dtype=np.float32)
    rng = np.random.default_rng([zlib.crc32(name.encode()), seed & 0xFFFFFFFFFFFF])
    out = channel.apply(y, sr, rng, babble=babble) if channel.needs_babble else channel.apply(y, sr, rng)
    return _fit(out, len(y))


def channel_families() -> dict[str, list[str]]:
    """The conditions of ``CHANNELS`` grouped by family: ``{"noise": ["noise0", "noise5", ...], "phone": [...]}``."""
    families: dict[str, list[str]] = {}
    for name in CHANNELS:  # noise0 ... noise20 and babble10 are levels of one family; mp3 is a name
        stem = name.rstrip("0123456789")
        families.setdefault(stem if stem in ("noise", "babble") else name, []).append(name)
    return families


def random_channel(seed: int, family: str | None = None) -> str:
    """The condition the ``channel`` augmentation applies for a seed: a family drawn uniformly (phone, noise,
    babble, reverb, mp3, opus, gain, browser), then one of its members (noise: 0, 5, 10 or 20 dB). ``family``
    fixes the family (``channel:noise``) and draws only the member."""
    families = channel_families()
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFF, 1])
    drawn = sorted(families)[rng.integers(len(families))]  # drawn even when fixed: the member draw stays the same
    if family is not None and family not in families:
        raise ConfigError(f"Unknown channel family '{family}'; choose from {', '.join(sorted(families))}.")
    members = families[family or drawn]
    return members[rng.integers(len(members))]


def babble_sources(paths, speakers, index: int, seed: int, k: int = BABBLE_TALKERS) -> list:
    """``k`` of ``paths`` to make babble for clip ``index``: clips of OTHER speakers (``speakers`` aligned with
    ``paths``; ``None``: any other clip), chosen by ``seed``."""
    others = [i for i in range(len(paths))
              if i != index and (speakers is None or speakers[i] != speakers[index])]
    if not others:
        raise ConfigError("Babble needs clips of at least one other speaker in the data.")
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFF, 2])
    return [paths[i] for i in rng.choice(others, size=min(k, len(others)), replace=False)]


def channel_features(path, fs, name: str, seed: int, babble_paths=()) -> np.ndarray:
    """Features (``fs.shape``) of one clip recorded through a channel: the file decoded as recorded (silence
    kept, not normalised), passed through ``name`` (babble: the clips ``babble_paths``, trimmed and
    peak-normalised), then prepared (trimmed, normalised) and computed as the feature set ``fs`` says."""
    from .audio import load_audio
    from .features import compute

    y = load_audio(path, sr=fs.sr, trim=False, normalize=None)
    babble = [load_audio(p, sr=fs.sr) for p in babble_paths] or None
    return compute(apply_channel(y, fs.sr, name, seed, babble=babble), fs.sr, fs)


def parse_channels(spec) -> tuple[str, ...]:
    """``"phone,noise10"`` or a list -> validated tuple of ``CHANNELS`` names; ``None``/``""`` -> ()."""
    if not spec:
        return ()
    names = tuple(s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip())
    for n in names:
        if n not in CHANNELS:
            raise ConfigError(f"Unknown channel '{n}'; choose from {', '.join(CHANNELS)}.")
    return names


def condition_seed(path, condition: str) -> int:
    """A stable seed for one clip under one condition (from the file name, so a copied corpus draws alike)."""
    from pathlib import Path

    return zlib.crc32(f"{Path(path).name}|{condition}".encode())
