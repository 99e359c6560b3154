"""An upload folder as kuiperd's `POST /config/uploads` leaves it, and calls retried while a model by name
loads: shared by the tests of models by name, the service's, and bench.named_models."""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from tests.support.paths import REPO, fixture_path

ANOMALIB = fixture_path("models", "anomalib_padim_surface")


def age(*paths: Any, seconds: float = 10.0) -> None:
    """Files as if written `seconds` ago: settled for the pool's settle time."""
    old = time.time() - seconds
    for path in paths:
        os.utime(path, (old, old))


def upload_folder(folder: str | os.PathLike) -> str:
    """Makes `folder` as an upload folder holding partA (the default segmenter), partB (the anomalib export)
    and cls (the MobileNet classifier with its labels), all settled; returns its path."""
    os.makedirs(folder)
    for name, source in (("partA", os.path.join(REPO, "models", "model")), ("partB", os.path.join(ANOMALIB, "model"))):
        for suffix in (".xml", ".bin"):
            shutil.copy(source + suffix, os.path.join(folder, name + suffix))
    shutil.copy(os.path.join(REPO, "models", "mobilenet_v2_1.0_224_quant.tflite"), os.path.join(folder, "cls.tflite"))
    shutil.copy(os.path.join(REPO, "models", "imagenet_labels.txt"), os.path.join(folder, "cls.txt"))
    age(*(os.path.join(folder, name) for name in os.listdir(folder)))
    return str(folder)


def while_loading(call: Callable[[], Any], timeout: float = 60) -> Any:
    """call(), retried while a model by name is still loading (its first call starts the load); any other
    error, or "still loading" past `timeout`, is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as e:
            if "still loading" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
