"""`make bench`, part 4: the gRPC streaming calls against unary calls one at a time.

    .venv/bin/python -m bench.grpc_stream [--frames N] [--rounds R]

Distinct 1080p JPEGs (bench/service_bench.py's) go to a real service process (service/service.py on
127.0.0.1) per function: as unary calls one after another (what a simple client does), and as one
LabelImageStream / InferenceStream, which serves a stream's frames on every model copy at once and
answers them in order. Per row: frames/s, p50/p95 per-frame latency (request handed to gRPC to its
result back; the stream is fed as fast as gRPC takes frames, so its latency includes the wait behind
the frames before it, as for a recorded video, not a live camera slower than the service) and the
stream's rate over the one-at-a-time unary rate. Rounds alternate the two, so
the other load on a shared box falls on both; each figure is the median of its rounds.
Writes build/grpc-stream-bench.json and .md.
"""
import argparse
import json
import time

import grpc

from bench.report import write_report
from bench.service_bench import distinct_jpegs
from core.tuning import usable_cores
from service import defect_pb2_grpc
from service.grpc_messages import RPCS
from tests.support.service_process import HOST, running_service
from tests.support.stats import median, percentile


def summary(latencies: list[float], wall: float) -> dict:
    return {"frames_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(median(latencies) * 1000, 1),
            "p95_ms": round(percentile(latencies, 95) * 1000, 1)}


def unary_one_at_a_time(stub, rpc, frames: list[bytes]) -> dict:
    call, latencies = getattr(stub, rpc.unary), []
    started = time.perf_counter()
    for frame in frames:
        sent = time.perf_counter()
        call(rpc.request(image=frame), timeout=30)
        latencies.append(time.perf_counter() - sent)
    return summary(latencies, time.perf_counter() - started)


def one_stream(stub, rpc, frames: list[bytes]) -> dict:
    sent_at: dict[str, float] = {}

    def requests():
        for index, frame in enumerate(frames):
            sent_at[str(index)] = time.perf_counter()  # when gRPC takes it
            yield rpc.request(image=frame, id=str(index))

    latencies = []
    started = time.perf_counter()
    for result in getattr(stub, rpc.stream)(requests(), timeout=300):
        if result.error:
            raise RuntimeError(f"frame {result.id}: {result.error}")
        latencies.append(time.perf_counter() - sent_at.pop(result.id))
    return summary(latencies, time.perf_counter() - started)


def run(frame_count: int, rounds: int) -> dict:
    frames = distinct_jpegs(frame_count)
    rows = []
    with running_service(grpc=True) as service:
        channel = grpc.insecure_channel(f"{HOST}:{service.grpc_port}",
                                        options=[("grpc.max_send_message_length", 64 << 20)])
        stub = defect_pb2_grpc.DefectStub(channel)
        for rpc in RPCS.values():
            unary_one_at_a_time(stub, rpc, frames[:4])  # warm: the connection, each model copy
            runs = {"unary, one at a time": [], "one stream": []}
            for _ in range(rounds):
                runs["unary, one at a time"].append(unary_one_at_a_time(stub, rpc, frames))
                runs["one stream"].append(one_stream(stub, rpc, frames))
            for mode, results in runs.items():
                rows.append({"function": rpc.function, "mode": mode, "frames": frame_count, "rounds": rounds,
                             **{key: median([r[key] for r in results]) for key in results[0]}})
                print(json.dumps(rows[-1]), flush=True)
        channel.close()
    for row in rows:
        base = next(r for r in rows if r["function"] == row["function"] and r["mode"] == "unary, one at a time")
        row["over_unary"] = round(row["frames_per_s"] / base["frames_per_s"], 2)
    return {"date": time.strftime("%Y-%m-%d"), "cores": usable_cores(), "rows": rows}


def report(result: dict) -> str:
    lines = [f"gRPC streaming bench, {result['date']}, {result['cores']} cores (distinct 1080p JPEGs; "
             "client on the same box)", "",
             "| function | mode | frames/s | p50 ms | p95 ms | over unary one at a time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['function']} | {r['mode']} | {r['frames_per_s']} | {r['p50_ms']} | {r['p95_ms']} "
                     f"| {r['over_unary']}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="frames per run, each a distinct 1080p JPEG")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternating; medians reported")
    args = parser.parse_args()
    result = run(args.frames, args.rounds)
    write_report("grpc-stream-bench", result, report(result))


if __name__ == "__main__":
    main()
