"""Several `zbrain serve` replicas over one PostgreSQL database, with real workers.

Each test starts real server processes on their own ports, all pointed at a
schema of its own, and real `zbrain worker` processes connected to different
replicas. Jobs append their id to a file, so "ran exactly once" is read off
the disk, not off the server's word.
"""

from __future__ import annotations

import collections
import os
import signal
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import Processes, eventually
from zbrain import Client, JobState, WaitingCause

# Short leases and retries keep the tests quick; the tick is the safety net only.
REPLICA_ENV = {
    "ZBRAIN_LEASE_TTL": "5s",
    "ZBRAIN_POLL_INTERVAL": "0.2s",
    "ZBRAIN_RETRY_BASE": "0.05s",
    "ZBRAIN_RETRY_CAP": "0.2s",
}


pytestmark = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


class Replicas:
    """Server processes sharing one store (and one artifact folder, as replicas
    on several hosts would share a network file system)."""

    def __init__(self, processes: Processes, tmp_path: Path, url: str) -> None:
        self.processes, self.tmp_path, self.url = processes, tmp_path, url
        self.children: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = []

    def start(self, count: int, **env: str) -> list[str]:
        for _ in range(count):
            child, address = self.processes.server(
                self.tmp_path / f"replica{len(self.children)}",
                "--store",
                self.url,
                "--artifacts-dir",
                str(self.tmp_path / "artifacts"),
                env={**REPLICA_ENV, **env},
            )
            self.children.append(child)
            self.addresses.append(address)
        return self.addresses

    def restart(self, index: int) -> None:
        """Start a killed replica again on its own address."""
        child, _ = self.processes.server(
            self.tmp_path / f"replica{index}",
            "--listen",
            self.addresses[index],
            "--store",
            self.url,
            "--artifacts-dir",
            str(self.tmp_path / "artifacts"),
            env=REPLICA_ENV,
        )
        self.children[index] = child

    def kill(self, index: int) -> None:
        os.killpg(self.children[index].pid, signal.SIGKILL)
        self.children[index].wait()


@pytest.fixture
def replicas(store_url: str, processes: Processes, tmp_path: Path) -> Replicas:
    return Replicas(processes, tmp_path, store_url)


def recording(runs: Path, seconds: float = 0.0) -> list[str]:
    """A job that appends its id to `runs` (after `seconds`)."""
    return ["sh", "-c", f'sleep {seconds}; echo "$ZBRAIN_JOB_ID" >> {runs}']


def recorded(runs: Path) -> list[str]:
    return runs.read_text().split() if runs.exists() else []


async def test_jobs_submitted_round_robin_run_exactly_once(
    replicas: Replicas, processes: Processes, tmp_path: Path
) -> None:
    addresses = replicas.start(3)
    for i, address in enumerate(addresses):
        processes.worker(address, "--id", f"worker-{i}", "--concurrency", "4")
    runs = tmp_path / "runs"
    clients = [await Client.connect(address) for address in addresses]
    try:
        jobs = [await clients[i % 3].submit(recording(runs), max_retries=3) for i in range(60)]
        done = [await clients[i % 3].wait(job.id, timeout=60) for i, job in enumerate(jobs)]
    finally:
        for client in clients:
            await client.close()

    assert all(job.state is JobState.SUCCEEDED for job in done), [j.last_error for j in done]
    assert sorted(recorded(runs)) == sorted(job.id for job in jobs), "each job ran once"
    assert all(job.attempt == 1 for job in done)
    assert len({job.worker_id for job in done}) > 1, "workers of several replicas took jobs"


async def test_a_job_submitted_through_one_replica_reaches_an_idle_worker_on_another_at_once(
    replicas: Replicas, processes: Processes
) -> None:
    # With the safety-net tick a minute apart, only the cross-replica
    # notification can bring the job to the worker in time.
    first, second = replicas.start(2, ZBRAIN_POLL_INTERVAL="60s")
    processes.worker(second, "--id", "on-second", "--mode", "echo")
    async with await Client.connect(first) as client:
        warm_up = await client.submit(["echo"])
        assert (await client.wait(warm_up.id, timeout=30)).state is JobState.SUCCEEDED
        delays = []
        for _ in range(5):
            job = await client.submit(["echo"])
            done = await client.wait(job.id, timeout=30)
            assert done.state is JobState.SUCCEEDED and done.worker_id == "on-second"
            assert done.start_time is not None and done.create_time is not None
            delays.append((done.start_time - done.create_time).total_seconds())
    # The store's own fallback poll is a second; notification takes milliseconds.
    assert statistics.median(delays) < 0.15, delays


