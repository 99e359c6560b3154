"""The supervisor: a worker that dies (native fault, OOM kill, memory cap) comes back; kuiperd's pid stays.

Driven over nng as kuiperd drives the plugin (tests/support/nng_host.py): the process the
host starts is the supervisor; the worker is its child.
"""
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time

import pytest

from core.settings import load_settings
from runtime import supervisor
from tests.support.nng_host import PluginHost
from tests.support.paths import read_b64
from tests.support.plugin_calls import assert_one_line_error
from tests.support.scenarios import HOLD_HOOK_DIR, held_jpeg, image_bytes, surface_b64
from tools.waits import wait_until


@pytest.fixture
def host(plugin_dir):
    host = PluginHost(plugin_dir, python=sys.executable)
    yield host
    host.close()


def restarted(host, old_worker, mark, *functions):
    """The new worker's pid once it has replaced `old_worker` and said its models are loaded (log
    after position `mark`). No call is made meanwhile: the test's next call is its first."""
    new_worker = host.worker_pid(other_than=old_worker)
    host.wait_until_loaded(*functions, after=mark)
    assert new_worker != old_worker and host.worker_pid() == new_worker
    return new_worker


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_killed_worker_is_replaced_and_the_supervisor_stays(host, sig):
    cat, surface = read_b64("images", "cat.bmp"), surface_b64(2, seed=31)
    assert host.exec("labelImage", cat)["state"] is True
    worker, mark = host.worker_pid(), len(host.output())
    os.kill(worker, sig)
    restarted(host, worker, mark)
    # The first call after the restart is answered (a timeout here is the test failing, not retried).
    reply = host.exec("labelImage", cat)
    assert reply["state"] is True and reply["result"][0]["label"] == "286:Egyptian cat", reply
    assert host.exec("inference", surface)["result"]["defect"] == 2
    assert host.process.poll() is None  # kuiperd's process, the supervisor, never went
    assert f"worker {worker} killed by {sig.name}; restarting in 0.0 s" in host.output()


@pytest.fixture
def holding_host(plugin_dir, tmp_path):
    """The plugin with tests/support/hold_hook on PYTHONPATH: a worker holds a frame marked for it
    (scenarios.held_jpeg) until it is killed, and writes <token>.held in the hold folder first."""
    path = os.pathsep.join(p for p in (str(HOLD_HOOK_DIR), os.environ.get("PYTHONPATH")) if p)
    host = PluginHost(plugin_dir, python=sys.executable,
                      env={**os.environ, "PYTHONPATH": path, "DEFECT_TEST_HOLD_DIR": str(tmp_path)})
    yield host, tmp_path / "in-flight.held"
    host.close()


def test_a_call_in_flight_when_the_worker_dies_is_answered_by_the_next_worker(holding_host):
    """kuiperd (connection.go Req) sends a request again when a handshake comes back instead of an
    answer, and a new worker's first message is its handshake: so the call is not lost."""
    host, held = holding_host
    cat = base64.b64encode(held_jpeg(image_bytes("cat_720p.jpg"), "in-flight")).decode()
    host.wait_until_loaded()
    worker = host.worker_pid()
    outcome = {}

    def call():
        try:
            outcome["reply"] = host.exec("labelImage", cat)
        except Exception as e:  # a timeout or anything else: the assertion below shows it
            outcome["error"] = repr(e)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 30
    while not (held.exists() and held.read_text()):  # the worker has the request and holds it
        assert caller.is_alive() and time.monotonic() < deadline, (outcome, host.output()[-3000:])
        time.sleep(0.02)
    assert int(held.read_text()) == worker
    assert "reply" not in outcome  # held, not answered
    mark = len(host.output())
    os.kill(worker, signal.SIGKILL)
    caller.join(60)
    assert not caller.is_alive() and "reply" in outcome, (outcome, host.output()[mark:][-3000:])
    reply = outcome["reply"]
    assert reply["state"] is True and reply["result"][0]["label"] == "286:Egyptian cat", reply
    assert host.worker_pid() != worker
    assert f"worker {worker} killed by SIGKILL" in host.output()[mark:]


