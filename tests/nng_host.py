"""A stand-in for kuiperd's side of the portable-plugin protocol, over pynng.

Mirrors eKuiper v2.4.2 internal/plugin/portable/runtime (connection.go,
plugin_ins_manager.go, function.go): kuiperd listens with REP sockets, the plugin
dials with REQ and speaks first ("handshake"); kuiperd's commands and function
requests travel as replies, and a reply starting with 'h' is a keepalive
handshake, after which the request is sent again.
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
    """kuiperd's NanomsgReqRepChannel.Req: send, receive, skip handshakes."""

    def __init__(self, url, recv_timeout_ms):
        self.sock = pynng.Rep0(recv_timeout=recv_timeout_ms, send_timeout=5000)
        self.sock.recv_max_size = 0
        try:
            self.sock.listen(url)
        except pynng.AddressInUse:
            if not stale_ipc_socket(url):
                raise
            os.unlink(url[len("ipc://"):])  # left by a killed listener (nng does not reuse it itself)
            self.sock.listen(url)

    def request(self, payload):
        while True:
            try:
                self.sock.send(payload)
            except pynng.BadState:  # no pending request yet: take the plugin's handshake first
                self.sock.recv()
                self.sock.send(payload)
            result = self.sock.recv()
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
        self.control = ReqChannel(PLUGIN_URL.format(name), 3600 * 1000)
        self.functions = {}
        self.start_process()

    def start_process(self):
        conf = json.dumps({"sendTimeout": 5000})
        self.started = time.perf_counter()
        # kuiperd sends the plugin's output to its log; a file never fills up like a pipe.
        self.log = tempfile.NamedTemporaryFile(prefix=f"plugin_{self.name}_", suffix=".log", delete=False)
        self.process = subprocess.Popen([self.python, "-u", os.path.join(self.plugin_dir, "main.py"), conf],
                                        cwd=self.plugin_dir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        handshake = self._first_message(timeout=60)  # eKuiper's initTimeout
        self.handshake_seconds = time.perf_counter() - self.started
        if handshake != b"handshake":
            raise RuntimeError(f"expected handshake, got {handshake!r}")
        self.control.sock.recv_timeout = 3600 * 1000

    def _first_message(self, timeout):
        self.control.sock.recv_timeout = 200
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    return self.control.sock.recv()
                except pynng.Timeout:
                    if self.process.poll() is not None:
                        raise RuntimeError(
                            f"plugin exited with {self.process.returncode}:\n{self.output()[-3000:]}") from None
            raise RuntimeError(f"no handshake within {timeout} s:\n{self.output()[-3000:]}")
        finally:
            self.control.sock.recv_timeout = 3600 * 1000

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
