"""The dispatcher over a real store, driven into the orders of events
where a dispatch pass could leave a runnable job to the next tick (a minute
apart here, so a job left over shows as a timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from tests.conftest import eventually
from tests.postgres import drop_schema, new_schema_url, postgres_url
from tests.store.support import new_job
from zbrain_server.config import ServerConfig
from zbrain_server.core.model import Edge, JobState, Lease, now_us
from zbrain_server.dispatch.dispatcher import Dispatcher
from zbrain_server.dispatch.metrics import Telemetry
from zbrain_server.dispatch.sessions import WorkerSession
from zbrain_server.dispatch.signals import JobSignals
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import JobStore, postgres_store, sqlite_store
from zbrain_server.store.jobs import CommitLeasing


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
    dispatcher = Dispatcher(store, ServerConfig(poll_interval_s=60), JobSignals(), Telemetry())
    store.set_event_listener(dispatcher.observe)
    session = WorkerSession("w", ("acme",), capacity=1)
    try:
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

        lease = await asyncio.wait_for(session.outbox.get(), timeout=15)
        assert isinstance(lease, Lease) and lease.job.id == job.id
    finally:
        await dispatcher.stop()
        await store.close()


async def test_a_worker_without_a_jobs_labels_does_not_hide_it_from_one_with_them(
    tmp_path: Path,
) -> None:
    store = sqlite_store(tmp_path / "zbrain.db", EVENT_CODEC)
    await store.open()
    # Runnable before any dispatcher is there to lease it in its commit, as a
    # job another replica submitted, a retry or a delayed job falling due is.
    [(job, _)] = await store.create_jobs([new_job(requires={"gpu": "1"})], now_us())
    dispatcher = Dispatcher(store, ServerConfig(poll_interval_s=60), JobSignals(), Telemetry())
    store.set_event_listener(dispatcher.observe)
    with_gpu = WorkerSession("gpu", ("acme",), capacity=1, labels={"gpu": "1"})
    plain = WorkerSession("plain", ("acme",), capacity=1)
    asked = noting_leases(store)
    try:
        # The pass rotates its consumers by one before it starts: the plain
        # worker is asked first, and finds nothing it can run.
        await dispatcher.connect(with_gpu)
        await dispatcher.connect(plain)
        await dispatcher.start()

        lease = await asyncio.wait_for(with_gpu.outbox.get(), timeout=15)
        assert isinstance(lease, Lease) and lease.job.id == job.id
        assert plain.outbox.empty()
        assert asked[:2] == [("plain", []), ("gpu", [lease])], "the plain worker was asked first"
    finally:
        await dispatcher.stop()
        await store.close()


async def test_parents_a_replica_skipped_while_a_child_was_stored_are_leased_once_it_is(
    tmp_path: Path,
) -> None:
    base_url = await postgres_url()
    url, schema = new_schema_url(base_url)
    store, other = postgres_store(url, EVENT_CODEC), postgres_store(url, EVENT_CODEC)
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(drop_schema, base_url, schema)
        await store.open()
        cleanup.push_async_callback(store.close)
        await other.open()
        cleanup.push_async_callback(other.close)
        [(parent, _)] = await store.create_jobs([new_job()], now_us())
        dispatcher = Dispatcher(store, ServerConfig(poll_interval_s=60), JobSignals(), Telemetry())
        cleanup.push_async_callback(dispatcher.stop)
        store.set_event_listener(dispatcher.observe)
        asked = noting_leases(store)
        session = WorkerSession("w", ("acme",), capacity=1)
        # Another replica storing a child of the parent holds the parent's row
        # (the row lock `create_jobs` takes on parents) while this one's pass runs.
        storing = await asyncpg.connect(base_url)
        cleanup.push_async_callback(storing.close)
        await storing.execute(f'SET search_path TO "{schema}"')
        async with storing.transaction():
            await storing.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", parent.id)
            await dispatcher.connect(session)
            await dispatcher.start()
            await eventually(lambda: asked[:1] == [("w", [])])  # it skipped the locked parent
        [(child, _)] = await other.create_jobs([new_job(depends_on=(Edge(parent.id),))], now_us())
        assert child.state is JobState.BLOCKED

        lease = await asyncio.wait_for(session.outbox.get(), timeout=15)
        assert isinstance(lease, Lease) and lease.job.id == parent.id


def noting_leases(store: JobStore) -> list[tuple[str, list[Lease]]]:
    """Note each lease the dispatcher asks of `store`: the worker's id and what it got."""
    asked: list[tuple[str, list[Lease]]] = []
    lease_jobs = store.lease_jobs

    async def noted(worker_id: str, *args: Any, **kwargs: Any) -> list[Lease]:
        leases = await lease_jobs(worker_id, *args, **kwargs)
        asked.append((worker_id, leases))
        return leases

    store.lease_jobs = noted  # type: ignore[method-assign]
    return asked
