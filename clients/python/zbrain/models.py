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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SHORT_ID_LENGTH = 8


class _NamedIntEnum(enum.IntEnum):
    """An IntEnum (values are the wire numbers) that prints as its name."""

    def __str__(self) -> str:
        return self.name


class JobState(_NamedIntEnum):
    """Where a job is in its life (zbrain.v1.JobState)."""

    UNSPECIFIED = 0  # a state this client does not know (from a newer server)
    PENDING = 1  # runnable now, waiting for a worker
    RUNNING = 2  # leased by a worker for the current attempt
    SUCCEEDED = 3  # terminal: an attempt succeeded
    FAILED = 4  # terminal: an attempt failed with no retries left
    RETRYING = 5  # an attempt failed; the next one runs at next_run_time
    CANCELED = 6  # terminal: canceled by a user, or because a job it needed failed
    BLOCKED = 7  # waiting for the jobs it depends on; never leased until they are done
    SCHEDULED = 8  # a delayed job waiting for its time (next_run_time); PENDING then

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_runnable(self) -> bool:
        """Whether a worker may lease it (once its next_run_time has come)."""
        return self in RUNNABLE_STATES

    @property
    def is_waiting(self) -> bool:
        """Whether it waits to run: runnable, blocked or delayed (what the
        waiting-jobs quota counts)."""
        return self in WAITING_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
RUNNABLE_STATES = frozenset({JobState.PENDING, JobState.RETRYING})
WAITING_STATES = RUNNABLE_STATES | {JobState.BLOCKED, JobState.SCHEDULED}


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
    DEPENDENCY_FAILED = 12  # a job it depended on can no longer meet its condition (to CANCELED)
    RELEASED = 13  # every job it depended on met its condition (BLOCKED to PENDING)
    RESOURCE_LIMIT_EXCEEDED = 14  # the worker stopped it over a resource limit
    DUE = 17  # a delayed job's time came (SCHEDULED to PENDING)
    # Its worker was restarted (a new process under the same worker id) while
    # the lease was on its way or the attempt running: lost, counted (to
    # RETRYING or FAILED).
    WORKER_RESTARTED = 80


class WaitingCause(_NamedIntEnum):
    """What keeps a runnable job from being leased (zbrain.v1.WaitingCause),
    the kind of hold `Job.waiting_reason` describes in words. Branch on this."""

    UNSPECIFIED = 0  # not waiting (or a server that does not say)
    PAUSED = 1  # its org, or a label selector matching its labels, is paused
    NO_WORKER = 2  # no connected worker serves its org with its labels
    MAX_RUNNING = 3  # its org runs its max_running_jobs already
    RATE = 4  # its org used its starts for this second
    CONCURRENCY_KEY = 5  # its concurrency key runs its limit already
    SLOTS = 6  # nothing but a free slot on a matching worker


class DependencyCondition(_NamedIntEnum):
    """What a job needs of a job it depends on (zbrain.v1.DependencyCondition)."""

    SUCCEEDED = 1  # the parent must succeed; otherwise the child is canceled
    FINISHED = 2  # the parent must end, in any way


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
    RESOURCE_LIMIT_EXCEEDED = 6  # went over a resource limit; retried while retries remain


@dataclass(frozen=True, slots=True)
class Resources:
    """What one attempt of a job may use (zbrain.v1.Resources); 0 is no limit
    of the job's own. Workers clamp each to their maxima (docs/sandbox.md)."""

    memory_bytes: int = 0  # resident memory of all its processes together
    cpu_seconds: int = 0  # CPU time of each process
    processes: int = 0  # processes of the job's user at once (RLIMIT_NPROC)
    open_files: int = 0  # open descriptors of each process
    file_size_bytes: int = 0  # largest file a process may write

    def __bool__(self) -> bool:
        """Whether any limit is set."""
        return any(self.to_dict().values())

    def to_dict(self) -> dict[str, int]:
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": self.cpu_seconds,
            "processes": self.processes,
            "open_files": self.open_files,
            "file_size_bytes": self.file_size_bytes,
        }


NO_RESOURCES = Resources()

# The smallest value each resource limit may take when set: below them no
# program starts (a process needs its three standard descriptors), so such a
# limit is a mistake to name (the server refuses it at submit, a worker at
# start) rather than a failure at every attempt.
RESOURCE_MINIMUMS = {
    "memory_bytes": 1 << 20,
    "cpu_seconds": 1,
    "processes": 1,
    "open_files": 3,
    "file_size_bytes": 1,
}


class ParameterType(_NamedIntEnum):
    """What a template parameter's value must be (zbrain.v1.ParameterType)."""

    STRING = 1
    INTEGER = 2
    NUMBER = 3
    BOOLEAN = 4
    JSON = 5  # any JSON value


class OverlapPolicy(_NamedIntEnum):
    """What a schedule's tick does while the last tick's job still runs
    (zbrain.v1.OverlapPolicy)."""

    ALLOW = 1  # submit anyway
    SKIP = 2  # submit nothing for this tick (the default)
    CANCEL_PREVIOUS = 3  # cancel the running one, then submit


