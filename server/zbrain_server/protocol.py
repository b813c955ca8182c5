"""Translation between protobuf messages and domain objects.

Everything that arrives over the wire is validated here, once, and every
problem is reported with the field it concerns (google.rpc.BadRequest), so
the rest of the server only ever sees well-formed domain objects.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from zbrain.errors import FieldViolation, InvalidArgumentError
from zbrain.v1 import job_pb2, job_service_pb2

from .config import ORG_ID_PATTERN, Limits
from .ids import is_job_id
from .model import (
    Artifact,
    AttemptOutcome,
    AttemptResult,
    Job,
    JobQuery,
    JobState,
    Lease,
    LogLine,
    LogRecord,
    LogStream,
    NewJob,
    now_us,
)

WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
MAX_WORKER_ORGS = 100
TRUNCATION_MARK = " …[line truncated]"
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables the worker sets for every job; a job may not override them.
RESERVED_ENV_PREFIX = "ZBRAIN_"
# They would let a job change how its own program is loaded (LD_PRELOAD,
# LD_LIBRARY_PATH, LD_AUDIT, ...), a classic way to escape what cmd says.
LOADER_ENV_PREFIXES = ("LD_", "DYLD_")
DEFAULT_PAGE_SIZE = 50

ATTEMPT_OUTCOME_FROM_PROTO = {
    job_service_pb2.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{o.value}"): o
    for o in AttemptOutcome
    if o is not AttemptOutcome.WORKER_LOST
}

E = TypeVar("E", bound=enum.IntEnum)


def _enum_or_none(kind: type[E], number: int) -> E | None:
    """The enum member for a wire number, or None for UNSPECIFIED and unknown numbers."""
    try:
        return kind(number)
    except ValueError:
        return None


class Violations:
    """Collects field violations so one answer can name every problem at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self, message: str) -> None:
        if self.items:
            raise InvalidArgumentError(message, violations=self.items)


# -- times ---------------------------------------------------------------------


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


def duration_us(d: duration_pb2.Duration) -> int:
    return d.seconds * 1_000_000 + d.nanos // 1000


# -- inbound -------------------------------------------------------------------


