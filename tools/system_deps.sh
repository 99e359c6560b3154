#!/usr/bin/env bash
# Install the Debian packages the tests need, only those missing (apt-get update runs only then).
# Usage: tools/system_deps.sh PACKAGE...   Needs root or passwordless sudo when something is missing.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
echo "system_deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null || { echo "system_deps: apt-get update failed; the tests need: ${missing[*]}" >&2; exit 1; }
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
  { echo "system_deps: apt-get install ${missing[*]} failed" >&2; exit 1; }
