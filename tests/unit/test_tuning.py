"""What the config leaves open is measured while the model loads, the fastest kept and recorded; a value in
the config wins without a measurement (core/tuning.py, core/serving.py)."""
import json
import logging
import re
import time

import numpy as np
import pytest

from core.catalog import INFERENCE, LABEL_IMAGE
from core.results import answer
from core.serving import ServedFunction, ServedWindow
from core.tuning import Record, fastest, identity


class Sleeper:
    """A stand-in whose call time is set, to check the choice itself."""

    def __init__(self, seconds):
        self.seconds = seconds

    def call(self):
        time.sleep(self.seconds)


def test_the_fastest_candidate_is_kept_and_said_in_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        name, model = fastest({"slow": lambda: Sleeper(0.02), "fast": lambda: Sleeper(0.001),
                               "slower": lambda: Sleeper(0.03)}, Sleeper.call, "f")
    assert name == "fast" and model.seconds == 0.001
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("f: fast, measured at load (slow: ") and "fast: " in line and "slower: " in line


def test_one_candidate_is_built_without_a_measurement(caplog):
    built = []
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        name, _ = fastest({"only": lambda: built.append(1) or Sleeper(0)}, Sleeper.call, "h")
    assert (name, built, caplog.records) == ("only", [1], [])


def test_a_recorded_choice_is_reused_and_a_changed_identity_measures_again(tmp_path, caplog):
    record = Record(str(tmp_path / "measured.json"))
    built = []

    def builds(fast):
        return {name: (lambda name=name: built.append(name) or Sleeper(0.001 if name == fast else 0.02))
                for name in ("a", "b")}

    assert fastest(builds("b"), Sleeper.call, "f", record, lambda: "box 1")[0] == "b"
    assert sorted(built) == ["a", "b"]
    entry = json.loads((tmp_path / "measured.json").read_text())["f"]
    assert entry["choice"] == "b" and set(entry["ms"]) == {"a", "b"} and entry["identity"] == "box 1"

    built.clear()
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        # "a" would be faster now, but the box is the same: the recorded choice is built alone.
        assert fastest(builds("a"), Sleeper.call, "f", record, lambda: "box 1")[0] == "b"
    assert built == ["b"] and "as measured on this box" in caplog.records[0].getMessage()

    built.clear()
    assert fastest(builds("a"), Sleeper.call, "f", record, lambda: "box 2")[0] == "a"
    assert sorted(built) == ["a", "b"]


def test_an_unreadable_or_unwritable_record_only_costs_a_measurement(tmp_path):
    garbage = tmp_path / "measured.json"
    garbage.write_text("{not json")
    assert fastest({"a": lambda: Sleeper(0.001), "b": lambda: Sleeper(0.02)}, Sleeper.call, "f",
                   Record(str(garbage)), lambda: "box")[0] == "a"
    assert json.loads(garbage.read_text())["f"]["choice"] == "a"  # replaced by a good record
    missing_folder = Record(str(tmp_path / "no" / "such" / "folder" / "measured.json"))
    assert fastest({"a": lambda: Sleeper(0.001), "b": lambda: Sleeper(0.02)}, Sleeper.call, "f",
                   missing_folder, lambda: "box")[0] == "a"


def test_identity_changes_with_the_model_files_and_the_candidates(tmp_path):
    model = tmp_path / "m.bin"
    model.write_bytes(b"1")
    first = identity([str(model)], ["a", "b"], {})
    assert identity([str(model)], ["a", "b"], {}) == first
    assert identity([str(model)], ["a"], {}) != first
    model.write_bytes(b"22")
    assert identity([str(model)], ["a", "b"], {}) != first


def measured(settings, record, **label):
    return {**settings, "label": {**settings["label"], **label},
            "defect": {**settings["defect"], "threads": 0}, "tuning": {"record": record}}


