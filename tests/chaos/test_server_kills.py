"""The server SIGKILLed and restarted, on its port and data directory,
several times while clients submit and workers run jobs.

Every acknowledged job is in the store and finished; a submit retried with
its request id never makes a second job; the workers, started once,
reconnect by themselves and claim back the leases of the jobs they ran
meanwhile; no attempt runs twice, and a job runs again only when its worker
stayed away longer than its lease (LEASE_EXPIRED; docs/reliability.md says
when that happens).
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
    Submitter,
    all_finished,
    assert_at_least_once_never_twice,
    audit,
    publish,
    workers_back,
)
from tests.conftest import free_port
from zbrain import Client

SERVER_ENV = {
    # A lease outlives a restart and, nearly always, the workers' return to it
    # (seconds, more under load: see docs/reliability.md), so a worker claims
    # back all it ran meanwhile and hardly any job needs a second run.
    "ZBRAIN_LEASE_TTL": "20s",
    "ZBRAIN_POLL_INTERVAL": "0.2s",
    "ZBRAIN_RETRY_BASE": "0.05s",
    "ZBRAIN_RETRY_CAP": "0.2s",
}
KILLS = 3
WORKERS = 3
RUNS_BETWEEN_KILLS = 10


async def test_a_server_killed_under_load_loses_no_acknowledged_job_and_runs_no_attempt_twice(
    fleet: Fleet,
    runs: RunLog,
    rng: random.Random,
    seed: int,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    address, data = f"127.0.0.1:{free_port()}", tmp_path / "data"
    served = await fleet.server(data, listen=address, env=SERVER_ENV)
    workers = {f"w{n}": fleet.worker(address, f"w{n}", concurrency=4) for n in range(WORKERS)}
    started = time.monotonic()
    async with await Client.connect(address, timeout=5, options=FAST_RECONNECT) as client:
        submitter = Submitter(client, runs, job_seconds=0.2, max_retries=10, backlog=30)
        submitting = asyncio.create_task(submitter.run(in_flight=2))
        try:
            for _ in range(KILLS):
                await runs.more(RUNS_BETWEEN_KILLS)  # workers are at work on this server
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # anywhere in a submit or a result
                fleet.kill(served.process)
                last_restart = datetime.now(UTC)
                served = await fleet.server(data, listen=address, env=SERVER_ENV)
            await runs.more(RUNS_BETWEEN_KILLS)
            # Started once, every worker finds the last server by itself.
            await workers_back(client, workers, since=last_restart)
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
            KILLS,
            found,
            submits_retried=submitter.retried_calls,
        )
    )
    assert_at_least_once_never_twice(found)
    assert [name for name, worker in workers.items() if worker.poll() is not None] == []
