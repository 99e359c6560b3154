"""The one decode path: every accepted form gives BGR pixels; bad input gives one clear line."""
import base64
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from core.image_input import InputError, decode_image
from tests.support import crafted_images as crafted
from tests.support.bad_inputs import bad_images

LIMITS = dict(max_pixels=40_000_000, max_bytes=20_000_000)


def encoded(ext, pixels):
    return cv2.imencode(ext, pixels)[1].tobytes()


def gradient(channels=3, dtype=np.uint8):
    img = np.tile(np.linspace(0, np.iinfo(dtype).max, 64, dtype=np.float64), (48, 1)).astype(dtype)
    return img if channels == 1 else np.dstack([img] * channels)


@pytest.mark.parametrize("name,data", [
    ("jpeg", encoded(".jpg", gradient())),
    ("png rgb", encoded(".png", gradient())),
    ("png alpha", encoded(".png", gradient(4))),
    ("png 16-bit", encoded(".png", gradient(3, np.uint16))),
    ("png grayscale", encoded(".png", gradient(1))),
    ("bmp", encoded(".bmp", gradient())),
    ("tiff", encoded(".tiff", gradient())),
    ("webp", encoded(".webp", gradient())),
    ("gif", (lambda b: (Image.fromarray(gradient()).save(b, "GIF"), b.getvalue())[1])(io.BytesIO())),
])
def test_formats_decode_to_bgr(name, data):
    for value in (data, base64.b64encode(data).decode(), "data:image/png;base64," + base64.b64encode(data).decode()):
        pixels, size = decode_image(value, **LIMITS)
        assert pixels.dtype == np.uint8 and pixels.shape == (48, 64, 3), name
        assert size == (64, 48)
        assert pixels[:, -1].mean() > 200 and pixels[:, 0].mean() < 50  # the gradient survived


def test_cmyk_jpeg_decodes():
    buffer = io.BytesIO()
    Image.fromarray(gradient()).convert("CMYK").save(buffer, "JPEG")
    pixels, _ = decode_image(buffer.getvalue(), **LIMITS)
    assert pixels.shape == (48, 64, 3)


def test_large_jpeg_is_decoded_reduced_but_reports_its_real_size():
    data = encoded(".jpg", cv2.resize(gradient(), (1920, 1080)))
    for fit, shape in (((448, 448), (540, 960, 3)), ((224, 224), (270, 480, 3)), ((2000, 100), (1080, 1920, 3))):
        pixels, size = decode_image(data, **LIMITS, fit=fit)
        assert size == (1920, 1080)
        assert pixels.shape == shape


@pytest.mark.parametrize("case", list(bad_images()))
def test_bad_input_is_one_clear_line(case):
    value, word = bad_images()[case]
    with pytest.raises(InputError) as err:
        decode_image(value, **LIMITS)
    assert word in str(err.value) and "\n" not in str(err.value)


def test_caps_are_configurable():
    data = encoded(".png", gradient())
    with pytest.raises(InputError, match="max_pixels"):
        decode_image(data, max_pixels=1000, max_bytes=10**6)
    with pytest.raises(InputError, match="max_bytes"):
        decode_image(data, max_pixels=10**6, max_bytes=100)
    with pytest.raises(InputError, match="max_bytes"):
        decode_image(base64.b64encode(data).decode(), max_pixels=10**6, max_bytes=100)


def test_exif_rotation_and_trailers():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(buffer, "JPEG", exif=exif)
    data = buffer.getvalue()
    pixels, size = decode_image(data, **LIMITS)
    assert size == (100, 300) and pixels.shape[:2] == (300, 100)
    decode_image(data + b"\0" * 500, **LIMITS)  # bytes after the end-of-image marker are fine


def test_data_uri_of_another_type_is_refused():
    with pytest.raises(InputError, match="text/plain"):
        decode_image("data:text/plain;base64,aGVsbG8=", **LIMITS)


# --- JPEG completeness: decided from the stream (markers, scans, EOI), not from where FFD9 lies ---

def camera_jpeg(progressive=False, exif=None, size=(640, 480)):
    """A JPEG with real texture (so its scan is long and holds stuffed FF bytes and more)."""
    rng = np.random.default_rng(3)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), (0, 0), 1.0)
    buffer = io.BytesIO()
    options = {"exif": exif} if exif else {}
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=progressive, **options)
    return buffer.getvalue()


EXIF_ORIENTATION_TAG = 0x0112


def exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """APP1 payload as cameras write it: IFD0 (orientation 1) -> IFD1 pointing at an embedded JPEG thumbnail."""
    ifd0, ifd1 = 8, 8 + 2 + 12 + 4
    thumbnail_at = ifd1 + 2 + 2 * 12 + 4
    tiff = b"II*\0" + struct.pack("<I", ifd0)
    tiff += struct.pack("<H", 1) + struct.pack("<HHII", EXIF_ORIENTATION_TAG, 3, 1, 1) + struct.pack("<I", ifd1)
    tiff += struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, thumbnail_at) \
        + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail)) + struct.pack("<I", 0)
    return b"Exif\0\0" + tiff + thumbnail


