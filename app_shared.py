"""What every page of the app shares: the data source (persisted in the session) and cached loaders.

Pages import from here; nothing here imports a deep-learning framework (models are loaded lazily, and
training runs in a worker process), so no page order can trigger the TensorFlow/aiortc crash.
"""
from __future__ import annotations

import ctypes
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from ser_core.roots import configured_roots, resolve_in_roots

REPO = Path(__file__).resolve().parent
SAMPLES_DIR = REPO / "samples" / "ravdess"
DATA_DIR = REPO / "data"  # where downloads go
SOURCES = ("Bundled samples (240 RAVDESS clips)", "Local folder or CSV", "Download RAVDESS")


_SOURCE_KEYS = ("samples", "folder", "download")  # the data source in the URL (?data=folder&path=...)
PUBLIC_ENV = "SER_PUBLIC"


def public_mode() -> bool:
    """``SER_PUBLIC=1``: a demo open to anyone. Only the Demo and Leaderboard pages; no data source (local
    folders, downloads), no field that names weights to fetch. Read at every call (tests change it)."""
    return os.environ.get(PUBLIC_ENV, "").strip() not in ("", "0")


# Streamlit's settings on a public demo, for the whole server process (the entry script sets them):
PUBLIC_OPTIONS = {"client.toolbarMode": "minimal",  # no developer menu: no Rerun, Clear cache, Deploy or settings
                  "client.disableDataExport": True,  # no "Download as CSV" in a table's toolbar, no copying cells
                  "client.showErrorDetails": "none"}  # an unexpected error without its traceback (server paths)


def apply_public_options() -> bool:
    """In public mode, set ``PUBLIC_OPTIONS``; True when one changed. The browser takes these settings at the start
    of a script run, so the entry script then reruns before drawing anything (only the server's first run)."""
    if not public_mode():
        return False
    changed = {k: v for k, v in PUBLIC_OPTIONS.items() if st.get_option(k) != v}
    for k, v in changed.items():
        st.set_option(k, v)
    return bool(changed)


_QUOTED_PATH = re.compile(r"'((?:/|[A-Za-z]:[\\/])[^']*)'")


def _last_part(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def public_text(value):
    """On a public demo, ``value`` (a message, or a run's configuration: strings in dicts and lists) without the
    server's paths: a string that is an absolute path becomes its last part (a saved model's folder name, a weights
    file's name), and so does each quoted one in a message ("'/srv/models/x' lacks ..." -> "'x' lacks ...").
    Unchanged elsewhere."""
    if not public_mode():
        return value
    if isinstance(value, dict):
        return {k: public_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_text(v) for v in value]
    if not isinstance(value, str):
        return value
    if os.path.isabs(value) or re.match(r"[A-Za-z]:[\\/]", value):
        return _last_part(value)
    return _QUOTED_PATH.sub(lambda m: f"'{_last_part(m.group(1))}'", value)


def chart(fig, key: str, where=st, **config):
    """Draw the Plotly figure ``fig`` (``where.plotly_chart``: a column, the page) on a page a public demo shows:
    there without the mode bar's "Download plot as a png" (a public demo exports nothing)."""
    if public_mode():
        config["modeBarButtonsToRemove"] = ["toImage"]
    where.plotly_chart(fig, key=key, config=config)


def local_only():
    """Stop a page that reads local data or trains (Explore, Train) on a public server. The entry script leaves
    them out of the navigation and answers a deep link to them (``/train``) with this; the pages call it first
    too, so that a page script run by itself refuses as well."""
    if public_mode():
        st.error("This page is not available on this public demo; use the Demo and Leaderboard pages.")
        st.stop()


_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")  # every ASCII punctuation character
_BREAKS = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]")  # line breaks and tabs: shown as a space
# Characters that are never drawn but change what is drawn around them: the C0 and C1 controls (NUL, ESC, CSI...)
# and the bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E/F, U+202A-202E, U+2066-2069:
# "\u202egnp.exe" is drawn as "exe.png"). Each is shown as a visible escape instead, as Python writes it.
_HIDDEN = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Where GFM would turn bare text into a link after Markdown is parsed (so no escape can stop it): "http://",
# "www." and e-mail addresses; an invisible word joiner (U+2060) there breaks the pattern.
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def _visible(ch: str) -> str:
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def plain(text, markdown: bool = True) -> str:
    """The one way the app shows ``text`` a user controls (a path, file name, label, speaker or model name, CSV
    content, an error that quotes one): as typed, never as markup, nothing hidden. Line breaks and tabs become
    spaces; controls and bidirectional formatting characters become visible escapes (``\\u202e``, ``\\x00``).

    ``markdown=True`` (the default): for what Streamlit renders as Markdown (messages, captions, metric labels,
    values and deltas, radio options, widget labels, toasts) and for Plotly's labels and tooltips. Each ASCII
    punctuation character becomes a numeric character reference, which both show as the character itself but
    which cannot open a link, image, HTML tag, emphasis, formula or colour directive; a word joiner breaks bare
    URLs and e-mail addresses, which GFM links otherwise. Not inside backticks (a code span shows references as
    typed). ``markdown=False``: for what Streamlit shows as plain text (selectbox and multiselect options,
    dataframe cells, JSON, code blocks): only the breaks and controls are replaced (see ``plain_data``)."""
    text = _HIDDEN.sub(lambda m: _visible(m.group()), _BREAKS.sub(" ", str(text)))
    if not markdown:
        return text
    return _PUNCTUATION.sub(lambda m: f"&#{ord(m.group())};", _AUTOLINK.sub(WORD_JOINER, text))


