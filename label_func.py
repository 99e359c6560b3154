"""eKuiper Function wrappers: `labelImage` over label.py and `inference` over inference.py.

A wrapper checks arguments, decodes the image once and hands pixels to the
already-loaded model. InputError and ModelUnavailable (errors.py) carry the one
line a rule shows (function_server.py turns them into the reply).
"""
import abc
import json
import logging
import os
import threading
from typing import Any

import numpy as np
from ekuiper import Function

from core.errors import InputError, ModelUnavailable, first_line, shown
from core.image_input import decode_image
from core.settings import is_number
from core.thread_tuning import fastest_threads

log = logging.getLogger(__name__)

# eKuiper abandons a call after 5 s; while a model is still loading, answer
# with a clear error before that instead of letting the rule time out. 3 s leaves
# room for the decode and the model after the wait (a PNG at the pixel cap: about 1 s).
MODEL_WAIT_SECONDS = 3.0
# Models load one at a time: the thread tuning of one must not time the other's imports and
# compilation, and a small box is not asked for two loads at once.
LOADING = threading.Lock()


class ModelFunction(Function, abc.ABC):
    """A SQL function backed by one model, loaded once per process in the background.

    If loading fails, calls answer with the reason, and the next call after the
    model files change on disk loads again: putting a good file back recovers
    without restarting kuiperd.

    A subclass declares its model through three hooks: `build` (settings -> model),
    `check_option` (the optional second argument) and `run` (pixels -> result).
    """

    name = ""
    usage = ""
    section = ""  # config section with the model's file paths

    def __init__(self, settings: dict):
        self.settings = settings
        self.model = None
        self.error = None
        self.loaded = threading.Event()
        self.loading = threading.Lock()
        self.files_seen = None
        self.load_started = False
        self.held = None  # a reason to serve nothing (a degraded worker); no model loads
        self.last_args, self.last_result = None, None

    def start_loading(self) -> None:
        self.load_started = True
        if self.loading.acquire(blocking=False):
            self.loaded.clear()
            threading.Thread(target=self._load, name=f"load-{self.name}", daemon=True).start()

    def _load(self):
        try:
            self.files_seen = self.model_files()
            with LOADING:
                self.model, self.error = self.load_model(), None
            self.last_args = None  # a new model may answer differently
            log.info("%s: model loaded", self.name)
        except Exception as e:  # any loader failure becomes the function's answer
            self.model, self.error = None, f"{self.name} model could not be loaded: {first_line(e)}"
            log.error(self.error)
        finally:
            self.loaded.set()
            self.loading.release()

    def model_files(self) -> list[tuple[str, int | None]]:
        """(path, mtime) of the model's files: a change means "try loading again"."""
        conf = self.settings.get(self.section, {})
        paths = [conf.get("model"), conf.get("labels")]
        if str(conf.get("model", "")).endswith(".xml"):
            paths.append(conf["model"][:-4] + ".bin")
        return [(p, mtime(p)) for p in paths if p]

    @abc.abstractmethod
    def build(self, settings: dict) -> Any:
        """The loaded model, from validated settings (its section's threads already chosen)."""

    @abc.abstractmethod
    def check_option(self, option: Any, model: Any) -> Any:
        """The second SQL argument, checked (InputError if bad) and converted; model is None
        before it is loaded, so checks that need it (a class count) are left for later."""

    @abc.abstractmethod
    def run(self, model: Any, pixels: np.ndarray, size: tuple[int, int], option: Any) -> Any:
        """The function's answer for decoded pixels; size: (width, height) of the image as sent."""

    def load_model(self) -> Any:
        """The model at the configured threads; `threads: 0` measures 1 against every core and keeps the faster."""
        threads = self.settings[self.section].get("threads") or 0
        if threads:
            return self.build(self.with_threads(threads))
        return fastest_threads(lambda n: self.build(self.with_threads(n)), self.probe, self.name)

    def with_threads(self, threads: int) -> dict:
        """The settings with this function's model section set to `threads`."""
        return {**self.settings, self.section: {**self.settings[self.section], "threads": threads}}

    def probe(self, model: Any) -> Any:
        """One representative call (a textured frame at the size the model decodes to), for timing."""
        width, height = model.decode_size
        frame = np.random.default_rng(0).integers(96, 160, (height, width, 3), dtype=np.uint8)
        return self.run(model, frame, (width, height), None)

    def hold(self, reason: str) -> None:
        """Answer every call with `reason` and load nothing (the supervisor's degraded worker)."""
        self.held = reason
        self.load_started = True

    def ready_model(self) -> Any:
        if self.held:
            raise ModelUnavailable(self.held)
        if not self.load_started:  # functions that load on first use (the batch ones)
            self.start_loading()
        if self.error and self.model_files() != self.files_seen:
            self.start_loading()
        if not self.loaded.wait(MODEL_WAIT_SECONDS):
            raise ModelUnavailable(f"{self.name} model is still loading; the next frames will be served")
        if self.error:
            raise ModelUnavailable(self.error)
        return self.model

    def validate(self, args: list | None) -> str:
        """At rule creation. args are SQL expressions as JSON; kuiperd sends null for f()."""
        args = args or []
        try:
            self.check_arity(args)
        except InputError as e:
            return str(e)
        if len(args) == 2 and isinstance(args[1], dict) and "Val" in args[1]:  # a literal: check it now
            try:
                self.check_option(args[1]["Val"], self.model)
            except InputError as e:
                return str(e)
        return ""

    def check_arity(self, args: list) -> None:
        if not 1 <= len(args) <= 2:
            raise InputError(f"{self.name} takes 1 or 2 arguments: {self.usage}, got {len(args)}")

    def exec(self, args: list, ctx: Any) -> Any:
        self.check_arity(args)
        # A rule like the tutorial's `SELECT f(image)->a ... WHERE f(image)->b` calls twice
        # per frame with the same arguments: answer the second from the first.
        if args == self.last_args:
            return self.last_result
        option = args[1] if len(args) > 1 else None  # null (a missing field) means the default
        if option is not None:
            self.check_option(option, None)  # before any wait for the model
        result = self.serve_one(self.ready_model(), args[0], option)
        self.last_args, self.last_result = list(args), result
        return result

    def serve_one(self, model: Any, image: Any, option: Any) -> Any:
        """One frame: the option checked against the model, the image decoded as large as it needs, the model run."""
        if option is not None:
            option = self.check_option(option, model)
        limits = self.settings["input"]
        pixels, size = decode_image(image, limits["max_pixels"], limits["max_bytes"], model.decode_size)
        return self.run(model, pixels, size, option)

    def is_aggregate(self) -> bool:
        return False