def segments(data):
    """(marker, offset) of every segment before the first scan, and the first scan's data offset."""
    found, pos = [], 2
    while True:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        found.append((marker, pos))
        pos += 2 + length
        if marker == 0xDA:
            return found, pos


def assert_truncated(data):
    with pytest.raises(InputError) as err:
        decode_image(data, **LIMITS)
    assert str(err.value) == "JPEG is truncated: its end-of-image marker is missing"


@pytest.mark.parametrize("times", [0.5, 1, 10, 100])
@pytest.mark.parametrize("filler", ["zeros", "random", "another jpeg"])
def test_jpeg_with_a_trailer_of_any_size_is_read(times, filler):
    data = encoded(".jpg", cv2.resize(gradient(), (128, 96)))  # about 1.5 KB; the bug refused trailers > image
    whole = int(len(data) * times)
    trailer = {"zeros": b"\0" * whole,
               "random": np.random.default_rng(1).integers(0, 256, whole, dtype=np.uint8).tobytes(),
               "another jpeg": (data * (int(times) + 1))[:whole]}[filler]  # MPO / Ultra HDR: pictures after the first
    pixels, size = decode_image(data + trailer, **LIMITS)
    assert size == (128, 96)
    assert np.array_equal(pixels, decode_image(data, **LIMITS)[0])


@pytest.mark.parametrize("trailer", [8962, 200_000])
def test_the_reported_case_a_camera_frame_with_a_large_trailer(trailer):
    data = camera_jpeg(size=(160, 120))
    assert decode_image(data + b"\x55" * trailer, **LIMITS)[1] == (160, 120)


def test_truncation_is_caught_at_every_stage():
    data = camera_jpeg()
    found, scan_at = segments(data)
    offsets = dict((marker, pos) for marker, pos in reversed(found))  # the first of each kind
    cuts = {"after SOI": 2, "mid APP0": offsets[0xE0] + 5, "mid DQT": offsets[0xDB] + 20,
            "before SOF": offsets[0xC0], "mid DHT": offsets[0xC4] + 10, "mid SOS header": scan_at - 3,
            "scan just begun": scan_at + 10, "mid scan": (scan_at + len(data)) // 2, "scan nearly done": len(data) - 40,
            "EOI missing": len(data) - 2, "half an EOI": len(data) - 1}
    for where, cut in cuts.items():
        assert 0 < cut < len(data), where
        assert_truncated(data[:cut])
    assert decode_image(data, **LIMITS)[1] == (640, 480)


