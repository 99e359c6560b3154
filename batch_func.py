"""Window batch functions: `labelImageBatch(image [, k])` and `inferenceBatch(image [, threshold])`.

kuiperd serialises every call on one function (one channel, a mutex over send
and receive), so a per-frame function runs one frame at a time whatever the box
has. An aggregate function gets a whole window per call instead: each argument
arrives as an array with one value per row (`GROUP BY CountWindow(8)`), and the
frames of that window are decoded and inferred in parallel, one worker per core,
each worker with its own single-threaded copy of the model. Each element of the
answer is what the per-frame function returns for that frame, or
`{"error": "<one line>"}`; the rest of the window is still served.
"""
import contextlib
import logging
import queue
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from core.errors import InputError, ModelUnavailable, first_line
from core.thread_tuning import usable_cores
from label_func import Inference, LabelImage, ModelFunction

log = logging.getLogger(__name__)


class ModelCopies:
    """Independent copies of one model; a worker borrows one for a frame.

    Attributes a caller reads without running the model (decode_size, labels)
    come from the first copy: the copies are built from the same files.
    """

    def __init__(self, models: list[Any]):
        self.models = models
        self.free = queue.SimpleQueue()
        for model in models:
            self.free.put(model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.models[0], name)

    @contextlib.contextmanager
    def borrowed(self, timeout: float | None = None) -> Iterator[Any]:
        """A free copy for the block. timeout: the most to wait for one (None: as long as it takes);
        ModelUnavailable when it passes with every copy busy (a unary call's deadline)."""
        try:
            model = self.free.get(timeout=None if timeout is None else max(0.0, timeout))
        except queue.Empty:
            raise ModelUnavailable(f"all {len(self.models)} model copies stayed busy for the "
                                   f"{max(0.0, timeout):g} s this call could wait; try again") from None
        try:
            yield model
        finally:
            self.free.put(model)


class BatchFunction(ModelFunction):
    """The window form of a per-frame function (the second base class: its section, checks and run)."""

    def __init__(self, settings: dict):
        super().__init__(settings)
        conf = settings["batch"]
        self.workers = int(conf.get("workers") or 0) or usable_cores()
        self.budget_seconds = float(conf["budget_seconds"])
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)

    def load_model(self) -> ModelCopies:
        # One single-threaded copy per worker: N frames on N cores without the
        # copies' own thread pools fighting over them.
        single = self.with_threads(1)
        models = ModelCopies([self.build(single) for _ in range(self.workers)])
        log.info("%s: %d workers, each with its own model copy at 1 thread", self.name, self.workers)
        return models

    def validate(self, args: list | None) -> str:
        # A rule that uses the function is being created: load now, so its first window is served.
        if not self.load_started:
            self.start_loading()
        return super().validate(args)

    def exec(self, args: list, ctx: Any) -> list:
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
        models = self.ready_model()
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

    def serve_frame(self, models: ModelCopies, frame: Any, option: Any, deadline: float) -> Any:
        """One window element: the per-frame function's answer, or {"error": one line}."""
        if time.monotonic() >= deadline:
            return self.over_budget()
        try:
            with models.borrowed() as model:
                return self.serve_one(model, frame, option)
        except (InputError, ModelUnavailable) as e:
            return {"error": str(e)}
        except Exception as e:  # a fault on one frame must not cost the window
            log.exception("%s: unexpected error on one frame", self.name)
            return {"error": f"internal error: {first_line(e)}"}

    def over_budget(self, frames: int | None = None) -> dict:
        window = f" for a window of {frames} frames" if frames else ""
        return {"error": f"not served within the {self.budget_seconds:g} s budget{window} "
                         f"(batch.budget_seconds, under kuiperd's 5 s per call); use smaller windows"}

    def is_aggregate(self) -> bool:
        return True


class LabelImageBatch(BatchFunction, LabelImage):
    name = "labelImageBatch"
    usage = "labelImageBatch(image [, k])"


class InferenceBatch(BatchFunction, Inference):
    name = "inferenceBatch"
    usage = "inferenceBatch(image [, threshold])"
