"""Conformance: the workers connected to each replica (`store.workers`), as
every replica reads them: a replica's publish replaces its own rows only,
rows not refreshed within the TTL count for nothing and go, a stopping
replica withdraws its own."""

from __future__ import annotations

from tests.store.support import SECOND, T0
from zbrain_server.core.model import WorkerPresence
from zbrain_server.store import JobStore


def worker(replica: str, worker_id: str, **labels: str) -> WorkerPresence:
    return WorkerPresence(
        replica_id=replica,
        worker_id=worker_id,
        address="127.0.0.1:1",
        org_ids=("acme",),
        labels=labels,
        slots=4,
        lease_job_ids=("j1",),
        draining=False,
        connected_at_us=T0,
        last_heard_at_us=T0 + 1,
    )


async def test_each_replica_replaces_its_own_workers_and_reads_everyones(store: JobStore) -> None:
    gpu = worker("r1", "gpu", gpu="a100")
    await store.workers.publish("r1", [gpu, worker("r1", "old")], T0, T0 - 15 * SECOND)
    await store.workers.publish("r2", [worker("r2", "cpu")], T0, T0 - 15 * SECOND)
    await store.workers.publish("r1", [gpu], T0 + SECOND, T0 - 14 * SECOND)

    seen = await store.workers.connected(T0 - 15 * SECOND)

    assert [(w.replica_id, w.worker_id) for w in seen] == [("r2", "cpu"), ("r1", "gpu")]
    assert seen[1] == gpu


async def test_a_replica_silent_past_the_ttl_is_forgotten(store: JobStore) -> None:
    await store.workers.publish("dead", [worker("dead", "a")], T0, T0 - 15 * SECOND)
    await store.workers.publish("alive", [worker("alive", "b")], T0 + 20 * SECOND, T0 + 5 * SECOND)

    assert [w.worker_id for w in await store.workers.connected(T0 + 5 * SECOND)] == ["b"]
    assert [w.worker_id for w in await store.workers.connected(0)] == ["b"], "deleted"

    await store.workers.withdraw("alive")
    assert await store.workers.connected(0) == []
