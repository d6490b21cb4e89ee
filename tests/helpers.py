"""Helpers shared by the test files: the real-browser setup, a Streamlit server, RAVDESS folders."""
from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's Chromium (Playwright's own browser download fails offline)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def one_sentence(msg: str):
    """``msg`` is what a user is told: one sentence, no traceback."""
    assert msg and (msg[0].isupper() or msg[0] == "'") and msg.endswith(".") and "\n" not in msg, msg
    assert "Traceback" not in msg and msg.count(". ") == 0, msg  # one sentence (no second one after a full stop)


def tone(n: int = 1600) -> np.ndarray:
    return (0.3 * np.sin(np.arange(n) / 5)).astype(np.float32)


def wav_bytes(*, fmt=1, channels=1, rate=16000, bits=16, byte_rate=None, align=None, fmt_size=16, extra=b"",
              riff_size=None, data_size=None, samples=1600) -> bytes:
    """A WAV file whose header says what it is told (each field masked to its width), with ``samples`` 16-bit
    samples of a tone after it."""
    align = channels * bits // 8 if align is None else align
    byte_rate = rate * align if byte_rate is None else byte_rate
    payload = (tone(samples) * 32767).astype("<i2").tobytes()
    fmt_chunk = struct.pack("<HHIIHH", fmt & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF, byte_rate & 0xFFFFFFFF,
                            align & 0xFFFF, bits & 0xFFFF) + extra
    body = (b"WAVE" + b"fmt " + struct.pack("<I", fmt_size & 0xFFFFFFFF) + fmt_chunk + b"data"
            + struct.pack("<I", (len(payload) if data_size is None else data_size) & 0xFFFFFFFF) + payload)
    return b"RIFF" + struct.pack("<I", (len(body) if riff_size is None else riff_size) & 0xFFFFFFFF) + body


