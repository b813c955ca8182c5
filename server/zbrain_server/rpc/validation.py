"""Everything that arrives over the wire is validated here, once: a request
message becomes domain values, or INVALID_ARGUMENT names every problem with
the field it concerns (google.rpc.BadRequest). Handlers (gRPC, and the HTTP
edge, which parses the same messages from JSON) do no checking of their own.
"""

from __future__ import annotations

import base64
import binascii
import enum
import graphlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import TypeVar

from google.protobuf import duration_pb2

from zbrain.errors import FieldViolation, InvalidArgumentError
from zbrain.models import RESOURCE_MINIMUMS, RUNNABLE_STATES, Role
from zbrain.protocol import TRUNCATION_MARK
from zbrain.v1 import job_pb2, job_service_pb2, token_service_pb2, worker_service_pb2

from ..config import Limits
from ..core.ids import is_job_id
from ..core.model import (
    NO_RESOURCES,
    ORG_ID_RULE,
    Artifact,
    AttemptOutcome,
    AttemptResult,
    DependencyCondition,
    Edge,
    Job,
    JobQuery,
    JobState,
    LogRecord,
    LogStream,
    NewJob,
    Resources,
    is_org_id,
    now_us,
)

WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# Variables the worker sets for every job; a job may not override them.
RESERVED_ENV_PREFIX = "ZBRAIN_"
# They would let a job change how its own program is loaded (LD_PRELOAD,
# LD_LIBRARY_PATH, LD_AUDIT, ...), a classic way to escape what cmd says.
LOADER_ENV_PREFIXES = ("LD_", "DYLD_")
DEFAULT_PAGE_SIZE = 50
MAX_INCARNATION_BYTES = 128  # WorkerHello.incarnation_id (the SDKs send 32 hex digits)
REF_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
REF_RULE = "must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"

E = TypeVar("E", bound=enum.IntEnum)


def _enum_or_none(kind: type[E], number: int) -> E | None:
    """The enum member for a wire number, or None for UNSPECIFIED and unknown numbers."""
    if not number:
        return None
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


def _bad(message: str, field: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError(message, violations=[FieldViolation(field, description)])


def duration_us(d: duration_pb2.Duration) -> int:
    return d.seconds * 1_000_000 + d.nanos // 1000


MAX_DURATION_SECONDS = 315_576_000_000
"""A google.protobuf.Duration's range: about 10,000 years either way."""


def checked_duration_us(d: duration_pb2.Duration, field: str, v: Violations) -> int | None:
    """A Duration as microseconds; None with a violation naming `field` when
    it is not a valid Duration (nanos out of range or of the other sign than
    seconds, seconds past the type's range)."""
    if (
        abs(d.seconds) > MAX_DURATION_SECONDS
        or abs(d.nanos) >= 1_000_000_000
        or (d.seconds > 0 > d.nanos)
        or (d.seconds < 0 < d.nanos)
    ):
        v.add(field, "is not a valid duration (nanos within a second, of the sign of seconds)")
        return None
    return duration_us(d)


# -- inbound -------------------------------------------------------------------


def check_org_id(org_id: str, field: str, violations: Violations) -> None:
    if not is_org_id(org_id):
        violations.add(field, ORG_ID_RULE)


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


def _check_input(input_json: str, field: str, limits: Limits, v: Violations) -> None:
    input_bytes = len(input_json.encode())
    if input_bytes > limits.max_input_bytes:
        v.add(field, f"is {input_bytes} bytes; the limit is {limits.max_input_bytes}")
    else:
        _check_json(input_json, field, v)


def input_json(text: str, field: str, limits: Limits) -> str:
    """A job's input as JSON text ("null" for none), or INVALID_ARGUMENT."""
    v = Violations()
    text = text or "null"
    _check_input(text, field, limits, v)
    v.raise_if_any("invalid input")
    return text


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
    org_id: str,
    default_timeout_s: float,
    default_max_retries: int,
    limits: Limits,
    request_id: str = "",
    trace_context: Mapping[str, str] | None = None,
    refs: Mapping[str, int] | None = None,
    now: int | None = None,
    request_id_field: str = "request_id",
) -> NewJob:
    """Validate a JobSpec and turn it into a NewJob, or raise naming every bad
    field. `org_id` is the org it goes to, the caller's choice already
    resolved (`core.access.request_org`); `refs` are the batch's job refs by
    index (`batch_refs`), which its dependencies may name."""
    v = Violations()
    if not is_org_id(org_id):  # matched first: the field name costs more
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
    _check_input(input_json, f"{field}.input_json", limits, v)

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

    requires = _plain_dict(spec.requires)
    if requires:
        _check_string_map(
            requires,
            f"{field}.requires",
            v,
            max_entries=limits.max_labels,
            max_entry_bytes=limits.max_label_bytes,
        )
    if spec.concurrency_key or spec.concurrency_limit:
        _check_concurrency(spec, field, limits, v)

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
            v.add(request_id_field, f"must be at most {limits.max_request_id_bytes} bytes")
        _check_text(request_id, request_id_field, v)

    depends_on = _dependencies(spec, field, refs, limits, v) if spec.depends_on else ()
    run_at_us = (
        _run_at(spec, field, limits, v, now)
        if spec.HasField("run_at") or spec.HasField("delay")
        else None
    )

    resources = (
        _resources(spec.resources, f"{field}.resources", v)
        if spec.HasField("resources")
        else NO_RESOURCES
    )

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
        depends_on=depends_on,
        run_at_us=run_at_us,
        concurrency_key=spec.concurrency_key,
        concurrency_limit=spec.concurrency_limit,
        requires=requires,
        resources=resources,
        network=spec.network,
    )


