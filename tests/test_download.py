"""Downloads over file:// and a local HTTP server: resume, checksum, extraction, offline errors."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_core.corpora import load_corpus
from ser_core.download import (DATASETS, _parse_checksum, download_dataset, download_file, extract_archive)
from ser_core.errors import ConfigError, DownloadError

NAMES = ["Actor_01/03-01-05-02-01-01-01.wav", "Actor_01/03-01-01-01-01-01-01.wav",
         "Actor_02/03-01-03-01-02-02-02.wav", "Actor_02/03-01-04-02-01-02-02.wav"]


@pytest.fixture
def ravdess_zip(tmp_path) -> Path:
    """A zip laid out like Audio_Speech_Actors_01-24.zip (Actor_XX/ at the top), 4 clips of 0.3 s."""
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(np.arange(14400) / 7)).astype(np.float32), 48000, format="WAV")
    path = tmp_path / "src" / "Audio_Speech_Actors_01-24.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for n in NAMES:
            zf.writestr(n, buf.getvalue())
    return path


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path but /missing; honours Range unless ``server.honor_range`` is off."""

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if self.path == "/missing":
            self.send_error(404)
            return
        data, rng = srv.payload, self.headers.get("Range")
        if rng and srv.honor_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if srv.cut_after:  # simulate a connection that drops mid-transfer
            data, srv.cut_after = data[:srv.cut_after], 0
            self.close_connection = True
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload, srv.honor_range, srv.ranges, srv.cut_after = bytes(range(256)) * 1000, True, [], 0
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_file_url_download_with_checksums_and_progress(ravdess_zip, tmp_path, capsys):
    data = ravdess_zip.read_bytes()
    dest = download_file(ravdess_zip.as_uri(), tmp_path / "out" / "a.zip", md5=hashlib.md5(data).hexdigest(),
                         sha256=hashlib.sha256(data).hexdigest(), chunk_size=1000)
    assert dest.read_bytes() == data and not (tmp_path / "out" / "a.zip.part").exists()
    assert "a.zip" in capsys.readouterr().err  # the tqdm bar went to stderr


def test_file_url_resume_appends_to_part(ravdess_zip, tmp_path):
    data = ravdess_zip.read_bytes()
    dest = tmp_path / "a.zip"
    Path(str(dest) + ".part").write_bytes(b"X" * 100)  # marker bytes prove the part was kept, not rewritten
    download_file(ravdess_zip.as_uri(), dest, progress=False)
    assert dest.read_bytes() == b"X" * 100 + data[100:]


def test_http_range_resume(server, tmp_path):
    dest = tmp_path / "blob.bin"
    Path(str(dest) + ".part").write_bytes(b"X" * 5000)
    download_file(server.url + "/blob.bin", dest, progress=False)
    assert server.ranges == ["bytes=5000-"]
    assert dest.read_bytes() == b"X" * 5000 + server.payload[5000:]


def test_http_interrupted_then_resumed(server, tmp_path):
    server.cut_after = 70_000
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="run again to resume"):
        download_file(server.url + "/blob.bin", dest, progress=False, chunk_size=4096)
    assert Path(str(dest) + ".part").stat().st_size == 70_000 and not dest.exists()
    download_file(server.url + "/blob.bin", dest, progress=False, md5=hashlib.md5(server.payload).hexdigest())
    assert server.ranges == [None, "bytes=70000-"] and dest.read_bytes() == server.payload


def test_http_restart_when_range_ignored(server, tmp_path):
    server.honor_range = False
    dest = tmp_path / "blob.bin"
    Path(str(dest) + ".part").write_bytes(b"X" * 5000)
    download_file(server.url + "/blob.bin", dest, progress=False, md5=hashlib.md5(server.payload).hexdigest())
    assert dest.read_bytes() == server.payload


def test_http_complete_part_and_existing_dest(server, tmp_path):
    dest = tmp_path / "blob.bin"
    Path(str(dest) + ".part").write_bytes(server.payload)  # complete already: the server answers 416
    download_file(server.url + "/blob.bin", dest, progress=False, sha256=hashlib.sha256(server.payload).hexdigest())
    assert dest.read_bytes() == server.payload
    download_file(server.url + "/blob.bin", dest, progress=False)  # present: no request at all
    assert server.ranges == ["bytes=%d-" % len(server.payload)]


