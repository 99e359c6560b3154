"""The model service's entry: HTTP (service/http_api.py) and gRPC (service/grpc_api.py) over one ModelHost.

    python service/service.py --host 127.0.0.1 --http-port 8084 --grpc-port 50051

A port given as `any` is one the system picks; the "listening" line names the ports bound.

Only wiring: the plugin's config and environment (settings.load_settings), the models loading
in the background (the HTTP port answers 503 until they are in), an optional API key and TLS
(mutual TLS with --tls-client-ca) for both, and a clean stop on SIGTERM or Ctrl-C.

An address other than loopback is refused (exit 2) unless callers must authenticate (an API key
or a client CA) over TLS, or --insecure says the operator means it, as Redis's protected mode does.
"""
import argparse
import ipaddress
import os
import signal
import socket
import ssl
import sys
import threading
import time
import traceback

# Runnable as a file from any directory: the plugin's modules and `service` are imported from the repo root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run by path, this file's folder is first on sys.path, and its service.py would shadow the package
# of the same name (even with the repo on PYTHONPATH): the repo root goes first, the folder goes.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [ROOT, *(p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, _HERE))]

import uvicorn  # noqa: E402

from core.command_line import OneLineArgumentParser  # noqa: E402
from core.errors import ConfigError, first_line  # noqa: E402
from core.exit_now import exit_now  # noqa: E402
from core.model_host import ModelHost  # noqa: E402
from core.settings import load_settings  # noqa: E402
from service.grpc_messages import API_KEY_VAR, IDLE_SECONDS, MAX_STREAMS, read_api_key  # noqa: E402
from service.http_api import API_KEY_HEADER, BODY_SECONDS, GuardedHttpProtocol, GuardedServer, create_app  # noqa: E402
from service.service_metrics import ServiceMetrics  # noqa: E402

MIN_KEY_BYTES = 32  # e.g. `openssl rand -hex 32` (64 characters); shorter ones are guessable offline
MAX_CONNECTIONS = 256  # HTTP connections at once; beyond, 503
ANY_PORT = "any"  # a free port the system picks (a word: 0 already means "no gRPC" for --grpc-port)
BIND_ATTEMPTS = 5  # a name with two addresses on `any`: the second family's bind may find the port taken


