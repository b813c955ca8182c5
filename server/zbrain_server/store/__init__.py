"""Job storage: one store (`JobStore`), written once over a small driver
interface, and one driver per database backend (`sqlite/`, `postgres/`),
each with its named queries and migrations in .sql files beside it."""

from __future__ import annotations

from pathlib import Path

from .jobs import JobStore

__all__ = ["JobStore", "open_store", "postgres_store", "sqlite_store"]


def sqlite_store(path: Path) -> JobStore:
    """A store in one SQLite file (not yet opened)."""
    from .sqlite.driver import SqliteDriver

    return JobStore(SqliteDriver(path))


def postgres_store(url: str) -> JobStore:
    """A store in one schema of a PostgreSQL database (not yet opened)."""
    # Imported here so that the embedded default never loads the driver.
    from .postgres.driver import PostgresDriver

    return JobStore(PostgresDriver(url))


async def open_store(data_dir: Path, url: str | None = None) -> JobStore:
    """Open (creating and migrating as needed) the store the server was pointed at.

    A postgresql:// URL selects the PostgreSQL store, which several replicas
    can share; without one, the embedded SQLite file in data_dir.
    """
    store = sqlite_store(data_dir / "zbrain.db") if url is None else postgres_store(url)
    await store.open()
    return store
