"""The one interface every model family keeps (the scikit-learn estimator contract).

- ``__init__`` only stores keyword parameters (``feature_set`` and ``seed`` always among them).
- ``fit(X, y)`` learns everything from the data it is given -- scalers, oversampling, the early-stopping
  validation split -- so under cross-validation it sees the training fold only. It sets ``classes_`` (sorted
  label strings) and returns ``self``.
- ``predict_proba(X)`` returns ``(n_clips, len(classes_))`` probabilities; ``predict(X)`` the arg-max labels.
- ``X`` is the stacked output of ``ser_core.features.compute_files`` for ``self.feature_set``:
  ``(n, d)`` for utterance sets, ``(n, frames, d)`` for sequence sets, ``(n, n_mels, frames)`` for images,
  ``(n, samples)`` for raw audio.
- ``save(directory)`` writes ``model.json`` (registry name, parameters, classes) plus the family's weights;
  ``ser_core.models.base.load_model_dir(directory)`` rebuilds the model without knowing its family.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np

from ..errors import ModelError, ModelNotFoundError

MODEL_JSON = "model.json"


class SERModel:
    name: str = "base"  # registry name, set by each subclass
    framework: str = "none"

    # -- parameters ----------------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self" and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]

    _estimator_type = "classifier"  # scikit-learn before 1.6 reads this; later versions __sklearn_tags__

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters, as scikit-learn defines them (``sklearn.base.clone``, ``GridSearchCV``
        and pipelines use it); ``deep``: a parameter that is itself an estimator adds its own as ``name__key``."""
        out = {k: getattr(self, k) for k in self._param_names()}
        if deep:
            for k, v in list(out.items()):
                if hasattr(v, "get_params") and not isinstance(v, type):
                    out.update({f"{k}__{kk}": vv for kk, vv in v.get_params().items()})
        return out

    def set_params(self, **params):
        """Set parameters by name (``name__key`` sets a parameter of an estimator parameter); returns self."""
        for k, v in params.items():
            own, _, sub = k.partition("__")
            if own not in self._param_names():
                raise ModelError(f"Model '{self.name}' has no parameter '{own}'.")
            if sub:
                getattr(self, own).set_params(**{sub: v})
            else:
                setattr(self, own, v)
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())

    def score(self, X, y) -> float:
        """UAR (unweighted average recall, scikit-learn's balanced accuracy): the score ``GridSearchCV`` and
        ``cross_val_score`` maximise by default, the headline metric here (scikit-learn's classifiers return
        plain accuracy)."""
        from sklearn.metrics import balanced_accuracy_score

        return float(balanced_accuracy_score(np.asarray(y).astype(str), np.asarray(self.predict(X)).astype(str)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- learning ------------------------------------------------------------------------------------------
    def fit(self, X, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)]

    def _check_fitted(self):
        if not hasattr(self, "classes_"):
            raise ModelError(f"Model '{self.name}' is not fitted yet; call fit() first.")

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "framework": self.framework, "params": _jsonable(self.get_params()),
                "classes": [str(c) for c in self.classes_]}
        self._save_state(directory)
        (directory / MODEL_JSON).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        meta = json.loads((directory / MODEL_JSON).read_text())
        model = cls(**meta["params"])
        model.classes_ = np.asarray(meta["classes"])
        model._load_state(directory)
        return model

    def _save_state(self, directory: Path):  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_state(self, directory: Path):  # pragma: no cover - abstract
        raise NotImplementedError


def load_model_dir(directory):
    """Load any saved model from its directory (reads ``model.json`` to find the family)."""
    from . import model_class

    directory = Path(directory)
    meta_path = directory / MODEL_JSON
    if not meta_path.is_file():
        raise ModelNotFoundError(f"No saved model in '{directory}' (missing {MODEL_JSON}).")
    meta = json.loads(meta_path.read_text())
    if meta["name"] == "ensemble":  # pools other saved models; not a family one trains on features
        from ..ensemble import EnsembleModel

        return EnsembleModel.load(directory)
    return model_class(meta["name"]).load(directory)


# -- helpers shared by the families ----------------------------------------------------------------------
def random_oversample(X: np.ndarray, y: np.ndarray, seed: int = 0):
    """Repeat minority-class rows at random until every class has as many rows as the largest one."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    idx = [np.flatnonzero(y == c) for c in classes]
    extra = [rng.choice(i, counts.max() - len(i), replace=True) for i in idx if len(i) < counts.max()]
    order = np.concatenate([np.arange(len(y))] + extra) if extra else np.arange(len(y))
    rng.shuffle(order)
    return X[order], y[order]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux, else the machine's count): what the
    frameworks' thread settings and the training recipe's lanes divide."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def balanced_class_weights(y_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Weights ``n / (k * count_c)`` as scikit-learn's ``class_weight='balanced'``."""
    counts = np.bincount(y_idx, minlength=n_classes).astype(float)
    counts[counts == 0] = 1.0
    return len(y_idx) / (n_classes * counts)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def check_training_data(X, y, name: str, min_classes: int = 2):
    """Validate ``fit`` inputs: ``X`` (n, ...) finite numbers, ``y`` (n,) labels -> (float32 X, str y).

    Raises :class:`ModelError` with one sentence for the mistakes a user can make (empty data, mismatched
    lengths, NaN/inf features, a single class).
    """
    X = np.asarray(X)
    y = np.asarray(y).astype(str)
    if X.ndim < 2 or len(X) == 0:
        raise ModelError(f"Model '{name}' needs a non-empty feature array of shape (n_clips, ...), got {X.shape}.")
    if y.ndim != 1 or len(y) != len(X):
        raise ModelError(f"Model '{name}' got {len(X)} feature rows but {y.size} labels; they must match.")
    if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
        raise ModelError(f"Model '{name}' got non-numeric, NaN or infinite features; recompute the features.")
    if len(np.unique(y)) < min_classes:
        raise ModelError(f"Model '{name}' needs at least {min_classes} emotion classes in the training data.")
    return X.astype(np.float32, copy=False), y
