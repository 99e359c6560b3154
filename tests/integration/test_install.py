"""install.sh on a box without the requirements and without an index: the offline zip's wheels suffice.

The plugin then runs from a bare Python (as kuiperd's default pythonBin would start
it) and main.py switches itself into the plugin's venv. What it installs is requirements.lock,
hash-checked, and the lock is what pip resolves today for every target.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.nng_host import PluginHost
from tests.support.paths import REPO, read_b64, unpacked_build
from tests.support.requirements_lock import TARGETS, read_lock, requirement_lines, resolve

OFFLINE_ZIP = os.path.join(REPO, "build", "defect-offline.zip")


def bare_python():
    """The interpreter the dev venv was made from: it has none of the plugin's requirements."""
    python = os.path.join(sys.base_prefix, "bin", "python3")
    probe = subprocess.run([python, "-c", "import ekuiper"], capture_output=True)
    if probe.returncode == 0:
        pytest.fail(f"{python} already has the ekuiper SDK; this test needs a Python without the requirements")
    return python


def offline_plugin(tmp_path):
    return unpacked_build(OFFLINE_ZIP, tmp_path / "defect", "package-offline")


def offline_env(tmp_path):
    """No index, and a HOME of its own: whatever pip or Python would cache there shows."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "XDG_"))}
    env.update(PIP_NO_INDEX="1", DEFECT_PYTHON=bare_python(), HOME=str(home))  # pip may not reach any index
    # pip runs `rustc --version` for its User-Agent, and this box's rustup proxy then writes
    # ~/.rustup/settings.toml: a gateway has no rustup, so neither does the PATH here.
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.rstrip("/").endswith(".cargo/bin"))
    return env, home


def test_offline_zip_installs_without_an_index_and_runs_from_a_bare_python(tmp_path):
    plugin_dir = offline_plugin(tmp_path)
    env, home = offline_env(tmp_path)
    python = env["DEFECT_PYTHON"]
    install = subprocess.run(["/bin/sh", str(plugin_dir / "install.sh")], cwd=plugin_dir, env=env,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "from the bundled wheels (offline)" in install.stdout
    assert (plugin_dir / ".venv" / "bin" / "python").exists()
    assert list(home.rglob("*")) == [], "install.sh wrote outside the plugin dir (pip's cache?)"
    installed = subprocess.run([str(plugin_dir / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format=json",
                                "--disable-pip-version-check"], capture_output=True, text=True, env=env, timeout=120)
    versions = {canonical(p["name"]): p["version"] for p in json.loads(installed.stdout)}
    locked = {name: version for name, (version, _, _) in read_lock(str(plugin_dir / "requirements.lock")).items()}
    assert {name: versions.get(name) for name in locked} == locked  # every transitive package at its pin

    host = PluginHost(str(plugin_dir), python=python, env=env)
    try:
        with open(f"/proc/{host.process.pid}/cmdline", "rb") as f:
            assert b"/.venv/bin/python" in f.read()  # same pid, now the venv's interpreter
        reply = host.exec("labelImage", read_b64("images", "cat_1080p.jpg"))
        assert reply["state"] is True and reply["result"][0]["label"] == "286:Egyptian cat", reply
    finally:
        host.close()

    again = subprocess.run(["/bin/sh", str(plugin_dir / "install.sh")], cwd=plugin_dir, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "plugin venv already complete" in again.stdout, again.stdout + again.stderr


def canonical(name):
    return name.lower().replace("_", "-").replace(".", "-")


def test_a_wheel_that_does_not_match_its_hash_is_refused(tmp_path):
    """One byte more in a bundled wheel: pip refuses it (--require-hashes), the venv goes."""
    plugin_dir = offline_plugin(tmp_path)
    (wheel,) = (plugin_dir / "wheels").glob("sniffio-*.whl")
    with open(wheel, "ab") as f:
        f.write(b"\0")  # still a readable zip: only the hash tells
    env, _ = offline_env(tmp_path)
    install = subprocess.run(["/bin/sh", str(plugin_dir / "install.sh")], cwd=plugin_dir, env=env,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 1, install.stdout + install.stderr
    assert "DO NOT MATCH THE HASHES" in install.stdout + install.stderr, install.stdout + install.stderr
    assert "ERROR: offline install from wheels/ failed" in install.stderr
    assert not (plugin_dir / ".venv").exists()


def test_requirements_lock_matches_a_fresh_resolve():
    """pip's resolver, run now for each target (Linux x86_64 and aarch64, CPython 3.11 to 3.13; the
    index must be reachable), picks exactly the lock's packages and versions, and wheels whose sha256
    the lock has; requirements.txt's own pins and `# --no-deps` marks are the lock's.
    After changing requirements.txt: `.venv/bin/python -m tests.support.requirements_lock > requirements.lock`."""
    locked = read_lock()
    with_deps, no_deps = requirement_lines()
    for line in with_deps + no_deps:
        name, version = line.split("==")
        assert locked[canonical(name)][:1] == (version,), line
        assert locked[canonical(name)][2] == (line in no_deps), line
    started = time.monotonic()
    for target in TARGETS:
        resolved = resolve(*target)
        assert {n: v for n, (v, _, _) in resolved.items()} == {n: v for n, (v, _, _) in locked.items()}, target
        unknown = {n: h for n, (_, h, _) in resolved.items() if h not in locked[n][1]}
        assert not unknown, (target, unknown)
    print(f"{len(TARGETS)} fresh resolves in {time.monotonic() - started:.0f} s")


def test_a_failed_install_leaves_no_half_built_venv(plugin_dir, tmp_path):
    """Without wheels and without an index, pip fails: install.sh says so and removes the venv,
    so main.py does not switch into a broken one at the next start."""
    target = tmp_path / "defect"
    shutil.copytree(plugin_dir, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", DEFECT_PYTHON=bare_python())
    install = subprocess.run(["/bin/sh", str(target / "install.sh")], cwd=target, env=env,
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 1, install.stdout + install.stderr
    assert "ERROR: pip install failed" in install.stderr + install.stdout
    assert not (target / ".venv").exists()
