"""Issue #6: the plugin installs into a kuiperd whose pythonBin is a bare Python without the requirements.

Runs last (test_zz_*): it stops the session's kuiperd (kuiperd's plugin sockets
are machine-wide), runs its own for each case, then starts the session's again.
1. build/defect-offline.zip with pip barred from any index (PIP_NO_INDEX=1):
   install.sh builds the plugin venv from the bundled wheels;
2. build/defect.zip: install.sh builds the venv from the package index.
In both, main.py re-executes itself in the venv and both tutorials' rules answer.
"""
import json
import os
import subprocess
import sys

import pytest

import harness
from harness import REPO_ROOT as REPO
from scenarios import CAT_LABEL, image_bytes, surface_b64


def bare_python():
    python = os.path.join(sys.base_prefix, "bin", "python3")
    if subprocess.run([python, "-c", "import ekuiper"], capture_output=True).returncode == 0:
        pytest.fail(f"{python} has the ekuiper SDK; these tests need a Python without the requirements")
    return python


@pytest.mark.parametrize("zip_name,extra_env", [
    ("defect-offline.zip", {"PIP_NO_INDEX": "1"}),
    ("defect.zip", {}),
], ids=["offline zip, no index", "normal zip, from the index"])
def test_install_with_a_bare_python(kuiperd, mosquitto, mqtt_pub, mqtt_sub, tmp_path, unique, zip_name, extra_env):
    zip_path = REPO / "build" / zip_name
    if not zip_path.is_file():
        pytest.fail(f"{zip_path} is missing: run `make package package-offline`")
    kuiperd.stop()
    own = harness.Kuiperd(tmp_path / "kuiper", mosquitto.url,
                          extra_env={"KUIPER__PORTABLE__PYTHONBIN": bare_python(), **extra_env})
    try:
        own.start()
        client = own.client
        client.install_portable_plugin("defect", zip_path.resolve().as_uri())
        plugin_dir = own.home / "plugins" / "portable" / "defect"
        assert (plugin_dir / ".venv" / "bin" / "python").exists()
        harness.wait_until(lambda: client.portable_plugin_status("defect")["status"] == "running", 60,
                           what="plugin running")
        [pid] = own.plugin_pids("defect")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"/.venv/bin/python" in f.read()  # main.py switched into the plugin's venv

        labels, defects = mqtt_sub(unique("labels")), mqtt_sub(unique("defect"))
        bin_src, json_src = unique("tfdemo"), unique("openvino_demo")
        client.create_stream(f'CREATE STREAM tfdemo () WITH (DATASOURCE="{bin_src}", FORMAT="BINARY")')
        client.create_stream(f'CREATE STREAM openvino_demo () WITH (DATASOURCE="{json_src}", FORMAT="JSON")')
        client.create_rule("tflite", "SELECT labelImage(self)[0]->label as label FROM tfdemo",
                           [own.mqtt_action(labels.topic, sendSingle=True)])
        client.create_rule("openvino", "SELECT image as origin, inference(image)->defect as defect "
                           "from openvino_demo WHERE inference(image)->defect >=0",
                           [own.mqtt_action(defects.topic, sendSingle=True)])
        for rule in ("tflite", "openvino"):
            client.wait_rule_running(rule, timeout=60)
        mosquitto.wait_subscribed(bin_src)
        mosquitto.wait_subscribed(json_src)
        mqtt_pub.publish(bin_src, image_bytes("cat_720p.jpg"))
        mqtt_pub.publish(json_src, json.dumps({"image": surface_b64(2, seed=5)}).encode())
        assert json.loads(labels.wait_for(1, timeout=60)[0].payload) == {"label": CAT_LABEL}
        assert json.loads(defects.wait_for(1, timeout=60)[0].payload)["defect"] == 2
    finally:
        if own.proc is not None:
            if own.proc.poll() is None:
                for rule in ("tflite", "openvino"):
                    try:
                        own.client.delete_rule(rule)
                    except Exception:
                        pass
            own.stop()
        kuiperd.start()
