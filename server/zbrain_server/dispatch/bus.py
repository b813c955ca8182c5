"""The in-process bus that fans committed events out to live subscribers.

The store hands every committed transaction's events to `EventBus.publish`
in sequence order (through the dispatcher's listener). Subscribers
(StreamEvents, and the console's event socket) read the backlog from the
store, then take live events from a buffer of their own, bounded both in
events and in bytes: one that falls a buffer behind is cut off with
RESOURCE_EXHAUSTED and resumes from its last sequence, so a slow reader never
grows the server's memory, however much output the jobs print.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator, Sequence

from zbrain.errors import ResourceExhaustedError

from ..core.model import EventRecord, event_size

DEFAULT_BUFFER = 10_000
DEFAULT_BUFFER_BYTES = 8 << 20


class SubscriberTooSlow(ResourceExhaustedError):
    """A subscriber's buffer filled up; it must reconnect from its last sequence."""


class Subscription:
    """Live events for one subscriber: those of one org under one topic prefix."""

    def __init__(
        self, org_id: str | None, topic_prefix: str, capacity: int, capacity_bytes: int
    ) -> None:
        self.org_id = org_id
        self.topic_prefix = topic_prefix
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self._buffer: collections.deque[EventRecord] = collections.deque()
        self._buffered_bytes = 0
        self._ready = asyncio.Event()
        self.overflowed = False

    def wants(self, record: EventRecord) -> bool:
        return (self.org_id is None or record.org_id == self.org_id) and record.topic.startswith(
            self.topic_prefix
        )

    def offer(self, records: Sequence[EventRecord]) -> None:
        if self.overflowed:
            return
        size = sum(map(event_size, records))
        if (
            len(self._buffer) + len(records) > self.capacity
            or self._buffered_bytes + size > self.capacity_bytes
        ):
            self.overflowed = True
            self._buffer.clear()
            self._buffered_bytes = 0
        else:
            self._buffer.extend(records)
            self._buffered_bytes += size
        self._ready.set()

    async def next_batch(self) -> list[EventRecord]:
        """Wait for live events and take all that are buffered; SubscriberTooSlow on overflow."""
        await self._ready.wait()
        self._ready.clear()
        if self.overflowed:
            raise SubscriberTooSlow("subscriber too slow")
        batch = list(self._buffer)
        self._buffer.clear()
        self._buffered_bytes = 0
        return batch


class EventBus:
    """Fans committed events out to subscribers, each with a bounded buffer."""

    def __init__(
        self, buffer_size: int = DEFAULT_BUFFER, buffer_bytes: int = DEFAULT_BUFFER_BYTES
    ) -> None:
        self.buffer_size = buffer_size
        self.buffer_bytes = buffer_bytes
        self._subscriptions: set[Subscription] = set()

    def publish(self, records: Sequence[EventRecord]) -> None:
        if not self._subscriptions:
            return
        # Subscribers need only the stored form: copies without the decoded
        # bodies (a log event's lines, twice over) are what a slow one holds.
        light = [
            EventRecord(r.sequence, r.topic, r.org_id, r.job_id, r.time_us, r.payload)
            for r in records
        ]
        for subscription in self._subscriptions:
            wanted = [record for record in light if subscription.wants(record)]
            if wanted:
                subscription.offer(wanted)

    @contextlib.contextmanager
    def subscribe(self, org_id: str | None, topic_prefix: str = "") -> Iterator[Subscription]:
        subscription = Subscription(org_id, topic_prefix, self.buffer_size, self.buffer_bytes)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
