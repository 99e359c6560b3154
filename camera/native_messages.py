"""What FFmpeg (inside OpenCV) says on the process's stderr, kept for one-line reasons.

OpenCV's `VideoCapture` answers a failed open or read with only `False`; FFmpeg writes the reason
("Connection refused", "Failed to resolve hostname ...", "401 Unauthorized") straight to file
descriptor 2. The bridge points descriptor 2 at a private file and reads back what a capture call
wrote, so the reason lands in the bridge's own one line instead of as stray native output. Python's
own stderr (our log lines, tracebacks) keeps the original descriptor.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading

import cv2

# FFmpeg prefixes its lines with the component, e.g. "[tcp @ 0x55afb1c37d00] ".
COMPONENT_PREFIX = re.compile(r"^\[[^\]]*\]\s*")
# Keep the private file small: it is emptied when it grows past this.
MAX_BYTES = 1 << 20


class NativeMessages:
    def __init__(self) -> None:
        self._file = None
        self._lock = threading.Lock()

    def install(self) -> None:
        """Send descriptor 2 to a private file; sys.stderr keeps writing where stderr went before."""
        original = os.dup(2)
        sys.stderr.flush()
        sys.stderr = os.fdopen(original, "w", buffering=1, errors="backslashreplace")
        self._file = tempfile.TemporaryFile("a+b")  # append mode: writes land at the end after a truncate
        os.dup2(self._file.fileno(), 2)
        # OpenCV's own log lines ("VIDEOIO(FFMPEG): backend is generally available ...") say nothing a
        # user can act on; FFmpeg's ("Connection refused") do, and they come through its own log.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

    def mark(self) -> int:
        """A position to read from after a capture call; call it right before the call."""
        if self._file is None:
            return 0
        with self._lock:
            size = os.fstat(self._file.fileno()).st_size
            if size > MAX_BYTES:
                os.ftruncate(self._file.fileno(), 0)
                size = 0
            return size

    def since(self, mark: int) -> str | None:
        """The last line written after `mark`, without FFmpeg's component prefix; None if nothing was."""
        if self._file is None:
            return None
        with self._lock:
            text = os.pread(self._file.fileno(), MAX_BYTES, mark).decode(errors="replace")
        lines = [COMPONENT_PREFIX.sub("", line).strip() for line in text.splitlines()]
        lines = [line for line in lines if line]
        return lines[-1] if lines else None
