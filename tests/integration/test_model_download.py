"""`make models` without a fixtures folder: the download path, against a local HTTP server serving the
fixture files under their upstream names (the URL base is a variable; no test reaches the internet).

Checks that the pinned sha256s are the fixtures', that a download builds models/ as the fixtures do,
that a changed file, a server that is down or one that drips bytes fails with one line and leaves
nothing half-written, and that the Makefile's own recipe downloads when FIXTURES points nowhere.
"""
import functools
import hashlib
import http.server
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from tools import fetch_models

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("DEFECT_FIXTURES", REPO.parent / "shared" / "fixtures"))
LABEL_FILES = ("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt")
# Generous: a cold start of the build (OpenVINO import, DeepLab conversion) on a busy 2-core box.
BUILD_TIMEOUT_S = 300
# The slow-server tests: a 2 s budget, a server that sends a byte a second for up to DRIP_S seconds
# (then hangs up: without a budget that holds, the download would end there, not at the budget), and
# a generous bound on the time to the error, well below DRIP_S, for a busy box.
SLOW_BUDGET_S = 2
DRIP_S = 60
SLOW_BOUND_S = 20


def fixture(name: str) -> Path:
    path = FIXTURES / fetch_models.SOURCES[name].fixture_path
    if not path.is_file():
        pytest.fail(f"fixture {path} is missing: put shared/fixtures beside the repo or set DEFECT_FIXTURES")
    return path


def flipped(data: bytes) -> bytes:
    """data with its middle byte changed: what a tampered or corrupted upstream file looks like."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def serve(tmp_path):
    """serve(changed=None) -> URL base of a 127.0.0.1 server holding every source under its upstream
    name, copied from the fixtures; `changed` names one file served with a byte flipped."""
    servers = []

    def start(changed: str | None = None) -> str:
        root = tmp_path / f"upstream{len(servers)}"
        root.mkdir()
        for name in fetch_models.SOURCES:
            shutil.copyfile(fixture(name), root / name)
        if changed:
            (root / changed).write_bytes(flipped((root / changed).read_bytes()))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 functools.partial(QuietHandler, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def down_url():
    """The URL base of a server that is down: a port bound but not listening refuses connections,
    and nobody else can take it while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/"


@pytest.fixture
def drip_url():
    """drip_url(phase) -> URL base of a 127.0.0.1 server that answers every request one byte a second:
    phase "headers" drips the status line and a header, "body" sends the headers (a Content-Length of 1 MB) at once
    and drips the body. Each connection ends after DRIP_S seconds, when the client hangs up, or when
    the test ends."""
    stop = threading.Event()
    servers = []

    def start(phase: str) -> str:
        class Drip(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.recv(65536)  # the request
                if phase == "headers":
                    data = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"x" * DRIP_S
                else:
                    self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    data = b"x" * DRIP_S
                for byte in data[:DRIP_S]:
                    if stop.wait(1):
                        return
                    try:
                        self.request.sendall(bytes([byte]))
                    except OSError:  # the client hung up: what a budget that holds does
                        return

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Drip)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()  # joins the handlers, which stop within a second