class CatchUpPolicy(_NamedIntEnum):
    """What happens to a schedule's ticks missed while no server ran
    (zbrain.v1.CatchUpPolicy)."""

    SKIP = 1  # they submit nothing (the default)
    RUN_ONCE = 2  # together they submit one job, for the latest of them


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


@dataclass(frozen=True)
class Dependency:
    """A job another job waits for, and what it needs of it."""

    job_id: str
    condition: DependencyCondition = DependencyCondition.SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "condition": self.condition.name}


@dataclass(frozen=True)
class ParentResult:
    """What a started job sees of a job it depended on: how it ended and,
    when it succeeded, its output."""

    job_id: str
    state: JobState
    output: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "state": self.state.name, "output": self.output}


def rfc3339(value: datetime | None) -> str | None:
    """A time as every JSON output of ZBrain spells it: RFC 3339 in UTC with
    microseconds, `2026-12-02T06:40:12.345678Z` (None stays None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
            "time": rfc3339(self.time),
        }


@dataclass(frozen=True)
class Attempt:
    """One attempt at running a job, as the server recorded it."""

    number: int  # 1 for the first attempt
    worker_id: str
    start_time: datetime | None
    end_time: datetime | None  # None while it runs
    cause: Cause  # why it ended (UNSPECIFIED while it runs)
    end_state: JobState | None  # the state the job went to when it ended
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "worker_id": self.worker_id,
            "start_time": rfc3339(self.start_time),
            "end_time": rfc3339(self.end_time),
            "cause": self.cause.name,
            "end_state": self.end_state.name if self.end_state else None,
            "error": self.error,
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
    depends_on: tuple[Dependency, ...] = ()  # the jobs it waits (or waited) for
    child_ids: tuple[str, ...] = ()  # the jobs waiting for it (filled in by get)
    rerun_of: str = ""  # the job it reruns, if any
    rerun_ids: tuple[str, ...] = ()  # the jobs rerunning it (filled in by get)
    # For a job a worker runs: how the jobs it depended on ended, and their outputs.
    parents: tuple[ParentResult, ...] = ()
    attempts: tuple[Attempt, ...] = ()  # every attempt so far, oldest first
    # Sharing (docs/limits.md): its concurrency key and that key's limit, the
    # worker labels it requires, and, from get, what holds it while it waits
    # (in words, and as a kind to branch on).
    concurrency_key: str = ""
    concurrency_limit: int = 0
    requires: Mapping[str, str] = field(default_factory=dict)
    waiting_reason: str = ""
    waiting_cause: WaitingCause = WaitingCause.UNSPECIFIED
    resources: Resources = NO_RESOURCES  # what one attempt may use
    network: bool = False  # asks for the network in a sandboxed worker

    @property
    def short_id(self) -> str:
        """The id's last 8 characters: random, so unique among recent jobs in
        practice; the command line shows and accepts it (docs/cli.md)."""
        return self.id[-SHORT_ID_LENGTH:]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: enums by name, times in RFC 3339 UTC, durations in seconds."""
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
            "create_time": rfc3339(self.create_time),
            "update_time": rfc3339(self.update_time),
            "start_time": rfc3339(self.start_time),
            "finish_time": rfc3339(self.finish_time),
            "next_run_time": rfc3339(self.next_run_time),
            "last_error": self.last_error,
            "output": self.output,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "worker_id": self.worker_id,
            "cancel_requested": self.cancel_requested,
            "last_transition": self.last_transition.to_dict() if self.last_transition else None,
            "depends_on": [d.to_dict() for d in self.depends_on],
            "child_ids": list(self.child_ids),
            "rerun_of": self.rerun_of,
            "rerun_ids": list(self.rerun_ids),
            "attempts": [a.to_dict() for a in self.attempts],
            "concurrency_key": self.concurrency_key,
            "concurrency_limit": self.concurrency_limit,
            "requires": dict(self.requires),
            "waiting_reason": self.waiting_reason,
            "waiting_cause": self.waiting_cause.name,
            "resources": self.resources.to_dict(),
            "network": self.network,
        }


@dataclass(frozen=True)
class LogLine:
    """One line of a job's output."""

    sequence: int
    stream: LogStream
    attempt: int
    time: datetime | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "stream": self.stream.name,
            "attempt": self.attempt,
            "time": rfc3339(self.time),
            "text": self.text,
        }


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
        """A JSON-ready dict: the envelope, then the payload's fields beside it."""
        return {
            "sequence": self.sequence,
            "topic": self.topic,
            "org_id": self.org_id,
            "job_id": self.job_id,
            "time": rfc3339(self.time),
            "type": self.type,
            **self.data,
        }


