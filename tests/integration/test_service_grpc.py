"""The gRPC service (service/grpc_api.py) on the real models: unary and streaming calls answer as the
plugin does, bad input is INVALID_ARGUMENT with the plugin's one line, health, reflection (with a real
grpcurl), the API key, TLS, and the streaming video client (service/client.py) on a real clip."""
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.errors import InputError
from core.model_host import ModelHost
from service import defect_pb2, defect_pb2_grpc
from service.grpc_api import build_grpc_server
from service.grpc_messages import RPCS, answer_of, image_value, result_message
from service.grpc_stubs import STUBS, generate
from service.service_metrics import ServiceMetrics
from tests.support.bad_inputs import bad_images
from tests.support.paths import REPO, fixture_path
from tools.free_port import free_port

GRPCURL_VERSION = "v1.9.4"
API_KEY = "s3cret-key"
SURFACE = os.path.join(REPO, "models", "sample_surface.png")  # 3 defects (`make models`)


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def host(settings):
    host = ModelHost(settings)
    host.start_loading()
    assert host.wait_loaded(120) and host.ready(), host.status()
    return host


def serve(host, **kwargs):
    server, port = build_grpc_server(host, "127.0.0.1:0", **kwargs)  # the port the system gives, no race
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def address(host):
    server, address = serve(host)
    yield address
    server.stop(grace=1).wait()


@pytest.fixture(scope="module")
def stub(address):
    with grpc.insecure_channel(address) as channel:
        yield defect_pb2_grpc.DefectStub(channel)


def plugin_answer(host, function, image, option=None):
    """What the plugin's function returns for this image (ModelHost answers as the plugin does)."""
    return host.call(function, image, option)


def without_time(answer):
    """inference's answer without its timing, which differs from call to call."""
    if isinstance(answer, dict):
        assert answer["inference time"] > 0
        return {k: v for k, v in answer.items() if k != "inference time"}
    return answer


# ---------------------------------------------------------------- the stubs


def test_committed_stubs_are_what_the_proto_generates(tmp_path):
    for generated in generate(tmp_path):
        committed = Path(REPO) / generated.relative_to(tmp_path)
        assert committed.read_text() == generated.read_text(), \
            f"{committed.name} is out of date: run `python service/grpc_stubs.py`"
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "service").iterdir()) == sorted(STUBS)


def test_every_key_of_the_plugins_answers_has_a_field():
    """An anomalib export's answer (score, anomalous) too; a key the proto lacks would fail here."""
    answer = {"inference time": 27.1, "defect": 1, "defects": [{"x": 1, "y": 2, "w": 3, "h": 4, "area": 9}],
              "width": 256, "height": 256, "base64": "/9j/", "score": 0.61, "anomalous": True}
    result = result_message(RPCS["inference"], answer, "7")
    assert result.id == "7" and result.inference_time == 27.1 and result.HasField("score")
    assert answer_of(result) == answer
    plain = {k: v for k, v in answer.items() if k not in ("score", "anomalous")}
    assert answer_of(result_message(RPCS["inference"], plain, "")) == plain  # absent, not 0 and false
    with pytest.raises(json_format.ParseError):
        result_message(RPCS["inference"], {**plain, "new key": 1}, "")


# ---------------------------------------------------------------- unary calls


@pytest.mark.parametrize("image, k", [(("images", "parrot.jpg"), None), (("images", "cat.bmp"), 3),
                                      (("images", "cat_1080p.jpg"), 1)])
def test_label_image_answers_as_the_plugin(host, stub, image, k):
    data = read(fixture_path(*image))
    request = defect_pb2.LabelImageRequest(image=data, id="frame-1")
    if k is not None:
        request.k = k
    result = stub.LabelImage(request)
    assert result.id == "frame-1" and not result.error
    assert answer_of(result) == plugin_answer(host, "labelImage", data, k)
    assert len(result.labels) == (k or 5)


def test_parrot_is_a_macaw(stub):
    result = stub.LabelImage(defect_pb2.LabelImageRequest(image=read(fixture_path("images", "parrot.jpg"))))
    assert result.labels[0].label == "89:macaw"


