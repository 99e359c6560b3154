"""Issue #3, scenarios 1 and 2: the TFLite and OpenVINO tutorials, as written, as checks on a kuiperd.

tests/e2e/test_tutorials.py runs them on the session's kuiperd, tests/e2e/test_zz_install.py on an
install made by kuiper.yaml's pythonBin. The stream, rule SQL and sink topics are the tutorials' own:
each name is used once per kuiperd, so mosquitto's subscribe log tells when the rule is live.

Arguments, as the e2e fixtures give them: kuiperd (harness.Kuiperd), kuiper (its REST client),
mosquitto (harness.Mosquitto), mqtt_pub (harness.MqttPublisher), mqtt_sub (topic -> MqttCollector).
Each raises AssertionError (or a wait's TimeoutError) when the tutorial does not do what it says.
"""

import json
from collections import Counter

from tests.support.scenarios import CAT_FILES, CAT_LABEL, decode_b64_gray, image_bytes, mask_regions, settle, surfaces


def tflite_tutorial_labels_cat_frames(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub) -> None:
    """The TFLite tutorial's stream and rule: every cat frame comes out labelled Egyptian cat, once."""
    out = mqtt_sub("ekuiper/labels")
    kuiper.create_stream('CREATE STREAM tfdemo () WITH (DATASOURCE="tfdemo", FORMAT="BINARY")')
    kuiper.create_rule("tfdemo_label", "SELECT labelImage(self)[0]->label as label FROM tfdemo",
                       [kuiperd.mqtt_action("ekuiper/labels", sendSingle=True)])
    kuiper.wait_rule_running("tfdemo_label")
    mosquitto.wait_subscribed("tfdemo")

    for name in CAT_FILES:  # the raw file bytes, as `mosquitto_pub -f` sends them
        mqtt_pub.publish("tfdemo", image_bytes(name))

    out.wait_for(len(CAT_FILES), timeout=60)
    payloads = settle(out, len(CAT_FILES))
    assert [json.loads(p) for p in payloads] == [{"label": CAT_LABEL}] * len(CAT_FILES)


def openvino_tutorial_marks_defects(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub) -> None:
    """The OpenVINO tutorial's two rules: every surface's mask shows its defects; `defect > 1` passes just those."""
    frames = surfaces()  # 0..5 defects x 3 seeds = 18 different JPEGs
    expected = dict((b64, n) for n, b64 in frames)
    assert len(expected) == len(frames)
    every, many = mqtt_sub("ekuiper/defect"), mqtt_sub("ekuiper/defect_many")

    kuiper.create_stream('CREATE STREAM openvino_demo () WITH (DATASOURCE="openvino_demo", FORMAT="JSON")')
    kuiper.create_rule("openvino_demo", "SELECT image as origin, inference(image)->base64 as afterProcess "
                       "from openvino_demo WHERE inference(image)->defect >=0",
                       [kuiperd.mqtt_action("ekuiper/defect", sendSingle=True)])
    kuiper.create_rule("openvino_demo_many", "SELECT image as origin, inference(image)->defect as defect "
                       "from openvino_demo WHERE inference(image)->defect > 1",
                       [kuiperd.mqtt_action("ekuiper/defect_many", sendSingle=True)])
    kuiper.wait_rule_running("openvino_demo")
    kuiper.wait_rule_running("openvino_demo_many")
    mosquitto.wait_subscribed("openvino_demo", clients=2)  # each rule has its own source client

    for _, b64 in frames:
        mqtt_pub.publish("openvino_demo", json.dumps({"image": b64}).encode())

    passing = [b64 for n, b64 in frames if n > 1]
    every.wait_for(len(frames), timeout=120)
    many.wait_for(len(passing), timeout=60)
    every_rows = [json.loads(p) for p in settle(every, len(frames))]
    many_rows = [json.loads(p) for p in settle(many, len(passing))]

    # defect >= 0: every frame, once, with its own image echoed back unchanged.
    assert Counter(r["origin"] for r in every_rows) == Counter(b64 for _, b64 in frames)
    for row in every_rows:
        assert set(row) == {"origin", "afterProcess"}
        picture = decode_b64_gray(row["afterProcess"])
        height, width = picture.shape
        assert width == 2 * height, f"side-by-side picture is {width}x{height}"
        # The right half is the mask: one white region per defect.
        assert mask_regions(picture) == expected[row["origin"]]

    # defect > 1: exactly the frames with 2 or more defects.
    assert Counter(r["origin"] for r in many_rows) == Counter(passing)
    assert all(r["defect"] == expected[r["origin"]] for r in many_rows), \
        [(r["defect"], expected[r["origin"]]) for r in many_rows]
