"""Conformance: creating, reading, listing and canceling jobs."""

from __future__ import annotations

import uuid

import pytest

from tests.store.support import RETRY, SECOND, T0, LeaseOne, Reopen, Submit, new_job
from zbrain.errors import NotFoundError, ZBrainError
from zbrain_server.core.model import (
    NO_RESOURCES,
    AttemptOutcome,
    AttemptResult,
    CancelOutcome,
    JobQuery,
    JobState,
    Resources,
)
from zbrain_server.store import JobStore

UNKNOWN_ID = "01939a4e-8b2c-7def-8123-456789abcdef"


async def all_jobs(store: JobStore, org_id: str = "acme") -> list[str]:
    return [job.id for job in await store.list_jobs(JobQuery(org_id, newest_first=False))]


# -- create_jobs -----------------------------------------------------------------


async def test_create_jobs_returns_pending_jobs_with_ids_and_times(store: JobStore) -> None:
    spec = new_job(priority=5, max_retries=2)

    [(job, deduplicated)] = await store.create_jobs([spec], T0)

    assert not deduplicated
    assert str(uuid.UUID(job.id)) == job.id
    assert job.state is JobState.PENDING
    assert (job.create_time_us, job.update_time_us) == (T0, T0)
    assert (job.start_time_us, job.finish_time_us) == (None, None)
    assert (job.attempt, job.lease_epoch, job.worker_id) == (0, 0, "")
    assert job.lease_expire_time_us is None
    assert not job.cancel_requested
    assert (job.last_error, job.output_json, job.artifacts) == ("", "", ())


async def test_created_job_keeps_every_submitted_field(store: JobStore) -> None:
    spec = new_job(priority=-3, max_retries=4, request_id="r-1")

    [(job, _)] = await store.create_jobs([spec], T0)

    assert job.org_id == spec.org_id
    assert job.cmd == spec.cmd
    assert job.input_json == spec.input_json
    assert job.env == spec.env
    assert job.timeout_us == spec.timeout_us
    assert job.max_retries == spec.max_retries
    assert job.priority == spec.priority
    assert job.labels == spec.labels
    assert job.request_id == spec.request_id
    assert job.trace_context == spec.trace_context


async def test_get_job_returns_the_job_as_created(store: JobStore, submit: Submit) -> None:
    job = await submit()

    assert await store.get_job(job.id) == job


async def test_resource_limits_and_network_are_stored_and_read_back(store: JobStore) -> None:
    resources = Resources(memory_bytes=64 << 20, cpu_seconds=5, open_files=32)
    [(job, _)] = await store.create_jobs([new_job(resources=resources, network=True)], T0)
    [(plain, _)] = await store.create_jobs([new_job()], T0)

    stored = await store.get_job(job.id)
    assert stored is not None
    assert (stored.resources, stored.network) == (resources, True)
    assert await store.get_job(plain.id) == plain
    assert (plain.resources, plain.network) == (NO_RESOURCES, False)


async def test_create_jobs_answers_each_job_in_the_order_given(store: JobStore) -> None:
    specs = [new_job(cmd=("job", str(i))) for i in range(5)]

    created = await store.create_jobs(specs, T0)

    assert [job.cmd for job, _ in created] == [spec.cmd for spec in specs]
    assert len({job.id for job, _ in created}) == 5
    assert await all_jobs(store) == [job.id for job, _ in created]


async def test_a_batch_is_stored_all_or_none(store: JobStore) -> None:
    # The database refuses the second job (a required column is missing), after
    # the first was written in the same batch: the first must not remain.
    broken = new_job(input_json=None)

    with pytest.raises(ZBrainError):
        await store.create_jobs([new_job(), broken], T0)

    assert await all_jobs(store) == []


async def test_a_failed_batch_leaves_the_store_usable(store: JobStore) -> None:
    with pytest.raises(ZBrainError):
        await store.create_jobs([new_job(), new_job(input_json=None)], T0)

    [(job, _)] = await store.create_jobs([new_job()], T0)

    assert await all_jobs(store) == [job.id]


async def test_repeated_request_id_returns_the_earlier_job(store: JobStore, submit: Submit) -> None:
    first = await submit(request_id="order-42")

    [(again, deduplicated)] = await store.create_jobs(
        [new_job(request_id="order-42", cmd=("false",))], T0 + SECOND
    )

    assert deduplicated
    assert again == first
    assert await all_jobs(store) == [first.id]


