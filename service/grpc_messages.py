"""The plugin's answers as defect.proto messages and back, for the gRPC server and its clients.

A result message holds exactly what the plugin function returns; `answer_of` turns it back
into that JSON (the proto's JSON names are the plugin's keys), so a gRPC caller and a rule
see the same thing.
"""
import os
import re
import typing
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from core.catalog import FUNCTIONS
from core.functions import FunctionSpec
from service import defect_pb2

API_KEY_METADATA = "x-api-key"  # the gRPC metadata key that carries the service's API key
API_KEY_VAR = "DEFECT_API_KEY"  # the variable the service, its client and ekuiper_service.py read the key from
# The server's defaults for its streams (here, so service.py names them without loading grpc).
MAX_STREAMS = 32  # Defect streams at once (each holds a thread of the call pool while open)
IDLE_SECONDS = 60.0  # a stream with no message from its caller for this long is cancelled
EXPLAINED = ("model", "version")  # what a result holds only when its request asked to explain


@dataclass(frozen=True)
class Rpc:
    """One declared function over gRPC: its request and result messages and its option field.

    Derived from the declaration (core/catalog.py): `labelImage` is served by LabelImage and
    LabelImageStream, with LabelImageRequest and LabelImageResult, and by LabelImageWithOptions with
    LabelImageWithOptionsRequest (the SQL options object's other keys); defect.proto must have them
    (a function declared without them fails here, at import, and in the tests).
    """

    spec: FunctionSpec
    unary: str  # the service's method names
    stream: str
    with_options: str
    request: type[Message]
    options_request: type[Message]
    result: type[Message]
    # For a function that answers a list (labelImage): the result message's repeated field holding
    # it; None for one that answers an object. Found once, from the proto, when RPCS is built.
    list_field: str | None

    @property
    def function(self) -> str:
        """The declared function's name, as ModelHost.call takes it."""
        return self.spec.name

    @property
    def option(self) -> str:
        """The request field with the function's second SQL argument."""
        return self.spec.option.name



def rpc_of(spec: FunctionSpec) -> Rpc:
    """The declared function's RPC, by defect.proto's naming rule.

    Raises:
        AttributeError: defect.proto lacks the function's request or result message.
    """
    base = spec.name[0].upper() + spec.name[1:]
    result = getattr(defect_pb2, f"{base}Result")
    list_field = None
    if typing.get_origin(spec.result) is list:
        (list_field,) = [f.name for f in result.DESCRIPTOR.fields if f.name not in ("id", "error", *EXPLAINED)]
    return Rpc(spec, base, f"{base}Stream", f"{base}WithOptions", getattr(defect_pb2, f"{base}Request"),
               getattr(defect_pb2, f"{base}WithOptionsRequest"), result, list_field)


RPCS = {spec.name: rpc_of(spec) for spec in FUNCTIONS}
BY_RESULT = {rpc.result: rpc for rpc in RPCS.values()}  # a result message's RPC, for answer_of

# eKuiper copies a base64 string field's text into a `bytes` field as it is, so the image field
# also takes base64 text (or a data URI). An encoded image is never all base64 letters: JPEG,
# PNG, GIF, WebP, TIFF and BMP headers hold bytes outside them.
# No leading \s* here: beside the class's own \s it backtracks quadratically (40 kB of spaces and
# one other byte took 6 s, holding the GIL); image_value strips leading white space first instead.
BASE64_TEXT = re.compile(rb"(data:[\w.+-]*/[\w.+-]*(;[\w=.+-]*)*,)?[A-Za-z0-9+/=_\-\s]+")
WHITESPACE = (b" ", b"\t", b"\r", b"\n")


def read_api_key(path: str | None) -> str | None:
    """The API key from the file at path, else from DEFECT_API_KEY (stripped; None if neither has
    one). Never a command-line argument: `ps` shows those. Raises OSError if the file cannot be read."""
    if path:
        with open(path, "rb") as f:
            return f.read().decode().strip() or None
    return os.environ.get(API_KEY_VAR, "").strip() or None


def image_value(data: bytes) -> bytes | str:
    """The request's image as ModelHost.call takes it: the bytes, or their text if they are base64.

    Letters-only bytes of a length no base64 text has (4n+1, e.g. b"hello") stay bytes, so they
    are answered as what they are: not an image."""
    match = BASE64_TEXT.fullmatch(data.lstrip() or data)  # all white space: matched by the class alone
    if match is None:
        return data
    letters = len(data) - len(match.group(1) or b"") - sum(data.count(space) for space in WHITESPACE)
    return data.decode("ascii") if match.group(1) or letters % 4 != 1 else data


def option_of(rpc: Rpc, request: Message) -> Any:
    """The function's second argument from the request: its k or threshold (None when unset: the config's
    default), or the options object when it names a model, a region, a picture or asks to explain."""
    options = rpc.spec.option
    fields = request.DESCRIPTOR.fields_by_name
    given = {key: getattr(request, key) or None for key in options.keys if key != rpc.option and key in fields}
    given[rpc.option] = getattr(request, rpc.option) if request.HasField(rpc.option) else None
    return options.from_fields(given)


def result_message(rpc: Rpc, answer: Any, request_id: str) -> Message:
    """The plugin's answer (a function's JSON) as the rpc's result message.

    json_format maps the plugin's keys ("inference time", ...) to fields by their JSON names,
    and refuses a key the proto lacks, so a new key in the plugin's answer fails a test here."""
    listed = rpc.list_field and isinstance(answer, list)  # not a list: explained ({"labels", "model", "version"})
    result = json_format.ParseDict({rpc.list_field: answer} if listed else answer, rpc.result())
    result.id = request_id
    return result


def error_message(rpc: Rpc, line: str, request_id: str) -> Message:
    """A stream's result for a frame that could not be served."""
    return rpc.result(id=request_id, error=line)


def answer_of(result: Message) -> Any:
    """The plugin's JSON for a result message (without its id and error)."""
    rpc = BY_RESULT[type(result)]
    answer = json_format.MessageToDict(result, always_print_fields_with_no_presence=True)
    answer.pop("id", None)
    answer.pop("error", None)
    if answer.get("model"):  # explained: as the plugin answers with explain
        return answer
    for key in EXPLAINED:
        answer.pop(key, None)
    return answer[rpc.list_field] if rpc.list_field else answer
