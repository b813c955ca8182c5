"""What only the PostgreSQL backend promises: its URL, errors a person can act
on, and event delivery that survives losing its connection."""

from __future__ import annotations

import asyncpg
import pytest

from tests.postgres import postgres_url
from tests.store.support import T0, Listener, new_job
from zbrain.errors import StoreError
from zbrain_server.store import JobStore
from zbrain_server.store.postgres import PostgresJobStore


async def test_an_unreachable_database_is_a_store_error_naming_where() -> None:
    store = PostgresJobStore("postgresql://postgres@127.0.0.1:1/test")

    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1: "):
        await store.open()


def test_the_schema_comes_from_the_url_and_defaults_to_zbrain() -> None:
    assert PostgresJobStore("postgresql://db.example/zb?schema=team_a").schema == "team_a"
    assert PostgresJobStore("postgresql://db.example/zb?sslmode=disable").schema == "zbrain"


@pytest.mark.parametrize("schema", ["Upper", "with-dash", "1digit", "x" * 50, ""])
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused(schema: str) -> None:
    with pytest.raises(StoreError, match="invalid schema"):
        PostgresJobStore(f"postgresql://db.example/zb?schema={schema}")


def test_a_url_of_another_database_is_refused() -> None:
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        PostgresJobStore("mysql://db.example/zb")


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
async def test_events_committed_while_the_listen_connection_is_down_still_arrive(
    store: JobStore,
) -> None:
    assert isinstance(store, PostgresJobStore)
    listener = Listener()
    store.set_event_listener(listener)
    await store.create_jobs([new_job()], T0)
    await listener.wait_through(1)

    conn = await asyncpg.connect(await postgres_url())
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            f"zbrain-events/{store.schema}",
        )
    finally:
        await conn.close()
    await store.create_jobs([new_job(), new_job()], T0)
    await listener.wait_through(3)

    assert killed == 1
    assert [[r.sequence for r in batch] for batch in listener.batches] == [[1], [2, 3]]
