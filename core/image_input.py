"""The one image-decoding path of the plugin: what a rule hands a function -> BGR pixels.

eKuiper marshals a binary value as base64, so both `self` of a FORMAT="BINARY"
stream and a base64 `image` field of a JSON stream arrive as `str`; raw `bytes`
come from direct Python callers. Every failure is an `InputError` whose message
is one line a rule author can act on.

Anyone who can publish to a rule's topic reaches this code, so its work is bounded
before it grows with the input: each accepted format's header is read by a small
walker below with a hard cap on what it walks (PNG chunks, GIF blocks, TIFF entries
and their data, WebP chunks, JPEG segments and scans), and the pixel cap is checked
on the declared size before Pillow or OpenCV sees a byte of pixel data.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import re
import struct
import warnings
import zlib
from typing import Any, NamedTuple

# cv2 loads with OpenCV's own pixel cap already set: core/__init__.py.
import cv2
import numpy as np
from PIL import Image

from core.errors import InputError  # also importable from here, as callers did before errors.py
from core.regions import Roi, region_box

_SHOWN = {"WEBP": "WebP"}  # the format's name in a message
# Our own max_pixels cap (configurable, checked from the header) is the one that counts;
# Pillow's built-in bomb limit would silently override a larger configured cap.
Image.MAX_IMAGE_PIXELS = None
DATA_URI = re.compile(rb"^\s*data:([^;,]*)(;base64)?,", re.IGNORECASE)
# One C-level pass over the base64 text: the URL-safe alphabet to the standard one, and the
# whitespace str.split() drops (MIME and `base64` wrap lines at 76 columns) deleted.
URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
BASE64_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
NOT_AN_IMAGE = "not an image: the {} bytes are no JPEG, PNG, BMP, TIFF, WebP or GIF"
JPEG_SOI = b"\xff\xd8"
JPEG_TRUNCATED = "JPEG is truncated: its end-of-image marker is missing"

# Hard caps on the header walks. Real files stay far below each one.
MAX_PNG_CHUNKS = 100_000  # libpng writes 8 KiB IDAT chunks: a 20 MB PNG has about 2,500
MAX_PNG_TEXT_INFLATED = 16_000_000  # bytes that zTXt, iTXt and iCCP chunks inflate to, together
MAX_GIF_BLOCKS = 10_000  # extension blocks and their sub-blocks before the first image
MAX_GIF_STRAY_BYTES = 1024  # bytes between blocks, which Pillow skips one at a time
MAX_TIFF_ENTRIES = 1000  # entries of the first directory (real ones have 10 to 100)
MAX_WEBP_CHUNKS = 10_000  # top-level chunks (an animation has one per frame)
MAX_JPEG_SCANS = 100  # a progressive JPEG has about 10; each scan is a pass over the whole image
# EXIF bytes of a PNG (eXIf chunks) or a WebP (its EXIF chunk): as much as a JPEG's APP1 holds, so all a
# camera writes. OpenCV's EXIF reader copies every text entry's whole value: 65,535 entries each
# declaring 4 MB of one PNG eXIf chunk took 25 s of CPU, 10,000 of 1 MB in a WebP 13 s.
MAX_EXIF_BYTES = 65_536
# EXIF segments of a JPEG: OpenCV parses every one before the first scan, not only the first it uses
# (300 of 64 KiB in 19.5 MB: 6.7 s of CPU). Cameras write one.
MAX_JPEG_EXIF_SEGMENTS = 4


def image_bytes(value: Any, max_bytes: int) -> bytes:
    """Return the encoded image bytes inside `value` (base64 str, data URI or bytes).

    Raises:
        InputError: null, a wrong type, empty, not base64, or over max_bytes (checked on the
            text's length before any copy, so a huge payload costs nothing).
    """
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
    # Linear in time and memory whatever the text holds: bytes and C-level passes only (splitting
    # millions of space-separated groups into strings took 432 MB for 25 MB of text).
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise InputError("image is not valid base64 (expected a base64 string of JPEG/PNG/BMP bytes)") from None
    match = DATA_URI.match(raw)
    if match:
        mime, is_base64 = match.group(1).decode().lower(), match.group(2)
        if not mime.startswith("image/"):
            raise InputError(f"data URI has type '{mime or 'none'}', expected image/*")
        if not is_base64:
            raise InputError("data URI is not base64-encoded")
        raw = raw[match.end():]
    # Standard or URL-safe alphabet; senders that drop the '=' padding are forgiven.
    raw = raw.translate(URLSAFE_TO_STANDARD, BASE64_WHITESPACE)
    if not raw:
        raise InputError("image is empty")
    # Check the size before decoding so a huge payload costs nothing.
    if len(raw) * 3 // 4 > max_bytes:
        raise InputError(f"image is about {len(raw) * 3 // 4} bytes, over the limit of {max_bytes} (input.max_bytes)")
    if len(raw) % 4:
        raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image is not valid base64 (expected a base64 string of JPEG/PNG/BMP bytes)") from None


class _Header(NamedTuple):
    format: str
    width: int  # as the header declares it; a JPEG's after its EXIF orientation (OpenCV applies it)
    height: int
    jpeg_truncated: bool = False
    png_streams: tuple | None = None  # (bytes the rows take, IDAT ranges, compressed text ranges)


def image_header(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) as the header declares them: bounded work, no pixel decoding.

    Raises:
        InputError: not one of the accepted formats, a header cut short or corrupt, or more
            structure (chunks, blocks, entries, segments, scans) than a real image has.
    """
    header = _read_header(data)
    return header.format, header.width, header.height


def _read_header(data):
    # The formats we accept: what cameras and MQTT bridges send, decoded by OpenCV (GIF by Pillow).
    if data.startswith(JPEG_SOI):
        return _jpeg_header(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_header(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif_header(data)
    if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return _tiff_header(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp_header(data)
    if data.startswith(b"BM"):
        return _bmp_header(data)
    raise InputError(NOT_AN_IMAGE.format(len(data)))


def decode_image(value: Any, max_pixels: int, max_bytes: int, fit: tuple[int, int] | None = None,
                 roi: Roi | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode `value` to a BGR uint8 array (H, W, 3).

    fit=(w, h): the smallest size the caller needs; a JPEG at least twice as
    large is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself, several times
    faster than a full decode and a resize.
    roi: only this region of the image is returned (`region_box` places it), decoded so that the
    region itself has at least `fit`.

    Returns:
        (pixels, (width, height) of the original image, as oriented by its EXIF orientation).
    Raises:
        InputError: one line, for every input that is not a whole accepted image within
            max_bytes and max_pixels, and for a region outside the image; the pixel cap is checked
            on the size the header declares, before any pixel is decoded.
    """
    data = image_bytes(value, max_bytes)
    fmt, width, height, jpeg_truncated, png_streams = _read_header(data)
    if width < 2 or height < 2:
        raise InputError(f"image is {width}x{height} pixels; at least 2x2 is needed")
    if width * height > max_pixels:
        raise InputError(f"{_SHOWN.get(fmt, fmt)} declares {width}x{height} = {width * height} pixels, "
                         f"over the limit of {max_pixels} (input.max_pixels)")
    if roi is not None and fmt == "JPEG":  # its header size is as oriented: refused before decoding, and
        # decoded large enough for the region (other formats are checked on their decoded, oriented size)
        _, _, region_width, region_height = region_box(roi, (width, height))
        if fit is not None:
            fit = (-(-fit[0] * width // region_width), -(-fit[1] * height // region_height))
    if jpeg_truncated:
        raise InputError(JPEG_TRUNCATED)
    if png_streams:  # after the pixel cap: this inflates up to the bytes the declared rows take
        _check_png_streams(data, *png_streams)
    if fmt == "GIF":  # OpenCV's GIF reader is optional in builds; Pillow reads the first frame.
        pixels = _decode_with_pillow(data)
    else:
        try:
            pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _reduced_flag(fmt, width, height, fit))
        except cv2.error as e:
            if "CV_IO_MAX_IMAGE_PIXELS" in str(e):
                raise InputError(f"{_SHOWN.get(fmt, fmt)} of {width}x{height} pixels is over OpenCV's own limit "
                                 f"of {os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS')}: to allow it, set "
                                 "OPENCV_IO_MAX_IMAGE_PIXELS in the environment as high as input.max_pixels") from None
            pixels = None
    if pixels is None or pixels.size == 0:
        raise InputError(f"{_SHOWN.get(fmt, fmt)} image could not be decoded: the data is corrupt or truncated")
    if fmt != "JPEG":  # decoded whole: its shape is the size, after the EXIF orientation OpenCV applies
        width, height = pixels.shape[1], pixels.shape[0]
    if roi is not None:
        pixels = _cropped(pixels, region_box(roi, (width, height)), (width, height))
    return pixels, (width, height)


def _cropped(pixels, box, size):
    # The pixels may be a reduced decode: the box is scaled to them.
    scale_x, scale_y = pixels.shape[1] / size[0], pixels.shape[0] / size[1]
    x, y, w, h = box
    left, top = int(x * scale_x), int(y * scale_y)
    right, bottom = max(left + 1, round((x + w) * scale_x)), max(top + 1, round((y + h) * scale_y))
    return np.ascontiguousarray(pixels[top:bottom, left:right])


# --- JPEG: marker segments, by their length fields -----------------------------------------

# After a scan's entropy-coded data the next marker is the first FF not followed by
# 00 (a stuffed FF data byte), D0-D7 (a restart marker) or FF (fill).
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_NOT_FILL = re.compile(rb"[^\xff]")
# Real JPEGs have tens of segments (a progressive one about 30); a crafted one with
# millions of tiny ones is refused rather than walked in Python.
_MAX_SEGMENTS = 10_000
_STANDALONE_MARKERS = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])  # no length field
_SOF_MARKERS = frozenset([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])
_EOI, _SOS, _APP1 = 0xD9, 0xDA, 0xE1
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees


class _JpegWalk(NamedTuple):
    complete: bool  # False: the stream ends before its end-of-image marker (EOI)
    width: int | None  # from the first frame header (SOF)
    height: int | None
    orientation: int  # from the first EXIF APP1 segment


def _jpeg_header(data):
    walk = _jpeg_walk(data)
    if walk.width is None:
        if not walk.complete:  # cut inside its headers
            raise InputError(JPEG_TRUNCATED)
        raise InputError(f"not an image: the {len(data)} bytes are a JPEG without a frame header")
    width, height = walk.width, walk.height
    if walk.orientation in _SWAPPING_ORIENTATIONS:  # OpenCV applies it: report the size it yields
        width, height = height, width
    return _Header("JPEG", width, height, jpeg_truncated=not walk.complete)


def _jpeg_walk(data: bytes) -> _JpegWalk:
    """The JPEG's frame size, EXIF orientation and whether it is complete, walked with bounded work.

    libjpeg pads a cut stream with grey and only warns, so the plugin looks itself:
    it walks the marker segments by their length fields (an EXIF thumbnail, with its
    own EOI, lies inside APP1 and is skipped whole) and jumps over each scan's
    entropy-coded data with one C-level regex search. Whatever follows the EOI
    (camera and phone trailers, an MPO's second picture) is never read.
    A stream that is corrupt rather than cut short is left to the decoder.

    Raises:
        InputError: over _MAX_SEGMENTS segments or MAX_JPEG_SCANS scans.
    """
    end = len(data)
    pos = 2  # after SOI
    width = height = None
    orientation, exif_segments, scans = 1, 0, 0

    def walked(complete):
        return _JpegWalk(complete, width, height, orientation)

    for _ in range(_MAX_SEGMENTS):
        pos = data.find(b"\xff", pos)  # libjpeg also skips stray bytes between segments
        if pos < 0:
            return walked(False)
        after_fill = _NOT_FILL.search(data, pos)  # FF fill bytes may pad before a marker
        if after_fill is None:
            return walked(False)
        marker = data[after_fill.start()]
        pos = after_fill.start() + 1
        if marker == _EOI:
            return walked(True)
        if marker in _STANDALONE_MARKERS or marker == 0x00:
            continue
        if pos + 2 > end:
            return walked(False)
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return walked(True)  # a bogus length: corrupt, not cut short; the decoder will refuse it
        if marker in _SOF_MARKERS and width is None and pos + 7 <= end:
            height, width = struct.unpack_from(">HH", data, pos + 3)
        elif marker == _APP1 and not scans and data.startswith(b"Exif\0\0", pos + 2):  # libjpeg: none after
            exif_segments += 1
            if exif_segments > MAX_JPEG_EXIF_SEGMENTS:
                raise InputError(f"JPEG has over {MAX_JPEG_EXIF_SEGMENTS} EXIF segments (cameras write one); refused")
            if exif_segments == 1:  # OpenCV applies the first EXIF segment's orientation
                orientation = _exif_orientation(data[pos + 8:pos + length])
        pos += length
        if pos > end:
            return walked(False)
        if marker == _SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:  # libjpeg passes over the whole image once per scan
                raise InputError(f"JPEG has over {MAX_JPEG_SCANS} scans (real ones have up to about 10); refused")
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                return walked(False)
            pos = found.start()
    raise InputError(f"JPEG has over {_MAX_SEGMENTS} marker segments (real ones have tens); refused")


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag (0x0112) of an EXIF block's first directory; 1 when absent or unreadable.

    Bounded by the block: an APP1 segment holds at most 64 KiB, so at most 5,461 entries.
    """
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = struct.unpack_from(order + "I", tiff, 4)[0]
    if ifd + 2 > len(tiff):
        return 1
    count = min(struct.unpack_from(order + "H", tiff, ifd)[0], (len(tiff) - ifd - 2) // 12)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == 0x0112 and kind == 3:  # SHORT
            return struct.unpack_from(order + "H", tiff, entry + 8)[0]
    return 1


# --- PNG: chunks, to IEND ---------------------------------------------------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by color type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PNG_COMPRESSED_TEXT = (b"zTXt", b"iTXt", b"iCCP")


def _png_header(data):
    """IHDR's size, and the ranges the deeper checks (_check_png_streams) inflate.

    Every chunk to IEND is walked, with a hard cap on their number: libpng inflates the
    compressed text chunks wherever they are, and the image data to its end.
    """
    end = len(data)
    if end < 33 or data[12:16] != b"IHDR":
        raise InputError("PNG is truncated or corrupt: its header chunk (IHDR) is missing")
    width, height, depth, color, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    bits = depth * _PNG_CHANNELS.get(color, 4)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    row_bytes = 0
    for x0, y0, dx, dy in passes:
        columns, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if columns > 0 and rows > 0:
            row_bytes += rows * (1 + (columns * bits + 7) // 8)
    idat, text = [], []
    pos, chunks, exif = 8, 0, 0
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InputError(f"PNG has over {MAX_PNG_CHUNKS} chunks (real ones have tens, "
                             "or thousands of image data chunks); refused")
        start, pos = pos + 8, pos + 12 + length
        if kind == b"IDAT":
            idat.append((start, min(start + length, end)))
        elif kind in _PNG_COMPRESSED_TEXT:
            text.append((kind, start, min(start + length, end)))
        elif kind == b"eXIf":
            exif += min(start + length, end) - start
        elif kind == b"IEND":
            break
    if not idat:
        raise InputError("PNG is truncated or corrupt: it has no image data (IDAT)")
    _check_exif_size("PNG", exif)
    return _Header("PNG", width, height, png_streams=(row_bytes, tuple(idat), tuple(text)))


def _check_png_streams(data, row_bytes, idat, text):
    """Inflate what libpng would, with bounded output, before libpng does it unbounded.

    libpng inflates the image data to its end even once every row is read (890 KB of
    deflated zeros behind a 2x2 picture: 2.3 s), and inflates every compressed text
    and ICC chunk (100 zTXt chunks of 8 MB zeros in 770 KB: 3.9 s).
    """
    view = memoryview(data)
    stream = zlib.decompressobj()
    inflated = 0
    corrupt = False
    for start, stop in idat:
        pending = view[start:stop]
        while pending and not stream.eof and not corrupt:
            try:
                inflated += len(stream.decompress(pending, 1 << 20))
            except zlib.error:
                # Corrupt: libpng refuses it itself, or stops reading there. The text chunks are
                # still checked: libpng inflates those before it ever reaches the image data.
                corrupt = True
                break
            pending = stream.unconsumed_tail
            if inflated > row_bytes + 1024:
                raise InputError(f"PNG's image data inflates to over the {row_bytes} bytes its rows take; refused")
    budget = MAX_PNG_TEXT_INFLATED
    for kind, start, stop in text:
        keyword_end = data.find(b"\0", start, min(stop, start + 80))
        if keyword_end < 0:
            continue  # malformed: libpng skips it with a warning
        at = keyword_end + 2  # zTXt and iCCP: keyword, 0, method, compressed data
        if kind == b"iTXt":  # keyword, 0, compressed?, method, language, 0, translated keyword, 0, text
            if keyword_end + 3 > stop or data[keyword_end + 1] != 1:
                continue  # uncompressed text
            language_end = data.find(b"\0", keyword_end + 3, stop)
            translated_end = data.find(b"\0", language_end + 1, stop) if language_end >= 0 else -1
            if translated_end < 0:
                continue
            at = translated_end + 1
        compressed = view[at:stop]
        stream = zlib.decompressobj()
        while compressed and not stream.eof:
            try:
                budget -= len(stream.decompress(compressed, 1 << 20))
            except zlib.error:
                break  # corrupt: libpng gives up on it too
            compressed = stream.unconsumed_tail
            if budget < 0:
                raise InputError(f"PNG's compressed text and ICC chunks inflate to over "
                                 f"{MAX_PNG_TEXT_INFLATED} bytes; refused")


def _check_exif_size(shown_format, exif):
    if exif > MAX_EXIF_BYTES:
        raise InputError(f"{shown_format}'s EXIF data is {exif} bytes, over the {MAX_EXIF_BYTES} "
                         "a camera writes; refused")


# --- GIF: blocks, to the first image ------------------------------------------------------------

_GIF_BLOCK_START = re.compile(rb"[\x21\x2c\x3b]")


def _gif_header(data):
    """The size Pillow gives the first frame: the logical screen, grown to the frame's extent."""
    end = len(data)
    if end < 13:
        raise InputError("GIF is truncated: its screen descriptor is missing")
    screen_width, screen_height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global color table
    blocks = stray = 0
    while True:
        found = _GIF_BLOCK_START.search(data, pos)
        if found is None or data[found.start()] == 0x3B:  # the end, or the trailer, before any image
            raise InputError("GIF is truncated or corrupt: it ends before its first image")
        stray += found.start() - pos  # Pillow skips bytes between blocks one at a time, in Python
        if stray > MAX_GIF_STRAY_BYTES:
            raise InputError(f"GIF has over {MAX_GIF_STRAY_BYTES} stray bytes between its blocks; refused")
        pos = found.start()
        if data[pos] == 0x2C:  # the image descriptor: left, top, width, height
            if pos + 9 > end:
                raise InputError("GIF is truncated: its first image descriptor is cut short")
            left, top, width, height = struct.unpack_from("<HHHH", data, pos + 1)
            return _Header("GIF", max(screen_width, left + width), max(screen_height, top + height))
        pos += 2  # an extension: introducer, label, then sub-blocks until an empty one
        while True:
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                raise InputError(f"GIF has over {MAX_GIF_BLOCKS} extension blocks before its first image; refused")
            if pos >= end:
                raise InputError("GIF is truncated or corrupt: it ends before its first image")
            size = data[pos]
            pos += 1 + size
            if size == 0:
                break


# --- TIFF: the first directory's entries and the data they declare ----------------------------

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                    16: 8, 17: 8, 18: 8}


def _tiff_header(data):
    """ImageWidth and ImageLength of the first directory (the page OpenCV and Pillow read)."""
    end = len(data)
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\0", b"\0+")  # BigTIFF: 8-byte offsets and counts, 20-byte entries
    count_format, entry_size, inline = (order + "Q", 20, 8) if big else (order + "H", 12, 4)
    if end < (16 if big else 8):
        raise InputError("TIFF is truncated: its header is cut short")
    first = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    count_size = 8 if big else 2
    if first + count_size > end:
        raise InputError("TIFF is truncated or corrupt: its first directory lies past the end")
    count = struct.unpack_from(count_format, data, first)[0]
    if count > MAX_TIFF_ENTRIES:
        raise InputError(f"TIFF directory has {count} entries, over the limit of {MAX_TIFF_ENTRIES}; refused")
    if first + count_size + count * entry_size > end:
        raise InputError("TIFF is truncated or corrupt: its first directory runs past the end")
    entry_format = order + ("HHQ" if big else "HHI")
    value_format = {3: "H", 4: "I", 16: "Q"}
    width = height = 0
    declared = 0
    for entry in range(first + count_size, first + count_size + count * entry_size, entry_size):
        tag, kind, items = struct.unpack_from(entry_format, data, entry)
        size = items * _TIFF_TYPE_SIZES.get(kind, 1)
        if size > inline:  # stored elsewhere in the file; readers load it all
            declared += size
        elif tag in (256, 257) and kind in value_format:
            value = struct.unpack_from(order + value_format[kind], data, entry + entry_size - inline)[0]
            width, height = (value, height) if tag == 256 else (width, value)
    if declared > end:  # real directories' data never overlap, so it all fits in the file
        raise InputError(f"TIFF directory declares {declared} bytes of tag data in a file of {end} bytes; refused")
    return _Header("TIFF", width, height)


# --- WebP: RIFF chunks ------------------------------------------------------------------------

def _webp_header(data):
    """The canvas (VP8X) or the first bitstream's size: what libwebp decodes."""
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    pos, chunks, exif = 12, 0, 0
    size = None
    while pos + 8 <= end:
        chunks += 1
        if chunks > MAX_WEBP_CHUNKS:
            raise InputError(f"WebP has over {MAX_WEBP_CHUNKS} chunks; refused")
        kind, length = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8:pos + 8 + min(length, 16)]
        if kind == b"EXIF":
            exif += min(pos + 8 + length, end) - (pos + 8)
        if size is None:
            if kind == b"VP8X" and len(body) >= 10:
                size = (1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little"))
            elif kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
                size = (struct.unpack_from("<H", body, 6)[0] & 0x3FFF, struct.unpack_from("<H", body, 8)[0] & 0x3FFF)
            elif kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
                bits = struct.unpack_from("<I", body, 1)[0]
                size = (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
        pos += 8 + length + (length & 1)
    if size is None:
        raise InputError("WebP is truncated or corrupt: it has no image size")
    _check_exif_size("WebP", exif)
    return _Header("WEBP", *size)


# --- BMP ------------------------------------------------------------------------------------------

def _bmp_header(data):
    if len(data) < 26:
        raise InputError(NOT_AN_IMAGE.format(len(data)))
    header_size = struct.unpack_from("<I", data, 14)[0]
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    elif header_size >= 40:
        width, height = struct.unpack_from("<ii", data, 18)
        height = abs(height)  # negative: stored top-down
    else:
        raise InputError(NOT_AN_IMAGE.format(len(data)))
    return _Header("BMP", width, height)


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)
    except Exception:
        return None
