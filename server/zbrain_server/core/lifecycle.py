"""The job state machine: every state change of a job is decided here.

Functions take a job as stored and return the change to store: the job as it
must be stored next, and the typed `Cause` of the transition (with its words,
for people). They never touch a database. The stores persist the result with
a compare-and-set on the old state and lease epoch, so a decision made on a
stale read can never overwrite a newer one.

    PENDING  --lease-->    RUNNING  --success-->          SUCCEEDED
    RUNNING  --returned unstarted--> PENDING
    PENDING  --cancel-->   CANCELED
    RUNNING  --failure, retries left-->   RETRYING --lease--> RUNNING
    RUNNING  --failure, none left-->      FAILED
    RUNNING  --canceled by worker-->      CANCELED
    RETRYING --cancel-->   CANCELED
    SCHEDULED --its time comes-->           PENDING
    BLOCKED  --every parent met its condition-->  PENDING (or SCHEDULED)
    BLOCKED  --a parent can no longer meet it-->  CANCELED
    BLOCKED, SCHEDULED --cancel-->          CANCELED

A timed-out, lost or interrupted attempt is a failure like any other, told
apart by its cause; a job whose cancel was requested is never retried. A job
is accepted PENDING, SCHEDULED when delayed, or BLOCKED while it waits for
other jobs (see `accepted`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zbrain.errors import IllegalTransitionError, StaleLeaseError

from .model import (
    AttemptOutcome,
    AttemptRecord,
    AttemptResult,
    CancelOutcome,
    Cause,
    DependencyCondition,
    Job,
    JobState,
    NewJob,
    evolve,
)

ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELED}),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.RETRYING,
            JobState.CANCELED,
            JobState.PENDING,  # a lease given back before its worker ever saw it
        }
    ),
    JobState.RETRYING: frozenset({JobState.RUNNING, JobState.CANCELED}),
    JobState.SCHEDULED: frozenset({JobState.PENDING, JobState.CANCELED}),
    JobState.BLOCKED: frozenset({JobState.PENDING, JobState.SCHEDULED, JobState.CANCELED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
    # A state a client does not know; no job is ever in it on the server.
    JobState.UNSPECIFIED: frozenset(),
}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts.

    The n-th retry waits between half and all of min(cap, base * 2**(n-1)):
    the jitter spreads retries of jobs that failed together, and the lower
    bound keeps a retry from following its failure at once.
    """

    base_us: int = 1_000_000
    cap_us: int = 300_000_000

    def backoff_us(self, attempt: int, rng: random.Random | None = None) -> int:
        ceiling = min(self.cap_us, self.base_us << max(0, attempt - 1))
        jitter: float = (rng or random).random()
        return ceiling // 2 + int(jitter * (ceiling - ceiling // 2))


@dataclass(slots=True)
class Change:
    """A decided transition: the job to store and, for the event log, why (the
    same cause and words are in `after`)."""

    before: Job
    after: Job

    @property
    def cause(self) -> Cause:
        return self.after.cause

    @property
    def reason(self) -> str:
        return self.after.reason


# Why an attempt ended, from the outcome its worker reported.
_OUTCOME_CAUSES = {
    AttemptOutcome.SUCCEEDED: Cause.SUCCEEDED,
    AttemptOutcome.FAILED: Cause.ATTEMPT_FAILED,
    AttemptOutcome.CANCELED: Cause.CANCELED,
    AttemptOutcome.TIMED_OUT: Cause.ATTEMPT_TIMED_OUT,
    AttemptOutcome.INTERRUPTED: Cause.INTERRUPTED,
    AttemptOutcome.RESOURCE_LIMIT_EXCEEDED: Cause.RESOURCE_LIMIT_EXCEEDED,
}

LEASE_EXPIRED_ERROR = "worker lost: lease expired"
WORKER_RESTARTED_ERROR = "worker lost: restarted under the same id while the attempt was held"
OVERDUE_ERROR = "timed out (enforced by the server)"


