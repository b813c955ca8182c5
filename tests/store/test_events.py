"""Events: written in the same transaction as the change, numbered, filtered, retained."""

from __future__ import annotations

import pytest

from tests.store.support import (
    LEASE_TTL,
    RETRY,
    SECOND,
    T0,
    LeaseOne,
    Listener,
    Reopen,
    Submit,
    new_job,
)
from zbrain.errors import StaleLeaseError
from zbrain_server.core import events
from zbrain_server.core.model import (
    AttemptOutcome,
    AttemptResult,
    EventRecord,
    LogStream,
    event_size,
)
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import JobStore

KINDS = {
    events.JobSubmitted: "job_submitted",
    events.JobStateChanged: "job_state_changed",
    events.JobLogged: "job_logged",
    events.WorkerPresence: "worker_presence",
}


def kinds(records: list[EventRecord]) -> list[str]:
    return [KINDS[type(EVENT_CODEC.decode(r.payload))] for r in records]


async def everything(
    store: JobStore, org: str | None = None, prefix: str = ""
) -> list[EventRecord]:
    return await store.read_events(org, prefix, 0, 10_000)


async def test_each_change_is_recorded_with_increasing_sequences(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    job = await submit()
    lease = await lease_one()
    await store.append_logs(job.id, lease.lease_epoch, [(LogStream.STDOUT, T0, "hi")])
    await store.finish_attempt(
        job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.SUCCEEDED), T0 + SECOND, RETRY
    )

    recorded = await everything(store)

    assert kinds(recorded) == [
        "job_submitted",
        "job_state_changed",
        "job_logged",
        "job_state_changed",
    ]
    assert [r.sequence for r in recorded] == [1, 2, 3, 4]
    assert [r.topic for r in recorded] == [
        f"jobs/{job.id}/state",
        f"jobs/{job.id}/state",
        f"jobs/{job.id}/logs",
        f"jobs/{job.id}/state",
    ]


async def test_renewing_a_lease_records_nothing(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    before = await everything(store)
    await store.renew_lease(lease.job.id, lease.lease_epoch, T0 + SECOND, LEASE_TTL)
    assert await everything(store) == before


async def test_the_listener_gets_each_commit_in_order(store: JobStore, submit: Submit) -> None:
    listener = Listener()
    store.set_event_listener(listener)
    await store.create_jobs([new_job(), new_job()], T0)
    await submit()
    await listener.wait_through(3)

    assert [[r.sequence for r in batch] for batch in listener.batches] == [[1, 2], [3]]
    assert [r for batch in listener.batches for r in batch] == await everything(store)


async def test_a_failed_change_records_and_publishes_nothing(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    job = await submit()
    lease = await lease_one()
    listener = Listener()
    store.set_event_listener(listener)
    before = await everything(store)

    with pytest.raises(StaleLeaseError):
        await store.append_logs(job.id, lease.lease_epoch + 1, [(LogStream.STDOUT, T0, "x")])

    assert await everything(store) == before
    assert listener.batches == []
    await store.record_events([events.worker_presence("w", "acme", True, T0)])
    await listener.wait_through(before[-1].sequence + 1)
    assert listener.batches[0][0].sequence == before[-1].sequence + 1, "no sequence was burnt"


async def test_events_are_read_by_org_and_topic_prefix(store: JobStore, submit: Submit) -> None:
    a = await submit(org_id="a")
    await submit(org_id="b")
    await store.record_events([events.worker_presence("w1", "a", True, T0)])

    assert {r.org_id for r in await everything(store, "a")} == {"a"}
    assert [r.job_id for r in await everything(store, "a", f"jobs/{a.id}/")] == [a.id]
    assert [r.topic for r in await everything(store, None, "workers/")] == ["workers/w1"]
    assert len(await everything(store)) == 3


async def test_reading_after_a_sequence_pages_through(store: JobStore) -> None:
    await store.create_jobs([new_job() for _ in range(5)], T0)
    page = await store.read_events(None, "", 2, 2)
    assert [r.sequence for r in page] == [3, 4]


async def test_a_page_holds_no_more_bytes_than_asked_but_at_least_one_event(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    job = await submit()
    lease = await lease_one()
    for text in ("a" * 3000, "b" * 3000, "c" * 3000):
        await store.append_logs(job.id, lease.lease_epoch, [(LogStream.STDOUT, T0, text)])
    recorded = await everything(store)
    second_log = recorded[-2]
    through_second = sum(event_size(r) for r in recorded if r.sequence <= second_log.sequence)

    page = await store.read_events(None, "", 0, 1000, max_bytes=through_second)
    one = await store.read_events(None, "", second_log.sequence - 1, 1000, max_bytes=1)
    org = await store.read_events("acme", "", second_log.sequence - 1, 1000, max_bytes=1)

    assert page == recorded[:-1]
    assert one == org == [second_log]


async def test_purging_removes_old_events_and_remembers_how_far(store: JobStore) -> None:
    await store.create_jobs([new_job()], T0)
    await store.create_jobs([new_job()], T0 + 10 * SECOND)

    assert await store.purge_events(T0 + SECOND) == 1

    assert [r.sequence for r in await everything(store)] == [2]
    assert await store.events_purged_through() == 1


async def test_the_last_event_sequence_is_where_the_store_ends_even_when_purged(
    store: JobStore,
) -> None:
    assert await store.last_event_sequence() == 0
    await store.create_jobs([new_job(), new_job()], T0)
    assert await store.last_event_sequence() == 2
    await store.purge_events(T0 + SECOND)  # every event gone: the mark still counts
    assert await store.last_event_sequence() == 2


async def test_sequences_keep_increasing_across_a_restart(store: JobStore, reopen: Reopen) -> None:
    await store.create_jobs([new_job(), new_job()], T0)
    await store.purge_events(T0 + SECOND)  # even with every event purged
    store = await reopen(store)

    await store.create_jobs([new_job()], T0 + 2 * SECOND)

    assert [r.sequence for r in await everything(store)] == [3]
    assert await store.events_purged_through() == 2
