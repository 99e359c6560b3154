"""rule_revival.py finds kuiperd's REST API as kuiperd configures it (the e2e tests in
tests/e2e/test_restarts.py prove the restart itself in a real kuiperd)."""
import os

import pytest

from rule_revival import NOT_FOUND, rest_base_url, yaml_value

KUIPER_YAML = """basic:
  # REST service ip
  restIp: 0.0.0.0
  restPort: 9081  # the REST port
  authentication: false
  #  restTls:
  #    certfile: /var/https-server.crt
portable:
  pythonBin: "/opt/py 3/bin/python"
other:
  restPort: 1
"""


def test_yaml_values_are_read_from_their_own_section():
    assert yaml_value(KUIPER_YAML, "basic", "restPort") == "9081"
    assert yaml_value(KUIPER_YAML, "basic", "restIp") == "0.0.0.0"
    assert yaml_value(KUIPER_YAML, "portable", "pythonBin") == "/opt/py 3/bin/python"
    assert yaml_value(KUIPER_YAML, "basic", "restTls") is None  # commented out
    assert yaml_value(KUIPER_YAML, "portable", "restPort") is None


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """<base>/plugins/portable/defect with <base>/etc/kuiper.yaml, as kuiperd lays them out."""
    for key in [k for k in os.environ if k.startswith("KUIPER__BASIC__") or k == "KuiperBaseKey"]:
        monkeypatch.delenv(key)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "kuiper.yaml").write_text(KUIPER_YAML)
    plugin = tmp_path / "plugins" / "portable" / "defect"
    plugin.mkdir(parents=True)
    return str(plugin)


def test_rest_url_from_kuiper_yaml_then_env_overrides(plugin_dir, monkeypatch):
    assert rest_base_url(plugin_dir) == "http://127.0.0.1:9081"  # 0.0.0.0 listens on loopback too
    monkeypatch.setenv("KUIPER__BASIC__RESTPORT", "19081")
    monkeypatch.setenv("KUIPER__BASIC__RESTIP", "127.0.0.2")
    assert rest_base_url(plugin_dir) == "http://127.0.0.2:19081"


@pytest.mark.parametrize("change", [("authentication: false", "authentication: true"),
                                    ("  #  restTls:\n  #    certfile", "  restTls:\n    certfile")])
def test_no_url_when_the_api_needs_a_token_or_tls(plugin_dir, change):
    yaml_path = os.path.join(plugin_dir, "..", "..", "..", "etc", "kuiper.yaml")
    with open(yaml_path, "w") as f:
        f.write(KUIPER_YAML.replace(*change))
    assert rest_base_url(plugin_dir) is None


def test_only_kuiperds_not_found_message_names_a_function():
    message = "Parse SQL SELECT labelImage(self)[0]->label AS label FROM tfdemo error: function labelImage not found."
    assert NOT_FOUND.search(message).group(1) == "labelImage"
    assert NOT_FOUND.search("stream tfdemo not found") is None
