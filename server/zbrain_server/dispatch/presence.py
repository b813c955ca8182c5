"""`WorkerDirectory`: the workers of every replica sharing the store, as this
replica knows them (docs/limits.md, "Workers behind several replicas").

This replica publishes its own worker streams (`store.workers`) when one
connects or leaves, and every REFRESH_S otherwise (their slots and leases,
and to show it is alive); each publish reads back the other replicas' rows
refreshed within TTL_S. Publishes are coalesced: a burst of connects is one
write. So another replica's worker counts here from at most REFRESH_S after
it connected (plus a commit), and a dead replica's workers stop counting
TTL_S after its last publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping

from zbrain.errors import ZBrainError

from ..core import limits
from ..core.model import WorkerPresence, now_us
from ..store import JobStore
from .sessions import WorkerSession
from .signals import wait_for

log = logging.getLogger(__name__)

REFRESH_S = 3.0
"""How often a replica rewrites its workers' rows when nothing connects or leaves."""

TTL_S = 5 * REFRESH_S
"""How long a replica's rows count after their last refresh."""


def new_replica_id() -> str:
    """A name for this server process, unique among replicas, readable in ListWorkers."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def presence(session: WorkerSession, replica_id: str) -> WorkerPresence:
    """A worker stream of this replica, as ListWorkers shows it."""
    return WorkerPresence(
        replica_id=replica_id,
        worker_id=session.worker_id,
        address=session.address,
        org_ids=session.org_ids,
        labels=dict(session.labels),
        slots=session.capacity,
        lease_job_ids=tuple(sorted(session.active)),
        draining=session.draining,
        connected_at_us=session.connected_at_us,
        last_heard_at_us=session.last_heard_at_us,
    )


class WorkerDirectory:
    """This replica's worker streams (live) and the other replicas' (as last read)."""

    def __init__(self, store: JobStore, sessions: Callable[[], list[WorkerSession]]) -> None:
        self.replica_id = new_replica_id()
        self._store = store
        self._sessions = sessions
        self._others: list[WorkerPresence] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """A worker connected or left here: publish soon."""
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish_loop(), name="zbrain-worker-directory")

    async def stop(self) -> None:
        """Stop publishing and delete this replica's rows (best effort: a
        replica that dies is forgotten after TTL_S anyway)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._store.workers.withdraw(self.replica_id)
        except ZBrainError as error:
            log.warning("could not withdraw this replica's workers: %s", error)

    def workers(self) -> list[WorkerPresence]:
        """Every replica's workers, this one's as they are now, by worker id."""
        mine = [presence(session, self.replica_id) for session in self._sessions()]
        return sorted([*mine, *self._others], key=lambda w: (w.worker_id, w.replica_id))

    def other_matches(self, org_id: str, requires: Mapping[str, str]) -> bool:
        """Whether a worker of another replica serves the org with the labels."""
        return any(
            org_id in worker.org_ids and limits.meets(requires, worker.labels)
            for worker in self._others
        )

    async def _publish_loop(self) -> None:
        while True:
            try:
                await self.publish()
            except ZBrainError as error:  # the store is down, say: try again next time
                log.warning("could not publish this replica's workers: %s", error)
            await wait_for(self._changed, REFRESH_S)

    async def publish(self) -> None:
        """Write this replica's workers, then read the others'."""
        now = now_us()
        mine = [presence(session, self.replica_id) for session in self._sessions()]
        ttl_us = int(TTL_S * 1e6)
        await self._store.workers.publish(self.replica_id, mine, now, now - ttl_us)
        everyone = await self._store.workers.connected(now - ttl_us)
        self._others = [w for w in everyone if w.replica_id != self.replica_id]
