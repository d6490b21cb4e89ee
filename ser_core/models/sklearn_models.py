"""scikit-learn models: majority baseline, decision tree, random forest and SVM on utterance features.

Each model holds a ``Pipeline(StandardScaler, estimator)`` fitted only on what ``fit`` receives (optional
random oversampling happens inside ``fit`` too). Inputs of more than two dimensions (sequences, images) are
flattened to ``(n, prod(rest))``. Saved with joblib as ``pipeline.joblib`` beside ``model.json``.
"""
from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from ..errors import ConfigError, ModelError
from .base import SERModel, check_training_data, random_oversample

PIPELINE_FILE = "pipeline.joblib"


def _flatten(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


class SklearnModel(SERModel):
    """Common fit/predict/save for the scikit-learn family; subclasses build the final estimator."""

    framework = "sklearn"

    def __init__(self, feature_set: str = "rich", seed: int = 0, class_weight: str | None = None,
                 oversample: bool = False):
        self.feature_set = feature_set
        self.seed = seed
        self.class_weight = class_weight
        self.oversample = oversample
        self._check_params()

    def _estimator(self, y: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_params(self):
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"class_weight must be 'balanced' or None, not {self.class_weight!r}.")

    def fit(self, X, y, progress=None, sample_weight=None):
        """``X`` (n, d) or (n, ...) flattened; ``y`` (n,) labels; ``sample_weight`` (n,) or None (the estimator
        weighs each row so; the scaler's statistics stay unweighted). Returns ``self``. ``progress(epoch, logs)``
        (as for the neural families) is called once, after the single pass of fitting."""
        self._check_params()
        X, y = check_training_data(X, y, self.name, min_classes=1 if self.name == "majority" else 2)
        X = _flatten(X)
        if self.oversample:
            if sample_weight is not None:
                raise ConfigError(f"Model '{self.name}': oversampling and sample weights do not mix; choose one.")
            X, y = random_oversample(X, y, seed=self.seed)
        self.pipeline_ = Pipeline([("scale", StandardScaler()), ("clf", self._estimator(y))])
        self.pipeline_.fit(X, y, **({} if sample_weight is None else {"clf__sample_weight": sample_weight}))
        self.classes_ = np.asarray(self.pipeline_.classes_).astype(str)
        self.n_features_ = X.shape[1]
        if progress is not None:
            progress(1, {})
        return self

    def predict_proba(self, X) -> np.ndarray:
        """``(n, len(classes_))`` probabilities; rows sum to 1."""
        self._check_fitted()
        X = _flatten(np.asarray(X, dtype=np.float32))
        if X.shape[1] != self.n_features_:
            raise ModelError(f"Model '{self.name}' was trained on {self.n_features_} features but got "
                             f"{X.shape[1]}; use the feature set '{self.feature_set}'.")
        return self.pipeline_.predict_proba(X)

    def _save_state(self, directory: Path):
        # an SVM's support vectors are stored as float32: they are float32 features (scaled in float32), which
        # libsvm holds as float64, so nothing is lost and the shipped svm's file shrinks from 39 to 32 MB
        svms = _support_vector_holders(self.pipeline_)
        vectors = [svm.support_vectors_ for svm in svms]
        for svm in svms:
            svm.support_vectors_ = svm.support_vectors_.astype(np.float32)
        try:
            joblib.dump(self.pipeline_, directory / PIPELINE_FILE, compress=3)  # forests shrink ~4x
        finally:
            for svm, v in zip(svms, vectors):
                svm.support_vectors_ = v

    def _load_state(self, directory: Path):
        path = directory / PIPELINE_FILE
        if not path.is_file():
            raise ModelError(f"Saved model in '{directory}' lacks {PIPELINE_FILE}; save it again.")
        self.pipeline_ = joblib.load(path)
        for svm in _support_vector_holders(self.pipeline_):  # libsvm predicts from float64 vectors only
            svm.support_vectors_ = np.ascontiguousarray(svm.support_vectors_, dtype=np.float64)
        self.n_features_ = int(self.pipeline_.named_steps["scale"].n_features_in_)


def _support_vector_holders(pipeline) -> list:
    """The fitted SVCs inside ``pipeline``'s classifier: itself, or those a ``CalibratedClassifierCV`` wraps."""
    clf = pipeline.named_steps["clf"]
    inner = [c.estimator for c in getattr(clf, "calibrated_classifiers_", [])] or [clf]
    return [c for c in inner if getattr(c, "support_vectors_", None) is not None]


class MajorityBaseline(SklearnModel):
    """Always predicts the most frequent training label; probabilities are the training class priors."""

    name = "majority"

    def __init__(self, feature_set: str = "prosody", seed: int = 0, class_weight: str | None = None,
                 oversample: bool = False):
        super().__init__(feature_set, seed, class_weight, oversample)

    def _estimator(self, y):
        return DummyClassifier(strategy="prior")


class DecisionTreeModel(SklearnModel):
    name = "decision_tree"

    def __init__(self, feature_set: str = "rich", seed: int = 0, class_weight: str | None = None,
                 oversample: bool = False, max_depth: int | None = 12, min_samples_leaf: int = 3):
        super().__init__(feature_set, seed, class_weight, oversample)
        self.max_depth = max_depth  # a full-depth tree memorises 720 clips; 12 levels keep it readable
        self.min_samples_leaf = min_samples_leaf

    def _estimator(self, y):
        return DecisionTreeClassifier(max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                                      class_weight=self.class_weight, random_state=self.seed)


class RandomForestModel(SklearnModel):
    name = "random_forest"

    def __init__(self, feature_set: str = "rich", seed: int = 0, class_weight: str | None = None,
                 oversample: bool = False, n_estimators: int = 500, max_depth: int | None = None,
                 max_features: str | float | int = "sqrt", n_jobs: int | None = None):
        super().__init__(feature_set, seed, class_weight, oversample)
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_features = max_features
        self.n_jobs = n_jobs  # trees are independent; results do not depend on n_jobs

    def _estimator(self, y):
        return RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                      max_features=self.max_features, class_weight=self.class_weight,
                                      n_jobs=self.n_jobs, random_state=self.seed)


