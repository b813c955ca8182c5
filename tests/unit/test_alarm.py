"""The alarm behind delayed jobs and schedules wakes for everything it is
nudged about, even while its step runs (the poll here is an hour, so a lost
nudge shows as a timeout)."""

from __future__ import annotations

import asyncio

from tests.conftest import eventually
from zbrain_server.core.model import now_us
from zbrain_server.dispatch.alarm import Alarm

HOUR_US = 3600 * 1_000_000


async def test_a_nudge_while_the_step_runs_runs_the_step_again() -> None:
    steps: list[int] = []
    reading = asyncio.Event()
    read = asyncio.Event()

    async def step() -> int | None:
        steps.append(now_us())
        if len(steps) == 1:
            return now_us() + HOUR_US  # the next thing falls due in an hour
        if len(steps) == 2:
            reading.set()
            await read.wait()
            return None  # it read before the job below was stored: nothing is due
        return None

    alarm = Alarm("test", step, poll_s=3600)
    alarm.start()
    try:
        await eventually(lambda: len(steps) == 1)
        alarm.nudge(now_us())  # something falls due now: step 2 runs
        await reading.wait()
        alarm.nudge(now_us() + 10_000)  # a job due in 10 ms, stored while step 2 reads
        read.set()

        await eventually(lambda: len(steps) >= 3)
    finally:
        await alarm.stop()
