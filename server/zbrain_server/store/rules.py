"""The decisions every backend's writes share, apart from any SQL: in-batch
deduplication, applying a batch of attempt outcomes, fair leasing across
organisations, the per-job log budget, the per-org storage quotas, and the
waiting-jobs quota."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

from zbrain.errors import NotFoundError, ResourceExhaustedError, ZBrainError

from ..core import lifecycle
from ..core.ids import new_job_ids
from ..core.lifecycle import Change, RetryPolicy
from ..core.model import AttemptResult, Job, JobState, Lease, LogRecord, LogStream, NewJob

LOG_LIMIT_MARK = "[log limit reached: further output of this job is not stored]"
ORG_LOG_QUOTA_MARK = (
    "[the organisation's log quota (max_log_bytes) is reached: "
    "further output of this job is not stored]"
)


def plan_submission(
    jobs: Sequence[NewJob], now_us: int, earlier: Mapping[tuple[str, str], Job]
) -> list[tuple[Job, bool]]:
    """Each job of a submission, with True beside it when it is not new: a job
    repeating the request id of an earlier one of the same org stands for that
    one, whether earlier in the batch or already stored (`earlier`, by org and
    request id)."""
    results: list[tuple[Job, bool]] = []
    known: dict[tuple[str, str], Job] = dict(earlier)
    fresh_ids = iter(new_job_ids(len(jobs)))  # one each; a repeat leaves its id unused
    for new in jobs:
        key = (new.org_id, new.request_id)
        if new.request_id:
            found = known.get(key)
            if found is not None:
                results.append((found, True))
                continue
        job = lifecycle.submitted_job(next(fresh_ids), new, now_us)
        known[key] = job
        results.append((job, False))
    return results


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


def within_org_log_quota(
    records: Sequence[LogRecord], used: int, quota: int
) -> tuple[list[LogRecord], bool]:
    """The records that fit in what is left of the org's log quota (`used`
    bytes of `quota`), and whether some did not (the caller then adds
    ORG_LOG_QUOTA_MARK, after which the job's log takes nothing more)."""
    kept: list[LogRecord] = []
    for record in records:
        used += len(record[2].encode())
        if used > quota:
            return kept, True
        kept.append(record)
    return kept, False


def waiting_changes(changes: Sequence[Change]) -> dict[str, int]:
    """How each org's count of waiting jobs (`JobState.is_waiting`) moves with
    these changes; orgs whose count stays put are left out."""
    moved: collections.Counter[str] = collections.Counter()
    for change in changes:
        was, now = change.before.state.is_waiting, change.after.state.is_waiting
        if was != now:
            moved[change.after.org_id] += 1 if now else -1
    return {org_id: delta for org_id, delta in moved.items() if delta}


def ended_leases(changes: Sequence[Change]) -> list[tuple[str, int]]:
    """The leases (job id, lease epoch) these changes end: attempts that stop
    running, whatever ends them (a result, a reaper, a cancel)."""
    return [
        (change.before.id, change.before.lease_epoch)
        for change in changes
        if change.before.state is JobState.RUNNING
        and (
            change.after.state is not JobState.RUNNING
            or change.after.lease_epoch != change.before.lease_epoch
        )
    ]


def quota_exceeded(
    org_id: str, waiting: int, limit: int, *, own: bool = False
) -> ResourceExhaustedError:
    """The error for a submission that would take an org past its waiting-jobs
    quota: the server's (max_pending_per_org) or the org's own (`own`)."""
    which = "the organisation's max_waiting_jobs" if own else "max_pending_per_org"
    return ResourceExhaustedError(
        f"organisation {org_id!r} has {waiting} jobs waiting; the quota ({which}) is {limit}"
    )
