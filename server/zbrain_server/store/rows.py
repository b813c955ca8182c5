"""Rows and domain objects: what a stored row means, read by column name.

Both backends store the same columns with the same meaning (see their
migrations), so the mapping lives here once. Times are integer
microseconds; JSON columns hold the command, environment, labels and trace
context; log text and event bodies are stored as UTF-8 bytes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..core.lifecycle import Change
from ..core.model import (
    NO_RESOURCES,
    Artifact,
    AttemptRecord,
    Cause,
    Dependency,
    DependencyCondition,
    EventRecord,
    Job,
    JobState,
    LogLine,
    LogStream,
    Resources,
    Role,
)
from ..core.tokens import Token
from .ops import Params, Row

# Enum names by member: an Enum's `.name` is a descriptor, several times
# slower than a dict lookup, and rows are written for every job change.
# (One dict per enum: the members are IntEnums, equal to those of another
# enum with the same number.)
_STATE_NAMES = {state: state.name for state in JobState}
_CAUSE_NAMES = {cause: cause.name for cause in Cause}
_STATES = {name: state for state, name in _STATE_NAMES.items()}
_CAUSES = {name: cause for cause, name in _CAUSE_NAMES.items()}


def job_from_row(row: Row) -> Job:
    """The job of a `jobs` row (its artifacts are attached apart: `with_artifacts`)."""
    previous = row["previous_state"]
    return Job(
        id=row["id"],
        org_id=row["org_id"],
        cmd=_cmd_from_json(row["cmd"]),
        input_json=row["input_json"],
        env=_map_from_json(row["env"]),
        timeout_us=row["timeout_us"],
        max_retries=row["max_retries"],
        priority=row["priority"],
        labels=_map_from_json(row["labels"]),
        state=_STATES[row["state"]],
        attempt=row["attempt"],
        create_time_us=row["create_time"],
        update_time_us=row["update_time"],
        start_time_us=row["start_time"],
        finish_time_us=row["finish_time"],
        next_run_time_us=row["next_run_time"],
        last_error=row["last_error"],
        output_json=row["output_json"],
        lease_epoch=row["lease_epoch"],
        worker_id=row["worker_id"],
        worker_incarnation=row["worker_incarnation"],
        lease_expire_time_us=row["lease_expire_time"],
        cancel_requested=bool(row["cancel_requested"]),
        request_id=row["request_id"],
        trace_context=_map_from_json(row["trace_context"]),
        previous_state=_STATES[previous] if previous else None,
        cause=_CAUSES[row["cause"]],
        reason=row["reason"],
        # Jobs stored before transitions were recorded: their last update.
        transition_time_us=row["transition_time"] or row["update_time"],
        attempts=_attempts_from_json(row["attempts"]),
        depends_on=_dependencies_from_json(row["depends_on"]),
        waiting_on=row["waiting_on"],
        has_children=bool(row["has_children"]),
        depth=row["depth"],
        rerun_of=row["rerun_of"],
        concurrency_key=row["concurrency_key"],
        concurrency_limit=row["concurrency_limit"],
        requires=_map_from_json(row["requires"]),
        resources=_resources_from_json(row["resources"]),
        network=bool(row["network"]),
    )


def _resources_json(resources: Resources) -> str:
    """The `resources` column: the limits set, by name; '' when none is."""
    if not resources:
        return ""
    return json.dumps({name: value for name, value in resources.to_dict().items() if value})


def _resources_from_json(text: str) -> Resources:
    return Resources(**json.loads(text)) if text else NO_RESOURCES


def dependencies_json(dependencies: Sequence[Dependency]) -> str:
    """The `depends_on` column of a job, as `job_from_row` reads it back."""
    return json.dumps([{"job_id": d.job_id, "condition": d.condition.name} for d in dependencies])


def _dependencies_from_json(text: str) -> tuple[Dependency, ...]:
    if text == "[]":  # most jobs depend on none
        return ()
    return tuple(
        Dependency(entry["job_id"], DependencyCondition[entry["condition"]])
        for entry in json.loads(text)
    )


def job_params(job: Job) -> Params:
    """The `insert_job` parameters of a new job, as `job_from_row` reads them back."""
    return {
        "id": job.id,
        "org_id": job.org_id,
        "cmd": _json_cmd(job.cmd),
        "input_json": job.input_json,
        "env": _json_map(job.env),
        "timeout_us": job.timeout_us,
        "max_retries": job.max_retries,
        "priority": job.priority,
        "labels": _json_map(job.labels),
        "create_time": job.create_time_us,
        "request_id": job.request_id,
        "trace_context": _json_map(job.trace_context),
        "concurrency_key": job.concurrency_key,
        "concurrency_limit": job.concurrency_limit,
        "requires": _json_map(job.requires),
        "resources": _resources_json(job.resources),
        "network": int(job.network),
        **_state_params(job),
    }


def save_params(change: Change) -> Params:
    """The `save_job` parameters of a decided change: the new state columns,
    then the job id and the state and lease epoch its row must still have."""
    before = change.before
    return {
        **_state_params(change.after),
        "id": change.after.id,
        "old_state": _STATE_NAMES[before.state],
        "old_lease_epoch": before.lease_epoch,
    }


def _state_params(job: Job) -> dict[str, Any]:
    """The columns a state change writes (the others are fixed at submission)."""
    return {
        "state": _STATE_NAMES[job.state],
        "attempt": job.attempt,
        "update_time": job.update_time_us,
        "start_time": job.start_time_us,
        "finish_time": job.finish_time_us,
        "next_run_time": job.next_run_time_us,
        "last_error": job.last_error,
        "output_json": job.output_json,
        "lease_epoch": job.lease_epoch,
        "worker_id": job.worker_id,
        "worker_incarnation": job.worker_incarnation,
        "lease_expire_time": job.lease_expire_time_us,
        "cancel_requested": int(job.cancel_requested),
        "previous_state": _STATE_NAMES[job.previous_state] if job.previous_state else None,
        "cause": _CAUSE_NAMES[job.cause],
        "reason": job.reason,
        "transition_time": job.transition_time_us,
        "attempts": _json_attempts(job.attempts),
    }


def _attempts_from_json(text: str) -> tuple[AttemptRecord, ...]:
    if text == "[]":  # most jobs read have not ended an attempt yet
        return ()
    return tuple(
        AttemptRecord(
            number=entry["number"],
            worker_id=entry["worker_id"],
            lease_epoch=entry["lease_epoch"],
            start_time_us=entry["start_time"],
            end_time_us=entry["end_time"],
            cause=_CAUSES.get(entry["cause"], Cause.UNSPECIFIED),
            end_state=_STATES[entry["end_state"]],
            error=entry["error"],
        )
        for entry in json.loads(text)
    )


def _json_attempts(attempts: Sequence[AttemptRecord]) -> str:
    if not attempts:
        return "[]"
    return json.dumps(
        [
            {
                "number": a.number,
                "worker_id": a.worker_id,
                "lease_epoch": a.lease_epoch,
                "start_time": a.start_time_us,
                "end_time": a.end_time_us,
                "cause": _CAUSE_NAMES[a.cause],
                "end_state": _STATE_NAMES[a.end_state],
                "error": a.error,
            }
            for a in attempts
        ]
    )


@functools.lru_cache(maxsize=1024)
def _cmd_from_json(text: str) -> tuple[str, ...]:
    # A tuple, so jobs sharing a command may share it.
    return tuple(json.loads(text))


def _map_from_json(text: str) -> dict[str, str]:
    # Most jobs have no env, labels or trace: skip the decoder for those.
    return {} if text == "{}" else json.loads(text)


@functools.lru_cache(maxsize=1024)
def _json_cmd(cmd: tuple[str, ...]) -> str:
    # The jobs of a batch (and of a busy queue) mostly share their command.
    return json.dumps(list(cmd))


def _json_map(mapping: Mapping[str, str]) -> str:
    # Most jobs have no env, labels or trace: skip the encoder for those.
    return json.dumps(dict(mapping)) if mapping else "{}"


def with_artifacts(jobs: Sequence[Job], rows: Iterable[Row]) -> list[Job]:
    """The jobs with their artifacts, from `artifacts_of` rows (sorted by name)."""
    by_job: dict[str, list[Artifact]] = {}
    for row in rows:
        by_job.setdefault(row["job_id"], []).append(
            Artifact(row["name"], row["sha256"], row["size_bytes"])
        )
    return [
        replace(job, artifacts=tuple(by_job[job.id])) if job.id in by_job else job for job in jobs
    ]


def log_params(job_id: str, line: LogLine) -> Params:
    return {
        "job_id": job_id,
        "sequence": line.sequence,
        "stream": line.stream.name,
        "attempt": line.attempt,
        "time": line.time_us,
        # Bytes on both backends: PostgreSQL text cannot hold the NUL a
        # program may print.
        "text": line.text.encode(),
    }


def log_line_from_row(row: Row) -> LogLine:
    text = row["text"]
    return LogLine(
        row["sequence"],
        LogStream[row["stream"]],
        row["attempt"],
        row["time"],
        # Lines SQLite stored before logs were kept as bytes are text.
        text if isinstance(text, str) else bytes(text).decode(errors="replace"),
    )


def event_params(record: EventRecord) -> Params:
    return {
        "sequence": record.sequence,
        "topic": record.topic,
        "org_id": record.org_id,
        "job_id": record.job_id,
        "time": record.time_us,
        "payload": record.payload,
    }


def event_from_row(row: Row) -> EventRecord:
    return EventRecord(
        row["sequence"], row["topic"], row["org_id"], row["job_id"], row["time"], row["payload"]
    )


def token_params(token: Token) -> Params:
    return {
        "id": token.id,
        "org_id": token.org_id,
        "role": token.role.name,
        "description": token.description,
        "secret_hash": token.secret_hash,
        "create_time": token.create_time_us,
        "revoke_time": token.revoke_time_us,
    }


def token_from_row(row: Row) -> Token:
    return Token(
        row["id"],
        row["org_id"],
        Role[row["role"]],
        row["description"],
        row["secret_hash"],
        row["create_time"],
        row["revoke_time"],
    )
