"""Paced publishing, the sustainable rate and latency figures, shared by the load test
(tests/e2e/test_load.py) and the overload measurement (bench/overload.py); their percentiles are
tests.support.stats.percentile. No pytest here, like tools/harness.py.
"""
from __future__ import annotations

import time
from collections.abc import Callable


def rss_kb(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def burst_rate(publish: Callable[[int], None], answered: Callable[[], int], frames: int,
               timeout: float = 180) -> float:
    """Frames per second the rules get through when `frames` frames arrive back to back.

    publish(i) sends frame i (to every stream under test); answered() counts the frames
    every rule has answered so far (the minimum over the rules). With the queue never
    empty, this is the rate the box sustains right now."""
    base = answered()
    started = time.monotonic()
    for i in range(frames):
        publish(i)
    deadline = started + timeout
    while answered() - base < frames:
        if time.monotonic() > deadline:
            raise TimeoutError(f"burst of {frames} frames: {answered() - base} answered in {timeout}s")
        time.sleep(0.01)
    return frames / (time.monotonic() - started)


def paced(publish: Callable[[int], None], rate: float, seconds: float, first: int = 0,
          every_second: Callable[[float], None] | None = None) -> dict[int, float]:
    """Publish at `rate` frames per second for `seconds`; return {frame index: monotonic send time}.

    Frames are scheduled on a fixed clock (frame i at start + i / rate), so a slow publish
    is caught up rather than lowering the rate. every_second(elapsed) runs about once a second."""
    sent: dict[int, float] = {}
    started = time.monotonic()
    next_tick = started + 1
    i = 0
    while True:
        due = started + i / rate
        if due - started >= seconds:
            return sent
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        sent[first + i] = time.monotonic()
        publish(first + i)
        i += 1
        if every_second is not None and time.monotonic() >= next_tick:
            every_second(time.monotonic() - started)
            next_tick += 1
