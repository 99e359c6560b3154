"""Issue #5 load: four rules (two per function) fed at once through mosquitto, at 80 % of
the rate this box sustains right now.

The rate is measured first (calibration: the slower of two bursts of frames back to back
through the same four rules; a shared box's speed changes from run to run, so a fixed rate, or one read
from an old `make bench`, would be too slow to prove anything or too fast to hold), then
frames arrive at 80 % of it for DEFECT_LOAD_SECONDS (CI: 120; a local run: 30).
Asserts no loss and no duplicates (every rule: messages in = results out, right results),
0 exceptions, the same plugin processes throughout, plugin RSS (all its processes) growth under 10 % after warm-up.
Prints (and writes to build/load.json) the rates, latency p50/p95/max and RSS.
The second test overloads two rules (3x the sustainable rate) and asserts what then holds.
"""
import base64
import json
import os
import time
from pathlib import Path

from tests.support.loadgen import burst_rate, paced, rss_kb
from tests.support.scenarios import CAT_FILES, CAT_LABEL, image_bytes, surface_b64
from tests.support.stats import percentile
from tools.harness import wait_until

LOAD_SECONDS = float(os.environ.get("DEFECT_LOAD_SECONDS", "30"))
LOAD_FRACTION = 0.8
WARMUP_FRAMES, CALIBRATION_FRAMES = 5, 60  # per stream


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

    # Consecutive frames differ, as a camera's do: the plugin answers a call with the same
    # arguments as the one before from memory (a tutorial's SELECT ... WHERE calls twice).
    cats = [image_bytes(name) for name in CAT_FILES]  # VGA BMP, 720p and 1080p JPEG
    surfaces = [surface_b64(n, seed=300 + n) for n in range(4)]  # frame i has i % 4 defects
    pids = kuiperd.plugin_pids("defect")
    assert pids, "no plugin process"

    def plugin_rss():
        return sum(rss_kb(pid) for pid in pids)

    def publish(i):
        mqtt_pub.publish(bin_topic, cats[i % len(cats)])
        mqtt_pub.publish(json_topic, json.dumps({"seq": i, "image": surfaces[i % 4]}).encode())

    def answered():
        return min(len(sink.messages) for sink in sinks.values())

    burst_rate(publish, answered, WARMUP_FRAMES)
    # The slower of two bursts: a burst that caught a quiet moment of the shared box overstates it.
    sustainable = min(burst_rate(lambda i: publish(WARMUP_FRAMES + i), answered, CALIBRATION_FRAMES),
                      burst_rate(lambda i: publish(WARMUP_FRAMES + CALIBRATION_FRAMES + i), answered,
                                 CALIBRATION_FRAMES))
    rate = LOAD_FRACTION * sustainable
    first = WARMUP_FRAMES + 2 * CALIBRATION_FRAMES
    rss = {}

    def sample(elapsed):
        if "warm" not in rss and elapsed >= min(10, LOAD_SECONDS / 4):
            rss["warm"] = plugin_rss()
        rss["peak"] = max(rss.get("peak", 0), plugin_rss())

    load_before = os.getloadavg()[0]  # the box is shared: its load explains the latency's spread
    sent = paced(publish, rate, LOAD_SECONDS, first=first, every_second=sample)
    load_after = os.getloadavg()[0]
    total = first + len(sent)
    for sink in sinks.values():
        sink.wait_for(total, timeout=180)
    time.sleep(2)  # anything extra would be a duplicate
    latencies = []
    for rule, sink in sinks.items():
        messages = list(sink.messages)
        results = [json.loads(m.payload) for m in messages]
        assert len(results) == total, f"{rule}: {total} in, {len(results)} out"
        if "label" in rule:
            assert all(r == {"label": CAT_LABEL} for r in results), results[:3]
            seqs = range(total)  # one rule handles its frames in order
        else:
            seqs = [r["seq"] for r in results]
            assert sorted(seqs) == list(range(total))
        if "defect_count" in rule:
            assert all(r["d"] == r["seq"] % 4 for r in results)
        latencies += [m.timestamp - sent[seq] for m, seq in zip(messages, seqs, strict=True) if seq in sent]
        status = kuiper.rule_status(rule)
        errors = {k: v for k, v in status.items() if k.endswith("exceptions_total") and v}
        assert not errors, f"{rule}: {errors}"
        records_in = {k: v for k, v in status.items() if k.startswith("source_") and k.endswith("_records_in_total")}
        assert list(records_in.values()) == [total], f"{rule}: {total} published, kuiperd counted {records_in}"
    assert kuiperd.plugin_pids("defect") == pids  # no plugin process restarted
    end_rss = plugin_rss()
    growth = end_rss / rss["warm"] - 1
    figures = {
        "seconds": LOAD_SECONDS, "sustainable_frames_per_s": round(sustainable, 1),
        "load_frames_per_s": round(rate, 1), "frames_per_stream": len(sent), "calls": 4 * len(sent),
        "latency_ms": {q: round(1000 * percentile(latencies, n), 1)
                       for q, n in (("p50", 50), ("p95", 95), ("max", 100))},
        "plugin_rss_kb": {"after_warmup": rss["warm"], "peak": rss["peak"], "end": end_rss},
        "rss_growth": round(growth, 4), "kuiperd_rss_kb": rss_kb(kuiperd.proc.pid),
        "load_average": [round(load_before, 2), round(load_after, 2)],
    }
    Path(__file__).resolve().parents[2].joinpath("build", "load.json").write_text(json.dumps(figures, indent=1))
    print(f"load: sustainable {sustainable:.1f} frames/s per stream (slower of 2 bursts of {CALIBRATION_FRAMES}), "
          f"load {rate:.1f}/s x 2 streams x 2 rules for {LOAD_SECONDS:.0f} s = {4 * len(sent)} calls; "
          f"latency {figures['latency_ms']} ms; plugin RSS {rss['warm']} -> {end_rss} kB ({growth:+.1%}), "
          f"peak {rss['peak']} kB; load average {load_before:.2f} -> {load_after:.2f}")
    assert len(latencies) == 4 * len(sent)
    assert growth < 0.10


