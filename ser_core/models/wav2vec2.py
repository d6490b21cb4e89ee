"""A linear-probe style model on a frozen wav2vec2 (or any transformers speech encoder).

``Wav2Vec2Probe`` embeds raw 16 kHz audio ``(n, samples)`` (feature set ``raw_audio``) with the hidden states of
one layer of a pretrained encoder, pools them over time, and trains a scikit-learn classifier on the result.

Weights: ``model_id`` is a Hugging Face hub id (``"facebook/wav2vec2-base"``) or a local folder written by
``save_pretrained``. The local cache is tried first, then the hub. Offline without a local copy, download it on a
connected machine and pass the folder::

    python -c "from transformers import AutoModel, AutoFeatureExtractor as F; m='facebook/wav2vec2-base'; \
AutoModel.from_pretrained(m).save_pretrained('w2v2'); F.from_pretrained(m).save_pretrained('w2v2')"

A saved probe stores only the classifier (``classifier.joblib``) and its parameters (``model_id``, ``layer``,
``pooling``) in ``model.json``; loading it reloads the backbone from ``model_id``, which must therefore still be
reachable (the hub cache or the same folder). ``make_tiny_wav2vec2(folder)`` writes a tiny random encoder for
tests and offline demos. torch and transformers are imported only when a probe embeds audio.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .base import SERModel

log = logging.getLogger(__name__)
CLASSIFIER_FILE = "classifier.joblib"
POOLINGS = ("mean", "mean_std", "max")
CLASSIFIERS = ("random_forest", "logreg")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Fast offline check (the hub client retries for ~30 s before giving up). A proxy defers to the client."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=2)
def load_backbone(model_id: str):
    """``(feature_extractor, model)`` for ``model_id`` (local folder, local cache, then hub), in eval mode on CPU.
    Cached per process so cross-validation folds share one copy."""
    from transformers import AutoFeatureExtractor, AutoModel

    def load(local_only: bool):
        fe = AutoFeatureExtractor.from_pretrained(model_id, local_files_only=local_only)
        model = AutoModel.from_pretrained(model_id, local_files_only=local_only)
        return fe, model.eval()

    try:
        return load(True)
    except (OSError, ValueError) as local_exc:
        if Path(model_id).exists():
            raise ModelError(f"Could not load wav2vec2 weights from the folder '{model_id}' ({local_exc}); it must "
                             "hold a save_pretrained model and feature extractor.") from None
        if not _hub_reachable():
            raise ModelError(
                f"Could not load wav2vec2 weights '{model_id}': no internet and no local copy. Download it on a "
                f"connected machine with `AutoModel.from_pretrained('{model_id}').save_pretrained(folder)` (and the "
                "same for AutoFeatureExtractor) and pass model_id=/path/to/folder.") from None
    try:
        return load(False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Could not load wav2vec2 weights '{model_id}' from the hub ({exc}); check the id or "
                         "pass model_id=/path/to/a/local/folder.") from None


def make_tiny_wav2vec2(folder, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny randomly initialised Wav2Vec2Model plus feature-extractor config to ``folder``; return it.
    Its embeddings carry no learned meaning: it is a local stand-in for tests and offline demos."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=2,
                         intermediate_size=2 * hidden_size, conv_dim=(hidden_size,) * 7,
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                         do_stable_layer_norm=True)
    folder = Path(folder)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


class Wav2Vec2Probe(SERModel):
    """Pooled hidden states of layer ``layer`` of a frozen speech encoder + a random forest or logistic regression.

    X : ``(n, samples)`` float waveforms at 16 kHz; trailing zeros are padding and are ignored.
    layer : index into the hidden states (0 = CNN features after projection, 1..L = transformer layers,
        negative counts from the end). Middle layers of wav2vec2-base (around 6-8 of 12) carry the most
        paralinguistic information; -1 is the last layer.
    pooling : "mean" | "mean_std" (mean and std, 2x the width) | "max" over the clip's frames.
    """

    name = "wav2vec2_probe"
    framework = "transformers"

    def __init__(self, feature_set="raw_audio", model_id="facebook/wav2vec2-base", layer=6, pooling="mean_std",
                 classifier="random_forest", n_estimators=500, C=1.0, batch_size=8, seed=0):
        self.feature_set, self.model_id, self.layer, self.pooling = feature_set, model_id, layer, pooling
        self.classifier, self.n_estimators, self.C = classifier, n_estimators, C
        self.batch_size, self.seed = batch_size, seed

    # -- embeddings ----------------------------------------------------------------------------------------------
    def embed(self, X, progress=None) -> np.ndarray:
        """``(n, samples)`` waveforms -> ``(n, hidden)`` (``2 * hidden`` for mean_std) pooled embeddings."""
        import torch

        if self.pooling not in POOLINGS:
            raise ModelError(f"Unknown pooling '{self.pooling}'; use one of {', '.join(POOLINGS)}.")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ModelError(f"Model '{self.name}' expects (n, samples) raw audio (feature set raw_audio) but got "
                             f"an array of shape {X.shape}.")
        fe, model = load_backbone(str(self.model_id))
        n_states = model.config.num_hidden_layers + 1
        if not -n_states <= self.layer < n_states:
            raise ModelError(f"Layer {self.layer} does not exist: '{self.model_id}' has hidden states 0..{n_states - 1}.")
        nonzero = np.abs(X) > 0
        lengths = np.where(nonzero.any(axis=1), X.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
        lengths = np.maximum(lengths, 400)  # one conv receptive field (25 ms) at least
        order = np.argsort(lengths)  # batch clips of similar length: less padding
        out = np.zeros((len(X), model.config.hidden_size * (2 if self.pooling == "mean_std" else 1)), np.float32)
        with torch.no_grad():
            for start in range(0, len(X), self.batch_size):
                idx = order[start:start + self.batch_size]
                clips = [X[i, :lengths[i]] for i in idx]
                inputs = fe(clips, sampling_rate=16000, padding=True, return_tensors="pt",
                            return_attention_mask=True)
                mask = inputs.get("attention_mask")
                kwargs = {"attention_mask": mask} if getattr(fe, "return_attention_mask", False) else {}
                hidden = model(inputs["input_values"], output_hidden_states=True, **kwargs).hidden_states[self.layer]
                frames = model._get_feat_extract_output_lengths(torch.as_tensor(lengths[idx]))
                valid = torch.arange(hidden.shape[1])[None, :] < frames[:, None]  # (b, t)
                out[idx] = _pool(hidden, valid, self.pooling).numpy()
                if progress is not None:
                    progress(min(start + self.batch_size, len(X)), len(X))
        return out

    def _make_classifier(self):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.classifier == "random_forest":
            return RandomForestClassifier(n_estimators=self.n_estimators, class_weight="balanced",
                                          random_state=self.seed, n_jobs=-1)
        if self.classifier == "logreg":
            return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000,
                                                                      class_weight="balanced"))
        raise ModelError(f"Unknown classifier '{self.classifier}'; use one of {', '.join(CLASSIFIERS)}.")

    # -- the estimator contract ---------------------------------------------------------------------------------
    def fit(self, X, y, progress=None):
        """Embed ``X`` (n, samples) and train the classifier on labels ``y`` (n,)."""
        y = np.asarray(y).astype(str)
        if len(X) != len(y):
            raise ModelError(f"Model '{self.name}' got {len(X)} clips but {len(y)} labels.")
        if len(np.unique(y)) < 2:
            raise ModelError(f"Model '{self.name}' needs at least two emotions in the training data.")
        clf = self._make_classifier()
        clf.fit(self.embed(X, progress), y)
        self.clf_ = clf
        self.classes_ = np.asarray(clf.classes_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """``(n, len(classes_))`` class probabilities."""
        self._check_fitted()
        return self.clf_.predict_proba(self.embed(X))

    def _save_state(self, directory: Path):
        import joblib

        joblib.dump(self.clf_, directory / CLASSIFIER_FILE)

    def _load_state(self, directory: Path):
        import joblib

        try:
            self.clf_ = joblib.load(directory / CLASSIFIER_FILE)
        except (OSError, EOFError, ValueError) as exc:
            raise ModelError(f"Could not load the probe classifier in '{directory}': {exc}.") from exc


def _pool(hidden, valid, pooling: str):
    """Pool ``hidden (b, t, h)`` over the frames where ``valid (b, t)`` is True."""
    import torch

    w = valid.unsqueeze(-1).to(hidden.dtype)
    count = w.sum(1).clamp(min=1.0)
    mean = (hidden * w).sum(1) / count
    if pooling == "mean":
        return mean
    if pooling == "mean_std":
        var = (((hidden - mean[:, None]) ** 2) * w).sum(1) / count
        return torch.cat([mean, var.clamp(min=0).sqrt()], dim=1)
    return hidden.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(1)


__all__ = ["Wav2Vec2Probe", "make_tiny_wav2vec2", "load_backbone", "POOLINGS", "CLASSIFIERS"]
