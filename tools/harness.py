"""The kuiperd driver the demos, the bench and the end-to-end tests share: a real mosquitto, a real
kuiperd, a small eKuiper REST client and MQTT helpers (paho-mqtt 2.x).

Nothing here depends on pytest (nor on tests/), so a demo, a bench script or a REPL can use it.
Every server listens on 127.0.0.1 on a free port and is stopped by its owner.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

from tools.free_port import free_port
from tools.processes import die_with_test_run, start_group_reaper, stop_process
from tools.waits import ProcessExited, wait_tcp, wait_until

# tools/harness.py -> the repo root is one level up; never hard-code /work/main.
REPO_ROOT = Path(__file__).resolve().parents[1]
KUIPER_VERSION = "2.4.2"
HOST = "127.0.0.1"


class HarnessError(RuntimeError):
    """A server could not be set up; the message says why (never a silent skip)."""


# ---------------------------------------------------------------- utilities


def tail(path: Path, lines: int = 200) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


ADDRESS_IN_USE = "address already in use"  # kuiperd (Go) and mosquitto ("Address already in use") say so
START_ATTEMPTS = 3  # a port another process took between free_port() and the server's bind: pick again


# ---------------------------------------------------------------- mosquitto


def ensure_debian_packages(*packages: str) -> None:
    """Install the Debian packages that are missing (tools/system_deps.sh), or fail with why."""
    script = REPO_ROOT / "tools" / "system_deps.sh"
    r = subprocess.run(["bash", str(script), *packages], capture_output=True, text=True)
    if r.returncode != 0:
        raise HarnessError(f"the tests need the Debian packages {' '.join(packages)}: {r.stderr.strip()[-2000:]}")


def ensure_mosquitto() -> str:
    """Return the mosquitto binary, installing the Debian package if missing."""
    ensure_debian_packages("mosquitto")
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(found):
        raise HarnessError("the mosquitto package is installed but no mosquitto binary was found")
    return found


class Mosquitto:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.host = HOST
        self._port = free_port()
        self._port_told = False  # once someone has the port, a start retries on it, not on another
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        self._port_told = True
        return self._port

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> Mosquitto:
        """Start on the chosen port; mosquitto cannot report a port it chose, so when another process
        took ours since free_port(), pick another and start again (unless the port was given out)."""
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start_once()
            except HarnessError as e:
                if ADDRESS_IN_USE not in str(e).lower() or self._port_told or attempt == START_ATTEMPTS - 1:
                    raise
                self._port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> Mosquitto:
        binary = ensure_mosquitto()
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        # log_type subscribe lets wait_subscribed() see when kuiperd's MQTT
        # source has really subscribed, so no test message is published too early.
        conf.write_text(
            f"listener {self._port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # A log file, not stdout: mosquitto flushes its file per line but
            # block-buffers a redirected stdout until exit.
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n"
            "connection_messages true\n"
            # As root mosquitto would switch to user "mosquitto", which cannot
            # write the log in a root-only pytest tmp dir; "root" means stay.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        # Config errors go to stderr before the log file is open.
        stderr_path = self.workdir / "mosquitto.stderr"
        self._log_mark = self.log_path.stat().st_size if self.log_path.exists() else 0  # a restart appends
        with open(stderr_path, "ab") as err:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=err, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_test_run())
        try:
            # "running" comes after every listener is open: a connect alone could reach another
            # process that took the port, while this mosquitto is exiting with "Address already in use".
            wait_until(self._running, 10, what="mosquitto's log line 'running'")
            wait_tcp(self.host, self._port, 10, self.proc, "mosquitto")
        except (HarnessError, ProcessExited, TimeoutError) as e:
            self.stop()
            raise HarnessError(f"{e}\n--- mosquitto stderr ---\n{tail(stderr_path)}"
                               f"\n--- mosquitto log ---\n{tail(self.log_path)}") from None
        return self

    def _running(self) -> bool:
        if self.proc.poll() is not None:
            raise HarnessError(f"mosquitto exited with code {self.proc.returncode}")
        if not self.log_path.exists():
            return False
        with open(self.log_path, "rb") as f:
            f.seek(self._log_mark)
            return b" running" in f.read()

    def wait_subscribed(self, topic: str, timeout: float = 15, clients: int = 1) -> None:
        """Wait until `clients` distinct clients have subscribed to exactly `topic`.

        kuiperd v2.4.2 gives every rule its own MQTT source client (which
        subscribes twice), so two rules on one stream means clients=2."""
        def seen():
            ids = set()
            for line in self.log_path.read_text(errors="replace").splitlines():
                # mosquitto 2.x subscribe log line: "<ts>: <client id> <qos> <topic>"
                parts = line.split()
                if len(parts) >= 4 and parts[-1] == topic and parts[-2].isdigit():
                    ids.add(parts[-3])
            return len(ids) >= clients
        wait_until(seen, timeout, what=f"{clients} MQTT client(s) subscribed to {topic!r} on mosquitto")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=5)
            self.proc = None


# ---------------------------------------------------------------- kuiperd


def ensure_kuiperd(version: str = KUIPER_VERSION) -> Path:
    """Return the path of a built kuiperd, building it with build_kuiperd.sh if missing."""
    # As the Makefile: once per version, with -tags full (the video source); the suffix keeps an
    # older build without it from being reused.
    out = Path.home() / ".cache" / "defect" / f"kuiperd-{version}-full"
    binary = out / "kuiperd"
    if binary.exists() and (out / "etc").is_dir():
        return binary
    script = REPO_ROOT / "tools" / "build_kuiperd.sh"
    r = subprocess.run(["bash", str(script), version, str(out)], capture_output=True, text=True)
    if r.returncode != 0 or not binary.exists():
        raise HarnessError(f"building kuiperd {version} failed (rc={r.returncode}):\n{r.stderr[-4000:]}")
    return binary


def python_bin() -> str:
    """Interpreter kuiperd uses for portable plugins. Not resolved through
    symlinks: a venv's python only finds its site-packages via its own path."""
    override = os.environ.get("DEFECT_TEST_PYTHONBIN")
    p = override or str(REPO_ROOT / ".venv" / "bin" / "python")
    if not os.path.exists(p):
        raise HarnessError(f"python for portable plugins not found: {p} "
                           f"(set DEFECT_TEST_PYTHONBIN or create the repo venv)")
    return os.path.abspath(p)


