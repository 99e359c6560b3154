"""threads: 0 measures 1 thread against every core while the model loads; a number in the config wins."""
import logging
import re
import time

import numpy as np

from core.catalog import INFERENCE, LABEL_IMAGE
from core.results import answer
from core.thread_tuning import fastest_threads
from label_func import ModelFunction


class Sleeper:
    """A stand-in whose call time depends on its threads, to check the choice itself."""

    def __init__(self, threads, seconds):
        self.threads, self.seconds = threads, seconds

    def call(self):
        time.sleep(self.seconds)


def test_the_faster_candidate_is_kept_and_said_in_one_line(caplog, monkeypatch):
    monkeypatch.setattr("core.thread_tuning.usable_cores", lambda: 4)
    with caplog.at_level(logging.INFO, logger="core.thread_tuning"):
        fast_many = fastest_threads(lambda n: Sleeper(n, 0.001 if n == 4 else 0.02), Sleeper.call, "f")
        fast_one = fastest_threads(lambda n: Sleeper(n, 0.001 if n == 1 else 0.02), Sleeper.call, "g")
    assert (fast_many.threads, fast_one.threads) == (4, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("f: 4 threads, measured at load (1 thread: ") and "4 threads: " in lines[0]
    assert lines[1].startswith("g: 1 thread, measured at load")


def test_one_core_needs_no_measurement(monkeypatch):
    monkeypatch.setattr("core.thread_tuning.usable_cores", lambda: 1)
    built = []
    fastest_threads(lambda n: built.append(n) or Sleeper(n, 0), Sleeper.call, "h")
    assert built == [1]


def test_real_models_are_tuned_at_zero_and_take_an_explicit_number(settings, caplog):
    auto = {**settings, "label": {**settings["label"], "threads": 0}, "defect": {**settings["defect"], "threads": 0}}
    with caplog.at_level(logging.INFO, logger="core.thread_tuning"):
        labeler = ModelFunction(LABEL_IMAGE, auto).load_model()
        segmenter = ModelFunction(INFERENCE, auto).load_model()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "labelImage: " in said and "inference: " in said and "measured at load" in said
    assert answer(labeler.label(labeler_frame(labeler)))[0]["label"]
    # The model kept is the one the log line names (on one core: 1 without a measurement).
    said_threads = re.search(r"inference: (\d+) threads?", said)
    expected = int(said_threads.group(1)) if said_threads else 1
    assert segmenter.compiled.get_property("INFERENCE_NUM_THREADS") == expected, said

    caplog.clear()
    explicit = {**settings, "defect": {**settings["defect"], "threads": 1}}
    with caplog.at_level(logging.INFO, logger="core.thread_tuning"):
        segmenter = ModelFunction(INFERENCE, explicit).load_model()
    assert segmenter.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert not caplog.records  # nothing measured


def labeler_frame(labeler):
    width, height = labeler.decode_size
    return np.full((height, width, 3), 128, np.uint8)

