"""`make models` without a fixtures folder: the download path, against a local HTTP server serving the
fixture files under their upstream names (the URL base is a variable; no test reaches the internet).

Checks that the pinned sha256s are the fixtures', that a download builds models/ as the fixtures do,
that a changed file or a server that is down fails with one line and leaves nothing half-written,
and that the Makefile's own recipe downloads when FIXTURES points nowhere.
"""
import functools
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import pytest

from tools import fetch_models

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("DEFECT_FIXTURES", REPO.parent / "shared" / "fixtures"))
LABEL_FILES = ("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt")
# Generous: a cold start of the build (OpenVINO import, DeepLab conversion) on a busy 2-core box.
BUILD_TIMEOUT_S = 300


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
    assert sorted(p.name for p in work.iterdir()) == ["cat.bmp", "deeplabv3_mnv2_dm05_pascal_quant.tflite"]
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
        "sample_cat.jpg"])
    for name in LABEL_FILES:
        assert (out / name).read_bytes() == fixture(name).read_bytes(), name
    # The same JPEG `make models` writes from the fixtures' cat.bmp.
    expected = cv2.imencode(".jpg", cv2.imread(str(fixture("cat.bmp"))), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    assert (out / "sample_cat.jpg").read_bytes() == expected.tobytes()
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
    assert (out / "model.xml").exists() and (out / "deeplabv3.bin").exists()
