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


DEFAULTS = os.path.join(PLUGIN_DIR, "config.json")


def load_settings(path=None, environ=None):
    """config.json, overlaid by the file DEFECT_CONFIG names and by the environment; paths resolved.

    The overlay lets a site config name only what it changes.
    """
    environ = os.environ if environ is None else environ
    with open(DEFAULTS, encoding="utf-8") as f:
        settings = json.load(f)
    path = path or environ.get("DEFECT_CONFIG")
    if path:
        with open(path, encoding="utf-8") as f:
            for section, values in json.load(f).items():
                settings.setdefault(section, {}).update(values)
    for var, (section, key) in ENV_OVERRIDES.items():
        if environ.get(var):
            settings.setdefault(section, {})[key] = environ[var]
    for section, key in PATH_KEYS:
        value = settings.get(section, {}).get(key)
        if value:
            settings[section][key] = os.path.join(PLUGIN_DIR, value)  # absolute values stay as they are
    return settings
