"""Two `zbrain serve` replicas over one PostgreSQL schema, each SIGKILLed in
turn and restarted while clients submit and workers run jobs through both.

Workers and the client are given both addresses (`ipv4:A,B`), as a DNS name
with two records would give them: when the replica they use dies they move
to the other one and claim their running leases back there. Every
acknowledged job succeeds, no submit makes a second job, no attempt runs
twice, and a job runs again only when its attempt's lease expired.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.chaos.harness import (
    FAST_RECONNECT,
    Figures,
    Fleet,
    RunLog,
    Served,
    Submitter,
    all_finished,
    assert_at_least_once_never_twice,
    audit,
    publish,
    workers_back,
)
from tests.conftest import free_port
from zbrain import Client

pytestmark = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)

SERVER_ENV = {
    "ZBRAIN_LEASE_TTL": "4s",
    "ZBRAIN_POLL_INTERVAL": "0.2s",
    "ZBRAIN_RETRY_BASE": "0.05s",
    "ZBRAIN_RETRY_CAP": "0.2s",
}
RUNS_BETWEEN_EVENTS = 10


async def test_replicas_killed_in_turn_under_load_lose_no_job_and_their_workers_move_over(
    fleet: Fleet,
    runs: RunLog,
    rng: random.Random,
    seed: int,
    store_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]

    async def start(index: int) -> Served:
        return await fleet.server(
            tmp_path / f"replica{index}",
            "--store",
            store_url,
            "--artifacts-dir",
            str(tmp_path / "artifacts"),
            listen=addresses[index],
            env=SERVER_ENV,
        )

    replicas = [await start(0), await start(1)]
    a_first, b_first = "ipv4:" + ",".join(addresses), "ipv4:" + ",".join(reversed(addresses))
    workers = {
        name: fleet.worker(target, name, concurrency=4)
        for name, target in (("w0", a_first), ("w1", b_first), ("w2", a_first))
    }
    started = time.monotonic()
    async with await Client.connect(a_first, timeout=5, options=FAST_RECONNECT) as client:
        submitter = Submitter(client, runs, job_seconds=0.2, max_retries=10, backlog=30)
        submitting = asyncio.create_task(submitter.run(in_flight=2))
        try:
            for index in (0, 1):  # A, then B
                await runs.more(RUNS_BETWEEN_EVENTS)
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # anywhere in a submit or a result
                fleet.kill(replicas[index].process)
                last_kill = datetime.now(UTC)
                await runs.more(RUNS_BETWEEN_EVENTS)  # the other replica carries on alone
                replicas[index] = await start(index)
            await runs.more(RUNS_BETWEEN_EVENTS)
            # After A's return every worker was on B; B's death moves them all to A.
            await workers_back(client, workers, since=last_kill)
        finally:
            submitter.stop()
            await submitting
        await all_finished(client)
        found = await audit(client, submitter.acknowledged.values(), runs)

    publish(
        Figures.of(
            request.node.name,
            seed,
            started,
            2,
            found,
            submits_retried=submitter.retried_calls,
        )
    )
    assert_at_least_once_never_twice(found)
    assert [name for name, worker in workers.items() if worker.poll() is not None] == []
