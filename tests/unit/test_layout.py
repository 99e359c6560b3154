"""The code's shape: what the root holds, what the zip ships, which way imports point.

docs/development.md states the rules these tests hold.
"""
import ast
import glob
import os
import re
import subprocess
import sys
import zipfile

import pytest

from core.catalog import FUNCTIONS
from tests.support.paths import REPO, ZIP

# The declared functions' model modules (label.py, inference.py: the card's pure logic) sit at the root.
MODEL_MODULES = sorted({spec.model.__module__ for spec in FUNCTIONS})

# The design card's top level, plus batch_func.py, and the config and tool files beside it.
ROOT_FILES = {
    "main.py", "label_func.py", "batch_func.py", "inference.py", "label.py", "defect.json", "requirements.txt",
    "install.sh", "Makefile", "README.md", "config.json", "requirements.lock", "ruff.toml", "pytest.ini",
    ".gitignore", *(f"{module}.py" for module in MODEL_MODULES),
}
ROOT_FOLDERS = {"core", "runtime", "service", "camera", "tools", "functions", "models", "tests", "bench", "docs", ".ci"}

# The plugin (what the zip ships): lower layers never import higher ones. A new module gets a layer here.
LAYERS = {
    "core.errors": 0, "core.exit_now": 0, "core.results": 0, "core.memory": 0,
    "core.settings": 1, "core.regions": 1, "core.tuning": 1, "core.openvino_runtime": 1, "core.model_names": 1,
    # image_input reads the input caps' defaults from settings' schema (OpenCV's own cap before cv2 loads).
    "core.command_line": 2, "core.image_input": 2, "core.functions": 2, "core.model_pool": 2,
    **dict.fromkeys(MODEL_MODULES, 3), "core.serving": 3,
    "runtime.supervisor": 3, "runtime.rule_revival": 3, "runtime.function_server": 3,
    # The declarations name the model classes; everything that serves a function builds on them.
    "core.catalog": 4,
    "core.model_host": 5, "label_func": 5,
    "batch_func": 6,
    "runtime.worker": 6,
    "main": 7,
}
# The pure layer: no eKuiper SDK, no nng; the service and the tools build on it alone.
PURE = ("core", *MODEL_MODULES)
# Folders of processes kuiperd never loads; the plugin imports none of them.
OUTSIDE_PLUGIN = ("service", "camera", "tools")


def tracked(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, pattern)))


def module_name(path: str) -> str:
    return path[:-3].replace(os.sep, ".").removesuffix(".__init__")


def plugin_modules() -> list[str]:
    return sorted(module_name(p) for p in tracked("*.py") + tracked("core/*.py") + tracked("runtime/*.py"))


def git_root_entries() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return {f.split("/")[0] for f in files}


def test_the_root_holds_only_the_cards_files_and_folders():
    entries = git_root_entries()
    assert entries - ROOT_FILES - ROOT_FOLDERS == set()
    assert ROOT_FILES - {".gitignore"} <= entries


def makefile_list(name):
    with open(os.path.join(REPO, "Makefile")) as f:
        text = f.read().replace("\\\n", " ")
    return re.search(rf"^{name} :=(.*)$", text, re.MULTILINE).group(1).split()


def test_the_zip_ships_exactly_the_plugins_modules():
    """Everything kuiperd loads is a root module or in core/ or runtime/ (shipped as folders), and
    nothing else is shipped: processes kuiperd never loads live in folders of their own. Read from
    the zip `make package` wrote (make test builds it first)."""
    if not os.path.isfile(ZIP):
        pytest.fail(f"{ZIP} is missing: run `make package` first")
    with zipfile.ZipFile(ZIP) as z:
        shipped = [module_name(name) for name in z.namelist() if name.endswith(".py")]
    assert sorted(shipped) == plugin_modules()
    assert sorted(makefile_list("PLUGIN_PACKAGES")) == ["core", "runtime"]


def test_every_plugin_module_has_a_layer():
    packages = {"core", "runtime"}  # their __init__ only documents the package
    assert sorted(LAYERS) == [m for m in plugin_modules() if m not in packages]


def imports_of(path: str) -> set[str]:
    """Dotted names a file imports, anywhere in it (lazy imports inside functions too);
    `from core import errors` counts as core.errors."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def top_packages(path: str) -> set[str]:
    return {name.split(".")[0] for name in imports_of(path)}


def plugin_imports(module: str) -> set[str]:
    path = os.path.join(REPO, module.replace(".", os.sep) + ".py")
    return imports_of(path) & set(LAYERS)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_imports_point_down(module):
    upward = {name: LAYERS[name] for name in plugin_imports(module) if LAYERS[name] >= LAYERS[module]}
    assert not upward, f"{module} (layer {LAYERS[module]}) imports {upward}"


def import_graph() -> dict[str, set[str]]:
    """Every module of the repo's Python folders (tests aside) and the repo modules it imports."""
    paths = tracked("*.py") + [p for folder in ("core", "runtime", "service", "camera", "tools")
                               for p in tracked(f"{folder}/*.py")]
    modules = {module_name(p): p for p in paths}
    return {name: {m for m in imports_of(os.path.join(REPO, path)) if m in modules and m != name}
            for name, path in modules.items()}


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", "cycle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert len(state) == len(graph) > 30


