#!/usr/bin/env bash
# Start the model service from an unpacked build/defect-service.zip (or the repo), on any box:
#   unzip -q defect-service.zip -d defect-service && bash defect-service/service/serve.sh --host 0.0.0.0 \
#     --api-key-file /etc/defect/key --tls-cert cert.pem --tls-key key.pem   (a network address needs both)
# The first run makes .venv beside service/ with the pinned requirements of the plugin and the
# service (Python 3.11+; `python3` or $VENV_PYTHON makes it); later runs reuse it. DEFECT_PYTHON:
# a Python that already has them (no venv is made). Arguments go to service/service.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${DEFECT_PYTHON:-$root/.venv/bin/python}
if [ -z "${DEFECT_PYTHON:-}" ] && [ ! -f "$root/.venv/.installed" ]; then
  echo "serve.sh: installing the requirements into $root/.venv (once)" >&2
  rm -rf "$root/.venv"
  "${VENV_PYTHON:-python3}" -m venv "$root/.venv"
  # The plugin's locked, hash-checked requirements without what only kuiperd's side uses (the eKuiper
  # SDK, nng and what nng pulls in): the service builds on the pure layer (core/, label.py,
  # inference.py). Then the service's own, every one pinned (what they pull in too).
  if ! { "$python" -m pip install --disable-pip-version-check -q --require-hashes --no-deps \
           -r <(grep -v -E '^(ekuiper|pynng|sniffio|cffi|pycparser)==' "$root/requirements.lock") &&
         "$python" -m pip install --disable-pip-version-check -q -r "$root/service/requirements.txt"; }; then
    rm -rf "$root/.venv"  # half-built: the next run starts over
    echo "serve.sh: installing the requirements failed" >&2
    exit 1
  fi
  touch "$root/.venv/.installed"
fi
exec "$python" "$root/service/service.py" "$@"
