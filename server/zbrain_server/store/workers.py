"""`WorkerStore`: the worker streams connected to every replica sharing the
store (table `connected_workers`), so that each replica can say which
workers exist anywhere (ListWorkers) and whether any of them could take a
waiting job (the unmatched filter, metric and waiting reason).

Each replica owns its rows: it rewrites them all in one write when a worker
connects or leaves and every few seconds (`dispatch.presence`), so a row's
`refresh_time` says the replica was alive then. A reader takes only the rows
refreshed within a TTL; a replica that died without deleting its rows is
forgotten after it, and the next publish of any replica deletes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..core.model import WorkerPresence
from .driver import Driver
from .engine import Tx, WriteEngine
from .ops import Execute, ExecuteMany, Params, Program, Row


def presence_params(worker: WorkerPresence, refresh_us: int) -> Params:
    return {
        "replica_id": worker.replica_id,
        "worker_id": worker.worker_id,
        "address": worker.address,
        "org_ids": json.dumps(list(worker.org_ids)),
        "labels": json.dumps(dict(worker.labels)),
        "slots": worker.slots,
        "lease_job_ids": json.dumps(list(worker.lease_job_ids)),
        "draining": worker.draining,
        "connect_time": worker.connected_at_us,
        "last_heard_time": worker.last_heard_at_us,
        "refresh_time": refresh_us,
    }


def presence_from_row(row: Row) -> WorkerPresence:
    return WorkerPresence(
        replica_id=row["replica_id"],
        worker_id=row["worker_id"],
        address=row["address"],
        org_ids=tuple(json.loads(row["org_ids"])),
        labels=json.loads(row["labels"]),
        slots=row["slots"],
        lease_job_ids=tuple(json.loads(row["lease_job_ids"])),
        draining=bool(row["draining"]),
        connected_at_us=row["connect_time"],
        last_heard_at_us=row["last_heard_time"],
    )


class WorkerStore:
    """Which workers are connected to which replica."""

    def __init__(self, driver: Driver, engine: WriteEngine) -> None:
        self._driver = driver
        self._engine = engine

    async def publish(
        self,
        replica_id: str,
        workers: Sequence[WorkerPresence],
        now_us: int,
        expired_before_us: int,
    ) -> None:
        """Replace this replica's rows by `workers` (refreshed now), and delete
        every replica's rows last refreshed before `expired_before_us`."""

        def program(tx: Tx) -> Program[None]:
            yield Execute("delete_replica_workers", {"replica_id": replica_id})
            if workers:
                yield ExecuteMany(
                    "insert_connected_worker",
                    [presence_params(worker, now_us) for worker in workers],
                )
            yield Execute("delete_expired_workers", {"before": expired_before_us})

        await self._engine.write(program)

    async def withdraw(self, replica_id: str) -> None:
        """Delete this replica's rows (it is stopping)."""

        def program(tx: Tx) -> Program[None]:
            yield Execute("delete_replica_workers", {"replica_id": replica_id})

        await self._engine.write(program)

    async def connected(self, refreshed_after_us: int) -> list[WorkerPresence]:
        """Every replica's workers whose rows were refreshed after the time,
        by worker id."""
        rows = await self._driver.fetch("connected_workers", {"after": refreshed_after_us})
        return [presence_from_row(row) for row in rows]