async def test_a_keys_room_freed_on_one_replica_reaches_an_idle_worker_on_another_at_once(
    replicas: Replicas, processes: Processes, tmp_path: Path
) -> None:
    # The key's first job runs on a worker of the first replica, which cannot
    # run the second (it lacks the label); the second waits for the key with
    # an idle worker of the other replica. Only the ending job's event can
    # bring it there in time: the tick is a minute apart, the org has no settings.
    first, second = replicas.start(2, ZBRAIN_POLL_INTERVAL="60s")
    processes.worker(first, "--id", "plain", "--label", "kind=plain")
    processes.worker(second, "--id", "gpu", "--label", "gpu=1", "--mode", "echo")
    release = tmp_path / "release"
    async with await Client.connect(first) as client:
        held = await client.submit(
            ["sh", "-c", f"until [ -e {release} ]; do sleep 0.02; done"],
            requires={"kind": "plain"},
            concurrency_key="k",
        )

        async def running() -> bool:
            return (await client.get(held.id)).state is JobState.RUNNING

        await eventually(running, timeout=60)  # the workers start on a busy machine too
        waiting = await client.submit(["echo"], requires={"gpu": "1"}, concurrency_key="k")

        async def held_by_the_key() -> bool:
            return (await client.get(waiting.id)).waiting_cause is WaitingCause.CONCURRENCY_KEY

        await eventually(held_by_the_key, timeout=60)  # the gpu worker is connected by then
        release.touch()
        done = await client.wait(waiting.id, timeout=20)
    assert (done.state, done.worker_id) == (JobState.SUCCEEDED, "gpu")


async def test_killing_a_replica_mid_load_loses_no_job_and_its_workers_carry_on(
    replicas: Replicas, processes: Processes, tmp_path: Path
) -> None:
    first, second = replicas.start(2)
    # One address for both, as a DNS name with two records would be: the
    # worker's channel moves to the next address when its server dies.
    processes.worker(f"ipv4:{first},{second}", "--id", "first-worker", "--concurrency", "4")
    processes.worker(f"ipv4:{second},{first}", "--id", "second-worker", "--concurrency", "4")
    runs = tmp_path / "runs"
    async with (
        await Client.connect(first) as via_first,
        await Client.connect(second) as via_second,
    ):
        acknowledged = [
            await (via_first, via_second)[i % 2].submit(recording(runs, 0.3), max_retries=5)
            for i in range(40)
        ]

        async def some_ran() -> bool:
            return len(recorded(runs)) >= 8

        await eventually(some_ran, timeout=60)
        replicas.kill(0)
        killed_at = datetime.now(UTC)
        finished = [await via_second.wait(job.id, timeout=90) for job in acknowledged]

    assert [job.state for job in finished] == [JobState.SUCCEEDED] * len(acknowledged), [
        job.last_error for job in finished
    ]
    # At least once, never lost: a lease the dead replica committed but never
    # delivered, or a result it took but never applied, expires and is retried.
    runs_of = collections.Counter(recorded(runs))
    assert set(runs_of) == {job.id for job in acknowledged}, "every job ran"
    # Only what the dead replica held can have needed a second attempt: at most
    # the first worker's four slots of leases and four of results.
    assert sum(job.attempt == 1 for job in finished) >= len(finished) - 8, [
        job.attempt for job in finished
    ]
    carried_on = [
        job
        for job in finished
        if job.worker_id == "first-worker" and job.finish_time and job.finish_time > killed_at
    ]
    assert carried_on, "the worker that was connected to the dead replica carried on"


