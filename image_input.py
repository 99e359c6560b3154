"""The one image-decoding path of the plugin: what a rule hands a function -> BGR pixels.

eKuiper marshals a binary value as base64, so both `self` of a FORMAT="BINARY"
stream and a base64 `image` field of a JSON stream arrive as `str`; raw `bytes`
come from direct Python callers. Every failure is an `InputError` whose message
is one line a rule author can act on.
"""
import base64
import binascii
import io
import re
import warnings
from typing import Any

import cv2
import numpy as np
from PIL import Image

from errors import InputError  # also importable from here, as callers did before errors.py

# Formats we accept: what cameras and MQTT bridges send, decoded by OpenCV.
ACCEPTED_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF"}
URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
EXIF_ORIENTATION = 0x0112
# Our own max_pixels cap (configurable, checked from the header) is the one that counts;
# Pillow's built-in bomb limit would silently override a larger configured cap.
Image.MAX_IMAGE_PIXELS = None
DATA_URI = re.compile(r"^data:([^;,]*)(;base64)?,", re.IGNORECASE)
JPEG_SOI = b"\xff\xd8"
JPEG_TRUNCATED = "JPEG is truncated: its end-of-image marker is missing"


def image_bytes(value: Any, max_bytes: int) -> bytes:
    """Return the encoded image bytes inside `value` (base64 str, data URI or bytes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        data = _base64_payload(value, max_bytes)
    elif value is None:
        raise InputError("image is null: pass the binary payload (self) or a base64 image field")
    else:
        raise InputError(f"image must be a base64 string or bytes, got {type(value).__name__}")
    if not data:
        raise InputError("image is empty")
    if len(data) > max_bytes:
        raise InputError(f"image is {len(data)} bytes, over the limit of {max_bytes} (input.max_bytes)")
    return data


def _base64_payload(text, max_bytes):
    # Before any copy of the text: a payload far over the cap (with room for a data URI prefix and
    # line breaks every 76 columns) costs nothing. The exact check follows below.
    if len(text) * 3 // 4 > max_bytes * 1.1 + 1024:
        raise InputError(f"image is about {len(text) * 3 // 4} bytes, over the limit of {max_bytes} (input.max_bytes)")
    match = DATA_URI.match(text.strip())
    if match:
        mime, is_base64 = match.group(1).lower(), match.group(2)
        if not mime.startswith("image/"):
            raise InputError(f"data URI has type '{mime or 'none'}', expected image/*")
        if not is_base64:
            raise InputError("data URI is not base64-encoded")
        text = text.strip()[match.end():]
    text = "".join(text.split())  # MIME and `base64` wrap lines at 76 columns
    if not text:
        raise InputError("image is empty")
    # Check the size before decoding so a huge payload costs nothing.
    if len(text) * 3 // 4 > max_bytes:
        raise InputError(f"image is about {len(text) * 3 // 4} bytes, over the limit of {max_bytes} (input.max_bytes)")
    # Standard or URL-safe alphabet; senders that drop the '=' padding are forgiven.
    if "-" in text or "_" in text:
        text = text.translate(URLSAFE_TO_STANDARD)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image is not valid base64 (expected a base64 string of JPEG/PNG/BMP bytes)") from None


def image_header(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone, so the pixel cap holds before any decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.width, img.height
                # OpenCV applies the EXIF orientation when decoding; report the size it yields.
                if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                    width, height = height, width
                # Phones' multi-picture JPEGs (MPO, Ultra HDR) decode as the plain JPEG they start with.
                return ("JPEG" if img.format == "MPO" else img.format), width, height
    except Exception:
        if data.startswith(JPEG_SOI) and not _jpeg_is_complete(data):  # cut inside its headers
            raise InputError(JPEG_TRUNCATED) from None
        raise InputError(f"not an image: the {len(data)} bytes are no JPEG, PNG, BMP, TIFF, WebP or GIF") from None


def decode_image(value: Any, max_pixels: int, max_bytes: int,
                 fit: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode `value` to a BGR uint8 array (H, W, 3).

    fit=(w, h): the smallest size the caller needs; a JPEG at least twice as
    large is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself, several times
    faster than a full decode and a resize. Returns (pixels, (width, height) of
    the original image).
    """
    data = image_bytes(value, max_bytes)
    # A JPEG's markers are walked before Pillow parses its header: Pillow reads header
    # segments one by one in Python, seconds for millions of crafted tiny ones.
    walked = _jpeg_walk(data) if data.startswith(JPEG_SOI) else None
    if walked == _TOO_MANY_SEGMENTS:
        raise InputError(f"JPEG has over {_MAX_SEGMENTS} marker segments (real ones have tens); refused")
    fmt, width, height = image_header(data)
    if fmt not in ACCEPTED_FORMATS:
        raise InputError(f"image format {fmt} is not supported; send JPEG, PNG, BMP, TIFF, WebP or GIF")
    if width < 2 or height < 2:
        raise InputError(f"image is {width}x{height} pixels; at least 2x2 is needed")
    if width * height > max_pixels:
        raise InputError(f"image is {width}x{height} = {width * height} pixels, "
                         f"over the limit of {max_pixels} (input.max_pixels)")
    if fmt == "JPEG" and walked == _TRUNCATED:
        raise InputError(JPEG_TRUNCATED)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if fmt == "GIF":  # OpenCV's GIF reader is optional in builds; Pillow reads the first frame.
        pixels = _decode_with_pillow(data)
    else:
        pixels = cv2.imdecode(buffer, _reduced_flag(fmt, width, height, fit))
    if pixels is None or pixels.size == 0:
        raise InputError(f"{fmt} image could not be decoded: the data is corrupt or truncated")
    return pixels, (width, height)