MAX_CONCURRENCY_LIMIT = 100_000
"""The largest concurrency_limit a job may ask for its key."""


def _check_concurrency(spec: job_pb2.JobSpec, field: str, limits: Limits, v: Violations) -> None:
    key, limit = spec.concurrency_key, spec.concurrency_limit
    if not key:
        v.add(f"{field}.concurrency_limit", "needs a concurrency_key to limit")
    elif len(key.encode()) > limits.max_label_bytes:
        v.add(f"{field}.concurrency_key", f"must be at most {limits.max_label_bytes} bytes")
    else:
        _check_text(key, f"{field}.concurrency_key", v)
    if not 0 <= limit <= MAX_CONCURRENCY_LIMIT:
        v.add(
            f"{field}.concurrency_limit",
            f"must be between 0 (meaning 1) and {MAX_CONCURRENCY_LIMIT}",
        )


def _resources(message: job_pb2.Resources, field: str, v: Violations) -> Resources:
    """A job's resource limits (each 0 for none, else at least its minimum)."""
    values = {
        "memory_bytes": message.memory_bytes,
        "cpu_seconds": message.cpu_seconds,
        "processes": message.processes,
        "open_files": message.open_files,
        "file_size_bytes": message.file_size_bytes,
    }
    if not any(values.values()):
        return NO_RESOURCES
    for name, value in values.items():
        minimum = RESOURCE_MINIMUMS[name]
        if value < 0 or 0 < value < minimum:
            v.add(f"{field}.{name}", f"must be 0 (no limit) or at least {minimum}")
    return Resources(**values)


