"""The models over HTTP: `POST /analyze/labelImage` and `POST /analyze/inference` (FastAPI).

Each takes the image as a raw `image/*` body (MegFlow's form), a multipart upload (field
`image`) or JSON `{"image": "<base64>", "k": 5}`; the option (`k`, `threshold`) may also be
a query parameter. The answer is the plugin function's JSON, unchanged; bad input is 400
with the plugin's one line. The bodies are declared in the OpenAPI document by hand
(the handler reads the body itself, to judge its size first), so `/docs` and generated
clients see all three forms. `/docs` serves Swagger UI from the fastapi-offline package,
so it works on a box without internet.
"""
import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.catalog import BY_NAME, FUNCTIONS
from core.errors import InputError, ModelUnavailable, first_line, shown
from core.functions import FunctionSpec, Option as DeclaredOption
from core.model_host import ModelHost
from service.service_metrics import ServiceMetrics

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
RAW_TYPES = ("image/", "application/octet-stream")
# Room for what wraps the image: multipart boundaries and fields, the rest of a JSON object.
WRAPPING_BYTES = 65536
RETRY_SECONDS = "5"
BODY_SECONDS = 30.0  # a 20 MB image needs 160 s at 1 Mbit/s: a camera link slower than that should send smaller frames
# A request's wait for a free model copy: past it, 503 (the copies are overloaded), not a thread held for ever.
COPY_WAIT_SECONDS = 30.0
# A JSON body is one flat object; a few more arrays or objects are allowed for callers' ids, no more:
# this bounds the nesting json.loads recurses into before it starts.
JSON_CONTAINERS = 16
# The nesting pre-check finds strings in two linear passes: escape pairs dropped first (a backslash
# outside a string is invalid JSON anyway), then each string is a quote, no quote, a quote. One
# regex for escaped strings backtracked from every escaped quote of an unclosed string: quadratic.
JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)
JSON_STRING = re.compile(rb'"[^"]*"')
HEADER_SECONDS = 10.0  # from a connection's (or a keep-alive request's) first byte to its last header line
HEADER_BYTES = 64 * 1024  # request line and headers; uvicorn's httptools parser has no limit of its own
# A TLS handshake's bound (asyncio's default, which uvicorn keeps, is 60 s): the head timer above
# starts only once the handshake is done, and --max-connections counts a connection only from then.
HANDSHAKE_SECONDS = 10.0


@dataclass(frozen=True)
class Option:
    """The second argument of a function as HTTP takes it: its name, JSON schema and what it means."""

    name: str
    schema: dict
    description: str
    # The rest of what the plugin's options object takes (model, explain, roi, picture): name -> (schema, meaning).
    extra: dict[str, tuple[dict, str]]
    declared: DeclaredOption  # the declaration's (core.functions.Option)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.declared.keys


# The options object's other keys (core.functions.Option.keys), as HTTP fields and query parameters.
# Defaults that mean "not given", and no examples: Swagger UI's "Try it out" sends what it shows.
EXTRA_FIELDS = {
    "model": ({"type": "string", "default": ""},
              "a model by name, e.g. partB, from kuiperd's uploads or the plugin's models/ (empty: the configured "
              "model)"),
    "explain": ({"type": "boolean", "default": False}, "the answer says which model and version served it"),
    "roi": ({"type": "string", "default": ""},
            "run on this region only: x,y,w,h in pixels of the image sent (e.g. 100,50,640,480), or fractions of "
            "its size (all four at most 1); boxes are still in the whole image's pixels. In a JSON body an array "
            "[x, y, w, h] too"),
    "picture": ({"type": "string"}, "which picture the answer carries"),
}


def http_option(spec: FunctionSpec) -> Option:
    """The declared option (core/catalog.py) and the rest of its options object as query parameters and fields."""
    option = spec.option
    extra = {key: EXTRA_FIELDS[key] for key in option.keys if key != option.name}
    if "picture" in extra:
        schema, meaning = extra["picture"]
        extra["picture"] = ({**schema, "enum": list(option.pictures), "default": option.pictures[0]}, meaning)
    return Option(option.name, option.json_schema(),
                  f"{option.description} (default: {option.default_key} of the config, {option.default})", extra,
                  option)