# kuiperd puts its portable-plugin sockets at fixed /tmp/plugin_<name>.ipc and
# /tmp/func_<symbol>.ipc paths, so two kuiperds on one machine would steal each
# other's plugin traffic. This lock makes a second test session fail loudly.
KUIPERD_LOCK = Path(tempfile.gettempdir()) / "defect-e2e-kuiperd.lock"


PRIVATE_TMP = REPO_ROOT / "tools" / "with_private_tmp.sh"


def private_tmp_command(command: list[str]) -> list[str]:
    """`command` with a /tmp of its own, where only files directly in /tmp are private (see
    with_private_tmp.sh): kuiperd and the plugin meet at fixed /tmp/plugin_<name>.ipc and
    /tmp/func_<symbol>.ipc paths, so a second kuiperd with the plugin needs its own."""
    if not shutil.which("unshare"):
        raise HarnessError("`unshare` (util-linux) is needed to run a second kuiperd with its own /tmp")
    return [str(PRIVATE_TMP), *command]


@contextlib.contextmanager
def broker_and_kuiperd(prefix: str, what: str = ""):
    """A mosquitto and a kuiperd in a temporary dir of their own, stopped and removed at the end
    (the demos: `make demo`)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        broker = Mosquitto(Path(work) / "mosquitto").start()
        kuiperd = None
        try:
            kuiperd = Kuiperd(Path(work) / "kuiper", broker.url).start()
            print(f"mosquitto on {broker.url}, kuiperd v{kuiperd.version}{what} REST on {kuiperd.client.base_url}")
            yield broker, kuiperd
        finally:
            if kuiperd:
                kuiperd.stop()
            broker.stop()


def parent_pid(pid: int) -> int | None:
    with contextlib.suppress(OSError, StopIteration):
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return None


class Kuiperd:
    def __init__(self, home: Path, mqtt_url: str, version: str = KUIPER_VERSION,
                 extra_env: dict[str, str | None] | None = None, private_tmp: bool = False):
        """private_tmp: run with a /tmp of its own (see private_tmp_command), beside another kuiperd."""
        self.home = Path(home)
        self.private_tmp = private_tmp
        self.version = version
        self.mqtt_url = mqtt_url
        self.extra_env = extra_env or {}
        self.log_path = self.home / "kuiperd.out"  # console log: kuiperd + plugin stdout/stderr
        self.proc: subprocess.Popen | None = None
        self._reaper: subprocess.Popen | None = None
        self._lock = None
        self._log_mark = 0
        self._pick_ports()

    def _pick_ports(self) -> None:
        # kuiperd cannot listen on port 0 and report the port it got: free ones are picked, and
        # start() picks again if another process took one in between.
        self.rest_port = free_port()
        self.cli_port = free_port()
        self.http_push_port = free_port()
        self.client = KuiperClient(f"http://{HOST}:{self.rest_port}")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            # LoadFileType=relative (set at build time) + this = etc/ data/ log/ plugins/ under home.
            "KuiperBaseKey": str(self.home),
            # kuiper.yaml overrides: KUIPER__<SECTION>__<KEY> (internal/conf/load.go:124,136).
            "KUIPER__BASIC__RESTIP": HOST,
            "KUIPER__BASIC__RESTPORT": str(self.rest_port),
            "KUIPER__BASIC__IP": HOST,
            "KUIPER__BASIC__PORT": str(self.cli_port),
            # pprof defaults to a fixed 127.0.0.1:6060 that would clash between runs.
            "KUIPER__BASIC__PPROF": "false",
            "KUIPER__BASIC__PROMETHEUS": "false",
            # Only used by the /plugins/*/prebuild endpoints; make sure they cannot go online.
            "KUIPER__BASIC__PLUGINHOSTS": "http://127.0.0.1:9",
            # httppush server defaults to 0.0.0.0:10081.
            "KUIPER__SOURCE__HTTPSERVERIP": HOST,
            "KUIPER__SOURCE__HTTPSERVERPORT": str(self.http_push_port),
            # One unrotated file that also catches plugin output and Go panics.
            "KUIPER__BASIC__CONSOLELOG": "true",
            "KUIPER__BASIC__FILELOG": "false",
            "KUIPER__BASIC__LOGLEVEL": os.environ.get("DEFECT_TEST_KUIPER_LOGLEVEL", "info"),
            "KUIPER__PORTABLE__PYTHONBIN": python_bin(),
            # Default MQTT source server (etc/mqtt_source.yaml "default" key, prefix MQTT_SOURCE).
            "MQTT_SOURCE__DEFAULT__SERVER": self.mqtt_url,
        })
        env.update(self.extra_env)
        # A None in extra_env unsets the variable, e.g. KUIPER__PORTABLE__PYTHONBIN to leave it to kuiper.yaml.
        return {k: v for k, v in env.items() if v is not None}

    def _prepare_home(self, binary: Path) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not (self.home / "etc").exists():
            shutil.copytree(binary.parent / "etc", self.home / "etc")
        # plugins/portable must exist or the portable manager panics at start.
        for d in ("data", "log", "plugins/portable", "plugins/sources", "plugins/sinks",
                  "plugins/functions", "plugins/wasm"):
            (self.home / d).mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 60) -> Kuiperd:
        """Start kuiperd and wait for its REST API. It dies with the test run (die_with_test_run), and
        so do the plugin processes it starts (group_reaper.py). When a port was taken since it was
        picked, it starts again on new ports (a restart too: rules and plugins are kept on disk)."""
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start_once(timeout)
            except HarnessError as e:
                if ADDRESS_IN_USE not in str(e).lower() or attempt == START_ATTEMPTS - 1:
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Kuiperd:
        if not self.private_tmp:
            self._lock = open(KUIPERD_LOCK, "w")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                self._lock = None
                raise HarnessError(f"another e2e kuiperd holds {KUIPERD_LOCK}; only one may run at a time "
                                   "(portable plugin ipc sockets live at fixed /tmp paths)") from None
        binary = ensure_kuiperd(self.version)
        self._prepare_home(binary)
        command = private_tmp_command([str(binary)]) if self.private_tmp else [str(binary)]
        with open(self.log_path, "ab") as log:
            self._log_mark = log.tell()
            self.proc = subprocess.Popen(command, cwd=self.home, env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=die_with_test_run())
        self._reaper = start_group_reaper(self.proc.pid)
        try:
            wait_until(self._ping, timeout, interval=0.2, what="kuiperd GET /ping")
        except (TimeoutError, HarnessError) as e:
            self.stop()
            raise HarnessError(f"kuiperd did not start: {e}\n--- kuiperd log ---\n{self.log_tail()}") from None
        return self

    def log_since_start(self) -> str:
        """kuiperd's console log since this kuiperd process started."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_mark)
            return f.read().decode(errors="replace")

    def wait_models_loaded(self, functions: tuple[str, ...] = ("labelImage", "inference"),
                           timeout: float = 180) -> None:
        """Wait until the plugin's worker has logged "<function>: model loaded" for each function since
        this kuiperd started (label_func.py): a frame sent earlier may get "model is still loading"."""
        def loaded():
            log = self.log_since_start()
            if "model could not be loaded" in log:
                raise HarnessError(f"a model failed to load:\n{self.log_tail(40)}")
            return all(f"{name}: model loaded" in log for name in functions)
        wait_until(loaded, timeout, interval=0.5, what=f"the plugin's {', '.join(functions)} models loaded")

    def _ping(self) -> bool:
        if self.proc.poll() is not None:
            raise HarnessError(f"kuiperd exited with code {self.proc.returncode}")
        if ADDRESS_IN_USE in self.log_since_start().lower():  # a ping now could reach the port's owner
            raise HarnessError(f"kuiperd: a port is taken: {ADDRESS_IN_USE}")
        return self.client.ping()

    def log_tail(self, lines: int = 200) -> str:
        return tail(self.log_path, lines)

    def mqtt_action(self, topic: str, **props) -> dict:
        """An MQTT sink action for this broker. The v2.4.2 MQTT sink has no
        default server (sink confs come only from the REST-managed store), so
        the server goes in each action."""
        return {"mqtt": {"server": self.mqtt_url, "topic": topic, "qos": 1, **props}}

    def plugin_pids(self, name: str) -> list[int]:
        """Pids of every process of portable plugin `name` run by this kuiperd (the defect plugin:
        its supervisor and its worker). The REST status has no pid; kuiperd starts
        `<pythonBin> -u <home>/plugins/portable/<name>/<exe> <conf json>`."""
        prefix = str(self.home / "plugins" / "portable" / name) + "/"
        # Runs under tools/with_private_tmp.sh share /proc but each has its own /tmp, where pytest's
        # tmp dirs get the same names: only processes in kuiperd's mount namespace are its own.
        own_mounts = os.readlink("/proc/self/ns/mnt")
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                own_mounts = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")  # private_tmp: a namespace of its own
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    args = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
                    if any(a.startswith(prefix) for a in args) and os.readlink(d / "ns" / "mnt") == own_mounts:
                        pids.append(int(d.name))
        return pids

    def plugin_worker_pids(self, name: str) -> list[int]:
        """The workers (`main.py --worker`) among plugin_pids: children of the supervisor kuiperd started.
        A process a worker forks shows the worker's command line until it execs (OpenVINO's telemetry
        forked one at import, before openvino_runtime.py kept it out; any library may): its parent is
        a worker, not a supervisor, so it is not counted."""
        supervisors, workers = set(), {}
        for pid in self.plugin_pids(name):
            with contextlib.suppress(OSError):
                if b"--worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    workers[pid] = parent_pid(pid)
                else:
                    supervisors.add(pid)
        return [pid for pid, parent in workers.items() if parent in supervisors]

    def restart(self, timeout: float = 60) -> Kuiperd:
        """Same home and ports: installed plugins and rules are reloaded from disk.
        The only way in v2.4.2 to bring every function of a hot-updated or
        crashed portable plugin back (see the harness report)."""
        self.stop()
        return self.start(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM lets kuiperd stop rules and kill plugin processes itself.
            stop_process(self.proc, timeout=20)
            self.proc = None
        if self._reaper is not None:
            stop_process(self._reaper, timeout=5)  # kuiperd's group is gone: nothing left to kill
            self._reaper = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def make_plugin_zip(src_dir: Path, zip_path: Path) -> str:
    """Zip a plugin folder (with <name>.json at its root) and return its file:// URL.

    Writes an entry for every directory: kuiperd v2.4.2 creates only one
    missing directory level per file (internal/pkg/filex/zip.go:55-59), so a
    zip without directory entries fails with "mkdirat a/b: no such file"."""
    import zipfile
    src_dir, zip_path = Path(src_dir), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for root, dirs, files in os.walk(src_dir):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            rel = Path(root).relative_to(src_dir)
            if rel != Path("."):
                z.write(root, f"{rel.as_posix()}/")
            for f in sorted(files):
                z.write(Path(root) / f, (rel / f).as_posix())
    return zip_path.resolve().as_uri()


# ---------------------------------------------------------------- REST client


class KuiperError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str):
        self.status, self.body = status, body
        super().__init__(f"{method} {path} -> HTTP {status}: {body}")


