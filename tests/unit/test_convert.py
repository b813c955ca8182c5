"""The client's conversion of wire values, against protobuf's own (slower)
conversions it stands in for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from zbrain import JobState
from zbrain._convert import _at, _duration, _enum, _local_epoch, job, utc_time
from zbrain.v1 import job_pb2

# Before 1970, around it, a time with nanoseconds, and late dates.
TIMES = [
    (-86_400 * 365, 999_999_999),
    (-1, 500_000_000),
    (0, 0),
    (1_700_000_000, 123_456_789),
    (1_700_000_000, 999),
    (4_102_444_800, 1_000),
]


@pytest.fixture(params=["UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham"])
def local_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local time zone set to one with an odd offset."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    # Without the zone's data the C library falls back to UTC, silently.
    assert request.param == "UTC" or time.localtime().tm_gmtoff != 0
    yield request.param
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_zone")
@pytest.mark.parametrize(("seconds", "nanos"), TIMES)
def test_a_time_is_the_instant_protobuf_gives_in_the_local_zone_now(
    seconds: int, nanos: int
) -> None:
    value = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)

    converted = _at(value, _local_epoch())

    now = datetime.now().astimezone()
    assert converted == value.ToDatetime(tzinfo=now.tzinfo)
    assert utc_time(value) == value.ToDatetime(tzinfo=UTC)
    assert utc_time(value).utcoffset() == timedelta(0)
    assert converted.utcoffset() == now.utcoffset()
    assert converted.tzname() == now.tzname()


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(0, 0), (3600, 0), (1, 999_999), (-1, -999), (-5, -500_000_001)]
)
def test_a_duration_is_the_timedelta_protobuf_gives(seconds: int, nanos: int) -> None:
    value = duration_pb2.Duration(seconds=seconds, nanos=nanos)

    assert _duration(value) == value.ToTimedelta()


def test_the_epoch_follows_a_change_of_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # As summer time begins or ends in a running process: another offset
    # and name from time.localtime(), another cached epoch.
    for zone, offset in [("UTC", 0), ("Asia/Kolkata", 19_800), ("UTC", 0)]:
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        epoch = _local_epoch()
        assert epoch.utcoffset() == timedelta(seconds=offset)
        assert epoch.tzname() == time.localtime().tm_zone
        assert epoch.timestamp() == 0
    monkeypatch.undo()
    time.tzset()


def test_a_wire_number_this_client_does_not_know_is_none() -> None:
    assert _enum(JobState, 2) is JobState.RUNNING
    assert _enum(JobState, 0) is JobState.UNSPECIFIED
    assert _enum(JobState, 999) is None


@pytest.mark.usefixtures("local_zone")
def test_every_time_of_a_job_is_converted() -> None:
    message = job_pb2.Job(id="j1", state=job_pb2.JOB_STATE_RUNNING)
    message.create_time.FromMicroseconds(1_700_000_000_000_001)
    message.last_transition.time.FromMicroseconds(1_700_000_000_000_002)
    message.attempts.add(number=1).start_time.FromMicroseconds(1_700_000_000_000_003)
    message.timeout.FromSeconds(90)
    zone = datetime.now().astimezone().tzinfo

    converted = job(message)

    assert converted.create_time == message.create_time.ToDatetime(tzinfo=zone)
    assert converted.last_transition is not None
    assert converted.last_transition.time == message.last_transition.time.ToDatetime(tzinfo=zone)
    assert converted.attempts[0].start_time == message.attempts[0].start_time.ToDatetime(
        tzinfo=zone
    )
    assert converted.update_time is None  # not set on the wire
    assert converted.timeout.total_seconds() == 90
