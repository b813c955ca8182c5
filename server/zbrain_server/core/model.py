"""Domain objects of the server: what it stores about jobs, independent of SQL
and of the wire.

The enums and `Artifact` are the ones the clients use (`zbrain.models`, which
imports no wire either): one definition each, on both sides.

Times are integer microseconds since the Unix epoch (`*_us`), which both
stores keep as plain integers and protobuf Timestamps take directly.

The classes are values: change one with `dataclasses.replace`, never in
place. They are not declared frozen because a frozen dataclass sets every
field through `object.__setattr__`: building a Job took 4.6 µs instead of
0.5, and the server builds one for every job row it reads or writes.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from zbrain.models import (
    NO_RESOURCES,
    Artifact,
    AttemptOutcome,
    CancelOutcome,
    Cause,
    Dependency,
    DependencyCondition,
    JobState,
    LogStream,
    Resources,
    Role,
)

if TYPE_CHECKING:
    from .events import Body

__all__ = [
    "NO_RESOURCES",
    "Artifact",
    "AttemptOutcome",
    "AttemptRecord",
    "AttemptResult",
    "CancelOutcome",
    "Cause",
    "Dependency",
    "DependencyCondition",
    "Edge",
    "EventRecord",
    "Job",
    "JobQuery",
    "JobState",
    "Lease",
    "LogLine",
    "LogRecord",
    "LogStream",
    "NewJob",
    "ParentOutcome",
    "Resources",
    "Role",
    "evolve",
    "is_org_id",
    "now_us",
]

ORG_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ORG_ID_RULE = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_org_id(text: str) -> bool:
    """Whether `text` can name an organisation (see ORG_ID_RULE)."""
    return ORG_ID_PATTERN.match(text) is not None


def now_us() -> int:
    """The current wall-clock time in microseconds."""
    return time.time_ns() // 1000


@dataclass(slots=True)
class Edge:
    """A dependency as submitted: on a stored job (its id) or on another job
    of the same batch (its index in the batch)."""

    parent: str | int
    condition: DependencyCondition = DependencyCondition.SUCCEEDED


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
    depends_on: tuple[Edge, ...] = ()
    run_at_us: int | None = None  # a delayed job: not before this time
    rerun_of: str = ""  # the job this one reruns
    # Sharing (see core.limits): at most concurrency_limit jobs of the org
    # with this key run at once, and only workers whose labels meet
    # `requires` lease it.
    concurrency_key: str = ""
    concurrency_limit: int = 0
    requires: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = NO_RESOURCES  # what one attempt may use
    network: bool = False  # asks a sandboxed worker for the network


@dataclass(slots=True)
class AttemptRecord:
    """One ended attempt of a job: who ran it, when, and how it ended."""

    number: int
    worker_id: str
    lease_epoch: int
    start_time_us: int
    end_time_us: int
    cause: Cause  # why it ended
    end_state: JobState  # the state the job went to
    error: str = ""


@dataclass(slots=True)
class Job:
    """A stored job, with its last transition (previous state, cause, reason, time)."""

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
    previous_state: JobState | None
    cause: Cause
    reason: str
    transition_time_us: int
    artifacts: tuple[Artifact, ...] = ()
    attempts: tuple[AttemptRecord, ...] = ()  # the ended ones, oldest first
    # Workflows (see store.graph): the jobs it waits for, how many of those
    # have yet to meet their condition, whether any job waits for it, its
    # distance from the roots of its graph, and the job it reruns.
    depends_on: tuple[Dependency, ...] = ()
    waiting_on: int = 0
    has_children: bool = False
    depth: int = 0
    rerun_of: str = ""
    # Sharing (see NewJob and core.limits).
    concurrency_key: str = ""
    concurrency_limit: int = 0
    requires: Mapping[str, str] = field(default_factory=dict)
    # What one attempt may use, and whether it asks a sandbox for the network.
    resources: Resources = NO_RESOURCES
    network: bool = False
    # The worker process its lease went to (WorkerHello.incarnation_id; ""
    # when the worker sent none), so that a worker restarted under the same id
    # tells its predecessor's leases from those on their way to itself.
    worker_incarnation: str = ""


_JOB_FIELDS = tuple(spec.name for spec in fields(Job))
_job_values = operator.attrgetter(*_JOB_FIELDS)


def evolve(job: Job, **changes: Any) -> Job:
    """The job with some fields changed, as `dataclasses.replace` makes it, at
    about 60% of its cost (it checks each field's kind; a Job's are all plain):
    every state change of every job makes one."""
    values = dict(zip(_JOB_FIELDS, _job_values(job), strict=True))
    values.update(changes)
    return Job(**values)


@dataclass(slots=True)
class ParentOutcome:
    """How a job another one depended on ended, as the started child sees it."""

    job_id: str
    state: JobState
    output_json: str  # "" unless it succeeded, or when left out (output_omitted)
    output_omitted: bool = False


@dataclass(slots=True)
class Lease:
    """A job handed to a worker for one attempt, fenced by `lease_epoch`."""

    job: Job
    lease_epoch: int
    expire_time_us: int
    parents: tuple[ParentOutcome, ...] = ()


@dataclass(slots=True)
class LogLine:
    """One line of a job's output; `sequence` is per job, gapless from 1."""

    sequence: int
    stream: LogStream
    attempt: int
    time_us: int
    text: str