def plain_data(value):
    """``value`` for a widget that shows text as it is (``st.dataframe``, ``st.json``, ``st.code``): every string
    in it, a DataFrame's cells, column names and index included, through ``plain(s, markdown=False)``; numbers
    and other values unchanged."""
    import pandas as pd

    if isinstance(value, str):
        return plain(value, markdown=False)
    if isinstance(value, dict):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, pd.DataFrame):
        out = value.map(lambda v: plain(v, markdown=False) if isinstance(v, str) else v)
        out.columns = [plain_data(c) for c in out.columns]
        out.index = out.index.map(plain_data)
        return out
    return value


def plain_options(label=str):
    """A selectbox or multiselect ``format_func`` that shows ``label(option)`` by the same rule (``plain``, as
    plain text: these widgets draw their options as text)."""
    return lambda option: plain(label(option), markdown=False)


def init_session():
    """Session defaults, taken from the URL's query parameters when present so a browser reload (a new
    session) keeps the data source the user picked (public mode: always the bundled samples)."""
    if "data_kind" not in st.session_state:
        q = {} if public_mode() else st.query_params
        key = q.get("data", "samples")
        st.session_state["data_kind"] = SOURCES[_SOURCE_KEYS.index(key)] if key in _SOURCE_KEYS else SOURCES[0]
        st.session_state["data_path"] = q.get("path", "")


def data_source_sidebar():
    """The data-source picker shown on every page (none in public mode); the choice persists across pages in the
    session."""
    init_session()
    if public_mode():
        return
    with st.sidebar:
        st.subheader("Data source")
        kind = st.radio("Source", SOURCES, key="_data_kind_widget",
                        index=SOURCES.index(st.session_state["data_kind"]), label_visibility="collapsed")
        st.session_state["data_kind"] = kind
        if kind == SOURCES[1]:
            path = st.text_input("Folder (RAVDESS, TESS, CREMA-D, SAVEE, EmoDB, one folder per label) or CSV",
                                 value=st.session_state["data_path"], key="_data_path_widget",
                                 placeholder="/path/to/Audio_Speech_Actors_01-24",
                                 help="This server reads data inside: " + ", ".join(
                                     plain(r) for r in configured_roots()) + " (more with SER_DATA_ROOTS).")
            st.session_state["data_path"] = path.strip()
        elif kind == SOURCES[2]:
            target = DATA_DIR / "ravdess"
            if (target).is_dir():
                st.caption(f"Using {plain(target)}")
            elif st.button("Download RAVDESS speech (about 200 MB)"):
                _download_ravdess()
    params = {"data": _SOURCE_KEYS[SOURCES.index(kind)]}
    if kind == SOURCES[1] and st.session_state["data_path"]:
        params["path"] = st.session_state["data_path"]
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


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
        st.sidebar.error(plain(exc))


