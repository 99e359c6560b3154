"""What the bridge reads: a stream URL, a video file or a USB device index, and how OpenCV opens it.

FFmpeg follows what a source sends: an HLS playlist names segments by URL (file:// too), an SDP
file names RTP streams. A source that turns hostile (a camera's firmware, whoever answers at its
address) must not steer the bridge into reading local files or reaching other protocols, so each
kind of source gets FFmpeg's `protocol_whitelist` for its own protocols (OpenCV hands FFmpeg the
options in OPENCV_FFMPEG_CAPTURE_OPTIONS, "key;value|key;value"). A camera's user name and
password go to that camera only: never through an http_proxy, and never along a redirect to
another host (FFmpeg drops them there itself; http_answer does too).
"""
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

from camera.native_messages import NativeMessages
from core.errors import InputError

# Schemes FFmpeg (built into opencv-python-headless) reads as a live stream.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
DEVICE_INDEX = re.compile(r"^\d{1,3}$")
CAPTURE_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# FFmpeg protocols each scheme needs, the ones it nests included: HTTP(S) with TLS, TCP, HLS's
# AES-128 segments (crypto) and an HTTPS proxy's CONNECT (httpproxy); RTSP with RTP over UDP or
# TCP, and TLS for rtsps. Nothing else, file:// above all.
PROTOCOLS = {
    "http": "http,https,tls,tcp,crypto,httpproxy", "https": "http,https,tls,tcp,crypto,httpproxy",
    "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls", "rtsps": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
    "rtmp": "rtmp,rtmps,tcp,tls", "rtmps": "rtmp,rtmps,tcp,tls",
    "udp": "udp", "tcp": "tcp", "srt": "srt", "file": "file",
}
# FFmpeg's http protocol uses a proxy only when its http_proxy option (else the variable) starts
# with http://: any other value means none, for this capture alone.
NO_PROXY = "none"


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

    def capture_options(self, given: str | None) -> str:
        """OPENCV_FFMPEG_CAPTURE_OPTIONS for this source: `given` (the operator's own, which win
        key by key) plus its protocol_whitelist; no proxy when the URL carries credentials; and
        for RTSP, RTP over TCP first then UDP (rtsp_flags prefer_tcp), what OpenCV asks for itself
        only while the variable is unset."""
        options = dict(pair.split(";", 1) for pair in (given or "").split("|") if ";" in pair)
        scheme = "file" if self.kind == "file" else str(self.target).split("://", 1)[0].lower()
        options.setdefault("protocol_whitelist", PROTOCOLS[scheme])
        if scheme in ("http", "https") and urlsplit(str(self.target)).username is not None:
            options.setdefault("http_proxy", NO_PROXY)
        if scheme in ("rtsp", "rtsps") and not {"rtsp_transport", "rtsp_flags"} & options.keys():
            options["rtsp_flags"] = "prefer_tcp"
        return "|".join(f"{key};{value}" for key, value in options.items())

    def open(self, timeout_s: float, messages: NativeMessages) -> tuple[cv2.VideoCapture | None, str]:
        """(an opened capture, "") or (None, why it did not open, in one line)."""
        if self.kind == "device" and not os.path.exists(f"/dev/video{self.target}"):
            return None, f"no such device /dev/video{self.target}"
        mark = messages.mark()
        if self.kind == "device":
            capture = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:
            # Read by OpenCV at each open; one source per bridge process, so the process's own variable.
            os.environ[CAPTURE_OPTIONS] = self.capture_options(os.environ.get(CAPTURE_OPTIONS))
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


class CredentialsStayHome(urllib.request.HTTPRedirectHandler):
    """Follows a redirect, but sends the camera's Authorization only to the same scheme, host and port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(newurl) != origin(req.full_url):
            new.remove_header("Authorization")
        return new


def origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())


def http_answer(url: str, timeout_s: float) -> str | None:
    """What an HTTP camera answers, as a reason: "HTTP 401 Unauthorized", or the content type it sent.

    The URL's credentials go to the camera alone: no proxy from the environment, and not along a
    redirect to another host. None when it cannot be reached at all."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))))
    handlers: list[urllib.request.BaseHandler] = [CredentialsStayHome()]
    if parts.username is not None:
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
        handlers.append(urllib.request.ProxyHandler({}))
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout_s) as answer:
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
