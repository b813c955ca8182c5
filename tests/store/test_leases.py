"""Conformance: leasing jobs to workers, renewing and ending attempts, reaping."""

from __future__ import annotations

import asyncio

import pytest

from tests.store.support import LEASE_TTL, RETRY, SECOND, T0, LeaseOne, Submit, new_job
from zbrain.errors import NotFoundError, ResourceExhaustedError, StaleLeaseError
from zbrain_server.core.model import AttemptOutcome, AttemptResult, Job, JobState, Lease
from zbrain_server.store import JobStore
from zbrain_server.store.jobs import CommitLeasing, LeaseClaim

FAILED = AttemptResult(AttemptOutcome.FAILED, error="exit 1")
SUCCEEDED = AttemptResult(AttemptOutcome.SUCCEEDED, output_json='{"ok": true}')


async def fail(store: JobStore, lease: Lease, now_us: int) -> Job:
    return await store.finish_attempt(lease.job.id, lease.lease_epoch, FAILED, now_us, RETRY)


async def leased_ids(
    store: JobStore, orgs: list[str], max_jobs: int, now_us: int = T0
) -> list[str]:
    leases = await store.lease_jobs("w1", orgs, max_jobs, now_us, LEASE_TTL)
    return [lease.job.id for lease in leases]


# -- lease_jobs ------------------------------------------------------------------