def _dependencies(
    spec: job_pb2.JobSpec,
    field: str,
    refs: Mapping[str, int] | None,
    limits: Limits,
    v: Violations,
) -> tuple[Edge, ...]:
    """The job's dependencies, each on a stored job (its id) or on a job of
    the batch (its ref, as an index)."""
    if len(spec.depends_on) > limits.max_dependencies_per_job:
        v.add(
            f"{field}.depends_on",
            f"names {len(spec.depends_on)} jobs; the limit (max_dependencies_per_job) is "
            f"{limits.max_dependencies_per_job}",
        )
        return ()
    edges: list[Edge] = []
    seen: set[str | int] = set()
    for j, dependency in enumerate(spec.depends_on):
        where = f"{field}.depends_on[{j}]"
        condition = _enum_or_none(DependencyCondition, dependency.condition)
        if condition is None and dependency.condition:
            v.add(f"{where}.condition", "must be SUCCEEDED or FINISHED")
        parent: str | int
        if bool(dependency.job_id) == bool(dependency.ref):
            v.add(where, "must name either a job_id or a ref of the same batch")
            continue
        if dependency.job_id:
            if not is_job_id(dependency.job_id):
                v.add(f"{where}.job_id", "is not a job id")
                continue
            parent = dependency.job_id
        else:
            index = (refs or {}).get(dependency.ref)
            if index is None:
                v.add(
                    f"{where}.ref",
                    f"names no job of this batch: there is no job with ref {dependency.ref!r}"
                    if refs is not None
                    else "refs name jobs of one SubmitBatch; Submit takes job ids",
                )
                continue
            if spec.ref == dependency.ref:
                v.add(f"{where}.ref", "a job cannot depend on itself")
                continue
            parent = index
        if parent in seen:
            v.add(where, "names a job this job already depends on")
            continue
        seen.add(parent)
        edges.append(Edge(parent, condition or DependencyCondition.SUCCEEDED))
    return tuple(edges)


def _run_at(
    spec: job_pb2.JobSpec, field: str, limits: Limits, v: Violations, now: int | None
) -> int | None:
    """When a delayed job may run (run_at, or now plus delay); None when not delayed."""
    if spec.HasField("run_at") and spec.HasField("delay"):
        v.add(f"{field}.run_at", "give either run_at or delay, not both")
        return None
    now = now_us() if now is None else now
    latest = now + int(limits.max_delay_s * 1_000_000)
    if spec.HasField("delay"):
        where = f"{field}.delay"
        delay = checked_duration_us(spec.delay, where, v)
        if delay is None:
            return None
        if delay < 0:
            v.add(where, "must not be negative")
            return None
        at = now + delay
    else:
        where = f"{field}.run_at"
        try:
            at = spec.run_at.ToMicroseconds()
        except ValueError:
            v.add(where, "must be a valid timestamp (years 1 to 9999, nanos within a second)")
            return None
    if at > latest:
        v.add(where, f"is more than {limits.max_delay_s / 86400:.0f} days ahead (max_delay_s)")
        return None
    return at


def batch_refs(specs: Sequence[job_pb2.JobSpec]) -> dict[str, int]:
    """The jobs of a batch by ref; INVALID_ARGUMENT for a ref used twice, or
    for dependencies between the batch's jobs that go round in a cycle."""
    refs: dict[str, int] = {}
    v = Violations()
    for i, spec in enumerate(specs):
        if not spec.ref:
            continue
        if not REF_PATTERN.match(spec.ref):
            v.add(f"jobs[{i}].ref", REF_RULE)
        elif spec.ref in refs:
            v.add(f"jobs[{i}].ref", f"{spec.ref!r} is also the ref of jobs[{refs[spec.ref]}]")
        else:
            refs[spec.ref] = i
    v.raise_if_any("invalid batch")
    if not refs:  # no job names another of the batch: nothing can go round
        return refs
    waits = {
        i: [refs[d.ref] for d in spec.depends_on if d.ref in refs and d.ref != spec.ref]
        for i, spec in enumerate(specs)
        if spec.depends_on
    }
    try:
        graphlib.TopologicalSorter(waits).prepare()
    except graphlib.CycleError as cycle:
        # graphlib lists each node before the one that waits for it: reversed,
        # each waits for the next.
        ring = list(reversed(cycle.args[1]))
        path = " -> ".join(f"jobs[{i}] ({specs[i].ref!r})" for i in ring)
        first, then = ring[0], ring[1]
        j = next(j for j, d in enumerate(specs[first].depends_on) if d.ref == specs[then].ref)
        raise _bad(
            "dependency cycle",
            f"jobs[{first}].depends_on[{j}].ref",
            f"the batch's dependencies go round in a cycle: {path}",
        ) from None
    return refs


