"""Domain values as zbrain.v1 messages: the one place that builds the wire's
messages from the server's objects (the HTTP edge renders the same messages
as JSON).

The enums of `zbrain.models` are IntEnums with the wire's numbers, so a
member is given to a message as it is (`cast` only tells the type checker):
reading `.value` cost as much as the rest of a message's fields."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from google.protobuf import duration_pb2, timestamp_pb2

from zbrain.v1 import (
    event_pb2,
    job_pb2,
    job_service_pb2,
    org_pb2,
    schedule_pb2,
    template_pb2,
    token_service_pb2,
)

from ..core import events
from ..core.limits import OrgSettings, OrgUsage
from ..core.model import (
    Artifact,
    Cause,
    EventRecord,
    Job,
    JobState,
    Lease,
    LogLine,
    LogStream,
    WorkerPresence,
)
from ..core.schedules import Schedule
from ..core.templates import Template
from ..core.tokens import Token


def timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    if us is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(us)
    return ts


def timestamps(times_us: Iterable[int]) -> list[timestamp_pb2.Timestamp]:
    stamps = []
    for us in times_us:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromMicroseconds(us)
        stamps.append(stamp)
    return stamps


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
        state=cast(job_pb2.JobState.ValueType, job.state),
        attempt=job.attempt,
        last_error=job.last_error,
        output_json=job.output_json,
        artifacts=[artifact_to_proto(a) for a in job.artifacts],
        lease_epoch=job.lease_epoch,
        worker_id=job.worker_id,
        cancel_requested=job.cancel_requested,
        request_id=job.request_id,
        rerun_of=job.rerun_of,
        concurrency_key=job.concurrency_key,
        concurrency_limit=job.concurrency_limit,
        requires=job.requires,
        network=job.network,
    )
    if job.resources:
        message.resources.CopyFrom(job_pb2.Resources(**job.resources.to_dict()))
    for dependency in job.depends_on:
        message.depends_on.add(
            job_id=dependency.job_id,
            condition=cast(job_pb2.DependencyCondition.ValueType, dependency.condition),
        )
    transition = message.last_transition
    if job.previous_state is not None:
        transition.from_state = cast(job_pb2.JobState.ValueType, job.previous_state)
    transition.to_state = cast(job_pb2.JobState.ValueType, job.state)
    transition.cause = cast(job_pb2.TransitionCause.ValueType, job.cause)
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
    for record in job.attempts:
        ended = message.attempts.add(
            number=record.number,
            worker_id=record.worker_id,
            lease_epoch=record.lease_epoch,
            cause=cast(job_pb2.TransitionCause.ValueType, record.cause),
            end_state=cast(job_pb2.JobState.ValueType, record.end_state),
            error=record.error,
        )
        ended.start_time.FromMicroseconds(record.start_time_us)
        ended.end_time.FromMicroseconds(record.end_time_us)
    if job.state is JobState.RUNNING:  # the attempt under way
        running = message.attempts.add(
            number=job.attempt, worker_id=job.worker_id, lease_epoch=job.lease_epoch
        )
        if job.start_time_us is not None:
            running.start_time.FromMicroseconds(job.start_time_us)
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
        parents=[
            job_pb2.ParentResult(
                job_id=parent.job_id,
                state=cast(job_pb2.JobState.ValueType, parent.state),
                output_json=parent.output_json,
                output_omitted=parent.output_omitted,
            )
            for parent in lease.parents
        ],
    )


def log_lines_to_proto(lines: Iterable[LogLine]) -> list[job_pb2.LogLine]:
    return [
        job_pb2.LogLine(
            sequence=line.sequence,
            stream=cast(job_pb2.LogStream.ValueType, line.stream),
            attempt=line.attempt,
            time=timestamp(line.time_us),
            text=line.text,
        )
        for line in lines
    ]


def event_to_proto(record: EventRecord) -> event_pb2.Event:
    """The full Event message of a stored event: its payload (the body, as
    `EventProtobufCodec` stored it) with the record's own fields."""
    event = event_pb2.Event.FromString(record.payload)
    event.sequence = record.sequence
    event.topic = record.topic
    event.org_id = record.org_id
    event.job_id = record.job_id
    event.time.FromMicroseconds(record.time_us)
    return event


