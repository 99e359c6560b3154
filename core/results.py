"""The typed result of each function, and its JSON exactly as the plugin returns it.

A model returns one of these; every front door (the SQL function, HTTP, gRPC, the command lines)
shows `answer(...)` of it: the keys, their order and the omitted fields are the tutorials' JSON.
Each field's JSON name and meaning are declared once here, in its metadata; `json_schema` derives
the schema the HTTP service documents and the tests check the answers against.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def described(description: str, json_name: str | None = None, optional: bool = False, example: Any = None,
              **kwargs: Any) -> Any:
    """A dataclass field with its meaning for the schema.

    Args:
        description: what the field holds, one line.
        json_name: its key in the JSON when that is no Python name ("inference time").
        optional: the function's answer may lack it (only some models have it); the schema does not require it.
        example: a value the OpenAPI document shows.
        kwargs: dataclasses.field's (default=None: a field left None is not in the JSON).
    """
    metadata = {"description": description, "optional": optional}
    if json_name:
        metadata["json"] = json_name
    if example is not None:
        metadata["example"] = example
    return dataclasses.field(metadata=metadata, **kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Label:
    """One class of labelImage's answer."""

    confidence: float = described("the model's confidence, 0 to 1, to 4 decimals")
    label: str = described('"index:name" from the labels file', example="286:Egyptian cat")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Region:
    """One separate defect region: its box and area in pixels of the image sent."""

    x: int = described("left edge")
    y: int = described("top edge")
    w: int = described("width, at least 1")
    h: int = described("height, at least 1")
    area: int = described("the region's own mask pixels (holes and other regions in its box do not count)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inspection:
    """inference's answer. Fields in the JSON's order; those left None are not in the JSON."""

    inference_time: float = described("ms from the decoded frame to the mask", json_name="inference time")
    defect: int = described("separate defect regions")
    defects: list[Region] = described("the regions, top to bottom, then left to right")
    score: float | None = described("image-level anomaly score (only from a model that has one: an anomalib "
                                    "export)", optional=True, default=None)
    anomalous: bool | None = described("the model's verdict (only from a model that has one)", optional=True,
                                       default=None)
    width: int = described("width of the image sent")
    height: int = described("height of the image sent")
    base64: str | None = described('the picture, a base64 JPEG: by default the input at model size beside the mask '
                                   'in white; with "picture": "overlay" the frame with the defects outlined, the '
                                   'anomaly map as a heat map (where the model has one) and the count; left out '
                                   'with "picture": "none"', optional=True, default=None)


def answer(result: Any) -> Any:
    """The JSON value of a result (a list of results too): dataclass fields under their JSON names,
    in declaration order, without the optional ones left None."""
    if isinstance(result, list):
        return [answer(item) for item in result]
    if dataclasses.is_dataclass(result):
        fields = {}
        for field in dataclasses.fields(result):
            value = getattr(result, field.name)
            if value is None and field.default is None:
                continue
            fields[field.metadata.get("json", field.name)] = answer(value)
        return fields
    return result


JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def json_schema(kind: Any, definitions: dict | None = None) -> dict:
    """The JSON schema of a result type (a dataclass above, list[...] of one, or a plain type).

    Args:
        kind: the type.
        definitions: when given, each dataclass's schema is put here under its name and referred to as
            `#/components/schemas/<name>` (OpenAPI's components); else schemas are inlined.

    Raises:
        KeyError: a field type this function does not map (teach JSON_TYPES).
    """
    origin = typing.get_origin(kind)
    if origin is list:
        return {"type": "array", "items": json_schema(typing.get_args(kind)[0], definitions)}
    if origin in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return json_schema(inner, definitions)
    if not dataclasses.is_dataclass(kind):
        return {"type": JSON_TYPES[kind]}
    hints = typing.get_type_hints(kind)
    properties, required = {}, []
    for field in dataclasses.fields(kind):
        name = field.metadata.get("json", field.name)
        properties[name] = {**json_schema(hints[field.name], definitions), "description": field.metadata["description"]}
        if "example" in field.metadata:
            properties[name]["examples"] = [field.metadata["example"]]
        if not field.metadata["optional"]:
            required.append(name)
    schema = {"type": "object", "title": kind.__name__, "description": (kind.__doc__ or kind.__name__).strip(),
              "properties": properties, "required": required, "additionalProperties": False}
    if definitions is None:
        return schema
    definitions[kind.__name__] = schema
    return {"$ref": f"#/components/schemas/{kind.__name__}"}
