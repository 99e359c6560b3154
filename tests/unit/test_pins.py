"""Every package the requirements files pin has its own dependencies pinned too, at one version.

The charter asks for pinned versions including what the pinned packages pull in. requirements.lock
covers what install.sh installs (tests/support/requirements_lock.py); these tests cover the three
files `make venv` installs: requirements.txt, service/requirements.txt and tests/requirements.txt.
The dependencies are read from the metadata of the distributions installed here (the venv those
files built), each one's markers evaluated for this Python and platform, followed recursively.
A line marked `# --no-deps` is installed without its dependencies, so they are not followed.
"""
import importlib.metadata
import os

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.paths import REPO
from tests.support.requirements_lock import requirement_lines

# The files whose packages' dependencies must be pinned, and the lock that may pin them too.
PINNING = ("requirements.txt", os.path.join("service", "requirements.txt"), os.path.join("tests", "requirements.txt"))
LOCK = "requirements.lock"


def read_pins(name: str) -> list[tuple[Requirement, bool]]:
    """(requirement, installed without its dependencies) for each line of the file REPO/name."""
    with_deps, no_deps = requirement_lines(os.path.join(REPO, name))
    # A lock line goes on with its --hash options: the requirement is its first word.
    return [(Requirement(line.split()[0]), alone) for lines, alone in ((with_deps, False), (no_deps, True))
            for line in lines]


def pinned_version(requirement: Requirement) -> str | None:
    """The version an exact pin (`name==version`) names, None for anything looser."""
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
        return specifiers[0].version
    return None


def all_pins() -> dict[str, dict[str, list[str]]]:
    """{canonical name: {version: [files that pin it at that version]}} over the three files and the lock."""
    pins: dict[str, dict[str, list[str]]] = {}
    for name in (*PINNING, LOCK):
        for requirement, _ in read_pins(name):
            version = pinned_version(requirement)
            pins.setdefault(canonicalize_name(requirement.name), {}).setdefault(str(version), []).append(name)
    return pins


def dependencies(name: str, extras: set[str]) -> list[Requirement]:
    """The installed distribution's requirements that apply here (markers for this Python, platform, extras)."""
    found = []
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras}):
            found.append(requirement)
    return found


def test_every_line_is_an_exact_pin_at_one_version():
    pins = all_pins()
    loose = sorted(f"{name} in {versions['None']}" for name, versions in pins.items() if "None" in versions)
    assert not loose, f"not pinned with ==: {loose}"
    twice = {name: versions for name, versions in pins.items() if len(versions) > 1}
    assert not twice, f"pinned at two versions: {twice}"


def test_every_dependency_of_a_pinned_package_is_pinned():
    pins = {name: next(iter(versions)) for name, versions in all_pins().items()}
    # (canonical name, extras, installed with its dependencies, who asked for it) still to visit.
    todo = [(canonicalize_name(r.name), set(r.extras), not alone, name) for name in PINNING
            for r, alone in read_pins(name)]
    seen, problems = set(), []
    while todo:
        name, extras, follow, asker = todo.pop()
        if (name, frozenset(extras), follow) in seen:
            continue
        seen.add((name, frozenset(extras), follow))
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} (for {asker}) is not installed here: `make venv` first")
            continue
        if installed != pins[name]:
            problems.append(f"{name} is pinned at {pins[name]} but {installed} is installed: `make venv` first")
            continue
        if not follow:
            continue
        for requirement in dependencies(name, extras):
            dependency = canonicalize_name(requirement.name)
            if dependency not in pins:
                try:
                    have = f"=={importlib.metadata.version(dependency)} installed"
                except importlib.metadata.PackageNotFoundError:
                    have = "not installed"
                problems.append(f"{dependency} ({requirement.specifier or 'any'}, {have}) for {name} is pinned nowhere")
                continue
            if not requirement.specifier.contains(pins[dependency], prereleases=True):
                problems.append(f"{name} needs {requirement}, but {dependency} is pinned at {pins[dependency]}")
            todo.append((dependency, set(requirement.extras), True, name))
    assert not problems, "\n".join(sorted(set(problems)))