def summary(spec: FunctionSpec) -> str:
    """The route's one line in OpenAPI: the declaration's summary and the SQL call it answers as."""
    return f"{spec.summary}, as {spec.usage()}"


class ErrorAnswer(BaseModel):
    error: str = Field(description="one line saying what is wrong, the plugin's own for bad input")


class LoadedModel(BaseModel):
    function: str = Field(description="the function it serves")
    name: str = Field(description="the model's name (the configured model: its file's name)")
    version: str = Field(description="its files' modification times")
    loaded_at: str = Field(description="when this version was loaded, ISO 8601 UTC")
    configured: bool = Field(description="the function's configured model (else a model by name)")
    memory_mb: float | None = Field(None, description="a model by name: what the resident memory grew by while "
                                                      "it loaded (models.max_memory_mb)")


class ModelList(BaseModel):
    models: list[LoadedModel]


@dataclass(frozen=True)
class ImageCall:
    """One request's image (bytes, or base64 text as the plugin takes it) and option."""

    image: Any
    option: Any


def create_app(host: ModelHost, max_bytes: int, api_key: str | None = None,
               metrics: ServiceMetrics | None = None, body_seconds: float = BODY_SECONDS) -> FastAPI:
    """The HTTP service over `host`. max_bytes: the image size cap (input.max_bytes); bodies are
    judged against it (plus base64's growth for JSON) before they are read. api_key: when set,
    /analyze/* and /metrics need it in the X-API-Key header. body_seconds: the most a body may
    take to arrive (408 after)."""
    metrics = metrics or ServiceMetrics()
    app = FastAPIOffline(
        title="defect: vision models as a service",
        version="1.0",
        description="The eKuiper `defect` plugin's functions over HTTP: the same models, the same answers, "
                    "the same one-line errors. Send the image as a raw `image/*` body, a multipart upload "
                    "or JSON with base64; the option as a query parameter or in the body.",
        redoc_url=None,
    )
    app.state.body_seconds = body_seconds
    guarded = [Depends(api_key_check(api_key))] if api_key else []

    @app.exception_handler(HTTPException)
    async def one_line_error(request: Request, error: HTTPException) -> JSONResponse:
        name = request.url.path.removeprefix("/analyze/")
        if name in BY_NAME:
            metrics.failed(name, "http", error.status_code)
        return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", shown(request.url.path))  # repr: a CR/LF in it forges no line
        name = request.url.path.removeprefix("/analyze/")
        if name in BY_NAME:
            metrics.failed(name, "http", 500)
        return JSONResponse({"error": f"internal error: {first_line(error)}"}, 500)

    results: dict = {}  # the result types' schemas, by name: OpenAPI's components
    for spec in FUNCTIONS:
        add_function(app, host, spec, max_bytes, metrics, guarded, results)

    @app.post("/analyze/{name}", include_in_schema=False, dependencies=guarded)
    def unknown_function(name: str) -> None:
        raise HTTPException(404, f"unknown function {shown(name)}: use one of {', '.join(BY_NAME)}")

    @app.get("/healthz", summary="200 when every model is loaded; 503 while they load or if one failed",
             responses={503: {"description": "loading, or a model failed (the reason is in functions)"}})
    async def healthz() -> JSONResponse:
        # async: answered on the event loop, never queued behind image requests in the thread pool
        functions = host.status()
        states = set(functions.values())
        status = "ready" if states == {"ready"} else "loading" if "loading" in states else "failed"
        return JSONResponse({"status": status, "functions": functions}, 200 if status == "ready" else 503)

    @app.get("/models", summary="What is loaded: each function's configured model and its models by name, "
             "with versions and load times", dependencies=guarded, response_model=ModelList)
    def loaded_models() -> ModelList:
        return ModelList(models=host.models())

    @app.get("/metrics", summary="Prometheus metrics: calls, errors and latency per function",
             dependencies=guarded, response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    document = app.openapi

    def openapi_with_results() -> dict:
        """FastAPI's document, with the result types as named components (generated clients name them)."""
        if app.openapi_schema is None:
            document().setdefault("components", {}).setdefault("schemas", {}).update(results)
        return app.openapi_schema

    app.openapi = openapi_with_results
    return app


def add_function(app: FastAPI, host: ModelHost, spec: FunctionSpec, max_bytes: int, metrics: ServiceMetrics,
                 guarded: list, results: dict) -> None:
    """`POST /analyze/<name>` for one declared function, documented from its declaration; its result
    types' schemas go into `results` by name."""
    name, option = spec.name, http_option(spec)

    async def read_call(request: Request) -> ImageCall:
        metrics.called(name, "http")
        return await read_image_call(request, option, max_bytes)

    # A sync handler: FastAPI runs it in its thread pool, so concurrent requests
    # each borrow one of the host's model copies and every core works.
    def analyze(call: Annotated[ImageCall, Depends(read_call)]) -> Response:
        started = time.perf_counter()
        try:
            result = host.call(name, call.image, call.option, COPY_WAIT_SECONDS)
        except InputError as e:
            raise HTTPException(400, str(e)) from None
        except ModelUnavailable as e:
            raise HTTPException(503, str(e), headers={"Retry-After": RETRY_SECONDS}) from None
        metrics.served(name, "http", time.perf_counter() - started)
        # json.dumps, as the plugin encodes its reply to kuiperd: the same numbers, keys and order.
        return Response(json.dumps(result), media_type="application/json")

    app.add_api_route(
        f"/analyze/{name}", analyze, methods=["POST"], name=name, summary=summary(spec),
        dependencies=guarded, response_class=Response, openapi_extra=request_declaration(option),
        responses={
            200: {"content": {"application/json": {"schema": spec.result_schema(results)}},
                  "description": f"what the plugin's {name} returns"},
            400: {"model": ErrorAnswer, "description": "bad input: the plugin's one line"},
            401: {"model": ErrorAnswer, "description": "missing or wrong API key (when the service has one)"},
            413: {"model": ErrorAnswer, "description": "body over the size limit (input.max_bytes)"},
            415: {"model": ErrorAnswer, "description": "a body that is no image, multipart or JSON"},
            503: {"model": ErrorAnswer, "description": "the model is loading or failed to load"},
        })


def request_declaration(option: Option) -> dict:
    """The three body forms and the query option, for the OpenAPI document."""
    image_file = {"type": "string", "format": "binary", "description": "JPEG, PNG, BMP, TIFF, WebP or GIF"}
    fields = {key: {**schema, "description": meaning} for key, (schema, meaning) in option.extra.items()}
    return {
        "parameters": [{"name": option.name, "in": "query", "required": False,
                        "schema": option.schema, "description": option.description},
                       *({"name": key, "in": "query", "required": False, "schema": schema, "description": meaning}
                         for key, (schema, meaning) in option.extra.items())],
        "requestBody": {"required": True, "content": {
            "image/*": {"schema": image_file},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {"image": image_file, option.name: {**option.schema, "description": option.description},
                               **fields},
            }},
            "application/json": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {
                    "image": {"type": "string", "description": "the image as base64 (a data: URI too)"},
                    option.name: {**option.schema, "description": option.description},
                    **fields,
                    "id": {"type": "string", "description": "ignored: a caller's id (eKuiper's external "
                                                            "service sends it)"},
                },
            }},
        }},
    }


