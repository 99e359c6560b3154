"""Overload: frames arrive faster than the plugin answers. What do kuiperd and the plugin do?

A real mosquitto and kuiperd with the plugin; one JSON stream of camera frames (base64
JPEGs, 512x384 and 1280x720, as the OpenVINO tutorial sends them) feeding a labelImage rule
and an inference rule with kuiperd's default options (bufferLength 1024, no sendError).
1. calibrate: the rate the two rules sustain (a burst of frames back to back);
2. overload: frames at FACTOR x that rate for SECONDS, sampling every second kuiperd's and
   the plugin's RSS, results out and kuiperd's rule metrics; then the backlog drains;
3. delete under backlog: overload again, delete both rules mid-backlog, count answers
   that still arrive, then check a new rule is served by the same plugin processes.

    tools/with_private_tmp.sh .venv/bin/python -m bench.overload [--factor 3] [--seconds 40] [--buffer-length N]

Prints a summary; writes build/overload_buffer<bufferLength>.json (README, Reliability, quotes it).
"""
from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from pathlib import Path

from tests.support.loadgen import burst_rate, paced, rss_kb
from tests.support.scenarios import image_bytes
from tests.support.stats import percentile
from tools import harness

REPO = Path(__file__).resolve().parents[1]

FRAMES = ("cat_720p.jpg", "hot_dog.jpg", "owl.jpg")  # 1280x720, 512x384, 512x384
RULES = {"ov_label": "SELECT seq, labelImage(image)[0]->label AS label FROM ov",
         "ov_defect": "SELECT seq, inference(image)->defect AS defect FROM ov"}