@pytest.mark.parametrize("threshold", [None, 0.9])
def test_inference_answers_as_the_plugin(host, stub, threshold):
    data = read(SURFACE)
    request = defect_pb2.InferenceRequest(image=data, id="s")
    if threshold is not None:
        request.threshold = threshold
    result = stub.Inference(request)
    answer = answer_of(result)
    assert without_time(answer) == without_time(plugin_answer(host, "inference", data, threshold))
    assert set(answer) == {"inference time", "defect", "defects", "width", "height", "base64"}
    assert answer["defect"] == 3 and (answer["width"], answer["height"]) == (640, 480)


def test_the_image_may_be_base64_text_or_a_data_uri(host, stub):
    """What eKuiper puts into a bytes field for a base64 string field of a JSON stream."""
    data = read(fixture_path("images", "parrot.jpg"))
    expected = plugin_answer(host, "labelImage", data)
    text = base64.b64encode(data)
    for image in (text, b"data:image/jpeg;base64," + text, base64.encodebytes(data)):
        assert answer_of(stub.LabelImage(defect_pb2.LabelImageRequest(image=image))) == expected


def bad_bytes():
    """(case, bytes) for the request's image field: the plugin's bad text values as eKuiper would send
    them (their UTF-8 bytes), and bad files as raw bytes."""
    cases = [(name, value.encode()) for name, (value, _) in bad_images().items()
             if isinstance(value, str) and name != "over 20 MB"]  # over the message cap: below
    jpeg = read(fixture_path("images", "cat_720p.jpg"))
    cases += [("raw truncated jpeg", jpeg[:len(jpeg) // 2]), ("raw text", b"hello, this is not a picture"),
              ("raw pdf", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n"), ("empty", b"")]
    cases += [(f"raw {name}", base64.b64decode(bad_images()[name][0])) for name in ("1x1 image", "12000x12000 image")]
    return cases


@pytest.mark.parametrize("function", sorted(RPCS))
def test_bad_input_is_invalid_argument_with_the_plugins_line(host, stub, function):
    rpc = RPCS[function]
    for case, data in bad_bytes():
        with pytest.raises(InputError) as plugin:
            host.call(function, image_value(data))
        with pytest.raises(grpc.RpcError) as answer:
            getattr(stub, rpc.unary)(rpc.request(image=data))
        assert answer.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert answer.value.details() == str(plugin.value), case


def test_grpc_calls_are_counted_in_the_metrics(host):
    """service.py hands the HTTP app's metrics to gRPC: /metrics counts both transports."""
    metrics = ServiceMetrics()
    server, address = serve(host, metrics=metrics)
    parrot = read(fixture_path("images", "parrot.jpg"))
    try:
        with grpc.insecure_channel(address) as channel:
            stub = defect_pb2_grpc.DefectStub(channel)
            stub.LabelImage(defect_pb2.LabelImageRequest(image=parrot), timeout=60)
            with pytest.raises(grpc.RpcError):
                stub.LabelImage(defect_pb2.LabelImageRequest(image=b"not an image"), timeout=60)
            frames = [defect_pb2.LabelImageRequest(image=parrot, id=str(i), k=i + 1) for i in range(2)]
            assert len(list(stub.LabelImageStream(iter(frames), timeout=60))) == 2
    finally:
        server.stop(grace=1).wait()

    def value(name, **labels):
        return metrics.registry.get_sample_value(name, {"function": "labelImage", "transport": "grpc", **labels}) or 0

    assert value("defect_service_calls_total") == 4
    assert value("defect_service_errors_total", status="INVALID_ARGUMENT") == 1
    assert value("defect_service_latency_seconds_count") == 3
    assert value("defect_service_calls_total", transport="http") == 0


@pytest.mark.parametrize("function, option, prefix", [
    ("labelImage", 0, "k must be a whole number from 1 to "),
    ("labelImage", 5000, "k must be a whole number from 1 to 1001, got 5000"),
    ("inference", 1.5, "threshold must be a number from 0 to 1, got 1.5"),
    ("inference", -0.1, "threshold must be a number from 0 to 1, got -0.1"),
])
def test_a_bad_option_is_invalid_argument(host, stub, function, option, prefix):
    rpc = RPCS[function]
    request = rpc.request(image=read(SURFACE))
    setattr(request, rpc.option, option)
    with pytest.raises(grpc.RpcError) as answer:
        getattr(stub, rpc.unary)(request)
    assert answer.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InputError) as plugin:
        host.call(function, read(SURFACE), option)
    assert answer.value.details() == str(plugin.value)
    assert answer.value.details().startswith(prefix)


def test_white_space_then_a_non_base64_byte_is_answered_not_stuck(stub):
    """1 MB of spaces and one other byte: a quadratic base64 check would hold the GIL for about an hour;
    the call has a 60 s deadline, so a regression fails as DEADLINE_EXCEEDED instead of hanging."""
    with pytest.raises(grpc.RpcError) as answer:
        stub.LabelImage(defect_pb2.LabelImageRequest(image=b" " * 1_000_000 + b"\xff"), timeout=60)
    assert answer.value.code() == grpc.StatusCode.INVALID_ARGUMENT, answer.value.details()
    assert "not an image" in answer.value.details()


def test_a_message_over_the_cap_is_resource_exhausted(stub, settings):
    cap = settings["input"]["max_bytes"] * 4 // 3 + 64 * 1024
    with pytest.raises(grpc.RpcError) as answer:
        stub.LabelImage(defect_pb2.LabelImageRequest(image=b"A" * (cap + 1)))
    assert answer.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # and the server goes on
    assert stub.LabelImage(defect_pb2.LabelImageRequest(image=read(SURFACE), k=1)).labels


# ---------------------------------------------------------------- streams


@pytest.mark.parametrize("function", sorted(RPCS))
def test_a_stream_answers_every_frame_in_order_and_a_bad_one_in_place(host, stub, function):
    rpc = RPCS[function]
    images = [read(fixture_path("images", name)) for name in ("parrot.jpg", "cat.bmp", "owl.jpg", "hot_dog.jpg")]
    images.append(read(SURFACE))
    frames = [images[i % len(images)] for i in range(40)]
    bad = 17
    frames[bad] = frames[bad][: len(frames[bad]) // 3]  # a frame cut short in the middle of the stream
    ids = [f"cam1-{i:03d}" for i in range(len(frames))]
    requests = [rpc.request(image=frame, id=frame_id) for frame, frame_id in zip(frames, ids, strict=True)]
    results = list(getattr(stub, rpc.stream)(iter(requests)))

    assert [r.id for r in results] == ids
    assert [i for i, r in enumerate(results) if r.error] == [bad]
    with pytest.raises(InputError) as plugin:
        host.call(function, frames[bad])
    assert results[bad].error == str(plugin.value)
    expected = {}
    for i, result in enumerate(results):
        if i != bad:
            key = images.index(frames[i])
            expected.setdefault(key, without_time(plugin_answer(host, function, frames[i])))
            assert without_time(answer_of(result)) == expected[key], i


def test_a_caller_that_hangs_up_mid_stream_leaves_the_server_serving(stub):
    data = read(fixture_path("images", "parrot.jpg"))

    def endless():
        n = 0
        while True:
            yield defect_pb2.LabelImageRequest(image=data, k=1, id=str(n))
            n += 1
    call = stub.LabelImageStream(endless())
    assert [next(call).id for _ in range(3)] == ["0", "1", "2"]
    call.cancel()
    with pytest.raises(grpc.RpcError) as ended:
        list(call)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    assert stub.LabelImage(defect_pb2.LabelImageRequest(image=data, k=1), timeout=30).labels[0].label == "89:macaw"
    # The server (in this process) let go of the stream: its reader thread ends.
    deadline = time.monotonic() + 30
    while any(t.name.startswith("grpc-LabelImageStream-reader") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the cancelled stream's reader thread is still running"
        time.sleep(0.1)


def test_a_stream_with_options_and_an_empty_stream(stub):
    data = read(fixture_path("images", "parrot.jpg"))
    results = list(stub.LabelImageStream(iter([defect_pb2.LabelImageRequest(image=data, k=2, id="a"),
                                                defect_pb2.LabelImageRequest(image=data, k=0, id="b")])))
    assert [len(r.labels) for r in results] == [2, 0]
    assert results[1].error.startswith("k must be a whole number")
    assert list(stub.InferenceStream(iter([]))) == []


# ---------------------------------------------------------------- loading, health, reflection


def test_health_is_serving_once_the_models_are_loaded(address):
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for service in ("", "defect.v1.Defect"):
            assert check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING


def test_a_model_that_failed_to_load_is_unavailable_and_not_serving(settings, tmp_path):
    broken = {**settings, "label": {**settings["label"], "model": str(tmp_path / "missing.tflite")}}
    host = ModelHost(broken, workers=1)
    host.start_loading()
    host.wait_loaded(120)
    server, address = serve(host)
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service="defect.v1.Defect"), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as answer:
                defect_pb2_grpc.DefectStub(channel).LabelImage(defect_pb2.LabelImageRequest(image=read(SURFACE)))
            assert answer.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "missing.tflite" in answer.value.details()
    finally:
        server.stop(grace=1).wait()


def listed_services(channel):
    """The service names server reflection lists (grpcio-reflection's own client messages)."""
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
    [answer] = list(reflect(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    return {service.name for service in answer.list_services_response.service}


def test_reflection_lists_the_services(address):
    with grpc.insecure_channel(address) as channel:
        names = listed_services(channel)
    assert names == {"defect.v1.Defect", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def ensure_grpcurl() -> str:
    """grpcurl from the Go module proxy, built once per version into ~/.cache/defect (like kuiperd)."""
    out = Path.home() / ".cache" / "defect" / f"grpcurl-{GRPCURL_VERSION.lstrip('v')}"
    binary = out / "grpcurl"
    if not binary.exists():
        r = subprocess.run(["go", "install", f"github.com/fullstorydev/grpcurl/cmd/grpcurl@{GRPCURL_VERSION}"],
                           env={**os.environ, "GOBIN": str(out)}, capture_output=True, text=True)
        if r.returncode != 0 or not binary.exists():
            pytest.fail(f"building grpcurl {GRPCURL_VERSION} with Go failed (rc={r.returncode}): {r.stderr[-2000:]}")
    return str(binary)


def grpcurl(*args, data=None):
    r = subprocess.run([ensure_grpcurl(), "-plaintext", *args], input=data, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def test_grpcurl_lists_describes_and_calls_through_reflection(address):
    rc, out, err = grpcurl(address, "list")
    assert rc == 0, err
    assert "defect.v1.Defect" in out.split()
    rc, out, err = grpcurl(address, "describe", "defect.v1.Defect")
    assert rc == 0, err
    assert "rpc InferenceStream ( stream .defect.v1.InferenceRequest ) returns ( stream .defect.v1.InferenceResult );" \
        in out
    body = json.dumps({"image": base64.b64encode(read(SURFACE)).decode(), "id": "x"})
    rc, out, err = grpcurl("-d", "@", address, "defect.v1.Defect/Inference", data=body)
    assert rc == 0, err
    answer = json.loads(out)
    assert answer["defect"] == 3 and answer["id"] == "x" and "inference time" in answer
    rc, out, err = grpcurl("-d", '{"image": "aGVsbG8="}', address, "defect.v1.Defect/LabelImage")
    assert rc != 0 and "InvalidArgument" in err and "not an image" in err


# ---------------------------------------------------------------- API key and TLS


def test_the_api_key_guards_the_models_but_not_health(host):
    server, address = serve(host, api_key=API_KEY)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = defect_pb2_grpc.DefectStub(channel)
            request = defect_pb2.LabelImageRequest(image=read(SURFACE), k=1)
            for metadata in (None, [("x-api-key", "wrong")], [("x-api-key", "")]):
                for call in (lambda: stub.LabelImage(request, metadata=metadata),
                             lambda: list(stub.LabelImageStream(iter([request]), metadata=metadata))):
                    with pytest.raises(grpc.RpcError) as answer:
                        call()
                    assert answer.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert answer.value.details() == "missing or wrong API key (x-api-key metadata)"
            key = [("x-api-key", API_KEY)]
            assert stub.LabelImage(request, metadata=key).labels
            assert [r.id for r in stub.InferenceStream(iter([defect_pb2.InferenceRequest(image=read(SURFACE), id="1")]),
                                                       metadata=key)] == ["1"]
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            assert "defect.v1.Defect" in listed_services(channel)
    finally:
        server.stop(grace=1).wait()


def self_signed_certificate(tmp_path):
    """A certificate for 127.0.0.1 and its key, by openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_tls(host, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server, address = serve(host, tls=(cert.read_bytes(), key.read_bytes()))
    try:
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(cert.read_bytes())) as channel:
            result = defect_pb2_grpc.DefectStub(channel).LabelImage(
                defect_pb2.LabelImageRequest(image=read(fixture_path("images", "parrot.jpg"))), timeout=30)
            assert result.labels[0].label == "89:macaw"
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as answer:
            defect_pb2_grpc.DefectStub(channel).LabelImage(defect_pb2.LabelImageRequest(image=b"x"), timeout=10)
        assert answer.value.code() == grpc.StatusCode.UNAVAILABLE  # a plaintext client gets no answer
    finally:
        server.stop(grace=1).wait()


# ---------------------------------------------------------------- the video client


def run_client(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "service", "client.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_the_client_streams_a_clip_and_writes_a_json_line_per_frame(camera_clip, address):
    path, scenes = camera_clip
    frame_count = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    r = run_client("--video", str(path), "--grpc", address)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["frame"] for line in lines] == list(range(frame_count)) and frame_count == 90
    assert [line["id"] for line in lines] == [str(i) for i in range(frame_count)]
    for line in lines:
        scene = scenes[line["frame"] // 30]  # 10 fps, 3 s a scene
        if scene.name != "surface":
            assert scene.accepts(line["result"][0]["label"]), line
    assert {line["result"][0]["label"] for line in lines[30:60]} == {"89:macaw"}

    r = run_client("--video", str(path), "--grpc", address, "--function", "inference")
    assert r.returncode == 0, r.stderr
    defects = [json.loads(line)["result"]["defect"] for line in r.stdout.splitlines()]
    assert len(defects) == frame_count and set(defects[60:]) == {3}


def test_the_client_writes_an_annotated_mp4(camera_clip, address, tmp_path):
    path, _ = camera_clip
    out = tmp_path / "annotated.mp4"
    r = run_client("--video", str(path), "--grpc", address, "--function", "inference", "--out", str(out))
    assert r.returncode == 0, r.stderr
    source, annotated = cv2.VideoCapture(str(path)), cv2.VideoCapture(str(out))
    assert annotated.isOpened()
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == source.get(cv2.CAP_PROP_FRAME_COUNT) == 90
    assert (annotated.get(cv2.CAP_PROP_FRAME_WIDTH), annotated.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)
    drawn, plain = read_frames(annotated), read_frames(source)
    assert len(drawn) == len(plain) == 90

    def red_pixels(frame):  # below the caption
        return int(((frame[40:, :, 2] > 200) & (frame[40:, :, 1] < 60) & (frame[40:, :, 0] < 60)).sum())
    # The three defect boxes are drawn in red on the surface frames (6 s on); the cat gets only its caption.
    assert red_pixels(drawn[75]) - red_pixels(plain[75]) > 300
    assert abs(red_pixels(drawn[10]) - red_pixels(plain[10])) < 50


def read_frames(capture):
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_the_client_says_when_the_service_is_not_there(camera_clip):
    path, _ = camera_clip
    address = f"127.0.0.1:{free_port()}"
    r = run_client("--video", str(path), "--grpc", address)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"client.py: {address}: UNAVAILABLE: "), r.stderr
    r = run_client("--video", str(path.with_name("no-such.mp4")), "--grpc", address)
    assert r.returncode == 2 and "cannot be opened as a video" in r.stderr
