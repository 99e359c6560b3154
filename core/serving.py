"""A declared function's model, loaded in the background and served: per frame, or a window of frames.

Pure logic, no eKuiper: the plugin's Function classes (label_func.py, batch_func.py) and the model
service (core/model_host.py) are thin adapters over these classes, so every front door answers
the same, with the same one-line errors (InputError for bad input, ModelUnavailable while a model
loads or after it failed to).
"""
import collections
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from core.errors import InputError, ModelUnavailable, first_line
from core.functions import CallOptions, FunctionSpec, names_a_model
from core.image_input import decode_image
from core.model_names import ModelFiles, resolve, search_folders
from core.model_pool import NamedModels, iso_time
from core.regions import region_box
from core.results import answer
from core.settings import PLUGIN_DIR
from core.tuning import Record, fastest, identity, thread_counts, threads_name, usable_cores

log = logging.getLogger(__name__)

# eKuiper abandons a call after 5 s; while a model is still loading, answer
# with a clear error before that instead of letting the rule time out. 3 s leaves
# room for the decode and the model after the wait (a PNG at the pixel cap: about 1 s).
MODEL_WAIT_SECONDS = 3.0
# Models load one at a time: the thread tuning of one must not time the other's imports and
# compilation, and a small box is not asked for two loads at once.
LOADING = threading.Lock()