def data_root() -> Path | None:
    """The folder or CSV the user picked, or None when nothing usable is chosen."""
    init_session()
    kind = st.session_state["data_kind"]
    if kind == SOURCES[0] or public_mode():
        return SAMPLES_DIR
    if kind == SOURCES[1]:
        p = st.session_state["data_path"]
        return Path(p) if p else None  # as typed: ser_core.roots expands it (a refusal quotes ~, not the home)
    target = DATA_DIR / "ravdess"
    return target if target.is_dir() else None


@st.cache_data(show_spinner="Reading the corpus...", max_entries=8)
def _load_manifest(root: str, mtime: float, roots: tuple[str, ...]):
    from ser_core.corpora import load_corpus

    c = load_corpus(root, roots=[Path(r) for r in roots])
    return c.name, c.manifest, c.skipped


def corpus_at(path) -> tuple:
    """``(name, manifest, skipped)`` of the corpus folder or CSV at ``path``, read once per change (cached). Only
    data inside the configured roots (``ser_core.roots``) is read; raises the ``SERError`` to show otherwise."""
    roots = configured_roots()
    path = resolve_in_roots(path, roots)
    return _load_manifest(str(path), path.stat().st_mtime if path.exists() else 0.0, tuple(map(str, roots)))


def current_corpus():
    """``(name, manifest, skipped)`` of the chosen data, or stops the page with a plain explanation (anything
    outside the configured roots gets the one refusal sentence)."""
    from ser_core.errors import SERError

    root = data_root()
    if root is None:
        st.info("Choose a data source in the sidebar: the bundled samples, a local corpus folder, or a download.")
        st.stop()
    try:
        return corpus_at(root)
    except SERError as exc:
        st.error(plain(exc))
        st.stop()


@st.cache_resource(show_spinner="Loading models...")
def load_predictor(names: tuple[str, ...] | None = None, models_dir: str | None = None, version: float = 0):
    """Shared, read-only loaded models, keyed by the names and ``version`` (pass ``models_dir_version()``:
    an underscore name would be left out of the cache key, and retrained models would never reload). Warmed up
    here, behind the spinner, so the first answer (a live microphone's above all) comes as fast as the rest."""
    from ser_core.inference import Predictor

    return Predictor.from_dir(list(names) if names else None, models_dir).warm_up()


def models_dir_version(models_dir: str | None = None) -> float:
    """Changes whenever a model is added, retrained or deleted (in ``models_dir``, else in the shipped models
    folder or yours), so cached predictors refresh at once."""
    from ser_core.saved import model_roots

    stamps = [0.0]
    for _, root in model_roots(models_dir):
        if root.is_dir():
            stamps += [root.stat().st_mtime] + [p.stat().st_mtime for p in root.glob("*/card.json")]
    return max(stamps)


# -- shared by the Explore and Demo pages ------------------------------------------------------------------
# One colour per emotion on every chart (plotly's qualitative palettes, emotions in taxonomy order).
EMOTION_COLORS = {"neutral": "#7f7f7f", "calm": "#17becf", "happy": "#f2b701", "sad": "#1f77b4",
                  "angry": "#d62728", "fearful": "#9467bd", "disgust": "#2ca02c", "surprised": "#ff7f0e",
                  "boredom": "#8c564b", "contempt": "#e377c2"}
ANALYSES_ENV = "SER_MAX_ANALYSES"  # uploads the server analyses at once (default 1: up to ~300 MB each at 2 min)
_ANALYSIS_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get(ANALYSES_ENV) or 1)))  # process-wide
WAITING = "Waiting for another user's analysis…"
BUSY_WAIT_S = 120.0  # after this long in the queue the page gives up and asks the user to try again


def upload_limit_mb() -> int:
    """The server's upload limit in MB: ``server.maxUploadSize`` (.streamlit/config.toml: 50, two minutes of
    48 kHz stereo even as 32-bit float). Streamlit refuses larger uploads before reading them; the Demo page
    refuses them too when the limit is bypassed."""
    return int(st.get_option("server.maxUploadSize"))


