"""Messages of zbrain.v1 as the client's values (`zbrain.models`), and back.

Kept apart from the models so that they, and the server's core that shares
their enums, never import the generated code.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor, duration_pb2, message, timestamp_pb2

from .errors import FieldViolation, InvalidArgumentError
from .models import (
    NO_RESOURCES,
    Artifact,
    Attempt,
    CatchUpPolicy,
    Cause,
    Dependency,
    DependencyCondition,
    Event,
    Job,
    JobSpecView,
    JobState,
    LogLine,
    LogStream,
    OrgSettings,
    OverlapPolicy,
    ParameterType,
    ParentResult,
    Resources,
    Schedule,
    ScheduleTemplate,
    Template,
    TemplateParameter,
    Transition,
    WaitingCause,
    WorkerInfo,
    rfc3339,
)

if TYPE_CHECKING:  # only annotations: converting needs no generated module loaded
    from .v1 import event_pb2, job_pb2, job_service_pb2, org_pb2, schedule_pb2, template_pb2


def _time(message: Any, field: str, epoch: datetime) -> datetime | None:
    if not message.HasField(field):
        return None
    return _at(getattr(message, field), epoch)


def _at(value: timestamp_pb2.Timestamp, epoch: datetime) -> datetime:
    """The time of a Timestamp in the zone of `epoch` (`_local_epoch`): as
    value.ToDatetime(tzinfo=zone) gives, at a fifth of its cost (a worker
    converts every time of every job it is leased)."""
    return epoch + timedelta(0, value.seconds, value.nanos // 1000)


def utc_time(value: timestamp_pb2.Timestamp) -> datetime:
    """The time of a Timestamp in UTC (for output that is always UTC)."""
    return _at(value, _UTC_EPOCH)


_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCHS: dict[tuple[int, str], datetime] = {}  # by (UTC offset, zone name)


def _local_epoch() -> datetime:
    """The Unix epoch in the local time zone now (a fixed offset, as
    `datetime.astimezone()` gives): the base every time of a message is
    converted from, looked up once per message, not per time field."""
    now = time.localtime()
    key = (now.tm_gmtoff, now.tm_zone)
    epoch = _EPOCHS.get(key)
    if epoch is None:  # a new zone: once per process, and at each change of summer time
        zone = timezone(timedelta(seconds=now.tm_gmtoff), now.tm_zone)
        epoch = _EPOCHS[key] = _UTC_EPOCH.astimezone(zone)
    return epoch


def _duration(value: duration_pb2.Duration) -> timedelta:
    """As value.ToTimedelta() gives (nanos have the sign of seconds), at half its cost."""
    nanos = value.nanos
    return timedelta(0, value.seconds, nanos // 1000 if nanos >= 0 else -(-nanos // 1000))


def _enum(kind: type[Any], number: int) -> Any:
    """The member for a wire number (UNSPECIFIED, 0, is falsy), or None for
    numbers this client does not know (a newer server may send those)."""
    return kind._value2member_map_.get(number)


def artifact(message: job_pb2.Artifact) -> Artifact:
    return Artifact(message.name, message.sha256, message.size_bytes)


def transition(message: job_pb2.Transition, epoch: datetime) -> Transition:
    return Transition(
        from_state=_enum(JobState, message.from_state),
        to_state=_enum(JobState, message.to_state),
        cause=_enum(Cause, message.cause) or Cause.UNSPECIFIED,
        reason=message.reason,
        time=_time(message, "time", epoch),
    )


def job(message: job_pb2.Job) -> Job:
    epoch = _local_epoch()
    return Job(
        id=message.id,
        org_id=message.org_id,
        cmd=tuple(message.cmd),
        input=json.loads(message.input_json) if message.input_json else None,
        env=dict(message.env),
        timeout=_duration(message.timeout),
        max_retries=message.max_retries,
        priority=message.priority,
        labels=dict(message.labels),
        state=_enum(JobState, message.state) or JobState.UNSPECIFIED,
        attempt=message.attempt,
        create_time=_time(message, "create_time", epoch),
        update_time=_time(message, "update_time", epoch),
        start_time=_time(message, "start_time", epoch),
        finish_time=_time(message, "finish_time", epoch),
        next_run_time=_time(message, "next_run_time", epoch),
        last_error=message.last_error,
        output=json.loads(message.output_json) if message.output_json else None,
        artifacts=tuple(artifact(a) for a in message.artifacts),
        worker_id=message.worker_id,
        cancel_requested=message.cancel_requested,
        last_transition=(
            transition(message.last_transition, epoch)
            if message.HasField("last_transition")
            else None
        ),
        depends_on=tuple(dependency(d) for d in message.depends_on),
        child_ids=tuple(message.child_ids),
        rerun_of=message.rerun_of,
        rerun_ids=tuple(message.rerun_ids),
        attempts=tuple([attempt(a, epoch) for a in message.attempts]),
        concurrency_key=message.concurrency_key,
        concurrency_limit=message.concurrency_limit,
        requires=dict(message.requires),
        waiting_reason=message.waiting_reason,
        waiting_cause=_enum(WaitingCause, message.waiting_cause) or WaitingCause.UNSPECIFIED,
        resources=resources(message.resources) if message.HasField("resources") else NO_RESOURCES,
        network=message.network,
    )


def attempt(message: job_pb2.Attempt, epoch: datetime) -> Attempt:
    return Attempt(
        number=message.number,
        worker_id=message.worker_id,
        start_time=_time(message, "start_time", epoch),
        end_time=_time(message, "end_time", epoch),
        cause=_enum(Cause, message.cause) or Cause.UNSPECIFIED,
        end_state=_enum(JobState, message.end_state),
        error=message.error,
    )


def resources(message: job_pb2.Resources) -> Resources:
    return Resources(
        memory_bytes=message.memory_bytes,
        cpu_seconds=message.cpu_seconds,
        processes=message.processes,
        open_files=message.open_files,
        file_size_bytes=message.file_size_bytes,
    )


def resources_to_proto(value: Resources) -> job_pb2.Resources:
    from .v1 import job_pb2  # the caller is sending a job: the module is loaded already

    fields = value.to_dict()
    check_integers(job_pb2.Resources, fields, "resources.")
    return job_pb2.Resources(**fields)


# The values each integer type of the wire can hold.
_INTEGER_RANGES = {
    descriptor.FieldDescriptor.CPPTYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    descriptor.FieldDescriptor.CPPTYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    descriptor.FieldDescriptor.CPPTYPE_UINT32: (0, (1 << 32) - 1),
    descriptor.FieldDescriptor.CPPTYPE_UINT64: (0, (1 << 64) - 1),
}


def check_integers(kind: type[message.Message], fields: dict[str, Any], prefix: str = "") -> None:
    """InvalidArgumentError naming every integer of `fields` that its field of
    `kind` cannot hold. Protobuf would raise a bare ValueError that names no
    field, which a caller (or the CLI, naming the flag) cannot act on."""
    violations = []
    for name, value in fields.items():
        bounds = _INTEGER_RANGES.get(kind.DESCRIPTOR.fields_by_name[name].cpp_type)
        if bounds and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            low, high = bounds
            description = f"must be between {low} and {high}, not {value}"
            violations.append(FieldViolation(prefix + name, description))
    if violations:
        raise InvalidArgumentError("a value does not fit its field", violations=violations)


def dependency(message: job_pb2.Dependency) -> Dependency:
    return Dependency(
        message.job_id,
        _enum(DependencyCondition, message.condition) or DependencyCondition.SUCCEEDED,
    )


def leased_job(lease: job_service_pb2.Lease) -> Job:
    """The job of a lease, with its parents' results."""
    converted = job(lease.job)
    if not lease.parents:
        return converted
    return dataclasses.replace(converted, parents=tuple(parent_result(p) for p in lease.parents))


