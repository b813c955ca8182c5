"""A worker and a server that goes away: the worker comes back by itself,
soon, and says only what a person needs to know (issue 13, items 3 and 7).

The server here is a process of its own, SIGKILLed and started again on its
port and data directory; the worker is a `zbrain worker` process whose log is
read from a file while it runs.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import Processes, eventually, free_port
from zbrain import Client, Job, JobState
from zbrain.v1 import job_service_pb2, job_service_pb2_grpc
from zbrain.worker import FunctionExecutor, Worker
from zbrain_server.app import ZBrainServer


async def test_a_worker_is_back_within_two_seconds_of_a_restarted_server(
    processes: Processes, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    log = tmp_path / "worker.log"
    server, _ = processes.server(data, "--listen", address)
    processes.worker(address, "--id", "steady", log=log)
    await eventually(lambda: _is_connected(address, "steady"))

    server.kill()
    await asyncio.to_thread(server.wait, 30)
    # Away long enough for the worker to have tried a few times (and for
    # gRPC's default backoff, 1 s growing 1.6 times, to have grown).
    await eventually(lambda: log.read_text().count("reconnecting in") >= 4, timeout=30)
    processes.server(data, "--listen", address)
    restarted = time.monotonic()
    await eventually(lambda: _is_connected(address, "steady"), timeout=30)

    assert time.monotonic() - restarted < 2.0, log.read_text()


async def _is_connected(address: str, worker_id: str) -> bool:
    """Whether the server at `address` is up and lists the worker as connected."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            listed = await job_service_pb2_grpc.JobServiceStub(channel).ListWorkers(
                job_service_pb2.ListWorkersRequest()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                return False
            raise
    return worker_id in [worker.id for worker in listed.workers]


# What a lost or canceled stream once left in the logs: nothing a person can
# act on, but it reads as a failure and hides real ones.
NOISE = (
    "Traceback",
    "Task was destroyed but it is pending",
    "Task exception was never retrieved",
    "asynchronous generator is already running",
    "Failed to detach context",
    "is unhealthy",
    "RPC already finished",
)


CHATTY = "for i in $(seq 60); do echo line $i; sleep 0.05; done"


async def test_a_server_restart_leaves_no_noise_in_the_logs(
    processes: Processes, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    worker_log, server_log = tmp_path / "worker.log", tmp_path / "server.log"
    server, _ = processes.server(data, "--listen", address)
    worker = processes.worker(address, "--id", "steady", log=worker_log)
    async with await Client.connect(address) as client:
        # It prints all along: writes are in flight on the stream when it breaks.
        job = await client.submit(["sh", "-c", CHATTY], max_retries=0)
        await eventually(lambda: _is_running(client, job.id))

        server.kill()  # the worker's stream breaks with an attempt running
        await asyncio.to_thread(server.wait, 30)
        restarted = processes.spawn(
            "serve", "--listen", address, "--data-dir", str(data), log=server_log
        )
        await eventually(lambda: _is_connected(address, "steady"), timeout=30)
        assert (await client.wait(job.id, timeout=30)).state is JobState.SUCCEEDED
        await _cancel_a_stream(client)

    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    restarted.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(restarted.wait, 30) == 0
    for log in (worker_log, server_log):
        said = log.read_text()
        assert [noise for noise in NOISE if noise in said] == [], said


async def test_a_lost_stream_leaves_no_pending_task_behind_in_the_worker(
    start_server: Callable[..., Awaitable[ZBrainServer]], caplog: pytest.LogCaptureFixture
) -> None:
    # In process, so that the test can collect the worker's garbage at once:
    # a task left pending is reported only when it is collected.
    server = await start_server()
    async with (
        await Client.connect(server.address) as client,
        Worker(client, FunctionExecutor(_echo), worker_id="steady"),
    ):
        await eventually(lambda: _is_connected(server.address, "steady"))

        await server.stop(grace_s=0)
        await eventually(lambda: "lost the server" in caplog.text)
        gc.collect()  # a pending task is reported as it is destroyed
        # A short window for the closing of a collected generator to run (no
        # event says when it has), in which nothing must be reported.
        await asyncio.sleep(0.1)
        gc.collect()  # and how that went is reported as its task is destroyed

    assert [record.getMessage() for record in caplog.records if record.name == "asyncio"] == []


async def _echo(job: Job) -> Any:
    return job.input


async def _is_running(client: Client, job_id: str) -> bool:
    return (await client.get(job_id)).state is JobState.RUNNING


async def _cancel_a_stream(client: Client) -> None:
    """Open a StreamEvents call, read from it, and cancel it."""
    call = job_service_pb2_grpc.JobServiceStub(client.channel).StreamEvents(
        job_service_pb2.StreamEventsRequest(follow=True)
    )
    await call.read()
    call.cancel()
