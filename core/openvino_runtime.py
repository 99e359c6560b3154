"""OpenVINO's runtime, imported without its model-conversion tools (`from core.openvino_runtime import ov`),
and `Inference`: a compiled model called from many threads.

`import openvino` also imports openvino.tools.ovc (convert_model), and that import sends a usage
event to Google Analytics: openvino-telemetry 2025.2 is told enable_opt_in_dialog=False, so with
no ~/intel/openvino_telemetry file it counts as consent. It writes ~/intel/openvino_ga_cid (a
client id) and ~/intel/stats, and forks a process to POST the event (measured: one fork and both
files in every process that imports OpenVINO, unless CI=true). A plugin on a factory gateway converts no model,
must not phone home and must not fork beside kuiperd, so that one import is refused here;
openvino/__init__.py skips it on ImportError and the runtime is unchanged. Import this module
before anything imports openvino.
"""
from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

# A None entry makes `import openvino.tools.ovc` raise ImportError (a process that already
# imported it, such as tools/build_models.py, keeps it).
sys.modules.setdefault("openvino.tools.ovc", None)

import openvino as ov  # noqa: E402
from openvino.preprocess import ColorFormat, PrePostProcessor  # noqa: E402

__all__ = ["ColorFormat", "Inference", "PrePostProcessor", "new_core", "ov"]


def new_core() -> ov.Core:
    """An OpenVINO Core that reads model files into memory rather than mapping them: a model file replaced
    in place (kuiperd's upload truncates and rewrites it) must not change, or fault, a model that serves."""
    core = ov.Core()
    core.set_property({"ENABLE_MMAP": False})
    return core


class Inference:
    """A compiled model's inference, callable from any thread: `inference(inputs)` -> its outputs, in order.

    jobs 1: one infer request, one call at a time. jobs > 1: an `ov.AsyncInferQueue` of that many
    requests over one compiled model (compile it with as many streams); callers on as many threads
    run at once, each waiting for its own result.
    """

    def __init__(self, compiled: ov.CompiledModel, jobs: int = 1):
        self.outputs = len(compiled.outputs)
        self.jobs = jobs
        if jobs == 1:
            self.request = compiled.create_infer_request()
            self.lock = threading.Lock()
        else:
            self.queue = ov.AsyncInferQueue(compiled, jobs)
            # A module-level callback: a bound method would tie this object to the queue through C++,
            # a cycle Python's collector cannot see, and no Inference with streams would ever be freed.
            self.queue.set_callback(_done)
            # start_async picks an idle request without reserving it: two threads starting at once can
            # pick the same one ("Infer Request is busy"). One start at a time; the inferences overlap.
            self.starting = threading.Lock()
            # A callback may still be returning when its caller has its result; the interpreter must
            # not finalise under it (C++ terminate at exit). Wait for the requests at exit or release.
            weakref.finalize(self, self.queue.wait_all)

    def __call__(self, inputs: list) -> list:
        if self.jobs == 1:
            with self.lock:
                results = self.request.infer(inputs)
                return [results[i] for i in range(self.outputs)]
        waiting = _Waiting(self.outputs)
        with self.starting:
            self.queue.start_async(inputs, waiting)
        return waiting.result()


def _done(request: ov.InferRequest, waiting: _Waiting) -> None:
    """AsyncInferQueue's callback, on OpenVINO's thread: copy the outputs out before the request is reused."""
    try:
        waiting.set([request.get_output_tensor(i).data.copy() for i in range(waiting.outputs)])
    except BaseException as e:  # handed to the caller's thread, raised there
        waiting.set(e)


# OpenVINO calls the callback only for an inference that succeeded; a failed one leaves its caller
# waiting. No inference of ours takes this long: past it the call fails instead of hanging a worker.
RESULT_WAIT_SECONDS = 60.0


class _Waiting:
    """One asynchronous call's result, for the thread that started it."""

    def __init__(self, outputs: int):
        self.outputs = outputs
        self.done = threading.Event()
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value
        self.done.set()

    def result(self) -> list:
        if not self.done.wait(RESULT_WAIT_SECONDS):
            raise RuntimeError(f"OpenVINO gave no result within {RESULT_WAIT_SECONDS:g} s (the inference failed)")
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value