def test_window_copies_load_when_a_rule_is_created_and_a_new_worker_loads_them_at_once(host):
    """README: the copies load when the first rule using a window function is created (kuiperd
    validates its arguments then); a worker started after a death loads the functions kuiperd
    had started at once, the window ones too."""
    host.wait_until_loaded()
    assert "Batch: model loaded" not in host.output()  # per-frame models only, until a rule asks
    mark = len(host.output())
    assert host.call("inferenceBatch", "Validate", [{"Name": "image"}])["state"] is True
    host.wait_for_output("inferenceBatch: model loaded", after=mark)
    assert "labelImageBatch: model loaded" not in host.output()
    worker, mark = host.worker_pid(), len(host.output())
    os.kill(worker, signal.SIGKILL)
    restarted(host, worker, mark, "labelImage", "inference", "inferenceBatch")  # without a call
    frames = [surface_b64(i % 3, seed=40 + i) for i in range(4)]
    reply = host.exec("inferenceBatch", frames)
    assert [e.get("defect") for e in reply["result"]] == [0, 1, 2, 0], reply


def test_the_worker_dies_with_its_supervisor(host):
    """A SIGKILLed supervisor (kuiperd's DELETE or shutdown) leaves no worker (parent-death signal)."""
    host.wait_until_loaded()  # a worker serving, long past its start-up check of its parent
    worker = host.worker_pid()
    host.process.kill()
    host.process.wait(10)
    deadline = time.monotonic() + 10  # README: "within a second"; generous on a busy box
    while process_running(worker):
        if time.monotonic() > deadline:
            os.kill(worker, signal.SIGKILL)  # not left behind by this test
            pytest.fail(f"worker {worker} outlived its supervisor by 10 s")
        time.sleep(0.05)


def process_running(pid):
    """False once `pid` is gone or a zombie (a dead child not yet reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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
        host.wait_for_output("degraded worker: ")  # two restarts, the third death: degraded
        assert_one_line_error(host.exec("inference", surface), "inference is not served: the plugin's worker died "
                                                               "3 times in 60 s (last: killed by SIGSEGV)")
        assert_one_line_error(host.exec("labelImage", read_b64("images", "cat.bmp")), "labelImage is not served")
        assert host.output().count("killed by SIGSEGV; restarting in") == 2  # then the third death: degraded
        degraded, mark = host.worker_pid(), len(host.output())

        model.write_bytes(good)  # the good model back: the degraded worker sees it and a normal one starts
        host.wait_for_output("model files changed: starting a normal worker", after=mark)
        restarted(host, degraded, mark)
        assert host.exec("inference", surface)["result"]["defect"] == 1  # the first call after it
        assert host.process.poll() is None
    finally:
        host.close()


def test_a_worker_over_its_memory_cap_is_ended_not_the_gateway(plugin_dir, tmp_path):
    overlay = tmp_path / "worker.json"
    # 120 MB: below what both models loaded take (about 160 MB), above a worker that loads nothing.
    overlay.write_text(json.dumps({"worker": {"max_restarts": 1, "max_rss_mb": 120}}))
    host = PluginHost(plugin_dir, python=sys.executable, env={**os.environ, "DEFECT_CONFIG": str(overlay)})
    try:
        cat = read_b64("images", "cat.bmp")
        # Ended at load, then again (max_restarts 1): the degraded worker answers why.
        host.wait_for_output("degraded worker: ")
        assert_one_line_error(host.exec("labelImage", cat), "killed by SIGKILL (over worker.max_rss_mb)")
        assert "over worker.max_rss_mb (120 MB): ending it" in host.output()
        assert host.process.poll() is None
    finally:
        host.close()


# --- the supervisor's policy, on a stand-in worker (a process that exits at once) ---

# Exits with status 3 at once, as a worker that crashes at load; a degraded one (loads no model) stays up.
FAILING_WORKER = [sys.executable, "-c",
                  f"import os, sys, time\nif os.environ.get({supervisor.DEGRADED_VAR!r}): time.sleep(120)\nsys.exit(3)"]


class Stop(Exception):
    """Raised by the recorded sleep to end keep_a_worker's endless loop."""