async def test_request_ids_are_scoped_per_org(store: JobStore, submit: Submit) -> None:
    first = await submit(request_id="order-42")

    [(other, deduplicated)] = await store.create_jobs(
        [new_job(org_id="other", request_id="order-42")], T0
    )

    assert not deduplicated
    assert other.id != first.id
    assert other.org_id == "other"


async def test_jobs_without_request_id_are_never_deduplicated(store: JobStore) -> None:
    created = await store.create_jobs([new_job(), new_job()], T0)
    again = await store.create_jobs([new_job()], T0)

    assert [deduplicated for _, deduplicated in created + again] == [False, False, False]
    assert len(await all_jobs(store)) == 3


async def test_a_batch_creates_new_jobs_beside_repeated_ones(
    store: JobStore, submit: Submit
) -> None:
    earlier = await submit(request_id="known")

    created = await store.create_jobs(
        [new_job(request_id="fresh"), new_job(request_id="known")], T0
    )

    [(fresh, fresh_dedup), (known, known_dedup)] = created
    assert (fresh_dedup, known_dedup) == (False, True)
    assert fresh.request_id == "fresh"
    assert known == earlier
    assert await all_jobs(store) == [earlier.id, fresh.id]


async def test_a_batch_never_stores_two_jobs_with_one_request_id(store: JobStore) -> None:
    # Whether a backend rejects such a batch or answers the repeat with the
    # first job, one request id must never name two stored jobs.
    batch = [new_job(request_id="twice"), new_job(request_id="twice")]

    try:
        await store.create_jobs(batch, T0)
    except ZBrainError:
        assert await all_jobs(store) == []
    else:
        assert len(await all_jobs(store)) == 1


async def test_get_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError):
        await store.get_job(UNKNOWN_ID)


# -- list_jobs -------------------------------------------------------------------


async def test_list_jobs_returns_only_the_orgs_jobs(store: JobStore, submit: Submit) -> None:
    mine = await submit(org_id="a")
    await submit(org_id="b")

    assert [job.id for job in await store.list_jobs(JobQuery("a"))] == [mine.id]
    assert await store.list_jobs(JobQuery("nobody")) == []


async def test_list_jobs_of_every_org_when_none_is_named(store: JobStore, submit: Submit) -> None:
    first = await submit(org_id="a")
    second = await submit(org_id="b")

    assert [job.id for job in await store.list_jobs(JobQuery(None))] == [second.id, first.id]


