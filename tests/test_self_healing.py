"""The supervisor: a worker that dies (native fault, OOM kill, memory cap) comes back; kuiperd's pid stays.

Driven over nng as kuiperd drives the plugin (tests/nng_host.py): the process the
host starts is the supervisor; the worker is its child.
"""
import json
import os
import shutil
import signal
import sys
import threading
import time

import pynng
import pytest

from nng_host import PluginHost
from paths import read_b64
from test_protocol import assert_one_line_error, surface_b64


def worker_pids(supervisor_pid):
    children = []
    for task in os.listdir(f"/proc/{supervisor_pid}/task"):
        with open(f"/proc/{supervisor_pid}/task/{task}/children") as f:
            children += [int(p) for p in f.read().split()]
    return children


def wait_for_worker(host, other_than=None, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in worker_pids(host.process.pid) if p != other_than]
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise TimeoutError(f"no worker under supervisor {host.process.pid}:\n{host.output()[-2000:]}")


def served_again(host, symbol, value, timeout=30, meanwhile=("still loading",)):
    """Seconds until `symbol` answers with a result again; each failed try is what kuiperd would see."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            reply = host.exec(symbol, value)
        except pynng.Timeout:  # the call went to the dead worker's pipe: kuiperd's 5 s timeout
            continue
        if reply["state"]:
            return time.monotonic() - started
        assert any(word in reply["result"] for word in meanwhile), reply
        time.sleep(0.05)
    raise TimeoutError(f"{symbol} not served again within {timeout} s:\n{host.output()[-3000:]}")


@pytest.fixture
def host(plugin_dir):
    host = PluginHost(plugin_dir, python=sys.executable)
    yield host
    host.close()


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_killed_worker_is_replaced_and_the_supervisor_stays(host, sig):
    cat, surface = read_b64("images", "cat.bmp"), surface_b64(2, seed=31)
    assert host.exec("labelImage", cat)["state"] is True
    supervisor, worker = host.process.pid, wait_for_worker(host)
    os.kill(worker, sig)
    took = {"labelImage": served_again(host, "labelImage", cat), "inference": served_again(host, "inference", surface)}
    assert host.exec("inference", surface)["result"]["defect"] == 2
    assert host.process.pid == supervisor and host.process.poll() is None
    assert wait_for_worker(host) != worker
    assert f"worker {worker} killed by {sig.name}; restarting in 0.0 s" in host.output()
    print(f"{sig.name}: served again after {took}")


def test_a_call_in_flight_when_the_worker_dies_is_answered_by_the_next_worker(host):
    """kuiperd (connection.go Req) sends a request again when a handshake comes back instead of an
    answer, and a new worker's first message is its handshake: so the call is not lost."""
    frames = [surface_b64(i % 3, seed=40 + i) for i in range(64)]
    assert host.exec("inferenceBatch", frames[:2])["state"] is True
    outcome = {}

    def call():
        try:
            outcome["reply"] = host.exec("inferenceBatch", frames)
        except pynng.Timeout as e:
            outcome["error"] = e

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.05)
    os.kill(wait_for_worker(host), signal.SIGKILL)
    caller.join(15)
    assert "reply" in outcome, outcome
    reply = outcome["reply"]
    # The supervisor had seen kuiperd start inferenceBatch, so the new worker loads its copies at once.
    assert reply["state"] is True, reply
    assert [e.get("defect") for e in reply["result"]] == [i % 3 for i in range(64)]
    assert "killed by SIGKILL" in host.output()
    served_again(host, "labelImage", read_b64("images", "cat.bmp"))
    assert host.exec("inference", frames[5])["result"]["defect"] == 2


@pytest.fixture
def crashing_plugin(plugin_dir, tmp_path):
    """A copy of the plugin whose defect model kills its worker at load (the test-only marker)."""
    target = tmp_path / "defect"
    shutil.copytree(plugin_dir, target)
    overlay = tmp_path / "worker.json"
    overlay.write_text(json.dumps({"worker": {"max_restarts": 2, "restart_window_seconds": 60}}))
    env = {**os.environ, "DEFECT_CONFIG": str(overlay), "DEFECT_TEST_CRASH_MARKER": "CRASH-THE-WORKER"}
    return target, env


def test_a_crash_loop_ends_in_one_line_and_a_good_model_recovers(crashing_plugin):
    target, env = crashing_plugin
    model = target / "models" / "model.xml"
    good = model.read_bytes()
    model.write_bytes(b"<!-- CRASH-THE-WORKER -->" + good)
    host = PluginHost(str(target), python=sys.executable, env=env)
    try:
        surface = surface_b64(1, seed=51)
        deadline, reply = time.monotonic() + 30, None
        while "not served" not in str(reply) and time.monotonic() < deadline:
            try:
                reply = host.exec("inference", surface)
            except pynng.Timeout:  # a call that met a dying worker
                pass
        assert_one_line_error(reply, "inference is not served: the plugin's worker died 3 times in 60 s "
                                     "(last: killed by SIGSEGV)")
        assert_one_line_error(host.exec("labelImage", read_b64("images", "cat.bmp")), "labelImage is not served")
        assert host.output().count("killed by SIGSEGV; restarting in") == 2  # then the third death: degraded
        supervisor = host.process.pid

        model.write_bytes(good)  # the good model back: the degraded worker sees it and a normal one starts
        # Until the degraded worker's next look at the files (each second), calls still say why.
        served_again(host, "inference", surface, meanwhile=("still loading", "not served"))
        assert host.exec("inference", surface)["result"]["defect"] == 1
        assert host.process.pid == supervisor
    finally:
        host.close()


def test_a_worker_over_its_memory_cap_is_ended_not_the_gateway(plugin_dir, tmp_path):
    overlay = tmp_path / "worker.json"
    # 120 MB: below what both models loaded take (about 160 MB), above a worker that loads nothing.
    overlay.write_text(json.dumps({"worker": {"max_restarts": 1, "max_rss_mb": 120}}))
    host = PluginHost(plugin_dir, python=sys.executable, env={**os.environ, "DEFECT_CONFIG": str(overlay)})
    try:
        cat = read_b64("images", "cat.bmp")
        deadline, reply = time.monotonic() + 30, None
        while "not served" not in json.dumps(reply) and time.monotonic() < deadline:
            try:
                reply = host.exec("labelImage", cat)
            except pynng.Timeout:  # a call that met a worker being ended
                pass
            time.sleep(0.2)
        assert_one_line_error(reply, "killed by SIGKILL (over worker.max_rss_mb)")
        assert "over worker.max_rss_mb (120 MB): ending it" in host.output()
        assert host.process.poll() is None
    finally:
        host.close()