class EventProtobufCodec:
    """Event bodies stored as a zbrain.v1.Event that carries only its payload,
    so that streaming a stored event is one parse (`event_to_proto`). The
    store gets this codec from the server's wiring (`core.events.EventCodec`)."""

    def encode(self, body: events.Body) -> bytes:
        return _event_body(body).SerializeToString()

    def decode(self, payload: bytes) -> events.Body:
        event = event_pb2.Event.FromString(payload)
        kind = event.WhichOneof("payload")
        if kind == "job_state_changed":
            changed = event.job_state_changed
            return events.JobStateChanged(
                from_state=JobState(changed.from_state),
                to_state=JobState(changed.to_state),
                cause=_cause(changed.cause),
                reason=changed.reason,
                attempt=changed.attempt,
                worker_id=changed.worker_id,
                lease_epoch=changed.lease_epoch,
                error=changed.error,
                next_run_time_us=(
                    changed.next_run_time.ToMicroseconds()
                    if changed.HasField("next_run_time")
                    else None
                ),
                output_summary=changed.output_summary,
                artifacts=tuple(
                    Artifact(a.name, a.sha256, a.size_bytes) for a in changed.artifacts
                ),
                concurrency_key=changed.concurrency_key,
            )
        if kind == "job_logged":
            return events.JobLogged(
                tuple(
                    LogLine(
                        line.sequence,
                        LogStream(line.stream),
                        line.attempt,
                        line.time.ToMicroseconds(),
                        line.text,
                    )
                    for line in event.job_logged.lines
                )
            )
        if kind == "job_submitted":
            submitted = event.job_submitted
            return events.JobSubmitted(
                tuple(submitted.cmd),
                submitted.priority,
                JobState(submitted.state or JobState.PENDING),
                (
                    submitted.next_run_time.ToMicroseconds()
                    if submitted.HasField("next_run_time")
                    else None
                ),
                tuple(submitted.depends_on),
            )
        if kind == "schedule_fired":
            fired = event.schedule_fired
            return events.ScheduleFired(
                fired.schedule_id,
                fired.tick_time.ToMicroseconds(),
                fired.job_id,
                fired.skipped_reason,
                fired.triggered,
                fired.missed_ticks,
            )
        presence = event.worker_presence
        return events.WorkerPresence(presence.worker_id, presence.connected)


def _event_body(body: events.Body) -> event_pb2.Event:
    """An Event message carrying only the body's payload."""
    if isinstance(body, events.JobStateChanged):
        changed = event_pb2.JobStateChanged(
            from_state=cast(job_pb2.JobState.ValueType, body.from_state),
            to_state=cast(job_pb2.JobState.ValueType, body.to_state),
            cause=cast(job_pb2.TransitionCause.ValueType, body.cause),
            reason=body.reason,
            attempt=body.attempt,
            worker_id=body.worker_id,
            lease_epoch=body.lease_epoch,
            error=body.error,
            output_summary=body.output_summary,
            artifacts=[artifact_to_proto(a) for a in body.artifacts],
            concurrency_key=body.concurrency_key,
        )
        if body.next_run_time_us is not None:
            changed.next_run_time.FromMicroseconds(body.next_run_time_us)
        return event_pb2.Event(job_state_changed=changed)
    if isinstance(body, events.JobLogged):
        return event_pb2.Event(job_logged=event_pb2.JobLogged(lines=log_lines_to_proto(body.lines)))
    if isinstance(body, events.JobSubmitted):
        submitted = event_pb2.JobSubmitted(
            cmd=body.cmd,
            priority=body.priority,
            state=cast(job_pb2.JobState.ValueType, body.state),
            depends_on=body.depends_on,
        )
        if body.next_run_time_us is not None:
            submitted.next_run_time.FromMicroseconds(body.next_run_time_us)
        return event_pb2.Event(job_submitted=submitted)
    if isinstance(body, events.ScheduleFired):
        fired = event_pb2.ScheduleFired(
            schedule_id=body.schedule_id,
            job_id=body.job_id,
            skipped_reason=body.skipped_reason,
            triggered=body.triggered,
            missed_ticks=body.missed_ticks,
        )
        fired.tick_time.FromMicroseconds(body.tick_time_us)
        return event_pb2.Event(schedule_fired=fired)
    return event_pb2.Event(
        worker_presence=event_pb2.WorkerPresence(worker_id=body.worker_id, connected=body.connected)
    )


