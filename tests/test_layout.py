"""The code's shape: the zip ships exactly the plugin's modules, imports point down, hooks are declared.

README's Development section states the rules these tests hold.
"""
import ast
import glob
import os
import re

import pytest

from label_func import ModelFunction
from paths import REPO

# Lower layers never import higher ones. A new plugin module gets a layer here.
LAYERS = {
    "errors": 0, "exit_now": 0,
    "settings": 1, "thread_tuning": 1, "supervisor": 1, "rule_revival": 1,
    "openvino_runtime": 1,
    # image_input reads the input caps' defaults from settings' schema (OpenCV's own cap before cv2 loads).
    "command_line": 2, "image_input": 2,
    "label": 3, "inference": 3, "function_server": 3,
    "label_func": 4,
    "batch_func": 5,
    "worker": 6,
    "main": 7,
}


def makefile_list(name):
    with open(os.path.join(REPO, "Makefile")) as f:
        text = f.read().replace("\\\n", " ")
    return re.search(rf"^{name} :=(.*)$", text, re.MULTILINE).group(1).split()


def top_level_modules():
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "*.py")))


def test_the_zip_ships_exactly_the_top_level_modules():
    """Everything kuiperd loads is a top-level module, and every top-level module is in the zip;
    processes kuiperd never loads (services, bridges) live in a folder of their own."""
    shipped = sorted(f[:-3] for f in makefile_list("PLUGIN_FILES") if f.endswith(".py"))
    assert shipped == top_level_modules()


def test_only_openvino_runtime_imports_openvino():
    """Any other import of openvino, in the plugin or in services/, could come first and bring its
    converter's telemetry back."""
    paths = sorted(glob.glob(os.path.join(REPO, "*.py")) + glob.glob(os.path.join(REPO, "services", "*.py")))
    importers = [os.path.relpath(path, REPO) for path in paths if "openvino" in imported_packages(path)]
    assert importers == ["openvino_runtime.py"]


def test_every_module_has_a_layer():
    assert sorted(LAYERS) == top_level_modules()


def imported_packages(path):
    """Top-level names a file imports, anywhere in it (lazy imports inside functions too)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def plugin_imports(module):
    """Plugin modules that `module` imports."""
    return imported_packages(os.path.join(REPO, f"{module}.py")) & set(LAYERS)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_imports_point_down(module):
    upward = {name: LAYERS[name] for name in plugin_imports(module) if LAYERS[name] >= LAYERS[module]}
    assert not upward, f"{module} (layer {LAYERS[module]}) imports {upward}"


def test_the_plugin_never_imports_services():
    importers = [module for module in LAYERS if "services" in imported_packages(os.path.join(REPO, f"{module}.py"))]
    assert not importers


SERVICE_FILES = sorted(glob.glob(os.path.join(REPO, "services", "*.py")))


@pytest.mark.parametrize("path", SERVICE_FILES, ids=os.path.basename)
def test_services_never_import_the_plugin_process(path):
    """A service builds on the plugin's logic and functions, not on its process (its entry,
    worker and supervisor are kuiperd's side)."""
    assert not imported_packages(path) & {"main", "worker", "supervisor", "function_server", "rule_revival"}


def test_pure_logic_has_no_ekuiper():
    for module in ("label", "inference", "image_input", "settings", "errors", "command_line"):
        with open(os.path.join(REPO, f"{module}.py")) as f:
            assert "ekuiper" not in f.read(), module


def test_model_functions_declare_their_hooks():
    assert ModelFunction.__abstractmethods__ >= {"build", "check_option", "run"}

    class NoRun(ModelFunction):
        def build(self, settings):
            return None

        def check_option(self, option, model):
            return option

    with pytest.raises(TypeError, match="abstract method.*run"):
        NoRun({})


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "bench", "*.py"))), ids=os.path.basename)
def test_every_bench_module_imports(path):
    """`make bench` runs outside `make test`: a name a bench imports that the code no longer has
    would only show there, so each bench module is imported here (their work is under __main__)."""
    import subprocess
    import sys
    code = ("import importlib.util, sys; sys.path[:0] = [sys.argv[2], sys.argv[3]];"
            "spec = importlib.util.spec_from_file_location('bench_module', sys.argv[1]);"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))")
    done = subprocess.run([sys.executable, "-c", code, path, REPO, os.path.join(REPO, "bench")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
