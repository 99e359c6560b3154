"""The service speaks as the SQL functions do (issue 24): a model by name, a region and a picture over HTTP
(`/analyze/inference?model=partB&roi=...`) and gRPC (`InferenceWithOptions`: eKuiper fills every field of a
request from its SQL arguments, so the plain requests keep theirs), and `GET /models` / `ListModels` list
what is loaded.
A real service process with an upload folder; its answers are the in-process functions' answers."""
import base64
import json
import urllib.parse
import urllib.request

import cv2
import grpc
import numpy as np
import pytest

from core.catalog import LABEL_IMAGE
from core.model_host import ModelHost
from core.settings import load_settings
from service import defect_pb2, defect_pb2_grpc
from service.grpc_messages import answer_of
from tests.support.paths import fixture_path
from tests.support.service_process import running_service
from tests.support.uploads import upload_folder, while_loading

HOST = "127.0.0.1"
ANOMALIB = fixture_path("models", "anomalib_padim_surface")
BAD = fixture_path("images", "surfaces", "bad", "bad_02_3.png")
ROI = "0,0,0.5,1"  # the left half of the surface


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """partA, partB (the anomalib export) and cls, as POST /config/uploads leaves them."""
    return upload_folder(tmp_path_factory.mktemp("folder") / "uploads")


@pytest.fixture(scope="module")
def overlay(tmp_path_factory, uploads):
    path = tmp_path_factory.mktemp("config") / "overlay.json"
    path.write_text(json.dumps({"models": {"uploads": str(uploads)}, "label": {"runtime": "litert", "threads": 1},
                                "defect": {"threads": 1}}))
    return str(path)


@pytest.fixture(scope="module")
def service(overlay):
    with running_service([], env={"DEFECT_CONFIG": overlay}, grpc=True) as service:
        yield service


@pytest.fixture(scope="module")
def reference(overlay):
    """The same functions in this process, with the same config (the overlay the service reads)."""
    host = ModelHost(load_settings(overlay), workers=1)
    host.start_loading()
    assert host.wait_loaded(120) and host.ready(), host.status()
    return host


def without_time(answer):
    return {key: value for key, value in answer.items() if key != "inference time"}


def http_post(service, name, body, **query):
    url = f"http://{HOST}:{service.http_port}/analyze/{name}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{e.code} {e.read().decode()}") from None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_http_takes_a_model_a_region_and_a_picture_as_the_function_does(service, reference):
    image = read(BAD)
    over_http = while_loading(lambda: http_post(service, "inference", image, model="partB", roi=ROI, explain="true"))
    in_process = while_loading(lambda: reference.call("inference", image,
                                                      {"model": "partB", "roi": ROI, "explain": True}))
    assert without_time(over_http) == without_time(in_process)
    assert over_http["model"] == "partB" and over_http["width"] == 256 and over_http["anomalous"] is True
    assert all(box["x"] + box["w"] <= 128 for box in over_http["defects"]) and over_http["defect"] >= 1
    pictured = http_post(service, "inference", image, picture="overlay", threshold="0.5")
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(pictured["base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[:2] == (256, 256)  # the frame's own size, not side by side
    assert "base64" not in http_post(service, "inference", image, picture="none")
    labels = while_loading(lambda: http_post(service, "labelImage", read(LABEL_IMAGE.sample), model="cls", k="2",
                                      explain="true"))
    assert labels["model"] == "cls" and len(labels["labels"]) == 2


def test_http_refuses_a_bad_region_name_or_picture_in_one_line(service):
    image = read(BAD)
    for query, line in ((dict(roi="0,0,999,10"), "roi [0, 0, 999, 10] is outside the 256x256 image"),
                        (dict(model="../etc/passwd"), "model must be a model's name"),
                        (dict(model="partZ"), "partZ"),
                        (dict(picture="heat"), "picture must be one of side-by-side, overlay, none"),
                        (dict(colour="red"), "unknown query parameter 'colour': the options are threshold, model")):
        with pytest.raises(RuntimeError) as refused:
            http_post(service, "inference", image, **query)
        assert str(refused.value).startswith("400 ") and line in str(refused.value), (query, refused.value)
        assert "\n" not in str(refused.value)


def test_grpc_takes_the_same_fields_and_lists_the_loaded_models(service, reference):
    image = read(BAD)
    with grpc.insecure_channel(f"{HOST}:{service.grpc_port}") as channel:
        stub = defect_pb2_grpc.DefectStub(channel)
        request = defect_pb2.InferenceWithOptionsRequest(image=image, model="partB", roi=ROI, explain=True,
                                                         picture="none", threshold=0.5, id="f1")
        result = while_loading(lambda: stub.InferenceWithOptions(request, timeout=60))
        in_process = while_loading(lambda: reference.call("inference", image, {"model": "partB", "roi": ROI,
                                                                        "explain": True, "picture": "none",
                                                                        "threshold": 0.5}))
        assert result.id == "f1" and without_time(answer_of(result)) == without_time(in_process)
        assert not result.HasField("base64")
        plain = answer_of(stub.Inference(defect_pb2.InferenceRequest(image=image), timeout=60))
        assert "model" not in plain and plain["base64"]  # the default: unchanged, with its picture
        labels = while_loading(lambda: stub.LabelImageWithOptions(defect_pb2.LabelImageWithOptionsRequest(
            image=read(LABEL_IMAGE.sample), model="cls", k=1, explain=True), timeout=60))
        assert labels.model == "cls" and len(labels.labels) == 1
        with pytest.raises(grpc.RpcError) as refused:
            stub.InferenceWithOptions(defect_pb2.InferenceWithOptionsRequest(image=image, roi="1,2,3"), timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("roi must be [x, y, w, h]")
        listed = stub.ListModels(defect_pb2.ListModelsRequest(), timeout=10).models
    rows = {(m.function, m.name, m.configured): m for m in listed}
    assert ("inference", "model", True) in rows and ("labelImage", "mobilenet_v2_1.0_224_quant", True) in rows
    named = rows[("inference", "partB", False)]
    assert named.version == result.version and named.loaded_at.endswith("Z")


def test_get_models_lists_each_functions_models_with_versions_and_load_times(service):
    while_loading(lambda: http_post(service, "inference", read(BAD), model="partB"))
    with urllib.request.urlopen(f"http://{HOST}:{service.http_port}/models", timeout=10) as response:
        models = json.loads(response.read())["models"]
    by_key = {(m["function"], m["name"]): m for m in models}
    assert by_key[("inference", "partB")]["configured"] is False
    assert by_key[("inference", "partB")]["memory_mb"] > 1  # the anomalib export: tens of MB (make bench)
    configured = by_key[("inference", "model")]
    assert configured["configured"] is True and configured["version"] and configured["loaded_at"].endswith("Z")
    assert {m["function"] for m in models} == {"inference", "labelImage"}
