"""How often do rules fail to come back after a kuiperd restart? (a measurement, not a test)

kuiperd v2.4.2 registers portable plugins in goroutines (internal/plugin/portable/manager.go,
syncRegistry: `go parsePlugin(...)`) and then restores the rules without waiting for them
(internal/server/server.go). A rule planned before `defect` is registered stops with
"function labelImage not found" and kuiperd does not retry it; the plugin then restarts it
(rule_revival.py). This script counts both: a real kuiperd with a labelImage rule and an
inference rule, restarted N times (SIGTERM, same data dir); per restart, whether kuiperd lost
a rule at restore (its log), whether the plugin restarted it, and whether both rules run
within 30 s and answer a frame. A rule still stopped is restarted by hand (and counted) so
the next round starts from the same state.

    tools/with_private_tmp.sh .venv/bin/python -m bench.restart_race [--restarts 30] [--busy 0]

--busy N runs N busy-loop processes during the restarts (a loaded box widens the race).
Prints one line per restart and a summary; writes build/restart_race.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.scenarios import CAT_LABEL, image_bytes, json_or_none, surface_b64
from tools import harness

REPO = Path(__file__).resolve().parents[1]


def answered_since(collector: harness.MqttCollector, mark: int, check) -> bool:
    return any(check(json_or_none(p)) for p in collector.payloads()[mark:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=30)
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes during the run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="restart_race_"))
    broker = harness.Mosquitto(work / "mosquitto").start()
    kuiperd = harness.Kuiperd(work / "kuiper", broker.url).start()
    busy: list[subprocess.Popen] = []
    rounds = []
    try:
        c = kuiperd.client
        c.install_portable_plugin("defect", (REPO / "build" / "defect.zip").resolve().as_uri())
        c.create_stream('CREATE STREAM race_bin () WITH (DATASOURCE="race_bin", FORMAT="BINARY")')
        c.create_stream('CREATE STREAM race_json () WITH (DATASOURCE="race_json", FORMAT="JSON")')
        labels = harness.MqttCollector(broker.host, broker.port, "race_labels")
        defects = harness.MqttCollector(broker.host, broker.port, "race_defects")
        c.create_rule("race_label", "SELECT labelImage(self)[0]->label AS label FROM race_bin",
                      [kuiperd.mqtt_action("race_labels", sendSingle=True)])
        c.create_rule("race_defect", "SELECT inference(image)->defect AS defect FROM race_json",
                      [kuiperd.mqtt_action("race_defects", sendSingle=True)])
        pub = harness.MqttPublisher(broker.host, broker.port)
        cat, surface = image_bytes("cat.bmp"), json.dumps({"image": surface_b64(2, seed=7)}).encode()
        checks = {"race_label": (labels, lambda r: r == {"label": CAT_LABEL}, "race_bin", cat),
                  "race_defect": (defects, lambda r: r == {"defect": 2}, "race_json", surface)}
        # Not forked from here: a forked child would inherit kuiperd's lock file and keep it locked.
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        for i in range(args.restarts + 1):  # round 0 is the first start, not a restart
            log_mark = kuiperd.log_path.stat().st_size
            if i:
                kuiperd.restart()
            started = time.monotonic()
            outcome = {}
            for rule, (out, check, topic, frame) in checks.items():
                try:  # kuiperd restored it, or the plugin restarted it (rule_revival.py)
                    c.wait_rule_running(rule, timeout=30)
                    came_back = True
                except TimeoutError:
                    came_back = False
                    outcome[rule + "_status"] = c.rule_status(rule).get("message", "")
                    c.request("POST", f"/rules/{rule}/restart")  # by hand, so the next round is comparable
                    c.wait_rule_running(rule, timeout=30)
                with open(kuiperd.log_path, "rb") as f:
                    f.seek(log_mark)
                    log = f.read().decode(errors="replace")
                outcome[rule] = came_back
                outcome[rule + "_lost_at_restore"] = any(f"Rule {rule} start failed" in line and "not found" in line
                                                         for line in log.splitlines())
                outcome[rule + "_restarted_by_plugin"] = f"restarted rule {rule}:" in log
                mark = len(out.payloads())
                deadline = time.monotonic() + 60
                while not answered_since(out, mark, check):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"round {i}: {rule} running but no answer in 60 s")
                    pub.publish(topic, frame)
                    time.sleep(0.5)
            outcome["seconds"] = round(time.monotonic() - started, 2)
            if i:
                rounds.append(outcome)
                print(f"restart {i}: {outcome}", flush=True)
        pub.close()
        labels.close()
        defects.close()
    finally:
        for p in busy:
            p.kill()
            p.wait()
        kuiperd.stop()
        broker.stop()
    failed = {rule: sum(not r[rule] for r in rounds) for rule in checks}
    lost = {rule: sum(r[rule + "_lost_at_restore"] for r in rounds) for rule in checks}
    revived = {rule: sum(r[rule + "_restarted_by_plugin"] for r in rounds) for rule in checks}
    summary = {"restarts": len(rounds), "busy_processes": args.busy, "cores": os.cpu_count(),
               "rules_lost_at_restore": lost, "rules_restarted_by_plugin": revived,
               "rounds_with_a_rule_lost_at_restore": sum(
                   r["race_label_lost_at_restore"] or r["race_defect_lost_at_restore"] for r in rounds),
               "rules_not_back": failed, "rounds_with_a_rule_not_back": sum(not (r["race_label"] and r["race_defect"])
                                                                             for r in rounds),
               "messages": sorted({v for r in rounds for k, v in r.items() if k.endswith("_status")}),
               "rounds": rounds}
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / "build" / "restart_race.json").write_text(json.dumps(summary, indent=1))
    print(f"kuiperd lost a rule at restore in {summary['rounds_with_a_rule_lost_at_restore']} of {len(rounds)} "
          f"restarts (per rule: {lost}); the plugin restarted {revived}; still stopped after 30 s: "
          f"{summary['rounds_with_a_rule_not_back']} restarts (per rule: {failed}); messages: {summary['messages']}")


if __name__ == "__main__":
    main()
