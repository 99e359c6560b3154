"""camera/camera.py run as a user runs it, as its own process, for the tests, the demo and the bench."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tools.processes import die_with_test_run
from tools.waits import wait_until

REPO = str(Path(__file__).resolve().parents[1])  # tools/.. is the repo root
CAMERA = os.path.join(REPO, "camera", "camera.py")


class BridgeProcess:
    """`python camera/camera.py SOURCE --mqtt HOST:PORT --topic TOPIC *options`; stderr to log_path."""

    def __init__(self, source: str, broker: str, topic: str, *options: str, log_path: Path,
                 env: dict[str, str] | None = None):
        self.command = [sys.executable, CAMERA, source, "--mqtt", broker, "--topic", topic, *options]
        self.log_path = Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> BridgeProcess:
        with open(self.log_path, "ab") as log:
            # From another directory: the bridge must not depend on where it is started.
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=self.log_path.parent, env=self.env, preexec_fn=die_with_test_run())
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lines(self) -> list[str]:
        return self.log().splitlines()

    def wait_for_line(self, text: str, timeout: float = 30, after: int = 0) -> str:
        """The first log line (from line index `after` on) containing text.

        Raises:
            waits.ProcessExited: the bridge ended first. TimeoutError: no such line within `timeout` s.
        """
        def line() -> str | None:
            return next((line for line in self.lines()[after:] if text in line), None)
        return wait_until(line, timeout, what=f"a line with {text!r} from the bridge", proc=self.proc, log=self.log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, signum: int = signal.SIGINT, timeout: float = 20) -> int:
        """Send signum and return the exit status (SIGKILL, and a failure, if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"the bridge did not exit within {timeout}s of signal {signum}:\n{self.log()}") from None
        return self.proc.returncode

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the bridge did not end within {timeout}s:\n{self.log()}") from None

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