async def read_image_call(request: Request, option: Option, max_bytes: int) -> ImageCall:
    """The image and option of one request, in any of the three body forms; HTTPException if
    the body is too large (judged from Content-Length before reading it), malformed or of no known type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form = ("raw" if content_type.startswith(RAW_TYPES) else "multipart" if content_type == "multipart/form-data"
            else "json" if content_type == "application/json" else None)
    if form is None:
        # A header value holds no CR/LF (the parser refuses them): only its length needs a bound.
        raise HTTPException(415, f"Content-Type {shown(content_type, str) if content_type else 'missing'}: "
                                 f"send an image/* body, "
                                 f"multipart/form-data with a file field image, or application/json "
                                 f'{{"image": "<base64>"}}')
    # base64 grows 4/3, and senders may wrap lines at 76 columns.
    limit = max_bytes * 4 * 77 // (3 * 76) + WRAPPING_BYTES if form == "json" else \
        max_bytes + (WRAPPING_BYTES if form == "multipart" else 0)
    body = await read_body(request, limit)
    values = query_values(request, option)
    if form == "raw":
        return ImageCall(body, option.declared.from_fields(values))
    if form == "multipart":
        fields = await multipart_fields(request, body, limit, option)
    else:  # off the event loop: 27 MB of JSON is a fraction of a second other requests need not wait
        fields = await asyncio.to_thread(json_fields, body, option)
    unknown = set(fields) - {"image", "id", *option.keys}
    if unknown:
        raise bad_request(f"unknown field {shown(sorted(unknown)[0])}: the fields are image, id, "
                          f"{', '.join(option.keys)}")
    if form == "multipart" and "image" not in fields:  # also a body whose boundary never matches: no part
        raise bad_request("multipart body has no field image: send the image as a file field named image")
    given = {key: fields[key] if fields.get(key) is not None else values.get(key) for key in option.keys}
    # An empty name or region is none given (a form's empty field; Swagger UI sends the defaults).
    given = {key: value for key, value in given.items() if key == option.name or value != ""}
    return ImageCall(fields.get("image"), option.declared.from_fields(given))


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes is over the limit of {limit} "
                                 f"(input.max_bytes and the body form's wrapping)")
    body = bytearray()
    seconds = request.app.state.body_seconds
    try:
        # A sender that stops half-way must not hold a connection (and its buffer) for ever.
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():  # a chunked body has no Content-Length: count as it comes
                body += chunk
                if len(body) > limit:
                    raise HTTPException(413, f"body is over the limit of {limit} bytes "
                                             f"(input.max_bytes and the body form's wrapping)")
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {seconds:g} s ({len(body)} bytes came)") from None
    return bytes(body)


def query_values(request: Request, option: Option) -> dict:
    values = {}
    for key, text in request.query_params.items():
        if key not in option.keys:
            raise bad_request(f"unknown query parameter {shown(key)}: the options are {', '.join(option.keys)}")
        values[key] = field_value(key, text, option)
    return values


def field_value(key: str, text: str, option: Option) -> Any:
    """A field sent as text: the option and explain read as JSON (`option_value`), a name, region or picture
    kept as text (a model named 7 is "7"; the region's text "x,y,w,h" is read by the plugin)."""
    return option_value(text) if key in (option.name, "explain") else text or None


def option_value(text: str) -> Any:
    """An option sent as text (query or form field) as the plugin would get it: a JSON number
    if it reads as one, else the text itself, which the plugin's check then names."""
    if text.strip() == "":
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # deep nesting ([[[...) is no number either, not a 500
        return text


async def multipart_fields(request: Request, body: bytes, limit: int, option: Option) -> dict:
    async def replay() -> dict:  # the body was read (and measured) already
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=2, max_fields=8, max_part_size=limit) as form:
            fields = {}
            for key, value in form.multi_items():
                if hasattr(value, "read"):  # a file
                    fields[key] = await value.read()
                else:  # a text field: the image as base64, or the option
                    fields[key] = value if key == "image" else field_value(key, value, option)
            return fields
    except HTTPException:
        raise
    except Exception as e:
        raise bad_request(f"multipart body cannot be read: {first_line(e)}") from None


