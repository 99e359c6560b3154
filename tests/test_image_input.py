"""The one decode path: every accepted form gives BGR pixels; bad input gives one clear line."""
import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from bad_inputs import bad_images
from image_input import InputError, decode_image

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
