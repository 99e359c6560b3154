"""Small files that explode, built from the formats' specs, and a child process that measures one.

Each builder writes the bytes a hostile publisher could send (struct and zlib for PNG chunks
and their CRCs, GIF blocks, TIFF directories, WebP RIFF chunks, JPEG segments and scans);
nothing here is committed as a binary. `measure` hands one to `decode_image` in a fresh
Python process and reports its answer, the call's time and its growth of the peak RSS;
tests/integration/test_bombs.py asserts on it and bench/bombs.py prints it.
"""
from __future__ import annotations

import base64
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

from tests.support.paths import REPO

LIMITS = {"max_pixels": 40_000_000, "max_bytes": 20_000_000}  # the defaults of input.*


# --- PNG (ISO/IEC 15948: chunk = length, type, data, CRC-32 of type and data) ---

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def deflated_zeros(total: int, block: int = 1 << 20) -> bytes:
    """A zlib stream of `total` zero bytes, made without compressing them all.

    After a full flush deflate keeps no history, so the compressed form of each further
    block of zeros is the same bytes: one is repeated. Adler-32 of n zeros is (n mod 65521) << 16 | 1.
    """
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = raw.compress(bytes(block)) + raw.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = piece * (total // block) + tail.compress(bytes(total % block)) + tail.flush()
    return b"\x78\xda" + body + struct.pack(">I", ((total % 65521) << 16) | 1)


def png(width: int, height: int, idat: bytes | None = None, before: bytes = b"", after: bytes = b"") -> bytes:
    """An 8-bit grayscale PNG; its image data all zeros unless `idat` is given."""
    if idat is None:
        idat = deflated_zeros(height * (width + 1))  # each row: filter byte 0, then the pixels
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return PNG_SIGNATURE + ihdr + before + png_chunk(b"IDAT", idat) + after + png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """side x side pixels of deflated zeros: 875 KB declare 30000x30000 (900 MB of rows)."""
    return png(side, side)


def png_chunk_flood(chunks: int = 1_000_000) -> bytes:
    """A 2x2 PNG behind `chunks` empty private ancillary chunks (12 bytes each)."""
    return png(2, 2, before=png_chunk(b"prVt", b"") * chunks)


def png_extra_image_data(total: int = 900_000_000) -> bytes:
    """A 2x2 PNG whose image data inflates on to `total` bytes past its 6 bytes of rows."""
    return png(2, 2, idat=deflated_zeros(total))


def png_text_bomb(chunks: int = 100, inflated: int = 7_900_000) -> bytes:
    """A 2x2 PNG with `chunks` zTXt chunks, each of `inflated` zeros deflated."""
    text = zlib.compress(bytes(inflated), 9)
    return png(2, 2, before=b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + text) for i in range(chunks)))


# --- GIF (GIF89a: header, screen descriptor, color table, blocks, trailer) ---

