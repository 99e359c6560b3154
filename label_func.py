"""eKuiper Function wrappers: each declared function (core/catalog.py) as a per-frame SQL function.

A wrapper only adapts eKuiper's calls (validate at rule creation, exec per row) to the pure
core.serving.ServedFunction, which checks arguments, decodes the image once and runs the
already-loaded model. InputError and ModelUnavailable (core/errors.py) carry the one line a rule
shows (runtime/function_server.py turns them into the reply). The window forms are batch_func.py.
"""
from typing import Any

from ekuiper import Function

from core.catalog import FUNCTIONS
from core.errors import InputError
from core.functions import FunctionSpec
from core.serving import ServedFunction


class ModelFunction(ServedFunction, Function):
    """`<name>(image [, option])`: one frame per call."""

    def __init__(self, spec: FunctionSpec, settings: dict, name: str | None = None):
        super().__init__(spec, settings, name)
        self.last_args, self.last_result = None, None

    def model_changed(self) -> None:
        self.last_args = None  # a new model may answer differently

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

    def is_aggregate(self) -> bool:
        return False


def per_frame_functions(settings: dict) -> list[ModelFunction]:
    """Every declared function's per-frame SQL function."""
    return [ModelFunction(spec, settings) for spec in FUNCTIONS]
