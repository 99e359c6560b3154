"""The one config loader and the one declared config schema.

Every key's type, range and default is declared once, in SCHEMA. A site changes
values in three layers, each validated against the schema: config.json in the
plugin dir, then the file DEFECT_CONFIG names (an overlay listing only what it
changes), then the environment (ENV_OVERRIDES). A bad value or an unknown key is
a ConfigError whose one line names the key, the rule and where the value came from.

Model paths come only from here (file or environment), never from SQL arguments,
so a rule cannot make the plugin read arbitrary files.
"""
from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # core/ sits in the plugin dir
CONFIG_FILE = os.path.join(PLUGIN_DIR, "config.json")
OVERLAY_VAR = "DEFECT_CONFIG"
DEVICES = ("CPU", "GPU", "NPU", "AUTO")

Settings = dict[str, dict[str, Any]]


class Invalid(ValueError):
    """Raised by a key's check: the value breaks the key's rule."""


@dataclass(frozen=True)
class Key:
    """One config key: its default, the rule its values follow (as the error says it) and the check."""

    default: Any
    rule: str
    check: Callable[[Any], Any]  # value -> the value to use; raises Invalid
    description: str  # what the key does, for docs/configuration.md (tools/config_doc.py renders it)
    path: bool = False  # relative to the plugin dir


def is_number(value: Any) -> bool:
    """A JSON number that is finite (booleans are not numbers; huge ints are, isfinite() would overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def whole(low: int, high: int | None = None) -> tuple[str, Callable[[Any], int]]:
    rule = f"a whole number from {low} to {high}" if high is not None else f"a whole number of at least {low}"

    def check(value: Any) -> int:
        if not is_number(value) or value != int(value) or value < low or (high is not None and value > high):
            raise Invalid
        return int(value)
    return rule, check


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False,
           ) -> tuple[str, Callable[[Any], float]]:
    if high is None:
        rule = f"a number {'over' if low_open else 'of at least'} {low:g}"
    elif low_open:
        rule = f"a number over {low:g} and {'under' if high_open else 'at most'} {high:g}"
    else:
        rule = f"a number from {low:g} to {high:g}{' (not included)' if high_open else ''}"

    def check(value: Any) -> float:
        if not is_number(value) or value < low or (low_open and value == low) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise Invalid
        return float(value)
    return rule, check


def one_of(*choices: str) -> tuple[str, Callable[[Any], str]]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.upper() not in choices:
            raise Invalid
        return value.upper()
    return f"one of {', '.join(choices)}", check


def name_of(*choices: str) -> tuple[str, Callable[[Any], str]]:
    """One of lower-case names, in any case."""
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise Invalid
        return value.lower()
    return f"one of {', '.join(choices)}", check


def device_family(name: str) -> str:
    """GPU for OpenVINO's forms GPU.1 and AUTO for AUTO:GPU,CPU (HETERO is not offered)."""
    return name.upper().split(":")[0].split(".")[0]


def device() -> tuple[str, Callable[[Any], str]]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or device_family(value) not in DEVICES:
            raise Invalid
        return value.upper()
    return f"one of {', '.join(DEVICES)} (OpenVINO's forms such as GPU.1 or AUTO:GPU,CPU too)", check


def text(rule: str) -> tuple[str, Callable[[Any], str]]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid
        return value
    return rule, check


def file_path() -> tuple[str, Callable[[Any], str]]:
    return text("a file path (relative to the plugin dir, or absolute)")


def optional(rule_check: tuple[str, Callable[[Any], Any]]) -> tuple[str, Callable[[Any], Any]]:
    rule, inner = rule_check
    return f"null or {rule}", lambda value: None if value is None else inner(value)


def size() -> tuple[str, Callable[[Any], list[int] | None]]:
    def check(value: Any) -> list[int] | None:
        if value is None:
            return None
        if is_number(value):
            value = [value, value]
        if not isinstance(value, list) or len(value) != 2 or \
                not all(is_number(v) and v == int(v) and 16 <= v <= 8192 for v in value):
            raise Invalid
        return [int(value[0]), int(value[1])]
    return "null, [width, height] in pixels (16 to 8192) or one number (square)", check


def _key(default: Any, rule_check: tuple[str, Callable[[Any], Any]], description: str, path: bool = False) -> Key:
    return Key(default, rule_check[0], rule_check[1], description, path)