def parent_result(message: job_pb2.ParentResult) -> ParentResult:
    return ParentResult(
        job_id=message.job_id,
        state=_enum(JobState, message.state) or JobState.UNSPECIFIED,
        output=json.loads(message.output_json) if message.output_json else None,
    )


def log_line(message: job_pb2.LogLine) -> LogLine:
    return LogLine(
        sequence=message.sequence,
        stream=LogStream(message.stream),
        attempt=message.attempt,
        time=_time(message, "time", _local_epoch()),
        text=message.text,
    )


def event(message: event_pb2.Event) -> Event:
    kind = message.WhichOneof("payload") or ""
    data = plain(getattr(message, kind)) if kind else {}
    return Event(
        sequence=message.sequence,
        topic=message.topic,
        org_id=message.org_id,
        job_id=message.job_id,
        time=_time(message, "time", _local_epoch()),
        type=kind,
        data=data,
    )


def job_spec_view(message: job_pb2.JobSpec) -> JobSpecView:
    return JobSpecView(
        cmd=tuple(message.cmd),
        input=json.loads(message.input_json) if message.input_json else None,
        env=dict(message.env),
        timeout=_duration(message.timeout) if message.HasField("timeout") else None,
        max_retries=message.max_retries if message.HasField("max_retries") else None,
        priority=message.priority,
        labels=dict(message.labels),
    )


