"""Server memory under hostile uploads: the real app (``streamlit run``) in headless Chromium, the server's RSS
read from /proc before, during and after each upload on the Demo page.

    python benchmarks/bench_hostile_upload.py [--repo DIR] [--json-out FILE] [--calibration-only] [--after-close S]

For each file: the server's idle RSS (Demo page open, models loaded), its peak while the upload is handled
(``VmHWM`` after resetting it through ``/proc/PID/clear_refs``), and its RSS 5 s after the answer; then two
pages upload two hostile FLACs at once, then two 2-minute speech recordings at once (different bytes, so
neither is a cache hit; ``saw_waiting``: a page showed the queue's waiting state). Last, "Calibrate to your voice":
eight 45 MB WAVs (four minutes of speech each, over the 120 s limit, so all refused) at once into its uploader, the
RSS 5 s after the page answers and ``--after-close`` seconds after the tab is closed (``--calibration-only``: just
that). ``--repo`` runs another checkout's app (e.g. ``git archive HEAD`` unpacked elsewhere) for a before/after
comparison. Needs /usr/bin/chromium, as the browser tests.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402


def hostile_flac(path: Path, sr: int = 655_350, channels: int = 8, seconds: int = 119, level: float = 0.25) -> Path:
    """The issue's file: a constant signal at FLAC's highest rate, 8 channels, 119 s (0.7 MB)."""
    block = np.full((sr, channels), level, np.float32)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16", format="FLAC") as f:
        for _ in range(seconds):
            f.write(block)
    return path


def wide_wav(path: Path, channels: int = 256, seconds: float = 2.0, sr: int = 48000) -> Path:
    """256 channels of quiet noise in 8-bit PCM: a 25 MB file that decodes to 98 MB of float32."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_U8", format="WAV") as f:
        for _ in range(int(seconds * 10)):
            f.write(rng.normal(0, 0.1, (sr // 10, channels)).astype(np.float32))
    return path


def speech_wav(path: Path, seconds: float, channels: int = 2, sr: int = 48_000, subtype: str = "PCM_16") -> Path:
    """The bundled RAVDESS samples in a row, repeated to ``seconds``, at 48 kHz in ``channels`` channels."""
    import soxr

    clips = [sf.read(f, dtype="float32")[0] for f in sorted((REPO / "samples" / "ravdess").rglob("*.flac"))]
    y = soxr.resample(np.concatenate(clips), 16000, sr)
    y = np.tile(y, int(np.ceil(seconds * sr / len(y))))[:int(seconds * sr)]
    sf.write(path, np.repeat(y[:, None], channels, axis=1), sr, subtype=subtype)
    return path


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakRss:
    """Peak RSS of ``pid`` from now on: VmHWM after a reset, or polled every 20 ms when the reset is refused."""

    def __init__(self, pid: int):
        self.pid, self.polled, self._stop = pid, 0, threading.Event()
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.hwm = True
        except OSError:
            self.hwm = False
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        while not self._stop.is_set():
            self.polled = max(self.polled, rss_kb(self.pid))
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.polled, rss_kb(self.pid, "VmHWM") if self.hwm else 0)


def server_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the streamlit server), from /proc/net/tcp."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port and cols[3] == "0A":  # LISTEN
            inode = cols[9]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd) == f"socket:[{inode}]" for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:
                continue
    raise RuntimeError(f"no process listens on port {port}")


def open_demo(browser, url: str):
    pg = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    pg.set_default_timeout(180_000)
    pg.goto(url + "/demo")
    pg.locator("h1", has_text="Try the models").wait_for()
    dropzone(pg).wait_for(state="attached")
    return pg


def dropzone(pg):
    """The recording's uploader: the last one (speaker-adaptive models add a calibration uploader above it)."""
    return pg.locator('[data-testid="stFileUploaderDropzoneInput"]').last


def answer_box(pg):
    """The page's answer to an upload: an error, a warning, a prediction, or the browser's own refusal of a file
    over the upload limit."""
    return pg.locator('[data-testid="stAlertContentError"], [data-testid="stAlertContentWarning"], '
                      '[data-testid="stMetricValue"], [data-testid="stException"]').or_(
        pg.get_by_text("or smaller.")).first


