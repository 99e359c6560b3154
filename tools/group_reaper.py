"""Kill a process group when the test run that started it dies: `group_reaper.py PGID TEST_RUN_PID`.

harness.py starts kuiperd in a process group of its own and this reaper beside it, with a
parent-death SIGTERM (harness.die_with_test_run). kuiperd's own parent-death signal ends
kuiperd, but not the plugin processes it started, which kuiperd v2.4.2 leaves running when it
is killed; those stay in kuiperd's group, so the reaper ends the whole group with SIGKILL
when the test run goes however it goes (a timeout, Ctrl-C, SIGKILL of pytest).
It exits by itself once the group is empty (the test stopped kuiperd normally).
"""
import os
import signal
import sys
import time

GROUP_POLL_SECONDS = 0.5


def main() -> None:
    pgid, test_run = int(sys.argv[1]), int(sys.argv[2])

    def kill_group(signum, frame):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        os._exit(0)
    signal.signal(signal.SIGTERM, kill_group)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the test run; its death is the signal
    if os.getppid() != test_run:  # it went before the handler was set
        kill_group(signal.SIGTERM, None)
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(GROUP_POLL_SECONDS)


if __name__ == "__main__":
    main()
