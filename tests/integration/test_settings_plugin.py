"""A bad config does not stop the plugin: every call is answered with the config error's one
line, and fixing the config file brings the models back, without a re-install.

The unpacked zip, driven over nng as kuiperd drives it (tests/support/nng_host.py).
"""
import json
import os
import sys

from tests.support.nng_host import PluginHost
from tests.support.paths import read_b64


def test_a_bad_config_is_answered_in_one_line_and_fixing_it_recovers(plugin_dir, tmp_path):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"defect": {"threshold": "high"}}))
    host = PluginHost(plugin_dir, python=sys.executable, env={**os.environ, "DEFECT_CONFIG": str(site)})
    try:
        cat = read_b64("images", "cat.bmp")
        line = f'defect.threshold must be a number from 0 to 1, got "high" (DEFECT_CONFIG={site})'
        host.wait_for_output("degraded worker: the plugin's config is invalid")  # ready: it loads no model
        worker = host.worker_pid()
        for symbol in ("labelImage", "inference"):
            expected = f"{symbol} is not served: the plugin's config is invalid: {line}"
            assert host.exec(symbol, cat) == {"state": False, "result": expected}  # the first call says why
        assert host.worker_pid() == worker  # the same worker answers every call; nothing restarts
        mark = len(host.output())
        site.write_text(json.dumps({"defect": {"threshold": 0.5}}))
        host.wait_for_output("config changed: reading it again", after=mark)
        host.wait_until_loaded(after=mark)
        assert host.worker_pid(other_than=worker) != worker  # a worker that read the fixed config
        reply = host.exec("labelImage", cat)  # the first call after the fix is served
        assert reply["state"] is True and reply["result"][0]["label"] == "286:Egyptian cat", reply
        assert host.process.poll() is None
    finally:
        host.close()
