"""Threads that fit the box: a model built at 1 thread and at every core, timed, the faster kept.

A constant tuned on one machine is wrong on the next: MobileNet v2 takes about
half the time at 2 threads as at 1 on a 2-core box, while a small memory-bound
model may gain nothing. So `threads: 0` (the default) measures on the box the
plugin runs on, once, while the model loads.
"""
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
Model = TypeVar("Model")
WARMUP_CALLS = 2
TIMED_ROUNDS = 8
# Both models load at once in their own threads; measured at the same time, each would time the
# other's probes as well and the all-cores candidate would lose unfairly. One at a time.
MEASURING = threading.Lock()


def usable_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fastest_threads(build: Callable[[int], Model], probe: Callable[[Model], object], what: str) -> Model:
    """build(threads) -> model; probe(model) runs one representative call. Returns the faster model.

    Both candidates are timed in alternating rounds, so a busy neighbour slows
    both alike rather than whichever ran during its burst.
    """
    cores = usable_cores()
    if cores == 1:
        log.info("%s: 1 thread (1 core available)", what)
        return build(1)
    with MEASURING:
        return _faster(build, probe, what, cores)


def _faster(build: Callable[[int], Model], probe: Callable[[Model], object], what: str, cores: int) -> Model:
    candidates = {threads: build(threads) for threads in (1, cores)}
    for model in candidates.values():
        for _ in range(WARMUP_CALLS):
            probe(model)
    samples: dict[int, list[float]] = {threads: [] for threads in candidates}
    for _ in range(TIMED_ROUNDS):
        for threads, model in candidates.items():
            started = time.perf_counter()
            probe(model)
            samples[threads].append(time.perf_counter() - started)
    medians = {threads: statistics.median(s) * 1000 for threads, s in samples.items()}
    best = min(medians, key=medians.get)
    log.info("%s: %d thread%s, measured at load (%s); set threads in config to override", what, best,
             "" if best == 1 else "s",
             ", ".join(f"{t} thread{'' if t == 1 else 's'}: {ms:.1f} ms a call" for t, ms in medians.items()))
    return candidates[best]
