"""A frame as the MQTT payload a stream expects: JPEG bytes (FORMAT="BINARY"), or a JSON object
with the JPEG in base64 in one field (FORMAT="JSON")."""
from __future__ import annotations

import base64
import json

import cv2

from camera.camera_source import Frame


class FrameEncoder:
    def __init__(self, width: int | None = None, quality: int = 85, json_field: str | None = None,
                 camera_name: str = "camera"):
        """width: resize to this many pixels wide, keeping the aspect ratio (None: as the camera sends).
        json_field: None for raw JPEG bytes, else the field that holds the base64 JPEG."""
        self.width = width
        self.quality = quality
        self.json_field = json_field
        self.camera_name = camera_name

    def jpeg(self, frame: Frame) -> bytes:
        pixels = frame.pixels
        height, width = pixels.shape[:2]
        if self.width and self.width != width:
            size = (self.width, max(1, round(height * self.width / width)))
            # Area averaging when shrinking keeps fine detail (defects) from aliasing away.
            interpolation = cv2.INTER_AREA if self.width < width else cv2.INTER_LINEAR
            pixels = cv2.resize(pixels, size, interpolation=interpolation)
        ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"OpenCV could not encode a {width}x{height} frame as JPEG")
        return jpeg.tobytes()

    def payload(self, frame: Frame) -> bytes:
        jpeg = self.jpeg(frame)
        if self.json_field is None:
            return jpeg
        return json.dumps({self.json_field: base64.b64encode(jpeg).decode("ascii"),
                           "ts": frame.captured_ms, "camera": self.camera_name}).encode()