def test_label_runtime_auto_keeps_what_its_own_log_line_reports_faster(settings, caplog, tmp_path, monkeypatch):
    monkeypatch.setattr("label.platform.machine", lambda: "x86_64")
    auto = measured(settings, str(tmp_path / "measured.json"), runtime="auto", threads=0)
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        labeler = ServedFunction(LABEL_IMAGE, auto).load_model()
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("labelImage:")]
    timings = dict((name, float(ms)) for name, ms in re.findall(r"(\w+ at \d+ threads?): ([\d.]+) ms", line))
    # Both runtimes timed, at 1 thread and at every core (one name when the box has one core).
    assert {name.split(" at ")[0] for name in timings} == {"litert", "openvino"}, line
    fastest_name = min(timings, key=timings.get)
    assert line.startswith(f"labelImage: {fastest_name}, measured at load"), line
    runtime, threads = fastest_name.split(" at ")
    kept = {"litert": "LiteRTRunner", "openvino": "OpenVINORunner"}[runtime]
    assert type(labeler.runner).__name__ == kept and labeler.threads == int(threads.split()[0]), line
    assert answer(labeler.label(frame_for(labeler)))[0]["label"]


@pytest.mark.parametrize("runtime", ["litert", "openvino"])
def test_an_explicit_runtime_and_threads_skip_the_measurement(settings, caplog, tmp_path, runtime):
    explicit = measured(settings, str(tmp_path / "measured.json"), runtime=runtime, threads=1)
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        labeler = ServedFunction(LABEL_IMAGE, explicit).load_model()
    assert not caplog.records  # nothing measured, nothing said
    assert labeler.runtime == runtime and labeler.threads == 1
    assert not (tmp_path / "measured.json").exists()


def test_an_explicit_runtime_still_measures_open_threads(settings, caplog, tmp_path, monkeypatch):
    monkeypatch.setattr("core.tuning.usable_cores", lambda: 2)
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        ServedFunction(LABEL_IMAGE, measured(settings, None, runtime="openvino", threads=0)).load_model()
    [line] = [r.getMessage() for r in caplog.records]
    assert "openvino at 1 thread: " in line and "openvino at 2 threads: " in line and "litert" not in line


def test_defect_threads_are_measured_at_zero_and_an_explicit_number_wins(settings, caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        segmenter = ServedFunction(INFERENCE, measured(settings, None)).load_model()
    said = " ".join(r.getMessage() for r in caplog.records)
    # The model kept is the one the log line names (on one core: 1 without a measurement).
    said_threads = re.search(r"inference: (\d+) threads?, measured at load", said)
    expected = int(said_threads.group(1)) if said_threads else 1
    assert segmenter.compiled.get_property("INFERENCE_NUM_THREADS") == expected, said

    caplog.clear()
    explicit = {**settings, "defect": {**settings["defect"], "threads": 1}}
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        segmenter = ServedFunction(INFERENCE, explicit).load_model()
    assert segmenter.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert not caplog.records


@pytest.mark.parametrize("spec", [LABEL_IMAGE, INFERENCE], ids=lambda spec: spec.name)
def test_the_window_keeps_the_serving_its_own_log_line_reports_faster(settings, caplog, tmp_path, monkeypatch, spec):
    monkeypatch.setattr("core.tuning.usable_cores", lambda: 2)
    monkeypatch.setattr("core.serving.usable_cores", lambda: 2)
    window_settings = {**measured(settings, str(tmp_path / "measured.json"), runtime="openvino", threads=0),
                       "batch": {**settings["batch"], "workers": 2, "serving": "auto"}}
    window = ServedWindow(spec, window_settings)
    with caplog.at_level(logging.INFO, logger="core.tuning"):
        models = window.load_model()
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(window.name)]
    timings = dict((name, float(ms)) for name, ms in re.findall(r"(\d [\w ()]+?): ([\d.]+) ms", line))
    on = " (openvino)" if spec is LABEL_IMAGE else ""  # the per-frame function's runtime, named when it has one
    assert set(timings) == {f"2 copies at 1 thread{on}", f"1 model at 2 threads{on}",
                            f"1 model with 2 streams{on}"}, line
    best = min(timings, key=timings.get)
    assert line.startswith(f"{window.name}: {best}, measured at load"), line
    distinct = {id(model) for model in models.models}
    assert len(distinct) == (2 if best.startswith("2 copies") else 1)


