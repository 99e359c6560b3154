"""Issue 13 end to end: the anomalib export as the `inference` model of a real kuiperd rule.

The plugin is the ordinary build/defect.zip; kuiperd's environment carries
DEFECT_MODEL=<the export's model.xml>, as a site would set it, and the plugin
process inherits it. This kuiperd has its own /tmp (the plugin's nng paths are
fixed), so the session's kuiperd and its default model are left as they are.
"""
import base64
import json
import shutil
import uuid

import cv2
import numpy as np
import pytest

from tests.support.paths import fixture_path
from tests.support.scenarios import settle
from tools import harness

# The fixtures README's reference table: image -> (pred_label, pred_mask regions).
REFERENCE = {"bad_00_1": (0, 0), "bad_01_2": (1, 2), "bad_02_3": (1, 2), "bad_03_1": (0, 0), "bad_04_2": (1, 1),
             "bad_05_3": (0, 0), "bad_06_1": (0, 0), "bad_07_2": (0, 0), "bad_08_3": (1, 2), "bad_09_1": (1, 1),
             **{f"good_{i:02d}": (0, 0) for i in range(10)}}


def surface_b64(name, size=None):
    """The fixture PNG as sent (size None), or resized to `size` and sent as a JPEG."""
    folder = "good" if name.startswith("good") else "bad"
    with open(fixture_path("images", "surfaces", folder, f"{name}.png"), "rb") as f:
        data = f.read()
    if size:
        image = cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), size,
                           interpolation=cv2.INTER_CUBIC)
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def anomalib_kuiperd(mosquitto):
    zip_path = harness.REPO_ROOT / "build" / "defect.zip"
    if not zip_path.is_file():
        pytest.fail(f"{zip_path} is missing: run `make package` first")
    home = harness.REPO_ROOT / "build" / f"anomalib-e2e-{uuid.uuid4().hex[:8]}"
    node = harness.Kuiperd(home, mosquitto.url, private_tmp=True,
                           extra_env={"DEFECT_MODEL": fixture_path("models", "anomalib_padim_surface", "model.xml")})
    try:
        node.start()
        node.client.install_portable_plugin("defect", zip_path.resolve().as_uri())
        harness.wait_until(lambda: node.client.portable_plugin_status("defect")["status"] == "running", 30,
                           what="defect plugin running")
        node.wait_models_loaded()  # a frame sent before may meet "still loading" on a busy box
        yield node
    finally:
        node.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_rule_reports_anomalib_verdicts_and_regions(anomalib_kuiperd, mosquitto, mqtt_pub, mqtt_sub, unique):
    client = anomalib_kuiperd.client
    out, bad, topic = mqtt_sub(unique("anomalib_out")), mqtt_sub(unique("anomalib_bad")), unique("parts")
    client.create_stream(f'CREATE STREAM parts () WITH (DATASOURCE="{topic}", FORMAT="JSON")')
    client.create_rule("anomalib", "SELECT name, inference(image)->defect AS defect, "
                       "inference(image)->anomalous AS anomalous, inference(image)->score AS score, "
                       "inference(image)->width AS width FROM parts",
                       [anomalib_kuiperd.mqtt_action(out.topic, sendSingle=True)], {"sendError": True})
    # The README's rule that keeps only the bad parts.
    client.create_rule("anomalib_bad", "SELECT name, inference(image)->score AS score FROM parts "
                       "WHERE inference(image)->anomalous = true",
                       [anomalib_kuiperd.mqtt_action(bad.topic, sendSingle=True)])
    client.wait_rule_running("anomalib", timeout=60)
    client.wait_rule_running("anomalib_bad", timeout=60)
    mosquitto.wait_subscribed(topic, clients=2)

    # Every reference image as the PNG, then the decisive ones (score 0.03 or more from 0.5) as 1080p JPEGs.
    frames = {name: (name, None) for name in REFERENCE}
    frames.update({f"{name}@1920": (name, (1920, 1080))
                   for name in ("good_00", "good_05", "bad_01_2", "bad_04_2", "bad_06_1", "bad_08_3")})
    for tag, (name, size) in frames.items():
        mqtt_pub.publish(topic, json.dumps({"name": tag, "image": surface_b64(name, size)}).encode())
    out.wait_for(len(frames), timeout=120)
    anomalous = [tag for tag, (name, _) in frames.items() if REFERENCE[name][0]]
    bad.wait_for(len(anomalous), timeout=60)
    rows = {row["name"]: row for row in (json.loads(p) for p in settle(out, len(frames)))}
    assert sorted(json.loads(p)["name"] for p in bad.payloads()) == sorted(anomalous)

    assert len(rows) == len(frames)
    for tag, row in rows.items():
        name, size = frames[tag]
        label, regions = REFERENCE[name]
        assert (row["anomalous"], row["defect"]) == (bool(label), regions), (tag, row)
        assert row["width"] == (size or (256, 256))[0]
        assert 0 <= row["score"] <= 1
    assert all(rows[f"good_{i:02d}"]["score"] < 0.5 for i in range(10))
