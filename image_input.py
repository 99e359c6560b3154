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

import cv2
import numpy as np
from PIL import Image

# Formats we accept: what cameras and MQTT bridges send, decoded by OpenCV.
ACCEPTED_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF"}
URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
EXIF_ORIENTATION = 0x0112
# Our own max_pixels cap (configurable, checked from the header) is the one that counts;
# Pillow's built-in bomb limit would silently override a larger configured cap.
Image.MAX_IMAGE_PIXELS = None
DATA_URI = re.compile(r"^data:([^;,]*)(;base64)?,", re.IGNORECASE)


class InputError(ValueError):
    """Bad input from a rule: the message is shown to the user as is."""


def image_bytes(value, max_bytes):
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


def image_header(data):
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
        raise InputError(f"not an image: the {len(data)} bytes are no JPEG, PNG, BMP, TIFF, WebP or GIF") from None


def decode_image(value, max_pixels, max_bytes, fit=None):
    """Decode `value` to a BGR uint8 array (H, W, 3).

    fit=(w, h): the smallest size the caller needs; a JPEG at least twice as
    large is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself, several times
    faster than a full decode and a resize. Returns (pixels, (width, height) of
    the original image).
    """
    data = image_bytes(value, max_bytes)
    fmt, width, height = image_header(data)
    if fmt not in ACCEPTED_FORMATS:
        raise InputError(f"image format {fmt} is not supported; send JPEG, PNG, BMP, TIFF, WebP or GIF")
    if width < 2 or height < 2:
        raise InputError(f"image is {width}x{height} pixels; at least 2x2 is needed")
    if width * height > max_pixels:
        raise InputError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} (input.max_pixels)")
    if fmt == "JPEG" and not _jpeg_is_complete(data):
        raise InputError("JPEG is truncated: its end-of-image marker is missing")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if fmt == "GIF":  # OpenCV's GIF reader is optional in builds; Pillow reads the first frame.
        pixels = _decode_with_pillow(data)
    else:
        pixels = cv2.imdecode(buffer, _reduced_flag(fmt, width, height, fit))
    if pixels is None or pixels.size == 0:
        raise InputError(f"{fmt} image could not be decoded: the data is corrupt or truncated")
    return pixels, (width, height)


def _jpeg_is_complete(data):
    # libjpeg pads a truncated stream with grey and only warns. A complete stream has
    # its end-of-image marker FFD9 late in the file (cameras may append trailers after
    # it); a cut one has at most its EXIF thumbnail's, near the start.
    return data.rfind(b"\xff\xd9") >= len(data) // 2


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