def submitted_job(job_id: str, new: NewJob, now_us: int) -> Job:
    """A job just submitted, no attempt yet: PENDING, runnable from now, or
    SCHEDULED until its run_at time. (Dependencies are `accepted`'s part.)

    The stores make it from the NewJob rather than read it back from its row,
    which would parse the JSON columns just written. It shares the NewJob's
    values, which nobody changes in place.
    """
    run_at_us = new.run_at_us
    delayed = run_at_us is not None and run_at_us > now_us
    return Job(
        id=job_id,
        org_id=new.org_id,
        cmd=new.cmd,
        input_json=new.input_json,
        env=new.env,
        timeout_us=new.timeout_us,
        max_retries=new.max_retries,
        priority=new.priority,
        labels=new.labels,
        state=JobState.SCHEDULED if delayed else JobState.PENDING,
        attempt=0,
        create_time_us=now_us,
        update_time_us=now_us,
        start_time_us=None,
        finish_time_us=None,
        next_run_time_us=run_at_us if delayed else now_us,
        last_error="",
        output_json="",
        lease_epoch=0,
        worker_id="",
        lease_expire_time_us=None,
        cancel_requested=False,
        request_id=new.request_id,
        trace_context=new.trace_context,
        previous_state=None,
        cause=Cause.SUBMITTED,
        reason="submitted",
        transition_time_us=now_us,
        rerun_of=new.rerun_of,
        concurrency_key=new.concurrency_key,
        concurrency_limit=new.concurrency_limit,
        requires=new.requires,
        resources=new.resources,
        network=new.network,
    )


def accepted(job: Job, waiting_on: int, failed: tuple[str, JobState] | None) -> Job:
    """A submitted job with dependencies, as stored: BLOCKED while `waiting_on`
    of its parents have yet to meet their conditions, or CANCELED at once when
    one (`failed`: its id and state) can no longer meet it."""
    if failed is not None:
        return dependency_failed(job, *failed, job.create_time_us).after
    if waiting_on:
        plural = "s" if waiting_on > 1 else ""
        return evolve(
            job,
            state=JobState.BLOCKED,
            waiting_on=waiting_on,
            reason=f"submitted; waiting for {waiting_on} job{plural}",
        )
    return job


def condition_met(condition: DependencyCondition, parent_state: JobState) -> bool | None:
    """Whether a parent in this state meets the condition: None while it may
    still run (not terminal), then True or False for good."""
    if not parent_state.is_terminal:
        return None
    return condition is DependencyCondition.FINISHED or parent_state is JobState.SUCCEEDED


def release(job: Job, now_us: int) -> Change:
    """A blocked job whose parents all met their conditions: runnable, or
    SCHEDULED while its own run_at time is still to come."""
    run_at = job.next_run_time_us or now_us
    later = run_at > now_us
    return _move(
        job,
        JobState.SCHEDULED if later else JobState.PENDING,
        Cause.RELEASED,
        "every job it waited for is done",
        now_us,
        waiting_on=0,
        next_run_time_us=run_at if later else now_us,
    )


def dependency_failed(job: Job, parent_id: str, parent_state: JobState, now_us: int) -> Change:
    """A waiting job whose parent ended in a way that can never meet its
    condition: it will not run."""
    return _move(
        job,
        JobState.CANCELED,
        Cause.DEPENDENCY_FAILED,
        f"job {parent_id} it depends on ended {parent_state.name}",
        now_us,
        finish_time_us=now_us,
        next_run_time_us=None,
    )


def due(job: Job, now_us: int) -> Change:
    """A delayed job whose time came: runnable."""
    return _move(job, JobState.PENDING, Cause.DUE, "its scheduled time came", now_us)


def canceled_with(job: Job, ancestor_id: str, now_us: int) -> Change:
    """A job waiting downstream of a job a user canceled: canceled with it."""
    return _move(
        job,
        JobState.CANCELED,
        Cause.CANCELED,
        f"canceled with job {ancestor_id}, which it waited for",
        now_us,
        finish_time_us=now_us,
        next_run_time_us=None,
        cancel_requested=True,
    )


def check_transition(from_state: JobState, to_state: JobState) -> None:
    """Raise IllegalTransitionError unless the lifecycle allows the change."""
    if to_state not in ALLOWED_TRANSITIONS[from_state]:
        raise IllegalTransitionError(f"a job cannot go from {from_state.name} to {to_state.name}")


