"""Group commit, written once for every backend.

Writes queue up while the database is busy, and one writer task runs
whatever is queued (up to the driver's `max_group`) in one transaction: each
write inside its own savepoint, so one failing write undoes only itself,
then the driver numbers the group's events and commits once, hence one fsync
(one turn at PostgreSQL's counter row) for all. Every caller is answered only
after that commit. The writer is a task of its own, so a caller that hangs up
mid-call cannot leave a transaction open: its write still runs with its group.

A write that meets another transaction (a deadlock PostgreSQL broke, a
SQLite file locked by another process) is run again, up to WRITE_TRIES
times: alone, in the next group, when only its own statement failed; with
the whole group when the group's own statements did.

A group whose writes may add waiting jobs (they declare quota_orgs) or end
leases (they declare the leases they end: a worker's results) may run a
follow-up last, after all its writes, in a savepoint of its own
(`WriteEngine.follow`): the dispatcher leases the new jobs to idle workers,
and waiting jobs to the slots the results freed, there. So a job is stored
and leased in one commit (one fsync), a result and the next lease of its
slot likewise, and the leases are pushed right after that commit, with no
dispatch pass in between.

The bytes of logs and artifacts a group adds to (or retention takes from)
each org are summed over the group and moved in the driver's `finish`, one
row per org per group, so an org's storage total costs its busy appenders
no turn at a row of their own (`Tx.add_usage`, `Tx.usage`).

The driver supplies the transaction (`run_group`), the counts of waiting
jobs a quota is checked against (`lock_orgs`), the numbering of events and
the moves of usage (`finish`), and what follows a commit (`committed`); see
`store.driver`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from zbrain.errors import FailedPreconditionError, StoreConflictError, StoreError

from ..core import events
from ..core.lifecycle import Change
from ..core.model import EventRecord
from . import graph
from .ops import ExecuteMany, FetchOne, Program, RollbackToSavepoint, Savepoint
from .rows import save_params
from .rules import ended_leases, quota_exceeded, waiting_changes

if TYPE_CHECKING:
    from .driver import Driver

T = TypeVar("T")

log = logging.getLogger(__name__)

WRITE_TRIES = 3


class Group:
    """The writes of one transaction together: their events and what they did
    to the orgs' waiting counts and storage usage, for the driver's `finish`;
    and the committed counts of the orgs whose quotas its writes check."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []
        self.waiting: collections.Counter[str] = collections.Counter()
        self.log_bytes: collections.Counter[str] = collections.Counter()
        self.artifact_bytes: collections.Counter[str] = collections.Counter()
        self.ended: set[tuple[str, int]] = set()  # (job id, lease epoch) of leases ended
        self.locked: dict[str, int] | None = None  # org -> committed waiting count
        self.last_sequence: int | None = None  # set by the driver's finish

    def add(self, tx: Tx) -> None:
        """Take in what a write that succeeded did."""
        self.events += tx.events
        self.waiting.update(tx.waiting)
        self.log_bytes.update(tx.log_bytes)
        self.artifact_bytes.update(tx.artifact_bytes)
        self.ended.update(tx.ended)

    def usage_moves(self) -> list[tuple[str, int, int]]:
        """(org, log bytes, artifact bytes) for each org whose usage the group
        moves, sorted by org (the order rows are locked in)."""
        orgs = sorted(org for org in {*self.log_bytes, *self.artifact_bytes})
        moves = [(org, self.log_bytes[org], self.artifact_bytes[org]) for org in orgs]
        return [move for move in moves if move[1] or move[2]]

    def moved_orgs(self) -> list[str]:
        return [org_id for org_id, delta in self.waiting.items() if delta]

    def encode(self, codec: events.EventCodec) -> None:
        """Give every event its stored form; records sharing a body (the jobs
        of a batch) share its encoding."""
        encoded: dict[int, bytes] = {}
        for record in self.events:
            if not record.payload and record.body is not None:
                payload = encoded.get(id(record.body))
                if payload is None:
                    payload = encoded[id(record.body)] = codec.encode(record.body)
                record.payload = payload


