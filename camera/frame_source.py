"""What the bridge reads frames from: an opened CameraSource, live (LiveCamera) or a file (VideoFile).

The state both share lives here once: the source and its capture, the settings a reopen needs,
and the counts the bridge's progress line reports.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import cv2
import numpy as np

from camera.camera_source import CameraSource, Frame
from camera.native_messages import NativeMessages


class FrameSource(ABC):
    ended = False  # a file that played to its end and does not loop; the bridge then stops

    def __init__(self, source: CameraSource, capture: cv2.VideoCapture, timeout_s: float,
                 messages: NativeMessages, log: Callable[[str], None]):
        """capture: what source.start_capture gave (the bridge opens the source once up front)."""
        self.source = source
        self.timeout_s = timeout_s
        self.messages = messages
        self.log = log
        self.frames_read = 0  # every frame read, sent or not: each gets the next number
        self.reconnects = 0
        self.up = True
        self._capture: cv2.VideoCapture | None = capture

    def start(self) -> FrameSource:
        return self

    @abstractmethod
    def next_frame(self, after: int, deadline: float) -> Frame | None:
        """A frame numbered above `after` for the slot that ends at `deadline` (time.monotonic), or None."""

    @abstractmethod
    def close(self) -> None:
        """Release the capture (and end a reader thread)."""

    def _numbered(self, pixels: np.ndarray) -> Frame:
        """pixels as the next frame read, stamped now."""
        self.frames_read += 1
        return Frame(pixels, self.frames_read, int(time.time() * 1000))
