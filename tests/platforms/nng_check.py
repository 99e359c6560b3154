"""Inside the chroot, with the plugin venv's Python (it has pynng): the plugin started as kuiperd
starts it (bare python3 main.py, tests/support/nng_host.py's PluginHost) and both functions called over nng.
Prints {"labelImage": result, "inference": result, "handshake_s": s} as one JSON line.

    python nng_check.py PLUGIN_DIR PHOTO SURFACE
"""
import base64
import json
import os
import sys
import time

# Beside this script in the chroot's share folder (its folder is first on sys.path): stdlib and pynng only.
from nng_host import PluginHost

LOAD_SECONDS = 600  # both models load (and time their threads) under emulation
# kuiperd gives a call 5 s; under qemu the plugin is tens of times slower than on a real ARM core.
EMULATED_CALL_MS = 120_000


def answer(host, symbol, path):
    """The first answer that is not 'still loading' (the models load in the background)."""
    with open(path, "rb") as f:
        b64 = base64.b64encode(f.read()).decode()
    deadline = time.monotonic() + LOAD_SECONDS
    while True:
        reply = host.exec(symbol, b64)
        if reply["state"] or "still loading" not in str(reply["result"]) or time.monotonic() > deadline:
            return reply


def main(plugin_dir, photo, surface):
    env = dict(os.environ)
    emulated = os.uname().machine != "x86_64"
    if emulated:  # timing 1 thread against every core at load means nothing under qemu, and takes minutes
        overlay = os.path.join(plugin_dir, "emulated.json")
        with open(overlay, "w") as f:
            json.dump({"label": {"threads": 2}, "defect": {"threads": 2}}, f)
        env["DEFECT_CONFIG"] = overlay
    host = PluginHost(plugin_dir, python="/usr/bin/python3", env=env)
    if emulated:
        host.call_timeout_ms = EMULATED_CALL_MS
    report = {"handshake_s": round(host.handshake_seconds, 1)}
    try:
        report.update(labelImage=answer(host, "labelImage", photo), inference=answer(host, "inference", surface))
    finally:
        report["log"] = host.close()[-3000:]
        print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