class ServedFunction:
    """One declared function's model, loaded once per process in the background.

    If loading fails, calls answer with the reason, and the next call after the
    model files change on disk loads again: putting a good file back recovers
    without restarting the process.
    """

    def __init__(self, spec: FunctionSpec, settings: dict, name: str | None = None):
        """spec: the declaration (core/catalog.py); settings: validated (core.settings);
        name: what messages call the function (default: the declared name)."""
        self.spec = spec
        self.name = name or spec.name
        self.usage = spec.usage(self.name)
        self.section = spec.section
        self.settings = settings
        self.model = None
        self.error = None
        self.loaded = threading.Event()
        self.loading = threading.Lock()
        self.files_seen = None
        self.load_started = False
        self.held = None  # a reason to serve nothing (a degraded worker); no model loads
        self.last_model = None  # the model the last frame ran on (a model by name, or the configured one)
        self.loaded_at: float | None = None  # time.time() of the configured model's last (re)load
        # This function's models by name (core/model_pool.py): made here, not on first use, so two threads
        # (frames, a GET /models) can never each make one.
        conf = settings["models"]
        self.named = NamedModels(self.name, self.build_named, conf["max_loaded"], conf["settle_seconds"],
                                 MODEL_WAIT_SECONDS, LOADING, conf["max_memory_mb"])

    def start_loading(self) -> None:
        """Loads the model in a background thread (once at a time; a load already running is kept)."""
        self.load_started = True
        if self.loading.acquire(blocking=False):
            self.loaded.clear()
            threading.Thread(target=self._load, name=f"load-{self.name}", daemon=True).start()

    def _load(self) -> None:
        measure_later = False
        try:
            self.files_seen = self.model_files()
            with LOADING:
                model, measure_later = self.first_model()
                self.model, self.error, self.loaded_at = model, None, time.time()
            self.model_changed()
            log.info("%s: model loaded", self.name)
        except Exception as e:  # any loader failure becomes the function's answer
            self.model, self.error = None, f"{self.name} model could not be loaded: {first_line(e)}"
            log.error(self.error)
        finally:
            self.loaded.set()
            self.loading.release()
        if measure_later:
            threading.Thread(target=self._measure, name=f"measure-{self.name}", daemon=True).start()

    def first_model(self) -> tuple[Any, bool]:
        """(the model to serve at once, whether a measurement is still to be made). With no record of this
        box yet, frames are served by the first runtime at every core while the candidates are measured
        (`_measure`): the measurement at load never holds the first frames past the model wait."""
        candidates = self.configurations()
        if len(candidates) == 1 or self.recorded_choice(candidates):
            return self.load_model(), False
        first = self.spec.runtimes(self.settings[self.section])[0]
        initial = [name for name in candidates if first is None or name.startswith(f"{first} ")][-1]
        return self.build(candidates[initial]), True

    def _measure(self) -> None:
        """The measurement `first_model` left for later; its choice replaces the model serving meanwhile."""
        try:
            model = self.load_model()
        except Exception as e:  # the model serving meanwhile stays
            if isinstance(e, RuntimeError) and "after interpreter shutdown" in str(e):
                return  # the process is exiting mid-measurement: nothing to log
            log.exception("%s: the measurement at load failed; the model loaded first keeps serving", self.name)
            return
        self.model = model
        self.model_changed()

    def model_changed(self) -> None:
        """Called after a (re)load: a subclass forgets what the old model answered."""

    def model_files(self) -> list[tuple[str, int | None]]:
        """(path, mtime) of the model's files: a change means "try loading again"."""
        return [(path, mtime(path)) for path in self.spec.model_paths(self.settings)]

    def build(self, settings: dict) -> Any:
        """The loaded model, from validated settings (its section's threads already chosen)."""
        return self.spec.build(settings)

    def check_option(self, option: Any, model: Any) -> CallOptions:
        """The second argument, checked (InputError if bad) and parsed (core.functions.Option.parse); model
        is None before it is loaded, so checks that need it (a class count) are left for later."""
        return self.spec.option.parse(option, model)

    def named_files(self, name: str) -> ModelFiles:
        """A model by name's files (core/model_names.py). Raises InputError: no such model, in one line."""
        spec = self.spec
        return resolve(name, spec.suffixes, self.name_folders, labelled=spec.labelled, exports=spec.exports)

    @functools.cached_property
    def name_folders(self) -> list[str]:
        """Where names are looked up (core.model_names.search_folders), found once: kuiperd's data dir
        exists before it starts the plugin."""
        return search_folders(self.settings["models"]["uploads"], PLUGIN_DIR)
    def build_named(self, files: ModelFiles) -> Any:
        """A model by name, loaded with the configured model's settings (its measured threads and runtime)."""
        section = {**self.settings[self.section], "model": files.model}
        if files.labels:
            section["labels"] = files.labels
        for key in ("threads", "runtime"):
            if key in section and self.model is not None and getattr(self.model, key, None) is not None:
                section[key] = getattr(self.model, key)
        return self.build({**self.settings, self.section: section})

    def run(self, model: Any, pixels: np.ndarray, size: tuple[int, int], options: CallOptions | None = None,
            box: tuple[int, int, int, int] | None = None) -> Any:
        """The function's answer (JSON) for decoded pixels.

        Args:
            size: (width, height) of the image as sent.
            options: the call's (default: none given).
            box: the region (x, y, w, h) of the image the pixels are (a call's roi); the answer is placed
                in the whole image's pixels.
        """
        options = options or CallOptions()
        if box is None:
            return answer(self.spec.run(model, pixels, size, options))
        return answer(self.spec.place(self.spec.run(model, pixels, box[2:], options), box, size))

    def load_model(self) -> Any:
        """The model as configured. What the config leaves open (`threads: 0`, label.runtime `auto`) is
        measured: every candidate built and timed on `probe`, the fastest kept (core.tuning)."""
        return self.tuned(self.configurations(), self.name, self.probe, self.override)[1]

    @property
    def override(self) -> str:
        open_keys = [f"{self.section}.threads"]
        if len(self.spec.runtimes(self.settings[self.section])) > 1:
            open_keys.append(f"{self.section}.runtime")
        return f"set {' or '.join(open_keys)} in the config to override"

    def configurations(self) -> dict[str, dict]:
        """Candidate name -> settings, for every runtime the declaration leaves open and every thread count
        the section's `threads` allows (core.tuning.thread_counts): "2 threads", or "openvino at 2 threads"."""
        section = self.settings[self.section]
        candidates = {}
        for runtime in self.spec.runtimes(section):
            for count in thread_counts(section.get("threads") or 0):
                name = threads_name(count) if runtime is None else f"{runtime} at {threads_name(count)}"
                chosen = {**section, "threads": count, **({"runtime": runtime} if runtime else {})}
                candidates[name] = {**self.settings, self.section: chosen}
        return candidates

    def tuned(self, candidates: dict[str, Any], what: str, probe: Any, override: str,
              build: Any = None) -> tuple[str, Any]:
        """(name, model) of the fastest candidate (core.tuning.fastest), the measurement recorded in
        tuning.record; build(candidate) makes a model (default: the candidate is settings to build)."""
        build = build or self.build
        record, identity_of = self.record_of(candidates)
        return fastest({name: (lambda c=c: build(c)) for name, c in candidates.items()}, probe, what, record,
                       identity_of, override)

    def recorded_choice(self, candidates: dict[str, Any]) -> str | None:
        """The candidate tuning.record holds as measured for these candidates on this box, or None."""
        record, identity_of = self.record_of(candidates)
        entry = record.get(self.name, identity_of()) if record is not None else None
        return entry["choice"] if entry and entry.get("choice") in candidates else None

    def record_of(self, candidates: dict[str, Any]) -> tuple[Record | None, Any]:
        """tuning.record's Record (None: not kept), and what a measurement of these candidates depends on."""
        path = self.settings.get("tuning", {}).get("record")
        # A candidate that is no settings (a window's way of serving) is described by its name; what it
        # depends on beyond the settings (the runtime, the workers) is in its name or in self.settings.
        described = {name: c for name, c in candidates.items() if isinstance(c, dict)}
        return (Record(path) if path else None,
                lambda: identity(self.spec.model_paths(self.settings), list(candidates),
                                 {"settings": described or self.settings, "function": self.name}))

    def with_threads(self, threads: int) -> dict:
        """The settings with this function's model section set to `threads`."""
        return {**self.settings, self.section: {**self.settings[self.section], "threads": threads}}

    def probe(self, model: Any) -> Any:
        """One representative call (a textured frame at the size the model decodes to), for timing."""
        width, height = model.decode_size
        frame = np.random.default_rng(0).integers(96, 160, (height, width, 3), dtype=np.uint8)
        return self.run(model, frame, (width, height))

    def hold(self, reason: str) -> None:
        """Answer every call with `reason` and load nothing (the supervisor's degraded worker)."""
        self.held = reason
        self.load_started = True

    def ready_model(self) -> Any:
        """The loaded model, waiting for it up to MODEL_WAIT_SECONDS.

        Raises:
            ModelUnavailable: held, still loading after the wait, or failed to load (the reason in one line).
        """
        if self.held:
            raise ModelUnavailable(self.held)
        if not self.load_started:  # functions that load on first use (the window forms)
            self.start_loading()
        if self.error and self.model_files() != self.files_seen:
            self.start_loading()
        if not self.loaded.wait(MODEL_WAIT_SECONDS):
            raise ModelUnavailable(f"{self.name} model is still loading; the next frames will be served")
        if self.error:
            raise ModelUnavailable(self.error)
        return self.model

    def model_for(self, option: Any) -> Any:
        """The model a call with this option starts from: None when it names a model (that model's own load
        answers; a call by name never waits on, or fails with, the configured model), else `ready_model()`.

        Raises:
            ModelUnavailable: as ready_model; a held function holds calls by name too.
        """
        if names_a_model(option):
            if self.held:
                raise ModelUnavailable(self.held)
            return None
        return self.ready_model()

    def check_arity(self, args: list) -> None:
        """InputError unless the call has the image and at most the option."""
        if not 1 <= len(args) <= 2:
            raise InputError(f"{self.name} takes 1 or 2 arguments: {self.usage}, got {len(args)}")

    def serve_one(self, model: Any, image: Any, option: Any) -> Any:
        """One frame: the option checked against the model (a model by name swapped in), the image decoded as
        large as it needs, the model run.

        Raises:
            InputError: a bad option or image, or an unknown model name (one line).
            ModelUnavailable: a model by name is still loading, or failed to (one line).
        """
        # A named model sets its own bounds (k up to its class count): checked once it is known, below.
        options = self.check_option(option, None if names_a_model(option) else model)
        served = None
        if options.model:
            served = self.named.get(self.named_files(options.model))
            model = served.model
            if options.value is not None:
                options = dataclasses.replace(options, value=self.spec.option.check(options.value, model))
        self.last_model = model
        limits = self.settings["input"]
        pixels, size = decode_image(image, limits["max_pixels"], limits["max_bytes"], model.decode_size, options.roi)
        box = None if options.roi is None else region_box(options.roi, size)
        result = self.run(model, pixels, size, options, box)
        if options.explain:
            result = explained(result, *((served.name, served.version) if served else self.configured_version()))
        return result

    def loaded_models(self) -> list[dict]:
        """What this function has loaded: its configured model (while it serves) and its models by name, each
        {"function", "name", "version", "loaded_at" (ISO 8601 UTC), "configured"}."""
        listing = []
        if self.model is not None and self.loaded_at is not None:
            name, version = self.configured_version()
            listing.append({"name": name, "version": version, "loaded_at": iso_time(self.loaded_at),
                            "configured": True})
        listing += [{**entry, "configured": False} for entry in self.named.listing()]
        return [{"function": self.name, **entry} for entry in listing]

    def configured_version(self) -> tuple[str, str]:
        """(name, version) of the configured model, as `explain` states them: its file's name and its files' times."""
        paths = self.spec.model_paths(self.settings)
        files = ModelFiles(os.path.splitext(os.path.basename(paths[0]))[0], paths[0], tuple(paths))
        return files.name, ModelFiles.version_of(files.stats())


