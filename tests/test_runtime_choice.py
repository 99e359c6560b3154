"""label.runtime auto: both runtimes measured at load on the real model, the faster kept, one line says so.

The figures come from the plugin's own log line; no assertion here is about how fast anything is,
only that what was kept is what the line reports faster, and that an explicit runtime (or a window
copy after a measurement) loads nothing else.
"""
import gc
import logging
import re
import weakref

import cv2
import pytest

import label
from batch_func import LabelImageBatch
from label_func import LabelImage

FIGURES = re.compile(r"((?:\w+ [\d.]+ ms, )*\w+ [\d.]+ ms) per frame at (\d+) threads?")
KEEPING = re.compile(r"; keeping (\w+)(?: at (\d+) threads?)?; ")


@pytest.fixture
def builds(monkeypatch):
    """Every labeller the code tries to build, as (runtime, threads, weak reference or None if it
    failed), in a process where no runtime choice was made yet."""
    monkeypatch.setattr(label, "_runtime_kept", {})
    tried = []

    class Spy(label.ImageLabeler):
        def __init__(self, model_path, labels_path, top_k=5, threads=0, *, runtime, **readers):
            tried.append([runtime, threads, None])
            super().__init__(model_path, labels_path, top_k, threads, runtime=runtime, **readers)
            tried[-1][2] = weakref.ref(self)

    monkeypatch.setattr(label, "ImageLabeler", Spy)
    return tried


def with_label(settings, **keys):
    return {**settings, "label": {**settings["label"], **keys}}


def runtime_lines(caplog):
    return [r.getMessage() for r in caplog.records if "runtime auto" in r.getMessage()]


def figures(line):
    """{(runtime, threads): ms} from the line."""
    found = {(runtime, int(threads)): float(ms)
             for group, threads in FIGURES.findall(line) for runtime, ms in re.findall(r"(\w+) ([\d.]+) ms", group)}
    assert found, line
    return found


def fastest(measured, threads=None):
    """The candidates the line reports fastest (at `threads` if given); a tie at the line's 0.1 ms
    shows more than one, and the one kept may be either."""
    shown = {key: ms for key, ms in measured.items() if threads in (None, key[1])}
    return {key for key, ms in shown.items() if ms == min(shown.values())}


def cat(labeler):
    width, height = labeler.decode_size
    return cv2.resize(cv2.imread(label.SAMPLE_IMAGE), (width, height))


def test_auto_keeps_the_runtime_its_line_reports_faster_and_frees_the_other(settings, builds, caplog):
    with caplog.at_level(logging.INFO, logger="label"):
        labeler = label.labeler_from_settings(with_label(settings, runtime="auto", threads=1))
    [line] = runtime_lines(caplog)
    measured = figures(line)
    assert set(measured) == {("openvino", 1), ("litert", 1)}, line  # both runtimes, at the thread count asked
    kept = KEEPING.search(line).group(1)
    assert (kept, 1) in fastest(measured), line
    assert labeler.runtime == kept
    assert type(labeler.runner).__name__ == {"openvino": "OpenVINORunner", "litert": "LiteRTRunner"}[kept]
    assert labeler.label(cat(labeler))[0]["label"] == "286:Egyptian cat"
    gc.collect()
    alive = [runtime for runtime, _, ref in builds if ref() is not None]
    assert alive == [kept], builds  # the slower one's runtime was let go


def test_the_plugin_serves_litert_first_then_keeps_the_fastest_of_one_line(settings, builds, caplog):
    """The plugin's load: LiteRT serves at once; runtime and threads are then measured in one set of
    rounds (one line), and the labeller switches to the fastest."""
    with caplog.at_level(logging.INFO):
        labeler = LabelImage(with_label(settings, runtime="auto", threads=0)).load_model()
        serving_first = labeler.runtime
        assert labeler.settled.wait(300), "the runtime measurement did not end"
    assert serving_first == "litert" and builds[0][:2] == ["litert", 0], builds  # at every core, not measured
    [line] = runtime_lines(caplog)
    assert not [r for r in caplog.records if r.name == "thread_tuning"]  # no second measurement
    measured = figures(line)
    assert {runtime for runtime, _ in measured} == {"openvino", "litert"}, line
    keeping = KEEPING.search(line)
    if len({n for _, n in measured}) > 1:  # more than one core: threads chosen in the same rounds
        runtime, threads = keeping.group(1), int(keeping.group(2))
        assert line.startswith(f"labelImage: {label.threads_said(threads)}, measured at load; runtime auto: "), line
    else:
        runtime, threads = keeping.group(1), 1
    assert (runtime, threads) in fastest(measured), line
    assert (labeler.runtime, labeler.threads) == (runtime, threads)
    assert labeler.label(cat(labeler))[0]["label"] == "286:Egyptian cat"
    assert len(builds) == 1 + len(measured)  # LiteRT to serve first, then one build a figure


