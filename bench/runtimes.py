"""`make bench`, runtimes part: LiteRT against OpenVINO on the labelImage model, at 1 thread and every core.

    .venv/bin/python bench/runtimes.py [--frames 200]

What `label.runtime: auto` decides at load (label.labeler_from_settings), measured at length: the
same `.tflite` on each runtime and thread count, all four interleaved (each round runs every
candidate once, so a busy neighbour slows them alike), each call on the next of a set of distinct
frames (crops of the fixtures' 1080p cat, decoded at the size the plugin decodes to), timing what
the plugin times per frame: resize, colour conversion, the runtime, the top-k. Prints the median and
p95 per candidate and the LiteRT / OpenVINO ratio at each thread count (above 1: OpenVINO is the
faster). The box is shared: medians, never asserts. Writes build/runtimes.json.
"""
import argparse
import itertools
import json
import os
import sys

import cv2

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from label import RUNTIMES, ImageLabeler  # noqa: E402
from paths import fixture_path  # noqa: E402
from settings import load_settings  # noqa: E402
from thread_tuning import threads_said, usable_cores  # noqa: E402
from timing import timed_together  # noqa: E402

BUILD = os.path.join(REPO, "build")
DISTINCT_FRAMES = 32
WARMUP = 5


def distinct_frames(size: tuple[int, int], count: int) -> list:
    """`count` different BGR frames at `size` (width, height): crops sliding over the 1080p cat."""
    picture = cv2.imread(fixture_path("images", "cat_1080p.jpg"))
    height, width = picture.shape[:2]
    crop_w, crop_h = width * 3 // 4, height * 3 // 4
    frames = []
    for i in range(count):
        x, y = (width - crop_w) * i // max(1, count - 1), (height - crop_h) * (i % 5) // 4
        frames.append(cv2.resize(picture[y:y + crop_h, x:x + crop_w], size, interpolation=cv2.INTER_AREA))
    return frames


def measure(frames_timed: int) -> dict:
    conf = load_settings()["label"]
    cores = usable_cores()
    thread_counts = sorted({1, cores})
    labelers = {(runtime, n): ImageLabeler(conf["model"], conf["labels"], conf["top_k"], n, runtime=runtime)
                for n in thread_counts for runtime in RUNTIMES}
    frames = distinct_frames(next(iter(labelers.values())).decode_size, DISTINCT_FRAMES)
    calls = {}
    for key, labeler in labelers.items():
        next_frame = itertools.cycle(frames).__next__
        calls[f"{key[0]} at {threads_said(key[1])}"] = lambda labeler=labeler, next_frame=next_frame: \
            labeler.label(next_frame())
    stats = timed_together(calls, frames_timed, WARMUP)
    ratios = {threads_said(n): round(stats[f"litert at {threads_said(n)}"]["median_ms"]
                                     / stats[f"openvino at {threads_said(n)}"]["median_ms"], 2)
              for n in thread_counts}
    best = min(stats, key=lambda name: stats[name]["median_ms"])
    return {"model": os.path.basename(conf["model"]), "cores": cores, "per_frame": stats,
            "litert_over_openvino": ratios, "fastest": best}


def report(r: dict) -> str:
    lines = [f"labelImage model {r['model']} per frame (resize, runtime, top-k), {r['cores']} usable cores, "
             f"interleaved on distinct frames", "",
             "| runtime | median ms | p95 ms | frames |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {s['median_ms']} | {s['p95_ms']} | {s['n']} |" for name, s in r["per_frame"].items()]
    lines += [""] + [f"LiteRT / OpenVINO at {threads}: {ratio} (above 1: OpenVINO is the faster)"
                     for threads, ratio in r["litert_over_openvino"].items()]
    lines.append(f"fastest: {r['fastest']} (what label.runtime auto with threads 0 should keep on this box)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="timed calls per candidate (default 200)")
    args = parser.parse_args()
    r = measure(args.frames)
    print(report(r))
    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, "runtimes.json"), "w") as f:
        json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
