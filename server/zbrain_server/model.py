"""Domain objects of the server: what it stores about jobs, independent of SQL.

The enums and Artifact shared with the clients live in `zbrain.models`.

Times are integer microseconds since the Unix epoch (`*_us`), which both
stores keep as plain integers and protobuf Timestamps take directly.

The classes are values: change one with `dataclasses.replace`, never in
place. They are not declared frozen because a frozen dataclass sets every
field through `object.__setattr__`: building a Job took 4.6 µs instead of
0.5, and the server builds one for every job row it reads or writes.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from zbrain.models import Artifact, CancelOutcome, JobState, LogStream

__all__ = [
    "Artifact",
    "AttemptOutcome",
    "AttemptResult",
    "CancelOutcome",
    "EventRecord",
    "Job",
    "JobQuery",
    "JobState",
    "Lease",
    "LogLine",
    "LogRecord",
    "LogStream",
    "NewJob",
    "now_us",
]


def now_us() -> int:
    """The current wall-clock time in microseconds."""
    return time.time_ns() // 1000


class AttemptOutcome(enum.Enum):
    """How a worker says an attempt ended."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TIMED_OUT = "TIMED_OUT"
    WORKER_LOST = "WORKER_LOST"  # decided by the server: lease expired or stream broke


@dataclass(slots=True)
class NewJob:
    """A validated job as submitted, before the store gives it an id and times."""

    org_id: str
    cmd: tuple[str, ...]
    input_json: str
    env: Mapping[str, str]
    timeout_us: int
    max_retries: int
    priority: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    trace_context: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Job:
    """A stored job."""

    id: str
    org_id: str
    cmd: tuple[str, ...]
    input_json: str
    env: Mapping[str, str]
    timeout_us: int
    max_retries: int
    priority: int
    labels: Mapping[str, str]
    state: JobState
    attempt: int
    create_time_us: int
    update_time_us: int
    start_time_us: int | None
    finish_time_us: int | None
    next_run_time_us: int | None
    last_error: str
    output_json: str
    lease_epoch: int
    worker_id: str
    lease_expire_time_us: int | None
    cancel_requested: bool
    request_id: str
    trace_context: Mapping[str, str]
    artifacts: tuple[Artifact, ...] = ()


@dataclass(slots=True)
class Lease:
    """A job handed to a worker for one attempt, fenced by `lease_epoch`."""

    job: Job
    lease_epoch: int
    expire_time_us: int


@dataclass(slots=True)
class LogLine:
    """One line of a job's output; `sequence` is per job, gapless from 1."""

    sequence: int
    stream: LogStream
    attempt: int
    time_us: int
    text: str


@dataclass(slots=True)
class AttemptResult:
    """The outcome of one attempt as reported by its worker (or the reaper)."""

    outcome: AttemptOutcome
    output_json: str = ""
    error: str = ""
    exit_code: int | None = None


@dataclass(slots=True)
class JobQuery:
    """A List query: filters plus a keyset position (`after_id`)."""

    org_id: str
    states: Sequence[JobState] = ()
    newest_first: bool = True
    limit: int = 50
    after_id: str | None = None


@dataclass(slots=True)
class EventRecord:
    """One recorded change. `payload` is a serialized zbrain.v1.Event carrying only
    its payload oneof; `sequence` is 0 until the store assigns it at commit."""

    sequence: int
    topic: str
    org_id: str
    job_id: str
    time_us: int
    payload: bytes


LogRecord = tuple[LogStream, int, str]
"""A log line as a worker sends it: stream, time in microseconds, text."""
