"""`make bench`, part 3: the model service (service/service.py) against the direct call.

    .venv/bin/python -m bench.service_bench [--requests N]

Distinct 1080p JPEGs (the fixtures' cat_1080p.jpg shifted a pixel per frame) go to each
function at concurrency 1, 4 and 8: in this process through ModelHost.call (the direct
call, one single-threaded model copy per core), over HTTP (raw image/jpeg bodies, one
keep-alive connection per client thread) and over gRPC (one channel, unary calls) to a real
service process on 127.0.0.1. Per row: requests/s, p50/p95 latency per request, the
concurrency-4 rate over the concurrency-1 rate (target: 1.6x on 2 cores) and the CPU time per
request of the serving process (the direct rows: this process) and the cores it kept busy
(its CPU time over the wall time). Each figure: the median of 3 rounds through the levels. The clients run on
the same box as the service, so they take CPU from it. Writes build/service-bench.json and .md.
"""
import argparse
import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from bench.report import write_report
from core.catalog import BY_NAME
from core.model_host import ModelHost
from core.settings import load_settings
from core.tuning import usable_cores
from tests.support.paths import fixture_path
from tests.support.service_process import HOST, running_service
from tests.support.stats import median, percentile

# 8 at most: on 2 cores the gRPC side holds 8 unary calls at once (service/grpc_api.py, 4 per model
# copy) and refuses more with RESOURCE_EXHAUSTED, which is its answer to overload, not a rate.
CONCURRENCY = (1, 4, 8)
TARGET_C4_OVER_C1 = 1.6


def distinct_jpegs(count: int) -> list[bytes]:
    """`count` different 1080p JPEGs: the cat rolled one pixel further per frame."""
    cat = cv2.imread(fixture_path("images", "cat_1080p.jpg"))
    return [cv2.imencode(".jpg", np.roll(cat, i, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            for i in range(count)]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(call: Callable[[bytes], None], frames: list[bytes], concurrency: int, server_pid: int) -> dict:
    """Every frame once, `concurrency` at a time; requests/s, latency percentiles and the CPU time
    per request of the serving process (on a loaded box a steadier figure than the rate)."""
    latencies = []
    lock = threading.Lock()

    def one(frame: bytes) -> None:
        started = time.perf_counter()
        call(frame)
        with lock:
            latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, frames[:concurrency]))  # warm: connections, threads, each model copy
        started, cpu = time.perf_counter(), cpu_seconds(server_pid)
        latencies.clear()
        list(pool.map(one, frames))
        wall, cpu = time.perf_counter() - started, cpu_seconds(server_pid) - cpu
    return {"requests_per_s": len(frames) / wall, "p50_ms": median(latencies) * 1000,
            "p95_ms": percentile(latencies, 95) * 1000, "server_cpu_ms": cpu / len(frames) * 1000,
            "server_cores": cpu / wall}


def direct_caller(host: ModelHost, name: str) -> Callable[[bytes], None]:
    def call(frame: bytes) -> None:
        host.call(name, frame)
    return call


def http_caller(port: int, name: str) -> Callable[[bytes], None]:
    # http.client, not requests: the clients share the box with the service, and the lighter
    # client leaves it more CPU (as gRPC's C client does).
    connections = threading.local()  # one keep-alive connection per client thread
    path = f"/analyze/{name}"

    def call(frame: bytes) -> None:
        if not hasattr(connections, "connection"):
            connections.connection = http.client.HTTPConnection(HOST, port, timeout=60)
        connections.connection.request("POST", path, frame, {"Content-Type": "image/jpeg"})
        response = connections.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
    return call


def grpc_caller(port: int, name: str) -> Callable[[bytes], None]:
    import grpc

    from service import defect_pb2, defect_pb2_grpc

    # The cap as the service's own (input.max_bytes in base64 and then some): a 1080p JPEG is far under.
    channel = grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    stub = defect_pb2_grpc.DefectStub(channel)
    rpc, request = {"labelImage": (stub.LabelImage, defect_pb2.LabelImageRequest),
                    "inference": (stub.Inference, defect_pb2.InferenceRequest)}[name]

    def call(frame: bytes) -> None:
        rpc(request(image=frame), timeout=30)
    return call


def medians(runs: list[dict]) -> dict:
    return {key: round(median([run[key] for run in runs]), 2 if key == "server_cores" else 1)
            for key in runs[0]}


def run(requests_per_level: int, rounds: int, only: list[str] | None = None) -> dict:
    settings = load_settings()
    frames = distinct_jpegs(requests_per_level)
    host = ModelHost(settings)
    host.start_loading()
    if not (host.wait_loaded(300) and host.ready()):
        raise SystemExit(f"bench.service_bench: the models did not load: {host.status()}")
    rows = []
    with running_service(grpc=True) as service:
        transports = {  # (caller, the process that serves: this one for the direct call)
            "direct": (lambda name: direct_caller(host, name), os.getpid()),
            "http": (lambda name: http_caller(service.http_port, name), service.proc.pid),
            "grpc": (lambda name: grpc_caller(service.grpc_port, name), service.proc.pid),
        }
        for transport, (caller, server_pid) in transports.items():
            if only and transport not in only:
                continue
            for name in BY_NAME:
                call = caller(name)
                # Rounds through every level in turn, so the other load on a shared box falls
                # on each level alike; each figure is the median of its rounds.
                runs = {concurrency: [] for concurrency in CONCURRENCY}
                for _ in range(rounds):
                    for concurrency in CONCURRENCY:
                        runs[concurrency].append(measure(call, frames, concurrency, server_pid))
                for concurrency in CONCURRENCY:
                    rows.append({"transport": transport, "function": name, "concurrency": concurrency,
                                 "requests": requests_per_level, "rounds": rounds, **medians(runs[concurrency])})
                    print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        base = next(r for r in rows if (r["transport"], r["function"], r["concurrency"]) ==
                    (row["transport"], row["function"], 1))
        row["over_c1"] = round(row["requests_per_s"] / base["requests_per_s"], 2)
    return {"date": time.strftime("%Y-%m-%d"), "cores": usable_cores(), "rows": rows,
            "target_c4_over_c1": TARGET_C4_OVER_C1}


def report(result: dict) -> str:
    lines = [f"Service bench, {result['date']}, {result['cores']} cores "
             "(distinct 1080p JPEGs; clients on the same box)",
             "", "| transport | function | concurrency | requests/s | p50 ms | p95 ms | over c1 "
                 "| server CPU ms/request | server cores busy |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        mark = ""
        if r["concurrency"] == 4:
            mark = " PASS" if r["over_c1"] >= result["target_c4_over_c1"] else " MISS"
        lines.append(f"| {r['transport']} | {r['function']} | {r['concurrency']} | {r['requests_per_s']} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['over_c1']}x{mark} | {r['server_cpu_ms']} | "
                     f"{r['server_cores']} |")
    lines.append(f"\nMedians of {result['rows'][0]['rounds']} rounds. Target: at concurrency 4, at least "
                 f"{result['target_c4_over_c1']}x the concurrency-1 rate.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96, help="requests per row, each a distinct frame")
    parser.add_argument("--rounds", type=int, default=3, help="rounds through the levels; medians are shown")
    parser.add_argument("--only", nargs="+", choices=("direct", "http", "grpc"), help="these transports only")
    args = parser.parse_args()
    result = run(args.requests, args.rounds, args.only)
    write_report("service-bench", result, report(result))


if __name__ == "__main__":
    main()
