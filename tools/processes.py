"""Processes the tests start, tied to the test run: none outlives it, and each group is cleaned up.

No pytest here: the bench and the demos use it too.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
# Looked up once here: a preexec_fn runs between fork and exec in a process with threads (paho's), where
# a dlopen could deadlock; the child only makes the call.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def die_with_test_run(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A Popen preexec_fn: the child gets `signum` when the test run (this process) dies, however
    it dies (a timeout, Ctrl-C, SIGKILL of pytest), so no server outlives it.

    The signal is tied to the thread that forks: start servers from a thread that lives as long
    as they do (pytest's main thread). It survives exec (no set-user-ID binary here).
    Returns: the preexec_fn. Raises (in the child, so Popen raises): OSError if prctl fails."""
    test_run = os.getpid()

    def arm() -> None:
        if _PRCTL(PR_SET_PDEATHSIG, signum) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != test_run:  # the test run went before the signal was armed
            os.kill(os.getpid(), signum)
    return arm


def start_group_reaper(pgid: int) -> subprocess.Popen:
    """group_reaper.py for the process group `pgid`: it kills the group when this test run dies."""
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "group_reaper.py"),
                             str(pgid), str(os.getpid())], stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=die_with_test_run(signal.SIGTERM))


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process, then SIGKILL its whole process group.

    Servers are started with start_new_session=True, so the group holds only
    what we started (kuiperd and the plugin processes it spawned)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Plugin children outlive a killed kuiperd; clean the group we own.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
