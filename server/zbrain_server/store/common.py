"""What every SQL backend shares: the job row layout, quota and log-budget rules.

The backends differ in SQL dialect and in how they keep concurrent writers
apart, not in what a row means or when a quota is exceeded; so the mapping
between rows and domain objects and the pure decisions around it live here
once, and each backend only executes its own SQL around them.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zbrain.errors import NotFoundError, ResourceExhaustedError, ZBrainError

from .. import lifecycle
from ..auth import Role, Token
from ..ids import new_job_ids
from ..lifecycle import Change, RetryPolicy
from ..model import (
    AttemptOutcome,
    AttemptResult,
    Job,
    JobState,
    Lease,
    LogRecord,
    LogStream,
    NewJob,
)

STATE_COLUMNS = (
    "state",
    "attempt",
    "update_time",
    "start_time",
    "finish_time",
    "next_run_time",
    "last_error",
    "output_json",
    "lease_epoch",
    "worker_id",
    "lease_expire_time",
    "cancel_requested",
)
"""The columns a job's state changes write, in the order `save_params` gives
them; the other columns are fixed when the job is submitted."""

JOB_COLUMNS = ", ".join(
    (
        *("id", "org_id", "cmd", "input_json", "env", "timeout_us", "max_retries", "priority"),
        *("labels", "create_time", *STATE_COLUMNS, "request_id", "trace_context"),
    )
)
"""The columns of a job row, in the order `job_from_row` and `job_row` use."""

TOKEN_COLUMNS = "id, org_id, role, description, secret_hash, create_time, revoke_time"
"""The columns of a token row, in the order `token_from_row` uses."""

PURGED_THROUGH = "events_purged_through"
"""The meta key holding the highest event sequence deleted by retention."""

LOG_LIMIT_MARK = "[log limit reached: further output of this job is not stored]"

LEASE_EXPIRED = AttemptResult(AttemptOutcome.WORKER_LOST, error="worker lost: lease expired")
"""How the reaper ends an attempt whose lease ran out."""

OVERDUE = AttemptResult(AttemptOutcome.TIMED_OUT, error="timed out (enforced by the server)")
"""How the reaper ends an attempt that ran past its timeout and grace."""


def job_from_row(row: Sequence[Any]) -> Job:
    """The job of a row whose first columns are JOB_COLUMNS (further columns are ignored)."""
    return Job(
        id=row[0],
        org_id=row[1],
        cmd=tuple(json.loads(row[2])),
        input_json=row[3],
        env=json.loads(row[4]),
        timeout_us=row[5],
        max_retries=row[6],
        priority=row[7],
        labels=json.loads(row[8]),
        create_time_us=row[9],
        state=JobState[row[10]],
        attempt=row[11],
        update_time_us=row[12],
        start_time_us=row[13],
        finish_time_us=row[14],
        next_run_time_us=row[15],
        last_error=row[16],
        output_json=row[17],
        lease_epoch=row[18],
        worker_id=row[19],
        lease_expire_time_us=row[20],
        cancel_requested=bool(row[21]),
        request_id=row[22],
        trace_context=json.loads(row[23]),
    )


def plan_submission(
    jobs: Sequence[NewJob],
    now_us: int,
    earlier: Callable[[str, str], Job | None] | None = None,
) -> list[tuple[Job, bool]]:
    """Each job of a submission, with True beside it when it is not new: a job
    repeating the request id of an earlier one of the same org stands for that
    one, whether earlier in the batch or, as `earlier` finds, already stored."""
    results: list[tuple[Job, bool]] = []
    known: dict[tuple[str, str], Job] = {}
    fresh_ids = iter(new_job_ids(len(jobs)))  # one each; a repeat leaves its id unused
    for new in jobs:
        key = (new.org_id, new.request_id)
        if new.request_id:
            found = known.get(key) or (earlier(*key) if earlier is not None else None)
            if found is not None:
                known[key] = found
                results.append((found, True))
                continue
        job = lifecycle.submitted_job(next(fresh_ids), new, now_us)
        known[key] = job
        results.append((job, False))
    return results


def job_row(job: Job) -> tuple[Any, ...]:
    """The JOB_COLUMNS values of a job, as `job_from_row` reads them back."""
    return (
        job.id,
        job.org_id,
        json.dumps(list(job.cmd)),
        job.input_json,
        _json_map(job.env),
        job.timeout_us,
        job.max_retries,
        job.priority,
        _json_map(job.labels),
        job.create_time_us,
        *_state_values(job),
        job.request_id,
        _json_map(job.trace_context),
    )


def save_params(change: Change) -> tuple[Any, ...]:
    """The values of a compare-and-set job update: those of STATE_COLUMNS, then
    the job id and the state and lease epoch the row must still have."""
    before = change.before
    return (*_state_values(change.after), change.after.id, before.state.name, before.lease_epoch)


def _state_values(job: Job) -> tuple[Any, ...]:
    """The STATE_COLUMNS values of a job."""
    return (
        job.state.name,
        job.attempt,
        job.update_time_us,
        job.start_time_us,
        job.finish_time_us,
        job.next_run_time_us,
        job.last_error,
        job.output_json,
        job.lease_epoch,
        job.worker_id,
        job.lease_expire_time_us,
        int(job.cancel_requested),
    )


def _json_map(mapping: Mapping[str, str]) -> str:
    # Most jobs have no env, labels or trace: skip the encoder for those.
    return json.dumps(dict(mapping)) if mapping else "{}"


def finish_all(
    jobs: dict[str, Job],
    reports: Sequence[tuple[str, int, AttemptResult]],
    now_us: int,
    retry: RetryPolicy,
) -> tuple[list[Job | ZBrainError], list[Change]]:
    """Decide a batch of attempt outcomes (job id, lease epoch, result) on the
    jobs as read: each report's finished job or the error refusing it, and the
    changes to save. A report repeating one earlier in the batch meets the
    job as that one left it, so it is refused as stale."""
    jobs = dict(jobs)
    outcomes: list[Job | ZBrainError] = []
    changes: list[Change] = []
    for job_id, lease_epoch, result in reports:
        job = jobs.get(job_id)
        if job is None:
            outcomes.append(NotFoundError(f"job {job_id} not found"))
            continue
        try:
            change = lifecycle.finish_attempt(job, lease_epoch, result, now_us, retry)
        except ZBrainError as refused:
            outcomes.append(refused)
            continue
        jobs[job_id] = change.after
        changes.append(change)
        outcomes.append(change.after)
    return outcomes, changes


def leases(changes: Sequence[Change]) -> list[Lease]:
    """The leases that started attempts (`lifecycle.start_attempt`) make."""
    return [Lease(c.after, c.after.lease_epoch, c.after.lease_expire_time_us or 0) for c in changes]


def token_from_row(row: Sequence[Any]) -> Token:
    """The token of a row of TOKEN_COLUMNS."""
    return Token(row[0], row[1], Role[row[2]], row[3], row[4], row[5], row[6])


def round_robin(per_org: list[list[Job]], limit: int) -> list[Job]:
    """Take jobs from each org's queue in turn until limit, so no org starves."""
    chosen: list[Job] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(jobs) for jobs in per_org):
        for jobs in per_org:
            if depth < len(jobs) and len(chosen) < limit:
                chosen.append(jobs[depth])
        depth += 1
    return chosen