def template(message: template_pb2.Template) -> Template:
    return Template(
        org_id=message.org_id,
        name=message.name,
        version=message.version,
        job=job_spec_view(message.job),
        parameters=tuple(
            TemplateParameter(
                name=p.name,
                type=_enum(ParameterType, p.type) or ParameterType.STRING,
                required=p.required,
                default=json.loads(p.default_json) if p.default_json else None,
                description=p.description,
            )
            for p in message.parameters
        ),
        description=message.description,
        create_time=_time(message, "create_time", _local_epoch()),
    )


def schedule(message: schedule_pb2.Schedule, upcoming: Iterable[Any] = ()) -> Schedule:
    epoch = _local_epoch()
    return Schedule(
        id=message.id,
        org_id=message.org_id,
        cron=message.cron,
        time_zone=message.time_zone,
        interval=_duration(message.interval) if message.HasField("interval") else None,
        job=job_spec_view(message.job) if message.HasField("job") else None,
        template=(
            ScheduleTemplate(
                message.template.name,
                message.template.version,
                {name: _param(text) for name, text in message.template.parameters.items()},
            )
            if message.HasField("template")
            else None
        ),
        overlap=_enum(OverlapPolicy, message.overlap) or OverlapPolicy.SKIP,
        catch_up=_enum(CatchUpPolicy, message.catch_up) or CatchUpPolicy.SKIP,
        paused=message.paused,
        next_fire_time=_time(message, "next_fire_time", epoch),
        last_fire_time=_time(message, "last_fire_time", epoch),
        last_job_id=message.last_job_id,
        create_time=_time(message, "create_time", epoch),
        update_time=_time(message, "update_time", epoch),
        upcoming=tuple(_at(t, epoch) for t in upcoming),
    )


def param_text(value: Any) -> str:
    """A template parameter's value as the wire takes it: text as it is,
    anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _param(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # bare text, as a string parameter may be given


_INTEGERS = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
}


def plain(value: message.Message) -> dict[str, Any]:
    """A message as the JSON every ZBrain output uses, unlike protobuf's own
    JSON mapping: enums by their short name (`FAILED`, not `JOB_STATE_FAILED`),
    64-bit integers as numbers, times in RFC 3339 UTC, durations in seconds,
    fields by their proto names, unset fields left out."""
    return {field.name: _plain_field(field, item) for field, item in value.ListFields()}


def _plain_field(field: descriptor.FieldDescriptor, item: Any) -> Any:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value_field = entry.fields_by_name["value"]
        return {key: _plain_value(value_field, v) for key, v in item.items()}
    if field.is_repeated:
        return [_plain_value(field, v) for v in item]
    return _plain_value(field, item)


def _plain_value(field: descriptor.FieldDescriptor, item: Any) -> Any:
    if field.enum_type is not None:
        return enum_name(field.enum_type, item)
    if field.type in _INTEGERS:
        return int(item)
    if field.message_type is None:
        return item
    full_name = field.message_type.full_name
    if full_name == "google.protobuf.Timestamp":
        return rfc3339(utc_time(item))
    if full_name == "google.protobuf.Duration":
        return item.seconds + item.nanos / 1e9
    return plain(item)


def enum_name(kind: descriptor.EnumDescriptor, number: int) -> str:
    """An enum value's name without its type's prefix: JobState 4 is `FAILED`;
    a number this client does not know is its number as text."""
    value = kind.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in kind.name).lstrip("_") + "_"
    return value.name.removeprefix(prefix)


def org_settings(message: org_pb2.OrgSettings) -> OrgSettings:
    return OrgSettings(
        org_id=message.org_id,
        max_running_jobs=message.max_running_jobs,
        max_starts_per_second=message.max_starts_per_second,
        max_waiting_jobs=message.max_waiting_jobs,
        max_log_bytes=message.max_log_bytes,
        max_artifact_bytes=message.max_artifact_bytes,
        retention_days=message.retention_days,
        paused=message.paused,
        paused_selectors=tuple(dict(s.labels) for s in message.paused_selectors),
        update_time=_time(message, "update_time", _local_epoch()),
        log_bytes_used=message.log_bytes_used,
        artifact_bytes_used=message.artifact_bytes_used,
    )


def worker(message: job_service_pb2.Worker) -> WorkerInfo:
    epoch = _local_epoch()
    return WorkerInfo(
        id=message.id,
        address=message.address,
        org_ids=tuple(message.org_ids),
        labels=dict(message.labels),
        slots_used=message.slots_used,
        slots=message.slots,
        lease_job_ids=tuple(message.lease_job_ids),
        connect_time=_time(message, "connect_time", epoch),
        last_heard_time=_time(message, "last_heard_time", epoch),
        draining=message.draining,
        replica_id=message.replica_id,
    )
