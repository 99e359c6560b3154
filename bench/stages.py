"""`make bench`: the CPU time per frame of each stage of a call, per function and transport.

    .venv/bin/python -m bench.stages [--frames N]

Like Triton's perf_analyzer breakdown, so the next bottleneck shows without a profiler. On
distinct 1080p JPEG frames (the plugin answers a repeat of its last call from memory), each stage
is the real function the plugin calls, in the order it calls them (core/serving.py serve_one,
core/image_input.decode_image, the model's own method, the SDK's reply): base64 (image_bytes),
header checks (image_header), decode (cv2.imdecode at the reduced scale decode_image picks),
resize (cv2.resize as the model does), inference (the runner / the infer request), post-processing
(the label sort / inference.regions), picture encoding (inference.side_by_side_jpeg) and JSON
(json.dumps of the reply around core.results.answer). CPU time is time.process_time around each
stage (every thread of this process: OpenVINO's too), median over the frames; models at 1 thread.

Transports: nng is the unpacked build/defect.zip driven over nng as kuiperd drives it (at 1 thread,
through a DEFECT_CONFIG overlay): the CPU of the caller, the supervisor and the worker over N calls,
per frame, minus the in-process call's. kuiperd is reused from build/throughput.json (bench.throughput's
per-frame rule, one rule: kuiperd's own CPU per frame), when that bench ran for the function.
Writes build/stages.json and build/stages.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile

import cv2
import numpy as np
import pynng

import inference
from bench.report import BUILD, write_report
from bench.throughput import cpu_seconds, distinct_frames
from core.catalog import INFERENCE, LABEL_IMAGE
from core.image_input import _reduced_flag, image_bytes, image_header
from core.results import Inspection, Label, answer
from core.settings import load_settings
from label_func import ModelFunction
from tests.support.nng_host import PluginHost
from tests.support.stats import median, percentile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUNCTIONS = ("labelImage", "inference")
STAGES = ("base64", "header checks", "decode", "resize", "inference", "post-processing", "picture encoding",
          "JSON")
TRANSPORTS = ("nng", "kuiperd")
THREADS_1 = {"label": {"threads": 1}, "defect": {"threads": 1}}


class Clock:
    """CPU seconds of each stage of one frame, in the order they run."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.last = time.process_time()

    def lap(self, stage: str) -> None:
        now = time.process_time()
        self.spent[stage] = self.spent.get(stage, 0.0) + now - self.last
        self.last = now


def decoded(clock: Clock, b64: str, model, limits: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """decode_image's steps, each timed: the text to bytes, the header walk, the reduced decode."""
    data = image_bytes(b64, limits["max_bytes"])
    clock.lap("base64")
    fmt, width, height = image_header(data)
    clock.lap("header checks")
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _reduced_flag(fmt, width, height, model.decode_size))
    clock.lap("decode")
    return pixels, (width, height)


