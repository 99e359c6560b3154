"""A bad config does not stop the plugin: every call is answered with the config error's one
line, and fixing the config file brings the models back, without a re-install.

The unpacked zip, driven over nng as kuiperd drives it (tests/nng_host.py).
"""
import json
import os
import sys
import time

import pynng

from nng_host import PluginHost
from paths import read_b64


def answer(host, symbol, value, timeout=30):
    """The first reply that is not "still loading" (the worker starts after the handshake)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = host.exec(symbol, value)
        except pynng.Timeout:
            continue
        if reply["state"] or "still loading" not in reply["result"]:
            return reply
        time.sleep(0.1)
    raise TimeoutError(f"{symbol}: no answer within {timeout} s:\n{host.output()[-3000:]}")


def test_a_bad_config_is_answered_in_one_line_and_fixing_it_recovers(plugin_dir, tmp_path):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"defect": {"threshold": "high"}}))
    host = PluginHost(plugin_dir, python=sys.executable, env={**os.environ, "DEFECT_CONFIG": str(site)})
    try:
        cat = read_b64("images", "cat.bmp")
        line = f'defect.threshold must be a number from 0 to 1, got "high" (DEFECT_CONFIG={site})'
        for symbol in ("labelImage", "inference"):
            reply = answer(host, symbol, cat)
            expected = f"{symbol} is not served: the plugin's config is invalid: {line}"
            assert reply == {"state": False, "result": expected}
        assert host.process.poll() is None
        site.write_text(json.dumps({"defect": {"threshold": 0.5}}))
        deadline = time.monotonic() + 30
        while not (reply := answer(host, "labelImage", cat))["state"]:
            assert time.monotonic() < deadline, reply
            time.sleep(0.2)
        assert reply["result"][0]["label"] == "286:Egyptian cat"
    finally:
        host.close()