class KuiperClient:
    def __init__(self, base_url: str, timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, ok=(200, 201), timeout: float | None = None):
        """Send a request; return parsed JSON when possible, else text.
        Raises KuiperError with the response body for any status not in ok."""
        data = None
        headers = {}
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                status, text = resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        if status not in ok:
            raise KuiperError(method, path, status, text)
        try:
            return json.loads(text)
        except ValueError:
            return text

    def upload(self, name: str, data: bytes) -> str:
        """POST /config/uploads as a multipart form (field `uploadFile`), as eKuiper's manager uploads a
        binary file; returns the stored file's path (kuiperd's `<data dir>/uploads/<name>`)."""
        boundary = f"defect-{uuid.uuid4().hex}"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadFile\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.base_url + "/config/uploads", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            raise KuiperError("POST", "/config/uploads", e.code, e.read().decode(errors="replace")) from None

    def ping(self) -> bool:
        try:
            self.request("GET", "/ping")
            return True
        except (OSError, KuiperError):
            return False

    # streams
    def create_stream(self, sql: str):
        return self.request("POST", "/streams", {"sql": sql})

    def delete_stream(self, name: str):
        return self.request("DELETE", f"/streams/{name}")

    # rules
    def create_rule(self, rule_id: str, sql: str, actions: list, options: dict | None = None):
        rule = {"id": rule_id, "sql": sql, "actions": actions}
        if options:
            rule["options"] = options
        return self.request("POST", "/rules", rule)

    def rule_status(self, rule_id: str) -> dict:
        return self.request("GET", f"/rules/{rule_id}/status")

    def delete_rule(self, rule_id: str):
        return self.request("DELETE", f"/rules/{rule_id}")

    def wait_rule_running(self, rule_id: str, timeout: float = 30) -> dict:
        """Wait until the rule runs and every source/sink reports connection_status 1."""
        last: dict = {}

        def ready():
            st = last["status"] = self.rule_status(rule_id)
            if st.get("status") != "running":
                return None
            conns = [v for k, v in st.items() if k.endswith("_connection_status")]
            return st if all(v == 1 for v in conns) else None
        try:
            return wait_until(ready, timeout, interval=0.2, what=f"rule {rule_id} running and connected")
        except TimeoutError as e:
            # The status says why (an error message, a source still connecting), not just "None".
            raise TimeoutError(f"{e}; last status: {last.get('status')!r}") from None

    # portable plugins
    def install_portable_plugin(self, name: str, file_url: str, shell_paras: list[str] | None = None,
                                timeout: float = 900):
        """file_url: file:///abs/path/name.zip (must end with .zip). The request
        returns only after the zip's install.sh has finished, hence the long timeout."""
        body = {"name": name, "file": file_url}
        if shell_paras:
            body["shellParas"] = shell_paras
        return self.request("POST", "/plugins/portables", body, timeout=timeout)

    def update_portable_plugin(self, name: str, file_url: str, timeout: float = 900):
        # PUT = delete + register (internal/server/portable_init.go:119-137).
        return self.request("PUT", f"/plugins/portables/{name}", {"name": name, "file": file_url},
                            timeout=timeout)

    def get_portable_plugin(self, name: str):
        return self.request("GET", f"/plugins/portables/{name}")

    def list_portable_plugins(self):
        return self.request("GET", "/plugins/portables")

    def delete_portable_plugin(self, name: str):
        return self.request("DELETE", f"/plugins/portables/{name}")

    def portable_plugin_status(self, name: str) -> dict:
        """{"refCount": {rule: n}, "status": "initializing|running|error|stop", "errMsg": "..."}"""
        return self.request("GET", f"/plugins/portables/{name}/status")