def metrics(client: harness.KuiperClient, rule: str) -> dict:
    st = client.rule_status(rule)
    pick = {"in": "_records_in_total", "exceptions": "_exceptions_total", "last_exception": "_last_exception"}
    out = {}
    for name, suffix in pick.items():
        for k, v in st.items():
            if k.endswith(suffix) and (v or name == "in") and k.startswith(("source_", "op_", "sink_")):
                out.setdefault(name, {})[k] = v
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=3.0, help="arrival rate / sustainable rate")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--buffer-length", type=int, default=None,
                        help="the rules' bufferLength option (kuiperd's default: 1024)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="overload_"))
    broker = harness.Mosquitto(work / "mosquitto").start()
    kuiperd = harness.Kuiperd(work / "kuiper", broker.url).start()
    report: dict = {"factor": args.factor, "seconds": args.seconds, "buffer_length": args.buffer_length or 1024}
    options = {"bufferLength": args.buffer_length} if args.buffer_length else None
    try:
        c = kuiperd.client
        c.install_portable_plugin("defect", (REPO / "build" / "defect.zip").resolve().as_uri())
        c.create_stream('CREATE STREAM ov () WITH (DATASOURCE="ov_in", FORMAT="JSON")')
        sinks = {}
        for rule, sql in RULES.items():
            sinks[rule] = harness.MqttCollector(broker.host, broker.port, f"{rule}_out")
            c.create_rule(rule, sql, [kuiperd.mqtt_action(f"{rule}_out", sendSingle=True)], options)
            c.wait_rule_running(rule)
        broker.wait_subscribed("ov_in", clients=2)
        pub = harness.MqttPublisher(broker.host, broker.port)
        # Consecutive frames differ, as a camera's do (the plugin answers a call with the
        # same arguments as the one before from memory).
        frames = [json.dumps({"image": base64.b64encode(image_bytes(name)).decode()}) for name in FRAMES]

        def publish(i: int) -> None:
            pub.publish("ov_in", (f'{{"seq": {i}, ' + frames[i % len(frames)][1:]).encode())

        def answered() -> int:
            return min(len(s.messages) for s in sinks.values())

        pids = kuiperd.plugin_pids("defect")

        def plugin_rss() -> int:
            return sum(rss_kb(p) for p in pids)

        # The calibration burst must fit the rules' buffers, or kuiperd drops part of it.
        burst = min(60, (args.buffer_length or 1024) // 2)
        burst_rate(publish, answered, 5)
        sustainable = burst_rate(lambda i: publish(5 + i), answered, burst)
        first = 5 + burst
        rate = args.factor * sustainable
        report.update(sustainable_frames_per_s=round(sustainable, 1), arrival_frames_per_s=round(rate, 1),
                      rss_before_kb={"kuiperd": rss_kb(kuiperd.proc.pid), "plugin": plugin_rss()})
        timeline = []

        def sample(elapsed: float) -> None:
            timeline.append({"t": round(elapsed), "kuiperd_rss_kb": rss_kb(kuiperd.proc.pid),
                             "plugin_rss_kb": plugin_rss(), **{r: len(s.messages) - first for r, s in sinks.items()}})

        # 2. overload, then drain
        sent = paced(publish, rate, args.seconds, first=first, every_second=sample)
        stopped = time.monotonic()
        counts, quiet_since = [answered()], time.monotonic()
        while time.monotonic() - quiet_since < 5 and time.monotonic() - stopped < 600:
            time.sleep(0.5)
            sample(time.monotonic() - stopped + args.seconds)
            if answered() != counts[-1]:
                counts.append(answered())
                quiet_since = time.monotonic()
        report["drain_seconds"] = round(quiet_since - stopped, 1)
        report["timeline"] = timeline
        per_rule = {}
        for rule, sink in sinks.items():
            messages = [m for m in sink.messages if json.loads(m.payload)["seq"] in sent]
            seqs = [json.loads(m.payload)["seq"] for m in messages]
            latencies = [m.timestamp - sent[json.loads(m.payload)["seq"]] for m in messages]
            lost = sorted(set(sent) - set(seqs))
            per_rule[rule] = {"sent": len(sent), "answered": len(messages), "not_answered": len(lost),
                              "duplicates": len(seqs) - len(set(seqs)),
                              "first_unanswered": lost[:3], "last_unanswered": lost[-3:],
                              "latency_s": {"p50": round(percentile(latencies, 50), 2),
                                            "p95": round(percentile(latencies, 95), 2),
                                            "max": round(max(latencies), 2)} if latencies else None,
                              "kuiperd_metrics": metrics(c, rule)}
        report["rules"] = per_rule
        report["peak_rss_kb"] = {"kuiperd": max(s["kuiperd_rss_kb"] for s in timeline),
                                 "plugin": max(s["plugin_rss_kb"] for s in timeline)}
        report["rss_after_drain_kb"] = {"kuiperd": rss_kb(kuiperd.proc.pid), "plugin": plugin_rss()}

        # 3. delete both rules with a backlog queued, then a new rule on the same plugin
        backlog_first = first + len(sent) + 1000
        paced(publish, rate, 10, first=backlog_first)
        before = {r: len(s.messages) for r, s in sinks.items()}
        for rule in RULES:
            c.delete_rule(rule)
        deleted = time.monotonic()
        time.sleep(10)
        report["after_delete"] = {
            # answers that arrived after DELETE returned (in-flight MQTT deliveries would show as < 0.1 s)
            "answers_after_delete": {r: sum(m.timestamp > deleted for m in s.messages[before[r]:])
                                     for r, s in sinks.items()},
            "plugin_pids_unchanged": kuiperd.plugin_pids("defect") == pids,
            "plugin_status": c.portable_plugin_status("defect")["status"],
        }
        late = [round(m.timestamp - deleted, 2) for r, s in sinks.items() for m in s.messages[before[r]:]
                if m.timestamp > deleted]
        report["after_delete"]["answer_times_after_delete_s"] = [min(late), max(late)] if late else []
        fresh = harness.MqttCollector(broker.host, broker.port, "ov_fresh_out")
        c.create_rule("ov_fresh", RULES["ov_label"], [kuiperd.mqtt_action("ov_fresh_out", sendSingle=True)])
        c.wait_rule_running("ov_fresh")
        t0 = time.monotonic()
        deadline = t0 + 60
        while not fresh.messages and time.monotonic() < deadline:
            publish(10**6)
            time.sleep(0.5)
        report["after_delete"]["new_rule_answered_in_s"] = round(time.monotonic() - t0, 2) if fresh.messages else None
        report["after_delete"]["plugin_rss_kb"] = plugin_rss()
        report["after_delete"]["kuiperd_rss_kb"] = rss_kb(kuiperd.proc.pid)
        c.delete_rule("ov_fresh")
        for s in [*sinks.values(), fresh]:
            s.close()
        pub.close()
    finally:
        kuiperd.stop()
        broker.stop()
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / "build" / f"overload_buffer{report['buffer_length']}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "timeline"}, indent=1))
    print("timeline (every 5th second):")
    for s in report["timeline"][::5]:
        print(" ", s)


if __name__ == "__main__":
    main()