OVERLOAD_FACTOR, OVERLOAD_SECONDS, OVERLOAD_BUFFER = 3, 10, 32


def test_overload_drops_oldest_frames_counted_and_the_plugin_holds(
        kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub, unique):
    """Frames at 3x the rate the rules sustain (bench/overload.py measures this at length).

    What holds: kuiperd queues bufferLength frames per rule and drops the oldest beyond that,
    counting each drop; every frame is answered once or counted dropped; the plugin's
    processes and memory are unchanged; deleting a rule with a backlog stops its answers
    at once, and a new rule is served by the same plugin processes."""
    topic, stream = unique("over"), unique("s_over")
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{topic}", FORMAT="JSON")')
    label_sql = f"SELECT seq, labelImage(image)[0]->label AS label FROM {stream}"
    rules = {unique("over_label"): label_sql,
             unique("over_defect"): f"SELECT seq, inference(image)->defect AS d FROM {stream}"}
    sinks = {}
    for rule, sql in rules.items():
        sinks[rule] = mqtt_sub(unique("out"))
        kuiper.create_rule(rule, sql, [kuiperd.mqtt_action(sinks[rule].topic, sendSingle=True)],
                           {"bufferLength": OVERLOAD_BUFFER})
        kuiper.wait_rule_running(rule)
    mosquitto.wait_subscribed(topic, clients=2)
    frames = [json.dumps({"image": b64}) for b64 in
              [base64.b64encode(image_bytes(name)).decode() for name in CAT_FILES]]

    def publish(i):
        mqtt_pub.publish(topic, (f'{{"seq": {i}, ' + frames[i % len(frames)][1:]).encode())

    def answered():
        return min(len(sink.messages) for sink in sinks.values())

    pids = kuiperd.plugin_pids("defect")
    burst_rate(publish, answered, WARMUP_FRAMES)
    burst = OVERLOAD_BUFFER // 2  # fits the rules' buffers: no drop while calibrating
    sustainable = burst_rate(lambda i: publish(WARMUP_FRAMES + i), answered, burst)
    rss_before = sum(rss_kb(pid) for pid in pids)
    first = WARMUP_FRAMES + burst
    sent = paced(publish, OVERLOAD_FACTOR * sustainable, OVERLOAD_SECONDS, first=first)
    total = first + len(sent)

    def settled():  # every frame answered or dropped, by kuiperd's own count
        return all(len(sinks[r].messages) + dropped(kuiper.rule_status(r)) == total for r in rules)
    wait_until(settled, 60, interval=0.5, what="every frame answered or counted dropped")
    time.sleep(2)
    for rule, sink in sinks.items():
        status = kuiper.rule_status(rule)
        seqs = [json.loads(p)["seq"] for p in sink.payloads()]
        assert len(seqs) == len(set(seqs)), f"{rule}: duplicates"
        assert len(seqs) + dropped(status) == total, \
            f"{rule}: {len(seqs)} answered, {dropped(status)} dropped, {total} sent"
        assert dropped(status) > 0, f"{rule}: no frame dropped at {OVERLOAD_FACTOR}x the sustainable rate"
        failed = {k: v for k, v in status.items() if k.endswith("_exceptions_total") and v and not is_queue(k)}
        assert not failed, f"{rule}: exceptions other than kuiperd's buffer drops: {failed}"
        reasons = {v for k, v in status.items() if k.endswith("_last_exception") and is_queue(k) and v}
        assert all("buffer full, drop message" in r for r in reasons), reasons
    assert kuiperd.plugin_pids("defect") == pids
    rss_after = sum(rss_kb(pid) for pid in pids)
    assert rss_after < 1.1 * rss_before, f"plugin RSS {rss_before} -> {rss_after} kB"

    # Delete both rules with a backlog queued: no answer may follow the DELETE.
    backlog = paced(publish, OVERLOAD_FACTOR * sustainable, 3, first=total)
    marks = {r: len(s.messages) for r, s in sinks.items()}
    deleted = {}
    for rule in rules:
        kuiper.delete_rule(rule)
        deleted[rule] = time.monotonic()
    time.sleep(5)
    # A result the sink published just before it stopped may still be on its way (seen: 1, within 5 ms).
    late = {r: [round(m.timestamp - deleted[r], 3) for m in s.messages[marks[r]:] if m.timestamp > deleted[r] + 0.5]
            for r, s in sinks.items()}
    assert late == {r: [] for r in rules}, \
        f"answers (s after DELETE) from deleted rules: {late}, {len(backlog)} frames sent"
    fresh, rule = mqtt_sub(unique("out")), unique("fresh")
    kuiper.create_rule(rule, label_sql, [kuiperd.mqtt_action(fresh.topic, sendSingle=True)])
    kuiper.wait_rule_running(rule)
    mosquitto.wait_subscribed(topic, clients=3)
    publish(10**6)
    fresh.wait_for(1, timeout=30)
    assert kuiperd.plugin_pids("defect") == pids
    print(f"overload: {OVERLOAD_FACTOR * sustainable:.0f} frames/s for {OVERLOAD_SECONDS} s "
          f"(sustainable {sustainable:.1f}), bufferLength {OVERLOAD_BUFFER}: "
          + ", ".join(f"{r.split('_')[1]} {len(sinks[r].messages)} answered" for r in rules)
          + f"; plugin RSS {rss_before} -> {rss_after} kB")


def is_queue(metric_name: str) -> bool:
    """The nodes before the function call, where kuiperd queues frames (source and decoder)."""
    return metric_name.startswith("source_") or "_decoder_" in metric_name


def dropped(status: dict) -> int:
    """Frames kuiperd dropped from a full buffer: it counts each as an exception of the node
    that could not hand it on ("buffer full, drop message ... from 2_decoder to <rule>.1_3_project")."""
    return sum(v for k, v in status.items() if k.endswith("_exceptions_total") and is_queue(k))
