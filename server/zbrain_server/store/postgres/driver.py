"""The shared store's driver: PostgreSQL through asyncpg, for several server
replicas at once.

Unlike SQLite, where one process owns the file and one writer serialises all
writes, here several replicas write at once, so the database itself must
keep them apart (the queries in queries.sql say how, statement by statement):

- A group runs in one READ COMMITTED transaction on a pooled connection.
  Writes that decide on a job read it `FOR UPDATE` first, so writers of one
  job (on any replica) take turns; leasing and the reaper `SKIP LOCKED`, so
  replicas leasing from one queue take different jobs.
- The waiting-jobs quota is a counter row per org (`org_waiting`), locked by
  a group before its first submission and moved by `finish_group`, so a
  submit checks one row instead of counting the queue.
- Events are numbered last, just before COMMIT, by incrementing one counter
  row. Its lock is held until commit, so sequence order is commit order
  across replicas: a reader that saw sequence N can never later see a
  smaller one appear, which is what lets StreamEvents resume from a sequence.
- Locks are taken in one order: job rows, then org rows (sorted), then the
  counter row. Two replicas' groups can still deadlock over job rows they
  both want; PostgreSQL then fails one statement (StoreConflictError), and
  the write engine runs that write again.
- The listener gets events by reading them back, the same way for events of
  this replica and of others: a dedicated connection LISTENs on the channel
  `finish_group` NOTIFYs, a notification wakes one delivery task, and the
  task reads every event after the last one delivered. It also polls every
  second and reconnects when its connection drops, so a lost notification
  delays an event but never loses it.

The URL is a libpq-style `postgresql://user@host:port/db`, plus one parameter
of ours, `schema` (default `zbrain`): all tables live in that schema, so one
database can hold several independent ZBrain installations (the tests use a
schema each). Driver errors become StoreError here; nothing above the driver
sees asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
from collections.abc import Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from zbrain.errors import StoreConflictError, StoreError, StoreFullError

from ...core.model import EventRecord
from ..driver import Driver, EventListener
from ..engine import Group
from ..ops import (
    Execute,
    ExecuteMany,
    Fetch,
    FetchOne,
    Op,
    Params,
    Program,
    RollbackToSavepoint,
    Row,
    Savepoint,
    run_async,
)
from ..queries import Query, load_migrations, load_queries
from ..rows import event_from_row

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "zbrain"
POOL_SIZE = 8
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 1.0  # the delivery task reads events at least this often
READ_TIMEOUT_S = 10.0  # a delivery read taking longer means the connection is dead
EVENT_PAGE = 1000

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
# transaction: running it again is safe. (READ COMMITTED never fails to
# serialise, but a server set to a stricter default isolation would.)
_CONFLICTS = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
_FULL = (asyncpg.exceptions.DiskFullError, asyncpg.exceptions.OutOfMemoryError)

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version    INTEGER PRIMARY KEY,
        apply_time TIMESTAMPTZ NOT NULL DEFAULT now()
    )
"""


@functools.lru_cache(maxsize=256)
def _built_query(sql: str) -> Query:
    """A query built at run time (a search's filters), numbered once per shape."""
    return Query(sql, numbered=True)


QUERIES = load_queries(__package__ or "zbrain_server.store.postgres", numbered=True)
MIGRATIONS = load_migrations(__package__ or "zbrain_server.store.postgres")


