"""A worker and a server that goes away: the worker comes back by itself,
soon, and says only what a person needs to know (issue 13, items 3 and 7).

The server here is a process of its own, SIGKILLed and started again on its
port and data directory; the worker is a `zbrain worker` process whose log is
read from a file while it runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from tests.conftest import Processes, eventually, free_port
from zbrain.v1 import job_service_pb2, job_service_pb2_grpc


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
    await eventually(lambda: _async(log.read_text().count("reconnecting in") >= 4), timeout=30)
    processes.server(data, "--listen", address)
    restarted = time.monotonic()
    await eventually(lambda: _is_connected(address, "steady"), timeout=30)

    assert time.monotonic() - restarted < 2.0, log.read_text()


async def _is_connected(address: str, worker_id: str) -> bool:
    """Whether the server at `address` lists the worker as connected."""
    async with grpc.aio.insecure_channel(address) as channel:
        listed = await job_service_pb2_grpc.JobServiceStub(channel).ListWorkers(
            job_service_pb2.ListWorkersRequest()
        )
    return worker_id in [worker.id for worker in listed.workers]


async def _async(value: bool) -> bool:
    return value
