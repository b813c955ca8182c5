"""The embedded default store: SQLite through aiosqlite, in WAL mode.

Every query lives in this module. Writes go through one connection and one
writer task (SQLite has a single writer anyway), which commits whatever is
queued together (group commit, see `_transaction`); reads use a second
connection, which WAL lets run beside the writer. `synchronous=FULL`: a job is
on disk before its Submit is answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from zbrain.errors import (
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
    StoreError,
)

from .. import events, lifecycle
from ..auth import Role, Token
from ..ids import new_job_id
from ..lifecycle import Change, RetryPolicy
from ..model import (
    Artifact,
    AttemptOutcome,
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
from .base import EventListener, JobStore

T = TypeVar("T")

MAX_GROUP = 512  # writes committed together at most

# Each entry upgrades the schema by one version (PRAGMA user_version); never
# edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id                TEXT PRIMARY KEY,
        org_id            TEXT NOT NULL,
        cmd               TEXT NOT NULL,        -- JSON array of strings
        input_json        TEXT NOT NULL,
        env               TEXT NOT NULL,        -- JSON object
        timeout_us        INTEGER NOT NULL,
        max_retries       INTEGER NOT NULL,
        priority          INTEGER NOT NULL,
        labels            TEXT NOT NULL,        -- JSON object
        state             TEXT NOT NULL,
        attempt           INTEGER NOT NULL,
        create_time       INTEGER NOT NULL,     -- all times: microseconds since the epoch
        update_time       INTEGER NOT NULL,
        start_time        INTEGER,
        finish_time       INTEGER,
        next_run_time     INTEGER,
        last_error        TEXT NOT NULL,
        output_json       TEXT NOT NULL,
        lease_epoch       INTEGER NOT NULL,
        worker_id         TEXT NOT NULL,
        lease_expire_time INTEGER,
        cancel_requested  INTEGER NOT NULL,
        request_id        TEXT NOT NULL,
        trace_context     TEXT NOT NULL,        -- JSON object
        log_count         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_org ON jobs (org_id, id);
    CREATE INDEX jobs_by_org_state ON jobs (org_id, state, id);
    CREATE INDEX jobs_runnable ON jobs (org_id, priority DESC, id)
        WHERE state IN ('PENDING', 'RETRYING');
    CREATE INDEX jobs_running ON jobs (lease_expire_time) WHERE state = 'RUNNING';
    CREATE INDEX jobs_finished ON jobs (finish_time) WHERE finish_time IS NOT NULL;
    CREATE UNIQUE INDEX jobs_request_id ON jobs (org_id, request_id) WHERE request_id != '';

    CREATE TABLE logs (
        job_id   TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        stream   TEXT NOT NULL,
        attempt  INTEGER NOT NULL,
        time     INTEGER NOT NULL,
        text     TEXT NOT NULL,
        PRIMARY KEY (job_id, sequence)
    ) WITHOUT ROWID;

    CREATE TABLE artifacts (
        job_id     TEXT NOT NULL,
        name       TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        PRIMARY KEY (job_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX artifacts_by_blob ON artifacts (sha256);
    """,
    """
    CREATE TABLE events (
        sequence INTEGER PRIMARY KEY,  -- assigned by the single writer, in commit order
        topic    TEXT NOT NULL,
        org_id   TEXT NOT NULL,
        job_id   TEXT NOT NULL,
        time     INTEGER NOT NULL,
        payload  BLOB NOT NULL         -- a serialized zbrain.v1.Event with its payload only
    );
    CREATE INDEX events_by_org ON events (org_id, sequence);
    CREATE INDEX events_by_time ON events (time);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """,
    """
    CREATE TABLE tokens (
        id          TEXT PRIMARY KEY,
        org_id      TEXT NOT NULL,
        role        TEXT NOT NULL,
        description TEXT NOT NULL,
        secret_hash TEXT NOT NULL,  -- SHA-256 of the secret; the secret is never stored
        create_time INTEGER NOT NULL,
        revoke_time INTEGER
    );
    """,
    """
    ALTER TABLE jobs ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
    """,
)

