"""Models by name: where a name a rule gives (`{"model": "partB"}`) finds its files.

A name is looked up in eKuiper's upload folder (`<kuiperd data dir>/uploads`, where
`POST /config/uploads` stores files, so eKuiper's own `onnx("name", ...)` and this plugin read the
same place), then in the plugin's `models/`. It is a name, never a path: letters, digits, `_`, `-`
and `.`, so no call can read a file outside those two folders.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError, shown

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# An anomalib export folder (`anomalib export --export_type openvino`): the IR at its top or under weights/openvino.
METADATA = "metadata.json"  # beside an anomalib 1.x export's model (inference.AnomalibMetadata)
MODEL_SUFFIXES = (".xml", ".onnx", ".tflite")  # the files a segmenter's name may stand for, in the order looked for
EXPORT_LAYOUTS = ("model.xml", os.path.join("weights", "openvino", "model.xml"))


def check_name(name: object) -> str:
    """The name, or InputError in one line: a name, not a path."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise InputError(f"model must be a model's name (letters, digits, _ - and ., up to 64, no path), "
                         f"got {shown(name)}")
    return name


def uploads_dir(plugin_dir: str, environ: dict | None = None) -> str | None:
    """kuiperd's `<data dir>/uploads`, as kuiperd v2.4.2 finds its data dir: `$KuiperBaseKey/data`, else
    `data` beside the `plugins` folder the plugin was installed into (`<base>/plugins/portable/defect`,
    relative and absolute modes alike). None when neither exists (the plugin run outside kuiperd)."""
    environ = os.environ if environ is None else environ
    bases = []
    if environ.get("KuiperBaseKey"):
        bases.append(Path(environ["KuiperBaseKey"]))
    plugin = Path(plugin_dir).resolve()
    if plugin.parent.name == "portable" and plugin.parent.parent.name == "plugins":
        bases.append(plugin.parent.parent.parent)
    for base in bases:
        if (base / "data").is_dir():
            return str(base / "data" / "uploads")
    return None


@dataclass(frozen=True)
class ModelFiles:
    """A named model's files: `model` is what its runtime reads, `files` every file it depends on."""

    name: str
    model: str
    files: tuple[str, ...]
    labels: str | None = None

    def stats(self) -> tuple:
        """(path, size, mtime in ns) of each file; a missing file has None for both."""
        out = []
        for path in self.files:
            try:
                st = os.stat(path)
                out.append((path, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((path, None, None))
        return tuple(out)

    @staticmethod
    def version_of(stats: tuple) -> str:
        """A version to show: the newest file's modification time and a short digest of every file's size and time."""
        newest = max((mtime for _, _, mtime in stats if mtime), default=0)
        digest = hashlib.sha256(repr(stats).encode()).hexdigest()[:8]
        return f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(newest / 1e9))}-{digest}"

    @staticmethod
    def settled(stats: tuple, seconds: float, now_ns: int | None = None) -> bool:
        """Every file present and none changed within `seconds`: an upload (one file at a time, an IR's
        .xml and .bin one after the other) is not read half-done."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        return all(mtime is not None and now_ns - mtime >= seconds * 1e9 for _, _, mtime in stats)


def resolve(name: str, suffixes: tuple[str, ...], folders: list[str], labelled: bool = False,
            exports: bool = False) -> ModelFiles:
    """The files a name stands for, from the first folder that has them.

    Args:
        name: checked with `check_name`.
        suffixes: the model files a function takes, in order (`.xml` brings its `.bin`).
        folders: where to look, in order (`search_folders`).
        labelled: a classifier: its labels file `<name>.txt` or `<name>_labels.txt` must lie beside it.
        exports: a folder `<name>/` holding an anomalib export counts too.

    Raises:
        InputError: no such model, or its labels (or an IR's .bin) are missing; one line naming what was looked for.
    """
    check_name(name)
    for folder in folders:
        for suffix in suffixes:
            path = os.path.join(folder, name + suffix)
            if os.path.isfile(path):
                return _files(name, path, folder, labelled)
        if exports and os.path.isdir(os.path.join(folder, name)):
            for layout in EXPORT_LAYOUTS:
                path = os.path.join(folder, name, layout)
                if os.path.isfile(path):
                    return _files(name, path, folder, labelled)
    kinds = ", ".join(name + s for s in suffixes) + (f" or a folder {name}/ with an anomalib export" if exports else "")
    raise InputError(f"no model named {shown(name)}: looked for {kinds} in {', '.join(folders) or 'no folder'}")


def _files(name: str, path: str, folder: str, labelled: bool) -> ModelFiles:
    files = [path]
    if path.endswith(".xml"):
        weights = path[:-4] + ".bin"
        if not os.path.isfile(weights):
            raise InputError(f"model {name}: {os.path.basename(path)} has no {os.path.basename(weights)} beside it")
        files.append(weights)
    metadata = metadata_beside(path)
    if not labelled and metadata and os.path.isfile(metadata):  # an anomalib 1.x export's: part of its version
        files.append(metadata)
    labels = None
    if labelled:
        labels = next((p for p in (os.path.join(folder, f"{name}.txt"), os.path.join(folder, f"{name}_labels.txt"))
                       if os.path.isfile(p)), None)
        if labels is None:
            raise InputError(f"model {name}: its labels file {name}.txt (or {name}_labels.txt) is not beside it")
        files.append(labels)
    return ModelFiles(name, path, tuple(files), labels)


def metadata_beside(model_path: str) -> str | None:
    """Where an anomalib 1.x export keeps its thresholds: metadata.json beside a model file named as the export
    names it (model.xml, model.onnx); None for any other model, so one metadata.json in a folder of loose
    models (kuiperd's flat upload folder) never applies to the others."""
    if os.path.splitext(os.path.basename(model_path))[0] != "model":
        return None
    return os.path.join(os.path.dirname(os.path.abspath(model_path)), METADATA)


def search_folders(configured: str | None, plugin_dir: str) -> list[str]:
    """Where names are looked up: models.uploads (null: kuiperd's, `uploads_dir`), then the plugin's models/."""
    uploads = configured or uploads_dir(plugin_dir)
    return [folder for folder in (uploads, os.path.join(plugin_dir, "models")) if folder]
