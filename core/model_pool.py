"""Models loaded by name for one function, swapped without a dropped frame.

A name (core/model_names.py) loads on first use, in the background, and stays loaded up to
`models.max_loaded` and `models.max_memory_mb` (the least recently used unloaded first). When its
files change (an upload again, a copy in place), the new version loads in the background once the files have been still
for `models.settle_seconds`, while the version loaded before keeps answering; the next call after
the load gets the new one. A version that fails to load is logged and the old one keeps serving.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import ModelFailed, ModelUnavailable, first_line
from core.memory import rss_mb
from core.model_names import ModelFiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """A loaded version of a named model."""

    name: str
    version: str
    model: Any
    stats: tuple
    loaded_at: float  # time.time()
    memory_mb: float = 0.0  # what the process's resident memory grew by while it loaded


class _Entry:
    def __init__(self):
        self.loaded: Loaded | None = None
        self.loading = False
        self.done = threading.Event()
        self.failed: tuple | None = None  # the stats of a version that failed to load
        self.error: str | None = None


class NamedModels:
    """One function's models by name. Thread-safe: the calls of every worker share it."""

    def __init__(self, what: str, build: Callable[[ModelFiles], Any], max_loaded: int, settle_seconds: float,
                 wait_seconds: float, loading: threading.Lock | None = None, max_memory_mb: float = 0):
        """
        Args:
            what: the function's name, for messages.
            build: ModelFiles -> a loaded model (runs in a background thread).
            max_loaded: names kept loaded at most; the least recently used goes first.
            settle_seconds: how long a changed file must stay unchanged before it is read.
            wait_seconds: the most a call waits for a first load before "still loading".
            loading: a lock every model load takes (one load at a time per process).
            max_memory_mb: the memory the loaded names may take together (0: no bound), each as measured
                while it loaded; beyond, the least recently used go first. The newest always stays.
        """
        self.what, self.build, self.max_memory_mb = what, build, max_memory_mb
        self.max_loaded, self.settle_seconds, self.wait_seconds = max_loaded, settle_seconds, wait_seconds
        self.loading = loading or threading.Lock()
        self.lock = threading.Lock()
        self.entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def get(self, files: ModelFiles) -> Loaded:
        """The newest loaded version of the named model; starts loading a new one when its files changed.

        Raises:
            ModelUnavailable: nothing of this name is loaded yet (still loading, being written, or failed), in one line.
        """
        stats = files.stats()
        with self.lock:
            entry = self.entries.get(files.name)
            if entry is None:
                entry = self.entries[files.name] = _Entry()
            self.entries.move_to_end(files.name)
            loaded = entry.loaded
            current = loaded is not None and loaded.stats == stats
            if not current and not entry.loading and entry.failed != stats \
                    and ModelFiles.settled(stats, self.settle_seconds):
                entry.loading = True
                entry.done.clear()
                threading.Thread(target=self._load, args=(files, stats, entry), daemon=True,
                                 name=f"load-{self.what}-{files.name}").start()
            loading = entry.loading
        if loaded is not None:
            return loaded  # the version before keeps answering until the new one is loaded
        if loading:
            entry.done.wait(self.wait_seconds)
        with self.lock:
            if entry.loaded is not None:
                return entry.loaded
            loading = entry.loading
        if loading:
            raise ModelUnavailable(f"{self.what}: model {files.name} is still loading; the next frames will be served")
        if entry.error and entry.failed == stats:
            raise ModelFailed(entry.error)
        raise ModelUnavailable(f"{self.what}: model {files.name} is being written (its files changed within "
                               f"{self.settle_seconds:g} s); the next frames will be served")

    def _load(self, files: ModelFiles, stats: tuple, entry: _Entry) -> None:
        started = time.monotonic()
        try:
            with self.loading:  # one load at a time, so the growth is this model's (and frames' meanwhile)
                before = rss_mb()
                model = self.build(files)
                grown = rss_mb() - before
            # Memory an unloaded model left to the allocator is reused without growth: a model counts at
            # least its files' size (they are read into memory).
            grown = max(grown, sum(size or 0 for _, size, _ in stats) / 2**20)
            loaded = Loaded(files.name, ModelFiles.version_of(stats), model, stats, time.time(), round(grown, 1))
            with self.lock:
                swapped = entry.loaded is not None
                entry.loaded, entry.failed, entry.error = loaded, None, None
                self._evict(keep=files.name)
            log.info("%s: model %s version %s %s in %.1f s", self.what, files.name, loaded.version,
                     "swapped in" if swapped else "loaded", time.monotonic() - started)
        except Exception as e:  # a bad upload must not cost the version that serves
            error = f"{self.what}: model {files.name} could not be loaded: {first_line(e)}"
            with self.lock:
                entry.failed, entry.error = stats, error
            log.error(error + ("; the version loaded before keeps serving" if entry.loaded else ""))
        finally:
            with self.lock:
                entry.loading = False
            entry.done.set()

    def _evict(self, keep: str) -> None:
        """Unloads the least recently used names beyond max_loaded or max_memory_mb (caller holds the lock)."""
        others = [name for name, entry in self.entries.items() if entry.loaded is not None and name != keep]
        for name in others[:max(0, len(others) + 1 - self.max_loaded)]:  # `keep` counts as one of max_loaded
            log.info("%s: model %s unloaded (models.max_loaded %d)", self.what, name, self.max_loaded)
            del self.entries[name]
            others.remove(name)
        if not self.max_memory_mb:
            return
        total = sum(entry.loaded.memory_mb for entry in self.entries.values() if entry.loaded is not None)
        for name in others:  # least recently used first
            if total <= self.max_memory_mb:
                break
            total -= self.entries[name].loaded.memory_mb
            log.info("%s: model %s unloaded (models.max_memory_mb %g)", self.what, name, self.max_memory_mb)
            del self.entries[name]

    def listing(self) -> list[dict]:
        """What is loaded: name, version, load time (ISO), most recently used last."""
        with self.lock:
            return [{"name": e.loaded.name, "version": e.loaded.version,
                     "loaded_at": iso_time(e.loaded.loaded_at),
                     "memory_mb": e.loaded.memory_mb}
                    for e in self.entries.values() if e.loaded is not None]


def iso_time(seconds: float) -> str:
    """A time.time() as ISO 8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
