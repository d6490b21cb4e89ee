"""Model registry: ``create_model(name, **params)`` and ``list_models(pattern)``.

The registry is data: each entry names the module and class that build the model, its framework, the
feature set it consumes and every keyword parameter with its default. It is the one source of those defaults:
the CLI and the Train page read them here, and each class's ``__init__`` keeps the same values (a test checks
that they agree). Nothing here imports scikit-learn, TensorFlow, PyTorch or transformers; a family's module is
imported only when one of its models is created (see the TensorFlow/aiortc import-order hazard).
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
    defaults: dict = field(default_factory=dict)  # every other keyword parameter of the class and its default
    weights_param: str | None = None  # the parameter naming pretrained weights: a download id or a local path

    @property
    def params(self) -> dict:
        """Every keyword parameter of the model and its default, ``feature_set`` first."""
        return {"feature_set": self.feature_set, **self.defaults}


# Parameters the families share (each class's own come after them in its entry).
_SKLEARN = dict(seed=0, class_weight=None, oversample=False)
_KERAS_TRAINING = dict(val_fraction=0.15, class_weight="balanced", focal_gamma=0.0, oversample=False, seed=0)
_TORCH_TRAINING = dict(batch_size=32, lr=1e-3, weight_decay=1e-4, class_weight=None, focal_gamma=0.0,
                       oversample=False, val_fraction=0.1,
                       domain_adversarial=0.0, mixup=0.0,  # 0: off (training on several corpora; PARAM_HELP)
                       device=None)  # device None: select_device()

# What a parameter does, in a sentence, where its name does not say it (the Train page shows it as help).
PARAM_HELP = {
    "domain_adversarial": "Domain-adversarial training on several corpora: the strength (0 = off; try 0.1-0.3) of "
                          "a reversed gradient from a corpus classifier that makes the network hide which corpus "
                          "a clip comes from, ramped up during training (Ganin & Lempitsky 2015).",
    "mixup": "Mixup: train on mixes of two clips and their labels, the partner from another corpus when there are "
             "several; the Beta(alpha, alpha) parameter (0 = off; try 0.2-0.4).",
}


_SPECS = [
    ModelSpec("majority", "sklearn_models", "MajorityBaseline", "sklearn", "prosody",
              "Majority-class baseline: always predicts the most frequent training label.", _SKLEARN),
    ModelSpec("decision_tree", "sklearn_models", "DecisionTreeModel", "sklearn", "rich",
              "Decision tree on standardised utterance features.",
              {**_SKLEARN, "max_depth": 12, "min_samples_leaf": 3}),
    ModelSpec("random_forest", "sklearn_models", "RandomForestModel", "sklearn", "rich",
              "Random forest on standardised utterance features.",
              {**_SKLEARN, "n_estimators": 500, "max_depth": None, "max_features": "sqrt", "n_jobs": None}),
    ModelSpec("svm", "sklearn_models", "SVMModel", "sklearn", "rich",
              "RBF support vector machine on standardised utterance features (probability calibrated).",
              {**_SKLEARN, "C": 10.0, "gamma": "scale", "kernel": "rbf", "probability": "votes"}),
    ModelSpec("lda", "sklearn_models", "LDAModel", "sklearn", "expressive",
              "Shrinkage linear discriminant analysis on standardised utterance features.",
              {**_SKLEARN, "shrinkage": "auto"}),
    ModelSpec("mlp_tf", "keras_models", "KerasMLP", "tensorflow", "rich",
              "Multi-layer perceptron in TensorFlow/Keras on utterance features.",
              {"hidden": (256, 128), "dropout": 0.4, "batchnorm": True, "l2": 1e-4, "epochs": 200, "batch_size": 32,
               "lr": 1e-3, "patience": 20, **_KERAS_TRAINING}),
    ModelSpec("fcnn_torch", "torch_models", "TorchFCNN", "torch", "rich",
              "Fully connected network in PyTorch on utterance features (ReLU, softmax, Adam).",
              {"seed": 0, "hidden": (512, 256), "dropout": 0.3, "epochs": 150, "patience": 20, **_TORCH_TRAINING}),
    ModelSpec("transformer_torch", "torch_models", "TorchTransformer", "torch", "mfcc_seq",
              "Self-attention encoder in PyTorch over frame sequences with positional encoding and pooling.",
              {"seed": 0, "d_model": 64, "n_heads": 4, "n_layers": 2, "dim_feedforward": 128, "dropout": 0.2,
               "positional": "sinusoidal", "attention_pool": True, "frame_stride": 4, "epochs": 60, "patience": 12,
               "augment": True, "time_mask": 0.15, "freq_mask": 0.15, **_TORCH_TRAINING}),
    ModelSpec("cnn", "keras_models", "KerasCNN", "tensorflow", "logmel_image",
              "2-D CNN on log-mel images, trained from scratch (L2, dropout).",
              {"filters": (16, 32, 64, 64), "input_pool": (2, 2), "dropout": 0.3, "l2": 1e-4, "spec_augment": True,
               "freq_mask": 8, "time_mask": 20, "epochs": 40, "batch_size": 32, "lr": 2e-3, "patience": 8,
               **_KERAS_TRAINING}),
    ModelSpec("lstm", "keras_models", "KerasLSTM", "tensorflow", "mfcc_seq",
              "Bidirectional LSTM in Keras on frame sequences.",
              {"units": 64, "bidirectional": True, "dense": 64, "dropout": 0.3, "frame_stride": 2, "epochs": 60,
               "batch_size": 32, "lr": 2e-3, "patience": 10, **_KERAS_TRAINING}),
    ModelSpec("cnn_lstm", "keras_models", "KerasCNNLSTM", "tensorflow", "mfcc_seq",
              "1-D convolutions followed by an LSTM in Keras on frame sequences.",
              {"filters": (64, 128), "kernel_size": 5, "pool": 2, "units": 64, "bidirectional": True, "dropout": 0.4,
               "l2": 1e-3, "frame_stride": 1, "epochs": 60, "batch_size": 32, "lr": 2e-3, "patience": 10,
               **_KERAS_TRAINING}),
    ModelSpec("vgg16_transfer", "keras_models", "KerasVGG16Transfer", "tensorflow", "logmel_image",
              "VGG16 backbone on mel images with a dense head and selective fine-tuning "
              "(ImageNet weights when they can be loaded).",
              {"weights": "imagenet", "image_size": (64, 64), "trainable_blocks": 1, "dense": 128, "dropout": 0.4,
               "l2": 1e-4, "epochs": 15, "batch_size": 32, "lr": 3e-4, "patience": 5, **_KERAS_TRAINING},
              weights_param="weights"),
    ModelSpec("wav2vec2_probe", "wav2vec2", "Wav2Vec2Probe", "transformers", "raw_audio",
              "Pooled hidden states of a transformers speech model plus a random forest or logistic regression.",
              {"model_id": "facebook/wav2vec2-base", "layer": 6, "pooling": "mean_std", "classifier": "random_forest",
               "n_estimators": 500, "C": 1.0, "batch_size": 8, "seed": 0},
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
    """Build an unfitted model. ``params`` override the registry's defaults (``ModelSpec.params``); an unknown key
    is an error that names the close matches."""
    spec = get_spec(name)
    check_params(name, params)
    return model_class(name)(**{**spec.params, **params})


def check_params(name: str, params) -> None:
    """Raise ``ConfigError`` when ``params`` names a parameter model ``name`` does not have (no import)."""
    spec = get_spec(name)
    for key in params:
        if key not in spec.params:
            close = [p for p in spec.params if p.lower() == str(key).lower()] \
                or difflib.get_close_matches(key, spec.params, n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"Model '{name}' has no parameter '{key}'.{hint} It has: {', '.join(spec.params)}.")


__all__ = ["ModelSpec", "MODEL_SPECS", "PARAM_HELP", "list_models", "get_spec", "create_model", "check_params",
           "model_class"]
