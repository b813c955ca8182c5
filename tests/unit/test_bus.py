"""The event bus holds a bounded number of bytes for each subscriber."""

from __future__ import annotations

import pytest

from zbrain_server.core.model import EventRecord, event_size
from zbrain_server.dispatch.bus import SubscriberTooSlow, Subscription


def record(sequence: int, payload_bytes: int) -> EventRecord:
    return EventRecord(sequence, "jobs/x/logs", "acme", "x", 0, b"p" * payload_bytes)


async def test_a_subscriber_past_its_bytes_is_told_to_resume() -> None:
    subscription = Subscription("acme", "", capacity=1000, capacity_bytes=10_000)
    subscription.offer([record(1, 4000)])
    subscription.offer([record(2, 4000)])

    subscription.offer([record(3, 4000)])

    with pytest.raises(SubscriberTooSlow):
        await subscription.next_batch()


async def test_a_subscriber_that_reads_in_time_gets_everything() -> None:
    subscription = Subscription("acme", "", capacity=1000, capacity_bytes=10_000)
    for sequence in range(1, 20):
        subscription.offer([record(sequence, 4000)])
        [taken] = await subscription.next_batch()
        assert taken.sequence == sequence


def test_a_records_size_counts_its_payload() -> None:
    assert event_size(record(1, 5000)) - event_size(record(1, 0)) == 5000
