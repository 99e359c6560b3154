"""The service's transports give the fixtures' known answers at a non-default k and threshold.

test_service_http.py and test_service_grpc.py compare the service with the plugin's own code in
this process (ModelHost): a regression in that shared code would pass there. Here the reference
is not the code's output: the cats' top-1 in shared/fixtures/README.md and each held-out
surface's drawn defects in its file name (answers.py), through one real service process, over
HTTP (raw body and JSON, the option in the query and in the body) and gRPC (unary and stream).
"""
import base64

import grpc
import pytest
import requests

from service import defect_pb2, defect_pb2_grpc
from tests.support.answers import KNOWN_TOP1, drawn_defects, known_label_differences
from tests.support.paths import fixture_path
from tests.support.service_process import HOST, running_service

K = 2  # the default is 5
THRESHOLD = 0.9  # the default is 0.5
CATS = sorted(KNOWN_TOP1)
SURFACES = {name: drawn_defects(name) for name in ("bad_00_1.png", "bad_01_2.png", "bad_02_3.png", "bad_05_3.png",
                                                   "bad_08_3.png")}
SURFACES.update({"good_00.png": 0, "good_01.png": 0})  # defect-free held-out surfaces


def image(name: str) -> bytes:
    folder = ("images",) if name in KNOWN_TOP1 else ("images", "surfaces", name.split("_")[0])
    with open(fixture_path(*folder, name), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_service(cwd=str(tmp_path_factory.mktemp("elsewhere")), grpc=True) as service:
        yield service


@pytest.fixture(scope="module")
def stub(service):
    with grpc.insecure_channel(f"{HOST}:{service.grpc_port}") as channel:
        yield defect_pb2_grpc.DefectStub(channel)


def label_problems(name: str, labels: list[dict]) -> list[str]:
    """k labels, distinct, best first, the README's top-1: what is wrong with one answer."""
    problems = known_label_differences(name, labels)
    if len(labels) != K or len({r["label"] for r in labels}) != K:
        problems.append(f"{name}: {len(labels)} labels, not {K} distinct: {labels}")
    if [r["confidence"] for r in labels] != sorted((r["confidence"] for r in labels), reverse=True):
        problems.append(f"{name}: not best first: {labels}")
    return problems


def defect_problems(name: str, defect: int, boxes: list) -> list[str]:
    if defect != SURFACES[name] or len(boxes) != SURFACES[name]:
        return [f"{name}: {defect} defects ({len(boxes)} boxes) at threshold {THRESHOLD}, drawn {SURFACES[name]}"]
    return []


def http_post(service, function: str, data: bytes, option: str, value, form: str) -> requests.Response:
    endpoint = f"http://{HOST}:{service.http_port}/analyze/{function}"
    if form == "raw":
        mime = "image/png" if data[:4] == b"\x89PNG" else "image/bmp" if data[:2] == b"BM" else "image/jpeg"
        return requests.post(endpoint, data=data, params={option: value}, timeout=60, headers={"Content-Type": mime})
    return requests.post(endpoint, json={"image": base64.b64encode(data).decode(), option: value}, timeout=60)


@pytest.mark.parametrize("form", ["raw", "json"])
def test_http_gives_the_known_answers(service, form):
    problems = []
    for name in CATS:
        response = http_post(service, "labelImage", image(name), "k", K, form)
        assert response.status_code == 200, response.text
        problems += label_problems(name, response.json())
    for name in SURFACES:
        response = http_post(service, "inference", image(name), "threshold", THRESHOLD, form)
        assert response.status_code == 200, response.text
        answer = response.json()
        problems += defect_problems(name, answer["defect"], answer["defects"])
    assert not problems


def labels_of(result) -> list[dict]:
    return [{"label": r.label, "confidence": r.confidence} for r in result.labels]


def test_grpc_unary_calls_give_the_known_answers(stub):
    problems = []
    for name in CATS:
        result = stub.LabelImage(defect_pb2.LabelImageRequest(image=image(name), k=K), timeout=60)
        problems += label_problems(name, labels_of(result))
    for name in SURFACES:
        result = stub.Inference(defect_pb2.InferenceRequest(image=image(name), threshold=THRESHOLD), timeout=60)
        problems += defect_problems(name, result.defect, list(result.defects))
    assert not problems


def test_grpc_streams_give_the_known_answers_in_order(stub):
    labels = list(stub.LabelImageStream(
        iter([defect_pb2.LabelImageRequest(image=image(name), k=K, id=name) for name in CATS]), timeout=120))
    defects = list(stub.InferenceStream(
        iter([defect_pb2.InferenceRequest(image=image(name), threshold=THRESHOLD, id=name) for name in SURFACES]),
        timeout=120))
    assert [r.id for r in labels] == CATS and [r.id for r in defects] == list(SURFACES)
    assert not [r.error for r in labels + defects if r.error]
    problems = [p for r in labels for p in label_problems(r.id, labels_of(r))]
    problems += [p for r in defects for p in defect_problems(r.id, r.defect, list(r.defects))]
    assert not problems

