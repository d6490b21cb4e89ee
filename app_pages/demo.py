"""Demo: upload, record or stream speech; every selected model's prediction side by side, plus the ensemble."""
import streamlit_webrtc  # noqa: F401  (imports aiortc; it must load before TensorFlow, i.e. before any model)

import copy
import hashlib
import io
import queue
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_shared import (EMOTION_COLORS, analysis_slot, chart, drop_uploads, emotion_order, live_slot, load_predictor,
                        models_dir_version, plain, plain_data, plain_options, pop_refusal, public_mode, public_text,
                        trained_model_cards, upload_limit_mb)
from ser_core.audio import envelope
from ser_core.ensemble import ENSEMBLE
from ser_core.errors import AudioTooLongError, SERError
from ser_core.export import to_csv
from ser_core.inference import MAX_RECORDING_S, TIMELINE_AFTER_S, analyse_audio, describe_prediction
from ser_core.live import LiveStream
from ser_core.saved import SHIPPED, YOURS, delete_user_model, shipped_models_dir, user_models_dir
from ser_core.segments import segment_table
from ser_core.speech import NOT_SPEECH
from ser_core.taxonomy import LEVEL_WORDS, dimension_reading

UPLOAD_TYPES = ["wav", "flac", "mp3", "ogg", "m4a", "webm"]
MODES = ["Upload a file", "Record", "Live microphone"]
CALIBRATION_MIN = 5  # clips of the user's voice before speaker-adaptive models use them (SpeakerNormalizer)
CALIBRATION_MAX = 20  # clips of one voice a session keeps (20 calibrate best: bench_voice_calibration.py); the files of
# an upload beyond them are dropped unread, so a session holds at most 20 decoded clips (16 kHz, 120 s: 7.7 MB each)
CALIB_ROUND = "calib_round"  # session counter in the calibration widgets' keys: bumped when their files are taken in
INPUT_ROUND = "demo_input_round"  # session counter in the input widgets' keys: bumped by a refusal to empty them

st.title("Try the models")
cards = trained_model_cards()
if not cards and public_mode():  # no server paths, no training on a public demo
    st.info("This demo has no trained models yet; come back later.")
    st.stop()
if not cards:
    st.info(f"No trained models in {plain(shipped_models_dir())} (shipped) or {plain(user_models_dir())} (yours) "
            "yet. Train some on the **Train** page (the bundled samples will do), or from a terminal: `python -m "
            "ser_core train --data samples/ravdess --models svm,random_forest` (saved as yours). Then reload "
            "this page.")
    st.stop()

uar = {c["name"]: c["uar"] for c in cards}
adaptive = {c["name"] for c in cards if c.get("speaker_norm")}
adapts = adaptive | {c["name"] for c in cards if c.get("adapted")}  # calibrating changes them: ensembles too
members = {c["name"]: c.get("members", []) for c in cards if c.get("model") == ENSEMBLE}  # saved ensembles


def model_label(n: str) -> str:
    label = f"{n} (CV UAR {uar[n]:.2f})" if uar.get(n) is not None else f"{n} (no CV score)"
    return label + (" (speaker-adaptive)" if n in adaptive else "") + \
        (f" (ensemble of {len(members[n])} models)" if n in members else "")


def group(source: str) -> list[str]:
    """The names of the shipped models or of yours, a saved ensemble first."""
    return sorted((c["name"] for c in cards if c["source"] == source), key=lambda n: n not in members)


shipped, yours = group(SHIPPED), group(YOURS)
left, right = st.columns(2)
chosen = left.multiselect("Shipped models", shipped, default=shipped, format_func=plain_options(model_label),
                          help="The models the app ships with (read-only). CV UAR: unweighted average recall of the "
                               "model's cross-validation (chance = 1 / number of emotions). A saved ensemble pools "
                               "its member models and leads the answer; without one, the models' mean weighted by "
                               "CV UAR does. Speaker-adaptive models compare a voice with itself: calibrate them "
                               "to yours below.")
