"""A window past its budget still answers: the late frames get an error naming the budget.

Its own plugin process (a config overlay with a 10 ms budget), so it is a module of its own:
the plugin's nng addresses allow one process at a time.
"""
import json
import os
import sys

import pytest

from tests.support.nng_host import PluginHost
from tests.support.plugin_calls import window_loaded
from tests.support.scenarios import surface_b64


@pytest.fixture(scope="module")
def tight_budget_host(plugin_dir, tmp_path_factory):
    overlay = tmp_path_factory.mktemp("config") / "budget.json"
    overlay.write_text(json.dumps({"batch": {"budget_seconds": 0.01}}))
    host = PluginHost(plugin_dir, python=sys.executable,
                      env={**os.environ, "DEFECT_CONFIG": str(overlay)})
    yield host
    host.close()


def test_frames_past_the_budget_get_an_error_naming_it_and_the_window_still_answers(tight_budget_host):
    host = tight_budget_host
    frames = [surface_b64(1, seed=900 + i, size=(1920, 1080)) for i in range(64)]
    window_loaded(host, "inferenceBatch")  # the model copies (their load is not part of the budget test)
    reply = host.exec("inferenceBatch", frames)  # nng_host times out after 5 s, as kuiperd does
    assert reply["state"] is True and len(reply["result"]) == 64
    late = [e for e in reply["result"] if "error" in e]
    assert late, "64 frames at 1080p cannot all be served in 10 ms"
    assert all("0.01 s budget" in e["error"] and "batch.budget_seconds" in e["error"] for e in late), late[:2]
    assert all(e.get("defect") == 1 for e in reply["result"] if "error" not in e)