@contextmanager
def analysis_slot():
    """Hold one of the server's analysis slots (``SER_MAX_ANALYSES``) for the block: heavy work on uploads
    (decoding, features, models) queues here, process-wide, with the page saying ``WAITING``; after
    ``BUSY_WAIT_S`` in the queue the page stops with a sentence. The memory the work freed goes back to the
    system when it ends."""
    if not _ANALYSIS_SLOTS.acquire(blocking=False):
        with st.spinner(WAITING):
            if not _ANALYSIS_SLOTS.acquire(timeout=BUSY_WAIT_S):
                st.warning("The server is busy with other users' analyses; try again in a minute.")
                st.stop()
    try:
        yield
    finally:
        _ANALYSIS_SLOTS.release()
        _return_freed_memory()


@contextmanager
def live_slot(wait_s: float = 0.5):
    """An analysis slot for work that cannot queue (a live microphone's next judgement): yields True while
    holding one, or False when none frees within ``wait_s`` (the page says the server is busy and goes on
    listening)."""
    got = _ANALYSIS_SLOTS.acquire(timeout=wait_s)
    try:
        yield got
    finally:
        if got:
            _ANALYSIS_SLOTS.release()


def _return_freed_memory():
    """Give freed memory back to the system: glibc keeps freed blocks in its per-thread arenas (a few times the
    size of an upload or of an analysis's arrays) and returns them only when asked."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def drop_uploads(files, round_key: str, message: str = ""):
    """Drop the server's copy of the uploaded or recorded ``files``' bytes (Streamlit keeps them until the browser
    removes the files or the session ends), bump the session counter ``round_key`` that the page puts in its input
    widgets' keys so they come back empty, and rerun; the page then shows ``pop_refusal(round_key)`` once:
    ``message``, why the files (or some of them) were refused, or nothing."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx, ids = get_script_run_ctx(), _file_ids(list(files))
    for file_id in ids if ctx is not None else ():
        ctx.uploaded_file_mgr.remove_file(ctx.session_id, file_id)
    # and the widget values that hold them: Streamlit drops a widget's state only after a run that ends without
    # st.stop(), and a page with nothing uploaded stops early (the Demo does), so the bytes would stay referenced
    for key in [k for k in st.session_state if _file_ids(st.session_state[k]) & ids]:
        del st.session_state[key]
    st.session_state["_dropped_" + round_key] = message
    st.session_state[round_key] = st.session_state.get(round_key, 0) + 1
    st.rerun()


def _file_ids(value) -> set:
    """The ids of the uploaded files in ``value`` (a widget's value: a file, a list of them, anything else)."""
    return {f.file_id for f in (value if isinstance(value, list) else [value]) if getattr(f, "file_id", None)}


def pop_refusal(round_key: str) -> str | None:
    """The message of the files ``drop_uploads(..., round_key)`` just dropped, once, or None (by now their bytes
    are freed, and the memory goes back to the system)."""
    message = st.session_state.pop("_dropped_" + round_key, None)
    if message is not None:
        _return_freed_memory()
    return message or None


def emotion_order(labels) -> list[str]:
    """Labels in taxonomy order (neutral, calm, happy, ...), unknown ones sorted after."""
    order = list(EMOTION_COLORS)
    return sorted(set(labels), key=lambda l: (order.index(l) if l in order else len(order), l))


@st.cache_data(max_entries=64, show_spinner=False)
def clip_analysis(path: str) -> dict:
    """One clip for plotting: the whole signal ``y`` (n,) at 16 kHz (peak-normalised, not trimmed), its
    64-band log-mel ``mel`` (64, t) in dB and the frame tracks of ``ser_core.features.frame_features``
    (``times``, ``f0``, ``rms``, ``centroid``, ...; each (t,), 10 ms hop, same frames as ``mel``)."""
    from ser_core.audio import load_audio
    from ser_core.features import frame_features, log_mel

    y = load_audio(path, trim=False, normalize="peak")
    return {"y": y, "sr": 16000, "mel": log_mel(y=y, sr=16000, n_mels=64), **frame_features(y, 16000)}


@st.cache_resource
def _summaries_memo() -> dict:
    """Process-wide memo of :func:`clip_summaries` (st.cache_data cannot replay a progress bar made outside)."""
    return {}


