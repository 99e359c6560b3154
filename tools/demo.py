"""`make demo`, second half: both tutorials' rules in a real kuiperd, fed models/' sample images over MQTT.

Starts mosquitto and kuiperd v2.4.2 on free loopback ports, or uses the eKuiper at
KUIPER_URL (with its MQTT broker at MQTT_URL, default tcp://127.0.0.1:1883);
installs build/defect.zip, creates the streams and rules, publishes frames,
prints what arrives on the sink topics, then removes what it created and stops
what it started.
"""
import base64
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run by path: the repo root first, for tools.*
from tools import harness  # noqa: E402
from tools.synthetic_surface import surface_image  # noqa: E402

REPO = HERE.parent
# Written by `make models` (from the fixtures, or downloaded): the demo needs no fixtures folder.
SAMPLE_CAT = REPO / "models" / "sample_cat.jpg"
RULES = {
    "tflite": ("SELECT labelImage(self)[0]->label AS label FROM tfdemo", "ekuiper/labels"),
    "openvino": ("SELECT image AS origin, inference(image)->base64 AS afterProcess FROM openvino_demo "
                 "WHERE inference(image)->defect >= 0", "ekuiper/defect"),
    "defect_count": ("SELECT seq, inference(image)->defect AS defects, inference(image)->defects AS boxes "
                     "FROM openvino_demo", "ekuiper/defect_count"),
}


def run(client, mqtt_url, broker=None):
    host, port = urlparse(mqtt_url).hostname, urlparse(mqtt_url).port or 1883
    client.install_portable_plugin("defect", (REPO / "build" / "defect.zip").resolve().as_uri())
    client.create_stream('CREATE STREAM tfdemo () WITH (DATASOURCE="tfdemo", FORMAT="BINARY")')
    client.create_stream('CREATE STREAM openvino_demo () WITH (DATASOURCE="openvino_demo", FORMAT="JSON")')
    sinks = {}
    for rule_id, (sql, topic) in RULES.items():
        sinks[rule_id] = harness.MqttCollector(host, port, topic)
        action = {"mqtt": {"server": mqtt_url, "topic": topic, "qos": 1, "sendSingle": True}}
        client.create_rule(rule_id, sql, [action])
        client.wait_rule_running(rule_id)
    if broker:
        broker.wait_subscribed("tfdemo")
        broker.wait_subscribed("openvino_demo")
    publisher = harness.MqttPublisher(host, port)
    # The sample cat as it is, and scaled to the frames of a 720p and a 1080p camera.
    cat = cv2.imread(str(SAMPLE_CAT))
    frames = {SAMPLE_CAT.name: SAMPLE_CAT.read_bytes()}
    for width, height in ((1280, 720), (1920, 1080)):
        frames[f"cat_{height}p.jpg"] = cv2.imencode(".jpg", cv2.resize(cat, (width, height)))[1].tobytes()
    cats = list(frames)
    for frame in frames.values():
        publisher.publish("tfdemo", frame)
    for seq in range(4):
        jpeg = cv2.imencode(".jpg", surface_image(seq, seed=40 + seq))[1].tobytes()
        publisher.publish("openvino_demo", json.dumps({"seq": seq, "image": base64.b64encode(jpeg).decode()}).encode())
    print("\nekuiper/labels (labelImage(self)[0]->label):")
    for name, message in zip(cats, sinks["tflite"].wait_for(len(cats), timeout=60), strict=False):
        print(f"  {name:14} -> {message.payload.decode()}")
    print("ekuiper/defect_count (surfaces with 0, 1, 2, 3 drawn defects):")
    for message in sinks["defect_count"].wait_for(4, timeout=60):
        print(f"  {message.payload.decode()}")
    print("ekuiper/defect (the OpenVINO tutorial's rule):")
    for i, message in enumerate(sinks["openvino"].wait_for(4, timeout=60)):
        picture = base64.b64decode(json.loads(message.payload)["afterProcess"])
        path = REPO / "build" / f"demo_defect_{i}.jpg"
        path.write_bytes(picture)
        height, width = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        print(f"  afterProcess: {width}x{height} JPEG (input | mask), written to {path.relative_to(REPO)}")
    for sink in sinks.values():
        sink.close()
    publisher.close()
    for rule_id in RULES:
        client.delete_rule(rule_id)
    client.delete_stream("tfdemo")
    client.delete_stream("openvino_demo")
    client.delete_portable_plugin("defect")


def main():
    if os.environ.get("KUIPER_URL"):
        run(harness.KuiperClient(os.environ["KUIPER_URL"]), os.environ.get("MQTT_URL", "tcp://127.0.0.1:1883"))
        return
    with harness.broker_and_kuiperd("defect-demo-") as (broker, kuiperd):
        run(kuiperd.client, broker.url, broker)


if __name__ == "__main__":
    main()
