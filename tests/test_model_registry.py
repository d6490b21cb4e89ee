"""The model registry is the one source of every model's defaults: each class's constructor agrees with it."""
from __future__ import annotations

import inspect

import pytest

from ser_core.errors import ConfigError
from ser_core.models import MODEL_SPECS, create_model, get_spec, model_class


@pytest.mark.parametrize("name", list(MODEL_SPECS))
def test_every_class_constructor_agrees_with_its_registry_entry(name):
    spec = get_spec(name)
    signature = inspect.signature(model_class(name).__init__).parameters
    defaults = {k: p.default for k, p in signature.items() if k != "self"}
    assert defaults == spec.params, f"{spec.cls}.__init__ and the registry entry of '{name}' disagree"
    assert create_model(name).get_params() == spec.params  # what the CLI and the Train page build by default


def test_the_feature_set_of_a_default_model_is_the_registry_s():
    assert create_model("svm").feature_set == get_spec("svm").feature_set == "rich"
    assert create_model("fcnn_torch").feature_set == "rich"


def test_an_unknown_parameter_is_one_sentence_with_the_close_match():
    with pytest.raises(ConfigError, match=r"^Model 'svm' has no parameter 'c'\. Did you mean C\?"):
        create_model("svm", c=1.0)


def test_every_parameter_help_describes_a_parameter_a_model_has():
    from ser_core.models import PARAM_HELP

    every = {p for spec in MODEL_SPECS.values() for p in spec.params}
    assert PARAM_HELP and set(PARAM_HELP) <= every
    assert {"domain_adversarial", "mixup"} <= set(get_spec("fcnn_torch").params) & set(PARAM_HELP)
