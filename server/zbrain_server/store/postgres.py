"""The shared store: PostgreSQL through asyncpg, for several server replicas at once.

Every query of this backend lives in this module; what a row means, the log
budget and the quota rule come from `common`, shared with SQLite. Unlike
SQLite, where one process owns the file and one writer task serialises all
writes, here several replicas write at once, so the database itself must keep
them apart:

- Writes are grouped (group commit, see `_transaction`): one writer task per
  store runs whatever writes are queued in one READ COMMITTED transaction on
  a pooled connection, each in a savepoint of its own, so the concurrent
  writes of a replica share one commit and one turn at the counter row below.
- A write that decides on a job first reads it `FOR UPDATE`, so writers of
  one job (on any replica) take turns, and still saves with the same
  compare-and-set on state and lease epoch as SQLite. Leasing and the reaper
  select `FOR UPDATE SKIP LOCKED`: replicas leasing from one queue take
  different jobs instead of waiting for (or double-leasing) each other's.
- The waiting-jobs quota is a counter row per org (`org_waiting`), changed in
  the transaction of every change that makes a job runnable or not, so a
  submit checks one row instead of counting the queue.
- Events are numbered last, just before COMMIT, by incrementing one counter
  row. Its row lock is held until commit, so sequence order is commit order
  across replicas: a reader that saw sequence N can never later see a smaller
  one appear, which is what lets StreamEvents resume from a sequence. The
  price is that event-writing transactions commit one at a time, so the
  counter and the org rows are updated in one statement (`_FINISH`), right
  before COMMIT, to hold their locks as briefly as possible, and each
  replica's writes take that turn together. (A group that submits locks its
  org rows earlier, for its quota checks: see `_run_group`.)
- Locks are taken in one order: job rows (as writes come), then org rows
  (sorted, all in one statement), then the counter row. Replicas' groups can
  still deadlock over job rows two of them both want; PostgreSQL then breaks
  the cycle by failing one statement, and the write it belonged to runs
  again (up to `WRITE_TRIES` times) instead of failing.
- The listener gets events by reading them back, the same way for events of
  this replica and of others: a dedicated connection LISTENs on a channel the
  numbering statement NOTIFYs, a notification wakes one delivery task, and
  the task reads every event after the last one delivered. It also polls
  every second and reconnects when its connection drops, so a lost
  notification delays an event but never loses it. (So the listener hears
  of a write a few milliseconds after it returned, not before as with SQLite.)

The URL is a libpq-style `postgresql://user@host:port/db`, plus one parameter
of ours, `schema` (default `zbrain`): all tables live in that schema, so one
database can hold several independent ZBrain installations (the tests use a
schema each). Driver errors become StoreError here; nothing above the store
sees asyncpg.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from zbrain.errors import FailedPreconditionError, NotFoundError, StoreError, ZBrainError

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

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "zbrain"
POOL_SIZE = 8
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 1.0  # the delivery task reads events at least this often
READ_TIMEOUT_S = 10.0  # a delivery read taking longer means the connection is dead
EVENT_PAGE = 1000
LAST_SEQUENCE = "last_sequence"  # the meta key of the event counter row
# Writes committed together at most. Each write of a group runs in a savepoint,
# a subtransaction with an XID of its own once it writes; PostgreSQL caches 64
# of those per backend (PGPROC_MAX_CACHED_SUBXIDS), and past that every other
# session's snapshot must look transactions up in pg_subtrans. A group of 64
# already makes its one commit a small share of its time.
MAX_GROUP = 64
WRITE_TRIES = 3  # runs of a write that PostgreSQL fails to break a deadlock

# Lower-case identifiers only: the schema name is also part of the NOTIFY
# channel (at most 63 bytes with its prefix) and of a lock key, and needs no quoting.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,48}")
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
# Errors that say nothing about the write, only that it met another
# transaction: run it again. (READ COMMITTED never fails to serialise, but a
# server set to a stricter default isolation would.)
_TRY_AGAIN = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)

# Each entry upgrades the schema by one version (recorded in schema_version);
# never edit a released entry, append a new one. Columns mirror SQLite's;
# ids and names sort bytewise (COLLATE "C") whatever the database's locale,
# as UUIDv7 ids must for listing and leasing in submission order.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE jobs (
        id                TEXT COLLATE "C" PRIMARY KEY,
        org_id            TEXT COLLATE "C" NOT NULL,
        cmd               TEXT NOT NULL,        -- JSON array of strings
        input_json        TEXT NOT NULL,
        env               TEXT NOT NULL,        -- JSON object
        timeout_us        BIGINT NOT NULL,
        max_retries       INTEGER NOT NULL,
        priority          INTEGER NOT NULL,
        labels            TEXT NOT NULL,        -- JSON object
        state             TEXT NOT NULL,
        attempt           INTEGER NOT NULL,
        create_time       BIGINT NOT NULL,      -- all times: microseconds since the epoch
        update_time       BIGINT NOT NULL,
        start_time        BIGINT,
        finish_time       BIGINT,
        next_run_time     BIGINT,
        last_error        TEXT NOT NULL,
        output_json       TEXT NOT NULL,
        lease_epoch       BIGINT NOT NULL,
        worker_id         TEXT NOT NULL,
        lease_expire_time BIGINT,
        cancel_requested  INTEGER NOT NULL,
        request_id        TEXT COLLATE "C" NOT NULL,
        trace_context     TEXT NOT NULL,        -- JSON object
        log_count         BIGINT NOT NULL DEFAULT 0,
        log_bytes         BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_org ON jobs (org_id, id);
    CREATE INDEX jobs_by_org_state ON jobs (org_id, state, id);
    CREATE INDEX jobs_runnable ON jobs (org_id, priority DESC, id)
        WHERE state IN ('PENDING', 'RETRYING');
    CREATE INDEX jobs_running ON jobs (lease_expire_time) WHERE state = 'RUNNING';
    CREATE INDEX jobs_finished ON jobs (finish_time) WHERE finish_time IS NOT NULL;
    CREATE UNIQUE INDEX jobs_request_id ON jobs (org_id, request_id) WHERE request_id != '';

    -- Waiting (PENDING or RETRYING) jobs per org, kept exact in the transaction
    -- of every change, so the quota check reads one row instead of counting.
    CREATE TABLE org_waiting (
        org_id  TEXT COLLATE "C" PRIMARY KEY,
        waiting BIGINT NOT NULL
    );

    CREATE TABLE logs (
        job_id   TEXT COLLATE "C" NOT NULL,
        sequence BIGINT NOT NULL,
        stream   TEXT NOT NULL,
        attempt  INTEGER NOT NULL,
        time     BIGINT NOT NULL,
        text     BYTEA NOT NULL,  -- UTF-8: program output may hold NUL, which TEXT cannot
        PRIMARY KEY (job_id, sequence)
    );

    CREATE TABLE artifacts (
        job_id     TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        sha256     TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        PRIMARY KEY (job_id, name)
    );
    CREATE INDEX artifacts_by_blob ON artifacts (sha256);

    CREATE TABLE events (
        sequence       BIGINT PRIMARY KEY,  -- from the counter row, in commit order
        topic          TEXT COLLATE "C" NOT NULL,
        org_id         TEXT COLLATE "C" NOT NULL,
        job_id         TEXT NOT NULL,
        time           BIGINT NOT NULL,
        payload        BYTEA NOT NULL,      -- a serialized zbrain.v1.Event with its payload only
        last_of_commit BOOLEAN NOT NULL     -- so the listener gets one batch per transaction
    );
    CREATE INDEX events_by_org ON events (org_id, sequence);
    CREATE INDEX events_by_time ON events (time);

    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('{LAST_SEQUENCE}', 0), ('{PURGED_THROUGH}', 0);

    CREATE TABLE tokens (
        id          TEXT COLLATE "C" PRIMARY KEY,
        org_id      TEXT NOT NULL,
        role        TEXT NOT NULL,
        description TEXT NOT NULL,
        secret_hash TEXT NOT NULL,  -- SHA-256 of the secret; the secret is never stored
        create_time BIGINT NOT NULL,
        revoke_time BIGINT
    );
    """,
)

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version    INTEGER PRIMARY KEY,
        apply_time TIMESTAMPTZ NOT NULL DEFAULT now()
    )
