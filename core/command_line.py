"""The command line shared by `python label.py` and `python inference.py`, in the style of
TensorFlow Lite's label_image.py: images or folders in, one JSON line per image out.

Each line is {"image": path, "ms": time for that image (read, decode, model), "result": what the
SQL function returns for it}. A file that cannot be served gets one line on stderr and the
others are still served; the exit status is 1 if any failed, 2 if nothing could run (a bad
config or a model that does not load).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from core.errors import ConfigError, InputError, first_line
from core.model_names import ModelFiles, resolve, search_folders
from core.regions import Roi
from core.settings import PLUGIN_DIR, SCHEMA, Settings, check_value

# What a folder is searched for; a file named on the command line is tried whatever its name.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that answers a bad command line with one line on stderr (argparse's own adds the
    usage block before it) and exit status 2; --help still prints the whole usage."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"error: {message} (see --help)")


def add_images_argument(parser: argparse.ArgumentParser, default_image: str) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help=f"image files or folders (a folder: its {', '.join(IMAGE_SUFFIXES)} files); "
                             f"default: {os.path.relpath(default_image, PLUGIN_DIR)} of the plugin dir")


def config_type(section: str, name: str) -> Callable[[str], Any]:
    """An argparse type that holds a command-line value to the config key's rule."""
    def convert(text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        try:
            return check_value(section, name, value)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"must be {SCHEMA[section][name].rule}, got {text!r}") from None
    return convert


def with_overrides(settings: Settings, section: str, **values: Any) -> Settings:
    """The settings with the command line's values (None: not given) in one section, checked."""
    given = {name: check_value(section, name, value, "command line") for name, value in values.items()
             if value is not None}
    return {**settings, section: {**settings[section], **given}}


def add_name_arguments(parser: argparse.ArgumentParser, function: str, model_flag: str) -> None:
    """--model-name and --roi, as the function's options object takes "model" and "roi"."""
    parser.add_argument("--model-name", metavar="NAME",
                        help=f"a model by name, found as {function}(image, {{\"model\": NAME}}) finds it: in kuiperd's "
                             f"uploads (models.uploads), then the plugin's models/ (instead of {model_flag})")
    parser.add_argument("--roi", type=region_argument, metavar="X,Y,W,H",
                        help="run on this region only: pixels of the image, or fractions of its size (all four at "
                             "most 1); boxes stay in the whole image's pixels")


def region_argument(text: str) -> Roi:
    try:
        return Roi.parse(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def named_model(prog: str, name: str, settings: Settings, suffixes: tuple[str, ...], labelled: bool = False,
                exports: bool = False) -> ModelFiles:
    """The files a model's name stands for (core.model_names.resolve), or exit 2 with its one line."""
    try:
        return resolve(name, suffixes, search_folders(settings["models"]["uploads"], PLUGIN_DIR), labelled, exports)
    except InputError as e:
        fail(prog, str(e))


def absolute(path: str | None) -> str | None:
    """A path given on the command line is relative to the working directory, not the plugin dir."""
    return os.path.abspath(path) if path else None


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(2)


def image_paths(given: list[str], default: str) -> tuple[list[str], list[str]]:
    """(image files to serve, one-line errors for folders without images), folders expanded in name order."""
    paths, errors = [], []
    for path in given or [default]:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, name)))
            if not found:
                errors.append(f"{path}: a folder without {', '.join(IMAGE_SUFFIXES)} files")
            paths.extend(found)
        else:
            paths.append(path)
    return paths, errors


def serve_images(prog: str, given: list[str], default: str, serve: Callable[[str, bytes], Any]) -> int:
    """serve(path, file bytes) -> result, for each image; returns the exit status."""
    paths, errors = image_paths(given, default)
    for message in errors:
        print(f"{prog}: {message}", file=sys.stderr)
    failed = len(errors)
    for path in paths:
        started = time.perf_counter()
        try:
            with open(path, "rb") as f:
                data = f.read()
            result = serve(path, data)
        except InputError as e:
            message = str(e)
        except OSError as e:
            message = e.strerror or first_line(e)
        except Exception as e:  # a bug must not cost the other images; one line, as the plugin answers
            message = f"internal error: {first_line(e)}"
        else:
            elapsed_ms = (time.perf_counter() - started) * 1000
            print(json.dumps({"image": path, "ms": round(elapsed_ms, 2), "result": result}), flush=True)
            continue
        failed += 1
        print(f"{prog}: {path}: {message}", file=sys.stderr, flush=True)
    return 1 if failed else 0
