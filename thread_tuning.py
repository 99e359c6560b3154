"""Choices that fit the box: candidate models built, timed in alternating rounds, the fastest kept.

A constant tuned on one machine is wrong on the next: MobileNet v2 takes about
half the time at 2 threads as at 1 on a 2-core box, while a small memory-bound
model may gain nothing; and which runtime runs a `.tflite` faster (LiteRT or
OpenVINO) depends on the CPU. So `threads: 0` (the default) measures 1 thread
against every core on the box the plugin runs on, once, while the model loads
(`fastest_threads`), and `label.runtime: auto` measures both runtimes the same
way (`fastest`, called by label.py).
"""
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from errors import first_line

log = logging.getLogger(__name__)
Model = TypeVar("Model")
Key = TypeVar("Key", bound=Hashable)
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


@dataclass
class Measured(Generic[Key, Model]):
    """What `fastest` found. kept: the fastest candidate's key; model: that candidate (the only one
    still referenced); ms: each timed candidate's median milliseconds a call (empty when only one
    candidate loaded: nothing to compare); failed: each candidate that could not be built, its
    error as one line."""
    kept: Key
    model: Model
    ms: dict[Key, float]
    failed: dict[Key, str]


def fastest(builds: dict[Key, Callable[[], Model]], probe: Callable[[Model], object]) -> Measured[Key, Model]:
    """Builds every candidate, times probe(candidate) on each in alternating rounds, keeps the fastest.

    Args:
        builds: key -> a function that builds that candidate (in this order).
        probe: runs one representative call on a candidate.
    Returns:
        The fastest candidate; the others are dropped before returning, so their memory is freed.
        A candidate whose build raises is left out (said in `failed`); one candidate left is kept
        without timing.
    Raises:
        The first build error that is not an ImportError (a bad model file says more than a
        runtime this platform lacks), else the first one, when no candidate could be built.
    """
    candidates: dict[Key, Model] = {}
    failed: dict[Key, str] = {}
    errors: list[Exception] = []
    for key, build in builds.items():
        try:
            candidates[key] = build()
        except Exception as e:  # whatever a runtime raises: the other candidates may still load
            failed[key] = first_line(e)
            errors.append(e)
    if not candidates:
        raise next((e for e in errors if not isinstance(e, ImportError)), errors[0])
    if len(candidates) == 1:
        (kept, model), = candidates.items()
        return Measured(kept, model, {}, failed)
    with MEASURING:
        ms = _medians(candidates, probe)
    kept = min(ms, key=ms.get)
    model = candidates.pop(kept)
    candidates.clear()  # the slower candidates' last references: their runtimes free them now
    return Measured(kept, model, ms, failed)


def _medians(candidates: dict[Key, Model], probe: Callable[[Model], object]) -> dict[Key, float]:
    """Median milliseconds a probe call, per candidate. Alternating rounds: a busy neighbour
    slows every candidate alike rather than whichever ran during its burst."""
    for model in candidates.values():
        for _ in range(WARMUP_CALLS):
            probe(model)
    samples: dict[Key, list[float]] = {key: [] for key in candidates}
    for _ in range(TIMED_ROUNDS):
        for key, model in candidates.items():
            started = time.perf_counter()
            probe(model)
            samples[key].append(time.perf_counter() - started)
    return {key: statistics.median(s) * 1000 for key, s in samples.items()}


def thread_choices() -> tuple[int, ...]:
    """The thread counts `threads: 0` compares: 1 and every usable core (just 1 on one core)."""
    cores = usable_cores()
    return (1,) if cores == 1 else (1, cores)


def threads_said(threads: int) -> str:
    """'1 thread', '2 threads'."""
    return f"{threads} thread{'' if threads == 1 else 's'}"


def fastest_threads(build: Callable[[int], Model], probe: Callable[[Model], object], what: str) -> Model:
    """build(threads) -> model; probe(model) runs one representative call. Returns the faster model,
    of 1 thread and every core, and logs one line with both figures (`fastest`)."""
    choices = thread_choices()
    if len(choices) == 1:
        log.info("%s: 1 thread (1 core available)", what)
        return build(1)
    measured = fastest({threads: (lambda threads=threads: build(threads)) for threads in choices}, probe)
    figures = [f"{threads_said(t)}: {ms:.1f} ms a call" for t, ms in measured.ms.items()]
    figures += [f"{threads_said(t)} could not be built: {why}" for t, why in measured.failed.items()]
    log.info("%s: %s, measured at load (%s); set threads in config to override", what, threads_said(measured.kept),
             ", ".join(figures))
    return measured.model
