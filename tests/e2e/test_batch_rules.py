"""The window functions in real kuiperd rules: one call per window, one element per frame.

Also pins down how kuiperd v2.4.2 lets a rule get one row per frame back:
`unnest(...)` over an aggregate needs one more GROUP BY field than the window.
"""
import base64
import json

import pytest

from tests.support.answers import CONFIDENCE_TOLERANCE, KNOWN_TOP1, drawn_defects, known_label_differences
from tests.support.rules import start_rule
from tests.support.scenarios import CAT_LABEL, image_bytes, json_or_none, settle, surface_b64
from tools import harness

CATS = ("cat.bmp", "cat_720p.jpg", "cat_1080p.jpg")
# shared/fixtures/README.md: MobileNet v2's top-1 on cat_720p.jpg is 286 "Egyptian cat", about 0.87.
CAT_720P_CONFIDENCE = 0.87


# Held-out surfaces (shared/fixtures/images/surfaces): drawn defects in the name; good ones have none.
KNOWN_SURFACES = {**{name: drawn_defects(name) for name in ("bad_00_1.png", "bad_01_2.png", "bad_02_3.png",
                                                            "bad_08_3.png")}, "good_00.png": 0}


def b64_of(*parts):
    return base64.b64encode(image_bytes(*parts)).decode()


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
        for element in w["labels"]:  # k = 1: the top-1 only, with the fixtures' known confidence
            assert [e["label"] for e in element] == [CAT_LABEL], w
            assert element[0]["confidence"] == pytest.approx(CAT_720P_CONFIDENCE, abs=CONFIDENCE_TOLERANCE), w


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


def test_known_answers_at_k_2_and_threshold_0_9_per_frame_and_per_window(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    """Every function in a real rule, at a non-default k (2) and threshold (0.9), against answers that
    are not this code's output: the cats' top-1 in shared/fixtures/README.md and each held-out
    surface's drawn defects in its file name (answers.py); good surfaces have none."""
    # Photos and surfaces on streams of their own: a CountWindow counts the rows before WHERE.
    (photo_src, photo_stream), (surface_src, surface_stream) = json_stream(kuiper, unique), json_stream(kuiper, unique)
    outs = {name: mqtt_sub(unique(name)) for name in ("labels", "defects", "label_window", "defect_window")}
    sqls = {
        "labels": f"SELECT name, labelImage(image, 2) AS labels FROM {photo_stream}",
        "defects": f"SELECT name, inference(image, 0.9) AS result FROM {surface_stream}",
        "label_window": f"SELECT collect(name) AS names, labelImageBatch(image, 2) AS labels FROM {photo_stream} "
                        f"GROUP BY CountWindow({len(KNOWN_TOP1)})",
        "defect_window": f"SELECT collect(name) AS names, inferenceBatch(image, 0.9) AS results FROM {surface_stream} "
                         f"GROUP BY CountWindow({len(KNOWN_SURFACES)})",
    }
    for name, sql in sqls.items():
        kuiper.create_rule(unique(name), sql, [kuiperd.mqtt_action(outs[name].topic, sendSingle=True)],
                           {"sendError": True})
    for rule in kuiper.request("GET", "/rules"):
        kuiper.wait_rule_running(rule["id"])
    mosquitto.wait_subscribed(photo_src, clients=2)
    mosquitto.wait_subscribed(surface_src, clients=2)
    photos = sorted(KNOWN_TOP1)
    for name in photos:
        mqtt_pub.publish(photo_src, json.dumps({"name": name, "image": b64_of(name)}).encode())
    for name in KNOWN_SURFACES:
        folder = ("surfaces", name.split("_")[0])
        mqtt_pub.publish(surface_src, json.dumps({"name": name, "image": b64_of(*folder, name)}).encode())
    per_frame = {"labels": settle_after(outs["labels"], len(photos)),
                 "defects": settle_after(outs["defects"], len(KNOWN_SURFACES))}
    [label_window] = settle_after(outs["label_window"], 1)
    [defect_window] = settle_after(outs["defect_window"], 1)
    assert [r["name"] for r in per_frame["labels"]] == photos == label_window["names"]
    assert [r["name"] for r in per_frame["defects"]] == list(KNOWN_SURFACES) == defect_window["names"]
    labels = [r["labels"] for r in per_frame["labels"]] + label_window["labels"]
    problems = [p for name, got in zip(photos * 2, labels, strict=True) for p in known_label_differences(name, got)]
    problems += [f"{name}: {got} is not 2 labels" for name, got in zip(photos * 2, labels, strict=True)
                 if len(got) != 2]
    results = [r["result"] for r in per_frame["defects"]] + defect_window["results"]
    problems += [f"{name}: {got.get('defect')} defects ({len(got.get('defects', []))} boxes), drawn {drawn}"
                 for (name, drawn), got in zip(list(KNOWN_SURFACES.items()) * 2, results, strict=True)
                 if got.get("defect") != drawn or len(got.get("defects", [])) != drawn]
    assert not problems


def settle_after(collector, expected):
    """Wait for `expected` rows, then the grace period; every row a result (no sendError text)."""
    collector.wait_for(expected, timeout=120)
    rows = [json_or_none(p) for p in settle(collector, expected)]
    assert None not in rows, collector.payloads()
    return rows
