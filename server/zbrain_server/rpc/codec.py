"""Domain values as zbrain.v1 messages: the one place that builds the wire's
messages from the server's objects (the HTTP edge renders the same messages
as JSON)."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import duration_pb2, timestamp_pb2

from zbrain.v1 import event_pb2, job_pb2, job_service_pb2, token_service_pb2

from ..core import events
from ..core.model import Artifact, EventRecord, Job, Lease, LogLine
from ..core.tokens import Token


def timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    if us is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(us)
    return ts


def duration(us: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(us)
    return d


def job_to_proto(job: Job) -> job_pb2.Job:
    message = job_pb2.Job(
        id=job.id,
        org_id=job.org_id,
        cmd=job.cmd,
        input_json=job.input_json,
        env=job.env,
        max_retries=job.max_retries,
        priority=job.priority,
        labels=job.labels,
        state=job_pb2.JobState.ValueType(job.state.value),
        attempt=job.attempt,
        last_error=job.last_error,
        output_json=job.output_json,
        artifacts=[artifact_to_proto(a) for a in job.artifacts],
        lease_epoch=job.lease_epoch,
        worker_id=job.worker_id,
        cancel_requested=job.cancel_requested,
        request_id=job.request_id,
    )
    transition = message.last_transition
    if job.previous_state is not None:
        transition.from_state = job_pb2.JobState.ValueType(job.previous_state.value)
    transition.to_state = job_pb2.JobState.ValueType(job.state.value)
    transition.cause = job_pb2.TransitionCause.ValueType(job.cause.value)
    transition.reason = job.reason
    transition.time.FromMicroseconds(job.transition_time_us)
    # Times are filled in place rather than made apart and copied in: this runs
    # on every Submit and Get, and that halves its cost.
    message.timeout.FromMicroseconds(job.timeout_us)
    message.create_time.FromMicroseconds(job.create_time_us)
    message.update_time.FromMicroseconds(job.update_time_us)
    if job.start_time_us is not None:
        message.start_time.FromMicroseconds(job.start_time_us)
    if job.finish_time_us is not None:
        message.finish_time.FromMicroseconds(job.finish_time_us)
    if job.next_run_time_us is not None:
        message.next_run_time.FromMicroseconds(job.next_run_time_us)
    if job.lease_expire_time_us is not None:
        message.lease_expire_time.FromMicroseconds(job.lease_expire_time_us)
    return message


def artifact_to_proto(artifact: Artifact) -> job_pb2.Artifact:
    return job_pb2.Artifact(
        name=artifact.name, sha256=artifact.sha256, size_bytes=artifact.size_bytes
    )


def lease_to_proto(lease: Lease) -> job_service_pb2.Lease:
    return job_service_pb2.Lease(
        job=job_to_proto(lease.job),
        lease_epoch=lease.lease_epoch,
        expire_time=timestamp(lease.expire_time_us),
        trace_context=lease.job.trace_context,
    )


def log_lines_to_proto(lines: Iterable[LogLine]) -> list[job_pb2.LogLine]:
    return [
        job_pb2.LogLine(
            sequence=line.sequence,
            stream=job_pb2.LogStream.ValueType(line.stream.value),
            attempt=line.attempt,
            time=timestamp(line.time_us),
            text=line.text,
        )
        for line in lines
    ]


def event_to_proto(record: EventRecord) -> event_pb2.Event:
    """The full Event message of a stored event."""
    body = events.decode(record.payload)
    # An event stored by an earlier version is the message itself.
    event = event_pb2.Event.FromString(record.payload) if body is None else _event_body(body)
    event.sequence = record.sequence
    event.topic = record.topic
    event.org_id = record.org_id
    event.job_id = record.job_id
    event.time.FromMicroseconds(record.time_us)
    return event


def _event_body(body: events.Body) -> event_pb2.Event:
    if isinstance(body, events.JobStateChanged):
        changed = event_pb2.JobStateChanged(
            from_state=job_pb2.JobState.ValueType(body.from_state.value),
            to_state=job_pb2.JobState.ValueType(body.to_state.value),
            cause=job_pb2.TransitionCause.ValueType(body.cause.value),
            reason=body.reason,
            attempt=body.attempt,
            worker_id=body.worker_id,
            lease_epoch=body.lease_epoch,
            error=body.error,
            output_summary=body.output_summary,
            artifacts=[artifact_to_proto(a) for a in body.artifacts],
        )
        if body.next_run_time_us is not None:
            changed.next_run_time.FromMicroseconds(body.next_run_time_us)
        return event_pb2.Event(job_state_changed=changed)
    if isinstance(body, events.JobLogged):
        return event_pb2.Event(job_logged=event_pb2.JobLogged(lines=log_lines_to_proto(body.lines)))
    if isinstance(body, events.JobSubmitted):
        return event_pb2.Event(
            job_submitted=event_pb2.JobSubmitted(cmd=body.cmd, priority=body.priority)
        )
    return event_pb2.Event(
        worker_presence=event_pb2.WorkerPresence(worker_id=body.worker_id, connected=body.connected)
    )


def token_to_proto(token: Token) -> token_service_pb2.TokenInfo:
    return token_service_pb2.TokenInfo(
        id=token.id,
        org_id=token.org_id,
        role=token_service_pb2.TokenRole.ValueType(token.role.value),
        description=token.description,
        create_time=timestamp(token.create_time_us),
        revoke_time=timestamp(token.revoke_time_us),
    )
