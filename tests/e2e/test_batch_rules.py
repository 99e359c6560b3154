"""The window functions in real kuiperd rules: one call per window, one element per frame.

Also pins down how kuiperd v2.4.2 lets a rule get one row per frame back:
`unnest(...)` over an aggregate needs one more GROUP BY field than the window.
"""
import base64
import json

import pytest

import harness
from scenarios import CAT_LABEL, image_bytes, settle, surface_b64
from test_operations import start_rule

CATS = ("cat.bmp", "cat_720p.jpg", "cat_1080p.jpg")


def b64_of(name):
    return base64.b64encode(image_bytes(name)).decode()


def json_stream(kuiper, unique):
    src, stream = unique("frames"), unique("s")
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src}", FORMAT="JSON")')
    return src, stream


def test_label_windows_with_ids_kept_aligned(kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, stream = json_stream(kuiper, unique)
    out = mqtt_sub(unique("out"))
    start_rule(kuiperd, kuiper, mosquitto, unique("r"),
               f"SELECT collect(seq) AS seqs, labelImageBatch(image) AS labels FROM {stream} GROUP BY CountWindow(4)",
               out.topic, src)
    frames = [b64_of(CATS[i % 3]) for i in range(8)]
    frames[5] = "bm90IGFuIGltYWdl"  # base64 of "not an image"
    for seq, frame in enumerate(frames):
        mqtt_pub.publish(src, json.dumps({"seq": seq, "image": frame}).encode())
    out.wait_for(2, timeout=60)
    windows = [json.loads(p) for p in settle(out, 2)]
    assert [w["seqs"] for w in windows] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    elements = windows[0]["labels"] + windows[1]["labels"]
    assert len(elements) == 8
    for seq, element in enumerate(elements):
        if seq == 5:
            assert element == {"error": "not an image: the 12 bytes are no JPEG, PNG, BMP, TIFF, WebP or GIF"}
        else:
            assert element[0]["label"] == CAT_LABEL and len(element) == 5, (seq, element)


def test_one_row_per_frame_with_unnest_and_a_second_group_field(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, stream = json_stream(kuiper, unique)
    out = mqtt_sub(unique("out"))
    start_rule(kuiperd, kuiper, mosquitto, unique("r"),
               f"SELECT unnest(inferenceBatch(image)) FROM {stream} GROUP BY CountWindow(4), camera",
               out.topic, src)
    drawn = [i % 4 for i in range(8)]
    for seq, n in enumerate(drawn):
        mqtt_pub.publish(src, json.dumps({"seq": seq, "camera": "line1", "image": surface_b64(n, 600 + seq)}).encode())
    out.wait_for(8, timeout=60)
    rows = [json.loads(p) for p in settle(out, 8)]
    assert [r["defect"] for r in rows] == drawn
    assert all(len(r["defects"]) == r["defect"] and r["width"] == 640 for r in rows)


def test_unnest_with_only_the_window_in_group_by_fails_in_kuiperd_2_4_2(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    """Documented in the README; if a kuiperd upgrade fixes it, this test says so."""
    src, stream = json_stream(kuiper, unique)
    out = mqtt_sub(unique("out"))
    rule = unique("r")
    start_rule(kuiperd, kuiper, mosquitto, rule,
               f"SELECT unnest(inferenceBatch(image)) FROM {stream} GROUP BY CountWindow(2)", out.topic, src,
               {"sendError": True})
    for seq in range(2):
        mqtt_pub.publish(src, json.dumps({"seq": seq, "image": surface_b64(1, 650 + seq)}).encode())
    out.wait_for(1, timeout=60)
    assert "can't find the result from the unnest function" in out.payloads()[0].decode(errors="replace")


def test_time_window_with_a_literal_option(kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, stream = json_stream(kuiper, unique)
    out = mqtt_sub(unique("out"))
    start_rule(kuiperd, kuiper, mosquitto, unique("r"),
               f"SELECT collect(seq) AS seqs, labelImageBatch(image, 1) AS labels FROM {stream} "
               f"GROUP BY TumblingWindow(ss, 2)", out.topic, src)
    cat = b64_of("cat_720p.jpg")
    for seq in range(5):
        mqtt_pub.publish(src, json.dumps({"seq": seq, "image": cat}).encode())
    harness.wait_until(lambda: sum(len(json.loads(p)["seqs"]) for p in out.payloads()) >= 5, 30,
                       what="every frame in some window")
    windows = [json.loads(p) for p in out.payloads()]
    assert sorted(s for w in windows for s in w["seqs"]) == list(range(5))
    for w in windows:
        assert len(w["labels"]) == len(w["seqs"])
        assert all(e == [{"confidence": e[0]["confidence"], "label": CAT_LABEL}] for e in w["labels"]), w


@pytest.mark.parametrize("call, message", [
    ("labelImageBatch(image, 0)", "k must be a whole number"),
    ("inferenceBatch(image, 2)", "threshold must be a number from 0 to 1"),
    ("inferenceBatch(image, 0.5, 1)", "inferenceBatch takes 1 or 2 arguments"),
])
def test_bad_literal_options_are_refused_at_creation(kuiperd, kuiper, defect_plugin, unique, call, message):
    stream = unique("s")
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{unique("t")}", FORMAT="JSON")')
    with pytest.raises(harness.KuiperError) as refused:
        kuiper.create_rule(unique("r"), f"SELECT {call} AS x FROM {stream} GROUP BY CountWindow(2)",
                           [kuiperd.mqtt_action(unique("o"))])
    assert refused.value.status == 400 and message in refused.value.body, refused.value.body
