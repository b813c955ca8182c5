"""The pure rules of sharing (core/limits.py): which worker meets a job's
requirements, which pause holds a job, the starts-per-second bucket, and what
`zbrain get` says holds a waiting job."""

from __future__ import annotations

import pytest

from zbrain.models import WaitingCause
from zbrain_server.core import limits
from zbrain_server.core.limits import Bucket, OrgSettings, WaitingFacts

SECOND = 1_000_000


@pytest.mark.parametrize(
    ("requires", "labels", "meets"),
    [
        ({}, {}, True),
        ({"gpu": "a100"}, {"gpu": "a100", "region": "eu"}, True),
        ({"gpu": "a100"}, {"gpu": "h100"}, False),
        ({"gpu": "a100"}, {}, False),
        ({"region": ""}, {"region": "us"}, True),
        ({"region": ""}, {"gpu": "a100"}, False),
    ],
)
def test_a_worker_meets_a_jobs_requirements_by_value_or_by_key(
    requires: dict[str, str], labels: dict[str, str], meets: bool
) -> None:
    assert limits.meets(requires, labels) is meets


def test_a_selector_matches_the_jobs_holding_all_its_pairs() -> None:
    selector = {"team": "data", "env": "prod"}

    assert limits.selected({"team": "data", "env": "prod", "x": "1"}, selector)
    assert not limits.selected({"team": "data"}, selector)


def test_pausing_a_selector_twice_keeps_it_once_and_resuming_removes_it() -> None:
    once = limits.with_selector((), {"a": "1"}, present=True)
    twice = limits.with_selector(once, {"a": "1"}, present=True)

    assert twice == ({"a": "1"},)
    assert limits.with_selector(twice, {"a": "1"}, present=False) == ()


def test_the_bucket_refills_at_its_rate_up_to_one_seconds_worth() -> None:
    empty = Bucket(0.0, 0)

    assert empty.refilled(4.0, SECOND // 2).starts() == 2
    assert empty.refilled(4.0, 60 * SECOND).starts() == 4
    assert empty.refilled(0.5, 60 * SECOND).starts() == 1  # at least one start
    assert empty.until_next_us(4.0) == SECOND // 4 + 1


def facts(**overrides: object) -> WaitingFacts:
    values: dict[str, object] = dict(
        settings=OrgSettings("acme"),
        org_running=0,
        key_running=0,
        bucket_starts=None,
        worker_matches=True,
    )
    values.update(overrides)
    return WaitingFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("waiting", "hold"),
    [
        (
            facts(settings=OrgSettings("acme", paused=True), worker_matches=False),
            WaitingCause.PAUSED,
        ),
        (facts(worker_matches=False), WaitingCause.NO_WORKER),
        (
            facts(settings=OrgSettings("acme", max_running_jobs=2), org_running=2),
            WaitingCause.MAX_RUNNING,
        ),
        (
            facts(settings=OrgSettings("acme", max_starts_per_second=1), bucket_starts=0),
            WaitingCause.RATE,
        ),
        (facts(key_running=1), WaitingCause.CONCURRENCY_KEY),
        (facts(), WaitingCause.SLOTS),
    ],
)
def test_get_names_the_first_thing_that_holds_a_job(
    waiting: WaitingFacts, hold: WaitingCause
) -> None:
    found, reason = limits.hold({}, {}, "customer-42", 0, waiting)

    assert found is hold
    assert reason.startswith("waiting: ")
