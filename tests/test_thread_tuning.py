"""threads: 0 measures 1 thread against every core while the model loads; a number in the config wins."""
import gc
import logging
import re
import time
import weakref

import numpy as np
import pytest

from label_func import Inference, LabelImage
from thread_tuning import fastest, fastest_threads


class Sleeper:
    """A stand-in whose call time depends on its threads, to check the choice itself."""

    def __init__(self, threads, seconds):
        self.threads, self.seconds = threads, seconds

    def call(self):
        time.sleep(self.seconds)


def test_the_faster_candidate_is_kept_and_said_in_one_line(caplog, monkeypatch):
    monkeypatch.setattr("thread_tuning.usable_cores", lambda: 4)
    with caplog.at_level(logging.INFO, logger="thread_tuning"):
        fast_many = fastest_threads(lambda n: Sleeper(n, 0.001 if n == 4 else 0.02), Sleeper.call, "f")
        fast_one = fastest_threads(lambda n: Sleeper(n, 0.001 if n == 1 else 0.02), Sleeper.call, "g")
    assert (fast_many.threads, fast_one.threads) == (4, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("f: 4 threads, measured at load (1 thread: ") and "4 threads: " in lines[0]
    assert lines[1].startswith("g: 1 thread, measured at load")


def test_one_core_needs_no_measurement(monkeypatch):
    monkeypatch.setattr("thread_tuning.usable_cores", lambda: 1)
    built = []
    fastest_threads(lambda n: built.append(n) or Sleeper(n, 0), Sleeper.call, "h")
    assert built == [1]


def test_a_candidate_that_fails_to_build_is_left_out_and_the_rest_freed(monkeypatch):
    built = []

    def build(name, seconds):
        def make():
            if seconds is None:
                raise ImportError(f"no {name} here")
            built.append(weakref.ref(model := Sleeper(name, seconds)))
            return model
        return make

    measured = fastest({"absent": build("absent", None), "slow": build("slow", 0.02), "fast": build("fast", 0.001)},
                       Sleeper.call)
    assert (measured.kept, measured.model.threads) == ("fast", "fast")
    assert set(measured.ms) == {"slow", "fast"} and measured.failed == {"absent": "ImportError: no absent here"}
    gc.collect()
    assert [ref() is not None for ref in built] == [False, True]  # the slower candidate is not held

    alone = fastest({"absent": build("absent", None), "only": build("only", 0)}, Sleeper.call)
    assert (alone.kept, alone.ms) == ("only", {})  # nothing to compare: not timed


def test_when_nothing_builds_the_error_is_the_first_that_is_not_a_missing_runtime():
    def fail(error):
        def build():
            raise error
        return build

    bad_file = ValueError("not a model")
    with pytest.raises(ValueError, match="not a model"):
        fastest({"a": fail(ImportError("no runtime")), "b": fail(bad_file), "c": fail(RuntimeError("other"))},
                Sleeper.call)
    with pytest.raises(ImportError, match="first"):
        fastest({"a": fail(ImportError("first")), "b": fail(ImportError("second"))}, Sleeper.call)


def test_real_models_are_tuned_at_zero_and_take_an_explicit_number(settings, caplog):
    # One runtime: with label.runtime auto, label.py measures threads with the runtimes (test_runtime_choice.py).
    auto = {**settings, "label": {**settings["label"], "threads": 0, "runtime": "litert"},
            "defect": {**settings["defect"], "threads": 0}}
    with caplog.at_level(logging.INFO, logger="thread_tuning"):
        labeler = LabelImage(auto).load_model()
        segmenter = Inference(auto).load_model()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "labelImage: " in said and "inference: " in said and "measured at load" in said
    assert labeler.label(labeler_frame(labeler))[0]["label"]
    # The model kept is the one the log line names (on one core: 1 without a measurement).
    said_threads = re.search(r"inference: (\d+) threads?", said)
    expected = int(said_threads.group(1)) if said_threads else 1
    assert segmenter.compiled.get_property("INFERENCE_NUM_THREADS") == expected, said

    caplog.clear()
    explicit = {**settings, "defect": {**settings["defect"], "threads": 1}}
    with caplog.at_level(logging.INFO, logger="thread_tuning"):
        segmenter = Inference(explicit).load_model()
    assert segmenter.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert not caplog.records  # nothing measured


def labeler_frame(labeler):
    width, height = labeler.decode_size
    return np.full((height, width, 3), 128, np.uint8)

