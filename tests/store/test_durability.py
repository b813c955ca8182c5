"""Conformance: what a store acknowledged survives closing and reopening it."""

from __future__ import annotations

import asyncio

import pytest

from tests.store.support import LEASE_TTL, RETRY, SECOND, T0, Databases, Reopen, new_job
from zbrain.errors import StoreError
from zbrain_server.core.model import (
    Artifact,
    AttemptOutcome,
    AttemptResult,
    JobQuery,
    JobState,
    LogStream,
)
from zbrain_server.store import JobStore


async def test_acknowledged_jobs_survive_a_restart(store: JobStore, reopen: Reopen) -> None:
    created = await store.create_jobs([new_job(cmd=("job", str(n))) for n in range(20)], T0)

    restarted = await reopen(store)

    for job, _ in created:
        assert await restarted.get_job(job.id) == job
    listed = await restarted.list_jobs(JobQuery("acme", newest_first=False, limit=100))
    assert [job.id for job in listed] == [job.id for job, _ in created]


async def test_acknowledged_jobs_are_visible_to_another_store_at_once(
    store: JobStore, databases: Databases
) -> None:
    # Acknowledged means committed to the database, not held by this store
    # until it closes.
    created = await store.create_jobs([new_job(), new_job()], T0)

    other = await databases.open()

    for job, _ in created:
        assert await other.get_job(job.id) == job


async def test_states_logs_and_artifacts_survive_a_restart(store: JobStore, reopen: Reopen) -> None:
    [(done, _), (canceled, _), (running, _)] = await store.create_jobs(
        [new_job(), new_job(), new_job()], T0
    )
    [lease] = await store.lease_jobs("w1", ["acme"], 1, T0, LEASE_TTL)
    await store.append_logs(
        done.id, lease.lease_epoch, [(LogStream.STDOUT, T0, "out"), (LogStream.STDERR, T0, "err")]
    )
    await store.add_artifact(done.id, lease.lease_epoch, Artifact("out.txt", "a" * 64, 3))
    await store.finish_attempt(
        done.id, lease.lease_epoch, AttemptResult(AttemptOutcome.SUCCEEDED, '"ok"'), T0, RETRY
    )
    await store.cancel_job(canceled.id, T0)
    await store.lease_jobs("w2", ["acme"], 1, T0, LEASE_TTL)
    before = {job_id: await store.get_job(job_id) for job_id in (done.id, canceled.id, running.id)}
    logs = await store.read_logs(done.id, 0, 100)

    restarted = await reopen(store)

    after = {job_id: await restarted.get_job(job_id) for job_id in before}
    assert after == before
    assert [job.state for job in after.values()] == [
        JobState.SUCCEEDED,
        JobState.CANCELED,
        JobState.RUNNING,
    ]
    assert await restarted.read_logs(done.id, 0, 100) == logs
    assert await restarted.referenced_blobs() == {"a" * 64}


async def test_a_lease_stays_valid_across_a_restart(store: JobStore, reopen: Reopen) -> None:
    await store.create_jobs([new_job()], T0)
    [lease] = await store.lease_jobs("w1", ["acme"], 1, T0, LEASE_TTL)

    restarted = await reopen(store)

    renewed = await restarted.renew_lease(lease.job.id, lease.lease_epoch, T0 + SECOND, LEASE_TTL)
    assert renewed.lease_expire_time_us == T0 + SECOND + LEASE_TTL
    assert await restarted.lease_jobs("w2", ["acme"], 1, T0 + SECOND, LEASE_TTL) == []


async def test_log_numbering_continues_after_a_restart(store: JobStore, reopen: Reopen) -> None:
    await store.create_jobs([new_job()], T0)
    [lease] = await store.lease_jobs("w1", ["acme"], 1, T0, LEASE_TTL)
    await store.append_logs(lease.job.id, lease.lease_epoch, [(LogStream.STDOUT, T0, "1")] * 2)

    restarted = await reopen(store)

    [line] = await restarted.append_logs(
        lease.job.id, lease.lease_epoch, [(LogStream.STDOUT, T0, "3")]
    )
    assert line.sequence == 3


async def test_request_ids_are_remembered_across_a_restart(store: JobStore, reopen: Reopen) -> None:
    [(first, _)] = await store.create_jobs([new_job(request_id="once")], T0)

    restarted = await reopen(store)

    [(again, deduplicated)] = await restarted.create_jobs([new_job(request_id="once")], T0)
    assert deduplicated
    assert again.id == first.id


async def test_a_retry_keeps_its_schedule_across_a_restart(store: JobStore, reopen: Reopen) -> None:
    await store.create_jobs([new_job(max_retries=1)], T0)
    [lease] = await store.lease_jobs("w1", ["acme"], 1, T0, LEASE_TTL)
    retrying = await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.FAILED), T0, RETRY
    )
    assert retrying.next_run_time_us is not None

    restarted = await reopen(store)

    assert await restarted.next_run_time(["acme"]) == retrying.next_run_time_us
    early = await restarted.lease_jobs("w1", ["acme"], 1, retrying.next_run_time_us - 1, SECOND)
    on_time = await restarted.lease_jobs("w1", ["acme"], 1, retrying.next_run_time_us, SECOND)
    assert early == []
    assert [lease.job.attempt for lease in on_time] == [2]


async def test_close_writes_what_was_queued_and_refuses_what_comes_after(
    store: JobStore, databases: Databases
) -> None:
    writes = [asyncio.create_task(store.create_jobs([new_job()], T0)) for _ in range(30)]
    await asyncio.sleep(0)  # all of them asked before close begins

    await databases.close(store)

    created = [job for [(job, _)] in await asyncio.gather(*writes)]
    with pytest.raises(StoreError, match="closed"):
        await store.create_jobs([new_job()], T0)
    reopened = await databases.open()
    listed = await reopened.list_jobs(JobQuery("acme", newest_first=False, limit=100))
    assert [job.id for job in listed] == [job.id for job in created]
