"""What every page of the app shares: the data source (persisted in the session) and cached loaders.

Pages import from here; nothing here imports a deep-learning framework (models are loaded lazily, and
training runs in a worker process), so no page order can trigger the TensorFlow/aiortc crash.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parent
SAMPLES_DIR = REPO / "samples" / "ravdess"
DATA_DIR = REPO / "data"  # where downloads go
SOURCES = ("Bundled samples (16 RAVDESS clips)", "Local folder or CSV", "Download RAVDESS")


def init_session():
    st.session_state.setdefault("data_kind", SOURCES[0])
    st.session_state.setdefault("data_path", "")


def data_source_sidebar():
    """The data-source picker shown on every page; the choice persists across pages in the session."""
    init_session()
    with st.sidebar:
        st.subheader("Data source")
        kind = st.radio("Source", SOURCES, key="_data_kind_widget",
                        index=SOURCES.index(st.session_state["data_kind"]), label_visibility="collapsed")
        st.session_state["data_kind"] = kind
        if kind == SOURCES[1]:
            path = st.text_input("Folder (RAVDESS, TESS, CREMA-D, SAVEE, EmoDB, one folder per label) or CSV",
                                 value=st.session_state["data_path"], key="_data_path_widget",
                                 placeholder="/path/to/Audio_Speech_Actors_01-24")
            st.session_state["data_path"] = path.strip()
        elif kind == SOURCES[2]:
            target = DATA_DIR / "ravdess"
            if (target).is_dir():
                st.caption(f"Using {target}")
            elif st.button("Download RAVDESS speech (about 200 MB)"):
                _download_ravdess()


def _download_ravdess():
    from ser_core.download import download_dataset
    from ser_core.errors import SERError

    bar = st.sidebar.progress(0.0, text="Downloading RAVDESS")

    def progress(done, total):
        bar.progress(min(1.0, done / total) if total else 0.0, text=f"{done / 1e6:.0f} / {total / 1e6:.0f} MB")

    try:
        download_dataset("ravdess", DATA_DIR, progress=progress)
        st.sidebar.success("RAVDESS is ready.")
    except SERError as exc:
        st.sidebar.error(str(exc))


def data_root() -> Path | None:
    """The folder or CSV the user picked, or None when nothing usable is chosen."""
    init_session()
    kind = st.session_state["data_kind"]
    if kind == SOURCES[0]:
        return SAMPLES_DIR
    if kind == SOURCES[1]:
        p = st.session_state["data_path"]
        return Path(p).expanduser() if p else None
    target = DATA_DIR / "ravdess"
    return target if target.is_dir() else None


@st.cache_data(show_spinner="Reading the corpus...", max_entries=8)
def _load_manifest(root: str, mtime: float):
    from ser_core.corpora import load_corpus

    c = load_corpus(root)
    return c.name, c.manifest, c.skipped


def current_corpus():
    """``(name, manifest, skipped)`` of the chosen data, or stops the page with a plain explanation."""
    from ser_core.errors import SERError

    root = data_root()
    if root is None:
        st.info("Choose a data source in the sidebar: the bundled samples, a local corpus folder, or a download.")
        st.stop()
    if not root.exists():
        st.error(f"'{root}' does not exist. Enter the path of a corpus folder or a CSV file.")
        st.stop()
    try:
        return _load_manifest(str(root), root.stat().st_mtime)
    except SERError as exc:
        st.error(str(exc))
        st.stop()


@st.cache_resource(show_spinner="Loading models...")
def load_predictor(names: tuple[str, ...] | None = None, models_dir: str | None = None, _version: float = 0):
    """Shared, read-only loaded models (keyed by the names and the models folder's modification time)."""
    from ser_core.inference import Predictor

    return Predictor.from_dir(list(names) if names else None, models_dir)


def models_dir_version(models_dir: str | None = None) -> float:
    """Changes whenever a model is added or retrained, so cached predictors refresh at once."""
    from ser_core.saved import default_models_dir

    root = Path(models_dir) if models_dir else default_models_dir()
    if not root.is_dir():
        return 0.0
    return max([root.stat().st_mtime] + [p.stat().st_mtime for p in root.glob("*/card.json")])