class Tx:
    """One write of a group, as its program sees it: changes are saved as they
    are decided; their events and waiting-count moves are collected here and
    handed to the group if the write succeeds."""

    def __init__(self, group: Group) -> None:
        self.events: list[EventRecord] = []
        self.waiting: collections.Counter[str] = collections.Counter()
        self.log_bytes: collections.Counter[str] = collections.Counter()
        self.artifact_bytes: collections.Counter[str] = collections.Counter()
        self.ended: list[tuple[str, int]] = []  # (job id, lease epoch) of leases ended
        self._group = group

    def save(self, changes: Sequence[Change], *, record: bool = True) -> Program[None]:
        """Write decided changes; FailedPreconditionError if any row changed
        since it was read (the compare-and-set on state and lease epoch).
        The jobs waiting for any job these changes end are settled with them
        (`graph.settle`), in this transaction."""
        yield from self.write(changes, record=record)
        finished = graph.newly_finished(changes)
        if finished:
            yield from graph.settle(self, finished)

    def write(self, changes: Sequence[Change], *, record: bool = True) -> Program[None]:
        """`save` without settling children: for `graph` itself, which walks
        the graph down in a loop of its own."""
        if not changes:
            return
        saved = yield ExecuteMany("save_job", [save_params(change) for change in changes])
        if saved != len(changes):
            raise FailedPreconditionError("a job changed concurrently; try again")
        self.waiting.update(waiting_changes(changes))
        self.ended += ended_leases(changes)
        if record:
            self.events += [events.state_changed(change) for change in changes]

    def group_ended(self) -> set[tuple[str, int]]:
        """The leases (job id, lease epoch) the group's writes so far ended."""
        return self._group.ended

    def record(self, records: Iterable[EventRecord]) -> None:
        """Record events with this write (numbered when the group commits)."""
        self.events += records

    def add_usage(self, org_id: str, *, log_bytes: int = 0, artifact_bytes: int = 0) -> None:
        """Move the org's storage usage (negative: give back) with this write;
        the group moves the org's row once, by its sum, in its `finish`."""
        self.log_bytes[org_id] += log_bytes
        self.artifact_bytes[org_id] += artifact_bytes

    def usage(self, org_id: str) -> Program[tuple[int, int]]:
        """The org's storage usage (log bytes, artifact bytes) as this write
        sees it: the committed row, plus what the group's earlier writes and
        this one moved. Read without a lock: on PostgreSQL, replicas committing
        at once may each add one group's worth past a quota."""
        row = yield FetchOne("select_org_usage", {"org_id": org_id})
        logs, artifacts = (row["log_bytes"], row["artifact_bytes"]) if row else (0, 0)
        group = self._group
        return (
            int(logs) + group.log_bytes[org_id] + self.log_bytes[org_id],
            int(artifacts) + group.artifact_bytes[org_id] + self.artifact_bytes[org_id],
        )

    def check_quota(self, limit: int, own: Mapping[str, int] | None = None) -> None:
        """ResourceExhaustedError when this write leaves an org it adds to with
        more than `limit` waiting jobs (`own[org]`, the org's own limit, when
        given): the committed count, which the group holds (see
        `WriteEngine.write`'s quota_orgs), plus what the group's earlier
        writes and this one moved."""
        locked = self._group.locked
        assert locked is not None, "a write checking a quota must declare its quota_orgs"
        own = own or {}
        for org_id, added in self.waiting.items():
            if added > 0:
                waiting = locked[org_id] + self._group.waiting[org_id]
                org_limit = own.get(org_id, limit)
                if waiting + added > org_limit:
                    raise quota_exceeded(org_id, waiting, org_limit, own=org_id in own)


