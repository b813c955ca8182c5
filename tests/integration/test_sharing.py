"""Sharing a server between teams, end to end: org limits, routing by worker
labels, pauses and fairness with real `zbrain worker` processes (docs/limits.md)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys

import pytest

from tests.conftest import Processes, eventually
from zbrain import Client, JobState, WaitingCause
from zbrain.errors import InvalidArgumentError, PermissionDeniedError
from zbrain_server.core.model import Role
from zbrain_server.dispatch.tokens import create_token

SHORT = ["sleep", "0.05"]


async def finished(client: Client, job_ids: list[str], timeout: float = 60.0) -> None:
    """Wait until every job has succeeded."""

    async def done() -> bool:
        states = [(await client.get(job_id)).state for job_id in job_ids]
        assert JobState.FAILED not in states
        return all(state is JobState.SUCCEEDED for state in states)

    await eventually(done, timeout=timeout, interval=0.2)


async def most_running_at_once(client: Client, org: str) -> int:
    """Replay the org's recorded state changes (in commit order): the most
    jobs that were RUNNING at one time."""
    running = most = 0
    async for event in client.events(org=org):
        if event.type != "job_state_changed":
            continue
        into = event.data.get("to_state") == "RUNNING"
        out_of = event.data.get("from_state") == "RUNNING"
        running += int(into) - int(out_of and not into)
        most = max(most, running)
    return most


async def test_an_org_with_max_running_2_never_runs_more_than_2(
    client: Client, server, processes: Processes
) -> None:
    await client.orgs.update("default", max_running_jobs=2)
    for name in ("w1", "w2"):
        processes.worker(server.address, "--id", name, "--concurrency", "4")

    jobs = [await client.submit(SHORT) for _ in range(50)]
    await finished(client, [job.id for job in jobs])

    assert await most_running_at_once(client, "default") == 2


async def test_a_job_requiring_a_label_waits_unmatched_until_such_a_worker_connects(
    client: Client, server, processes: Processes
) -> None:
    processes.worker(server.address, "--id", "plain")
    await eventually(lambda: _connected(client, "plain"))
    job = await client.submit(["true"], requires={"gpu": "a100"})

    waiting = await client.get(job.id)
    assert waiting.waiting_cause is WaitingCause.NO_WORKER
    assert waiting.waiting_reason == "waiting: no connected worker matches"
    assert [j.id async for j in client.list(unmatched=True)] == [job.id]

    processes.worker(server.address, "--id", "gpu", "--label", "gpu=a100", "--label", "region=eu")
    await finished(client, [job.id])
    assert (await client.get(job.id)).worker_id == "gpu"
    [gpu] = [w for w in await client.workers() if w.id == "gpu"]
    assert gpu.labels == {"gpu": "a100", "region": "eu"} and gpu.org_ids == ("default",)
    assert [j.id async for j in client.list(unmatched=True)] == []


async def _connected(client: Client, worker_id: str) -> bool:
    return any(worker.id == worker_id for worker in await client.workers())


async def test_a_paused_org_starts_nothing_until_resumed(
    client: Client, server, processes: Processes
) -> None:
    processes.worker(server.address, "--org", "default", "--org", "other")
    await client.orgs.pause("default")
    held = await client.submit(["true"])
    # The worker is idle and serves both orgs: once the other org's job ran,
    # a pass has looked at the paused org too.
    await finished(client, [(await client.submit(["true"], org="other")).id])

    paused = await client.get(held.id)
    assert paused.state is JobState.PENDING
    assert paused.waiting_cause is WaitingCause.PAUSED
    assert paused.waiting_reason == "waiting: the organisation is paused"
    assert (await client.orgs.get("default")).paused

    await client.orgs.resume("default")
    await finished(client, [held.id])


async def test_a_paused_label_selector_holds_only_its_jobs(
    client: Client, server, processes: Processes
) -> None:
    processes.worker(server.address)
    await client.orgs.pause("default", {"pipeline": "nightly"})
    held = await client.submit(["true"], labels={"pipeline": "nightly"})
    await finished(client, [(await client.submit(["true"], labels={"pipeline": "daily"})).id])

    assert (await client.get(held.id)).state is JobState.PENDING
    settings = await client.orgs.resume("default", {"pipeline": "nightly"})
    assert settings.paused_selectors == ()
    await finished(client, [held.id])


async def test_a_concurrency_key_runs_its_jobs_one_at_a_time_in_order(
    client: Client, server, processes: Processes
) -> None:
    processes.worker(server.address, "--concurrency", "4")
    jobs = [await client.submit(SHORT, concurrency_key="customer-42") for _ in range(6)]
    other = await client.submit(SHORT, concurrency_key="customer-7")
    await finished(client, [job.id for job in [*jobs, other]])

    ended = [await client.get(job.id) for job in jobs]
    starts = [job.start_time for job in ended if job.start_time is not None]
    assert len(starts) == len(jobs) and starts == sorted(starts), "in submission order"
    for earlier, later in itertools.pairwise(ended):
        assert earlier.finish_time is not None and later.start_time is not None
        assert earlier.finish_time <= later.start_time, "one at a time"


async def test_a_small_org_is_served_while_a_big_backlog_waits(
    client: Client, server, processes: Processes
) -> None:
    processes.worker(server.address, "--org", "big", "--org", "small", "--concurrency", "2")
    backlog = [await client.submit(SHORT, org="big") for _ in range(60)]
    small = [await client.submit(["true"], org="small") for _ in range(3)]

    await finished(client, [job.id for job in small])

    states = [(await client.get(job.id)).state for job in backlog]
    assert states.count(JobState.SUCCEEDED) < len(backlog), "small did not wait for big"


async def test_an_orgs_storage_quotas_hold_over_all_its_jobs(
    client: Client, server, processes: Processes
) -> None:
    await client.orgs.update("default", max_log_bytes=1000, max_artifact_bytes=1000)
    processes.worker(server.address, "--id", "w")
    print_600 = "head -c 600 /dev/zero | tr '\\0' a; echo"

    first = await client.submit(["sh", "-c", f"{print_600}; echo 12345 > $ZBRAIN_ARTIFACTS_DIR/a"])
    assert (await client.wait(first.id, timeout=60)).state is JobState.SUCCEEDED
    second = await client.submit(
        ["sh", "-c", f"{print_600}; head -c 2000 /dev/zero > $ZBRAIN_ARTIFACTS_DIR/big"]
    )
    ended = await client.wait(second.id, timeout=60)

    texts = [line.text async for line in client.logs(second.id)]
    assert texts[-1].startswith("[the organisation's log quota (max_log_bytes) is reached")
    assert not any(text.startswith("aaa") for text in texts), "the line past the quota is dropped"
    assert ended.state is not JobState.SUCCEEDED and "max_artifact_bytes" in ended.last_error
    settings = await client.orgs.get("default")
    assert (settings.log_bytes_used, settings.artifact_bytes_used) == (600, 6)


async def test_an_empty_selector_is_refused_rather_than_pausing_the_whole_org(
    client: Client,
) -> None:
    with pytest.raises(InvalidArgumentError, match=r"selector\.labels"):
        await client.orgs.pause("default", {})
    assert not (await client.orgs.get("default")).paused


async def test_changing_an_orgs_settings_needs_an_admin(start_server) -> None:
    server = await start_server(auth="required")
    _, admin_token = await create_token(server.store, "ops", Role.ADMIN, "admin")
    _, team_token = await create_token(server.store, "team-a", Role.CLIENT, "a")
    async with (
        await Client.connect(server.address, token=admin_token) as admin,
        await Client.connect(server.address, token=team_token) as team,
    ):
        await admin.orgs.update("team-a", max_running_jobs=3, max_starts_per_second=1.5)

        assert (await team.orgs.get()).max_running_jobs == 3
        with pytest.raises(PermissionDeniedError):
            await team.orgs.update("team-a", max_running_jobs=100)
        with pytest.raises(PermissionDeniedError):
            await team.orgs.pause("team-a")
        with pytest.raises(PermissionDeniedError):
            await team.orgs.get("team-b")
        with pytest.raises(InvalidArgumentError, match="max_running_jobs"):
            await admin.orgs.update("team-a", max_running_jobs=-1)


def test_the_org_and_workers_commands(server_process: str, processes: Processes) -> None:
    processes.worker(server_process, "--id", "w-eu", "--label", "region=eu")

    def zbrain(*args: str) -> str:
        cut = args.index("--") if "--" in args else len(args)  # options before the command
        done = subprocess.run(
            [sys.executable, "-m", "zbrain", *args[:cut], "--server", server_process, *args[cut:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    zbrain("org", "set", "default", "--max-running", "2", "--max-starts-per-second", "10")
    shown = json.loads(zbrain("org", "get", "default", "--json"))
    assert (shown["max_running_jobs"], shown["max_starts_per_second"]) == (2, 10.0)
    assert "max running" in zbrain("org", "get", "default")
    zbrain("org", "set", "default", "--max-log-bytes", "4096")
    assert shown["log_bytes_used"] == 0
    assert "0 of 4096 (0%)" in zbrain("org", "get", "default")

    async def listed() -> bool:
        return "region=eu" in zbrain("workers")

    asyncio.run(eventually(listed))
    job_id = zbrain("submit", "--requires", "gpu", "--", "true").strip()
    assert "no connected worker matches" in zbrain("get", job_id)