def gif(screen: tuple[int, int] = (2, 2), frame: tuple[int, int] | None = None, before_image: bytes = b"") -> bytes:
    """A 2x2 GIF from Pillow, with its screen and first frame's declared sizes and blocks changed."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(buffer, "GIF")
    data = buffer.getvalue()
    flags = data[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while data[at] == 0x21:  # Pillow's own extensions: skip to the image descriptor
        at += 2
        while data[at]:
            at += 1 + data[at]
        at += 1
    assert data[at] == 0x2C
    width, height = frame or (2, 2)
    descriptor = data[at:at + 5] + struct.pack("<HH", width, height) + data[at + 9:]
    return data[:6] + struct.pack("<HH", *screen) + data[10:at] + before_image + descriptor


def gif_extension_flood(extensions: int = 3_000_000) -> bytes:
    """A 2x2 GIF behind `extensions` empty comment extensions (3 bytes each)."""
    return gif(before_image=b"\x21\xfe\x00" * extensions)


# --- TIFF (TIFF 6.0: header, then a directory of 12-byte entries) ---

def tiff(entries: list[tuple[int, int, int, bytes]], order: str = "<", pad_to: int = 0) -> bytes:
    """A TIFF whose first directory holds `entries` (tag, type, count, 4-byte value field)."""
    directory = struct.pack(order + "H", len(entries))
    for tag, kind, count, value in sorted(entries):
        directory += struct.pack(order + "HHI", tag, kind, count) + value
    data = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8) + directory + b"\0\0\0\0"
    return data + bytes(max(0, pad_to - len(data)))


def tiff_gray(width: int, height: int, extra: list[tuple[int, int, int, bytes]] = (), pad_to: int = 0) -> bytes:
    """An uncompressed 8-bit grayscale TIFF of zeros (one strip at the end of the file)."""
    def long(value):
        return struct.pack("<I", value)
    base = 8 + 2 + 12 * (9 + len(extra)) + 4
    strip_at = max(base, pad_to)
    entries = [(256, 4, 1, long(width)), (257, 4, 1, long(height)), (258, 3, 1, long(8)), (259, 3, 1, long(1)),
               (262, 3, 1, long(1)), (273, 4, 1, long(strip_at)), (277, 3, 1, long(1)),
               (278, 4, 1, long(height)), (279, 4, 1, long(width * height)), *extra]
    return tiff(entries, pad_to=strip_at) + bytes(min(width * height, 4096))


def tiff_entry_flood(entries: int = 4000, size: int = 1_000_000) -> bytes:
    """A 2x2 TIFF with `entries` private tags, each declaring the whole file as its data."""
    extra = [(40000 + i, 7, size - 8, struct.pack("<I", 8)) for i in range(entries)]
    return tiff_gray(2, 2, extra, pad_to=size)


def tiff_overlapping_data(entries: int = 500, size: int = 1_000_000) -> bytes:
    """Few entries (under the count cap), each declaring the whole file: far more data than it holds."""
    return tiff_entry_flood(entries, size)


# --- WebP (RIFF: "RIFF", size, "WEBP", then chunks of fourcc, size, data, pad) ---

def riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def webp(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def webp_2x2_chunks() -> bytes:
    """The chunks of a lossless 2x2 WebP from Pillow (its VP8L chunk)."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()[12:]


def webp_chunk_flood(chunks: int = 1_000_000) -> bytes:
    """A 2x2 WebP (VP8X canvas) with `chunks` empty unknown chunks before its bitstream."""
    vp8x = riff_chunk(b"VP8X", b"\0\0\0\0" + (1).to_bytes(3, "little") * 2)
    return webp(vp8x + riff_chunk(b"junk", b"") * chunks + webp_2x2_chunks())


def webp_huge_lossless(side: int = 16383) -> bytes:
    """A VP8L header declaring side x side, ahead of a 2x2 image's bitstream."""
    chunk = webp_2x2_chunks()
    bits = (side - 1) | ((side - 1) << 14) | (struct.unpack_from("<I", chunk, 9)[0] & ~((1 << 28) - 1))
    return webp(chunk[:9] + struct.pack("<I", bits) + chunk[13:])


# --- JPEG (ITU T.81: segments of marker, length, payload; scans of entropy-coded data) ---

def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def progressive_jpeg(width: int, height: int, scans: int) -> bytes:
    """A progressive grayscale JPEG with one DC scan and `scans - 1` AC scans, each empty.

    libjpeg fills a scan's missing entropy data with zero bits (a warning, no error), which the
    one-code Huffman tables read as "no change", so every scan is a pass over every block of the
    image for 10 bytes of file.
    """
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    header = (b"\xff\xd8" + jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
              + jpeg_segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
              + jpeg_segment(0xC4, b"\x00" + one_code) + jpeg_segment(0xC4, b"\x10" + one_code))
    dc_scan = jpeg_segment(0xDA, b"\x01\x01\x00\x00\x00\x00")
    ac_scan = jpeg_segment(0xDA, b"\x01\x01\x00\x01\x3f\x00")
    return header + dc_scan + ac_scan * (scans - 1) + b"\xff\xd9"


def jpeg_huge(side: int = 65000) -> bytes:
    """A baseline JPEG header declaring side x side, with nothing behind it but EOI."""
    return progressive_jpeg(side, side, 1)


# --- BMP (BITMAPINFOHEADER) ---

def bmp_huge(side: int = 30000) -> bytes:
    """An 8-bit RLE8 BMP declaring side x side, with a few bytes of pixel data."""
    palette = bytes(4 * 256)
    offset = 14 + 40 + len(palette)
    pixels = b"\x00\x01"  # end of bitmap
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


# --- base64 ---

