"""Job storage: one interface (`JobStore`), one module per database backend."""

from __future__ import annotations

from pathlib import Path

from .base import JobStore
from .sqlite import SqliteJobStore

__all__ = ["JobStore", "SqliteJobStore", "open_store"]


async def open_store(data_dir: Path) -> JobStore:
    """Open (creating and migrating as needed) the embedded SQLite store in data_dir."""
    store = SqliteJobStore(data_dir / "zbrain.db")
    await store.open()
    return store