@pytest.fixture
def policy(monkeypatch, caplog):
    """Runs Supervisor.keep_a_worker on FAILING_WORKER in a thread; its back-off sleeps are recorded
    (and not slept), its log lines collected. Yields (start(sup), sleeps, lines, wait_for(text, count))."""
    sleeps, stop, runs = [], threading.Event(), []

    def sleep(seconds):
        if seconds == supervisor.RSS_POLL_SECONDS:  # the memory watch's poll: really wait
            return time.sleep(seconds)
        if stop.is_set():
            raise Stop
        sleeps.append(seconds)

    monkeypatch.setattr(supervisor, "time", type("FakeTime", (), {"sleep": staticmethod(sleep),
                                                                  "monotonic": staticmethod(time.monotonic)}))
    caplog.set_level(logging.INFO, logger="runtime.supervisor")

    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "runtime.supervisor"]

    def wait_for(text, count=1, timeout=60):
        wait_until(lambda: sum(text in line for line in lines()) >= count, timeout, interval=0.02,
                   what=f"{count} policy line(s) with {text!r}", log=lambda: "\n".join(lines()))

    def keep(sup):
        with contextlib.suppress(Stop):
            sup.keep_a_worker()

    def start(sup):
        thread = threading.Thread(target=keep, args=(sup,), daemon=True)
        thread.start()
        runs.append((sup, thread))

    yield start, sleeps, lines, wait_for
    stop.set()
    for sup, thread in runs:
        with contextlib.suppress(ProcessLookupError):
            sup.worker.kill()  # the degraded stand-in; its death makes the loop sleep, which raises Stop
        thread.join(30)
        assert not thread.is_alive()


def test_restarts_back_off_from_0_to_8_s_then_a_degraded_worker_takes_over(policy):
    start, sleeps, lines, wait_for = policy
    start(supervisor.Supervisor(FAILING_WORKER, max_restarts=7, window_seconds=600, max_rss_mb=1000))
    wait_for("(degraded: serves no model)")
    # README: "starts another at once, then with backoff (0.5, 1, 2, 4, 8 s)"; 8 s stays the longest.
    assert sleeps == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    said = [re.search(r"restarting in ([\d.]+) s \((\d) of 7", line).groups()
            for line in lines() if "restarting in" in line]
    assert said == [("0.0", "1"), ("0.5", "2"), ("1.0", "3"), ("2.0", "4"), ("4.0", "5"), ("8.0", "6"),
                    ("8.0", "7")]
    assert any("died 8 times in 600 s (last: exited with status 3); it is not restarted for 3000 s" in line
               for line in lines())
    assert lines()[-1].endswith("(degraded: serves no model)")


def test_a_degraded_worker_gives_way_to_a_normal_one_after_five_restart_windows(policy):
    start, sleeps, lines, wait_for = policy
    # A 2 s window: degraded for 5 windows (10 s), then a normal worker is tried again, which fails again.
    start(supervisor.Supervisor(FAILING_WORKER, max_restarts=1, window_seconds=2, max_rss_mb=1000))
    wait_for("(degraded: serves no model)", count=2)
    events = [line for line in lines() if "not restarted for" in line or "trying a normal worker again" in line
              or "started" in line]
    kinds = ["degraded" if "(degraded" in line else "retry" if "trying a normal" in line else
             "stop" if "not restarted" in line else "normal" for line in events]
    assert kinds == ["normal", "normal", "stop", "degraded", "retry", "normal", "normal", "stop", "degraded"], events
    assert "degraded for 10 s: trying a normal worker again" in events
    # The defaults: degraded for five windows of 60 s, the README's 300 s.
    assert supervisor.DEGRADED_WINDOWS * load_settings(environ={})["worker"]["restart_window_seconds"] == 300


def fake_files(monkeypatch, tmp_path, files):
    """supervisor.open reads `files` ({path: text}) instead of the real /proc and /sys."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path not in files:
            raise FileNotFoundError(path)
        target = tmp_path / path.strip("/").replace("/", "_")
        target.write_text(files[path])
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(supervisor, "open", fake_open, raising=False)


MEMINFO = "MemTotal:        8192000 kB\nMemFree:         1000000 kB\n"  # 8000 MiB


@pytest.mark.parametrize("cgroup,expected", [
    ({}, 4000),  # no cgroup file: half the box
    ({"/sys/fs/cgroup/memory.max": "max\n"}, 4000),  # cgroup v2 without a limit
    ({"/sys/fs/cgroup/memory.max": f"{2 * 2**30}\n"}, 1024),  # a 2 GiB container (v2)
    ({"/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{1 * 2**30}\n"}, 512),  # v1
    ({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 4000),  # v1's "no limit"
    ({"/sys/fs/cgroup/memory.max": f"{64 * 2**30}\n"}, 4000),  # a limit above the box: the box
], ids=["none", "v2 max", "v2 2GiB", "v1 1GiB", "v1 unlimited", "v2 above the box"])
def test_max_rss_mb_defaults_to_half_the_memory_the_cgroup_allows(monkeypatch, tmp_path, cgroup, expected):
    fake_files(monkeypatch, tmp_path, {"/proc/meminfo": MEMINFO, **cgroup})
    assert supervisor.memory_cap_mb(0) == expected
    assert supervisor.memory_cap_mb(300) == 300  # a configured cap wins
