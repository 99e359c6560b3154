"""The gRPC service (service/defect.proto) over one ModelHost: unary and streaming calls, health, reflection.

    server, port = build_grpc_server(host, "127.0.0.1:50051", api_key=None, tls=None)  # port 0: any free one
    server.start()

Unary calls answer with the plugin function's answer, or INVALID_ARGUMENT with the plugin's one
line for bad input, UNAVAILABLE while a model loads or after it failed to. A stream serves its
frames on every model copy at once and answers them in the order they came, each with its id;
a frame that cannot be served gets a result with `error` set and the stream goes on.

Bounded against callers that hold what they open: at most `max_streams` Defect streams and a few
unauthenticated ones (reflection, health Watch) at once, and a few unary calls per model copy,
each class on threads of its own in the pool, so a health Check always finds a thread; beyond a
bound the call is RESOURCE_EXHAUSTED at once. A stream that sends nothing for `idle_seconds` is
cancelled. A unary call waits for a free model copy only until shortly before its deadline
(UNAVAILABLE then). SO_REUSEPORT is off: a second server cannot bind the same port.
"""
import collections
import contextlib
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.errors import InputError, ModelUnavailable, first_line
from core.model_host import ModelHost
from service import defect_pb2, defect_pb2_grpc
from service.grpc_messages import (
    API_KEY_METADATA,
    IDLE_SECONDS,
    MAX_STREAMS,
    RPCS,
    Rpc,
    error_message,
    image_value,
    option_of,
    result_message,
)
from service.service_metrics import ServiceMetrics

SERVICE_NAME = defect_pb2.DESCRIPTOR.services_by_name["Defect"].full_name  # "defect.v1.Defect"
# gRPC's default cap on a received message is 4 MiB; input.max_bytes (20 MB) is the one that counts.
# A base64 image is 4/3 of its bytes; the rest of a request is a few bytes.
MESSAGE_SLACK = 64 * 1024
OPEN_STREAMS = 4  # reflection and health Watch streams at once: no key guards them
UNARY_PER_COPY = 4  # unary calls at once per model copy: the rest of them wait for a copy
HEALTH_THREADS = 4  # threads no bounded class can take: health Check always has one
COPY_WAIT_SECONDS = 30.0  # a unary call without a deadline waits at most this long for a model copy
# A connection's TLS (or plain HTTP/2 preface) handshake: gRPC's default lets one that sends nothing
# hold its socket for 120 s; the HTTP side (http_api.HANDSHAKE_SECONDS) allows the same 10 s.
HANDSHAKE_MS = 10_000


class DefectService(defect_pb2_grpc.DefectServicer):
    """The Defect service: each declared function's unary and stream methods (named by RPCS, set
    below the class) over one ModelHost."""

    def __init__(self, host: ModelHost, copies: int, metrics: ServiceMetrics):
        self.host = host
        self.metrics = metrics
        # Stream frames run here, on as many threads as the host has model copies; each stream keeps
        # up to two frames per copy in flight, so one stream alone keeps every core busy.
        self.frames = futures.ThreadPoolExecutor(copies, thread_name_prefix="grpc-frame")
        self.in_flight = 2 * copies

    def serve(self, rpc: Rpc, request, wait: float | None = None) -> object:
        """The result message for one request (each a call in the metrics, a stream's frames too);
        raises InputError, ModelUnavailable or a bug's exception, counted by its status code.
        wait: the most seconds to wait for a free model copy (None: as long as it takes)."""
        self.metrics.called(rpc.function, "grpc")
        started = time.perf_counter()
        try:
            answer = self.host.call(rpc.function, image_value(request.image), option_of(rpc, request), wait)
        except Exception as e:
            self.metrics.failed(rpc.function, "grpc", status_of(e).name)
            raise
        self.metrics.served(rpc.function, "grpc", time.perf_counter() - started)
        return result_message(rpc, answer, request.id)

    def unary(self, rpc: Rpc, request, context):
        # The wait for a free copy ends a little before the caller's deadline, so the caller hears
        # UNAVAILABLE ("busy, try again") rather than its own DEADLINE_EXCEEDED.
        remaining = context.time_remaining()
        wait = min(COPY_WAIT_SECONDS, remaining - min(1.0, remaining / 5))
        try:
            return self.serve(rpc, request, wait)
        except Exception as e:  # a bug, not input, is INTERNAL: the call fails, the server goes on
            context.abort(status_of(e), str(e) if isinstance(e, (InputError, ModelUnavailable))
                          else f"internal error: {first_line(e)}")

    def ListModels(self, request, context):
        return defect_pb2.ModelList(models=[defect_pb2.LoadedModel(**entry) for entry in self.host.models()])

    def serve_item(self, rpc: Rpc, request) -> object:
        """A stream's result for one frame: never raises, an error goes into the result."""
        try:
            return self.serve(rpc, request)
        except (InputError, ModelUnavailable) as e:
            return error_message(rpc, str(e), request.id)
        except Exception as e:
            return error_message(rpc, f"internal error: {first_line(e)}", request.id)

    def stream(self, rpc: Rpc, requests: Iterator, context) -> Iterator:
        # A reader thread takes frames as they come and hands them to the frame pool; this
        # generator answers them in arrival order as soon as each is done, so a live camera's
        # results are not held back waiting for later frames.
        queued: collections.deque = collections.deque()
        ready = threading.Condition()
        slots = threading.Semaphore(self.in_flight)
        done_reading = []

        def read() -> None:
            try:
                for request in requests:
                    while not slots.acquire(timeout=0.5):
                        if not context.is_active():
                            return
                    with ready:
                        queued.append(self.frames.submit(self.serve_item, rpc, request))
                        ready.notify()
            except Exception:  # the caller cancelled or the connection broke: nothing left to answer
                pass
            finally:
                with ready:
                    done_reading.append(True)
                    ready.notify()

        threading.Thread(target=read, name=f"grpc-{rpc.stream}-reader", daemon=True).start()
        while True:
            with ready:
                ready.wait_for(lambda: queued or done_reading)
                if not queued:
                    return
                future = queued.popleft()
            result = future.result()
            slots.release()
            yield result


