"""Issue #11 part 3: a rule in a real kuiperd calls the model service (service/service.py, a real
process) as an eKuiper external service, over gRPC and over REST, registered through POST /services
with the zip service/ekuiper_service.py builds.

kuiperd 2.4 refuses REST calls to loopback and private addresses unless `basic.enablePrivateNet`
is true (its gRPC calls are not checked): this module runs a kuiperd of its own with it, and shows
the refusal on the session kuiperd, which runs without it.
"""
import base64
import json
import time
import zipfile

import pytest

from service.ekuiper_service import SERVICE_NAME, write_zip
from tests.support.scenarios import GRACE_SECONDS, image_bytes, json_or_none
from tests.support.service_process import HOST, running_service
from tools import harness

REPO = harness.REPO_ROOT

SURFACE = REPO / "models" / "sample_surface.png"  # 3 defects (`make models`)


@pytest.fixture(scope="module")
def service():
    """service/service.py as a real process, HTTP and gRPC on free ports."""
    with running_service(grpc=True) as s:
        yield s


def grpc_address(service):
    return f"{HOST}:{service.grpc_port}"


def http_url(service):
    return f"http://{HOST}:{service.http_port}"


@pytest.fixture(scope="module")
def service_zip(service, tmp_path_factory):
    """The external-service zip for the running service, as a file:// URL."""
    path = write_zip(tmp_path_factory.mktemp("zip") / f"{SERVICE_NAME}.zip", grpc_address(service), http_url(service))
    return path.resolve().as_uri()


@pytest.fixture(scope="module")
def private_net_kuiperd(tmp_path_factory, mosquitto, service_zip):
    """A kuiperd of this module's own with basic.enablePrivateNet (the env form of kuiper.yaml's key),
    beside the session one (its own /tmp), with the service registered."""
    k = harness.Kuiperd(tmp_path_factory.mktemp("kuiper_private_net"), mosquitto.url, private_tmp=True,
                        extra_env={"KUIPER__BASIC__ENABLEPRIVATENET": "true"}).start()
    try:
        k.client.request("POST", "/services", {"name": SERVICE_NAME, "file": service_zip})
        yield k
    finally:
        k.stop()


@pytest.fixture
def rules(private_net_kuiperd):
    """The private-net kuiperd's REST client; deletes the rules and streams a test made."""
    c = private_net_kuiperd.client
    yield c
    for r in c.request("GET", "/rules"):
        c.delete_rule(r["id"])
    for s in c.request("GET", "/streams"):
        c.delete_stream(s)


def run_rule(kuiperd, client, mosquitto, mqtt_pub, mqtt_sub, unique, fmt, select, payloads, options=None):
    """A stream on a fresh topic, one rule `SELECT <select> FROM it` to a fresh topic; publish
    payloads; return what the sink got (JSON rows, or the text of error rows)."""
    source, sink, rule = unique("ext_in"), unique("ext_out"), unique("ext_rule")
    out = mqtt_sub(sink)
    client.create_stream(f'CREATE STREAM {source} () WITH (DATASOURCE="{source}", FORMAT="{fmt}")')
    client.create_rule(rule, f"SELECT {select} FROM {source}", [kuiperd.mqtt_action(sink, sendSingle=True)], options)
    client.wait_rule_running(rule)
    mosquitto.wait_subscribed(source)
    for payload in payloads:
        mqtt_pub.publish(source, payload)
    out.wait_for(len(payloads), timeout=60)
    time.sleep(GRACE_SECONDS)
    rows = out.payloads()
    assert len(rows) == len(payloads), rows
    return [json_or_none(p) if json_or_none(p) is not None else p.decode() for p in rows]


def frame_json(data: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(data).decode()}).encode()


def test_the_service_and_its_functions_are_registered(rules):
    assert SERVICE_NAME in rules.request("GET", "/services")
    functions = {f["FuncName"]: f for f in rules.request("GET", "/services/functions")}
    assert {"labelImageGrpc", "inferenceGrpc", "defectHttp"} <= set(functions)
    assert functions["labelImageGrpc"]["MethodName"] == "LabelImage"


