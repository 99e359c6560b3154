"""The declared config schema (settings.SCHEMA): one default per key, every layer validated.

config.json lists every key for the people who edit it; the schema holds the defaults; these
tests keep the two in agreement (docs/configuration.md is rendered from the schema and checked by
tests/unit/test_config_doc.py), and hold each key to its rule in each
layer: config.json, the DEFECT_CONFIG overlay and the environment.
"""
import inspect
import json
import os
import re

import pytest

from core import settings as settings_module
from core.errors import ConfigError
from core.settings import SCHEMA, check_value, defaults, load_plugin_settings, load_settings
from inference import DefectSegmenter
from label import ImageLabeler
from tests.support.paths import REPO

# Each key: values it takes (as written in JSON) and values it refuses. Every key must be listed.
VALUES = {
    "label.model": (["models/x.tflite", "/abs/x.tflite"], ["", "  ", 3, None, ["a"]]),
    "label.labels": (["labels.txt"], ["", False, 1.5]),
    "label.top_k": ([1, 5, 1000, 3.0], [0, -1, 2.5, "5", True, None]),
    "label.threads": ([0, 1, 8], [-1, 1.5, "2", 2000]),
    "label.runtime": (["auto", "litert", "OpenVINO"], ["tflite", "", None, 1]),
    "defect.model": (["models/model.xml", "m.onnx"], ["", 0]),
    "defect.device": (["CPU", "gpu", "GPU.1", "AUTO:GPU,CPU", "NPU"], ["TPU", "", 1, None]),
    "defect.threshold": ([0, 0.5, 1, 1.0], [-0.1, 1.01, "high", "0.5", None, True, float("nan")]),
    "defect.color": (["RGB", "bgr"], ["RGBA", "", 0]),
    "defect.min_area": ([0, 12.5, 1000], [-1, "10", None]),
    "defect.jpeg_quality": ([0, 80, 100], [101, -1, 80.5, "80"]),
    "defect.threads": ([0, 2], [-2, "1"]),
    "defect.input_size": ([None, 256, [640, 480]], [[0, 1], [256], [256, 256, 3], "256x256", 15, 9000, [16.5, 16]]),
    "defect.input_scale": ([None, 1, 255, 0.5], [0, -1, "255", 70000]),
    "defect.output": ([None, "anomaly_map"], ["", 3]),
    "batch.workers": ([0, 4], [-1, 2.5]),
    "batch.budget_seconds": ([0.01, 4, 4.5], [0, 4.6, 5, -1, "4"]),
    "batch.serving": (["auto", "copies", "shared", "streams"], ["", "queue", 1, None]),
    "models.uploads": (["/srv/kuiper/data/uploads", "uploads", None], ["", 3, ["a"]]),
    "models.max_loaded": ([1, 4, 64], [0, 65, 2.5, "4", None]),
    "models.max_memory_mb": ([0, 1024, 0.5, 1_000_000], [-1, 1_000_001, "1024", None, True]),
    "models.settle_seconds": ([0, 1, 2.5, 60], [-1, 61, "1", None]),
    "tuning.record": (["models/measured.json", "/abs/measured.json", None], ["", "  ", 3, ["a"]]),
    "worker.max_restarts": ([0, 5], [-1, 1.5]),
    "worker.restart_window_seconds": ([0.5, 60], [0, -5, "60"]),
    "worker.max_rss_mb": ([0, 512], [-1, "512"]),
    "input.max_bytes": ([1, 20_000_000], [0, -5, 1e3 + 0.5, "big"]),
    "input.max_pixels": ([4, 40_000_000], [3, 0, None]),
}


def key_names():
    return [f"{section}.{name}" for section, keys in SCHEMA.items() for name in keys]


def overlay(tmp_path, content):
    path = tmp_path / "site.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_every_key_has_values_to_test():
    assert sorted(VALUES) == sorted(key_names())


@pytest.mark.parametrize("dotted", sorted(VALUES))
def test_each_key_takes_its_values_and_refuses_others_in_one_line(dotted, tmp_path):
    section, name = dotted.split(".")
    good, bad = VALUES[dotted]
    for value in good:
        loaded = load_settings(overlay(tmp_path, {section: {name: value}}), environ={})
        assert loaded[section][name] is not None or value is None
    rule = SCHEMA[section][name].rule
    for value in bad:
        path = overlay(tmp_path, {section: {name: value}})
        with pytest.raises(ConfigError) as err:
            load_settings(environ={"DEFECT_CONFIG": path})
        message = str(err.value)
        assert message == f"{dotted} must be {rule}, got {json.dumps(value)} (DEFECT_CONFIG={path})"
        assert "\n" not in message


def test_the_issues_example_line(tmp_path):
    path = overlay(tmp_path, {"defect": {"threshold": "high"}})
    with pytest.raises(ConfigError, match=re.escape(
            f'defect.threshold must be a number from 0 to 1, got "high" (DEFECT_CONFIG={path})')):
        load_settings(environ={"DEFECT_CONFIG": path})


def test_values_are_converted_to_their_keys_types(tmp_path):
    loaded = load_settings(overlay(tmp_path, {"label": {"top_k": 3.0}, "defect": {"device": "gpu", "color": "bgr",
                                                                                   "input_size": 256}}), environ={})
    assert loaded["label"]["top_k"] == 3 and isinstance(loaded["label"]["top_k"], int)
    assert (loaded["defect"]["device"], loaded["defect"]["color"]) == ("GPU", "BGR")
    assert loaded["defect"]["input_size"] == [256, 256]


