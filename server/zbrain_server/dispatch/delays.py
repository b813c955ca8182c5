"""Delayed jobs: a job submitted with run_at or delay waits SCHEDULED and is
made PENDING when its time comes, here, by one small write for all jobs due
at once; the commit's events then wake the dispatcher, which leases them.

The alarm sleeps until the earliest delayed job's time (an index on it), is
nudged by every commit that stores a sooner one (this replica's or
another's), and polls for safety. Replicas sharing PostgreSQL each promote;
they skip the rows another is promoting.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core import events
from ..core.model import EventRecord, JobState, now_us
from ..store import JobStore
from .alarm import Alarm

PROMOTE_BATCH = 1000


class DelayedJobs:
    """Makes delayed jobs PENDING when their time comes."""

    def __init__(self, store: JobStore, poll_s: float) -> None:
        self._store = store
        self._alarm = Alarm("delayed-jobs", self._promote, poll_s)

    def start(self) -> None:
        self._alarm.start()

    async def stop(self) -> None:
        await self._alarm.stop()

    def observe(self, records: Sequence[EventRecord]) -> None:
        """Note delayed jobs in committed events, to wake in time for them."""
        for record in records:
            body = record.body
            if isinstance(body, events.JobSubmitted | events.JobStateChanged):
                state = body.state if isinstance(body, events.JobSubmitted) else body.to_state
                if state is JobState.SCHEDULED:
                    self._alarm.nudge(body.next_run_time_us)

    async def _promote(self) -> int | None:
        due = await self._store.next_due_time()
        now = now_us()
        while due is not None and due <= now:
            promoted = await self._store.promote_due(now, PROMOTE_BATCH)
            if len(promoted) < PROMOTE_BATCH:
                break
        return await self._store.next_due_time()
