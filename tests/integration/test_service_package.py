"""build/defect-service.zip (`make package-service`) holds all the service needs: unpacked in a
directory of its own, its service/serve.sh starts HTTP and gRPC with the zip's config and models.

The Python given (DEFECT_PYTHON, the dev venv) already has the requirements, so serve.sh makes no
venv here; what is tested is that the zip is complete and the command in the README runs.
"""
import os
import sys

import pytest
import requests

from tests.support.paths import REPO, fixture_path, unpacked_build
from tests.support.service_process import HOST, ServiceProcess

pytestmark = pytest.mark.timeout(300)
SERVICE_ZIP = os.path.join(REPO, "build", "defect-service.zip")


def test_the_service_zip_serves_from_a_directory_of_its_own(tmp_path):
    unpacked = unpacked_build(SERVICE_ZIP, tmp_path / "defect-service", "package-service")
    # The service builds on the pure layer alone: none of kuiperd's side is in its zip.
    shipped = {path.name for path in unpacked.iterdir()}
    assert {"core", "service", "models", "label.py", "inference.py", "config.json"} <= shipped
    assert not shipped & {"main.py", "label_func.py", "batch_func.py", "runtime", "install.sh"}, shipped
    # The zip's own labels name class 89 apart, so the answer shows which models the service runs on.
    labels = unpacked / "models" / "imagenet_labels.txt"
    lines = labels.read_text().splitlines()
    assert lines[89] == "macaw"
    labels.write_text("\n".join([*lines[:89], "macaw from this zip", *lines[90:]]) + "\n")
    overlay = tmp_path / "site.json"
    overlay.write_text('{"label": {"runtime": "litert"}}')
    service = ServiceProcess([], env={"DEFECT_PYTHON": sys.executable, "DEFECT_CONFIG": str(overlay)},
                             cwd=str(tmp_path), grpc=True)
    service.command = ["bash", str(unpacked / "service" / "serve.sh"), *service.command[2:]]
    service.start()
    try:
        service.wait_for("service: ready")
        assert f"grpc://{HOST}:{service.grpc_port}" in service.output
        assert requests.get(f"http://{HOST}:{service.http_port}/healthz").status_code == 200
        with open(fixture_path("images", "parrot.jpg"), "rb") as f:
            answer = requests.post(f"http://{HOST}:{service.http_port}/analyze/labelImage?k=1", data=f.read(),
                                   headers={"Content-Type": "image/jpeg"})
        assert answer.json()[0]["label"] == "89:macaw from this zip"  # the zip's models, not the repo's
        # The zip's service.py runs (serve.sh exec'd it).
        with open(f"/proc/{service.proc.pid}/cmdline", "rb") as f:
            assert str(unpacked / "service" / "service.py").encode() in f.read()
    finally:
        assert service.stop() == 0, service.output
