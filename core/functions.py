"""What a function declaration holds: the types core/catalog.py declares each function with.

A declaration names the function, its model (a class built from its config section's keywords),
how a frame runs through it, its one option (type and range), a one-line summary and its result
type. The SQL functions and their window forms, functions/*.json and defect.json, the HTTP routes
and OpenAPI, the gRPC mapping and the client all derive from it or are checked against it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.errors import InputError, shown
from core.model_names import MODEL_SUFFIXES, check_name, metadata_beside
from core.regions import Roi
from core.results import json_schema
from core.settings import SCHEMA, defaults, is_number


class Model(Protocol):
    """What a function's model class provides (label.ImageLabeler, inference.DefectSegmenter).

    Built from its config section's keywords (construction reads no file), then `load()`ed.
    """

    @property
    def decode_size(self) -> tuple[int, int]:
        """The least (width, height) a frame must be decoded at for this model."""

    def load(self, streams: int = 1) -> Model:
        """Reads and compiles the model; returns self. streams: calls it runs at once, from any threads
        (more than 1 only where the declaration's `streams` allows). Raises whatever the runtime raises."""


@dataclass(frozen=True)
class CallOptions:
    """A call's second argument, parsed (Option.parse)."""

    value: Any = None  # the option's number (k, threshold), checked; None: the default
    model: str | None = None  # a model by name (core/model_names.py); None: the configured model
    explain: bool = False  # the answer says which model and version served it
    roi: Roi | None = None  # run on this region only (core.image_input.region_box)
    picture: str | None = None  # which picture the answer carries (Option.pictures); None: the first


def names_a_model(option: Any) -> bool:
    """Whether a call's second argument (as sent, unchecked) is an options object naming a model."""
    return isinstance(option, dict) and option.get("model") is not None


@dataclass(frozen=True)
class Option:
    """A function's optional second argument (`labelImage(image, k)`).

    Attributes:
        name: its name in SQL messages, HTTP fields and gRPC requests.
        kind: int (a whole number) or float.
        minimum: the least value allowed.
        maximum: the most allowed; None when the loaded model sets it (`model_maximum`).
        model_maximum: the model's own bound (labelImage: its class count), when `maximum` is None.
        bound: that bound in words, for messages before the model is loaded.
        default_key: the config key whose value applies when the option is left out.
        description: what the option means, one line.
        pictures: the pictures an answer can carry, the default first (empty: the answer has none).
    """

    name: str
    kind: type
    minimum: float
    description: str
    default_key: str
    maximum: float | None = None
    model_maximum: Callable[[Any], int] | None = None
    bound: str = ""
    pictures: tuple[str, ...] = ()

    def rule(self, most: float | None = None) -> str:
        """The rule the option follows, as its error message says it."""
        high = self.maximum if self.maximum is not None else most
        kind = "a whole number" if self.kind is int else "a number"
        return f"{kind} from {self.minimum:g} to {self.bound if high is None else format(high, 'g')}"

    def check(self, value: Any, model: Any = None) -> Any:
        """The option as the model takes it (an int for an int option).

        Args:
            value: what the caller sent (any JSON value).
            model: the loaded model, or None before it is loaded (then a model-set bound is not checked).

        Raises:
            InputError: the value breaks the rule; its one line names the option and the value.
        """
        most = self.model_maximum(model) if model is not None and self.model_maximum else None
        high = self.maximum if self.maximum is not None else most
        if not is_number(value) or value < self.minimum or (high is not None and value > high) or \
                (self.kind is int and value != int(value)):
            raise InputError(f"{self.name} must be {self.rule(most)}, got {shown(value, json.dumps)}")
        return int(value) if self.kind is int else value

    @property
    def keys(self) -> tuple[str, ...]:
        """What an options object (`{"model": "partB", "threshold": 0.6}`) may hold."""
        return (self.name, "model", "explain", "roi") + (("picture",) if self.pictures else ())

    def from_fields(self, given: dict) -> Any:
        """The second argument from what a caller gave field by field (HTTP fields, gRPC request fields):
        the option's value alone (or None) when only it is given, else the options object of those given.
        A None value is not given."""
        given = {key: value for key, value in given.items() if value is not None}
        return given.get(self.name) if set(given) <= {self.name} else given

    def parse(self, value: Any, model: Any = None) -> CallOptions:
        """The second argument as a call takes it: null, the option's number, or an object of
        {<name>: number, "model": a model's name, "explain": bool, "roi": [x, y, w, h], "picture": one of
        `pictures`} (in SQL: `object_construct(...)`).

        Raises:
            InputError: an unknown key, a value that breaks its rule, or neither a number nor an object; one line.
        """
        if value is None:
            return CallOptions()
        if not isinstance(value, dict):
            return CallOptions(value=self.check(value, model))
        unknown = [key for key in value if key not in self.keys]
        if unknown:
            raise InputError(f"the options object takes {', '.join(self.keys)}; got {shown(unknown[0])}")
        explain = value.get("explain", False)
        if not isinstance(explain, bool):
            raise InputError(f"explain must be true or false, got {shown(explain, json.dumps)}")
        picture = value.get("picture")
        if picture is not None and picture not in self.pictures:
            raise InputError(f"picture must be one of {', '.join(self.pictures)}; got {shown(picture, json.dumps)}")
        name, roi = value.get("model"), value.get("roi")
        return CallOptions(value=None if value.get(self.name) is None else self.check(value[self.name], model),
                           model=None if name is None else check_name(name), explain=explain,
                           roi=None if roi is None else Roi.parse(roi), picture=picture)

    @property
    def default(self) -> Any:
        """The schema's default of `default_key`: what applies when the option is left out."""
        section, key = self.default_key.split(".")
        return defaults(section)[key]

    def json_schema(self) -> dict:
        """The option's JSON schema; its example is the config's default."""
        schema = {"type": "integer" if self.kind is int else "number", "minimum": self.minimum}
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return {**schema, "examples": [self.default]}


@dataclass(frozen=True)
class FunctionSpec:
    """One declared function. See core/catalog.py for the declarations and docs/development.md.

    Attributes:
        name: the per-frame SQL function's name; its window form is `<name>Batch`.
        summary: what it does, one line (SQL docs, OpenAPI, the client's help).
        section: the config section its model's keywords come from (core/settings.py's SCHEMA).
        model: the model class, built as `model(**settings[section])` and then loaded.
        run: (model, BGR pixels, (width, height) of the image as sent, CallOptions) -> result.
        place: (result on a region, its (x, y, w, h), (width, height) of the image) -> the result on the
            image (its boxes moved into the image's pixels); default: the result as it is.
        option: its optional second argument.
        result: the type `run` returns (a core/results.py dataclass, or a list of one).
        sample: an image the model answers meaningfully (its command line's default; the tests' first check).
        runtimes: its config section -> the runtimes a load measures ("auto" left open), passed to the
            model as its `runtime` keyword; (None,): the model has one runtime.
        streams: runtime -> whether `load(streams=N)` can run N calls at once (OpenVINO's streams).
        suffixes: the model files a name may stand for (core/model_names.py), in the order looked for.
        labelled: a model by name needs its labels file beside it (`<name>.txt`).
        exports: a name may stand for a folder holding an anomalib export.
    """

    name: str
    summary: str
    section: str
    model: Callable[..., Model]
    run: Callable[[Any, np.ndarray, tuple[int, int], CallOptions], Any]
    option: Option
    result: Any
    sample: str
    place: Callable[[Any, tuple[int, int, int, int], tuple[int, int]], Any] = lambda result, box, size: result
    runtimes: Callable[[dict], tuple[str | None, ...]] = lambda section: (None,)
    streams: Callable[[str | None], bool] = lambda runtime: True
    suffixes: tuple[str, ...] = MODEL_SUFFIXES
    labelled: bool = False
    exports: bool = True

    def __post_init__(self) -> None:
        """Refuses a declaration whose config section is missing (its model's keywords come from there)."""
        if self.section not in SCHEMA or "threads" not in SCHEMA[self.section]:
            raise ValueError(f"{self.name}: config section {self.section!r} must exist and have a threads key")

    @property
    def window_name(self) -> str:
        """The aggregate (window) form's SQL name."""
        return f"{self.name}Batch"

    def usage(self, name: str | None = None) -> str:
        """`labelImage(image [, k])`, for the function or its window form (`name`)."""
        return f"{name or self.name}(image [, {self.option.name}])"

    def result_schema(self, definitions: dict | None = None) -> dict:
        """The JSON schema of one frame's answer; with `definitions`, result types go there by name
        and the schema refers to them (OpenAPI's components)."""
        return json_schema(self.result, definitions)

    def build(self, settings: dict, streams: int = 1) -> Model:
        """The model the settings describe, loaded (with `streams` calls at once).

        Raises:
            Exception: whatever the model's loading raises (a missing file, a model it cannot serve).
        """
        return self.model(**settings[self.section]).load(streams)

    def model_paths(self, settings: dict) -> list[str]:
        """The files the model reads (its section's path keys; an IR's .bin too): a change means "load again"."""
        conf = settings.get(self.section, {})
        paths = [conf.get(name) for name, key in SCHEMA[self.section].items() if key.path]
        if str(conf.get("model", "")).endswith(".xml"):
            paths.append(conf["model"][:-4] + ".bin")
        metadata = metadata_beside(conf["model"]) if self.exports and conf.get("model") else None
        if metadata and os.path.isfile(metadata):  # an anomalib 1.x export's thresholds
            paths.append(metadata)
        return [path for path in paths if path]
