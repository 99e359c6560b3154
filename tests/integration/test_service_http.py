"""The HTTP service (service/service.py + service/http_api.py) as a real process on 127.0.0.1.

Real models; the answers are compared with the plugin's own function code in this process
(ModelHost runs each function's serve_one), and with the fixtures' known answers.
"""
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.catalog import BY_NAME
from core.model_host import ModelHost
from tests.support.bad_inputs import bad_images
from tests.support.paths import REPO, fixture_path
from tests.support.service_process import HOST, ServiceProcess, running_service

pytestmark = pytest.mark.timeout(600)

OPTION = {"labelImage": "k", "inference": "threshold"}
BAD_OPTIONS = {"labelImage": [0, 2.5, "abc", -1], "inference": [2, -0.1, "high"]}
API_KEY = "s3cret-key-" + "0123456789abcdef" * 2  # a key has 32 bytes at least


def read(path):
    with open(path, "rb") as f:
        return f.read()


PARROT = fixture_path("images", "parrot.jpg")
SURFACE = os.path.join(REPO, "models", "sample_surface.png")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service with the plugin's config, started from a directory that is not the repo."""
    with running_service(["--body-timeout", "5"], cwd=str(tmp_path_factory.mktemp("elsewhere"))) as service:
        yield service
    assert service.proc.returncode == 0, service.output  # SIGTERM: a clean stop
    assert "service: stopped" in service.output


@pytest.fixture(scope="module")
def reference(settings):
    """The plugin's functions in this process: what the service must answer."""
    host = ModelHost(settings, workers=1)
    host.start_loading()
    assert host.wait_loaded(120) and host.ready(), host.status()
    return host


def url(service, path):
    return f"http://{HOST}:{service.http_port}{path}"


def without_time(answer):
    """inference's answer minus its timing (ms of this call), the one field that differs per call."""
    return {k: v for k, v in answer.items() if k != "inference time"} if isinstance(answer, dict) else answer


def post_forms(service, name, image_path, option=None):
    """The same image and option in each body form (and the option in the query), -> {form: response}."""
    data = read(image_path)
    mime = "image/png" if image_path.endswith(".png") else "image/jpeg"
    key = OPTION[name]
    endpoint = url(service, f"/analyze/{name}")
    query = {key: option} if option is not None else None
    json_body = {"image": base64.b64encode(data).decode()}
    form_fields = {}
    if option is not None:
        json_body[key] = option
        form_fields[key] = str(option)
    return {
        "raw": requests.post(endpoint, data=data, headers={"Content-Type": mime}, params=query),
        "multipart": requests.post(endpoint, files={"image": ("x", data, mime)}, data=form_fields),
        "multipart, option in query": requests.post(endpoint, files={"image": ("x", data, mime)}, params=query),
        "json": requests.post(endpoint, json=json_body),
        "json, option in query": requests.post(endpoint, json={"image": json_body["image"]}, params=query),
    }


