"""Issue 24 in a real kuiperd: two models uploaded through `POST /config/uploads`, two rules on one stream
naming them with `object_construct("model", ...)`, each answering with its own model; then one model's
files replaced (.xml, then .bin, as the upload API takes one file at a time) while frames flow at 20
frames/s: every frame answered, none refused, and the answers switch to the new version within seconds."""
import base64
import io
import json
import os
import time

from PIL import Image

from tests.support.paths import REPO, fixture_path
from tools import harness

ANOMALIB = fixture_path("models", "anomalib_padim_surface")
DEFAULT = os.path.join(REPO, "models", "model")
RATE = 20  # frames per second
BEFORE, AFTER = 40, 160  # frames published before the replacement starts, and in all


def read(path):
    with open(path, "rb") as f:
        return f.read()


def upload_ir(client, name, source):
    """An IR as the upload API takes it: the .xml, then the .bin, one request each."""
    for suffix in (".xml", ".bin"):
        stored = client.upload(f"{name}{suffix}", read(source + suffix))
        assert stored.endswith(os.path.join("data", "uploads", f"{name}{suffix}")), stored


def messages(collector):
    """The sink's rows; a rule's error (sendError) arrives as plain text, kept as {"error": text}."""
    out = []
    for payload in collector.payloads():
        try:
            out.append(json.loads(payload))
        except ValueError:
            out.append({"error": payload.decode(errors="replace")})
    return out


def counted(collector):
    """{seq: row} of the counted frames (seq 0 on; warm-up rows may still arrive), once all are in or after 60 s.
    A plain-text error row has no seq: it is counted in `errors` by the caller."""
    def rows():
        return {m["seq"]: m for m in messages(collector) if isinstance(m.get("seq"), int) and m["seq"] >= 0}
    harness.wait_until(lambda: len(rows()) >= AFTER, 60, what=f"{AFTER} answers on {collector.topic}")
    return rows()


