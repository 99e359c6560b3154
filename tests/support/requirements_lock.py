"""requirements.lock: every package install.sh installs, transitive ones included, pinned to one
version with the sha256 of each wheel a gateway may take (Linux x86_64 and aarch64, CPython 3.11
to 3.13), for `pip install --require-hashes`.

    .venv/bin/python -m tests.support.requirements_lock > requirements.lock   # after changing requirements.txt

The set is pip's own answer: its resolver run for each target as install.sh runs it there (wheels
only, `pip install --dry-run --report`; the lines marked `# --no-deps` resolved apart, without
their dependencies). Every target must come to the same versions. The hashes are those of every
wheel of each pinned version that suits a target, as the index lists them (as pip-compile
--generate-hashes collects them), so a gateway whose pip prefers another manylinux
level of the same version still finds its hash. tests/integration/test_install.py resolves again and compares.
The index is PyPI's, as a gateway's pip sees it (its simple API in JSON, PEP 691, the one pip reads).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/support/..
REQUIREMENTS = os.path.join(REPO, "requirements.txt")
LOCK = os.path.join(REPO, "requirements.lock")
PYTHONS = ("3.11", "3.12", "3.13")
# The manylinux levels pip is told a target takes: the Makefile's MANYLINUX_x86_64 and MANYLINUX_aarch64.
MANYLINUX = {"x86_64": ("manylinux2014", "manylinux_2_17", "manylinux_2_26", "manylinux_2_27", "manylinux_2_28")}
MANYLINUX["aarch64"] = (*MANYLINUX["x86_64"], "manylinux_2_31", "manylinux_2_34", "manylinux_2_35")
TARGETS = [(arch, python) for arch in MANYLINUX for python in PYTHONS]
NO_DEPS = "# --no-deps"
INDEX = "https://pypi.org/simple/{name}/"
# pip's settings from the environment that would make a resolve differ from a gateway's.
PIP_LOCAL = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT")


def requirement_lines(path: str = REQUIREMENTS) -> tuple[list[str], list[str]]:
    """(lines installed with their dependencies, lines marked `# --no-deps`), as install.sh splits them."""
    with_deps, no_deps = [], []
    with open(path) as f:
        for line in f:
            requirement = line.split("#", 1)[0].strip()
            if requirement:
                (no_deps if NO_DEPS in line else with_deps).append(requirement)
    return with_deps, no_deps


def resolve(arch: str, python: str) -> dict[str, tuple[str, str, bool]]:
    """{canonical name: (version, sha256 of the wheel pip picked, installed without dependencies)}
    for one target, by pip's resolver (the index must be reachable)."""
    with_deps, no_deps = requirement_lines()
    resolved = {}
    for lines, alone in ((with_deps, False), (no_deps, True)):
        if not lines:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            requirements, report = os.path.join(scratch, "requirements.txt"), os.path.join(scratch, "report.json")
            with open(requirements, "w") as f:
                f.write("\n".join(lines) + "\n")
            command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--dry-run",
                       "--ignore-installed", "--only-binary=:all:", "--python-version", python,
                       "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}", "--abi", "abi3",
                       "--abi", "none", "--target", os.path.join(scratch, "target"), "--report", report,
                       *(["--no-deps"] if alone else []), "-r", requirements]
            for level in MANYLINUX[arch]:
                command += ["--platform", f"{level}_{arch}"]
            env = {k: v for k, v in os.environ.items() if k not in PIP_LOCAL}
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"pip could not resolve for {arch} / {python}: {done.stderr.strip()[-2000:]}")
            with open(report) as f:
                for item in json.load(f)["install"]:
                    name = canonicalize_name(item["metadata"]["name"])
                    digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
                    resolved[name] = (item["metadata"]["version"], digest, alone)
    return resolved


def suits_a_target(filename: str) -> bool:
    """A wheel some target (Linux x86_64 or aarch64, CPython 3.11 to 3.13) may install."""
    if not filename.endswith(".whl"):
        return False
    wanted = {f"cp{p.replace('.', '')}" for p in PYTHONS}
    for tag in parse_wheel_filename(filename)[3]:
        platform_ok = tag.platform == "any" or (
            tag.platform.startswith(("manylinux", "linux_")) and tag.platform.endswith(tuple(MANYLINUX)))
        python_ok = (tag.interpreter in wanted or tag.interpreter in ("py3", "py2.py3")
                     or (tag.abi == "abi3" and re.fullmatch(r"cp3\d+", tag.interpreter) is not None
                         and int(tag.interpreter[3:]) <= 13))
        if platform_ok and python_ok:
            return True
    return False


def index_hashes(name: str, version: str) -> set[str]:
    """sha256 of every wheel of name==version that suits a target, as the index lists them."""
    request = urllib.request.Request(INDEX.format(name=name), headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        files = json.load(answer)["files"]
    return {f["hashes"]["sha256"] for f in files if f["filename"].endswith(".whl")
            and parse_wheel_filename(f["filename"])[1] == Version(version) and suits_a_target(f["filename"])}


def lock_text() -> str:
    """The whole requirements.lock, from fresh resolves; RuntimeError when the targets disagree."""
    resolved = {target: resolve(*target) for target in TARGETS}
    first = resolved[TARGETS[0]]
    for target, packages in resolved.items():
        versions = {name: version for name, (version, _, _) in packages.items()}
        if versions != {name: version for name, (version, _, _) in first.items()}:
            raise RuntimeError(f"{target} resolves to other versions than {TARGETS[0]}: {versions}")
    lines = []
    for name in sorted(first):
        version, _, alone = first[name]
        hashes = index_hashes(name, version)
        missing = {packages[name][1] for packages in resolved.values()} - hashes
        if missing:
            raise RuntimeError(f"the index does not list {name} {version}'s wheels {missing}")
        lines.append(f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in sorted(hashes))
                     + (f"  {NO_DEPS}" if alone else ""))
    header = ("# Generated by tests/support/requirements_lock.py from requirements.txt: every package install.sh\n"
              "# installs, pinned, with the sha256 of each wheel for Linux x86_64 and aarch64, CPython 3.11\n"
              "# to 3.13. Lines marked `# --no-deps` go in after the others, without their dependencies.\n")
    return header + "\n".join(lines) + "\n"


def read_lock(path: str = LOCK) -> dict[str, tuple[str, set[str], bool]]:
    """{canonical name: (version, sha256 hashes, installed without dependencies)} from a lock file."""
    locked = {}
    with open(path) as f:
        for line in f:
            requirement = line.split("#", 1)[0].strip()
            if requirement:
                pin, *options = requirement.split()
                name, version = pin.split("==")
                hashes = {option.removeprefix("--hash=sha256:") for option in options}
                locked[canonicalize_name(name)] = (version, hashes, NO_DEPS in line)
    return locked


if __name__ == "__main__":
    sys.stdout.write(lock_text())
