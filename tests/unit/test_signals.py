"""Background loops that wait on an event stop when cancelled, whatever the timing.

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives just
as the awaited event is set; a loop waiting that way went on forever and a
server's shutdown hung on it (seen in CI as a test stuck in teardown).
"""

from __future__ import annotations

import asyncio

import pytest

from zbrain_server.dispatch.signals import wait_for


async def test_a_wait_cancelled_as_its_event_is_set_is_cancelled() -> None:
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_for(event, 60)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # one loop step: the task starts waiting
    event.set()
    await asyncio.sleep(0)  # one more: the event's waiter is woken, the task not yet resumed
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