def test_two_rules_use_their_own_models_and_a_replaced_model_swaps_in_without_a_dropped_frame(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    part_a, part_b = unique("partA"), unique("partB")
    upload_ir(kuiper, part_a, DEFAULT)
    upload_ir(kuiper, part_b, os.path.join(ANOMALIB, "model"))
    topic, out_a, out_b = unique("frames"), mqtt_sub(unique("out_a")), mqtt_sub(unique("out_b"))
    kuiper.create_stream(f'CREATE STREAM products () WITH (DATASOURCE="{topic}", FORMAT="JSON")')
    for rule, name, out in (("line_a", part_a, out_a), ("line_b", part_b, out_b)):
        kuiper.create_rule(unique(rule), f'SELECT seq, inference(image, object_construct("model", "{name}", '
                           f'"explain", true)) AS result FROM products',
                           [kuiperd.mqtt_action(out.topic, sendSingle=True)], {"sendError": True})
    # An unknown literal name is refused when the rule is created, in one line.
    refused = kuiper.request("POST", "/rules", {
        "id": unique("typo"), "sql": 'SELECT inference(image, object_construct("model", "partZ")) FROM products',
        "actions": [{"log": {}}]}, ok=(400,))
    assert "no model named 'partZ'" in json.dumps(refused), refused
    mosquitto.wait_subscribed(topic)

    frame = base64.b64encode(read(fixture_path("images", "surfaces", "bad", "bad_02_3.png"))).decode()
    # Warm-up: both named models load on their first frames (a frame may meet "still loading").
    for seq in range(-40, 0):
        mqtt_pub.publish(topic, json.dumps({"seq": seq, "image": frame}).encode())
        time.sleep(1 / RATE)
        answered = [m for m in messages(out_a) + messages(out_b) if "error" not in m.get("result", {"error": 1})]
        if {m["result"]["model"] for m in answered} == {part_a, part_b}:
            break

    started = time.monotonic()
    for seq in range(AFTER):
        if seq == BEFORE:
            upload_ir(kuiper, part_a, os.path.join(ANOMALIB, "model"))  # partA becomes the anomalib export
        mqtt_pub.publish(topic, json.dumps({"seq": seq, "image": frame}).encode())
        time.sleep(max(0.0, started + (seq + 1) / RATE - time.monotonic()))
    warm_errors = len([m for m in messages(out_a) + messages(out_b) if "seq" not in m])
    a, b = counted(out_a), counted(out_b)
    late_errors = len([m for m in messages(out_a) + messages(out_b) if "seq" not in m]) - warm_errors
    assert late_errors == 0, [m for m in messages(out_a) + messages(out_b) if "seq" not in m][-3:]
    assert sorted(a) == sorted(b) == list(range(AFTER))  # every frame answered by both rules
    errors = [m for m in list(a.values()) + list(b.values()) if "error" in m.get("result", {"error": 1})]
    assert not errors, errors[:3]  # none refused, none "still loading"

    assert all("score" in b[s]["result"] and b[s]["result"]["model"] == part_b for s in b)
    assert len({b[s]["result"]["version"] for s in b}) == 1  # line B untouched
    versions = [a[s]["result"]["version"] for s in range(AFTER)]
    old, new = versions[0], versions[-1]
    assert old != new and set(versions) == {old, new}, set(versions)
    first_new = versions.index(new)
    assert versions[first_new:] == [new] * (AFTER - first_new)  # switched once, never back
    assert all("score" not in a[s]["result"] for s in range(first_new))  # the default segmenter until then
    assert all(a[s]["result"]["anomalous"] is True for s in range(first_new, AFTER))  # the export after
    switched_after = (first_new - BEFORE) / RATE
    print(f"models by name: {AFTER} frames at {RATE}/s on two rules, all answered; partA switched "
          f"{switched_after:.2f} s after its replacement began (frame {first_new})")
    assert first_new >= BEFORE and switched_after < 10, f"the new version answered {switched_after:.1f} s after"


def test_a_region_from_each_message_and_the_overlay_picture_in_a_rule(kuiperd, kuiper, defect_plugin, mosquitto,
                                                                       mqtt_pub, mqtt_sub, unique):
    """`inference(image, object_construct("roi", roi, "picture", "overlay"))` with the region in each message:
    boxes in the whole frame's pixels inside the region, the overlay picture the region's own size; a region
    outside the frame is that frame's one-line error and the next frame is served."""
    topic, out = unique("frames"), mqtt_sub(unique("out"))
    stream = unique("cells")
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{topic}", FORMAT="JSON")')
    kuiper.create_rule(unique("roi"), f'SELECT seq, inference(image, object_construct("roi", roi, "picture", '
                       f'"overlay")) AS result FROM {stream}',
                       [kuiperd.mqtt_action(out.topic, sendSingle=True)], {"sendError": True})
    mosquitto.wait_subscribed(topic)
    surface = read(fixture_path("images", "surfaces", "bad", "bad_02_3.png"))  # 256x256
    frame = base64.b64encode(surface).decode()
    for seq, roi in enumerate(([0, 0, 128, 256], [0, 0, 999, 10], [0.5, 0, 0.5, 1])):
        mqtt_pub.publish(topic, json.dumps({"seq": seq, "image": frame, "roi": roi}).encode())
    harness.wait_until(lambda: len(messages(out)) >= 3, 60, what="3 answers")
    rows = messages(out)
    by_seq = {m["seq"]: m["result"] for m in rows if isinstance(m.get("seq"), int)}
    errors = [m["error"] for m in rows if "error" in m]
    assert len(errors) == 1 and "roi [0, 0, 999, 10] is outside the 256x256 image" in errors[0], rows
    left, right = by_seq[0], by_seq[2]
    for result, (low, high) in ((left, (0, 128)), (right, (128, 256))):
        assert (result["width"], result["height"]) == (256, 256)
        assert result["defect"] == len(result["defects"])
        assert all(low <= box["x"] and box["x"] + box["w"] <= high for box in result["defects"]), result["defects"]
        picture = base64.b64decode(result["base64"])
        assert picture[:2] == b"\xff\xd8"
        with Image.open(io.BytesIO(picture)) as drawn:
            assert drawn.size == (128, 256)  # the region, drawn at its own size
    assert left["defect"] >= 1 and right["defect"] >= 1  # the surface has defects in both halves