async def test_a_watcher_on_one_replica_sees_a_job_run_through_another(
    replicas: Replicas, processes: Processes
) -> None:
    first, second = replicas.start(2)
    processes.worker(first, "--id", "on-first")
    script = "for i in 1 2 3; do echo line $i; sleep 0.2; done"
    async with (
        await Client.connect(first) as via_first,
        await Client.connect(second) as via_second,
    ):
        job = await via_first.submit(["sh", "-c", script])
        lines = [line async for line in via_second.logs(job.id, follow=True)]
        events = [
            event async for event in via_second.events(topic_prefix=f"jobs/{job.id}/", follow=False)
        ]

    assert [line.text for line in lines] == ["line 1", "line 2", "line 3"]
    assert [line.sequence for line in lines] == [1, 2, 3]
    states = [e.data["to_state"] for e in events if e.type == "job_state_changed"]
    assert states[-1] == "SUCCEEDED", states
    sequences = [event.sequence for event in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


async def test_a_cancel_asked_of_one_replica_stops_the_job_on_a_worker_of_another(
    replicas: Replicas, processes: Processes
) -> None:
    # Heartbeats a minute apart: only the cancel's event, seen by the first
    # replica, can reach the worker within the wait below.
    first, second = replicas.start(2, ZBRAIN_LEASE_TTL="180s")
    processes.worker(first, "--id", "on-first")
    async with (
        await Client.connect(first) as via_first,
        await Client.connect(second) as via_second,
    ):
        job = await via_first.submit(["sleep", "60"], max_retries=3)
        await _running(via_second, job.id)

        await via_second.cancel(job.id)
        done = await via_second.wait(job.id, timeout=20)

    assert done.state is JobState.CANCELED
    assert done.attempt == 1


async def test_a_cancel_asked_while_the_workers_replica_is_down_reaches_it_on_return(
    replicas: Replicas, processes: Processes
) -> None:
    first, second = replicas.start(2)
    processes.worker(first, "--id", "on-first")  # knows only the first replica
    async with await Client.connect(second) as via_second:
        job = await via_second.submit(["sleep", "60"], max_retries=3)
        await _running(via_second, job.id)
        replicas.kill(0)

        await via_second.cancel(job.id)  # nobody can tell the worker now
        replicas.restart(0)
        done = await via_second.wait(job.id, timeout=30)

    assert done.state is JobState.CANCELED
    assert done.attempt == 1


async def _running(client: Client, job_id: str) -> None:
    async def started() -> bool:
        return (await client.get(job_id)).state is JobState.RUNNING

    await eventually(started, timeout=30)


async def test_a_stalled_worker_reaped_by_any_replica_gets_no_retry(
    replicas: Replicas, processes: Processes
) -> None:
    first, second = replicas.start(2)
    stalled = processes.worker(first, "--id", "stalled")
    script = 'sleep 1; printf "{\\"attempt\\": $ZBRAIN_ATTEMPT}" > "$ZBRAIN_OUTPUT"'
    async with await Client.connect(second) as via_second:
        job = await via_second.submit(["sh", "-c", script], max_retries=3)
        await _running(via_second, job.id)
        stalled.send_signal(signal.SIGSTOP)  # a partition: no heartbeats, connection open
        try:
            # Both replicas reap; whichever does, the first must not hand the
            # retry back to the stalled worker it still has a stream from.
            async def retried() -> bool:
                return (await via_second.get(job.id)).attempt >= 1 and (
                    await via_second.get(job.id)
                ).state in (JobState.RETRYING, JobState.PENDING)

            await eventually(retried, timeout=30)
            processes.worker(second, "--id", "healthy")
            done = await via_second.wait(job.id, timeout=30)
        finally:
            stalled.send_signal(signal.SIGCONT)

    assert done.state is JobState.SUCCEEDED
    assert done.output == {"attempt": 2}
    assert done.worker_id == "healthy"


async def test_the_running_limit_of_an_org_holds_across_replicas(
    replicas: Replicas, processes: Processes
) -> None:
    from tests.integration.test_sharing import most_running_at_once

    addresses = replicas.start(2)
    for i, address in enumerate(addresses):
        processes.worker(address, "--id", f"worker-{i}", "--concurrency", "4")
    clients = [await Client.connect(address) for address in addresses]
    try:
        await clients[0].orgs.update("default", max_running_jobs=3)
        jobs = [await clients[i % 2].submit(["sleep", "0.05"]) for i in range(30)]
        done = [await clients[i % 2].wait(job.id, timeout=60) for i, job in enumerate(jobs)]
        most = await most_running_at_once(clients[1], "default")
    finally:
        for client in clients:
            await client.close()

    assert all(job.state is JobState.SUCCEEDED for job in done), [j.last_error for j in done]
    assert len({job.worker_id for job in done}) == 2, "workers of both replicas took jobs"
    assert most == 3


async def test_a_job_is_unmatched_only_if_no_worker_on_any_replica_matches(
    replicas: Replicas, processes: Processes
) -> None:
    here, there = replicas.start(2)
    gpu = processes.worker(there, "--id", "gpu", "--label", "gpu=a100", "--concurrency", "1")
    client = await Client.connect(here)
    try:
        await client.orgs.update("default", max_running_jobs=1)
        running = await client.submit(["sleep", "60"], requires={"gpu": "a100"})
        waiting = await client.submit(["true"], requires={"gpu": "a100"})
        nobody = await client.submit(["true"], requires={"gpu": "h100"})

        async def held_by_the_limit() -> bool:
            held = await client.get(waiting.id)
            return held.waiting_cause is WaitingCause.MAX_RUNNING

        await eventually(held_by_the_limit)  # not "no connected worker matches"
        assert (await client.get(running.id)).state is JobState.RUNNING
        assert [j.id async for j in client.list(unmatched=True)] == [nobody.id]

        async def shown_with_its_lease() -> bool:  # slots are published every few seconds
            [shown] = await client.workers()
            assert (shown.id, shown.labels) == ("gpu", {"gpu": "a100"})
            assert shown.replica_id, "the replica it is connected to is named"
            return shown.lease_job_ids == (running.id,)

        await eventually(shown_with_its_lease)

        os.killpg(gpu.pid, signal.SIGKILL)  # its replica sees it leave, then tells the other

        async def unmatched_now() -> bool:
            return (await client.get(waiting.id)).waiting_cause is WaitingCause.NO_WORKER

        await eventually(unmatched_now)
        assert await client.workers() == []
    finally:
        await client.close()
