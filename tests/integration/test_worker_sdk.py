"""The Python worker SDK: custom executors driven by the same connection loop."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from tests.conftest import ON_EVERY_STORE, eventually
from zbrain import Client, Job, JobState
from zbrain.worker import AttemptEvents, Cancellation, Executor, FunctionExecutor, Outcome, Worker
from zbrain_server.config import Limits

pytestmark = ON_EVERY_STORE


async def test_function_executor_runs_jobs_and_returns_output(server, client: Client) -> None:
    async def double(job: Job) -> Any:
        return {"doubled": job.input["n"] * 2}

    async with Worker(client, FunctionExecutor(double), orgs=["sdk"], concurrency=4):
        jobs = [await client.submit(["double"], org="sdk", input={"n": n}) for n in range(20)]
        outputs = [(await client.wait(job.id, timeout=20)).output for job in jobs]

    assert outputs == [{"doubled": 2 * n} for n in range(20)]


async def test_a_raising_handler_fails_the_attempt_with_its_error(server, client: Client) -> None:
    async def broken(job: Job) -> Any:
        raise ValueError("no such customer")

    async with Worker(client, FunctionExecutor(broken), orgs=["sdk"]):
        job = await client.submit(["x"], org="sdk", max_retries=0)
        done = await client.wait(job.id, timeout=20)

    assert done.state is JobState.FAILED
    assert done.last_error == "ValueError: no such customer"


class Reporter(Executor):
    """Logs a line and uploads one artifact."""

    id = "reporter"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        events.log(f"report for {job.input}")
        path = self.folder / f"{job.id}.txt"
        path.write_text("quarterly numbers")
        await events.upload("report.txt", path)
        return Outcome.succeeded("done")


async def test_custom_executor_streams_logs_and_uploads_artifacts(
    server, client: Client, tmp_path: Path
) -> None:
    async with Worker(client, Reporter(tmp_path), orgs=["sdk"]):
        job = await client.submit(["report"], org="sdk", input="q3")
        done = await client.wait(job.id, timeout=20)

    assert done.output == "done"
    assert [line.text async for line in client.logs(job.id)] == ["report for q3"]
    assert [artifact.name for artifact in done.artifacts] == ["report.txt"]


async def test_a_canceled_handler_is_stopped(server, client: Client) -> None:
    started = asyncio.Event()

    async def forever(job: Job) -> Any:
        started.set()
        await asyncio.sleep(3600)  # runs until canceled

    async with Worker(client, FunctionExecutor(forever), orgs=["sdk"]):
        job = await client.submit(["x"], org="sdk")
        await asyncio.wait_for(started.wait(), 10)
        await client.cancel(job.id)
        done = await client.wait(job.id, timeout=10)

    assert done.state is JobState.CANCELED


async def test_big_results_finishing_together_stay_within_the_server_message_limit(
    start_server,
) -> None:
    # Eight 300 KiB outputs at once: in one message they would pass the 2 MiB
    # the server accepts here; the worker splits them instead.
    server = await start_server(limits=Limits(max_message_bytes=2 << 20))
    release = asyncio.Event()

    async def big(job: Job) -> Any:
        await release.wait()
        return "x" * (300 << 10)

    async with (
        await Client.connect(server.address) as client,
        Worker(client, FunctionExecutor(big), orgs=["sdk"], concurrency=8),
    ):
        jobs = [await client.submit(["x"], org="sdk", max_retries=0) for _ in range(8)]
        await eventually(functools.partial(_running, client, jobs), timeout=20)
        release.set()
        done = [await client.wait(job.id, timeout=20) for job in jobs]

    assert [job.state for job in done] == [JobState.SUCCEEDED] * 8
    assert all(len(job.output) == 300 << 10 for job in done)


async def _running(client: Client, jobs: list[Job]) -> bool:
    return all([(await client.get(job.id)).state is JobState.RUNNING for job in jobs])


async def test_a_handler_that_overruns_its_timeout_is_stopped(server, client: Client) -> None:
    stopped = asyncio.Event()

    async def forever(job: Job) -> Any:
        try:
            await asyncio.sleep(3600)  # runs until its timeout stops it
        finally:
            stopped.set()

    async with Worker(client, FunctionExecutor(forever), orgs=["sdk"]):
        job = await client.submit(["x"], org="sdk", timeout=0.5, max_retries=0)
        done = await client.wait(job.id, timeout=20)

    assert stopped.is_set(), "the handler was cancelled, not left running"
    assert done.state is JobState.FAILED
    assert "timed out after 0.5s" in done.last_error
