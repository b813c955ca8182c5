"""Conformance: what a store shared by several server replicas promises.

Each test opens two stores on one database, as two replicas would, and
makes them race; these run on the backends that may be shared (SHARED_BACKENDS).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.store.support import (
    LEASE_TTL,
    RETRY,
    SECOND,
    SHARED_BACKENDS,
    T0,
    Databases,
    Listener,
    new_job,
)
from zbrain.errors import ResourceExhaustedError
from zbrain_server.core import events
from zbrain_server.core.model import (
    AttemptOutcome,
    AttemptResult,
    EventRecord,
    Job,
    JobQuery,
    JobState,
)
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import JobStore

pytestmark = pytest.mark.parametrize("databases", SHARED_BACKENDS, indirect=True)

Replicas = tuple[JobStore, JobStore]


@pytest.fixture
async def replicas(databases: Databases) -> Replicas:
    """Two opened stores on one database."""
    return await databases.open(), await databases.open()


async def test_replicas_starting_at_once_on_a_new_database_both_open(
    databases: Databases,
) -> None:
    a, b = await asyncio.gather(databases.open(), databases.open())

    [(job, _)] = await a.create_jobs([new_job()], T0)

    assert await b.get_job(job.id) == job


async def lease_until_empty(store: JobStore, worker_id: str) -> list[str]:
    """Lease a few jobs at a time until the store hands out none."""
    leased: list[str] = []
    while leases := await store.lease_jobs(worker_id, ["acme"], 7, T0, LEASE_TTL):
        leased += [lease.job.id for lease in leases]
    return leased


async def test_replicas_leasing_from_one_queue_never_lease_a_job_twice(
    replicas: Replicas,
) -> None:
    a, b = replicas
    created = await a.create_jobs([new_job() for _ in range(200)], T0)

    per_worker = await asyncio.gather(
        *(lease_until_empty(store, f"w{n}") for n in range(3) for store in (a, b))
    )

    leased = [job_id for ids in per_worker for job_id in ids]
    assert sorted(leased) == sorted(job.id for job, _ in created), "each job exactly once"
    assert await a.lease_jobs("w", ["acme"], 10, T0, LEASE_TTL) == []


def retries_of(records: list[EventRecord]) -> list[str]:
    """The job id of each recorded change into RETRYING."""
    retried = []
    for record in records:
        body = EVENT_CODEC.decode(record.payload)
        if isinstance(body, events.JobStateChanged) and body.to_state is JobState.RETRYING:
            retried.append(record.job_id)
    return retried


Reap = Callable[[JobStore, int], Awaitable[list[Job]]]
REAPERS: dict[str, Reap] = {
    "expired_leases": lambda store, now_us: store.expire_leases(now_us, RETRY),
    "timed_out_attempts": lambda store, now_us: store.time_out_attempts(now_us, 0, RETRY),
}


@pytest.mark.parametrize("reap", REAPERS.values(), ids=REAPERS.keys())
async def test_replicas_reaping_at_once_fail_each_attempt_once(
    replicas: Replicas, reap: Reap
) -> None:
    a, b = replicas
    await a.create_jobs([new_job(max_retries=3, timeout_us=SECOND) for _ in range(50)], T0)
    leases = await a.lease_jobs("w1", ["acme"], 50, T0, SECOND)
    later = T0 + 10 * SECOND

    reaped = await asyncio.gather(*(reap(store, later) for store in (a, b, a, b)))

    failed = [job.id for jobs in reaped for job in jobs]
    assert sorted(failed) == sorted(lease.job.id for lease in leases), "each attempt once"
    for lease in leases:
        job = await b.get_job(lease.job.id)
        assert (job.state, job.attempt) == (JobState.RETRYING, 1)
    assert sorted(retries_of(await a.read_events(None, "", 0, 10_000))) == sorted(failed)


async def test_events_written_through_one_replica_reach_the_others_listener(
    replicas: Replicas,
) -> None:
    a, b = replicas
    listener = Listener()
    b.set_event_listener(listener)

    await a.create_jobs([new_job(), new_job()], T0)
    [(job, _)] = await a.create_jobs([new_job()], T0)
    await a.cancel_job(job.id, T0)
    await listener.wait_through(4)

    assert [[r.sequence for r in batch] for batch in listener.batches] == [[1, 2], [3], [4]]
    assert [r for batch in listener.batches for r in batch] == await b.read_events(None, "", 0, 100)


async def test_writes_through_both_replicas_are_numbered_in_one_order_for_all(
    replicas: Replicas,
) -> None:
    a, b = replicas
    listeners = Listener(), Listener()
    a.set_event_listener(listeners[0])
    b.set_event_listener(listeners[1])

    await asyncio.gather(
        *(store.create_jobs([new_job()] * (1 + n % 3), T0) for n in range(30) for store in (a, b)),
        *(store.record_events([events.worker_presence("w", "acme", True, T0)]) for store in (a, b)),
    )
    recorded = await a.read_events(None, "", 0, 10_000)
    for listener in listeners:
        await listener.wait_through(recorded[-1].sequence)

    assert [r.sequence for r in recorded] == list(range(1, len(recorded) + 1)), "no gaps"
    assert listeners[0].batches == listeners[1].batches
    assert [r for batch in listeners[0].batches for r in batch] == recorded


async def test_the_waiting_quota_holds_under_concurrent_submissions_through_both_replicas(
    replicas: Replicas,
) -> None:
    a, b = replicas

    outcomes = await asyncio.gather(
        *(
            store.create_jobs([new_job()], T0, pending_limit=10)
            for _ in range(15)
            for store in (a, b)
        ),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, ResourceExhaustedError) for o in refused)
    assert len(refused) == 20
    assert len(await a.list_jobs(JobQuery("acme", limit=100))) == 10


async def test_one_request_id_submitted_through_both_replicas_at_once_makes_one_job(
    replicas: Replicas,
) -> None:
    batches = await asyncio.gather(
        *(
            store.create_jobs([new_job(request_id="once")], T0)
            for _ in range(5)
            for store in replicas
        )
    )

    answers = [answer for batch in batches for answer in batch]
    assert len({job.id for job, _ in answers}) == 1
    assert [deduplicated for _, deduplicated in answers].count(False) == 1
    assert len(await replicas[0].list_jobs(JobQuery("acme"))) == 1


async def churn(store: JobStore, orgs: list[str], worker_id: str) -> None:
    """Submit, lease, fail and cancel jobs of several orgs, taking them in the given order."""
    failed = AttemptResult(AttemptOutcome.FAILED)
    for _ in range(10):
        created = await store.create_jobs([new_job(org_id=org, max_retries=1) for org in orgs], T0)
        leases = await store.lease_jobs(worker_id, orgs, 3, T0, LEASE_TTL)
        for lease in leases[::2]:
            await store.finish_attempt(lease.job.id, lease.lease_epoch, failed, T0, RETRY)
        for job, _ in created[1:]:
            await store.cancel_job(job.id, T0)


async def test_mixed_writes_through_both_replicas_neither_deadlock_nor_miscount(
    replicas: Replicas,
) -> None:
    orgs = ["a", "b", "c"]

    await asyncio.gather(
        *(
            churn(store, order, f"w{n}")
            for n, store in enumerate(replicas)
            for order in (orgs, orgs[::-1])
        )
    )

    # The quota still counts exactly the waiting jobs of each org.
    unfinished = await replicas[0].count_unfinished()
    for org in orgs:
        waiting = sum(
            unfinished.get((org, state), 0) for state in (JobState.PENDING, JobState.RETRYING)
        )
        with pytest.raises(ResourceExhaustedError, match=f"has {waiting} jobs waiting"):
            await replicas[1].create_jobs([new_job(org_id=org)], T0, pending_limit=waiting)
