"""camera/camera.py as its own process against a real mosquitto and real cameras: the shared clip as
a file and as a live HTTP MJPEG stream served by ffmpeg (tools/video_clip.py).

The parsing tests need neither; the rest are marked e2e (mosquitto), so `--fast` skips them.
Frame counts are compared over windows with wide margins: the box is shared, timings are not asserted.
"""
import base64
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from camera.camera_source import CameraSource, redacted
from camera.frame_publisher import Broker
from core.errors import InputError
from tests.support.clips import fixture_photos, session_clip
from tests.support.paths import REPO
from tools import harness
from tools.camera_bridge_process import CAMERA, BridgeProcess
from tools.free_port import free_port
from tools.video_clip import http_mjpeg_server, scene_images

e2e = pytest.mark.e2e  # needs mosquitto


# ---------------------------------------------------------------- parsing (no broker, no camera)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", None, False)),
    ("broker.local:1884", ("broker.local", 1884, False)),
    ("mqtts://broker.local", ("broker.local", None, True)),
    ("tcp://10.0.0.2:1883/", ("10.0.0.2", 1883, False)),
    ("[::1]:8883", ("::1", 8883, False)),
])
def test_broker_addresses(text, expected):
    assert Broker.parse_address(text) == expected


@pytest.mark.parametrize("text, word", [("ws://h:1", "unknown scheme"), ("h:99999", "port"), (":1883", "no host")])
def test_bad_broker_addresses(text, word):
    with pytest.raises(InputError, match=word):
        Broker.parse_address(text)