if yours:
    chosen += right.multiselect("Your models", yours, default=yours, format_func=plain_options(model_label),
                                help="The models you trained (Train page or `python -m ser_core train`), each named "
                                     "after its model, data and run (the run's number on the Leaderboard).")
    if not public_mode():  # a public demo deletes nothing
        with right.expander("Delete one of your models"):
            victim = st.selectbox("Model", yours, key="demo_delete_pick", format_func=plain_options())
            st.caption("Its folder goes; its run stays on the Leaderboard. Shipped models cannot be deleted.")
            if st.button("Delete", icon=":material/delete:", key="demo_delete"):
                from ser_core.results import ResultsStore

                try:
                    delete_user_model(victim, store=ResultsStore())
                except SERError as exc:
                    st.error(plain(exc))
                else:
                    st.session_state["demo_deleted"] = victim
                    del st.session_state["demo_delete_pick"]  # its options change
                    st.rerun()
else:
    right.caption("**Your models**: none yet. A model you train on the **Train** page appears here, beside the "
                  "shipped ones (which training never replaces).")
if deleted := st.session_state.pop("demo_deleted", None):
    st.toast(f"Deleted {plain(deleted)}.")
if not chosen:
    st.info("Select at least one model.")
    st.stop()
version = models_dir_version()
try:
    predictor = load_predictor(tuple(chosen), None, version)
except SERError as exc:
    st.error(plain(public_text(str(exc))))
    st.stop()


@st.cache_resource(max_entries=8, show_spinner="Calibrating to your voice...")
def calibrated_predictor(models: tuple, version: float, key: tuple, _signals: list):
    """A copy of the shared predictor calibrated on ``_signals`` ((y, sr) pairs; ``key``: their digests)."""
    return copy.copy(load_predictor(models, None, version)).calibrate(_signals, min_clips=CALIBRATION_MIN)


def take_clips(files: list, kept: dict):
    """Decode the uploaded or recorded ``files`` ((name, file) pairs) into ``kept`` (sha1 -> (name, (y, 16000))),
    up to ``CALIBRATION_MAX`` clips in all, then drop every file's bytes and empty the widgets (``drop_uploads``,
    which reruns): the session keeps a clip's 16 kHz signal, never its file, and a file it refuses (over the limit,
    unreadable, too long) is freed at once."""
    from ser_core.audio import load_audio

    room, bad = max(0, CALIBRATION_MAX - len(kept)), []
    with analysis_slot():
        for name, f in files[:room]:
            digest = hashlib.sha1(f.getvalue()).hexdigest()
            try:
                if digest not in kept:
                    kept[digest] = (name, (load_audio(io.BytesIO(f.getvalue()), trim=False, normalize=None,
                                                      max_duration_s=MAX_RECORDING_S), 16000))
            except SERError as exc:
                bad.append(f"'{name}' ({exc})")
    if len(files) > room:
        bad.append(f"{len(files) - room} more files, not read: at most {CALIBRATION_MAX} clips are kept")
    drop_uploads([f for _, f in files], CALIB_ROUND, plain("Left out: " + "; ".join(bad)) if bad else "")