@pytest.mark.parametrize("k", [None, 1, 3])
def test_label_image_in_every_body_form_is_the_plugins_answer(service, reference, k):
    expected = reference.call("labelImage", read(PARROT), k)
    assert expected[0]["label"] == "89:macaw"
    assert len(expected) == (k or 5)
    for form, response in post_forms(service, "labelImage", PARROT, k).items():
        assert response.status_code == 200, (form, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected, form


@pytest.mark.parametrize("threshold", [None, 0.5, 0.9])
def test_inference_in_every_body_form_is_the_plugins_answer(service, reference, threshold):
    expected = without_time(reference.call("inference", read(SURFACE), threshold))
    if threshold in (None, 0.5):
        assert expected["defect"] == 3
    for form, response in post_forms(service, "inference", SURFACE, threshold).items():
        assert response.status_code == 200, (form, response.text)
        answer = response.json()
        assert answer["inference time"] > 0
        assert without_time(answer) == expected, form


def test_a_data_uri_and_base64_text_in_multipart_are_read_as_the_plugin_reads_them(service, reference):
    text = "data:image/jpeg;base64," + base64.b64encode(read(PARROT)).decode()
    expected = reference.call("labelImage", text, 2)
    assert requests.post(url(service, "/analyze/labelImage"), json={"image": text, "k": 2}).json() == expected
    answer = requests.post(url(service, "/analyze/labelImage?k=2"), files={"image": (None, text)})
    assert answer.json() == expected


def json_of(value):
    return {"image": value}


@pytest.mark.parametrize("name", ["labelImage", "inference"])
def test_bad_images_on_every_endpoint_are_400_with_the_plugins_line(service, reference, name):
    endpoint = url(service, f"/analyze/{name}")
    for case, (value, word) in bad_images().items():
        if case == "over 20 MB":  # 28 MB of base64 text: a body over the JSON limit, 413 (its own test)
            continue
        response = requests.post(endpoint, json=json_of(value))
        assert response.status_code == 400, (case, response.text)
        error = response.json()["error"]
        assert word in error, (case, error)
        with pytest.raises(Exception) as plugin_error:  # the plugin's own line for the same value
            reference.call(name, value)
        assert error == str(plugin_error.value), case
    # The same bytes as raw bodies and uploads.
    jpeg = read(fixture_path("images", "cat_720p.jpg"))
    raw_cases = {b"": "empty", b"hello, this is not a picture": "not an image",
                 jpeg[: len(jpeg) // 2]: "truncated", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n": "not an image"}
    for data, word in raw_cases.items():
        for response in (requests.post(endpoint, data=data, headers={"Content-Type": "image/jpeg"}),
                         requests.post(endpoint, files={"image": ("x.jpg", data, "image/jpeg")})):
            assert response.status_code == 400, response.text
            assert word in response.json()["error"]


@pytest.mark.parametrize("name", ["labelImage", "inference"])
def test_bad_options_in_query_json_and_form_are_400_with_the_plugins_line(service, reference, name):
    endpoint = url(service, f"/analyze/{name}")
    image = read(PARROT)
    key = OPTION[name]
    for option in BAD_OPTIONS[name]:
        with pytest.raises(Exception) as plugin_error:
            reference.call(name, image, option)
        expected = str(plugin_error.value)
        assert key in expected
        for response in (
                requests.post(endpoint, data=image, headers={"Content-Type": "image/jpeg"}, params={key: option}),
                requests.post(endpoint, json={"image": base64.b64encode(image).decode(), key: option}),
                requests.post(endpoint, files={"image": ("x.jpg", image, "image/jpeg")}, data={key: str(option)})):
            assert response.status_code == 400, response.text
            assert response.json() == {"error": expected}


@pytest.mark.parametrize("name", ["labelImage", "inference"])
def test_malformed_requests_are_one_line_errors(service, name):
    endpoint = url(service, f"/analyze/{name}")
    image = read(PARROT)
    cases = [
        (requests.post(endpoint, data="{not json", headers={"Content-Type": "application/json"}), 400,
         "not valid JSON"),
        (requests.post(endpoint, json=[1, 2]), 400, "must be an object"),
        (requests.post(endpoint, json={"image": "x", "treshold": 1}), 400, "unknown field 'treshold'"),
        (requests.post(endpoint, data=image, headers={"Content-Type": "image/jpeg"}, params={"kk": 1}), 400,
         "unknown query parameter 'kk'"),
        (requests.post(endpoint, files={"photo": ("x.jpg", image, "image/jpeg")}), 400, "unknown field 'photo'"),
        (requests.post(endpoint, json={}), 400, "image is null"),
        (requests.post(endpoint, data=b"--xx\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=xx"}),
         400, "multipart body has no field image"),  # the parser finds no part in it
        (requests.post(endpoint, data=image, headers={"Content-Type": "text/plain"}), 415, "Content-Type text/plain"),
        (requests.post(endpoint, data=image, headers={"Content-Type": ""}), 415, "Content-Type missing"),
        (requests.get(endpoint), 405, "Method Not Allowed"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert list(response.json()) == ["error"] and words in response.json()["error"]
    unknown = requests.post(url(service, "/analyze/labelImages"), data=image, headers={"Content-Type": "image/jpeg"})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown function 'labelImages': use one of labelImage, inference"}


def http_exchange(port, head: bytes, body: bytes = b"") -> bytes:
    """One raw HTTP request; the whole answer up to the server's close (a few seconds at most)."""
    with socket.create_connection((HOST, port), timeout=30) as conn:
        conn.sendall(head + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize("name", ["labelImage", "inference"])
def test_413_is_judged_from_content_length_before_the_body_is_sent(service, name):
    head = (f"POST /analyze/{name} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: 5000000000\r\nConnection: close\r\n\r\n").encode()
    answer = http_exchange(service.http_port, head)  # not one byte of the 5 GB body is sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith(
        "body of 5000000000 bytes is over the limit of 20000000")


def test_the_process_survives_a_stream_of_bad_requests(service, reference):
    endpoints = [url(service, "/analyze/labelImage"), url(service, "/analyze/inference")]
    for _ in range(3):
        for endpoint in endpoints:
            for case, (value, _word) in bad_images().items():
                if case != "over 20 MB":  # 413 before the body is read: the client would see a reset
                    requests.post(endpoint, json=json_of(value))
            requests.post(endpoint, data=os.urandom(50_000), headers={"Content-Type": "image/png"})
            requests.post(endpoint, data=b"\xff\xd8" + os.urandom(50_000), headers={"Content-Type": "image/jpeg"})
    # Broken HTTP: a garbage request line, a header cut short, a body promised and not sent.
    for head in (b"\x00\x01garbage\r\n\r\n", b"POST /analyze/inference HTTP/1.1\r\nHost: x\r\nContent-Le",
                 b"POST /analyze/inference HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                 b"Content-Length: 1000\r\n\r\nab"):
        with socket.create_connection((HOST, service.http_port), timeout=10) as conn:
            conn.sendall(head)
            conn.shutdown(socket.SHUT_WR)
            with contextlib.suppress(ConnectionResetError):  # the server may drop it: what counts is below
                conn.recv(65536)
    assert service.proc.poll() is None  # one process, nothing restarts it: still running is never restarted
    answer = requests.post(endpoints[0], data=read(PARROT), headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json() == reference.call("labelImage", read(PARROT))


def metric_values(service):
    text = requests.get(url(service, "/metrics")).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            values[(sample.name, labels)] = sample.value
    return values


def test_a_body_that_stops_half_way_is_408_and_the_server_goes_on(service, reference):
    """A sender that declares more than it sends gets 408 after --body-timeout, not a connection held for ever."""
    with socket.create_connection((HOST, service.http_port), timeout=60) as sock:
        sock.sendall(b"POST /analyze/labelImage HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000\r\n\r\n" + read(PARROT)[:1000])
        answer = b""
        while b"}" not in answer and (chunk := sock.recv(65536)):  # the head and the JSON may come apart
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"the body did not arrive within 5 s (1000 bytes came)"' in answer
    good = requests.post(url(service, "/analyze/labelImage"), data=read(PARROT), headers={"Content-Type": "image/jpeg"})
    assert good.status_code == 200 and good.json() == reference.call("labelImage", read(PARROT))


def test_metrics_count_calls_errors_and_latency_per_function(service):
    def count(values, name, **labels):
        return values.get((name, tuple(sorted({"transport": "http", **labels}.items()))), 0)

    before = metric_values(service)
    for _ in range(3):
        assert requests.post(url(service, "/analyze/inference"), data=read(SURFACE),
                             headers={"Content-Type": "image/png"}).status_code == 200
    assert requests.post(url(service, "/analyze/inference"), json={"image": ""}).status_code == 400
    assert requests.post(url(service, "/analyze/labelImage?k=0"), data=read(PARROT),
                         headers={"Content-Type": "image/jpeg"}).status_code == 400
    after = metric_values(service)
    assert count(after, "defect_service_calls_total", function="inference") - \
        count(before, "defect_service_calls_total", function="inference") == 4
    assert count(after, "defect_service_errors_total", function="inference", status="400") - \
        count(before, "defect_service_errors_total", function="inference", status="400") == 1
    assert count(after, "defect_service_errors_total", function="labelImage", status="400") - \
        count(before, "defect_service_errors_total", function="labelImage", status="400") == 1
    assert count(after, "defect_service_latency_seconds_count", function="inference") - \
        count(before, "defect_service_latency_seconds_count", function="inference") == 3
    assert count(after, "defect_service_latency_seconds_sum", function="inference") > \
        count(before, "defect_service_latency_seconds_sum", function="inference")


def test_healthz_is_200_when_both_models_are_loaded(service):
    answer = requests.get(url(service, "/healthz"))
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "functions": {"labelImage": "ready", "inference": "ready"}}


def test_openapi_declares_every_body_form_and_the_options(service):
    spec = requests.get(url(service, "/openapi.json")).json()
    for name, key in OPTION.items():
        operation = spec["paths"][f"/analyze/{name}"]["post"]
        assert set(operation["requestBody"]["content"]) == {"image/*", "multipart/form-data", "application/json"}
        keys = BY_NAME[name].option.keys  # the option, then the rest of the SQL options object
        assert keys[0] == key and {"model", "roi", "explain"} <= set(keys)
        assert [(p["name"], p["in"]) for p in operation["parameters"]] == [(k, "query") for k in keys]
        for form in ("multipart/form-data", "application/json"):
            assert set(keys) <= set(operation["requestBody"]["content"][form]["schema"]["properties"])
        assert {"200", "400", "413", "503"} <= set(operation["responses"])
    assert "/healthz" in spec["paths"] and "/metrics" in spec["paths"]


def test_docs_page_loads_swagger_ui_from_the_service_itself(service):
    page = requests.get(url(service, "/docs")).text
    assert "cdn" not in page.lower()
    assets = [part.split('"')[0] for part in page.split('src="')[1:]] + \
             [part.split('"')[0] for part in page.split('href="')[1:]]
    assert assets and all(asset.startswith("/") for asset in assets), assets
    for asset in assets:
        assert requests.get(url(service, asset)).status_code == 200, asset


def test_a_bad_config_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "site.json"
    bad.write_text('{"defect": {"treshold": 0.4}}')
    service = ServiceProcess([], env={"DEFECT_CONFIG": str(bad)}).start()
    try:
        assert service.proc.wait(60) == 2
    finally:
        service.stop()  # one that serves anyway (a regression) must not outlive the test
    service.collector.join(10)  # every line read
    lines = service.output.strip().splitlines()
    assert len(lines) == 1 and "unknown key defect.treshold" in lines[0] and "did you mean defect.threshold" in lines[0]


@pytest.mark.parametrize("option, value", [("--http-port", "70000"), ("--http-port", "0"),
                                           ("--grpc-port", "-1"), ("--workers", "-2")])
def test_an_option_out_of_range_is_refused_before_anything_listens(option, value):
    """uvicorn would listen on 70000 modulo 65536 (4464) and print a URL nothing answers on."""
    service = ServiceProcess([option, value]).start()
    try:
        assert service.proc.wait(60) == 2, service.output
    finally:
        service.stop()
    service.collector.join(10)
    assert f"service.py: error: {option} must be" in service.output and "listening" not in service.output


def test_an_http_port_in_use_is_one_line_and_exit_2_before_any_model_loads():
    """uvicorn's own answer was a traceback-free ERROR line after a false "listening" line, and exit
    3, or SIGABRT when it ended while a model loaded (OpenVINO's teardown under the loader)."""
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        service = ServiceProcess([], http_port=taken.getsockname()[1]).start()
        try:
            assert service.proc.wait(60) == 2, service.output
        finally:
            service.stop()  # one that serves anyway (a regression) must not outlive the test
    service.collector.join(10)
    lines = service.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"service.py: HTTP cannot listen on {HOST}:{service.http_port}: "
                                                   "Address already in use"), service.output


def test_a_grpc_port_in_use_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        service = ServiceProcess([], grpc_port=taken.getsockname()[1]).start()
        try:
            assert service.proc.wait(60) == 2, service.output
        finally:
            service.stop()
    service.collector.join(10)
    assert f"service.py: gRPC cannot listen on {HOST}:{service.grpc_port}: " in service.output
    assert "Traceback" not in service.output
    # Refused before the models: ending while one loaded could abort the process (SIGABRT, seen in CI).
    ours = [line for line in service.output.splitlines() if "add_port.cc" not in line]  # gRPC core's own log
    assert len(ours) == 1, service.output


def test_503_while_loading_then_served_and_a_failed_model_gives_its_reason(tmp_path):
    """The labels file is a FIFO: labelImage's model stays loading until the test writes it, so
    "while loading" is a state the test holds, not a race. The defect model is missing: 503 with why."""
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    overlay = tmp_path / "site.json"
    overlay.write_text(json.dumps({"defect": {"model": str(tmp_path / "missing.xml")},
                                   "label": {"runtime": "litert", "threads": 1}, "input": {"max_bytes": 100_000}}))
    # One model copy, its runtime and threads set (nothing measured): each build reads the labels file, and
    # the FIFO is written once.
    service = ServiceProcess(["--workers", "1"], env={"LABEL_LABELS": str(fifo), "DEFECT_CONFIG": str(overlay)}).start()
    try:
        service.wait_listening()
        loading = requests.get(url(service, "/healthz"))
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading" and loading.json()["functions"]["labelImage"] == "loading"
        still = requests.post(url(service, "/analyze/labelImage"), data=read(PARROT)[:90_000],
                              headers={"Content-Type": "image/jpeg"})
        assert still.status_code == 503 and "still loading" in still.json()["error"]
        assert still.headers["retry-after"]
        # The limit holds while loading too, and for a chunked body (no Content-Length) as it is read.
        assert http_413_chunked(service.http_port, "inference", 100_000)
        with open(fifo, "w") as f:  # the labels: the model finishes loading
            f.write(open(os.path.join(REPO, "models", "imagenet_labels.txt")).read())
        service.wait_for("service: not ready")
        health = requests.get(url(service, "/healthz"))
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert health.json()["functions"]["labelImage"] == "ready"
        reason = health.json()["functions"]["inference"]
        assert "model could not be loaded" in reason and "missing.xml" in reason
        small = read(os.path.join(REPO, "models", "sample_cat.jpg"))  # under this server's 100 kB
        served = requests.post(url(service, "/analyze/labelImage"), data=small, headers={"Content-Type": "image/jpeg"})
        assert served.status_code == 200 and "cat" in served.json()[0]["label"]
        failed = requests.post(url(service, "/analyze/inference"), data=small, headers={"Content-Type": "image/jpeg"})
        assert failed.status_code == 503 and failed.json() == {"error": reason}
    finally:  # a loader left blocked on the FIFO is a daemon thread: it does not hold the stop
        assert service.stop() == 0, service.output


def http_413_chunked(port, name, limit):
    """A chunked body just over the limit (all of it sent, so the answer is not lost to a reset)."""
    head = (f"POST /analyze/{name} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/jpeg\r\n"
            f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunks = [b"\xff" * 10_000] * (limit // 10_000) + [b"\xff" * (limit % 10_000 + 1)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    answer = http_exchange(port, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    return b"over the limit" in answer


def self_signed_certificate(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_api_key_and_tls(tmp_path, reference):
    """python -m service.service with a key from a file and a self-signed certificate."""
    cert, key = self_signed_certificate(tmp_path)
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    args = ["--api-key-file", str(key_file), "--tls-cert", cert, "--tls-key", key]
    with running_service(args, module=True) as service:
        assert "https://127.0.0.1:" in service.output
        base = f"https://{HOST}:{service.http_port}"
        endpoint = f"{base}/analyze/labelImage"
        image = read(PARROT)
        with pytest.raises(requests.exceptions.SSLError):  # not a certificate the client trusts
            requests.post(endpoint, data=image, headers={"Content-Type": "image/jpeg"})
        with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP on the TLS port
            requests.get(f"http://{HOST}:{service.http_port}/healthz")
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY[:-1]}):
            refused = requests.post(endpoint, data=image, headers={"Content-Type": "image/jpeg", **headers},
                                    verify=cert)
            assert refused.status_code == 401
            assert refused.json() == {"error": "missing or wrong API key (X-API-Key header)"}
        assert requests.get(f"{base}/metrics", verify=cert).status_code == 401
        assert requests.get(f"{base}/healthz", verify=cert).status_code == 200  # for load balancers, no key
        served = requests.post(endpoint, data=image, headers={"Content-Type": "image/jpeg", "X-API-Key": API_KEY},
                               verify=cert)
        assert served.status_code == 200 and served.json() == reference.call("labelImage", image)
        assert requests.get(f"{base}/metrics", headers={"X-API-Key": API_KEY}, verify=cert).status_code == 200
        scheme = requests.get(f"{base}/openapi.json", verify=cert).json()["components"]["securitySchemes"]
        assert [(s["type"], s["in"], s["name"]) for s in scheme.values()] == [("apiKey", "header", "X-API-Key")]
    assert service.proc.returncode == 0


def test_the_api_key_comes_from_the_environment_too_and_ctrl_c_stops_cleanly(tmp_path):
    from_env = "from-env-" + "e" * 32  # a key has 32 bytes at least
    with running_service(env={"DEFECT_API_KEY": from_env}) as service:
        endpoint = url(service, "/analyze/inference")
        assert requests.post(endpoint, data=read(SURFACE), headers={"Content-Type": "image/png"}).status_code == 401
        assert requests.post(endpoint, data=read(SURFACE),
                             headers={"Content-Type": "image/png", "X-API-Key": from_env}).json()["defect"] == 3
        os.killpg(service.proc.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the group
        assert service.proc.wait(20) == 0
        assert "service: stopped" in service.output
