"""`make bench`: what models by name cost (issue 24), in process on the real models.

    .venv/bin/python -m bench.named_models [--quick]

- The name lookup per call: `inference(image)` against `inference(image, {"model": "partA"})`, where partA
  is the configured model's own files in an upload folder, timed alternately on distinct frames (the
  lookup stats the model's files and finds the loaded version; the model run is the same).
- What a region and the pictures cost: `inference` on the whole frame (the side-by-side picture) against a
  region of half the frame, the overlay picture and no picture, alternated on distinct frames.
- Load time and resident memory per loaded model by name: the default segmenter, the anomalib export and
  the MobileNet classifier, each loaded as a name in a fresh pool, RSS read before and after, beside the
  share the pool counts toward models.max_memory_mb.
Writes build/named-models.json and build/named-models.md.
"""
import argparse
import os
import sys
import tempfile
import time

from bench.report import write_report
from bench.run import table
from bench.throughput import rss_mb
from bench.timing import timed_together
from core.catalog import INFERENCE, LABEL_IMAGE
from core.settings import load_settings
from label_func import ModelFunction
from tests.support.scenarios import surface_b64
from tests.support.uploads import upload_folder


def loaded_function(spec, settings):
    function = ModelFunction(spec, settings)
    function.start_loading()
    function.loaded.wait(120)
    return function


def first_answer(function, args):
    """exec until a model by name is loaded (its first call starts the load); the seconds that took."""
    started = time.perf_counter()
    while True:
        try:
            function.exec(args, None)
            return time.perf_counter() - started
        except Exception as e:  # "still loading"; anything else is a failure of the bench
            if "still loading" not in str(e):
                raise


def measure(quick: bool) -> dict:
    n, warmup = (20, 3) if quick else (200, 10)
    with tempfile.TemporaryDirectory(prefix="defect-named-") as root:
        settings = load_settings()
        settings = {**settings, "defect": {**settings["defect"], "threads": 1},
                    "label": {**settings["label"], "threads": 1},
                    "models": {**settings["models"], "uploads": upload_folder(os.path.join(root, "uploads"))},
                    "tuning": {"record": None}}
        inference = loaded_function(INFERENCE, settings)
        frames = [surface_b64(i % 4, seed=4000 + i, size=(640, 480)) for i in range(4 * (n + warmup))]
        first_answer(inference, [frames[0], {"model": "partA"}])
        plain, named = iter(frames[0::2]), iter(frames[1::2])
        lookup = timed_together({"configured model": lambda: inference.exec([next(plain)], None),
                                 "same model by name": lambda: inference.exec([next(named), {"model": "partA"}],
                                                                               None)}, n, warmup)
        streams = [iter(frames[i::4]) for i in range(4)]
        options = timed_together({
            "whole frame, side-by-side picture": lambda: inference.exec([next(streams[0])], None),
            "roi: the left half": lambda: inference.exec([next(streams[1]), {"roi": [0, 0, 0.5, 1]}], None),
            "overlay picture": lambda: inference.exec([next(streams[2]), {"picture": "overlay"}], None),
            "no picture": lambda: inference.exec([next(streams[3]), {"picture": "none"}], None)}, n, warmup)
        loads = {}
        for spec, name, args in ((INFERENCE, "partA", [frames[0]]), (INFERENCE, "partB", [frames[0]]),
                                 (LABEL_IMAGE, "cls", [frames[0]])):
            function = loaded_function(spec, settings)
            before = rss_mb(os.getpid())
            seconds = first_answer(function, [*args, {"model": name}])
            [share] = [m["memory_mb"] for m in function.named.listing() if m["name"] == name]
            loads[f"{spec.name}: {name}"] = {"first_answer_s": round(seconds, 2),
                                             "rss_growth_mb": round(rss_mb(os.getpid()) - before, 1),
                                             "pool_share_mb": share}
    return {"date": time.strftime("%Y-%m-%d"), "calls": n, "lookup": lookup, "options": options, "loads": loads}


def report(result: dict, markdown: bool = True) -> str:
    lookup = result["lookup"]
    plain, named = lookup["configured model"]["median_ms"], lookup["same model by name"]["median_ms"]
    whole = result["options"]["whole frame, side-by-side picture"]["median_ms"]
    lines = [f"{result['calls']} calls each, alternated, distinct 640x480 JPEG surfaces, 1 thread; ms.", "",
             table(["inference call", "median", "p95"],
                   [[k, v["median_ms"], v["p95_ms"]] for k, v in lookup.items()], markdown), "",
             f"Name lookup: {round(named - plain, 2)} ms a call ({round(named / plain, 3)}x).", "",
             table(["inference call (ms)", "median", "p95", "median / whole frame"],
                   [[k, v["median_ms"], v["p95_ms"], round(v["median_ms"] / whole, 3)]
                    for k, v in result["options"].items()], markdown), "",
             table(["model by name", "first call answered after s (load included)", "RSS growth MB",
                    "pool's share MB (models.max_memory_mb)"],
                   [[k, v["first_answer_s"], v["rss_growth_mb"], v["pool_share_mb"]]
                    for k, v in result["loads"].items()], markdown)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run; numbers not for quoting")
    args = parser.parse_args()
    result = measure(args.quick)
    write_report("named-models", result, report(result))
    print(report(result, markdown=False), file=sys.stderr)


if __name__ == "__main__":
    main()
