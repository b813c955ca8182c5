"""`zbrain.errors` on the gRPC wire: a status with google.rpc details, and back.

The server's gRPC edge sends an error with `to_status`, which carries the
field violations of an `InvalidArgumentError` as a `google.rpc.BadRequest`
detail; a client turns a failed call back into the same class with
`from_rpc_error`, keeping those violations as data.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .errors import Code, FieldViolation, ZBrainError, error_for

_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    """The grpc.StatusCode with the same number."""
    return _GRPC_CODES[code.value]


def to_status(error: ZBrainError) -> grpc.Status:
    """The gRPC status (with BadRequest details) that carries `error`."""
    details = []
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        details.append(detail)
    status = status_pb2.Status(code=error.code.value, message=error.message, details=details)
    return rpc_status.to_status(status)


def from_rpc_error(error: grpc.RpcError) -> ZBrainError:
    """The ZBrainError a failed call stands for, with its field violations."""
    status_code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    code = Code(status_code.value[0])
    if code is Code.UNAVAILABLE and not message:
        message = "server unavailable"
    return error_for(code, message or "", violations_of(error))


def violations_of(error: grpc.RpcError) -> list[FieldViolation]:
    """The field violations of the BadRequest details a failed call carries."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError):
        return []
    if status is None:
        return []
    found: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return found
