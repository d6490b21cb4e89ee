"""Shared fixtures. The shared RAVDESS folder is required: tests that use it fail (never skip) without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import streamlit_webrtc  # noqa: F401  loads aiortc first: TensorFlow imported before it kills the process, and
#                          the two test workers (make test: pytest -n 2) run the files in any order, a Keras
#                          model's test before the Demo page's in one process

REPO = Path(__file__).resolve().parents[1]
SHARED_RAVDESS = Path(os.environ.get("SER_SHARED_RAVDESS", REPO.parent / "shared" / "data" / "ravdess"))
SHARED_DATA = SHARED_RAVDESS.parent  # beside it: tess/ and emodb/ (the multi-corpus tests read a few clips of each)


@pytest.fixture(scope="session")
def shared_ravdess() -> Path:
    """The 960-clip RAVDESS folder beside the repo (CI has it). Missing it is a failure, not a skip."""
    if not (SHARED_RAVDESS / "Actor_01").is_dir():
        pytest.fail(f"shared RAVDESS data not found at {SHARED_RAVDESS} (set SER_SHARED_RAVDESS)")
    return SHARED_RAVDESS


@pytest.fixture(scope="session")
def shared_corpora(shared_ravdess) -> dict:
    """``{"ravdess": Path, "tess": Path, "emodb": Path}``: the shared corpora (CI has them). Missing is a failure."""
    out = {"ravdess": shared_ravdess, "tess": SHARED_DATA / "tess", "emodb": SHARED_DATA / "emodb"}
    for name, path in out.items():
        if not path.is_dir():
            pytest.fail(f"shared {name} data not found at {path}")
    return out


@pytest.fixture(scope="session", autouse=True)
def _data_roots(tmp_path_factory):
    """The app reads data only inside $SER_DATA_ROOTS: let it read the tests' temporary folders and the shared
    corpora (set for the whole session, so servers that browser tests start inherit it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_DATA_ROOTS", os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(SHARED_RAVDESS),
                                                     str(SHARED_DATA / "tess"), str(SHARED_DATA / "emodb")]))
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_models_in_home(tmp_path_factory):
    """Servers and workers that module fixtures start (before the per-test folder below is set) save and read
    the user's models here, never in the real home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_USER_MODELS_DIR", str(tmp_path_factory.mktemp("session-user-models")))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the feature cache, results store and the user's models of tests out of the user's home (each test
    starts with no models of its own: the Demo lists only what it saved)."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("SER_CACHE_DIR", str(base / "feature-cache"))
    monkeypatch.setenv("SER_RESULTS_DB", str(base / "results.sqlite"))
    monkeypatch.setenv("SER_USER_MODELS_DIR", str(tmp_path_factory.mktemp("user-models")))


@pytest.fixture(autouse=True)
def _streamlit_options_restored():
    """A public-mode AppTest sets Streamlit's options for the whole process (app_shared.PUBLIC_OPTIONS, e.g. error
    details "none"): every test ends with the options it started with."""
    from streamlit import config

    from app_shared import PUBLIC_OPTIONS

    saved = {k: config.get_option(k) for k in PUBLIC_OPTIONS}
    yield
    for k, v in saved.items():
        config.set_option(k, v)