def json_fields(body: bytes, option: Option) -> dict:
    """The JSON body's object; HTTPException 400 if it is no JSON, nested deeper than
    JSON_CONTAINERS arrays and objects allow, or not an object. Linear in the body's size."""
    containers = body.count(b"[") + body.count(b"{")  # a real body has a few: its strings need no look
    if containers > JSON_CONTAINERS:
        bare = JSON_STRING.sub(b'""', JSON_ESCAPE.sub(b"", body))  # brackets inside strings are text, not nesting
        containers = bare.count(b"[") + bare.count(b"{")
    if containers > JSON_CONTAINERS:
        raise bad_request(f"JSON body has {containers} arrays and objects, over the {JSON_CONTAINERS} allowed: "
                          f'send one object {{"image": "<base64>", "{option.name}": ...}}')
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise bad_request(f"body is not valid JSON: {first_line(e)}") from None
    if not isinstance(fields, dict):
        raise bad_request(f'JSON body must be an object {{"image": "<base64>", "{option.name}": ...}}, '
                          f"got {type(fields).__name__}")
    return fields


def bad_request(message: str) -> HTTPException:
    return HTTPException(400, message)


def api_key_check(api_key: str) -> Callable[[str | None], Awaitable[None]]:
    """A dependency that refuses requests without the key (declared in OpenAPI, so /docs has "Authorize")."""
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                          description="the service's API key (--api-key-file or DEFECT_API_KEY)")

    # async: FastAPI runs a sync dependency in the image handlers' thread pool, which would queue
    # /metrics (guarded by this check) behind the images again; a compare needs no thread.
    async def check(given: Annotated[str | None, Depends(header)]) -> None:
        # compare_digest: the time taken does not tell how much of a guess was right.
        if not given or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, f"missing or wrong API key ({API_KEY_HEADER} header)")
    return check


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus what it lacks against a client that trickles its head.

    uvicorn times out only the idle gap between keep-alive requests: a client that connects and
    sends nothing, or one header byte a second, holds its connection (and a place under
    --max-connections) for ever, and httptools caps no header size. Here the request line and
    headers must arrive within HEADER_SECONDS of the request's first byte (of the connection, for
    the first one) and fit in HEADER_BYTES (counted per read, so at most one read more); else the
    connection is closed (431 for the size).
    """

    header_seconds = HEADER_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.header_bytes = 0
        self.header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_seconds, self.head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0
        if self.header_timer is None:  # a keep-alive connection's next request
            self.header_timer = self.loop.call_later(self.header_seconds, self.head_too_slow)

    def on_headers_complete(self) -> None:
        self.stop_header_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.header_timer is not None and not self.transport.is_closing():  # still in the head
            self.header_bytes += len(data)
            if self.header_bytes > HEADER_BYTES:
                self.stop_header_timer()
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     b"content-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_header_timer()
        super().connection_lost(exc)

    def stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def head_too_slow(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class GuardedServer(uvicorn.Server):
    """uvicorn's server with each TLS handshake bounded to HANDSHAKE_SECONDS.

    uvicorn creates its listeners without asyncio's ssl_handshake_timeout (60 s by default), so a
    client that opens TCP to the HTTPS port and sends nothing, or half a ClientHello, holds the
    connection for a minute before GuardedHttpProtocol even exists, outside --max-connections.
    Here uvicorn starts with no listener of its own (its lifespan and state as usual) and this
    class creates one per socket given to run(), with the bound. Only for run(sockets=...).
    """

    async def startup(self, sockets: list | None = None) -> None:
        if sockets is None:
            raise ValueError("GuardedServer serves the sockets given to run(sockets=...) only")
        await super().startup(sockets=[])  # lifespan and server state; no listener
        self.started = False  # until the listeners below serve ("ready" waits for it)
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            # As uvicorn's own Server.startup builds each connection's protocol.
            return config.http_protocol_class(config=config, server_state=self.server_state,
                                              app_state=self.lifespan.state, _loop=_loop)
        loop = asyncio.get_running_loop()
        for sock in sockets:
            self.servers.append(await loop.create_server(
                create_protocol, sock=sock, ssl=config.ssl, backlog=config.backlog,
                ssl_handshake_timeout=HANDSHAKE_SECONDS if config.ssl else None))
        self.started = True
