"""pytest fixtures for the end-to-end tests against a real kuiperd and mosquitto.

Session scope: one mosquitto and one kuiperd per test session (kuiperd start
and portable plugin install are slow, and the plugin ipc sockets at fixed /tmp
paths allow only one kuiperd with the plugin). The function-scoped `kuiper`
fixture deletes the rules and streams a test created, so tests stay isolated.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from tests.support.scenarios import HOLD_HOOK_DIR
from tools import harness


def pytest_configure(config):
    # tests/conftest.py marks everything under e2e/ with it.
    config.addinivalue_line("markers", "e2e: needs a real kuiperd and mosquitto")


@pytest.fixture(scope="session")
def hold_dir(tmp_path_factory):
    """Where the plugin's workers report a held frame (tests/support/hold_hook, scenarios.held_jpeg)."""
    return tmp_path_factory.mktemp("held")


@pytest.fixture(scope="session")
def kuiperd(request, tmp_path_factory, mosquitto, hold_dir):
    """A running kuiperd; .client is the REST client, .mqtt_action(topic) an MQTT sink action.
    Its plugin processes import tests/support/hold_hook, which holds only frames marked for it."""
    k = harness.Kuiperd(tmp_path_factory.mktemp("kuiper"), mosquitto.url,
                        extra_env={"PYTHONPATH": os.pathsep.join(filter(None, [str(HOLD_HOOK_DIR),
                                                                               os.environ.get("PYTHONPATH")])),
                                   "DEFECT_TEST_HOLD_DIR": str(hold_dir)}).start()
    request.config._defect_kuiperd = k  # for the failure report hook below
    yield k
    k.stop()
    if request.session.testsfailed:
        # Bypass output capture: this teardown belongs to whichever test ran
        # last, which may have passed, and then pytest would hide the output.
        capman = request.config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"\n--- tail of kuiperd log {k.log_path} ---\n{k.log_tail(200)}")


@pytest.fixture
def kuiper(kuiperd):
    """The REST client; removes every rule and stream when the test ends."""
    yield kuiperd.client
    c = kuiperd.client
    for r in c.request("GET", "/rules"):
        c.delete_rule(r["id"])
    for s in c.request("GET", "/streams"):
        c.delete_stream(s)


@pytest.fixture
def unique():
    """unique('in') -> 'in_1a2b3c4d': fresh topic / rule / stream names per test."""
    return lambda prefix: f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def mqtt_pub(mosquitto):
    p = harness.MqttPublisher(mosquitto.host, mosquitto.port)
    yield p
    p.close()


@pytest.fixture
def mqtt_sub(mosquitto):
    """mqtt_sub(topic) -> MqttCollector, subscribed (SUBACK received) before it returns."""
    made = []

    def make(topic, qos=1):
        c = harness.MqttCollector(mosquitto.host, mosquitto.port, topic, qos)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Attach the kuiperd log tail to each failing test so the cause sits next to it.
    rep = yield
    k = getattr(item.config, "_defect_kuiperd", None)
    if rep.failed and k is not None:
        rep.sections.append(("kuiperd log (last 60 lines)", k.log_tail(60)))
    return rep


PLUGIN_ZIP = harness.REPO_ROOT / "build" / "defect.zip"


@pytest.fixture(scope="session")
def defect_plugin(kuiperd):
    """The defect plugin installed once from build/defect.zip (`make package`), deleted at the end.

    Yields its file:// URL for tests that re-install it. Every rule that uses it
    is gone by teardown (the per-test `kuiper` fixture deletes them)."""
    if not PLUGIN_ZIP.is_file():
        pytest.fail(f"{PLUGIN_ZIP} is missing: run `make package` first")
    c = kuiperd.client
    url = PLUGIN_ZIP.resolve().as_uri()
    c.install_portable_plugin("defect", url)
    harness.wait_until(lambda: c.portable_plugin_status("defect")["status"] == "running", 30,
                       what="defect plugin status running after install")
    yield url
    # GET /plugins/portables lists {"name": ..., "functions": [...], ...} objects.
    if any(p["name"] == "defect" for p in c.list_portable_plugins()):  # a failed hot update may have removed it
        c.delete_portable_plugin("defect")
    assert not any(p["name"] == "defect" for p in c.list_portable_plugins())
    harness.wait_until(lambda: not kuiperd.plugin_pids("defect"), 15, what="defect plugin process gone after delete")