def test_progressive_jpeg_complete_with_trailer_and_cut_between_scans():
    data = camera_jpeg(progressive=True)
    assert decode_image(data, **LIMITS)[1] == (640, 480)
    assert decode_image(data + b"\0" * (10 * len(data)), **LIMITS)[1] == (640, 480)
    # A progressive file cut between two scans decodes to a blurry picture without a word from libjpeg.
    scans = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"]
    assert len(scans) >= 5
    for scan in scans[1:]:
        assert_truncated(data[:scan])
    assert_truncated(data[:(scans[-1] + len(data)) // 2])


def test_exif_thumbnail_end_marker_does_not_make_a_cut_file_complete():
    thumbnail = encoded(".jpg", cv2.resize(gradient(), (160, 120)))
    data = camera_jpeg(exif=exif_with_thumbnail(thumbnail))
    thumbnail_end = data.find(b"\xff\xd9") + 2
    assert data.find(thumbnail) > 0 and thumbnail_end < len(data) - 2  # the thumbnail's EOI sits inside APP1
    assert decode_image(data, **LIMITS)[1] == (640, 480)
    assert decode_image(data + b"\0" * 200_000, **LIMITS)[1] == (640, 480)
    _, scan_at = segments(data)
    for cut in (thumbnail_end, thumbnail_end + 1, scan_at + 100, (scan_at + len(data)) // 2, len(data) - 2):
        assert_truncated(data[:cut])


def test_a_jpeg_of_millions_of_tiny_segments_is_refused_before_pillow_reads_them():
    """Pillow walks header segments in Python (seconds for millions); real JPEGs have tens."""
    data = camera_jpeg(size=(64, 48))
    with pytest.raises(InputError, match="JPEG has over 10000 marker segments"):
        decode_image(data[:2] + b"\xff\xfe\x00\x02" * 4_000_000 + data[2:], **LIMITS)  # 16 MB of comments
    many_but_real = data[:2] + b"\xff\xfe\x00\x02" * 500 + data[2:]  # 500 comments: still a JPEG
    assert decode_image(many_but_real, **LIMITS)[1] == (64, 48)


# --- Legit images the bounded header walks must keep reading (tests/integration/test_bombs.py has the bombs) ---

def pillow_bytes(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunks(data):
    """[(type, payload)] of a PNG."""
    found, pos = [], 8
    while pos < len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        found.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return found


def png_of(chunks):
    return crafted.PNG_SIGNATURE + b"".join(crafted.png_chunk(kind, payload) for kind, payload in chunks)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "PNG eXIf after IDAT", "WEBP", "TIFF"])
def test_the_size_is_the_decoded_pictures_after_exif_orientation(fmt):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: OpenCV turns the 300x100 picture to 100x300
    data = pillow_bytes(Image.fromarray(np.zeros((100, 300, 3), np.uint8)), fmt.split()[0], exif=exif)
    if fmt == "PNG eXIf after IDAT":
        chunks = png_chunks(data)
        exif_chunk = next(c for c in chunks if c[0] == b"eXIf")
        rest = [c for c in chunks if c[0] != b"eXIf"]
        data = png_of(rest[:-1] + [exif_chunk, rest[-1]])
    pixels, size = decode_image(data, **LIMITS)
    assert pixels.shape[:2] == (300, 100) and size == (100, 300)


def test_an_exif_segment_after_the_scan_does_not_turn_the_reported_size():
    """libjpeg (so OpenCV) reads markers up to the first scan only: an EXIF orientation 6 placed after
    it turns no pixel, and the reported size, which scales inference's boxes, must not turn either."""
    tiff = b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", EXIF_ORIENTATION_TAG, 3, 1, 6, 0) + bytes(4)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    data = pillow_bytes(Image.fromarray(np.zeros((100, 300, 3), np.uint8)), "JPEG")
    assert data.endswith(b"\xff\xd9")
    pixels, size = decode_image(data[:-2] + app1 + data[-2:], **LIMITS)
    assert pixels.shape[:2] == (100, 300) and size == (300, 100)


@pytest.mark.parametrize("depth, color", [(8, 0), (16, 6), (1, 0), (2, 3), (4, 3), (8, 2)])
@pytest.mark.parametrize("width, height", [(2, 2), (3, 7), (9, 17), (100, 3), (33, 65)])
def test_interlaced_and_low_bit_depth_pngs_decode(depth, color, width, height):
    channels = {0: 1, 2: 3, 3: 1, 6: 4}[color]
    raw = 0
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):  # Adam7: each pass's rows, a filter byte each
        columns, rows = len(range(x0, width, dx)), len(range(y0, height, dy))
        if columns and rows:
            raw += rows * (1 + (columns * depth * channels + 7) // 8)
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 1))]
    if color == 3:
        chunks.append((b"PLTE", b"\x00\x00\x00" * (1 << depth)))
    data = png_of(chunks + [(b"IDAT", zlib.compress(bytes(raw))), (b"IEND", b"")])
    pixels, size = decode_image(data, **LIMITS)
    assert pixels.shape == (height, width, 3) and size == (width, height)


def test_a_png_in_thousands_of_image_data_chunks_decodes():
    picture = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    chunks = png_chunks(encoded(".png", picture))
    stream = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    split = [(b"IDAT", stream[i:i + 200]) for i in range(0, len(stream), 200)]
    assert len(split) > 4000
    data = png_of([chunks[0], *split, (b"IEND", b"")])
    assert np.array_equal(decode_image(data, **LIMITS)[0], picture)


def test_png_text_and_icc_chunks_within_their_budget_decode():
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 100_000, zip=True)
    info.add_itxt("description", "y" * 100_000, zip=True)
    data = pillow_bytes(Image.fromarray(gradient()), "PNG", pnginfo=info, icc_profile=b"\0" * 5000)
    assert decode_image(data, **LIMITS)[1] == (64, 48)


def test_a_jpeg_of_100_scans_decodes_and_one_of_101_is_refused():
    assert decode_image(crafted.progressive_jpeg(64, 48, 100), **LIMITS)[1] == (64, 48)
    with pytest.raises(InputError, match="JPEG has over 100 scans"):
        decode_image(crafted.progressive_jpeg(64, 48, 101), **LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_decode_their_first_frame(fmt):
    frames = [Image.fromarray(gradient()), *[Image.fromarray(gradient()[::-1, ::-1])] * 5]
    options = {"comment": b"made by a test", "loop": 0} if fmt == "GIF" else {}
    data = pillow_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
    pixels, size = decode_image(data, **LIMITS)
    assert size == (64, 48) and pixels[:, -1].mean() > 150 and pixels[:, 0].mean() < 100


def test_bigtiff_and_multipage_tiff_decode_their_first_page():
    for options in ({"big_tiff": True}, {"save_all": True, "append_images": [Image.fromarray(gradient()[::-1])]}):
        data = pillow_bytes(Image.fromarray(gradient()), "TIFF", **options)
        pixels, size = decode_image(data, **LIMITS)
        assert size == (64, 48) and pixels[:, -1].mean() > 200, options


def test_base64_in_every_wrapping_decodes():
    data = encoded(".png", gradient())
    text = base64.b64encode(data).decode()
    wrapped = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    for value in (wrapped, " \t" + text + "\n", urlsafe, "  data:image/png;base64," + wrapped, text.rstrip("=")):
        assert decode_image(value, **LIMITS)[1] == (64, 48)
    with pytest.raises(InputError, match="not valid base64"):
        decode_image(text[:40] + "é" + text[40:], **LIMITS)
