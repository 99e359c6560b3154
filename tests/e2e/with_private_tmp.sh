#!/bin/sh
# Run a command with a private, empty /tmp (its own mount namespace), so the plugin's fixed
# ipc:///tmp/*.ipc paths and the e2e kuiperd lock do not collide with other runs on this machine.
exec unshare --mount --propagation private -- sh -c 'mount -t tmpfs tmpfs /tmp && exec "$@"' sh "$@"
