"""The plugin's settings with some keys changed, and the probes tests/integration/test_config.py shares
with the fresh Python processes it starts (they import this module from the repo root)."""
import os

import cv2
import numpy as np

from core.settings import load_settings
from tests.support.paths import fixture_path

DEFAULTS = load_settings(environ={})


def with_keys(**sections: dict) -> dict:
    """The default settings (config.json, no environment) with some keys of some sections changed:
    with_keys(label={"threads": 2})."""
    return {name: {**values, **sections.get(name, {})} for name, values in DEFAULTS.items()}


def cat() -> np.ndarray:
    """The cat fixture photo, BGR (its top label is 286:Egyptian cat)."""
    return cv2.imread(fixture_path("images", "cat.bmp"))


def thread_count() -> int:
    """Threads of this process now (Linux /proc)."""
    return len(os.listdir("/proc/self/task"))
