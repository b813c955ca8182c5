"""Requests and responses of the HTTP edge in protobuf's canonical JSON mapping.

A request message is made from three places, as AIP-127 transcoding says:
the fields in the path template, the body (the whole request for `body:
"*"`, one field for `body: "schedule"`), and for the rest query parameters
(`?org_id=acme&states=JOB_STATE_RUNNING&page_size=50`). Whatever cannot be
read is an InvalidArgumentError naming the field, answered like any other
validation error. Errors go out as the JSON of the same google.rpc.Status
the gRPC edge sends (`zbrain.status.status_message`), with the HTTP status
of its code's standard mapping (google/rpc/code.proto).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from zbrain.errors import Code, FieldViolation, InvalidArgumentError, ZBrainError
from zbrain.status import status_message

from .routes import Route

HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
"""The HTTP status of each canonical code, as google/rpc/code.proto maps them."""

_MAP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[([^\]]*)\]$")  # labels[team]
_PARSE_STEP = re.compile(r"Failed to parse (\w+) field")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_WELL_KNOWN_PREFIX = "google.protobuf."


def to_json(message: Message) -> str:
    """The canonical JSON of a message (lowerCamelCase names, enums by name,
    64-bit integers as strings, fields at their default value left out)."""
    return json_format.MessageToJson(message, indent=None)


def error_json(error: ZBrainError) -> str:
    """The google.rpc.Status of an error as JSON: {"code", "message", "details"}."""
    return to_json(status_message(error))


def request_message(
    route: Route,
    path_fields: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: bytes,
    aliases: Mapping[str, str] | None = None,
) -> Message:
    """The request message of `route` made from its path, query and body.

    `aliases` lets a route take short query names for fields (the streams'
    `from` for `after_sequence`)."""
    message_class = message_factory.GetMessageClass(route.method.input_type)
    message = message_class()
    if route.body:
        target = message if route.body == "*" else getattr(message, route.body)
        _parse_body(body, target, "" if route.body == "*" else route.body)
    elif body.strip():
        raise InvalidArgumentError(
            f"{route.http_method} {route.template} takes no body; pass fields as query parameters",
            violations=[FieldViolation("body", "must be empty on this route")],
        )
    given: dict[str, Any] = {}
    if route.body != "*":
        for name, value in query:
            field = (aliases or {}).get(name, name)
            _put(given, message.DESCRIPTOR, field, value, name)
    elif any(True for _ in query):
        raise InvalidArgumentError(
            f"{route.http_method} {route.template} takes its fields in the JSON body",
            violations=[FieldViolation("query", "must be empty on this route")],
        )
    for field, value in path_fields.items():
        given.pop(field.split(".")[0], None)  # the path wins over a query parameter
        _put(given, message.DESCRIPTOR, field, value, field)
    if given:
        from_url = message_class()
        try:
            json_format.ParseDict(given, from_url)
        except json_format.ParseError as exc:
            raise _parse_error(exc, "") from exc
        message.MergeFrom(from_url)
    return message


def _parse_body(body: bytes, target: Message, prefix: str) -> None:
    if not body.strip():
        return
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(
            "the body is not JSON",
            violations=[FieldViolation(prefix or "body", f"is not valid JSON: {exc}")],
        ) from exc
    if not isinstance(document, dict):
        raise InvalidArgumentError(
            "the body must be a JSON object",
            violations=[FieldViolation(prefix or "body", "must be a JSON object")],
        )
    try:
        json_format.ParseDict(document, target)
    except json_format.ParseError as exc:
        raise _parse_error(exc, prefix) from exc


def _parse_error(error: json_format.ParseError, prefix: str) -> InvalidArgumentError:
    """The field json_format could not read, named as validation names fields
    (snake_case, dotted), with its complaint."""
    text = str(error)
    steps = _PARSE_STEP.findall(text)
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        steps.append(unknown.group(1))
    path = ".".join(_CAMEL.sub(r"_\1", step).lower() for step in steps)
    field = ".".join(part for part in (prefix, path) if part) or "body"
    reason = text.split("\n")[0].rsplit(" field: ", 1)[-1].rstrip(".")
    return InvalidArgumentError("invalid request", violations=[FieldViolation(field, reason)])


def _put(given: dict[str, Any], descriptor: Any, path: str, value: str, parameter: str) -> None:
    """Set `path` ("page_size", "job.org_id", "labels[team]") of the dict
    json_format will read, converting what JSON would type (booleans) and
    collecting repeated fields."""
    names = path.split(".")
    node = given
    for depth, name in enumerate(names):
        key = _MAP_KEY.match(name)
        field = _field(descriptor, key.group(1) if key else name)
        if field is None:
            raise InvalidArgumentError(
                f"unknown query parameter {parameter!r}",
                violations=[FieldViolation(parameter, "is not a field of this request")],
            )
        last = depth == len(names) - 1
        if key is not None:
            if not (last and field.message_type and field.message_type.GetOptions().map_entry):
                raise InvalidArgumentError(
                    f"query parameter {parameter!r}: {field.name} is not a map",
                    violations=[FieldViolation(parameter, "only map fields take [key]")],
                )
            node.setdefault(field.name, {})[key.group(2)] = value
            return
        if not last:
            if field.message_type is None or _is_repeated(field):
                raise InvalidArgumentError(
                    f"unknown query parameter {parameter!r}",
                    violations=[FieldViolation(parameter, "is not a field of this request")],
                )
            node = node.setdefault(field.name, {})
            descriptor = field.message_type
            continue
        if field.message_type is not None and not field.message_type.full_name.startswith(
            _WELL_KNOWN_PREFIX
        ):
            raise InvalidArgumentError(
                f"query parameter {parameter!r} names a message; name one of its fields",
                violations=[FieldViolation(parameter, "is a message, not a value")],
            )
        converted: Any = value
        if field.type == FieldDescriptor.TYPE_BOOL:
            converted = _boolean(value, parameter)
        if _is_repeated(field):
            node.setdefault(field.name, []).append(converted)
        else:
            node[field.name] = converted


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON name."""
    found = descriptor.fields_by_name.get(name)
    if found is None:
        found = next((f for f in descriptor.fields if f.json_name == name), None)
    return found


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _boolean(value: str, parameter: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", ""):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidArgumentError(
        f"query parameter {parameter!r} must be true or false",
        violations=[FieldViolation(parameter, f"must be true or false, not {value!r}")],
    )
