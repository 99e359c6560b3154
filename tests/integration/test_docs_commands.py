"""Every command the README and docs/ give a reader works as written.

Convention: a fenced block tagged ```sh holds commands a reader runs (other fences, ```json, ```sql,
```text, are not run). Each command is either run here, in a copy of the repo (its tracked files,
the built models, the venv linked) with a time bound, or listed in MAPPED with the test or CI step
that runs it. A command that is neither fails test_every_command_is_run_or_mapped. The paths the
pages name in backticks and their links to each other exist.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.support.paths import REPO

PAGES = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]
TIMEOUT = 300  # seconds a command run here may take; the cheap ones take a few


def normal(command: str) -> str:
    """A command's text with its whitespace (line breaks, continuations' indent) collapsed: the tables' key."""
    return " ".join(command.replace("\\\n", " ").split())


def sh_commands(text: str) -> list[str]:
    """The commands of a page's ```sh blocks: a line, with the lines a trailing backslash or an open
    quote carries on; comment lines and blank lines are not commands."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending = f"{pending}\n{line}" if pending else line
            if pending.endswith("\\"):
                continue
            try:
                shlex.split(pending)
            except ValueError:  # a quote still open: the command goes on on the next line
                continue
            commands.append(pending)
            pending = ""
        assert not pending, f"an unfinished command at the end of a sh block: {pending!r}"
    return commands


def page_text(page: str) -> str:
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def documented() -> dict[str, list[str]]:
    """{normalised command: [pages that give it]}."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for command in sh_commands(page_text(page)):
            found.setdefault(normal(command), []).append(page)
    return found


# ------------------------------------------------------------------ commands run by the tests and CI

CI = ".ci/run (CI: `make test`, lint then every test)"
TUTORIALS = "tests/e2e/test_tutorials.py (the tutorials' streams, rules and sink topics, in a real kuiperd)"
INSTALL = "tests/e2e/conftest.py (the defect_plugin fixture installs build/defect.zip by POST /plugins/portables " \
          "and waits for its status; every test in tests/e2e/ uses it)"
UPLOADS = "tests/e2e/test_models_by_name_rules.py (uploads each IR file as this multipart form field, uploadFile)"
SERVICE_HTTP = "tests/integration/test_service_http.py (raw, multipart and JSON bodies against service/service.py)"

MAPPED: dict[str, str] = {
    "make test": CI,
    "make demo": "tests/integration/test_docs_commands.py::test_make_demo_runs_on_a_copy",
    'curl -X POST http://127.0.0.1:9081/plugins/portables -d '
    '\'{"name":"defect","file":"file:///abs/path/to/defect.zip"}\'': INSTALL,
    "curl http://127.0.0.1:9081/plugins/portables/defect/status": INSTALL,
    'curl -X POST http://127.0.0.1:9081/streams -d \'{"sql":"CREATE STREAM tfdemo () WITH '
    '(DATASOURCE=\\"tfdemo\\", FORMAT=\\"BINARY\\")"}\'': TUTORIALS,
    'curl -X POST http://127.0.0.1:9081/rules -d \'{ "id": "tflite", "sql": "SELECT labelImage(self)[0]->label '
    'AS label FROM tfdemo", "actions": [{"mqtt": {"server": "tcp://127.0.0.1:1883", "topic": "ekuiper/labels", '
    '"sendSingle": true}}]}\'': TUTORIALS,
    'curl -X POST http://127.0.0.1:9081/streams -d \'{"sql":"CREATE STREAM openvino_demo () WITH '
    '(DATASOURCE=\\"openvino_demo\\", FORMAT=\\"JSON\\")"}\'': TUTORIALS,
    'curl -X POST http://127.0.0.1:9081/rules -d \'{ "id": "openvino", "sql": "SELECT image AS origin, '
    'inference(image)->base64 AS afterProcess FROM openvino_demo WHERE inference(image)->defect >= 0", '
    '"actions": [{"mqtt": {"server": "tcp://127.0.0.1:1883", "topic": "ekuiper/defect", "sendSingle": true}}]}\'':
        TUTORIALS,
    "curl -F uploadFile=@partB.xml http://127.0.0.1:9081/config/uploads": UPLOADS,
    "curl -F uploadFile=@partB.bin http://127.0.0.1:9081/config/uploads": UPLOADS,
    "make package-offline": CI + ": its package-offline prerequisite; tests/integration/test_install.py installs it",
    "make package-offline PLATFORM=linux_aarch64 PYTHON=3.11":
        CI + ": its PLATFORM_ZIPS prerequisite builds this zip; tests/platforms/test_platforms.py installs it",
    "make serve": "tests/integration/test_service_http.py and test_service_grpc.py run the service.py this target "
                  "starts (on free ports); test_make_serve_starts_the_service checks the target's command",
    "unzip -q defect-service.zip -d defect-service && bash defect-service/service/serve.sh --host 0.0.0.0 "
    "--api-key-file /etc/defect/key --tls-cert /etc/defect/cert.pem --tls-key /etc/defect/key.pem":
        "tests/integration/test_service_package.py (unpacks build/defect-service.zip elsewhere and starts "
        "service/serve.sh; the exposure options: tests/integration/test_service_security.py)",
    "curl --data-binary @parrot.jpg -H 'Content-Type: image/jpeg' "
    "'http://127.0.0.1:8084/analyze/labelImage?k=2'": SERVICE_HTTP,
    "curl -F image=@models/sample_surface.png -F threshold=0.5 http://127.0.0.1:8084/analyze/inference": SERVICE_HTTP,
    'curl -H \'Content-Type: application/json\' -d "{\\"image\\": \\"$(base64 -w0 parrot.jpg)\\", \\"k\\": 1}" '
    "http://127.0.0.1:8084/analyze/labelImage": SERVICE_HTTP,
    "grpcurl -plaintext 127.0.0.1:50051 list":
        "tests/integration/test_service_grpc.py::test_grpcurl_lists_describes_and_calls_through_reflection",
    "grpcurl -plaintext 127.0.0.1:50051 describe defect.v1.Defect":
        "tests/integration/test_service_grpc.py::test_grpcurl_lists_describes_and_calls_through_reflection",
    'curl -X POST http://127.0.0.1:9081/services -d \'{"name": "defect_service", "file": '
    '"file:///abs/path/build/defect_service.zip"}\'':
        "tests/e2e/test_external_service.py (registers the zip over file:// and calls both interfaces)",
    "openssl rand -hex 32 > /etc/defect/key && chmod 600 /etc/defect/key":
        "tests/integration/test_service_security.py (a 32-byte key file; shorter keys refused)",
    "python service/service.py --host 0.0.0.0 --tls-cert /etc/defect/cert.pem --tls-key /etc/defect/key.pem "
    "--api-key-file /etc/defect/key # and/or --tls-client-ca ca.pem for mutual TLS":
        "tests/integration/test_service_security.py (the service with TLS and a key file; a non-loopback "
        "--host refused without them)",
}