class ModelCopies:
    """Independent copies of one model (or one model shared by every worker); a worker borrows one
    for a frame, first come first served.

    Attributes a caller reads without running the model (decode_size, labels)
    come from the first copy: the copies are built from the same files.
    """

    def __init__(self, models: list[Any]):
        self.models = models
        self.lock = threading.Lock()
        self.free = collections.deque(models)
        # Borrowers waiting, oldest first: a returned copy goes to the one waiting longest, so a
        # request never loses its turn to one that came later (a plain queue wakes any waiter).
        self.waiting: collections.deque[list] = collections.deque()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.models[0], name)

    @contextlib.contextmanager
    def borrowed(self, timeout: float | None = None) -> Iterator[Any]:
        """A free copy for the block. timeout: the most to wait for one (None: as long as it takes);
        ModelUnavailable when it passes with every copy busy (a unary call's deadline)."""
        model = self._take(timeout)
        try:
            yield model
        finally:
            with self.lock:
                if self.waiting:
                    turn = self.waiting.popleft()
                    turn[1] = model
                    turn[0].set()
                else:
                    self.free.append(model)

    def _take(self, timeout: float | None) -> Any:
        with self.lock:
            if self.free and not self.waiting:
                return self.free.popleft()
            turn = [threading.Event(), None]
            self.waiting.append(turn)
        handed = turn[0].wait(None if timeout is None else max(0.0, timeout))
        with self.lock:
            if not handed and turn[1] is None:
                self.waiting.remove(turn)
                raise ModelUnavailable(f"all {len(self.models)} model copies stayed busy for the "
                                       f"{max(0.0, timeout):g} s this call could wait; try again")
            return turn[1]  # handed over, if only as the wait timed out


