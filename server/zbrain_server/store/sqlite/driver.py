"""The embedded default store's driver: SQLite in WAL mode, on plain sqlite3.

Writes go through one connection owned by one writer thread (SQLite has a
single writer anyway): the write engine hands a whole group to that thread
in one call, where it runs in one BEGIN IMMEDIATE transaction. A thread hop
costs about as much as a small statement, so one hop per group rather than
one per statement is what lets the writer keep up. Reads use a second
connection on a thread of its own, which WAL lets run beside the writer;
each query is one hop there too. (aiosqlite does the same with one thread per
connection and a hop per call; owning the threads lets a group, or a query
and its row mapping, be one hop.) `synchronous=FULL`: a job is on disk
before its Submit is answered.

Being the only writer of its file, this driver keeps in memory what the
PostgreSQL driver keeps in rows: the last event sequence, and each org's
count of waiting jobs, read once at open and moved by every commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
    answer,
    run,
)
from ..queries import Query, load_migrations, load_queries
from ..rows import event_params

T = TypeVar("T")

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0  # how long a statement waits for another process's lock
QUERIES = load_queries(__package__ or "zbrain_server.store.sqlite", numbered=False)
MIGRATIONS = load_migrations(__package__ or "zbrain_server.store.sqlite")


def make_data_dir(path: Path) -> None:
    """Create the data directory, or say plainly why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the data directory {path}: {exc.strerror}") from exc


class SqliteDriver(Driver):
    """The driver of one SQLite file."""

    max_group = 512

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None  # used only in its thread
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None  # used only in its thread
        self._reader_thread: ThreadPoolExecutor | None = None
        self._listener: EventListener | None = None
        self._last_sequence = 0
        # Waiting (PENDING or RETRYING) jobs per org, kept exact by the single
        # writer so a quota check costs no count over a long queue.
        self._waiting: collections.Counter[str] = collections.Counter()

    @property
    def location(self) -> str:
        return f"sqlite {self.path}"

    # -- connections -------------------------------------------------------------

    async def open(self) -> None:
        make_data_dir(self.path.parent)
        loop = asyncio.get_running_loop()
        writer_thread = ThreadPoolExecutor(1, thread_name_prefix="zbrain-sqlite-writer")
        reader_thread = ThreadPoolExecutor(1, thread_name_prefix="zbrain-sqlite-reader")
        writer = reader = None
        try:
            with _translated("open the database"):
                writer, last_sequence, waiting = await loop.run_in_executor(
                    writer_thread, _open_writer, self.path
                )
                reader = await loop.run_in_executor(reader_thread, _connect, self.path)
        except BaseException:
            for thread, connection in ((writer_thread, writer), (reader_thread, reader)):
                if connection is not None:
                    await loop.run_in_executor(thread, connection.close)
                thread.shutdown()
            raise
        self._writer, self._writer_thread = writer, writer_thread
        self._reader, self._reader_thread = reader, reader_thread
        self._last_sequence, self._waiting = last_sequence, waiting

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        with _translated("close the database"):
            for thread, connection in (
                (self._reader_thread, self._reader),
                (self._writer_thread, self._writer),
            ):
                if thread is not None and connection is not None:
                    await loop.run_in_executor(thread, connection.close)
        for thread in (self._reader_thread, self._writer_thread):
            if thread is not None:
                thread.shutdown()
        self._writer = self._reader = None
        self._writer_thread = self._reader_thread = None

    async def check_health(self) -> None:
        await self.fetch_sql("SELECT 1", {})
        await self.run_group(answer(None))

    # -- reads ---------------------------------------------------------------------

    async def fetch(self, query: str, params: Params) -> list[Row]:
        return await self._fetch(QUERIES[query], params)

    async def fetch_sql(self, sql: str, params: Params) -> list[Row]:
        return await self._fetch(_built_query(sql), params)

    async def _fetch(self, query: Query, params: Params) -> list[Row]:
        if self._reader is None or self._reader_thread is None:
            raise StoreError("the store is closed")
        reader = self._reader
        with _translated("read the database"):
            return await asyncio.get_running_loop().run_in_executor(
                self._reader_thread, _fetch, reader, query, params
            )

    def in_list(self, column: str, param: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(:{param}))"

    def map_value(self, column: str, key_param: str) -> str:
        return f"json_extract({column}, '$.' || json_quote(:{key_param}))"

    # -- writes --------------------------------------------------------------------

    async def run_group(self, program: Program[T]) -> T:
        if self._writer is None or self._writer_thread is None:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        group = self._writer_thread.submit(self._run_group, self._writer, program)
        # The thread finishes the group whatever happens to this task, so a
        # canceled writer still waits for it: its callers then hear what really
        # happened, and the loop never touches the group while the thread does.
        # (A future of this loop that the thread settles directly wakes this
        # task one loop turn sooner than asyncio.wait on run_in_executor's.)
        canceled = False
        while True:
            arrived = loop.create_future()
            group.add_done_callback(functools.partial(_arrive, loop, arrived))
            try:
                await arrived
                break
            except asyncio.CancelledError:
                canceled = True
        result: T = group.result()
        if canceled:
            raise asyncio.CancelledError
        return result

    def _run_group(self, db: sqlite3.Connection, program: Program[T]) -> T:
        """In the writer thread: the whole group in one transaction."""
        with _translated("write to the database"):
            db.execute("BEGIN IMMEDIATE")
            try:
                result = run(program, lambda op: _execute(db, op))  # errors translated there
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        return result

    def lock_orgs(self, org_ids: list[str]) -> Program[dict[str, int]]:
        # The single writer holds every count steady: no statement needed.
        return answer({org_id: self._waiting[org_id] for org_id in org_ids})

    def finish(self, group: Group) -> Program[None]:
        numbered = [
            EventRecord(
                self._last_sequence + i, r.topic, r.org_id, r.job_id, r.time_us, r.payload, r.body
            )
            for i, r in enumerate(group.events, start=1)
        ]
        group.events = numbered
        usage = group.usage_moves()
        if usage:
            yield ExecuteMany(
                "add_org_usage",
                [
                    {"org_id": org_id, "log_bytes": logs, "artifact_bytes": artifacts}
                    for org_id, logs, artifacts in usage
                ],
            )
        if numbered:
            yield ExecuteMany("insert_event", [event_params(record) for record in numbered])
            group.last_sequence = numbered[-1].sequence

    def committed(self, group: Group) -> None:
        if group.last_sequence is not None:
            self._last_sequence = group.last_sequence
        self._waiting.update(group.waiting)
        if group.events and self._listener is not None:
            self._listener(group.events)

    def set_listener(self, listener: EventListener | None) -> None:
        self._listener = listener


