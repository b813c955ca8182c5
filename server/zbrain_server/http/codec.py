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
from collections.abc import Iterable, Mapping, Sequence
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
_AT_PATH = re.compile(r" at [A-Za-z0-9_]+\.([A-Za-z0-9_.]+?)\.*$")  # at SubmitRequest.job.x
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
            raise _parse_error(exc, "", from_url.DESCRIPTOR) from exc
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
        raise _parse_error(exc, prefix, target.DESCRIPTOR) from exc


def _parse_error(
    error: json_format.ParseError, prefix: str, descriptor: Any
) -> InvalidArgumentError:
    """The field json_format could not read, named as validation names fields
    (snake_case, dotted), with what that field takes: json_format's own
    complaint is often Python's (`invalid literal for int() with base 10`),
    which a caller of a JSON API cannot act on."""
    text = str(error)
    steps = _PARSE_STEP.findall(text)
    unknown = _UNKNOWN_FIELD.search(text)
    located = _AT_PATH.search(text)
    if unknown:
        steps.append(unknown.group(1))
    elif located and len(located.group(1).split(".")) > len(steps):
        steps = located.group(1).split(".")
    field = _field_at(descriptor, steps)
    path = ".".join(_CAMEL.sub(r"_\1", step).lower() for step in steps)
    name = ".".join(part for part in (prefix, path) if part) or "body"
    if unknown:
        parent = _field_at(descriptor, steps[:-1]) if len(steps) > 1 else None
        message = parent.message_type if parent is not None else descriptor
        reason = f"is not a field of {message.full_name if message else 'this request'}"
    elif field is not None:
        reason = _expected(field)
    else:
        reason = text.split("\n")[0].rsplit(" field: ", 1)[-1].rstrip(".")
    return InvalidArgumentError("invalid request", violations=[FieldViolation(name, reason)])


def _field_at(descriptor: Any, steps: Sequence[str]) -> FieldDescriptor | None:
    """The field `steps` (JSON or proto names, from `descriptor` down) lead to."""
    field = None
    for step in steps:
        if descriptor is None:
            return None
        field = _field(descriptor, step)
        if field is None:
            return None
        descriptor = field.message_type
    return field


_INTEGER_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: "-2147483648 to 2147483647",
    FieldDescriptor.CPPTYPE_UINT32: "0 to 4294967295",
    FieldDescriptor.CPPTYPE_INT64: "-9223372036854775808 to 9223372036854775807",
    FieldDescriptor.CPPTYPE_UINT64: "0 to 18446744073709551615",
}


def _expected(field: FieldDescriptor) -> str:
    """What a field takes in the JSON mapping, in words."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return "must be a JSON object, each value " + _kind(message.fields_by_name["value"])
    if _is_repeated(field):
        return "must be a list, each value " + _kind(field)
    return "must be " + _kind(field)


def _kind(field: FieldDescriptor) -> str:
    """What one value of `field` is: "a whole number from 0 to 4294967295"."""
    message = field.message_type
    if field.cpp_type in _INTEGER_RANGES:
        return "a whole number from " + _INTEGER_RANGES[field.cpp_type]
    if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return "a number"
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return "true or false"
    if field.enum_type is not None:
        return "one of " + ", ".join(value.name for value in field.enum_type.values[1:])
    if message is not None and message.full_name == "google.protobuf.Duration":
        return 'a duration in seconds such as "30s" or "0.5s"'
    if message is not None and message.full_name == "google.protobuf.Timestamp":
        return 'an RFC 3339 time such as "2026-01-02T03:04:05Z"'
    return "a JSON object" if message is not None else "a string"


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
