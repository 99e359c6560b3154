"""The worker side of the supervisor (runtime/supervisor.py): the process that loads the models and serves.

It dies with its supervisor (a parent-death signal, so no worker outlives a hot
update, a DELETE or a kuiperd shutdown), keeps every function channel served,
and in degraded mode loads no model and waits for the model files to change.
"""
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable

from core.exit_now import exit_now
from core.serving import ServedFunction, mtime
from core.settings import config_files
from runtime.function_server import FunctionServer
from runtime.supervisor import DEGRADED_VAR, EXIT_MODEL_FILES_CHANGED, IN_USE_VAR, SUPERVISOR_PID_VAR

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
SERVE_CHECK_SECONDS = 1.0
# Test-only: a model file holding this text makes the worker die at load as a native fault would.
CRASH_MARKER_VAR = "DEFECT_TEST_CRASH_MARKER"


def die_with_supervisor() -> None:
    """SIGKILL this process when the supervisor goes, however it goes (even SIGKILL)."""
    expected = int(os.environ.get(SUPERVISOR_PID_VAR, "0"))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if expected and os.getppid() != expected:  # it went before the signal was armed
        sys.exit(0)


def crash_if_marked(functions: Iterable[ServedFunction]) -> None:
    marker = os.environ.get(CRASH_MARKER_VAR)
    if not marker or os.environ.get(DEGRADED_VAR):  # a degraded worker loads no model
        return
    for function in functions:
        for path, _ in function.model_files():
            try:
                with open(path, "rb") as f:
                    if marker.encode() in f.read(4096):
                        os.kill(os.getpid(), signal.SIGSEGV)
            except OSError:
                pass


def serve_forever(functions: dict[str, ServedFunction], server: FunctionServer,
                  load_now: Iterable[ServedFunction], config_error: str | None = None) -> None:
    """Serve every function for the process's life; in degraded mode, exit when a model file changes.

    config_error (settings.load_plugin_settings): the config is invalid, so every call is answered
    with that one line and no model loads; when a config file changes, the worker exits so that
    the supervisor starts one that reads it again.
    """
    degraded = os.environ.get(DEGRADED_VAR)
    if config_error:
        degraded = f"the plugin's config is invalid: {config_error}"
    if degraded:
        for function in functions.values():
            function.hold(f"{function.name} is not served: {degraded}")
        log.error("degraded worker: %s", degraded)
    else:
        for function in load_now:
            function.start_loading()
    server.serve_all()
    files = {name: f.model_files() for name, f in functions.items()}
    configs = watched(config_files())
    while True:
        time.sleep(SERVE_CHECK_SECONDS)
        server.serve_all()  # a channel whose runtime ended is dialled again
        if degraded and any(f.model_files() != files[name] for name, f in functions.items()):
            log.info("model files changed: leaving degraded mode")
            exit_now(EXIT_MODEL_FILES_CHANGED)  # not sys.exit: a crash to the supervisor (exit_now.py)
        if config_error and watched(config_files()) != configs:
            log.info("config changed: reading it again")
            exit_now(EXIT_MODEL_FILES_CHANGED)  # not sys.exit: a crash to the supervisor (exit_now.py)


def functions_in_use() -> list[str]:
    """The functions kuiperd had started for rules before this worker (a restart): load them now."""
    return [name for name in os.environ.get(IN_USE_VAR, "").split(",") if name]


def watched(paths: list[str]) -> list[tuple[str, int | None]]:
    return [(path, mtime(path)) for path in paths]