def _methods(rpc: Rpc) -> tuple[Callable, Callable]:
    def unary(self: DefectService, request, context):
        return self.unary(rpc, request, context)

    def stream(self: DefectService, requests, context):
        return self.stream(rpc, requests, context)
    return unary, stream


for _rpc in RPCS.values():  # the generated servicer looks its methods up by these names
    _unary, _stream = _methods(_rpc)
    setattr(DefectService, _rpc.unary, _unary)
    setattr(DefectService, _rpc.stream, _stream)
    setattr(DefectService, _rpc.with_options, _unary)  # option_of reads whichever request it gets


def status_of(error: Exception) -> grpc.StatusCode:
    if isinstance(error, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, ModelUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


class ApiKeyCheck(grpc.ServerInterceptor):
    """Refuses the Defect service's calls without the right `x-api-key` metadata (UNAUTHENTICATED).
    Health checks and reflection stay open: they tell nothing about the images served."""

    def __init__(self, api_key: str):
        self.api_key = api_key.encode()

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler
        given = dict(handler_call_details.invocation_metadata or ()).get(API_KEY_METADATA, "")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if isinstance(given, str) and given and secrets.compare_digest(given.encode(), self.api_key):
            return handler

        return refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                       f"missing or wrong API key ({API_KEY_METADATA} metadata)")


def mark_serving_when_loaded(host: ModelHost, health_servicer: health.HealthServicer) -> None:
    host.wait_loaded()
    status = health_pb2.HealthCheckResponse.SERVING if host.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, status)


class Admission(grpc.ServerInterceptor):
    """Bounds the calls each class may hold at once, refusing the rest with RESOURCE_EXHAUSTED, and
    cancels a request stream whose caller sends nothing for `idle_seconds` (a health Watch, which
    has no request stream, after `idle_seconds` in all).

    Classes: "stream" (the Defect streams), "open" (every other streaming call: reflection, health
    Watch), "unary" (the Defect unary calls). Health Check is in none: it answers from memory at
    once. Interceptors run on gRPC's polling thread, so a refusal costs no wait for a pool thread.
    """

    def __init__(self, limits: dict[str, int], idle_seconds: float):
        self.limits = limits
        self.active = dict.fromkeys(limits, 0)
        self.lock = threading.Lock()
        self.idle_seconds = idle_seconds
        self.waiting: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # IdleLimited -> since when
        threading.Thread(target=self.watch_idle, name="grpc-idle-watch", daemon=True).start()

    def group(self, method: str, handler: grpc.RpcMethodHandler) -> str | None:
        streaming = handler.request_streaming or handler.response_streaming
        if method.startswith(f"/{SERVICE_NAME}/"):
            return "stream" if streaming else "unary"
        return "open" if streaming else None

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        group = self.group(handler_call_details.method, handler)
        if group is None:
            return handler
        with self.lock:
            admitted = self.active[group] < self.limits[group]
            if admitted:
                self.active[group] += 1
        if not admitted:
            return refusal(handler, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"the service holds {self.limits[group]} {GROUP_NAMES[group]} at once, its bound; "
                           f"try again when one ends")
        return self.bounded(handler, group)

    def bounded(self, handler: grpc.RpcMethodHandler, group: str) -> grpc.RpcMethodHandler:
        """handler, releasing its place when its call ends; its request stream idle-limited."""
        released = threading.Event()

        def release() -> None:
            with self.lock:
                if not released.is_set():
                    released.set()
                    self.active[group] -= 1

        def wrap(behavior: Callable) -> Callable:
            def run(request_or_iterator, context):
                context.add_callback(release)  # a cancelled call too
                if handler.request_streaming:
                    request_or_iterator = IdleLimited(request_or_iterator, context, self.waiting)
                elif group == "open":
                    # A health Watch: no key guards it and its caller sends nothing after the request,
                    # so no idle time ever resets; its whole life is bounded instead (watchers
                    # reconnect), else a few held open keep every other watcher out for ever.
                    lifetime = IdleLimited(iter(()), context, self.waiting)
                    self.waiting[lifetime] = time.monotonic()
                try:
                    result = behavior(request_or_iterator, context)
                    if handler.response_streaming:
                        yield from result
                    else:
                        return result
                finally:
                    release()
            if handler.response_streaming:
                return run

            def run_unary(request_or_iterator, context):  # not a generator: returns the answer
                return next_result(run(request_or_iterator, context))
            return run_unary

        kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
                 (False, True): grpc.unary_stream_rpc_method_handler,
                 (True, False): grpc.stream_unary_rpc_method_handler,
                 (True, True): grpc.stream_stream_rpc_method_handler}
        kind = kinds[(handler.request_streaming, handler.response_streaming)]
        behavior = (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)
        return kind(wrap(behavior), request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)

    def watch_idle(self) -> None:
        while True:
            time.sleep(min(1.0, self.idle_seconds / 4))
            now = time.monotonic()
            for stream, since in list(self.waiting.items()):
                if since is not None and now - since > self.idle_seconds:
                    self.waiting[stream] = None
                    stream.context.cancel()  # wakes the thread waiting for its next message