@pytest.mark.parametrize("runtime,other", [("litert", "openvino"), ("openvino", "litert")])
def test_an_explicit_runtime_skips_the_measurement(settings, builds, caplog, runtime, other):
    with caplog.at_level(logging.INFO):
        labeler = LabelImage(with_label(settings, runtime=runtime, threads=0)).load_model()
    assert labeler.runtime == runtime
    assert {r for r, _, _ in builds} == {runtime}  # the other runtime was never loaded
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "runtime auto" not in said and other not in said, said


def test_window_copies_take_the_runtime_measured_once(settings, builds, caplog):
    conf = {**with_label(settings, runtime="auto", threads=0), "batch": {**settings["batch"], "workers": 2}}
    with caplog.at_level(logging.INFO, logger="label"):
        assert LabelImage(conf).load_model().settled.wait(300)  # the worker loads the per-frame function first
        copies = LabelImageBatch(conf).load_model()
    [line] = runtime_lines(caplog)  # measured once for both functions
    measured = figures(line)
    kept_at_one = copies.models[0].runtime
    assert (kept_at_one, 1) in fastest(measured, threads=1), line
    copy_builds = builds[1 + len(measured):]
    assert [(r, n) for r, n, _ in copy_builds] == [(kept_at_one, 1)] * 2, builds  # nothing else loaded
    assert [m.runtime for m in copies.models] == [kept_at_one] * 2


def test_a_copy_first_measures_at_one_thread_and_the_next_copy_reuses_it(settings, builds, caplog):
    conf = {**with_label(settings, runtime="auto"), "batch": {**settings["batch"], "workers": 2}}
    with caplog.at_level(logging.INFO, logger="label"):
        copies = LabelImageBatch(conf).load_model()
    [line] = runtime_lines(caplog)
    assert line.startswith("labelImageBatch: runtime auto: ")
    kept = KEEPING.search(line).group(1)
    assert (kept, 1) in fastest(figures(line)), line
    assert [(r, n) for r, n, _ in builds] == [("openvino", 1), ("litert", 1), (kept, 1)], builds
    assert [m.runtime for m in copies.models] == [kept] * 2


def test_a_runtime_that_fails_to_load_leaves_the_other_and_the_line_says_why(settings, builds, caplog, monkeypatch):
    def absent(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'ai_edge_litert'")

    monkeypatch.setattr(label, "LiteRTRunner", absent)
    with caplog.at_level(logging.INFO, logger="label"):
        labeler = label.labeler_from_settings(with_label(settings, runtime="auto", threads=1))
    [line] = runtime_lines(caplog)
    assert labeler.runtime == "openvino"
    assert "litert could not be loaded: ModuleNotFoundError: No module named 'ai_edge_litert'" in line, line
    assert line.endswith("keeping openvino; set label.runtime in config to override"), line


def test_without_litert_the_plugin_measures_at_once_and_keeps_openvino(settings, builds, caplog, monkeypatch):
    def absent(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'ai_edge_litert'")

    monkeypatch.setattr(label, "LiteRTRunner", absent)
    with caplog.at_level(logging.INFO, logger="label"):
        labeler = LabelImage(with_label(settings, runtime="auto", threads=1)).load_model()
    assert labeler.runtime == "openvino" and labeler.settled.is_set()
    [line] = runtime_lines(caplog)
    assert "litert could not be loaded: ModuleNotFoundError" in line and "keeping openvino" in line, line


def test_a_bad_model_file_is_the_error_when_no_runtime_loads(settings, builds, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    with pytest.raises(Exception) as failed:
        label.labeler_from_settings(with_label(settings, runtime="auto", threads=1, model=str(broken)))
    assert not isinstance(failed.value, ImportError)
    assert [r for r, _, _ in builds] == ["openvino", "litert"]


def test_off_x86_64_auto_is_openvino_without_trying_litert(settings, builds, caplog, monkeypatch):
    monkeypatch.setattr(label.platform, "machine", lambda: "aarch64")
    with caplog.at_level(logging.INFO, logger="label"):
        labeler = label.labeler_from_settings(with_label(settings, runtime="auto", threads=1))
    assert labeler.runtime == "openvino" and [r for r, _, _ in builds] == ["openvino"]
    [line] = runtime_lines(caplog)
    assert "litert not tried on aarch64" in line and "keeping openvino" in line, line
