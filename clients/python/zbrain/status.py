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

from .errors import ERROR_DOMAIN, Code, FieldViolation, ZBrainError, error_for

_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    """The grpc.StatusCode with the same number."""
    return _GRPC_CODES[code.value]


def to_status(error: ZBrainError) -> grpc.Status:
    """The gRPC status (with BadRequest details) that carries `error`."""
    return rpc_status.to_status(status_message(error))


def status_message(error: ZBrainError) -> status_pb2.Status:
    """The google.rpc.Status that carries `error`: its code, its message, its
    field violations as a BadRequest detail and its reason as an ErrorInfo.
    Both edges send it, gRPC in its trailers and HTTP as the JSON body."""
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
    if error.reason:
        info = error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        details.append(detail)
    return status_pb2.Status(code=error.code.value, message=error.message, details=details)


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