class ServedWindow(ServedFunction):
    """A declared function over many frames at once: the frames of a window decoded and run in parallel
    on `batch.workers` threads, each answered or `{"error": one line}`. The model is served as
    batch.serving says (`load_model`): a single-threaded copy per worker, one model at every core,
    or one OpenVINO model with a stream per worker."""

    def __init__(self, spec: FunctionSpec, settings: dict, name: str | None = None):
        super().__init__(spec, settings, name or spec.window_name)
        conf = settings["batch"]
        self.workers = int(conf.get("workers") or 0) or usable_cores()
        self.budget_seconds = float(conf["budget_seconds"])
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)

    def load_model(self) -> ModelCopies:
        """The window's model copies, served as batch.serving says; `auto` measures each way on a
        window of frames and keeps the fastest (core.tuning).

        The runtime is the per-frame function's (measured the same way, or the recorded choice), so a
        window's element is what the per-frame function answers for that frame."""
        runtime = self.per_frame_runtime()
        name, models = self.tuned(self.serving_ways(runtime), self.name, self.probe_window,
                                  "set batch.serving in the config to override", build=lambda way: way())
        log.info("%s: %d workers, %s", self.name, self.workers, name)
        return models

    def serving_ways(self, runtime: str | None) -> dict[str, Any]:
        """Way name -> a builder of ModelCopies, for every way batch.serving allows on `runtime`.

        Raises:
            ValueError: batch.serving names a way the runtime does not have (streams on LiteRT).
        """
        settings = self.with_threads(1)
        if runtime:
            settings[self.section] = {**settings[self.section], "runtime": runtime}
        workers, cores = self.workers, usable_cores()
        wide = {**settings, self.section: {**settings[self.section], "threads": cores}}
        ways = {}
        serving = self.settings["batch"].get("serving", "auto")
        on = f" ({runtime})" if runtime else ""
        if serving in ("auto", "copies"):
            ways[f"{workers} copies at 1 thread{on}"] = \
                lambda: ModelCopies([self.build(settings) for _ in range(workers)])
        if serving in ("auto", "shared") and (workers > 1 or serving == "shared"):
            ways[f"1 model at {threads_name(cores)}{on}"] = lambda: ModelCopies([self.build(wide)] * workers)
        if serving in ("auto", "streams") and self.spec.streams(runtime) and (workers > 1 or serving == "streams"):
            ways[f"1 model with {workers} streams{on}"] = \
                lambda: ModelCopies([self.spec.build(settings, streams=workers)] * workers)
        if not ways:
            raise ValueError(f"batch.serving {serving} needs OpenVINO; {self.spec.name} runs on {runtime}")
        return ways

    def first_model(self) -> tuple[Any, bool]:
        """As ServedFunction.first_model: with nothing to measure, or the choice recorded, the window's
        model at once; otherwise the first way on the runtime known without measuring (configured or
        recorded for the per-frame function, else the first candidate) serves while the rest is measured."""
        runtime = self.known_runtime()
        if runtime is not False:
            ways = self.serving_ways(runtime)
            if len(ways) == 1 or self.recorded_choice(ways):
                return self.load_model(), False
        else:  # the first runtime that has the configured way (streams needs OpenVINO)
            runtimes = self.spec.runtimes(self.settings[self.section])
            ways = next((w for w in map(self.ways_or_none, runtimes) if w), None) or self.serving_ways(runtimes[0])
        # The interim way builds one model where it can (1 model at every core): a copy per worker on a
        # many-core box could itself outlast the model wait.
        name = next((way for way in ways if way.startswith("1 model at")), next(iter(ways)))
        log.info("%s: %d workers, %s while the ways are measured", self.name, self.workers, name)
        return ways[name](), True

    def ways_or_none(self, runtime: str | None) -> dict[str, Any] | None:
        try:
            return self.serving_ways(runtime)
        except ValueError:
            return None

    def known_runtime(self) -> str | None | bool:
        """The per-frame function's runtime if known without a measurement (None: the model has one
        runtime, or it is not named); False if only a measurement can tell."""
        runtimes = self.spec.runtimes(self.settings[self.section])
        if len(runtimes) == 1:
            return runtimes[0]
        per_frame = ServedFunction(self.spec, self.settings)
        choice = per_frame.recorded_choice(per_frame.configurations())
        return choice.split(" at ")[0] if choice else False

    def per_frame_runtime(self) -> str | None:
        """The runtime the per-frame function runs on here: the configured one, or the one its load measured
        (recorded), or measured now the same way; None for a model with one runtime."""
        runtime = self.known_runtime()
        if runtime is not False:
            return runtime
        per_frame = ServedFunction(self.spec, self.settings)
        candidates = per_frame.configurations()
        return per_frame.tuned(candidates, per_frame.name, per_frame.probe, per_frame.override)[0].split(" at ")[0]

    def probe_window(self, models: ModelCopies) -> Any:
        """One representative window: two frames per worker, served in parallel, for timing. On threads of
        its own: a measurement made while the interim model serves must not queue behind real windows."""
        frames = 2 * self.workers
        with ThreadPoolExecutor(self.workers, thread_name_prefix=f"{self.name}-probe") as pool:
            return list(pool.map(lambda _: self._probe_one(models), range(frames)))

    def _probe_one(self, models: ModelCopies) -> Any:
        with models.borrowed() as model:
            return self.probe(model)

    def serve_window(self, args: list) -> list:
        """A window's answers, one per frame, within batch.budget_seconds.

        Args:
            args: [images] or [images, options]: a list per argument, one value per frame; an option
                that is no list (a literal in SQL) applies to every frame.

        Raises:
            InputError: arguments that are no window (one line); a bad frame is answered in its element.
            ModelUnavailable: the model is not there (see `ready_model`).
        """
        started = time.monotonic()
        self.check_arity(args)
        frames = args[0]
        if not isinstance(frames, list):
            raise InputError(f"{self.name} is an aggregate function: use it with GROUP BY a window "
                             f"(it got one {type(frames).__name__} instead of the window's array)")
        options = args[1] if len(args) > 1 else None
        if not isinstance(options, list):  # a literal option: the same for every frame
            options = [options] * len(frames)
        if len(options) != len(frames):
            raise InputError(f"{self.name}: {len(frames)} images but {len(options)} options")
        # A window whose every frame names a model starts from those (a call by name never waits on the
        # configured model); any other starts from the configured model's copies.
        named = bool(options) and all(map(names_a_model, options))
        models = self.model_for(options[0]) if named else self.ready_model()
        deadline = started + self.budget_seconds
        futures = [self.pool.submit(self.serve_frame, models, frame, option, deadline)
                   for frame, option in zip(frames, options, strict=True)]
        wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        results = []
        for future in futures:
            if future.done():
                results.append(future.result())
            else:  # not started: dropped; running: it finishes, its answer is not waited for
                future.cancel()
                results.append(self.over_budget(len(frames)))
        return results

    def serve_frame(self, models: ModelCopies | None, frame: Any, option: Any, deadline: float) -> Any:
        """One window element: the per-frame function's answer, or {"error": one line}."""
        if time.monotonic() >= deadline:
            return self.over_budget()
        try:
            if models is None:  # every frame of the window names its model
                return self.serve_one(None, frame, option)
            with models.borrowed() as model:
                return self.serve_one(model, frame, option)
        except (InputError, ModelUnavailable) as e:
            return {"error": str(e)}
        except Exception as e:  # a fault on one frame must not cost the window
            log.exception("%s: unexpected error on one frame", self.name)
            return {"error": f"internal error: {first_line(e)}"}

    def over_budget(self, frames: int | None = None) -> dict:
        """The element of a frame the window's budget left unserved."""
        window = f" for a window of {frames} frames" if frames else ""
        return {"error": f"not served within the {self.budget_seconds:g} s budget{window} "
                         f"(batch.budget_seconds, under kuiperd's 5 s per call); use smaller windows"}


def explained(result: Any, name: str, version: str) -> Any:
    """The answer with the model that served it: an object gains "model" and "version"; a list (labelImage's)
    becomes {"labels": the list, "model", "version"}."""
    if isinstance(result, dict):
        return {**result, "model": name, "version": version}
    return {"labels": result, "model": name, "version": version}


def mtime(path: str) -> int | None:
    """The file's modification time in ns, None if it cannot be read."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
