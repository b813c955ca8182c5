"""Conformance: dependencies between jobs. A child waits BLOCKED, is released
in the transaction that ends its last parent, is canceled down the graph
when a parent ends the wrong way, sees its parents' results when leased,
and a refused graph stores nothing."""

from __future__ import annotations

import asyncio
import collections

import pytest

from tests.store.support import LEASE_TTL, RETRY, SECOND, SHARED_BACKENDS, T0, Databases, new_job
from zbrain.errors import InvalidArgumentError, ResourceExhaustedError
from zbrain_server.core.model import (
    AttemptOutcome,
    AttemptResult,
    Cause,
    DependencyCondition,
    Edge,
    Job,
    JobQuery,
    JobState,
)
from zbrain_server.store import JobStore

SUCCEEDED = AttemptResult(AttemptOutcome.SUCCEEDED, output_json='{"rows": 3}')
FAILED = AttemptResult(AttemptOutcome.FAILED, error="exit 1")
FINISHED = DependencyCondition.FINISHED


async def run(store: JobStore, job_id: str, result: AttemptResult, now_us: int) -> Job:
    """Lease the one runnable job (which must be job_id) and end it with result."""
    [lease] = await store.lease_jobs("w1", ["acme"], 1, now_us, LEASE_TTL)
    assert lease.job.id == job_id
    return await store.finish_attempt(job_id, lease.lease_epoch, result, now_us + 1, RETRY)


async def chain(store: JobStore, length: int, **overrides: object) -> list[str]:
    """Submit a chain of jobs in one batch, each waiting for the one before."""
    jobs = [new_job(**overrides)] + [
        new_job(depends_on=(Edge(i),), **overrides) for i in range(length - 1)
    ]
    return [job.id for job, _ in await store.create_jobs(jobs, T0)]


async def states(store: JobStore, ids: list[str]) -> list[JobState]:
    return [(await store.get_job(job_id)).state for job_id in ids]


async def test_a_graph_is_stored_with_its_roots_pending_and_the_rest_blocked(
    store: JobStore,
) -> None:
    a, b, c = await chain(store, 3)

    assert await states(store, [a, b, c]) == [JobState.PENDING, JobState.BLOCKED, JobState.BLOCKED]
    child = await store.get_job(b)
    assert [(d.job_id, d.condition) for d in child.depends_on] == [
        (a, DependencyCondition.SUCCEEDED)
    ]
    assert child.waiting_on == 1
    assert child.cause is Cause.SUBMITTED


async def test_a_blocked_job_is_never_leased(store: JobStore) -> None:
    await chain(store, 2)

    leases = await store.lease_jobs("w1", ["acme"], 10, T0 + SECOND, LEASE_TTL)

    assert len(leases) == 1


async def test_a_parent_succeeding_releases_its_child_in_the_same_write(store: JobStore) -> None:
    a, b, c = await chain(store, 3)

    await run(store, a, SUCCEEDED, T0 + SECOND)

    released = await store.get_job(b)
    assert released.state is JobState.PENDING
    assert released.cause is Cause.RELEASED
    assert released.waiting_on == 0
    assert (await store.get_job(c)).state is JobState.BLOCKED


async def test_a_chain_runs_in_order_to_its_end(store: JobStore) -> None:
    ids = await chain(store, 5)

    for i, job_id in enumerate(ids):
        await run(store, job_id, SUCCEEDED, T0 + (i + 1) * SECOND)

    assert await states(store, ids) == [JobState.SUCCEEDED] * 5


async def test_a_failed_parent_cancels_every_job_downstream_with_the_cause(
    store: JobStore,
) -> None:
    a, b, c = await chain(store, 3)

    await run(store, a, FAILED, T0 + SECOND)

    for job_id in (b, c):
        job = await store.get_job(job_id)
        assert job.state is JobState.CANCELED
        assert job.cause is Cause.DEPENDENCY_FAILED
        assert job.finish_time_us is not None
    assert a in (await store.get_job(b)).reason
    assert b in (await store.get_job(c)).reason