"""
_SCHEMA_EXISTS = "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)"
_SELECT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_version"
_INSERT_VERSION = "INSERT INTO schema_version (version) VALUES ($1)"

# The type of each of JOB_COLUMNS, for passing many rows as arrays.
_JOB_COLUMN_TYPES = {
    **dict.fromkeys(["timeout_us", "create_time", "update_time", "start_time"], "bigint"),
    **dict.fromkeys(["finish_time", "next_run_time", "lease_epoch", "lease_expire_time"], "bigint"),
    **dict.fromkeys(["max_retries", "priority", "attempt", "cancel_requested"], "int"),
}


def _arrays(columns: Sequence[str]) -> str:
    """Parameters $1, $2 ... as arrays of the type of each job column, for `unnest`."""
    return ", ".join(
        f"${n}::{_JOB_COLUMN_TYPES.get(column, 'text')}[]"
        for n, column in enumerate(columns, start=1)
    )


_JOB_ARRAYS = _arrays(JOB_COLUMNS.split(", "))
# A job with its artifacts (sorted by name) in one row: column 24 is a list of
# (name, sha256, size_bytes) tuples.
_JOB_FIELDS = f"""{JOB_COLUMNS}, ARRAY(
    SELECT ROW(a.name, a.sha256, a.size_bytes) FROM artifacts a
    WHERE a.job_id = jobs.id ORDER BY a.name)"""
_SELECT_JOB = f"SELECT {_JOB_FIELDS} FROM jobs WHERE id = $1"
_LOCK_JOB = f"{_SELECT_JOB} FOR UPDATE"
_LOCK_JOBS = f"SELECT {_JOB_FIELDS} FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
_LOCK_JOB_FOR_LOGS = (
    f"SELECT {_JOB_FIELDS}, log_count, log_bytes FROM jobs WHERE id = $1 FOR UPDATE"
)
_INSERT_JOBS = f"""
    INSERT INTO jobs ({JOB_COLUMNS})
    SELECT * FROM unnest({_JOB_ARRAYS})
    ON CONFLICT (org_id, request_id) WHERE request_id != '' DO NOTHING
    RETURNING id