def check_org_id(org_id: str, field: str, violations: Violations) -> None:
    if not ORG_ID_PATTERN.match(org_id):
        violations.add(
            field,
            "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def valid_org(org_id: str, field: str) -> str:
    """The org id itself; INVALID_ARGUMENT naming `field` if it is malformed or empty."""
    violations = Violations()
    check_org_id(org_id, field, violations)
    violations.raise_if_any("invalid organisation id")
    return org_id


def check_job_id(job_id: str, field: str = "job_id") -> str:
    """Reject ids that cannot be a job id, so NOT_FOUND means a well-formed unknown id."""
    if not job_id:
        raise InvalidArgumentError(
            "missing job id", violations=[FieldViolation(field, "is required")]
        )
    if not is_job_id(job_id):
        raise InvalidArgumentError(
            f"malformed job id {job_id[:80]!r}",
            violations=[FieldViolation(field, "must be a job id (a lower-case UUID)")],
        )
    return job_id


def _check_json(text: str, field: str, violations: Violations) -> None:
    try:
        json.loads(text)
    except ValueError as exc:
        violations.add(field, f"is not valid JSON: {exc}")
    except RecursionError:
        violations.add(field, "is nested too deeply")


def _check_text(value: str, field: str, violations: Violations) -> None:
    if "\x00" in value:
        violations.add(field, "must not contain NUL characters")


def _plain_dict(entries: Mapping[str, str]) -> dict[str, str]:
    return dict(entries) if entries else {}


def _check_string_map(
    entries: Mapping[str, str],
    field: str,
    violations: Violations,
    *,
    max_entries: int,
    key_pattern: re.Pattern[str] | None = None,
    max_total_bytes: int | None = None,
    max_entry_bytes: int | None = None,
) -> None:
    """Check a map<string, string>: entry count, names, NULs, and sizes."""
    if len(entries) > max_entries:
        violations.add(field, f"has {len(entries)} entries; the limit is {max_entries}")
    total = 0
    for key, value in entries.items():
        entry = f"{field}[{key[:40]!r}]"
        size = len(key.encode()) + len(value.encode())
        total += size
        if not key:
            violations.add(field, "keys must not be empty")
        elif key_pattern is not None and not key_pattern.match(key):
            violations.add(entry, "name must match [A-Za-z_][A-Za-z0-9_]*")
        if max_entry_bytes is not None and size > max_entry_bytes:
            violations.add(entry, f"must be at most {max_entry_bytes} bytes")
        _check_text(key, entry, violations)
        _check_text(value, entry, violations)
    if max_total_bytes is not None and total > max_total_bytes:
        violations.add(field, f"is {total} bytes; the limit is {max_total_bytes}")


def new_job(
    spec: job_pb2.JobSpec,
    *,
    field: str,
    default_org: str,
    default_timeout_s: float,
    default_max_retries: int,
    limits: Limits,
    request_id: str = "",
    trace_context: Mapping[str, str] | None = None,
) -> NewJob:
    """Validate a JobSpec and turn it into a NewJob, or raise naming every bad field."""
    v = Violations()
    org_id = spec.org_id or default_org
    if not ORG_ID_PATTERN.match(org_id):  # matched first: the field name costs more
        check_org_id(org_id, f"{field}.org_id", v)

    cmd = tuple(spec.cmd)
    if not cmd:
        v.add(f"{field}.cmd", "must name a program to run (an argv list, e.g. ['echo', 'hi'])")
    elif not cmd[0]:
        v.add(f"{field}.cmd[0]", "the program name must not be empty")
    if len(cmd) > limits.max_cmd_args:
        v.add(f"{field}.cmd", f"has {len(cmd)} arguments; the limit is {limits.max_cmd_args}")
    joined = "".join(cmd)  # its UTF-8 length is the sum of the arguments'
    cmd_bytes = len(joined.encode())
    if cmd_bytes > limits.max_cmd_bytes:
        v.add(f"{field}.cmd", f"is {cmd_bytes} bytes; the limit is {limits.max_cmd_bytes}")
    if "\x00" in joined:
        for i, arg in enumerate(cmd):
            _check_text(arg, f"{field}.cmd[{i}]", v)

    input_json = spec.input_json or "null"
    input_bytes = len(input_json.encode())
    if input_bytes > limits.max_input_bytes:
        v.add(
            f"{field}.input_json", f"is {input_bytes} bytes; the limit is {limits.max_input_bytes}"
        )
    else:
        _check_json(input_json, f"{field}.input_json", v)

    # Plain dicts, made once: a protobuf map iterates through the slow Mapping mixins.
    env, labels = _plain_dict(spec.env), _plain_dict(spec.labels)
    if env:
        _check_string_map(
            env,
            f"{field}.env",
            v,
            max_entries=limits.max_env_entries,
            key_pattern=ENV_NAME_PATTERN,
            max_total_bytes=limits.max_env_bytes,
        )
    for key in env:
        if key.startswith(LOADER_ENV_PREFIXES):
            v.add(
                f"{field}.env[{key[:40]!r}]",
                "variables that control the dynamic loader (LD_*, DYLD_*) are not allowed",
            )
        if key.startswith(RESERVED_ENV_PREFIX):
            v.add(
                f"{field}.env[{key[:40]!r}]",
                f"names starting with {RESERVED_ENV_PREFIX} are set by the worker",
            )
    if labels:
        _check_string_map(
            labels,
            f"{field}.labels",
            v,
            max_entries=limits.max_labels,
            max_entry_bytes=limits.max_label_bytes,
        )

    if spec.HasField("timeout"):
        timeout_us = duration_us(spec.timeout)
        if spec.timeout.nanos < 0 or spec.timeout.nanos >= 1_000_000_000 or timeout_us <= 0:
            v.add(f"{field}.timeout", "must be a positive duration")
        elif timeout_us > limits.max_timeout_s * 1_000_000:
            v.add(f"{field}.timeout", f"must be at most {limits.max_timeout_s:.0f}s")
    else:
        timeout_us = int(default_timeout_s * 1_000_000)

    max_retries = spec.max_retries if spec.HasField("max_retries") else default_max_retries
    if not 0 <= max_retries <= limits.max_retry_budget:
        v.add(f"{field}.max_retries", f"must be between 0 and {limits.max_retry_budget}")

    if request_id:
        if len(request_id.encode()) > limits.max_request_id_bytes:
            v.add("request_id", f"must be at most {limits.max_request_id_bytes} bytes")
        _check_text(request_id, "request_id", v)

    v.raise_if_any("invalid job")
    return NewJob(
        org_id=org_id,
        cmd=cmd,
        input_json=input_json,
        env=env,
        timeout_us=timeout_us,
        max_retries=max_retries,
        priority=spec.priority,
        labels=labels,
        request_id=request_id,
        trace_context=dict(trace_context or {}),
    )


def list_query(request: job_service_pb2.ListRequest, default_org: str, limits: Limits) -> JobQuery:
    """Validate a ListRequest, decoding its page token against the same filters."""
    v = Violations()
    org_id = request.org_id or default_org
    check_org_id(org_id, "org_id", v)
    states: list[JobState] = []
    for i, number in enumerate(request.states):
        state = _enum_or_none(JobState, number)
        if state is None:
            v.add(f"states[{i}]", "must be a known job state other than JOB_STATE_UNSPECIFIED")
        else:
            states.append(state)
    if request.order not in job_service_pb2.ListOrder.values():
        v.add("order", "must be a ListOrder value")
    if request.page_size < 0:
        v.add("page_size", "must not be negative")
    v.raise_if_any("invalid list request")

    newest_first = request.order != job_service_pb2.LIST_ORDER_OLDEST_FIRST
    query = JobQuery(
        org_id=org_id,
        states=tuple(sorted(set(states))),
        newest_first=newest_first,
        limit=min(request.page_size or DEFAULT_PAGE_SIZE, limits.max_page_size),
    )
    if request.page_token:
        after_id = _decode_page_token(request.page_token, _fingerprint(query))
        query = JobQuery(query.org_id, query.states, query.newest_first, query.limit, after_id)
    return query


def next_page_token(query: JobQuery, page: Sequence[Job]) -> str:
    """The token for the page after `page`, or "" when it was the last one."""
    if len(page) < query.limit:
        return ""
    body = json.dumps({"after": page[-1].id, "filter": _fingerprint(query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _fingerprint(query: JobQuery) -> str:
    """Binds a page token to its filters: reusing it with others is an error."""
    key = json.dumps([query.org_id, [s.name for s in query.states], query.newest_first])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _decode_page_token(token: str, fingerprint: str) -> str:
    def bad(why: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            "invalid page token", violations=[FieldViolation("page_token", why)]
        )

    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, filter_key = body["after"], body["filter"]
    except (ValueError, TypeError, KeyError, RecursionError, binascii.Error) as exc:
        raise bad("is not a token returned by List; pass next_page_token unchanged") from exc
    if not isinstance(after, str) or not is_job_id(after):
        raise bad("is not a token returned by List; pass next_page_token unchanged")
    if filter_key != fingerprint:
        raise bad("was issued for different filters; a token only continues the same query")
    return after


def worker_identity(
    worker_id: str, org_ids: Iterable[str], default_org: str
) -> tuple[str, tuple[str, ...]]:
    """Validate who a worker says it is and which orgs it serves."""
    v = Violations()
    if not WORKER_ID_PATTERN.match(worker_id):
        v.add("worker_id", "must be 1 to 128 letters, digits, '.', '_', ':', '@' or '-'")
    orgs = tuple(dict.fromkeys(org_ids)) or (default_org,)
    if len(orgs) > MAX_WORKER_ORGS:
        v.add("org_ids", f"names {len(orgs)} organisations; the limit is {MAX_WORKER_ORGS}")
    for i, org_id in enumerate(orgs):
        check_org_id(org_id, f"org_ids[{i}]", v)
    v.raise_if_any("invalid worker identity")
    return worker_id, orgs


def log_records(lines: Sequence[job_pb2.LogLine], field: str, limits: Limits) -> list[LogRecord]:
    """Validate log lines from a worker, cutting over-long ones with a visible marker."""
    v = Violations()
    if len(lines) > limits.max_log_lines_per_report:
        v.add(field, f"holds {len(lines)} lines; the limit is {limits.max_log_lines_per_report}")
    records: list[LogRecord] = []
    received_us = now_us()
    for i, line in enumerate(lines):
        stream = _enum_or_none(LogStream, line.stream)
        if stream is None:
            v.add(f"{field}[{i}].stream", "must be STDOUT, STDERR or SYSTEM")
            continue
        time_us = received_us
        if line.HasField("time"):
            try:
                time_us = line.time.ToMicroseconds()
            except ValueError:
                v.add(f"{field}[{i}].time", "must be a valid timestamp")
                continue
        records.append((stream, time_us, truncate_line(line.text, limits.max_log_line_bytes)))
    v.raise_if_any("invalid log lines")
    return records


def truncate_line(text: str, max_bytes: int) -> str:
    """Cut text to at most max_bytes of UTF-8, marking the cut."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    if max_bytes <= len(TRUNCATION_MARK.encode()):
        return encoded[:max_bytes].decode(errors="ignore")
    kept = encoded[: max_bytes - len(TRUNCATION_MARK.encode())].decode(errors="ignore")
    return kept + TRUNCATION_MARK


def attempt_result(result: job_service_pb2.AttemptResult, field: str = "result") -> AttemptResult:
    outcome = ATTEMPT_OUTCOME_FROM_PROTO.get(result.outcome)
    v = Violations()
    if outcome is None:
        v.add(f"{field}.outcome", "must be SUCCEEDED, FAILED, CANCELED or TIMED_OUT")
    if result.output_json:
        _check_json(result.output_json, f"{field}.output_json", v)
    v.raise_if_any("invalid attempt result")
    assert outcome is not None
    return AttemptResult(
        outcome=outcome,
        output_json=result.output_json,
        # An error is text for people, often a program's own words: a NUL in it
        # (which PostgreSQL text cannot hold) is shown as U+FFFD, not refused.
        error=result.error.replace("\x00", "\ufffd"),
        exit_code=result.exit_code if result.HasField("exit_code") else None,
    )


# -- outbound ------------------------------------------------------------------


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
