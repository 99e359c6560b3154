"""Shared fixtures: real models from `make models`, the real fixtures, the plugin zip run as kuiperd runs it."""
import os

# grpcio 1.81+ restarts its epoll poller in a forked child (grpc/grpc#43055): a process this test run
# starts with subprocess (close_fds) may print "epoll_wait error: Bad file descriptor" before its exec,
# or die there. The run forks to exec only, so gRPC needs no fork support; set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

from core.settings import load_settings
from tests.support.paths import ZIP, unpacked_build


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="local only: skip the tests that need kuiperd, Go or mosquitto (refused in CI)")


def pytest_configure(config):
    # Also declared here (not only in e2e/conftest.py) for tests outside e2e/ that need mosquitto.
    config.addinivalue_line("markers", "e2e: needs a real kuiperd or mosquitto; --fast skips it")
    config.addinivalue_line("markers", "platforms: Debian chroots (debootstrap, qemu); --fast skips it")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
        if "/platforms/" in str(item.path):
            item.add_marker(pytest.mark.platforms)
    # kuiperd (session-scoped) owns /tmp/plugin_defect.ipc until the session ends,
    # so the in-process protocol tests run first.
    items.sort(key=lambda item: "e2e" in item.keywords)
    if config.getoption("--fast"):
        if os.environ.get("CI"):
            raise pytest.UsageError("--fast skips the end-to-end tests; CI runs them all")
        skip = pytest.mark.skip(reason="--fast: needs kuiperd and mosquitto")
        skip_platforms = pytest.mark.skip(reason="--fast: builds Debian chroots (tests/platforms)")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)
            elif "platforms" in item.keywords:
                item.add_marker(skip_platforms)


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    settings = load_settings()
    for path in (settings["label"]["model"], settings["defect"]["model"]):
        if not os.path.isfile(path):
            pytest.fail(f"{path} is missing: run `make models` first")
    # What loads measure is recorded for this session only: the repo's models/ keeps no record
    # from a test, and a test of the measurement itself names its own record.
    settings["tuning"]["record"] = str(tmp_path_factory.mktemp("tuning") / "measured.json")
    return settings


@pytest.fixture(scope="session")
def labeler(settings):
    from label import ImageLabeler
    return ImageLabeler(**settings["label"]).load()


@pytest.fixture(scope="session")
def segmenter(settings):
    from inference import DefectSegmenter
    return DefectSegmenter(**settings["defect"]).load()


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory):
    """build/defect.zip unpacked, as kuiperd unpacks it into plugins/portable/defect."""
    return str(unpacked_build(ZIP, tmp_path_factory.mktemp("plugin") / "defect", "package"))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """One real mosquitto (tools/harness.py) on 127.0.0.1 for the session: the e2e tests' kuiperd and
    the camera bridge's integration tests publish through it."""
    from tools import harness
    broker = harness.Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def camera_clip(tmp_path_factory):
    """(path, scenes) of the shared camera clip (tools/video_clip.py: cat, parrot, surface; 10 fps,
    3 s each, 640x480 H.264 MP4, fresh sensor noise on every frame as a camera has, so every frame
    is served by the models), encoded once per session."""
    from tests.support.clips import session_clip
    return session_clip(tmp_path_factory, noise=2.0)
