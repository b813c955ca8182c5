"""The store's writes (over SQLite) against callers that hang up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.store.support import new_job
from zbrain.errors import StoreConflictError
from zbrain_server.core.model import now_us
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import JobStore, sqlite_store
from zbrain_server.store.engine import Tx
from zbrain_server.store.ops import Program


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    """An opened SQLite store, closed after the test."""
    opened = sqlite_store(tmp_path / "zbrain.db", EVENT_CODEC)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_canceled_group_ends_only_once_the_thread_has_committed_it(
    store: JobStore,
) -> None:
    # The engine's writer task is canceled when the store closes with a group
    # in the thread: it must not go on while the thread still writes.
    driver = store._driver
    started, release = threading.Event(), threading.Event()

    def program() -> Program[str]:
        started.set()
        release.wait(30)
        return "committed"
        yield  # a generator, as every program is

    writing: asyncio.Future[str] = asyncio.ensure_future(driver.run_group(program()))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        writing.cancel()
        for _ in range(20):  # turns of the loop in which a careless wait would end
            await asyncio.sleep(0)
        assert not writing.done(), "the caller went on while the thread held the group"
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await writing
    # The writer is free again, its transaction over.
    [(job, _)] = await store.create_jobs([new_job()], now_us())
    assert await store.get_job(job.id) == job


async def test_a_write_whose_caller_hung_up_still_runs_again_after_a_conflict(
    store: JobStore,
) -> None:
    # Two writes share a group; the first meets a conflict (a deadlock on
    # PostgreSQL, say) after its caller hung up: it is run again all the same.
    engine = store._engine
    runs: list[int] = []

    def conflicting(tx: Tx) -> Program[str]:
        runs.append(len(runs))
        if len(runs) == 1:
            raise StoreConflictError("deadlock detected")
        return "done"
        yield

    def plain(tx: Tx) -> Program[str]:
        return "plain"
        yield

    gone = asyncio.ensure_future(engine.write(conflicting))
    staying = asyncio.ensure_future(engine.write(plain))
    await asyncio.sleep(0)  # one turn: both queued (before any await) for the same group
    gone.cancel()
    assert await staying == "plain"
    await eventually(lambda: len(runs) == 2)