@pytest.mark.parametrize("layer,expected", [
    ({"defect": {"treshold": 0.3}}, "unknown key defect.treshold ({src}): did you mean defect.threshold?; "
                                    "the keys of defect are model, device, threshold, color, min_area, jpeg_quality, "
                                    "threads, input_size, input_scale, output"),
    ({"lable": {}}, 'unknown section "lable" ({src}): did you mean label?; '
                    "the sections are label, defect, batch, worker, models, tuning, input"),
    ({"defect": 3}, "defect must be an object of keys, got 3 ({src})"),
    ([1, 2], "{src} must hold a JSON object of sections (label, defect, batch, worker, models, tuning, input), "
             "got list"),
    ("{not json", "{src} is not valid JSON: Expecting property name enclosed in double quotes: "
                  "line 1 column 2 (char 1)"),
])
def test_unknown_keys_and_bad_files_are_one_line(tmp_path, layer, expected):
    path = overlay(tmp_path, layer)
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"DEFECT_CONFIG": path})
    assert str(err.value) == expected.format(src=f"DEFECT_CONFIG={path}")


def test_a_missing_overlay_names_itself(tmp_path):
    missing = str(tmp_path / "nowhere.json")
    with pytest.raises(ConfigError, match=re.escape(f"DEFECT_CONFIG={missing} cannot be read: No such file")):
        load_settings(environ={"DEFECT_CONFIG": missing})
    with pytest.raises(ConfigError, match=re.escape(f"{missing} cannot be read")):  # given as an argument
        load_settings(missing, environ={})


def test_config_json_is_validated_too_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr(settings_module, "CONFIG_FILE", overlay(tmp_path, {"input": {"max_pixels": "many"}}))
    with pytest.raises(ConfigError, match=re.escape(
            'input.max_pixels must be a whole number of at least 4, got "many" (config.json)')):
        load_settings(environ={})


def test_without_config_json_the_schema_defaults_hold(tmp_path, monkeypatch):
    with_config_json = load_settings(environ={})
    monkeypatch.setattr(settings_module, "CONFIG_FILE", str(tmp_path / "absent.json"))
    assert load_settings(environ={}) == with_config_json


def test_the_environment_is_validated_and_named():
    with pytest.raises(ConfigError, match=re.escape('defect.device must be one of CPU, GPU, NPU, AUTO')) as err:
        load_settings(environ={"DEFECT_DEVICE": "TPU"})
    assert str(err.value).endswith('got "TPU" (DEFECT_DEVICE)')
    with pytest.raises(ConfigError, match=re.escape('defect.color must be one of RGB, BGR, got "RGBA" (DEFECT_COLOR)')):
        load_settings(environ={"DEFECT_COLOR": "RGBA"})


def test_an_environment_variable_for_a_number_is_read_as_one(monkeypatch):
    monkeypatch.setitem(settings_module.ENV_OVERRIDES, "DEFECT_TEST_TOP_K", ("label", "top_k"))
    assert load_settings(environ={"DEFECT_TEST_TOP_K": "3"})["label"]["top_k"] == 3
    with pytest.raises(ConfigError, match=re.escape('label.top_k must be a whole number of at least 1, got "three" '
                                                    "(DEFECT_TEST_TOP_K)")):
        load_settings(environ={"DEFECT_TEST_TOP_K": "three"})


def test_config_json_lists_every_key_with_the_schemas_default():
    """config.json is the users' list of keys; the schema is where the defaults live. They agree."""
    with open(os.path.join(REPO, "config.json")) as f:
        config = json.load(f)
    assert {section: set(keys) for section, keys in config.items()} == \
        {section: set(keys) for section, keys in SCHEMA.items()}
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            assert config[section][name] == key.default, f"{section}.{name}: config.json {config[section][name]!r}, " \
                                                          f"schema {key.default!r}"


def test_constructors_default_to_the_schema():
    """The classes' keyword defaults are the schema's, not a second copy."""
    for cls, section, skip in ((DefectSegmenter, "defect", {"model_path"}), (ImageLabeler, "label", set())):
        params = inspect.signature(cls).parameters
        for name, param in params.items():
            if name in SCHEMA[section] and param.default is not inspect.Parameter.empty and name not in skip:
                if name == "threads" and cls is ImageLabeler:
                    continue  # 0 there means every core, as label.threads 0 does after measuring
                assert param.default == defaults(section)[name], (cls.__name__, name)
    assert inspect.signature(ImageLabeler).parameters["top_k"].default == defaults("label")["top_k"]
    assert inspect.signature(DefectSegmenter).parameters["threshold"].default == defaults("defect")["threshold"]


def test_check_value_serves_unchecked_callers():
    assert check_value("defect", "input_size", 64) == [64, 64]
    with pytest.raises(ConfigError, match=r"^defect.input_size must be null, \[width, height\]"):
        check_value("defect", "input_size", [0, "a"])


def test_the_plugin_loader_never_raises_and_keeps_the_line(tmp_path):
    path = overlay(tmp_path, {"defect": {"threshold": "high"}})
    loaded, error = load_plugin_settings(environ={"DEFECT_CONFIG": path})
    assert error == f'defect.threshold must be a number from 0 to 1, got "high" (DEFECT_CONFIG={path})'
    assert loaded["defect"]["threshold"] == defaults("defect")["threshold"]
    assert loaded["defect"]["model"] == os.path.join(settings_module.PLUGIN_DIR, "models", "model.xml")
    assert load_plugin_settings(environ={}) == (load_settings(environ={}), None)
