"""The embedded default store: SQLite in WAL mode.

Every query lives in this module. Writes go through one plain sqlite3
connection owned by one writer thread (SQLite has a single writer anyway): a
writer task collects whatever is queued and hands the whole group to that
thread in one call, where it runs in one transaction (group commit, see
`_transaction`). A thread hop costs about as much as a small statement, so one
hop per group rather than one per statement is what lets the writer keep up.
Reads use a second connection through aiosqlite, which WAL lets run beside
the writer. `synchronous=FULL`: a job is on disk before its Submit is answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from zbrain.errors import (
    FailedPreconditionError,
    NotFoundError,
    StoreError,
    ZBrainError,
)

from .. import events, lifecycle
from ..auth import Token
from ..lifecycle import Change, RetryPolicy
from ..model import (
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
from .base import EventListener, JobStore
from .common import (
    JOB_COLUMNS,
    LEASE_EXPIRED,
    OVERDUE,
    PURGED_THROUGH,
    STATE_COLUMNS,
    TOKEN_COLUMNS,
    finish_all,
    job_from_row,
    job_row,
    leases,
    plan_submission,
    quota_exceeded,
    round_robin,
    save_params,
    token_from_row,
    waiting_changes,
    within_log_budget,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

Work = Callable[[sqlite3.Connection], T]
"""A piece of a group commit: runs in the writer thread, inside the group's transaction."""

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

