"""Model registry: ``create_model(name, **params)`` and ``list_models(pattern)``.

The registry is data: each entry names the module and class that build the model, its framework and the
feature set it consumes. Nothing here imports scikit-learn, TensorFlow, PyTorch or transformers; a family's
module is imported only when one of its models is created (see the TensorFlow/aiortc import-order hazard).
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    module: str  # relative to ser_core.models
    cls: str
    framework: str  # "sklearn" | "tensorflow" | "torch" | "transformers"
    feature_set: str  # default feature set (a name in ser_core.features.FEATURE_SETS)
    description: str
    defaults: dict = field(default_factory=dict)  # keyword arguments the builder gets unless overridden
    weights_param: str | None = None  # the parameter naming pretrained weights: a download id or a local path


_SPECS = [
    ModelSpec("majority", "sklearn_models", "MajorityBaseline", "sklearn", "prosody",
              "Majority-class baseline: always predicts the most frequent training label."),
    ModelSpec("decision_tree", "sklearn_models", "DecisionTreeModel", "sklearn", "rich",
              "Decision tree on standardised utterance features."),
    ModelSpec("random_forest", "sklearn_models", "RandomForestModel", "sklearn", "rich",
              "Random forest on standardised utterance features."),
    ModelSpec("svm", "sklearn_models", "SVMModel", "sklearn", "rich",
              "RBF support vector machine on standardised utterance features (probability calibrated)."),
    ModelSpec("lda", "sklearn_models", "LDAModel", "sklearn", "expressive",
              "Shrinkage linear discriminant analysis on standardised utterance features."),
    ModelSpec("mlp_tf", "keras_models", "KerasMLP", "tensorflow", "rich",
              "Multi-layer perceptron in TensorFlow/Keras on utterance features."),
    ModelSpec("fcnn_torch", "torch_models", "TorchFCNN", "torch", "rich",
              "Fully connected network in PyTorch on utterance features (ReLU, softmax, Adam)."),
    ModelSpec("transformer_torch", "torch_models", "TorchTransformer", "torch", "mfcc_seq",
              "Self-attention encoder in PyTorch over frame sequences with positional encoding and pooling."),
    ModelSpec("cnn", "keras_models", "KerasCNN", "tensorflow", "logmel_image",
              "2-D CNN on log-mel images, trained from scratch (L2, dropout)."),
    ModelSpec("lstm", "keras_models", "KerasLSTM", "tensorflow", "mfcc_seq",
              "Bidirectional LSTM in Keras on frame sequences."),
    ModelSpec("cnn_lstm", "keras_models", "KerasCNNLSTM", "tensorflow", "mfcc_seq",
              "1-D convolutions followed by an LSTM in Keras on frame sequences."),
    ModelSpec("vgg16_transfer", "keras_models", "KerasVGG16Transfer", "tensorflow", "logmel_image",
              "VGG16 backbone on mel images with a dense head and selective fine-tuning "
              "(ImageNet weights when they can be loaded).", weights_param="weights"),
    ModelSpec("wav2vec2_probe", "wav2vec2", "Wav2Vec2Probe", "transformers", "raw_audio",
              "Pooled hidden states of a transformers speech model plus a random forest or logistic regression.",
              weights_param="model_id"),
]
MODEL_SPECS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style ``pattern`` (``"*torch"``)."""
    names = list(MODEL_SPECS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODEL_SPECS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown model '{name}'.{hint} Available: {', '.join(MODEL_SPECS)}."
        ) from None


def model_class(name: str):
    spec = get_spec(name)
    module = importlib.import_module(f"{__name__}.{spec.module}")
    return getattr(module, spec.cls)


def create_model(name: str, **params):
    """Build an unfitted model. ``params`` override the family's defaults; unknown keys are an error."""
    spec = get_spec(name)
    cls = model_class(name)
    kwargs = {**spec.defaults, **params}
    kwargs.setdefault("feature_set", spec.feature_set)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown keyword
        raise ConfigError(f"Bad parameter for model '{name}': {exc}.") from None


__all__ = ["ModelSpec", "MODEL_SPECS", "list_models", "get_spec", "create_model", "model_class"]