def upload(pages, paths: list[Path], pid: int) -> dict:
    """Upload ``paths[i]`` on ``pages[i]``, all at once; the server's RSS in MB around it."""
    idle = rss_kb(pid)
    peak = PeakRss(pid)
    t0 = time.time()
    for pg, path in zip(pages, paths):
        dropzone(pg).set_input_files(str(path))
    saw_waiting = False
    while not all(answer_box(pg).count() for pg in pages):
        saw_waiting = saw_waiting or any(pg.get_by_text("Waiting for another user").count() for pg in pages)
        pages[0].wait_for_timeout(100)
    said = [answer_box(pg).inner_text()[:200] for pg in pages]
    seconds = time.time() - t0
    top = peak.stop()
    time.sleep(5)
    after = rss_kb(pid)
    return {"files": [p.name for p in paths], "idle_mb": round(idle / 1024),
            "peak_above_idle_mb": round((top - idle) / 1024), "after_5s_above_idle_mb": round((after - idle) / 1024),
            "seconds": round(seconds, 1), "saw_waiting": saw_waiting, "page_says": said}


def calibration_upload(pg, paths: list[Path], pid: int, after_close_s: float) -> dict:
    """Upload ``paths`` at once into the Demo's calibration uploader (the first uploader: speaker-adaptive models
    are shipped); the server's RSS in MB around it, and ``after_close_s`` after the tab is closed."""
    pg.get_by_text("Calibrate to your voice").click()
    pg.wait_for_timeout(1000)
    idle = rss_kb(pid)
    peak = PeakRss(pid)
    t0 = time.time()
    pg.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files([str(p) for p in paths])
    said = pg.locator('[data-testid="stAlertContentWarning"]', has_text="Left out").first
    said.wait_for(timeout=600_000)
    seconds = time.time() - t0
    top = peak.stop()
    time.sleep(5)
    after = rss_kb(pid)
    text = said.inner_text()[:200]
    pg.context.close()
    time.sleep(after_close_s)
    closed = rss_kb(pid)
    return {"files": f"{len(paths)} x {paths[0].stat().st_size / 2 ** 20:.0f} MB into the calibration uploader",
            "idle_mb": round(idle / 1024), "peak_above_idle_mb": round((top - idle) / 1024),
            "after_5s_above_idle_mb": round((after - idle) / 1024),
            f"{after_close_s:.0f}s_after_tab_closed_above_idle_mb": round((closed - idle) / 1024),
            "seconds": round(seconds, 1), "page_says": [text]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose app to run")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--calibration-only", action="store_true", help="only the calibration uploader's row")
    ap.add_argument("--after-close", type=float, default=60, help="seconds to wait after closing the calibration tab")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files, pairs = [], []
        if not a.calibration_only:
            files = [hostile_flac(tmp / "hostile.flac"), wide_wav(tmp / "wide.wav"),
                     speech_wav(tmp / "speech_115s.wav", 115), speech_wav(tmp / "too_long_170s.wav", 170),
                     speech_wav(tmp / "oversized_60MB.wav", 160, subtype="FLOAT")]
            pairs = [[hostile_flac(tmp / f"hostile-{level}.flac", level=level) for level in (0.2, 0.3)],
                     [speech_wav(tmp / f"speech_{s}s.wav", s) for s in (118, 119)]]
        calibration = [speech_wav(tmp / f"calibration_{s}s.wav", s) for s in range(240, 248)]  # 45 MB each
        env = {**os.environ, "SER_CACHE_DIR": str(tmp / "cache"), "SER_RESULTS_DB": str(tmp / "results.sqlite")}
        rows = []
        with streamlit_server(env, tmp / "server.log", cwd=a.repo) as url, sync_playwright() as p:
            pid = server_pid(int(url.rsplit(":", 1)[1]))
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            open_demo(browser, url).wait_for_timeout(3000)  # the first session loads the models
            for paths in [[f] for f in files] + pairs:
                pages = [open_demo(browser, url) for _ in paths]
                rows.append(upload(pages, paths, pid))
                print(json.dumps(rows[-1]), flush=True)
                for pg in pages:  # its session ends, and with it what the session holds (its upload, its player)
                    pg.context.close()
            rows.append(calibration_upload(open_demo(browser, url), calibration, pid, a.after_close))
            print(json.dumps(rows[-1]), flush=True)
            browser.close()
    if a.json_out:
        a.json_out.write_text(json.dumps({"repo": str(a.repo), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
