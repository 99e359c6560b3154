"""Where the tests (and the bench) find the fixtures and the build outputs; the demos read only models/."""
import base64
import os
import zipfile
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/support/..
FIXTURES = os.environ.get("DEFECT_FIXTURES", os.path.join(REPO, "..", "shared", "fixtures"))
ZIP = os.path.join(REPO, "build", "defect.zip")


def fixture_path(*parts):
    path = os.path.join(FIXTURES, *parts)
    if not os.path.exists(path):
        pytest.fail(f"fixture {path} is missing: put shared/fixtures beside the repo or set DEFECT_FIXTURES")
    return path


def read_b64(*parts):
    with open(fixture_path(*parts), "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def unpacked_build(zip_path: str, target: Path, make_target: str) -> Path:
    """A zip `make <make_target>` wrote, unpacked into target (as kuiperd or a user unpacks it);
    the test fails with what to run when the zip is missing."""
    if not os.path.isfile(zip_path):
        pytest.fail(f"{zip_path} is missing: run `make {make_target}` first")
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(target)
    return target
