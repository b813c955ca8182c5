"""What only the PostgreSQL backend promises: its URL, errors a person can act
on, event delivery that survives losing its connection, and writes that
survive PostgreSQL breaking a deadlock."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from tests.postgres import drop_schema, new_schema_url, postgres_url
from tests.store.support import LEASE_TTL, T0, Databases, Listener, new_job
from zbrain.errors import StoreError
from zbrain_server.core.model import JobState
from zbrain_server.rpc.codec import EVENT_CODEC
from zbrain_server.store import JobStore, postgres_store
from zbrain_server.store.postgres.driver import QUERIES, PostgresDriver

# Whether any session waits for a lock the session of backend pid $1 holds.
BLOCKED_BY = "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))"


async def blocking(conn: asyncpg.Connection) -> None:
    """Return once another session waits for a lock this connection's session holds.

    PostgreSQL tells no one when a session starts waiting, so this polls.
    """
    async with asyncio.timeout(10):
        while True:
            if await conn.fetchval(BLOCKED_BY, conn.get_server_pid()):
                return
            await asyncio.sleep(0.01)


async def test_an_unreachable_database_is_a_store_error_naming_where() -> None:
    store = JobStore(PostgresDriver("postgresql://postgres@127.0.0.1:1/test"), EVENT_CODEC)

    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1: "):
        await store.open()


def test_the_schema_comes_from_the_url_and_defaults_to_zbrain() -> None:
    assert PostgresDriver("postgresql://db.example/zb?schema=team_a").schema == "team_a"
    assert PostgresDriver("postgresql://db.example/zb?sslmode=disable").schema == "zbrain"


@pytest.mark.parametrize("schema", ["Upper", "with-dash", "1digit", "x" * 50, ""])
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused(schema: str) -> None:
    with pytest.raises(StoreError, match="invalid schema"):
        PostgresDriver(f"postgresql://db.example/zb?schema={schema}")


def test_a_url_of_another_database_is_refused() -> None:
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        PostgresDriver("mysql://db.example/zb")


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
async def test_events_committed_while_the_listen_connection_is_down_still_arrive(
    store: JobStore, databases: Databases
) -> None:
    assert isinstance(store.driver, PostgresDriver)
    schema = store.driver.schema
    listener = Listener()
    store.set_event_listener(listener)
    await store.create_jobs([new_job()], T0)
    await listener.wait_through(1)

    conn = await asyncpg.connect(await postgres_url())
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            f"zbrain-events/{schema}",
        )
    finally:
        await conn.close()
    # Written through another replica, so that no commit of this store wakes it:
    # only re-listening (and reading what it missed) can deliver them.
    other = await databases.open()
    await other.create_jobs([new_job(), new_job()], T0)
    await listener.wait_through(3)

    assert killed == 1
    assert [[r.sequence for r in batch] for batch in listener.batches] == [[1], [2, 3]]


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
async def test_a_write_failed_to_break_a_deadlock_runs_again(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(store.driver, PostgresDriver)
    schema = store.driver.schema
    [(first, _), (second, _)] = await store.create_jobs([new_job(), new_job()], T0)
    caplog.set_level(logging.INFO, logger="zbrain_server.store")
    other = await asyncpg.connect(await postgres_url())
    try:
        # The other session waits long before looking for deadlocks, so the
        # store's session finds the cycle and has its statement failed.
        await other.execute(f"SET search_path = {schema}; SET deadlock_timeout = '60s'")
        await other.execute("BEGIN")
        await other.execute("SELECT FROM jobs WHERE id = $1 FOR UPDATE", second.id)
        # One group: the first cancel locks its job, the second waits for the other session.
        cancels = asyncio.gather(store.cancel_job(first.id, T0), store.cancel_job(second.id, T0))
        await blocking(other)
        await other.execute("SELECT FROM jobs WHERE id = $1 FOR UPDATE", first.id)
        await other.execute("COMMIT")
        answers = await cancels
    finally:
        await other.close()

    assert [(job.id, job.state) for job, _ in answers] == [
        (first.id, JobState.CANCELED),
        (second.id, JobState.CANCELED),
    ]
    assert "deadlock detected" in caplog.text, "the second cancel did meet the deadlock"


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
async def test_installations_sharing_a_database_never_hold_back_each_others_orgs(
    store: JobStore,
) -> None:
    assert isinstance(store.driver, PostgresDriver)
    await store.orgs.update("acme", T0, {"max_running_jobs": 2})
    [(job, _)] = await store.create_jobs([new_job()], T0)
    base_url = await postgres_url()
    other_url, other_schema = new_schema_url(base_url)
    other = postgres_store(other_url, EVENT_CODEC)  # another installation, its own org "acme"
    await other.open()
    session = await asyncpg.connect(base_url)
    lock = QUERIES["try_lock_limit"]

    async def lease_while_held_in(schema: str) -> list[str]:
        """Lease while a session of `schema` holds org acme's leasing lock, as
        a replica of that installation does in the middle of leasing."""
        await session.execute(f'SET search_path TO "{schema}"')
        async with session.transaction():
            assert await session.fetchval(lock.sql, *lock.args({"name": "org:acme"}))
            leases = await store.lease_jobs("w", ["acme"], 2, T0, LEASE_TTL)
        return [lease.job.id for lease in leases]

    try:
        # Held by a replica of its own installation, the org waits its turn...
        assert await lease_while_held_in(store.driver.schema) == []
        # ...but not for another installation's org of the same name.
        assert await lease_while_held_in(other_schema) == [job.id]
    finally:
        await session.close()
        await other.close()
        await drop_schema(base_url, other_schema)