SCHEMA: dict[str, dict[str, Key]] = {
    "label": {
        "model": _key("models/mobilenet_v2_1.0_224_quant.tflite", file_path(),
            "Any TFLite image classifier, uint8 input `[1,H,W,3]` RGB (float input gets `(x - 127.5) / 127.5`, "
            "untested: the fixtures hold no float classifier).", path=True),
        "labels": _key("models/imagenet_labels.txt", file_path(),
            "One label a line; line N is class N; must match the model's class count.", path=True),
        "top_k": _key(5, whole(1),  # above the class count, every class is returned
            "Labels returned when `k` is not given (a null `k` too); above the class count, every class."),
        "threads": _key(0, whole(0, 1024),  # 0: measured at load
            "Threads of the label runtime; 0: measured at load (1 thread against every core, the faster kept, one"
            " log line says which); a number wins."),
        "runtime": _key("auto", name_of("auto", "litert", "openvino"),
            "What runs the `.tflite`: `litert`, or `openvino` (OpenVINO's TFLite reader on the same file, same "
            "pre-processing); `auto`: both measured at load on x86_64, the faster kept (one log line gives both "
            "timings), `openvino` on other machines (see [install.md](install.md#platforms))."),
    },
    "defect": {
        "model": _key("models/model.xml", file_path(),
            "OpenVINO IR (`.xml` + `.bin`), also `.onnx` or `.tflite` (OpenVINO reads them).", path=True),
        "device": _key("CPU", device(),
            "A device this box lacks falls back to CPU with one log line."),
        "threshold": _key(0.5, number(0, 1),
            "Probability above which a pixel is a defect, for probability outputs; `inference`'s second argument "
            "overrides it per call."),
        "color": _key("RGB", one_of("RGB", "BGR"),
            "Channel order the model expects."),
        "min_area": _key(0, number(0),
            "Regions smaller than this (pixels of the input image) are dropped."),
        "jpeg_quality": _key(80, whole(0, 100),
            "JPEG quality of the side-by-side picture (`base64`)."),
        "threads": _key(0, whole(0, 1024),
            "OpenVINO CPU threads; 0: measured at load as for `label.threads`; a number wins."),
        "input_size": _key(None, size(),
            "Size fed to a model whose input height and width are dynamic; null: the size its metadata or its "
            "fixed-size outputs imply (anomalib: 256x256). A fixed-size model keeps its own."),
        "input_scale": _key(None, optional(number(0, 65535, low_open=True)),
            "What a float input expects for a full-intensity pixel: 255 (pixels as they are) or 1 (pixels / 255),"
            " applied inside the graph; null: 1 for anomalib exports, 255 for others."),
        "output": _key(None, optional(text("an output name of the model")),
            "The output that holds the defect map, by name; null: `pred_mask`, else `anomaly_map` (thresholded), "
            "else the only output."),
    },
    "batch": {
        "workers": _key(0, whole(0, 1024),  # 0: one per core
            "Frames of a window served at once; 0: one per core."),
        "serving": _key("auto", name_of("auto", "copies", "shared", "streams"),
            "How a window's frames share the cores: `copies`: a single-threaded model copy per worker; "
            "`shared`: one model at a thread per worker, frames decoded in parallel; `streams`: one OpenVINO "
            "model with a stream per worker (an AsyncInferQueue); `auto`: each measured at load, the fastest "
            "kept (one log line gives the timings)."),
        # kuiperd abandons a call after 5 s: a window must answer before that.
        "budget_seconds": _key(4.0, number(0, 4.5, low_open=True),
            "A window answers within this (kuiperd gives a call 5 s); frames not done by then get an error "
            "element."),
    },
    "worker": {
        "max_restarts": _key(5, whole(0),
            "Worker deaths allowed within `worker.restart_window_seconds` before the degraded worker takes over "
            "(see [reliability.md](reliability.md))."),
        "restart_window_seconds": _key(60, number(0, low_open=True),
            "The window for counting worker deaths."),
        "max_rss_mb": _key(0, whole(0),  # 0: half of the box's memory
            "The worker's resident-memory cap; 0: half of the box's memory."),
    },
    "models": {
        "uploads": _key(None, optional(file_path()),
            "Where models by name (`{\"model\": \"partB\"}`) are looked up first; null: kuiperd's upload folder "
            "(`<data dir>/uploads`, where `POST /config/uploads` stores files), then the plugin's `models/`.",
            path=True),
        "max_loaded": _key(4, whole(1, 64),
            "Models by name kept loaded per function; beyond, the least recently used is unloaded."),
        "max_memory_mb": _key(1024, number(0, 1_000_000),
            "Memory the models by name of one function may take together, each as the process's resident memory "
            "grew while it loaded (at least its files' size); beyond, the least recently used are unloaded (the "
            "newest always stays). 0: no bound but `max_loaded`."),
        "settle_seconds": _key(1.0, number(0, 60),
            "A model's files must be unchanged this long before they are read (an upload in progress, an IR's "
            "`.xml` and `.bin` replaced one after the other); until then the version loaded before answers."),
    },
    "tuning": {
        "record": _key("models/measured.json", optional(file_path()),
            "Where what was measured at load (threads, runtime, window serving) is kept; a later load on the "
            "same box, model files and versions reuses it. Delete the file to measure again; null: measure "
            "at every load.", path=True),
    },
    "input": {
        "max_bytes": _key(20_000_000, whole(1),
            "Larger payloads are refused before decoding."),
        "max_pixels": _key(40_000_000, whole(4),
            "Larger images are refused from their header, before decoding (decompression bombs)."),
    },
}

