"""The job model as Python sees it, shared by the clients and the server.

Enum values are the protobuf enum numbers, so converting is `JobState(n)`
and `state.value`; the server stores `state.name`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from .v1 import event_pb2, job_pb2


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
        return self in (JobState.PENDING, JobState.RETRYING)


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})


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


@dataclass(frozen=True)
class Artifact:
    """One file a job produced, stored content-addressed by its sha256."""

    name: str
    sha256: str
    size_bytes: int

    @classmethod
    def from_proto(cls, message: job_pb2.Artifact) -> Artifact:
        return cls(message.name, message.sha256, message.size_bytes)


def _time(message: Any, field: str, zone: tzinfo) -> datetime | None:
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    # As value.ToDatetime(tzinfo=zone) gives, at a third of its cost: a worker
    # converts every time of every job it is leased.
    return datetime.fromtimestamp(value.seconds, zone).replace(microsecond=value.nanos // 1000)


def _local_zone() -> tzinfo:
    """The local time zone now; looked up once per job, not per time field."""
    return datetime.now().astimezone().tzinfo or UTC


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


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
            "artifacts": [vars(a) for a in self.artifacts],
            "worker_id": self.worker_id,
            "cancel_requested": self.cancel_requested,
        }

    @classmethod
    def from_proto(cls, message: job_pb2.Job) -> Job:
        zone = _local_zone()
        return cls(
            id=message.id,
            org_id=message.org_id,
            cmd=tuple(message.cmd),
            input=json.loads(message.input_json) if message.input_json else None,
            env=dict(message.env),
            timeout=message.timeout.ToTimedelta(),
            max_retries=message.max_retries,
            priority=message.priority,
            labels=dict(message.labels),
            state=JobState(message.state),
            attempt=message.attempt,
            create_time=_time(message, "create_time", zone),
            update_time=_time(message, "update_time", zone),
            start_time=_time(message, "start_time", zone),
            finish_time=_time(message, "finish_time", zone),
            next_run_time=_time(message, "next_run_time", zone),
            last_error=message.last_error,
            output=json.loads(message.output_json) if message.output_json else None,
            artifacts=tuple(Artifact.from_proto(a) for a in message.artifacts),
            worker_id=message.worker_id,
            cancel_requested=message.cancel_requested,
        )


@dataclass(frozen=True)
class LogLine:
    """One line of a job's output."""

    sequence: int
    stream: LogStream
    attempt: int
    time: datetime | None
    text: str

    @classmethod
    def from_proto(cls, message: job_pb2.LogLine) -> LogLine:
        return cls(
            sequence=message.sequence,
            stream=LogStream(message.stream),
            attempt=message.attempt,
            time=_time(message, "time", _local_zone()),
            text=message.text,
        )


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

    @classmethod
    def from_proto(cls, message: event_pb2.Event) -> Event:
        kind = message.WhichOneof("payload") or ""
        data = (
            json_format.MessageToDict(getattr(message, kind), preserving_proto_field_name=True)
            if kind
            else {}
        )
        return cls(
            sequence=message.sequence,
            topic=message.topic,
            org_id=message.org_id,
            job_id=message.job_id,
            time=_time(message, "time", _local_zone()),
            type=kind,
            data=data,
        )

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
