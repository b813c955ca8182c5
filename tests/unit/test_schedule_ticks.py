"""When schedules tick and what a due tick does: cron in time zones across
daylight-saving changes, intervals, and the overlap and catch-up policies."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from zbrain.models import CatchUpPolicy, OverlapPolicy
from zbrain_server.core import schedules
from zbrain_server.core.schedules import Schedule, TimingError

SECOND = 1_000_000
PARIS = ZoneInfo("Europe/Paris")


def us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def schedule(**overrides: object) -> Schedule:
    fields: dict[str, object] = dict(
        org_id="acme",
        id="s",
        cron="",
        time_zone="",
        interval_us=0,
        job_spec=b"",
        template=None,
        overlap=OverlapPolicy.SKIP,
        catch_up=CatchUpPolicy.SKIP,
        paused=False,
        next_fire_time_us=None,
        last_fire_time_us=None,
        last_job_id="",
        create_time_us=0,
        update_time_us=0,
    )
    fields.update(overrides)
    return Schedule(**fields)  # type: ignore[arg-type]


def test_interval_ticks_fall_on_multiples_of_the_interval() -> None:
    every_2s = schedule(interval_us=2 * SECOND)

    assert schedules.next_tick(every_2s, 101 * SECOND + 5) == 102 * SECOND
    assert schedules.next_tick(every_2s, 102 * SECOND) == 104 * SECOND
    assert schedules.last_tick(every_2s, 103 * SECOND) == 102 * SECOND


def test_cron_ticks_in_a_time_zone() -> None:
    nightly = schedule(cron="30 2 * * *", time_zone="Europe/Paris")
    after = us(datetime(2026, 1, 10, 12, 0, tzinfo=PARIS))

    tick = datetime.fromtimestamp(schedules.next_tick(nightly, after) / 1e6, PARIS)

    assert (tick.day, tick.hour, tick.minute) == (11, 2, 30)


def test_a_time_skipped_by_spring_forward_fires_after_the_gap() -> None:
    nightly = schedule(cron="30 2 * * *", time_zone="Europe/Paris")
    after = us(datetime(2026, 3, 28, 12, 0, tzinfo=PARIS))  # 2:30 does not exist on the 29th

    tick = datetime.fromtimestamp(schedules.next_tick(nightly, after) / 1e6, PARIS)

    assert (tick.day, tick.hour, tick.minute) == (29, 3, 0)


def test_a_time_repeated_by_fall_back_fires_once() -> None:
    nightly = schedule(cron="30 2 * * *", time_zone="Europe/Paris")
    after = us(datetime(2026, 10, 24, 12, 0, tzinfo=PARIS))  # 2:30 happens twice on the 25th

    first = schedules.next_tick(nightly, after)
    second = schedules.next_tick(nightly, first)

    assert (second - first) / SECOND / 3600 == 25  # the next is the 26th, not an hour later


@pytest.mark.parametrize(
    ("cron", "zone", "interval", "field"),
    [
        ("", "", 0, "cron"),
        ("* * * * *", "", SECOND, "cron"),
        ("* * * *", "", 0, "cron"),
        ("* * * * * *", "", 0, "cron"),
        ("61 * * * *", "", 0, "cron"),
        ("0 2 * * *", "Mars/Base", 0, "time_zone"),
        ("", "", SECOND // 2, "interval"),
        ("", "Europe/Paris", SECOND, "time_zone"),
    ],
)
def test_bad_timing_names_its_field(cron: str, zone: str, interval: int, field: str) -> None:
    with pytest.raises(TimingError) as refused:
        schedules.check_timing(cron, zone, interval)

    assert refused.value.field == field


def test_a_due_tick_on_time_submits_and_moves_to_the_next() -> None:
    s = schedule(interval_us=10 * SECOND, next_fire_time_us=100 * SECOND)

    firing = schedules.plan_fire(s, 100 * SECOND + 1000, False, 5 * SECOND)

    assert (firing.tick_us, firing.submit, firing.next_fire_time_us, firing.missed_ticks) == (
        100 * SECOND,
        True,
        110 * SECOND,
        0,
    )


@pytest.mark.parametrize(
    ("overlap", "submit", "cancel"),
    [
        (OverlapPolicy.SKIP, False, False),
        (OverlapPolicy.ALLOW, True, False),
        (OverlapPolicy.CANCEL_PREVIOUS, True, True),
    ],
)
def test_the_overlap_policy_decides_while_the_last_job_runs(
    overlap: OverlapPolicy, submit: bool, cancel: bool
) -> None:
    s = schedule(
        interval_us=10 * SECOND, next_fire_time_us=100 * SECOND, overlap=overlap, last_job_id="j"
    )

    firing = schedules.plan_fire(s, 100 * SECOND, True, 5 * SECOND)

    assert (firing.submit, firing.cancel_previous) == (submit, cancel)
    assert firing.next_fire_time_us == 110 * SECOND
    assert ("still runs" in firing.skipped_reason) is not submit


def test_missed_ticks_are_skipped_under_skip() -> None:
    s = schedule(interval_us=10 * SECOND, next_fire_time_us=100 * SECOND)

    firing = schedules.plan_fire(s, 163 * SECOND, False, 5 * SECOND)

    # Ticks 100..150 were more than 5s late at 163; 160 is on time and fires next.
    assert (firing.submit, firing.missed_ticks, firing.next_fire_time_us) == (
        False,
        6,
        160 * SECOND,
    )


def test_missed_ticks_make_one_job_for_the_latest_under_run_once() -> None:
    s = schedule(
        interval_us=10 * SECOND, next_fire_time_us=100 * SECOND, catch_up=CatchUpPolicy.RUN_ONCE
    )

    firing = schedules.plan_fire(s, 163 * SECOND, False, 5 * SECOND)

    assert (firing.submit, firing.tick_us, firing.missed_ticks) == (True, 150 * SECOND, 6)
    assert firing.next_fire_time_us == 160 * SECOND


def test_missed_cron_ticks_are_counted() -> None:
    hourly = schedule(cron="0 * * * *", next_fire_time_us=us(datetime(2026, 1, 1, tzinfo=UTC)))

    firing = schedules.plan_fire(
        hourly, us(datetime(2026, 1, 2, 0, 30, tzinfo=UTC)), False, 60 * SECOND
    )

    assert firing.missed_ticks == 25  # 00:00 on the 1st through 00:00 on the 2nd
    assert firing.next_fire_time_us == us(datetime(2026, 1, 2, 1, 0, tzinfo=UTC))


def test_missed_cron_ticks_are_counted_up_to_a_bound() -> None:
    every_minute = schedule(
        cron="* * * * *", next_fire_time_us=us(datetime(2026, 1, 1, tzinfo=UTC))
    )

    firing = schedules.plan_fire(
        every_minute, us(datetime(2026, 7, 1, tzinfo=UTC)), False, 60 * SECOND
    )

    assert firing.missed_ticks == schedules.MISSED_COUNTED
    assert firing.skipped_reason.startswith(f"at least {schedules.MISSED_COUNTED} ticks")
    assert firing.next_fire_time_us == us(datetime(2026, 7, 1, 0, 0, tzinfo=UTC))


def test_upcoming_lists_the_next_ticks() -> None:
    s = schedule(interval_us=SECOND, next_fire_time_us=5 * SECOND)

    assert schedules.upcoming(s, 3) == [5 * SECOND, 6 * SECOND, 7 * SECOND]
    assert schedules.upcoming(schedule(interval_us=SECOND, paused=True), 3) == []


def test_a_ticks_labels_and_key_name_the_schedule_and_tick() -> None:
    tick = us(datetime(2026, 1, 1, 2, 30, tzinfo=UTC))

    assert schedules.tick_labels("nightly", tick) == {
        "zbrain.schedule": "nightly",
        "zbrain.tick": "2026-01-01T02:30:00Z",
    }
    assert schedules.tick_request_id("nightly", tick) == f"schedule:nightly:{tick}"
