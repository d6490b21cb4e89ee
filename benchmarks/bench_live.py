"""The Demo's live microphone, measured end to end: speech onset to the answer on screen, updates, server CPU.

    python benchmarks/bench_live.py [--seconds 45] [--tabs 1] [--models-dir DIR] [--models a,b] [--silent]
                                    [--json-out benchmarks/results/live.json]

Starts the app (``streamlit run``), opens the Demo's "Live microphone" in headless Chromium whose fake
microphone plays a known WAV (``--use-file-for-fake-audio-capture``), presses START and listens for
``--seconds``. The WAV (48 kHz, 16-bit; ``build_clip``): ``LEAD_S`` of faint noise, one RAVDESS sentence, a
pause, then four sentences joined without a pause (about 8 s of unbroken speech: more than the 6 s longest
segment), then a pause. Chromium loops the file (the microphone's level shows every onset again each lap).

Times are read in the browser, on one clock (``Date.now()``):
- speech onset: an ``AnalyserNode`` on the microphone's own stream (wrapped ``getUserMedia`` in the
  streamlit-webrtc iframe) gives the first 10 ms block above ``ONSET_DBFS`` after at least 0.5 s below it,
  i.e. when the speech reaches the browser's microphone;
- the answer on screen: a ``MutationObserver`` on the page records every new text of the "Now: ..." line (each
  update names its segment's span, so every update is a new text).
Latency = the first "Now:" naming a new segment after each of the file's two speech onsets (located lap by
lap from the onsets heard: ``speech_onsets``) minus that onset; the update interval = time between successive
"Now:" texts of one segment. CPU: user + system time of the server process and its children
(``/proc``) over the streaming, per second of audio streamed (the wall time: the microphone is real time);
the idle server's CPU over the same length before START is reported beside it. With ``--tabs 2`` two
browser contexts stream at once (each a session with its own detector; predictions take turns in the
server's analysis slots) and each is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
LEAD_S, GAP_S, TAIL_S = 2.0, 2.0, 3.0  # silence before the first sentence, between the two parts, at the end
ONSET_DBFS = -35.0  # a 10 ms block louder than this after 0.5 s below it: speech has started (noise: -70 dBFS)
MIC_SR = 48000

# Runs in every frame before its scripts: the frame that opens the microphone measures its level.
MIC_PROBE = f"""
(() => {{
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return;
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {{
    const stream = await gum(c);
    window.__mic = {{opened: Date.now(), onsets: [], error: null}};
    try {{
      const ac = new AudioContext();
      await ac.resume();
      const an = ac.createAnalyser(); an.fftSize = 512;
      ac.createMediaStreamSource(stream).connect(an);
      const buf = new Float32Array(480); let quietSince = Date.now();
      setInterval(() => {{
        an.getFloatTimeDomainData(buf);
        let s = 0; for (const v of buf) s += v * v;
        const db = 10 * Math.log10(s / buf.length + 1e-12);
        const now = Date.now();
        if (db < {ONSET_DBFS} - 10) {{ if (quietSince === null) quietSince = now; }}
        else if (db > {ONSET_DBFS} && quietSince !== null) {{
          if (now - quietSince >= 500) window.__mic.onsets.push(now);
          quietSince = null;
        }}
      }}, 10);
    }} catch (e) {{ window.__mic.error = String(e); }}
    return stream;
  }};
}})();
"""
NOW_PROBE = """
(() => {
  window.__now = [];
  let last = null;
  new MutationObserver(() => {
    for (const el of document.querySelectorAll('[data-testid="stAlertContainer"]')) {
      const t = el.innerText.trim();
      if (t.startsWith('Now:') && t !== last) { last = t; window.__now.push([Date.now(), t]); }
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
})();
"""


def build_clip(data: Path, out: Path, silent: bool = False) -> dict:
    """The fake microphone's WAV and where its speech starts: ``{"path", "duration_s", "onsets_s", "clips"}``
    (``silent``: the same length of faint noise only)."""
    import soundfile as sf
    import soxr

    from ser_core.audio import load_audio, trim_silence
    from ser_core.speech import TRIM_DB

    paths = [sorted((data / "Actor_05").glob(f"03-01-0{e}-02-01-01-05.*"))[0] for e in (5, 3, 6, 4, 8)]
    speech = []
    for p in paths:
        y = trim_silence(load_audio(p, trim=False, normalize=None), top_db=TRIM_DB)[0]
        speech.append(0.5 * y / np.abs(y).max())
    pause = lambda s: np.zeros(int(s * 16000), np.float32)  # noqa: E731
    parts = [pause(LEAD_S), speech[0], pause(GAP_S), *speech[1:], pause(TAIL_S)]
    y = np.concatenate(parts) * (not silent)
    y = y + np.random.default_rng(0).normal(0, 10 ** (-70 / 20), len(y)).astype(np.float32)
    sf.write(out, soxr.resample(y, 16000, MIC_SR), MIC_SR, subtype="PCM_16")
    second = LEAD_S + len(speech[0]) / 16000 + GAP_S
    return {"path": str(out), "duration_s": len(y) / 16000, "onsets_s": [] if silent else [LEAD_S, round(second, 3)],
            "speech_s": [round(len(speech[0]) / 16000, 2), round(sum(map(len, speech[1:])) / 16000, 2)],
            "clips": [p.name for p in paths]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
            children.setdefault(int(fields[1]), []).append(int(d.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo += children.get(p, [])
    return total


def server_pid(url: str) -> int:
    """The pid of the ``streamlit run`` serving ``url`` (started by ``helpers.streamlit_server``)."""
    port = url.rsplit(":", 1)[1]
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and f"--server.port\0{port}\0" in (d / "cmdline").read_text():
                return int(d.name)
        except OSError:
            continue
    raise SystemExit(f"no streamlit process serves {url}")


def open_live(browser, url: str, models: list[str] | None):
    """A new browser context on the Demo's live mode, its probes installed; returns the page (not started)."""
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
    ctx.add_init_script(MIC_PROBE)
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Demo").click()
    page.locator("h1", has_text="Try the models").wait_for()
    if models:  # keep only these in the shipped-models picker
        page.wait_for_timeout(2000)
        for chip in page.locator('[data-testid="stMultiSelect"]').first.locator('span[role="button"]').all()[::-1]:
            name = chip.inner_text().split(" (")[0]
            if name not in models:
                chip.locator("..").locator('[role="presentation"], svg').first.click()
                page.wait_for_timeout(800)
    page.get_by_text("Live microphone", exact=True).click()
    page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="START").wait_for()
    page.evaluate(NOW_PROBE)
    return page


def mic_probe(page) -> dict | None:
    for frame in page.frames:
        try:
            mic = frame.evaluate("() => window.__mic || null")
        except Exception:  # a frame that went away
            continue
        if mic:
            return mic
    return None


SPAN = re.compile(r"^Now: (\d+\.\d)-(\d+\.\d) s")


def speech_onsets(heard: list, clip: dict) -> list[float]:
    """When each of the file's speech onsets (after its silences) reached the microphone, ``Date.now()`` ms.

    The level probe hears those onsets and also some inside the sentences (after a 0.5 s quiet stretch), and a
    soft start only when it gets loud. The file loops (``clip["duration_s"]``) and may have started before this
    tab opened the microphone (one fake device per browser), so its phase is the one that puts the most heard
    onsets within ``MATCH_MS`` of the file's own, refined to their median offset; the onsets are then counted
    from the file, lap by lap, from the first heard to the last."""
    period, known = clip["duration_s"] * 1000, [k * 1000 for k in clip["onsets_s"]]
    if not heard or not known:
        return []

    def offsets(phase):
        out = []
        for o in heard:
            d = (o - phase - np.array(known) + period / 2) % period - period / 2  # to the nearest lap's onset
            if np.abs(d).min() < MATCH_MS:
                out.append(float(d[np.abs(d).argmin()]))
        return out

    phase = max((o - k for o in heard for k in known), key=lambda ph: len(offsets(ph)))
    phase += float(np.median(offsets(phase)))
    first = int(np.floor((min(heard) - phase) / period)) - 1
    return [phase + n * period + k for n in range(first, first + int((max(heard) - min(heard)) / period) + 3)
            for k in known if min(heard) - MATCH_MS <= phase + n * period + k <= max(heard) + MATCH_MS]


MATCH_MS = 80.0  # a heard onset this close to the file's is that onset (the probe polls every 10 ms)


def analyse(mic: dict, now: list, clip: dict) -> dict:
    """The latency of the first answer after each of the file's speech onsets (the first "Now:" that names a new
    segment, before the next onset and within 5 s; an onset without one is counted: speech the server never
    heard, before WebRTC connected), and the intervals between successive answers about one segment."""
    answers = [(t, m.group(1)) for t, text in now if (m := SPAN.match(text))]
    onsets = speech_onsets(sorted(mic["onsets"]), clip)
    latencies, at_connection, missed = [], [], 0
    for o, after in zip(onsets, onsets[1:] + [float("inf")]):
        shown_before = {start for t, start in answers if t <= o}
        first = next(((t, start) for t, start in answers if t > o and start not in shown_before), None)
        if first is None or first[0] - o > 5000 or first[0] > after:  # none before the next onset's speech
            missed += first is not None  # none at all: the streaming ended first
            continue
        # A segment from the stream's very start: the speech began while WebRTC was still connecting.
        (at_connection if float(first[1]) == 0.0 else latencies).append((first[0] - o) / 1000)
    intervals = [(b[0] - a[0]) / 1000 for a, b in zip(answers, answers[1:]) if a[1] == b[1]]
    # An onset about one file length after another: Chromium started the file again (it loops it).
    heard, lap = sorted(mic["onsets"]), clip["duration_s"] * 1000
    laps = [b - a for a in heard for b in heard if abs(b - a - lap) < 300]
    return {"segments": len({start for _, start in answers}), "updates": len(now), "onsets_heard": len(heard),
            "speech_onsets": len(onsets), "onsets_without_an_answer": missed,
            "first_answer_s": summary(latencies), "first_answer_while_connecting_s": summary(at_connection),
            "update_interval_s": summary(intervals),
            "file_loops": bool(laps), "lap_s": summary(np.divide(laps, 1000)), "mic_error": mic.get("error")}


def summary(x) -> dict:
    x = sorted(float(v) for v in x)
    if not x:
        return {"n": 0}
    return {"n": len(x), "median": round(statistics.median(x), 3), "max": round(x[-1], 3), "min": round(x[0], 3),
            "p90": round(x[int(0.9 * (len(x) - 1))], 3), "all": [round(v, 3) for v in x]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess"))
    p.add_argument("--seconds", type=float, default=45.0, help="how long to stream")
    p.add_argument("--tabs", type=int, default=1, help="browser tabs streaming at once")
    p.add_argument("--models-dir", help="SER_MODELS_DIR for the app (default: the shipped models)")
    p.add_argument("--models", help="keep only these shipped models selected (comma list; default: all)")
    p.add_argument("--silent", action="store_true", help="a microphone of faint noise only: the CPU of streaming "
                                                          "itself (WebRTC, resampling, the detector), no answers")
    p.add_argument("--json-out")
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import CHROMIUM_ARGS, streamlit_server

    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    clip = build_clip(Path(a.data), tmp / "mic.wav", a.silent)
    env = {**os.environ, "SER_CACHE_DIR": str(tmp / "cache")}
    if a.models_dir:
        env["SER_MODELS_DIR"] = a.models_dir
    models = a.models.split(",") if a.models else None
    with streamlit_server(env, tmp / "server.log") as url, sync_playwright() as pw:
        server = server_pid(url)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + [
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={clip['path']}", "--autoplay-policy=no-user-gesture-required"])
        pages = [open_live(browser, url, models) for _ in range(a.tabs)]
        time.sleep(2)
        c0, t0 = cpu_seconds(server), time.monotonic()
        time.sleep(min(a.seconds, 15))
        idle = (cpu_seconds(server) - c0) / (time.monotonic() - t0)
        load_before = os.getloadavg()
        for page in pages:
            page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="START").click()
        for page in pages:
            if a.silent:
                page.get_by_text("Listening... no speech yet").wait_for(timeout=60_000)
            else:
                page.wait_for_function("() => window.__now.length > 0 || null", timeout=60_000)
        c0, t0 = cpu_seconds(server), time.monotonic()  # from the first answer on: streaming
        time.sleep(a.seconds)
        cpu = (cpu_seconds(server) - c0) / (time.monotonic() - t0)
        tabs = []
        for page in pages:
            mic, now = mic_probe(page), page.evaluate("() => window.__now")
            t0_ms = min([t for t, _ in now] + mic["onsets"], default=mic["opened"])
            raw = {"t0_ms": t0_ms, "onsets_heard_ms": [round(o - t0_ms) for o in mic["onsets"]],
                   "answers": [[round(t - t0_ms), text] for t, text in now]}  # to analyse again
            tabs.append({**analyse(mic, now, clip), "last_texts": [t for _, t in now[-3:]], "raw": raw})
        pages[0].screenshot(path=str(tmp / "live.png"), full_page=True)
        for page in pages:
            page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="STOP").click()
        browser.close()
    result = {"benchmark": "live", "command": "python " + " ".join(sys.argv), "clip": clip, "tabs": tabs,
              "seconds_streamed": a.seconds, "silent": a.silent, "models": models or "all in the models folder",
              "models_dir": a.models_dir or "shipped",
              "server_cpu_per_audio_s": round(cpu, 3), "server_cpu_idle_per_s": round(idle, 3),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()],
              "cpu_count": os.cpu_count(), "machine": platform.platform(), "screenshot": str(tmp / "live.png"),
              "server_log": str(tmp / "server.log")}
    text = json.dumps(result, indent=1)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