def frame_for(model):
    width, height = model.decode_size
    return np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_with_no_record_yet_the_first_frames_are_served_while_the_measurement_runs(settings, caplog, tmp_path,
                                                                                   monkeypatch):
    """A load that must measure first serves the first runtime at every core, then swaps in the choice."""
    monkeypatch.setattr("label.platform.machine", lambda: "x86_64")
    monkeypatch.setattr("core.tuning.usable_cores", lambda: 2)
    auto = measured(settings, str(tmp_path / "measured.json"), runtime="auto", threads=0)
    function = ServedFunction(LABEL_IMAGE, auto)
    with caplog.at_level(logging.INFO):
        function.start_loading()
        assert function.loaded.wait(120) and function.error is None, function.error
        first = function.model
        assert (first.runtime, first.threads) == ("litert", 2)  # serving before any measurement
        deadline = time.monotonic() + 120
        while not (tmp_path / "measured.json").exists() or function.model is first:
            assert time.monotonic() < deadline, "the measurement never replaced the first model"
            time.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("labelImage:")]
    assert said[0] == "labelImage: model loaded" and "measured at load" in said[1], said
    kept = re.match(r"labelImage: (\w+) at (\d+) thread", said[1]).groups()
    assert (function.model.runtime, function.model.threads) == (kept[0], int(kept[1]))
    again = ServedFunction(LABEL_IMAGE, auto)  # the next load reads the record: no interim model
    model, measure_later = again.first_model()
    assert not measure_later and (model.runtime, model.threads) == (kept[0], int(kept[1]))


def test_a_window_with_no_record_yet_serves_one_model_while_its_ways_are_measured(settings, caplog, tmp_path,
                                                                               monkeypatch):
    """The window form serves its first frames on one model of the first runtime at every core, then swaps in
    the way its measurement keeps; the next load reads the record and measures nothing."""
    monkeypatch.setattr("label.platform.machine", lambda: "x86_64")
    monkeypatch.setattr("core.tuning.usable_cores", lambda: 2)
    monkeypatch.setattr("core.serving.usable_cores", lambda: 2)
    record = tmp_path / "measured.json"
    auto = {**measured(settings, str(record), runtime="auto", threads=0),
            "batch": {**settings["batch"], "workers": 2, "serving": "auto"}}
    window = ServedWindow(LABEL_IMAGE, auto)
    with caplog.at_level(logging.INFO):
        window.start_loading()
        assert window.loaded.wait(120) and window.error is None, window.error
        first = window.model
        # One model at every core, shared by both workers: one build before the first window.
        assert [(m.runtime, m.threads) for m in first.models] == [("litert", 2), ("litert", 2)]
        assert len({id(m) for m in first.models}) == 1
        deadline = time.monotonic() + 180
        while window.model is first or window.name not in json.loads(record.read_text() if record.exists() else "{}"):
            assert time.monotonic() < deadline, "the measurement never replaced the first copies"
            time.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{window.name}:")]
    assert said[0] == f"{window.name}: 2 workers, 1 model at 2 threads (litert) while the ways are measured", said
    assert said[1] == f"{window.name}: model loaded", said
    [line] = [m for m in said if "measured at load" in m]
    kept = re.match(rf"{window.name}: (.+?), measured at load", line).group(1)
    assert said[-1] == f"{window.name}: 2 workers, {kept}", said
    runtime = re.search(r"\((\w+)\)$", kept).group(1)
    assert {m.runtime for m in window.model.models} == {runtime}
    model, measure_later = ServedWindow(LABEL_IMAGE, auto).first_model()
    assert not measure_later and {m.runtime for m in model.models} == {runtime}