def calibration(predictor):
    """The "Calibrate to your voice" expander; returns ``(predictor to use, calibration key)``."""
    kept = st.session_state.setdefault("calib_clips", {})  # sha1 -> (name, (y, 16000)): the clips taken in
    rnd = st.session_state.get(CALIB_ROUND, 0)
    with st.expander("Calibrate to your voice"):
        st.caption(f"Speaker-adaptive models judge a voice against the same voice's average. Give them at least "
                   f"{CALIBRATION_MIN} clips of your own speech, a sentence each, in your usual range of moods "
                   "(only calm clips would make everything else sound emotional); more clips calibrate better. "
                   "Until then they compare you with the training speakers and are less accurate. Measured on "
                   "voices of a corpus the models never trained on (benchmarks/bench_voice_calibration.py, "
                   "each corpus held out in turn): the adaptive LDA went from UAR 0.42 to 0.47 / 0.50 / 0.51 "
                   "with 5 / 10 / 20 clips of the speaker; the adaptive SVM from 0.34 to 0.45 / 0.48 / 0.53 "
                   "(chance 0.14)."
                   + (f" Without calibration the ensemble scores {uar[ENSEMBLE]:.2f} on one clip (its card's "
                      "cross-validated UAR)." if uar.get(ENSEMBLE) is not None else ""))
        uploads = st.file_uploader(f"Clips of your voice (at most {CALIBRATION_MAX})", type=UPLOAD_TYPES,
                                   accept_multiple_files=True, key=f"calib_upload_{rnd}")
        rec = st.audio_input("Or record them one at a time", key=f"calib_record_{rnd}")
        new = [(u.name, u) for u in uploads or []] + ([(f"recording {len(kept) + 1}", rec)] if rec else [])
        if new:
            take_clips(new, kept)
        if refused := pop_refusal(CALIB_ROUND):
            st.warning(refused)
        key = tuple(sorted(kept))
        signals = [kept[d][1] for d in key]
        if len(signals) >= CALIBRATION_MIN:
            try:
                predictor = calibrated_predictor(tuple(chosen), version, key, signals)
            except SERError as exc:
                st.error(plain(f"Cannot calibrate with these clips: {public_text(str(exc))}"))
                key = ()
        else:
            key = ()
        names = plain(", ".join(sorted(predictor.calibration_status())))
        if key:
            st.success(f"{len(signals)} clips in: {names} calibrated to your voice.")
        else:
            st.info(f"{len(signals)} of {CALIBRATION_MIN} clips in: {names} not calibrated yet (training-data "
                    "statistics).")
        if kept:
            st.caption(plain("Clips in: " + ", ".join(name for name, _ in kept.values())))
        if kept and st.button("Clear calibration clips"):
            kept.clear()
            st.session_state[CALIB_ROUND] = rnd + 1
            st.rerun()
    return predictor, key


if adapts & set(chosen):
    predictor, calibration_key = calibration(predictor)
else:
    calibration_key = ()
cal_status, thresholds = predictor.calibration_status(), predictor.thresholds()


@st.cache_data(max_entries=16, show_spinner="Analysing the recording...")
def analyse(data: bytes, filename: str, models: tuple, version: float, calibration_key: tuple, _predictor) -> dict:
    buf = io.BytesIO(data)
    buf.name = filename
    res = analyse_audio(buf, _predictor, timeline_after_s=float("inf"), segments_after_s=TIMELINE_AFTER_S)
    if res["is_speech"]:
        res["digest"] = hashlib.sha1(data).hexdigest()
    return res


@st.cache_data(max_entries=32, show_spinner="Finding what the model listened to...")
def explained(digest: str, name: str, start: float, end: float | None, models: tuple, version: float,
              calibration_key: tuple, _predictor, _y) -> dict:
    from ser_core.explain import explain

    sr = 16000
    return explain(_y[int(start * sr):None if end is None else int(end * sr)], sr, _predictor, name, offset_s=start)


def prob_chart(probs: dict, key: str, height: int = 270):
    labels = emotion_order(probs)
    fig = go.Figure(go.Bar(x=[probs[l] for l in labels], y=[plain(l) for l in labels], orientation="h",
                           marker_color=[EMOTION_COLORS.get(l, "#444") for l in labels],
                           text=[f"{probs[l]:.0%}" for l in labels], textposition="outside", cliponaxis=False))
    fig.update_layout(height=height, margin=dict(t=10, b=10, l=10, r=40), xaxis=dict(range=[0, 1.08],
                      tickformat=".0%", title="probability"), yaxis=dict(autorange="reversed"))
    chart(fig, key, displayModeBar=False)