async def test_a_cascade_follows_each_jobs_conditions_all_the_way_down(store: JobStore) -> None:
    # a fails; b needs a to succeed; c only needs b finished; d needs c to
    # succeed; e needs b to succeed and c finished; f needs e finished.
    ids = [
        job.id
        for job, _ in await store.create_jobs(
            [
                new_job(),
                new_job(depends_on=(Edge(0),)),
                new_job(depends_on=(Edge(1, FINISHED),)),
                new_job(depends_on=(Edge(2),)),
                new_job(depends_on=(Edge(1), Edge(2, FINISHED))),
                new_job(depends_on=(Edge(4, FINISHED),)),
            ],
            T0,
        )
    ]
    a, b, _, d, e, _ = ids

    await run(store, a, FAILED, T0 + SECOND)

    assert await states(store, ids) == [
        JobState.FAILED,
        JobState.CANCELED,  # b: a failed
        JobState.PENDING,  # c: b finished
        JobState.BLOCKED,  # d: waits for c
        JobState.CANCELED,  # e: b did not succeed
        JobState.PENDING,  # f: e finished
    ]
    assert b in (await store.get_job(e)).reason
    assert (await store.get_job(d)).waiting_on == 1


async def test_canceling_the_root_of_a_deep_chain_cancels_all_of_it(store: JobStore) -> None:
    ids = await chain(store, 300)

    await store.cancel_job(ids[0], T0 + 1)

    assert set(await states(store, ids)) == {JobState.CANCELED}


async def test_a_finished_condition_runs_after_a_failed_parent(store: JobStore) -> None:
    [(parent, _), (cleanup, _)] = await store.create_jobs(
        [new_job(), new_job(depends_on=(Edge(0, FINISHED),))], T0
    )

    await run(store, parent.id, FAILED, T0 + SECOND)

    assert (await store.get_job(cleanup.id)).state is JobState.PENDING


async def test_a_fan_in_child_waits_for_every_parent(store: JobStore) -> None:
    jobs = [new_job() for _ in range(3)]
    jobs.append(new_job(depends_on=tuple(Edge(i) for i in range(3))))
    *parents, child = [job.id for job, _ in await store.create_jobs(jobs, T0)]
    leases = await store.lease_jobs("w1", ["acme"], 3, T0 + 1, LEASE_TTL)
    assert sorted(lease.job.id for lease in leases) == sorted(parents)

    counted = []
    for lease in leases:
        await store.finish_attempt(lease.job.id, lease.lease_epoch, SUCCEEDED, T0 + 2, RETRY)
        job = await store.get_job(child)
        counted.append((job.state, job.waiting_on))

    assert counted == [(JobState.BLOCKED, 2), (JobState.BLOCKED, 1), (JobState.PENDING, 0)]


async def test_a_child_of_an_already_finished_parent_is_accepted_as_its_result_says(
    store: JobStore,
) -> None:
    [(ok, _)] = await store.create_jobs([new_job()], T0)
    await run(store, ok.id, SUCCEEDED, T0 + 1)
    [(bad, _)] = await store.create_jobs([new_job()], T0 + 2)
    await run(store, bad.id, FAILED, T0 + 3)

    [(runs, _), (never, _)] = await store.create_jobs(
        [new_job(depends_on=(Edge(ok.id),)), new_job(depends_on=(Edge(bad.id),))], T0 + 4
    )

    assert runs.state is JobState.PENDING
    assert never.state is JobState.CANCELED
    assert never.cause is Cause.DEPENDENCY_FAILED
    assert (await store.get_job(never.id)).state is JobState.CANCELED


async def test_a_parent_of_another_org_or_unknown_is_refused_and_nothing_is_stored(
    store: JobStore,
) -> None:
    [(other, _)] = await store.create_jobs([new_job(org_id="other")], T0)

    for parent in (other.id, "0190f0f0-0000-7000-8000-000000000000"):
        with pytest.raises(InvalidArgumentError) as refused:
            await store.create_jobs([new_job(), new_job(depends_on=(Edge(parent),))], T0 + 1)
        assert refused.value.violations[0].field == "jobs[1].depends_on[0].job_id"

    assert await store.list_jobs(JobQuery(org_id="acme")) == []
    assert not (await store.get_job(other.id)).has_children


async def test_a_ref_to_a_job_of_another_org_in_the_batch_is_refused_and_nothing_is_stored(
    store: JobStore,
) -> None:
    batch = [new_job(org_id="other"), new_job(), new_job(depends_on=(Edge(1), Edge(0)))]

    with pytest.raises(InvalidArgumentError) as refused:
        await store.create_jobs(batch, T0)

    [violation] = refused.value.violations
    assert violation.field == "jobs[2].depends_on[1].ref"
    assert "jobs[0]" in violation.description and "'other'" in violation.description
    for org_id in ("acme", "other"):
        assert await store.list_jobs(JobQuery(org_id=org_id)) == []