"""
_SELECT_BY_REQUEST_IDS = f"""
    SELECT {_JOB_FIELDS} FROM jobs
    WHERE (org_id, request_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
# Compare-and-set of many jobs at once: the values of `save_params`, as arrays.
_SAVE_JOBS = f"""
    UPDATE jobs SET {", ".join(f"{column} = v.{column}" for column in STATE_COLUMNS)}
    FROM unnest({_arrays([*STATE_COLUMNS, "id", "state", "lease_epoch"])})
        AS v({", ".join(STATE_COLUMNS)}, id, old_state, old_lease_epoch)
    WHERE jobs.id = v.id AND jobs.state = v.old_state AND jobs.lease_epoch = v.old_lease_epoch
"""
# Up to $3 runnable jobs of each org in $1, locked; rows end with the org's position in $1.
_LOCK_RUNNABLE = f"""
    SELECT runnable.*, orgs.position
    FROM unnest($1::text[]) WITH ORDINALITY AS orgs(org_id, position)
    CROSS JOIN LATERAL (
        SELECT {_JOB_FIELDS} FROM jobs
        WHERE jobs.org_id = orgs.org_id AND state IN ('PENDING', 'RETRYING')
            AND next_run_time <= $2
        ORDER BY priority DESC, id LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS runnable
"""
_SELECT_LEASES_OF = "SELECT id, lease_epoch FROM jobs WHERE state = 'RUNNING' AND worker_id = $1"
_LOCK_EXPIRED = f"""
    SELECT {_JOB_FIELDS} FROM jobs WHERE state = 'RUNNING' AND lease_expire_time < $1
    FOR UPDATE SKIP LOCKED
"""
_LOCK_OVERDUE = f"""
    SELECT {_JOB_FIELDS} FROM jobs WHERE state = 'RUNNING' AND start_time + timeout_us + $1 < $2
    FOR UPDATE SKIP LOCKED
"""
_SELECT_NEXT_RUN_TIME = """
    SELECT min(next_run_time) FROM jobs
    WHERE org_id = ANY($1::text[]) AND state IN ('PENDING', 'RETRYING')
"""
_INSERT_LOGS = """
    WITH lines AS (
        INSERT INTO logs (job_id, sequence, stream, attempt, time, text)
        SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::int[], $5::bigint[], $6::bytea[])
    )
    UPDATE jobs SET log_count = $7, log_bytes = $8 WHERE id = $1
"""
_SELECT_LOGS = """
    SELECT sequence, stream, attempt, time, text FROM logs
    WHERE job_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3
"""
_UPSERT_ARTIFACT = """
    INSERT INTO artifacts (job_id, name, sha256, size_bytes) VALUES ($1, $2, $3, $4)
    ON CONFLICT (job_id, name) DO UPDATE SET sha256 = excluded.sha256,
        size_bytes = excluded.size_bytes
"""
# SKIP LOCKED: replicas purging at once split the work instead of deadlocking.
_PURGE_FINISHED = """
    WITH doomed AS (
        SELECT id FROM jobs
        WHERE finish_time < $1 AND state IN ('SUCCEEDED', 'FAILED', 'CANCELED')
        FOR UPDATE SKIP LOCKED
    ), gone_logs AS (
        DELETE FROM logs WHERE job_id IN (SELECT id FROM doomed)
    ), gone_artifacts AS (
        DELETE FROM artifacts WHERE job_id IN (SELECT id FROM doomed)
    )
    DELETE FROM jobs WHERE id IN (SELECT id FROM doomed)
"""
_SELECT_BLOBS = "SELECT DISTINCT sha256 FROM artifacts"
_COUNT_UNFINISHED = """
    SELECT org_id, state, count(*) FROM jobs
    WHERE state IN ('PENDING', 'RUNNING', 'RETRYING') GROUP BY org_id, state
"""
# The orgs' waiting rows ($1, sorted), locked until the group commits, with
# their committed counts. A group takes them before its first submission, so
# that its quota checks count what no other replica can change before this
# group commits. An upsert rather than SELECT ... FOR UPDATE, which locks
# nothing for an org without a row yet (two replicas would both count it as
# empty); and sorted as in _FINISH, which then finds them held already.
_LOCK_ORGS = """
    INSERT INTO org_waiting (org_id, waiting) SELECT unnest($1::text[]), 0
    ON CONFLICT (org_id) DO UPDATE SET waiting = org_waiting.waiting
    RETURNING org_id, waiting
"""
# The last statement of every group that changes the queue or records events.
# It moves the orgs' waiting counts ($1, $2), then numbers the events ($3 to
# $7) from the counter row, stores them, and NOTIFYs the channel ($8) with the
# last sequence, which PostgreSQL delivers only on commit. It answers that
# sequence (NULL without events).
#
# The counter row is locked only here, last, so it is held only until the
# COMMIT that follows at once; that lock lasting until COMMIT is what keeps
# sequence order equal to commit order. Org rows are locked here or by
# _LOCK_ORGS, always sorted and before the counter, so no two groups can
# deadlock over them. (PostgreSQL runs the parts of a WITH in no set order:
# `counter` reads `waiting` to be sure the org rows come first.)
_FINISH = f"""
    WITH waiting AS (
        INSERT INTO org_waiting (org_id, waiting) SELECT * FROM unnest($1::text[], $2::bigint[])
        ON CONFLICT (org_id) DO UPDATE SET waiting = org_waiting.waiting + excluded.waiting
        RETURNING 1
    ), counter AS (
        UPDATE meta SET value = value + cardinality($3::text[])
        WHERE key = '{LAST_SEQUENCE}' AND cardinality($3::text[]) > 0
            AND (SELECT count(*) FROM waiting) >= 0  -- the org rows first
        RETURNING value
    ), stored AS (
        INSERT INTO events (sequence, topic, org_id, job_id, time, payload, last_of_commit)
        SELECT counter.value - cardinality($3::text[]) + e.position, e.topic, e.org_id,
            e.job_id, e.time, e.payload, e.position = cardinality($3::text[])
        FROM counter, unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::bytea[])
            WITH ORDINALITY AS e(topic, org_id, job_id, time, payload, position)
    )
    SELECT (SELECT value FROM counter), (SELECT pg_notify($8, value::text) FROM counter)
"""
_EVENT_COLUMNS = "sequence, topic, org_id, job_id, time, payload"
_SELECT_EVENTS = f"""
    SELECT {_EVENT_COLUMNS} FROM events
    WHERE sequence > $1 AND starts_with(topic, $2) ORDER BY sequence LIMIT $3
"""
_SELECT_ORG_EVENTS = f"""
    SELECT {_EVENT_COLUMNS} FROM events
    WHERE org_id = $4 AND sequence > $1 AND starts_with(topic, $2) ORDER BY sequence LIMIT $3
"""
_SELECT_UNDELIVERED = f"""
    SELECT {_EVENT_COLUMNS}, last_of_commit FROM events
    WHERE sequence > $1 ORDER BY sequence LIMIT $2
"""
_SELECT_META = "SELECT value FROM meta WHERE key = $1"
# Idempotent, so replicas may purge at once: the mark only ever rises.
_PURGE_EVENTS = f"""
    WITH through AS (
        SELECT max(sequence) AS sequence FROM events WHERE time < $1
    ), marked AS (
        UPDATE meta SET value = greatest(value, through.sequence) FROM through
        WHERE key = '{PURGED_THROUGH}' AND through.sequence IS NOT NULL
    ), deleted AS (
        DELETE FROM events WHERE sequence <= (SELECT sequence FROM through) RETURNING 1
    )
    SELECT count(*) FROM deleted
"""
_INSERT_TOKEN = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
_SELECT_TOKEN = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"
_SELECT_TOKENS = f"""
    SELECT {TOKEN_COLUMNS} FROM tokens WHERE $1::text IS NULL OR org_id = $1
    ORDER BY create_time, id
"""
_REVOKE_TOKEN = "UPDATE tokens SET revoke_time = $1 WHERE id = $2 AND revoke_time IS NULL"
_ANY_TOKEN = "SELECT EXISTS (SELECT 1 FROM tokens WHERE revoke_time IS NULL)"
# Ends the savepoint of one write of a group and starts the next one's, in one round trip.
_NEXT_SAVEPOINT = "RELEASE SAVEPOINT one_write; SAVEPOINT one_write"
_CAN_WRITE = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"


class PostgresJobStore(JobStore):
    """A JobStore in one schema of a PostgreSQL database, shareable by replicas.

    Its connections show in pg_stat_activity as application `zbrain`, and the
    one listening for events as `zbrain-events/<schema>`.
    """

    def __init__(self, url: str) -> None:
        self._dsn, self.schema, self._where = _parse_url(url)
        self._channel = f"zbrain_events_{self.schema}"
        self._pool: asyncpg.Pool | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._listener: EventListener | None = None
        self._wake = asyncio.Event()  # set by notifications and by this store's commits
        self._delivered_through = 0  # the last sequence handed to the listener (or skipped)
        self._notified_through = 0  # the highest sequence known committed
        self._written_through = 0  # the highest sequence this store committed
        self._queue: collections.deque[_Write] = collections.deque()
        self._queue_ready = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the writer has emptied the queue
        self._writer: asyncio.Task[None] | None = None
        self._closing = False  # once set, no more writes are queued

    # -- connection management -------------------------------------------------

    def _settings(self, application_name: str) -> dict[str, str]:
        # JIT compilation only pays for long analytic queries; for these short
        # ones its start-up cost, triggered by a high estimate, is pure delay.
        return {"search_path": self.schema, "application_name": application_name, "jit": "off"}

    @property
    def location(self) -> str:
        return f"postgresql {self._where}, schema {self.schema}"

    async def open(self) -> None:
        with self._translated("connect to"):
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT_S,
                server_settings=self._settings("zbrain"),
                reset=_keep_session,
            )
        try:
            with self._translated("migrate"):
                async with pool.acquire() as conn:
                    await self._migrate(conn)
                    counter = await conn.fetchval(_SELECT_META, LAST_SEQUENCE)
            # Only events committed from now on are delivered live; older ones
            # are history, for read_events.
            self._delivered_through = self._notified_through = int(counter)
            with self._translated("connect to"):
                listening = await self._listen()
        except BaseException:
            pool.terminate()
            raise
        self._pool, self._closing = pool, False
        self._delivery = asyncio.create_task(
            self._deliver_forever(listening), name=f"zbrain-events-{self.schema}"
        )

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            # Writes queued before are committed first (their callers are
            # waiting), unless the database hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._drained.wait()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
            while self._queue:
                self._queue.popleft().future.set_exception(StoreError("the store is closed"))
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
            self._delivery = None
        pool, self._pool = self._pool, None
        if pool is not None:
            # Reads under way finish first; one that hangs is cut off.
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except (TimeoutError, *_DRIVER_ERRORS):
                pool.terminate()

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        """Create the schema and apply pending MIGRATIONS, in one transaction.

        Replicas starting at once queue on an advisory lock of the schema's own,
        so exactly one of them migrates and the others find the work done.
        """
        lock_key = int.from_bytes(
            hashlib.sha256(f"zbrain migrate {self.schema}".encode()).digest()[:8], signed=True
        )
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
            # Not CREATE SCHEMA IF NOT EXISTS: that needs the right to create
            # schemas even when the schema is there, which a database user
            # given one schema of its own may well lack.
            if not await conn.fetchval(_SCHEMA_EXISTS, self.schema):
                await conn.execute(f"CREATE SCHEMA {self.schema}")
            await conn.execute(_CREATE_VERSION_TABLE)
            version = int(await conn.fetchval(_SELECT_VERSION))
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the database schema {self.schema} is version {version}, newer than this "
                    f"server understands ({len(MIGRATIONS)}); upgrade ZBrain"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute(_INSERT_VERSION, number)

    @property
    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is closed")
        return self._pool

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn driver errors into StoreError, saying which database failed."""
        try:
            yield
        except _DRIVER_ERRORS as exc:
            raise self._store_error(action, exc) from exc

    def _store_error(self, action: str, exc: BaseException) -> StoreError:
        """The StoreError for a driver error, chained to it."""
        error = StoreError(f"cannot {action} PostgreSQL at {self._where}: {exc}")
        error.__cause__ = exc
        return error

    async def _transaction(
        self, work: Callable[[_Transaction], Awaitable[T]], *, quota_orgs: Iterable[str] = ()
    ) -> T:
        """Run `work` atomically and durably; roll it back if it raises.

        Group commit: writes queue up while the writer is busy, and the writer
        runs up to MAX_GROUP of them in one transaction, each inside its own
        savepoint (so one failing write undoes only itself), then numbers all
        their events in one statement and commits once: one fsync, and one
        turn at the counter row for which the commits of all replicas queue.
        Every caller is answered only after that commit. The writer is a task
        of its own, so a caller that hangs up mid-call cannot leave a
        transaction open.

        `quota_orgs` are the orgs whose waiting counts `work` may raise, which
        it may then check against a quota (see `_run_group`).
        """
        if self._pool is None or self._closing:
            raise StoreError("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(work, future, frozenset(quota_orgs)))
        self._drained.clear()
        self._queue_ready.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(
                self._write_forever(), name=f"zbrain-writer-{self.schema}"
            )
        result: T = await asyncio.shield(future)
        return result

    async def _write_forever(self) -> None:
        """Commit what is queued, a group at a time, until canceled."""
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            while self._queue:
                group = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_GROUP))]
                await self._commit_group(group)
            self._drained.set()

    async def _commit_group(self, writes: list[_Write]) -> None:
        """Run a group of writes in one transaction, then answer their callers.

        When PostgreSQL breaks a deadlock by failing the group's transaction,
        the group runs again; when it fails only one write's statement, that
        write is rolled back to its savepoint and queued for the next group,
        which runs after this one's commit has released the rows it waited for.
        """
        try:
            with self._translated("write to"):
                tries = 1
                while True:
                    try:
                        outcomes, last_sequence = await self._run_group(writes)
                        break
                    except _TRY_AGAIN as exc:
                        if tries == WRITE_TRIES:
                            raise
                        tries += 1
                        log.info("running %d writes again: %s", len(writes), exc)
        except BaseException as error:
            reported = error if isinstance(error, Exception) else StoreError("write canceled")
            for write in writes:
                write.future.set_exception(reported)
            if not isinstance(error, Exception):
                raise
            return
        if last_sequence is not None:
            self._written_through = max(self._written_through, last_sequence)
            self._committed(last_sequence)
        again: list[_Write] = []
        for write, result, failure in outcomes:
            if failure is None:
                write.future.set_result(result)
            elif isinstance(failure, _TRY_AGAIN) and write.tries < WRITE_TRIES:
                log.info("running a write again: %s", failure)
                write.tries += 1
                again.append(write)
            elif isinstance(failure, _DRIVER_ERRORS):
                write.future.set_exception(self._store_error("write to", failure))
            else:
                write.future.set_exception(failure)
        self._queue.extendleft(reversed(again))

    async def _run_group(
        self, writes: list[_Write]
    ) -> tuple[list[tuple[_Write, Any, Exception | None]], int | None]:
        """Run writes in one transaction; each one's result or error, and the
        last event sequence committed.

        Locks are taken in one order, so that groups of several replicas wait
        for each other without deadlocking: writes that may raise an org's
        waiting count (the submissions) run last, after one statement has
        locked the rows of all orgs the group changes, sorted (_LOCK_ORGS);
        the counter row comes last of all (_FINISH). So a group waits for a job
        row only while it holds no org or counter row, and holding those, waits
        only for org rows further in the order, or the counter. Only job rows
        can still form a cycle, when two groups each hold one the other wants.

        Why lock the org rows at the first submission rather than in _FINISH:
        a submission over the quota must fail alone, inside its savepoint, so
        the count it checks must not change before the group commits. Locking
        the rows for the rest of the group is what guarantees that across
        replicas (the count each submission checks is the committed one plus
        the group's earlier writes), at the price of replicas submitting to
        one org taking turns for the whole of their submissions, not just for
        their commits.

        A failing write is rolled back to its savepoint, with its events and
        waiting-count moves. A group of one needs no savepoint: its failure
        fails the transaction, and is raised.
        """
        ordered = sorted(writes, key=lambda write: bool(write.quota_orgs))
        quota_orgs = frozenset().union(*(write.quota_orgs for write in writes))
        savepoints = len(writes) > 1
        outcomes: list[tuple[_Write, Any, Exception | None]] = []
        async with self._db.acquire() as conn, conn.transaction():
            group = _Group(conn)
            if savepoints:
                await conn.execute("SAVEPOINT one_write")
            for position, write in enumerate(ordered, start=1):
                if write.quota_orgs and not group.locked:
                    await group.lock_orgs(quota_orgs)
                    if savepoints:  # the locks are the group's, not this write's to roll back
                        await conn.execute(_NEXT_SAVEPOINT)
                transaction = _Transaction(conn, group)
                try:
                    result = await write.work(transaction)
                except Exception as error:
                    if not savepoints:
                        raise
                    await conn.execute("ROLLBACK TO SAVEPOINT one_write")
                    outcomes.append((write, None, error))
                    continue
                group.add(transaction)
                if savepoints and position < len(ordered):
                    await conn.execute(_NEXT_SAVEPOINT)
                outcomes.append((write, result, None))
            last_sequence = await group.finish(self._channel)
        return outcomes, last_sequence

    async def check_health(self) -> None:
        if self._delivery is None or self._delivery.done():
            raise StoreError("the store is closed or its event delivery stopped")
        with self._translated("read from"):
            writable = await self._db.fetchval(_CAN_WRITE)
        if not writable:
            raise StoreError(f"PostgreSQL at {self._where} is read-only (a standby?)")

    # -- jobs ------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[NewJob], now_us: int, *, pending_limit: int | None = None
    ) -> list[tuple[Job, bool]]:
        async def work(tx: _Transaction) -> list[tuple[Job, bool]]:
            results = plan_submission(jobs, now_us)
            rows = [job_row(job) for job, deduplicated in results if not deduplicated]
            # Request ids in one order, so that two batches sharing some never deadlock.
            rows.sort(key=lambda row: (row[1], row[22]))
            inserted: set[str] = set()
            if rows:
                created_ids = await tx.conn.fetch(_INSERT_JOBS, *_columns(rows))
                inserted = {record[0] for record in created_ids}
            if len(inserted) < len(rows):
                # An earlier job (maybe committed by another replica a moment
                # ago) holds the request id: answer with that job.
                lost = [job for job, _ in results if job.id not in inserted]
                found = await tx.conn.fetch(
                    _SELECT_BY_REQUEST_IDS,
                    [job.org_id for job in lost],
                    [job.request_id for job in lost],
                )
                earlier = {(job.org_id, job.request_id): job for job in map(_job_from_row, found)}
                results = [
                    (job, deduplicated)
                    if job.id in inserted
                    else (earlier[(job.org_id, job.request_id)], True)
                    for job, deduplicated in results
                ]
            created = [job for job, deduplicated in results if not deduplicated]
            tx.waiting.update(job.org_id for job in created)
            if pending_limit is not None:
                tx.check_quota(pending_limit)
            tx.events += events.submitted(created)
            return results

        # Declared even without a limit: the group then holds the org rows
        # while inserting, so a request id another replica's group is inserting
        # makes this one wait only in the lock order (see _run_group).
        return await self._transaction(work, quota_orgs=[job.org_id for job in jobs])

    async def get_job(self, job_id: str) -> Job:
        with self._translated("read from"):
            row = await self._db.fetchrow(_SELECT_JOB, job_id)
        if row is None:
            raise NotFoundError(f"job {job_id} not found")
        return _job_from_row(row)

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        where = ["org_id = $1"]
        params: list[Any] = [query.org_id]
        if query.states:
            params.append([state.name for state in query.states])
            where.append(f"state = ANY(${len(params)}::text[])")
        if query.after_id is not None:
            params.append(query.after_id)
            where.append(f"id {'<' if query.newest_first else '>'} ${len(params)}")
        params.append(query.limit)
        sql = (
            f"SELECT {_JOB_FIELDS} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY id {'DESC' if query.newest_first else 'ASC'} LIMIT ${len(params)}"
        )
        with self._translated("read from"):
            return [_job_from_row(row) for row in await self._db.fetch(sql, *params)]

    async def cancel_job(self, job_id: str, now_us: int) -> tuple[Job, CancelOutcome]:
        async def work(tx: _Transaction) -> tuple[Job, CancelOutcome]:
            job = await tx.lock_job(job_id)
            change, outcome = lifecycle.cancel(job, now_us)
            if change is not None:
                await tx.save([change])
                job = change.after
            return job, outcome

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
        async def work(tx: _Transaction) -> list[Lease]:
            per_org: list[list[Job]] = [[] for _ in org_ids]
            for row in await tx.conn.fetch(_LOCK_RUNNABLE, list(org_ids), now_us, max_jobs):
                per_org[row["position"] - 1].append(_job_from_row(row))
            chosen = round_robin(per_org, max_jobs)
            changes = [
                lifecycle.start_attempt(job, worker_id, now_us, lease_ttl_us) for job in chosen
            ]
            await tx.save(changes)
            return leases(changes)

        # Rows locked but not chosen (another org's turn) are released at commit.
        return await self._transaction(work)

    async def return_lease(self, job_id: str, lease_epoch: int, now_us: int) -> Job:
        async def work(tx: _Transaction) -> Job:
            change = lifecycle.return_lease(await tx.lock_job(job_id), lease_epoch, now_us)
            await tx.save([change])
            return change.after

        return await self._transaction(work)

    async def renew_lease(
        self, job_id: str, lease_epoch: int, now_us: int, lease_ttl_us: int
    ) -> Job:
        async def work(tx: _Transaction) -> Job:
            job = await tx.lock_job(job_id)
            renewed = lifecycle.renew_lease(job, lease_epoch, now_us, lease_ttl_us)
            await tx.save([Change(job, renewed, "lease renewed")], record=False)
            return renewed

        return await self._transaction(work)

    async def finish_attempts(
        self,
        reports: Sequence[tuple[str, int, AttemptResult]],
        now_us: int,
        retry: RetryPolicy,
    ) -> list[Job | ZBrainError]:
        """One write: the jobs locked in id order (as every writer locks
        several), one update and the events for the whole batch."""

        async def work(tx: _Transaction) -> list[Job | ZBrainError]:
            ids = sorted({job_id for job_id, _, _ in reports})
            rows = await tx.conn.fetch(_LOCK_JOBS, ids)
            jobs = {job.id: job for job in map(_job_from_row, rows)}
            outcomes, changes = finish_all(jobs, reports, now_us, retry)
            await tx.save(changes)
            return outcomes

        return await self._transaction(work)

    async def expire_leases(self, now_us: int, retry: RetryPolicy) -> list[Job]:
        return await self._fail_running(_LOCK_EXPIRED, (now_us,), LEASE_EXPIRED, now_us, retry)

    async def time_out_attempts(self, now_us: int, grace_us: int, retry: RetryPolicy) -> list[Job]:
        return await self._fail_running(_LOCK_OVERDUE, (grace_us, now_us), OVERDUE, now_us, retry)

    async def _fail_running(
        self,
        select: str,
        params: tuple[Any, ...],
        result: AttemptResult,
        now_us: int,
        retry: RetryPolicy,
    ) -> list[Job]:
        # SKIP LOCKED: a job another replica's reaper is failing right now is
        # its business; once that commits, the job no longer matches anyway.
        async def work(tx: _Transaction) -> list[Job]:
            jobs = [_job_from_row(row) for row in await tx.conn.fetch(select, *params)]
            changes = [
                lifecycle.finish_attempt(job, job.lease_epoch, result, now_us, retry)
                for job in jobs
            ]
            await tx.save(changes)
            return [change.after for change in changes]

        return await self._transaction(work)

    async def leases_of(self, worker_id: str) -> list[tuple[str, int]]:
        with self._translated("read from"):
            rows = await self._db.fetch(_SELECT_LEASES_OF, worker_id)
        return [(row[0], row[1]) for row in rows]

    async def next_run_time(self, org_ids: Sequence[str]) -> int | None:
        with self._translated("read from"):
            earliest = await self._db.fetchval(_SELECT_NEXT_RUN_TIME, list(org_ids))
        return None if earliest is None else int(earliest)

    # -- logs ------------------------------------------------------------------

    async def append_logs(
        self,
        job_id: str,
        lease_epoch: int,
        records: Sequence[LogRecord],
        *,
        max_bytes: int | None = None,
    ) -> list[LogLine]:
        async def work(tx: _Transaction) -> list[LogLine]:
            # The row lock makes the job's line numbers gapless across replicas.
            row = await tx.conn.fetchrow(_LOCK_JOB_FOR_LOGS, job_id)
            if row is None:
                raise NotFoundError(f"job {job_id} not found")
            job = _job_from_row(row)
            lifecycle.check_lease(job, lease_epoch)
            kept, total_bytes = within_log_budget(records, row["log_bytes"], max_bytes)
            first = row["log_count"] + 1
            lines = [
                LogLine(first + i, stream, job.attempt, time_us, text)
                for i, (stream, time_us, text) in enumerate(kept)
            ]
            if not lines:
                return lines
            await tx.conn.execute(
                _INSERT_LOGS,
                job_id,
                [line.sequence for line in lines],
                [line.stream.name for line in lines],
                [line.attempt for line in lines],
                [line.time_us for line in lines],
                [line.text.encode() for line in lines],
                first - 1 + len(lines),
                total_bytes,
            )
            tx.events.append(events.logged(job, lines))
            return lines

        return await self._transaction(work)

    async def read_logs(self, job_id: str, after_sequence: int, limit: int) -> list[LogLine]:
        with self._translated("read from"):
            rows = await self._db.fetch(_SELECT_LOGS, job_id, after_sequence, limit)
        return [
            LogLine(row[0], LogStream[row[1]], row[2], row[3], bytes(row[4]).decode())
            for row in rows
        ]

    # -- artifacts -------------------------------------------------------------

    async def add_artifact(self, job_id: str, lease_epoch: int, artifact: Artifact) -> None:
        async def work(tx: _Transaction) -> None:
            lifecycle.check_lease(await tx.lock_job(job_id), lease_epoch)
            await tx.conn.execute(
                _UPSERT_ARTIFACT, job_id, artifact.name, artifact.sha256, artifact.size_bytes
            )

        await self._transaction(work)

    async def purge_finished(self, finished_before_us: int) -> int:
        with self._translated("write to"):
            return _row_count(await self._db.execute(_PURGE_FINISHED, finished_before_us))

    async def referenced_blobs(self) -> set[str]:
        with self._translated("read from"):
            return {row[0] for row in await self._db.fetch(_SELECT_BLOBS)}

    async def count_unfinished(self) -> dict[tuple[str, JobState], int]:
        with self._translated("read from"):
            rows = await self._db.fetch(_COUNT_UNFINISHED)
        return {(row[0], JobState[row[1]]): row[2] for row in rows}

    # -- events ----------------------------------------------------------------

    def set_event_listener(self, listener: EventListener | None) -> None:
        if self._listener is None and listener is not None:
            # A new listener gets what commits from now on. What this store
            # wrote so far is known committed before now; events of other
            # replicas not yet seen may still come, as they would have anyway.
            self._delivered_through = max(self._delivered_through, self._written_through)
        self._listener = listener

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        async def work(tx: _Transaction) -> None:
            tx.events += records

        await self._transaction(work)

    async def read_events(
        self, org_id: str | None, topic_prefix: str, after_sequence: int, limit: int
    ) -> list[EventRecord]:
        with self._translated("read from"):
            if org_id is None:
                rows = await self._db.fetch(_SELECT_EVENTS, after_sequence, topic_prefix, limit)
            else:
                rows = await self._db.fetch(
                    _SELECT_ORG_EVENTS, after_sequence, topic_prefix, limit, org_id
                )
        return [EventRecord(*row) for row in rows]

    async def events_purged_through(self) -> int:
        with self._translated("read from"):
            return int(await self._db.fetchval(_SELECT_META, PURGED_THROUGH))

    async def purge_events(self, before_us: int) -> int:
        with self._translated("write to"):
            return int(await self._db.fetchval(_PURGE_EVENTS, before_us))

    def _committed(self, sequence: int) -> None:
        """Note that events through `sequence` are committed, and wake delivery."""
        self._notified_through = max(self._notified_through, sequence)
        self._wake.set()

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self._committed(int(payload))

    def _connection_lost(self, conn: object) -> None:
        self._wake.set()  # reconnect at once, not at the next poll

    async def _listen(self) -> asyncpg.Connection:
        """A connection of its own that LISTENs for committed events."""
        conn = await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_S,
            server_settings=self._settings(f"zbrain-events/{self.schema}"),
        )
        try:
            await conn.add_listener(self._channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._connection_lost)
        return conn

    async def _deliver_forever(self, conn: asyncpg.Connection | None) -> None:
        """Hand the listener every committed event, reconnecting as needed.

        Woken by notifications and by this store's own commits, it reads only
        when something new is known to be committed; every POLL_INTERVAL_S it
        reads anyway, which finds whatever a lost notification would have said.
        """
        try:
            while True:
                polled = await self._next_wake()
                if self._listener is None:
                    continue
                connected = conn is not None and not conn.is_closed()
                if connected and not polled and self._notified_through <= self._delivered_through:
                    continue  # nothing new; a lost connection is re-made and re-read at once
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._listen()
                    await self._deliver(conn)
                except _DRIVER_ERRORS as exc:
                    log.warning(
                        "cannot read events from PostgreSQL at %s (retrying): %s", self._where, exc
                    )
                    if conn is not None:
                        conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await conn.close(timeout=CLOSE_TIMEOUT_S)

    async def _next_wake(self) -> bool:
        """Wait for a wake-up; True when the poll interval ran out first."""
        try:
            async with asyncio.timeout(POLL_INTERVAL_S):
                await self._wake.wait()
        except TimeoutError:
            return True
        self._wake.clear()
        return False

    async def _deliver(self, conn: asyncpg.Connection) -> None:
        """Read the events after the last delivered, handing over one commit at a time."""
        after = self._delivered_through
        batch: list[EventRecord] = []
        while True:
            rows = await conn.fetch(_SELECT_UNDELIVERED, after, EVENT_PAGE, timeout=READ_TIMEOUT_S)
            for row in rows:
                batch.append(EventRecord(*row[:6]))
                if row["last_of_commit"]:
                    self._publish(batch)
                    batch = []
            if len(rows) < EVENT_PAGE:
                break
            after = rows[-1][0]
        if batch:  # a commit whose end retention purged: nothing more will come
            self._publish(batch)

    def _publish(self, batch: list[EventRecord]) -> None:
        listener = self._listener
        if listener is not None and batch[-1].sequence > self._delivered_through:
            try:
                listener(batch)
            except Exception:
                log.exception("the event listener failed on events through %d", batch[-1].sequence)
        self._delivered_through = max(self._delivered_through, batch[-1].sequence)

    # -- tokens ------------------------------------------------------------------

    async def add_token(self, token: Token) -> None:
        with self._translated("write to"):
            await self._db.execute(
                _INSERT_TOKEN,
                token.id,
                token.org_id,
                token.role.name,
                token.description,
                token.secret_hash,
                token.create_time_us,
                token.revoke_time_us,
            )

    async def find_token(self, token_id: str) -> Token | None:
        with self._translated("read from"):
            row = await self._db.fetchrow(_SELECT_TOKEN, token_id)
        return token_from_row(row) if row is not None else None

    async def list_tokens(self, org_id: str | None) -> list[Token]:
        with self._translated("read from"):
            return [token_from_row(row) for row in await self._db.fetch(_SELECT_TOKENS, org_id)]

    async def revoke_token(self, token_id: str, now_us: int) -> Token:
        async def work(tx: _Transaction) -> Token:
            await tx.conn.execute(_REVOKE_TOKEN, now_us, token_id)
            row = await tx.conn.fetchrow(_SELECT_TOKEN, token_id)
            if row is None:
                raise NotFoundError(f"token {token_id} not found")
            return token_from_row(row)

        return await self._transaction(work)

    async def has_tokens(self) -> bool:
        with self._translated("read from"):
            return bool(await self._db.fetchval(_ANY_TOKEN))


@dataclass
class _Write:
    """A write waiting for the writer task, and the caller's future for its outcome."""

    work: Callable[[_Transaction], Awaitable[Any]]
    future: asyncio.Future[Any]
    quota_orgs: frozenset[str]  # orgs whose waiting counts it may raise (see _run_group)
    tries: int = 1


class _Group:
    """The writes of one group transaction together: what they did to the orgs'
    waiting counts and their events, for `finish`, the last statement before
    COMMIT; and the counts of the org rows it holds locked for quota checks."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.events: list[EventRecord] = []
        self.waiting: collections.Counter[str] = collections.Counter()
        self.locked: dict[str, int] = {}  # org -> its committed waiting count

    def add(self, write: _Transaction) -> None:
        """Take in what a write that succeeded did."""
        self.events += write.events
        self.waiting.update(write.waiting)

    async def lock_orgs(self, quota_orgs: Iterable[str]) -> None:
        """Lock the rows of these orgs and of every org whose count the group
        moved so far (see _LOCK_ORGS), and note their committed counts."""
        org_ids = {*quota_orgs, *(org_id for org_id, delta in self.waiting.items() if delta)}
        rows = await self.conn.fetch(_LOCK_ORGS, sorted(org_ids))
        self.locked = {org_id: waiting for org_id, waiting in rows}

    async def finish(self, channel: str) -> int | None:
        """Move the waiting counts and record the events (see _FINISH); return
        the last sequence, if any."""
        moved = sorted((org_id, delta) for org_id, delta in self.waiting.items() if delta)
        if not moved and not self.events:
            return None
        last_sequence = await self.conn.fetchval(
            _FINISH,
            [org_id for org_id, _ in moved],
            [delta for _, delta in moved],
            *_columns(
                [(r.topic, r.org_id, r.job_id, r.time_us, r.payload) for r in self.events], width=5
            ),
            channel,
        )
        return None if last_sequence is None else int(last_sequence)


class _Transaction:
    """One write of a group. Job changes are saved as they are decided; what
    they do to the orgs' waiting counts, and their events, are collected here
    and handed to the group if the write succeeds."""

    def __init__(self, conn: asyncpg.Connection, group: _Group) -> None:
        self.conn = conn
        self.events: list[EventRecord] = []
        self.waiting: collections.Counter[str] = collections.Counter()
        self._group = group

    async def lock_job(self, job_id: str) -> Job:
        """The job, locked until the transaction ends; NotFoundError when unknown."""
        row = await self.conn.fetchrow(_LOCK_JOB, job_id)
        if row is None:
            raise NotFoundError(f"job {job_id} not found")
        return _job_from_row(row)

    async def save(self, changes: Sequence[Change], *, record: bool = True) -> None:
        """Write decided changes; fail if any row changed since it was read."""
        if not changes:
            return
        status = await self.conn.execute(
            _SAVE_JOBS, *_columns([save_params(change) for change in changes])
        )
        if _row_count(status) != len(changes):
            raise FailedPreconditionError("a job changed concurrently; try again")
        self.waiting.update(waiting_changes(changes))
        if record:
            self.events += [events.state_changed(change) for change in changes]

    def check_quota(self, limit: int) -> None:
        """ResourceExhaustedError when this write leaves an org it adds to with
        more than `limit` waiting jobs.

        Only for a write that declared those orgs (`quota_orgs`): the group
        then holds their rows locked, so the count is the committed one, which
        no other replica can change before this group commits, plus what the
        group's earlier writes moved.
        """
        for org_id, added in self.waiting.items():
            if added > 0:
                waiting = self._group.locked[org_id] + self._group.waiting[org_id]
                if waiting + added > limit:
                    raise quota_exceeded(org_id, waiting, limit)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool as it is. This store leaves no session
    state behind (no SET, LISTEN, cursor or session lock; asyncpg itself ends
    any open transaction), so asyncpg's default reset, one more round trip on
    every release, would have nothing to do."""


def _parse_url(url: str) -> tuple[str, str, str]:
    """The URL for asyncpg (without our `schema` parameter), the schema, and
    `host:port` for messages (never the password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"not a PostgreSQL URL (postgresql://user@host:port/db): {parts.scheme}:")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = dict(query).get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StoreError(
            f"invalid schema {schema!r} in the PostgreSQL URL: use lower-case letters, "
            "digits and _ (at most 49), starting with a letter or _"
        )
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    return urlunsplit(parts._replace(query=rest)), schema, where


def _job_from_row(row: Any) -> Job:
    """A job from a row of _JOB_FIELDS: JOB_COLUMNS, then the artifacts."""
    job = job_from_row(row)
    if not row[24]:
        return job
    return replace(job, artifacts=tuple(Artifact(*artifact) for artifact in row[24]))


def _columns(rows: Sequence[tuple[Any, ...]], width: int | None = None) -> list[list[Any]]:
    """Rows as one list per column, to pass many rows as arrays to unnest();
    with no rows, `width` empty lists."""
    if not rows:
        return [[] for _ in range(width or 0)]
    return [list(column) for column in zip(*rows, strict=True)]


def _row_count(status: str) -> int:
    """The row count of a command status such as "UPDATE 3"."""
    return int(status.rsplit(" ", 1)[-1])
