"""Explore: the corpus at a glance, one clip in detail, two clips side by side, the emotions compared."""
import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st
from plotly.subplots import make_subplots

from app_shared import (EMOTION_COLORS, clip_analysis, clip_summaries, current_corpus, emotion_order, local_only,
                        plain, plain_data, plain_options, projection_2d)
from ser_core.audio import envelope

IMBALANCE_RATIO = 1.5  # max/min clips per emotion above which the imbalance is called out
TSNE_MAX_POINTS = 800  # t-SNE cost grows faster than the number of clips: keep it to ~10 s
ANY = "(any)"
TEXT_COLUMNS = ["emotion", "speaker", "gender", "intensity", "statement", "clip"]  # the corpus's own words

local_only()
st.title("Explore the data")
name, manifest, skipped = current_corpus()
m = manifest.assign(clip=manifest["path"].map(lambda p: p.rsplit("/", 1)[-1]))
emotions = emotion_order(m["emotion"])
# Charts draw `shown`: Plotly renders HTML in labels and tooltips, so the corpus's words go through plain()
shown = m.assign(**{c: m[c].map(plain) for c in TEXT_COLUMNS})
shown_emotions = [plain(e) for e in emotions]
colors = {plain(e): EMOTION_COLORS.get(e, "#444") for e in emotions}


def bar(counts: pd.Series, title: str, color=None, **kw):
    fig = px.bar(counts.reset_index(), x=counts.index.name, y="clips", title=title, color=color, text_auto=True, **kw)
    fig.update_layout(height=330, margin=dict(t=50, b=10), showlegend=False)
    return fig


def clip_label(row) -> str:
    said = f' "{row.statement}"' if row.statement else ""
    return f"{row.clip} · {row.emotion} · speaker {row.speaker} ({row.gender}) · {row.intensity}{said}"


