"""End to end: schedules across replicas and restarts. Each tick makes one
job, whichever server gets there, and ticks missed while no server ran follow
the schedule's catch-up policy."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import eventually
from zbrain import Client
from zbrain.client import job_spec
from zbrain.models import CatchUpPolicy, Event, Job, OverlapPolicy
from zbrain_server.app import ZBrainServer
from zbrain_server.core.schedules import Schedule

StartServer = Callable[..., Awaitable[ZBrainServer]]


async def scheduled(client: Client, schedule_id: str) -> list[Job]:
    return [job async for job in client.list(labels={"zbrain.schedule": schedule_id})]


def tick_times(jobs: list[Job]) -> list[datetime]:
    return sorted(datetime.fromisoformat(job.labels["zbrain.tick"]) for job in jobs)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_two_replicas_fire_each_tick_exactly_once(start_server: StartServer) -> None:
    first, second = await start_server(), await start_server()
    async with await Client.connect(first.address, timeout=10) as client:
        await client.schedules.create(
            "every-second", every=1, job=job_spec(["true"]), overlap=OverlapPolicy.ALLOW
        )

        async def ticked(count: int) -> bool:
            return len(await scheduled(client, "every-second")) >= count

        await eventually(lambda: ticked(6), timeout=30)
        await first.stop(grace_s=0.5)  # the other replica carries on alone
    async with await Client.connect(second.address, timeout=10) as client:
        await eventually(lambda: ticked(12), timeout=30)
        jobs = await scheduled(client, "every-second")

    ticks = tick_times(jobs)
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    steps = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(ticks)}
    assert steps == {1.0}, f"a tick was skipped or doubled: {ticks}"


@pytest.mark.parametrize("catch_up", [CatchUpPolicy.SKIP, CatchUpPolicy.RUN_ONCE])
async def test_ticks_missed_while_no_server_ran_follow_the_catch_up_policy(
    start_server: StartServer, tmp_path: Path, catch_up: CatchUpPolicy
) -> None:
    settings = dict(data_dir=tmp_path / "data", schedule_grace_s=0.5)
    server = await start_server(**settings)
    async with await Client.connect(server.address, timeout=10) as client:
        await client.schedules.create(
            "s", every=1, job=job_spec(["true"]), overlap=OverlapPolicy.ALLOW, catch_up=catch_up
        )
        await eventually(lambda: ticked(client, 1), timeout=20)
    await server.stop(grace_s=0.5)
    # The downtime itself (not a wait for anything): ticks fall due while no
    # server runs.
    await asyncio.sleep(4)
    server = await start_server(**settings)
    async with await Client.connect(server.address, timeout=10) as client:

        async def caught_up() -> list[Event]:
            return [
                event
                async for event in client.events(topic_prefix="schedules/s")
                if event.data.get("missed_ticks")
            ]

        await eventually(lambda: _any(caught_up), timeout=20)
        [event] = await caught_up()

    assert event.data["missed_ticks"] >= 3
    if catch_up is CatchUpPolicy.SKIP:
        assert event.job_id == ""
        assert "missed" in event.data["skipped_reason"]
    else:
        assert event.job_id, "RUN_ONCE submits one job for the missed ticks"


async def ticked(client: Client, count: int) -> bool:
    return len(await scheduled(client, "s")) >= count


async def _any(find: Callable[[], Awaitable[list[Event]]]) -> bool:
    return bool(await find())


async def test_a_schedule_whose_tick_fails_unexpectedly_stops_no_other(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server()
    now = int(time.time() * 1_000_000)
    # Stored as a replica with another time zone list might hold it: this
    # server cannot open its zone, so planning its tick raises.
    broken = Schedule(
        org_id="default",
        id="broken",
        cron="* * * * *",
        time_zone="Mars/Olympus_Mons",
        interval_us=0,
        job_spec=job_spec(["true"]).SerializeToString(),
        template=None,
        overlap=OverlapPolicy.ALLOW,
        catch_up=CatchUpPolicy.SKIP,
        paused=False,
        next_fire_time_us=now - 1_000_000,  # due, and the earliest
        last_fire_time_us=None,
        last_job_id="",
        create_time_us=now,
        update_time_us=now,
    )
    await server.store.schedules.create(broken)
    async with await Client.connect(server.address, timeout=10) as client:
        await client.schedules.create(
            "s", every=1, job=job_spec(["true"]), overlap=OverlapPolicy.ALLOW
        )

        await eventually(lambda: ticked(client, 2), timeout=20)
        assert (await client.schedules.get("broken")).upcoming == ()

    failures = [r for r in caplog.records if "broken" in r.getMessage() and r.exc_info]
    assert len(failures) == 1  # reported once, not at every turn