def offline_env(**extra: str) -> dict[str, str]:
    # CI=true: OpenVINO's telemetry stays off (it would try to POST a usage event).
    env = {k: v for k, v in os.environ.items() if k not in ("MODELS_URL", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return {**env, "CI": "true", **extra}


def build_models(url: str, out: Path) -> subprocess.CompletedProcess:
    """tools/build_models.py as `make models` runs it with no fixtures folder."""
    return subprocess.run([sys.executable, "tools/build_models.py", "--url", url, "--out", str(out)], cwd=REPO,
                          env=offline_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)


def test_pinned_sha256s_are_the_fixtures():
    assert {name: fetch_models.sha256_of(fixture(name)) for name in fetch_models.SOURCES} == \
        {name: source.sha256 for name, source in fetch_models.SOURCES.items()}


def test_pinned_url_is_a_commit_of_coral_test_data():
    assert fetch_models.UPSTREAM_URL.startswith("https://raw.githubusercontent.com/google-coral/test_data/")
    commit = fetch_models.UPSTREAM_URL.rstrip("/").rsplit("/", 1)[1]
    assert re.fullmatch("[0-9a-f]{40}", commit), "a commit, not a branch"


def test_download_fetches_the_fixtures_bytes(serve, tmp_path):
    out, work = tmp_path / "models", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    paths = fetch_models.fetch_sources(serve(), LABEL_FILES, str(out), str(work))
    assert sorted(p.name for p in out.iterdir()) == sorted(LABEL_FILES)
    assert sorted(p.name for p in work.iterdir()) == [
        "cat.bmp", "deeplabv3_mnv2_dm05_pascal_quant.tflite", "parrot.jpg"]
    for name, path in paths.items():
        assert Path(path).read_bytes() == fixture(name).read_bytes(), name


def test_a_verified_file_is_not_fetched_again(serve, down_url, tmp_path):
    out = tmp_path / "models"
    out.mkdir()
    fetch_models.fetch_sources(serve(), LABEL_FILES, str(out), str(out))
    # Everything is in place with its pinned sha256: a server that is down is never asked.
    assert len(fetch_models.fetch_sources(down_url, LABEL_FILES, str(out), str(out))) == len(fetch_models.SOURCES)


def test_a_missing_file_is_an_http_error(tmp_path, serve):
    url = serve()
    with pytest.raises(fetch_models.DownloadError, match=r"^cat\.bmp: HTTP 404 .* from http://127\.0\.0\.1:\d+/x/cat\.bmp$"):
        fetch_models.download("cat.bmp", url + "x", str(tmp_path / "cat.bmp"))
    assert list(tmp_path.iterdir()) == [tmp_path / "upstream0"]


def test_download_builds_models_as_the_fixtures_do(serve, tmp_path):
    out = tmp_path / "models"
    done = build_models(serve(), out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([
        *LABEL_FILES, "model.xml", "model.bin", "deeplabv3.xml", "deeplabv3.bin", "sample_surface.png",
        "sample_cat.jpg", "sample_cat_720p.jpg", "sample_parrot.jpg"])
    for name in LABEL_FILES:
        assert (out / name).read_bytes() == fixture(name).read_bytes(), name
    # The same JPEG `make models` writes from the fixtures' cat.bmp.
    expected = cv2.imencode(".jpg", cv2.imread(str(fixture("cat.bmp"))), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    assert (out / "sample_cat.jpg").read_bytes() == expected.tobytes()
    # The camera clip's frames (make demo): the fixtures' parrot as it is; the cat as a 720p frame that
    # stands in for the fixtures' cat_720p.jpg (the same photo stretched to 16:9: close to it).
    assert (out / "sample_parrot.jpg").read_bytes() == fixture("parrot.jpg").read_bytes()
    cat_720p = cv2.imread(str(out / "sample_cat_720p.jpg"))
    fixtures_720p = cv2.imread(str(FIXTURES / "images" / "cat_720p.jpg"))
    assert cat_720p.shape == fixtures_720p.shape == (720, 1280, 3)
    assert cv2.absdiff(cat_720p, fixtures_720p).mean() < 8  # another photo: 55 to 85
    assert "<layers>" in (out / "deeplabv3.xml").read_text()


def test_a_changed_file_fails_in_one_line_and_leaves_nothing(serve, tmp_path):
    out = tmp_path / "models"
    got = hashlib.sha256(flipped(fixture("imagenet_labels.txt").read_bytes())).hexdigest()
    url = serve(changed="imagenet_labels.txt")
    done = build_models(url, out)
    assert done.returncode == 1
    expected = fetch_models.SOURCES["imagenet_labels.txt"].sha256
    assert done.stderr.splitlines() == [
        f"models: imagenet_labels.txt: checksum mismatch, expected sha256 {expected} got {got} "
        f"(from {url}imagenet_labels.txt)"]
    # The file before it was verified and stays; the changed one never reaches the output folder.
    assert sorted(p.name for p in out.iterdir()) == ["mobilenet_v2_1.0_224_quant.tflite"]


def test_a_server_that_is_down_fails_in_one_line(down_url, tmp_path):
    out = tmp_path / "models"
    done = build_models(down_url, out)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    name = "mobilenet_v2_1.0_224_quant.tflite"
    pattern = rf"models: {re.escape(name)}: {re.escape(down_url + name)} unreachable \(.*refused\)"
    assert re.fullmatch(pattern, line), line
    assert list(out.iterdir()) == []


def test_make_models_downloads_when_fixtures_are_absent(serve, tmp_path):
    """The Makefile's own recipe (`-W`: as if build_models.py had changed, so it runs; `-o`: the venv
    is taken as built), with FIXTURES pointing nowhere and MODELS_URL at the local server."""
    out = tmp_path / "models"
    done = subprocess.run(
        ["make", "--no-print-directory", "-W", "tools/build_models.py", "-o", ".venv/.installed", "models/.built",
         f"FIXTURES={tmp_path / 'no-fixtures'}", f"MODELS_URL={serve()}", f"MODELS_OUT={out}"],
        cwd=REPO, env=offline_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--fixtures" not in done.stdout and "models: downloading cat.bmp from http://127.0.0.1:" in done.stdout
    assert (out / ".built").exists()
    for name in LABEL_FILES:
        assert (out / name).read_bytes() == fixture(name).read_bytes(), name
    assert cv2.imread(str(out / "sample_cat.jpg")).shape == (341, 512, 3)
    assert (out / "sample_parrot.jpg").read_bytes() == fixture("parrot.jpg").read_bytes()
    assert (out / "model.xml").exists() and (out / "deeplabv3.bin").exists()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_server_that_drips_bytes_fails_within_the_budget(drip_url, tmp_path, phase):
    """A socket timeout bounds one read only: a byte a second keeps every read short. The budget holds
    for the whole download, whether the server drips the status line or the body."""
    url = drip_url(phase)
    started = time.monotonic()
    with pytest.raises(fetch_models.DownloadError) as error:
        fetch_models.download("cat.bmp", url, str(tmp_path / "cat.bmp"), budget_s=SLOW_BUDGET_S)
    elapsed = time.monotonic() - started
    assert str(error.value) == f"cat.bmp: not received within {SLOW_BUDGET_S} s from {url}cat.bmp"
    assert elapsed < SLOW_BOUND_S, f"the {SLOW_BUDGET_S} s budget held for {elapsed:.1f} s"
    assert list(tmp_path.iterdir()) == []


def test_make_models_with_a_dripping_server_fails_in_one_line(drip_url, tmp_path):
    """The tool's own failure: one line on stderr, exit 1, nothing in the output folder; within the
    budget (the bound also covers the tool's start-up: OpenVINO's import on a busy box)."""
    out, url = tmp_path / "models", drip_url("body")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "tools/build_models.py", "--url", url, "--out", str(out),
                           "--budget-s", str(SLOW_BUDGET_S)], cwd=REPO, env=offline_env(),
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    elapsed = time.monotonic() - started
    name = "mobilenet_v2_1.0_224_quant.tflite"
    assert (done.returncode, done.stderr.splitlines()) == (
        1, [f"models: {name}: not received within {SLOW_BUDGET_S} s from {url}{name}"])
    assert elapsed < DRIP_S, f"took {elapsed:.1f} s"
    assert list(out.iterdir()) == []