# ------------------------------------------------------------------ commands run here


@dataclass
class Run:
    """How a command run here is judged: its output (stdout, stderr) and the copy it ran in."""

    check: Callable[[str, str, str], None]


def labels_two(out: str, err: str, copy: str) -> None:
    line = json.loads(out.strip().splitlines()[-1])
    assert line["image"].endswith("models/sample_cat.jpg"), line
    assert len(line["result"]) == 2 and line["result"][0]["label"] == "286:Egyptian cat", line


def finds_three_defects(out: str, err: str, copy: str) -> None:
    line = json.loads(out.strip().splitlines()[-1])
    assert line["result"]["defect"] == 3, line
    assert os.path.getsize(os.path.join(copy, "build", "inference.jpg")) > 1000


def usage_of(name: str) -> Callable[[str, str, str], None]:
    def check(out: str, err: str, copy: str) -> None:
        assert out.startswith(f"usage: {name}"), out[:200]
    return check


def writes_service_zip(out: str, err: str, copy: str) -> None:
    with zipfile.ZipFile(os.path.join(copy, "build", "defect_service.zip")) as z:
        assert {"defect_service.json", "schemas/defect.proto"} <= set(z.namelist())
        descriptor = z.read("defect_service.json").decode()
    assert "10.0.0.5:50051" in descriptor and "http://10.0.0.5:8084" in descriptor


def config_page_unchanged(out: str, err: str, copy: str) -> None:
    with open(os.path.join(copy, "docs", "configuration.md"), encoding="utf-8") as a, \
            open(os.path.join(REPO, "docs", "configuration.md"), encoding="utf-8") as b:
        assert a.read() == b.read()
    assert "wrote docs/configuration.md" in out


def pytest_passed(out: str, err: str, copy: str) -> None:
    assert re.search(r"\b\d+ passed\b", out) and "failed" not in out, out[-2000:]


RUN: dict[str, Run] = {
    ".venv/bin/python label.py -k 2 models/sample_cat.jpg": Run(labels_two),
    ".venv/bin/python label.py -k 2": Run(labels_two),
    ".venv/bin/python inference.py models/sample_surface.png --out build/inference.jpg": Run(finds_three_defects),
    ".venv/bin/python inference.py --out build/inference.jpg": Run(finds_three_defects),
    ".venv/bin/python camera/camera.py --help": Run(usage_of("camera.py")),
    ".venv/bin/python service/service.py --help": Run(usage_of("service.py")),
    ".venv/bin/python service/client.py --help": Run(usage_of("client.py")),
    ".venv/bin/python service/ekuiper_service.py --grpc 10.0.0.5:50051 --http http://10.0.0.5:8084 "
    "-o build/defect_service.zip": Run(writes_service_zip),
    ".venv/bin/python tools/config_doc.py": Run(config_page_unchanged),
    "tools/with_private_tmp.sh .venv/bin/python -m pytest tests/unit/test_config_doc.py -q -p no:cacheprovider":
        Run(pytest_passed),
}


