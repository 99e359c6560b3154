"""Bad values a rule can hand the functions, shared by the protocol and end-to-end tests."""
import base64
import functools

import cv2
import numpy as np

from tests.support.paths import fixture_path


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _png(pixels):
    return cv2.imencode(".png", pixels)[1].tobytes()


@functools.cache  # the 12000x12000 PNG takes a second to make
def bad_images():
    """name -> (value, a word the one-line error must contain)."""
    with open(fixture_path("images", "cat_720p.jpg"), "rb") as f:
        jpeg = f.read()
    huge = np.zeros((12000, 12000), np.uint8)  # 144 Mpx, over the default 40 Mpx cap
    return {
        "not base64": ("%%% this is not base64 %%%", "base64"),
        "base64 of text": (_b64(b"hello, this is not a picture at all"), "not an image"),
        "empty string": ("", "empty"),
        "null": (None, "null"),
        "number": (42, "base64 string or bytes"),
        "truncated jpeg": (_b64(jpeg[: len(jpeg) // 2]), "truncated"),
        "1x1 image": (_b64(_png(np.zeros((1, 1, 3), np.uint8))), "1x1"),
        "12000x12000 image": (_b64(_png(huge)), "max_pixels"),
        "whitespace": ("  \n\t ", "empty"),
        "unicode text": ("ünïcödé ✓ 画像", "base64"),
        "json object": ({"image": "abc"}, "got dict"),
        "json list": ([1, 2, 3], "got list"),
        "boolean": (True, "got bool"),
        "data uri of text": ("data:text/plain;base64,aGVsbG8=", "text/plain"),
        "data uri not base64": ("data:image/png,rawbytes", "not base64"),
        "over 20 MB": ("A" * 28_000_000, "max_bytes"),
        "valid base64, wrong padding": ("abc", "not an image"),
        "pdf": (_b64(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n"), "not an image"),
    }
