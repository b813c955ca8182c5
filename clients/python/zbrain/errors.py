"""The one exception hierarchy of ZBrain, shared by the server and the clients.

The server raises these from its domain code and the RPC layer turns them into
a gRPC status (with `google.rpc.BadRequest` details for field errors); the
clients turn a gRPC status back into the same class. So `except
zbrain.errors.NotFoundError` means the same thing on both sides of the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: which field, and what is wrong with it."""

    field: str
    description: str


class ZBrainError(Exception):
    """Root of every error ZBrain raises; `code` is the matching gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, violations: Sequence[FieldViolation] = ()) -> None:
        if violations:
            message += " (" + "; ".join(f"{v.field}: {v.description}" for v in violations) + ")"
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)


class InvalidArgumentError(ZBrainError):
    """The request is malformed; `violations` names the offending fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ZBrainError):
    """The job, artifact or other object does not exist (or is not yours)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ZBrainError):
    """Something with the same identity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(ZBrainError):
    """The object is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class IllegalTransitionError(FailedPreconditionError):
    """A job state change that the lifecycle does not allow was attempted."""


class StaleLeaseError(FailedPreconditionError):
    """A worker reported on a lease it no longer holds (a newer attempt exists,
    the lease expired, or the job was canceled): it must stop the attempt."""


class OutOfRangeError(ZBrainError):
    """A sequence number or position is outside what is retained."""

    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhaustedError(ZBrainError):
    """A limit or quota was reached; the message names it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnauthenticatedError(ZBrainError):
    """The call carried no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(ZBrainError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(ZBrainError):
    """The server cannot be reached or is shutting down; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ZBrainError):
    """The call did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CanceledError(ZBrainError):
    """The call was canceled before it finished."""

    code = grpc.StatusCode.CANCELLED


class StoreError(ZBrainError):
    """The job store failed (disk full, corrupt file, lost database connection)."""

    code = grpc.StatusCode.INTERNAL


class JobFailedError(ZBrainError):
    """Raised by client helpers that wait for a job when it ends without success."""


_BY_CODE: dict[grpc.StatusCode, type[ZBrainError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        OutOfRangeError,
        ResourceExhaustedError,
        UnauthenticatedError,
        PermissionDeniedError,
        UnavailableError,
        DeadlineExceededError,
        CanceledError,
        StoreError,
    )
}


def to_status(error: ZBrainError) -> grpc.Status:
    """Build the gRPC status (with BadRequest details) that carries `error`."""
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
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


def from_rpc_error(error: grpc.RpcError) -> ZBrainError:
    """Turn a failed call into the matching ZBrainError, keeping field details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    violations: list[FieldViolation] = []
    status = _status_of(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations += [
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                ]
    if code is grpc.StatusCode.UNAVAILABLE and not message:
        message = "server unavailable"
    result = _BY_CODE.get(code, ZBrainError)(message or code.name)
    # The server's message already names the violations; keep them as data too.
    result.violations = tuple(violations)
    return result


def _status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    try:
        return rpc_status.from_call(error)
    except (ValueError, AttributeError):
        return None