def test_grpc_functions_from_a_binary_and_a_json_stream(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub,
                                                        unique):
    parrot, surface = image_bytes("parrot.jpg"), SURFACE.read_bytes()
    # self of a BINARY stream: the frame's bytes go into the proto's bytes field as they are.
    rows = run_rule(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub, unique, "BINARY",
                    'labelImageGrpc(self, 2, "cam1")->labels AS labels, '
                    'labelImageGrpc(object_construct("image", self))->labels[0]->label AS top',
                    [parrot])
    assert rows[0]["top"] == "89:macaw"
    assert len(rows[0]["labels"]) == 2 and rows[0]["labels"][0]["label"] == "89:macaw"
    # A base64 field of a JSON stream: its text goes into the bytes field, and the service reads it as base64.
    rows = run_rule(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub, unique, "JSON",
                    'inferenceGrpc(image, 0.5, "")->defect AS defect, inferenceGrpc(image, 0.5, "")->defects AS boxes, '
                    'inferenceGrpc(object_construct("image", image))->width AS width',
                    [frame_json(surface)])
    assert rows[0]["defect"] == 3 and rows[0]["width"] == 640
    assert len(rows[0]["boxes"]) == 3 and set(rows[0]["boxes"][0]) == {"x", "y", "w", "h", "area"}


def test_rest_function_answers_what_the_plugin_returns(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub,
                                                       unique):
    parrot, surface = image_bytes("parrot.jpg"), SURFACE.read_bytes()
    rows = run_rule(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub, unique, "BINARY",
                    'defectHttp("post", "/analyze/labelImage", object_construct("image", self, "k", 1)) AS labels',
                    [parrot])
    assert [label["label"] for label in rows[0]["labels"]] == ["89:macaw"]
    rows = run_rule(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub, unique, "JSON",
                    'defectHttp("post", "/analyze/inference", object_construct("image", image))->defect AS defect, '
                    'defectHttp("post", "/analyze/inference", object_construct("image", image)) AS answer',
                    [frame_json(surface)])
    assert rows[0]["defect"] == 3
    assert set(rows[0]["answer"]) == {"inference time", "defect", "defects", "width", "height", "base64"}


def test_a_bad_frame_is_the_services_one_line(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub, unique):
    rows = run_rule(private_net_kuiperd, rules, mosquitto, mqtt_pub, mqtt_sub, unique, "BINARY",
                    'labelImageGrpc(self, 1, "")->labels[0]->label AS grpc, '
                    'defectHttp("post", "/analyze/labelImage", object_construct("image", self)) AS http',
                    [b"\xff\xd8 a JPEG cut short", image_bytes("parrot.jpg")], options={"sendError": True})
    error, good = rows
    assert isinstance(error, str) and "InvalidArgument" in error and "JPEG is truncated" in error, error
    print(f"a bad frame's error row: {error}")
    assert good["grpc"] == "89:macaw"


def test_without_enable_private_net_rest_to_loopback_is_refused(kuiperd, kuiper, service_zip, mosquitto, mqtt_pub,
                                                                mqtt_sub, unique):
    """The session kuiperd runs with kuiper.yaml's default enablePrivateNet: false."""
    kuiper.request("POST", "/services", {"name": SERVICE_NAME, "file": service_zip})
    try:
        rows = run_rule(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub, unique, "BINARY",
                        'defectHttp("post", "/analyze/labelImage", object_construct("image", self)) AS http',
                        [image_bytes("parrot.jpg")], options={"sendError": True})
        assert "ip 127.0.0.1 is in internal network" in rows[0], rows
        print(f"REST without enablePrivateNet: {rows[0]}")
        rows = run_rule(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub, unique, "BINARY",
                        'labelImageGrpc(self, 1, "")->labels[0]->label AS label', [image_bytes("parrot.jpg")])
        assert rows == [{"label": "89:macaw"}]  # gRPC calls are not checked
    finally:
        kuiper.request("DELETE", f"/services/{SERVICE_NAME}")