async def test_a_graph_deeper_than_the_limit_is_refused(store: JobStore) -> None:
    ids = await chain(store, 3)

    with pytest.raises(InvalidArgumentError) as refused:
        await store.create_jobs([new_job(depends_on=(Edge(ids[-1]),))], T0, max_depth=2)

    assert "max_graph_depth" in str(refused.value)


async def test_canceling_a_job_cancels_everything_waiting_downstream(store: JobStore) -> None:
    [(a, _), (b, _), (c, _)] = await store.create_jobs(
        [new_job(), new_job(depends_on=(Edge(0, FINISHED),)), new_job(depends_on=(Edge(1),))], T0
    )

    await store.cancel_job(a.id, T0 + 1)

    for job_id in (b.id, c.id):
        job = await store.get_job(job_id)
        assert job.state is JobState.CANCELED
        assert job.cause is Cause.CANCELED
        assert a.id in job.reason


async def test_a_leased_child_carries_its_parents_results(store: JobStore) -> None:
    [(a, _), (b, _), (c, _)] = await store.create_jobs(
        [new_job(), new_job(), new_job(depends_on=(Edge(0), Edge(1, FINISHED)))], T0
    )
    leases = await store.lease_jobs("w1", ["acme"], 2, T0 + 1, LEASE_TTL)
    by_id = {lease.job.id: lease for lease in leases}
    await store.finish_attempt(a.id, by_id[a.id].lease_epoch, SUCCEEDED, T0 + 2, RETRY)
    await store.finish_attempt(b.id, by_id[b.id].lease_epoch, FAILED, T0 + 2, RETRY)

    [lease] = await store.lease_jobs("w1", ["acme"], 1, T0 + 3, LEASE_TTL)

    assert lease.job.id == c.id
    assert [(p.job_id, p.state, p.output_json) for p in lease.parents] == [
        (a.id, JobState.SUCCEEDED, '{"rows": 3}'),
        (b.id, JobState.FAILED, ""),
    ]


async def test_parent_outputs_past_the_budget_are_left_out_and_marked(store: JobStore) -> None:
    [(a, _), _] = await store.create_jobs([new_job(), new_job(depends_on=(Edge(0),))], T0)
    await run(store, a.id, SUCCEEDED, T0 + 1)

    [lease] = await store.lease_jobs("w1", ["acme"], 1, T0 + 3, LEASE_TTL, parent_outputs_bytes=4)

    [parent] = lease.parents
    assert (parent.output_json, parent.output_omitted) == ("", True)


async def test_retention_keeps_a_finished_parent_while_a_child_still_waits_on_it(
    store: JobStore,
) -> None:
    # c waits for a (succeeded, counted down already) and b (still running).
    [(a, _), (b, _), (c, _)] = await store.create_jobs(
        [new_job(), new_job(), new_job(depends_on=(Edge(0), Edge(1)))], T0
    )
    leases = await store.lease_jobs("w1", ["acme"], 2, T0 + 1, LEASE_TTL)
    by_id = {lease.job.id: lease for lease in leases}
    await store.finish_attempt(a.id, by_id[a.id].lease_epoch, SUCCEEDED, T0 + 2, RETRY)
    assert (await store.get_job(c.id)).state is JobState.BLOCKED

    assert await store.purge_finished(T0 + 10 * SECOND) == 0

    await store.finish_attempt(b.id, by_id[b.id].lease_epoch, SUCCEEDED, T0 + 3, RETRY)
    [lease] = await store.lease_jobs("w1", ["acme"], 1, T0 + 4, LEASE_TTL)
    assert [p.job_id for p in lease.parents] == [a.id, b.id]  # a's result reached c
    assert await store.purge_finished(T0 + 10 * SECOND) == 0  # c runs: it may be retried
    await store.finish_attempt(c.id, lease.lease_epoch, SUCCEEDED, T0 + 5, RETRY)
    assert await store.purge_finished(T0 + 10 * SECOND) == 3


async def test_get_links_list_children_and_reruns(store: JobStore) -> None:
    a, b = await chain(store, 2)
    [(rerun, _)] = await store.create_jobs([new_job(rerun_of=a)], T0 + 1)

    children, reruns = await store.job_links(a)

    assert (children, reruns) == ([b], [rerun.id])
    assert (await store.get_job(rerun.id)).rerun_of == a


