"""rule_revival.py finds kuiperd's REST API as kuiperd configures it, and restarts only the rules
kuiperd stopped for one of this plugin's functions (the e2e tests in tests/e2e/test_restarts.py
prove the restart itself in a real kuiperd, whose message must match NOT_FOUND_MESSAGE exactly)."""
import http.server
import json
import os
import threading

import pytest

from runtime.rule_revival import (
    NOT_FOUND_MESSAGE,
    STOPPED_BY_ERROR,
    missing_function,
    rest_base_url,
    revive_rules,
    yaml_value,
)

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


@pytest.mark.parametrize("name, value", [("KUIPER__BASIC__RESTTLS__CERTFILE", "/etc/kuiper/rest.crt"),
                                         ("KUIPER__basic__restTls__keyfile", "/etc/kuiper/rest.key")])
def test_no_url_when_the_environment_turns_tls_on(plugin_dir, monkeypatch, name, value):
    """kuiperd reads KUIPER__BASIC__RESTTLS__* as basic.restTls (keys after KUIPER in any case)."""
    monkeypatch.setenv(name, value)
    assert rest_base_url(plugin_dir) is None


def test_only_kuiperds_exact_not_found_message_names_a_function():
    sql = "SELECT labelImage(self)[0]->label AS label FROM tfdemo"
    functions = {"labelImage", "inference"}
    # Verbatim what kuiperd v2.4.2 sets (tests/e2e/test_restarts.py sees it from the real one).
    message = "Parse SQL SELECT labelImage(self)[0]->label AS label FROM tfdemo error: function labelImage not found."
    assert missing_function(message, sql, functions) == "labelImage"
    assert missing_function("stream tfdemo not found", sql, functions) is None
    assert missing_function(message + " ", sql, functions) is None
    assert missing_function(message, sql + " ", functions) is None  # another rule's SQL


class FakeKuiperd(http.server.ThreadingHTTPServer):
    """kuiperd v2.4.2's answers to GET /rules, GET /rules/{id}, GET /rules/{id}/status and
    POST /rules/{id}/restart (internal/server), for rules given as {id: (status, message, sql)}."""

    def __init__(self, rules):
        self.rules, self.restarted = rules, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if parts == ["rules"]:
                    body = [{"id": i, "name": i, "status": s, "version": "", "trace": False, "tags": None}
                            for i, (s, _, _) in server.rules.items()]
                elif len(parts) == 2:
                    body = {"id": parts[1], "sql": server.rules[parts[1]][2], "actions": [{"log": {}}]}
                else:
                    status, message, _ = server.rules[parts[1]]
                    body = {"status": status, "message": message}
                self.answer(200, json.dumps(body))

            def do_POST(self):
                server.restarted.append(self.path.split("/")[2])
                self.answer(200, f"Rule {self.path.split('/')[2]} was restarted")

            def answer(self, code, text):
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass
        super().__init__(("127.0.0.1", 0), Handler)

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def not_found(sql, function):
    return STOPPED_BY_ERROR, NOT_FOUND_MESSAGE.format(sql=sql, function=function), sql


def test_only_rules_stopped_for_the_plugins_own_functions_are_restarted():
    quoting = 'SELECT otherFn(self), "error: function labelImage not found." AS note FROM tfdemo'
    in_a_string = 'SELECT "labelImage(self)" AS note FROM tfdemo'
    rules = {
        "label": not_found("SELECT labelImage(self)[0]->label AS label FROM tfdemo", "labelImage"),
        "defect": not_found("SELECT inference (image)->defect AS defect FROM openvino_demo", "inference"),
        # Another plugin's function missing; the SQL (so the message) merely quotes ours.
        "quotes": not_found(quoting, "otherFn"),
        # The text in a message that is not kuiperd's parse error, for a rule that does call ours.
        "sink": (STOPPED_BY_ERROR, "io error: function labelImage not found", "SELECT labelImage(self) FROM t"),
        "literal": not_found(in_a_string, "labelImage"),  # the name only inside a string literal
        "by_hand": ("stopped", NOT_FOUND_MESSAGE.format(sql="SELECT labelImage(self) FROM t", function="labelImage"),
                    "SELECT labelImage(self) FROM t"),  # stopped by a user: not kuiperd's start-up race
        "running": ("running", "", "SELECT labelImage(self) FROM t"),
    }
    with FakeKuiperd(rules) as kuiperd:
        restarted = revive_rules(f"http://127.0.0.1:{kuiperd.server_address[1]}", {"labelImage", "inference"}, 5)
    assert sorted(restarted) == ["defect", "label"]
    assert sorted(kuiperd.restarted) == ["defect", "label"]
