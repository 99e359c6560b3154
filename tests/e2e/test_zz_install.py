"""Issue #6: the plugin installs into a kuiperd whose pythonBin is a bare Python without the requirements.

Runs last (test_zz_*): it stops the session's kuiperd (kuiperd's plugin sockets
are machine-wide), runs its own for each case, then starts the session's again.
1. build/defect-offline.zip with pip barred from any index (PIP_NO_INDEX=1):
   install.sh builds the plugin venv from the bundled wheels;
2. build/defect.zip: install.sh builds the venv from the package index.
In both, main.py re-executes itself in the venv and both tutorials' rules answer.
3. pythonBin only in kuiper.yaml, a bare Python off PATH: install.sh builds the venv with it
   (pyvenv.cfg says so), and the tutorial tests run unchanged on that install.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.scenarios import CAT_LABEL, image_bytes, surface_b64
from tests.support.tutorials import openvino_tutorial_marks_defects, tflite_tutorial_labels_cat_frames
from tools import harness
from tools.harness import REPO_ROOT as REPO


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
        pids = harness.wait_until(lambda: len(own.plugin_pids("defect")) == 2 and own.plugin_pids("defect"), 30,
                                  what="the plugin's supervisor and its worker")
        for pid in pids:
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


def test_python_bin_from_kuiper_yaml_then_the_tutorials(kuiperd, tmp_path):
    """pythonBin set only in kuiper.yaml (no KUIPER__PORTABLE__PYTHONBIN), naming a bare Python
    that is not on PATH: install.sh must build the plugin's venv from it, and both tutorials,
    as written, run on that install. Own mosquitto, so the tutorials' fixed topics are fresh."""
    zip_path = REPO / "build" / "defect-offline.zip"
    if not zip_path.is_file():
        pytest.fail(f"{zip_path} is missing: run `make package-offline`")
    bin_dir = tmp_path / "kuiper-python" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "defect-test-python"
    python.symlink_to(os.path.realpath(bare_python()))
    assert shutil.which(python.name) is None and shutil.which("python") != str(python)  # PATH would not find it

    home = tmp_path / "kuiper"
    home.mkdir()
    shutil.copytree(harness.ensure_kuiperd().parent / "etc", home / "etc")
    kuiper_yaml = home / "etc" / "kuiper.yaml"
    text = kuiper_yaml.read_text()
    assert text.count("\n  pythonBin: python\n") == 1, "kuiper.yaml's portable.pythonBin line not found"
    kuiper_yaml.write_text(text.replace("\n  pythonBin: python\n", f'\n  pythonBin: "{python}"  # set here only\n'))

    kuiperd.stop()
    broker = harness.Mosquitto(tmp_path / "mosquitto")
    own = harness.Kuiperd(home, broker.url, extra_env={"KUIPER__PORTABLE__PYTHONBIN": None, "PIP_NO_INDEX": "1"})
    publisher, collectors = None, []
    try:
        broker.start()
        own.start()
        own.client.install_portable_plugin("defect", zip_path.resolve().as_uri())
        plugin_dir = own.home / "plugins" / "portable" / "defect"
        venv_cfg = dict(line.split(" = ", 1) for line in (plugin_dir / ".venv" / "pyvenv.cfg").read_text().splitlines()
                        if " = " in line)
        assert venv_cfg["home"] == str(bin_dir), venv_cfg  # the venv was made by kuiper.yaml's interpreter
        assert venv_cfg["command"].startswith(f"{python} -m venv"), venv_cfg
        assert f"defect install: python: {python} (portable.pythonBin in" in own.log_path.read_text()
        harness.wait_until(lambda: own.client.portable_plugin_status("defect")["status"] == "running", 60,
                           what="plugin running")
        pids = harness.wait_until(lambda: len(own.plugin_pids("defect")) == 2 and own.plugin_pids("defect"), 30,
                                  what="the plugin's supervisor and its worker")
        for pid in pids:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                # kuiperd started it with kuiper.yaml's python; main.py switched to the venv
                assert b"/.venv/bin/python" in f.read()

        publisher = harness.MqttPublisher(broker.host, broker.port)

        def subscribe(topic, qos=1):
            collectors.append(harness.MqttCollector(broker.host, broker.port, topic, qos))
            return collectors[-1]
        tflite_tutorial_labels_cat_frames(own, own.client, broker, publisher, subscribe)
        openvino_tutorial_marks_defects(own, own.client, broker, publisher, subscribe)
    finally:
        for c in collectors:
            c.close()
        if publisher is not None:
            publisher.close()
        own.stop()
        broker.stop()
        kuiperd.start()
