"""The function declarations (core/catalog.py) and everything derived from them or checked against them:
the SQL functions and window forms, defect.json and functions/*.json, the HTTP routes and OpenAPI,
the gRPC mapping and defect.proto, the typed results and their JSON, the model classes' keywords."""
import json
import os
import subprocess
import sys
import typing

import cv2
import jsonschema
import pytest

from batch_func import WindowFunction, window_functions
from core.catalog import BY_NAME, FUNCTIONS, INFERENCE, LABEL_IMAGE
from core.errors import InputError
from core.functions import CallOptions
from core.results import Inspection, Label, Region, answer
from core.settings import SCHEMA, load_settings
from inference import DefectSegmenter
from label import ImageLabeler
from label_func import ModelFunction, per_frame_functions
from tests.support.paths import REPO


@pytest.fixture(scope="module")
def settings():
    """The plugin's settings, each model at one thread: no idle thread pools left behind for later tests."""
    loaded = load_settings()
    return {**loaded, "label": {**loaded["label"], "threads": 1}, "defect": {**loaded["defect"], "threads": 1}}


@pytest.fixture(scope="module")
def answers(settings):
    """Each declared function's JSON answer for its sample image, from its declaration alone."""
    found = {}
    for spec in FUNCTIONS:
        model = spec.build(settings)
        image = cv2.imread(spec.sample)
        found[spec.name] = answer(spec.run(model, image, (image.shape[1], image.shape[0]), CallOptions()))
    return found


def test_the_sql_functions_and_window_forms_derive_from_the_declarations(settings):
    per_frame = per_frame_functions(settings)
    windows = window_functions(settings)
    assert [f.name for f in per_frame] == [spec.name for spec in FUNCTIONS] == ["labelImage", "inference"]
    assert [f.name for f in windows] == ["labelImageBatch", "inferenceBatch"]
    assert all(isinstance(f, ModelFunction) and not f.is_aggregate() for f in per_frame)
    assert all(isinstance(f, WindowFunction) and f.is_aggregate() for f in windows)
    assert [f.usage for f in windows] == ["labelImageBatch(image [, k])", "inferenceBatch(image [, threshold])"]


def test_defect_json_names_every_declared_function_and_window_form():
    with open(os.path.join(REPO, "defect.json")) as f:
        names = json.load(f)["functions"]
    assert sorted(names) == sorted([spec.name for spec in FUNCTIONS] + [spec.window_name for spec in FUNCTIONS])


@pytest.mark.parametrize("name", sorted([s.name for s in FUNCTIONS] + [s.window_name for s in FUNCTIONS]))
def test_each_functions_json_matches_its_declaration(name):
    """eKuiper's description of a function (shown in its UI) agrees with the declaration: name,
    arguments (the image, then the option with its type) and the kind of answer."""
    spec = next(s for s in FUNCTIONS if name in (s.name, s.window_name))
    with open(os.path.join(REPO, "functions", f"{name}.json")) as f:
        (described,) = json.load(f)["functions"]
    assert described["name"] == name
    assert name in described["example"]
    image, option = described["args"]
    assert (image["name"], image["optional"], option["name"], option["optional"]) == \
        ("image", False, spec.option.name, True)
    assert option["type"] == ("int" if spec.option.kind is int else "float")
    one_frame = "array" if typing.get_origin(spec.result) is list else "struct"  # eKuiper's name for an object
    assert described["return"]["type"] == ("array" if name == spec.window_name else one_frame)


def test_functions_folder_holds_only_declared_functions():
    declared = {f"{n}.json" for s in FUNCTIONS for n in (s.name, s.window_name)}
    assert set(os.listdir(os.path.join(REPO, "functions"))) == declared


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
def test_each_answer_is_its_declared_result_schema(spec, answers):
    jsonschema.validate(answers[spec.name], spec.result_schema())


def test_the_answers_keep_the_tutorials_keys_and_order(answers):
    assert list(answers["inference"]) == ["inference time", "defect", "defects", "width", "height", "base64"]
    assert answers["inference"]["defect"] == 3 == len(answers["inference"]["defects"])
    assert list(answers["inference"]["defects"][0]) == ["x", "y", "w", "h", "area"]
    assert len(answers["labelImage"]) == 5 and answers["labelImage"][0]["label"] == "286:Egyptian cat"
    assert list(answers["labelImage"][0]) == ["confidence", "label"]


def test_optional_result_fields_are_left_out_when_none_and_kept_when_set():
    report = Inspection(inference_time=1.5, defect=1, defects=[Region(x=1, y=2, w=3, h=4, area=5)],
                        width=10, height=20, score=0.25, anomalous=False)
    assert answer(report) == {"inference time": 1.5, "defect": 1, "defects": [{"x": 1, "y": 2, "w": 3, "h": 4,
                              "area": 5}], "score": 0.25, "anomalous": False, "width": 10, "height": 20}
    assert answer([Label(confidence=0.5, label="1:a")]) == [{"confidence": 0.5, "label": "1:a"}]
    schema = INFERENCE.result_schema()
    # base64 is left out with "picture": "none"
    assert set(schema["required"]) == {"inference time", "defect", "defects", "width", "height"}
    pictured = {**answer(report), "base64": "AA=="}
    jsonschema.validate(pictured, schema)  # score and anomalous may be there
    jsonschema.validate({key: value for key, value in pictured.items() if key not in ("score", "anomalous")}, schema)
    with pytest.raises(jsonschema.ValidationError, match="'extra' was unexpected"):
        jsonschema.validate({**pictured, "extra": 1}, schema)
    jsonschema.validate(answer(report), schema)  # without a picture ("picture": "none")
    with pytest.raises(jsonschema.ValidationError, match="'width' is a required property"):
        jsonschema.validate({key: value for key, value in pictured.items() if key != "width"}, schema)


