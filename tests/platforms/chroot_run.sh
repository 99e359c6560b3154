#!/usr/bin/env bash
# Run a command inside a cached Debian rootfs (tests/platforms/rootfs.sh) as a throwaway box:
# the rootfs is the lower layer of an overlay whose changes live in a tmpfs and vanish at exit,
# in private mount and network namespaces (no network: only an unconfigured loopback).
# Usage: tests/platforms/chroot_run.sh ROOTFS SHARE COMMAND...
#   SHARE (a host dir) is bound read-only at /share; /work (a tmpfs) is writable; cwd is /work.
set -euo pipefail
rootfs=$1 share=$2; shift 2
[ -x "$rootfs/usr/bin/python3" ] || { echo "chroot_run: $rootfs is not a built rootfs" >&2; exit 1; }
exec unshare --mount --net --propagation private -- bash -c '
  set -euo pipefail
  rootfs=$1 share=$2; shift 2
  scratch=/mnt  # this namespace'"'"'s own tmpfs over the host'"'"'s /mnt: nothing is left on the host
  mount -t tmpfs -o size=4g tmpfs "$scratch"
  mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
  mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
  box=$scratch/root
  mount -t proc proc "$box/proc"
  mount -t sysfs -o ro sysfs "$box/sys"  # as a real box has it (LiteRT reads the CPUs from it)
  mount --rbind /dev "$box/dev"
  mount -t tmpfs tmpfs "$box/tmp"
  mkdir -p "$box/share" "$box/work"
  mount --bind -o ro "$share" "$box/share"
  mount -t tmpfs tmpfs "$box/work"
  exec chroot "$box" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 sh -c "cd /work && exec \"\$@\"" sh "$@"' bash "$rootfs" "$share" "$@"
