"""`make bench`, camera part: clip to labels through kuiperd, frames in, results out, latency.

    .venv/bin/python -m bench.camera_bench [--seconds 30]

A live HTTP MJPEG camera (ffmpeg serving tools/video_clip.py's clip at 10 fps, in real time, with
sensor noise so no two frames are alike) feeds a real kuiperd; each path into kuiperd is one row,
read at 5 fps (one frame per 200 ms):
- the video source: eKuiper's own (kuiperd -tags full), `interval: 200` with wall-clock stamps.
  Latency: from the frame's event time (when the source took the JPEG from its ffmpeg,
  `event_time()` in the rule) to the result arriving at an MQTT subscriber on this box.
- the camera bridge (camera/camera.py, --fps 5) reading the same camera into mosquitto and a JSON
  stream (`--json-field image`). Latency: from the bridge reading the frame (the payload's `ts`) to
  the result arriving, so it includes the bridge's JPEG encoding and MQTT both ways.
Per row: frames into the rule (the source's records_in_total), results out, the rate of results,
and latency p50/p95. The box is shared: medians over one run, never asserts.
Writes build/camera-bench.json and build/camera-bench.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.stats import median, percentile
from tools import harness
from tools.camera_bridge_process import BridgeProcess
from tools.video_clip import http_mjpeg_server, make_clip

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

BUILD = REPO / "build"
INTERVAL_MS = 200  # 5 fps
WARMUP_RESULTS = 5  # the first results pay for ffmpeg's start and the models' first calls
QUERIES = {
    "labelImage": "SELECT event_time() AS t_in, labelImage(self)[0]->label AS label FROM {stream}",
    "labelImage + inference": ("SELECT event_time() AS t_in, labelImage(self)[0]->label AS label, "
                               "inference(self)->defect AS defect FROM {stream}"),
}


def run_rule(kuiperd: harness.Kuiperd, mqtt: harness.Mosquitto, stream: str, sql: str, seconds: float) -> dict:
    """Run `sql` over `stream` for `seconds` after warm-up; the row's numbers."""
    client = kuiperd.client
    rule = f"bench_{stream}"
    collector = harness.MqttCollector(mqtt.host, mqtt.port, f"bench/{rule}")
    wall_minus_monotonic = time.time() - time.monotonic()  # paho stamps arrivals with monotonic time
    try:
        client.create_rule(rule, sql.format(stream=stream), [kuiperd.mqtt_action(f"bench/{rule}", sendSingle=True)])
        client.wait_rule_running(rule)
        collector.wait_for(WARMUP_RESULTS, timeout=90)
        first = len(collector.messages)
        began = time.monotonic()
        records_in_before = source_records_in(client.rule_status(rule))
        time.sleep(seconds)
        records_in = source_records_in(client.rule_status(rule)) - records_in_before
        ended = time.monotonic()
        messages = collector.messages[first:]
    finally:
        collector.close()
        client.delete_rule(rule)
    in_window = [m for m in messages if m.timestamp < ended]
    latencies = [(m.timestamp + wall_minus_monotonic) * 1000 - json.loads(m.payload)["t_in"] for m in in_window]
    return {"frames_in": records_in, "results_out": len(in_window), "seconds": round(ended - began, 1),
            "results_per_s": round(len(in_window) / (ended - began), 2),
            "latency_p50_ms": round(median(latencies), 1) if latencies else None,
            "latency_p95_ms": round(percentile(latencies, 95), 1) if latencies else None}


def source_records_in(status: dict) -> int:
    return sum(v for k, v in status.items() if k.startswith("source_") and k.endswith("_records_in_total"))


