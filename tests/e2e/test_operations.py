"""Issue #3, scenarios 3-5 on a real kuiperd: managing the plugin, bad input,
100-in/100-out counting, and a hot update while rules run.

The hot update test comes last in this file: it re-installs the plugin that
the session-scoped `defect_plugin` fixture installed.
"""

import base64
import json
import time
from collections import Counter

import pytest

from tests.support.bad_inputs import bad_images
from tests.support.rules import start_rule
from tests.support.scenarios import (
    CAT_FILES,
    CAT_LABEL,
    assert_one_line_error,
    image_bytes,
    json_or_none,
    publish_until,
    settle,
    surfaces,
)
from tools import harness


def b64_image(name: str) -> str:
    """A fixture image as base64 text, the way a JSON stream carries it."""
    return base64.b64encode(image_bytes(name)).decode("ascii")


def metric(status: dict, prefix: str, suffix: str) -> int:
    """One rule metric, e.g. metric(st, "source_", "_records_in_total")."""
    [value] = [v for k, v in status.items() if k.startswith(prefix) and k.endswith(suffix)]
    return value


# ---------------------------------------------------------------- 3. management


def test_plugin_is_described_and_running(kuiperd, kuiper, defect_plugin):
    info = kuiper.get_portable_plugin("defect")
    assert info["name"] == "defect" and info["language"] == "python", info
    assert sorted(info["functions"]) == ["inference", "inferenceBatch", "labelImage", "labelImageBatch"], info
    assert info["executable"] == str(kuiperd.home / "plugins" / "portable" / "defect" / "main.py"), info
    assert [p["name"] for p in kuiper.list_portable_plugins()] == ["defect"]
    status = kuiper.portable_plugin_status("defect")
    assert status["status"] == "running" and status["errMsg"] == "", status
    assert len(kuiperd.plugin_pids("defect")) == 2  # the supervisor kuiperd started, and its worker
    assert len(kuiperd.plugin_worker_pids("defect")) == 1


@pytest.mark.parametrize("call, message", [
    ("labelImage(self, 3, 4)", "labelImage takes 1 or 2 arguments: labelImage(image [, k]), got 3"),
    ("inference(self, 0.5, 1)", "inference takes 1 or 2 arguments: inference(image [, threshold]), got 3"),
    ("labelImage()", "labelImage takes 1 or 2 arguments"),
    ("inference()", "inference takes 1 or 2 arguments"),
])
def test_wrong_argument_count_is_refused_at_creation(kuiperd, kuiper, defect_plugin, unique, call, message):
    stream, rule = unique("s"), unique("r")
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{unique("t")}", FORMAT="BINARY")')
    with pytest.raises(harness.KuiperError) as refused:
        kuiper.create_rule(rule, f"SELECT {call} AS x FROM {stream}", [kuiperd.mqtt_action(unique("o"))])
    assert refused.value.status == 400
    assert message in refused.value.body, refused.value.body
    assert "Traceback" not in refused.value.body, refused.value.body
    assert rule not in [r["id"] for r in kuiper.request("GET", "/rules")]


