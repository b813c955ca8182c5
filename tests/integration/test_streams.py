"""Long-lived streams under abuse: huge output replays under the message limit,
a stalled reader is cut off with where to resume, readers cannot starve
workers, and streams that would now be refused are ended."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tests.conftest import eventually
from zbrain import Client, JobState
from zbrain.errors import SLOW_SUBSCRIBER, ResourceExhaustedError, UnauthenticatedError
from zbrain.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from zbrain.worker import FunctionExecutor, Worker
from zbrain_server.app import ZBrainServer
from zbrain_server.config import Limits
from zbrain_server.core.model import Role, now_us
from zbrain_server.core.tokens import new_token
from zbrain_server.dispatch.tokens import create_token

LINE = "x" * 2000


async def lease_one(stub: job_service_pb2_grpc.JobServiceStub) -> job_service_pb2.Lease:
    request = job_service_pb2.AcquireLeaseRequest(worker_id="w")
    request.wait_timeout.FromSeconds(10)
    [lease] = (await stub.AcquireLease(request)).leases
    lease_found: job_service_pb2.Lease = lease
    return lease_found


async def print_lines(
    stub: job_service_pb2_grpc.JobServiceStub, lease: job_service_pb2.Lease, count: int
) -> None:
    """Report `count` lines of LINE for a leased job, 400 a message."""
    for start in range(0, count, 400):
        await stub.ReportLogs(
            job_service_pb2.ReportLogsRequest(
                job_id=lease.job.id,
                lease_epoch=lease.lease_epoch,
                lines=[
                    job_pb2.LogLine(stream=job_pb2.LOG_STREAM_STDOUT, text=LINE)
                    for _ in range(min(400, count - start))
                ],
            )
        )


async def test_a_replay_of_huge_output_stays_under_the_message_limit(start_server) -> None:
    # 6,000 lines of 2 KB: 12 MB of output, replayed to a server and client
    # that take messages of at most 2 MiB.
    server = await start_server(limits=Limits(max_message_bytes=2 << 20), lease_ttl_s=120.0)
    options = [("grpc.max_receive_message_length", 2 << 20)]
    async with await Client.connect(server.address, options=options) as client:
        job = await client.submit(["print"])
        stub = job_service_pb2_grpc.JobServiceStub(client.channel)
        lease = await lease_one(stub)
        await print_lines(stub, lease, 6000)

        lines = [line async for line in client.logs(job.id)]
        logged = [
            event
            async for event in client.events(topic_prefix=f"jobs/{job.id}/logs")
            if event.type == "job_logged"
        ]

    assert len(lines) == 6000
    assert sum(len(event.data["lines"]) for event in logged) == 6000


async def test_a_stalled_reader_is_cut_off_with_where_to_resume(start_server) -> None:
    # A long lease: printing this much may take a while on a busy machine.
    server = await start_server(event_buffer_bytes=256 << 10, lease_ttl_s=120.0)
    async with await Client.connect(server.address) as client:
        job = await client.submit(["print"])
        stub = job_service_pb2_grpc.JobServiceStub(client.channel)
        lease = await lease_one(stub)
        stalled = stub.StreamEvents(job_service_pb2.StreamEventsRequest(follow=True))
        first = await stalled.read()  # subscribed: the backlog has begun to arrive
        # Far more output than the buffer and every transport window hold.
        await print_lines(stub, lease, 20_000)

        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(60):
                while True:
                    await stalled.read()
        resumed = [
            event
            async for event in client.events(
                after=int(_resume_after(ended.value)), topic_prefix=f"jobs/{job.id}/"
            )
        ]

    assert first.events[0].sequence == 1
    assert ended.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert resumed, "the reader resumes where it was cut off"


def _resume_after(error: grpc.aio.AioRpcError) -> str:
    from zbrain.status import from_rpc_error

    converted = from_rpc_error(error)
    assert converted.reason == SLOW_SUBSCRIBER
    return converted.metadata["resume_after_sequence"]


async def _follow(client: Client) -> list[Any]:
    return [event async for event in client.events(follow=True)]


async def test_readers_cannot_take_what_a_worker_needs(start_server) -> None:
    server = await start_server(limits=Limits(max_streams_per_client=2))
    async with await Client.connect(server.address) as client:
        readers = [asyncio.ensure_future(_follow(client)) for _ in range(2)]
        try:
            await eventually(lambda: _streams_open(server, 2))
            with pytest.raises(ResourceExhaustedError, match="ZBRAIN_MAX_STREAMS_PER_CLIENT"):
                await _follow(client)

            async def echo(job: Any) -> Any:
                return job.input

            async with Worker(client, FunctionExecutor(echo), orgs=["busy"]):
                job = await client.submit(["echo"], org="busy", input=7)
                # Not client.wait: it follows the job with a reader stream.
                await eventually(lambda: _finished(client, job.id))
                done = await client.get(job.id)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    assert (done.state, done.output) == (JobState.SUCCEEDED, 7)


async def _finished(client: Client, job_id: str) -> bool:
    return (await client.get(job_id)).state.is_terminal


async def _streams_open(server: ZBrainServer, count: int) -> bool:
    return server.open_streams >= count


async def test_turning_auth_on_ends_the_streams_opened_without_a_token(start_server) -> None:
    server = await start_server()
    async with await Client.connect(server.address) as client:
        reader = asyncio.ensure_future(_follow(client))

        async def forever(job: Any) -> Any:
            await asyncio.sleep(3600)  # a job that runs until the test ends

        worker = Worker(client, FunctionExecutor(forever), orgs=["late"])
        running = asyncio.ensure_future(worker.run())
        await eventually(lambda: _streams_open(server, 2))

        await create_token(server.store, "ops", Role.ADMIN, "the first token")

        with pytest.raises(UnauthenticatedError, match="authentication is required now"):
            await asyncio.wait_for(reader, 10)
        with pytest.raises(UnauthenticatedError):
            await asyncio.wait_for(running, 10)


async def test_revoking_a_token_ends_its_open_streams(start_server) -> None:
    server = await start_server(auth="required")
    token, bearer = new_token("team", Role.CLIENT, "soon revoked", now_us())
    await server.store.add_token(token)
    async with await Client.connect(server.address, token=bearer) as client:
        reader = asyncio.ensure_future(_follow(client))
        await eventually(lambda: _streams_open(server, 1))

        await server.store.revoke_token(token.id, now_us())

        with pytest.raises(UnauthenticatedError, match="revoked"):
            await asyncio.wait_for(reader, 10)
