"""Median and p95 of repeated calls; the one timing helper of the bench."""
import time

from tests.support.stats import median, percentile


def stats(seconds: list[float]) -> dict:
    """Median and p95 (nearest rank, tests/support/stats.py) in ms of call times in seconds."""
    ms = [s * 1000 for s in seconds]
    return {"median_ms": round(median(ms), 2), "p95_ms": round(percentile(ms, 95), 2), "n": len(ms)}


def timed_together(fns, n, warmup):
    """{name: fn} -> {name: stats}. Each round calls every fn once, so a ratio of two
    medians compares samples taken side by side: on a shared machine a busy neighbour
    then slows both alike instead of whichever block it happened to overlap."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
    return {name: stats(s) for name, s in samples.items()}


def timed(fn, n, warmup):
    return timed_together({"fn": fn}, n, warmup)["fn"]


def two_spellings(b64):
    """The same image as plain base64 and as a data URI: consecutive calls that alternate them
    differ, so the plugin computes each (it answers a repeat of its last call from memory),
    at the same decode cost."""
    return [b64, "data:image/jpeg;base64," + b64]
