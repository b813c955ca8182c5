"""The dispatcher over a real store, driven into the orders of events
where a dispatch pass could leave a runnable job to the next tick (a minute
apart here, so a job left over shows as a timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import eventually
from tests.postgres import drop_schema, new_schema_url, postgres_url
from tests.store.support import new_job
from zbrain_server.config import ServerConfig
from zbrain_server.core.model import Lease, now_us
from zbrain_server.dispatch.dispatcher import Dispatcher
from zbrain_server.dispatch.metrics import Telemetry
from zbrain_server.dispatch.sessions import WorkerSession
from zbrain_server.dispatch.signals import JobSignals
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import JobStore, postgres_store, sqlite_store
from zbrain_server.store.jobs import CommitLeasing


@contextlib.asynccontextmanager
async def dispatching(store: JobStore) -> AsyncIterator[Dispatcher]:
    """A dispatcher over an opened store, as a server makes one (not started:
    the test chooses when its first pass runs); stopped, and the store
    closed, on leaving."""
    dispatcher = Dispatcher(store, ServerConfig(poll_interval_s=60), JobSignals(), Telemetry())
    store.set_event_listener(dispatcher.observe)
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        await store.close()


async def next_lease(session: WorkerSession) -> Lease:
    """The next lease pushed to a worker stream; a timeout well under the tick."""
    lease = await asyncio.wait_for(session.outbox.get(), timeout=15)
    assert isinstance(lease, Lease)
    return lease


def noting_leases(store: JobStore, slowly: bool = False) -> list[tuple[str, list[Lease]]]:
    """Note each lease the dispatcher asks of `store`: the worker's id and
    what it got. `slowly`: each answers 50 ms late, as on a busy machine."""
    asked: list[tuple[str, list[Lease]]] = []
    lease_jobs = store.lease_jobs

    async def noted(worker_id: str, *args: Any, **kwargs: Any) -> list[Lease]:
        leases = await lease_jobs(worker_id, *args, **kwargs)
        if slowly:
            await asyncio.sleep(0.05)  # past a retry the lease asked for 20 ms on
        asked.append((worker_id, leases))
        return leases

    store.lease_jobs = noted  # type: ignore[method-assign]
    return asked


async def test_a_pass_that_found_the_slots_reserved_runs_again_when_the_commit_leaves_them_free(
    tmp_path: Path,
) -> None:
    # The order of events a busy PostgreSQL replica showed: a dispatch pass
    # and a group commit's leasing (`JobStore.lease_in_commit`) raced for one
    # worker's slots, and a job submitted through another replica sat unleased.
    store = sqlite_store(tmp_path / "zbrain.db", EVENT_CODEC)
    await store.open()
    plans: list[Callable[..., CommitLeasing | None]] = []
    register = store.lease_in_commit

    def capture(plan: Callable[..., CommitLeasing | None]) -> None:
        plans.append(plan)
        register(plan)

    store.lease_in_commit = capture  # type: ignore[method-assign]
    async with dispatching(store) as dispatcher:
        session = WorkerSession("w", ("acme",), capacity=1)
        await dispatcher.connect(session)
        # A group commit forms (another worker's result, say) and claims the idle slot...
        [plan] = plans
        leasing = plan(frozenset({"acme"}), frozenset())
        assert leasing is not None and session.free_slots == 0
        # ...a job becomes runnable before it commits (its lease query ran
        # already), and the pass it kicks finds the slot reserved...
        [(job, _)] = await store.create_jobs([new_job()], now_us())
        await dispatcher.start()
        await eventually(lambda: session.passed_over)
        # ...then the group commits having leased nothing.
        leasing.done(None)

        assert (await next_lease(session)).job.id == job.id


async def test_a_worker_without_a_jobs_labels_does_not_hide_it_from_one_with_them(
    tmp_path: Path,
) -> None:
    store = sqlite_store(tmp_path / "zbrain.db", EVENT_CODEC)
    await store.open()
    # Runnable before any dispatcher is there to lease it in its commit, as a
    # job another replica submitted, a retry or a delayed job falling due is.
    [(job, _)] = await store.create_jobs([new_job(requires={"gpu": "1"})], now_us())
    asked = noting_leases(store)
    async with dispatching(store) as dispatcher:
        with_gpu = WorkerSession("gpu", ("acme",), capacity=1, labels={"gpu": "1"})
        plain = WorkerSession("plain", ("acme",), capacity=1)
        # The pass rotates its consumers by one before it starts: the plain
        # worker is asked first, and finds nothing it can run.
        await dispatcher.connect(with_gpu)
        await dispatcher.connect(plain)
        await dispatcher.start()

        lease = await next_lease(with_gpu)
        assert lease.job.id == job.id and plain.outbox.empty()
        assert asked[:2] == [("plain", []), ("gpu", [lease])], "the plain worker was asked first"


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
async def test_a_job_another_transaction_held_while_a_pass_ran_is_leased_once_let_go(
    busy: bool,
) -> None:
    # On PostgreSQL leasing skips rows another transaction holds (SKIP
    # LOCKED); a transaction may hold a runnable job and change nothing of it
    # (another replica storing a child of it, or leasing for a worker of
    # several orgs), so no event follows to wake this replica's pass: the
    # lease asks for a second look 20 ms on, which a busy machine's pass
    # reaches only after that time.
    base_url = await postgres_url()
    url, schema = new_schema_url(base_url)
    store = postgres_store(url, EVENT_CODEC)
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(drop_schema, base_url, schema)
        await store.open()
        [(job, _)] = await store.create_jobs([new_job()], now_us())
        asked = noting_leases(store, slowly=busy)
        dispatcher = await cleanup.enter_async_context(dispatching(store))
        session = WorkerSession("w", ("acme",), capacity=1)
        holder = await asyncpg.connect(base_url)
        cleanup.push_async_callback(holder.close)
        await holder.execute(f'SET search_path TO "{schema}"')
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.id)
            await dispatcher.connect(session)
            await dispatcher.start()
            await eventually(lambda: asked[:1] == [("w", [])])  # it skipped the held job
        # Committed having changed nothing: no event, only a second look finds it.

        assert (await next_lease(session)).job.id == job.id
