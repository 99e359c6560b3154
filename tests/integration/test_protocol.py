"""The plugin zip, started as kuiperd starts it, driven over the real nng addresses.

tests/support/nng_host.py plays kuiperd's side of eKuiper v2.4.2's portable protocol.
"""
import base64
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from tests.support.bad_inputs import bad_images
from tests.support.nng_host import PluginHost
from tests.support.paths import read_b64
from tests.support.plugin_calls import assert_one_line_error
from tests.support.scenarios import surface_b64


@pytest.fixture(scope="module")
def host(plugin_dir):
    host = PluginHost(plugin_dir, python=sys.executable)
    host.wait_until_loaded()  # a call before would be answered "still loading" on a slow or busy box
    yield host
    output = host.close()
    print(output[-3000:])


def test_label_image_over_nng(host):
    reply = host.exec("labelImage", read_b64("images", "cat.bmp"))
    assert reply["state"] is True, reply
    assert reply["result"][0]["label"] == "286:Egyptian cat"
    assert len(reply["result"]) == 5


def test_label_image_accepts_a_data_uri_and_k(host):
    reply = host.exec("labelImage", "data:image/jpeg;base64," + read_b64("images", "cat_1080p.jpg"), 2)
    assert reply["state"] is True, reply
    assert [r["label"] for r in reply["result"]][:1] == ["286:Egyptian cat"]
    assert len(reply["result"]) == 2


def test_inference_over_nng(host):
    for defects in range(4):
        reply = host.exec("inference", surface_b64(defects, seed=500 + defects))
        assert reply["state"] is True, reply
        assert reply["result"]["defect"] == defects
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(reply["result"]["base64"]), np.uint8), 1)
        assert picture.shape[1] == 2 * picture.shape[0]


def test_validate_and_is_aggregate(host):
    assert host.call("labelImage", "Validate", [{"name": "self"}]) == {"state": True, "result": ""}
    reply = host.call("labelImage", "Validate", [])
    assert_one_line_error(reply, "labelImage takes 1 or 2 arguments")
    assert_one_line_error(host.call("inference", "Validate", [1, 2, 3]), "inference takes 1 or 2 arguments")
    assert_one_line_error(host.call("labelImage", "Validate", None), "got 0")  # kuiperd's args for labelImage()
    assert_one_line_error(host.call("labelImage", "Validate", [{"Name": "self"}, {"Val": 0}]), "k must be")
    assert_one_line_error(host.call("inference", "Validate", [{"Name": "image"}, {"Val": 1.5}]), "threshold")
    assert host.call("inference", "Validate", [{"Name": "image"}, {"Val": 0.3}])["state"] is True
    assert host.call("labelImage", "Validate", [{"Name": "self"}, {"Name": "k_column"}])["state"] is True
    assert host.call("inference", "IsAggregate", []) == {"state": True, "result": False}


@pytest.mark.parametrize("case", list(bad_images()))
@pytest.mark.parametrize("function", ["labelImage", "inference"])
def test_bad_image_gives_one_line_and_the_next_call_works(host, function, case):
    value, word = bad_images()[case]
    worker = host.worker_pid()
    assert_one_line_error(host.exec(function, value), word)
    good = host.exec(function, read_b64("images", "cat.bmp"))
    assert good["state"] is True, good
    assert host.worker_pid() == worker  # answered by the same worker: it did not die on the bad image


@pytest.mark.parametrize("function,arg,word", [("labelImage", 0, "k must be"), ("labelImage", "5", "k must be"),
                                               ("labelImage", 2.5, "k must be"), ("labelImage", 5000, "k must be"),
                                               ("labelImage", float("inf"), "k must be"),
                                               ("inference", 1.5, "threshold"), ("inference", "x", "threshold")])
def test_bad_extra_argument(host, function, arg, word):
    assert_one_line_error(host.exec(function, read_b64("images", "cat.bmp"), arg), word)


def test_null_option_means_default_and_huge_numbers_are_refused(host):
    cat = read_b64("images", "cat.bmp")
    assert len(host.exec("labelImage", cat, None)["result"]) == 5
    assert_one_line_error(host.exec("labelImage", cat, 10**400), "k must be")
    assert_one_line_error(host.call("labelImage", "Validate", [{"Name": "self"}, {"Val": 10**400}]), "k must be")


def test_line_wrapped_base64_is_read(host):
    wrapped = "\n".join(textwrap.wrap(read_b64("images", "cat.bmp"), 76))
    assert host.exec("labelImage", wrapped)["result"][0]["label"] == "286:Egyptian cat"


def test_still_serving_after_idle_keepalives(host):
    """The SDK's REQ sockets time out after 5 s idle and resend a handshake; calls must still work."""
    worker = host.worker_pid()
    time.sleep(6.5)
    assert host.exec("labelImage", read_b64("images", "cat.bmp"))["state"] is True
    assert host.exec("inference", surface_b64(1, seed=7))["result"]["defect"] == 1
    assert host.worker_pid() == worker


def test_every_function_serves_again_after_a_plugin_restart(host):
    """kuiperd replays START for one function only; the plugin must serve both anyway."""
    cat = read_b64("images", "cat.bmp")
    assert host.exec("labelImage", cat)["state"] is True
    assert host.exec("inference", surface_b64(1, seed=3))["state"] is True
    old_pid = host.process.pid
    host.restart_process(replay="inference")
    assert host.process.pid != old_pid
    host.wait_until_loaded()  # the new process's log: no call is made before its models are loaded
    # As in kuiperd (mangos REP, connection.go Req): the first request goes out as the reply to the
    # dead process's last message; the socket drops it (that pipe is closed) and the next thing
    # received is the new process's handshake, so the request is sent again, to the new process.
    # So the very first call after the restart is answered, by the new process, for both
    # functions, including the one whose START kuiperd did not replay.
    first = host.exec("labelImage", cat)
    assert first["state"] is True and first["result"][0]["label"] == "286:Egyptian cat", first
    first = host.exec("inference", surface_b64(2, seed=4))
    assert first["state"] is True and first["result"]["defect"] == 2, first
    assert host.process.pid != old_pid and host.process.poll() is None


def test_same_frame_twice_is_answered_once(host):
    """The tutorial's rule calls inference(image) in SELECT and WHERE for every frame."""
    frame = surface_b64(2, seed=12)
    first, second = host.exec("inference", frame), host.exec("inference", frame)
    assert first == second  # "inference time" too: the second answer is the first one's
    # Another argument list on the same frame is computed anew, not answered from the first call:
    # threshold 1.0 finds nothing where the default finds 2 (an outcome, not a timing, so no flakes).
    assert host.exec("inference", frame, 1.0)["result"]["defect"] == 0
    assert host.exec("inference", frame)["result"]["defect"] == 2  # and back: each answer is its own
