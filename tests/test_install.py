"""install.sh on a box without the requirements and without an index: the offline zip's wheels suffice.

The plugin then runs from a bare Python (as kuiperd's default pythonBin would start
it) and main.py switches itself into the plugin's venv.
"""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from nng_host import PluginHost
from paths import REPO, read_b64

OFFLINE_ZIP = os.path.join(REPO, "build", "defect-offline.zip")


def bare_python():
    """The interpreter the dev venv was made from: it has none of the plugin's requirements."""
    python = os.path.join(sys.base_prefix, "bin", "python3")
    probe = subprocess.run([python, "-c", "import ekuiper"], capture_output=True)
    if probe.returncode == 0:
        pytest.fail(f"{python} already has the ekuiper SDK; this test needs a Python without the requirements")
    return python


def test_offline_zip_installs_without_an_index_and_runs_from_a_bare_python(tmp_path):
    if not os.path.isfile(OFFLINE_ZIP):
        pytest.fail(f"{OFFLINE_ZIP} is missing: run `make package-offline` first")
    plugin_dir = tmp_path / "defect"
    with zipfile.ZipFile(OFFLINE_ZIP) as z:
        z.extractall(plugin_dir)
    python = bare_python()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", DEFECT_PYTHON=python)  # pip may not reach any index
    install = subprocess.run(["/bin/sh", str(plugin_dir / "install.sh")], cwd=plugin_dir, env=env,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "from the bundled wheels (offline)" in install.stdout
    assert (plugin_dir / ".venv" / "bin" / "python").exists()

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
