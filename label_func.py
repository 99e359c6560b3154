"""eKuiper Function wrappers: each declared function (core/catalog.py) as a per-frame SQL function.

A wrapper only adapts eKuiper's calls (validate at rule creation, exec per row) to the pure
core.serving.ServedFunction, which checks arguments, decodes the image once and runs the
already-loaded model. InputError and ModelUnavailable (core/errors.py) carry the one line a rule
shows (runtime/function_server.py turns them into the reply). The window forms are batch_func.py.
"""
from typing import Any

from ekuiper import Function

from core.catalog import FUNCTIONS
from core.errors import InputError, ModelFailed, ModelUnavailable
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
        literal = literal_option(args[1]) if len(args) == 2 else None
        if literal is not None:  # a literal (or an object of literals): check it now, a model's name too
            try:
                options = self.check_option(literal, self.model)
                if options.model:
                    # Loads it now (waiting as a call would): a model that cannot serve this function
                    # fails the rule; one still loading or being written is checked on its frames.
                    self.named.get(self.named_files(options.model))
            except InputError as e:
                return str(e)
            except ModelFailed as e:
                return str(e)
            except ModelUnavailable:  # still loading or being written: checked on its frames
                pass
        return ""

    def exec(self, args: list, ctx: Any) -> Any:
        self.check_arity(args)
        option = args[1] if len(args) > 1 else None  # null (a missing field) means the default
        # A rule like the tutorial's `SELECT f(image)->a ... WHERE f(image)->b` calls twice
        # per frame with the same arguments: answer the second from the first, if the same model
        # would serve it (a model by name may have been swapped since).
        if args == self.last_args and self.current_model(option) is self.last_model:
            return self.last_result
        self.last_args = None  # a call that fails leaves nothing to answer from memory
        if option is not None:
            self.check_option(option, None)  # before any wait for the model
        result = self.serve_one(self.model_for(option), args[0], option)
        self.last_args, self.last_result = list(args), result
        return result

    def current_model(self, option: Any) -> Any:
        """The model a call with this option would run on now (None if that cannot be said without a wait)."""
        try:
            options = self.check_option(option, None)
            if options.model:
                return self.named.get(self.named_files(options.model)).model  # starts a swap when files changed
        except Exception:  # unknown name, still loading: the full path answers it
            return None
        return self.model

    def is_aggregate(self) -> bool:
        return False


def literal_option(expression: Any) -> Any:
    """The option's value when the rule gives it as a literal (`{"Val": 3}`) or as
    `object_construct("model", "partB", "threshold", 0.6)` of literals; None when it is only known per row."""
    if not isinstance(expression, dict):
        return None
    if "Val" in expression:
        return expression["Val"]
    arguments = expression.get("Args")
    if str(expression.get("Name", "")).lower() == "object_construct" and isinstance(arguments, list) \
            and len(arguments) % 2 == 0 and all(isinstance(a, dict) and "Val" in a for a in arguments):
        values = [a["Val"] for a in arguments]
        return dict(zip(values[::2], values[1::2], strict=True))
    return None


def per_frame_functions(settings: dict) -> list[ModelFunction]:
    """Every declared function's per-frame SQL function."""
    return [ModelFunction(spec, settings) for spec in FUNCTIONS]
