"""Job ids: UUIDv7 layout, strictly increasing within and across milliseconds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from zbrain_server.core import ids

MS = 1_700_000_000_123
"""A fixed wall-clock millisecond; well before now, so it never meets real ids."""

SetClock = Callable[[int], None]


@pytest.fixture
def fresh_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the id generator afresh, as in a new process; restored afterwards."""
    monkeypatch.setattr(ids, "_last_ms", 0)
    monkeypatch.setattr(ids, "_counter", 0)


@pytest.fixture
def set_clock(fresh_generator: None, monkeypatch: pytest.MonkeyPatch) -> SetClock:
    """Freeze the id generator's clock (only its own) at a given millisecond."""

    def set_clock(ms: int) -> None:
        clock = SimpleNamespace(time_ns=lambda: ms * 1_000_000 + 999_999)
        monkeypatch.setattr(ids, "time", clock)

    return set_clock


def test_ids_are_version_7_rfc_9562_uuids() -> None:
    for _ in range(100):
        value = uuid.UUID(ids.new_job_id())
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_ids_are_canonical_lower_case_text() -> None:
    job_id = ids.new_job_id()

    assert job_id == str(uuid.UUID(job_id))
    assert ids.is_job_id(job_id)


def test_the_timestamp_prefix_is_the_creation_millisecond(set_clock: SetClock) -> None:
    set_clock(MS)

    assert uuid.UUID(ids.new_job_id()).int >> 80 == MS


@pytest.mark.usefixtures("fresh_generator")
def test_the_timestamp_prefix_follows_the_real_clock() -> None:
    before_ms = time.time_ns() // 1_000_000

    job_id = ids.new_job_id()

    after_ms = time.time_ns() // 1_000_000
    assert before_ms <= uuid.UUID(job_id).int >> 80 <= after_ms


def test_ids_increase_strictly_within_one_millisecond(set_clock: SetClock) -> None:
    set_clock(MS)

    made = [ids.new_job_id() for _ in range(3000)]

    assert made == sorted(set(made))
    assert {uuid.UUID(job_id).int >> 80 for job_id in made} == {MS}


def test_ids_keep_increasing_when_a_millisecond_runs_out_of_counter(
    set_clock: SetClock,
) -> None:
    set_clock(MS)

    made = [ids.new_job_id() for _ in range(10_000)]  # more than the 12-bit counter holds

    assert made == sorted(set(made))
    assert all(uuid.UUID(job_id).version == 7 for job_id in made)


def test_ids_keep_increasing_when_the_clock_steps_back(set_clock: SetClock) -> None:
    set_clock(MS)
    before = [ids.new_job_id() for _ in range(5)]
    set_clock(MS - 2_000)

    after = [ids.new_job_id() for _ in range(5)]

    assert before + after == sorted(set(before + after))


def test_ids_of_a_later_millisecond_sort_after(set_clock: SetClock) -> None:
    set_clock(MS)
    earlier = ids.new_job_id()
    set_clock(MS + 1)

    later = ids.new_job_id()

    assert earlier < later
    assert uuid.UUID(later).int >> 80 == MS + 1


def test_a_batch_of_ids_increases_and_runs_on_from_single_ids(set_clock: SetClock) -> None:
    set_clock(MS)
    single = ids.new_job_id()

    batch = ids.new_job_ids(10_000)  # overflows the 12-bit counter of one millisecond
    after = ids.new_job_id()

    made = [single, *batch, after]
    assert made == sorted(set(made))
    assert all(uuid.UUID(job_id).version == 7 for job_id in made)
    assert all(job_id == str(uuid.UUID(job_id)) for job_id in batch)
    assert len({job_id[-12:] for job_id in batch}) == len(batch)


def test_a_batch_in_a_new_millisecond_starts_there(set_clock: SetClock) -> None:
    set_clock(MS)
    earlier = ids.new_job_ids(3)
    set_clock(MS + 5)

    later = ids.new_job_ids(3)

    assert earlier[-1] < later[0]
    assert {uuid.UUID(job_id).int >> 80 for job_id in later} == {MS + 5}


def test_ids_carry_random_bits() -> None:
    made = [ids.new_job_id() for _ in range(100)]

    assert len({job_id[-12:] for job_id in made}) == 100


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-uuid",
        "01939A4E-8B2C-7DEF-8123-456789ABCDEF",
        "01939a4e8b2c7def8123456789abcdef",
        "{01939a4e-8b2c-7def-8123-456789abcdef}",
        "01939a4e-8b2c-7def-8123-456789abcdef0",
    ],
)
def test_only_canonical_uuid_text_is_a_job_id(text: str) -> None:
    assert not ids.is_job_id(text)
