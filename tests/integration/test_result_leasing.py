"""A worker's result and the next lease of the slot it frees commit together
(`JobStore.lease_in_commit`): under a chain of results every job runs once,
no worker ever holds more than its concurrency, and stale reports are fenced."""

from __future__ import annotations

import asyncio
import collections

from tests.conftest import ON_EVERY_STORE
from tests.integration.test_workers import raw_worker, results, wait_state
from zbrain import JobState
from zbrain.v1 import job_pb2, worker_service_pb2

pytestmark = ON_EVERY_STORE

JOBS = 40
CONCURRENCY = 2


async def test_a_chain_of_results_leases_each_job_once_within_each_workers_slots(
    server, client
) -> None:
    ids = await client.submit_batch([job_pb2.JobSpec(cmd=["true"], max_retries=0)] * JOBS)
    leased: list[str] = []
    rejected: list[worker_service_pb2.LeaseRef] = []
    stale_sent: list[worker_service_pb2.LeaseRef] = []
    all_leased = asyncio.Event()

    async def work(worker_id: str) -> None:
        hello = {"worker_id": worker_id, "concurrency": CONCURRENCY, "accepts_lease_batches": True}
        async with raw_worker(server, **hello) as (call, _):
            previous: worker_service_pb2.LeaseRef | None = None
            while True:
                message = await call.read()
                if message.WhichOneof("message") == "rejected":
                    rejected.append(message.rejected.lease)
                    continue
                if message.WhichOneof("message") != "leases":
                    continue
                refs = [
                    worker_service_pb2.LeaseRef(job_id=lease.job.id, lease_epoch=lease.lease_epoch)
                    for lease in message.leases.leases
                ]
                leased.extend(ref.job_id for ref in refs)
                if len(leased) >= JOBS:
                    all_leased.set()
                # Each report repeats the previous one, stale by now: it must be
                # refused and must free no slot.
                stale = [previous] if previous is not None else []
                stale_sent.extend(stale)
                await call.write(results(*refs, *stale))
                previous = refs[-1]

    workers = [asyncio.create_task(work(f"chain-{n}")) for n in range(2)]
    try:
        await asyncio.wait_for(all_leased.wait(), 60)
        finished = [await wait_state(client, job_id, JobState.SUCCEEDED) for job_id in ids]
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    assert sorted(leased) == sorted(ids), "every job leased, none twice"
    assert all(job.attempt == 1 for job in finished)
    assert {ref.job_id for ref in rejected} <= {ref.job_id for ref in stale_sent}
    # From the event log, in commit order: no worker ever ran more jobs at once
    # than its concurrency, although its next leases commit with its results.
    running: collections.Counter[str] = collections.Counter()
    most: collections.Counter[str] = collections.Counter()
    holder: dict[str, str] = {}
    async for event in client.events(topic_prefix="jobs/"):
        if event.type != "job_state_changed":
            continue
        if event.data["to_state"] == "RUNNING":
            worker_id = holder[event.job_id] = event.data["worker_id"]
            running[worker_id] += 1
            most[worker_id] = max(most[worker_id], running[worker_id])
        elif event.data["from_state"] == "RUNNING":
            running[holder[event.job_id]] -= 1
    assert sum(running.values()) == 0
    assert sorted(most) == ["chain-0", "chain-1"]
    assert max(most.values()) <= CONCURRENCY