_JOB_COLUMNS = (
    "id, org_id, cmd, input_json, env, timeout_us, max_retries, priority, labels, state, "
    "attempt, create_time, update_time, start_time, finish_time, next_run_time, last_error, "
    "output_json, lease_epoch, worker_id, lease_expire_time, cancel_requested, request_id, "
    "trace_context"
)
_INSERT_JOB = (
    f"INSERT INTO jobs ({_JOB_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_JOB = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?"
_SELECT_BY_REQUEST_ID = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE org_id = ? AND request_id = ?"
# Compare-and-set: the row is written only if nobody changed it since it was read.
_SAVE_JOB = """
    UPDATE jobs SET state = ?, attempt = ?, update_time = ?, start_time = ?, finish_time = ?,
        next_run_time = ?, last_error = ?, output_json = ?, lease_epoch = ?, worker_id = ?,
        lease_expire_time = ?, cancel_requested = ?
    WHERE id = ? AND state = ? AND lease_epoch = ?
"""
_SELECT_RUNNABLE = f"""
    SELECT {_JOB_COLUMNS} FROM jobs
    WHERE org_id = ? AND state IN ('PENDING', 'RETRYING') AND next_run_time <= ?
    ORDER BY priority DESC, id LIMIT ?
"""
_SELECT_NEXT_RUN_TIME = """
    SELECT min(next_run_time) FROM jobs
    WHERE org_id IN ({orgs}) AND state IN ('PENDING', 'RETRYING')
"""
_SELECT_EXPIRED = f"""
    SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'RUNNING' AND lease_expire_time < ?
"""
_SELECT_OVERDUE = f"""
    SELECT {_JOB_COLUMNS} FROM jobs
    WHERE state = 'RUNNING' AND start_time + timeout_us + ? < ?
"""
_SELECT_LOG_COUNT = "SELECT log_count, log_bytes FROM jobs WHERE id = ?"
_UPDATE_LOG_COUNT = "UPDATE jobs SET log_count = ?, log_bytes = ? WHERE id = ?"
_INSERT_LOG = (
    "INSERT INTO logs (job_id, sequence, stream, attempt, time, text) VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT_LOGS = """
    SELECT sequence, stream, attempt, time, text FROM logs
    WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?
"""
_UPSERT_ARTIFACT = """
    INSERT INTO artifacts (job_id, name, sha256, size_bytes) VALUES (?, ?, ?, ?)
    ON CONFLICT (job_id, name) DO UPDATE SET sha256 = excluded.sha256,
        size_bytes = excluded.size_bytes
"""
_SELECT_ARTIFACTS = (
    "SELECT job_id, name, sha256, size_bytes FROM artifacts WHERE job_id IN ({ids}) ORDER BY name"
)
_SELECT_PURGEABLE = (
    "SELECT id FROM jobs WHERE finish_time < ? AND state IN ('SUCCEEDED', 'FAILED', 'CANCELED')"
)
_DELETE_JOB_LOGS = "DELETE FROM logs WHERE job_id = ?"
_DELETE_JOB_ARTIFACTS = "DELETE FROM artifacts WHERE job_id = ?"
_DELETE_JOB = "DELETE FROM jobs WHERE id = ?"
_SELECT_BLOBS = "SELECT DISTINCT sha256 FROM artifacts"
_COUNT_WAITING = """
    SELECT org_id, count(*) FROM jobs WHERE state IN ('PENDING', 'RETRYING') GROUP BY org_id
"""
_COUNT_UNFINISHED = """
    SELECT org_id, state, count(*) FROM jobs
    WHERE state IN ('PENDING', 'RUNNING', 'RETRYING') GROUP BY org_id, state
"""
_INSERT_EVENT = (
    "INSERT INTO events (sequence, topic, org_id, job_id, time, payload) VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT_EVENTS = """
    SELECT sequence, topic, org_id, job_id, time, payload FROM events
    WHERE sequence > ? AND (? IS NULL OR org_id = ?) AND substr(topic, 1, ?) = ?
    ORDER BY sequence LIMIT ?
"""
_SELECT_LAST_SEQUENCE = "SELECT max(sequence) FROM events"
_SELECT_META = "SELECT value FROM meta WHERE key = ?"
_UPSERT_META = """
    INSERT INTO meta (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""
_SELECT_EVENTS_BEFORE = "SELECT max(sequence) FROM events WHERE time < ?"
_DELETE_EVENTS_THROUGH = "DELETE FROM events WHERE sequence <= ?"
PURGED_THROUGH = "events_purged_through"
_TOKEN_COLUMNS = "id, org_id, role, description, secret_hash, create_time, revoke_time"
_INSERT_TOKEN = f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SELECT_TOKEN = f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?"
_SELECT_TOKENS = (
    f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE ? IS NULL OR org_id = ? ORDER BY create_time"
)
_REVOKE_TOKEN = "UPDATE tokens SET revoke_time = ? WHERE id = ? AND revoke_time IS NULL"
_ANY_TOKEN = "SELECT 1 FROM tokens WHERE revoke_time IS NULL LIMIT 1"


def _token_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Token:
    return Token(row[0], row[1], Role[row[2]], row[3], row[4], row[5], row[6])


def _job_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    return Job(
        id=row[0],
        org_id=row[1],
        cmd=tuple(json.loads(row[2])),
        input_json=row[3],
        env=json.loads(row[4]),
        timeout_us=row[5],
        max_retries=row[6],
        priority=row[7],
        labels=json.loads(row[8]),
        state=JobState[row[9]],
        attempt=row[10],
        create_time_us=row[11],
        update_time_us=row[12],
        start_time_us=row[13],
        finish_time_us=row[14],
        next_run_time_us=row[15],
        last_error=row[16],
        output_json=row[17],
        lease_epoch=row[18],
        worker_id=row[19],
        lease_expire_time_us=row[20],
        cancel_requested=bool(row[21]),
        request_id=row[22],
        trace_context=json.loads(row[23]),
    )


def _new_job_row(job_id: str, job: NewJob, now_us: int) -> tuple[Any, ...]:
    return (
        job_id,
        job.org_id,
        json.dumps(list(job.cmd)),
        job.input_json,
        json.dumps(dict(job.env)),
        job.timeout_us,
        job.max_retries,
        job.priority,
        json.dumps(dict(job.labels)),
        JobState.PENDING.name,
        0,
        now_us,
        now_us,
        None,
        None,
        now_us,
        "",
        "",
        0,
        "",
        None,
        0,
        job.request_id,
        json.dumps(dict(job.trace_context)),
    )


def _save_params(change: Change) -> tuple[Any, ...]:
    job, before = change.after, change.before
    return (
        job.state.name,
        job.attempt,
        job.update_time_us,
        job.start_time_us,
        job.finish_time_us,
        job.next_run_time_us,
        job.last_error,
        job.output_json,
        job.lease_epoch,
        job.worker_id,
        job.lease_expire_time_us,
        int(job.cancel_requested),
        job.id,
        before.state.name,
        before.lease_epoch,
    )


class SqliteJobStore(JobStore):
    """A JobStore in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._queue: collections.deque[
            tuple[Callable[..., Awaitable[Any]], asyncio.Future[Any]]
        ] = collections.deque()
        self._queue_ready = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the writer has emptied the queue
        self._writer_task: asyncio.Task[None] | None = None
        self._listener: EventListener | None = None
        self._pending_events: list[EventRecord] = []  # of the transaction under way
        # Waiting (PENDING or RETRYING) jobs per org, kept exact by the single
        # writer so the quota check costs no count over a long queue; changes of
        # the transaction under way are held apart until it commits.
        self._waiting: collections.Counter[str] = collections.Counter()
        self._waiting_changes: list[tuple[str, int]] = []
        self._last_sequence = 0

    # -- connection management -------------------------------------------------

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the data directory {self.path.parent}: {exc.strerror}"
            ) from exc
        with _translated("open the database"):
            writer = await aiosqlite.connect(self.path, isolation_level=None)
            try:
                await writer.executescript(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
                )
                await self._migrate(writer)
                async with writer.execute(_SELECT_LAST_SEQUENCE) as cursor:
                    row = await cursor.fetchone()
                async with writer.execute(_SELECT_META, (PURGED_THROUGH,)) as cursor:
                    purged = await cursor.fetchone()
                self._last_sequence = max(row[0] or 0 if row else 0, purged[0] if purged else 0)
                async with writer.execute(_COUNT_WAITING) as cursor:
                    self._waiting = collections.Counter({org: n async for org, n in cursor})
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                await reader.execute("PRAGMA busy_timeout = 5000")
            except BaseException:
                await writer.close()
                raise
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        if self._writer_task is not None and not self._drained.is_set():
            await self._drained.wait()  # let queued and running writes finish
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        async with self._write_lock:
            for conn in (self._reader, self._writer):
                if conn is not None:
                    with _translated("close the database"):
                        await conn.close()
            self._writer = self._reader = None

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = row[0] if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database schema is version {version}, newer than this server "
                f"understands ({len(MIGRATIONS)}); upgrade ZBrain"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first, so the script carries its own transaction.
            await db.executescript(
                f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
            )

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError("the store is closed")
        return self._writer

    @property
    def _ro(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("the store is closed")
        return self._reader

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work` atomically and durably; roll it back if it raises.

        Group commit: writes queue up while the writer is busy, and the writer
        runs everything queued in one transaction, each piece inside its own
        savepoint (so one failing piece undoes only itself), with one commit,
        hence one fsync, for all. Every caller is answered only after that
        commit. The writer is a task of its own, so a caller that hangs up
        mid-call cannot leave the connection inside an open transaction.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        self._drained.clear()
        self._queue_ready.set()
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._write_loop(), name="zbrain-sqlite-writer")
        result: T = await asyncio.shield(future)
        return result

    async def _write_loop(self) -> None:
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_GROUP))]
                async with self._write_lock:
                    await self._commit_group(batch)
            self._drained.set()

    async def _commit_group(
        self, batch: list[tuple[Callable[..., Awaitable[Any]], asyncio.Future[Any]]]
    ) -> None:
        savepoints = len(batch) > 1
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        first_sequence = self._last_sequence
        try:
            with _translated("write to the database"):
                db = self._db
                await db.execute("BEGIN IMMEDIATE")
                for work, future in batch:
                    events_mark, sequence_mark = len(self._pending_events), self._last_sequence
                    waiting_mark = len(self._waiting_changes)
                    if savepoints:
                        await db.execute("SAVEPOINT piece")
                    try:
                        result = await work(db)
                    except Exception as raised:
                        error = (
                            StoreError(f"could not write to the database: {raised}")
                            if isinstance(raised, sqlite3.Error)
                            else raised
                        )
                        del self._pending_events[events_mark:]
                        del self._waiting_changes[waiting_mark:]
                        self._last_sequence = sequence_mark
                        if not savepoints:
                            raise error from raised
                        await db.execute("ROLLBACK TO piece")
                        await db.execute("RELEASE piece")
                        outcomes.append((future, None, error))
                        continue
                    if savepoints:
                        await db.execute("RELEASE piece")
                    outcomes.append((future, result, None))
                await db.commit()
        except BaseException as error:
            self._pending_events, self._last_sequence = [], first_sequence
            self._waiting_changes = []
            with contextlib.suppress(sqlite3.Error):
                await db.rollback()
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        error if isinstance(error, Exception) else StoreError("write canceled")
                    )
            if not isinstance(error, Exception):
                raise
            return
        committed, self._pending_events = self._pending_events, []
        for org_id, change in self._waiting_changes:
            self._waiting[org_id] += change
        self._waiting_changes = []
        if committed and self._listener is not None:
            # Still under the write lock: listeners see events in sequence order.
            self._listener(committed)
        for future, result, failure in outcomes:
            if future.done():
                continue
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(result)

    def _check_quota(self, new: list[Job], limit: int) -> None:
        """ResourceExhaustedError if an org would hold more than `limit` waiting jobs."""
        adding = collections.Counter(job.org_id for job in new)
        for org_id, count in adding.items():
            waiting = self._waiting[org_id] + sum(
                change for org, change in self._waiting_changes if org == org_id
            )
            if waiting + count > limit:
                raise ResourceExhaustedError(
                    f"organisation {org_id!r} has {waiting} jobs waiting; the quota "
                    f"(max_pending_per_org) is {limit}"
                )

    async def _record(self, db: aiosqlite.Connection, records: Sequence[EventRecord]) -> None:
        """Write events in the current transaction, numbering them."""
        numbered = [
            replace(record, sequence=self._last_sequence + i)
            for i, record in enumerate(records, start=1)
        ]
        if not numbered:
            return
        self._last_sequence = numbered[-1].sequence
        await db.executemany(
            _INSERT_EVENT,
            [(r.sequence, r.topic, r.org_id, r.job_id, r.time_us, r.payload) for r in numbered],
        )
        self._pending_events += numbered

    async def _save(
        self, db: aiosqlite.Connection, changes: Sequence[Change], *, record: bool = True
    ) -> None:
        """Write decided changes and their events; fail if any row changed since read."""
        if not changes:
            return
        cursor = await db.executemany(_SAVE_JOB, [_save_params(change) for change in changes])
        if cursor.rowcount != len(changes):
            raise FailedPreconditionError("a job changed concurrently; try again")
        for change in changes:
            was, now = change.before.state.is_runnable, change.after.state.is_runnable
            if was != now:
                self._waiting_changes.append((change.after.org_id, 1 if now else -1))
        if record:
            await self._record(db, [events.state_changed(change) for change in changes])

    async def check_health(self) -> None:
        async def probe(db: aiosqlite.Connection) -> None:
            await db.execute("PRAGMA user_version")

        with _translated("read the database"):
            await self._ro.execute("SELECT 1")
        await self._transaction(probe)

    # -- jobs ------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[NewJob], now_us: int, *, pending_limit: int | None = None
    ) -> list[tuple[Job, bool]]:
        async def work(db: aiosqlite.Connection) -> list[tuple[Job, bool]]:
            results: list[tuple[Job, bool]] = []
            rows = []
            in_batch: dict[tuple[str, str], Job] = {}  # a key repeated within the batch
            for new in jobs:
                key = (new.org_id, new.request_id)
                if new.request_id:
                    if key in in_batch:
                        results.append((in_batch[key], True))
                        continue
                    existing = await _fetch_job(db, _SELECT_BY_REQUEST_ID, key)
                    if existing is not None:
                        results.append((await _with_artifacts(db, existing), True))
                        continue
                row = _new_job_row(new_job_id(), new, now_us)
                rows.append(row)
                job = _job_from_row(row)
                in_batch[key] = job
                results.append((job, False))
            created = [job for job, deduplicated in results if not deduplicated]
            if pending_limit is not None:
                self._check_quota(created, pending_limit)
            self._waiting_changes += [(job.org_id, 1) for job in created]
            await db.executemany(_INSERT_JOB, rows)
            await self._record(db, [events.submitted(job) for job in created])
            return results

        return await self._transaction(work)

    async def get_job(self, job_id: str) -> Job:
        with _translated("read the database"):
            job = await _fetch_job(self._ro, _SELECT_JOB, (job_id,))
            if job is None:
                raise NotFoundError(f"job {job_id} not found")
            return await _with_artifacts(self._ro, job)

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        where = ["org_id = ?"]
        params: list[Any] = [query.org_id]
        if query.states:
            where.append(f"state IN ({', '.join('?' * len(query.states))})")
            params += [state.name for state in query.states]
        if query.after_id is not None:
            where.append("id < ?" if query.newest_first else "id > ?")
            params.append(query.after_id)
        order = "DESC" if query.newest_first else "ASC"
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY id {order} LIMIT ?"
        )
        params.append(query.limit)
        with _translated("read the database"):
            async with self._ro.execute(sql, params) as cursor:
                jobs = [_job_from_row(row) async for row in cursor]
            return await _with_artifacts_of_all(self._ro, jobs)

    async def cancel_job(self, job_id: str, now_us: int) -> tuple[Job, CancelOutcome]:
        async def work(db: aiosqlite.Connection) -> tuple[Job, CancelOutcome]:
            job = await _require_job(db, job_id)
            change, outcome = lifecycle.cancel(job, now_us)
            if change is not None:
                await self._save(db, [change])
                job = change.after
            return await _with_artifacts(db, job), outcome

        return await self._transaction(work)

    # -- leases ----------------------------------------------------------------

    async def lease_jobs(
        self,
        worker_id: str,
        org_ids: Sequence[str],
        max_jobs: int,
        now_us: int,
        lease_ttl_us: int,
    ) -> list[Lease]:
        async def work(db: aiosqlite.Connection) -> list[Lease]:
            per_org: list[list[Job]] = []
            for org_id in org_ids:
                async with db.execute(_SELECT_RUNNABLE, (org_id, now_us, max_jobs)) as cursor:
                    per_org.append([_job_from_row(row) async for row in cursor])
            chosen = _round_robin(per_org, max_jobs)
            changes = [
                lifecycle.start_attempt(job, worker_id, now_us, lease_ttl_us) for job in chosen
            ]
            await self._save(db, changes)
            return [
                Lease(c.after, c.after.lease_epoch, c.after.lease_expire_time_us or 0)
                for c in changes
            ]

        return await self._transaction(work)

    async def return_lease(self, job_id: str, lease_epoch: int, now_us: int) -> Job:
        async def work(db: aiosqlite.Connection) -> Job:
            change = lifecycle.return_lease(await _require_job(db, job_id), lease_epoch, now_us)
            await self._save(db, [change])
            return change.after

        return await self._transaction(work)

    async def renew_lease(
        self, job_id: str, lease_epoch: int, now_us: int, lease_ttl_us: int
    ) -> Job:
        async def work(db: aiosqlite.Connection) -> Job:
            job = await _require_job(db, job_id)
            renewed = lifecycle.renew_lease(job, lease_epoch, now_us, lease_ttl_us)
            await self._save(db, [Change(job, renewed, "lease renewed")], record=False)
            return renewed

        return await self._transaction(work)

    async def finish_attempt(
        self,
        job_id: str,
        lease_epoch: int,
        result: AttemptResult,
        now_us: int,
        retry: RetryPolicy,
    ) -> Job:
        async def work(db: aiosqlite.Connection) -> Job:
            job = await _require_job(db, job_id)
            change = lifecycle.finish_attempt(job, lease_epoch, result, now_us, retry)
            await self._save(db, [change])
            return await _with_artifacts(db, change.after)

        return await self._transaction(work)

    async def expire_leases(self, now_us: int, retry: RetryPolicy) -> list[Job]:
        lost = AttemptResult(AttemptOutcome.WORKER_LOST, error="worker lost: lease expired")
        return await self._fail_running(_SELECT_EXPIRED, (now_us,), lost, now_us, retry)

    async def time_out_attempts(self, now_us: int, grace_us: int, retry: RetryPolicy) -> list[Job]:
        overdue = AttemptResult(
            AttemptOutcome.TIMED_OUT, error="timed out (enforced by the server)"
        )
        return await self._fail_running(_SELECT_OVERDUE, (grace_us, now_us), overdue, now_us, retry)

    async def _fail_running(
        self,
        select: str,
        params: tuple[Any, ...],
        result: AttemptResult,
        now_us: int,
        retry: RetryPolicy,
    ) -> list[Job]:
        async def work(db: aiosqlite.Connection) -> list[Job]:
            async with db.execute(select, params) as cursor:
                jobs = [_job_from_row(row) async for row in cursor]
            changes = [
                lifecycle.finish_attempt(job, job.lease_epoch, result, now_us, retry)
                for job in jobs
            ]
            await self._save(db, changes)
            return [change.after for change in changes]

        return await self._transaction(work)

    async def next_run_time(self, org_ids: Sequence[str]) -> int | None:
        sql = _SELECT_NEXT_RUN_TIME.format(orgs=", ".join("?" * len(org_ids)))
        with _translated("read the database"):
            async with self._ro.execute(sql, list(org_ids)) as cursor:
                row = await cursor.fetchone()
        return row[0] if row else None

    # -- logs ------------------------------------------------------------------

    async def append_logs(
        self,
        job_id: str,
        lease_epoch: int,
        records: Sequence[LogRecord],
        *,
        max_bytes: int | None = None,
    ) -> list[LogLine]:
        async def work(db: aiosqlite.Connection) -> list[LogLine]:
            job = await _require_job(db, job_id)
            lifecycle.check_lease(job, lease_epoch)
            async with db.execute(_SELECT_LOG_COUNT, (job_id,)) as cursor:
                row = await cursor.fetchone()
            count, stored_bytes = (row[0], row[1]) if row else (0, 0)
            kept, total_bytes = _within_log_budget(records, stored_bytes, max_bytes)
            first = count + 1
            lines = [
                LogLine(first + i, stream, job.attempt, time_us, text)
                for i, (stream, time_us, text) in enumerate(kept)
            ]
            await db.executemany(
                _INSERT_LOG,
                [
                    (job_id, ln.sequence, ln.stream.name, ln.attempt, ln.time_us, ln.text)
                    for ln in lines
                ],
            )
            await db.execute(_UPDATE_LOG_COUNT, (first - 1 + len(lines), total_bytes, job_id))
            if lines:
                await self._record(db, [events.logged(job, lines)])
            return lines

        return await self._transaction(work)

    async def read_logs(self, job_id: str, after_sequence: int, limit: int) -> list[LogLine]:
        with _translated("read the database"):
            async with self._ro.execute(_SELECT_LOGS, (job_id, after_sequence, limit)) as cursor:
                return [
                    LogLine(row[0], LogStream[row[1]], row[2], row[3], row[4])
                    async for row in cursor
                ]

    # -- artifacts -------------------------------------------------------------

    async def add_artifact(self, job_id: str, lease_epoch: int, artifact: Artifact) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            lifecycle.check_lease(await _require_job(db, job_id), lease_epoch)
            await db.execute(
                _UPSERT_ARTIFACT, (job_id, artifact.name, artifact.sha256, artifact.size_bytes)
            )

        await self._transaction(work)

    async def purge_finished(self, finished_before_us: int) -> int:
        async def work(db: aiosqlite.Connection) -> int:
            async with db.execute(_SELECT_PURGEABLE, (finished_before_us,)) as cursor:
                ids = [(row[0],) async for row in cursor]
            for statement in (_DELETE_JOB_LOGS, _DELETE_JOB_ARTIFACTS, _DELETE_JOB):
                await db.executemany(statement, ids)
            return len(ids)

        return await self._transaction(work)

    # -- events ----------------------------------------------------------------

    def set_event_listener(self, listener: EventListener | None) -> None:
        self._listener = listener

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await self._record(db, records)

        await self._transaction(work)

    async def read_events(
        self, org_id: str | None, topic_prefix: str, after_sequence: int, limit: int
    ) -> list[EventRecord]:
        prefix_length = len(topic_prefix)
        params = (after_sequence, org_id, org_id, prefix_length, topic_prefix, limit)
        with _translated("read the database"):
            async with self._ro.execute(_SELECT_EVENTS, params) as cursor:
                return [EventRecord(*row) async for row in cursor]

    async def events_purged_through(self) -> int:
        with _translated("read the database"):
            async with self._ro.execute(_SELECT_META, (PURGED_THROUGH,)) as cursor:
                row = await cursor.fetchone()
        return row[0] if row else 0

    async def purge_events(self, before_us: int) -> int:
        async def work(db: aiosqlite.Connection) -> int:
            async with db.execute(_SELECT_EVENTS_BEFORE, (before_us,)) as cursor:
                row = await cursor.fetchone()
            through = row[0] if row and row[0] is not None else None
            if through is None:
                return 0
            cursor = await db.execute(_DELETE_EVENTS_THROUGH, (through,))
            await db.execute(_UPSERT_META, (PURGED_THROUGH, through))
            return int(cursor.rowcount)

        return await self._transaction(work)

    async def count_unfinished(self) -> dict[tuple[str, JobState], int]:
        with _translated("read the database"):
            async with self._ro.execute(_COUNT_UNFINISHED) as cursor:
                return {(row[0], JobState[row[1]]): row[2] async for row in cursor}

    # -- tokens ------------------------------------------------------------------

    async def add_token(self, token: Token) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                _INSERT_TOKEN,
                (
                    token.id,
                    token.org_id,
                    token.role.name,
                    token.description,
                    token.secret_hash,
                    token.create_time_us,
                    token.revoke_time_us,
                ),
            )

        await self._transaction(work)

    async def find_token(self, token_id: str) -> Token | None:
        with _translated("read the database"):
            async with self._ro.execute(_SELECT_TOKEN, (token_id,)) as cursor:
                row = await cursor.fetchone()
        return _token_from_row(row) if row is not None else None

    async def list_tokens(self, org_id: str | None) -> list[Token]:
        with _translated("read the database"):
            async with self._ro.execute(_SELECT_TOKENS, (org_id, org_id)) as cursor:
                return [_token_from_row(row) async for row in cursor]

    async def revoke_token(self, token_id: str, now_us: int) -> Token:
        async def work(db: aiosqlite.Connection) -> Token:
            await db.execute(_REVOKE_TOKEN, (now_us, token_id))
            async with db.execute(_SELECT_TOKEN, (token_id,)) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise NotFoundError(f"token {token_id} not found")
            return _token_from_row(row)

        return await self._transaction(work)

    async def has_tokens(self) -> bool:
        with _translated("read the database"):
            async with self._ro.execute(_ANY_TOKEN) as cursor:
                return await cursor.fetchone() is not None

    async def referenced_blobs(self) -> set[str]:
        with _translated("read the database"):
            async with self._ro.execute(_SELECT_BLOBS) as cursor:
                return {row[0] async for row in cursor}


def _round_robin(per_org: list[list[Job]], limit: int) -> list[Job]:
    """Take jobs from each org's queue in turn until limit, so no org starves."""
    chosen: list[Job] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(jobs) for jobs in per_org):
        for jobs in per_org:
            if depth < len(jobs) and len(chosen) < limit:
                chosen.append(jobs[depth])
        depth += 1
    return chosen


async def _with_artifacts_of_all(db: aiosqlite.Connection, jobs: list[Job]) -> list[Job]:
    """The jobs with their artifact lists filled in, in one query."""
    if not jobs:
        return jobs
    sql = _SELECT_ARTIFACTS.format(ids=", ".join("?" * len(jobs)))
    by_job: dict[str, list[Artifact]] = {}
    async with db.execute(sql, [job.id for job in jobs]) as cursor:
        async for row in cursor:
            by_job.setdefault(row[0], []).append(Artifact(row[1], row[2], row[3]))
    return [
        replace(job, artifacts=tuple(by_job[job.id])) if job.id in by_job else job for job in jobs
    ]


async def _with_artifacts(db: aiosqlite.Connection, job: Job) -> Job:
    return (await _with_artifacts_of_all(db, [job]))[0]


LOG_LIMIT_MARK = "[log limit reached: further output of this job is not stored]"


def _within_log_budget(
    records: Sequence[LogRecord], stored: int, limit: int | None
) -> tuple[list[LogRecord], int]:
    """The records that fit under the job's log limit, plus one marker line when
    some did not, and the job's new log byte count. Once marked, the count is
    one past the limit, and nothing more is stored."""
    if limit is not None and stored > limit:
        return [], stored
    kept: list[LogRecord] = []
    for record in records:
        size = len(record[2].encode())
        if limit is not None and stored + size > limit:
            return [*kept, (LogStream.SYSTEM, record[1], LOG_LIMIT_MARK)], limit + 1
        stored += size
        kept.append(record)
    return kept, stored


async def _fetch_job(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...]) -> Job | None:
    async with db.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return _job_from_row(row) if row is not None else None


async def _require_job(db: aiosqlite.Connection, job_id: str) -> Job:
    job = await _fetch_job(db, _SELECT_JOB, (job_id,))
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn driver errors into StoreError so nothing above the store sees sqlite3."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"could not {action}: {exc}") from exc