def label_stages(model, b64: str, limits: dict) -> dict[str, float]:
    """labelImage's stages for one frame: ImageLabeler.label and .scores split at their steps."""
    clock = Clock()
    bgr, _ = decoded(clock, b64, model, limits)
    runner = model.runner
    tensor = cv2.cvtColor(cv2.resize(bgr, model.size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)[np.newaxis]
    if runner.input_is_float:
        tensor = (tensor.astype(np.float32) - 127.5) / 127.5
    clock.lap("resize")
    raw = runner.run(tensor)
    clock.lap("inference")
    scores = (raw.astype(np.float32) - runner.output_zero) * runner.output_scale if runner.output_scale \
        else raw.astype(np.float32)
    k = min(model.top_k, len(model.labels))
    best = np.argsort(-scores, kind="stable")[:k]
    labels = [Label(confidence=round(float(scores[i]), 4), label=f"{i}:{model.labels[i]}") for i in best]
    clock.lap("post-processing")
    json.dumps({"state": True, "result": answer(labels)})  # the SDK's encode_reply
    clock.lap("JSON")
    return clock.spent


def inference_stages(model, b64: str, limits: dict) -> dict[str, float]:
    """inference's stages for one frame: DefectSegmenter.inspect split at its steps."""
    clock = Clock()
    bgr, (width, height) = decoded(clock, b64, model, limits)
    started = time.perf_counter()
    shrink = max(bgr.shape[1] / model.width, bgr.shape[0] / model.height)
    model_input = cv2.resize(bgr, model.size, interpolation=cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR)
    clock.lap("resize")
    mask, fields = model.predict(model_input, None)
    elapsed_ms = (time.perf_counter() - started) * 1000
    clock.lap("inference")
    defects = inference.regions(mask, width / mask.shape[1], height / mask.shape[0], model.min_area)
    clock.lap("post-processing")
    picture = inference.side_by_side_jpeg(model_input, mask, model.jpeg_quality)
    clock.lap("picture encoding")
    result = Inspection(inference_time=round(elapsed_ms, 2), defect=len(defects), defects=defects,
                        width=width, height=height, base64=picture, **fields)
    json.dumps({"state": True, "result": answer(result)})
    clock.lap("JSON")
    return clock.spent


def whole_call_cpu(function: ModelFunction, frames: list[str]) -> float:
    """Mean CPU seconds of the plugin's own entry per frame, with its reply's JSON, in this process."""
    started = time.process_time()
    for b64 in frames:
        json.dumps({"state": True, "result": function.exec([b64], None)})
    return (time.process_time() - started) / len(frames)


def nng_call_cpu(zip_path: str, frames: dict[str, list[str]]) -> dict[str, float]:
    """Mean CPU seconds per frame of a whole call over nng: this caller, the supervisor and its worker."""
    with tempfile.TemporaryDirectory(prefix="defect_stages_") as tmp:
        plugin_dir = os.path.join(tmp, "defect")
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(plugin_dir)
        overlay = os.path.join(tmp, "threads.json")
        with open(overlay, "w") as f:
            json.dump(THREADS_1, f)
        try:
            host = PluginHost(plugin_dir, python=sys.executable, env={**os.environ, "DEFECT_CONFIG": overlay})
        except pynng.AddressInUse:
            sys.exit("the plugin's nng addresses (/tmp/plugin_defect.ipc) are taken: run the bench alone "
                     "(or under tools/with_private_tmp.sh)")
        try:
            host.wait_until_loaded(*FUNCTIONS)
            out = {}
            for symbol, calls in frames.items():
                reply = host.exec(symbol, calls[-1])  # warm-up; the timed calls all differ from it
                if not reply["state"]:
                    raise RuntimeError(f"{symbol} failed over nng: {reply['result']}")
                pids = [host.process.pid, host.worker_pid()]
                cpu0, mine0 = cpu_seconds(pids), time.process_time()
                for b64 in calls[:-1]:
                    host.exec(symbol, b64)
                out[symbol] = (cpu_seconds(pids) - cpu0 + time.process_time() - mine0) / (len(calls) - 1)
            return out
        finally:
            host.close()


def kuiperd_cpu_ms() -> dict[str, float]:
    """kuiperd's CPU ms per frame of the per-frame rule, from bench.throughput's last run (if any)."""
    path = os.path.join(BUILD, "throughput.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = json.load(f).get("rows", {})
    return {fn: row["kuiperd_cpu_ms_per_frame"] for fn in FUNCTIONS
            if (row := rows.get(fn, {}).get("per-frame rule, 1 rule", {})).get("kuiperd_cpu_ms_per_frame") is not None}


def measure(frames_per_function: int, fixtures: str, zip_path: str) -> dict:
    """{function: {"stages": {stage: {median_ms, p95_ms}}, "transports": {name: ms}, "in_process_ms": ...}}."""
    settings = load_settings()
    settings = {**settings, **{section: {**settings[section], **keys} for section, keys in THREADS_1.items()}}
    limits = settings["input"]
    result = {}
    frames = {fn: distinct_frames(fn, frames_per_function + 1, fixtures) for fn in FUNCTIONS}
    for spec, stages in ((LABEL_IMAGE, label_stages), (INFERENCE, inference_stages)):
        model = spec.build(settings)
        stages(model, frames[spec.name][-1], limits)  # warm-up
        samples: dict[str, list[float]] = {}
        for b64 in frames[spec.name][:-1]:
            for stage, seconds in stages(model, b64, limits).items():
                samples.setdefault(stage, []).append(seconds * 1000)
        function = ModelFunction(spec, settings)
        function.start_loading()
        function.ready_model()
        function.exec([frames[spec.name][-1]], None)
        result[spec.name] = {
            "stages": {stage: {"median_ms": round(median(ms), 2), "p95_ms": round(percentile(ms, 95), 2)}
                       for stage, ms in samples.items()},
            "in_process_ms": round(whole_call_cpu(function, frames[spec.name][:-1]) * 1000, 2),
            "transports": {}, "frames": frames_per_function}
    if os.path.exists(zip_path):
        for fn, seconds in nng_call_cpu(zip_path, frames).items():
            result[fn]["nng_call_ms"] = round(seconds * 1000, 2)
            result[fn]["transports"]["nng"] = round(seconds * 1000 - result[fn]["in_process_ms"], 2)
    for fn, ms in kuiperd_cpu_ms().items():
        result[fn]["transports"]["kuiperd"] = ms
    return result


def stages_table(result: dict) -> str:
    """The markdown table: one row per stage and transport, CPU ms per frame by function, and the share
    of each function's total (its stages and transports)."""
    rows = [(stage, {fn: result.get(fn, {}).get("stages", {}).get(stage, {}).get("median_ms") for fn in FUNCTIONS})
            for stage in STAGES]
    rows += [(transport, {fn: result.get(fn, {}).get("transports", {}).get(transport) for fn in FUNCTIONS})
             for transport in TRANSPORTS]
    totals = {fn: sum(ms[fn] for _, ms in rows if ms[fn] is not None) for fn in FUNCTIONS}

    def share(value, fn):
        return f"{100 * value / totals[fn]:.0f} %" if value is not None and totals[fn] else "-"

    def cell(value):
        return "-" if value is None else f"{value:.2f}"

    lines = ["| stage | " + " | ".join(f"{fn} ms CPU" for fn in FUNCTIONS) + " | share of the total ("
             + " / ".join(FUNCTIONS) + ") |", "| --- | " + " | ".join("---:" for _ in FUNCTIONS) + " | ---: |"]
    for stage, ms in rows:
        lines.append(f"| {stage} | " + " | ".join(cell(ms[fn]) for fn in FUNCTIONS) + " | "
                     + " / ".join(share(ms[fn], fn) for fn in FUNCTIONS) + " |")
    lines.append("| total | " + " | ".join(cell(totals[fn]) for fn in FUNCTIONS) + " | 100 % |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30, help="distinct 1080p frames per function")
    parser.add_argument("--fixtures", default=os.environ.get("DEFECT_FIXTURES",
                                                             os.path.join(REPO, "..", "shared", "fixtures")))
    parser.add_argument("--zip", default=os.path.join(BUILD, "defect.zip"), help="the plugin for the nng row")
    args = parser.parse_args()
    result = measure(args.frames, args.fixtures, args.zip)
    n = args.frames
    notes = (f"CPU ms per frame (time.process_time, median of {n} distinct 1080p JPEGs, models at 1 thread). "
             "nng: a whole call over nng (caller + supervisor + worker CPU, mean) minus the in-process call. "
             "kuiperd: kuiperd's own CPU per frame in bench.throughput's per-frame rule (- where it did not run).")
    write_report("stages", result, f"## CPU time per frame by stage\n\n{notes}\n\n{stages_table(result)}")


if __name__ == "__main__":
    main()