def within_log_budget(
    records: Sequence[LogRecord], stored: int, limit: int | None
) -> tuple[list[LogRecord], int]:
    """The records that fit under the job's log limit, plus one marker line when
    some did not, and the job's new log byte count. Once marked, the count is
    one past the limit, and nothing more is stored."""
    if limit is not None and stored > limit:
        return [], stored
    kept: list[LogRecord] = []
    for record in records:
        size = len(record[2].encode())
        if limit is not None and stored + size > limit:
            return [*kept, (LogStream.SYSTEM, record[1], LOG_LIMIT_MARK)], limit + 1
        stored += size
        kept.append(record)
    return kept, stored


def waiting_changes(changes: Sequence[Change]) -> dict[str, int]:
    """How each org's count of waiting (PENDING or RETRYING) jobs moves with these
    changes; orgs whose count stays put are left out."""
    moved: collections.Counter[str] = collections.Counter()
    for change in changes:
        was, now = change.before.state.is_runnable, change.after.state.is_runnable
        if was != now:
            moved[change.after.org_id] += 1 if now else -1
    return {org_id: delta for org_id, delta in moved.items() if delta}


def quota_exceeded(org_id: str, waiting: int, limit: int) -> ResourceExhaustedError:
    """The error for a submission that would take an org past its waiting-jobs quota."""
    return ResourceExhaustedError(
        f"organisation {org_id!r} has {waiting} jobs waiting; the quota "
        f"(max_pending_per_org) is {limit}"
    )
