"""Restart the rules kuiperd left stopped at its start because it planned them before it
had registered this plugin.

kuiperd v2.4.2 registers portable plugins in goroutines (internal/plugin/portable/manager.go,
syncRegistry) and restores the rules without waiting for them (internal/server/server.go).
A rule planned first stops with "function labelImage not found" and kuiperd never retries it
(bench/restart_race.py counts how often: README, Reliability). kuiperd starts this process
as it registers the plugin, so the plugin is there to notice: it waits for kuiperd's REST API
(which opens only after every rule was restored) and restarts exactly the rules stopped for
one of its own functions. Standard library only; no model, no eKuiper import.
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

from errors import first_line

log = logging.getLogger(__name__)
NOT_FOUND = re.compile(r"function (\w+) not found")


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
    if yaml_value(text, "basic", "restTls") is not None:  # a mapping (certfile, keyfile) when set
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
    was not found. Returns the ids of the rules restarted."""
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
            if not isinstance(rule, dict) or not str(rule.get("status", "")).startswith("stopped"):
                continue
            rule_id = str(rule["id"])
            path = "/rules/" + urllib.parse.quote(rule_id, safe="")
            status = _request(base, "GET", path + "/status")
            match = NOT_FOUND.search(str(status.get("message", "")) if isinstance(status, dict) else "")
            if match and match.group(1) in functions:
                _request(base, "POST", path + "/restart")
                restarted.append(rule_id)
                log.info("restarted rule %s: kuiperd restored it before it had registered this plugin (%s)",
                         rule_id, match.group(0))
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
