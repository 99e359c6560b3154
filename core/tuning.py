"""Choices that fit the box: candidate builds of a model timed on a representative call, the fastest kept.

A constant tuned on one machine is wrong on the next: MobileNet v2 at 2 threads takes about half
the time of 1 thread on one 2-core box, while a memory-bound model gains nothing; LiteRT is the
faster runtime for the same `.tflite` on one CPU and OpenVINO on another. So what the config
leaves open (`threads: 0`, `label.runtime: auto`, `batch.serving: auto`) is measured on the box
the plugin runs on, while the model loads, and the outcome is recorded (`Record`): later loads on
the same box, model files and versions reuse it without measuring, so a restarted worker is
ready as fast as before and a busy box is not measured again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

log = logging.getLogger(__name__)
Model = TypeVar("Model")
WARMUP_CALLS = 2
TIMED_ROUNDS = 8
# Models load at once in their own threads; measured at the same time, each would time the
# other's probes as well and the busier candidate would lose unfairly. One at a time.
MEASURING = threading.Lock()
# The versions that decide which candidate is faster: a different runtime release measures again.
RUNTIME_PACKAGES = ("openvino", "ai-edge-litert", "opencv-python-headless", "numpy")


def usable_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_counts(threads: int) -> tuple[int, ...]:
    """The thread counts to measure for a `threads` setting: a number is kept, 0 gives 1 and every core."""
    if threads:
        return (threads,)
    return tuple(sorted({1, usable_cores()}))


def threads_name(threads: int) -> str:
    return f"{threads} thread{'' if threads == 1 else 's'}"


class Record:
    """Past measurements, one JSON file: {what: {"identity": ..., "choice": ..., "ms": {...}, "measured": ...}}.

    An entry is reused only when its identity (the box, the runtimes' versions, the model files and
    the candidates) is the same; anything else measures again. A file that cannot be read or
    written only costs a measurement: the plugin serves without it.
    """

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()

    def get(self, what: str, identity: str) -> dict | None:
        """The entry measured for `what` with this identity, or None."""
        entry = self._read().get(what)
        if isinstance(entry, dict) and entry.get("identity") == identity and isinstance(entry.get("ms"), dict):
            return entry
        return None

    def put(self, what: str, identity: str, choice: str, ms: dict[str, float]) -> None:
        """Stores the measurement (atomically: another process reads the old file or the new one)."""
        with self.lock:
            entries = self._read()
            entries[what] = {"identity": identity, "choice": choice, "ms": ms,
                             "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                folder = os.path.dirname(os.path.abspath(self.path))
                with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".measured-", delete=False) as f:
                    json.dump(entries, f, indent=1, sort_keys=True)
                os.replace(f.name, self.path)
            except OSError as e:
                log.warning("could not record the measurement in %s (%s); the next load measures again", self.path, e)
                with contextlib.suppress(OSError, UnboundLocalError):
                    os.unlink(f.name)

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                entries = json.load(f)
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}


def identity(files: list[str], candidates: list[str], settings: dict) -> str:
    """What a measurement depends on, as one string: box, cores, runtime versions, model files, candidates, settings."""
    versions = {}
    for package in RUNTIME_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    stats = []
    for path in files:
        try:
            st = os.stat(path)
            stats.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([os.path.abspath(path), None, None])
    described = {"cpu": cpu_model(), "machine": platform.machine(), "cores": usable_cores(), "versions": versions,
                 "files": stats, "candidates": candidates, "settings": settings}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def cpu_model() -> str:
    """The CPU's model name and its vector extensions (they decide which runtime is faster)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read(65536)
    except OSError:
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith(("flags", "Features"))), [])
    vector = sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "asimd", "sve", "neon")))
    return f"{name} [{' '.join(vector)}]"


def fastest(builds: dict[str, Callable[[], Model]], probe: Callable[[Model], Any], what: str,
            record: Record | None = None, identity_of: Callable[[], str] | None = None,
            override: str = "set it in the config") -> tuple[str, Model]:
    """The fastest of the candidate builds, and its name.

    Args:
        builds: candidate name -> a function that builds (and loads) that candidate.
        probe: one representative call on a built candidate, for timing.
        what: the name the log line starts with.
        record: where past measurements are kept; with `identity_of`, an entry with the same identity
            is reused and only its choice is built.
        identity_of: what the measurement depends on (`identity`), computed only when there is a choice.
        override: how an operator fixes the choice (said in the log line).

    Returns:
        (name, model) of the candidate with the lowest median call time, timed in alternating rounds
        so a busy neighbour slows every candidate alike; a single candidate is built without a measurement.
    """
    if len(builds) == 1:
        name, build = next(iter(builds.items()))
        return name, build()
    with MEASURING:
        key = identity_of() if record is not None and identity_of else None
        entry = record.get(what, key) if key else None
        if entry and entry.get("choice") in builds:
            log.info("%s: %s, as measured on this box on %s (%s); %s, or delete %s to measure again", what,
                     entry["choice"], entry.get("measured", "?"), figures(entry["ms"]), override, record.path)
            return entry["choice"], builds[entry["choice"]]()
        candidates = {name: build() for name, build in builds.items()}
        for model in candidates.values():
            for _ in range(WARMUP_CALLS):
                probe(model)
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(TIMED_ROUNDS):
            for name, model in candidates.items():
                started = time.perf_counter()
                probe(model)
                samples[name].append(time.perf_counter() - started)
        medians = {name: round(statistics.median(s) * 1000, 2) for name, s in samples.items()}
        best = min(medians, key=medians.get)
        log.info("%s: %s, measured at load (%s); %s", what, best, figures(medians), override)
        if key:
            record.put(what, key, best, medians)
        return best, candidates[best]


def figures(ms: dict[str, float]) -> str:
    return ", ".join(f"{name}: {value:.1f} ms" for name, value in ms.items())
