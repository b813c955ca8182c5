"""Events: what each recorded change says, as domain values.

The store writes an event in the same transaction as the change it records.
Records carry their body as one of the values below; the stored form of a
body is made by an `EventCodec` that the server's edge provides (a
serialized zbrain.v1.Event, so that streaming an event out is one parse), so
the core and the store never import the wire: turning a body into a
message happens once, at the edge's codec, when the event is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .lifecycle import Change
from .model import Artifact, Cause, EventRecord, Job, JobState, LogLine

OUTPUT_SUMMARY_BYTES = 1024
LOGGED_BYTES = 256 << 10
"""A JobLogged event holds lines up to about this many bytes of text; more
lines of one write make more events. So every event stays small enough for
any stream to carry, whatever a worker sends at once."""


@dataclass(slots=True)
class JobSubmitted:
    """A job was accepted: PENDING, SCHEDULED (until `next_run_time_us`),
    BLOCKED (waiting for `depends_on`) or CANCELED (a job it needed failed)."""

    cmd: tuple[str, ...]
    priority: int
    state: JobState = JobState.PENDING
    next_run_time_us: int | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(slots=True)
class JobStateChanged:
    """A job moved from one state to another (or, with cause CANCEL_REQUESTED,
    its running attempt was told to stop)."""

    from_state: JobState
    to_state: JobState
    cause: Cause
    reason: str
    attempt: int
    worker_id: str
    lease_epoch: int
    error: str = ""  # when an attempt failed
    next_run_time_us: int | None = None  # when a retry was scheduled
    output_summary: str = ""  # the start of the output, when it succeeded
    artifacts: tuple[Artifact, ...] = ()  # when it finished
    concurrency_key: str = ""  # the job's, so that any replica sees its room freed


@dataclass(slots=True)
class JobLogged:
    """A job's process printed lines."""

    lines: tuple[LogLine, ...]


@dataclass(slots=True)
class WorkerPresence:
    """A worker connected or left."""

    worker_id: str
    connected: bool


@dataclass(slots=True)
class ScheduleFired:
    """A schedule's tick came: the job it submitted, or why it submitted none."""

    schedule_id: str
    tick_time_us: int
    job_id: str = ""
    skipped_reason: str = ""
    triggered: bool = False  # by TriggerSchedule rather than a tick
    missed_ticks: int = 0  # missed before it, skipped or folded into it


Body = JobSubmitted | JobStateChanged | JobLogged | WorkerPresence | ScheduleFired


def job_topic(job_id: str, kind: str) -> str:
    """The topic of a job's events: `jobs/{id}/state` or `jobs/{id}/logs`."""
    return f"jobs/{job_id}/{kind}"


# -- building the events of changes ---------------------------------------------------


class EventCodec(Protocol):
    """The stored form of event bodies, supplied by the edge that defines the wire."""

    def encode(self, body: Body) -> bytes:
        """The bytes to store for a body."""

    def decode(self, payload: bytes) -> Body:
        """The body of stored bytes."""


def submitted(jobs: Sequence[Job]) -> list[EventRecord]:
    """The submitted events of new jobs. The jobs of a batch mostly share their
    command, so they share one body, which the store encodes once."""
    bodies: dict[tuple[object, ...], JobSubmitted] = {}
    records = []
    for job in jobs:
        delayed = job.next_run_time_us if job.state is JobState.SCHEDULED else None
        parents = tuple(d.job_id for d in job.depends_on)
        key = (job.cmd, job.priority, job.state, delayed, parents)
        body = bodies.get(key)
        if body is None:
            body = bodies[key] = JobSubmitted(job.cmd, job.priority, job.state, delayed, parents)
        records.append(
            EventRecord(
                0, job_topic(job.id, "state"), job.org_id, job.id, job.create_time_us, body=body
            )
        )
    return records


def state_changed(change: Change) -> EventRecord:
    before, after = change.before, change.after
    body = JobStateChanged(
        from_state=before.state,
        to_state=after.state,
        cause=after.cause,
        reason=after.reason,
        attempt=after.attempt,
        worker_id=after.worker_id,
        lease_epoch=after.lease_epoch,
        concurrency_key=after.concurrency_key,
    )
    if after.state in (JobState.RETRYING, JobState.FAILED):
        body.error = after.last_error
    if after.state in (JobState.RETRYING, JobState.SCHEDULED):
        body.next_run_time_us = after.next_run_time_us
    if after.state is JobState.SUCCEEDED:
        body.output_summary = after.output_json.encode()[:OUTPUT_SUMMARY_BYTES].decode(
            errors="ignore"
        )
    if after.state.is_terminal:
        body.artifacts = after.artifacts
    return EventRecord(
        0, job_topic(after.id, "state"), after.org_id, after.id, after.update_time_us, body=body
    )


def logged(job: Job, lines: Sequence[LogLine]) -> list[EventRecord]:
    """The logged events of lines appended together, one per LOGGED_BYTES of text."""
    topic = job_topic(job.id, "logs")
    records: list[EventRecord] = []
    start, size = 0, 0
    for end, line in enumerate(lines, start=1):
        size += len(line.text)
        if size >= LOGGED_BYTES or end == len(lines):
            body = JobLogged(tuple(lines[start:end]))
            records.append(
                EventRecord(0, topic, job.org_id, job.id, lines[end - 1].time_us, body=body)
            )
            start, size = end, 0
    return records


def schedule_fired(org_id: str, body: ScheduleFired, time_us: int) -> EventRecord:
    return EventRecord(0, f"schedules/{body.schedule_id}", org_id, body.job_id, time_us, body=body)


def worker_presence(worker_id: str, org_id: str, connected: bool, time_us: int) -> EventRecord:
    body = WorkerPresence(worker_id, connected)
    return EventRecord(0, f"workers/{worker_id}", org_id, "", time_us, body=body)