@pytest.mark.parametrize("module", sorted(m for m in LAYERS if m.split(".")[0] in PURE))
def test_the_pure_layer_imports_no_ekuiper_nor_nng(module):
    path = os.path.join(REPO, module.replace(".", os.sep) + ".py")
    assert not top_packages(path) & {"ekuiper", "pynng", "label_func", "batch_func", "runtime", "main"}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_the_plugin_imports_nothing_outside_it(module):
    path = os.path.join(REPO, module.replace(".", os.sep) + ".py")
    assert not top_packages(path) & {*OUTSIDE_PLUGIN, "tests", "bench"}


OUTSIDE_FILES = [p for folder in OUTSIDE_PLUGIN for p in tracked(f"{folder}/*.py")]


@pytest.mark.parametrize("path", OUTSIDE_FILES)
def test_outside_processes_never_import_kuiperds_side(path):
    """The service, the camera bridge and the tools build on the pure layer, not on the plugin's
    process (its entry, worker, supervisor and channels are kuiperd's side), nor on the tests: the
    process drivers the demos share with the tests and the bench live in tools/, so a clone without
    tests/ runs them."""
    imported = {name.split(".")[0] for name in imports_of(os.path.join(REPO, path))}
    assert not imported & {"main", "runtime", "tests", "bench", "label_func", "batch_func", "ekuiper", "pynng"}


def python_files() -> list[str]:
    """The repo's Python files, tests and bench too."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True)
    return [path for path in files.stdout.split() if os.path.isfile(os.path.join(REPO, path))]


def test_imports_are_absolute():
    """A relative import (`from .catalog import ...`) would slip past every rule above, which read
    absolute module names; the generated gRPC stubs import absolutely too."""
    relative = []
    for path in python_files():
        with open(os.path.join(REPO, path)) as f:
            tree = ast.parse(f.read())
        relative += [f"{path}:{node.lineno}" for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []


def test_only_openvino_runtime_imports_openvino():
    """Any other import of openvino, in the plugin or the service, could come first and bring its
    converter's telemetry back (tools/build_models.py runs at build time, with telemetry off)."""
    paths = [p for p in tracked("*.py") + tracked("core/*.py") + tracked("runtime/*.py") + tracked("service/*.py")]
    importers = [path for path in paths if "openvino" in top_packages(os.path.join(REPO, path))]
    assert importers == ["core/openvino_runtime.py"]


def test_every_declared_model_is_pure_logic_below_the_declarations():
    """A declared function's model class lives in a pure root module (with its own command line),
    below core/catalog.py, so the declarations can name it."""
    assert {"inference", "label"} <= set(MODEL_MODULES)
    for module in MODEL_MODULES:
        assert LAYERS[module] < LAYERS["core.catalog"]
        with open(os.path.join(REPO, f"{module}.py")) as f:
            assert 'if __name__ == "__main__":' in f.read(), module


@pytest.mark.parametrize("path", tracked("bench/*.py"))
def test_every_bench_module_imports(path):
    """`make bench` runs outside `make test`: a name a bench imports that the code no longer has
    would only show there, so each bench module is imported here (their work is under __main__), as
    `python -m bench.<name>` finds it: from the repo root, with no sys.path edit."""
    module = path[:-len(".py")].replace("/", ".").removesuffix(".__init__")
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --- tests/: folders by what a test starts, helpers in tests/support, imported from the repo root ---

TESTS = os.path.join(REPO, "tests")
# unit: in-process; integration: plugin host, service, bridge, mosquitto, ffmpeg; e2e: kuiperd;
# platforms: Debian chroots; support: what they (and the bench) share; the process drivers are tools/'.
TESTS_TOP = {"unit", "integration", "e2e", "platforms", "support", "conftest.py", "requirements.txt"}
# An assignment to the module search path (or a slice of it), or a call that changes it; reading it is fine.
SYS_PATH_EDIT = re.compile(r"sys\.path\s*(\[[^\]]*\]\s*=[^=]|\+?=[^=]|\.(insert|append|extend|remove|pop|clear)\b)")
# A test module named in an import, in code or in code a test runs with `python -c`.
IMPORTS_A_TEST = re.compile(
    r"^\s*(from\s+\S*\btest_\w*\s+import\b|import\s+\S*\btest_\w*|from\s+\S+\s+import\s+\(?\s*test_)", re.MULTILINE)


def python_files_under_tests() -> list[str]:
    return sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(TESTS, "**", "*.py"), recursive=True)
                  if "__pycache__" not in p)


def test_tests_hold_only_the_levels_and_support():
    assert {e for e in os.listdir(TESTS) if e not in ("__pycache__", ".pytest_cache")} == TESTS_TOP


def test_no_file_under_tests_edits_sys_path():
    """pytest.ini puts the repo root on sys.path (`pythonpath = .`); a process a test starts gets it
    through PYTHONPATH or its cwd, so an import means the same module everywhere."""
    edits = []
    for path in python_files_under_tests():
        with open(os.path.join(REPO, path)) as f:
            edits += [f"{path}:{n}: {line.strip()}" for n, line in enumerate(f, 1) if SYS_PATH_EDIT.search(line)]
    assert edits == []


def test_no_test_file_is_imported():
    """What two tests share lives in tests/support (pytest's importlib mode also keeps test folders
    off sys.path); a test module imported elsewhere would run its module-level code twice."""
    imports = []
    for path in python_files_under_tests():
        with open(os.path.join(REPO, path)) as f:
            imports += [f"{path}: {m.group(0).strip()}" for m in IMPORTS_A_TEST.finditer(f.read())]
    assert imports == []