@dataclass(eq=False)
class _Write:
    """A write waiting for the writer task, and its caller's future."""

    program: Callable[[Tx], Program[Any]]  # makes a fresh program for each run
    future: asyncio.Future[Any]
    quota_orgs: frozenset[str]
    ends: frozenset[tuple[str, int]]  # the leases (job id, epoch) it may end
    tries: int = 1


Outcome = tuple[_Write, Any, Exception | None]


@dataclass(eq=False)
class FollowUp:
    """Work run last in one group's transaction, after every write of the group
    and in a savepoint of its own (see `WriteEngine.follow`).

    `program(tx)` may read and write; its changes commit with the group's.
    `then(result)` is called
    on the event loop once the group has committed, before its writers are
    answered, with the program's result; with None when the follow-up or the
    whole group failed, so nothing it did was kept.
    """

    program: Callable[[Tx], Program[Any]]
    then: Callable[[Any], None]


FollowPlan = Callable[[frozenset[str], frozenset[tuple[str, int]]], FollowUp | None]
"""Asked as a group forms, with the orgs its writes may add waiting jobs to
and the leases they may end, for the group's follow-up (see `WriteEngine.follow`)."""


class WriteEngine:
    """Runs the store's writes in groups, through one driver."""

    def __init__(self, driver: Driver, codec: events.EventCodec) -> None:
        self._driver = driver
        self._codec = codec
        self._queue: collections.deque[_Write] = collections.deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the writer has emptied the queue
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._follow: FollowPlan | None = None

    def follow(self, plan: FollowPlan | None) -> None:
        """Ask `plan(orgs, ending)`, on the event loop, as each group forms
        whose writes may add waiting jobs to `orgs` (their quota_orgs) or end
        the leases `ending` (job id, epoch; their `ends`), for a follow-up to
        run last in that group (None: none this time); None stops asking."""
        self._follow = plan

    async def write(
        self,
        program: Callable[[Tx], Program[T]],
        *,
        quota_orgs: Iterable[str] = (),
        ends: Iterable[tuple[str, int]] = (),
    ) -> T:
        """Run `program(tx)` atomically and durably; its result once committed.

        `quota_orgs` are the orgs whose waiting counts it may raise and check
        against a quota (`Tx.check_quota`): the group locks their counts before
        the first such write, and runs those writes last, so that locks are
        always taken in one order (job rows, then org rows, then the counter).
        `ends` are the leases (job id, lease epoch) it may end, whose slots
        the group's follow-up may fill (see `follow`).
        """
        if self._closing:
            raise StoreError("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(program, future, frozenset(quota_orgs), frozenset(ends)))
        self._drained.clear()
        self._ready.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="zbrain-store-writer")
        # A caller that hangs up cancels the future, not its write: the write
        # still runs with its group, which skips answering a future already done.
        result: T = await future
        return result

    async def close(self, timeout_s: float | None = None) -> None:
        """Write what is queued (within `timeout_s`, for a database that hangs),
        then refuse new writes."""
        self._closing = True
        if self._writer is not None:
            self._ready.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._drained.wait()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        self._fail_queued("the store is closed")

    def _fail_queued(self, why: str) -> None:
        while self._queue:
            future = self._queue.popleft().future
            if not future.done():
                future.set_exception(StoreError(why))

    async def _write_loop(self) -> None:
        try:
            while True:
                self._ready.clear()
                while self._queue:
                    count = min(len(self._queue), self._driver.max_group)
                    await self._commit([self._queue.popleft() for _ in range(count)])
                self._drained.set()
                if self._closing:
                    return
                await self._ready.wait()
        finally:
            # Ended by close() or by a failure: no queued caller is left waiting.
            self._fail_queued(
                "the store is closed" if self._closing else "the store's writer stopped"
            )

    async def _commit(self, writes: list[_Write]) -> None:
        """Run a group of writes in one transaction, then answer their callers."""
        follow_up = None
        if self._follow is not None:
            adding = frozenset().union(*(write.quota_orgs for write in writes))
            ending = frozenset().union(*(write.ends for write in writes))
            follow_up = self._follow(adding, ending) if adding or ending else None
        followed: Any = None
        tries = 1
        try:
            while True:
                try:
                    group = Group()
                    outcomes: list[Outcome]
                    outcomes, followed = await self._driver.run_group(
                        self._group(writes, group, follow_up)
                    )
                    break
                except StoreConflictError as error:
                    if tries == WRITE_TRIES:
                        self._fail(writes, error)
                        return
                    tries += 1
                    log.info("running %d writes again: %s", len(writes), error)
                except Exception as error:
                    self._fail(writes, error)
                    return
                except BaseException:
                    self._fail(writes, StoreError("write canceled"))
                    raise
        finally:
            if follow_up is not None:
                try:
                    follow_up.then(followed)
                except Exception:  # its failure must not stop the writer
                    log.exception("handling a group's follow-up failed")
        again: list[_Write] = []
        try:
            for write, result, failure in outcomes:
                if isinstance(failure, StoreConflictError) and write.tries < WRITE_TRIES:
                    # Even for a caller that hung up: its write still runs.
                    log.info("running a write again: %s", failure)
                    write.tries += 1
                    again.append(write)
                elif write.future.done():
                    continue  # its caller hung up
                elif failure is None:
                    write.future.set_result(result)
                else:
                    write.future.set_exception(failure)
            self._queue.extendleft(reversed(again))
        finally:
            # After the answers: the callers resume before what the events
            # wake (a dispatch pass, followers), all of it on the next turn of
            # the loop and so after this, as before. Whatever happened to the
            # answers, the commit is done: the driver learns of it.
            try:
                self._driver.committed(group)
            except Exception:  # a listener's failure must not stop the writer
                log.exception("handling the events of a commit failed")

    @staticmethod
    def _fail(writes: Sequence[_Write], error: Exception) -> None:
        for write in writes:
            if not write.future.done():
                write.future.set_exception(error)

    def _group(
        self, writes: list[_Write], group: Group, follow_up: FollowUp | None
    ) -> Program[tuple[list[Outcome], Any]]:
        """The program of one group transaction: each write in a savepoint of
        its own (a group of one needs none: its failure fails the transaction),
        the follow-up if any, then the driver's `finish`. Returns the writes'
        outcomes and the follow-up's result (None if it failed).

        Writes that may raise an org's waiting count run last, after the
        driver has locked the counts of all orgs the group changes, so that a
        submission over its quota fails alone against a count no other
        replica can change before this group commits.
        """
        ordered = sorted(writes, key=lambda write: bool(write.quota_orgs))
        quota_orgs = set().union(*(write.quota_orgs for write in writes))
        savepoints = len(writes) > 1
        outcomes: list[Outcome] = []
        if savepoints:
            yield Savepoint()
        for position, write in enumerate(ordered, start=1):
            if write.quota_orgs and group.locked is None:
                group.locked = yield from self._driver.lock_orgs(
                    sorted({*quota_orgs, *group.moved_orgs()})
                )
                if savepoints:  # the locks are the group's, not this write's to undo
                    yield Savepoint(release=True)
            tx = Tx(group)
            try:
                result = yield from write.program(tx)
            except Exception as error:
                if not savepoints:
                    raise
                yield RollbackToSavepoint()
                outcomes.append((write, None, error))
                continue
            group.add(tx)
            if savepoints and position < len(ordered):
                yield Savepoint(release=True)
            outcomes.append((write, result, None))
        followed = None
        if follow_up is not None:
            yield Savepoint(release=savepoints)
            tx = Tx(group)
            try:
                followed = yield from follow_up.program(tx)
            except Exception as error:  # the writes keep what they did
                log.warning("a group's follow-up failed and was undone: %s", error)
                yield RollbackToSavepoint()
                followed = None
            else:
                group.add(tx)
        group.encode(self._codec)
        yield from self._driver.finish(group)
        return outcomes, followed
