"""The one exception hierarchy of ZBrain, shared by the server and the clients.

Every error is a `ZBrainError` with a `code` from `Code`, the canonical status
codes of google.rpc (the numbers gRPC and the HTTP API both use). The server
raises these from its domain code and each edge turns them into its own
status (`zbrain.status` for gRPC); the clients turn a status back into the
same class. So `except zbrain.errors.NotFoundError` means the same thing on
both sides of the wire.

This module imports nothing but the standard library: the server's core and
stores raise these errors without knowing any wire.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class Code(enum.IntEnum):
    """The canonical status codes (google.rpc.Code); the numbers are gRPC's."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: which field, and what is wrong with it."""

    field: str
    description: str


class ZBrainError(Exception):
    """Root of every error ZBrain raises; `code` is the matching status code.

    `violations` name the bad fields of a request (google.rpc.BadRequest on the
    wire); `reason` and `metadata` say, for programs, why an error happened
    and what to do next (google.rpc.ErrorInfo), e.g. reason SLOW_SUBSCRIBER
    with metadata {"resume_after_sequence": "41"}. Branch on those, never on
    the message.
    """

    code: Code = Code.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[FieldViolation] = (),
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if violations:
            message += " (" + "; ".join(f"{v.field}: {v.description}" for v in violations) + ")"
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgumentError(ZBrainError):
    """The request is malformed; `violations` names the offending fields."""

    code = Code.INVALID_ARGUMENT


class NotFoundError(ZBrainError):
    """The job, artifact or other object does not exist (or is not yours)."""

    code = Code.NOT_FOUND


class AlreadyExistsError(ZBrainError):
    """Something with the same identity exists already."""

    code = Code.ALREADY_EXISTS


class FailedPreconditionError(ZBrainError):
    """The object is not in a state that allows the operation."""

    code = Code.FAILED_PRECONDITION


class IllegalTransitionError(FailedPreconditionError):
    """A job state change that the lifecycle does not allow was attempted."""


class StaleLeaseError(FailedPreconditionError):
    """A worker reported on a lease it no longer holds (a newer attempt exists,
    the lease expired, or the job was canceled): it must stop the attempt."""


class OutOfRangeError(ZBrainError):
    """A sequence number or position is outside what is retained."""

    code = Code.OUT_OF_RANGE


class ResourceExhaustedError(ZBrainError):
    """A limit or quota was reached; the message names it."""

    code = Code.RESOURCE_EXHAUSTED


class UnauthenticatedError(ZBrainError):
    """The call carried no valid credentials."""

    code = Code.UNAUTHENTICATED


class PermissionDeniedError(ZBrainError):
    """The caller is known but may not do this."""

    code = Code.PERMISSION_DENIED


class UnavailableError(ZBrainError):
    """The server cannot be reached or is shutting down; retrying may help."""

    code = Code.UNAVAILABLE


class DeadlineExceededError(ZBrainError):
    """The call did not finish within its deadline."""

    code = Code.DEADLINE_EXCEEDED


class CanceledError(ZBrainError):
    """The call was canceled before it finished."""

    code = Code.CANCELLED


class StoreError(ZBrainError):
    """The job store failed (corrupt file, lost database connection); nothing
    was half-written."""

    code = Code.INTERNAL


class StoreConflictError(StoreError):
    """The database broke a conflict between concurrent writers (a deadlock, a
    busy lock, a serialisation failure) by failing one of them: running the
    same write again is safe and usually succeeds."""

    code = Code.ABORTED


class StoreFullError(StoreError):
    """The store's disk or database is full: nothing was written, and writes
    succeed again once space is freed."""

    code = Code.RESOURCE_EXHAUSTED


class JobFailedError(ZBrainError):
    """Raised by client helpers that wait for a job when it ends without success."""


ERRORS_BY_CODE: dict[Code, type[ZBrainError]] = {
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
"""The class a client raises for each status code (ZBrainError for the others)."""


ERROR_DOMAIN = "zbrain.io"
"""The domain of ZBrain's own ErrorInfo reasons."""

SLOW_SUBSCRIBER = "SLOW_SUBSCRIBER"
"""A stream reader fell its buffer behind and was cut off; metadata
`resume_after_sequence` says where to resume."""

EVENTS_PURGED = "EVENTS_PURGED"
"""Events asked for were removed by retention (OUT_OF_RANGE); metadata
`resume_after_sequence` is the first place a reader can resume from."""


def error_for(
    code: Code,
    message: str,
    violations: Sequence[FieldViolation] = (),
    reason: str = "",
    metadata: Mapping[str, str] | None = None,
) -> ZBrainError:
    """The error a client raises for a status received from the server. The
    server's message already names the violations; they are kept as data too."""
    error = ERRORS_BY_CODE.get(code, ZBrainError)(message or code.name)
    error.code = code  # the root class stands for codes no class owns: keep which
    error.violations = tuple(violations)
    error.reason = reason
    error.metadata = dict(metadata or {})
    return error
