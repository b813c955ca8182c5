"""Job storage: one interface (`JobStore`), one module per database backend."""

from __future__ import annotations

from pathlib import Path

from .base import JobStore
from .sqlite import SqliteJobStore

__all__ = ["JobStore", "SqliteJobStore", "open_store"]


async def open_store(data_dir: Path, url: str | None = None) -> JobStore:
    """Open (creating and migrating as needed) the store the server was pointed at.

    A postgresql:// URL selects the PostgreSQL store, which several replicas
    can share; without one, the embedded SQLite file in data_dir.
    """
    store: JobStore
    if url is None:
        store = SqliteJobStore(data_dir / "zbrain.db")
    else:
        # Imported here so that the embedded default never loads the driver.
        from .postgres import PostgresJobStore

        store = PostgresJobStore(url)
    await store.open()
    return store
