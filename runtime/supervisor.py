"""The process kuiperd starts and tracks: small, it runs the plugin's work in a child it restarts.

kuiperd v2.4.2 never restarts a portable plugin process that dies (plugin_ins_manager.go
only marks it as in error), so one native fault or OOM kill in a model would stop
every rule until someone re-installs the plugin. Here kuiperd's pid is a supervisor
that loads no model: it answers kuiperd's control channel and restarts the worker.
The worker dials the function channels itself (kuiperd listens on them, so a new
process is served again, as in a hot update); no frame passes through the supervisor.

Policy: restart at once, then with backoff; more than `worker.max_restarts` deaths
within `worker.restart_window_seconds` start a degraded worker that loads no model
and answers every call with one line saying why, until a model file changes (or,
after five such windows, a normal worker is tried again). A
worker whose resident memory passes `worker.max_rss_mb` is ended, not the gateway.
"""
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

from core.memory import rss_mb

log = logging.getLogger(__name__)

# A degraded worker exits with this when a model file changed: start a normal one.
EXIT_MODEL_FILES_CHANGED = 75
SUPERVISOR_PID_VAR = "DEFECT_SUPERVISOR_PID"
DEGRADED_VAR = "DEFECT_DEGRADED"
IN_USE_VAR = "DEFECT_FUNCTIONS_IN_USE"
BACKOFF_SECONDS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
RSS_POLL_SECONDS = 0.25
DEGRADED_WINDOWS = 5  # degraded for this many restart windows, then a normal worker is tried again


def log_to_stdout() -> None:
    """kuiperd logs the plugin's stdout; the same format as the eKuiper SDK's."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s - %(pathname)s[line:%(lineno)d] - %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def memory_cap_mb(configured: int) -> int:
    """worker.max_rss_mb, or by default half of this box's memory: the OOM killer's turn never comes."""
    if configured:
        return configured
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:")) * 1024
    # In a container the cgroup's limit is what the OOM killer enforces (v2, then v1).
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total // 2 // 2**20


class Supervisor:
    """Starts `command` as the worker and keeps one running, by the policy above."""

    def __init__(self, command: list[str], max_restarts: int, window_seconds: float, max_rss_mb: int):
        self.command = command
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self.max_rss_mb = memory_cap_mb(max_rss_mb)
        self.worker: subprocess.Popen | None = None
        self.functions_in_use: set[str] = set()

    def in_use(self, symbol: str) -> None:
        """kuiperd started `symbol` for a rule: the next worker loads its model at once."""
        self.functions_in_use.add(symbol)

    def start(self) -> None:
        # This thread forks the workers and lives as long as the process: a worker's
        # parent-death signal is tied to the thread that forked it.
        threading.Thread(target=self.run_forever, name="supervisor", daemon=True).start()

    def spawn(self, degraded: str | None) -> tuple[subprocess.Popen, threading.Event]:
        """A worker and the event its memory watch sets if it ends it (one per worker, so an old
        watch cannot mark the next worker's death)."""
        env = {**os.environ, SUPERVISOR_PID_VAR: str(os.getpid())}
        env.pop(DEGRADED_VAR, None)
        if degraded:
            env[DEGRADED_VAR] = degraded
        env[IN_USE_VAR] = ",".join(sorted(self.functions_in_use))
        worker = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL)
        over_memory = threading.Event()
        threading.Thread(target=self.watch_memory, args=(worker, over_memory), daemon=True).start()
        log.info("worker %d started%s", worker.pid, " (degraded: serves no model)" if degraded else "")
        return worker, over_memory

    def watch_memory(self, worker: subprocess.Popen, over_memory: threading.Event) -> None:
        while worker.poll() is None:
            used = rss_mb(worker.pid)
            if used > self.max_rss_mb:
                over_memory.set()
                log.error("worker %d uses %.0f MB, over worker.max_rss_mb (%d MB): ending it",
                          worker.pid, used, self.max_rss_mb)
                worker.kill()
                return
            time.sleep(RSS_POLL_SECONDS)

    def run_forever(self) -> None:
        try:
            self.keep_a_worker()
        except Exception:  # nothing may restart the supervisor either: end, and kuiperd shows the error
            log.exception("supervisor failed")
            os._exit(1)

    def keep_a_worker(self) -> None:
        deaths: deque[float] = deque()
        degraded = None
        # A crash loop may have had a passing cause (a poisoned frame that kuiperd sent to each new
        # worker again): after this long, degraded, a normal worker gets another chance.
        degraded_seconds = DEGRADED_WINDOWS * self.window_seconds
        while True:
            worker, over_memory = self.spawn(degraded)
            self.worker = worker
            try:
                returncode = worker.wait(timeout=degraded_seconds if degraded else None)
            except subprocess.TimeoutExpired:
                log.warning("degraded for %g s: trying a normal worker again", degraded_seconds)
                worker.kill()
                worker.wait()
                deaths.clear()
                degraded = None
                continue
            if returncode == EXIT_MODEL_FILES_CHANGED:
                log.info("model files changed: starting a normal worker")
                deaths.clear()
                degraded = None
                continue
            reason = describe_exit(returncode) + (" (over worker.max_rss_mb)" if over_memory.is_set() else "")
            if degraded:  # it loads no model, so this is rare (a stray kill): another degraded one
                log.error("the degraded worker %d %s; starting another in %g s", worker.pid, reason,
                          BACKOFF_SECONDS[-1])
                time.sleep(BACKOFF_SECONDS[-1])
                continue
            now = time.monotonic()
            deaths.append(now)
            while deaths and now - deaths[0] > self.window_seconds:
                deaths.popleft()
            if len(deaths) > self.max_restarts:
                degraded = (f"the plugin's worker died {len(deaths)} times in {self.window_seconds:g} s "
                            f"(last: {reason}); it is not restarted for {degraded_seconds:g} s, "
                            f"or until a model file changes or the plugin is re-installed")
                log.error("worker %d %s; %s", worker.pid, reason, degraded)
                continue
            delay = BACKOFF_SECONDS[min(len(deaths), len(BACKOFF_SECONDS)) - 1]
            log.warning("worker %d %s; restarting in %.1f s (%d of %d deaths allowed in %g s)",
                        worker.pid, reason, delay, len(deaths), self.max_restarts, self.window_seconds)
            time.sleep(delay)


def worker_command(main_path: str) -> list[str]:
    return [sys.executable, "-u", main_path, "--worker"]
