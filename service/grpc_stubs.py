"""Regenerates the committed gRPC stubs from service/defect.proto (grpcio-tools, pinned).

    python service/grpc_stubs.py        # after editing defect.proto; also `make grpc-stubs`

The stubs are committed so the service runs from a checkout with no build step; they are
generated from the repo root, so they import each other as `service.defect_pb2`.
tests/integration/test_service_grpc.py regenerates them into a temporary folder and fails if they differ.
"""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO = "service/defect.proto"
STUBS = ("service/defect_pb2.py", "service/defect_pb2.pyi", "service/defect_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Write the stubs under out_root (out_root/service/...); return their paths."""
    from grpc_tools import protoc  # a build tool: only here, never at run time

    os.makedirs(Path(out_root) / "service", exist_ok=True)
    # grpc_tools ships google/protobuf/*.proto; the proto imports none, but protoc wants its include dir.
    includes = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["grpc_tools.protoc", f"-I{REPO}", f"-I{includes}", f"--python_out={out_root}",
                          f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", str(REPO / PROTO)])
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (status {status})")
    return [Path(out_root) / stub for stub in STUBS]


if __name__ == "__main__":
    for path in generate(REPO):
        print(f"wrote {path.relative_to(REPO)}")
    sys.exit(0)
