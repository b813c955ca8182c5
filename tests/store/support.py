"""Values and builders shared by the store conformance tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from zbrain_server.core.lifecycle import RetryPolicy
from zbrain_server.core.model import EventRecord, Job, Lease, NewJob
from zbrain_server.store import JobStore

T0 = 1_700_000_000_000_000
"""A fixed "now" in microseconds; tests add offsets to it instead of sleeping."""

SHARED_BACKENDS = ["postgresql"]
"""The BACKENDS (conftest.py) that several servers may share: replica tests run on these."""

SECOND = 1_000_000
LEASE_TTL = 30 * SECOND
# A fixed one-second ceiling keeps every backoff between 0.5s and 1s.
RETRY = RetryPolicy(base_us=SECOND, cap_us=SECOND)


def new_job(**overrides: Any) -> NewJob:
    """A valid NewJob of org "acme"; keyword arguments replace any field."""
    fields: dict[str, Any] = dict(
        org_id="acme",
        cmd=("echo", "hi"),
        input_json='{"n": 1}',
        env={"A": "b"},
        timeout_us=60 * SECOND,
        max_retries=0,
        priority=0,
        labels={"team": "data"},
        request_id="",
        trace_context={"traceparent": "00-abc-def-01"},
    )
    fields.update(overrides)
    return NewJob(**fields)


DELIVERY_TIMEOUT_S = 10.0


class Listener:
    """Collects the event batches a store hands its listener.

    SQLite hands them over before the write returns; a store shared by
    replicas a moment after the commit, so tests await what they expect.
    """

    def __init__(self) -> None:
        self.batches: list[list[EventRecord]] = []
        self._arrived = asyncio.Event()

    def __call__(self, records: list[EventRecord]) -> None:
        self.batches.append(records)
        self._arrived.set()

    @property
    def sequences(self) -> list[int]:
        """The sequence of every event received, in the order received."""
        return [record.sequence for batch in self.batches for record in batch]

    async def wait_through(self, sequence: int) -> None:
        """Wait until an event with this sequence or a later one has arrived."""
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            while not self.sequences or self.sequences[-1] < sequence:
                self._arrived.clear()
                await self._arrived.wait()


Reopen = Callable[[JobStore], Awaitable[JobStore]]
"""Close a store and open its database again, as a restarted server would."""

Submit = Callable[..., Awaitable[Job]]
"""Create one job; keyword arguments as `new_job` takes them, plus `now_us`."""

LeaseOne = Callable[..., Awaitable[Lease]]
"""Lease one job of an org (`org`, `now_us`, `worker_id`, `ttl_us`)."""


@dataclass
class Databases:
    """Opens stores over one test database and closes what is left open at teardown."""

    make: Callable[[], JobStore]
    opened: list[JobStore] = field(default_factory=list)

    async def open(self) -> JobStore:
        store = self.make()
        await store.open()
        self.opened.append(store)
        return store

    async def reopen(self, store: JobStore) -> JobStore:
        """Close `store` as a stopping server would, then open its database anew."""
        await self.close(store)
        return await self.open()

    async def close(self, store: JobStore) -> None:
        self.opened.remove(store)
        await store.close()

    async def close_all(self) -> None:
        while self.opened:
            await self.close(self.opened[-1])
