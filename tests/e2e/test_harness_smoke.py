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
