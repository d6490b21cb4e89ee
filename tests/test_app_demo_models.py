"""The Demo lists the shipped models and yours in two groups, and deletes one of yours, never a shipped one
(AppTest; the shipped folder is a temporary $SER_MODELS_DIR)."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ser_core.saved import save_trained, user_model_path, user_models_dir
from test_user_models import _fitted, _hashes, shipped  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # loads two models into a Streamlit script run
def test_demo_groups_shipped_and_your_models_and_deletes_yours(shipped):
    mine = save_trained(_fitted("sad"), user_model_path("majority", "samples", 7), replace=False).name
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.switch_page("app_pages/demo.py").run()
    assert not at.exception, at.exception
    groups = {m.label: m for m in at.multiselect}
    assert list(groups) == ["Shipped models", "Your models"]
    assert (groups["Shipped models"].options, groups["Your models"].options) == (["svm (no CV score)"],
                                                                                 [f"{mine} (no CV score)"])
    assert groups["Shipped models"].value == ["svm"] and groups["Your models"].value == [mine]
    assert at.selectbox(key="demo_delete_pick").options == [mine]  # shipped models are not offered

    before = _hashes(shipped)
    at.button(key="demo_delete").click().run()
    assert not at.exception, at.exception
    assert not (user_models_dir() / mine).exists() and _hashes(shipped) == before
    assert [m.label for m in at.multiselect] == ["Shipped models"]
    assert any("Your models**: none yet" in c.value for c in at.caption)
