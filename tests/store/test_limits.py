"""Conformance: the limits an org's settings and a job's concurrency key and
requirements put on leasing, checked in the lease transaction (see
docs/limits.md). Concurrent leasing never goes past a limit, counted exactly;
replicas sharing a store are held to the same (test_replicas_hold_...)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.postgres import postgres_url
from tests.store.support import LEASE_TTL, SECOND, SHARED_BACKENDS, T0, Databases, new_job
from zbrain.errors import NotFoundError, ResourceExhaustedError
from zbrain_server.core.limits import MAX_PAUSED_SELECTORS
from zbrain_server.core.model import AttemptOutcome, AttemptResult, JobState, Lease
from zbrain_server.store import JobStore
from zbrain_server.store.postgres.driver import PostgresDriver

from .support import RETRY


async def lease_all(
    store: JobStore, workers: int, *, now_us: int = T0, labels: dict[str, str] | None = None
) -> list[Lease]:
    """Many workers leasing at once, each until it gets nothing more."""

    async def worker(n: int) -> list[Lease]:
        got: list[Lease] = []
        while leases := await store.lease_jobs(
            f"w{n}", ["acme"], 3, now_us, LEASE_TTL, labels=labels
        ):
            got += leases
        return got

    return [
        lease for leases in await asyncio.gather(*map(worker, range(workers))) for lease in leases
    ]


async def running(store: JobStore, org: str = "acme") -> int:
    return (await store.orgs.running(org, ""))[0]


async def finish(store: JobStore, lease: Lease, now_us: int = T0) -> None:
    result = AttemptResult(AttemptOutcome.SUCCEEDED, output_json="null")
    await store.finish_attempt(lease.job.id, lease.lease_epoch, result, now_us, RETRY)


async def test_settings_never_set_are_the_defaults(store: JobStore) -> None:
    settings = await store.orgs.get("acme")

    assert settings.max_running_jobs == 0 and not settings.paused
    assert settings.update_time_us is None


async def test_an_update_keeps_the_limits_it_does_not_name(store: JobStore) -> None:
    await store.orgs.update("acme", T0, {"max_running_jobs": 2, "retention_days": 3})
    await store.orgs.update("acme", T0 + 1, {"max_running_jobs": 5})

    settings = await store.orgs.get("acme")
    assert (settings.max_running_jobs, settings.retention_days) == (5, 3)
    assert settings.update_time_us == T0 + 1


async def test_concurrent_leasing_never_runs_more_than_the_orgs_limit(store: JobStore) -> None:
    await store.orgs.update("acme", T0, {"max_running_jobs": 2})
    await store.create_jobs([new_job() for _ in range(50)], T0)

    leased = await lease_all(store, workers=6)

    assert len(leased) == 2
    assert await running(store) == 2


async def test_a_finished_job_frees_its_place_under_the_orgs_limit(store: JobStore) -> None:
    await store.orgs.update("acme", T0, {"max_running_jobs": 1})
    await store.create_jobs([new_job(), new_job()], T0)
    [first] = await lease_all(store, workers=2)

    await finish(store, first)

    [second] = await lease_all(store, workers=2)
    assert second.job.id != first.job.id


async def test_the_limit_of_one_org_leaves_another_org_alone(store: JobStore) -> None:
    await store.orgs.update("acme", T0, {"max_running_jobs": 1})
    await store.create_jobs([new_job() for _ in range(3)] + [new_job(org_id="beta")] * 1, T0)

    leases = await store.lease_jobs("w", ["acme", "beta"], 10, T0, LEASE_TTL)

    assert sorted(lease.job.org_id for lease in leases) == ["acme", "beta"]


async def test_starts_per_second_refill_with_time(store: JobStore) -> None:
    await store.orgs.update("acme", T0, {"max_starts_per_second": 2})
    await store.create_jobs([new_job() for _ in range(10)], T0)

    assert len(await lease_all(store, workers=4, now_us=T0)) == 2
    assert len(await lease_all(store, workers=4, now_us=T0 + SECOND // 4)) == 0
    assert len(await lease_all(store, workers=4, now_us=T0 + SECOND // 2)) == 1
    # The bucket holds one second's worth: a long pause allows no more than that.
    assert len(await lease_all(store, workers=4, now_us=T0 + 60 * SECOND)) == 2


async def test_a_concurrency_key_runs_its_limit_at_once_in_order(store: JobStore) -> None:
    created = await store.create_jobs(
        [new_job(concurrency_key="customer-42", concurrency_limit=2) for _ in range(6)], T0
    )
    ids = [job.id for job, _ in created]

    first = await lease_all(store, workers=5)
    assert sorted(lease.job.id for lease in first) == ids[:2]
    assert (await store.orgs.running("acme", "customer-42"))[1] == 2

    await finish(store, first[0])
    [third] = await lease_all(store, workers=5)
    assert third.job.id == ids[2], "the key's jobs start in submission order"


async def test_a_full_key_does_not_hold_back_other_jobs_of_its_org(store: JobStore) -> None:
    keyed = [new_job(concurrency_key="k") for _ in range(20)]
    await store.create_jobs([*keyed, new_job(), new_job(concurrency_key="other")], T0)

    leased = await lease_all(store, workers=3)

    keys = sorted(lease.job.concurrency_key for lease in leased)
    assert keys == ["", "k", "other"]


async def test_a_job_requiring_labels_goes_only_to_a_worker_offering_them(
    store: JobStore,
) -> None:
    [(gpu, _), (anywhere, _), (some_region, _)] = await store.create_jobs(
        [
            new_job(requires={"gpu": "a100"}),
            new_job(),
            new_job(requires={"region": ""}),
        ],
        T0,
    )

    plain = await lease_all(store, workers=2)
    assert [lease.job.id for lease in plain] == [anywhere.id]
    wrong = await lease_all(store, workers=2, labels={"gpu": "h100"})
    assert wrong == []

    labelled = await lease_all(store, workers=2, labels={"gpu": "a100", "region": "eu"})
    assert sorted(lease.job.id for lease in labelled) == sorted([gpu.id, some_region.id])


async def test_a_paused_org_starts_nothing_until_resumed(store: JobStore) -> None:
    await store.orgs.pause("acme", T0, None, paused=True)
    await store.create_jobs([new_job() for _ in range(3)], T0)

    assert await lease_all(store, workers=2) == []

    settings = await store.orgs.pause("acme", T0, None, paused=False)
    assert not settings.paused
    assert len(await lease_all(store, workers=2)) == 3


async def test_a_paused_selector_holds_only_the_jobs_it_matches(store: JobStore) -> None:
    await store.orgs.pause("acme", T0, {"pipeline": "nightly", "team": "data"}, paused=True)
    [(held, _), (other, _)] = await store.create_jobs(
        [
            new_job(labels={"pipeline": "nightly", "team": "data"}),
            new_job(labels={"pipeline": "nightly", "team": "web"}),
        ],
        T0,
    )

    assert [lease.job.id for lease in await lease_all(store, workers=2)] == [other.id]

    await store.orgs.pause("acme", T0, {"team": "data", "pipeline": "nightly"}, paused=False)
    assert [lease.job.id for lease in await lease_all(store, workers=2)] == [held.id]


async def test_paused_selectors_are_capped_but_one_paused_already_may_be_paused_again(
    store: JobStore,
) -> None:
    for n in range(MAX_PAUSED_SELECTORS):
        await store.orgs.pause("acme", T0, {"shard": str(n)}, paused=True)

    with pytest.raises(ResourceExhaustedError, match="resume some first"):
        await store.orgs.pause("acme", T0, {"shard": "one too many"}, paused=True)
    settings = await store.orgs.pause("acme", T0, {"shard": "0"}, paused=True)
    assert len(settings.paused_selectors) == MAX_PAUSED_SELECTORS


async def test_an_orgs_own_waiting_quota_replaces_the_servers(store: JobStore) -> None:
    await store.orgs.update("acme", T0, {"max_waiting_jobs": 2})
    await store.create_jobs([new_job(), new_job()], T0, pending_limit=100)

    with pytest.raises(ResourceExhaustedError, match="max_waiting_jobs"):
        await store.create_jobs([new_job()], T0, pending_limit=100)
    await store.create_jobs([new_job(org_id="beta")] * 1, T0, pending_limit=100)


async def test_an_orgs_own_retention_purges_its_jobs_sooner(store: JobStore) -> None:
    created = await store.create_jobs([new_job(), new_job(org_id="beta")], T0)
    for job, _ in created:
        [lease] = await store.lease_jobs("w", [job.org_id], 1, T0, LEASE_TTL)
        await finish(store, lease)

    purged = await store.purge_finished(T0 - SECOND, {"acme": T0 + SECOND})

    assert purged == 1
    with pytest.raises(NotFoundError):
        await store.get_job(created[0][0].id)
    assert (await store.get_job(created[1][0].id)).state is JobState.SUCCEEDED


@pytest.mark.parametrize("databases", SHARED_BACKENDS, indirect=True)
async def test_replicas_hold_the_running_limit_and_the_key_limit_together(
    databases: Databases,
) -> None:
    a, b = await databases.open(), await databases.open()
    await a.orgs.update("acme", T0, {"max_running_jobs": 3})
    await b.orgs.all_set()  # as a replica's dispatcher does every tick
    await a.create_jobs(
        [new_job() for _ in range(30)] + [new_job(concurrency_key="k") for _ in range(30)], T0
    )

    async def lease_from(store: JobStore, n: int) -> list[Lease]:
        got: list[Lease] = []
        for _ in range(20):  # a lock held by the other replica skips a pass: try again
            got += await store.lease_jobs(f"w{n}", ["acme"], 2, T0, LEASE_TTL)
        return got

    leased = await asyncio.gather(*(lease_from(store, n) for n in range(4) for store in (a, b)))

    assert sum(map(len, leased)) == 3
    assert await running(a) == 3
    assert (await a.orgs.running("acme", "k"))[1] <= 1


@pytest.mark.parametrize("databases", SHARED_BACKENDS, indirect=True)
async def test_a_keys_first_job_locked_by_another_replica_holds_back_the_keys_next(
    databases: Databases,
) -> None:
    store = await databases.open()
    [(first, _), (second, _), (other, _)] = await store.create_jobs(
        [new_job(concurrency_key="k"), new_job(concurrency_key="k"), new_job()], T0
    )
    assert isinstance(store.driver, PostgresDriver)
    replica = await asyncpg.connect(await postgres_url())
    try:
        await replica.execute(f'SET search_path TO "{store.driver.schema}"')
        async with replica.transaction():  # another replica, in the middle of leasing it
            await replica.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", first.id)
            leased = await store.lease_jobs("w", ["acme"], 5, T0, LEASE_TTL)
    finally:
        await replica.close()

    assert [lease.job.id for lease in leased] == [other.id], "the key's order is kept"
    [then] = await store.lease_jobs("w", ["acme"], 5, T0, LEASE_TTL)
    assert then.job.id == first.id
    assert second.id != first.id


async def test_slots_rotate_among_an_orgs_concurrency_keys(store: JobStore) -> None:
    backlog = [new_job(concurrency_key="big", concurrency_limit=100) for _ in range(30)]
    await store.create_jobs(backlog, T0)
    [(small, _)] = await store.create_jobs([new_job(concurrency_key="small")], T0)
    await store.create_jobs([new_job() for _ in range(2)], T0)

    one_at_a_time = [await store.lease_jobs("w", ["acme"], 1, T0, LEASE_TTL) for _ in range(2)]

    assert small.id in {lease.job.id for [lease] in one_at_a_time}, "its turn came"
    rest = [lease.job for lease in await store.lease_jobs("w", ["acme"], 40, T0, LEASE_TTL)]
    big_ids = [job.id for job in rest if job.concurrency_key == "big"]
    assert big_ids == sorted(big_ids), "a key keeps its order"
    assert len(rest) == 29 + 2