def test_every_command_is_run_or_mapped():
    commands = documented()
    assert commands, "no ```sh block found: the pages' convention changed?"
    loose = {c: pages for c, pages in commands.items() if c not in RUN and c not in MAPPED}
    assert not loose, "commands neither run by tests/integration/test_docs_commands.py nor mapped to a test " \
                      f"(add them to RUN or MAPPED): {json.dumps(loose, indent=1)}"
    stale = sorted(c for c in {*RUN, *MAPPED} if c not in commands)
    assert not stale, f"RUN/MAPPED list commands no page gives any more: {stale}"


def test_every_mapped_test_exists():
    for command, where in MAPPED.items():
        for path in re.findall(r"(?:tests|\.ci)/[\w./]+\w", where):
            assert os.path.exists(os.path.join(REPO, path.split("::")[0])), f"{command!r} is mapped to {path}"


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> str:
    """The repo as a clone plus `make models` has it: its files (tracked, and new ones not ignored), the built
    models, the venv linked (building one takes minutes; its pins are the repo's)."""
    root = str(tmp_path_factory.mktemp("clone") / "defect")
    # The sources older than the venv and the models newer than the sources, so make rebuilds neither
    # (the linked venv cannot be rebuilt in place; a clone would build its own).
    installed = os.path.getmtime(os.path.join(REPO, ".venv", ".installed"))
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        source = os.path.join(REPO, name)
        if name and os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(root, name))
            os.utime(os.path.join(root, name), (installed - 1, installed - 1))
    shutil.copytree(os.path.join(REPO, "models"), os.path.join(root, "models"), dirs_exist_ok=True)
    for name in os.listdir(os.path.join(root, "models")):
        os.utime(os.path.join(root, "models", name))
    os.symlink(os.path.join(REPO, ".venv"), os.path.join(root, ".venv"))
    os.makedirs(os.path.join(root, "build"), exist_ok=True)
    return root


def run_here(command: str, cwd: str, tmp: str, timeout: float = TIMEOUT,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": tmp, **(extra_env or {})}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("command", sorted(RUN))
def test_command_runs_as_written(command, copy, tmp_path):
    assert command in documented(), f"{command!r} is in RUN but on no page"
    r = run_here(command, copy, str(tmp_path))
    assert r.returncode == 0, f"{command}: exit status {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    RUN[command].check(r.stdout, r.stderr, copy)


def test_make_serve_starts_the_service(copy, tmp_path):
    """`make serve` is the service on 127.0.0.1 with the ports service.md names (its run: MAPPED)."""
    r = run_here("make -n serve", copy, str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert re.search(r"service/service\.py --host 127\.0\.0\.1 --http-port 8084 --grpc-port 50051", r.stdout), r.stdout


@pytest.mark.e2e
def test_make_demo_runs_on_a_copy(copy, tmp_path):
    """`make demo` as a reader runs it, in a copy: the zip built, both command lines, the tutorials'
    rules in a real kuiperd with mosquitto, the camera clip through kuiperd into its contact sheet.
    As on a user's clone, no fixtures folder: no ../shared beside the copy, and the fixtures variables
    name an empty folder, so the demo reads only what `make models` wrote into models/."""
    assert not os.path.exists(os.path.join(os.path.dirname(copy), "shared"))
    empty = tmp_path / "no_fixtures"
    empty.mkdir()
    # Under a /tmp of its own: the suite's own kuiperd may be serving the plugin on the fixed
    # /tmp/plugin_defect.ipc meanwhile (its control channel was "address in use" without this).
    private_tmp = os.path.join(REPO, "tools", "with_private_tmp.sh")
    r = run_here(f"{private_tmp} make demo", copy, str(tmp_path), timeout=1200,
                 extra_env={"DEFECT_FIXTURES": str(empty), "FIXTURES": str(empty)})
    assert r.returncode == 0, f"make demo: exit status {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert os.path.getsize(os.path.join(copy, "build", "defect.zip")) > 1_000_000
    assert os.path.getsize(os.path.join(copy, "build", "camera_contact_sheet.png")) > 10_000


# ------------------------------------------------------------------ paths and links the pages name

TOP = ("core", "runtime", "service", "camera", "tools", "functions", "tests", "bench", "docs", ".ci")
GENERATED = ("docs/benchmarks.md",)  # written by `make bench`
# Files a reader would create: development.md's "Adding a function" walks through a readText example.
EXAMPLES = ("functions/readText.json", "functions/readTextBatch.json", "tests/unit/test_text_reader.py")


def test_paths_the_pages_name_exist():
    missing = []
    for page in PAGES:
        text = page_text(page)
        for token in re.findall(r"`([^`\s]+)`", text):
            path = token.split("::")[0].rstrip(",.:")
            if not path.startswith(tuple(t + "/" for t in TOP)) or re.search(r"[<>*{}$]", path):
                continue
            if path not in GENERATED + EXAMPLES and not os.path.exists(os.path.join(REPO, path)):
                missing.append(f"{page}: {path}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        text = page_text(page)
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path = os.path.normpath(os.path.join(REPO, os.path.dirname(page), target))
            if os.path.relpath(path, REPO) not in GENERATED and not os.path.exists(path):
                broken.append(f"{page}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)