class LabelImage(ModelFunction):
    name = "labelImage"
    usage = "labelImage(image [, k])"
    section = "label"

    def build(self, settings: dict) -> Any:
        import label  # the runtime loads here, off the handshake path
        return label.labeler_from_settings(settings)

    def check_option(self, k: Any, model: Any) -> int:
        """k, the number of labels: a whole number from 1 to the model's class count."""
        most = len(model.labels) if model else None
        if not is_number(k) or k != int(k) or k < 1 or (most and k > most):
            raise InputError(f"k must be a whole number from 1 to {most or 'the class count'}, "
                             f"got {shown(k, json.dumps)}")
        return int(k)

    def run(self, model: Any, pixels: np.ndarray, size: tuple[int, int], k: int | None) -> list[dict]:
        return model.label(pixels, k)


class Inference(ModelFunction):
    name = "inference"
    usage = "inference(image [, threshold])"
    section = "defect"

    def build(self, settings: dict) -> Any:
        import inference
        return inference.segmenter_from_settings(settings)

    def check_option(self, threshold: Any, model: Any) -> float:
        """threshold, the defect probability: a number from 0 to 1."""
        if not is_number(threshold) or not 0 <= threshold <= 1:
            raise InputError(f"threshold must be a number from 0 to 1, got {shown(threshold, json.dumps)}")
        return threshold

    def run(self, model: Any, pixels: np.ndarray, size: tuple[int, int], threshold: float | None) -> dict:
        return model.inspect(pixels, threshold, size)


def mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None