class PostgresDriver(Driver):
    """The driver of one schema of a PostgreSQL database, shareable by replicas.

    Its connections show in pg_stat_activity as application `zbrain`, and the
    one listening for events as `zbrain-events/<schema>`.
    """

    # Each write of a group runs in a savepoint, a subtransaction with an XID
    # of its own once it writes; PostgreSQL caches 64 of those per backend
    # (PGPROC_MAX_CACHED_SUBXIDS), and past that every other session's snapshot
    # must look transactions up in pg_subtrans. A group of 64 already makes its
    # one commit a small share of its time.
    max_group = 64
    close_timeout_s = CLOSE_TIMEOUT_S
    skips_locked_rows = True

    def __init__(self, url: str) -> None:
        self._dsn, self.schema, self._where = parse_url(url)
        self._channel = f"zbrain_events_{self.schema}"
        self._pool: asyncpg.Pool | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._listener: EventListener | None = None
        self._wake = asyncio.Event()  # set by notifications and by this replica's commits
        self._delivered_through = 0  # the last sequence handed to the listener (or skipped)
        self._notified_through = 0  # the highest sequence known committed
        self._written_through = 0  # the highest sequence this replica committed

    @property
    def location(self) -> str:
        return f"postgresql {self._where}, schema {self.schema}"

    def _settings(self, application_name: str) -> dict[str, str]:
        # JIT compilation only pays for long analytic queries; for these short
        # ones its start-up cost, triggered by a high estimate, is pure delay.
        return {"search_path": self.schema, "application_name": application_name, "jit": "off"}

    # -- connections -------------------------------------------------------------

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
                    counter = await conn.fetchval(QUERIES["last_sequence"].sql)
            # Only events committed from now on are delivered live; older ones
            # are history, for read_events.
            self._delivered_through = self._notified_through = int(counter)
            with self._translated("connect to"):
                listening = await self._listen()
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        self._delivery = asyncio.create_task(
            self._deliver_forever(listening), name=f"zbrain-events-{self.schema}"
        )

    async def close(self) -> None:
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
            self._delivery = None
        pool, self._pool = self._pool, None
        if pool is not None:
            # Reads under way finish first; one that hangs is cut off.
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await pool.close()
            except (TimeoutError, *_DRIVER_ERRORS):
                pool.terminate()

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        """Create the schema and apply pending migrations, in one transaction.

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
            exists = await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", self.schema
            )
            if not exists:
                await conn.execute(f"CREATE SCHEMA {self.schema}")
            await conn.execute(_CREATE_VERSION_TABLE)
            version = int(
                await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            )
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the database schema {self.schema} is version {version}, newer than this "
                    f"server understands ({len(MIGRATIONS)}); upgrade ZBrain"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)

    @property
    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is closed")
        return self._pool

    async def check_health(self) -> None:
        if self._delivery is None or self._delivery.done():
            raise StoreError("the store is closed or its event delivery stopped")
        row = await self.fetch_one("can_write", {})
        if row is None or not row["writable"]:
            raise StoreError(f"PostgreSQL at {self._where} is read-only (a standby?)")

    # -- errors --------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn driver errors into StoreError, saying which database failed."""
        try:
            yield
        except _DRIVER_ERRORS as exc:
            raise self._store_error(action, exc) from exc

    def _store_error(self, action: str, exc: BaseException) -> StoreError:
        """The StoreError for a driver error, by kind, chained to it."""
        message = f"cannot {action} PostgreSQL at {self._where}: {exc}"
        error: StoreError
        if isinstance(exc, _CONFLICTS):
            error = StoreConflictError(message)
        elif isinstance(exc, _FULL):
            error = StoreFullError(message)
        else:
            error = StoreError(message)
        error.__cause__ = exc
        return error

    # -- reads ---------------------------------------------------------------------

    async def fetch(self, query: str, params: Params) -> list[Row]:
        return await self._fetch(QUERIES[query], params)

    async def fetch_sql(self, sql: str, params: Params) -> list[Row]:
        return await self._fetch(_built_query(sql), params)

    async def _fetch(self, query: Query, params: Params) -> list[Row]:
        with self._translated("read from"):
            rows: list[Row] = await self._db.fetch(query.sql, *query.args(params))
        return rows

    def in_list(self, column: str, param: str) -> str:
        return f"{column} = ANY(:{param}::text[])"

    def map_value(self, column: str, key_param: str) -> str:
        return f"({column}::jsonb ->> :{key_param}::text)"

    # -- writes --------------------------------------------------------------------

    async def run_group(self, program: Program[T]) -> T:
        with self._translated("write to"):
            async with self._db.acquire() as conn, conn.transaction():
                return await run_async(program, lambda op: self._execute(conn, op))

    async def _execute(self, conn: asyncpg.Connection, op: Op) -> Any:
        """One operation of a program (see store.ops); a failure is thrown into
        the program as a StoreError."""
        try:
            if isinstance(op, Fetch):
                named = QUERIES[op.query]
                return await conn.fetch(named.sql, *named.args(op.params))
            if isinstance(op, FetchOne):
                named = QUERIES[op.query]
                return await conn.fetchrow(named.sql, *named.args(op.params))
            if isinstance(op, Execute):
                named = QUERIES[op.query]
                return _row_count(await conn.execute(named.sql, *named.args(op.params)))
            if isinstance(op, ExecuteMany):
                if not op.rows:
                    return 0
                named = QUERIES[op.query]
                rows = list(op.rows)
                return _row_count(await conn.execute(named.sql, *named.column_args(rows)))
            if isinstance(op, Savepoint):
                # Ending one write's savepoint and starting the next one's is one round trip.
                await conn.execute(
                    "RELEASE SAVEPOINT write; SAVEPOINT write" if op.release else "SAVEPOINT write"
                )
                return None
            if isinstance(op, RollbackToSavepoint):
                await conn.execute("ROLLBACK TO SAVEPOINT write")
                return None
        except _DRIVER_ERRORS as exc:
            raise self._store_error("write to", exc) from exc
        raise TypeError(f"unknown store operation {op!r}")

    def lock_orgs(self, org_ids: list[str]) -> Program[dict[str, int]]:
        rows = yield Fetch("lock_orgs", {"org_ids": org_ids})
        return {row["org_id"]: row["waiting"] for row in rows}

    def finish(self, group: Group) -> Program[None]:
        moved = sorted((org_id, delta) for org_id, delta in group.waiting.items() if delta)
        usage = group.usage_moves()
        if not moved and not group.events and not usage:
            return
        records = group.events
        row = yield FetchOne(
            "finish_group",
            {
                "moved_orgs": [org_id for org_id, _ in moved],
                "moved_by": [delta for _, delta in moved],
                "usage_orgs": [org_id for org_id, _, _ in usage],
                "usage_logs": [log_bytes for _, log_bytes, _ in usage],
                "usage_artifacts": [artifact_bytes for _, _, artifact_bytes in usage],
                "topic": [r.topic for r in records],
                "org_id": [r.org_id for r in records],
                "job_id": [r.job_id for r in records],
                "time": [r.time_us for r in records],
                "payload": [r.payload for r in records],
                "channel": self._channel,
            },
        )
        if row is not None and row["last_sequence"] is not None:
            group.last_sequence = int(row["last_sequence"])

    def committed(self, group: Group) -> None:
        if group.last_sequence is not None:
            self._written_through = max(self._written_through, group.last_sequence)
            self._committed(group.last_sequence)

    # -- event delivery -------------------------------------------------------------

    def set_listener(self, listener: EventListener | None) -> None:
        if self._listener is None and listener is not None:
            # A new listener gets what commits from now on. What this replica
            # wrote so far is known committed before now; events of other
            # replicas not yet seen may still come, as they would have anyway.
            self._delivered_through = max(self._delivered_through, self._written_through)
        self._listener = listener

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

        Woken by notifications and by this replica's own commits, it reads only
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
        query = QUERIES["undelivered_events"]
        while True:
            rows = await conn.fetch(
                query.sql,
                *query.args({"after": after, "limit": EVENT_PAGE}),
                timeout=READ_TIMEOUT_S,
            )
            for row in rows:
                batch.append(event_from_row(row))
                if row["last_of_commit"]:
                    self._publish(batch)
                    batch = []
            if len(rows) < EVENT_PAGE:
                break
            after = rows[-1]["sequence"]
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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool as it is. This store leaves no session
    state behind (no SET, LISTEN, cursor or session lock; asyncpg itself ends
    any open transaction), so asyncpg's default reset, one more round trip on
    every release, would have nothing to do."""


def parse_url(url: str) -> tuple[str, str, str]:
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


def _row_count(status: str) -> int:
    """The row count of a command status such as "UPDATE 3"."""
    return int(status.rsplit(" ", 1)[-1])