def answer(probs: dict, threshold: float | None):
    """The top emotion and its confidence, or "not sure" and the candidates (``describe_prediction``)."""
    said = describe_prediction(probs, threshold)
    st.metric("top emotion", plain(said["answer"]), plain(said["detail"]), delta_color="off", delta_arrow="off")


DIMENSION_TITLES = {"arousal": "Arousal (calm ↔ excited)", "valence": "Valence (negative ↔ positive)"}


def dimension_lines(probs: dict) -> list[str]:
    """Arousal and valence read from the emotions' probabilities (``taxonomy.dimension_reading``), one line each,
    in the page's own words (no user text): "Arousal (calm ↔ excited): excited 72 %, calm 28 %"."""
    out = []
    for dim, levels in dimension_reading(probs).items():
        ranked = sorted(levels.items(), key=lambda kv: -kv[1])
        out.append(f"{DIMENSION_TITLES[dim]}: " + ", ".join(f"{LEVEL_WORDS[dim][lv]} {p:.0%}" for lv, p in ranked))
    return out


def model_card(name: str, probs: dict, key: str, timing: dict | None = None):
    with st.container(border=True):
        st.markdown(f"**{plain(model_label(name))}**")
        answer(probs, thresholds.get(name))
        prob_chart(probs, key=key)
        for line in dimension_lines(probs):
            st.caption(line)
        if name in cal_status:
            st.caption(f"calibrated to your voice ({predictor.n_calibration_clips} clips)" if cal_status[name]
                       else "uncalibrated: training speakers' statistics")
        if timing:
            st.caption(f"features {timing['features_ms']:.0f} ms + model {timing['model_ms']:.0f} ms")


def predictions_grid(preds: dict, key: str, timings: dict | None = None, per_row: int = 3):
    items = list(preds.items())
    per_row = max(2, min(per_row, len(items)))
    for i in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (name, probs) in zip(cols, items[i:i + per_row]):
            with col:
                model_card(name, probs, key=f"{key}_{name}", timing=(timings or {}).get(name))


def waveform_chart(res: dict):
    y, sr = res["y"], res["sr"]
    start, end = res["speech"]
    t, v = envelope(y, sr)
    fig = go.Figure(go.Scatter(x=t, y=v, mode="lines", line=dict(width=1, color="#1f77b4"), hoverinfo="skip"))
    fig.add_vrect(x0=start / sr, x1=end / sr, fillcolor="#2ca02c", opacity=0.15, line_width=0,
                  annotation_text="speech the models hear", annotation_position="top left")
    fig.update_layout(height=200, margin=dict(t=25, b=10), xaxis_title="time (s)", yaxis=dict(range=[-1.05, 1.05]
                      if abs(v).max() > 0.5 else None, title="amplitude"), showlegend=False)
    chart(fig, "waveform", displayModeBar=False)
    st.caption(f"{len(y) / sr:.1f} s of audio; the models hear the highlighted {(end - start) / sr:.1f} s "
               "(leading and trailing silence trimmed).")


