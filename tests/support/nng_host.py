"""A stand-in for kuiperd's side of the portable-plugin protocol, over pynng.

Mirrors eKuiper v2.4.2 internal/plugin/portable/runtime (connection.go,
plugin_ins_manager.go, function.go): kuiperd listens with REP sockets, the plugin
dials with REQ and speaks first ("handshake"); kuiperd's commands and function
requests travel as replies, and a reply starting with 'h' is a keepalive
handshake, after which the request is sent again.

Standard library and pynng only, with its own waits: tests/platforms copies this file alone into a
Debian chroot (nng_check.py), where tests.support is not importable.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pynng

PLUGIN_URL = "ipc:///tmp/plugin_{}.ipc"
FUNCTION_URL = "ipc:///tmp/func_{}.ipc"


class ReqChannel:
    """kuiperd's NanomsgReqRepChannel.Req: send, receive, skip handshakes.

    A function channel waits `recv_timeout_ms` for each message and raises pynng.Timeout, as
    kuiperd's 5 s per call does. The control channel (`alive` given) waits in short steps and
    asks `alive()` between them: it returns why the plugin cannot answer (it exited), and that
    fails the call at once, with the plugin's output, instead of after the whole timeout.
    """

    POLL_MS = 200

    def __init__(self, url, recv_timeout_ms, alive=None):
        self.timeout_ms = recv_timeout_ms
        self.alive = alive
        self.sock = pynng.Rep0(recv_timeout=self.POLL_MS if alive else recv_timeout_ms, send_timeout=5000)
        self.sock.recv_max_size = 0
        try:
            self.sock.listen(url)
        except pynng.AddressInUse:
            if not stale_ipc_socket(url):
                raise
            os.unlink(url[len("ipc://"):])  # left by a killed listener (nng does not reuse it itself)
            self.sock.listen(url)

    def recv(self, timeout_ms=None):
        """The next message; pynng.Timeout after `timeout_ms` (default: the channel's), RuntimeError
        as soon as `alive()` says the plugin is gone."""
        if self.alive is None:
            return self.sock.recv()
        deadline = time.monotonic() + (timeout_ms or self.timeout_ms) / 1000
        while True:
            try:
                return self.sock.recv()
            except pynng.Timeout:
                gone = self.alive()
                if gone:
                    raise RuntimeError(gone) from None
                if time.monotonic() > deadline:
                    raise

    def request(self, payload):
        while True:
            try:
                self.sock.send(payload)
            except pynng.BadState:  # no pending request yet: take the plugin's handshake first
                self.recv()
                self.sock.send(payload)
            result = self.recv()
            if result[:1] == b"h":
                continue
            return result

    def close(self):
        self.sock.close()


def stale_ipc_socket(url):
    """True when the ipc socket file exists but nobody accepts on it."""
    path = url[len("ipc://"):]
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()


class PluginHost:
    """Start main.py the way kuiperd does and talk to it."""

    call_timeout_ms = 5000  # eKuiper's recvTimeout: 5 s a call (longer only for emulated CPUs)

    def __init__(self, plugin_dir, name="defect", python=sys.executable, env=None):
        self.plugin_dir = plugin_dir
        self.name = name
        self.python = python
        self.env = env
        # kuiperd's initTimeout is 60 s; a plugin that exits fails the call within POLL_MS.
        self.control = ReqChannel(PLUGIN_URL.format(name), 60 * 1000, alive=self.exit_reason)
        self.functions = {}
        self.start_process()

    def start_process(self):
        conf = json.dumps({"sendTimeout": 5000})
        self.started = time.perf_counter()
        # kuiperd sends the plugin's output to its log; a file never fills up like a pipe.
        self.log = tempfile.NamedTemporaryFile(prefix=f"plugin_{self.name}_", suffix=".log", delete=False)
        self.process = subprocess.Popen([self.python, "-u", os.path.join(self.plugin_dir, "main.py"), conf],
                                        cwd=self.plugin_dir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            handshake = self.control.recv(60 * 1000)  # eKuiper's initTimeout
        except pynng.Timeout:
            raise RuntimeError(f"no handshake within 60 s:\n{self.output()[-3000:]}") from None
        self.handshake_seconds = time.perf_counter() - self.started
        if handshake != b"handshake":
            raise RuntimeError(f"expected handshake, got {handshake!r}")

    def exit_reason(self):
        """None while the plugin process runs; else a line saying how it ended, with its output."""
        if self.process.poll() is None:
            return None
        return f"plugin exited with {self.process.returncode}:\n{self.output()[-3000:]}"

    def wait(self, check, what, timeout):
        """check()'s first result that is not None, polled; fails at once if the plugin exits, and
        after `timeout` s with "no <what>" and the plugin's log."""
        deadline = time.monotonic() + timeout
        while (found := check()) is None:
            gone = self.exit_reason()
            if gone:
                raise RuntimeError(gone)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout} s:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        return found

    def worker_pid(self, other_than=None, timeout=60):
        """The pid of the supervisor's worker (its child; not `other_than`), waiting for one to run.

        The supervisor is what kuiperd sees and must hide a worker's death, so a test that says
        "never restarted" compares this before and after, not the supervisor's pid.
        """
        def single_worker():
            pids = [p for p in child_pids(self.process.pid) if p != other_than]
            return pids[0] if len(pids) == 1 else None

        return self.wait(single_worker, f"single worker under supervisor {self.process.pid}", timeout)

    def wait_for_output(self, text, count=1, after=0, timeout=120):
        """Until the plugin's log, from character `after` on, holds `text` (or any of a tuple of texts)
        `count` times; returns the log's length then. Fails at once if the plugin exits."""
        texts = (text,) if isinstance(text, str) else text

        def logged():
            output = self.output()
            return len(output) if sum(output[after:].count(t) for t in texts) >= count else None

        return self.wait(logged, f"{text!r} {count} times in the plugin's log after character {after}", timeout)

    def wait_until_loaded(self, *functions, after=0, timeout=120):
        """Until the worker said, for each function (default: the per-frame ones, which every worker
        loads at start), that its model loaded or could not be loaded (after log position `after`)."""
        for name in functions or ("labelImage", "inference"):
            self.wait_for_output((f"{name}: model loaded", f"{name} model could not be loaded"), after=after,
                                 timeout=timeout)

    def restart_process(self, replay):
        """What kuiperd does when the plugin is re-installed: new process, same channels.

        kuiperd v2.4.2 keeps one START command per plugin (all functions share its
        key), so it replays START for `replay` only.
        """
        self.process.kill()
        self.process.wait(timeout=10)
        self.start_process()
        control = {"symbolName": replay, "meta": {"ruleId": "", "opId": "", "instanceId": 0}, "pluginType": "func"}
        reply = self.control.request(json.dumps({"cmd": "start", "arg": json.dumps(control)}).encode())
        if reply != b"ok":
            raise RuntimeError(f"start {replay}: {reply!r}")

    def start_function(self, symbol):
        channel = ReqChannel(FUNCTION_URL.format(symbol), self.call_timeout_ms)
        control = {"symbolName": symbol, "meta": {"ruleId": "", "opId": "", "instanceId": 0}, "pluginType": "func"}
        reply = self.control.request(json.dumps({"cmd": "start", "arg": json.dumps(control)}).encode())
        if reply != b"ok":
            raise RuntimeError(f"start {symbol}: {reply!r}")
        self.functions[symbol] = channel
        return channel

    def call(self, symbol, func, args):
        """Returns the decoded reply {"state", "result"}."""
        channel = self.functions.get(symbol) or self.start_function(symbol)
        return json.loads(channel.request(json.dumps({"func": func, "arg": args}).encode()))

    def exec(self, symbol, *args, rule="rule1"):
        context = json.dumps({"ruleId": rule, "opId": "op1", "instanceId": 0, "funcId": 0})
        return self.call(symbol, "Exec", [*args, context])

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def close(self):
        """Kill the plugin like kuiperd does; returns its output."""
        self.process.kill()
        self.process.wait(timeout=10)
        for channel in [self.control, *self.functions.values()]:
            channel.close()
        output = self.output()
        os.unlink(self.log.name)
        return output


def child_pids(pid):
    """The children of process `pid`, from every thread of it (/proc/<pid>/task/*/children)."""
    children = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(p) for p in f.read().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return children
