"""A stream or USB camera read on its own thread, so the bridge always publishes its newest frame.

A camera runs on its own clock: each slot of the bridge sends the first frame the camera gives in
it, as it arrives; the others are dropped (and counted by the bridge), never queued. When the camera goes away
the thread reopens it with backoff (0.5 s, doubling, at most MAX_BACKOFF_S) until it is back or the
bridge stops.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from camera.camera_source import CameraSource, Frame
from camera.frame_source import FrameSource
from camera.native_messages import NativeMessages
from core.errors import InputError

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


class LiveCamera(FrameSource):
    """A live source never ends (`ended` stays False): it is reopened."""

    def __init__(self, source: CameraSource, capture: cv2.VideoCapture, first: np.ndarray, timeout_s: float,
                 messages: NativeMessages, log: Callable[[str], None]):
        """capture and first: what source.start_capture gave (the bridge opens the source once up front)."""
        super().__init__(source, capture, timeout_s, messages, log)
        self._newest = self._numbered(first)
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read_forever, name="camera-reader", daemon=True)

    def start(self) -> LiveCamera:
        self._thread.start()
        return self

    def next_frame(self, after: int, deadline: float) -> Frame | None:
        """The first frame read from now until `deadline` (time.monotonic), handed over as it arrives;
        if none comes, the newest one numbered above `after`, if any.

        A frame read while the bridge waited for its slot is not sent when the slot opens, since it
        would have aged there; the next one is, as soon as it is read (a camera faster than --fps
        sends one within the slot). Either way the rate is one frame a slot."""
        with self._changed:
            waiting = self._newest.number
            self._changed.wait_for(lambda: self._newest.number > waiting or self._stopping.is_set(),
                                   max(0.0, deadline - time.monotonic()))
            return self._newest if self._newest.number > after else None

    def close(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread.is_alive():
            # A read blocks for at most the read timeout; the thread releases the capture itself.
            self._thread.join(timeout_s)
        elif self._capture is not None:
            self._capture.release()

    def _read_forever(self) -> None:
        while not self._stopping.is_set():
            pixels, why = self.source.read(self._capture, self.messages)
            if pixels is not None:
                self._publish(pixels)
                continue
            self._capture.release()
            self._capture = None
            self.up = False
            self.log(f"camera {self.source.label} lost: {why}; reopening with backoff")
            if not self._reopen():
                return
        self._capture.release()

    def _reopen(self) -> bool:
        """True once the camera gives a frame again; False when the bridge stops first."""
        delay, attempts = FIRST_BACKOFF_S, 0
        while not self._stopping.wait(delay):
            attempts += 1
            try:
                capture, pixels = self.source.start_capture(self.timeout_s, self.messages)
            except InputError as e:
                if attempts in (1, 5) or attempts % 20 == 0:  # a few reminders, not one line per try
                    self.log(f"{e}; attempt {attempts}, next in {min(delay * 2, MAX_BACKOFF_S):g} s")
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            if self._stopping.is_set():
                capture.release()
                return False
            self._capture = capture
            self.up = True
            self.reconnects += 1
            self.log(f"camera {self.source.label} is back after {attempts} attempt(s)")
            self._publish(pixels)
            return True
        return False

    def _publish(self, pixels: np.ndarray) -> None:
        with self._changed:
            self._newest = self._numbered(pixels)
            self._changed.notify_all()
