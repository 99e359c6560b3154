"""Entry point kuiperd starts as `python -u main.py '<json conf>'`, cwd = plugin dir.

Only wiring. Pick the plugin's own Python, load the settings, then either
- (kuiperd's process) supervise: answer kuiperd's control channel through the eKuiper
  SDK and keep a worker running (runtime/supervisor.py); it loads no model and stays small;
- (`--worker`, the child) load both models in the background and serve the per-frame
  and the window functions on their own channels (runtime/worker.py).
"""
import logging
import os
import sys

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
PLUGIN_VENV = os.path.join(PLUGIN_DIR, ".venv")

# install.sh puts the requirements into a venv inside the plugin dir; when kuiperd
# starts us with another interpreter, switch to that venv (same pid, same args)
# before importing anything outside the standard library.
if os.path.isfile(os.path.join(PLUGIN_VENV, "bin", "python")) and \
        os.path.realpath(sys.prefix) != os.path.realpath(PLUGIN_VENV):
    venv_python = os.path.join(PLUGIN_VENV, "bin", "python")
    os.execv(venv_python, [venv_python, "-u", os.path.abspath(__file__), *sys.argv[1:]])

import json  # noqa: E402

from core.settings import load_plugin_settings  # noqa: E402


def supervise(settings: dict) -> None:
    """kuiperd's process: answer its control channel and keep a worker running (never returns)."""
    from ekuiper import PluginConfig, plugin
    from ekuiper.runtime import plugin as sdk_plugin

    from runtime.function_server import AlreadyServed
    from runtime.supervisor import Supervisor, log_to_stdout, worker_command

    log_to_stdout()
    sdk_plugin.init_vars = lambda config: None  # logging is set up above, once
    conf = settings["worker"]
    supervisor = Supervisor(worker_command(os.path.abspath(__file__)), conf["max_restarts"],
                            conf["restart_window_seconds"], conf["max_rss_mb"])
    supervisor.start()
    # The worker serves every function channel itself; kuiperd's START only needs an "ok" (and tells
    # which functions rules use: a restarted worker loads those at once, the window ones too).
    sdk_plugin.FunctionRuntime = lambda ctrl, function: supervisor.in_use(ctrl["symbolName"]) or AlreadyServed()
    with open(os.path.join(PLUGIN_DIR, "defect.json"), encoding="utf-8") as f:
        names = json.load(f)["functions"]
    # kuiperd v2.4.2 may restore a rule before it registers the plugin, and never retry it.
    from runtime.rule_revival import revive_in_background
    revive_in_background(PLUGIN_DIR, names)
    plugin.start(PluginConfig("defect", {}, {}, {name: (lambda: None) for name in names}))


def serve_in_worker(settings: dict, config_error: str | None) -> None:
    """The worker: every declared function per frame and per window, on its own channel (never returns)."""
    from batch_func import window_functions
    from core.errors import InputError, ModelUnavailable
    from label_func import per_frame_functions
    from runtime import worker
    from runtime.function_server import FunctionServer
    from runtime.supervisor import log_to_stdout

    worker.die_with_supervisor()
    log_to_stdout()
    per_frame = per_frame_functions(settings)
    # The window functions load their per-core model copies when a rule first uses them.
    functions = {f.name: f for f in (*per_frame, *window_functions(settings))}
    worker.crash_if_marked(functions.values())
    server = FunctionServer(functions, expected_errors=(InputError, ModelUnavailable))
    in_use = [functions[name] for name in worker.functions_in_use() if name in functions]
    worker.serve_forever(functions, server, load_now=dict.fromkeys([*per_frame, *in_use]),
                         config_error=config_error)


if __name__ == "__main__":
    # Until logging is set up, a library that logs must not make Python add a stderr handler.
    logging.getLogger().addHandler(logging.NullHandler())
    # A bad config must not stop the plugin (kuiperd would not restart it): the schema's defaults
    # run it, and the worker answers every call with the config error's one line.
    settings, config_error = load_plugin_settings()
    if sys.argv[1:] == ["--worker"]:
        serve_in_worker(settings, config_error)
    else:
        supervise(settings)