def clip_figure(a: dict, height: int = 760, f0_range=None, t_max=None, rms_max=None):
    """Waveform, log-mel, f0, spectral centroid and RMS of one clip on one shared time axis (``t_max``,
    ``f0_range`` and ``rms_max`` fix the axes so that two clips can be compared)."""
    import librosa

    fig = make_subplots(rows=5, cols=1, shared_xaxes=True, vertical_spacing=0.035,
                        row_heights=[0.16, 0.32, 0.18, 0.17, 0.17],
                        subplot_titles=("Waveform", "Log-mel spectrogram (dB)", "Pitch f0 (Hz, voiced frames)",
                                        "Spectral centroid (Hz)", "RMS energy"))
    t, v = envelope(a["y"], a["sr"])
    fig.add_scatter(x=t, y=v, mode="lines", line=dict(width=1, color="#1f77b4"), row=1, col=1)
    n_mels = a["mel"].shape[0]
    floor = float(a["mel"].max()) - 70  # 70 dB of dynamic range: quieter bins are background noise
    fig.add_heatmap(z=np.maximum(a["mel"], floor), x=a["times"], colorscale="Viridis", row=2, col=1,
                    colorbar=dict(title="dB", len=0.3, y=0.63, thickness=12),
                    hovertemplate="t=%{x:.2f} s<br>band %{y}<br>%{z:.0f} dB<extra></extra>")
    hz = librosa.mel_frequencies(n_mels + 2, fmin=0, fmax=a["sr"] / 2)[1:-1]
    ticks = [0, n_mels // 4, n_mels // 2, 3 * n_mels // 4, n_mels - 1]
    fig.update_yaxes(tickvals=ticks, ticktext=[f"{hz[i] / 1000:.1f}k" if hz[i] >= 1000 else f"{hz[i]:.0f}"
                                               for i in ticks], title_text="Hz", row=2, col=1)
    fig.add_scatter(x=a["times"], y=a["f0"], mode="lines", connectgaps=False, line=dict(color="#d62728", width=2),
                    row=3, col=1)
    centroid = np.where(a["rms"] >= 0.01 * a["rms"].max(), a["centroid"], np.nan)  # meaningless in silence
    fig.add_scatter(x=a["times"], y=centroid, mode="lines", line=dict(color="#2ca02c", width=1.5), row=4, col=1)
    fig.add_scatter(x=a["times"], y=a["rms"], mode="lines", fill="tozeroy", line=dict(color="#9467bd", width=1.5),
                    row=5, col=1)
    if f0_range is not None:
        fig.update_yaxes(range=f0_range, row=3, col=1)
    if rms_max is not None:
        fig.update_yaxes(range=[0, rms_max], row=5, col=1)
    if t_max is not None:
        fig.update_xaxes(range=[0, t_max])
    fig.update_xaxes(title_text="time (s)", row=5, col=1)
    fig.update_layout(height=height, showlegend=False, margin=dict(t=40, b=40, l=60, r=20), hovermode="x")
    fig.update_annotations(font_size=13, x=0, xanchor="left")
    return fig


def pick(frame: pd.DataFrame, key: str, **defaults):
    """Emotion and speaker filters, then one clip; returns its manifest row."""
    c1, c2 = st.columns(2)
    emo_opts, spk_opts = [ANY] + emotions, [ANY] + sorted(frame["speaker"].unique())
    emo = c1.selectbox("Emotion", emo_opts, key=f"{key}_emo", format_func=plain_options(),
                       index=emo_opts.index(defaults.get("emotion", ANY)) if defaults.get("emotion") in emo_opts else 0)
    spk = c2.selectbox("Speaker", spk_opts, key=f"{key}_spk", format_func=plain_options(),
                       index=spk_opts.index(defaults["speaker"]) if defaults.get("speaker") in spk_opts else 0)
    sel = frame[((frame["emotion"] == emo) | (emo == ANY)) & ((frame["speaker"] == spk) | (spk == ANY))]
    if sel.empty:
        st.info("No clip matches this emotion and speaker; change a filter.")
        return None
    rows = list(sel.itertuples())
    start = next((i for i, r in enumerate(rows) if r.path == defaults.get("path")), 0)
    return st.selectbox("Clip", rows, index=start, format_func=plain_options(clip_label), key=f"{key}_clip")


def default_pair(frame: pd.DataFrame):
    """Two clips to compare: the same sentence, actor and intensity, angry vs sad (else any two emotions)."""
    for a_emo, b_emo in [("angry", "sad"), *[(x, y) for x in emotions for y in emotions if x < y]]:
        pairs = frame[frame["emotion"] == a_emo].merge(frame[frame["emotion"] == b_emo],
                                                       on=["speaker", "statement", "intensity"], suffixes=("_a", "_b"))
        if not pairs.empty:
            return pairs.iloc[0]["path_a"], pairs.iloc[0]["path_b"]
    return frame["path"].iloc[0], frame["path"].iloc[min(1, len(frame) - 1)]


def show_clip(row, height=760, **axes):
    st.audio(row.path)
    st.plotly_chart(clip_figure(clip_analysis(row.path), height=height, **axes),
                    key=f"fig_{row.path}_{height}", config={"displaylogo": False})


overview, one_clip, compare, across = st.tabs(["Overview", "One clip", "Compare two clips", "Across emotions"],
                                              on_change="rerun", key="explore_tab")

if overview.open:
    with overview:
        c = st.columns(4)
        c[0].metric("Corpus", plain(name))
        c[1].metric("Clips", f"{len(m):,}")
        c[2].metric("Speakers", m["speaker"].nunique())
        c[3].metric("Audio", f"{m['duration_s'].sum() / 60:.1f} min")
        per_emotion = m["emotion"].value_counts().reindex(emotions).rename("clips").rename_axis("emotion")
        ratio = per_emotion.max() / per_emotion.min()
        if ratio >= IMBALANCE_RATIO:
            st.warning(f"The classes are imbalanced: '{plain(per_emotion.idxmax())}' has {per_emotion.max()} clips "
                       f"but '{plain(per_emotion.idxmin())}' only {per_emotion.min()} ({ratio:.1f} to 1). Judge "
                       "models by UAR (mean recall over emotions), not accuracy, and consider class weights or "
                       "oversampling when training.")
        else:
            st.success(f"The classes are balanced (largest to smallest {ratio:.1f} to 1).")
        left, right = st.columns(2)
        left.plotly_chart(bar(per_emotion.rename(plain), "Clips per emotion", color="emotion",
                              color_discrete_map=colors), key="per_emotion")
        spk = shown.groupby(["speaker", "gender"]).size().rename("clips").reset_index()
        fig = px.bar(spk, x="speaker", y="clips", color="gender", title="Clips per speaker",
                     color_discrete_map={"male": "#1f77b4", "female": "#e377c2", "unknown": "#7f7f7f"})
        fig.update_layout(height=330, margin=dict(t=50, b=10), xaxis_type="category")
        right.plotly_chart(fig, key="per_speaker")
        left, right = st.columns(2)
        gi = shown.groupby(["gender", "intensity"]).size().rename("clips").reset_index()
        fig = px.bar(gi, x="gender", y="clips", color="intensity", barmode="group", text_auto=True,
                     title="Clips per gender and intensity")
        fig.update_layout(height=330, margin=dict(t=50, b=10))
        left.plotly_chart(fig, key="gender_intensity")
        fig = px.histogram(m, x="duration_s", nbins=40, title="Clip durations (before trimming)",
                           labels={"duration_s": "duration (s)"})
        fig.update_layout(height=330, margin=dict(t=50, b=10), yaxis_title="clips", bargap=0.05)
        right.plotly_chart(fig, key="durations")
        st.caption(f"Durations: median {m['duration_s'].median():.2f} s, shortest {m['duration_s'].min():.2f} s, "
                   f"longest {m['duration_s'].max():.2f} s.")
        if skipped:
            with st.expander(f"{len(skipped)} files were skipped"):
                st.dataframe(plain_data(pd.DataFrame(skipped, columns=["path", "reason"])), hide_index=True)

if one_clip.open:
    with one_clip:
        row = pick(m, "one")
        if row is not None:
            show_clip(row)
            st.caption("Pitch is a YIN track (NaN where unvoiced); the spectral centroid is the spectrum's "
                       "centre of mass, higher for bright or tense voices; RMS is frame energy after peak "
                       "normalisation. All tracks use 32 ms frames every 10 ms.")

if compare.open:
    with compare:
        a_path, b_path = default_pair(m)
        st.caption("By default: the same sentence by the same actor at the same intensity, angry against sad.")
        cols = st.columns(2)
        picked = []
        for col, path, key in ((cols[0], a_path, "cmp_a"), (cols[1], b_path, "cmp_b")):
            with col:
                d = m.loc[m["path"] == path].iloc[0]
                picked.append(pick(m, key, emotion=d["emotion"], speaker=d["speaker"], path=path))
        if all(r is not None for r in picked):
            a = [clip_analysis(r.path) for r in picked]
            f0 = np.concatenate([x["f0"] for x in a])
            axes = dict(f0_range=[0.9 * np.nanmin(f0), 1.1 * np.nanmax(f0)] if np.isfinite(f0).any() else None,
                        t_max=max(len(x["y"]) / x["sr"] for x in a), rms_max=1.05 * max(x["rms"].max() for x in a))
            for col, r in zip(cols, picked):
                with col:
                    show_clip(r, height=680, **axes)
            st.dataframe(plain_data(pd.DataFrame({
                "clip": [r.clip for r in picked], "emotion": [r.emotion for r in picked],
                "duration (s)": [len(x["y"]) / x["sr"] for x in a],
                "mean f0 (Hz)": [float(np.nanmean(x["f0"])) if np.isfinite(x["f0"]).any() else None for x in a],
                "mean centroid (Hz)": [float(x["centroid"][x["rms"] >= 0.01 * x["rms"].max()].mean()) for x in a],
                "mean RMS": [float(x["rms"].mean()) for x in a]}).round(3)), hide_index=True)

if across.open:
    with across:
        from ser_core.features import list_feature_sets

        sets = list_feature_sets("utterance")
        c1, c2, c3, c4 = st.columns([3, 2, 3, 2])
        fs_name = c1.selectbox("Utterance features", sets, index=sets.index("prosody") if "prosody" in sets else 0,
                               help="prosody is cheap (pitch, voicing, energy, centroid); the others take longer "
                                    "the first time and are cached afterwards.")
        method = c2.radio("Projection", ["PCA", "t-SNE"], horizontal=True)
        colour = c3.radio("Colour by", ["emotion", "speaker", "gender"], horizontal=True)
        shape = c4.radio("Distribution plot", ["box", "violin"], horizontal=True)

        paths = tuple(m["path"])
        bar_ = st.progress(0.0, text=f"Computing '{fs_name}' features")

        def progress(done, total):
            bar_.progress(done / max(total, 1), text=f"Computing '{fs_name}' features: {done}/{total} clips")

        from ser_core.errors import SERError

        try:
            pros = clip_summaries(paths, "prosody", progress=progress)
            feats = pros if fs_name == "prosody" else clip_summaries(paths, fs_name, progress=progress)
        except SERError as exc:
            bar_.empty()
            st.error(plain(exc))
            st.stop()
        bar_.empty()

        per_clip = pd.DataFrame({"emotion": shown["emotion"], "speaker": shown["speaker"], "gender": shown["gender"],
                                 "clip": shown["clip"], "mean pitch (Hz)": pros["pitch_hz"],
                                 "mean RMS level (dB, peak-normalised)": pros["rms_mean"],
                                 "mean spectral centroid (Hz)": pros["centroid_mean"],
                                 "duration (s)": m["duration_s"]})
        st.subheader("Per-clip measures by emotion")
        metrics = ["mean pitch (Hz)", "mean RMS level (dB, peak-normalised)", "mean spectral centroid (Hz)", "duration (s)"]
        plot = px.violin if shape == "violin" else px.box
        points = "all" if m["emotion"].value_counts().max() <= 30 else "outliers"  # few clips: show each one
        for pair in (metrics[:2], metrics[2:]):
            cols = st.columns(2)
            for col, metric in zip(cols, pair):
                kw = dict(box=True) if shape == "violin" else {}
                fig = plot(per_clip, x="emotion", y=metric, color="emotion", color_discrete_map=colors,
                           category_orders={"emotion": shown_emotions}, points=points, hover_data=["clip"], **kw)
                fig.update_layout(height=340, showlegend=False, margin=dict(t=30, b=10), title=metric)
                col.plotly_chart(fig, key=f"dist_{metric}")

        st.subheader(f"2-D {method} of '{fs_name}' utterance features")
        with st.spinner(f"Running {method} on {min(len(m), TSNE_MAX_POINTS) if method == 't-SNE' else len(m)} "
                        "clips..."):
            idx, xy, explained = projection_2d(feats.to_numpy(), method, TSNE_MAX_POINTS)
        pts = per_clip.iloc[idx].assign(x=xy[:, 0], y=xy[:, 1])
        fig = px.scatter(pts, x="x", y="y", color=colour, hover_data=["clip", "emotion", "speaker"],
                         color_discrete_map=colors if colour == "emotion" else None,
                         category_orders={"emotion": shown_emotions},
                         labels={"x": "PC 1" if method == "PCA" else "t-SNE 1",
                                 "y": "PC 2" if method == "PCA" else "t-SNE 2"})
        fig.update_traces(marker=dict(size=7, opacity=0.8))
        fig.update_layout(height=520, margin=dict(t=20, b=10))
        st.plotly_chart(fig, key="projection")
        note = (f"PC 1 and PC 2 explain {explained[0]:.0%} and {explained[1]:.0%} of the variance."
                if explained is not None else
                f"t-SNE on {len(idx)} of {len(m)} clips (capped at {TSNE_MAX_POINTS}); distances between "
                "far-apart groups are not meaningful.")
        st.caption(f"Features standardised per dimension. {note} Colour by speaker: where clips cluster by "
                   "speaker more than by emotion, a model can learn voices instead of emotions, which is why "
                   "evaluation keeps each speaker's clips in one fold.")
