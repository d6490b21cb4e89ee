"""Utterance features computed by other packages, as feature sets of the registry (``ser_core.features``):

- ``egemaps``, ``compare``: openSMILE's eGeMAPS v02 (88) and ComParE 2016 (6,373) functionals (the
  ``opensmile`` package: audEERING's research licence, non-commercial use only, like the shared corpora);
- ``voice_encoder``: a pretrained GE2E speaker encoder (the weights ``resemblyzer`` ships inside its wheel,
  Apache-2.0): the time-averaged mean and spread of each of its three LSTM layers' hidden states (3 x 2 x 256)
  and its 256-value embedding. Run here in numpy from the wheel's weights (``resemblyzer`` itself is never
  imported: its import needs ``webrtcvad`` and ``pkg_resources``); the weights are converted once with torch
  into ``$SER_CACHE_DIR/voice_encoder-<digest>.npz`` and read from there after.

Each extractor takes a prepared 16 kHz signal (trimmed and peak-normalised like every feature set) and returns
``(dim,)`` float32. Nothing here is imported until a set of it is computed; a missing package is one sentence.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Extractor:
    dim: int
    package: str  # what to install
    compute: Callable[[np.ndarray, int], np.ndarray]  # (prepared signal, sr) -> (dim,)
    names: Callable[[], list[str]]  # the dim feature names


def _require(package: str, install: str):
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"This feature set needs the '{package}' package; install it with `{install}`.")


# -- openSMILE -------------------------------------------------------------------------------------------------
@lru_cache(maxsize=2)
def _smile(feature_set: str):
    _require("opensmile", "pip install opensmile")
    import opensmile

    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=opensmile.FeatureLevel.Functionals)


def _opensmile(feature_set: str) -> tuple[Callable, Callable]:
    def compute(y, sr):
        return _smile(feature_set).process_signal(np.asarray(y, dtype=np.float32), sr).to_numpy()[0]

    return compute, lambda: list(_smile(feature_set).feature_names)


# -- the GE2E speaker encoder --------------------------------------------------------------------------------
ENCODER_SR, ENCODER_MELS, ENCODER_LAYERS, ENCODER_HIDDEN = 16000, 40, 3, 256  # resemblyzer's hparams
ENCODER_DBFS = -30.0  # its input level (audio_norm_target_dBFS)


def _weights_file() -> Path:
    _require("resemblyzer", "pip install --no-deps resemblyzer==0.1.4")
    return Path(importlib.util.find_spec("resemblyzer").origin).parent / "pretrained.pt"


@lru_cache(maxsize=1)
def encoder_weights() -> dict[str, np.ndarray]:
    """The encoder's LSTM and linear weights as float32 arrays (``lstm.weight_ih_l0`` ...), from the npz cache
    or, the first time, from the wheel's ``pretrained.pt`` (needs torch once)."""
    from .cache import default_cache_dir

    src = _weights_file()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    cached = default_cache_dir().parent / f"voice_encoder-{digest}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            return {k: z[k] for k in z.files}
    import torch

    state = torch.load(src, map_location="cpu", weights_only=False)["model_state"]
    weights = {k: v.numpy().astype(np.float32) for k, v in state.items() if k.startswith(("lstm.", "linear."))}
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, **weights)
    tmp.replace(cached)
    return weights


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def encoder_mel(y: np.ndarray, sr: int = ENCODER_SR) -> np.ndarray:
    """``(frames, 40)`` power mel spectrogram as the encoder was trained on (25 ms windows, 10 ms hop), the
    signal first brought to -30 dBFS."""
    blocks = list(encoder_mel_blocks(y, sr))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def encoder_mel_blocks(y: np.ndarray, sr: int = ENCODER_SR, block: int | None = None):
    """``encoder_mel`` a block of ``features.BLOCK_FRAMES`` frames at a time: each block is computed on its own
    samples (the whole signal zero-padded once, as librosa's centred frames are), so a long recording's
    spectrogram is never held whole and the frames are those of one spectrogram of the whole."""
    import librosa

    from .features import frame_blocks

    y = np.asarray(y, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(y)))) if y.size else 0.0
    gain = 10 ** (ENCODER_DBFS / 20) / rms if rms > 0 else 1.0
    n_fft, hop = int(sr * 0.025), int(sr * 0.010)
    n_frames = 1 + y.size // hop
    spans = frame_blocks(n_frames, block)
    if len(spans) == 1:  # a clip: one call, exactly as before blocks existed
        mel = librosa.feature.melspectrogram(y=y * gain, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=ENCODER_MELS)
        yield mel.astype(np.float32).T
        return
    padded = np.pad(y, n_fft // 2)  # librosa's centring (pad_mode "constant"), once
    for a, b in spans:
        part = padded[a * hop:(b - 1) * hop + n_fft] * gain
        mel = librosa.feature.melspectrogram(y=part, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=ENCODER_MELS,
                                             center=False)
        yield mel.astype(np.float32).T


def encoder_states(mel: np.ndarray) -> list[np.ndarray]:
    """The hidden states ``(frames, 256)`` of each of the encoder's three LSTM layers for ``mel``
    ``(frames, 40)``: with PyTorch's LSTM where torch is loaded (``use_torch``), else in numpy
    (``encoder_states_numpy``; the same numbers to float32 rounding)."""
    return _encoder_step(mel)[0]


def use_torch() -> bool:
    """Load PyTorch (where installed) for the encoder's LSTM: 2x faster per clip, so feature extraction over a
    corpus calls this first; a prediction does not, and runs the LSTM in numpy unless a model already loaded
    torch (a `predict --model svm` answers without importing it: 330 MB and 1-2 s less)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch  # noqa: F401

    return True


def _encoder_step(mel: np.ndarray, carry=None):
    """``(states, carry)``: ``encoder_states`` of ``mel``, starting from ``carry`` (each layer's ``(h, c)``
    after the frames before ``mel``; None: the start of a signal), and the carry after its last frame -- the
    states of a recording computed a block at a time are those of the whole."""
    if "torch" not in sys.modules:
        return _numpy_step(mel, carry)
    import torch

    layers = _torch_layers()
    x, out, after = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None], [], []
    with torch.no_grad():
        for k, lstm in enumerate(layers):
            x, state = lstm(x) if carry is None else lstm(x, carry[k])
            out.append(x[0].numpy())
            after.append(state)
    return out, after


@lru_cache(maxsize=1)
def _torch_layers():
    """The encoder's three LSTM layers as one-layer ``torch.nn.LSTM``s (each layer's states are features)."""
    import torch

    w, layers = encoder_weights(), []
    for layer in range(ENCODER_LAYERS):
        lstm = torch.nn.LSTM(ENCODER_MELS if layer == 0 else ENCODER_HIDDEN, ENCODER_HIDDEN, batch_first=True)
        lstm.load_state_dict({f"{k}_l0": torch.from_numpy(w[f"lstm.{k}_l{layer}"])
                              for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        layers.append(lstm.eval())
    return layers


def encoder_states_numpy(mel: np.ndarray) -> list[np.ndarray]:
    """``encoder_states`` in numpy (PyTorch's gate order i, f, g, o): a prediction where no model loaded torch,
    or an install without it."""
    return _numpy_step(mel)[0]


def _numpy_step(mel: np.ndarray, carry=None):
    w, x, out, after = encoder_weights(), np.asarray(mel, dtype=np.float32), [], []
    for layer in range(ENCODER_LAYERS):
        W_ih, W_hh = w[f"lstm.weight_ih_l{layer}"], w[f"lstm.weight_hh_l{layer}"]
        gates_x = x @ W_ih.T + w[f"lstm.bias_ih_l{layer}"] + w[f"lstm.bias_hh_l{layer}"]  # (frames, 4 * 256)
        h, c = (np.zeros(ENCODER_HIDDEN, np.float32),) * 2 if carry is None else carry[layer]
        states = np.empty((len(x), ENCODER_HIDDEN), np.float32)
        for t in range(len(x)):
            i, f, g, o = np.split(gates_x[t] + W_hh @ h, 4)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            states[t] = h
        out.append(states)
        after.append((h, c))
        x = states
    return out, after


def _voice_encoder(y, sr):
    """Each layer's mean and standard deviation over time, then the speaker embedding of the last state. A long
    recording runs a block of frames at a time (the LSTMs' states carried over, the statistics accumulated), so
    its memory is that of one block; a clip of one block is computed in one piece."""
    w, carry, first, n, last = encoder_weights(), None, None, 0, None
    total = sq = None
    for mel in encoder_mel_blocks(y, sr):
        states, carry = _encoder_step(mel, carry)
        if first is None:
            first = states
        else:  # a second block: from here on, running sums (float64) instead of the states
            if total is None:
                total = [s.sum(0, dtype=np.float64) for s in first]
                sq = [np.square(s, dtype=np.float64).sum(0) for s in first]
            total = [t + s.sum(0, dtype=np.float64) for t, s in zip(total, states)]
            sq = [q + np.square(s, dtype=np.float64).sum(0) for q, s in zip(sq, states)]
        n += len(states[-1])
        last = states[-1][-1] if len(states[-1]) else last
    if not n:
        return np.zeros(2 * ENCODER_LAYERS * ENCODER_HIDDEN + ENCODER_HIDDEN, np.float32)
    if total is None:
        means, stds = [s.mean(0) for s in first], [s.std(0) for s in first]
    else:
        means = [t / n for t in total]
        stds = [np.sqrt(np.maximum(q / n - m ** 2, 0.0)) for q, m in zip(sq, means)]
    emb = np.maximum(last @ w["linear.weight"].T + w["linear.bias"], 0)  # relu(linear(h_T))
    emb = emb / (np.linalg.norm(emb) or 1.0)
    return np.concatenate(means + stds + [emb]).astype(np.float32)


def _voice_encoder_names() -> list[str]:
    return [f"encoder_l{l + 1}_{stat}{i}" for stat in ("mean", "std") for l in range(ENCODER_LAYERS)
            for i in range(ENCODER_HIDDEN)] + [f"encoder_embedding{i}" for i in range(ENCODER_HIDDEN)]


EXTRACTORS: dict[str, Extractor] = {
    "egemaps": Extractor(88, "opensmile", *_opensmile("eGeMAPSv02")),
    "compare": Extractor(6373, "opensmile", *_opensmile("ComParE_2016")),
    "voice_encoder": Extractor(2 * ENCODER_LAYERS * ENCODER_HIDDEN + ENCODER_HIDDEN, "resemblyzer", _voice_encoder,
                               _voice_encoder_names),
}


def extract(name: str, y: np.ndarray, sr: int) -> np.ndarray:
    """``(EXTRACTORS[name].dim,)`` float32 features of the prepared signal ``y`` at ``sr`` Hz (NaN -> 0)."""
    out = np.asarray(EXTRACTORS[name].compute(y, sr), dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


__all__ = ["EXTRACTORS", "Extractor", "encoder_mel", "encoder_states", "encoder_states_numpy", "encoder_weights",
           "extract"]