def list_query(
    request: job_service_pb2.ListRequest, org_id: str | None, limits: Limits
) -> JobQuery:
    """Validate a ListRequest for `org_id` (resolved from the request and the
    caller; None for every organisation), decoding its page token against the
    same filters."""
    v = Violations()
    if org_id is not None:
        check_org_id(org_id, "org_id", v)
    elif request.org_id:
        v.add("org_id", "must be empty with all_orgs")
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
    labels = _plain_dict(request.labels)
    if labels:
        _check_string_map(
            labels,
            "labels",
            v,
            max_entries=limits.max_labels,
            max_entry_bytes=limits.max_label_bytes,
        )
    after_us = _time_or_none(request, "create_time_after", v)
    before_us = _time_or_none(request, "create_time_before", v)
    v.raise_if_any("invalid list request")

    newest_first = request.order != job_service_pb2.LIST_ORDER_OLDEST_FIRST
    if request.unmatched:  # only runnable jobs can be unmatched
        states = [s for s in states or RUNNABLE_STATES if s in RUNNABLE_STATES]
        if not states:
            v.add("unmatched", "only runnable jobs (PENDING, RETRYING) can be unmatched")
            v.raise_if_any("invalid list request")
    query = JobQuery(
        org_id=org_id,
        states=tuple(sorted(set(states))),
        newest_first=newest_first,
        limit=min(request.page_size or DEFAULT_PAGE_SIZE, limits.max_page_size),
        labels=labels,
        created_after_us=after_us,
        created_before_us=before_us,
        unmatched=request.unmatched,
    )
    if request.page_token:
        query.after_id = _decode_page_token(request.page_token, _fingerprint(query))
    return query


def _time_or_none(request: job_service_pb2.ListRequest, field: str, v: Violations) -> int | None:
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    try:
        us: int = getattr(request, field).ToMicroseconds()
    except ValueError:
        v.add(field, "must be a valid timestamp")
        return None
    return us


