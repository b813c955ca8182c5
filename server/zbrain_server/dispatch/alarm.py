"""`Alarm`: run a piece of time-driven work when it falls due.

Delayed jobs and schedules both wait for a time stored in the database. An
alarm runs its step, which does what is due and answers when the next thing
falls due; it then sleeps until that time, or until nudged (something due
sooner was stored here, or a replica's commit says so), and at most
`poll_s`, so that what another replica stored without telling is never
missed for long. A failing step is logged and tried again at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from zbrain.errors import ZBrainError

from ..core.model import now_us
from .signals import wait_for

log = logging.getLogger(__name__)

MIN_WAIT_S = 0.001

Step = Callable[[], Awaitable[int | None]]
"""Do what is due now; answer when the next thing falls due (microseconds), if ever."""


class Alarm:
    """Runs `step` at each due time, when nudged, and every `poll_s`."""

    def __init__(self, name: str, step: Step, poll_s: float) -> None:
        self._name = name
        self._step = step
        self._poll_s = poll_s
        self._next_us: int | None = None
        self._nudged = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"zbrain-{self._name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def nudge(self, due_us: int | None = None) -> None:
        """Something falls due at `due_us` (None: maybe now): wake up in time."""
        if due_us is None or self._next_us is None or due_us < self._next_us:
            self._next_us = due_us
            self._nudged.set()

    async def _run(self) -> None:
        while True:
            # While the step runs, any nudge counts: what the step reads may
            # predate the commit that nudged, and the due time kept from the
            # last step says nothing about it.
            self._next_us = None
            try:
                self._next_us = await self._step()
            except ZBrainError as error:  # the store is down, say: health reports it
                log.warning("%s failed: %s; trying again in %.1fs", self._name, error, self._poll_s)
                self._next_us = None
            except Exception:
                log.exception("%s failed; trying again in %.1fs", self._name, self._poll_s)
                self._next_us = None
            wait_s = self._poll_s
            if self._next_us is not None:
                # Never less than a millisecond: a step that leaves work due
                # (the rest of a large batch) runs again at once, but a step
                # that cannot make progress does not spin.
                wait_s = min(wait_s, max(MIN_WAIT_S, (self._next_us - now_us()) / 1e6))
            await wait_for(self._nudged, wait_s)