async def test_a_lease_starts_the_first_attempt(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    job = await submit()

    lease = await lease_one(now_us=T0 + SECOND, worker_id="w7")

    assert lease.job.id == job.id
    assert lease.job.state is JobState.RUNNING
    assert lease.job.attempt == 1
    assert lease.lease_epoch == lease.job.lease_epoch == 1
    assert lease.job.worker_id == "w7"
    assert lease.job.start_time_us == T0 + SECOND
    assert lease.expire_time_us == lease.job.lease_expire_time_us == T0 + SECOND + LEASE_TTL
    assert await store.get_job(job.id) == lease.job


async def test_a_leased_job_is_not_leased_again(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    await lease_one()

    assert await store.lease_jobs("w2", ["acme"], 10, T0 + SECOND, LEASE_TTL) == []


async def test_jobs_of_one_org_are_leased_in_submission_order(
    store: JobStore, submit: Submit
) -> None:
    ids = [(await submit()).id for _ in range(4)]

    assert await leased_ids(store, ["acme"], 2) == ids[:2]
    assert await leased_ids(store, ["acme"], 2) == ids[2:]


async def test_higher_priority_jobs_are_leased_first(store: JobStore, submit: Submit) -> None:
    low = await submit(priority=-1)
    normal_1 = await submit()
    high = await submit(priority=10)
    normal_2 = await submit()

    leased = [await leased_ids(store, ["acme"], 1) for _ in range(4)]

    assert leased == [[high.id], [normal_1.id], [normal_2.id], [low.id]]


async def test_lease_jobs_leases_at_most_max_jobs(store: JobStore, submit: Submit) -> None:
    ids = [(await submit()).id for _ in range(5)]

    leases = await store.lease_jobs("w1", ["acme"], 2, T0, LEASE_TTL)

    assert len(leases) == 2
    pending = [(await store.get_job(job_id)).state for job_id in ids[2:]]
    assert pending == [JobState.PENDING] * 3


async def test_only_jobs_of_the_workers_orgs_are_leased(store: JobStore, submit: Submit) -> None:
    await submit(org_id="other")

    assert await leased_ids(store, ["acme"], 10) == []
    assert len(await leased_ids(store, ["other"], 10)) == 1


async def test_orgs_share_the_slots_round_robin(store: JobStore, submit: Submit) -> None:
    a_ids = [(await submit(org_id="a")).id for _ in range(10)]
    b_ids = [(await submit(org_id="b")).id for _ in range(3)]

    leased = await leased_ids(store, ["a", "b"], 4)

    assert sorted(leased) == sorted(a_ids[:2] + b_ids[:2])


async def test_round_robin_starts_with_the_first_org_given(store: JobStore, submit: Submit) -> None:
    a_ids = [(await submit(org_id="a")).id for _ in range(3)]
    b_ids = [(await submit(org_id="b")).id for _ in range(3)]

    leased = await leased_ids(store, ["b", "a"], 3)

    assert sorted(leased) == sorted(b_ids[:2] + a_ids[:1])


async def test_an_org_with_few_jobs_leaves_its_slots_to_the_others(
    store: JobStore, submit: Submit
) -> None:
    a_ids = [(await submit(org_id="a")).id for _ in range(1)]
    b_ids = [(await submit(org_id="b")).id for _ in range(5)]

    leased = await leased_ids(store, ["a", "b"], 4)

    assert sorted(leased) == sorted(a_ids + b_ids[:3])


async def test_a_retrying_job_waits_for_its_next_run_time(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)
    retrying = await fail(store, await lease_one(), T0)
    assert retrying.next_run_time_us is not None

    assert await leased_ids(store, ["acme"], 1, retrying.next_run_time_us - 1) == []
    assert await leased_ids(store, ["acme"], 1, retrying.next_run_time_us) == [retrying.id]


async def test_each_attempt_runs_under_a_higher_epoch(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    epochs, attempts = [], []
    now = T0
    for _ in range(3):
        lease = await lease_one(now_us=now)
        epochs.append(lease.lease_epoch)
        attempts.append(lease.job.attempt)
        now = (await fail(store, lease, now)).next_run_time_us or 0

    assert epochs == sorted(set(epochs))
    assert attempts == [1, 2, 3]


async def test_concurrent_leases_never_hand_out_a_job_twice(
    store: JobStore, submit: Submit
) -> None:
    ids = {(await submit()).id for _ in range(10)}

    batches = await asyncio.gather(
        *(store.lease_jobs(f"w{n}", ["acme"], 3, T0, LEASE_TTL) for n in range(6))
    )

    leased = [lease.job.id for batch in batches for lease in batch]
    assert sorted(leased) == sorted(ids)


# -- renew_lease -----------------------------------------------------------------


async def test_renewing_extends_the_lease(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    renewed = await store.renew_lease(lease.job.id, lease.lease_epoch, T0 + 20 * SECOND, LEASE_TTL)

    assert renewed.lease_expire_time_us == T0 + 20 * SECOND + LEASE_TTL
    assert (renewed.state, renewed.lease_epoch) == (JobState.RUNNING, lease.lease_epoch)
    assert await store.get_job(lease.job.id) == renewed


@pytest.mark.parametrize("offset", [-1, 1])
async def test_renewing_with_another_epoch_is_stale(
    store: JobStore, submit: Submit, lease_one: LeaseOne, offset: int
) -> None:
    await submit()
    lease = await lease_one()

    with pytest.raises(StaleLeaseError):
        await store.renew_lease(lease.job.id, lease.lease_epoch + offset, T0, LEASE_TTL)
    assert await store.get_job(lease.job.id) == lease.job


async def test_renewing_an_earlier_attempts_lease_is_stale(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)
    first = await lease_one()
    retrying = await fail(store, first, T0)
    second = await lease_one(now_us=retrying.next_run_time_us)

    with pytest.raises(StaleLeaseError):
        await store.renew_lease(first.job.id, first.lease_epoch, T0 + 2 * SECOND, LEASE_TTL)
    assert await store.get_job(first.job.id) == second.job


async def test_renewing_a_finished_attempt_is_stale(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.finish_attempt(lease.job.id, lease.lease_epoch, SUCCEEDED, T0, RETRY)

    with pytest.raises(StaleLeaseError):
        await store.renew_lease(lease.job.id, lease.lease_epoch, T0 + SECOND, LEASE_TTL)


# -- return_lease ----------------------------------------------------------------


async def test_a_returned_lease_makes_the_job_pending_without_counting_the_attempt(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    returned = await store.return_lease(lease.job.id, lease.lease_epoch, T0 + SECOND)

    assert (returned.state, returned.attempt) == (JobState.PENDING, 0)
    assert returned.lease_epoch == lease.lease_epoch, "a spent epoch is never reused"
    again = await lease_one(now_us=T0 + SECOND)
    assert (again.job.attempt, again.lease_epoch) == (1, lease.lease_epoch + 1)


async def test_returning_a_stale_lease_changes_nothing(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.finish_attempt(lease.job.id, lease.lease_epoch, SUCCEEDED, T0, RETRY)
    finished = await store.get_job(lease.job.id)

    with pytest.raises(StaleLeaseError):
        await store.return_lease(lease.job.id, lease.lease_epoch, T0 + SECOND)
    assert await store.get_job(lease.job.id) == finished


# -- finish_attempt --------------------------------------------------------------


async def test_a_successful_attempt_ends_the_job(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    lease = await lease_one()

    job = await store.finish_attempt(lease.job.id, lease.lease_epoch, SUCCEEDED, T0 + SECOND, RETRY)

    assert job.state is JobState.SUCCEEDED
    assert job.output_json == '{"ok": true}'
    assert job.finish_time_us == T0 + SECOND
    assert job.lease_expire_time_us is None
    assert await store.get_job(job.id) == job


async def test_a_failed_attempt_with_retries_left_is_retried_after_a_backoff(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)

    job = await fail(store, await lease_one(), T0 + SECOND)

    assert job.state is JobState.RETRYING
    assert job.last_error == "exit 1"
    assert job.next_run_time_us is not None
    assert T0 + SECOND + RETRY.cap_us // 2 <= job.next_run_time_us <= T0 + SECOND + RETRY.cap_us
    assert job.finish_time_us is None
    assert job.lease_expire_time_us is None
    assert await store.get_job(job.id) == job


@pytest.mark.parametrize("result", [SUCCEEDED, FAILED], ids=["succeeded", "failed"])
async def test_a_finished_attempt_remembers_its_worker(
    store: JobStore, submit: Submit, lease_one: LeaseOne, result: AttemptResult
) -> None:
    await submit(max_retries=1)
    lease = await lease_one(worker_id="w7")

    job = await store.finish_attempt(lease.job.id, lease.lease_epoch, result, T0, RETRY)

    assert job.worker_id == "w7"


async def test_a_job_fails_once_its_retries_are_spent(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=2)
    now, states = T0, []
    for _ in range(3):
        job = await fail(store, await lease_one(now_us=now), now)
        states.append(job.state)
        now = job.next_run_time_us or now

    assert states == [JobState.RETRYING, JobState.RETRYING, JobState.FAILED]
    assert job.attempt == 3
    assert job.finish_time_us == now
    assert await store.lease_jobs("w1", ["acme"], 1, now + 3600 * SECOND, LEASE_TTL) == []


async def test_a_job_without_retries_fails_at_its_first_failure(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=0)

    job = await fail(store, await lease_one(), T0)

    assert job.state is JobState.FAILED
    assert job.last_error == "exit 1"


async def test_an_attempt_canceled_by_its_worker_cancels_the_job(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    lease = await lease_one()

    job = await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.CANCELED), T0, RETRY
    )

    assert job.state is JobState.CANCELED
    assert job.finish_time_us == T0


async def test_a_job_whose_cancel_was_requested_is_never_retried(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    lease = await lease_one()
    await store.cancel_job(lease.job.id, T0)

    job = await fail(store, lease, T0 + SECOND)

    assert job.state is JobState.CANCELED
    assert await store.lease_jobs("w1", ["acme"], 1, T0 + 3600 * SECOND, LEASE_TTL) == []


async def test_finishing_with_a_stale_epoch_changes_nothing(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    with pytest.raises(StaleLeaseError):
        await store.finish_attempt(lease.job.id, lease.lease_epoch + 1, SUCCEEDED, T0, RETRY)
    assert await store.get_job(lease.job.id) == lease.job


async def test_an_attempt_can_be_finished_only_once(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    lease = await lease_one()
    finished = await store.finish_attempt(lease.job.id, lease.lease_epoch, SUCCEEDED, T0, RETRY)

    with pytest.raises(StaleLeaseError):
        await fail(store, lease, T0 + SECOND)
    assert await store.get_job(lease.job.id) == finished


async def test_of_concurrent_reports_on_one_attempt_exactly_one_wins(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    lease = await lease_one()

    outcomes = await asyncio.gather(
        store.finish_attempt(lease.job.id, lease.lease_epoch, SUCCEEDED, T0, RETRY),
        fail(store, lease, T0),
        store.finish_attempt(lease.job.id, lease.lease_epoch, SUCCEEDED, T0, RETRY),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if isinstance(o, Job)]
    assert len(winners) == 1
    assert all(isinstance(o, StaleLeaseError) for o in outcomes if not isinstance(o, Job))
    assert await store.get_job(lease.job.id) == winners[0]


async def test_a_batch_of_outcomes_is_recorded_each_on_its_own(
    store: JobStore, submit: Submit
) -> None:
    for _ in range(4):
        await submit(max_retries=3)
    first, second, third, fourth = await store.lease_jobs("w1", ["acme"], 4, T0, LEASE_TTL)
    await store.finish_attempt(third.job.id, third.lease_epoch, SUCCEEDED, T0, RETRY)
    unknown = "01939a4e-8b2c-7def-8123-456789abcdef"

    outcomes = await store.finish_attempts(
        [
            (first.job.id, first.lease_epoch, SUCCEEDED),
            (second.job.id, second.lease_epoch + 1, SUCCEEDED),  # a stale epoch
            (third.job.id, third.lease_epoch, FAILED),  # already finished
            (unknown, 1, SUCCEEDED),
            (fourth.job.id, fourth.lease_epoch, FAILED),
            (first.job.id, first.lease_epoch, FAILED),  # a repeat within the batch
        ],
        T0 + SECOND,
        RETRY,
    )

    done, stale, finished, missing, retrying, repeat = outcomes
    assert isinstance(done, Job) and done.state is JobState.SUCCEEDED
    assert done == await store.get_job(first.job.id)
    assert isinstance(stale, StaleLeaseError)
    assert await store.get_job(second.job.id) == second.job
    assert isinstance(finished, StaleLeaseError)
    assert (await store.get_job(third.job.id)).state is JobState.SUCCEEDED
    assert isinstance(missing, NotFoundError)
    assert isinstance(retrying, Job) and retrying.state is JobState.RETRYING
    assert retrying == await store.get_job(fourth.job.id)
    assert isinstance(repeat, StaleLeaseError)


async def test_a_batch_of_outcomes_records_one_event_per_finished_attempt(
    store: JobStore, submit: Submit
) -> None:
    for _ in range(3):
        await submit()
    leases = await store.lease_jobs("w1", ["acme"], 3, T0, LEASE_TTL)
    before = await store.read_events(None, "jobs/", 0, 1000)

    await store.finish_attempts(
        [(lease.job.id, lease.lease_epoch, SUCCEEDED) for lease in leases]
        + [(leases[0].job.id, leases[0].lease_epoch, SUCCEEDED)],  # refused: no event
        T0 + SECOND,
        RETRY,
    )

    after = (await store.read_events(None, "jobs/", 0, 1000))[len(before) :]
    assert sorted(record.job_id for record in after) == sorted(lease.job.id for lease in leases)


# -- expire_leases ---------------------------------------------------------------


async def test_leases_of_names_the_running_attempts_of_one_worker(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    for _ in range(4):
        await submit()
    mine = [await lease_one(worker_id="w1"), await lease_one(worker_id="w1")]
    await lease_one(worker_id="w2")
    await fail(store, mine[1], T0 + SECOND)  # retrying: no longer a running attempt

    assert await store.leases_of("w1") == [(mine[0].job.id, mine[0].lease_epoch, "")]
    assert await store.leases_of("nobody") == []


async def test_an_expired_lease_fails_the_attempt_as_worker_lost(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)
    lease = await lease_one()
    after_expiry = lease.expire_time_us + 1

    [job] = await store.expire_leases(after_expiry, RETRY)

    assert job.id == lease.job.id
    assert job.state is JobState.RETRYING
    assert "worker lost" in job.last_error
    assert job.next_run_time_us is not None and job.next_run_time_us > after_expiry
    assert await store.get_job(job.id) == job


async def test_an_expired_lease_without_retries_left_fails_the_job(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=0)
    lease = await lease_one()

    [job] = await store.expire_leases(lease.expire_time_us + 1, RETRY)

    assert job.state is JobState.FAILED
    assert "worker lost" in job.last_error


async def test_live_leases_are_not_expired(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    await submit()
    short = await lease_one(ttl_us=SECOND)
    long = await lease_one(ttl_us=LEASE_TTL)

    expired = await store.expire_leases(T0 + 2 * SECOND, RETRY)

    assert [job.id for job in expired] == [short.job.id]
    assert await store.get_job(long.job.id) == long.job


async def test_a_renewed_lease_is_not_expired(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    renewed = await store.renew_lease(lease.job.id, lease.lease_epoch, T0 + 20 * SECOND, LEASE_TTL)

    assert await store.expire_leases(lease.expire_time_us + 1, RETRY) == []
    assert await store.get_job(lease.job.id) == renewed


async def test_an_expired_lease_is_stale_for_its_worker(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)
    lease = await lease_one()
    await store.expire_leases(lease.expire_time_us + 1, RETRY)

    with pytest.raises(StaleLeaseError):
        await store.finish_attempt(
            lease.job.id, lease.lease_epoch, SUCCEEDED, lease.expire_time_us + 2, RETRY
        )


async def test_an_expired_lease_of_a_job_being_canceled_cancels_it(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    lease = await lease_one()
    await store.cancel_job(lease.job.id, T0)

    [job] = await store.expire_leases(lease.expire_time_us + 1, RETRY)

    assert job.state is JobState.CANCELED


# -- time_out_attempts -----------------------------------------------------------

GRACE = 5 * SECOND


async def test_an_attempt_over_its_timeout_and_grace_is_failed(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(timeout_us=60 * SECOND, max_retries=1)
    lease = await lease_one(ttl_us=3600 * SECOND)

    [job] = await store.time_out_attempts(T0 + 60 * SECOND + GRACE + 1, GRACE, RETRY)

    assert job.id == lease.job.id
    assert job.state is JobState.RETRYING
    assert "timed out" in job.last_error
    assert await store.get_job(job.id) == job


async def test_a_timed_out_attempt_without_retries_left_fails_the_job(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(timeout_us=60 * SECOND, max_retries=0)
    await lease_one(ttl_us=3600 * SECOND)

    [job] = await store.time_out_attempts(T0 + 60 * SECOND + GRACE + 1, GRACE, RETRY)

    assert job.state is JobState.FAILED


async def test_an_attempt_within_its_timeout_and_grace_keeps_running(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(timeout_us=60 * SECOND)
    lease = await lease_one(ttl_us=3600 * SECOND)

    assert await store.time_out_attempts(T0 + 60 * SECOND + GRACE, GRACE, RETRY) == []
    assert await store.get_job(lease.job.id) == lease.job


async def test_the_timeout_counts_from_the_start_of_the_current_attempt(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(timeout_us=60 * SECOND, max_retries=1)
    retrying = await fail(store, await lease_one(), T0)
    second_start = (retrying.next_run_time_us or 0) + 100 * SECOND
    await lease_one(now_us=second_start, ttl_us=3600 * SECOND)

    assert await store.time_out_attempts(second_start + 60 * SECOND, GRACE, RETRY) == []
    [job] = await store.time_out_attempts(second_start + 60 * SECOND + GRACE + 1, GRACE, RETRY)
    assert job.state is JobState.FAILED


async def test_pending_jobs_never_time_out(store: JobStore, submit: Submit) -> None:
    job = await submit(timeout_us=SECOND)

    assert await store.time_out_attempts(T0 + 3600 * SECOND, 0, RETRY) == []
    assert (await store.get_job(job.id)).state is JobState.PENDING


# -- next_run_time ---------------------------------------------------------------


async def test_next_run_time_is_none_when_nothing_waits(store: JobStore) -> None:
    assert await store.next_run_time(["acme"]) is None


async def test_a_pending_job_is_runnable_from_its_creation(store: JobStore, submit: Submit) -> None:
    await submit(now_us=T0 + 5)
    await submit(now_us=T0 + 9)

    assert await store.next_run_time(["acme"]) == T0 + 5


async def test_a_retrying_job_is_runnable_at_its_next_run_time(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)
    retrying = await fail(store, await lease_one(), T0)

    assert await store.next_run_time(["acme"]) == retrying.next_run_time_us


async def test_next_run_time_ignores_running_and_finished_jobs(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    canceled = await submit()
    await store.cancel_job(canceled.id, T0)
    await submit()
    await lease_one()

    assert await store.next_run_time(["acme"]) is None


async def test_next_run_time_is_the_earliest_of_the_given_orgs(
    store: JobStore, submit: Submit
) -> None:
    await submit(org_id="early", now_us=T0)
    await submit(org_id="middle", now_us=T0 + 10)
    await submit(org_id="late", now_us=T0 + 20)

    assert await store.next_run_time(["late", "middle"]) == T0 + 10
    assert await store.next_run_time(["nobody"]) is None


# -- lease_in_commit -------------------------------------------------------------


async def test_jobs_are_leased_in_the_commit_that_stores_them(store: JobStore) -> None:
    asked: list[frozenset[str]] = []
    answered: list[list[LeaseClaim] | None] = []

    def plan(orgs: frozenset[str], ending: frozenset[tuple[str, int]]) -> CommitLeasing:
        asked.append(orgs)
        claims = [LeaseClaim("w1", ["acme"], 2), LeaseClaim("w2", ["other", "acme"], 5)]
        return CommitLeasing(claims, T0 + SECOND, LEASE_TTL, answered.append)

    store.lease_in_commit(plan)
    created = await store.create_jobs([new_job() for _ in range(3)], T0)

    assert asked == [frozenset({"acme"})]
    [claims] = answered
    assert claims is not None
    assert [[lease.job.id for lease in claim.leases] for claim in claims] == [
        [job.id for job, _ in created[:2]],
        [created[2][0].id],
    ]
    stored = await store.get_job(created[2][0].id)
    assert stored.state is JobState.RUNNING and stored.worker_id == "w2"
    assert stored == claims[1].leases[0].job


async def test_no_leasing_is_planned_for_writes_that_add_no_jobs(
    store: JobStore, submit: Submit
) -> None:
    job = await submit()
    asked: list[frozenset[str]] = []

    def plan(orgs: frozenset[str], ending: frozenset[tuple[str, int]]) -> None:
        asked.append(orgs)

    store.lease_in_commit(plan)

    await store.cancel_job(job.id, T0)

    assert asked == []


async def test_jobs_over_quota_are_not_stored_and_nothing_is_leased(
    store: JobStore, submit: Submit
) -> None:
    await submit()
    answered: list[list[LeaseClaim] | None] = []
    store.lease_in_commit(
        lambda orgs, ending: CommitLeasing(
            [LeaseClaim("w1", ["acme"], 5)], T0, LEASE_TTL, answered.append
        )
    )

    with pytest.raises(ResourceExhaustedError):
        await store.create_jobs([new_job(), new_job()], T0, pending_limit=2)

    # The group of one failed whole: the claim is answered with nothing kept.
    assert answered == [None]
    assert await leased_ids(store, ["acme"], 5) != []


# -- leasing the slots that results free, in the commit that records them ---------


def free_slot_of(
    worker_id: str, lease: Lease, answered: list[list[LeaseClaim] | None], *, orgs: list[str]
) -> CommitLeasing:
    """A plan's answer: the worker has no free slot, and the slot of `lease`
    comes free if the group ends it."""
    ending = frozenset({(lease.job.id, lease.lease_epoch)})
    claim = LeaseClaim(worker_id, orgs, 0, ending=ending, new_only=False)
    return CommitLeasing([claim], T0 + SECOND, LEASE_TTL, answered.append)


async def test_a_result_and_the_next_lease_of_its_slot_commit_together(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    first = await lease_one_of(store, submit, lease_one)
    waiting = await submit()
    asked: list[frozenset[tuple[str, int]]] = []
    answered: list[list[LeaseClaim] | None] = []

    def plan(orgs: frozenset[str], ending: frozenset[tuple[str, int]]) -> CommitLeasing:
        asked.append(ending)
        return free_slot_of("w1", first, answered, orgs=["acme"])

    store.lease_in_commit(plan)
    finished = await store.finish_attempt(
        first.job.id, first.lease_epoch, SUCCEEDED, T0 + SECOND, RETRY
    )

    assert finished.state is JobState.SUCCEEDED
    assert asked == [frozenset({(first.job.id, first.lease_epoch)})]
    [claims] = answered
    assert claims is not None
    assert [lease.job.id for lease in claims[0].leases] == [waiting.id]
    stored = await store.get_job(waiting.id)
    assert stored.state is JobState.RUNNING and stored.worker_id == "w1"


async def test_a_stale_result_frees_no_slot(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    first = await lease_one_of(store, submit, lease_one)
    await submit()
    answered: list[list[LeaseClaim] | None] = []
    store.lease_in_commit(lambda orgs, ending: free_slot_of("w1", first, answered, orgs=["acme"]))

    with pytest.raises(StaleLeaseError):
        await store.finish_attempt(first.job.id, first.lease_epoch + 1, SUCCEEDED, T0, RETRY)

    [claims] = answered
    assert claims is not None and claims[0].leases == []
    assert await leased_ids(store, ["acme"], 5) != []


async def test_a_freed_slot_respects_the_orgs_pause(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    first = await lease_one_of(store, submit, lease_one)
    await submit()
    await store.orgs.pause("acme", T0, None, paused=True)
    answered: list[list[LeaseClaim] | None] = []
    store.lease_in_commit(lambda orgs, ending: free_slot_of("w1", first, answered, orgs=["acme"]))

    await store.finish_attempt(first.job.id, first.lease_epoch, SUCCEEDED, T0, RETRY)

    [claims] = answered
    assert claims is not None and claims[0].leases == []


async def test_a_freed_slot_respects_the_orgs_running_limit(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await store.orgs.update("acme", T0, {"max_running_jobs": 2})
    first = await lease_one_of(store, submit, lease_one)
    await lease_one_of(store, submit, lease_one)
    await submit()
    await submit()
    answered: list[list[LeaseClaim] | None] = []
    # The worker claims a free slot too: only the place the result frees
    # under the org's limit may be taken.
    ending = frozenset({(first.job.id, first.lease_epoch)})
    claim = LeaseClaim("w1", ["acme"], 3, ending=ending, new_only=False)
    store.lease_in_commit(
        lambda orgs, ending: CommitLeasing([claim], T0, LEASE_TTL, answered.append)
    )

    await store.finish_attempt(first.job.id, first.lease_epoch, SUCCEEDED, T0, RETRY)

    [claims] = answered
    assert claims is not None and len(claims[0].leases) == 1


async def lease_one_of(store: JobStore, submit: Submit, lease_one: LeaseOne) -> Lease:
    """Submit a job and lease it (to w1) with no plan asked along."""
    store.lease_in_commit(lambda orgs, ending: None)
    await submit()
    return await lease_one()
