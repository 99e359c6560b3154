"""Builds the zip eKuiper's `POST /services` registers: the model service as external SQL functions.

    python service/ekuiper_service.py --grpc 10.0.0.5:50051 --http http://10.0.0.5:8084 -o build/defect_service.zip
    curl -X POST http://127.0.0.1:9081/services -d '{"name": "defect_service", "file": "file:///abs/build/defect_service.zip"}'

The zip holds service/ekuiper/defect_service.json (the descriptor) with the addresses given here
and schemas/defect.proto (the service's own proto, service/defect.proto). Functions, once registered:
labelImageGrpc(image, k, id) and inferenceGrpc(image, threshold, id) over gRPC, and
defectHttp("post", "/analyze/<function>", object_construct("image", image, ...)) over REST.

The REST key (--api-key-file, or DEFECT_API_KEY) is read, never taken as an argument (`ps` shows
those). eKuiper's descriptor can carry a REST header only as a literal value, so the key is in
the zip (written readable by its owner only) and in kuiperd's copy of the service (data/services/).
"""
import json
import os
import stat
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run by path, this folder is first on sys.path and service.py here would shadow the package of the
# same name (even with the repo on PYTHONPATH): the repo root goes first, this folder goes.
sys.path[:] = [str(HERE.parent), *(p for p in sys.path
                                   if os.path.abspath(p or ".") not in (str(HERE.parent), str(HERE)))]

from core.command_line import OneLineArgumentParser  # noqa: E402
from service.grpc_messages import API_KEY_VAR, RPCS, read_api_key  # noqa: E402

DESCRIPTOR = HERE / "ekuiper" / "defect_service.json"
PROTO = HERE / "defect.proto"
SERVICE_NAME = DESCRIPTOR.stem  # eKuiper names the service after its json file


def descriptor(grpc_address: str | None, http_url: str | None, api_key: str | None) -> dict:
    """The descriptor with these addresses; an interface given no address is left out."""
    conf = json.loads(DESCRIPTOR.read_text())
    interfaces = conf["interfaces"]
    if grpc_address:
        interfaces["defectGrpc"]["address"] = f"tcp://{grpc_address.removeprefix('tcp://')}"
        # Each declared function as <name>Grpc(image, option, id): the unary method of its RPC.
        interfaces["defectGrpc"]["functions"] = [{"name": f"{name}Grpc", "serviceName": rpc.unary}
                                                 for name, rpc in RPCS.items()]
    else:
        del interfaces["defectGrpc"]
    if http_url:
        interfaces["defectHttp"]["address"] = http_url.rstrip("/")
        if api_key:  # eKuiper's gRPC calls carry no metadata: only REST can send a key
            interfaces["defectHttp"]["options"]["headers"]["X-API-Key"] = api_key
    else:
        del interfaces["defectHttp"]
    return conf


def write_zip(path: Path, grpc_address: str | None, http_url: str | None, api_key: str | None = None) -> Path:
    """Write the service zip to path (owner-only when it holds a key); return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if api_key:  # created 0600 before the key is written into it
        path.unlink(missing_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{SERVICE_NAME}.json", json.dumps(descriptor(grpc_address, http_url, api_key), indent=2))
        z.writestr("schemas/", "")  # kuiperd makes one missing folder level per file; say it anyway
        z.write(PROTO, f"schemas/{PROTO.name}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="ekuiper_service.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grpc", metavar="HOST:PORT",
                        help="the service's gRPC address (it must run without an API key)")
    parser.add_argument("--http", metavar="URL", help="the service's HTTP base URL, e.g. http://10.0.0.5:8084")
    parser.add_argument("--api-key-file", metavar="FILE",
                        help=f"a file holding the service's API key, sent as the X-API-Key header of the REST "
                             f"calls; or set {API_KEY_VAR}")
    parser.add_argument("-o", "--out", default=f"build/{SERVICE_NAME}.zip", help="the zip to write")
    args = parser.parse_args(argv)
    if not args.grpc and not args.http:
        parser.error("give --grpc, --http or both")
    try:
        key = read_api_key(args.api_key_file)
    except OSError as e:
        parser.error(f"--api-key-file {args.api_key_file} cannot be read: {e.strerror or e}")
    path = write_zip(Path(args.out), args.grpc, args.http, key)
    print(f"wrote {path}; register it with:\n  curl -X POST http://127.0.0.1:9081/services -d "
          f"'{{\"name\": \"{SERVICE_NAME}\", \"file\": \"file://{os.path.abspath(path)}\"}}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
