"""Inputs and checks shared by the issue #3 scenario tests (tutorials, management, counting, hot update)."""

from __future__ import annotations

import base64
import json
import struct
import time
from pathlib import Path

import cv2
import numpy as np

from tests.support.paths import fixture_path
from tools.synthetic_surface import surface_image

CAT_FILES = ("cat.bmp", "cat_720p.jpg", "cat_1080p.jpg")
CAT_LABEL = "286:Egyptian cat"
# After the last expected message, wait this long to catch duplicates or strays.
GRACE_SECONDS = 2.0


def image_bytes(*parts: str) -> bytes:
    """A fixture image's bytes: image_bytes("cat.bmp"), image_bytes("surfaces", "good", "good_00.png")."""
    with open(fixture_path("images", *parts), "rb") as f:
        return f.read()


def surface_b64(defects: int, seed: int, size: tuple[int, int] = (640, 480)) -> str:
    """A synthetic surface (width, height = size) with exactly `defects` defects, JPEG-encoded, then base64."""
    ok, jpeg = cv2.imencode(".jpg", surface_image(defects, seed, width=size[0], height=size[1]))
    assert ok
    return base64.b64encode(jpeg.tobytes()).decode("ascii")


def surfaces(seeds=(11, 12, 13), counts=range(6)) -> list[tuple[int, str]]:
    """[(defect count, base64 JPEG)] for every count and seed: all different images."""
    return [(n, surface_b64(n, seed)) for seed in seeds for n in counts]


def decode_b64_gray(text: str) -> np.ndarray:
    data = base64.b64decode(text, validate=True)
    assert data[:3] == b"\xff\xd8\xff", f"not a JPEG: starts with {data[:8]!r}"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None, "JPEG does not decode"
    return image


def mask_regions(side_by_side: np.ndarray) -> int:
    """White regions in the right (mask) half of inference()'s side-by-side picture."""
    right = side_by_side[:, side_by_side.shape[1] // 2:]
    count, _ = cv2.connectedComponents((right > 127).astype(np.uint8))
    return count - 1


def json_or_none(payload: bytes):
    try:
        return json.loads(payload)
    except ValueError:
        return None


def settle(collector, expected: int) -> list[bytes]:
    """Wait out GRACE_SECONDS and return all payloads; the caller asserts the exact count."""
    time.sleep(GRACE_SECONDS)
    payloads = collector.payloads()
    assert len(payloads) == expected, f"expected exactly {expected} messages, got {len(payloads)}"
    return payloads


def assert_one_line_error(text: str, function: str, word: str) -> None:
    """A sendError row: kuiperd's plain-text error wrapping the plugin's one-line message."""
    assert json_or_none(text.encode()) is None, f"expected an error text, got a result: {text[:300]}"
    assert "\n" not in text.strip(), f"error is not one line: {text!r}"
    assert "Traceback" not in text, text
    assert f"call func {function} error:" in text, text
    assert word in text, f"{word!r} not in {text!r}"


def publish_until(send, done, timeout: float = 60, interval: float = 1.0, status=lambda: "") -> float:
    """Call send() every `interval` seconds until done() is truthy; return the seconds it took.
    status() describes what is still missing for the timeout message."""
    started = time.monotonic()
    while True:
        send()
        step_end = time.monotonic() + interval
        while time.monotonic() < step_end:
            if done():
                return time.monotonic() - started
            time.sleep(0.05)
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no result within {timeout}s: {status()}")


# tests/support/hold_hook: a worker holds a frame carrying this mark until it is killed (conftest.py).
HOLD_HOOK_DIR = Path(__file__).resolve().parent / "hold_hook"


def held_jpeg(jpeg: bytes, token: str) -> bytes:
    """The same JPEG with a comment segment (COM, ignored by decoders) that tells hold_hook's worker
    to hold the call: the first worker to get it holds it until it is killed, the next one answers."""
    assert jpeg[:2] == b"\xff\xd8", "not a JPEG"
    text = f"DEFECT-TEST-HOLD:{token};".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]
