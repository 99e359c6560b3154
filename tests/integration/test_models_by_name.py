"""Models by name (issue 24): `inference(image, {"model": "partB"})` and `labelImage(image, {"model": ...})`
run the named model from the upload folder, every other call is unchanged, a bad name is one line, and a
changed model swaps in while the version before keeps answering. In process, on real models; the same in a
real kuiperd with uploads: tests/e2e/test_models_by_name_rules.py."""
import base64
import os
import shutil
import time
from pathlib import Path

import pytest

from batch_func import WindowFunction
from core.catalog import INFERENCE, LABEL_IMAGE
from core.errors import ModelUnavailable
from label_func import ModelFunction
from tests.support.paths import fixture_path, read_b64
from tests.support.uploads import ANOMALIB, upload_folder, while_loading


def surface(name):
    folder = "good" if name.startswith("good") else "bad"
    with open(fixture_path("images", "surfaces", folder, f"{name}.png"), "rb") as f:
        return base64.b64encode(f.read()).decode()


@pytest.fixture()
def uploads(tmp_path):
    """An upload folder as POST /config/uploads leaves it: partA = the default segmenter, partB = the
    anomalib export, cls = the MobileNet classifier with its labels."""
    return Path(upload_folder(tmp_path / "uploads"))


def loaded(function_class, spec, settings, uploads):
    settings = {**settings, "models": {**settings["models"], "uploads": str(uploads), "settle_seconds": 0.5},
                "label": {**settings["label"], "threads": 1}, "defect": {**settings["defect"], "threads": 1}}
    function = function_class(spec, settings)
    function.start_loading()
    assert function.loaded.wait(120) and function.error is None, function.error
    return function


def served(function, args, timeout=60):
    """exec, retried while a model by name is still loading (its first call starts the load)."""
    return while_loading(lambda: function.exec(args, None), timeout)


def test_a_name_runs_that_model_and_the_calls_without_one_are_unchanged(settings, uploads):
    inference = loaded(ModelFunction, INFERENCE, settings, uploads)
    bad = surface("bad_02_3")
    default = inference.exec([bad], None)
    assert "score" not in default  # the configured segmenter has no image-level score
    anomalib = served(inference, [bad, {"model": "partB"}])
    assert anomalib["anomalous"] is True and anomalib["defect"] == 2 and "score" in anomalib
    part_a = served(inference, [bad, {"model": "partA", "threshold": 0.5}])
    assert {k: v for k, v in part_a.items() if k != "inference time"} == \
        {k: v for k, v in inference.exec([bad, 0.5], None).items() if k != "inference time"}
    assert inference.exec([bad, 0.5], None)["defect"] == inference.exec([bad], None)["defect"]  # numbers still work
    explained = served(inference, [bad, {"model": "partB", "explain": True}])
    assert explained["model"] == "partB" and explained["version"].count("-") >= 1
    assert inference.exec([bad, {"explain": True}], None)["model"] == "model"  # the configured one


def test_a_labelling_model_by_name_with_its_labels_and_k(settings, uploads):
    label = loaded(ModelFunction, LABEL_IMAGE, settings, uploads)
    cat = read_b64("images", "cat.bmp")
    labels = served(label, [cat, {"model": "cls", "k": 2}])
    assert len(labels) == 2 and labels[0]["label"] == "286:Egyptian cat"
    explained = served(label, [cat, {"model": "cls", "explain": True}])
    assert set(explained) == {"labels", "model", "version"} and len(explained["labels"]) == 5


@pytest.mark.parametrize("option, words", [
    ({"model": "nothing"}, "no model named 'nothing'"),
    ({"model": "../models/model"}, "model must be a model's name"),
    ({"model": "cls"}, "model cls could not be loaded"),  # a classifier is no segmenter: found, refused when read
    ({"modle": "partB"}, "the options object takes threshold, model, explain, roi, picture; got 'modle'"),
    ({"threshold": 2}, "threshold must be a number from 0 to 1, got 2"),
    ({"explain": "yes"}, "explain must be true or false"),
])
def test_a_bad_name_or_key_is_one_line(settings, uploads, option, words):
    inference = loaded(ModelFunction, INFERENCE, settings, uploads)
    with pytest.raises(Exception) as refused:
        served(inference, [surface("good_00"), option])
    assert words in str(refused.value) and "\n" not in str(refused.value), refused.value


