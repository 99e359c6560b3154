#!/bin/sh
# Run a command with a /tmp of its own: kuiperd and the plugin meet at fixed /tmp/plugin_<name>.ipc
# and /tmp/func_<symbol>.ipc paths, so a second kuiperd (or a test run) with the plugin would collide.
# A fresh tmpfs goes on /tmp in a private mount namespace, and every directory of the old /tmp is
# bound back into it (reached through the working directory, which still is the old /tmp: mount
# must not canonicalize that relative path, or it would name the new /tmp), so
# checkouts, pytest's dirs and homes under /tmp stay visible; only files directly in /tmp (the
# sockets, locks) are private. Root unshares directly; others map themselves to root.
user=""
[ "$(id -u)" -eq 0 ] || user="--user --map-root-user"
# shellcheck disable=SC2086
DEFECT_CWD=$(pwd) exec unshare $user --mount --propagation private -- sh -c '
  cd /tmp && mount -t tmpfs tmpfs /tmp && chmod 1777 /tmp || exit 1
  for d in ./*/ ./.[!.]*/; do
    [ -d "$d" ] || continue
    name=$(basename "$d")
    mkdir "/tmp/$name" || exit 1
    # Another process may be removing its directory meanwhile (a shared box: the build dirs of pip), and
    # mount then fails; such a directory is left out. What a test needs (the dirs of pytest, checkouts)
    # is not removed under it, and if it were, the test would fail on the missing path, loudly.
    mount --no-canonicalize --bind "$d" "/tmp/$name" 2>/dev/null ||
      mount --no-canonicalize --bind "$d" "/tmp/$name" 2>/dev/null ||
      { [ -d "$d" ] && echo "with_private_tmp: /tmp/$name left out: it cannot be bound" >&2; rmdir "/tmp/$name"; }
  done
  cd "$DEFECT_CWD" && exec "$@"' sh "$@"