def port_number(text: str) -> int | str:
    """A --*-port value: a number, or ANY_PORT. Raises ValueError otherwise (argparse's one line)."""
    return ANY_PORT if text == ANY_PORT else int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(
        prog="service.py", description="The defect plugin's models over HTTP and gRPC, "
        "with the plugin's config (config.json, DEFECT_CONFIG, LABEL_MODEL, DEFECT_MODEL, ...).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 to face a network: with TLS and an "
                             "API key or --tls-client-ca, else --insecure)")
    parser.add_argument("--http-port", type=port_number, default=8084,
                        help="HTTP port (default 8084; any: a free one, named in the \"listening\" line)")
    parser.add_argument("--grpc-port", type=port_number, default=50051,
                        help="gRPC port (default 50051; 0: no gRPC; any: a free one, named in the \"listening\" line)")
    parser.add_argument("--api-key-file", metavar="FILE",
                        help=f"a file holding the API key callers must send ({API_KEY_HEADER} header, "
                             f"x-api-key gRPC metadata); or set {API_KEY_VAR}")
    parser.add_argument("--tls-cert", metavar="PEM", help="certificate (chain) for HTTPS and gRPC TLS")
    parser.add_argument("--tls-key", metavar="PEM", help="its private key")
    parser.add_argument("--tls-client-ca", metavar="PEM",
                        help="mutual TLS: callers must present a certificate this CA signed (HTTP and gRPC)")
    parser.add_argument("--insecure", action="store_true",
                        help="serve a non-loopback --host without an API key or TLS (a network you trust)")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, metavar="N",
                        help=f"HTTP connections at once, 503 beyond (default {MAX_CONNECTIONS})")
    parser.add_argument("--max-streams", type=int, default=MAX_STREAMS, metavar="N",
                        help=f"gRPC streams at once, RESOURCE_EXHAUSTED beyond (default {MAX_STREAMS})")
    parser.add_argument("--stream-idle-timeout", type=float, default=IDLE_SECONDS, metavar="SECONDS",
                        help=f"a gRPC stream with no message for this long is cancelled (default {IDLE_SECONDS:g})")
    parser.add_argument("--body-timeout", type=float, default=BODY_SECONDS, metavar="SECONDS",
                        help=f"the most an HTTP body may take to arrive, then 408 (default {BODY_SECONDS:g})")
    parser.add_argument("--workers", type=int, default=0,
                        help="model copies per function, each serving one request at a time "
                             "(default: batch.workers; 0: one per core)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    if not 1 <= args.max_connections <= 100_000:
        parser.error(f"--max-connections must be from 1 to 100000, got {args.max_connections}")
    if not 1 <= args.max_streams <= 1000:
        parser.error(f"--max-streams must be from 1 to 1000, got {args.max_streams}")
    if not 0 < args.stream_idle_timeout <= 86400:
        parser.error(f"--stream-idle-timeout must be over 0 and at most 86400 s, got {args.stream_idle_timeout:g}")
    # uvicorn takes a port over 65535 modulo 65536 (and 0 as any port): the URLs printed would be wrong.
    if not (args.http_port == ANY_PORT or 1 <= args.http_port <= 65535):
        parser.error(f"--http-port must be from 1 to 65535 or any, got {args.http_port}")
    if not (args.grpc_port == ANY_PORT or 0 <= args.grpc_port <= 65535):
        parser.error(f"--grpc-port must be from 0 (no gRPC) to 65535 or any, got {args.grpc_port}")
    if not 0 < args.body_timeout <= 3600:
        parser.error(f"--body-timeout must be over 0 and at most 3600 seconds, got {args.body_timeout:g}")
    if args.workers < 0:
        parser.error(f"--workers must be 0 (one per core) or more, got {args.workers}")
    return args


def read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read: {e.strerror or e}") from None


def api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key-file or DEFECT_API_KEY (never an argument: `ps` shows those), or None.
    Raises ConfigError for an unreadable file, an empty one, or a key shorter than MIN_KEY_BYTES."""
    where = args.api_key_file or API_KEY_VAR
    try:
        key = read_api_key(args.api_key_file)
    except OSError as e:
        raise ConfigError(f"--api-key-file {args.api_key_file} cannot be read: {e.strerror or e}") from None
    if (args.api_key_file or os.environ.get(API_KEY_VAR)) and not key:
        raise ConfigError(f"the API key ({where}) is empty")
    if key and len(key.encode()) < MIN_KEY_BYTES:
        raise ConfigError(f"the API key ({where}) has {len(key.encode())} bytes, fewer than the {MIN_KEY_BYTES} "
                          f"required; make one with: openssl rand -hex 32")
    return key


def faces_a_network(host: str) -> bool:
    """True unless every address `host` names is loopback (127/8, ::1): a name resolving elsewhere too faces one."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)}
    except OSError:
        return True  # binding will say what is wrong; no exemption for what cannot be told
    return not all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def network_refusal(host: str, tls: bool, key: bool, client_ca: bool, insecure: bool) -> str | None:
    """Protected mode: the line refusing to serve `host`, or None to serve it.

    Callers on a network must prove who they are (an API key or a client certificate), over TLS so
    the key and the images cannot be read on the way; --insecure says the operator means otherwise.
    Args: the --host value; whether TLS, an API key, a client CA (mutual TLS) and --insecure are given.
    Returns: the one line for stderr (exit 2), or None."""
    if not faces_a_network(host) or (tls and (key or client_ca)) or insecure:
        return None
    return (f"service.py: --host {host} faces a network: give an API key (--api-key-file or {API_KEY_VAR}) "
            f"or --tls-client-ca, with --tls-cert and --tls-key; or add --insecure to serve it without")


def announce_when_loaded(host: ModelHost, server: uvicorn.Server, urls: list[str]) -> None:
    """One line once both models are in (or failed) and HTTP listens: "ready" means calls are served."""
    host.wait_loaded()
    while not server.started:
        time.sleep(0.05)
    status = host.status()
    failed = [state for state in status.values() if state not in ("ready", "loading")]
    if failed:
        print(f"service: not ready: {'; '.join(failed)} (/healthz answers 503 with it)", flush=True)
    else:
        print(f"service: ready ({', '.join(status)}) at {' and '.join(urls)}", flush=True)


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """A listening socket on every address `host` names, as uvicorn binds them itself (a name such
    as localhost: its IPv4 and its IPv6 address), all on one port: `port`, or for 0 the one the
    system gives the first. Raises OSError if one cannot listen."""
    addresses = list(dict.fromkeys((family, address[:2]) for family, _, _, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)))
    for attempt in range(1, BIND_ATTEMPTS + 1):
        sockets: list[socket.socket] = []
        chosen = port
        try:
            for family, address in addresses:
                # IPv6 ones are IPv6-only; with port 0, the others take the port the first one got.
                sockets.append(socket.create_server((address[0], chosen), family=family))
                chosen = sockets[0].getsockname()[1]
            return sockets
        except OSError:
            for bound in sockets:
                bound.close()
            if port != 0 or len(sockets) == 0 or attempt == BIND_ATTEMPTS:
                raise  # only a port the system chose may be taken on the second family: choose again
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        key = api_key(args)
        tls = (read_file(args.tls_cert, "--tls-cert"), read_file(args.tls_key, "--tls-key")) if args.tls_cert else None
        client_ca = read_file(args.tls_client_ca, "--tls-client-ca") if args.tls_client_ca else None
    except ConfigError as e:
        print(f"service.py: {e}", file=sys.stderr)
        return 2
    refusal = network_refusal(args.host, bool(tls), bool(key), bool(client_ca), args.insecure)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2

    host = ModelHost(settings, args.workers)
    # SIGTERM ends the process like Ctrl-C: uvicorn stops gracefully and re-raises the signal
    # after, which lands here as SystemExit, so gRPC is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

    scheme = "https" if tls else "http"
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    http_port, grpc_port = (0 if port == ANY_PORT else port for port in (args.http_port, args.grpc_port))
    metrics = ServiceMetrics()  # one registry: /metrics counts HTTP and gRPC calls
    metrics.watch_copies(host)
    # Both ports are bound before any model loads and before "listening" is printed: a port in use
    # is one line and exit 2, not uvicorn's ERROR line and exit 3 after a false "listening" line.
    try:
        http_sockets = listening_sockets(args.host, http_port)
    except OSError as e:
        print(f"service.py: HTTP cannot listen on {shown_host}:{http_port}: {e.strerror or first_line(e)}",
              file=sys.stderr)
        return 2
    # The port bound, which `any` (0) leaves to the system: the URLs below name it.
    urls = [f"{scheme}://{shown_host}:{http_sockets[0].getsockname()[1]} (docs: /docs)"]
    grpc_server = None
    if args.grpc_port:
        from service.grpc_api import build_grpc_server  # gRPC's modules load only when it is served
        try:
            grpc_server, grpc_port = build_grpc_server(host, f"{shown_host}:{grpc_port}", key, tls, metrics,
                                                       client_ca, args.max_streams, args.stream_idle_timeout)
        except RuntimeError as e:  # grpcio's answer to a port in use or an address it cannot bind
            print(f"service.py: gRPC cannot listen on {shown_host}:{grpc_port}: {first_line(e)}",
                  file=sys.stderr)
            return 2
        grpc_server.start()
        urls.append(f"grpc{'s' if tls else ''}://{shown_host}:{grpc_port}")
    host.start_loading()  # only now: a port in use above ends the process before any model load begins
    print(f"service: listening on {' and '.join(urls)}; loading the models", flush=True)
    app = create_app(host, settings["input"]["max_bytes"], key, metrics, args.body_timeout)
    # No access log: a request line is the caller's text (http_api logs what it must with errors.shown).
    # limit_concurrency: connections (and requests) at once, 503 beyond; GuardedHttpProtocol drops
    # a client that trickles its request head.
    # GuardedServer: TLS handshakes bounded (http_api.HANDSHAKE_SECONDS).
    server = GuardedServer(uvicorn.Config(
        app, host=args.host, port=http_port, log_level="warning", access_log=False, http=GuardedHttpProtocol,
        limit_concurrency=args.max_connections, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
        ssl_ca_certs=args.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED if args.tls_client_ca else ssl.CERT_NONE,
        timeout_graceful_shutdown=5))
    threading.Thread(target=announce_when_loaded, args=(host, server, urls), daemon=True).start()
    try:
        server.run(sockets=http_sockets)
    except KeyboardInterrupt:
        pass
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()  # calls in flight finish, as HTTP's (timeout_graceful_shutdown)
        print("service: stopped", flush=True)
    return 0 if server.started else 1


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as e:  # SIGTERM's handler, and a bad command line (already printed)
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except KeyboardInterrupt:  # Ctrl-C outside uvicorn's own handling (before it runs)
        code = 130
    except BaseException:  # a bug, or a library's error such as a TLS key that fits no certificate
        traceback.print_exc()
        code = 1
    exit_now(code)  # not Python's shutdown: a model may still be loading in a thread (exit_now.py)