# After a scan's entropy-coded data the next marker is the first FF not followed by
# 00 (a stuffed FF data byte), D0-D7 (a restart marker) or FF (fill).
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_NOT_FILL = re.compile(rb"[^\xff]")
# Real JPEGs have tens of segments (a progressive one about 30); a crafted one with
# millions of tiny ones is refused rather than walked in Python.
_MAX_SEGMENTS = 10_000
_COMPLETE, _TRUNCATED, _TOO_MANY_SEGMENTS = "complete", "truncated", "too many segments"
_STANDALONE_MARKERS = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])  # no length field
_EOI, _SOS = 0xD9, 0xDA


def _jpeg_is_complete(data: bytes) -> bool:
    """False when the JPEG stream ends before its end-of-image marker (EOI)."""
    return _jpeg_walk(data) != _TRUNCATED


def _jpeg_walk(data: bytes) -> str:
    """_COMPLETE, _TRUNCATED (the stream ends before its EOI) or _TOO_MANY_SEGMENTS.

    libjpeg pads a cut stream with grey and only warns, so the plugin looks itself:
    it walks the marker segments by their length fields (an EXIF thumbnail, with its
    own EOI, lies inside APP1 and is skipped whole) and jumps over each scan's
    entropy-coded data with one C-level regex search. Whatever follows the EOI
    (camera and phone trailers, an MPO's second picture) is never read.
    A stream that is corrupt rather than cut short is left to the decoder.
    """
    end = len(data)
    pos = 2  # after SOI
    for _ in range(_MAX_SEGMENTS):
        pos = data.find(b"\xff", pos)  # libjpeg also skips stray bytes between segments
        if pos < 0:
            return _TRUNCATED
        after_fill = _NOT_FILL.search(data, pos)  # FF fill bytes may pad before a marker
        if after_fill is None:
            return _TRUNCATED
        marker = data[after_fill.start()]
        pos = after_fill.start() + 1
        if marker == _EOI:
            return _COMPLETE
        if marker in _STANDALONE_MARKERS or marker == 0x00:
            continue
        if pos + 2 > end:
            return _TRUNCATED
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return _COMPLETE  # a bogus length: corrupt, not cut short; the decoder will refuse it
        pos += length
        if pos > end:
            return _TRUNCATED
        if marker == _SOS:
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                return _TRUNCATED
            pos = found.start()
    return _TOO_MANY_SEGMENTS


def _reduced_flag(fmt, width, height, fit):
    if fmt != "JPEG" or fit is None:
        return cv2.IMREAD_COLOR
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if width // factor >= fit[0] and height // factor >= fit[1]:
            return flag
    return cv2.IMREAD_COLOR


def _decode_with_pillow(data):
    try:
        with Image.open(io.BytesIO(data)) as img:
            return cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)
    except Exception:
        return None