@dataclass(frozen=True)
class JobSpecView:
    """The job a template or schedule submits, as stored with it."""

    cmd: tuple[str, ...]
    input: Any
    env: Mapping[str, str]
    timeout: timedelta | None  # None: the server's default
    max_retries: int | None  # None: the server's default
    priority: int
    labels: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cmd": list(self.cmd),
            "input": self.input,
            "env": dict(self.env),
            "timeout_s": self.timeout.total_seconds() if self.timeout is not None else None,
            "max_retries": self.max_retries,
            "priority": self.priority,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class TemplateParameter:
    """One `{{ name }}` of a template: its type, whether a submission must give
    it, and the value it takes otherwise (`default`; None for none)."""

    name: str
    type: ParameterType = ParameterType.STRING
    required: bool = False
    default: Any = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.name,
            "required": self.required,
            "default": self.default,
            "description": self.description,
        }


@dataclass(frozen=True)
class Template:
    """One version of a named job template."""

    org_id: str
    name: str
    version: int
    job: JobSpecView
    parameters: tuple[TemplateParameter, ...]
    description: str
    create_time: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "name": self.name,
            "version": self.version,
            "job": self.job.to_dict(),
            "parameters": [p.to_dict() for p in self.parameters],
            "description": self.description,
            "create_time": rfc3339(self.create_time),
        }


@dataclass(frozen=True)
class ScheduleTemplate:
    """The template a schedule submits: its name, version (0: the latest at
    each tick) and parameters."""

    name: str
    version: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": dict(self.params)}


@dataclass(frozen=True)
class Schedule:
    """A schedule: when it ticks, what each tick submits, and its policies."""

    id: str
    org_id: str
    cron: str  # a 5-field cron expression in time_zone, or ""
    time_zone: str
    interval: timedelta | None  # or a fixed interval
    job: JobSpecView | None
    template: ScheduleTemplate | None
    overlap: OverlapPolicy
    catch_up: CatchUpPolicy
    paused: bool
    next_fire_time: datetime | None
    last_fire_time: datetime | None
    last_job_id: str
    create_time: datetime | None
    update_time: datetime | None
    upcoming: tuple[datetime, ...] = ()  # the next fire times (get and create)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org_id": self.org_id,
            "cron": self.cron,
            "time_zone": self.time_zone,
            "interval_s": self.interval.total_seconds() if self.interval is not None else None,
            "job": self.job.to_dict() if self.job is not None else None,
            "template": self.template.to_dict() if self.template is not None else None,
            "overlap": self.overlap.name,
            "catch_up": self.catch_up.name,
            "paused": self.paused,
            "next_fire_time": rfc3339(self.next_fire_time),
            "last_fire_time": rfc3339(self.last_fire_time),
            "last_job_id": self.last_job_id,
            "create_time": rfc3339(self.create_time),
            "update_time": rfc3339(self.update_time),
            "upcoming": [rfc3339(t) for t in self.upcoming],
        }


@dataclass(frozen=True)
class OrgSettings:
    """What an organisation may use (zbrain.v1.OrgSettings); 0 means none of
    its own: the server's default where it has one, else no limit."""

    org_id: str
    max_running_jobs: int = 0
    max_starts_per_second: float = 0.0
    max_waiting_jobs: int = 0
    max_log_bytes: int = 0  # all its stored jobs together
    max_artifact_bytes: int = 0  # all its stored jobs together
    retention_days: int = 0
    paused: bool = False
    paused_selectors: tuple[Mapping[str, str], ...] = ()
    update_time: datetime | None = None
    log_bytes_used: int = 0  # what its stored jobs hold now
    artifact_bytes_used: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "max_running_jobs": self.max_running_jobs,
            "max_starts_per_second": self.max_starts_per_second,
            "max_waiting_jobs": self.max_waiting_jobs,
            "max_log_bytes": self.max_log_bytes,
            "max_artifact_bytes": self.max_artifact_bytes,
            "retention_days": self.retention_days,
            "paused": self.paused,
            "paused_selectors": [dict(selector) for selector in self.paused_selectors],
            "update_time": rfc3339(self.update_time),
            "log_bytes_used": self.log_bytes_used,
            "artifact_bytes_used": self.artifact_bytes_used,
        }


@dataclass(frozen=True)
class WorkerInfo:
    """A worker connected to the server (zbrain.v1.Worker)."""

    id: str
    address: str
    org_ids: tuple[str, ...]
    labels: Mapping[str, str]
    slots_used: int
    slots: int
    lease_job_ids: tuple[str, ...]
    connect_time: datetime | None
    last_heard_time: datetime | None
    draining: bool
    replica_id: str = ""  # the server replica it is connected to

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "org_ids": list(self.org_ids),
            "labels": dict(self.labels),
            "slots_used": self.slots_used,
            "slots": self.slots,
            "lease_job_ids": list(self.lease_job_ids),
            "connect_time": rfc3339(self.connect_time),
            "last_heard_time": rfc3339(self.last_heard_time),
            "draining": self.draining,
            "replica_id": self.replica_id,
        }
