"""The same calls through a running kuiperd: frames go in by HTTP push, the rule
calls the function, a websocket sink hands each result back to this process.

Needs the kuiperd's REST URL and its HTTP server (source.httpServerPort, 10081
unless configured otherwise), which serves both the push source and the
websocket sink, so no MQTT broker is involved. The defect plugin must be
installed, or installable from build/defect.zip (a file:// URL: same machine).
"""
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import websocket  # websocket-client

from bench.timing import stats, two_spellings
from tools.waits import wait_tcp, wait_until

STREAM = "bench_defect_in"
PUSH_PATH = "/bench_defect"


def rest(base, method, path, body=None, ok=(200, 201)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    if status not in ok:
        raise RuntimeError(f"{method} {path} -> HTTP {status}: {text[:500]}")
    try:
        return json.loads(text)
    except ValueError:
        return text


class Receiver:
    """A WebSocket client (websocket-client) on the rule's websocket sink, which kuiperd
    serves on its HTTP push server. Records {seq: arrival time}.
    A sink that dials out to us (REST) is refused: basic.enablePrivateNet is off by default.
    """

    def __init__(self, url):
        try:
            self.ws = websocket.create_connection(url, timeout=10)
        except (OSError, websocket.WebSocketException) as e:
            raise RuntimeError(f"websocket {url}: {e}") from None
        self.ws.settimeout(None)
        self.arrived, self.cond = {}, threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                message = self.ws.recv()  # whole messages; pings are answered by the library
                if not message:
                    return
                arrived = time.perf_counter()
                rows = json.loads(message)
                with self.cond:
                    for row in rows if isinstance(rows, list) else [rows]:
                        self.arrived[row.get("seq")] = arrived
                    self.cond.notify_all()
        except (OSError, ValueError, websocket.WebSocketException):
            return

    def wait(self, seqs, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: all(s in self.arrived for s in seqs), timeout):
                missing = [s for s in seqs if s not in self.arrived]
                raise TimeoutError(f"{len(missing)} of {len(seqs)} results did not come back in {timeout}s "
                                   "(see the kuiperd log: a function error drops the message)")
            return [self.arrived[s] for s in seqs]

    def close(self):
        self.ws.close()


def ensure_plugin(base, zip_path):
    try:
        rest(base, "GET", "/plugins/portables/defect")
        return
    except RuntimeError:
        pass
    rest(base, "POST", "/plugins/portables", {"name": "defect", "file": "file://" + os.path.abspath(zip_path)})


def push(url, seq, b64):
    req = urllib.request.Request(url, data=json.dumps({"seq": seq, "image": b64}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def measure(kuiperd_url, push_base, zip_path, cases, n, warmup):
    """cases: [(function, input name, b64)] -> {function: {input: {latency stats, results_per_s}}}.

    Latency: push one frame, wait for its result, repeat. Throughput: push n
    frames back to back, time until the last result; the plugin serves one call
    at a time, so this is what one rule sustains.
    """
    ensure_plugin(kuiperd_url, zip_path)
    push_url = push_base.rstrip("/") + PUSH_PATH
    rest(kuiperd_url, "POST", "/streams",
         {"sql": f'CREATE STREAM {STREAM} () WITH (TYPE="httppush", DATASOURCE="{PUSH_PATH}", FORMAT="json")'})
    results, seq = {}, 0
    try:
        for function in dict.fromkeys(f for f, _, _ in cases):
            rule, out_path = f"bench_{function}", f"/bench_{function}_out"
            rest(kuiperd_url, "POST", "/rules", {
                "id": rule, "sql": f"SELECT seq, {function}(image) AS result FROM {STREAM}",
                "actions": [{"websocket": {"path": out_path, "sendSingle": True}}]})
            receiver = None
            try:
                wait_until(lambda: rest(kuiperd_url, "GET", f"/rules/{rule}/status").get("status") == "running",
                           30, interval=0.2, what=f"rule {rule} running")
                address = urllib.parse.urlsplit(push_url)
                wait_tcp(address.hostname, address.port, 30,
                         what=f"kuiperd's HTTP push server at {push_url} (check source.httpServerPort)")
                receiver = Receiver(push_base.replace("http", "ws", 1).rstrip("/") + out_path)
                for f, name, b64 in cases:
                    if f != function:
                        continue
                    spellings = two_spellings(b64)  # consecutive frames differ: no answer from memory
                    samples = []
                    for i in range(warmup + n):
                        seq += 1
                        started = time.perf_counter()
                        push(push_url, seq, spellings[seq % 2])
                        arrived = receiver.wait([seq], 60)[0]
                        if i >= warmup:
                            samples.append(arrived - started)
                    batch = list(range(seq + 1, seq + n + 1))
                    seq += n
                    started = time.perf_counter()
                    for s in batch:
                        push(push_url, s, spellings[s % 2])
                    last = max(receiver.wait(batch, 60 + n * 2))
                    results.setdefault(function, {})[name] = {
                        **stats(samples), "results_per_s": round(n / (last - started), 2)}
            finally:
                if receiver:
                    receiver.close()
                rest(kuiperd_url, "DELETE", f"/rules/{rule}")
    finally:
        rest(kuiperd_url, "DELETE", f"/streams/{STREAM}")
    return results