def _arrive(loop: asyncio.AbstractEventLoop, arrived: asyncio.Future[None], _: Future[Any]) -> None:
    """In the writer thread (or at once, if the group is done): wake the loop's
    waiter, if the loop is still there (a store closed by a loop that ended
    leaves nobody to wake)."""
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(_settle, arrived)


def _settle(arrived: asyncio.Future[None]) -> None:
    if not arrived.done():  # not canceled meanwhile
        arrived.set_result(None)


def _execute(db: sqlite3.Connection, op: Op) -> Any:
    """One operation of a program, in the writer thread (see store.ops); a
    failure is thrown into the program as a StoreError."""
    with _translated("write to the database"):
        return _execute_op(db, op)


def _execute_op(db: sqlite3.Connection, op: Op) -> Any:
    if isinstance(op, Fetch):
        return _rows(_run(db, QUERIES[op.query], op.params))
    if isinstance(op, FetchOne):
        found = _rows(_run(db, QUERIES[op.query], op.params))
        return found[0] if found else None
    if isinstance(op, Execute):
        return _run(db, QUERIES[op.query], op.params).rowcount
    if isinstance(op, ExecuteMany):
        if not op.rows:
            return 0
        query = QUERIES[op.query]
        rows: Sequence[Params] = (
            [_with_json(query, row) for row in op.rows] if query.lists else op.rows
        )
        return db.executemany(query.sql, map(query.args, rows)).rowcount
    if isinstance(op, Savepoint):
        if op.release:
            db.execute("RELEASE SAVEPOINT write")
        db.execute("SAVEPOINT write")
        return None
    if isinstance(op, RollbackToSavepoint):
        db.execute("ROLLBACK TO SAVEPOINT write")
        return None
    raise TypeError(f"unknown store operation {op!r}")


@functools.lru_cache(maxsize=256)
def _built_query(sql: str) -> Query:
    """A query built at run time (a search's filters), placed once per shape."""
    return Query(sql, numbered=False)


def _run(db: sqlite3.Connection, query: Query, params: Params) -> sqlite3.Cursor:
    if query.lists:
        params = _with_json(query, params)
    return db.execute(query.sql, query.args(params))


def _with_json(query: Query, params: Params) -> Params:
    """List parameters as the JSON text json_each reads."""
    return {
        key: json.dumps(value) if key in query.lists else value for key, value in params.items()
    }


def _rows(cursor: sqlite3.Cursor) -> list[Row]:
    """A cursor's rows as dicts by column name, the names read once per query."""
    if cursor.description is None:
        return []
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _fetch(db: sqlite3.Connection, query: Query, params: Params) -> list[Row]:
    """A read, in the reader thread."""
    return _rows(_run(db, query, params))


def _connect(path: Path) -> sqlite3.Connection:
    """A connection for its own thread (sqlite3's same-thread check stays on to prove it)."""
    return sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)


def _open_writer(path: Path) -> tuple[sqlite3.Connection, int, collections.Counter[str]]:
    """Open the write connection, migrate the schema, and read what the writer keeps
    in memory: the last event sequence and the waiting jobs per org."""
    db = _connect(path)
    try:
        db.executescript("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        _migrate(db)
        last = _rows(_run(db, QUERIES["last_sequence"], {}))[0]["sequence"] or 0
        purged = _rows(_run(db, QUERIES["purged_through"], {}))
        waiting = collections.Counter(
            {row["org_id"]: row["waiting"] for row in _rows(_run(db, QUERIES["count_waiting"], {}))}
        )
    except BaseException:
        db.close()
        raise
    return db, max(last, purged[0]["value"] if purged else 0), waiting


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


def _store_error(action: str, exc: sqlite3.Error) -> StoreError:
    """A driver error as the store's own, by SQLite's result code."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return StoreFullError(f"could not {action}: the disk is full ({exc})")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreConflictError(f"could not {action}: the database is locked ({exc})")
    return StoreError(f"could not {action}: {exc}")


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn driver errors into StoreError so nothing above the driver sees sqlite3."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _store_error(action, exc) from exc