def segments_chart(res: dict):
    """The speech segments over the waveform (emotion and confidence of the best estimate), their table and,
    except on a public server, their CSV."""
    st.subheader("Emotion over time (speech segments)")
    rows = segment_table(res["segments"], thresholds.get(res["lead"]))
    y, sr = res["y"], res["sr"]
    t, v = envelope(y, sr)
    fig = go.Figure(go.Scatter(x=t, y=v, mode="lines", line=dict(width=1, color="#1f77b4"), hoverinfo="skip"))
    for r in rows:
        said = f"{r['answer']} {r['confidence']:.0%}" if r["emotion"] else "not speech"
        fig.add_vrect(x0=r["start"], x1=r["end"], fillcolor=EMOTION_COLORS.get(r["emotion"], "#999"), opacity=0.3,
                      line_width=0, annotation_text=plain(said), annotation_position="top left")
    fig.update_layout(height=240, margin=dict(t=25, b=10), xaxis=dict(title="time (s)", range=[0, len(y) / sr]),
                      yaxis_title="amplitude", showlegend=False)
    chart(fig, "segments", displayModeBar=False)
    table = pd.DataFrame(rows)[["start", "end", "answer", "emotion", "confidence", "reason"]]
    st.caption(f"{len(rows)} speech segments found by a voice activity detector (Silero VAD); the pauses between "
               "them are skipped, not classified. Each segment gets the best estimate above; \"not sure\" below "
               "its threshold.")
    st.dataframe(plain_data(table.round(2)), hide_index=True)
    if not public_mode():
        st.download_button("Download the segments (CSV)", to_csv(table), "segments.csv", "text/csv",
                           icon=":material/download:")


def explanation_panel(res: dict):
    """Why the chosen model said what it said about the chosen part: an occlusion map or the features."""
    st.subheader("Why this emotion?")
    names = ([res["lead"]] if res["lead"] else []) + [k for k in res["predictions"] if k != res["lead"]]
    parts = [(0.0, None, "the whole recording")] + [
        (s["start_s"], s["end_s"], f"{s['start_s']:.1f}-{s['end_s']:.1f} s") for s in res.get("segments") or []
        if s["speech"]]
    c1, c2 = st.columns(2)
    name = c1.selectbox("Model", names, format_func=plain_options(model_label), key="explain_model")
    part = c2.selectbox("Part", range(len(parts)), format_func=lambda i: parts[i][2], key="explain_part")
    start, end, _ = parts[part]
    request = (res["digest"], name, start, end)
    if st.button("Explain", icon=":material/search:", key="explain_go"):
        st.session_state["explain_request"] = request
    if st.session_state.get("explain_request") != request:
        st.caption("Occlusion: parts of the audio (spectrogram models) or groups of features (the others) are taken "
                   "away one at a time, and what lowers the model's answer most is what drove it. A few seconds.")
        return
    try:
        with analysis_slot():
            ex = explained(*request, tuple(chosen), version, calibration_key, predictor, res["y"])
    except SERError as exc:
        st.error(plain(public_text(str(exc))))
        return
    st.markdown(plain(ex["text"]))
    if ex["kind"] == "time_frequency":
        occlusion_map(ex, len(res["y"]) / res["sr"])
    else:
        feature_bars(ex)
    st.caption(plain(f"Method: {ex['method']}. It shows what this model relies on for this recording, not what "
                     "makes speech sound like that emotion in general."))


def occlusion_map(ex: dict, duration: float):
    """The effect of silencing each tile, on the recording's time axis (aligned with the waveform)."""
    m = ex["map"]
    fig = go.Figure(go.Heatmap(x=[(a + b) / 2 for a, b in m["times"]], y=[f"{a}-{b} Hz" for a, b in m["bands_hz"]],
                               z=m["effect"], colorscale="RdBu_r", zmid=0,
                               colorbar=dict(title="effect"), hovertemplate="%{x:.2f} s, %{y}: %{z:.2f}<extra></extra>"))
    for r in ex["regions"]:
        fig.add_vrect(x0=r["start"], x1=r["end"], line_width=1, line_dash="dot", fillcolor="rgba(0,0,0,0)")
    fig.update_layout(height=300, margin=dict(t=10, b=10), xaxis=dict(title="time (s)", range=[0, duration]),
                      yaxis_title="mel band")
    chart(fig, "explain_map")
    heard = ex["heard"]
    st.caption(f"The model hears {heard[0]:.2f}-{heard[1]:.2f} s (trimmed, at most its input length). Effect: how "
               f"much the odds of {plain(ex['label'])} fall when that tile is silenced (log-odds; 1 = 2.7-fold). "
               "Dotted: the top regions.")


