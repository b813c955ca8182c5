"""Concurrent writes: each succeeds or fails on its own, even when committed together.

A store may commit writes that arrive together in one transaction (group
commit); a write that fails must then undo only itself, its events and its
effect on the waiting counts included. Writes started with one
asyncio.gather arrive together, so these tests make one of them fail among
others that succeed.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.store.support import RETRY, T0, LeaseOne, Listener, Submit, new_job
from zbrain.errors import NotFoundError, ResourceExhaustedError, StaleLeaseError
from zbrain_server.core.model import AttemptOutcome, AttemptResult, JobState
from zbrain_server.store import JobStore

SUCCEEDED = AttemptResult(AttemptOutcome.SUCCEEDED)


async def test_writes_that_fail_among_concurrent_writes_fail_alone(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    running = await submit(org_id="other")
    lease = await lease_one(org="other")
    listener = Listener()
    store.set_event_listener(listener)

    outcomes = await asyncio.gather(
        store.create_jobs([new_job()], T0, pending_limit=1),
        store.create_jobs([new_job()], T0, pending_limit=1),
        store.finish_attempt(running.id, lease.lease_epoch + 1, SUCCEEDED, T0, RETRY),
        store.cancel_job("no-such-job", T0),
        store.finish_attempt(running.id, lease.lease_epoch, SUCCEEDED, T0, RETRY),
        return_exceptions=True,
    )

    submitted = [o for o in outcomes[:2] if isinstance(o, list)]
    assert len(submitted) == 1, "exactly one submission fits under the quota"
    assert [type(o) for o in outcomes[:2] if not isinstance(o, list)] == [ResourceExhaustedError]
    assert isinstance(outcomes[2], StaleLeaseError)
    assert isinstance(outcomes[3], NotFoundError)
    assert (await store.get_job(running.id)).state == JobState.SUCCEEDED
    [[(created, _)]] = submitted
    assert await store.get_job(created.id) == created
    # Only the successful writes left events, numbered without gaps, and all
    # in one commit: the failures above happened inside a shared transaction.
    await listener.wait_through(4)
    recorded = await store.read_events(None, "", 0, 100)
    assert [r.sequence for r in recorded] == [1, 2, 3, 4]
    assert sorted(r.job_id for r in recorded[2:]) == sorted([created.id, running.id])
    assert listener.batches == [recorded[2:]]
    # The refused submission left the waiting count as it was.
    with pytest.raises(ResourceExhaustedError, match="has 1 jobs waiting"):
        await store.create_jobs([new_job()], T0, pending_limit=1)


async def test_concurrent_submissions_each_count_the_ones_before_them_against_the_quota(
    store: JobStore,
) -> None:
    outcomes = await asyncio.gather(
        *(store.create_jobs([new_job(), new_job()], T0, pending_limit=5) for _ in range(4)),
        store.create_jobs([new_job(org_id="other")], T0, pending_limit=5),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 2
    assert all(isinstance(o, ResourceExhaustedError) for o in refused)
    assert sum(isinstance(o, list) for o in outcomes[:4]) == 2
    assert isinstance(outcomes[4], list), "another org's quota is its own"
    with pytest.raises(ResourceExhaustedError, match="has 4 jobs waiting"):
        await store.create_jobs([new_job()], T0, pending_limit=4)


async def test_a_submitter_that_hangs_up_leaves_its_write_and_the_groups_answers_alone(
    store: JobStore,
) -> None:
    listener = Listener()
    store.set_event_listener(listener)
    gone = asyncio.ensure_future(store.create_jobs([new_job()], T0))
    staying = asyncio.ensure_future(store.create_jobs([new_job()], T0))
    # One turn of the loop runs both tasks up to their writes, which they
    # queue before their first await: both are in the same group (a turn,
    # not a time, so a busy machine changes nothing).
    await asyncio.sleep(0)
    gone.cancel()

    async with asyncio.timeout(30):  # a group that never answered would hang here
        [(kept, _)] = await staying

    # The hung-up caller's job is stored all the same: it was in the group.
    await listener.wait_through(2)
    recorded = await store.read_events(None, "", 0, 100)
    assert len({r.job_id for r in recorded}) == 2 and kept.id in {r.job_id for r in recorded}
    assert gone.cancelled()
