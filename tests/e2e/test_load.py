"""Issue #5 load: four rules (two per function) fed at once through mosquitto.

DEFECT_LOAD_SECONDS sets the duration (CI sets 120; a local run takes 15).
Asserts 0 errors, messages in = results out on every rule, plugin RSS growth
under 10 % after warm-up, and one plugin process throughout.
"""
import json
import os
import time

from scenarios import CAT_LABEL, image_bytes, surface_b64

LOAD_SECONDS = float(os.environ.get("DEFECT_LOAD_SECONDS", "15"))
FRAMES_PER_SECOND = 4  # per stream; each frame feeds two rules


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_four_rules_under_load(kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    bin_topic, json_topic = unique("load_bin"), unique("load_json")
    bin_stream, json_stream = unique("s_bin"), unique("s_json")
    kuiper.create_stream(f'CREATE STREAM {bin_stream} () WITH (DATASOURCE="{bin_topic}", FORMAT="BINARY")')
    kuiper.create_stream(f'CREATE STREAM {json_stream} () WITH (DATASOURCE="{json_topic}", FORMAT="JSON")')
    rules = {
        unique("label_top1"): f"SELECT labelImage(self)[0]->label AS label FROM {bin_stream}",
        unique("label_k1"): f"SELECT labelImage(self, 1)[0]->label AS label FROM {bin_stream}",
        unique("defect_count"): f"SELECT seq, inference(image)->defect AS d FROM {json_stream}",
        unique("defect_strict"): f"SELECT seq, inference(image, 0.9)->defect AS d FROM {json_stream}",
    }
    sinks = {}
    for rule, sql in rules.items():
        sinks[rule] = mqtt_sub(unique("out"))
        kuiper.create_rule(rule, sql, [kuiperd.mqtt_action(sinks[rule].topic, sendSingle=True)])
        kuiper.wait_rule_running(rule)
    mosquitto.wait_subscribed(bin_topic, clients=2)
    mosquitto.wait_subscribed(json_topic, clients=2)

    cat = image_bytes("cat_720p.jpg")
    frames = [(n, surface_b64(n, seed=300 + n)) for n in range(4)]
    [pid] = kuiperd.plugin_pids("defect")
    sent, rss_after_warmup, started = 0, None, time.monotonic()
    while time.monotonic() - started < LOAD_SECONDS:
        tick = time.monotonic()
        _, image = frames[sent % len(frames)]
        mqtt_pub.publish(bin_topic, cat)
        mqtt_pub.publish(json_topic, json.dumps({"seq": sent, "image": image}).encode())
        sent += 1
        if rss_after_warmup is None and time.monotonic() - started > min(10, LOAD_SECONDS / 4):
            rss_after_warmup = rss_kb(pid)
        time.sleep(max(0, 1 / FRAMES_PER_SECOND - (time.monotonic() - tick)))

    for rule, sink in sinks.items():
        sink.wait_for(sent, timeout=120)
    time.sleep(2)  # anything extra would be a duplicate
    for rule, sink in sinks.items():
        results = [json.loads(p) for p in sink.payloads()]
        assert len(results) == sent, f"{rule}: {sent} in, {len(results)} out"
        if "label" in rule:
            assert all(r == {"label": CAT_LABEL} for r in results), results[:3]
        else:
            assert sorted(r["seq"] for r in results) == list(range(sent))
        if "defect_count" in rule:
            assert all(r["d"] == r["seq"] % len(frames) for r in results)
        status = kuiper.rule_status(rule)
        errors = {k: v for k, v in status.items() if k.endswith("exceptions_total") and v}
        assert not errors, f"{rule}: {errors}"
    assert kuiperd.plugin_pids("defect") == [pid]
    growth = rss_kb(pid) / rss_after_warmup - 1
    print(f"load: {sent} frames x 4 rules in {LOAD_SECONDS:.0f} s, RSS {rss_after_warmup} kB -> "
          f"{rss_kb(pid)} kB ({growth:+.1%})")
    assert growth < 0.10
