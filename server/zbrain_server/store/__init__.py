"""Job storage: one store (`JobStore`), written once over a small driver
interface, and one driver per database backend (`sqlite/`, `postgres/`),
each with its named queries and migrations in .sql files beside it."""

from __future__ import annotations

from pathlib import Path

from ..core.events import EventCodec
from .jobs import JobStore

__all__ = ["JobStore", "open_store", "postgres_store", "sqlite_store"]


def sqlite_store(path: Path, codec: EventCodec) -> JobStore:
    """A store in one SQLite file (not yet opened)."""
    from .sqlite.driver import SqliteDriver

    return JobStore(SqliteDriver(path), codec)


def postgres_store(url: str, codec: EventCodec) -> JobStore:
    """A store in one schema of a PostgreSQL database (not yet opened)."""
    # Imported here so that the embedded default never loads the driver.
    from .postgres.driver import PostgresDriver

    return JobStore(PostgresDriver(url), codec)


async def open_store(data_dir: Path, url: str | None, codec: EventCodec) -> JobStore:
    """Open (creating and migrating as needed) the store the server was pointed at.

    A postgresql:// URL selects the PostgreSQL store, which several replicas
    can share; without one, the embedded SQLite file in data_dir. `codec` is
    the stored form of events (the edge's, `rpc.codec.EVENT_CODEC`).
    """
    store = (
        sqlite_store(data_dir / "zbrain.db", codec) if url is None else postgres_store(url, codec)
    )
    await store.open()
    return store