LINE_OVERHEAD_BYTES = 32  # what a line's fields add to its text in a message


def line_size(line: LogLine) -> int:
    """What a line costs a streamed message, in bytes: what StreamLogs
    messages and the pages of lines read for them are bounded by. The
    stores' `read_logs` queries count the same way."""
    return len(line.text.encode()) + LINE_OVERHEAD_BYTES


@dataclass(slots=True)
class AttemptResult:
    """The outcome of one attempt as its worker reported it."""

    outcome: AttemptOutcome
    output_json: str = ""
    error: str = ""
    exit_code: int | None = None


@dataclass(slots=True)
class JobQuery:
    """A List query: filters plus a keyset position (`after_id`)."""

    org_id: str | None  # None: every organisation
    states: Sequence[JobState] = ()
    newest_first: bool = True
    limit: int = 50
    after_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # every one must match
    # Submitted at or after / before these times (to the millisecond: ids hold it).
    created_after_us: int | None = None
    created_before_us: int | None = None
    # Only runnable jobs no connected worker can take (applied by the edge,
    # which knows the workers; the store reads the runnable states).
    unmatched: bool = False


EVENT_OVERHEAD_BYTES = 200  # what a held event costs beyond its payload and topic


@dataclass(slots=True)
class EventRecord:
    """One recorded change: its body (`core.events`), and `payload`, the body's
    stored form, which the store makes with the edge's codec when it writes the
    event. `sequence` is 0 until the store numbers it at commit. Events read
    back for a stream may carry the payload only; those handed to the store's
    listener carry both."""

    sequence: int
    topic: str
    org_id: str
    job_id: str
    time_us: int
    payload: bytes = b""
    body: Body | None = field(default=None, compare=False)  # the same event as `payload`


def event_size(record: EventRecord) -> int:
    """What holding an event costs, in bytes (close to its memory and to its
    share of a streamed message): what live buffers and replay pages are
    bounded by. The stores' `read_events` queries count the same way."""
    return len(record.payload) + len(record.topic) + EVENT_OVERHEAD_BYTES


@dataclass(slots=True)
class WorkerPresence:
    """A worker stream connected to some replica, as every replica sees it
    (ListWorkers; whether a waiting job has a worker that matches)."""

    replica_id: str
    worker_id: str
    address: str
    org_ids: tuple[str, ...]
    labels: Mapping[str, str]
    slots: int
    lease_job_ids: tuple[str, ...]
    draining: bool
    connected_at_us: int
    last_heard_at_us: int


LogRecord = tuple[LogStream, int, str]
"""A log line as a worker sends it: stream, time in microseconds, text."""
