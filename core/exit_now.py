"""Ending a process that has native threads running: `exit_now(status)`.

Python's shutdown tears the interpreter down while other threads may still be inside native
code, and that aborts the process (SIGABRT) instead of giving `status`: pynng 0.9.0's nng
panics when a channel thread is in nng_send (the plugin's worker), and OpenVINO's teardown
under a thread still loading a model ends in "terminate called without an active exception"
(the service). Nothing these processes hold needs Python's shutdown, so they skip it.
"""
import logging
import os
import sys
from typing import NoReturn


def exit_now(status: int) -> NoReturn:
    """Flush the logs and standard streams, then exit with `status` without Python's shutdown."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