def _cause(number: int) -> Cause:
    """A stored cause; events written before causes were recorded have none."""
    try:
        return Cause(number)
    except ValueError:
        return Cause.UNSPECIFIED


EVENT_CODEC = EventProtobufCodec()


def template_to_proto(template: Template) -> template_pb2.Template:
    message = template_pb2.Template(
        org_id=template.org_id,
        name=template.name,
        version=template.version,
        job=job_pb2.JobSpec.FromString(template.job_spec),
        parameters=[
            template_pb2.Parameter(
                name=p.name,
                type=cast(template_pb2.ParameterType.ValueType, p.type),
                required=p.required,
                default_json=p.default_json,
                description=p.description,
            )
            for p in template.parameters
        ],
        description=template.description,
    )
    message.create_time.FromMicroseconds(template.create_time_us)
    return message


def schedule_to_proto(schedule: Schedule) -> schedule_pb2.Schedule:
    message = schedule_pb2.Schedule(
        id=schedule.id,
        org_id=schedule.org_id,
        cron=schedule.cron,
        time_zone=schedule.time_zone,
        overlap=cast(schedule_pb2.OverlapPolicy.ValueType, schedule.overlap),
        catch_up=cast(schedule_pb2.CatchUpPolicy.ValueType, schedule.catch_up),
        paused=schedule.paused,
        last_job_id=schedule.last_job_id,
    )
    if schedule.interval_us:
        message.interval.FromMicroseconds(schedule.interval_us)
    if schedule.template is not None:
        message.template.name = schedule.template.name
        message.template.version = schedule.template.version
        message.template.parameters.update(schedule.template.parameters)
    else:
        message.job.ParseFromString(schedule.job_spec)
    for field, us in (
        ("next_fire_time", schedule.next_fire_time_us),
        ("last_fire_time", schedule.last_fire_time_us),
        ("create_time", schedule.create_time_us),
        ("update_time", schedule.update_time_us),
    ):
        if us is not None:
            getattr(message, field).FromMicroseconds(us)
    return message


def token_to_proto(token: Token) -> token_service_pb2.TokenInfo:
    return token_service_pb2.TokenInfo(
        id=token.id,
        org_id=token.org_id,
        role=cast(token_service_pb2.TokenRole.ValueType, token.role),
        description=token.description,
        create_time=timestamp(token.create_time_us),
        revoke_time=timestamp(token.revoke_time_us),
    )


def worker_to_proto(worker: WorkerPresence) -> job_service_pb2.Worker:
    """A connected worker as ListWorkers shows it."""
    return job_service_pb2.Worker(
        id=worker.worker_id,
        address=worker.address,
        org_ids=worker.org_ids,
        labels=worker.labels,
        slots_used=len(worker.lease_job_ids),
        slots=worker.slots,
        lease_job_ids=worker.lease_job_ids,
        connect_time=timestamp(worker.connected_at_us),
        last_heard_time=timestamp(worker.last_heard_at_us),
        draining=worker.draining,
        replica_id=worker.replica_id,
    )


def org_settings_to_proto(settings: OrgSettings, usage: OrgUsage) -> org_pb2.OrgSettings:
    """An org's settings, and its storage usage, as OrgService shows them."""
    return org_pb2.OrgSettings(
        org_id=settings.org_id,
        max_running_jobs=settings.max_running_jobs,
        max_starts_per_second=settings.max_starts_per_second,
        max_waiting_jobs=settings.max_waiting_jobs,
        max_log_bytes=settings.max_log_bytes,
        max_artifact_bytes=settings.max_artifact_bytes,
        retention_days=settings.retention_days,
        paused=settings.paused,
        paused_selectors=[
            org_pb2.LabelSelector(labels=selector) for selector in settings.paused_selectors
        ],
        update_time=timestamp(settings.update_time_us),
        log_bytes_used=usage.log_bytes,
        artifact_bytes_used=usage.artifact_bytes,
    )
