"""Events: what each recorded change says, as domain values.

The store writes an event in the same transaction as the change it records;
its body is stored as compact JSON made here (`encode`), so the store and
the dispatcher never need the wire. Turning an event into a zbrain.v1.Event
happens once, at the RPC edge (`rpc.codec`).

Bodies written before this format existed are protobuf bytes; `decode`
answers None for those, and the edge still reads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .lifecycle import Change
from .model import Artifact, Cause, EventRecord, Job, JobState, LogLine, LogStream

OUTPUT_SUMMARY_BYTES = 1024


@dataclass(slots=True)
class JobSubmitted:
    """A job was accepted."""

    cmd: tuple[str, ...]
    priority: int


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


@dataclass(slots=True)
class JobLogged:
    """A job's process printed lines."""

    lines: tuple[LogLine, ...]


@dataclass(slots=True)
class WorkerPresence:
    """A worker connected or left."""

    worker_id: str
    connected: bool


Body = JobSubmitted | JobStateChanged | JobLogged | WorkerPresence


def job_topic(job_id: str, kind: str) -> str:
    """The topic of a job's events: `jobs/{id}/state` or `jobs/{id}/logs`."""
    return f"jobs/{job_id}/{kind}"


# -- building the events of changes ---------------------------------------------------


def submitted(jobs: Sequence[Job]) -> list[EventRecord]:
    """The submitted events of new jobs. The jobs of a batch mostly share their
    command, so each distinct body is encoded once."""
    payloads: dict[tuple[tuple[str, ...], int], bytes] = {}
    records = []
    for job in jobs:
        key = (job.cmd, job.priority)
        payload = payloads.get(key)
        if payload is None:
            payload = payloads[key] = encode(JobSubmitted(job.cmd, job.priority))
        records.append(
            EventRecord(
                0, job_topic(job.id, "state"), job.org_id, job.id, job.create_time_us, payload
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
    )
    if after.state in (JobState.RETRYING, JobState.FAILED):
        body.error = after.last_error
    if after.state is JobState.RETRYING:
        body.next_run_time_us = after.next_run_time_us
    if after.state is JobState.SUCCEEDED:
        body.output_summary = after.output_json.encode()[:OUTPUT_SUMMARY_BYTES].decode(
            errors="ignore"
        )
    if after.state.is_terminal:
        body.artifacts = after.artifacts
    return _record(job_topic(after.id, "state"), after.org_id, after.id, after.update_time_us, body)


def logged(job: Job, lines: Sequence[LogLine]) -> EventRecord:
    body = JobLogged(tuple(lines))
    return _record(job_topic(job.id, "logs"), job.org_id, job.id, lines[-1].time_us, body)


def worker_presence(worker_id: str, org_id: str, connected: bool, time_us: int) -> EventRecord:
    return _record(
        f"workers/{worker_id}", org_id, "", time_us, WorkerPresence(worker_id, connected)
    )


def _record(topic: str, org_id: str, job_id: str, time_us: int, body: Body) -> EventRecord:
    return EventRecord(0, topic, org_id, job_id, time_us, encode(body))


# -- the stored form -----------------------------------------------------------------


def encode(body: Body) -> bytes:
    """The stored form of an event body: one JSON object, enums by name."""
    fields: dict[str, Any]
    if isinstance(body, JobStateChanged):
        fields = {
            "kind": "state",
            "from": body.from_state.name,
            "to": body.to_state.name,
            "cause": body.cause.name,
            "reason": body.reason,
            "attempt": body.attempt,
            "worker": body.worker_id,
            "epoch": body.lease_epoch,
        }
        if body.error:
            fields["error"] = body.error
        if body.next_run_time_us is not None:
            fields["next_run"] = body.next_run_time_us
        if body.output_summary:
            fields["output"] = body.output_summary
        if body.artifacts:
            fields["artifacts"] = [[a.name, a.sha256, a.size_bytes] for a in body.artifacts]
    elif isinstance(body, JobLogged):
        fields = {
            "kind": "logged",
            "lines": [
                [line.sequence, line.stream.name, line.attempt, line.time_us, line.text]
                for line in body.lines
            ],
        }
    elif isinstance(body, JobSubmitted):
        fields = {"kind": "submitted", "cmd": list(body.cmd), "priority": body.priority}
    else:
        fields = {"kind": "presence", "worker": body.worker_id, "connected": body.connected}
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def decode(payload: bytes) -> Body | None:
    """The body of a stored event; None for one stored in the older protobuf form."""
    if not payload.startswith(b"{"):
        return None
    fields = json.loads(payload)
    kind = fields["kind"]
    if kind == "state":
        return JobStateChanged(
            from_state=JobState[fields["from"]],
            to_state=JobState[fields["to"]],
            cause=Cause[fields["cause"]],
            reason=fields["reason"],
            attempt=fields["attempt"],
            worker_id=fields["worker"],
            lease_epoch=fields["epoch"],
            error=fields.get("error", ""),
            next_run_time_us=fields.get("next_run"),
            output_summary=fields.get("output", ""),
            artifacts=tuple(Artifact(*a) for a in fields.get("artifacts", ())),
        )
    if kind == "logged":
        return JobLogged(
            tuple(
                LogLine(sequence, LogStream[stream], attempt, time_us, text)
                for sequence, stream, attempt, time_us, text in fields["lines"]
            )
        )
    if kind == "submitted":
        return JobSubmitted(tuple(fields["cmd"]), fields["priority"])
    return WorkerPresence(fields["worker"], fields["connected"])