def _move(
    job: Job, to_state: JobState, cause: Cause, reason: str, now_us: int, **fields: object
) -> Change:
    check_transition(job.state, to_state)
    after = evolve(
        job,
        state=to_state,
        update_time_us=now_us,
        previous_state=job.state,
        cause=cause,
        reason=reason,
        transition_time_us=now_us,
        **fields,
    )
    return Change(job, after)


def start_attempt(
    job: Job, worker_id: str, now_us: int, lease_ttl_us: int, incarnation: str = ""
) -> Change:
    """Lease a runnable job to a worker (to its process `incarnation`, when
    known): a new attempt under a new, higher epoch."""
    return _move(
        job,
        JobState.RUNNING,
        Cause.LEASED,
        f"leased by worker {worker_id}",
        now_us,
        attempt=job.attempt + 1,
        lease_epoch=job.lease_epoch + 1,
        worker_id=worker_id,
        worker_incarnation=incarnation,
        lease_expire_time_us=now_us + lease_ttl_us,
        start_time_us=now_us,
        next_run_time_us=None,
    )


def check_lease(job: Job, lease_epoch: int) -> None:
    """Raise StaleLeaseError unless `lease_epoch` is the job's live lease."""
    if job.state is not JobState.RUNNING or job.lease_epoch != lease_epoch:
        raise StaleLeaseError(
            f"lease epoch {lease_epoch} of job {job.id} is not current "
            f"(job is {job.state.name} at epoch {job.lease_epoch})"
        )


def return_lease(job: Job, lease_epoch: int, now_us: int) -> Change:
    """Give back a lease its worker never received (it left or began draining as
    the job was leased): the attempt did not happen, so it is not counted, but
    the epoch stays spent so nothing can report on it."""
    check_lease(job, lease_epoch)
    return _move(
        job,
        JobState.PENDING,
        Cause.LEASE_RETURNED,
        "lease returned unstarted",
        now_us,
        attempt=job.attempt - 1,
        lease_expire_time_us=None,
        next_run_time_us=now_us,
        start_time_us=None,
    )


def renew_lease(job: Job, lease_epoch: int, now_us: int, lease_ttl_us: int) -> Job:
    """Extend a live lease; the state does not change."""
    check_lease(job, lease_epoch)
    return evolve(job, lease_expire_time_us=now_us + lease_ttl_us, update_time_us=now_us)


def finish_attempt(
    job: Job,
    lease_epoch: int,
    result: AttemptResult,
    now_us: int,
    retry: RetryPolicy,
) -> Change:
    """Apply an attempt's outcome as its worker reported it: success, cancel,
    retry later, or fail for good."""
    check_lease(job, lease_epoch)
    return _end_attempt(job, result, _OUTCOME_CAUSES[result.outcome], now_us, retry)


def expire_lease(job: Job, now_us: int, retry: RetryPolicy) -> Change:
    """End an attempt whose lease ran out: its worker is lost."""
    result = AttemptResult(AttemptOutcome.FAILED, error=LEASE_EXPIRED_ERROR)
    return _end_attempt(job, result, Cause.LEASE_EXPIRED, now_us, retry)


def lose_to_restart(job: Job, lease_epoch: int, now_us: int, retry: RetryPolicy) -> Change:
    """End an attempt whose worker was restarted under the same id: the old
    process may have started it (and its job may still run), so unlike
    `return_lease` the attempt is counted, as a lost one."""
    check_lease(job, lease_epoch)
    result = AttemptResult(AttemptOutcome.FAILED, error=WORKER_RESTARTED_ERROR)
    return _end_attempt(job, result, Cause.WORKER_RESTARTED, now_us, retry)


def end_overdue(job: Job, now_us: int, retry: RetryPolicy) -> Change:
    """End an attempt that ran past its timeout and grace without its worker
    ending it."""
    result = AttemptResult(AttemptOutcome.TIMED_OUT, error=OVERDUE_ERROR)
    return _end_attempt(job, result, Cause.OVERDUE, now_us, retry)


