"""Who takes leases: connected worker streams and unary AcquireLease calls,
and the messages the dispatcher puts in a worker stream's outbox."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from ..core.model import Lease, now_us


@dataclass(eq=False)
class Consumer:
    """Someone who takes leases for a set of orgs, up to `capacity` at once."""

    worker_id: str
    org_ids: tuple[str, ...]
    capacity: int
    active: dict[str, int] = field(default_factory=dict)  # job id -> lease epoch
    org_of: dict[str, str] = field(default_factory=dict)  # job id -> org, of `active`
    # Slots a dispatch pass or a group commit (see `Dispatcher._lease_in_commit`)
    # is leasing right now: not free, not yet active.
    reserved: int = 0
    # A dispatch pass found no free slot while some were reserved by a group
    # commit: if that commit frees them unused, it must ask for another pass
    # (the pass will not come back by itself; see `Dispatcher._lease_in_commit`).
    passed_over: bool = False
    # The worker process (WorkerHello.incarnation_id), stored with each lease
    # it takes: "" for AcquireLease callers and workers that send none.
    incarnation: str = ""
    _next_org: int = 0

    @property
    def free_slots(self) -> int:
        return self.capacity - len(self.active) - self.reserved

    def orgs_in_turn(self) -> list[str]:
        """Its orgs, those holding fewest of its slots first, so that an org
        with a backlog cannot keep a small one waiting (each slot that comes
        free goes to the least served); ties start one further each call, so
        no org always goes first."""
        start = self._next_org % len(self.org_ids)
        self._next_org += 1
        turn = [*self.org_ids[start:], *self.org_ids[:start]]
        if len(turn) > 1 and self.org_of:
            held = collections.Counter(self.org_of.values())
            turn.sort(key=lambda org: held[org])  # stable: the rotation breaks ties
        return turn

    def hold(self, job_id: str, lease_epoch: int, org_id: str) -> None:
        """A lease of this consumer's is live: it takes a slot."""
        self.active[job_id] = lease_epoch
        self.org_of[job_id] = org_id

    def release(self, job_id: str) -> None:
        """A lease of this consumer's ended: its slot is free."""
        del self.active[job_id]
        self.org_of.pop(job_id, None)

    def deliver(self, leases: list[Lease]) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class LeaseWaiter(Consumer):
    """An AcquireLease call: takes one batch of leases, then leaves."""

    future: asyncio.Future[list[Lease]] | None = None
    leasing: bool = False  # a dispatch pass is leasing for it right now
    gave_up: bool = False  # its wait ended: deliver whatever the pass gets, even nothing

    def deliver(self, leases: list[Lease]) -> None:
        self.capacity = 0
        if self.future is not None and not self.future.done():
            self.future.set_result(leases)


@dataclass(eq=False)
class WorkerSession(Consumer):
    """A worker connected through WorkerService.Connect; messages go to `outbox`."""

    outbox: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    closed: bool = False
    # Set when one of its leases expired: a worker that missed its heartbeats
    # gets no new work until it is heard from again.
    silent: bool = False
    draining: bool = False  # the worker is shutting down: no new work, ever
    takes_batches: bool = False  # it reads a pass's leases as one message
    # What ListWorkers shows: where it connected from, its labels, when its
    # stream opened and when it last sent anything (microseconds).
    address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    connected_at_us: int = field(default_factory=now_us)
    last_heard_at_us: int = field(default_factory=now_us)
    held_since_us: int = 0  # when it last went from holding no lease to holding some

    @property
    def free_slots(self) -> int:
        if self.silent or self.draining:
            return 0
        return self.capacity - len(self.active) - self.reserved

    def heard_from(self) -> None:
        """The worker sent something: it is alive, so it may take work again."""
        self.silent = False

    def check_heard(self, now: int, lease_ttl_us: int) -> None:
        """Silent when it holds leases and nothing came from it for a lease
        TTL: its leases are expiring, and the reaper's commit that ends them
        would otherwise lease their jobs again to this very stream."""
        quiet_since = max(self.last_heard_at_us, self.held_since_us)
        if self.active and quiet_since < now - lease_ttl_us:
            self.silent = True

    def deliver(self, leases: list[Lease]) -> None:
        if leases and not self.active:
            self.held_since_us = now_us()
        for lease in leases:
            self.hold(lease.job.id, lease.lease_epoch, lease.job.org_id)
        if self.takes_batches:
            self.outbox.put_nowait(leases)
        else:
            for lease in leases:
                self.outbox.put_nowait(lease)


@dataclass(frozen=True)
class DrainAcknowledgement:
    """Tells a draining worker that no lease follows."""


@dataclass(frozen=True)
class CancelNotice:
    """Tells a session's worker to stop an attempt."""

    job_id: str
    lease_epoch: int
    reason: str
