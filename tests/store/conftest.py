"""Fixtures of the store conformance suite: one opened store per backend.

Every test in tests/store/ runs once for each entry of BACKENDS. A backend is
a function that, given a test's temporary directory, makes a throwaway
database and yields a function making a fresh, unopened `JobStore` over it
(the same database each time it is called), so a test can close its store
and open that database again as a restarted server would, or open two
stores on it as two replicas would; the database is gone after the test.
The tests speak only `JobStore`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import drop_schema, new_schema_url, postgres_url
from tests.store.support import LEASE_TTL, T0, Databases, LeaseOne, Reopen, Submit, new_job
from zbrain_server.core.model import Job, Lease
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import JobStore, postgres_store, sqlite_store

Backend = Callable[[Path], contextlib.AbstractAsyncContextManager[Callable[[], JobStore]]]


@contextlib.asynccontextmanager
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Callable[[], JobStore]]:
    """A database file in the test's temporary directory."""
    yield lambda: sqlite_store(tmp_path / "zbrain.db", EVENT_CODEC)


@contextlib.asynccontextmanager
async def postgresql_database(tmp_path: Path) -> AsyncIterator[Callable[[], JobStore]]:
    """A schema of its own in the test PostgreSQL, dropped afterwards."""
    base_url = await postgres_url()
    url, schema = new_schema_url(base_url)
    try:
        yield lambda: postgres_store(url, EVENT_CODEC)
    finally:
        await drop_schema(base_url, schema)


BACKENDS: Mapping[str, Backend] = {
    "sqlite": sqlite_database,
    "postgresql": postgresql_database,
}


@pytest.fixture(params=sorted(BACKENDS))
async def databases(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Databases]:
    async with BACKENDS[request.param](tmp_path) as make:
        databases = Databases(make)
        try:
            yield databases
        finally:
            await databases.close_all()


@pytest.fixture
async def store(databases: Databases) -> JobStore:
    """An opened, empty store of the backend under test."""
    return await databases.open()


@pytest.fixture
def reopen(databases: Databases) -> Reopen:
    """Close a store and return a new one opened on the same database (a restart)."""
    return databases.reopen


@pytest.fixture
def submit(store: JobStore) -> Submit:
    """Create one job (fields as `new_job` takes them) at `now_us`, T0 by default."""

    async def submit(*, now_us: int = T0, **overrides: Any) -> Job:
        [(job, deduplicated)] = await store.create_jobs([new_job(**overrides)], now_us)
        assert not deduplicated
        return job

    return submit


@pytest.fixture
def lease_one(store: JobStore) -> LeaseOne:
    """Lease exactly one job of `org` (default "acme") at `now_us`; fail if none is runnable."""

    async def lease_one(
        *, org: str = "acme", now_us: int = T0, worker_id: str = "w1", ttl_us: int = LEASE_TTL
    ) -> Lease:
        [lease] = await store.lease_jobs(worker_id, [org], 1, now_us, ttl_us)
        return lease

    return lease_one
