"""Test-only: makes the plugin's worker hold one request until it is killed. Never in the zip.

A test puts this directory on PYTHONPATH (Python imports `sitecustomize` at start-up) and names a
file in DEFECT_TEST_HOLD_FILE. In a worker (`main.py --worker`), the first Exec request whose
eKuiper context has ruleId HOLD_RULE creates that file (holding the worker's pid) and then waits
for ever, so the test knows the request reached the worker and is in its hands when it kills it.
The file exists from then on, so the next worker serves the same request (kuiperd sends it
again) instead of holding it too.
"""
import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading

HOLD_FILE_VAR = "DEFECT_TEST_HOLD_FILE"
HOLD_RULE = "hold-in-worker"


def hold_if_marked(req):
    """Wait for ever (until killed) on the first Exec of rule HOLD_RULE, once per hold file."""
    request = json.loads(req)
    args = request.get("arg") or []
    if request.get("func") != "Exec" or not args or not isinstance(args[-1], str):
        return
    if json.loads(args[-1]).get("ruleId") != HOLD_RULE:
        return
    try:
        fd = os.open(os.environ[HOLD_FILE_VAR], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:  # held once already, by an earlier worker: serve it
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    threading.Event().wait()


class HoldingFinder(importlib.abc.MetaPathFinder):
    """Wraps function_server.OneLineErrorRuntime.do_run when the worker imports it."""

    def find_spec(self, name, path=None, target=None):
        if name != "runtime.function_server":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            do_run = module.OneLineErrorRuntime.do_run

            def holding_do_run(self, req):
                hold_if_marked(req)
                return do_run(self, req)

            module.OneLineErrorRuntime.do_run = holding_do_run

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get(HOLD_FILE_VAR) and "--worker" in sys.argv:
    sys.meta_path.insert(0, HoldingFinder())
