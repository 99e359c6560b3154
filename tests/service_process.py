"""services/service.py run as a real process on 127.0.0.1, for the service's tests and bench."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from free_port import free_port

from paths import REPO

SERVICE = os.path.join(REPO, "services", "service.py")
HOST = "127.0.0.1"


class ServiceProcess:
    """One service process; its combined output is collected line by line in `lines`."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                 module: bool = False, grpc: bool = False):
        self.http_port = free_port()
        self.grpc_port = free_port() if grpc else 0
        entry = ["-m", "services.service"] if module else [SERVICE]
        self.command = [sys.executable, *entry, "--host", HOST, "--http-port", str(self.http_port),
                        "--grpc-port", str(self.grpc_port), *args]
        self.env = {**os.environ, **(env or {})}
        self.cwd = REPO if module else cwd
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self) -> ServiceProcess:
        self.proc = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.collector = threading.Thread(target=self._collect, daemon=True)
        self.collector.start()
        return self

    def _collect(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        """Until the output holds `text`; fails with the output if the process ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the last lines
                raise RuntimeError(f"service exited with {self.proc.returncode} before {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} from the service within {timeout} s:\n{self.output}")
            time.sleep(0.05)

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.output}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.http_port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"service did not listen on {self.http_port} within {timeout} s:\n{self.output}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and the exit status; the group is killed if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


@contextlib.contextmanager
def running_service(args: list[str] | None = None, env: dict[str, str] | None = None,
                    **kwargs) -> Iterator[ServiceProcess]:
    """A started service that has loaded both models; stopped (SIGTERM) at the end."""
    service = ServiceProcess(args or [], env, **kwargs).start()
    try:
        service.wait_for("service: ready")
        yield service
    finally:
        service.stop()
