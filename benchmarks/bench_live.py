"""The Demo's live microphone, measured end to end: speech onset to the answer on screen, updates, server CPU.

    python benchmarks/bench_live.py [--seconds 45] [--tabs 1] [--models-dir DIR] [--models a,b]
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
Latency = first "Now:" of a segment minus the onset that started it; the update interval = time between
successive "Now:" texts of one segment. CPU: user + system time of the server process and its children
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
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def build_clip(data: Path, out: Path) -> dict:
    """The fake microphone's WAV and where its speech starts: ``{"path", "duration_s", "onsets_s", "clips"}``."""
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
    y = np.concatenate(parts)
    y = y + np.random.default_rng(0).normal(0, 10 ** (-70 / 20), len(y)).astype(np.float32)
    sf.write(out, soxr.resample(y, 16000, MIC_SR), MIC_SR, subtype="PCM_16")
    second = LEAD_S + len(speech[0]) / 16000 + GAP_S
    return {"path": str(out), "duration_s": len(y) / 16000, "onsets_s": [LEAD_S, round(second, 3)],
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


def start_server(env: dict, log: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1"], cwd=REPO, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"streamlit did not start: {log.read_text(errors='replace')[-2000:]}")


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


def analyse(mic: dict, now: list, clip: dict) -> dict:
    """Per segment (the stream's start time in the "Now:" text): its first answer's latency from the onset that
    preceded it, and the intervals between its answers."""
    by_start: dict[str, list[float]] = {}
    for t, text in now:
        m = SPAN.match(text)
        if m:
            by_start.setdefault(m.group(1), []).append(t)
    onsets = sorted(mic["onsets"])
    latencies, intervals, unmatched = [], [], 0
    for times in by_start.values():
        before = [o for o in onsets if o <= times[0]]
        if not before or times[0] - before[-1] > 5000:
            unmatched += 1
            continue
        latencies.append((times[0] - before[-1]) / 1000)
        intervals += list(np.diff(times) / 1000)
    # An onset about one file length after another: Chromium started the file again (it loops it).
    lap = clip["duration_s"] * 1000
    laps = [b - a for a in onsets for b in onsets if abs(b - a - lap) < 300]
    return {"segments": len(by_start), "updates": len(now), "onsets_heard": len(onsets), "unmatched": unmatched,
            "first_answer_s": summary(latencies), "update_interval_s": summary(intervals),
            "file_loops": bool(laps), "lap_s": summary(np.divide(laps, 1000)),
            "mic_error": mic.get("error")}


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
    p.add_argument("--json-out")
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import CHROMIUM_ARGS, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    clip = build_clip(Path(a.data), tmp / "mic.wav")
    env = {**os.environ, "SER_CACHE_DIR": str(tmp / "cache")}
    if a.models_dir:
        env["SER_MODELS_DIR"] = a.models_dir
    port = free_port()
    server = start_server(env, tmp / "server.log", port)
    models = a.models.split(",") if a.models else None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + [
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={clip['path']}", "--autoplay-policy=no-user-gesture-required"])
            pages = [open_live(browser, f"http://127.0.0.1:{port}", models) for _ in range(a.tabs)]
            time.sleep(2)
            c0, t0 = cpu_seconds(server.pid), time.monotonic()
            time.sleep(min(a.seconds, 15))
            idle = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)
            load_before = os.getloadavg()
            for page in pages:
                page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="START").click()
            for page in pages:
                page.wait_for_function("() => window.__now.length > 0 || null", timeout=60_000)
            c0, t0 = cpu_seconds(server.pid), time.monotonic()  # from the first answer on: streaming
            time.sleep(a.seconds)
            cpu = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)
            tabs = []
            for page in pages:
                mic, now = mic_probe(page), page.evaluate("() => window.__now")
                tabs.append({**analyse(mic, now, clip), "last_texts": [t for _, t in now[-3:]]})
            pages[0].screenshot(path=str(tmp / "live.png"), full_page=True)
            for page in pages:
                page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="STOP").click()
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    result = {"benchmark": "live", "command": "python " + " ".join(sys.argv), "clip": clip, "tabs": tabs,
              "seconds_streamed": a.seconds, "models": models or "all in the models folder",
              "models_dir": a.models_dir or "shipped",
              "server_cpu_per_audio_s": round(cpu, 3), "server_cpu_idle_per_s": round(idle, 3),
              "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
              "cpu_count": os.cpu_count(), "machine": platform.platform(), "screenshot": str(tmp / "live.png"),
              "server_log": str(tmp / "server.log")}
    text = json.dumps(result, indent=1)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