async def test_list_jobs_filters_by_state(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    running = await submit()
    pending = await submit()
    canceled = await submit()
    await store.cancel_job(canceled.id, T0)
    await lease_one()

    async def ids(*states: JobState) -> set[str]:
        return {job.id for job in await store.list_jobs(JobQuery("acme", states=states))}

    assert await ids(JobState.PENDING) == {pending.id}
    assert await ids(JobState.CANCELED, JobState.RUNNING) == {canceled.id, running.id}
    assert await ids(JobState.SUCCEEDED) == set()


async def test_list_jobs_is_newest_first_by_default(store: JobStore, submit: Submit) -> None:
    ids = [(await submit()).id for _ in range(3)]

    assert [job.id for job in await store.list_jobs(JobQuery("acme"))] == ids[::-1]


async def test_list_jobs_can_be_oldest_first(store: JobStore, submit: Submit) -> None:
    ids = [(await submit()).id for _ in range(3)]

    listed = await store.list_jobs(JobQuery("acme", newest_first=False))

    assert [job.id for job in listed] == ids


async def test_list_jobs_returns_at_most_limit_jobs(store: JobStore, submit: Submit) -> None:
    ids = [(await submit()).id for _ in range(5)]

    listed = await store.list_jobs(JobQuery("acme", limit=2))

    assert [job.id for job in listed] == ids[:-3:-1]


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest_first", "oldest_first"])
async def test_after_id_pages_through_every_job_once(
    store: JobStore, submit: Submit, newest_first: bool
) -> None:
    ids = [(await submit()).id for _ in range(7)]
    seen: list[str] = []
    after_id: str | None = None

    while page := await store.list_jobs(JobQuery("acme", (), newest_first, 3, after_id)):
        seen += [job.id for job in page]
        after_id = page[-1].id

    assert seen == (ids[::-1] if newest_first else ids)


async def test_newest_first_pages_do_not_shift_when_jobs_arrive(
    store: JobStore, submit: Submit
) -> None:
    ids = [(await submit()).id for _ in range(4)]
    first_page = await store.list_jobs(JobQuery("acme", limit=2))
    await submit()

    rest = await store.list_jobs(JobQuery("acme", limit=10, after_id=first_page[-1].id))

    assert [job.id for job in rest] == ids[1::-1]


async def test_after_id_combines_with_the_state_filter(store: JobStore, submit: Submit) -> None:
    kept = [(await submit()).id for _ in range(4)]
    for job_id in kept[1::2]:
        await store.cancel_job(job_id, T0)
    query = JobQuery("acme", states=(JobState.PENDING,), newest_first=False, limit=1)

    first = await store.list_jobs(query)
    second = await store.list_jobs(
        JobQuery("acme", (JobState.PENDING,), False, 10, after_id=first[-1].id)
    )

    assert [job.id for job in first + second] == kept[::2]


# -- cancel_job ------------------------------------------------------------------


async def test_canceling_a_pending_job_cancels_it_at_once(store: JobStore, submit: Submit) -> None:
    job = await submit()

    canceled, outcome = await store.cancel_job(job.id, T0 + SECOND)

    assert outcome is CancelOutcome.CANCELED
    assert canceled.state is JobState.CANCELED
    assert canceled.finish_time_us == T0 + SECOND
    assert canceled.cancel_requested
    assert await store.get_job(job.id) == canceled


async def test_a_canceled_job_is_never_leased(store: JobStore, submit: Submit) -> None:
    job = await submit()
    await store.cancel_job(job.id, T0)

    assert await store.lease_jobs("w1", ["acme"], 10, T0 + SECOND, SECOND) == []


async def test_canceling_a_running_job_requests_the_cancel(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    job, outcome = await store.cancel_job(lease.job.id, T0 + SECOND)

    assert outcome is CancelOutcome.CANCEL_REQUESTED
    assert job.state is JobState.RUNNING
    assert job.cancel_requested
    assert (job.lease_epoch, job.worker_id) == (lease.lease_epoch, "w1")
    assert await store.get_job(job.id) == job


async def test_a_job_whose_cancel_was_requested_keeps_its_lease(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.cancel_job(lease.job.id, T0 + SECOND)

    renewed = await store.renew_lease(lease.job.id, lease.lease_epoch, T0 + 2 * SECOND, SECOND)

    assert renewed.state is JobState.RUNNING
    assert renewed.cancel_requested


async def test_canceling_a_running_job_twice_requests_once(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    first, _ = await store.cancel_job(lease.job.id, T0 + SECOND)

    again, outcome = await store.cancel_job(lease.job.id, T0 + 2 * SECOND)

    assert outcome is CancelOutcome.CANCEL_REQUESTED
    assert again == first


async def test_canceling_a_retrying_job_cancels_it_at_once(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=3)
    lease = await lease_one()
    await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.FAILED), T0, RETRY
    )

    job, outcome = await store.cancel_job(lease.job.id, T0 + SECOND // 10)

    assert outcome is CancelOutcome.CANCELED
    assert job.state is JobState.CANCELED
    assert job.next_run_time_us is None
    assert await store.lease_jobs("w1", ["acme"], 1, T0 + 10 * SECOND, SECOND) == []


@pytest.mark.parametrize(
    "outcome", [AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.CANCELED]
)
async def test_canceling_a_finished_job_changes_nothing(
    store: JobStore, submit: Submit, lease_one: LeaseOne, outcome: AttemptOutcome
) -> None:
    await submit()
    lease = await lease_one()
    finished = await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(outcome), T0, RETRY
    )
    assert finished.state.is_terminal

    again, cancel_outcome = await store.cancel_job(finished.id, T0 + SECOND)

    assert cancel_outcome is CancelOutcome.ALREADY_TERMINAL
    assert again == finished
    assert await store.get_job(finished.id) == finished


async def test_canceling_an_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError):
        await store.cancel_job(UNKNOWN_ID, T0)


async def test_the_waiting_quota_counts_only_waiting_jobs_and_survives_a_restart(
    store: JobStore, reopen: Reopen
) -> None:
    from zbrain.errors import ResourceExhaustedError

    await store.create_jobs([new_job(), new_job()], T0, pending_limit=2)
    with pytest.raises(ResourceExhaustedError, match="max_pending_per_org"):
        await store.create_jobs([new_job()], T0, pending_limit=2)
    await store.create_jobs([new_job(org_id="other")], T0, pending_limit=2)

    await store.lease_jobs("w1", ["acme"], 1, T0, SECOND)  # one leaves the waiting states
    await store.create_jobs([new_job()], T0, pending_limit=2)

    store = await reopen(store)
    with pytest.raises(ResourceExhaustedError):
        await store.create_jobs([new_job()], T0, pending_limit=2)
