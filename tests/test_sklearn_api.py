"""Every registry model is a scikit-learn citizen: ``get_params(deep=...)`` / ``set_params`` as scikit-learn
defines them, so ``sklearn.base.clone``, ``GridSearchCV`` and pipelines work on it."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ser_core.errors import ModelError
from ser_core.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_registry_model_clones_with_its_parameters(name):
    model = create_model(name, seed=3)
    copy = clone(model)  # scikit-learn checks that the constructor keeps every parameter as given
    assert type(copy) is type(model) and copy is not model and is_classifier(copy)
    assert copy.get_params(deep=False) == model.get_params(deep=False) == model.get_params()
    assert copy.get_params()["seed"] == 3
    key = next(k for k in model.get_params() if k not in ("feature_set", "seed"))
    with pytest.raises(ModelError, match="no parameter 'not_a_parameter'"):
        model.set_params(not_a_parameter=1)
    assert model.set_params(**{key: model.get_params()[key]}) is model


def _utterances(n_per_class=12, d=6, seed=0):
    """Three emotions, each a shifted cloud: a search has something to find."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["angry", "neutral", "sad"], n_per_class)
    X = rng.normal(size=(len(labels), d)) + np.repeat(np.eye(3, d) * 2.5, n_per_class, axis=0)
    return X.astype(np.float32), labels


@pytest.mark.parametrize("name,grid", [
    ("majority", {"class_weight": [None, "balanced"]}),
    ("lda", {"shrinkage": [None, 0.5]}),
    ("svm", {"C": [0.1, 10.0]}),
    ("decision_tree", {"max_depth": [1, 4]}),
    ("random_forest", {"n_estimators": [5, 20]}),
    pytest.param("fcnn_torch", {"epochs": [2, 8]}, marks=pytest.mark.slow),
])
def test_grid_search_over_one_parameter(name, grid):
    X, y = _utterances()
    search = GridSearchCV(create_model(name), grid, cv=StratifiedKFold(3, shuffle=True, random_state=0)).fit(X, y)
    assert set(search.best_params_) == set(grid) and search.best_params_[next(iter(grid))] in next(iter(grid.values()))
    assert len(search.cv_results_["mean_test_score"]) == len(next(iter(grid.values())))
    assert list(search.best_estimator_.classes_) == ["angry", "neutral", "sad"]
    if name != "majority":  # the score is UAR (balanced accuracy): well above chance (1/3) on these clouds
        assert search.best_score_ > 0.6, search.cv_results_["mean_test_score"]
    else:
        assert search.best_score_ == pytest.approx(1 / 3)


def test_a_model_in_a_pipeline_and_its_parameters_by_pipeline_name():
    X, y = _utterances()
    pipe = make_pipeline(StandardScaler(), create_model("svm"))
    assert pipe.get_params()["svmmodel__C"] == create_model("svm").C
    pipe.set_params(svmmodel__C=3.0).fit(X, y)
    assert pipe.named_steps["svmmodel"].C == 3.0 and pipe.score(X, y) > 0.8
    assert clone(pipe).get_params()["svmmodel__C"] == 3.0
