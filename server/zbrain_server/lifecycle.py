"""The job state machine: every state change of a job is decided here.

Functions take a job as stored and return the job as it must be stored next;
they never touch a database. The stores persist the result with a
compare-and-set on the old state and lease epoch, so a decision made on a
stale read can never overwrite a newer one.

    PENDING  --lease-->    RUNNING  --success-->          SUCCEEDED
    RUNNING  --returned unstarted--> PENDING
    PENDING  --cancel-->   CANCELED
    RUNNING  --failure, retries left-->   RETRYING --lease--> RUNNING
    RUNNING  --failure, none left-->      FAILED
    RUNNING  --canceled by worker-->      CANCELED
    RETRYING --cancel-->   CANCELED

A timed-out or lost attempt is a failure like any other; a job whose cancel
was requested is never retried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from zbrain.errors import IllegalTransitionError, StaleLeaseError

from .model import (
    AttemptOutcome,
    AttemptResult,
    CancelOutcome,
    Job,
    JobState,
    NewJob,
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
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
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
    """A decided transition: the job to store and, for the event log, why."""

    before: Job
    after: Job
    reason: str


def submitted_job(job_id: str, new: NewJob, now_us: int) -> Job:
    """A job just submitted: PENDING, runnable from now, no attempt yet.

    The stores make it from the NewJob rather than read it back from its row,
    which would parse the JSON columns just written. It shares the NewJob's
    values, which nobody changes in place.
    """
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
        state=JobState.PENDING,
        attempt=0,
        create_time_us=now_us,
        update_time_us=now_us,
        start_time_us=None,
        finish_time_us=None,
        next_run_time_us=now_us,
        last_error="",
        output_json="",
        lease_epoch=0,
        worker_id="",
        lease_expire_time_us=None,
        cancel_requested=False,
        request_id=new.request_id,
        trace_context=new.trace_context,
    )


def check_transition(from_state: JobState, to_state: JobState) -> None:
    """Raise IllegalTransitionError unless the lifecycle allows the change."""
    if to_state not in ALLOWED_TRANSITIONS[from_state]:
        raise IllegalTransitionError(f"a job cannot go from {from_state.name} to {to_state.name}")


def _move(job: Job, to_state: JobState, now_us: int, **fields: object) -> Job:
    check_transition(job.state, to_state)
    return replace(job, state=to_state, update_time_us=now_us, **fields)  # type: ignore[arg-type]


def start_attempt(job: Job, worker_id: str, now_us: int, lease_ttl_us: int) -> Change:
    """Lease a runnable job to a worker: a new attempt under a new, higher epoch."""
    after = _move(
        job,
        JobState.RUNNING,
        now_us,
        attempt=job.attempt + 1,
        lease_epoch=job.lease_epoch + 1,
        worker_id=worker_id,
        lease_expire_time_us=now_us + lease_ttl_us,
        start_time_us=now_us,
        next_run_time_us=None,
    )
    return Change(job, after, f"leased by worker {worker_id}")


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
    after = _move(
        job,
        JobState.PENDING,
        now_us,
        attempt=job.attempt - 1,
        lease_expire_time_us=None,
        next_run_time_us=now_us,
        start_time_us=None,
    )
    return Change(job, after, "lease returned unstarted")


def renew_lease(job: Job, lease_epoch: int, now_us: int, lease_ttl_us: int) -> Job:
    """Extend a live lease; the state does not change."""
    check_lease(job, lease_epoch)
    return replace(job, lease_expire_time_us=now_us + lease_ttl_us, update_time_us=now_us)


def finish_attempt(
    job: Job,
    lease_epoch: int,
    result: AttemptResult,
    now_us: int,
    retry: RetryPolicy,
) -> Change:
    """Apply an attempt's outcome: success, cancel, retry later, or fail for good."""
    check_lease(job, lease_epoch)
    ended = {"lease_expire_time_us": None}  # worker_id stays: who ran the last attempt
    if result.outcome is AttemptOutcome.SUCCEEDED:
        after = _move(
            job,
            JobState.SUCCEEDED,
            now_us,
            output_json=result.output_json,
            finish_time_us=now_us,
            **ended,
        )
        return Change(job, after, "succeeded")
    if result.outcome is AttemptOutcome.CANCELED or job.cancel_requested:
        after = _move(job, JobState.CANCELED, now_us, finish_time_us=now_us, **ended)
        return Change(job, after, "canceled")
    error = _describe_failure(result)
    if job.attempt <= job.max_retries:
        next_run = now_us + retry.backoff_us(job.attempt)
        after = _move(
            job, JobState.RETRYING, now_us, last_error=error, next_run_time_us=next_run, **ended
        )
        return Change(job, after, f"attempt {job.attempt} failed, retry scheduled: {error}")
    after = _move(job, JobState.FAILED, now_us, last_error=error, finish_time_us=now_us, **ended)
    return Change(job, after, f"attempt {job.attempt} failed, no retries left: {error}")


def _describe_failure(result: AttemptResult) -> str:
    if result.outcome is AttemptOutcome.TIMED_OUT:
        return result.error or "timed out"
    if result.outcome is AttemptOutcome.WORKER_LOST:
        return result.error or "worker lost"
    if result.error:
        return result.error
    if result.exit_code is not None:
        return f"exited with status {result.exit_code}"
    return "failed"


CANCEL_REQUESTED = "cancel requested"
"""The reason recorded when a running job is asked to stop (its holder is told)."""


def cancel(job: Job, now_us: int) -> tuple[Change | None, CancelOutcome]:
    """Cancel a job: at once when waiting, by request when running, not at all when done."""
    if job.state.is_terminal:
        return None, CancelOutcome.ALREADY_TERMINAL
    if job.state is JobState.RUNNING:
        if job.cancel_requested:
            return None, CancelOutcome.CANCEL_REQUESTED
        after = replace(job, cancel_requested=True, update_time_us=now_us)
        return Change(job, after, CANCEL_REQUESTED), CancelOutcome.CANCEL_REQUESTED
    after = _move(
        job,
        JobState.CANCELED,
        now_us,
        finish_time_us=now_us,
        next_run_time_us=None,
        cancel_requested=True,
    )
    return Change(job, after, "canceled"), CancelOutcome.CANCELED
