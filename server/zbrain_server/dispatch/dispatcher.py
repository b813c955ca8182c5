"""Dispatch: who gets which job, and everything that follows from a lease.

Consumers are connected worker streams (`WorkerSession`) and unary
AcquireLease calls waiting for work (`LeaseWaiter`). One pump task hands
runnable jobs to consumers with free slots whenever something may have
become runnable (a submit, a freed slot, a retry falling due): a kick
coalesces any number of such events into one pass, so a burst of submits
leases in few transactions. Before that, new jobs go to worker streams with
free slots in the very commit that stores them, and a slot a worker's
result frees takes its next job in the very commit that records the result
(`JobStore.lease_in_commit`); those leases are pushed as soon as it is done:
a job submitted to an idle worker, or a busy worker's next job, costs one
fsync and no dispatch pass. Both worker paths lease
through the store's one lease program; a background ticker reaps expired
leases and enforces timeouts, and is only a safety net for wake-ups, never
the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from zbrain.errors import NotFoundError, StaleLeaseError, ZBrainError
from zbrain.logs import job_fields

from ..config import ServerConfig
from ..core import events, lifecycle, limits
from ..core.lifecycle import RetryPolicy
from ..core.model import (
    AttemptResult,
    CancelOutcome,
    Cause,
    EventRecord,
    Job,
    JobState,
    Lease,
    LogLine,
    LogRecord,
    NewJob,
    now_us,
)
from ..store import JobStore
from ..store.jobs import CommitLeasing, LeaseClaim
from .metrics import Telemetry
from .presence import WorkerDirectory
from .sessions import CancelNotice, Consumer, DrainAcknowledgement, LeaseWaiter, WorkerSession
from .signals import JobSignals

log = logging.getLogger(__name__)

CANCELED_BY_USER = "canceled by user"
# What a worker holding an attempt the server's reaper ended is told.
_REAPED = {
    Cause.LEASE_EXPIRED: lifecycle.LEASE_EXPIRED_ERROR,
    Cause.OVERDUE: lifecycle.OVERDUE_ERROR,
}


class Dispatcher:
    """Leases jobs to workers and applies what workers report."""

    def __init__(
        self,
        store: JobStore,
        config: ServerConfig,
        signals: JobSignals,
        telemetry: Telemetry,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        telemetry.watch_workers(lambda: len(self._sessions))
        self._config = config
        self._signals = signals
        self._retry = RetryPolicy(
            base_us=int(config.retry_base_s * 1e6), cap_us=int(config.retry_cap_s * 1e6)
        )
        self._lease_ttl_us = int(config.lease_ttl_s * 1e6)
        self._consumers: list[Consumer] = []
        self._sessions: dict[str, WorkerSession] = {}
        # Every replica's workers, for ListWorkers and unmatched jobs.
        self.directory = WorkerDirectory(store, self.sessions)
        self._holders: dict[str, WorkerSession] = {}  # job id -> session holding its lease
        # The orgs' own log limits, read again each tick (applied within a
        # second on every replica): a log append is too frequent to read them.
        self._org_log_limits: dict[str, int] = {}
        self._kick = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        store.lease_in_commit(self._lease_in_commit)

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def lease_ttl_us(self) -> int:
        return self._lease_ttl_us

    @property
    def connected_workers(self) -> int:
        return len(self._sessions)

    def has_worker_for(self, org_id: str, requires: Mapping[str, str]) -> bool:
        """Whether a worker stream connected here, or to another replica,
        serves the org and offers the labels a job requires (draining or
        not: it is connected)."""
        return any(
            org_id in session.org_ids and limits.meets(requires, session.labels)
            for session in self._sessions.values()
        ) or self.directory.other_matches(org_id, requires)

    def sessions(self) -> list[WorkerSession]:
        """The worker streams connected to this server, by worker id."""
        return sorted(self._sessions.values(), key=lambda session: session.worker_id)

    async def start(self) -> None:
        await self.refresh_org_settings()
        self._tasks = [
            asyncio.create_task(self._pump_loop(), name="zbrain-dispatch"),
            asyncio.create_task(self._tick_loop(), name="zbrain-reaper"),
        ]
        self.directory.start()
        self.kick()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.directory.stop()

    def kick(self) -> None:
        """Something may have become runnable: run a dispatch pass soon. With
        no worker (or waiting AcquireLease) here, a pass has nothing to do, and
        every consumer's arrival kicks one."""
        if self._consumers:
            self._kick.set()

    # -- client operations -----------------------------------------------------

    async def submit(self, jobs: Sequence[NewJob]) -> list[tuple[Job, bool]]:
        limits = self._config.limits
        created = await self._store.create_jobs(
            jobs,
            now_us(),
            pending_limit=limits.max_pending_per_org,
            max_depth=limits.max_graph_depth - 1,  # edges below the roots
        )
        self.kick()
        self._telemetry.submitted(job for job, deduplicated in created if not deduplicated)
        return created

    async def cancel(self, job_id: str) -> tuple[Job, CancelOutcome]:
        """Cancel a job; the worker holding it, on whichever replica, hears of it
        through the recorded event (see `observe`)."""
        job, outcome = await self._store.cancel_job(job_id, now_us())
        if outcome is CancelOutcome.CANCELED:
            self._telemetry.canceled_waiting(job)
        return job, outcome

    def observe(self, records: Sequence[EventRecord]) -> None:
        """Act on committed events, this replica's and those of every other
        replica sharing the store (the store's event listener calls this).

        Followers of a job are woken; a submitted, retried or returned job
        kicks a dispatch pass, so a job submitted through one replica reaches
        an idle worker connected to another at once; a cancel request reaches
        the worker holding the job here, whichever replica it was asked of.
        """
        runnable = False
        for record in records:
            if not record.job_id:
                continue
            self._signals.changed(record.job_id)
            if not record.topic.endswith("/state"):
                continue
            body = record.body
            if isinstance(body, events.JobSubmitted):
                runnable = runnable or body.state.is_runnable
            elif isinstance(body, events.JobStateChanged):
                # A job of a concurrency key or of an org with limits leaving
                # RUNNING, on any replica, may free room under them for a
                # worker connected here.
                freed = body.from_state is JobState.RUNNING is not body.to_state
                limited = freed and (
                    bool(body.concurrency_key) or self._store.orgs.has_settings(record.org_id)
                )
                runnable = runnable or body.to_state.is_runnable or limited
                if body.cause is Cause.CANCEL_REQUESTED:
                    self._tell_holder(record.job_id, body.lease_epoch, CANCELED_BY_USER)
                elif body.to_state is not JobState.RUNNING:
                    self._lease_ended(record.job_id, body.lease_epoch, body.cause)
        if runnable:
            self.kick()

    # -- worker operations -----------------------------------------------------

    async def acquire(
        self, worker_id: str, org_ids: Sequence[str], max_jobs: int, wait_s: float
    ) -> list[Lease]:
        """Lease up to max_jobs, waiting up to wait_s for jobs to become runnable."""
        if wait_s <= 0:
            leases = await self._lease(worker_id, org_ids, max_jobs)
            self._telemetry.leased(leases)
            return leases
        waiter = LeaseWaiter(worker_id, tuple(org_ids), max_jobs)
        future: asyncio.Future[list[Lease]] = asyncio.get_running_loop().create_future()
        waiter.future = future
        self._consumers.append(waiter)
        self.kick()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await asyncio.shield(future)
            waiter.gave_up = True
            if waiter.leasing:  # a dispatch pass is leasing for us right now: take its result
                return await future
            return future.result() if future.done() else []
        except asyncio.CancelledError:
            # The caller hung up: leases still on their way go back to the queue.
            waiter.gave_up = True
            future.add_done_callback(self._give_back_later)
            raise
        finally:
            waiter.capacity = 0  # a pass that still holds it in its snapshot skips it
            self._consumers.remove(waiter)

    async def _lease(
        self,
        worker_id: str,
        org_ids: Sequence[str],
        max_jobs: int,
        labels: Mapping[str, str] | None = None,
        incarnation: str = "",
    ) -> list[Lease]:
        return await self._store.lease_jobs(
            worker_id,
            org_ids,
            max_jobs,
            now_us(),
            self._lease_ttl_us,
            parent_outputs_bytes=self._config.limits.max_parent_outputs_bytes,
            labels=labels,
            incarnation=incarnation,
        )

    def _give_back_later(self, future: asyncio.Future[list[Lease]]) -> None:
        if not future.cancelled() and future.result():
            asyncio.get_running_loop().create_task(self._give_back(future.result()))

    async def renew(self, job_id: str, lease_epoch: int) -> Job:
        try:
            job = await self._store.renew_lease(job_id, lease_epoch, now_us(), self._lease_ttl_us)
        except StaleLeaseError:
            self._lease_ended(job_id, lease_epoch)
            raise
        if job.cancel_requested:
            # Repeated on every heartbeat until the attempt ends: a notice the
            # worker missed (it was reconnecting, say) is never lost for good.
            self._tell_holder(job_id, lease_epoch, CANCELED_BY_USER)
        return job

    async def append_logs(
        self, job_id: str, lease_epoch: int, records: Sequence[LogRecord]
    ) -> list[LogLine]:
        try:
            lines = await self._store.append_logs(
                job_id,
                lease_epoch,
                records,
                max_bytes=self._config.limits.max_log_bytes_per_job,
                org_max_bytes=self._org_log_limits,
            )
        except StaleLeaseError:
            self._lease_ended(job_id, lease_epoch)
            raise
        if lines:
            self._telemetry.logged(lines)
        return lines

    async def complete(self, job_id: str, lease_epoch: int, result: AttemptResult) -> Job:
        [outcome] = await self.complete_all([(job_id, lease_epoch, result)])
        if isinstance(outcome, ZBrainError):
            raise outcome
        return outcome

    async def complete_all(
        self, reports: Sequence[tuple[str, int, AttemptResult]]
    ) -> list[Job | ZBrainError]:
        """Record outcomes (job id, lease epoch, result) in one store call; each
        comes back as the finished job or the error that refused it."""
        outcomes = await self._store.finish_attempts(reports, now_us(), self._retry)
        for (job_id, lease_epoch, _), outcome in zip(reports, outcomes, strict=True):
            if isinstance(outcome, Job):
                self._finished(outcome)
                self._lease_ended(job_id, lease_epoch)
            elif isinstance(outcome, StaleLeaseError):
                self._lease_ended(job_id, lease_epoch)
            # Any other refusal (a passing store error, say) leaves the lease
            # held: a CompleteLease caller may send the result again under it;
            # a streamed result is rejected, and the lease expires and retries.
        return outcomes

    # -- worker sessions -------------------------------------------------------

    async def connect(
        self, session: WorkerSession, held: Sequence[tuple[str, int]] = ()
    ) -> list[tuple[str, int, str]]:
        """Register a worker stream; a reconnect with the same id replaces the old one.

        `held` are leases the worker kept running through a lost connection,
        to this server or to another replica: a lease is the job's, not the
        connection's. Each one still live, held by this worker and of its
        orgs is adopted (and renewed); the others are returned with the
        reason, for the worker to stop those attempts. A live lease of this
        worker id that it does not claim is settled at once rather than left
        to wait out its TTL: leased to this very process (same incarnation),
        it never reached it (the server died or the stream broke with the
        lease on its way) and goes back to the queue, its attempt not
        counted; leased to an earlier process under the same id, that
        process may have started it before it died, so the attempt ends as
        lost and counts (`Cause.WORKER_RESTARTED`), and a retry follows as
        the job's policy allows.
        """
        claimed = {job_id for job_id, _ in held}
        unclaimed = [
            lease
            for lease in await self._store.leases_of(session.worker_id)
            if lease[0] not in claimed
        ]
        await self._return_leases(
            [(job_id, epoch) for job_id, epoch, to in unclaimed if to == session.incarnation]
        )
        now = now_us()
        for job in await self._end_leases(
            [(job_id, epoch) for job_id, epoch, to in unclaimed if to != session.incarnation],
            lambda job_id, epoch: self._store.lose_to_restart(job_id, epoch, now, self._retry),
        ):
            self._finished(job)

        async def adopt(job_id: str, epoch: int) -> Job:
            job = await self._store.renew_lease(job_id, epoch, now_us(), self._lease_ttl_us)
            if job.worker_id != session.worker_id or job.org_id not in session.org_ids:
                raise StaleLeaseError(f"lease {epoch} of job {job_id} is not this worker's")
            return job

        # All at once, so that the renewals share the store's group commits.
        outcomes = await asyncio.gather(*(adopt(*lease) for lease in held), return_exceptions=True)
        adopted: list[Job] = []
        rejected = []
        for (job_id, epoch), outcome in zip(held, outcomes, strict=True):
            if isinstance(outcome, StaleLeaseError | NotFoundError):
                rejected.append((job_id, epoch, str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                adopted.append(outcome)
        # Nothing is awaited from here until the session is registered, so a
        # store error above leaves no half-registered session behind.
        old = self._sessions.get(session.worker_id)
        if old is not None:  # its own handler ends it and calls disconnect()
            old.closed = True
            old.outbox.put_nowait(None)
        for job in adopted:
            session.hold(job.id, job.lease_epoch, job.org_id)
            self._holders[job.id] = session
            if job.cancel_requested:  # asked while the worker was away
                self._tell_holder(job.id, job.lease_epoch, CANCELED_BY_USER)
        self._sessions[session.worker_id] = session
        self._consumers.append(session)
        self.directory.changed()
        self.kick()
        await self._record_presence(session, connected=True)
        return rejected

    async def disconnect(self, session: WorkerSession) -> None:
        """Forget a worker stream. Its leases run on until their TTL, so that a
        worker which reconnects in time, here or to another replica, keeps its
        attempts; a worker that is gone for good loses them to the reaper."""
        session.closed = True
        if self._sessions.get(session.worker_id) is session:
            del self._sessions[session.worker_id]
        if session in self._consumers:
            self._consumers.remove(session)
        for job_id in session.active:
            if self._holders.get(job_id) is session:
                del self._holders[job_id]
        self.directory.changed()
        self.kick()
        await self._record_presence(session, connected=False)

    async def _record_presence(self, session: WorkerSession, *, connected: bool) -> None:
        """Record a worker coming or going: for watchers only, so a store error
        here is logged and never costs the worker its connection."""
        now = now_us()
        try:
            await self._store.record_events(
                [
                    events.worker_presence(session.worker_id, org, connected, now)
                    for org in session.org_ids
                ]
            )
        except ZBrainError as error:
            log.warning("could not record worker %s's presence: %s", session.worker_id, error)

    def drain(self, session: WorkerSession) -> None:
        """Send a worker no more leases; acknowledge once none can follow."""
        session.draining = True
        session.outbox.put_nowait(DrainAcknowledgement())

    def _tell_holder(self, job_id: str, lease_epoch: int, reason: str) -> None:
        session = self._holders.get(job_id)
        held = session is not None and session.active.get(job_id) == lease_epoch
        if held and session is not None and not session.closed:
            session.outbox.put_nowait(CancelNotice(job_id, lease_epoch, reason))

    def _lease_ended(self, job_id: str, lease_epoch: int, cause: Cause = Cause.UNSPECIFIED) -> None:
        """An attempt held here ended: by its worker's report, or by a reaper, here
        or on another replica. A reaped attempt is stopped, and a worker whose
        heartbeats stopped is sent nothing more until it is heard from."""
        session = self._holders.get(job_id)
        if session is None or session.active.get(job_id) != lease_epoch:
            return
        if cause in (Cause.LEASE_EXPIRED, Cause.OVERDUE):
            self._tell_holder(job_id, lease_epoch, _REAPED[cause])
            session.silent = session.silent or cause is Cause.LEASE_EXPIRED
        session.release(job_id)
        del self._holders[job_id]
        self.kick()

    def _finished(self, job: Job, *, lease_expired: bool = False) -> None:
        self._telemetry.attempt_ended(job, lease_expired=lease_expired)
        level = logging.INFO if job.state is not JobState.SUCCEEDED else logging.DEBUG
        if log.isEnabledFor(level):  # the fields cost more than the call: once per job
            log.log(
                level,
                "job %s after attempt %d%s",
                job.state.name.lower(),
                job.attempt,
                f": {job.last_error}" if job.last_error and level == logging.INFO else "",
                extra=job_fields(job.id, job.org_id, job.worker_id, job.trace_context),
            )
        if job.state is JobState.RETRYING:
            self.kick()  # the pass schedules a wake-up for its next_run_time

    # -- leasing in the commit that stores new jobs or results ------------------

    def _lease_in_commit(
        self, orgs: frozenset[str], ending: frozenset[tuple[str, int]]
    ) -> CommitLeasing | None:
        """Claim slots of worker streams for a group about to commit: the free
        slots of those serving `orgs` (new jobs), and the slots of those whose
        leases in `ending` the group may end (their results), which the commit
        fills if it does end them. The free slots stay reserved (no pass
        leases them too) until `_leased_in_commit` hands out what the commit
        leased; so are the slots of the ending leases, which may be released
        (their results answered, or their events observed) meanwhile. A pass
        that finds them reserved skips them, so a commit that leaves them free
        kicks another pass if one did. A worker serving an org with settings
        gets its freed slots from the pass, as before."""
        ending_of: dict[str, set[tuple[str, int]]] = {}
        for job_id, lease_epoch in ending:
            holder = self._holders.get(job_id)
            if holder is not None and holder.active.get(job_id) == lease_epoch:
                ending_of.setdefault(holder.worker_id, set()).add((job_id, lease_epoch))
        sessions = []
        claims = []
        now = now_us()
        for consumer in self._consumers:
            if not isinstance(consumer, WorkerSession) or consumer.closed:
                continue
            consumer.check_heard(now, self._lease_ttl_us)
            # The room an org with settings (a running limit, a key, a pause)
            # frees is shared out by the pass, consumers in turn: leased here,
            # it would go back to the worker that freed it every time.
            refills = not (
                consumer.silent
                or consumer.draining
                or any(self._store.orgs.has_settings(org) for org in consumer.org_ids)
            )
            may_end = ending_of.get(consumer.worker_id, set()) if refills else set()
            # Below zero while a slot filled by a commit still holds the lease
            # whose result freed it (released once that result is answered),
            # or while an ending lease is both held and reserved.
            free = max(consumer.free_slots, 0)
            if not may_end and (free == 0 or orgs.isdisjoint(consumer.org_ids)):
                continue
            sessions.append(consumer)
            claims.append(
                LeaseClaim(
                    consumer.worker_id,
                    consumer.orgs_in_turn(),
                    free,
                    consumer.incarnation,
                    labels=consumer.labels,
                    ending=frozenset(may_end),
                    new_only=not may_end,
                )
            )
            # The slots of ending leases are reserved too: on PostgreSQL the
            # commit's events may release those leases (`observe`) before
            # `done` delivers what replaced them.
            consumer.reserved += free + len(may_end)
        if not sessions:
            return None

        def done(leased: list[LeaseClaim] | None) -> None:
            # The store commits one group at a time, so no other claim holds
            # these slots now: whatever pass skipped them skipped this one's.
            passed_over = [session for session in sessions if session.passed_over]
            for session, claim in zip(sessions, claims, strict=True):
                session.reserved -= claim.max_jobs + len(claim.ending)
                session.passed_over = False
            if leased is not None:
                self._leased_in_commit(sessions, leased)
            # A pass that ran meanwhile (kicked by a job another replica
            # submitted, say) skipped these slots as reserved; any left free
            # need a pass of their own, or that job waits for the next tick.
            if any(session.free_slots > 0 for session in passed_over):
                self.kick()

        return CommitLeasing(
            claims,
            now_us(),
            self._lease_ttl_us,
            done,
            parent_outputs_bytes=self._config.limits.max_parent_outputs_bytes,
        )

    def _leased_in_commit(self, sessions: list[WorkerSession], claims: list[LeaseClaim]) -> None:
        """Push what a commit leased; a worker that left or began draining
        meanwhile gives its leases back, as after a dispatch pass."""
        for session, claim in zip(sessions, claims, strict=True):
            if not claim.leases:
                continue
            self._telemetry.leased(claim.leases)
            if session.closed or session.draining:
                asyncio.get_running_loop().create_task(self._give_back(claim.leases))
                continue
            for lease in claim.leases:
                self._holders[lease.job.id] = session
            session.deliver(claim.leases)

    # -- the dispatch pass -----------------------------------------------------

    async def _pump_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self._pump()
            except ZBrainError as error:
                log.warning(
                    "dispatch pass failed: %s; retrying in %.1fs",
                    error,
                    self._config.poll_interval_s,
                )
                await asyncio.sleep(self._config.poll_interval_s)
                self.kick()
            except Exception:
                log.exception(
                    "dispatch pass failed; retrying in %.1fs", self._config.poll_interval_s
                )
                await asyncio.sleep(self._config.poll_interval_s)
                self.kick()

    async def _pump(self) -> None:
        # (org, labels offered) found with nothing runnable in this pass: a
        # worker without the labels a job requires finds nothing, and must not
        # hide the job from one that offers them.
        exhausted: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        progress = True
        while progress:
            progress = False
            # Rotate so that the same consumer is not always served first.
            if self._consumers:
                self._consumers.append(self._consumers.pop(0))
            for consumer in list(self._consumers):
                if consumer not in self._consumers:
                    continue  # it left while this pass awaited the store
                if isinstance(consumer, WorkerSession):
                    consumer.check_heard(now_us(), self._lease_ttl_us)
                labels = consumer.labels if isinstance(consumer, WorkerSession) else {}
                offered = frozenset(labels.items())
                orgs = [org for org in consumer.orgs_in_turn() if (org, offered) not in exhausted]
                wanted = consumer.free_slots
                if wanted <= 0 < consumer.reserved and orgs:
                    consumer.passed_over = True  # the commit reserving them kicks again
                if wanted <= 0 or not orgs:
                    continue
                if isinstance(consumer, LeaseWaiter):
                    consumer.leasing = True
                # Reserved while the lease write waits for its group, so that
                # a group leasing in its commit does not claim the same slots.
                consumer.reserved += wanted
                try:
                    leases = await self._lease(
                        consumer.worker_id, orgs, wanted, labels, consumer.incarnation
                    )
                finally:
                    consumer.reserved -= wanted
                    if isinstance(consumer, LeaseWaiter):
                        consumer.leasing = False
                self._telemetry.leased(leases)
                if len(leases) < wanted:
                    exhausted.update((org, offered) for org in orgs)
                if not leases:
                    if isinstance(consumer, LeaseWaiter) and consumer.gave_up:
                        consumer.deliver([])
                    continue
                progress = True
                if isinstance(consumer, WorkerSession):
                    if consumer.closed or consumer.draining:
                        await self._give_back(leases)
                        continue
                    for lease in leases:
                        self._holders[lease.job.id] = consumer
                consumer.deliver(leases)
        await self._schedule_wakeup()

    async def give_back(self, leases: list[Lease]) -> None:
        """Return leases their worker will never receive (they did not fit in
        its answer): the jobs are runnable again at once, no attempt spent."""
        await self._give_back(leases)

    async def _give_back(self, leases: list[Lease]) -> None:
        """A worker left or began draining while jobs were leased to it: return them."""
        await self._return_leases([(lease.job.id, lease.lease_epoch) for lease in leases])
        self.kick()

    async def _return_leases(self, leases: Sequence[tuple[str, int]]) -> None:
        """Return leases nobody started (`JobStore.return_lease`)."""
        now = now_us()
        await self._end_leases(
            leases, lambda job_id, epoch: self._store.return_lease(job_id, epoch, now)
        )

    @staticmethod
    async def _end_leases(
        leases: Sequence[tuple[str, int]], end: Callable[[str, int], Awaitable[Job]]
    ) -> list[Job]:
        """End leases (job id, epoch) with `end`, all at once (sharing group
        commits); the jobs as ended. One that ended meanwhile is left as it is."""
        outcomes = await asyncio.gather(
            *(end(job_id, epoch) for job_id, epoch in leases), return_exceptions=True
        )
        ended = []
        for outcome in outcomes:
            if isinstance(outcome, Job):
                ended.append(outcome)
            elif not isinstance(outcome, StaleLeaseError | NotFoundError):
                raise outcome
        return ended

    async def _schedule_wakeup(self) -> None:
        """Wake the pump when the earliest waiting retry falls due, or when a
        limit that held jobs back may let one go (a rate's next start)."""
        limit_us = self._store.take_limit_wakeup()
        idle_orgs = sorted({org for c in self._consumers if c.free_slots > 0 for org in c.org_ids})
        if not idle_orgs:
            return
        due_us = await self._store.next_run_time(idle_orgs)
        now = now_us()
        if limit_us is not None:
            # Asked for in the lease (20 ms after it began, say) and already
            # past on a busy machine: the look again is due at once.
            limit_us = max(limit_us, now + 1)
        # A due time passed means runnable now but not leased (raced a submit,
        # or held by a limit): the next kick, or the limit's wake-up, takes it.
        wakeups = [when for when in (due_us, limit_us) if when is not None and when > now]
        if not wakeups:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later((min(wakeups) - now) / 1e6, self.kick)

    # -- background duties ------------------------------------------------------

    async def refresh_org_settings(self) -> None:
        """Read every org's settings again (each tick, and after a change here)."""
        stored = await self._store.orgs.all_set()
        self._org_log_limits = {s.org_id: s.max_log_bytes for s in stored if s.max_log_bytes}

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.poll_interval_s)
            try:
                await self.refresh_org_settings()
                await self.reap()
            except ZBrainError as error:  # the store is down, say: health reports it
                log.warning("reaping leases failed: %s; trying again next tick", error)
            except Exception:
                log.exception("reaping leases failed; trying again next tick")
            self.kick()

    async def reap(self) -> list[Job]:
        """Fail attempts whose lease expired or that overran their timeout."""
        now = now_us()
        grace_us = int(self._config.timeout_grace_s * 1e6)
        expired = await self._store.expire_leases(now, self._retry)
        overdue = await self._store.time_out_attempts(now, grace_us, self._retry)
        for job in expired:
            self._finished(job, lease_expired=True)
        for job in overdue:
            self._finished(job)
        return [*expired, *overdue]