class VoteSVC(SVC):
    """An SVC whose ``predict_proba`` is the softmax of its one-vs-rest decision values (the one-vs-one votes of
    each class plus their scaled confidences, ``decision_function_shape="ovr"``): one fit, no internal
    cross-validation. A ranking rather than a probability; the calibration fitted on the run's speaker-grouped
    out-of-fold predictions (``ser_core.calibration``) turns it into one."""

    def predict_proba(self, X):
        d = self.decision_function(X)
        if d.ndim == 1:  # two classes: one signed margin, positive for classes_[1]
            d = np.column_stack([-d, d])
        z = np.exp(d - d.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


SVM_PROBABILITIES = ("votes", "platt")


class SVMModel(SklearnModel):
    """RBF SVC. ``probability="votes"`` (default): the softmax of its one-vs-rest decision values (``VoteSVC``),
    left to the run's calibration. ``"platt"``: decision values Platt-scaled by internal 5-fold cross-validation
    (what ``SVC(probability=True)`` did before scikit-learn 1.9 deprecated it): 6 fits instead of 1, and its
    random internal folds put a clip's augmented copies, and each speaker, on both sides, so its probabilities
    came out mis-shaped on new speakers (cross-fitted ECE 0.055 where the votes gave 0.034; README)."""

    name = "svm"

    def __init__(self, feature_set: str = "rich", seed: int = 0, class_weight: str | None = None,
                 oversample: bool = False, C: float = 10.0, gamma: str | float = "scale", kernel: str = "rbf",
                 probability: str = "votes"):
        self.C = C
        self.gamma = gamma
        self.kernel = kernel
        self.probability = probability
        super().__init__(feature_set, seed, class_weight, oversample)

    def _check_params(self):
        super()._check_params()
        if self.probability not in SVM_PROBABILITIES:
            raise ConfigError(f"Model 'svm': probability must be one of {', '.join(SVM_PROBABILITIES)}, "
                              f"not {self.probability!r}.")

    def _estimator(self, y):
        if self.probability == "votes":
            return VoteSVC(C=self.C, gamma=self.gamma, kernel=self.kernel, class_weight=self.class_weight,
                           random_state=self.seed, decision_function_shape="ovr")
        svc = SVC(C=self.C, gamma=self.gamma, kernel=self.kernel, class_weight=self.class_weight,
                  random_state=self.seed)
        n_splits = int(min(5, np.unique(y, return_counts=True)[1].min()))
        if n_splits < 2:
            raise ModelError("Model 'svm' with Platt probabilities needs at least two training clips of every "
                             "emotion to calibrate them.")
        cv = StratifiedKFold(n_splits, shuffle=True, random_state=self.seed)
        return CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False)


class LDAModel(SklearnModel):
    """Linear discriminant analysis with Ledoit-Wolf shrinkage of the shared covariance, on standardised
    utterance features: one linear projection that separates the emotions relative to the spread within them.
    With ``shrinkage="auto"`` it needs no tuning, and it generalised to unseen speakers better than the RBF SVM
    on the ``expressive`` set (see the README's table of techniques)."""

    name = "lda"

    def __init__(self, feature_set: str = "expressive", seed: int = 0, class_weight: str | None = None,
                 oversample: bool = False, shrinkage: str | float = "auto"):
        super().__init__(feature_set, seed, class_weight, oversample)
        self.shrinkage = shrinkage

    def _check_params(self):
        super()._check_params()
        if self.class_weight is not None:
            raise ConfigError("Model 'lda' has no class weights; use oversample=True to balance the classes.")

    def _estimator(self, y):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage=self.shrinkage)

    def fit(self, X, y, progress=None):  # no sample_weight: scikit-learn's LDA takes none
        super().fit(X, y, progress)
        drop_covariance(self.pipeline_)
        return self


def drop_covariance(pipeline):
    """Forget the fitted LDA's (d, d) shared covariance: prediction needs only ``coef_`` and ``intercept_``, and
    on the expressive set the matrix alone is 11.6 MB of a saved model."""
    clf = pipeline.named_steps["clf"]
    if hasattr(clf, "covariance_"):
        del clf.covariance_
    return pipeline


__all__ = ["SklearnModel", "MajorityBaseline", "DecisionTreeModel", "RandomForestModel", "SVMModel", "LDAModel"]
