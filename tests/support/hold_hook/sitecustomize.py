"""Test-only, never in the shipped zip: a plugin worker holds a marked frame until it is killed.

tests/e2e/conftest.py starts the session's kuiperd, and tests/integration/test_self_healing.py its
PluginHost, with this directory on PYTHONPATH and DEFECT_TEST_HOLD_DIR set, so the plugin's processes
import it at start-up (Python's `site`).
It wraps function_server.OneLineErrorRuntime.do_run when that module is imported. A call whose
image carries `DEFECT-TEST-HOLD:<token>;` (a JPEG comment: scenarios.held_jpeg) is held:
- the first worker to get it writes <dir>/<token>.held (its pid) and sleeps, so the test knows the
  call is in flight in that worker, and kills it;
- a worker that gets it again (kuiperd sends a call in flight to the next worker) answers it as
  usual and writes <dir>/<token>.answered (its pid).
Frames without the mark pass untouched.
"""
import base64
import binascii
import importlib.abc
import json
import os
import re
import sys
import time

HOLD_DIR_VAR = "DEFECT_TEST_HOLD_DIR"
MARK = re.compile(rb"DEFECT-TEST-HOLD:([A-Za-z0-9_-]{1,64});")
HOLD_SECONDS = 120  # far past kuiperd's call timeout: the worker is killed long before


def marked_token(request: bytes) -> str | None:
    """The hold token in an Exec call's image argument (base64 text, as kuiperd sends bytes)."""
    try:
        call = json.loads(request)
    except ValueError:
        return None
    if not isinstance(call, dict) or call.get("func") != "Exec":
        return None
    for arg in call.get("arg") or []:
        if isinstance(arg, str):
            try:
                data = base64.b64decode(arg, validate=True)
            except (binascii.Error, ValueError):
                data = arg.encode()
            found = MARK.search(data)
            if found:
                return found.group(1).decode()
    return None


def write_pid(path: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)  # the test never reads half a file


def patch(module) -> None:
    hold_dir = os.environ[HOLD_DIR_VAR]
    do_run = module.OneLineErrorRuntime.do_run

    def held_do_run(self, req: bytes) -> bytes:
        token = marked_token(req)
        if token is None:
            return do_run(self, req)
        flag = os.path.join(hold_dir, token)
        if not os.path.exists(flag + ".held"):
            write_pid(flag + ".held")
            time.sleep(HOLD_SECONDS)
        reply = do_run(self, req)
        write_pid(flag + ".answered")
        return reply
    module.OneLineErrorRuntime.do_run = held_do_run


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds function_server as usual and patches it once it has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "runtime.function_server":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)
        spec.loader.exec_module = exec_and_patch
        return spec


if os.environ.get(HOLD_DIR_VAR):
    sys.meta_path.insert(0, PatchOnImport())