@pytest.mark.parametrize(("spec", "value", "message"), [
    (LABEL_IMAGE, 0, "k must be a whole number from 1 to the class count, got 0"),
    (LABEL_IMAGE, 2.5, "k must be a whole number from 1 to the class count, got 2.5"),
    (LABEL_IMAGE, "5", 'k must be a whole number from 1 to the class count, got "5"'),
    (INFERENCE, 1.5, "threshold must be a number from 0 to 1, got 1.5"),
    (INFERENCE, True, "threshold must be a number from 0 to 1, got true"),
], ids=str)
def test_an_option_is_checked_by_its_declaration(spec, value, message):
    with pytest.raises(InputError) as error:
        spec.option.check(value)
    assert str(error.value) == message


def test_a_model_set_bound_is_checked_once_the_model_is_loaded(settings):
    labeler = LABEL_IMAGE.build(settings)
    assert LABEL_IMAGE.option.check(1001, labeler) == 1001 and LABEL_IMAGE.option.check(3.0) == 3
    with pytest.raises(InputError, match="^k must be a whole number from 1 to 1001, got 1002$"):
        LABEL_IMAGE.option.check(1002, labeler)


def test_model_classes_are_built_from_their_config_sections_keywords(settings):
    """Every key of a section is a keyword of its model class (and nothing is read before load())."""
    for spec in FUNCTIONS:
        model = spec.model(**{**settings[spec.section], "model": "/nonexistent/model"})
        with pytest.raises(FileNotFoundError, match="/nonexistent/model"):
            model.load()
    assert ImageLabeler().top_k == SCHEMA["label"]["top_k"].default
    assert DefectSegmenter().threshold == SCHEMA["defect"]["threshold"].default
    with pytest.raises(TypeError):
        DefectSegmenter("models/model.xml")  # keywords only: no call depends on the parameters' order


def test_the_defect_graph_edits_are_visible_before_compiling(settings):
    """prepare() reads and edits the graph (u8 NHWC BGR input, our size) without compiling it."""
    segmenter = DefectSegmenter(**settings["defect"])
    graph = segmenter.prepare()
    assert str(graph.input().get_element_type()) == "<Type: 'uint8_t'>"
    assert list(graph.input().get_shape()) == [1, segmenter.height, segmenter.width, 3]
    assert not hasattr(segmenter, "compiled")


def test_the_grpc_mapping_derives_from_the_declarations_and_the_proto_has_it():
    from service import defect_pb2
    from service.grpc_messages import RPCS
    service = defect_pb2.DESCRIPTOR.services_by_name["Defect"]
    methods = {m.name for m in service.methods}
    for spec in FUNCTIONS:
        rpc = RPCS[spec.name]
        assert {rpc.unary, rpc.stream} <= methods
        assert rpc.request.DESCRIPTOR.fields_by_name[spec.option.name].has_presence
        # eKuiper's external function fills every request field from the SQL call's arguments: the plain
        # request keeps image, option, id; the options object's other keys are the WithOptions request's.
        assert [f.name for f in rpc.request.DESCRIPTOR.fields] == ["image", spec.option.name, "id"]
        with_options = [f.name for f in rpc.options_request.DESCRIPTOR.fields]
        assert with_options[:3] == ["image", spec.option.name, "id"]
        assert set(with_options[3:]) == set(spec.option.keys[1:])
        assert rpc.with_options in methods
    served = {name for rpc in RPCS.values() for name in (rpc.unary, rpc.stream, rpc.with_options)}
    assert methods - served == {"ListModels"}


def test_grpc_messages_carry_each_answer_unchanged(answers):
    from service.grpc_messages import RPCS, answer_of, result_message
    for name, value in answers.items():
        message = result_message(RPCS[name], value, "id-1")
        assert message.id == "id-1"
        assert answer_of(message) == value


def test_http_routes_and_openapi_derive_from_the_declarations(settings):
    from core.model_host import ModelHost
    from service.http_api import create_app
    document = create_app(ModelHost(settings, workers=1), 1000).openapi()
    for spec in FUNCTIONS:
        route = document["paths"][f"/analyze/{spec.name}"]["post"]
        assert route["summary"].startswith(spec.summary)
        parameter, *others = route["parameters"]
        assert parameter["name"] == spec.option.name and parameter["schema"] == spec.option.json_schema()
        assert [other["name"] for other in others] == [key for key in spec.option.keys if key != spec.option.name]
        components: dict = {}
        assert route["responses"]["200"]["content"]["application/json"]["schema"] == spec.result_schema(components)
        assert components.items() <= document["components"]["schemas"].items()  # named: generated clients use them
    assert {"Label", "Inspection", "Region"} <= set(document["components"]["schemas"])
    assert sorted(p for p in document["paths"] if p.startswith("/analyze/")) == \
        sorted(f"/analyze/{name}" for name in BY_NAME)


def test_the_service_runs_without_the_ekuiper_sdk_or_nng(tmp_path):
    """The model host and both front doors import and serve with `ekuiper` and `pynng` made unimportable."""
    code = """
import sys
sys.modules["ekuiper"] = None
sys.modules["pynng"] = None
import base64
from core.model_host import ModelHost
from core.settings import load_settings
import service.http_api, service.grpc_api
host = ModelHost(load_settings(), workers=1)
host.start_loading()
assert host.wait_loaded(120), host.status()
with open("models/sample_cat.jpg", "rb") as f:
    print(host.call("labelImage", f.read(), 1)[0]["label"])
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "286:Egyptian cat"