def feature_bars(ex: dict):
    rows = ex["features"] + ex["against"]
    if not rows:
        return
    fig = go.Figure(go.Bar(x=[r["effect"] for r in rows], y=[plain(r["words"]) for r in rows], orientation="h",
                           marker_color=["#2ca02c" if r["effect"] > 0 else "#d62728" for r in rows]))
    fig.update_layout(height=60 + 32 * len(rows), margin=dict(t=10, b=10), yaxis=dict(autorange="reversed"),
                      xaxis_title=plain(f"effect on {ex['label']} (log-odds; > 0 pushed toward it)"))
    chart(fig, "explain_features", displayModeBar=False)
    st.markdown("\n".join(f"- {plain(r['text'])}" for r in rows))
    ref = ex["reference"]
    st.caption(plain(f"Compared with {ref['clips']} training clips ({ref['source']})."))


def lead_answer(res: dict):
    """The answer the page leads with: the saved ensemble's, or else the models' mean weighted by CV UAR."""
    lead, ens = res["lead"], res["ensemble"]
    st.subheader(f"Best estimate (ensemble of {len(members[lead])} models)" if lead else
                 "Ensemble (weighted by CV UAR)")
    c1, c2 = st.columns([1, 2])
    with c1:
        answer(ens, thresholds.get(lead))
        for line in dimension_lines(ens):
            st.caption(line)
    if lead:
        c1.caption(plain(f"{model_label(lead)}; members: {', '.join(members[lead])}"))
        if predictor.adapted(predictor.saved_ensemble().model):
            c1.caption("Adapted to your voice: its speaker-adaptive members, calibrated on your clips, count too.")
    else:
        w = res["weights"]
        c1.caption(plain("weights: " + ", ".join(f"{k} {v / sum(w.values()):.0%}" for k, v in w.items())))
    with c2:
        prob_chart(ens, key="ensemble", height=250)


def render(res: dict):
    if not res["is_speech"]:
        st.warning(f"{NOT_SPEECH} {res['reason']}")
        return
    singles = {k: v for k, v in res["predictions"].items() if k != res["lead"]}
    if res["lead"] or len(singles) > 1:
        lead_answer(res)
    waveform_chart(res)
    if singles:
        st.subheader("Each model")
        predictions_grid(singles, key="model", timings=res["timings"])
    if res["segments"] is not None:
        segments_chart(res)
    explanation_panel(res)


LAG_WARN_S = 3.0  # the page says it is falling behind the microphone by more than this
LIVE_WAIT_S = 1.0  # how long a live judgement waits for an analysis slot before the page says the server is busy
live_lead = getattr(predictor.saved_ensemble(), "name", None)  # whose "not sure" threshold the live answer uses


def live_line(r: dict) -> str:
    """One judgement of the live stream in words (``LiveStream.feed``'s dicts)."""
    span = f"{r['start_s']:.1f}-{r['end_s']:.1f} s"
    if not r["speech"]:
        return f"{span}: {NOT_SPEECH} {r['reason']}"
    return f"{span}: {describe_prediction(r['ensemble'], thresholds.get(live_lead))['text']}"


