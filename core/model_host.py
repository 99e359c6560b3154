"""Every declared function's model for a process outside kuiperd (the HTTP/gRPC service),
answering exactly as the plugin's functions do.

It holds the window form of each model (core.serving.ServedWindow): one single-threaded copy
per core, so concurrent callers use every core, and each call runs the per-frame function's
own checks and code (`check_option` and `serve_one`), so the answer, and the one-line error for
bad input, is the plugin's. Pure: no eKuiper SDK, no nng.
"""
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from core.catalog import BY_NAME, FUNCTIONS
from core.errors import InputError, shown
from core.serving import ServedWindow
from core.settings import Settings


class ModelHost:
    """Loads, reloads (after a failed load, when the files change) and serves every declared function."""

    def __init__(self, settings: Settings, workers: int = 0):
        """workers: model copies per function (0: one per usable core, as batch.workers)."""
        if workers:
            settings = {**settings, "batch": {**settings["batch"], "workers": workers}}
        # Named as the per-frame function: messages ("... model is still loading") name what the caller called.
        self.functions: dict[str, ServedWindow] = {spec.name: ServedWindow(spec, settings, spec.name)
                                                   for spec in FUNCTIONS}
        # Copies in use now, the most ever in use at once, and requests waiting for one, per function:
        # /metrics shows them, so "two requests at once run on two copies" is something a caller can see.
        self.busy = dict.fromkeys(self.functions, 0)
        self.busy_peak = dict.fromkeys(self.functions, 0)
        self.waiting = dict.fromkeys(self.functions, 0)  # requests waiting for a free copy
        self._counting = threading.Lock()

    def start_loading(self) -> None:
        """Loads every model in the background (one at a time: core.serving.LOADING)."""
        for function in self.functions.values():
            function.start_loading()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """True when every model finished loading (or failed to) within timeout."""
        return all(function.loaded.wait(timeout) for function in self.functions.values())

    def status(self) -> dict[str, str]:
        """Per function: "ready", "loading", or the one line it failed with."""
        return {name: ("loading" if not f.loaded.is_set() else f.error or "ready")
                for name, f in self.functions.items()}

    def models(self) -> list[dict]:
        """What is loaded, per function: its configured model and its models by name, with versions and
        load times (core.serving.ServedFunction.loaded_models)."""
        return [entry for function in self.functions.values() for entry in function.loaded_models()]

    def ready(self) -> bool:
        """True when every model is loaded and serving."""
        return all(state == "ready" for state in self.status().values())

    def call(self, name: str, image: Any, option: Any = None, wait: float | None = None) -> Any:
        """The plugin function `name`'s answer for one image (bytes, base64 text or a data URI).

        wait: the most seconds to wait for a free model copy (a caller's deadline; None: no bound).
        Raises InputError for bad input or an unknown name, ModelUnavailable while the
        model loads, after it failed to, or when every copy stayed busy for `wait`.
        """
        function = self.functions.get(name)
        if function is None:
            raise InputError(f"unknown function {shown(name)}: use one of {', '.join(BY_NAME)}")
        if option is not None:
            function.check_option(option, None)  # before any wait for the model
        models = function.model_for(option)
        if models is None:  # a model by name: its own load answers, and it runs one call at a time
            with self._counted(self.busy, name):
                return function.serve_one(None, image, option)
        with contextlib.ExitStack() as held:
            with self._counted(self.waiting, name):  # waiting for a copy until the borrow returns
                model = held.enter_context(models.borrowed(wait))
            with self._counted(self.busy, name):
                return function.serve_one(model, image, option)

    @contextlib.contextmanager
    def _counted(self, counts: dict[str, int], name: str) -> Iterator[None]:
        """counts[name] is one higher for the block (busy also raises busy_peak)."""
        with self._counting:
            counts[name] += 1
            self.busy_peak[name] = max(self.busy_peak[name], self.busy[name])
        try:
            yield
        finally:
            with self._counting:
                counts[name] -= 1