def test_bad_binary_frame_gives_one_line_error_then_next_frame_is_labelled(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, dst, stream, rule = unique("img"), unique("out"), unique("bin"), unique("r")
    out = mqtt_sub(dst)
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src}", FORMAT="BINARY")')
    start_rule(kuiperd, kuiper, mosquitto, rule, f"SELECT labelImage(self)[0]->label AS label FROM {stream}",
               dst, src, {"sendError": True})
    jpeg = image_bytes("cat_720p.jpg")
    sent = [b"hello, this is not a picture at all", image_bytes("cat.bmp"),
            jpeg[: len(jpeg) // 2], jpeg]
    for payload in sent:
        mqtt_pub.publish(src, payload)

    out.wait_for(len(sent), timeout=60)
    text, good, truncated, good_again = settle(out, len(sent))
    assert_one_line_error(text.decode(), "labelImage", "not an image")
    assert json.loads(good) == {"label": CAT_LABEL}
    assert_one_line_error(truncated.decode(), "labelImage", "truncated")
    assert json.loads(good_again) == {"label": CAT_LABEL}
    assert kuiper.rule_status(rule)["status"] == "running"


def json_rule_for(kuiperd, kuiper, mosquitto, mqtt_sub, unique, function, seed, defects, options=None):
    """A JSON stream and a rule `SELECT seq, <function>(image)... AS out`; returns
    (source topic, sink collector, rule id, a good frame, what the rule answers for it)."""
    src, dst, stream, rule = unique("json"), unique("out"), unique("js"), unique("r")
    out = mqtt_sub(dst)
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src}", FORMAT="JSON")')
    if function == "labelImage":
        select, (good, expected) = "labelImage(image)[0]->label", (b64_image("cat_720p.jpg"), CAT_LABEL)
    else:
        select, (expected, good) = "inference(image)->defect", surfaces(seeds=(seed,), counts=(defects,))[0]
    start_rule(kuiperd, kuiper, mosquitto, rule, f"SELECT seq, {select} AS out FROM {stream}", dst, src, options)
    return src, out, rule, good, expected


@pytest.mark.parametrize("function", ["labelImage", "inference"])
def test_bad_json_values_give_one_line_errors_then_next_image_is_served(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique, function):
    """Every value of tests/support/bad_inputs.py through each function, each followed by a good frame."""
    src, out, rule, good, expected = json_rule_for(kuiperd, kuiper, mosquitto, mqtt_sub, unique, function, 21, 3,
                                                   {"sendError": True})
    pids = kuiperd.plugin_pids("defect")
    bad = bad_images()
    for i, (value, _) in enumerate(bad.values()):
        mqtt_pub.publish(src, json.dumps({"seq": 2 * i, "image": value}).encode())
        mqtt_pub.publish(src, json.dumps({"seq": 2 * i + 1, "image": good}).encode())

    out.wait_for(2 * len(bad), timeout=90)
    payloads = settle(out, 2 * len(bad))
    for i, (name, (_, word)) in enumerate(bad.items()):
        error, result = payloads[2 * i].decode(errors="replace"), payloads[2 * i + 1]
        assert_one_line_error(error, function, word)
        assert json.loads(result) == {"seq": 2 * i + 1, "out": expected}, f"after {name!r}: {result!r}"
    assert kuiperd.plugin_pids("defect") == pids  # no bad value cost a plugin process
    assert kuiper.rule_status(rule)["status"] == "running"


@pytest.mark.parametrize("function", ["labelImage", "inference"])
def test_without_send_error_a_bad_frame_is_dropped_and_the_next_is_served(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique, function):
    """The README's promise for a rule without sendError: no output for the bad frame, the
    frame after it is answered, the rule keeps running, and kuiperd counts the exception."""
    src, out, rule, good, expected = json_rule_for(kuiperd, kuiper, mosquitto, mqtt_sub, unique, function, 22, 2)
    pids = kuiperd.plugin_pids("defect")
    bad = bad_images()
    frames = [good, bad["base64 of text"][0], good, bad["truncated jpeg"][0], good]
    for seq, image in enumerate(frames):
        mqtt_pub.publish(src, json.dumps({"seq": seq, "image": image}).encode())

    out.wait_for(3, timeout=60)
    rows = [json.loads(p) for p in settle(out, 3)]
    assert rows == [{"seq": seq, "out": expected} for seq in (0, 2, 4)], rows
    status = kuiper.rule_status(rule)
    assert status["status"] == "running", status
    assert metric(status, "source_", "_records_in_total") == 5
    assert metric(status, "op_", "_project_0_exceptions_total") == 2, status
    assert "truncated" in metric(status, "op_", "_project_0_last_exception"), status
    assert metric(status, "sink_", "_records_out_total") == 3
    assert kuiperd.plugin_pids("defect") == pids


def test_label_image_reads_a_base64_json_field_and_data_uris(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, dst, stream, rule = unique("json"), unique("out"), unique("js"), unique("r")
    out = mqtt_sub(dst)
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src}", FORMAT="JSON")')
    start_rule(kuiperd, kuiper, mosquitto, rule, f"SELECT seq, labelImage(image)[0]->label AS label FROM {stream}",
               dst, src, {"sendError": True})
    images = [b64_image("cat_1080p.jpg"),                                 # a plain base64 field
              "data:image/jpeg;base64," + b64_image("cat_720p.jpg"),     # data: URIs
              "data:image/bmp;base64," + b64_image("cat.bmp")]
    for seq, image in enumerate(images):
        mqtt_pub.publish(src, json.dumps({"seq": seq, "image": image}).encode())

    out.wait_for(len(images), timeout=60)
    rows = [json.loads(p) for p in settle(out, len(images))]
    assert rows == [{"seq": seq, "label": CAT_LABEL} for seq in range(len(images))], rows


# ---------------------------------------------------------------- 4. counting


def test_100_cat_frames_in_100_labels_out(kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, dst, stream, rule = unique("img"), unique("out"), unique("bin"), unique("r")
    out = mqtt_sub(dst)
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src}", FORMAT="BINARY")')
    start_rule(kuiperd, kuiper, mosquitto, rule, f"SELECT labelImage(self)[0]->label AS label FROM {stream}",
               dst, src)
    frames = [image_bytes(name) for name in CAT_FILES]
    started = time.monotonic()
    for i in range(100):
        mqtt_pub.publish(src, frames[i % len(frames)])  # QoS 1, PUBACK awaited

    out.wait_for(100, timeout=180)
    elapsed = time.monotonic() - started
    payloads = settle(out, 100)
    wrong = [p for p in payloads if json_or_none(p) != {"label": CAT_LABEL}]
    assert not wrong, wrong[:5]
    status = kuiper.rule_status(rule)
    assert metric(status, "source_", "_records_in_total") == 100
    assert metric(status, "sink_", "_records_out_total") == 100
    assert metric(status, "op_", "_project_0_exceptions_total") == 0
    print(f"100 labelImage frames in {elapsed:.1f}s")


def test_100_surfaces_in_100_reports_out(kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    src, dst, stream, rule = unique("json"), unique("out"), unique("js"), unique("r")
    out = mqtt_sub(dst)
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{src}", FORMAT="JSON")')
    start_rule(kuiperd, kuiper, mosquitto, rule,
               f"SELECT seq, inference(image)->defect AS defect FROM {stream}", dst, src)
    frames = surfaces(seeds=(31, 32, 33))
    started = time.monotonic()
    for seq in range(100):
        n, b64 = frames[seq % len(frames)]
        mqtt_pub.publish(src, json.dumps({"seq": seq, "image": b64}).encode())

    out.wait_for(100, timeout=180)
    elapsed = time.monotonic() - started
    rows = [json.loads(p) for p in settle(out, 100)]
    seqs = [r["seq"] for r in rows]
    assert sorted(seqs) == list(range(100)), f"lost {set(range(100)) - set(seqs)}, " \
                                             f"duplicated {[s for s, c in Counter(seqs).items() if c > 1]}"
    wrong = [(r["seq"], r["defect"], frames[r["seq"] % len(frames)][0]) for r in rows
             if r["defect"] != frames[r["seq"] % len(frames)][0]]
    assert not wrong, f"(seq, counted, drawn): {wrong}"
    status = kuiper.rule_status(rule)
    assert metric(status, "source_", "_records_in_total") == 100
    assert metric(status, "sink_", "_records_out_total") == 100
    print(f"100 inference frames in {elapsed:.1f}s")


# ---------------------------------------------------------------- 5. hot update


def test_hot_update_resumes_both_functions_without_restarts(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    """DELETE + POST, then PUT, with a rule per function running; no kuiperd or rule restart."""
    bin_src, label_dst, bin_stream, label_rule = unique("img"), unique("labels"), unique("bin"), unique("rl")
    json_src, defect_dst, json_stream, defect_rule = unique("json"), unique("defects"), unique("js"), unique("rd")
    labels, defects = mqtt_sub(label_dst), mqtt_sub(defect_dst)
    kuiper.create_stream(f'CREATE STREAM {bin_stream} () WITH (DATASOURCE="{bin_src}", FORMAT="BINARY")')
    kuiper.create_stream(f'CREATE STREAM {json_stream} () WITH (DATASOURCE="{json_src}", FORMAT="JSON")')
    # sendError: the calls that fail while the plugin restarts show up as text rows.
    start_rule(kuiperd, kuiper, mosquitto, label_rule,
               f"SELECT labelImage(self)[0]->label AS label FROM {bin_stream}", label_dst, bin_src,
               {"sendError": True})
    start_rule(kuiperd, kuiper, mosquitto, defect_rule,
               f"SELECT seq, inference(image)->defect AS defect FROM {json_stream}", defect_dst, json_src,
               {"sendError": True})
    cat = image_bytes("cat_720p.jpg")
    n, surface = surfaces(seeds=(41,), counts=(2,))[0]
    seq = iter(range(10**6))

    def send():
        mqtt_pub.publish(bin_src, cat)
        mqtt_pub.publish(json_src, json.dumps({"seq": next(seq), "image": surface}).encode())

    def results_since(since_labels, since_defects):
        return {"labelImage": [p for p in labels.payloads()[since_labels:] if json_or_none(p) == {"label": CAT_LABEL}],
                "inference": [p for p in defects.payloads()[since_defects:]
                              if (json_or_none(p) or {}).get("defect") == n]}

    def resumed(*marks):
        return lambda: all(results_since(*marks).values())

    def missing(*marks):
        def describe():
            got = results_since(*marks)
            return (f"no correct result since the update from {[f for f, r in got.items() if not r]}; "
                    f"last rows: labelImage {labels.payloads()[-1:]}, inference {defects.payloads()[-1:]}")
        return describe

    publish_until(send, resumed(0, 0), timeout=60, status=missing(0, 0))  # both rules work before the update
    kuiperd_pid = kuiperd.proc.pid
    started_at = {r: kuiper.rule_status(r)["lastStartTimestamp"] for r in (label_rule, defect_rule)}
    took = {}
    for how in ("delete+install", "put"):
        old_pids = kuiperd.plugin_pids("defect")
        assert len(old_pids) == 2  # supervisor and worker
        t0 = time.monotonic()
        if how == "put":
            kuiper.update_portable_plugin("defect", defect_plugin)
        else:
            kuiper.delete_portable_plugin("defect")
            assert "defect" not in [p["name"] for p in kuiper.list_portable_plugins()]
            harness.wait_until(lambda: not kuiperd.plugin_pids("defect"), 15, what="old plugin process gone")
            kuiper.install_portable_plugin("defect", defect_plugin)
        assert kuiper.portable_plugin_status("defect")["status"] == "running"
        new_pids = harness.wait_until(lambda: len(kuiperd.plugin_pids("defect")) == 2 and kuiperd.plugin_pids("defect"),
                                      15, what="new supervisor and worker")
        assert not set(new_pids) & set(old_pids), (old_pids, new_pids)
        marks = len(labels.payloads()), len(defects.payloads())
        # The first call after the restart may time out in kuiperd; keep publishing.
        publish_until(send, resumed(*marks), timeout=60, status=missing(*marks))
        took[how] = time.monotonic() - t0
        errors = [p for p in labels.payloads()[marks[0]:] + defects.payloads()[marks[1]:] if json_or_none(p) is None]
        print(f"{how}: both functions answered again {took[how]:.1f}s after the update began; "
              f"error rows meanwhile: {[e.decode(errors='replace')[-120:] for e in errors]}")

    assert kuiperd.proc.poll() is None and kuiperd.proc.pid == kuiperd_pid  # kuiperd never restarted
    for r in (label_rule, defect_rule):  # nor did the rules
        status = kuiper.rule_status(r)
        assert status["status"] == "running" and status["lastStartTimestamp"] == started_at[r], status
