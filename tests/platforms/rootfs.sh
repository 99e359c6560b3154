#!/usr/bin/env bash
# A minimal Debian root filesystem with Python and venv, for proving the offline zips in a chroot.
# Usage: tests/platforms/rootfs.sh RELEASE ARCH   (e.g. bookworm arm64, trixie amd64); prints its path.
# Cached under ~/.cache/defect/rootfs-RELEASE-ARCH-<packages hash>, shared by every clone and CI run. Built in a
# temporary dir and renamed into place when complete, so a killed build is never taken for a rootfs.
# A foreign ARCH runs under qemu-user-static through binfmt_misc (mounted here if it is not).
set -euo pipefail
release=$1 arch=$2
cache=${DEFECT_CACHE:-$HOME/.cache/defect}
# What a gateway has besides the base system: Python with venv. Not libatomic1 on arm64 (minbase
# lacks it, and a gateway that cannot run apt may too): the offline zip's pynng brings its own
# (tests/platforms/graft_libatomic.py), and box_check.py makes sure the box has none.
packages=python3,python3-venv
target=$cache/rootfs-$release-$arch-$(echo "$packages" | sha256sum | cut -c1-8)

tools=$(cd "$(dirname "$0")/../../tools" && pwd)
host_arch=$(dpkg --print-architecture)
if [ "$arch" != "$host_arch" ]; then
  # A cached rootfs needs the emulator too: binfmt_misc may have been unmounted or reset since it was built.
  # The F flag (qemu-user-static's binfmt entry) opens the emulator at registration, so it works in a chroot.
  "$tools/system_deps.sh" qemu-user-static binfmt-support >&2
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  qemu=$(dpkg-architecture -a "$arch" -q DEB_HOST_GNU_CPU 2>/dev/null || echo "$arch")
  [ "$qemu" = "arm64" ] && qemu=aarch64
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ] || update-binfmts --enable "qemu-$qemu" >&2 ||
    { echo "rootfs: cannot register qemu-$qemu with binfmt_misc; $arch binaries cannot run here" >&2; exit 1; }
fi
[ -x "$target/usr/bin/python3" ] && { echo "$target"; exit 0; }
"$tools/system_deps.sh" debootstrap >&2

mkdir -p "$cache"
for left in "$target".tmp.*; do  # what a killed build left (its pid is the suffix)
  [ -d "$left" ] && ! kill -0 "${left##*.}" 2>/dev/null && rm -rf "$left" "$left.log"
done
work=$target.tmp.$$
trap 'rm -rf "$work"' EXIT
start=$SECONDS
debootstrap --variant=minbase --arch="$arch" --include="$packages" \
  "$release" "$work" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work.log" 2>&1 ||
  { tail -20 "$work.log" >&2; rm -f "$work.log"; echo "rootfs: debootstrap $release $arch failed" >&2; exit 1; }
rm -f "$work.log"
rm -rf "$work/var/cache/apt/archives/"*.deb
chroot "$work" python3 -c "import venv" || { echo "rootfs: $release $arch has no working python3 with venv" >&2; exit 1; }
mv "$work" "$target"
trap - EXIT
echo "rootfs: built $release $arch in $((SECONDS - start)) s" >&2
echo "$target"
