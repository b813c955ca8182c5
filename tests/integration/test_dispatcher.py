"""The dispatcher over a real SQLite store, driven into the moment where a
dispatch pass and a group commit's leasing (`JobStore.lease_in_commit`)
race for one worker's slots: the order of events a busy PostgreSQL replica
showed, where a job submitted through another replica sat unleased until
the next tick."""

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
    store = sqlite_store(tmp_path / "zbrain.db", EVENT_CODEC)
    await store.open()
    plans: list[Callable[..., CommitLeasing | None]] = []
    register = store.lease_in_commit

    def capture(plan: Callable[..., CommitLeasing | None]) -> None:
        plans.append(plan)
        register(plan)

    store.lease_in_commit = capture  # type: ignore[method-assign]
    # A tick a minute apart: only a kick can bring the job to the worker in time.
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
