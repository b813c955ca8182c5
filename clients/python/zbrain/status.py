"""`zbrain.errors` on the gRPC wire: a status with google.rpc details, and back.

The server's gRPC edge sends an error with `to_status`, which carries the
field violations of an `InvalidArgumentError` as a `google.rpc.BadRequest`
detail; a client turns a failed call back into the same class with
`from_rpc_error`, keeping those violations as data.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .errors import ERROR_DOMAIN, Code, FieldViolation, ZBrainError, error_for

_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    """The grpc.StatusCode with the same number."""
    return _GRPC_CODES[code.value]


MAX_MESSAGE_BYTES = 768
MAX_VIOLATIONS_BYTES = 2048
MAX_FIELD_BYTES = 200
MAX_DESCRIPTION_BYTES = 500
"""A status travels in trailers, which a peer accepts up to 8 KiB in all
(gRPC's default metadata limit; past it the call fails with no status a
client can read). The message goes twice (grpc-message, percent-encoded, so
up to three times its bytes; and inside grpc-status-details-bin, base64, a
third more), so these bounds keep every status under about 6 KiB, however
many violations a request has or however long the names it sent."""


def to_status(error: ZBrainError) -> grpc.Status:
    """The gRPC status (with BadRequest details) that carries `error`."""
    return rpc_status.to_status(status_message(error))


def status_message(error: ZBrainError) -> status_pb2.Status:
    """The google.rpc.Status that carries `error`: its code, its message, its
    field violations as a BadRequest detail and its reason as an ErrorInfo,
    message and violations cut to fit in trailers (see MAX_MESSAGE_BYTES).
    Both edges send it, gRPC in its trailers and HTTP as the JSON body."""
    details = []
    if error.violations:
        bad_request = error_details_pb2.BadRequest(field_violations=_fitting(error.violations))
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        details.append(detail)
    if error.reason:
        info = error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        details.append(detail)
    message = _cut(error.message, MAX_MESSAGE_BYTES)
    return status_pb2.Status(code=error.code.value, message=message, details=details)


def _fitting(
    violations: Sequence[FieldViolation],
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """The violations that fit in MAX_VIOLATIONS_BYTES, each cut to size,
    and then one saying how many more there were."""
    fitting: list[error_details_pb2.BadRequest.FieldViolation] = []
    left = MAX_VIOLATIONS_BYTES
    for i, violation in enumerate(violations):
        item = error_details_pb2.BadRequest.FieldViolation(
            field=_cut(violation.field, MAX_FIELD_BYTES),
            description=_cut(violation.description, MAX_DESCRIPTION_BYTES),
        )
        left -= item.ByteSize()
        if left < 0:
            more = len(violations) - i
            fitting.append(
                error_details_pb2.BadRequest.FieldViolation(
                    description=f"and {more} more problem{'s' if more > 1 else ''} not listed"
                )
            )
            break
        fitting.append(item)
    return fitting


def _cut(text: str, max_bytes: int) -> str:
    """`text` in at most `max_bytes` of UTF-8, ending with "…" when cut."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode(errors="ignore") + "…"


def from_rpc_error(error: grpc.RpcError) -> ZBrainError:
    """The ZBrainError a failed call stands for, with its field violations."""
    status_code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    code = Code(status_code.value[0])
    if code is Code.UNAVAILABLE and not message:
        message = "server unavailable"
    violations: list[FieldViolation] = []
    reason, metadata = "", {}
    for detail in _details(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                reason, metadata = info.reason, dict(info.metadata)
    return error_for(code, message or "", violations, reason, metadata)


def _details(error: grpc.RpcError) -> list[any_pb2.Any]:
    """The google.rpc.Status details a failed call carries, if any."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError):
        return []
    return list(status.details) if status is not None else []