def page_size(value: int, limits: Limits) -> int:
    """A request's page size: 0 means the default, and the limit caps it."""
    if value < 0:
        raise _bad("invalid page size", "page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, limits.max_page_size)


def next_page_token(query: JobQuery, page: Sequence[Job], *, cut: bool = False) -> str:
    """The token for the page after `page`, or "" when it was the last one:
    a page shorter than asked is the last unless it was `cut` to fit in one
    answer, when the next page starts after the last job it kept."""
    if not page or (len(page) < query.limit and not cut):
        return ""
    body = json.dumps({"after": page[-1].id, "filter": _fingerprint(query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _fingerprint(query: JobQuery) -> str:
    """Binds a page token to its filters: reusing it with others is an error."""
    key = json.dumps(
        [
            query.org_id,
            [s.name for s in query.states],
            query.newest_first,
            sorted(query.labels.items()),
            query.created_after_us,
            query.created_before_us,
            *(["unmatched"] if query.unmatched else []),
        ]
    )
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
    worker_id: str, org_ids: Iterable[str], limits: Limits, field: str = ""
) -> tuple[str, tuple[str, ...]]:
    """Validate who a worker says it is and which orgs it serves (resolved from
    the request and the caller, `core.access.request_orgs`)."""
    v = Violations()
    if not WORKER_ID_PATTERN.match(worker_id):
        v.add(f"{field}worker_id", "must be 1 to 128 letters, digits, '.', '_', ':', '@' or '-'")
    orgs = tuple(dict.fromkeys(org_ids))
    if len(orgs) > limits.max_worker_orgs:
        v.add(
            f"{field}org_ids",
            f"names {len(orgs)} organisations; the limit (max_worker_orgs) is "
            f"{limits.max_worker_orgs}",
        )
    for i, org_id in enumerate(orgs):
        check_org_id(org_id, f"{field}org_ids[{i}]", v)
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
    outcome = _enum_or_none(AttemptOutcome, result.outcome)
    v = Violations()
    if outcome is None:
        v.add(
            f"{field}.outcome",
            "must be SUCCEEDED, FAILED, CANCELED, TIMED_OUT, INTERRUPTED or "
            "RESOURCE_LIMIT_EXCEEDED",
        )
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


def batch(
    specs: Sequence[job_pb2.JobSpec], request_ids: Sequence[str], limits: Limits
) -> Sequence[str]:
    """A SubmitBatch holds at least one job and at most max_batch_jobs, with
    at most max_batch_dependencies dependencies in all, and either no
    request ids or one per job; returns one request id per job (""
    for none). Each id itself is checked with its job (`new_job`), and that no
    two are alike once the jobs' orgs are known (`distinct_request_ids`)."""
    if not specs:
        raise _bad("empty batch", "jobs", "must hold at least one job")
    if len(specs) > limits.max_batch_jobs:
        raise _bad(
            "batch too large",
            "jobs",
            f"holds {len(specs)} jobs; the limit (max_batch_jobs) is {limits.max_batch_jobs}",
        )
    edges = sum(len(spec.depends_on) for spec in specs)
    if edges > limits.max_batch_dependencies:
        raise _bad(
            "graph too large",
            "jobs",
            f"hold {edges} dependencies in all; the limit (max_batch_dependencies) is "
            f"{limits.max_batch_dependencies}",
        )
    if not request_ids:
        return [""] * len(specs)
    if len(request_ids) != len(specs):
        raise _bad(
            "request ids do not match the jobs",
            "request_ids",
            f"holds {len(request_ids)} ids for {len(specs)} jobs; give one per job "
            '("" for a job without one) or none',
        )
    return request_ids


def distinct_request_ids(jobs: Sequence[NewJob]) -> None:
    """No request id twice for one org in a batch: both jobs would be new to
    the store, which could keep only one of them. The second is named."""
    seen: set[tuple[str, str]] = set()
    for i, job in enumerate(jobs):
        if not job.request_id:
            continue
        key = (job.org_id, job.request_id)
        if key in seen:
            raise _bad(
                "request id repeated in the batch",
                f"request_ids[{i}]",
                "is also an earlier job's of the same organisation; each job needs its own",
            )
        seen.add(key)


def after_sequence(value: int, field: str = "after_sequence") -> int:
    if value < 0:
        raise _bad("invalid sequence", field, "must not be negative")
    return value


def events_start(request: job_service_pb2.StreamEventsRequest) -> int | None:
    """The sequence a StreamEvents request starts after; None for `from_end`
    (after the last event stored when it opens). Both at once is a client's
    mistake, refused rather than one silently winning."""
    after = after_sequence(request.after_sequence)
    if request.from_end and after:
        raise _bad(
            "from_end and after_sequence exclude each other",
            "from_end",
            "must not be set with after_sequence: resume after a sequence, or start at the end",
        )
    return None if request.from_end else after


def acquire(request: job_service_pb2.AcquireLeaseRequest, limits: Limits) -> tuple[int, float]:
    """The number of leases an AcquireLease asks for, and how long it may wait."""
    v = Violations()
    max_jobs = request.max_jobs or 1
    if not 0 < max_jobs <= limits.max_acquire_jobs:
        v.add("max_jobs", f"must be between 1 and {limits.max_acquire_jobs} (max_acquire_jobs)")
    wait_s = duration_us(request.wait_timeout) / 1e6
    if not 0 <= wait_s <= limits.max_wait_timeout_s:
        v.add(
            "wait_timeout",
            f"must be between 0 and {limits.max_wait_timeout_s:g}s (max_wait_timeout)",
        )
    v.raise_if_any("invalid lease request")
    return max_jobs, wait_s


def hello(
    message: worker_service_pb2.WorkerHello, org_ids: Sequence[str], limits: Limits
) -> tuple[str, tuple[str, ...], int, list[tuple[str, int]]]:
    """A worker's hello: its id, its orgs (resolved), its slots and the leases
    it claims back (its `incarnation_id` is checked, and taken as it is)."""
    worker_id, orgs = worker_identity(message.worker_id, org_ids, limits, "hello.")
    if len(message.incarnation_id.encode()) > MAX_INCARNATION_BYTES:
        raise _bad(
            "invalid incarnation id",
            "hello.incarnation_id",
            f"must be at most {MAX_INCARNATION_BYTES} bytes",
        )
    most = limits.max_worker_concurrency
    if not 0 < message.concurrency <= most:
        raise _bad(
            "invalid concurrency",
            "hello.concurrency",
            f"must be between 1 and {most} (max_worker_concurrency)",
        )
    if len(message.leases) > most:
        raise _bad("too many held leases", "hello.leases", f"at most {most}")
    if message.labels:  # what jobs' `requires` are matched against
        v = Violations()
        _check_string_map(
            _plain_dict(message.labels),
            "hello.labels",
            v,
            max_entries=limits.max_labels,
            max_entry_bytes=limits.max_label_bytes,
        )
        v.raise_if_any("invalid worker labels")
    held = [lease_ref(ref, f"hello.leases[{i}]") for i, ref in enumerate(message.leases)]
    return worker_id, orgs, message.concurrency, held


def lease_ref(ref: worker_service_pb2.LeaseRef, field: str) -> tuple[str, int]:
    """A lease a worker names: (job id, lease epoch)."""
    return check_job_id(ref.job_id, f"{field}.job_id"), ref.lease_epoch


def artifact_name(name: str, limits: Limits, field: str = "name") -> str:
    """Accept relative POSIX paths inside the job's folder, nothing else."""
    most = limits.max_artifact_name_bytes
    if not name:
        raise _bad("invalid artifact name", field, "is required")
    if len(name.encode()) > most:
        raise _bad("invalid artifact name", field, f"must be at most {most} bytes")
    if "\x00" in name or "\\" in name:
        raise _bad("invalid artifact name", field, "must not contain NUL or backslash characters")
    if PurePosixPath(name).is_absolute():
        raise _bad("invalid artifact name", field, "must be a relative path")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise _bad(
            "invalid artifact name", field, "must not contain '..', '.' or empty path segments"
        )
    return name


def artifact_header(
    header: job_service_pb2.ArtifactHeader, limits: Limits
) -> tuple[str, int, Artifact]:
    """The job, lease epoch and announced artifact an upload starts with."""
    job_id = check_job_id(header.job_id, "header.job_id")
    name = artifact_name(header.artifact.name, limits, "header.artifact.name")
    if not SHA256_PATTERN.match(header.artifact.sha256):
        raise _bad(
            "invalid checksum",
            "header.artifact.sha256",
            "must be 64 lower-case hex digits (SHA-256)",
        )
    if header.artifact.size_bytes < 0:
        raise _bad("invalid size", "header.artifact.size_bytes", "must not be negative")
    announced = Artifact(name, header.artifact.sha256, header.artifact.size_bytes)
    return job_id, header.lease_epoch, announced


def new_token(
    request: token_service_pb2.CreateTokenRequest, limits: Limits
) -> tuple[str, Role, str]:
    """The org, role and description of a token to make."""
    v = Violations()
    check_org_id(request.org_id, "org_id", v)
    role = _enum_or_none(Role, request.role)
    if role is None:
        v.add("role", "must be CLIENT, WORKER or ADMIN")
    most = limits.max_token_description_bytes
    if len(request.description.encode()) > most:
        v.add("description", f"must be at most {most} bytes")
    v.raise_if_any("invalid token request")
    assert role is not None
    return request.org_id, role, request.description


def token_id(value: str) -> str:
    if not value:
        raise _bad("missing token id", "token_id", "is required")
    return value


def missing_header() -> InvalidArgumentError:
    """The error for an upload that does not start with its header."""
    return _bad("an upload must start with a header", "header", "must be the first message")


def missing_hello() -> InvalidArgumentError:
    """The error for a worker stream that does not start with its hello."""
    return _bad("a worker stream must start with a hello", "hello", "must be the first message")
