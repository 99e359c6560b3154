"""Restart the rules kuiperd left stopped at its start because it planned them before it
had registered this plugin.

kuiperd v2.4.2 registers portable plugins in goroutines (internal/plugin/portable/manager.go,
syncRegistry) and restores the rules without waiting for them (internal/server/server.go).
A rule planned first stops with "function labelImage not found" and kuiperd never retries it
(bench/restart_race.py counts how often: README, Reliability). kuiperd starts this process
as it registers the plugin, so the plugin is there to notice: it waits for kuiperd's REST API
(which opens only after every rule was restored) and restarts exactly the rules stopped for
one of its own functions: status "stopped by error", the message exactly kuiperd's parse error
for the rule's own SQL and one of this plugin's functions, and that SQL calling the function
(a rule whose message merely quotes the text is left alone). Standard library only; no model,
no eKuiper import.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from core.errors import first_line

log = logging.getLogger(__name__)
# kuiperd v2.4.2's whole message for a rule whose SQL calls a function it does not know (yet):
# internal/xsql/parser.go parseCall ("function %s not found", the name as the SQL spells it),
# wrapped by internal/xsql/stmtx.go GetStatementFromSql ("Parse SQL %s error: %s.", the rule's SQL).
NOT_FOUND_MESSAGE = "Parse SQL {sql} error: function {function} not found."
# The state kuiperd's doStart leaves a rule in when planning it fails (internal/topo/rule/machine).
STOPPED_BY_ERROR = "stopped by error"
# eKuiper SQL's string literals and `quoted` identifiers: a name inside them is no call.
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', re.S)


def missing_function(message: str, sql: str, functions: set[str]) -> str | None:
    """The function of this plugin that kuiperd did not know when it planned the rule, or None.

    Args:
        message: the rule's status message (GET /rules/{id}/status, "message").
        sql: the rule's SQL (GET /rules/{id}, "sql").
        functions: this plugin's function names.
    Returns:
        The name, only when `message` is exactly kuiperd's parse error for `sql` and that name, and
        `sql` calls it outside string literals; None for anything else (a message that quotes it).
    """
    unquoted = _QUOTED.sub(" ", sql)
    for function in functions:
        if (message == NOT_FOUND_MESSAGE.format(sql=sql, function=function)
                and re.search(rf"(?<![\w.]){re.escape(function)}\s*\(", unquoted)):
            return function
    return None


def rest_tls_from_environment() -> bool:
    """True when an environment variable sets kuiper.yaml's basic.restTls, as kuiperd reads them:
    KUIPER__BASIC__RESTTLS__CERTFILE and the like (internal/conf/load.go: the "KUIPER" prefix as
    is, the keys after it in any case, "__" between levels)."""
    for name, value in os.environ.items():
        keys = name.split("__")
        if keys[0] == "KUIPER" and [k.lower() for k in keys[1:3]] == ["basic", "resttls"] and value.strip():
            return True
    return False


def kuiper_yaml_path(plugin_dir: str) -> str | None:
    """The kuiper.yaml kuiperd reads, found as install.sh finds it."""
    base = os.environ.get("KuiperBaseKey")
    candidates = ([os.path.join(base, "etc", "kuiper.yaml")] if base else []) + [
        os.path.join(plugin_dir, "..", "..", "..", "etc", "kuiper.yaml"), "/etc/kuiper/kuiper.yaml"]
    return next((os.path.normpath(p) for p in candidates if os.path.isfile(p)), None)


def yaml_value(text: str, section: str, key: str) -> str | None:
    """`key` directly under the top-level `section` of a kuiper.yaml, unquoted; None if absent.
    Enough YAML for kuiper.yaml's `section:\\n  key: value` lines (no PyYAML in the plugin)."""
    inside = False
    for line in text.splitlines():
        if line[:1] not in ("", " ", "\t", "#"):
            inside = re.match(rf"{re.escape(section)}:\s*(#.*)?$", line) is not None
            continue
        match = re.match(rf"\s+{re.escape(key)}:\s*(.*)$", line) if inside else None
        if match:
            value = match.group(1)
            quoted = re.match(r"""(["'])(.*?)\1""", value)
            return quoted.group(2) if quoted else re.sub(r"\s+#.*$", "", value).strip()
    return None