GROUP_NAMES = {"stream": "streams", "open": "reflection and health-watch streams", "unary": "unary calls"}


def next_result(generator: Iterator) -> object:
    """The return value of a generator that yields nothing (Admission's wrapper of a unary call)."""
    try:
        next(generator)
    except StopIteration as end:
        return end.value
    raise RuntimeError("a unary handler yielded")


class IdleLimited:
    """A call's request iterator that Admission.watch_idle cancels when no message comes in time."""

    def __init__(self, requests: Iterator, context: grpc.ServicerContext, waiting: weakref.WeakKeyDictionary):
        self.requests = requests
        self.context = context
        self.waiting = waiting

    def __iter__(self) -> "IdleLimited":
        return self

    def __next__(self) -> object:
        self.waiting[self] = time.monotonic()
        try:
            return next(self.requests)
        finally:
            with contextlib.suppress(KeyError):
                self.waiting[self] = None


def refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of handler's kind that ends every call with code and details."""
    def refuse(request_or_requests, context):
        context.abort(code, details)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def build_grpc_server(host: ModelHost, address: str, api_key: str | None = None,
                      tls: tuple[bytes, bytes] | None = None, metrics: ServiceMetrics | None = None,
                      client_ca: bytes | None = None, max_streams: int = MAX_STREAMS,
                      idle_seconds: float = IDLE_SECONDS) -> tuple[grpc.Server, int]:
    """The gRPC server for host's models on address ("127.0.0.1:50051"), not yet started, and the
    port it bound (the one address names, or the free one the system picked for port 0).

    api_key: when set, Defect calls need it as `x-api-key` metadata. tls: (certificate chain PEM,
    private key PEM) for TLS. client_ca: PEM of the CA whose certificates callers must present
    (mutual TLS; needs tls). metrics: where calls are counted (the HTTP app's, so /metrics shows
    both transports). max_streams: Defect streams at once; idle_seconds: a stream's most time
    without a message from its caller. The standard health service answers NOT_SERVING until both
    models are loaded, then SERVING (NOT_SERVING if one failed); server reflection lists every service.
    A connection must finish its handshake within HANDSHAKE_MS.
    Raises RuntimeError when the address cannot be bound (in use: SO_REUSEPORT is off).
    """
    functions = host.functions.values()
    copies = max(function.workers for function in functions)
    max_bytes = max(function.settings["input"]["max_bytes"] for function in functions)
    message_cap = max_bytes * 4 // 3 + MESSAGE_SLACK
    limits = {"stream": max_streams, "open": OPEN_STREAMS, "unary": UNARY_PER_COPY * copies}
    threads = sum(limits.values()) + HEALTH_THREADS
    interceptors = [Admission(limits, idle_seconds)] + ([ApiKeyCheck(api_key)] if api_key else [])
    server = grpc.server(
        # Every bounded class fits in the pool with HEALTH_THREADS to spare, so nothing a caller
        # holds open queues a health check behind it. maximum_concurrent_rpcs: the last bound, on
        # calls queued for a thread (refusals and health checks in a flood).
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc-call"),
        interceptors=interceptors, maximum_concurrent_rpcs=4 * threads,
        options=[("grpc.max_receive_message_length", message_cap), ("grpc.max_send_message_length", message_cap),
                 ("grpc.so_reuseport", 0), ("grpc.server_handshake_timeout_ms", HANDSHAKE_MS)])
    defect_pb2_grpc.add_DefectServicer_to_server(DefectService(host, copies, metrics or ServiceMetrics()), server)

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    threading.Thread(target=mark_serving_when_loaded, args=(host, health_servicer),
                     name="grpc-health", daemon=True).start()

    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    if tls:
        certificate_chain, private_key = tls
        port = server.add_secure_port(address, grpc.ssl_server_credentials(
            [(private_key, certificate_chain)], root_certificates=client_ca, require_client_auth=client_ca is not None))
    else:
        port = server.add_insecure_port(address)
    return server, port
