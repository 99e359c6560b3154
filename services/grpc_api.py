"""The gRPC service (services/defect.proto) over one ModelHost: unary and streaming calls, health, reflection.

    server = build_grpc_server(host, "127.0.0.1:50051", api_key=None, tls=None)
    server.start()

Unary calls answer with the plugin function's answer, or INVALID_ARGUMENT with the plugin's one
line for bad input, UNAVAILABLE while a model loads or after it failed to. A stream serves its
frames on every model copy at once and answers them in the order they came, each with its id;
a frame that cannot be served gets a result with `error` set and the stream goes on.
"""
import collections
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from errors import InputError, ModelUnavailable, first_line
from services import defect_pb2, defect_pb2_grpc
from services.grpc_messages import (
    API_KEY_METADATA,
    RPCS,
    Rpc,
    error_message,
    image_value,
    option_of,
    result_message,
)
from services.model_host import ModelHost
from services.service_metrics import ServiceMetrics

SERVICE_NAME = defect_pb2.DESCRIPTOR.services_by_name["Defect"].full_name  # "defect.v1.Defect"
# gRPC's default cap on a received message is 4 MiB; input.max_bytes (20 MB) is the one that counts.
# A base64 image is 4/3 of its bytes; the rest of a request is a few bytes.
MESSAGE_SLACK = 64 * 1024


class DefectService(defect_pb2_grpc.DefectServicer):
    def __init__(self, host: ModelHost, copies: int, metrics: ServiceMetrics):
        self.host = host
        self.metrics = metrics
        # Stream frames run here, on as many threads as the host has model copies; each stream keeps
        # up to two frames per copy in flight, so one stream alone keeps every core busy.
        self.frames = futures.ThreadPoolExecutor(copies, thread_name_prefix="grpc-frame")
        self.in_flight = 2 * copies

    def LabelImage(self, request, context):
        return self.unary(RPCS["labelImage"], request, context)

    def Inference(self, request, context):
        return self.unary(RPCS["inference"], request, context)

    def LabelImageStream(self, requests, context):
        return self.stream(RPCS["labelImage"], requests, context)

    def InferenceStream(self, requests, context):
        return self.stream(RPCS["inference"], requests, context)

    def serve(self, rpc: Rpc, request) -> object:
        """The result message for one request (each a call in the metrics, a stream's frames too);
        raises InputError, ModelUnavailable or a bug's exception, counted by its status code."""
        self.metrics.called(rpc.function, "grpc")
        started = time.perf_counter()
        try:
            answer = self.host.call(rpc.function, image_value(request.image), option_of(rpc, request))
        except Exception as e:
            self.metrics.failed(rpc.function, "grpc", status_of(e).name)
            raise
        self.metrics.served(rpc.function, "grpc", time.perf_counter() - started)
        return result_message(rpc, answer, request.id)

    def unary(self, rpc: Rpc, request, context):
        try:
            return self.serve(rpc, request)
        except Exception as e:  # a bug, not input, is INTERNAL: the call fails, the server goes on
            context.abort(status_of(e), str(e) if isinstance(e, (InputError, ModelUnavailable))
                          else f"internal error: {first_line(e)}")

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

        def refuse(request_or_requests, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong API key ({API_KEY_METADATA} metadata)")

        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def mark_serving_when_loaded(host: ModelHost, health_servicer: health.HealthServicer) -> None:
    host.wait_loaded()
    status = health_pb2.HealthCheckResponse.SERVING if host.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, status)


def build_grpc_server(host: ModelHost, address: str, api_key: str | None = None,
                      tls: tuple[bytes, bytes] | None = None, metrics: ServiceMetrics | None = None) -> grpc.Server:
    """The gRPC server for host's models on address ("127.0.0.1:50051"), not yet started.

    api_key: when set, Defect calls need it as `x-api-key` metadata. tls: (certificate chain PEM,
    private key PEM) for TLS. metrics: where calls are counted (the HTTP app's, so /metrics shows
    both transports). The standard health service answers NOT_SERVING until both models
    are loaded, then SERVING (NOT_SERVING if one failed); server reflection lists every service.
    """
    functions = host.functions.values()
    copies = max(function.workers for function in functions)
    max_bytes = max(function.settings["input"]["max_bytes"] for function in functions)
    message_cap = max_bytes * 4 // 3 + MESSAGE_SLACK
    server = grpc.server(
        # Unary calls run on these threads and wait for a free model copy there: more threads than
        # copies keep every copy busy while others wait, and leave room for long-lived streams.
        futures.ThreadPoolExecutor(max_workers=max(16, 4 * copies), thread_name_prefix="grpc-call"),
        interceptors=[ApiKeyCheck(api_key)] if api_key else None,
        options=[("grpc.max_receive_message_length", message_cap), ("grpc.max_send_message_length", message_cap)])
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
        server.add_secure_port(address, grpc.ssl_server_credentials([(private_key, certificate_chain)]))
    else:
        server.add_insecure_port(address)
    return server
