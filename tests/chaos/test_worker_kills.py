"""Process workers SIGKILLed at random while a few hundred jobs run.

Every job ends SUCCEEDED; a command runs again only when the worker running
it was killed (its attempt ended LEASE_EXPIRED), and never twice for one
attempt. Killed workers are replaced by new ones, as a supervisor would.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import pytest

from tests.chaos.harness import (
    Figures,
    Fleet,
    RunLog,
    all_finished,
    assert_at_least_once_never_twice,
    audit,
    publish,
)
from zbrain import Client, JobState
from zbrain.client import job_spec

SERVER_ENV = {
    "ZBRAIN_LEASE_TTL": "2s",  # a killed worker's jobs are retried two seconds on
    "ZBRAIN_POLL_INTERVAL": "0.2s",
    "ZBRAIN_RETRY_BASE": "0.05s",
    "ZBRAIN_RETRY_CAP": "0.2s",
}
JOBS = 300
WORKERS = 4
SLOTS = 4
KILLS = 6


async def test_workers_killed_at_random_lose_no_job_and_rerun_only_what_they_held(
    fleet: Fleet,
    runs: RunLog,
    rng: random.Random,
    seed: int,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    served = await fleet.server(tmp_path / "data", env=SERVER_ENV)
    names = (f"w{n}" for n in itertools.count())
    workers = {
        name: fleet.worker(served.address, name, concurrency=SLOTS)
        for name in itertools.islice(names, WORKERS)
    }
    killed: list[str] = []
    started = time.monotonic()
    async with await Client.connect(served.address) as client:
        specs = [
            job_spec(runs.command(rng.uniform(0.05, 0.3)), env=runs.env, max_retries=20)
            for _ in range(JOBS)
        ]
        ids = await client.submit_batch(specs)
        # Each kill comes once the run log has reached a random point, so it
        # lands while jobs run wherever the machine's speed puts them.
        for point in sorted(rng.sample(range(20, JOBS - 40), KILLS)):
            await runs.reach(point)
            victim = rng.choice(sorted(workers))
            fleet.kill(workers.pop(victim))
            killed.append(victim)
            replacement = next(names)
            workers[replacement] = fleet.worker(served.address, replacement, concurrency=SLOTS)

        await all_finished(client)
        found = await audit(client, ids, runs)

    publish(Figures.of(request.node.name, seed, started, len(killed), found, killed=killed))
    assert_at_least_once_never_twice(found)
    assert {rerun.worker_id for rerun in found.reruns} <= set(killed), (
        "only the jobs of killed workers ran again"
    )


async def test_a_worker_restarted_under_its_own_id_never_runs_an_attempt_twice(
    fleet: Fleet, runs: RunLog, seed: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # As a supervisor restarts `zbrain worker --id $(hostname)` after the OOM
    # killer; the new process connects long before the old lease could expire.
    served = await fleet.server(tmp_path / "data", env={**SERVER_ENV, "ZBRAIN_LEASE_TTL": "30s"})
    worker = fleet.worker(served.address, "steady", concurrency=1)
    started = time.monotonic()
    async with await Client.connect(served.address) as client:
        job = await client.submit(runs.command(1.0), env=runs.env, max_retries=3)
        await runs.reach(1)
        fleet.kill(worker)
        fleet.worker(served.address, "steady", concurrency=1)
        done = await client.wait(job.id, timeout=60)
        found = await audit(client, [job.id], runs)

    publish(Figures.of(request.node.name, seed, started, 1, found))
    assert done.state is JobState.SUCCEEDED
    assert found.duplicates == {}, "the attempt the killed worker started ran a second time"
