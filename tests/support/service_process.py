"""service/service.py run as a real process on 127.0.0.1, for the service's tests and bench.

The service binds its ports itself (`--http-port any --grpc-port any`) and names them in its
"listening" line: no port is picked here and then taken by another process before the bind.
It gets SIGKILL when the test run dies (processes.die_with_test_run), so a killed pytest leaves no service.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

from tests.support.paths import REPO
from tools.processes import die_with_test_run
from tools.waits import wait_until

SERVICE = os.path.join(REPO, "service", "service.py")
HOST = "127.0.0.1"
LISTENING = "service: listening on "
# The listening line's URLs: http(s)://host:port (docs: /docs) and grpc(s)://host:port.
HTTP_URL = re.compile(r"https?://[^ ]+:(\d+) ")
GRPC_URL = re.compile(r"grpcs?://[^ ;]+:(\d+)")


class ServiceProcess:
    """One service process; its combined output is collected line by line in `lines`.

    http_port, grpc_port: fixed ports to ask for (a test of a port in use); by default the service
    binds free ones, read from its "listening" line when first asked for (http_port, grpc_port)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                 module: bool = False, grpc: bool = False, http_port: int | None = None,
                 grpc_port: int | None = None):
        self._http_port = http_port
        self._grpc_port = grpc_port if grpc_port is not None else None if grpc else 0
        entry = ["-m", "service.service"] if module else [SERVICE]
        self.command = [sys.executable, *entry, "--host", HOST, "--http-port", str(http_port or "any"),
                        "--grpc-port", str("any" if self._grpc_port is None else self._grpc_port), *args]
        self.env = {**os.environ, **(env or {})}
        self.cwd = REPO if module else cwd
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def http_port(self) -> int:
        """The HTTP port: the one asked for, else the one the "listening" line names (waits for it)."""
        if self._http_port is None:
            self.read_ports()
        return self._http_port

    @property
    def grpc_port(self) -> int:
        """The gRPC port (0: no gRPC): the one asked for, else the one the "listening" line names."""
        if self._grpc_port is None:
            self.read_ports()
        return self._grpc_port

    def read_ports(self, timeout: float = 60) -> None:
        """Both ports from the "listening" line (waits for it), so a restart asks for both again."""
        self.wait_for(LISTENING, timeout)
        line = next(line for line in self.lines if line.startswith(LISTENING))
        if self._http_port is None:
            self._http_port = int(HTTP_URL.search(line).group(1))
        if self._grpc_port is None:
            self._grpc_port = int(GRPC_URL.search(line).group(1))

    def start(self) -> ServiceProcess:
        """Start the process; started again after stop(), it asks for the ports it had (callers keep their URLs)."""
        for option, port in (("--http-port", self._http_port), ("--grpc-port", self._grpc_port)):
            if port and option in self.command and self.command[self.command.index(option) + 1] == "any":
                self.command[self.command.index(option) + 1] = str(port)
        # The main thread starts it (pytest's, bench's): the parent-death signal follows the thread that forks.
        self.proc = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     preexec_fn=die_with_test_run())
        self.collector = threading.Thread(target=self._collect, daemon=True)
        self.collector.start()
        return self

    def _collect(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        """Until the output holds `text`.

        Raises:
            waits.ProcessExited: the service ended first. TimeoutError: no `text` within `timeout` s.
        """
        wait_until(lambda: text in self.output, timeout, interval=0.05, what=f"{text!r} from the service",
                   proc=self.proc, log=lambda: self.output)

    def wait_listening(self, timeout: float = 60) -> None:
        """Until the service listens: it binds both ports before it prints its "listening" line."""
        self.read_ports(timeout)

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
        service.read_ports()
        yield service
    finally:
        service.stop()
