"""Conformance: every ended attempt of a job is recorded, oldest first, and
survives a restart; List filters by labels and submission time."""

from __future__ import annotations

from tests.store.support import LEASE_TTL, RETRY, SECOND, T0, LeaseOne, Reopen, Submit
from zbrain_server.core.model import (
    AttemptOutcome,
    AttemptResult,
    Cause,
    JobQuery,
    JobState,
)
from zbrain_server.store import JobStore

FAILED = AttemptResult(AttemptOutcome.FAILED, error="exit 1")
SUCCEEDED = AttemptResult(AttemptOutcome.SUCCEEDED, output_json="{}")


async def test_a_new_job_has_no_recorded_attempts(submit: Submit) -> None:
    job = await submit()

    assert job.attempts == ()


async def test_an_ended_attempt_is_recorded_with_its_worker_times_and_outcome(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)
    lease = await lease_one(worker_id="w7", now_us=T0 + SECOND)

    job = await store.finish_attempt(
        lease.job.id, lease.lease_epoch, FAILED, T0 + 3 * SECOND, RETRY
    )

    [attempt] = job.attempts
    assert attempt.number == 1
    assert attempt.worker_id == "w7"
    assert attempt.lease_epoch == lease.lease_epoch
    assert (attempt.start_time_us, attempt.end_time_us) == (T0 + SECOND, T0 + 3 * SECOND)
    assert attempt.cause is Cause.ATTEMPT_FAILED
    assert attempt.end_state is JobState.RETRYING
    assert attempt.error == "exit 1"


async def test_every_attempt_is_kept_oldest_first_and_survives_a_restart(
    store: JobStore, submit: Submit, lease_one: LeaseOne, reopen: Reopen
) -> None:
    await submit(max_retries=2)
    now = T0
    for result in (FAILED, FAILED, SUCCEEDED):
        lease = await lease_one(now_us=now, worker_id=f"w{now}")
        job = await store.finish_attempt(lease.job.id, lease.lease_epoch, result, now + 1, RETRY)
        now = (job.next_run_time_us or now) + 1

    reopened = await reopen(store)
    stored = await reopened.get_job(job.id)

    assert [a.number for a in stored.attempts] == [1, 2, 3]
    assert [a.cause for a in stored.attempts] == [
        Cause.ATTEMPT_FAILED,
        Cause.ATTEMPT_FAILED,
        Cause.SUCCEEDED,
    ]
    assert stored.attempts[-1].end_state is JobState.SUCCEEDED
    assert stored == job


async def test_a_lost_worker_is_recorded_as_its_attempts_end(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=0)
    await lease_one(now_us=T0)

    [job] = await store.expire_leases(T0 + LEASE_TTL + 1, RETRY)

    [attempt] = job.attempts
    assert attempt.cause is Cause.LEASE_EXPIRED
    assert attempt.end_state is JobState.FAILED


async def test_a_returned_lease_records_no_attempt(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    job = await store.return_lease(lease.job.id, lease.lease_epoch, T0 + 1)

    assert job.attempts == ()


async def test_list_jobs_filters_by_every_label_given(store: JobStore, submit: Submit) -> None:
    both = await submit(labels={"team": "data", "tier": "gold"})
    await submit(labels={"team": "data"})
    await submit(labels={"team": "web", "tier": "gold"})

    found = await store.list_jobs(JobQuery("acme", labels={"team": "data", "tier": "gold"}))

    assert [job.id for job in found] == [both.id]


async def test_list_jobs_filters_by_submission_time(store: JobStore, submit: Submit) -> None:
    jobs = [await submit() for _ in range(3)]
    # Ids carry the time they were made to the millisecond: bound between the first two.
    middle = _id_time_us(jobs[1].id)

    after = await store.list_jobs(JobQuery("acme", created_after_us=middle))
    before = await store.list_jobs(JobQuery("acme", created_before_us=middle))

    assert {job.id for job in after} | {job.id for job in before} == {job.id for job in jobs}
    assert jobs[1].id in {job.id for job in after}
    assert not {job.id for job in after} & {job.id for job in before}


def _id_time_us(job_id: str) -> int:
    return int(job_id.replace("-", "")[:12], 16) * 1000
