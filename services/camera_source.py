"""What the bridge reads: a stream URL, a video file or a USB device index, and how OpenCV opens it."""
from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import numpy as np

from errors import InputError
from services.native_messages import NativeMessages

# Schemes FFmpeg (built into opencv-python-headless) reads as a live stream.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
DEVICE_INDEX = re.compile(r"^\d{1,3}$")


@dataclass(frozen=True)
class Frame:
    pixels: np.ndarray  # BGR, as OpenCV reads it
    number: int  # counts every frame the source read, published or not
    captured_ms: int  # wall clock when it was read, ms since the epoch


@dataclass(frozen=True)
class CameraSource:
    kind: str  # "stream", "file" or "device"
    target: str | int  # what VideoCapture opens: the URL, the path or the device index
    label: str  # for log lines: the URL without its password

    @classmethod
    def parse(cls, text: str) -> CameraSource:
        """A command-line SOURCE; InputError (one line) for what cannot be a source."""
        text = text.strip()
        if not text:
            raise InputError("SOURCE is empty: give an rtsp:// or http(s):// URL, a video file or a device index")
        if DEVICE_INDEX.match(text):
            return cls("device", int(text), f"device {text}")
        if "://" in text:
            scheme = text.split("://", 1)[0].lower()
            if scheme == "file":
                return cls.parse(unquote(urlsplit(text).path))
            if scheme not in STREAM_SCHEMES:
                raise InputError(f"unknown scheme {scheme}:// in SOURCE: use one of "
                                 f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, a video file or a device index")
            try:  # urlsplit checks the port and IPv6 brackets only when asked; later calls must not raise
                _ = urlsplit(text).port
            except ValueError as e:
                raise InputError(f"bad URL in SOURCE: {e}") from None
            return cls("stream", text, redacted(text))
        if not os.path.exists(text):
            raise InputError(f"{text}: no such file (SOURCE is a URL, a video file or a device index)")
        if not os.path.isfile(text):
            raise InputError(f"{text}: not a file (SOURCE is a URL, a video file or a device index)")
        return cls("file", os.path.abspath(text), text)

    @property
    def live(self) -> bool:
        """Streams and devices run on their own clock; a file is read as fast as asked."""
        return self.kind != "file"

    @property
    def default_name(self) -> str:
        """The camera's name in JSON payloads when --camera-name is not given."""
        if self.kind == "device":
            return f"video{self.target}"
        if self.kind == "file":
            return os.path.splitext(os.path.basename(self.target))[0]
        return urlsplit(self.target).hostname or "camera"

    def open(self, timeout_s: float, messages: NativeMessages) -> tuple[cv2.VideoCapture | None, str]:
        """(an opened capture, "") or (None, why it did not open, in one line)."""
        if self.kind == "device" and not os.path.exists(f"/dev/video{self.target}"):
            return None, f"no such device /dev/video{self.target}"
        mark = messages.mark()
        if self.kind == "device":
            capture = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:
            timeout_ms = int(timeout_s * 1000)
            capture = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        if capture.isOpened():
            return capture, ""
        capture.release()
        detail = messages.since(mark)
        if self.kind == "file":  # FFmpeg's detail alone ("moov atom not found") would puzzle most users
            return None, f"not a video FFmpeg can read ({detail})" if detail else "not a video FFmpeg can read"
        if detail is None and self.kind == "stream" and self.target.lower().startswith(("http://", "https://")):
            detail = http_answer(self.target, timeout_s)  # FFmpeg does not say what an HTTP camera answered
        return None, detail or ("the device is busy or not a camera" if self.kind == "device"
                                else "no video came from it")

    def start_capture(self, timeout_s: float, messages: NativeMessages) -> tuple[cv2.VideoCapture, np.ndarray]:
        """An opened capture and its first frame; InputError ("cannot open ...: why") if either fails."""
        capture, why = self.open(timeout_s, messages)
        if capture is None:
            raise InputError(f"cannot open {self.label}: {why}")
        pixels, why = self.read(capture, messages)
        if pixels is None:
            capture.release()
            raise InputError(f"cannot read a frame from {self.label}: {why}")
        return capture, pixels

    def read(self, capture: cv2.VideoCapture, messages: NativeMessages) -> tuple[np.ndarray | None, str]:
        """(frame, "") or (None, why not, in one line)."""
        mark = messages.mark()
        ok, pixels = capture.read()
        if ok and pixels is not None:
            return pixels, ""
        return None, messages.since(mark) or ("the end of the file" if self.kind == "file" else "the stream ended")


def http_answer(url: str, timeout_s: float) -> str | None:
    """What an HTTP camera answers, as a reason: "HTTP 401 Unauthorized", or the content type it sent."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))))
    if parts.username is not None:
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return f"it answers {answer.headers.get_content_type()}, not a video stream FFmpeg can read"
    except urllib.error.HTTPError as e:
        hint = " (check the user name and password in the URL)" if e.code in (401, 403) else ""
        return f"HTTP {e.code} {e.reason}{hint}"
    except (OSError, ValueError):
        return None


def redacted(url: str) -> str:
    """The URL with its password replaced by ***, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
