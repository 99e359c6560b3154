#!/bin/sh
# Run by kuiperd (`/bin/sh install.sh`, cwd = the installed plugin dir) when the
# plugin is installed. Makes sure main.py has its pinned requirements:
#   1. if the Python that will run the plugin already has them all, nothing to do;
#   2. otherwise create .venv here and install them into it (main.py switches to
#      that venv by itself), from the bundled wheels/ when present (offline),
#      else from the package index.
# PEP 668 systems refuse pip into the system Python; a venv is always allowed.
set -eu
cd "$(dirname "$0")"
say() { echo "defect install: $*"; }

# portable.pythonBin from the kuiper.yaml kuiperd reads: $KuiperBaseKey/etc, else the etc/ beside
# plugins/ (this dir is <base>/plugins/portable/defect), else /etc/kuiper (packaged installs).
# The first file found is the one kuiperd uses. Sets KUIPER_YAML and YAML_PYTHON (empty: no pythonBin).
read_kuiper_yaml_python_bin() {
  for conf in ${KuiperBaseKey:+"$KuiperBaseKey/etc/kuiper.yaml"} ../../../etc/kuiper.yaml /etc/kuiper/kuiper.yaml; do
    [ -f "$conf" ] || continue
    KUIPER_YAML="$conf"
    # A top-level `portable:` block and its `pythonBin:` key; quotes and comments stripped.
    YAML_PYTHON=$(awk '{ sub(/\r$/, "") }
      /^[^[:space:]#]/ { in_portable = ($0 ~ /^portable:[[:space:]]*(#.*)?$/); next }
      in_portable && /^[[:space:]]+pythonBin:/ {
        v = $0; sub(/^[[:space:]]+pythonBin:[[:space:]]*/, "", v)
        if (v ~ /^"/) { sub(/^"/, "", v); sub(/".*$/, "", v) }
        else if (v ~ /^\047/) { sub(/^\047/, "", v); sub(/\047.*$/, "", v) }
        else { sub(/[[:space:]]+#.*$/, "", v); sub(/[[:space:]]+$/, "", v) }
        print v; exit
      }' "$conf")
    return 0
  done
}

# The interpreter kuiperd will run main.py with, in kuiperd's own order: the env override
# KUIPER__PORTABLE__PYTHONBIN, else kuiper.yaml's portable.pythonBin, else kuiperd's default
# `python` (python3 when there is no `python`). DEFECT_PYTHON overrides them all.
KUIPER_YAML= YAML_PYTHON=
if [ -n "${DEFECT_PYTHON:-}" ]; then
  PYTHON="$DEFECT_PYTHON"; FROM="DEFECT_PYTHON"
elif [ -n "${KUIPER__PORTABLE__PYTHONBIN:-}" ]; then
  PYTHON="$KUIPER__PORTABLE__PYTHONBIN"; FROM="KUIPER__PORTABLE__PYTHONBIN"
else
  read_kuiper_yaml_python_bin
  if [ -n "$YAML_PYTHON" ]; then
    PYTHON="$YAML_PYTHON"; FROM="portable.pythonBin in $KUIPER_YAML"
  else
    PYTHON=$(command -v python || command -v python3 || echo python); FROM="kuiperd's default"
  fi
fi
say "python: $PYTHON ($FROM)"

command -v "$PYTHON" >/dev/null 2>&1 || { say "ERROR: $PYTHON ($FROM) not found; set kuiperd's pythonBin or DEFECT_PYTHON to a Python 3.11+ interpreter" >&2; exit 1; }

# Every package of requirements.lock (the transitive ones too) at its pinned version.
has_requirements() {
  "$1" - <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open("requirements.lock"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pinned = line.split()[0].split("==")
    try:
        if version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if [ ! -x .venv/bin/python ] && has_requirements "$PYTHON"; then
  say "$("$PYTHON" -c 'import sys; print(sys.executable)') already has every pinned requirement; no venv needed"
  exit 0
fi
if [ -x .venv/bin/python ] && has_requirements .venv/bin/python; then
  say "plugin venv already complete"
  exit 0
fi

say "creating venv in $(pwd)/.venv with $PYTHON"
# A half-built venv must not stay: main.py would switch into it at the next start and fail at
# import, and kuiperd runs install.sh only once. Removed unless the install completes.
trap 'rm -rf .venv' EXIT
"$PYTHON" -m venv .venv || { say "ERROR: '$PYTHON -m venv' failed; on Debian/Ubuntu install the python3-venv package" >&2; exit 1; }
# requirements.lock: requirements.txt with every transitive dependency, pinned with the sha256 of
# each wheel (tests/support/requirements_lock.py). Wheels only (no build runs here), pip's cache off (nothing
# written outside the plugin dir), every file checked against its hash. Its lines marked
# `# --no-deps` (the ekuiper SDK, whose exact pynng pin has no aarch64 wheel) go in after the
# others, without their own dependencies.
pip_install() {  # $@: where from (none: the package index)
  grep -v '^[^#]*# --no-deps' requirements.lock > .venv/requirements-deps.txt
  sed -n 's/^\([^#]*[^#[:space:]]\)[[:space:]]*# --no-deps.*/\1/p' requirements.lock > .venv/requirements-no-deps.txt
  set -- --disable-pip-version-check --no-cache-dir --only-binary=:all: --require-hashes "$@"
  .venv/bin/python -m pip install "$@" -r .venv/requirements-deps.txt &&
    .venv/bin/python -m pip install "$@" --no-deps -r .venv/requirements-no-deps.txt
}
if [ -d wheels ]; then
  say "installing requirements from the bundled wheels (offline)"
  pip_install --no-index --find-links wheels \
    || { say "ERROR: offline install from wheels/ failed (wrong platform or Python version?)" >&2; exit 1; }
else
  say "installing requirements from the package index"
  pip_install \
    || { say "ERROR: pip install failed; without network, use the offline zip (make package-offline)" >&2; exit 1; }
fi
# A wheel may link to a system library it does not bundle (pynng's aarch64 wheel from the index:
# libatomic.so.1; the offline zip's has it inside): found here, in one line, rather than by the
# plugin failing to start.
# core.openvino_runtime (this dir), not openvino itself: importing that would send OpenVINO's telemetry event.
if ! loaded=$(.venv/bin/python -c 'import ekuiper, pynng, numpy, cv2, core.openvino_runtime' 2>&1); then
  say "ERROR: the installed requirements do not load: $(echo "$loaded" | tail -n 1)" >&2
  case "$loaded" in *libatomic*) say "install the system's libatomic1 (Debian/Ubuntu: apt-get install libatomic1), then the plugin again" >&2 ;; esac
  exit 1
fi
trap - EXIT
say "done"