_INSERT_JOB = (
    f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join('?' * len(JOB_COLUMNS.split(', ')))})"
)
_SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
_SELECT_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({{ids}})"
_SELECT_BY_REQUEST_ID = f"SELECT {JOB_COLUMNS} FROM jobs WHERE org_id = ? AND request_id = ?"
# Compare-and-set: the row is written only if nobody changed it since it was read.
# Compare-and-set of a job: the values of `save_params`.
_SAVE_JOB = f"""
    UPDATE jobs SET {", ".join(f"{column} = ?" for column in STATE_COLUMNS)}
    WHERE id = ? AND state = ? AND lease_epoch = ?
"""
_SELECT_RUNNABLE = f"""
    SELECT {JOB_COLUMNS} FROM jobs
    WHERE org_id = ? AND state IN ('PENDING', 'RETRYING') AND next_run_time <= ?
    ORDER BY priority DESC, id LIMIT ?
"""
_SELECT_NEXT_RUN_TIME = """
    SELECT min(next_run_time) FROM jobs
    WHERE org_id IN ({orgs}) AND state IN ('PENDING', 'RETRYING')
"""
_SELECT_EXPIRED = f"""
    SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'RUNNING' AND lease_expire_time < ?
"""
_SELECT_LEASES_OF = "SELECT id, lease_epoch FROM jobs WHERE state = 'RUNNING' AND worker_id = ?"
_SELECT_OVERDUE = f"""
    SELECT {JOB_COLUMNS} FROM jobs
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
_INSERT_TOKEN = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SELECT_TOKEN = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?"
_SELECT_TOKENS = (
    f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE ? IS NULL OR org_id = ? ORDER BY create_time"
)
_REVOKE_TOKEN = "UPDATE tokens SET revoke_time = ? WHERE id = ? AND revoke_time IS NULL"
_ANY_TOKEN = "SELECT 1 FROM tokens WHERE revoke_time IS NULL LIMIT 1"


class SqliteJobStore(JobStore):
    """A JobStore in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None  # used only in _writer_thread
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._queue: collections.deque[tuple[Work[Any], asyncio.Future[Any]]] = collections.deque()
        self._queue_ready = asyncio.Event()
        self._closing = False  # set by close(): new writes are refused
        self._writer_task: asyncio.Task[None] | None = None
        self._listener: EventListener | None = None
        # The state of the transaction under way (_pending_events, _last_sequence,
        # _waiting_changes, _piece_changes) is changed only by works, which all run in the writer
        # thread, and by the loop's post-commit step in _commit_group, which runs
        # after the thread has returned the group and before the next group is
        # handed to it; so the two never touch it at the same time.
        self._pending_events: list[EventRecord] = []
        # Waiting (PENDING or RETRYING) jobs per org, kept exact by the single
        # writer so the quota check costs no count over a long queue; changes of
        # the transaction under way are held apart until it commits.
        self._waiting: collections.Counter[str] = collections.Counter()
        self._waiting_changes: collections.Counter[str] = collections.Counter()
        self._piece_changes: collections.Counter[str] = collections.Counter()  # of one piece
        self._last_sequence = 0

    @property
    def location(self) -> str:
        return f"sqlite {self.path}"

    # -- connection management -------------------------------------------------

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the data directory {self.path.parent}: {exc.strerror}"
            ) from exc
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zbrain-sqlite-writer")
        writer: sqlite3.Connection | None = None
        try:
            with _translated("open the database"):
                writer, last_sequence, waiting = await loop.run_in_executor(
                    thread, _connect_writer, self.path
                )
                # timeout is SQLite's busy timeout, as the writer's.
                reader = await aiosqlite.connect(self.path, isolation_level=None, timeout=5.0)
        except BaseException:
            if writer is not None:
                await loop.run_in_executor(thread, writer.close)
            thread.shutdown()
            raise
        self._writer, self._writer_thread, self._reader = writer, thread, reader
        self._last_sequence, self._waiting = last_sequence, waiting

    async def close(self) -> None:
        self._closing = True
        if self._writer_task is not None:
            self._queue_ready.set()  # the writer writes what is queued, then ends
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        async with self._write_lock:
            with _translated("close the database"):
                if self._reader is not None:
                    await self._reader.close()
                if self._writer is not None and self._writer_thread is not None:
                    await asyncio.get_running_loop().run_in_executor(
                        self._writer_thread, self._writer.close
                    )
            if self._writer_thread is not None:
                self._writer_thread.shutdown()
            self._writer = self._writer_thread = self._reader = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreError("the store is closed")
        return self._writer

    @property
    def _ro(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("the store is closed")
        return self._reader

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one query on the read connection, in one hop to its thread."""
        with _translated("read the database"):
            return list(await self._ro.execute_fetchall(sql, params))

    async def _transaction(self, work: Work[T]) -> T:
        """Run `work` atomically and durably; roll it back if it raises.

        Group commit: writes queue up while the writer is busy, and the writer
        runs everything queued in one transaction, each piece inside its own
        savepoint (so one failing piece undoes only itself), with one commit,
        hence one fsync, for all. Every caller is answered only after that
        commit. The writer is a task of its own, so a caller that hangs up
        mid-call cannot leave the connection inside an open transaction.
        """
        if self._closing:
            raise StoreError("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        self._queue_ready.set()
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._write_loop(), name="zbrain-sqlite-writer")
        # A caller that hangs up cancels only its own future; its work still runs
        # with the group, which skips answering a future already done.
        result: T = await future
        return result

    async def _write_loop(self) -> None:
        try:
            while True:
                self._queue_ready.clear()
                while self._queue:
                    count = min(len(self._queue), MAX_GROUP)
                    batch = [self._queue.popleft() for _ in range(count)]
                    async with self._write_lock:
                        await self._commit_group(batch)
                if self._closing:
                    return
                if not self._queue:
                    await self._queue_ready.wait()
        finally:
            # Ended by close() or by a failure: no queued caller is left waiting.
            why = "the store is closed" if self._closing else "the store's writer stopped"
            while self._queue:
                _, future = self._queue.popleft()
                if not future.done():
                    future.set_exception(StoreError(why))

    async def _commit_group(self, batch: list[tuple[Work[Any], asyncio.Future[Any]]]) -> None:
        """Run a group in the writer thread in one hop, then answer its callers.

        Answering happens here on the loop, under the write lock, so that
        listeners see events in sequence order.
        """
        canceled = False
        try:
            if self._writer_thread is None:
                raise StoreError("the store is closed")
            group = asyncio.get_running_loop().run_in_executor(
                self._writer_thread, self._run_group, [work for work, _ in batch]
            )
            # The thread finishes the group whatever happens to this task, so a
            # canceled writer still waits for it: its callers then hear what
            # really happened, and the loop never touches the transaction's
            # state while the thread does.
            while not group.done():
                try:
                    await asyncio.wait([group])
                except asyncio.CancelledError:
                    canceled = True
            with _translated("write to the database"):
                outcomes = group.result()
        except BaseException as error:
            reported = error if isinstance(error, Exception) else StoreError("write canceled")
            for _, future in batch:
                if not future.done():
                    future.set_exception(reported)
            if not isinstance(error, Exception):
                raise
        else:
            committed, self._pending_events = self._pending_events, []
            self._waiting.update(self._waiting_changes)
            self._waiting_changes = collections.Counter()
            if committed and self._listener is not None:
                try:
                    self._listener(committed)
                except Exception:  # a listener's failure must not stop the writer
                    log.exception("the event listener failed")
            for (_, future), (result, failure) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if failure is not None:
                    future.set_exception(_as_store_error("write to the database", failure))
                else:
                    future.set_result(result)
        if canceled:
            raise asyncio.CancelledError

    def _run_group(self, works: list[Work[Any]]) -> list[tuple[Any, Exception | None]]:
        """Run works in one transaction, in the writer thread; each one's result or error.

        A failing piece is rolled back to its savepoint, with the events,
        sequence numbers and waiting-count changes it made. A group of one
        needs no savepoint: its failure fails the whole transaction. When the
        transaction fails, everything it did is undone and the error raised.
        """
        db = self._db
        savepoints = len(works) > 1
        first_sequence = self._last_sequence
        outcomes: list[tuple[Any, Exception | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for work in works:
                events_mark, sequence_mark = len(self._pending_events), self._last_sequence
                self._piece_changes = collections.Counter()
                if savepoints:
                    db.execute("SAVEPOINT piece")
                try:
                    result = work(db)
                except Exception as error:
                    del self._pending_events[events_mark:]
                    self._last_sequence = sequence_mark
                    if not savepoints:
                        raise
                    db.execute("ROLLBACK TO piece")
                    db.execute("RELEASE piece")
                    outcomes.append((None, error))
                    continue
                if savepoints:
                    db.execute("RELEASE piece")
                self._waiting_changes.update(self._piece_changes)
                outcomes.append((result, None))
            db.execute("COMMIT")
        except BaseException:
            self._pending_events, self._waiting_changes = [], collections.Counter()
            self._last_sequence = first_sequence
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        return outcomes

    def _check_quota(self, new: list[Job], limit: int) -> None:
        """ResourceExhaustedError if an org would hold more than `limit` waiting jobs."""
        adding = collections.Counter(job.org_id for job in new)
        for org_id, count in adding.items():
            waiting = (
                self._waiting[org_id] + self._waiting_changes[org_id] + self._piece_changes[org_id]
            )
            if waiting + count > limit:
                raise quota_exceeded(org_id, waiting, limit)

    def _record(self, db: sqlite3.Connection, records: Sequence[EventRecord]) -> None:
        """Write events in the current transaction, numbering them."""
        numbered = [
            EventRecord(self._last_sequence + i, r.topic, r.org_id, r.job_id, r.time_us, r.payload)
            for i, r in enumerate(records, start=1)
        ]
        if not numbered:
            return
        self._last_sequence = numbered[-1].sequence
        db.executemany(
            _INSERT_EVENT,
            [(r.sequence, r.topic, r.org_id, r.job_id, r.time_us, r.payload) for r in numbered],
        )
        self._pending_events += numbered

    def _save(
        self, db: sqlite3.Connection, changes: Sequence[Change], *, record: bool = True
    ) -> None:
        """Write decided changes and their events; fail if any row changed since read."""
        if not changes:
            return
        cursor = db.executemany(_SAVE_JOB, [save_params(change) for change in changes])
        if cursor.rowcount != len(changes):
            raise FailedPreconditionError("a job changed concurrently; try again")
        self._piece_changes.update(waiting_changes(changes))
        if record:
            self._record(db, [events.state_changed(change) for change in changes])

    async def check_health(self) -> None:
        def probe(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA user_version")

        await self._read("SELECT 1")
        await self._transaction(probe)

    # -- jobs ------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[NewJob], now_us: int, *, pending_limit: int | None = None
    ) -> list[tuple[Job, bool]]:
        def work(db: sqlite3.Connection) -> list[tuple[Job, bool]]:
            def stored(org_id: str, request_id: str) -> Job | None:
                row = db.execute(_SELECT_BY_REQUEST_ID, (org_id, request_id)).fetchone()
                return None if row is None else _with_artifacts(db, job_from_row(row))

            results = plan_submission(jobs, now_us, stored)
            rows = [job_row(job) for job, deduplicated in results if not deduplicated]
            created = [job for job, deduplicated in results if not deduplicated]
            if pending_limit is not None:
                self._check_quota(created, pending_limit)
            self._piece_changes.update(job.org_id for job in created)
            db.executemany(_INSERT_JOB, rows)
            self._record(db, events.submitted(created))
            return results

        return await self._transaction(work)

    async def get_job(self, job_id: str) -> Job:
        job = _found(job_id, await self._read(_SELECT_JOB, (job_id,)))
        [job] = _attach_artifacts([job], await self._read(*_artifacts_query([job])))
        return job

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
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY id {order} LIMIT ?"
        )
        params.append(query.limit)
        jobs = [job_from_row(row) for row in await self._read(sql, params)]
        if not jobs:
            return jobs
        return _attach_artifacts(jobs, await self._read(*_artifacts_query(jobs)))

    async def cancel_job(self, job_id: str, now_us: int) -> tuple[Job, CancelOutcome]:
        def work(db: sqlite3.Connection) -> tuple[Job, CancelOutcome]:
            job = _require_job(db, job_id)
            change, outcome = lifecycle.cancel(job, now_us)
            if change is not None:
                self._save(db, [change])
                job = change.after
            return _with_artifacts(db, job), outcome

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
        def work(db: sqlite3.Connection) -> list[Lease]:
            per_org = [
                [
                    job_from_row(row)
                    for row in db.execute(_SELECT_RUNNABLE, (org_id, now_us, max_jobs))
                ]
                for org_id in org_ids
            ]
            chosen = round_robin(per_org, max_jobs)
            changes = [
                lifecycle.start_attempt(job, worker_id, now_us, lease_ttl_us) for job in chosen
            ]
            self._save(db, changes)
            return leases(changes)

        return await self._transaction(work)

    async def return_lease(self, job_id: str, lease_epoch: int, now_us: int) -> Job:
        def work(db: sqlite3.Connection) -> Job:
            change = lifecycle.return_lease(_require_job(db, job_id), lease_epoch, now_us)
            self._save(db, [change])
            return change.after

        return await self._transaction(work)

    async def renew_lease(
        self, job_id: str, lease_epoch: int, now_us: int, lease_ttl_us: int
    ) -> Job:
        def work(db: sqlite3.Connection) -> Job:
            job = _require_job(db, job_id)
            renewed = lifecycle.renew_lease(job, lease_epoch, now_us, lease_ttl_us)
            self._save(db, [Change(job, renewed, "lease renewed")], record=False)
            return renewed

        return await self._transaction(work)

    async def finish_attempts(
        self,
        reports: Sequence[tuple[str, int, AttemptResult]],
        now_us: int,
        retry: RetryPolicy,
    ) -> list[Job | ZBrainError]:
        """All in one piece of work: one select (and one of artifacts), one
        update and one insert of events for the whole batch."""

        def work(db: sqlite3.Connection) -> list[Job | ZBrainError]:
            ids = sorted({job_id for job_id, _, _ in reports})
            read = [
                job
                for chunk in _chunks(ids)
                for job in map(
                    job_from_row,
                    db.execute(_SELECT_JOBS.format(ids=", ".join("?" * len(chunk))), chunk),
                )
            ]
            artifacts = [
                row for chunk in _chunks(read) for row in db.execute(*_artifacts_query(chunk))
            ]
            jobs = {job.id: job for job in _attach_artifacts(read, artifacts)}
            outcomes, changes = finish_all(jobs, reports, now_us, retry)
            self._save(db, changes)
            return outcomes

        return await self._transaction(work)

    async def expire_leases(self, now_us: int, retry: RetryPolicy) -> list[Job]:
        return await self._fail_running(_SELECT_EXPIRED, (now_us,), LEASE_EXPIRED, now_us, retry)

    async def time_out_attempts(self, now_us: int, grace_us: int, retry: RetryPolicy) -> list[Job]:
        return await self._fail_running(_SELECT_OVERDUE, (grace_us, now_us), OVERDUE, now_us, retry)

    async def _fail_running(
        self,
        select: str,
        params: tuple[Any, ...],
        result: AttemptResult,
        now_us: int,
        retry: RetryPolicy,
    ) -> list[Job]:
        def work(db: sqlite3.Connection) -> list[Job]:
            changes = [
                lifecycle.finish_attempt(job, job.lease_epoch, result, now_us, retry)
                for job in map(job_from_row, db.execute(select, params).fetchall())
            ]
            self._save(db, changes)
            return [change.after for change in changes]

        return await self._transaction(work)

    async def leases_of(self, worker_id: str) -> list[tuple[str, int]]:
        return [(row[0], row[1]) for row in await self._read(_SELECT_LEASES_OF, (worker_id,))]

    async def next_run_time(self, org_ids: Sequence[str]) -> int | None:
        sql = _SELECT_NEXT_RUN_TIME.format(orgs=", ".join("?" * len(org_ids)))
        [(earliest,)] = await self._read(sql, list(org_ids))
        return int(earliest) if earliest is not None else None

    # -- logs ------------------------------------------------------------------

    async def append_logs(
        self,
        job_id: str,
        lease_epoch: int,
        records: Sequence[LogRecord],
        *,
        max_bytes: int | None = None,
    ) -> list[LogLine]:
        def work(db: sqlite3.Connection) -> list[LogLine]:
            job = _require_job(db, job_id)
            lifecycle.check_lease(job, lease_epoch)
            row = db.execute(_SELECT_LOG_COUNT, (job_id,)).fetchone()
            count, stored_bytes = (row[0], row[1]) if row else (0, 0)
            kept, total_bytes = within_log_budget(records, stored_bytes, max_bytes)
            first = count + 1
            lines = [
                LogLine(first + i, stream, job.attempt, time_us, text)
                for i, (stream, time_us, text) in enumerate(kept)
            ]
            db.executemany(
                _INSERT_LOG,
                [
                    (job_id, ln.sequence, ln.stream.name, ln.attempt, ln.time_us, ln.text)
                    for ln in lines
                ],
            )
            db.execute(_UPDATE_LOG_COUNT, (first - 1 + len(lines), total_bytes, job_id))
            if lines:
                self._record(db, [events.logged(job, lines)])
            return lines

        return await self._transaction(work)

    async def read_logs(self, job_id: str, after_sequence: int, limit: int) -> list[LogLine]:
        return [
            LogLine(row[0], LogStream[row[1]], row[2], row[3], row[4])
            for row in await self._read(_SELECT_LOGS, (job_id, after_sequence, limit))
        ]

    # -- artifacts -------------------------------------------------------------

    async def add_artifact(self, job_id: str, lease_epoch: int, artifact: Artifact) -> None:
        def work(db: sqlite3.Connection) -> None:
            lifecycle.check_lease(_require_job(db, job_id), lease_epoch)
            db.execute(
                _UPSERT_ARTIFACT, (job_id, artifact.name, artifact.sha256, artifact.size_bytes)
            )

        await self._transaction(work)

    async def purge_finished(self, finished_before_us: int) -> int:
        def work(db: sqlite3.Connection) -> int:
            ids = db.execute(_SELECT_PURGEABLE, (finished_before_us,)).fetchall()
            for statement in (_DELETE_JOB_LOGS, _DELETE_JOB_ARTIFACTS, _DELETE_JOB):
                db.executemany(statement, ids)
            return len(ids)

        return await self._transaction(work)

    # -- events ----------------------------------------------------------------

    def set_event_listener(self, listener: EventListener | None) -> None:
        self._listener = listener

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        def work(db: sqlite3.Connection) -> None:
            self._record(db, records)

        await self._transaction(work)

    async def read_events(
        self, org_id: str | None, topic_prefix: str, after_sequence: int, limit: int
    ) -> list[EventRecord]:
        prefix_length = len(topic_prefix)
        params = (after_sequence, org_id, org_id, prefix_length, topic_prefix, limit)
        return [EventRecord(*row) for row in await self._read(_SELECT_EVENTS, params)]

    async def events_purged_through(self) -> int:
        rows = await self._read(_SELECT_META, (PURGED_THROUGH,))
        return int(rows[0][0]) if rows else 0

    async def purge_events(self, before_us: int) -> int:
        def work(db: sqlite3.Connection) -> int:
            (through,) = db.execute(_SELECT_EVENTS_BEFORE, (before_us,)).fetchone()
            if through is None:
                return 0
            deleted = db.execute(_DELETE_EVENTS_THROUGH, (through,)).rowcount
            db.execute(_UPSERT_META, (PURGED_THROUGH, through))
            return int(deleted)

        return await self._transaction(work)

    async def count_unfinished(self) -> dict[tuple[str, JobState], int]:
        return {(row[0], JobState[row[1]]): row[2] for row in await self._read(_COUNT_UNFINISHED)}

    # -- tokens ------------------------------------------------------------------

    async def add_token(self, token: Token) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
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
        rows = await self._read(_SELECT_TOKEN, (token_id,))
        return token_from_row(rows[0]) if rows else None

    async def list_tokens(self, org_id: str | None) -> list[Token]:
        return [token_from_row(row) for row in await self._read(_SELECT_TOKENS, (org_id, org_id))]

    async def revoke_token(self, token_id: str, now_us: int) -> Token:
        def work(db: sqlite3.Connection) -> Token:
            db.execute(_REVOKE_TOKEN, (now_us, token_id))
            row = db.execute(_SELECT_TOKEN, (token_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"token {token_id} not found")
            return token_from_row(row)

        return await self._transaction(work)

    async def has_tokens(self) -> bool:
        return bool(await self._read(_ANY_TOKEN))

    async def referenced_blobs(self) -> set[str]:
        return {row[0] for row in await self._read(_SELECT_BLOBS)}


def _connect_writer(path: Path) -> tuple[sqlite3.Connection, int, collections.Counter[str]]:
    """Open the write connection, migrate the schema, and read what the writer keeps
    in memory: the last event sequence and the waiting jobs per org.

    Runs in the writer thread, the only thread that ever uses the connection
    (sqlite3's same-thread check stays on to prove it).
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
        )
        _migrate(db)
        (last,) = db.execute(_SELECT_LAST_SEQUENCE).fetchone()
        purged = db.execute(_SELECT_META, (PURGED_THROUGH,)).fetchone()
        waiting = collections.Counter[str](dict(db.execute(_COUNT_WAITING).fetchall()))
    except BaseException:
        db.close()
        raise
    return db, max(last or 0, purged[0] if purged else 0), waiting


def _migrate(db: sqlite3.Connection) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the database schema is version {version}, newer than this server "
            f"understands ({len(MIGRATIONS)}); upgrade ZBrain"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first, so the script carries its own transaction.
        db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")


# Reads both connections make are split into their SQL and their row mapping,
# so the writer thread (sqlite3) and the readers (aiosqlite) differ only in the
# one call that runs the query.


def _found(job_id: str, rows: Sequence[Any]) -> Job:
    """The job among the rows of a select by id; NotFoundError when there is none."""
    if not rows:
        raise NotFoundError(f"job {job_id} not found")
    return job_from_row(rows[0])


def _artifacts_query(jobs: Sequence[Job]) -> tuple[str, list[str]]:
    """The select of the artifacts of some jobs, all in one query."""
    return _SELECT_ARTIFACTS.format(ids=", ".join("?" * len(jobs))), [job.id for job in jobs]


def _attach_artifacts(jobs: list[Job], rows: Iterable[Any]) -> list[Job]:
    """The jobs with their artifact lists filled in from the artifacts query's rows."""
    by_job: dict[str, list[Artifact]] = {}
    for row in rows:
        by_job.setdefault(row[0], []).append(Artifact(row[1], row[2], row[3]))
    return [
        replace(job, artifacts=tuple(by_job[job.id])) if job.id in by_job else job for job in jobs
    ]


def _chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """Slices of at most `size` items: a statement may bind only so many values."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _require_job(db: sqlite3.Connection, job_id: str) -> Job:
    """The job as the writer's transaction sees it; NotFoundError when unknown."""
    return _found(job_id, db.execute(_SELECT_JOB, (job_id,)).fetchall())


def _with_artifacts(db: sqlite3.Connection, job: Job) -> Job:
    """The job with its artifacts, read in the writer's transaction."""
    [job] = _attach_artifacts([job], db.execute(*_artifacts_query([job])))
    return job


def _as_store_error(action: str, exc: Exception) -> Exception:
    """A driver error as the store's own StoreError, chained to it; others as they are."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    error = StoreError(f"could not {action}: {exc}")
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn driver errors into StoreError so nothing above the store sees sqlite3."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _as_store_error(action, exc) from exc
