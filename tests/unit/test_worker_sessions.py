"""When a worker stream counts as silent: it holds leases and has sent
nothing for a lease TTL, so its leases are expiring and the commit that ends
them must not give their jobs back to it."""

from __future__ import annotations

from zbrain_server.dispatch.sessions import WorkerSession

TTL = 30_000_000


def test_an_idle_worker_is_never_silent_however_long_it_is_quiet() -> None:
    session = WorkerSession("w", ("default",), capacity=2, last_heard_at_us=0)
    session.check_heard(10 * TTL, TTL)
    assert not session.silent
    assert session.free_slots == 2


def test_a_worker_holding_a_lease_quiet_for_a_ttl_is_silent_until_heard_from() -> None:
    session = WorkerSession("w", ("default",), capacity=2, last_heard_at_us=0)
    session.hold("job", 1, "default")
    session.held_since_us = 5
    session.check_heard(TTL, TTL)
    assert not session.silent  # quiet for a little less than a TTL
    session.check_heard(TTL + 10, TTL)
    assert session.silent and session.free_slots == 0
    session.heard_from()
    assert session.free_slots == 1


def test_a_lease_just_given_to_a_long_idle_worker_does_not_make_it_silent() -> None:
    session = WorkerSession("w", ("default",), capacity=2, last_heard_at_us=0)
    session.hold("job", 1, "default")
    session.held_since_us = 10 * TTL  # leased now, after a long idle time
    session.check_heard(10 * TTL + 1, TTL)
    assert not session.silent