def live():
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    st.caption("Press START and allow the microphone. A voice activity detector (Silero VAD) cuts the stream into "
               "speech segments: each is judged when it ends, and about every second while it goes on; silences "
               "are skipped.")
    ctx = webrtc_streamer(key="ser-live", mode=WebRtcMode.SENDONLY, audio_receiver_size=1024,
                          media_stream_constraints={"audio": True, "video": False},
                          rtc_configuration={"iceServers": []})  # local use: no STUN server needed (or reachable)
    status, now, history = st.empty(), st.empty(), st.empty()
    shown = None  # (kind, text) of the status line

    def say(kind: str, text: str):  # only a change goes to the browser (the loop runs 50 times a second)
        nonlocal shown
        if shown != (kind, text):
            shown = (kind, text)
            getattr(status, kind)(text)

    stream = LiveStream(predictor, slot=lambda: live_slot(LIVE_WAIT_S))
    while ctx.state.playing:
        if ctx.audio_receiver is None:
            time.sleep(0.1)
            continue
        try:
            frames = ctx.audio_receiver.get_frames(timeout=1)
        except queue.Empty:
            say("info", "Waiting for audio from the microphone...")
            continue
        results = stream.feed(frames)
        for r in results:
            if r["busy"]:
                say("warning", f"The server is busy with other users' analyses: your speech at {r['start_s']:.1f}-"
                               f"{r['end_s']:.1f} s was not judged. Still listening.")
            elif r["final"]:
                say("info", plain(f"Listening... Last segment {live_line(r)}"))
            elif r["speech"]:
                say("success", plain(f"Now: {live_line(r)} so far"))
                with now.container():
                    live_models(r)
        if stream.lag_s > LAG_WARN_S:
            say("warning", f"The server is {stream.lag_s:.0f} s behind your microphone (busy); answers come late.")
        elif shown is None or shown[1].startswith("Waiting"):
            say("info", "Listening... no speech yet.")
        if any(r["final"] for r in results):
            with history.container():
                st.caption(f"Speech segments so far ({stream.received_s:.0f} s streamed)")
                table = pd.DataFrame(segment_table(stream.segments, thresholds.get(live_lead)))
                st.dataframe(plain_data(table[["start", "end", "answer", "reason"]].round(2)), hide_index=True)


def live_models(r: dict):
    """The best estimate's probabilities and each model's answer, for the segment so far."""
    prob_chart(r["ensemble"], key=f"live_{r['end_s']}", height=220)
    st.dataframe(plain_data(pd.DataFrame([{"model": n, "answer": describe_prediction(p, thresholds.get(n))["answer"]}
                                          for n, p in r["models"].items()])), hide_index=True)


mode = st.radio("Input", MODES, horizontal=True, key="demo_mode")
if mode == MODES[2]:
    live()
    st.stop()
limit_mb, rnd = upload_limit_mb(), st.session_state.get(INPUT_ROUND, 0)
if mode == MODES[0]:
    f = st.file_uploader(f"Speech recording ({', '.join(UPLOAD_TYPES)}; up to {MAX_RECORDING_S:.0f} s, {limit_mb} MB)",
                         type=UPLOAD_TYPES, key=f"demo_upload_{rnd}")
else:
    f = st.audio_input("Record a few seconds of speech", key=f"demo_record_{rnd}")
if refused := pop_refusal(INPUT_ROUND):
    st.error(refused)
if f is None:
    st.info("Upload or record a clip of speech" + ("" if public_mode() else ", e.g. one of the bundled samples in "
                                                   "`samples/ravdess/`") + f". Recordings longer than "
            f"{TIMELINE_AFTER_S:.0f} s are also split into speech segments, each with its emotion.")
    st.stop()

# A refused file is dropped at once (drop_uploads): its bytes stay in no cache, session or player.
if f.size > limit_mb * 2 ** 20:
    drop_uploads([f], INPUT_ROUND, plain(f"'{f.name}' is {f.size / 2 ** 20:.0f} MB, more than this server's {limit_mb} "
                                        "MB limit; cut it or convert it to FLAC or MP3."))
try:
    with analysis_slot():
        result = analyse(f.getvalue(), f.name, tuple(chosen), version, calibration_key, predictor)
except AudioTooLongError:
    drop_uploads([f], INPUT_ROUND, f"This recording is longer than the demo's {MAX_RECORDING_S:.0f} s limit; cut it to "
                                   "the part you want analysed (or use `python -m ser_core predict` for long files).")
except SERError as exc:
    drop_uploads([f], INPUT_ROUND, plain(str(exc) if f.name in str(exc) else f"Cannot analyse '{f.name}': {exc}"))
st.audio(f.getvalue())
render(result)