def video_source_rows(kuiperd: harness.Kuiperd, mqtt: harness.Mosquitto, clip: Path, seconds: float) -> list[dict]:
    """eKuiper's video source reading the live HTTP camera at interval 200 ms."""
    client = kuiperd.client
    rows = []
    with http_mjpeg_server(clip) as camera:
        for name, sql in QUERIES.items():
            stream = f"benchcam{len(rows)}"
            client.request("PUT", f"/metadata/sources/video/confKeys/{stream}", {
                "url": camera.url, "interval": INTERVAL_MS, "inputArgs": {"use_wallclock_as_timestamps": "1"}})
            client.create_stream(f'CREATE STREAM {stream} () WITH (TYPE="video", CONF_KEY="{stream}", FORMAT="BINARY")')
            try:
                rows.append({"path": "video source (kuiperd -tags full)", "rule": name,
                             **run_rule(kuiperd, mqtt, stream, sql, seconds)})
            finally:
                client.delete_stream(stream)
            print(rows[-1], flush=True)
    return rows


def bridge_rows(kuiperd: harness.Kuiperd, mqtt: harness.Mosquitto, clip: Path, seconds: float) -> list[dict]:
    """The camera bridge at --fps 5 reading the live HTTP camera into a JSON stream: the same rules on
    `image`, with the bridge's `ts` (when it read the frame) as t_in."""
    client = kuiperd.client
    rows = []
    with http_mjpeg_server(clip) as camera:
        for name, sql in QUERIES.items():
            stream = f"benchbridge{len(rows)}"
            topic = f"bench/{stream}_frames"
            client.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{topic}", FORMAT="JSON")')
            bridge = BridgeProcess(camera.url, f"{mqtt.host}:{mqtt.port}", topic, "--fps", f"{1000 / INTERVAL_MS:g}",
                                   "--json-field", "image", log_path=clip.parent / f"{stream}.log")
            try:
                with bridge:
                    sql = sql.replace("event_time() AS t_in", "ts AS t_in").replace("(self)", "(image)")
                    rows.append({"path": "camera bridge (camera/camera.py) -> MQTT, JSON stream", "rule": name,
                                 **run_rule(kuiperd, mqtt, stream, sql, seconds)})
                    if bridge.stop() != 0:
                        raise RuntimeError(f"the camera bridge failed:\n{bridge.log()}")
            finally:
                client.delete_stream(stream)
            print(rows[-1], flush=True)
    return rows


# One function per path into kuiperd, each giving its rows.
PATHS: list[Callable[[harness.Kuiperd, harness.Mosquitto, Path, float], list[dict]]] = [video_source_rows,
                                                                                          bridge_rows]


def markdown(rows: list[dict]) -> str:
    lines = ["| path | rule | frames in | results out | results/s | latency p50 | latency p95 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['path']} | `{r['rule']}` | {r['frames_in']} | {r['results_out']} | {r['results_per_s']} "
                     f"| {r['latency_p50_ms']} ms | {r['latency_p95_ms']} ms |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per row (after warm-up)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="defect-bench-camera-") as work:
        work = Path(work)
        clip = work / "clip.mp4"
        make_clip(clip, noise=2.0)  # every frame differs, as a camera's do: none is answered from the last call
        mqtt = harness.Mosquitto(work / "mosquitto").start()
        kuiperd = None
        try:
            kuiperd = harness.Kuiperd(work / "kuiper", mqtt.url).start()
            kuiperd.client.install_portable_plugin("defect", (BUILD / "defect.zip").resolve().as_uri())
            harness.wait_until(lambda: kuiperd.client.portable_plugin_status("defect")["status"] == "running", 60,
                               what="defect plugin running")
            rows = [row for path in PATHS for row in path(kuiperd, mqtt, clip, args.seconds)]
        finally:
            if kuiperd:
                kuiperd.stop()
            mqtt.stop()
    table = markdown(rows)
    print(table)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "camera-bench.json").write_text(json.dumps({"interval_ms": INTERVAL_MS, "rows": rows}, indent=2))
    (BUILD / "camera-bench.md").write_text(table)


if __name__ == "__main__":
    main()