# Environment variable -> (section, key). Paths are relative to the plugin dir.
ENV_OVERRIDES = {
    "LABEL_MODEL": ("label", "model"),
    "LABEL_LABELS": ("label", "labels"),
    "DEFECT_MODEL": ("defect", "model"),
    "DEFECT_DEVICE": ("defect", "device"),
    "DEFECT_COLOR": ("defect", "color"),
}


def defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of one section (for constructors' keyword defaults)."""
    return {name: key.default for name, key in SCHEMA[section].items()}


def check_value(section: str, name: str, value: Any, source: str = "") -> Any:
    """The value to use for section.name, or ConfigError naming the key, its rule and the source."""
    key = SCHEMA[section][name]
    try:
        return key.check(value)
    except Invalid:
        where = f" ({source})" if source else ""
        raise ConfigError(f"{section}.{name} must be {key.rule}, got {json.dumps(value)}{where}") from None


def _apply(settings: Settings, layer: Any, source: str) -> None:
    """Validate one layer (a parsed config file) and lay it over `settings`."""
    if not isinstance(layer, dict):
        raise ConfigError(f"{source} must hold a JSON object of sections ({', '.join(SCHEMA)}), "
                          f"got {type(layer).__name__}")
    for section, values in layer.items():
        if section not in SCHEMA:
            raise ConfigError(f"unknown section {json.dumps(section)} ({source}){_did_you_mean(section, SCHEMA)}; "
                              f"the sections are {', '.join(SCHEMA)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{section} must be an object of keys, got {json.dumps(values)} ({source})")
        for name, value in values.items():
            if name not in SCHEMA[section]:
                raise ConfigError(f"unknown key {section}.{name} ({source})"
                                  f"{_did_you_mean(name, SCHEMA[section], section + '.')}; "
                                  f"the keys of {section} are {', '.join(SCHEMA[section])}")
            settings[section][name] = check_value(section, name, value, source)


def _did_you_mean(name: str, known: Mapping[str, Any], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f": did you mean {prefix}{close[0]}?" if close else ""


def _read_json(path: str, source: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ConfigError(f"{source} cannot be read: {e.strerror or e}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{source} is not valid JSON: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source} is not valid JSON: nested too deeply") from None


def _env_value(section: str, name: str, text: str) -> Any:
    """An environment variable's text as the key's type: strings as they are, others as JSON."""
    if isinstance(SCHEMA[section][name].default, str) or SCHEMA[section][name].path:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # the check then names the key and the text


def config_files(path: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The files load_settings reads: config.json (if present) and the overlay."""
    environ = os.environ if environ is None else environ
    overlay = path or environ.get(OVERLAY_VAR)
    return [p for p in (CONFIG_FILE if os.path.isfile(CONFIG_FILE) else None, overlay) if p]


def load_settings(path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The schema's defaults, overlaid by config.json, by the file DEFECT_CONFIG (or `path`)
    names and by the environment, each validated; paths resolved against the plugin dir.

    Raises ConfigError (one line) on a value that breaks its key's rule, an unknown
    key or section, or a file that cannot be read or parsed.
    """
    environ = os.environ if environ is None else environ
    settings: Settings = {section: defaults(section) for section in SCHEMA}
    if os.path.isfile(CONFIG_FILE):
        _apply(settings, _read_json(CONFIG_FILE, "config.json"), "config.json")
    overlay = path or environ.get(OVERLAY_VAR)
    if overlay:
        source = path if path else f"{OVERLAY_VAR}={overlay}"
        _apply(settings, _read_json(overlay, source), source)
    for var, (section, name) in ENV_OVERRIDES.items():
        if environ.get(var):
            settings[section][name] = check_value(section, name, _env_value(section, name, environ[var]), var)
    return _resolve_paths(settings)


def _resolve_paths(settings: Settings) -> Settings:
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            if key.path and settings[section][name]:
                # Absolute values stay as they are (os.path.join keeps the second if absolute).
                settings[section][name] = os.path.join(PLUGIN_DIR, settings[section][name])
    return settings


def load_plugin_settings(environ: Mapping[str, str] | None = None) -> tuple[Settings, str | None]:
    """For the plugin process, which must never die of its config: (settings, None), or on a bad
    config (the schema's defaults, the ConfigError's one line), so the plugin can start and answer
    every call with that line until the config is fixed."""
    try:
        return load_settings(environ=environ), None
    except ConfigError as e:
        return _resolve_paths({section: defaults(section) for section in SCHEMA}), str(e)
    except Exception as e:  # a loader bug must not stop the plugin either
        return (_resolve_paths({section: defaults(section) for section in SCHEMA}),
                f"config could not be read: {type(e).__name__}: {e}")