def _end_attempt(
    job: Job, result: AttemptResult, cause: Cause, now_us: int, retry: RetryPolicy
) -> Change:
    if cause is Cause.SUCCEEDED:
        return _move(
            job,
            JobState.SUCCEEDED,
            cause,
            "succeeded",
            now_us,
            output_json=result.output_json,
            finish_time_us=now_us,
            **_ended(job, JobState.SUCCEEDED, cause, "", now_us),
        )
    if cause is Cause.CANCELED or job.cancel_requested:
        return _move(
            job,
            JobState.CANCELED,
            Cause.CANCELED,
            "canceled by user",
            now_us,
            finish_time_us=now_us,
            **_ended(job, JobState.CANCELED, Cause.CANCELED, result.error, now_us),
        )
    error = _describe_failure(result)
    if job.attempt <= job.max_retries:
        return _move(
            job,
            JobState.RETRYING,
            cause,
            f"attempt {job.attempt} failed, retry scheduled: {error}",
            now_us,
            last_error=error,
            next_run_time_us=now_us + retry.backoff_us(job.attempt),
            **_ended(job, JobState.RETRYING, cause, error, now_us),
        )
    return _move(
        job,
        JobState.FAILED,
        cause,
        f"attempt {job.attempt} failed, no retries left: {error}",
        now_us,
        last_error=error,
        finish_time_us=now_us,
        **_ended(job, JobState.FAILED, cause, error, now_us),
    )


def _ended(job: Job, to_state: JobState, cause: Cause, error: str, now_us: int) -> dict[str, Any]:
    """The fields an ended attempt changes: no lease any more (worker_id stays:
    who ran the last attempt), and the attempt added to the job's history."""
    record = AttemptRecord(
        number=job.attempt,
        worker_id=job.worker_id,
        lease_epoch=job.lease_epoch,
        start_time_us=job.start_time_us or now_us,
        end_time_us=now_us,
        cause=cause,
        end_state=to_state,
        error=error,
    )
    return {"lease_expire_time_us": None, "attempts": (*job.attempts, record)}


def _describe_failure(result: AttemptResult) -> str:
    if result.error:
        return result.error
    if result.outcome is AttemptOutcome.TIMED_OUT:
        return "timed out"
    if result.outcome is AttemptOutcome.INTERRUPTED:
        return "interrupted: the worker shut down"
    if result.exit_code is not None:
        return f"exited with status {result.exit_code}"
    return "failed"


# What a rerun does not take over from the job it reruns: its identity and
# place in a graph or schedule. Every other field of the spec is copied, so a
# field a job gains is rerun with it.
_NOT_RERUN = frozenset({"request_id", "trace_context", "depends_on", "run_at_us", "rerun_of"})
_RERUN_FIELDS = tuple(
    spec.name for spec in dataclasses.fields(NewJob) if spec.name not in _NOT_RERUN
)


def rerun(job: Job, input_json: str | None, trace_context: Mapping[str, str]) -> NewJob:
    """A new job with the spec of a finished one (its input replaced if
    given), linked to it by rerun_of; IllegalTransitionError unless it finished."""
    if not job.state.is_terminal:
        raise IllegalTransitionError(
            f"job {job.id} is {job.state.name}; only a finished job (SUCCEEDED, FAILED or "
            "CANCELED) can be rerun"
        )
    spec = {name: getattr(job, name) for name in _RERUN_FIELDS}
    if input_json is not None:
        spec["input_json"] = input_json
    return NewJob(**spec, trace_context=trace_context, rerun_of=job.id)


def cancel(job: Job, now_us: int) -> tuple[Change | None, CancelOutcome]:
    """Cancel a job: at once when waiting (also blocked or delayed), by request
    when running, not at all when done."""
    if job.state.is_terminal:
        return None, CancelOutcome.ALREADY_TERMINAL
    if job.state is JobState.RUNNING:
        if job.cancel_requested:
            return None, CancelOutcome.CANCEL_REQUESTED
        after = evolve(
            job,
            cancel_requested=True,
            update_time_us=now_us,
            previous_state=job.state,
            cause=Cause.CANCEL_REQUESTED,
            reason="cancel requested by user; the worker was told to stop",
            transition_time_us=now_us,
        )
        return Change(job, after), CancelOutcome.CANCEL_REQUESTED
    change = _move(
        job,
        JobState.CANCELED,
        Cause.CANCELED,
        "canceled by user",
        now_us,
        finish_time_us=now_us,
        next_run_time_us=None,
        cancel_requested=True,
    )
    return change, CancelOutcome.CANCELED