# ---------------------------------------------------------------- MQTT


def _connect(host: str, port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    connected = threading.Event()
    c.on_connect = lambda client, userdata, flags, rc, props: connected.set() if not rc.is_failure else None
    c.connect(host, port)
    c.loop_start()
    if not connected.wait(10):
        c.loop_stop()
        raise HarnessError(f"MQTT connect to {host}:{port} failed")
    return c


class MqttCollector:
    """Collects every message on `topic` into a thread-safe list."""

    def __init__(self, host: str, port: int, topic: str, qos: int = 1):
        self.topic = topic
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._client = _connect(host, port, f"e2e-sub-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda client, userdata, mid, codes, props: subscribed.set()
        self._client.subscribe(topic, qos)
        if not subscribed.wait(10):  # return only once SUBACK arrived, so nothing is missed
            self.close()
            raise HarnessError(f"MQTT subscribe to {topic} timed out")

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 30) -> list[mqtt.MQTTMessage]:
        """Wait until at least n messages arrived; return a copy of all of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= n, timeout):
                raise TimeoutError(f"got {len(self.messages)} of {n} messages on {self.topic} in {timeout}s: "
                                   f"{[m.payload[:200] for m in self.messages]}")
            return list(self.messages)

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages]

    def json(self) -> list:
        return [json.loads(p) for p in self.payloads()]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class MqttPublisher:
    def __init__(self, host: str, port: int):
        self._client = _connect(host, port, f"e2e-pub-{uuid.uuid4().hex[:8]}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 10) -> None:
        info = self._client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout)  # PUBACK for qos 1: the broker has it
        if not info.is_published():
            raise TimeoutError(f"MQTT publish to {topic} not acknowledged within {timeout}s")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def publish(host: str, port: int, topic: str, payload: bytes, qos: int = 1) -> None:
    """One-shot publish; use MqttPublisher for many messages."""
    p = MqttPublisher(host, port)
    try:
        p.publish(topic, payload, qos)
    finally:
        p.close()
