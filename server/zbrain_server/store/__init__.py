"""Job storage: one interface (`JobStore`), one module per database backend."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from .base import JobStore
from .sqlite import SqliteJobStore

__all__ = ["JobStore", "SqliteJobStore", "describe_store", "open_store"]


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


def describe_store(data_dir: Path, url: str | None = None) -> str:
    """Where the store lives, for people to read: no password is ever shown."""
    if url is None:
        return f"sqlite {data_dir / 'zbrain.db'}"
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql {user}{host}{port}{parts.path}"