def rest_base_url(plugin_dir: str) -> str | None:
    """kuiperd's REST address: KUIPER__BASIC__* env overrides, else kuiper.yaml's basic section,
    else kuiperd's defaults. None (with the reason logged) when it needs credentials or TLS."""
    path = kuiper_yaml_path(plugin_dir)
    text = open(path, encoding="utf-8").read() if path else ""

    def setting(key: str, default: str) -> str:
        value = os.environ.get(f"KUIPER__BASIC__{key.upper()}")
        return value if value not in (None, "") else (yaml_value(text, "basic", key) or default)

    if setting("authentication", "false").lower() == "true":
        log.info("kuiperd's REST API asks for a token; rules stopped at start are not restarted by the plugin")
        return None
    tls_in_yaml = yaml_value(text, "basic", "restTls") not in (None, "null", "~")  # a mapping (certfile, keyfile)
    if tls_in_yaml or rest_tls_from_environment():
        log.info("kuiperd's REST API uses TLS; rules stopped at start are not restarted by the plugin")
        return None
    host = setting("restIp", "0.0.0.0")
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{'[' + host + ']' if ':' in host else host}:{setting('restPort', '9081')}"


# kuiperd is on this box: never through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(base: str, method: str, path: str):
    req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    with _OPENER.open(req, timeout=10) as resp:
        text = resp.read().decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def revive_rules(base: str, functions: set[str], wait_seconds: float = 300) -> list[str]:
    """Wait for kuiperd's REST API, then restart every rule stopped because one of `functions`
    was not found (missing_function). Returns the ids of the rules restarted; never raises for
    what kuiperd answers."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            rules = _request(base, "GET", "/rules")
            break
        except urllib.error.HTTPError as e:  # it answers, but not with the list
            log.info("kuiperd's REST API at %s answered GET /rules with HTTP %s; no rule checked", base, e.code)
            return []
        except (OSError, ValueError):  # not listening yet: kuiperd opens it after restoring the rules
            if time.monotonic() > deadline:
                log.info("kuiperd's REST API at %s did not answer; no rule checked", base)
                return []
            time.sleep(0.5)
    restarted = []
    for rule in rules if isinstance(rules, list) else []:
        try:  # one rule deleted meanwhile, or an odd answer, must not cost the others
            if not isinstance(rule, dict) or rule.get("status") != STOPPED_BY_ERROR:
                continue
            rule_id = str(rule["id"])
            path = "/rules/" + urllib.parse.quote(rule_id, safe="")
            status, definition = _request(base, "GET", path + "/status"), _request(base, "GET", path)
            if not (isinstance(status, dict) and isinstance(definition, dict)):
                continue
            function = missing_function(str(status.get("message", "")), str(definition.get("sql", "")), functions)
            if function:
                _request(base, "POST", path + "/restart")
                restarted.append(rule_id)
                log.info("restarted rule %s: kuiperd restored it before it had registered this plugin "
                         "(function %s not found)", rule_id, function)
        except (OSError, ValueError, KeyError) as e:
            log.info("rule %s not checked: %s", rule.get("id") if isinstance(rule, dict) else rule, first_line(e))
    return restarted


def revive_in_background(plugin_dir: str, functions: list[str]) -> threading.Thread:
    """revive_rules() in a daemon thread, once per plugin process; never raises into the plugin."""
    def run() -> None:
        try:
            base = rest_base_url(plugin_dir)
            if base:
                revive_rules(base, set(functions))
        except Exception as e:  # the plugin serves its functions whatever happens here
            log.info("checking for rules stopped at kuiperd's start failed: %s", first_line(e))
    thread = threading.Thread(target=run, name="rule-revival", daemon=True)
    thread.start()
    return thread