def test_validate_checks_a_literal_name_at_rule_creation(settings, uploads):
    inference = loaded(ModelFunction, INFERENCE, settings, uploads)
    as_sql = {"Name": "object_construct", "Args": [{"Val": "model"}, {"Val": "partB"}, {"Val": "threshold"},
                                                    {"Val": 0.6}]}
    assert inference.validate([{"Name": "image"}, as_sql]) == ""
    served(inference, [surface("good_00"), {"model": "partB"}])  # partB's load done: cls's is not queued behind it
    unknown = {**as_sql, "Args": [{"Val": "model"}, {"Val": "partZ"}]}
    assert "no model named 'partZ'" in inference.validate([{"Name": "image"}, unknown])
    wrong_kind = {**as_sql, "Args": [{"Val": "model"}, {"Val": "cls"}]}  # a classifier is no segmenter
    assert "model cls could not be loaded: ValueError: its output [1,1001] is no segmentation map" in \
        inference.validate([{"Name": "image"}, wrong_kind])
    per_row = {"Name": "object_construct", "Args": [{"Val": "model"}, {"Name": "product"}]}
    assert inference.validate([{"Name": "image"}, per_row]) == ""  # known per row only: checked per frame


def test_the_window_form_takes_the_same_object(settings, uploads):
    window = loaded(WindowFunction, INFERENCE, settings, uploads)
    frames = [surface("bad_02_3"), surface("good_00")]
    deadline = time.monotonic() + 60
    while "error" in window.exec([frames[:1], {"model": "partB"}], None)[0]:  # the first windows load partB
        assert time.monotonic() < deadline, "partB never loaded"
        time.sleep(0.1)
    results = window.exec([frames, {"model": "partB"}], None)
    assert [r["anomalous"] for r in results] == [True, False]


def test_a_replaced_model_swaps_in_and_the_old_one_answers_until_then(settings, uploads):
    inference = loaded(ModelFunction, INFERENCE, settings, uploads)
    bad = surface("bad_02_3")
    before = served(inference, [bad, {"model": "partA", "explain": True}])
    assert "score" not in before
    # partA becomes the anomalib export, written as an upload does: .xml, then .bin.
    for suffix in (".xml", ".bin"):
        shutil.copy(os.path.join(ANOMALIB, "model" + suffix), uploads / f"partA{suffix}")
    answers = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = inference.exec([bad, {"model": "partA", "explain": True}], None)  # never refused
        answers.append(answer)
        if "score" in answer:
            break
        time.sleep(0.05)
    assert "score" in answers[-1] and answers[-1]["version"] != before["version"], answers[-1]
    assert all("score" not in a for a in answers[:-1])  # the old version until the swap, nothing in between


def test_a_call_by_name_is_served_when_the_configured_model_failed_to_load(settings, uploads, tmp_path):
    """A model by name does not wait on, or fail with, the configured model: a plugin whose defect.model is
    broken still serves partB; a call without a name answers the configured model's one line."""
    broken = tmp_path / "broken.xml"
    broken.write_text("<not a model/>")
    settings = {**settings, "models": {**settings["models"], "uploads": str(uploads), "settle_seconds": 0.5},
                "defect": {**settings["defect"], "model": str(broken), "threads": 1}}
    inference = ModelFunction(INFERENCE, settings)
    inference.start_loading()
    assert inference.loaded.wait(120) and inference.error, "the broken model loaded"
    with pytest.raises(ModelUnavailable, match="inference model could not be loaded"):
        inference.exec([surface("bad_02_3")], None)
    anomalib = served(inference, [surface("bad_02_3"), {"model": "partB", "explain": True}])
    assert anomalib["model"] == "partB" and anomalib["anomalous"] is True and anomalib["defect"] == 2


def test_a_window_naming_its_model_is_served_when_the_configured_model_failed_to_load(settings, uploads, tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<not a model/>")
    settings = {**settings, "models": {**settings["models"], "uploads": str(uploads), "settle_seconds": 0.5},
                "defect": {**settings["defect"], "model": str(broken), "threads": 1},
                "batch": {**settings["batch"], "workers": 2, "serving": "copies"}}
    window = WindowFunction(INFERENCE, settings)
    window.start_loading()
    assert window.loaded.wait(120) and window.error, "the broken model loaded"
    frames = [surface("bad_02_3"), surface("good_00")]
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        window.exec([frames], None)
    deadline = time.monotonic() + 60
    while True:  # the first window starts partB's load; its elements say "still loading" until then
        answers = window.exec([frames, {"model": "partB"}], None)
        if all("error" not in a for a in answers) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [a.get("anomalous") for a in answers] == [True, False], answers