async def test_a_delayed_job_waits_scheduled_then_becomes_pending_when_due(
    store: JobStore,
) -> None:
    [(job, _)] = await store.create_jobs([new_job(run_at_us=T0 + 10 * SECOND)], T0)

    assert job.state is JobState.SCHEDULED
    assert await store.lease_jobs("w1", ["acme"], 1, T0 + 20 * SECOND, LEASE_TTL) == []
    assert await store.next_due_time() == T0 + 10 * SECOND
    assert await store.promote_due(T0 + 9 * SECOND, 100) == []

    [due] = await store.promote_due(T0 + 10 * SECOND, 100)

    assert (due.id, due.state, due.cause) == (job.id, JobState.PENDING, Cause.DUE)
    assert await store.next_due_time() is None
    assert len(await store.lease_jobs("w1", ["acme"], 1, T0 + 10 * SECOND, LEASE_TTL)) == 1


async def test_a_released_job_still_waits_for_its_own_time(store: JobStore) -> None:
    [(a, _), (b, _)] = await store.create_jobs(
        [new_job(), new_job(depends_on=(Edge(0),), run_at_us=T0 + 60 * SECOND)], T0
    )

    await run(store, a.id, SUCCEEDED, T0 + SECOND)

    released = await store.get_job(b.id)
    assert (released.state, released.next_run_time_us) == (
        JobState.SCHEDULED,
        T0 + 60 * SECOND,
    )


async def test_blocked_and_delayed_jobs_count_as_waiting_for_the_quota(store: JobStore) -> None:
    await chain(store, 2)
    await store.create_jobs([new_job(run_at_us=T0 + SECOND)], T0, pending_limit=3)

    with pytest.raises(ResourceExhaustedError):
        await store.create_jobs([new_job()], T0, pending_limit=3)


@pytest.mark.parametrize("databases", SHARED_BACKENDS, indirect=True)
async def test_replicas_ending_two_parents_at_once_release_the_child_once(
    databases: Databases,
) -> None:
    first, second = await databases.open(), await databases.open()
    [(a, _), (b, _), (child, _)] = await first.create_jobs(
        [new_job(), new_job(), new_job(depends_on=(Edge(0), Edge(1)))], T0
    )
    leases = {
        lease.job.id: lease
        for lease in await first.lease_jobs("w1", ["acme"], 2, T0 + 1, LEASE_TTL)
    }

    await asyncio.gather(
        first.finish_attempt(a.id, leases[a.id].lease_epoch, SUCCEEDED, T0 + 2, RETRY),
        second.finish_attempt(b.id, leases[b.id].lease_epoch, SUCCEEDED, T0 + 2, RETRY),
    )

    released = await first.get_job(child.id)
    assert (released.state, released.waiting_on) == (JobState.PENDING, 0)


async def cancel_a_chain_while_its_root_fails(first: JobStore, second: JobStore) -> None:
    """Fail a chain's root through `first` while `second` cancels its middle:
    every job below the root ends CANCELED, each with one transition."""
    ids = await chain(first, 40)
    [lease] = await first.lease_jobs("w1", ["acme"], 1, T0 + 1, LEASE_TTL)

    await asyncio.gather(
        first.finish_attempt(ids[0], lease.lease_epoch, FAILED, T0 + 2, RETRY),
        second.cancel_job(ids[20], T0 + 2),
    )

    jobs = [await first.get_job(job_id) for job_id in ids[1:]]
    assert {job.state for job in jobs} == {JobState.CANCELED}
    assert {job.cause for job in jobs} <= {Cause.DEPENDENCY_FAILED, Cause.CANCELED}
    events = await first.read_events("acme", "", 0, 10_000)
    ended = [event.job_id for event in events if event.job_id in ids[1:]]
    assert collections.Counter(ended) == dict.fromkeys(ids[1:], 2)  # submitted, ended once


async def test_a_cancel_while_the_root_of_its_chain_fails_ends_each_job_once(
    store: JobStore,
) -> None:
    await cancel_a_chain_while_its_root_fails(store, store)


@pytest.mark.parametrize("databases", SHARED_BACKENDS, indirect=True)
async def test_replicas_canceling_a_chain_while_its_root_fails_end_each_job_once(
    databases: Databases,
) -> None:
    await cancel_a_chain_while_its_root_fails(await databases.open(), await databases.open())
