"""Entry point kuiperd starts as `python -u main.py '<json conf>'`, cwd = plugin dir.

Only wiring: pick the plugin's own Python, load the settings, start loading both
models in the background, serve the per-frame and the window functions, hand
control to the eKuiper SDK.
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

from ekuiper import PluginConfig, plugin  # noqa: E402
from ekuiper.runtime import plugin as sdk_plugin  # noqa: E402

from batch_func import InferenceBatch, LabelImageBatch  # noqa: E402
from function_server import FunctionServer  # noqa: E402
from image_input import InputError  # noqa: E402
from label_func import Inference, LabelImage, ModelUnavailable  # noqa: E402
from settings import load_settings  # noqa: E402

if __name__ == "__main__":
    # The SDK adds its log handler (stdout, which kuiperd logs) only in plugin.start();
    # a library logging before that would make Python add a second, stderr handler.
    logging.getLogger().addHandler(logging.NullHandler())
    settings = load_settings()
    per_frame = [LabelImage(settings), Inference(settings)]
    for function in per_frame:
        function.start_loading()
    # The window functions load their per-core model copies when a rule first uses them.
    functions = {f.name: f for f in (*per_frame, LabelImageBatch(settings), InferenceBatch(settings))}
    # Serve every function now and for good; kuiperd's START only confirms (see function_server.py).
    server = FunctionServer(functions, expected_errors=(InputError, ModelUnavailable))
    server.serve_all()
    sdk_plugin.FunctionRuntime = server.sdk_runtime_factory
    plugin.start(PluginConfig("defect", {}, {}, {name: (lambda f=f: f) for name, f in functions.items()}))