def require_chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make chromium` (apt-get install chromium).")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict, log_path: Path, *extra_args, cwd: Path = REPO):
    """Run ``streamlit run streamlit_app.py`` of the checkout ``cwd`` on a free port; yields its URL once
    healthy."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port",
                                 str(port), "--server.headless", "true", "--server.address", "127.0.0.1",
                                 *extra_args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"streamlit did not start: {Path(log_path).read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def symlink_actors(shared_ravdess: Path, root: Path, actors, per_actor: int | None = None) -> Path:
    """``root/Actor_XX/`` with symlinks to the shared clips of the given actors (original names; the first
    ``per_actor`` of each, or all)."""
    for a in actors:
        (root / f"Actor_{a}").mkdir(parents=True)
        for f in sorted((shared_ravdess / f"Actor_{a}").glob("*.flac"))[:per_actor]:
            (root / f"Actor_{a}" / f.name).symlink_to(f)
    return root


def ravdess_48k(shared_ravdess: Path, root: Path, actors, step: int) -> Path:
    """Every ``step``-th clip of the given actors in the official download's format: 48 kHz 16-bit WAV in
    ``root/Audio_Speech_Actors_01-24/Actor_XX/``."""
    import soundfile as sf
    import soxr

    root = root / "Audio_Speech_Actors_01-24"
    for a in actors:
        (root / f"Actor_{a}").mkdir(parents=True)
        for f in sorted((shared_ravdess / f"Actor_{a}").glob("*.flac"))[::step]:
            y, sr = sf.read(f, dtype="float32")
            sf.write(root / f"Actor_{a}" / f.with_suffix(".wav").name, soxr.resample(y, sr, 48000), 48000,
                     subtype="PCM_16")
    return root


def store_run(store, oof, model="svm", dataset="ravdess", params=None, sweep=None, trial=None) -> int:
    """A finished run of ``oof`` (out-of-fold predictions as ``ser_core.saved.load_oof`` gives them) in
    ``store``, recorded as cross_validate records one (a trial of ``sweep``, when given, numbered ``trial``
    there as ``evaluation.record_run`` numbers it); returns its id."""
    import numpy as np

    from ser_core.evaluation import compute_metrics, summarize
    from ser_core.leaderboard import predictions

    labels, pred = [str(c) for c in oof["classes"]], predictions(oof)
    rid = store.start_run(model=model, params=params or {}, feature_set={"name": "rich"}, dataset=dataset,
                          data_root="/data",
                          data_fingerprint="f" * 16, n_clips=len(pred), n_speakers=len(set(oof.get("speaker", []))),
                          split="speaker", splitter="StratifiedGroupKFold(n_splits=4)", k=len(set(oof["fold"])),
                          seed=0, speaker_dependent=False, options={} if trial is None else {"trial": trial},
                          config_hash=f"h{model}{len(pred)}",
                          versions={}, sweep=sweep)
    folds = []
    for f in np.unique(oof["fold"]):
        test = oof["fold"] == f
        folds.append(compute_metrics(oof["y"][test], pred[test], labels))
        store.add_fold(rid, int(f), metrics=folds[-1], n_train=int((~test).sum()), n_test=int(test.sum()),
                       test_speakers=[], train_time_s=1.0, latency_ms=0.1)
    store.add_oof(rid, oof)
    store.finish_run(rid, summary=summarize(folds), labels=labels,
                     confusion=np.sum([f["confusion"] for f in folds], axis=0).tolist(), train_time_s=1.0,
                     latency_ms=0.1, model_size_bytes=1000)
    return rid


@contextmanager
def ray_cluster(temp_dir: Path, workers: int = 1):
    """A Ray cluster on this machine: a head and ``workers`` more nodes, 1 CPU each, every port its own (never
    6379 or another engineer's cluster), ``RAY_AUTH_MODE=disabled`` (token auth refused the second node here).
    Yields ``{"address", "client_address" (ray://), "head", "workers": [Popen]}`` once the head answers (the
    other nodes join in a few seconds); stops its own nodes (their
    process groups), never with ``ray stop``, which would stop every Ray on the machine."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**__import__("os").environ, "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats", "--block"]

    taken: list[int] = []  # every port given to a component of this cluster, drawn before any node starts

    def pick() -> int:
        taken.append(free_port())
        return taken[-1]

    port, client_port, dashboard_port = pick(), pick(), pick()
    named = [[f"--node-manager-port={pick()}", f"--object-manager-port={pick()}",
              f"--dashboard-agent-listen-port={pick()}", f"--dashboard-agent-grpc-port={pick()}",
              f"--runtime-env-agent-port={pick()}", f"--metrics-export-port={pick()}"] for _ in range(1 + workers)]

    def worker_range() -> list[str]:
        """A worker-port range holding no component port of the cluster (Ray refuses to start a node whose
        worker range overlaps one of its components; another node's component there could collide too)."""
        low = free_port()
        while any(low <= p <= low + 200 for p in taken) or low + 200 > 65000:
            low = free_port()
        return [f"--min-worker-port={low}", f"--max-worker-port={low + 200}"]

    ports = iter([[*n, *worker_range()] for n in named])
    address = f"127.0.0.1:{port}"
    nodes = []
    temp_dir.mkdir(parents=True, exist_ok=True)

    def start(args, log):
        nodes.append(subprocess.Popen([ray_bin, "start", *args, *next(ports), *common], env=env,
                                      start_new_session=True, stdout=open(temp_dir / log, "wb"),
                                      stderr=subprocess.STDOUT))
        return nodes[-1]

    try:
        head = start(["--head", f"--port={port}", f"--temp-dir={temp_dir / 'r'}", "--include-dashboard=false",
                      f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}"], "head.log")
        _wait_for(lambda: subprocess.run([ray_bin, "health-check", f"--address={address}"], env=env,
                                         capture_output=True).returncode == 0, head, temp_dir / "head.log")
        extra = [start([f"--address={address}", f'--resources={{"worker_node_{i}": 1}}'], f"worker{i}.log")
                 for i in range(workers)]
        yield {"address": address, "client_address": f"ray://127.0.0.1:{client_port}", "head": head,
               "workers": extra}
    finally:
        for proc in reversed(nodes):
            stop_process_group(proc)


def _wait_for(ready, proc, log: Path, timeout: float = 60):
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"ray start failed: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)


def stop_process_group(proc: subprocess.Popen, grace: float = 2.0):
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace`` seconds (Ray's GCS ignores SIGTERM a while)."""
    import os
    import signal

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the group may outlive its leader (gcs_server, raylet): make sure none of it is left
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