def clip_summaries(paths: tuple[str, ...], fs_name: str = "prosody", progress=None):
    """Per-clip utterance features of ``paths`` as a DataFrame (columns = ``fs.feature_names()``), memoised in
    the process and computed through the on-disk feature cache; ``progress(done, total)`` is called while
    computing. For "prosody" a ``pitch_hz`` column is added (mean voiced f0, NaN when no frame was voiced)."""
    import hashlib

    import numpy as np
    import pandas as pd
    from ser_core.features import compute_files, get_feature_set

    fs = get_feature_set(fs_name)
    memo = _summaries_memo()
    key = (fs.key(), hashlib.sha1("\n".join(paths).encode()).hexdigest())
    if key not in memo:
        X = compute_files(list(paths), fs, progress=progress or False)
        df = pd.DataFrame(X, columns=fs.feature_names())
        if "f0_mean" in df:  # semitones re 55 Hz over voiced frames; all-zero functionals: no voiced frame
            unvoiced = (df["f0_mean"] == 0) & (df["f0_std"] == 0)
            df["pitch_hz"] = np.where(unvoiced, np.nan, 55.0 * 2 ** (df["f0_mean"] / 12))
        while len(memo) >= 8:
            memo.pop(next(iter(memo)))
        memo[key] = df
    return memo[key]


@st.cache_data(max_entries=16, show_spinner=False)
def projection_2d(X, method: str = "PCA", max_points: int = 1000, seed: int = 0):
    """Standardise ``X`` (n, d) and project it to 2-D. t-SNE runs on at most ``max_points`` rows drawn at
    random (it is quadratic in n). Returns ``(row_indices (m,), coords (m, 2), explained or None)``."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    X = np.nan_to_num(np.asarray(X, dtype=np.float64))
    idx = np.arange(len(X))
    if method == "t-SNE" and len(X) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(X), max_points, replace=False))
    Z = StandardScaler().fit_transform(X[idx])
    if method == "PCA":
        pca = PCA(n_components=2, random_state=seed).fit(Z)
        return idx, pca.transform(Z), pca.explained_variance_ratio_
    perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3)))
    # 500 iterations (sklearn's default is 1000) halve the wait and rarely change the picture
    return idx, TSNE(2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed).fit_transform(Z), None


def trained_model_cards(models_dir: str | None = None) -> list[dict]:
    """Cards of the saved models (``ser_core.saved.list_trained``: shipped, then yours, each with its ``source``),
    each with ``uar`` (CV mean or None)."""
    from ser_core.saved import list_trained

    cards = list_trained(models_dir)
    for c in cards:
        c["uar"] = (c.get("cv", {}).get("metrics", {}).get("uar") or {}).get("mean")
    return cards


# -- training jobs (Train page) ------------------------------------------------------------------------------
def job_executor():
    """The executor of training jobs (files under $SER_JOBS_DIR; each job runs in its own worker process, its folds
    there or on the Ray cluster that $SER_EXECUTOR and $SER_RAY_ADDRESS choose)."""
    from ser_core.jobs import make_executor

    return make_executor()


def sweep_figure(trials, height: int = 320):
    """UAR per trial of a sweep (``trials``: rows with ``trial``, ``uar_mean``, ``uar_std``; the Train page's
    live table or the Leaderboard's stored trials): each trial's mean ± std over the folds, and the best so far."""
    import plotly.graph_objects as go

    done = trials.dropna(subset=["uar_mean"]).sort_values("trial")
    fig = go.Figure()
    fig.add_scatter(x=done["trial"], y=done["uar_mean"] * 100, mode="markers", name="trial",
                    error_y=dict(type="data", array=done["uar_std"].fillna(0) * 100, thickness=1),
                    hovertemplate="trial %{x}<br>UAR %{y:.1f} %<extra></extra>")
    fig.add_scatter(x=done["trial"], y=done["uar_mean"].cummax() * 100, mode="lines", name="best so far",
                    line=dict(shape="hv", dash="dot"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title="UAR per trial (%)",
                      xaxis_title="trial", yaxis_title="UAR (%, mean ± std over folds)", xaxis_dtick=1)
    return fig
