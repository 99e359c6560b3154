"""The one config loader: config.json in the plugin dir, then environment overrides.

Model paths come only from here (file or environment), never from SQL arguments,
so a rule cannot make the plugin read arbitrary files.
"""
import json
import os

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))

# Environment variable -> (section, key). Paths are relative to the plugin dir.
ENV_OVERRIDES = {
    "LABEL_MODEL": ("label", "model"),
    "LABEL_LABELS": ("label", "labels"),
    "DEFECT_MODEL": ("defect", "model"),
    "DEFECT_DEVICE": ("defect", "device"),
    "DEFECT_COLOR": ("defect", "color"),
}
PATH_KEYS = {("label", "model"), ("label", "labels"), ("defect", "model")}


def load_settings(path=None, environ=None):
    """Read the config file (DEFECT_CONFIG or config.json), apply env overrides, resolve paths."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("DEFECT_CONFIG") or os.path.join(PLUGIN_DIR, "config.json")
    with open(path, encoding="utf-8") as f:
        settings = json.load(f)
    for var, (section, key) in ENV_OVERRIDES.items():
        if environ.get(var):
            settings.setdefault(section, {})[key] = environ[var]
    for section, key in PATH_KEYS:
        value = settings.get(section, {}).get(key)
        if value:
            settings[section][key] = os.path.join(PLUGIN_DIR, value)  # absolute values stay as they are
    return settings
