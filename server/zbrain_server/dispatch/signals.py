"""Wake-ups for coroutines that follow a job (StreamLogs with follow, waiters).

A follower never receives data through this module, only a nudge to read the
store again from where it stopped. So a slow follower costs the server no
memory, and a missed nudge costs at most one recheck interval of latency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class JobSignals:
    """One asyncio.Event per followed job, set whenever the job or its logs change."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    def changed(self, job_id: str) -> None:
        """Wake everyone following job_id."""
        for event in self._events.get(job_id, ()):
            event.set()

    @contextlib.contextmanager
    def follow(self, job_id: str) -> Iterator[asyncio.Event]:
        """Register interest in job_id; the yielded event is set on every change."""
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            followers = self._events.get(job_id)
            if followers is not None:
                followers.discard(event)
                if not followers:
                    del self._events[job_id]


async def wait_for(event: asyncio.Event, seconds: float) -> None:
    """Wait until the event is set or `seconds` pass, then clear it.

    With `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 the latter
    swallows a cancellation that arrives as the event is set, and a loop
    waiting this way then never stops (a server's shutdown hung on it).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    event.clear()
