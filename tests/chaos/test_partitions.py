"""A network cut between a worker and its server, made with a network
namespace and a veth pair the test creates (see tests/chaos/network.py).

What docs/workers.md promises, checked across a real cut:

- a cut shorter than a lease: the worker keeps its attempt, claims the lease
  back if its stream broke, and the attempt's one result is the job's;
- a cut longer than a lease: the server ends the attempt LEASE_EXPIRED and
  retries it elsewhere; after the heal, the cut-off worker's late result is
  rejected, so the job has exactly one result per attempt;
- a worker that knows it has been away longer than a lease stops the attempt
  itself (reporting nothing for it), and the job is retried.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import Fleet, RunLog, history, publish
from tests.chaos.network import Partition, partition
from tests.conftest import eventually
from zbrain import Cause, Client, Job, JobState

FAST_DUTIES = {
    "ZBRAIN_POLL_INTERVAL": "0.2s",
    "ZBRAIN_RETRY_BASE": "0.05s",
    "ZBRAIN_RETRY_CAP": "0.2s",
    # The server pings every second and drops a connection that stays silent
    # for one more: it notices a cut within about two seconds.
    "ZBRAIN_KEEPALIVE": "1s",
    "ZBRAIN_KEEPALIVE_TIMEOUT": "1s",
}
# A worker that cannot tell it is cut off: its own pings are far apart.
UNAWARE = {"ZBRAIN_CLIENT_KEEPALIVE": "60", "ZBRAIN_CLIENT_KEEPALIVE_TIMEOUT": "60"}
# A worker that notices a cut within seconds (5 s is the shortest interval the
# server lets clients ping at).
AWARE = {"ZBRAIN_CLIENT_KEEPALIVE": "5", "ZBRAIN_CLIENT_KEEPALIVE_TIMEOUT": "1"}
SHORT_CUT_S = 3.0
WRITE_ATTEMPT = 'printf "{\\"attempt\\": $ZBRAIN_ATTEMPT}" > "$ZBRAIN_OUTPUT"'


@pytest.fixture
def link() -> Iterator[Partition]:
    with partition() as made:
        yield made


async def test_a_cut_shorter_than_a_lease_keeps_the_attempt_and_its_result_arrives_once(
    link: Partition, fleet: Fleet, runs: RunLog, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A 3 s cut outlasts the server's keepalive, so the stream breaks; with
    # heartbeats 7 s apart the lease has 13 s or more left when the cut
    # begins, ample for the worker to come back and claim it.
    served = await _server(fleet, link, tmp_path, ZBRAIN_LEASE_TTL="20s")
    fleet.worker(served, "cut-off", concurrency=1, env=AWARE, prefix=link.prefix)
    started = time.monotonic()
    async with await Client.connect(served) as client:
        job = await client.submit(
            runs.command(5.0, then=WRITE_ATTEMPT), env=runs.env, max_retries=3
        )
        await runs.reach(1)
        link.cut()
        try:
            await asyncio.sleep(SHORT_CUT_S)  # the cut's length is what this test is about
        finally:
            link.heal()
        done = await client.wait(job.id, timeout=60)
        past = await history(client)

    publish(
        {
            "test": request.node.name,
            "seconds": round(time.monotonic() - started, 1),
            "cut_s": SHORT_CUT_S,
            "lease_ttl_s": 20.0,
            "stream_broke_and_lease_claimed_back": past.connections_of("cut-off") > 1,
            "causes": [change.cause.name for change in past.changes[job.id]],
            "runs": sum(runs.runs().values()),
        }
    )
    assert (done.state, done.attempt, done.output) == (JobState.SUCCEEDED, 1, {"attempt": 1})
    assert done.worker_id == "cut-off"
    assert runs.runs() == {(job.id, 1): 1}
    assert [change.cause for change in past.changes[job.id]] == [Cause.LEASED, Cause.SUCCEEDED]


async def test_a_cut_longer_than_a_lease_retries_elsewhere_and_rejects_the_late_result(
    link: Partition, fleet: Fleet, runs: RunLog, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    served = await _server(fleet, link, tmp_path, ZBRAIN_LEASE_TTL="3s")
    # The cut-off worker also serves an organisation of its own: a job there,
    # once it succeeds, shows that its stream is back and all it queued before
    # (the late result) has reached the server.
    fleet.worker(
        served, "cut-off", "--org", "chaos", "--org", "probe", env=UNAWARE, prefix=link.prefix
    )
    started = time.monotonic()
    async with await Client.connect(served) as client:
        job = await client.submit(
            runs.command(1.5, then=WRITE_ATTEMPT), org="chaos", env=runs.env, max_retries=3
        )
        await runs.reach(1)
        fleet.worker(served, "healthy", "--org", "chaos")
        link.cut()
        try:
            # The attempt finishes behind the cut, its result unheard; the
            # lease expires and the healthy worker runs the job again.
            retried = await _finished(client, job.id, timeout=60)
        finally:
            link.heal()
        probe = await client.submit(["true"], org="probe")
        assert (await client.wait(probe.id, timeout=60)).state is JobState.SUCCEEDED
        final = await client.get(job.id)
        past = await history(client, org="chaos")

    changes = past.changes[job.id]
    publish(
        {
            "test": request.node.name,
            "seconds": round(time.monotonic() - started, 1),
            "lease_ttl_s": 3.0,
            "causes": [f"{c.cause.name}@{c.attempt}:{c.worker_id}" for c in changes],
            "runs": sum(runs.runs().values()),
            "cut_off_worker_connections": past.connections_of("cut-off"),
        }
    )
    assert (retried.state, retried.attempt, retried.output) == (
        JobState.SUCCEEDED,
        2,
        {"attempt": 2},
    )
    assert final == retried, "the late result of attempt 1 changed nothing"
    assert runs.runs() == {(job.id, 1): 1, (job.id, 2): 1}
    assert [(c.cause, c.attempt, c.worker_id) for c in changes] == [
        (Cause.LEASED, 1, "cut-off"),
        (Cause.LEASE_EXPIRED, 1, "cut-off"),
        (Cause.LEASED, 2, "healthy"),
        (Cause.SUCCEEDED, 2, "healthy"),
    ]
    assert past.connections_of("cut-off") > 1, "the cut-off worker came back after the heal"


async def test_a_worker_cut_off_longer_than_a_lease_stops_its_attempt_itself(
    link: Partition, fleet: Fleet, runs: RunLog, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    served = await _server(fleet, link, tmp_path, ZBRAIN_LEASE_TTL="3s")
    fleet.worker(served, "cut-off", concurrency=1, env=AWARE, prefix=link.prefix)
    pids = tmp_path / "pids"
    pids.mkdir()
    # The first attempt would run for a minute; any other finishes at once.
    hangs_first = (
        'echo "$ZBRAIN_JOB_ID $ZBRAIN_ATTEMPT" >> "$RUNS"; echo $$ > "$PIDS/$ZBRAIN_ATTEMPT";'
        f' if [ "$ZBRAIN_ATTEMPT" = 1 ]; then sleep 60; fi; {WRITE_ATTEMPT}'
    )
    started = time.monotonic()
    async with await Client.connect(served) as client:
        job = await client.submit(
            ["sh", "-c", hangs_first], env={**runs.env, "PIDS": str(pids)}, max_retries=3
        )
        await runs.reach(1)
        first = int((pids / "1").read_text())
        link.cut()
        cut_at = time.monotonic()
        try:
            # Its keepalive tells the worker the server is gone; a lease later
            # it stops the attempt rather than run it on for nobody.
            async def stopped() -> bool:
                return not _alive(first)

            await eventually(stopped, timeout=45)
            stopped_after = round(time.monotonic() - cut_at, 1)
        finally:
            link.heal()
        fleet.worker(served, "healthy")
        done = await client.wait(job.id, timeout=60)
        past = await history(client)

    changes = past.changes[job.id]
    publish(
        {
            "test": request.node.name,
            "seconds": round(time.monotonic() - started, 1),
            "lease_ttl_s": 3.0,
            "attempt_stopped_s_after_cut": stopped_after,
            "causes": [f"{c.cause.name}@{c.attempt}:{c.worker_id}" for c in changes],
        }
    )
    assert (done.state, done.attempt, done.output) == (JobState.SUCCEEDED, 2, {"attempt": 2})
    assert runs.runs() == {(job.id, 1): 1, (job.id, 2): 1}
    assert [(c.cause, c.attempt) for c in changes] == [
        (Cause.LEASED, 1),
        (Cause.LEASE_EXPIRED, 1),
        (Cause.LEASED, 2),
        (Cause.SUCCEEDED, 2),
    ]


async def _server(fleet: Fleet, link: Partition, tmp_path: Path, **env: str) -> str:
    """A server on the host's end of the link (not loopback, hence --insecure)."""
    served = await fleet.server(
        tmp_path / "data",
        "--insecure",
        listen=f"{link.host_address}:0",
        env={**FAST_DUTIES, **env},
    )
    return served.address


async def _finished(client: Client, job_id: str, timeout: float) -> Job:
    """The job once it is terminal, read with Get (no stream to outlive a cut)."""

    async def terminal() -> bool:
        return (await client.get(job_id)).state.is_terminal

    await eventually(terminal, timeout)
    return await client.get(job_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