def test_checksum_mismatch_removes_file(server, tmp_path):
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="Checksum mismatch.*md5"):
        download_file(server.url + "/blob.bin", dest, md5="0" * 32, progress=False)
    assert not dest.exists() and not Path(str(dest) + ".part").exists()


def test_offline_and_http_errors(server, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/Audio_Speech_Actors_01-24.zip"
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "x.zip", progress=False, timeout=5)
    msg = str(err.value)
    assert msg.startswith(f"Could not reach 127.0.0.1:{port}:") and f"by hand from {url}" in msg
    assert "--archive PATH" in msg
    with pytest.raises(DownloadError, match="Could not reach"):
        download_dataset("ravdess", tmp_path / "data", url=url, progress=False)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "/missing", tmp_path / "y.zip", progress=False)


def test_download_dataset_extracts_and_skips(ravdess_zip, tmp_path):
    md5 = hashlib.md5(ravdess_zip.read_bytes()).hexdigest()
    data_dir = tmp_path / "data"
    folder = download_dataset("ravdess", data_dir, url=ravdess_zip.as_uri(), checksum=f"md5:{md5}", progress=False)
    assert folder == data_dir / "ravdess" and not (data_dir / ravdess_zip.name).exists()  # archive removed
    corpus = load_corpus(folder)
    assert corpus.name == "ravdess" and len(corpus.manifest) == 4 and corpus.skipped == []
    # already extracted: returned without touching the (now unreachable) URL
    assert download_dataset("ravdess", data_dir, url="http://127.0.0.1:9/none.zip") == folder
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        download_dataset("ravdess", tmp_path / "d2", url=ravdess_zip.as_uri(), checksum="md5:" + "1" * 32,
                         progress=False)
    assert not (tmp_path / "d2" / "ravdess").exists()


def test_download_dataset_from_local_archive(ravdess_zip, tmp_path):
    folder = download_dataset("ravdess", tmp_path / "data", archive=ravdess_zip)
    assert len(load_corpus(folder).manifest) == 4 and ravdess_zip.exists()  # the user's archive is kept
    with pytest.raises(DownloadError, match="does not exist"):
        download_dataset("ravdess", tmp_path / "d3", archive=tmp_path / "nope.zip")
    (tmp_path / "bad.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DownloadError, match="not a valid"):
        download_dataset("ravdess", tmp_path / "d4", archive=tmp_path / "bad.zip")
    assert not (tmp_path / "d4" / "ravdess").exists()


def test_path_traversal_refused(tmp_path):
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as zf:
        zf.writestr("ok/fine.txt", "x")
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(DownloadError, match="outside the target folder"):
        extract_archive(evil_zip, tmp_path / "out")
    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as tf:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DownloadError, match="outside the target folder"):
        extract_archive(evil_tar, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


def test_dataset_table_and_names(tmp_path):
    assert _parse_checksum(DATASETS["ravdess"].checksum) == ("md5", "bc696df654c87fed845eb13823edef8a")
    assert DATASETS["ravdess"].url.startswith("https://zenodo.org/")
    for spec in DATASETS.values():
        assert spec.page.startswith("http") and spec.folder
    with pytest.raises(DownloadError, match="no direct download.*--archive PATH"):
        download_dataset("tess", tmp_path)
    with pytest.raises(ConfigError, match="Did you mean ravdess"):
        download_dataset("ravdes", tmp_path)
    with pytest.raises(ConfigError, match="Bad checksum"):
        _parse_checksum("sha1:abcd")


def test_progress_callable_reports_bytes(tmp_path):
    from ser_core.download import download_file

    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 300_000)
    seen = []
    download_file(src.as_uri(), tmp_path / "out.bin", progress=lambda done, total: seen.append((done, total)),
                  chunk_size=100_000)
    assert seen[-1] == (300_000, 300_000) and len(seen) == 3
