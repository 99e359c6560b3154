"""The bridge's loop: one frame per slot of 1/fps from the source, encoded, to the publisher.

Slots are on a fixed grid, so the rate holds whatever encoding takes; a bridge that falls behind
(a slow box) starts a fresh grid instead of sending a burst. Counts for the progress line:
frames sent, and frames dropped because the camera sent more than --fps (or a realtime file
skipped them) or because the broker was away.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from camera.frame_encoder import FrameEncoder
from camera.frame_publisher import FramePublisher
from camera.frame_source import FrameSource


class CameraBridge:
    def __init__(self, source: FrameSource, encoder: FrameEncoder, publisher: FramePublisher, fps: float,
                 progress_s: float, log: Callable[[str], None]):
        self.source = source
        self.encoder = encoder
        self.publisher = publisher
        self.period = 1.0 / fps
        self.progress_s = progress_s
        self.log = log
        self.sent = 0
        self.taken = 0  # frames the bridge took from the source (sent or dropped for the broker)
        self.newest = 0  # the number of the last frame taken; the source numbers every frame it reads
        self.broker_drops = 0
        self._started = time.monotonic()
        self._last_report = (self._started, 0)

    def run(self, stop: threading.Event) -> str | None:
        """Until stop is set or a file ends; returns the one line of a fatal broker error, else None."""
        slot = time.monotonic()
        next_report = slot + self.progress_s
        while not stop.is_set():
            if self.publisher.fatal:
                return self.publisher.fatal
            frame = self.source.next_frame(self.newest, slot + self.period)
            if frame is not None:
                self.newest = frame.number
                self.taken += 1
                if self.publisher.publish(self.encoder.payload(frame)):
                    self.sent += 1
                else:
                    self.broker_drops += 1
            elif self.source.ended:
                break
            now = time.monotonic()
            if now >= next_report:
                self.log(self.progress_line(now))
                next_report = now + self.progress_s
            slot += self.period
            if slot < now - self.period:  # fell behind by more than a slot: no burst to catch up
                slot = now
            stop.wait(max(0.0, slot - now))
        return None

    @property
    def camera_drops(self) -> int:
        """Frames the source read before the last one taken that were never taken: a newer one came first."""
        return self.newest - self.taken

    def progress_line(self, now: float | None = None) -> str:
        """Frames sent and the rate since the last line, then totals and the state of both ends."""
        now = time.monotonic() if now is None else now
        since, sent_then = self._last_report
        self._last_report = (now, self.sent)
        seconds, sent = max(now - since, 1e-9), self.sent - sent_then
        return (f"sent {frames(sent)} in {seconds:.0f} s ({sent / seconds:.1f} fps), "
                f"{self.sent} in all; dropped {self.camera_drops} (camera faster than --fps) "
                f"+ {self.broker_drops} (broker away); "
                f"camera {'up' if self.source.up else 'down'} ({self.source.reconnects} reconnects), "
                f"broker {'up' if self.publisher.connected else 'down'} ({self.publisher.reconnects} reconnects)")

    def summary(self) -> str:
        seconds = max(time.monotonic() - self._started, 1e-9)
        return (f"sent {frames(self.sent)} in {seconds:.0f} s ({self.sent / seconds:.1f} fps); dropped "
                f"{self.camera_drops} (camera faster than --fps) + {self.broker_drops} (broker away)")


def frames(count: int) -> str:
    return f"{count} frame" if count == 1 else f"{count} frames"
