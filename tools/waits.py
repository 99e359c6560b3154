"""The one polling wait of the process drivers and the tests: until a condition holds, a process exits, or time is up.

No pytest here: the bench and the demos use it too.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ProcessExited(RuntimeError):
    """The process a wait watched ended before the condition held; the message has its log."""


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition",
               proc: subprocess.Popen | None = None, log: Callable[[], str] | None = None) -> T:
    """Poll pred() until it returns a truthy value, and return that value.

    Args:
        pred: the condition; called once more after `proc` exits (its last output may be what it waits for).
        timeout: seconds before giving up; interval: seconds between polls.
        what: says what was awaited, in the error.
        proc: a process whose exit ends the wait at once (a server that died will never listen).
        log: its output, appended to the error.

    Returns:
        pred()'s first truthy value.

    Raises:
        ProcessExited: `proc` ended first. TimeoutError: `timeout` passed.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if proc is not None and proc.poll() is not None:
            time.sleep(0.2)  # output still in the pipe: its last lines
            last = pred()
            if last:
                return last
            raise ProcessExited(f"{what}: the process exited with code {proc.returncode} first"
                                + (f"; its log:\n{log()}" if log else ""))
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}"
                               + (f"; the log:\n{log()}" if log else ""))
        time.sleep(interval)


def wait_tcp(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
             what: str = "server") -> None:
    """Until something accepts a TCP connection at host:port.

    Raises:
        ProcessExited: `proc` (the server) ended first. TimeoutError: nothing listened within `timeout` s.
    """
    def accepts() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False
    wait_until(accepts, timeout, what=f"{what} listening on {host}:{port}", proc=proc)
