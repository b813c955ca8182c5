"""The dispatcher over a real SQLite store, driven into the orders of events
where a dispatch pass could leave a runnable job to the next tick (a minute
apart here, so a job left over shows as a timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.conftest import eventually
from tests.store.support import new_job
from zbrain_server.config import ServerConfig
from zbrain_server.core.model import Lease, now_us
from zbrain_server.dispatch.dispatcher import Dispatcher
from zbrain_server.dispatch.metrics import Telemetry
from zbrain_server.dispatch.sessions import WorkerSession
from zbrain_server.dispatch.signals import JobSignals
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import sqlite_store
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
    try:
        # The pass rotates its consumers by one before it starts: the plain
        # worker is asked first, and finds nothing it can run.
        await dispatcher.connect(with_gpu)
        await dispatcher.connect(plain)
        await dispatcher.start()

        lease = await asyncio.wait_for(with_gpu.outbox.get(), timeout=15)
        assert isinstance(lease, Lease) and lease.job.id == job.id
        assert plain.outbox.empty()
    finally:
        await dispatcher.stop()
        await store.close()
