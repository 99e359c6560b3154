"""Window functions: each declared function's aggregate form, `<name>Batch(image [, option])`.

kuiperd serialises every call on one function (one channel, a mutex over send
and receive), so a per-frame function runs one frame at a time whatever the box
has. An aggregate function gets a whole window per call instead: each argument
arrives as an array with one value per row (`GROUP BY CountWindow(8)`), and the
frames of that window are decoded and inferred in parallel, one worker per core,
each worker with its own single-threaded copy of the model (core.serving.ServedWindow).
Each element of the answer is what the per-frame function returns for that frame,
or `{"error": "<one line>"}`; the rest of the window is still served.
"""
from typing import Any

from core.catalog import FUNCTIONS
from core.serving import ServedWindow
from label_func import ModelFunction


class WindowFunction(ServedWindow, ModelFunction):
    """The window form of a declared function, as an eKuiper aggregate function."""

    def validate(self, args: list | None) -> str:
        # A rule that uses the function is being created: load now, so its first window is served.
        if not self.load_started:
            self.start_loading()
        return super().validate(args)

    def exec(self, args: list, ctx: Any) -> list:
        return self.serve_window(args)

    def is_aggregate(self) -> bool:
        return True


def window_functions(settings: dict) -> list[WindowFunction]:
    """Every declared function's window form."""
    return [WindowFunction(spec, settings) for spec in FUNCTIONS]