def test_when_the_service_is_down_the_rule_gets_an_error_and_recovers(service, private_net_kuiperd, rules, mosquitto,
                                                                      mqtt_pub, mqtt_sub, unique):
    source, sink, rule = unique("ext_in"), unique("ext_out"), unique("ext_rule")
    out = mqtt_sub(sink)
    rules.create_stream(f'CREATE STREAM {source} () WITH (DATASOURCE="{source}", FORMAT="BINARY")')
    rules.create_rule(rule, f'SELECT labelImageGrpc(self, 1, "")->labels[0]->label AS grpc, '
                      f'defectHttp("post", "/analyze/labelImage", object_construct("image", self))[0]->label AS http '
                      f"FROM {source}", [private_net_kuiperd.mqtt_action(sink, sendSingle=True)], {"sendError": True})
    rules.wait_rule_running(rule)
    mosquitto.wait_subscribed(source)
    parrot = image_bytes("parrot.jpg")
    mqtt_pub.publish(source, parrot)
    assert json.loads(out.wait_for(1)[0].payload) == {"grpc": "89:macaw", "http": "89:macaw"}

    service.stop()
    try:
        mqtt_pub.publish(source, parrot)
        error = out.wait_for(2, timeout=30)[1].payload.decode()
        assert json_or_none(error.encode()) is None and "Unavailable" in error, error
        print(f"with the service down the rule's sink gets: {error}")
    finally:
        service.lines.clear()
        service.start().wait_for("service: ready")

    def served():
        mqtt_pub.publish(source, parrot)
        time.sleep(1)
        return any(json_or_none(p) == {"grpc": "89:macaw", "http": "89:macaw"} for p in out.payloads()[2:])
    harness.wait_until(served, 90, interval=1, what="the rule served again once the service is back")


def test_descriptor_ships_with_the_defaults(tmp_path):
    path = write_zip(tmp_path / "s.zip", "127.0.0.1:50051", "http://127.0.0.1:8084")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == [f"{SERVICE_NAME}.json", "schemas/", "schemas/defect.proto"]
        assert z.read("schemas/defect.proto") == (REPO / "service" / "defect.proto").read_bytes()
        conf = json.loads(z.read(f"{SERVICE_NAME}.json"))
    assert conf["interfaces"]["defectGrpc"]["address"] == "tcp://127.0.0.1:50051"
    assert conf["interfaces"]["defectHttp"]["address"] == "http://127.0.0.1:8084"


def test_new_addresses_take_effect_only_after_a_kuiperd_restart(service, private_net_kuiperd, rules, mosquitto,
                                                               mqtt_pub, mqtt_sub, unique, tmp_path):
    """kuiperd 2.4.2 keeps each interface's client (executor) by interface name for its whole life, and
    PUT /services/<name> does not drop it: a rule goes on calling the old address until kuiperd restarts.
    Pinned, so an eKuiper upgrade that fixes it shows up. Runs last: it leaves kuiperd with a dead address."""
    source, sink, rule = unique("ext_in"), unique("ext_out"), unique("ext_rule")
    out = mqtt_sub(sink)
    rules.create_stream(f'CREATE STREAM {source} () WITH (DATASOURCE="{source}", FORMAT="BINARY")')
    rules.create_rule(rule, f'SELECT labelImageGrpc(self, 1, "")->labels[0]->label AS grpc FROM {source}',
                      [private_net_kuiperd.mqtt_action(sink, sendSingle=True)], {"sendError": True})
    rules.wait_rule_running(rule)
    mosquitto.wait_subscribed(source)
    parrot = image_bytes("parrot.jpg")

    nowhere = f"{HOST}:{harness.free_port()}"
    moved = write_zip(tmp_path / f"{SERVICE_NAME}.zip", nowhere, f"http://{nowhere}")
    rules.request("PUT", f"/services/{SERVICE_NAME}", {"name": SERVICE_NAME, "file": moved.resolve().as_uri()})
    assert rules.request("GET", f"/services/{SERVICE_NAME}")["Interfaces"]["defectGrpc"]["Addr"] == f"tcp://{nowhere}"
    mqtt_pub.publish(source, parrot)
    assert json.loads(out.wait_for(1)[0].payload) == {"grpc": "89:macaw"}  # still the old address

    private_net_kuiperd.restart()
    rules.wait_rule_running(rule)

    def answered():
        mqtt_pub.publish(source, parrot)
        time.sleep(1)
        return len(out.payloads()) > 1
    harness.wait_until(answered, 60, interval=5, what="a row from the rule after the restart")
    error = out.payloads()[1].decode()
    # Nothing listens there: the gRPC connect waits out kuiperd's 5 s and gives up.
    assert f"connect to tcp://{nowhere} timeout" in error, error
    print(f"a gRPC address nothing listens on: {error}")
