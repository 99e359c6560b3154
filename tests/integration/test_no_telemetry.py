"""The plugin sends nothing home from a gateway (openvino_runtime.py).

`import openvino` would import its model converter, whose telemetry counts a missing
~/intel/openvino_telemetry file as consent: it writes a client id under ~/intel and forks a
process to POST a usage event. The library turns itself off when CI=true, so these runs unset
that and give the command lines a home of their own to write in.
"""
import json
import os
import subprocess
import sys

import pytest

# The variables openvino-telemetry reads as "running in CI" (opt_in_checker._run_in_ci), and the
# plugin's config variables (a developer's own must not leak in).
UNSET = ("CI", "TF_BUILD", "JENKINS_URL", "DEFECT_CONFIG", "LABEL_MODEL", "LABEL_LABELS", "DEFECT_MODEL",
         "DEFECT_DEVICE", "DEFECT_COLOR")
# Runs a command line in this process and reports, after every thread has ended, how often it forked.
COUNT_FORKS = """
import atexit, os, runpy, sys
forks = []
os.register_at_fork(before=lambda: forks.append(1))
atexit.register(lambda: print(f"forks: {len(forks)}", file=sys.stderr))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script,runtime", [("inference.py", "openvino"), ("label.py", "openvino"),
                                            ("label.py", "litert")])
def test_loading_and_serving_a_model_writes_nothing_home_and_forks_nothing(plugin_dir, tmp_path, script, runtime):
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "site.json"
    config.write_text(json.dumps({"label": {"runtime": runtime}}))
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(HOME=str(home), DEFECT_CONFIG=str(config))
    completed = subprocess.run([sys.executable, "-c", COUNT_FORKS, os.path.join(plugin_dir, script)],
                               cwd=plugin_dir, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert len(completed.stdout.splitlines()) == 1  # the sample image was served
    assert "forks: 0" in completed.stderr.splitlines(), completed.stderr
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
