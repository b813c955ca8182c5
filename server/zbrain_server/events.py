"""Events: what each recorded change says, and the in-process bus that fans them out.

The store writes an event in the same transaction as the change it records
and, once committed, hands the events to `EventBus.publish` in sequence
order. Subscribers (StreamEvents) read the backlog from the store, then take
live events from a bounded buffer of their own; one that falls a buffer
behind is cut off with RESOURCE_EXHAUSTED and resumes from its last sequence,
so a slow reader never grows the server's memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator, Sequence

from zbrain.errors import ResourceExhaustedError
from zbrain.v1 import event_pb2, job_pb2

from . import protocol
from .lifecycle import Change
from .model import EventRecord, Job, JobState, LogLine

OUTPUT_SUMMARY_BYTES = 1024
DEFAULT_BUFFER = 10_000


def job_topic(job_id: str, kind: str) -> str:
    return f"jobs/{job_id}/{kind}"


def _record(
    topic: str, org_id: str, job_id: str, time_us: int, event: event_pb2.Event
) -> EventRecord:
    return EventRecord(0, topic, org_id, job_id, time_us, event.SerializeToString())


def submitted(jobs: Sequence[Job]) -> list[EventRecord]:
    """The submitted events of new jobs. The jobs of a batch mostly share their
    command, so each distinct payload is encoded once."""
    payloads: dict[tuple[tuple[str, ...], int], bytes] = {}
    records = []
    for job in jobs:
        key = (job.cmd, job.priority)
        payload = payloads.get(key)
        if payload is None:
            event = event_pb2.Event(
                job_submitted=event_pb2.JobSubmitted(cmd=job.cmd, priority=job.priority)
            )
            payload = payloads[key] = event.SerializeToString()
        records.append(
            EventRecord(
                0, job_topic(job.id, "state"), job.org_id, job.id, job.create_time_us, payload
            )
        )
    return records


def state_changed(change: Change) -> EventRecord:
    before, after = change.before, change.after
    body = event_pb2.JobStateChanged(
        from_state=job_pb2.JobState.ValueType(before.state.value),
        to_state=job_pb2.JobState.ValueType(after.state.value),
        reason=change.reason,
        attempt=after.attempt,
        worker_id=after.worker_id,
        lease_epoch=after.lease_epoch,
    )
    if after.state in (JobState.RETRYING, JobState.FAILED):
        body.error = after.last_error
    if after.state is JobState.RETRYING and after.next_run_time_us is not None:
        body.next_run_time.FromMicroseconds(after.next_run_time_us)
    if after.state is JobState.SUCCEEDED:
        body.output_summary = after.output_json.encode()[:OUTPUT_SUMMARY_BYTES].decode(
            errors="ignore"
        )
    if after.state.is_terminal:
        body.artifacts.extend(protocol.artifact_to_proto(a) for a in after.artifacts)
    payload = event_pb2.Event(job_state_changed=body)
    return _record(
        job_topic(after.id, "state"), after.org_id, after.id, after.update_time_us, payload
    )


def logged(job: Job, lines: Sequence[LogLine]) -> EventRecord:
    payload = event_pb2.Event(
        job_logged=event_pb2.JobLogged(lines=protocol.log_lines_to_proto(lines))
    )
    return _record(job_topic(job.id, "logs"), job.org_id, job.id, lines[-1].time_us, payload)


def worker_presence(worker_id: str, org_id: str, connected: bool, time_us: int) -> EventRecord:
    payload = event_pb2.Event(
        worker_presence=event_pb2.WorkerPresence(worker_id=worker_id, connected=connected)
    )
    return _record(f"workers/{worker_id}", org_id, "", time_us, payload)


def to_proto(record: EventRecord) -> event_pb2.Event:
    """The full Event message of a stored record."""
    event = event_pb2.Event.FromString(record.payload)
    event.sequence = record.sequence
    event.topic = record.topic
    event.org_id = record.org_id
    event.job_id = record.job_id
    event.time.FromMicroseconds(record.time_us)
    return event


class SubscriberTooSlow(ResourceExhaustedError):
    """A subscriber's buffer filled up; it must reconnect from its last sequence."""


class Subscription:
    """Live events for one subscriber: those of one org under one topic prefix."""

    def __init__(self, org_id: str | None, topic_prefix: str, capacity: int) -> None:
        self.org_id = org_id
        self.topic_prefix = topic_prefix
        self.capacity = capacity
        self._buffer: collections.deque[EventRecord] = collections.deque()
        self._ready = asyncio.Event()
        self.overflowed = False

    def wants(self, record: EventRecord) -> bool:
        return (self.org_id is None or record.org_id == self.org_id) and record.topic.startswith(
            self.topic_prefix
        )

    def offer(self, records: Sequence[EventRecord]) -> None:
        if self.overflowed:
            return
        if len(self._buffer) + len(records) > self.capacity:
            self.overflowed = True
            self._buffer.clear()
        else:
            self._buffer.extend(records)
        self._ready.set()

    async def next_batch(self) -> list[EventRecord]:
        """Wait for live events and take all that are buffered; SubscriberTooSlow on overflow."""
        await self._ready.wait()
        self._ready.clear()
        if self.overflowed:
            raise SubscriberTooSlow("subscriber too slow")
        batch = list(self._buffer)
        self._buffer.clear()
        return batch


class EventBus:
    """Fans committed events out to subscribers, each with a bounded buffer."""

    def __init__(self, buffer_size: int = DEFAULT_BUFFER) -> None:
        self.buffer_size = buffer_size
        self._subscriptions: set[Subscription] = set()

    def publish(self, records: Sequence[EventRecord]) -> None:
        for subscription in self._subscriptions:
            wanted = [record for record in records if subscription.wants(record)]
            if wanted:
                subscription.offer(wanted)

    @contextlib.contextmanager
    def subscribe(self, org_id: str | None, topic_prefix: str = "") -> Iterator[Subscription]:
        subscription = Subscription(org_id, topic_prefix, self.buffer_size)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
