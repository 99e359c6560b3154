"""Proves the harness without the defect plugin: MQTT in -> kuiperd rule -> MQTT out."""

import json


def test_mqtt_rule_roundtrip(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, dst, stream, rule = unique("in"), unique("out"), unique("s"), unique("r")
    out = mqtt_sub(dst)
    # No server in the stream: it must come from the MQTT_SOURCE__DEFAULT__SERVER env var.
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src}", FORMAT="json", TYPE="mqtt")')
    kuiper.create_rule(rule, f"SELECT temperature * 2 AS t FROM {stream}",
                       [kuiperd.mqtt_action(dst, sendSingle=True)])
    kuiper.wait_rule_running(rule)
    mosquitto.wait_subscribed(src)  # the rule's source subscription is live: nothing gets lost

    for i in range(10):
        mqtt_pub.publish(src, json.dumps({"temperature": i + 0.5}).encode())

    out.wait_for(10, timeout=30)
    assert [m["t"] for m in out.json()] == [(i + 0.5) * 2 for i in range(10)]
    status = kuiper.rule_status(rule)
    assert status["status"] == "running", status


PROBE_MAIN = '''
from ekuiper import plugin, PluginConfig, Function

class Echo(Function):
    def validate(self, args):
        return "" if len(args) == 1 else "e2e_echo takes 1 argument"
    def exec(self, args, ctx):
        return {"type": type(args[0]).__name__, "value": args[0]}
    def is_aggregate(self):
        return False

if __name__ == "__main__":
    plugin.start(PluginConfig("e2eprobe", {}, {}, {"e2e_echo": lambda: Echo()}))
'''


def test_portable_plugin_roundtrip(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub, unique, tmp_path):
    """Install a tiny Python portable plugin from a local zip and call it on a BINARY stream."""
    import base64

    import pytest

    from tools import harness
    src = tmp_path / "e2eprobe"
    src.mkdir()
    (src / "main.py").write_text(PROBE_MAIN)
    (src / "e2eprobe.json").write_text(json.dumps(
        {"version": "v1.0.0", "language": "python", "executable": "main.py", "functions": ["e2e_echo"]}))
    url = harness.make_plugin_zip(src, tmp_path / "e2eprobe.zip")
    kuiper.install_portable_plugin("e2eprobe", url)
    try:
        assert kuiper.portable_plugin_status("e2eprobe")["status"] == "running"
        assert len(kuiperd.plugin_pids("e2eprobe")) == 1
        with pytest.raises(harness.KuiperError) as e:  # the plugin's validate() rejects 2 args
            kuiper.create_rule(unique("bad"), "SELECT e2e_echo(1, 2) FROM nowhere", [{"log": {}}])
        assert e.value.status == 400 and "e2e_echo takes 1 argument" in e.value.body

        src_topic, dst, stream, rule = unique("img"), unique("res"), unique("b"), unique("r")
        out = mqtt_sub(dst)
        kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src_topic}", FORMAT="binary", TYPE="mqtt")')
        kuiper.create_rule(rule, f"SELECT e2e_echo(self) AS e FROM {stream}",
                           [kuiperd.mqtt_action(dst, sendSingle=True)])
        kuiper.wait_rule_running(rule)
        mosquitto.wait_subscribed(src_topic)
        payload = bytes(range(256))
        mqtt_pub.publish(src_topic, payload)
        [msg] = out.wait_for(1)
        e = json.loads(msg.payload)["e"]
        # A BINARY stream hands `self` to a portable function as a base64 string.
        assert e["type"] == "str" and base64.b64decode(e["value"]) == payload
    finally:
        kuiper.delete_portable_plugin("e2eprobe")
