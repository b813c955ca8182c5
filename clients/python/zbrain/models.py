"""The job model as Python sees it: the enums both sides share, and the values
the client returns.

Enum values are the protobuf enum numbers, so converting is `JobState(n)`
and `state.value`; the server stores `state.name`. This module imports only
the standard library: the server's core uses the same enums without knowing
the wire, and the client converts messages in `zbrain._convert`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


class _NamedIntEnum(enum.IntEnum):
    """An IntEnum (values are the wire numbers) that prints as its name."""

    def __str__(self) -> str:
        return self.name


class JobState(_NamedIntEnum):
    """Where a job is in its life (zbrain.v1.JobState)."""

    PENDING = 1  # runnable now, waiting for a worker
    RUNNING = 2  # leased by a worker for the current attempt
    SUCCEEDED = 3  # terminal: an attempt succeeded
    FAILED = 4  # terminal: an attempt failed with no retries left
    RETRYING = 5  # an attempt failed; the next one runs at next_run_time
    CANCELED = 6  # terminal: canceled by a user

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_runnable(self) -> bool:
        return self in RUNNABLE_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
RUNNABLE_STATES = frozenset({JobState.PENDING, JobState.RETRYING})


class Cause(_NamedIntEnum):
    """Why a job changed state (zbrain.v1.TransitionCause). Branch on this,
    never on the words of a reason."""

    UNSPECIFIED = 0  # a job stored before causes were recorded
    SUBMITTED = 1  # accepted (to PENDING)
    LEASED = 2  # a worker took it for a new attempt (to RUNNING)
    SUCCEEDED = 3  # the attempt succeeded
    ATTEMPT_FAILED = 4  # the worker reported a failure (to RETRYING or FAILED)
    ATTEMPT_TIMED_OUT = 5  # the worker stopped it at its timeout
    LEASE_EXPIRED = 6  # the worker stopped renewing its lease: lost
    OVERDUE = 7  # ran past timeout plus grace; the server ended it
    CANCEL_REQUESTED = 8  # a user asked to cancel it while running (stays RUNNING)
    CANCELED = 9  # canceled by a user
    LEASE_RETURNED = 10  # the lease never reached its worker (to PENDING, not counted)
    INTERRUPTED = 11  # the worker stopped it because it was shutting down


class CancelOutcome(_NamedIntEnum):
    """What a cancel request did (zbrain.v1.CancelOutcome)."""

    CANCELED = 1  # the job was waiting and is canceled now
    CANCEL_REQUESTED = 2  # the job runs; its worker was told to stop it
    ALREADY_TERMINAL = 3  # the job had finished; nothing changed


class LogStream(_NamedIntEnum):
    """Which output a log line came from (zbrain.v1.LogStream)."""

    STDOUT = 1
    STDERR = 2
    SYSTEM = 3  # notes from the worker or server, such as truncation markers


class AttemptOutcome(_NamedIntEnum):
    """How a worker says an attempt ended (zbrain.v1.AttemptOutcome)."""

    SUCCEEDED = 1  # the process exited 0, or the handler returned
    FAILED = 2  # retried while retries remain
    CANCELED = 3  # stopped because a cancel was requested
    TIMED_OUT = 4  # stopped at the job's timeout; retried while retries remain
    INTERRUPTED = 5  # stopped because the worker is shutting down; retried while retries remain


class Role(_NamedIntEnum):
    """What an API token may do (zbrain.v1.TokenRole)."""

    CLIENT = 1  # submit, read and cancel its organisation's jobs
    WORKER = 2  # lease and report on its organisation's jobs
    ADMIN = 3  # everything, in every organisation, and tokens

    @property
    def label(self) -> str:
        """The role as the command line spells it: client, worker or admin."""
        return self.name.lower()


@dataclass(frozen=True)
class Artifact:
    """One file a job produced, stored content-addressed by its sha256."""

    name: str
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size_bytes": self.size_bytes}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class Transition:
    """A job's last state change and why it happened."""

    from_state: JobState | None
    to_state: JobState | None
    cause: Cause
    reason: str
    time: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_state": self.from_state.name if self.from_state else None,
            "to_state": self.to_state.name if self.to_state else None,
            "cause": self.cause.name,
            "reason": self.reason,
            "time": _iso(self.time),
        }


@dataclass(frozen=True)
class Job:
    """A job as the server reported it; times are timezone-aware datetimes."""

    id: str
    org_id: str
    cmd: tuple[str, ...]
    input: Any
    env: Mapping[str, str]
    timeout: timedelta
    max_retries: int
    priority: int
    labels: Mapping[str, str]
    state: JobState
    attempt: int
    create_time: datetime | None
    update_time: datetime | None
    start_time: datetime | None
    finish_time: datetime | None
    next_run_time: datetime | None
    last_error: str
    output: Any
    artifacts: tuple[Artifact, ...]
    worker_id: str
    cancel_requested: bool
    last_transition: Transition | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: enums by name, times in ISO 8601, durations in seconds."""
        return {
            "id": self.id,
            "org_id": self.org_id,
            "state": self.state.name,
            "attempt": self.attempt,
            "max_retries": self.max_retries,
            "cmd": list(self.cmd),
            "input": self.input,
            "env": dict(self.env),
            "timeout_s": self.timeout.total_seconds(),
            "priority": self.priority,
            "labels": dict(self.labels),
            "create_time": _iso(self.create_time),
            "update_time": _iso(self.update_time),
            "start_time": _iso(self.start_time),
            "finish_time": _iso(self.finish_time),
            "next_run_time": _iso(self.next_run_time),
            "last_error": self.last_error,
            "output": self.output,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "worker_id": self.worker_id,
            "cancel_requested": self.cancel_requested,
            "last_transition": self.last_transition.to_dict() if self.last_transition else None,
        }


@dataclass(frozen=True)
class LogLine:
    """One line of a job's output."""

    sequence: int
    stream: LogStream
    attempt: int
    time: datetime | None
    text: str


@dataclass(frozen=True)
class Event:
    """One recorded change: `type` names the payload (job_submitted,
    job_state_changed, job_logged, worker_presence) and `data` holds its fields."""

    sequence: int
    topic: str
    org_id: str
    job_id: str
    time: datetime | None
    type: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the sequence as `seq`."""
        return {
            "seq": self.sequence,
            "topic": self.topic,
            "org_id": self.org_id,
            "job_id": self.job_id,
            "time": _iso(self.time),
            "type": self.type,
            **self.data,
        }