def spaced_base64(groups: int = 5_000_000) -> str:
    """Base64 text of `groups` four-character groups, each followed by a space (25 MB for 5 million)."""
    return "QUFB " * groups


# --- One decode in a fresh process ---

CHILD = r"""
import base64, json, resource, sys, time
path, form, max_pixels, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from core.image_input import InputError, decode_image
with open(path, "rb") as f:
    data = f.read()
value = data.decode() if form == "text" else base64.b64encode(data).decode() if form == "base64" else data
del data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wall, cpu = time.perf_counter(), time.process_time()
try:
    pixels, size = decode_image(value, max_pixels, max_bytes)
    answer, refused = f"decoded {size[0]}x{size[1]}", False
except InputError as e:
    answer, refused = str(e), True
except MemoryError:
    answer, refused = "MemoryError", False
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"answer": answer, "refused": refused, "seconds": wall, "cpu_seconds": cpu,
                  "rss_growth_mb": (after - before) / 1024, "peak_rss_mb": after / 1024}))
"""


def measure(data: bytes | str, form: str = "bytes", limits: dict | None = None, code_dir: str = REPO,
            memory_limit_gb: float = 4, timeout: float = 120) -> dict:
    """decode_image of `data` in a fresh process (image_input imported from `code_dir`).

    form: "bytes" (passed as is), "base64" (as base64 text) or "text" (`data` is the text).
    The child's address space is capped at `memory_limit_gb` and its run at `timeout`, so that
    measuring the old, unbounded code cannot take the box down. Returns the child's JSON
    (answer, refused, seconds, cpu_seconds, rss_growth_mb, peak_rss_mb), or "answer" saying
    how it ended when it printed none.
    """
    limits = limits or LIMITS
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        limit = int(memory_limit_gb * 2**30)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([code_dir, REPO])}
        try:
            done = subprocess.run(
                [sys.executable, "-c", CHILD, f.name, form, str(limits["max_pixels"]), str(limits["max_bytes"])],
                capture_output=True, text=True, timeout=timeout, env=env, cwd=code_dir,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        except subprocess.TimeoutExpired:
            return {"answer": f"no answer within {timeout} s", "refused": False}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"answer": f"exit {done.returncode}: {done.stderr.strip()[-300:]}", "refused": False}
    return json.loads(lines[-1])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# name -> (build, form, format, a word its one-line refusal must contain). The table first.
BOMBS = {
    "PNG 30000x30000, deflated zeros": (lambda: png_bomb(30000), "bytes", "PNG", "max_pixels"),
    "PNG 60000x60000, deflated zeros": (lambda: png_bomb(60000), "bytes", "PNG", "max_pixels"),
    "PNG 2x2, 1,000,000 empty private chunks": (png_chunk_flood, "bytes", "PNG", "chunks"),
    "base64 of 5 million space-separated groups": (spaced_base64, "text", "base64", "not an image"),
    "PNG 2x2, image data inflating to 900 MB": (png_extra_image_data, "bytes", "PNG", "inflates"),
    "PNG 2x2, 100 zTXt chunks of 7.9 MB zeros": (png_text_bomb, "bytes", "PNG", "inflate"),
    "GIF 2x2, 3,000,000 empty comment extensions": (gif_extension_flood, "bytes", "GIF", "extension blocks"),
    "GIF 2x2 screen, 60000x60000 first frame": (lambda: gif(frame=(60000, 60000)), "bytes", "GIF", "max_pixels"),
    "TIFF 2x2, 4,000 entries declaring 1 MB each": (tiff_entry_flood, "bytes", "TIFF", "entries"),
    "TIFF 2x2, 500 entries declaring 1 MB each": (tiff_overlapping_data, "bytes", "TIFF", "bytes of tag data"),
    "WebP 2x2, 1,000,000 empty chunks": (webp_chunk_flood, "bytes", "WEBP", "chunks"),
    "WebP lossless, 16383x16383 declared": (webp_huge_lossless, "bytes", "WEBP", "max_pixels"),
    "JPEG progressive 6000x6000, 9,990 empty scans": (lambda: progressive_jpeg(6000, 6000, 9990), "bytes", "JPEG",
                                                      "scans"),
    "JPEG 65000x65000 declared": (jpeg_huge, "bytes", "JPEG", "max_pixels"),
    "BMP RLE8 30000x30000 declared": (bmp_huge, "bytes", "BMP", "max_pixels"),
}
