"""A video file played through the bridge: one frame for each of the bridge's slots.

By default every frame of the file is sent, in order, one per 1/--fps (a 25 fps recording at
--fps 5 plays five times slower, and no frame is skipped). `realtime` plays it at its own
speed instead, skipping the frames between slots as a live camera would (they count as dropped).
At the end the file starts again with `loop`; otherwise the bridge stops.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from camera.camera_source import CameraSource, Frame
from camera.frame_source import FrameSource
from camera.native_messages import NativeMessages
from core.errors import InputError


class VideoFile(FrameSource):
    def __init__(self, source: CameraSource, capture: cv2.VideoCapture, first: np.ndarray, timeout_s: float,
                 messages: NativeMessages, log: Callable[[str], None], fps: float,
                 loop: bool = False, realtime: bool = False):
        super().__init__(source, capture, timeout_s, messages, log)
        self.loop = loop
        self._pending: np.ndarray | None = first  # read when the file was opened, not yet handed out
        # realtime: file frames per bridge slot (a 25 fps file at --fps 5: 5, the first sent, four skipped).
        file_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        self._frames_per_slot = file_fps / fps if realtime and file_fps > 0 else 1.0
        if realtime and file_fps <= 0:
            log(f"{source.label} does not say its frame rate: --realtime is off, every frame is sent")
        self._slot = 0  # slots served since the file (re)started
        self._position = 0  # file frames consumed since the file (re)started

    def next_frame(self, after: int, deadline: float) -> Frame | None:
        """The file's frame for this slot; None at the end (then `ended` is set unless it loops)."""
        if self.ended:
            return None
        target = int(self._slot * self._frames_per_slot)  # the file frame this slot shows
        self._slot += 1
        if target < self._position:  # realtime, --fps above the file's rate: this slot has no new frame
            return None
        while True:
            pixels = self._read_at(target)
            if pixels is not None:
                return self._numbered(pixels)
            if not self.loop:
                self.ended = True
                return None
            if not self._restart():
                return None
            target, self._slot = 0, 1

    def _read_at(self, target: int) -> np.ndarray | None:
        """The frame at index `target` (reading forward and skipping the ones before it)."""
        if self._capture is None:
            return None
        while self._position <= target:
            if self._pending is not None:
                pixels, self._pending = self._pending, None
            elif self._position < target:
                pixels = np.empty(0) if self._capture.grab() else None  # skipped: no need to convert it
            else:
                pixels, _ = self.source.read(self._capture, self.messages)
            if pixels is None:
                return None
            self._position += 1
            if self._position <= target:
                self.frames_read += 1  # skipped between slots: a dropped frame
        return pixels

    def _restart(self) -> bool:
        """Open the file again from its start; False (and ended) if it no longer opens."""
        self._capture.release()
        self._capture = None
        try:
            self._capture, self._pending = self.source.start_capture(self.timeout_s, self.messages)
        except InputError as e:
            self.log(f"{e}: stopping")
            self.ended = True
            return False
        self._position = 0
        return True

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
