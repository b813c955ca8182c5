"""Conformance: API tokens, queue counts and the health check."""

from __future__ import annotations

import pytest

from tests.store.support import SECOND, T0, Databases, LeaseOne, Reopen, Submit
from zbrain.errors import NotFoundError, StoreError
from zbrain_server.core.model import JobState, Role
from zbrain_server.core.tokens import Token
from zbrain_server.store import JobStore


def token(token_id: str, org_id: str = "acme", *, created: int = T0) -> Token:
    return Token(token_id, org_id, Role.CLIENT, f"token {token_id}", "f" * 64, created)


# -- tokens ----------------------------------------------------------------------


async def test_an_added_token_is_found_by_its_id(store: JobStore) -> None:
    added = token("t1")
    await store.add_token(added)

    assert await store.find_token("t1") == added
    assert await store.find_token("t2") is None


async def test_tokens_are_listed_per_org_oldest_first(store: JobStore) -> None:
    for token_id, org_id, created in [("t2", "acme", T0 + 2), ("t1", "acme", T0 + 1)]:
        await store.add_token(token(token_id, org_id, created=created))
    await store.add_token(token("t3", "other", created=T0 + 3))

    assert [t.id for t in await store.list_tokens("acme")] == ["t1", "t2"]
    assert [t.id for t in await store.list_tokens(None)] == ["t1", "t2", "t3"]
    assert await store.list_tokens("nobody") == []


async def test_a_revoke_keeps_the_first_revocation_time(store: JobStore) -> None:
    await store.add_token(token("t1"))

    first = await store.revoke_token("t1", T0 + SECOND)
    again = await store.revoke_token("t1", T0 + 2 * SECOND)

    assert first.revoke_time_us == again.revoke_time_us == T0 + SECOND
    assert await store.find_token("t1") == first


async def test_revoking_an_unknown_token_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError):
        await store.revoke_token("nope", T0)


async def test_only_unrevoked_tokens_count_as_having_tokens(store: JobStore) -> None:
    assert not await store.has_tokens()
    await store.add_token(token("t1"))
    assert await store.has_tokens()
    await store.revoke_token("t1", T0)
    assert not await store.has_tokens()


async def test_tokens_survive_a_restart(store: JobStore, reopen: Reopen) -> None:
    added = token("t1")
    await store.add_token(added)

    restarted = await reopen(store)

    assert await restarted.find_token("t1") == added


# -- counts and health -----------------------------------------------------------


async def test_unfinished_jobs_are_counted_by_org_and_state(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    await submit()
    await submit(org_id="other")
    canceled = await submit(org_id="other")
    await store.cancel_job(canceled.id, T0)
    await lease_one()

    assert await store.count_unfinished() == {
        ("acme", JobState.PENDING): 1,
        ("acme", JobState.RUNNING): 1,
        ("other", JobState.PENDING): 1,
    }


async def test_an_open_store_is_healthy(store: JobStore) -> None:
    await store.check_health()


async def test_a_closed_store_fails_with_a_store_error(
    store: JobStore, databases: Databases
) -> None:
    await databases.close(store)

    with pytest.raises(StoreError):
        await store.check_health()
    with pytest.raises(StoreError):
        await store.get_job("01939a4e-8b2c-7def-8123-456789abcdef")