def test_sources(tmp_path):
    clip = tmp_path / "line 1.mp4"
    clip.write_bytes(b"not checked until opened")
    assert CameraSource.parse("0").kind == "device"
    assert CameraSource.parse("0").default_name == "video0"
    assert CameraSource.parse("rtsp://cam.local:554/s1").default_name == "cam.local"
    assert CameraSource.parse(str(clip)).default_name == "line 1"
    assert CameraSource.parse(clip.as_uri()).target == str(clip)  # file:///.../line%201.mp4
    assert redacted("rtsp://admin:secret@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert "secret" not in CameraSource.parse("rtsp://admin:secret@10.0.0.5/s1").label
    for bad in ("", "ftp://x/y", str(tmp_path / "missing.mp4"), str(tmp_path)):
        with pytest.raises(InputError):
            CameraSource.parse(bad)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """30 frames at 5 fps: 10 of a cat, 10 of a parrot, 10 of a surface."""
    return session_clip(tmp_path_factory, fps=5, seconds_per_scene=2.0)


@pytest.fixture
def subscribe(mosquitto):
    made = []

    def make(topic, host=None, port=None):
        made.append(harness.MqttCollector(host or mosquitto.host, port or mosquitto.port, topic))
        return made[-1]
    yield make
    for collector in made:
        collector.close()


@pytest.fixture
def bridge(mosquitto, tmp_path):
    """bridge(source, *options, topic=..., mqtt=...) -> a started BridgeProcess; killed at the end if left running."""
    made = []

    def make(source, *options, topic="frames", mqtt=None, env=None):
        process = BridgeProcess(str(source), mqtt or f"{mosquitto.host}:{mosquitto.port}", topic, *options,
                                log_path=tmp_path / f"bridge{len(made)}.log", env=env)
        made.append(process)
        return process.start()
    yield make
    for process in made:
        process.__exit__()


def decode(jpeg: bytes) -> np.ndarray:
    assert jpeg[:3] == b"\xff\xd8\xff", f"not a JPEG: {jpeg[:16]!r}"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def nearest_scene(image: np.ndarray) -> str:
    """The clip scene a frame shows (by mean absolute difference at the frame's size)."""
    h, w = image.shape[:2]
    differences = {name: float(np.mean(cv2.absdiff(cv2.resize(reference, (w, h), interpolation=cv2.INTER_AREA),
                                                   image)))
                   for name, reference, _ in scene_images(photos=fixture_photos())}
    return min(differences, key=differences.get)


def wait_payloads(collector, n: int, timeout: float = 10) -> list[bytes]:
    return [message.payload for message in collector.wait_for(n, timeout)]


def count_in_window(collector, seconds: float) -> int:
    before = len(collector.payloads())
    time.sleep(seconds)
    return len(collector.payloads()) - before


# ---------------------------------------------------------------- a file


@e2e
def test_a_file_sends_every_frame_in_order_then_ends(clip, subscribe, bridge):
    path, scenes = clip
    out = subscribe("file_frames")
    process = bridge(path, "--fps", "15", topic="file_frames")
    assert process.wait(60) == 0, process.log()
    payloads = wait_payloads(out, 30)
    time.sleep(1)
    assert len(out.payloads()) == 30, "a file without --loop sends each of its frames once"
    shown = [nearest_scene(decode(p)) for p in payloads]
    assert shown == ["cat"] * 10 + ["parrot"] * 10 + ["surface"] * 10
    assert decode(payloads[0]).shape == (480, 640, 3)
    assert "stopped: sent 30 frames" in process.lines()[-1]


@e2e
@pytest.mark.parametrize("fps, sent", [(2, 18), (20, 90)])
def test_realtime_plays_a_file_at_its_own_speed(fps, sent, camera_clip, subscribe, bridge):
    """The 10 fps clip (3 s a scene) at --fps 2 sends every fifth frame; at --fps 20 each frame once."""
    path, _ = camera_clip
    out = subscribe(f"realtime_{fps}")
    process = bridge(path, "--fps", str(fps), "--realtime", topic=f"realtime_{fps}")
    assert process.wait(90) == 0, process.log()
    payloads = wait_payloads(out, sent)
    time.sleep(1)
    assert len(out.payloads()) == sent
    each = sent // 3
    assert [nearest_scene(decode(p)) for p in payloads] == ["cat"] * each + ["parrot"] * each + ["surface"] * each
    assert "dropped 68 " in process.lines()[-1] if fps == 2 else "dropped 0 " in process.lines()[-1]


@e2e
def test_width_and_quality(clip, subscribe, bridge):
    path, _ = clip
    sizes = {}
    for quality in ("30", "95"):
        out = subscribe(f"sized_{quality}")
        process = bridge(path, "--fps", "30", "--width", "320", "--quality", quality, topic=f"sized_{quality}")
        assert process.wait(60) == 0, process.log()
        payloads = wait_payloads(out, 30)
        assert decode(payloads[0]).shape == (240, 320, 3)  # 640x480 at width 320 keeps 4:3
        assert nearest_scene(decode(payloads[0])) == "cat"
        sizes[quality] = len(payloads[0])
    assert sizes["30"] < sizes["95"] * 0.6, sizes


@e2e
def test_json_field_payload(clip, subscribe, bridge):
    path, _ = clip
    out = subscribe("json_frames")
    began = time.time() * 1000
    process = bridge(path, "--fps", "30", "--json-field", "image", "--camera-name", "line-1", topic="json_frames")
    assert process.wait(60) == 0, process.log()
    rows = [json.loads(p) for p in wait_payloads(out, 30)]
    assert all(set(row) == {"image", "ts", "camera"} for row in rows)
    assert all(row["camera"] == "line-1" for row in rows)
    stamps = [row["ts"] for row in rows]
    assert stamps == sorted(stamps) and began <= stamps[0] <= stamps[-1] <= time.time() * 1000
    assert nearest_scene(decode(base64.b64decode(rows[15]["image"], validate=True))) == "parrot"
    other = subscribe("json_default_name")
    bridge(path, "--fps", "30", "--json-field", "picture", topic="json_default_name").wait(60)
    row = json.loads(wait_payloads(other, 1)[0])
    assert set(row) == {"picture", "ts", "camera"} and row["camera"] == path.stem


# ---------------------------------------------------------------- rate


@e2e
def test_the_rate_is_honoured(camera_clip, clip, subscribe, bridge):
    """The shared camera clip (10 fps) live at --fps 2 gives about 2 frames a second, and the rest count as dropped;
    a looping file at --fps 4 gives about 4."""
    with http_mjpeg_server(camera_clip[0]) as camera:
        live = subscribe("rate_live")
        process = bridge(camera.url, "--fps", "2", "--progress", "2", topic="rate_live")
        live.wait_for(1, timeout=30)
        sent = count_in_window(live, 6)
        assert 4 <= sent <= 2 * 6 + 2, sent
        line = process.wait_for_line("dropped", after=2)
        dropped = int(line.split("dropped ")[1].split()[0])
        assert dropped > 0, line
        assert process.stop() == 0
    looped = subscribe("rate_file")
    process = bridge(clip[0], "--fps", "4", "--loop", topic="rate_file")
    looped.wait_for(1, timeout=30)
    sent = count_in_window(looped, 6)
    assert 8 <= sent <= 4 * 6 + 2, sent
    time.sleep(3)  # past the clip's 30 frames (7.5 s): --loop starts it again
    assert process.alive()
    assert process.stop() == 0


# ---------------------------------------------------------------- outages


@e2e
def test_the_camera_goes_away_and_comes_back(camera_clip, subscribe, bridge):
    with http_mjpeg_server(camera_clip[0]) as camera:
        out = subscribe("camera_outage")
        process = bridge(camera.url, "--fps", "5", topic="camera_outage")
        out.wait_for(3, timeout=30)
        camera.stop()
        process.wait_for_line("lost")
        seen = len(out.payloads())
        time.sleep(3)
        assert process.alive(), process.log()
        camera.start()
        process.wait_for_line("is back", timeout=30)
        out.wait_for(seen + 5, timeout=30)
        assert process.stop() == 0


@e2e
def test_the_broker_is_late_then_goes_away_and_comes_back(clip, bridge, tmp_path):
    own = harness.Mosquitto(tmp_path / "own_broker")  # its port is chosen; it starts after the bridge
    try:
        process = bridge(clip[0], "--fps", "5", "--loop", topic="broker_outage", mqtt=f"{own.host}:{own.port}")
        process.wait_for_line("not reachable")
        own.start()
        process.wait_for_line("connected to", timeout=30)
        first = harness.MqttCollector(own.host, own.port, "broker_outage")
        first.wait_for(3, timeout=30)
        first.close()
        own.stop()
        process.wait_for_line("lost")
        time.sleep(3)
        assert process.alive(), process.log()
        own.start()  # same port
        process.wait_for_line("is back", timeout=30)
        again = harness.MqttCollector(own.host, own.port, "broker_outage")
        try:
            again.wait_for(5, timeout=30)
        finally:
            again.close()
        assert process.stop() == 0
        summary = process.lines()[-1]
        assert "stopped" in summary and int(summary.split("+ ")[1].split()[0]) > 0, summary  # broker-away drops
    finally:
        own.stop()


@e2e
def test_a_broker_that_comes_back_gets_the_present_not_a_backlog(camera_clip, bridge, tmp_path):
    """A live camera streams on while the broker is away for 4 s: what arrives once it is back was
    read after it came back (JSON `ts`), so nothing read during the outage, or before it, is sent late;
    and it comes at the --fps rate, not as a burst."""
    own = harness.Mosquitto(tmp_path / "own_broker").start()
    try:
        with http_mjpeg_server(camera_clip[0]) as camera:
            process = bridge(camera.url, "--fps", "5", "--json-field", "image", topic="backlog",
                             mqtt=f"{own.host}:{own.port}")
            before = harness.MqttCollector(own.host, own.port, "backlog")
            before.wait_for(5, timeout=30)
            before.close()
            own.stop()
            stopped_ms = time.time() * 1000
            process.wait_for_line("lost")
            time.sleep(4)
            back_ms = time.time() * 1000
            own.start()
            after = harness.MqttCollector(own.host, own.port, "backlog")
            try:
                process.wait_for_line("is back", timeout=30)
                rows = [json.loads(m.payload) for m in after.wait_for(10, timeout=30)]
            finally:
                after.close()
            assert process.stop() == 0
    finally:
        own.stop()
    stamps = [row["ts"] for row in rows]
    assert min(stamps) >= back_ms, (f"a frame read {back_ms - min(stamps):.0f} ms before the broker came back "
                                    f"(it went away {back_ms - stopped_ms:.0f} ms before that)", stamps)
    assert stamps == sorted(stamps)
    first_second = sum(1 for ts in stamps if ts < stamps[0] + 1000)
    assert first_second <= 5 + 2, stamps  # one a slot, not the outage's frames at once


class Knocks:
    """A TCP port that accepts each connection and closes it at once, noting when: a camera that is
    there and answers nothing, so every reopen of the bridge is one knock (or a few close together)."""

    def __init__(self, port, wait_s=10):
        deadline = time.monotonic() + wait_s
        while True:  # the port of a camera that just stopped: taken once its server let it go
            try:
                self.server = socket.create_server(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {port} stayed taken"
                time.sleep(0.1)
        self.times = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.times.append(time.monotonic())
            connection.close()

    def attempts(self):
        """Start times of reopen attempts: knocks less than 0.3 s after the previous are the same attempt's."""
        starts, last = [], None
        for t in list(self.times):
            if last is None or t - last > 0.3:
                starts.append(t)
            last = t
        return starts


@e2e
def test_a_lost_camera_is_reopened_with_backoff_doubling_to_10_s(camera_clip, subscribe, bridge):
    """README: reopened with backoff (0.5 s, doubling, at most 10 s). The camera comes back as a port
    that closes every connection: the gaps between reopen attempts double, then stay at the cap."""
    with http_mjpeg_server(camera_clip[0]) as camera:
        out = subscribe("backoff")
        process = bridge(camera.url, "--fps", "5", "--timeout", "2", topic="backoff")
        out.wait_for(2, timeout=30)
        camera.stop()
        knocks = Knocks(camera.port)
        try:
            process.wait_for_line("lost")
            harness.wait_until(lambda: len(knocks.attempts()) >= 8, 90, what="8 reopen attempts")
        finally:
            knocks.server.close()
        assert process.stop() == 0
    starts = knocks.attempts()[:8]
    gaps = [round(b - a, 1) for a, b in zip(starts, starts[1:], strict=False)]
    # The first attempt comes 0.5 s after the loss, then 1, 2, 4, 8, 10, 10 s apart: each gap is a
    # backoff plus that attempt's own open (at most --timeout 2 s, far less here).
    expected = [min(0.5 * 2 ** i, 10) for i in range(1, len(gaps) + 1)]
    assert all(e <= g <= e + 3 for g, e in zip(gaps, expected, strict=True)), (gaps, expected)


@e2e
def test_a_broker_that_drops_every_connection_is_retried_with_backoff_doubling_to_10_s(clip, tmp_path):
    """README: the broker is reconnected with backoff (1 s, doubling, at most 10 s), paho's own."""
    knocks = Knocks(0)
    process = BridgeProcess(str(clip[0]), f"127.0.0.1:{knocks.server.getsockname()[1]}", "t", "--fps", "5", "--loop",
                            log_path=tmp_path / "bridge.log").start()
    try:
        harness.wait_until(lambda: len(knocks.attempts()) >= 7, 90, what="7 connection attempts")
    finally:
        knocks.server.close()
        process.__exit__()
    starts = knocks.attempts()[:7]
    gaps = [round(b - a, 1) for a, b in zip(starts, starts[1:], strict=False)]
    expected = [min(2 ** i, 10) for i in range(len(gaps))]
    print("broker reconnect gaps", gaps)
    assert all(e <= g <= e + 3 for g, e in zip(gaps, expected, strict=True)), (gaps, expected)


# ---------------------------------------------------------------- errors and stopping


@pytest.fixture(scope="module")
def web_server():
    """An HTTP server that is no camera: /locked wants a password, /page is a web page."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            locked = self.path == "/locked"
            body = b"" if locked else b"<html>a camera's web page</html>"
            self.send_response(401 if locked else 200)
            self.send_header("Content-Type", "text/html")
            if locked:
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("source, options, reason", [
    ("http://127.0.0.1:{port}/cam", (), "Connection refused"),
    ("{web}/locked", (), "HTTP 401 Unauthorized"),
    ("http://admin:secret@{web_host}/locked", (), "HTTP 401 Unauthorized"),
    ("{web}/page", (), "it answers text/html"),
    ("rtsp://user:secret@127.0.0.1:{port}/s1", (), "Connection refused"),
    ("{tmp}/missing.mp4", (), "no such file"),
    ("{tmp}/notes.mp4", (), "not a video"),
    ("ftp://127.0.0.1/cam", (), "unknown scheme"),
    ("rtsp://user:secret@127.0.0.1:99999/s1", (), "bad URL in SOURCE: Port out of range"),
    ("{tmp}/notes.mp4", ("--fps", "0"), "--fps"),
    ("{tmp}/notes.mp4", ("--quality", "101"), "--quality"),
    ("{tmp}/notes.mp4", ("--mqtt", "h:x"), "port"),
    ("{tmp}/notes.mp4", ("--tls-ca", "{tmp}/none.pem"), "no such file"),
])
def test_a_bad_source_or_option_is_one_line_and_exit_2(source, options, reason, tmp_path, web_server):
    """No broker is needed: a source that never gave a frame fails before the bridge connects."""
    (tmp_path / "notes.mp4").write_text("a text file, not a video\n")
    fill = {"port": free_port(), "tmp": tmp_path, "web": web_server, "web_host": web_server.removeprefix("http://")}
    command = [sys.executable, CAMERA, source.format(**fill), "--topic", "t", *(o.format(**fill) for o in options)]
    r = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camera.py: ") and reason in lines[0], r.stderr
    assert "secret" not in r.stderr


# ---------------------------------------------------------------- where a source may lead the bridge


class Recorder(http.server.ThreadingHTTPServer):
    """An HTTP server on `host` that records (path, Authorization) of each request and answers
    with answer(server, handler): (status, headers, body)."""

    def __init__(self, host, answer):
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Authorization")))
                status, headers, body = answer(server, self)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        super().__init__((host, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self):
        return f"{self.server_address[0]}:{self.server_address[1]}"

    def close(self):
        self.shutdown()
        self.server_close()


CHALLENGE = (401, {"WWW-Authenticate": 'Basic realm="camera"'}, b"")
WEB_PAGE = (200, {"Content-Type": "text/html"}, b"<html>no video here</html>")


def run_bridge(source, tmp_path, env=None, timeout=60):
    """camera.py SOURCE, which must fail before it needs a broker: exit 2, one line."""
    r = subprocess.run([sys.executable, CAMERA, source, "--topic", "t", "--timeout", "5"], capture_output=True,
                       text=True, timeout=timeout, cwd=tmp_path, env={**os.environ, **(env or {})})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (r.returncode, r.stderr)
    return r.stderr


def test_credentials_do_not_follow_a_redirect_to_another_host(tmp_path):
    """The camera asks for the password, then redirects to another host (127.0.0.2), which shows a
    web page to a request without credentials: FFmpeg gives up without a reason, so the bridge asks
    the camera itself what it answers (http_answer). Neither may take the password along."""
    elsewhere = Recorder("127.0.0.2", lambda server, request: WEB_PAGE)
    camera = Recorder("127.0.0.1", lambda server, request: (
        (302, {"Location": f"http://{elsewhere.address}/video"}, b"") if request.headers.get("Authorization")
        else CHALLENGE))
    try:
        said = run_bridge(f"http://admin:secret@{camera.address}/video", tmp_path)
    finally:
        camera.close()
        elsewhere.close()
    assert "it answers text/html" in said, said  # both FFmpeg and http_answer went there
    login = "Basic " + base64.b64encode(b"admin:secret").decode()
    assert login in [auth for _, auth in camera.requests], camera.requests  # the camera did get it
    assert len(elsewhere.requests) >= 2 and all(auth is None for _, auth in elsewhere.requests), elsewhere.requests


@pytest.mark.parametrize("login", ["admin:secret@", ""], ids=["credentials", "none"])
def test_an_http_proxy_never_sees_a_cameras_credentials(login, tmp_path):
    """With http_proxy set, a camera URL with credentials is reached directly; one without goes
    through the proxy as before (which shows the proxy is live, so the first case can fail)."""
    proxy = Recorder("127.0.0.1", lambda server, request: CHALLENGE)  # a proxy that wants the password too
    camera = Recorder("127.0.0.2", lambda server, request: WEB_PAGE if request.headers.get("Authorization")
                      else CHALLENGE)
    try:
        run_bridge(f"http://{login}{camera.address}/video", tmp_path,
                   env={"http_proxy": f"http://{proxy.address}", "HTTP_PROXY": f"http://{proxy.address}",
                        "no_proxy": "", "NO_PROXY": ""})
    finally:
        proxy.close()
        camera.close()
    if login:
        assert proxy.requests == [], proxy.requests
        assert "Basic " + base64.b64encode(b"admin:secret").decode() in [auth for _, auth in camera.requests]
    else:
        assert proxy.requests and not camera.requests, (proxy.requests, camera.requests)


@pytest.fixture
def probes(tmp_path):
    """A FIFO (a local file: opening it for reading is seen) and an HTTP server on another host."""
    fifo = tmp_path / "secret.ts"
    os.mkfifo(fifo)
    opened = threading.Event()

    def watch():
        with open(fifo, "wb"):  # returns once a reader opens it
            opened.set()
    threading.Thread(target=watch, daemon=True).start()
    web = Recorder("127.0.0.2", lambda server, request: (404, {}, b""))
    yield fifo, opened, web
    web.close()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the watcher end when nothing opened it


def playlist(fifo, web):
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile://{fifo}\n"
            f"#EXTINF:2.0,\nhttp://{web.address}/segment.ts\n#EXT-X-ENDLIST\n").encode()


def test_a_tcp_source_cannot_lead_ffmpeg_to_files_or_other_protocols(probes, tmp_path):
    """tcp://host/x.m3u8 that sends an HLS playlist: without its protocol_whitelist (tcp alone),
    FFmpeg opened the local file and fetched the other host's URL the playlist names."""
    fifo, opened, web = probes
    server = socket.create_server(("127.0.0.1", 0))
    body = playlist(fifo, web)

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(body)
    threading.Thread(target=serve, daemon=True).start()
    try:
        run_bridge(f"tcp://127.0.0.1:{server.getsockname()[1]}/live.m3u8", tmp_path)
    finally:
        server.close()
    assert not opened.is_set(), "FFmpeg opened the local file the playlist names"
    assert web.requests == [], web.requests


def test_an_http_playlist_cannot_lead_ffmpeg_to_local_files(probes, tmp_path):
    fifo, opened, web = probes
    camera = Recorder("127.0.0.1", lambda server, request: (
        200, {"Content-Type": "application/vnd.apple.mpegurl"}, playlist(fifo, web)))
    try:
        run_bridge(f"http://{camera.address}/live.m3u8", tmp_path)
    finally:
        camera.close()
    assert camera.requests, "the camera was never asked"
    assert not opened.is_set(), "FFmpeg opened the local file the playlist names"


class RtspTransports(socketserver.ThreadingTCPServer):
    """An RTSP server that records the Transport of each SETUP: it refuses RTP over TCP with 461
    Unsupported Transport, as the tests' VLC does, and accepts UDP (then sends no packet)."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.transports = []
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    lines = []
                    while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        lines.append(line.decode(errors="replace").strip())
                    if not lines:
                        return
                    method, url = lines[0].split()[:2]
                    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                    self.answer(method, url, headers)

            def answer(self, method, url, headers):
                status, extra, body = "200 OK", {}, b""
                if method == "OPTIONS":
                    extra["Public"] = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"
                elif method == "DESCRIBE":
                    body = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                            b"m=video 0 RTP/AVP 26\r\na=control:track1\r\n")
                    extra.update({"Content-Type": "application/sdp", "Content-Base": url + "/"})
                elif method == "SETUP":
                    transport = headers.get("Transport", "")
                    server.transports.append(transport)
                    if "/TCP" in transport:
                        status = "461 Unsupported Transport"
                    else:
                        extra.update({"Transport": transport + ";server_port=40000-40001", "Session": "1"})
                elif method == "PLAY":
                    extra["Session"] = "1"
                reply = [f"RTSP/1.0 {status}", f"CSeq: {headers.get('CSeq', '0')}",
                         *(f"{k}: {v}" for k, v in extra.items()), f"Content-Length: {len(body)}", "", ""]
                self.wfile.write("\r\n".join(reply).encode() + body)
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_rtsp_asks_for_rtp_over_tcp_first_then_udp(tmp_path):
    """README: RTSP asks for RTP over TCP first and falls back to UDP (rtsp_flags prefer_tcp, which
    OpenCV sets only while OPENCV_FFMPEG_CAPTURE_OPTIONS is unset, and the bridge sets that variable)."""
    server = RtspTransports()
    try:
        run_bridge(f"rtsp://127.0.0.1:{server.server_address[1]}/cam", tmp_path)  # no RTP ever comes: exit 2
    finally:
        server.shutdown()
        server.server_close()
    assert len(server.transports) >= 2, server.transports
    assert server.transports[0].startswith("RTP/AVP/TCP"), server.transports
    assert "/TCP" not in server.transports[1] and "client_port=" in server.transports[1], server.transports


@pytest.mark.parametrize("source, given, expected", [
    ("rtsp://cam/s1", None, "protocol_whitelist;rtsp,rtsps,rtp,srtp,udp,tcp,tls|rtsp_flags;prefer_tcp"),
    ("rtsp://cam/s1", "rtsp_transport;udp", "rtsp_transport;udp|protocol_whitelist;rtsp,rtsps,rtp,srtp,udp,tcp,tls"),
    ("http://u:p@cam/v", None, "protocol_whitelist;http,https,tls,tcp,crypto,httpproxy|http_proxy;none"),
    ("https://cam/v", "protocol_whitelist;https,tls,tcp", "protocol_whitelist;https,tls,tcp"),
    ("tcp://cam:9/v", None, "protocol_whitelist;tcp"),
    ("{clip}", None, "protocol_whitelist;file"),
])
def test_capture_options_per_source(source, given, expected, tmp_path):
    """The operator's own OPENCV_FFMPEG_CAPTURE_OPTIONS win key by key; RTSP keeps OpenCV's TCP-first default."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    assert CameraSource.parse(source.format(clip=clip)).capture_options(given) == expected


@e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_it_cleanly(signum, clip, mosquitto, subscribe, bridge):
    out = subscribe("stopping")
    process = bridge(clip[0], "--fps", "30", "--loop", topic="stopping")
    out.wait_for(10, timeout=30)
    assert process.stop(signum) == 0
    summary = process.lines()[-1]
    assert "stopped: sent" in summary
    assert "Traceback" not in process.log()
    # It waited for the last frame to reach the broker: the subscriber gets every frame it counted.
    sent = int(summary.split("stopped: sent ")[1].split()[0])
    out.wait_for(sent, timeout=10)
    time.sleep(1)
    assert len(out.payloads()) == sent, (len(out.payloads()), summary)
    client_id = process.wait_for_line("connected to").split(" as ")[1].split(",")[0]
    # mosquitto logs "Client <id> disconnected." for an MQTT DISCONNECT, "closed its connection." otherwise.
    assert f"Client {client_id} disconnected." in mosquitto.log_path.read_text(), mosquitto.log_path.read_text()[-2000:]


@e2e
def test_python_dash_m_and_any_directory(clip, mosquitto, subscribe, tmp_path):
    out = subscribe("dash_m")
    r = subprocess.run([sys.executable, "-m", "camera.camera", str(clip[0]),
                        "--mqtt", f"{mosquitto.host}:{mosquitto.port}", "--topic", "dash_m", "--fps", "30"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert len(out.wait_for(30, timeout=10)) == 30


# ---------------------------------------------------------------- TLS and credentials


def make_certificates(folder):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with the openssl command."""
    harness.ensure_debian_packages("openssl")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=camera test CA")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ("-extfile", "server.ext")), ("client", ())):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *extra)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """mosquitto with two TLS listeners and a password: one also asks for a client certificate."""
    folder = tmp_path_factory.mktemp("tls_broker")
    make_certificates(folder)
    harness.ensure_debian_packages("mosquitto")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(folder / "passwords"), "cam", "s3cret pass"], check=True,
                   capture_output=True)
    ports = {"password": harness.free_port(), "certificate": harness.free_port()}
    listener = (f"cafile {folder}/ca.pem\ncertfile {folder}/server.pem\nkeyfile {folder}/server.key\n")
    (folder / "mosquitto.conf").write_text(
        f"per_listener_settings false\nallow_anonymous false\npassword_file {folder}/passwords\n"
        f"persistence false\nlog_dest file {folder}/mosquitto.log\nlog_type all\n"
        + ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {ports['password']} 127.0.0.1\n{listener}"
        + f"listener {ports['certificate']} 127.0.0.1\n{listener}require_certificate true\n")
    proc = subprocess.Popen([harness.ensure_mosquitto(), "-c", str(folder / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for port in ports.values():
            harness.wait_tcp("127.0.0.1", port, 10, proc, "mosquitto with TLS")
        yield folder, ports
    finally:
        harness.stop_process(proc)


def tls_subscriber(folder, port, topic):
    """A paho client that logs in with the test password over TLS and collects `topic`."""
    received, subscribed = [], threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.tls_set(ca_certs=str(folder / "ca.pem"), certfile=str(folder / "client.pem"),
                   keyfile=str(folder / "client.key"))
    client.username_pw_set("cam", "s3cret pass")
    client.on_connect = lambda c, *_: c.subscribe(topic, 1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda c, u, message: received.append(message.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(15), "the test's own TLS subscriber did not subscribe"
    return client, received


@e2e
@pytest.mark.parametrize("listener, options", [
    ("password", ("--tls-ca", "{folder}/ca.pem")),
    ("password", ("--tls-insecure",)),
    ("certificate", ("--tls-ca", "{folder}/ca.pem", "--tls-cert", "{folder}/client.pem",
                     "--tls-key", "{folder}/client.key")),
], ids=["ca", "insecure", "client-certificate"])
def test_tls_with_a_password_from_the_environment(listener, options, tls_broker, clip, tmp_path):
    folder, ports = tls_broker
    client, received = tls_subscriber(folder, ports["certificate"], "tls_frames")
    try:
        process = BridgeProcess(str(clip[0]), f"mqtts://127.0.0.1:{ports[listener]}", "tls_frames", "--fps", "30",
                                "--username", "cam", *(o.format(folder=folder) for o in options),
                                log_path=tmp_path / "bridge.log", env={"MQTT_PASSWORD": "s3cret pass"}).start()
        assert process.wait(60) == 0, process.log()
        harness.wait_until(lambda: len(received) >= 30, 15, what="30 frames over TLS")
        assert decode(received[0]).shape == (480, 640, 3)
        assert "s3cret" not in " ".join(process.command) + process.log()
    finally:
        client.loop_stop()
        client.disconnect()


@e2e
@pytest.mark.parametrize("options, env, reason", [
    (("--tls-ca", "{folder}/ca.pem", "--username", "cam"), {"MQTT_PASSWORD": "wrong"}, "not authorized"),
    (("--tls-ca", "{folder}/ca.pem", "--username", "cam", "--password", "s3cret pass"), {}, None),
    (("--username", "cam"), {"MQTT_PASSWORD": "s3cret pass"}, "certificate verify failed"),  # system CAs
], ids=["wrong-password", "password-option", "unknown-ca"])
def test_broker_credentials_and_certificates(options, env, reason, tls_broker, clip, tmp_path):
    """What retrying cannot fix is one line and exit 2; the --password option works too."""
    folder, ports = tls_broker
    command = [sys.executable, CAMERA, str(clip[0]), "--mqtt", f"mqtts://127.0.0.1:{ports['password']}",
               "--topic", "tls_refused", "--fps", "30", *(o.format(folder=folder) for o in options)]
    r = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    if reason is None:
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], r.stderr
