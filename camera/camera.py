"""Camera to MQTT: JPEG frames from an RTSP/HTTP camera, a video file or a USB camera, at a fixed rate,
for a kuiperd without eKuiper's video source.

    python camera/camera.py rtsp://user@10.0.0.5/stream1 --mqtt 127.0.0.1:1883 --topic tfdemo --fps 5
    python -m camera.camera clip.mp4 --topic openvino_demo --json-field image --loop

This file only wires: the options, the source (camera_source, live_camera, video_file), the
encoder (frame_encoder), the publisher (frame_publisher) and the loop (camera_bridge). Exit
status: 0 when stopped (SIGINT, SIGTERM) or at a file's end, 2 with one line on stderr for a bad
option, a source that never gave a frame, or a broker that refuses the credentials.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run by path, this file's folder is first on sys.path, and its camera.py would shadow the package
# of the same name (even with the repo on PYTHONPATH): the repo root goes first, the folder goes.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [REPO, *(p for p in sys.path if os.path.abspath(p or ".") not in (REPO, _HERE))]

from camera.camera_bridge import CameraBridge  # noqa: E402
from camera.camera_source import CameraSource  # noqa: E402
from camera.frame_encoder import FrameEncoder  # noqa: E402
from camera.frame_publisher import Broker, FramePublisher  # noqa: E402
from camera.live_camera import LiveCamera  # noqa: E402
from camera.native_messages import NativeMessages  # noqa: E402
from camera.video_file import VideoFile  # noqa: E402
from core import command_line  # noqa: E402
from core.command_line import OneLineArgumentParser  # noqa: E402
from core.errors import InputError  # noqa: E402

PROG = "camera.py"
PASSWORD_VARIABLE = "MQTT_PASSWORD"
SOURCE_VARIABLE = "CAMERA_SOURCE"


def fail(message: str) -> NoReturn:
    command_line.fail(PROG, message)


def number(kind: type, low: float, high: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a {'whole ' if kind is int else ''}number "
                                             f"from {low:g} to {high:g}, got {text!r}")
        return value
    return convert


def topic_name(text: str) -> str:
    if not text or "+" in text or "#" in text:
        raise argparse.ArgumentTypeError(f"must be a topic to publish to (no + or # wildcards), got {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="?", default=os.environ.get(SOURCE_VARIABLE), metavar="SOURCE",
                   help="rtsp://, http(s):// (MJPEG, HLS...) or another FFmpeg URL, a video file, or a USB camera "
                        f"index (0 is /dev/video0); default: ${SOURCE_VARIABLE} (keeps a camera password out of ps)")
    p.add_argument("--mqtt", default="127.0.0.1:1883", metavar="HOST[:PORT]",
                   help="the broker (default: 127.0.0.1:1883); mqtts:// (or any --tls-* option) for TLS, "
                        "port 8883 then")
    p.add_argument("--topic", required=True, type=topic_name, help="the stream's DATASOURCE")
    p.add_argument("--fps", type=number(float, 0.01, 120), default=5.0,
                   help="frames sent per second, at most (default: 5)")
    p.add_argument("--width", type=number(int, 16, 8192), help="resize to this width, keeping the aspect ratio")
    p.add_argument("--quality", type=number(int, 1, 100), default=85, help="JPEG quality (default: 85)")
    p.add_argument("--json-field", metavar="FIELD",
                   help='publish {"FIELD": base64 JPEG, "ts": ms, "camera": name} for a FORMAT="JSON" stream '
                        '(default: the JPEG bytes, for a FORMAT="BINARY" stream)')
    p.add_argument("--camera-name", help="the camera field of JSON payloads (default: the host, file or device)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="MQTT QoS (default: 1)")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password", help=f"broker password; better: ${PASSWORD_VARIABLE}, which ps does not show")
    p.add_argument("--tls-ca", metavar="PEM", help="CA certificate(s) to check the broker with (default: the system's)")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate, for brokers that ask for one")
    p.add_argument("--tls-key", metavar="PEM", help="the client certificate's private key")
    p.add_argument("--tls-insecure", action="store_true",
                   help="TLS without checking the broker's certificate or name (testing only)")
    p.add_argument("--loop", action="store_true", help="a file starts again at its end (default: the bridge stops)")
    p.add_argument("--realtime", action="store_true",
                   help="a file plays at its own frame rate, skipping frames between sends "
                        "(default: every frame is sent, one per 1/fps)")
    p.add_argument("--timeout", type=number(float, 0.5, 600), default=10.0,
                   help="seconds to wait for the camera to open or send a frame (default: 10)")
    p.add_argument("--progress", type=number(float, 1, 3600), default=20.0, metavar="SECONDS",
                   help="seconds between progress lines (default: 20)")
    return p


def broker_from(args: argparse.Namespace) -> Broker:
    host, port, tls = Broker.parse_address(args.mqtt)
    tls = tls or bool(args.tls_ca or args.tls_cert or args.tls_key or args.tls_insecure)
    for option, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not os.path.isfile(path):
            raise InputError(f"{option} {path}: no such file")
    if args.tls_key and not args.tls_cert:
        raise InputError("--tls-key needs --tls-cert")
    password = args.password if args.password is not None else os.environ.get(PASSWORD_VARIABLE)
    if password is not None and args.username is None:
        raise InputError(f"a password (--password or ${PASSWORD_VARIABLE}) needs --username")
    return Broker(host, port or (8883 if tls else 1883), tls, args.username, password,
                  args.tls_ca, args.tls_cert, args.tls_key, args.tls_insecure)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.source:
        fail(f"no SOURCE: give a URL, a video file or a device index (or set ${SOURCE_VARIABLE})")
    messages = NativeMessages()
    messages.install()  # before OpenCV's first capture: FFmpeg's own lines become reasons in ours
    logging.basicConfig(stream=sys.stderr, format=f"%(asctime)s {PROG}: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    log = logging.getLogger(PROG).info
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not stop.set() in the handler itself: the handler runs in the main thread, which may be inside
        # stop.wait() holding the Event's lock at that moment; set() would then wait on it for ever.
        signal.signal(signum, lambda *_: threading.Thread(target=stop.set, name="stop").start())

    try:
        broker = broker_from(args)
        source = CameraSource.parse(args.source)
        capture, first = source.start_capture(args.timeout, messages)  # never opened: one line, exit 2
    except InputError as e:
        fail(str(e))
    if source.live:
        frames = LiveCamera(source, capture, first, args.timeout, messages, log).start()
    else:
        frames = VideoFile(source, capture, first, args.timeout, messages, log, args.fps,
                           loop=args.loop, realtime=args.realtime)
    encoder = FrameEncoder(args.width, args.quality, args.json_field, args.camera_name or source.default_name)
    try:
        publisher = FramePublisher(broker, args.topic, args.qos, f"camera-{source.default_name}", log).start()
    except InputError as e:
        frames.close()
        fail(str(e))

    height, width = first.shape[:2]
    log(f"reading {source.label} ({width}x{height}, {'live' if source.live else 'a file'})")
    bridge = CameraBridge(frames, encoder, publisher, args.fps, args.progress, log)
    fatal = bridge.run(stop)
    publisher.flush()
    publisher.stop()
    frames.close()
    if fatal:
        fail(fatal)
    log(f"stopped: {bridge.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
