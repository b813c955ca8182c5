"""`JobStore`: durable jobs, leases, logs, events, artifact records and tokens.

Every operation is written here once, for every backend: a write is a
program (`store.ops`) that reads what it needs, asks the lifecycle what the
change is, saves it with a compare-and-set on state and lease epoch, and
records its event, all in one transaction that the write engine groups with
others (`store.engine`). The backend's driver only runs the named queries.
No SQL row, driver error or wire message crosses this interface: it speaks
domain objects and raises `zbrain.errors` classes. The conformance suite in
tests/store/ holds every backend to it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zbrain.errors import NotFoundError, StoreConflictError, ZBrainError

from ..core import events, lifecycle
from ..core.ids import first_id_at
from ..core.lifecycle import Change, RetryPolicy
from ..core.limits import artifact_quota_exceeded
from ..core.model import (
    EVENT_OVERHEAD_BYTES,
    LINE_OVERHEAD_BYTES,
    Artifact,
    AttemptResult,
    CancelOutcome,
    EventRecord,
    Job,
    JobQuery,
    JobState,
    Lease,
    LogLine,
    LogRecord,
    LogStream,
    NewJob,
)
from ..core.tokens import Token
from . import graph
from .driver import Driver, EventListener
from .engine import FollowUp, Tx, WriteEngine
from .ops import Execute, ExecuteMany, Fetch, FetchOne, Params, Program
from .orgs import OrgStore, charge, runnable_of_org
from .rows import (
    event_from_row,
    job_from_row,
    job_params,
    log_line_from_row,
    log_params,
    token_from_row,
    token_params,
    with_artifacts,
)
from .rules import (
    ORG_LOG_QUOTA_MARK,
    finish_all,
    leases,
    plan_submission,
    round_robin,
    within_log_budget,
    within_org_log_quota,
)
from .schedules import ScheduleStore
from .templates import TemplateStore
from .workers import WorkerStore

UNBOUNDED_BYTES = 1 << 62  # a page bounded by its count of events only
PURGE_BATCH = 5000
"""Finished jobs deleted per retention write, so a long backlog never holds
one huge transaction."""


@dataclass(eq=False)
class LeaseClaim:
    """Slots of one worker that waiting jobs may fill in the commit of a group
    (`JobStore.lease_in_commit`): `max_jobs` free ones, plus one for each of
    its leases in `ending` that the group's writes end (its results);
    `leases` holds what they got.

    `new_only`: only the orgs the group adds jobs to are looked at (the
    worker had free slots and nothing of its ends here: no older job waits
    for it, or a dispatch pass would have leased it)."""

    worker_id: str
    org_ids: Sequence[str]
    max_jobs: int
    incarnation: str = ""  # the worker process (WorkerHello.incarnation_id)
    leases: list[Lease] = field(default_factory=list)
    labels: Mapping[str, str] = field(default_factory=dict)  # the worker's, for `requires`
    ending: frozenset[tuple[str, int]] = frozenset()  # its leases (job id, epoch) the group may end
    new_only: bool = True


@dataclass(eq=False)
class CommitLeasing:
    """The claims to fill in one group that stores new jobs or records
    results, and what to do once it has committed: `done(claims)` with their
    leases filled, or `done(None)` when nothing was leased (the group or the
    leasing failed)."""

    claims: list[LeaseClaim]
    now_us: int
    lease_ttl_us: int
    done: Callable[[list[LeaseClaim] | None], None]
    parent_outputs_bytes: int = 4 << 20  # as lease_jobs takes it


class JobStore:
    """The store of one server, over the driver of its database."""

    def __init__(self, driver: Driver, codec: events.EventCodec) -> None:
        self._driver = driver
        self._codec = codec
        self._engine = WriteEngine(driver, codec)
        self.templates = TemplateStore(driver, self._engine)
        self.schedules = ScheduleStore(driver, self._engine, self)
        self.orgs = OrgStore(driver, self._engine)
        self.workers = WorkerStore(driver, self._engine)
        self._limit_wakeup_us: int | None = None

    def take_limit_wakeup(self) -> int | None:
        """When leasing may find jobs that a limit held back (a rate's next
        start, a lock another replica held), as found by the lease writes
        since the last call; None when none was."""
        wakeup, self._limit_wakeup_us = self._limit_wakeup_us, None
        return wakeup

    def _wake_at(self, when_us: int | None) -> None:
        if when_us is not None and (
            self._limit_wakeup_us is None or when_us < self._limit_wakeup_us
        ):
            self._limit_wakeup_us = when_us

    @property
    def driver(self) -> Driver:
        """The backend's driver (for diagnostics and tests)."""
        return self._driver

    @property
    def location(self) -> str:
        """Where the store lives, for people to read (never with a password)."""
        return self._driver.location

    async def open(self) -> None:
        """Connect and run pending schema migrations."""
        await self._driver.open()
        await self.orgs.all_set()  # which orgs have settings (see OrgStore)

    async def close(self) -> None:
        """Finish pending writes and release the database."""
        await self._engine.close(self._driver.close_timeout_s)
        await self._driver.close()

    async def check_health(self) -> None:
        """Raise StoreError unless the store can be read and written."""
        await self._driver.check_health()

    def set_event_listener(self, listener: EventListener | None) -> None:
        """Receive every committed transaction's events, in sequence order.

        Every change the store makes (submitted, state changed, logged) is
        recorded as an event in the same transaction as the change itself. The
        listener gets each event's body, decoded when it was read back (from
        another replica's commit).
        """
        if listener is None:
            self._driver.set_listener(None)
            return
        decode = self._codec.decode

        def with_bodies(records: list[EventRecord]) -> None:
            for record in records:
                if record.body is None:
                    record.body = decode(record.payload)
            listener(records)

        self._driver.set_listener(with_bodies)

    # -- jobs ------------------------------------------------------------------------

    async def create_jobs(
        self,
        jobs: Sequence[NewJob],
        now_us: int,
        *,
        pending_limit: int | None = None,
        max_depth: int | None = None,
    ) -> list[tuple[Job, bool]]:
        """Store new jobs atomically (all or none).

        With `pending_limit`, an org may hold at most that many waiting jobs
        afterwards (or its own max_waiting_jobs, when set); otherwise
        ResourceExhaustedError, nothing stored.

        A job whose request_id matches an earlier job of the same org is not
        created again: that earlier job is returned with True beside it.

        Jobs with dependencies are linked to their parents (`graph.plan`):
        InvalidArgumentError when a parent is not a job of the child's org or
        the graph would be deeper than `max_depth` jobs below its roots.
        """

        def program(tx: Tx) -> Program[list[tuple[Job, bool]]]:
            return (yield from self.submit_program(tx, jobs, now_us, pending_limit, max_depth))

        # Declared even without a limit: the group then holds the org counts
        # while inserting, so a request id another replica's group is inserting
        # makes this one wait only in the lock order (see WriteEngine.write).
        return await self._engine.write(program, quota_orgs=[job.org_id for job in jobs])

    def submit_program(
        self,
        tx: Tx,
        jobs: Sequence[NewJob],
        now_us: int,
        pending_limit: int | None,
        max_depth: int | None,
    ) -> Program[list[tuple[Job, bool]]]:
        """The write of `create_jobs`, for writes that submit among other things
        (a schedule's tick). Its caller declares the jobs' orgs as quota_orgs."""
        keys = sorted({(new.org_id, new.request_id) for new in jobs if new.request_id})
        earlier = yield from self._jobs_by_request_ids(keys)
        results = plan_submission(jobs, now_us, earlier)
        edges: list[Params] = []
        if any(new.depends_on for new in jobs):
            parent_ids = graph.stored_parent_ids(jobs, results)
            rows = (yield Fetch("lock_jobs", {"ids": parent_ids})) if parent_ids else []
            parents = {job.id: job for job in map(job_from_row, rows)}
            results, edges = graph.plan(jobs, results, parents, max_depth or sys.maxsize)
            yield from graph.mark_parents(list(parents.values()))
        created = [job for job, deduplicated in results if not deduplicated]
        # Request ids in one order, so that two batches sharing some never deadlock.
        created.sort(key=lambda job: (job.org_id, job.request_id))
        inserted = yield ExecuteMany("insert_job", [job_params(job) for job in created])
        if inserted < len(created):
            if edges:  # the graph was planned on jobs that are not new after all
                raise StoreConflictError("a request id was taken concurrently")
            # Another writer (a replica's group, a moment ago) holds one of
            # these request ids: answer with its job instead.
            held = yield from self._jobs_by_request_ids(
                sorted({(job.org_id, job.request_id) for job in created if job.request_id})
            )
            ours = {job.id for job in created}
            lost = {key for key, job in held.items() if job.id not in ours}
            results = [
                (held[(job.org_id, job.request_id)], True)
                if (job.org_id, job.request_id) in lost
                else (job, deduplicated)
                for job, deduplicated in results
            ]
            created = [job for job, deduplicated in results if not deduplicated]
        linked = [graph.link_params(job) for job in created if graph.is_linked(job)]
        if linked:
            yield ExecuteMany("set_links", linked)
        if edges:
            yield ExecuteMany("insert_edge", edges)
        tx.waiting.update(job.org_id for job in created if job.state.is_waiting)
        if pending_limit is not None:
            orgs = sorted({job.org_id for job in created})
            settings = yield from self.orgs.settings_of(orgs)
            tx.check_quota(
                pending_limit,
                {org: s.max_waiting_jobs for org, s in settings.items() if s.max_waiting_jobs},
            )
        tx.record(events.submitted(created))
        return results

    def _jobs_by_request_ids(
        self, keys: list[tuple[str, str]]
    ) -> Program[dict[tuple[str, str], Job]]:
        if not keys:
            return {}
        rows = yield Fetch(
            "jobs_by_request_ids",
            {"org_ids": [org for org, _ in keys], "request_ids": [rid for _, rid in keys]},
        )
        found = yield from self._attach_artifacts([job_from_row(row) for row in rows])
        return {(job.org_id, job.request_id): job for job in found}

    def _attach_artifacts(self, jobs: list[Job]) -> Program[list[Job]]:
        if not jobs:
            return jobs
        rows = yield Fetch("artifacts_of", {"ids": [job.id for job in jobs]})
        return with_artifacts(jobs, rows)

    def _lock_job(self, job_id: str, query: str = "lock_job") -> Program[Any]:
        """The job's row, locked for the transaction; NotFoundError when unknown."""
        row = yield FetchOne(query, {"id": job_id})
        if row is None:
            raise NotFoundError(f"job {job_id} not found")
        return row

    async def get_job(self, job_id: str) -> Job:
        """One job with its artifacts; NotFoundError when unknown."""
        row = await self._driver.fetch_one("select_job", {"id": job_id})
        if row is None:
            raise NotFoundError(f"job {job_id} not found")
        [job] = await self._read_artifacts([job_from_row(row)])
        return job

    async def job_links(self, job_id: str) -> tuple[list[str], list[str]]:
        """The ids of the jobs waiting (or that waited) for a job, and of those
        rerunning it: up to `graph.CHILDREN_SHOWN` of each, oldest first."""
        params = {"id": job_id, "limit": graph.CHILDREN_SHOWN}
        children = await self._driver.fetch("children_of", params)
        reruns = await self._driver.fetch("reruns_of", params)
        return [row["id"] for row in children], [row["id"] for row in reruns]

    async def _read_artifacts(self, jobs: list[Job]) -> list[Job]:
        if not jobs:
            return jobs
        rows = await self._driver.fetch("artifacts_of", {"ids": [job.id for job in jobs]})
        return with_artifacts(jobs, rows)

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        """Up to query.limit jobs after query.after_id in the query's order
        (of every organisation when query.org_id is None)."""
        where = ["org_id = :org_id"] if query.org_id is not None else ["1 = 1"]
        params: dict[str, Any] = {"limit": query.limit}
        if query.org_id is not None:
            params["org_id"] = query.org_id
        if query.states:
            where.append(self._driver.in_list("state", "states"))
            params["states"] = [state.name for state in query.states]
        if query.after_id is not None:
            where.append("id < :after_id" if query.newest_first else "id > :after_id")
            params["after_id"] = query.after_id
        if query.created_after_us is not None:
            where.append("id >= :min_id")
            params["min_id"] = first_id_at(query.created_after_us)
        if query.created_before_us is not None:
            where.append("id < :max_id")
            params["max_id"] = first_id_at(query.created_before_us)
        for i, (key, value) in enumerate(sorted(query.labels.items())):
            where.append(f"{self._driver.map_value('labels', f'label_key{i}')} = :label_value{i}")
            params[f"label_key{i}"] = key
            params[f"label_value{i}"] = value
        order = "DESC" if query.newest_first else "ASC"
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT :limit"
        rows = await self._driver.fetch_sql(sql, params)
        return await self._read_artifacts([job_from_row(row) for row in rows])

    async def cancel_job(self, job_id: str, now_us: int) -> tuple[Job, CancelOutcome]:
        """Cancel a job as the lifecycle decides, and every job waiting
        downstream of it; return it as stored after."""

        def program(tx: Tx) -> Program[tuple[Job, CancelOutcome]]:
            job, outcome = yield from self.cancel_program(tx, job_id, now_us)
            [job] = yield from self._attach_artifacts([job])
            return job, outcome

        return await self._engine.write(program)

    def cancel_program(
        self, tx: Tx, job_id: str, now_us: int
    ) -> Program[tuple[Job, CancelOutcome]]:
        """The write of `cancel_job`, for writes that cancel among other things
        (a schedule canceling its last tick's job)."""
        job = job_from_row((yield from self._lock_job(job_id)))
        change, outcome = lifecycle.cancel(job, now_us)
        if change is None:
            return job, outcome
        if job.has_children:  # nothing waiting for it runs, whatever its condition
            yield from graph.cancel_descendants(tx, job, now_us)
        yield from tx.save([change])
        return change.after, outcome

    # -- leases ----------------------------------------------------------------------

    async def lease_jobs(
        self,
        worker_id: str,
        org_ids: Sequence[str],
        max_jobs: int,
        now_us: int,
        lease_ttl_us: int,
        *,
        parent_outputs_bytes: int = 4 << 20,
        labels: Mapping[str, str] | None = None,
        incarnation: str = "",
    ) -> list[Lease]:
        """Lease up to max_jobs runnable jobs of the given orgs to a worker
        (to its process `incarnation`, when known).

        Within an org, higher priority first, then submission order; the
        slots are shared round-robin between orgs, starting with the first
        org given, so that callers can rotate it for fairness. Only jobs whose
        `requires` the worker's `labels` meet are leased, and each org's
        settings hold (pauses, running jobs, starts per second, concurrency
        keys: `orgs.runnable_of_org`). A job that depended on others carries
        how they ended and their outputs, up to `parent_outputs_bytes` of
        outputs per lease (`graph.with_parents`).
        """
        # Rows locked but not chosen (another org's turn) are released at commit.
        return await self._engine.write(
            self._lease_program(
                worker_id,
                incarnation,
                org_ids,
                max_jobs,
                now_us,
                lease_ttl_us,
                parent_outputs_bytes,
                labels or {},
            )
        )

    def _lease_program(
        self,
        worker_id: str,
        incarnation: str,
        org_ids: Sequence[str],
        max_jobs: int,
        now_us: int,
        lease_ttl_us: int,
        parent_outputs_bytes: int,
        labels: Mapping[str, str],
    ) -> Callable[[Tx], Program[list[Lease]]]:
        """The write of `lease_jobs`, to run alone or after a group's submits."""

        def program(tx: Tx) -> Program[list[Lease]]:
            settings = yield from self.orgs.settings_of(org_ids)
            turns = []
            for org_id in org_ids:
                turn = yield from runnable_of_org(
                    settings[org_id],
                    labels,
                    max_jobs,
                    now_us,
                    self.orgs.key_turns,
                    skips_locked_rows=self._driver.skips_locked_rows,
                )
                self._wake_at(turn.retry_at_us)
                turns.append(turn)
            chosen = round_robin([turn.jobs for turn in turns], max_jobs)
            picked = {job.id for job in chosen}
            for turn in turns:
                yield from charge(turn, sum(job.id in picked for job in turn.jobs))
            changes = [
                lifecycle.start_attempt(job, worker_id, now_us, lease_ttl_us, incarnation)
                for job in chosen
            ]
            yield from tx.save(changes)
            return (yield from graph.with_parents(leases(changes), parent_outputs_bytes))

        return program

    def lease_in_commit(
        self,
        plan: Callable[[frozenset[str], frozenset[tuple[str, int]]], CommitLeasing | None],
    ) -> None:
        """Lease waiting jobs in the same transaction that stores new jobs or
        records results.

        As each group of writes that may add waiting jobs to `orgs` or end the
        leases `ending` (a worker's results) forms, `plan(orgs, ending)` is
        asked (on the event loop) for the slots to fill; after the group's
        writes, each claim is leased as `lease_jobs` would lease it, and the
        group commits the jobs or results and the leases at once. A claim's
        slots are its free ones plus one per lease of its `ending` that the
        group's writes did end (a result refused as stale frees nothing
        here). An org found with no more runnable jobs for a worker's labels
        is not asked again for the next claims with those labels in that
        group.
        """

        def follow(orgs: frozenset[str], ending: frozenset[tuple[str, int]]) -> FollowUp | None:
            leasing = plan(orgs, ending)
            if leasing is None:
                return None

            def program(tx: Tx) -> Program[list[LeaseClaim]]:
                ended = tx.group_ended()
                exhausted: set[tuple[str, frozenset[tuple[str, str]]]] = set()
                for claim in leasing.claims:
                    claim.leases = []  # a group run again starts afresh
                    slots = claim.max_jobs + len(claim.ending & ended)
                    offered = frozenset(claim.labels.items())
                    wanted = [
                        org
                        for org in claim.org_ids
                        if (org in orgs or not claim.new_only) and (org, offered) not in exhausted
                    ]
                    if not wanted or slots <= 0:
                        continue
                    lease = self._lease_program(
                        claim.worker_id,
                        claim.incarnation,
                        wanted,
                        slots,
                        leasing.now_us,
                        leasing.lease_ttl_us,
                        leasing.parent_outputs_bytes,
                        claim.labels,
                    )
                    claim.leases = yield from lease(tx)
                    if len(claim.leases) < slots:
                        exhausted.update((org, offered) for org in wanted)
                return leasing.claims

            return FollowUp(program, leasing.done)

        self._engine.follow(follow)

    async def leases_of(self, worker_id: str) -> list[tuple[str, int, str]]:
        """The (job id, lease epoch, worker incarnation) of every attempt leased
        to a worker and running."""
        rows = await self._driver.fetch("leases_of", {"worker_id": worker_id})
        return [(row["id"], row["lease_epoch"], row["worker_incarnation"]) for row in rows]

    async def return_lease(self, job_id: str, lease_epoch: int, now_us: int) -> Job:
        """Give back a lease nobody started: the job is PENDING again, its attempt
        not counted; StaleLeaseError when the lease is not live."""

        def program(tx: Tx) -> Program[Job]:
            job = job_from_row((yield from self._lock_job(job_id)))
            change = lifecycle.return_lease(job, lease_epoch, now_us)
            yield from tx.save([change])
            return change.after

        return await self._engine.write(program)

    async def lose_to_restart(
        self, job_id: str, lease_epoch: int, now_us: int, retry: RetryPolicy
    ) -> Job:
        """End a lease whose worker was restarted under the same id as a lost,
        counted attempt (`lifecycle.lose_to_restart`); StaleLeaseError when
        the lease is not live."""

        def program(tx: Tx) -> Program[Job]:
            job = job_from_row((yield from self._lock_job(job_id)))
            [job] = yield from self._attach_artifacts([job])
            change = lifecycle.lose_to_restart(job, lease_epoch, now_us, retry)
            yield from tx.save([change])
            return change.after

        return await self._engine.write(program)

    async def renew_lease(
        self, job_id: str, lease_epoch: int, now_us: int, lease_ttl_us: int
    ) -> Job:
        """Extend a live lease; StaleLeaseError when it is not live."""

        def program(tx: Tx) -> Program[Job]:
            job = job_from_row((yield from self._lock_job(job_id)))
            renewed = lifecycle.renew_lease(job, lease_epoch, now_us, lease_ttl_us)
            yield from tx.save([Change(job, renewed)], record=False)
            return renewed

        return await self._engine.write(program)

    async def finish_attempt(
        self,
        job_id: str,
        lease_epoch: int,
        result: AttemptResult,
        now_us: int,
        retry: RetryPolicy,
    ) -> Job:
        """Record an attempt's outcome; StaleLeaseError when the lease is not live."""
        [outcome] = await self.finish_attempts([(job_id, lease_epoch, result)], now_us, retry)
        if isinstance(outcome, ZBrainError):
            raise outcome
        return outcome

    async def finish_attempts(
        self,
        reports: Sequence[tuple[str, int, AttemptResult]],
        now_us: int,
        retry: RetryPolicy,
    ) -> list[Job | ZBrainError]:
        """Record several outcomes (job id, lease epoch, result) in one write,
        each on its own: the job as finished, or the error that refused that
        report (stale, unknown). A worker reports many outcomes at once under
        load, so they share one read, one update and one insert of events."""

        def program(tx: Tx) -> Program[list[Job | ZBrainError]]:
            ids = sorted({job_id for job_id, _, _ in reports})
            rows = yield Fetch("lock_jobs", {"ids": ids})
            read = yield from self._attach_artifacts([job_from_row(row) for row in rows])
            outcomes, changes = finish_all({job.id: job for job in read}, reports, now_us, retry)
            yield from tx.save(changes)
            return outcomes

        # The slots these results free may take their next jobs in this commit.
        ends = [(job_id, lease_epoch) for job_id, lease_epoch, _ in reports]
        return await self._engine.write(program, ends=ends)

    async def expire_leases(self, now_us: int, retry: RetryPolicy) -> list[Job]:
        """End every attempt whose lease expired before now: its worker is lost."""
        return await self._end_running(
            "lock_expired", {"now": now_us}, lambda job: lifecycle.expire_lease(job, now_us, retry)
        )

    async def time_out_attempts(self, now_us: int, grace_us: int, retry: RetryPolicy) -> list[Job]:
        """End every attempt running longer than its timeout plus grace."""
        return await self._end_running(
            "lock_overdue",
            {"grace": grace_us, "now": now_us},
            lambda job: lifecycle.end_overdue(job, now_us, retry),
        )

    async def _end_running(self, query: str, params: dict[str, Any], end: Any) -> list[Job]:
        def program(tx: Tx) -> Program[list[Job]]:
            rows = yield Fetch(query, params)
            jobs = yield from self._attach_artifacts([job_from_row(row) for row in rows])
            changes = [end(job) for job in jobs]
            yield from tx.save(changes)
            return [change.after for change in changes]

        return await self._engine.write(program)

    async def promote_due(self, now_us: int, limit: int) -> list[Job]:
        """Make up to `limit` delayed jobs whose time has come PENDING, the
        earliest first; the jobs as changed."""

        def program(tx: Tx) -> Program[list[Job]]:
            rows = yield Fetch("lock_due", {"now": now_us, "limit": limit})
            changes = [lifecycle.due(job_from_row(row), now_us) for row in rows]
            yield from tx.save(changes)
            return [change.after for change in changes]

        return await self._engine.write(program)

    async def next_due_time(self) -> int | None:
        """When the earliest delayed (SCHEDULED) job falls due, if any waits."""
        row = await self._driver.fetch_one("next_due_time", {})
        earliest = row["next_run_time"] if row is not None else None
        return int(earliest) if earliest is not None else None

    async def next_run_time(self, org_ids: Sequence[str]) -> int | None:
        """The earliest time a job of these orgs becomes runnable, if any waits."""
        row = await self._driver.fetch_one("next_run_time", {"org_ids": list(org_ids)})
        earliest = row["next_run_time"] if row is not None else None
        return int(earliest) if earliest is not None else None

    # -- logs ------------------------------------------------------------------------

    async def append_logs(
        self,
        job_id: str,
        lease_epoch: int,
        records: Sequence[LogRecord],
        *,
        max_bytes: int | None = None,
        org_max_bytes: Mapping[str, int] | None = None,
    ) -> list[LogLine]:
        """Append lines to a leased job, numbering them; StaleLeaseError if not live.

        With `max_bytes`, lines past the job's log budget are dropped and one
        SYSTEM line says so; after that the job's log takes nothing more.
        With `org_max_bytes[org]`, the job's org's quota on the log bytes all
        its stored jobs hold, lines past it are dropped and one SYSTEM line
        says so; after that the job's log takes nothing more (one more read
        per append, for the orgs with a quota only).
        """

        def program(tx: Tx) -> Program[list[LogLine]]:
            row = yield from self._lock_job(job_id, "lock_job_for_logs")
            job = job_from_row(row)
            lifecycle.check_lease(job, lease_epoch)
            fitting, over_quota = list(records), False
            quota = org_max_bytes.get(job.org_id) if org_max_bytes else None
            if quota:
                if row["log_count"]:
                    last = yield FetchOne(
                        "log_line", {"job_id": job_id, "sequence": row["log_count"]}
                    )
                    if last is not None and log_line_from_row(last).text == ORG_LOG_QUOTA_MARK:
                        return []
                used, _ = yield from tx.usage(job.org_id)
                fitting, over_quota = within_org_log_quota(records, used, quota)
            kept, total_bytes = within_log_budget(fitting, row["log_bytes"], max_bytes)
            if over_quota and len(kept) == len(fitting):  # the job's own mark not added
                kept.append((LogStream.SYSTEM, records[len(fitting)][1], ORG_LOG_QUOTA_MARK))
            first = row["log_count"] + 1
            lines = [
                LogLine(first + i, stream, job.attempt, time_us, text)
                for i, (stream, time_us, text) in enumerate(kept)
            ]
            if not lines:
                return lines
            yield ExecuteMany("insert_log", [log_params(job_id, line) for line in lines])
            yield Execute(
                "set_log_count",
                {"id": job_id, "log_count": first - 1 + len(lines), "log_bytes": total_bytes},
            )
            tx.add_usage(job.org_id, log_bytes=total_bytes - row["log_bytes"])
            tx.record(events.logged(job, lines))
            return lines

        return await self._engine.write(program)

    async def read_logs(
        self,
        job_id: str,
        after_sequence: int,
        limit: int,
        *,
        max_bytes: int = UNBOUNDED_BYTES,
    ) -> list[LogLine]:
        """Lines with a sequence above after_sequence, in order: at most
        `limit` of them and `max_bytes` of them by `line_size`, but at least
        one. An empty list: no more."""
        params = {
            "job_id": job_id,
            "after": after_sequence,
            "limit": limit,
            "max_bytes": max_bytes,
            "overhead": LINE_OVERHEAD_BYTES,
        }
        rows = await self._driver.fetch("read_logs", params)
        return [log_line_from_row(row) for row in rows]

    # -- artifacts -------------------------------------------------------------------

    async def add_artifact(
        self, job_id: str, lease_epoch: int, artifact: Artifact, *, org_max_bytes: int = 0
    ) -> None:
        """Record an uploaded artifact of a leased job (replacing one of the
        same name); ResourceExhaustedError when it would take the org's
        artifacts past `org_max_bytes` (0: no quota)."""

        def program(tx: Tx) -> Program[None]:
            job = job_from_row((yield from self._lock_job(job_id)))
            lifecycle.check_lease(job, lease_epoch)
            row = yield FetchOne("artifact_size", {"job_id": job_id, "name": artifact.name})
            added = artifact.size_bytes - (row["size_bytes"] if row else 0)
            if org_max_bytes and added > 0:
                _, used = yield from tx.usage(job.org_id)
                if used + added > org_max_bytes:
                    raise artifact_quota_exceeded(job.org_id, used, added, org_max_bytes)
            tx.add_usage(job.org_id, artifact_bytes=added)
            yield Execute(
                "upsert_artifact",
                {
                    "job_id": job_id,
                    "name": artifact.name,
                    "sha256": artifact.sha256,
                    "size_bytes": artifact.size_bytes,
                },
            )

        await self._engine.write(program)

    async def referenced_blobs(self) -> set[str]:
        """The sha256 of every blob some stored artifact refers to."""
        return {row["sha256"] for row in await self._driver.fetch("referenced_blobs", {})}

    # -- retention -------------------------------------------------------------------

    async def purge_finished(
        self, finished_before_us: int, own: Mapping[str, int] | None = None
    ) -> int:
        """Delete terminal jobs finished before the time (`own[org]` for an org
        with a retention of its own), with logs and artifacts; at most
        PURGE_BATCH per call: how many."""
        own = own or {}

        def program(tx: Tx) -> Program[int]:
            rows = yield Fetch(
                "purgeable",
                {"before": finished_before_us, "limit": PURGE_BATCH, "own_orgs": sorted(own)},
            )
            ids = [row["id"] for row in rows]
            for org_id, before in sorted(own.items()):
                if len(ids) >= PURGE_BATCH:
                    break
                params = {"org_id": org_id, "before": before, "limit": PURGE_BATCH - len(ids)}
                ids += [row["id"] for row in (yield Fetch("purgeable_of_org", params))]
            if ids:
                for row in (yield Fetch("usage_of_jobs", {"ids": ids})):
                    tx.add_usage(
                        row["org_id"],
                        log_bytes=-int(row["log_bytes"]),
                        artifact_bytes=-int(row["artifact_bytes"]),
                    )
                for statement in (
                    "delete_logs_of",
                    "delete_artifacts_of",
                    "delete_edges_of",
                    "delete_jobs",
                ):
                    yield Execute(statement, {"ids": ids})
            return len(ids)

        return await self._engine.write(program)

    async def runnable_requirements(self) -> list[tuple[str, dict[str, str], int]]:
        """How many runnable jobs require worker labels, by org and those
        labels (jobs that require none are `count_unfinished`'s PENDING and
        RETRYING less these)."""
        rows = await self._driver.fetch("runnable_requirements", {})
        return [(row["org_id"], json.loads(row["requires"]), row["jobs"]) for row in rows]

    async def count_unfinished(self) -> dict[tuple[str, JobState], int]:
        """How many jobs are in each unfinished state, by org and state."""
        rows = await self._driver.fetch("count_unfinished", {})
        return {(row["org_id"], JobState[row["state"]]): row["jobs"] for row in rows}

    # -- events ----------------------------------------------------------------------

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        """Record events that belong to no job change (worker presence)."""

        def program(tx: Tx) -> Program[None]:
            tx.record(records)
            return
            yield  # a program that runs no statement of its own

        await self._engine.write(program)

    async def read_events(
        self,
        org_id: str | None,
        topic_prefix: str,
        after_sequence: int,
        limit: int,
        *,
        max_bytes: int = UNBOUNDED_BYTES,
    ) -> list[EventRecord]:
        """Events after a sequence, of one org (None: all) under a topic prefix,
        in order: at most `limit` of them and `max_bytes` of them by
        `event_size`, but at least one. An empty list: no more."""
        params: dict[str, Any] = {
            "after": after_sequence,
            "prefix": topic_prefix,
            "limit": limit,
            "max_bytes": max_bytes,
            "overhead": EVENT_OVERHEAD_BYTES,
        }
        if org_id is None:
            rows = await self._driver.fetch("read_events", params)
        else:
            rows = await self._driver.fetch("read_org_events", {**params, "org_id": org_id})
        return [event_from_row(row) for row in rows]

    async def last_event_sequence(self) -> int:
        """The sequence of the last event committed (0 if none): where a reader
        that wants only what comes next starts. Never below the retention mark,
        where SQLite, counting the events left, would see none."""
        row = await self._driver.fetch_one("last_sequence", {})
        last = int(row["sequence"]) if row is not None and row["sequence"] is not None else 0
        return max(last, await self.events_purged_through())

    async def events_purged_through(self) -> int:
        """The highest sequence deleted by retention (0 if none): older ones are gone."""
        row = await self._driver.fetch_one("purged_through", {})
        return int(row["value"]) if row is not None else 0

    async def purge_events(self, before_us: int) -> int:
        """Delete events recorded before a time; return how many."""

        def program(tx: Tx) -> Program[int]:
            row = yield FetchOne("events_through", {"before": before_us})
            through = row["sequence"] if row is not None else None
            if through is None:
                return 0
            deleted: int = yield Execute("delete_events_through", {"through": through})
            yield Execute("raise_purged_mark", {"through": through})
            return deleted

        return await self._engine.write(program)

    # -- tokens ----------------------------------------------------------------------

    async def add_token(self, token: Token) -> None:
        """Store a new API token (its secret's hash only)."""

        def program(tx: Tx) -> Program[None]:
            yield Execute("insert_token", token_params(token))

        await self._engine.write(program)

    async def find_token(self, token_id: str) -> Token | None:
        """The token with this id, revoked or not; None if there is none."""
        row = await self._driver.fetch_one("select_token", {"id": token_id})
        return token_from_row(row) if row is not None else None

    async def list_tokens(self, org_id: str | None) -> list[Token]:
        """Tokens of one org (None: all), oldest first."""
        return [
            token_from_row(row)
            for row in await self._driver.fetch("list_tokens", {"org_id": org_id})
        ]

    async def revoke_token(self, token_id: str, now_us: int) -> Token:
        """Revoke a token (a second revoke keeps the first time); NotFoundError if unknown."""

        def program(tx: Tx) -> Program[Token]:
            yield Execute("revoke_token", {"now": now_us, "id": token_id})
            row = yield FetchOne("select_token", {"id": token_id})
            if row is None:
                raise NotFoundError(f"token {token_id} not found")
            return token_from_row(row)

        return await self._engine.write(program)

    async def has_tokens(self) -> bool:
        """Whether any unrevoked token exists (then auth is on by default)."""
        return await self._driver.fetch_one("any_token", {}) is not None
