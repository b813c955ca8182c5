"""Concurrent `Client.submit` calls travel as one SubmitBatch, each caller
answered for itself; SubmitBatch's request ids and full answers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tests.conftest import field_violations
from zbrain import Client, Job, JobState
from zbrain.errors import InvalidArgumentError
from zbrain.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc


class CountCalls(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the unary calls a channel makes, by method name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method
        self.calls[method.decode() if isinstance(method, bytes) else method] += 1
        return await continuation(details, request)


@pytest.fixture
async def counted(server) -> AsyncIterator[tuple[Client, Counter[str]]]:
    counter = CountCalls()
    channel = grpc.aio.insecure_channel(server.address, interceptors=[counter])
    async with Client.from_channel(channel, target=server.address, timeout=10) as client:
        yield client, counter.calls


BATCH = "/zbrain.v1.JobService/SubmitBatch"
SUBMIT = "/zbrain.v1.JobService/Submit"


async def test_concurrent_submits_travel_together_and_each_caller_gets_its_job(
    counted: tuple[Client, Counter[str]],
) -> None:
    client, calls = counted
    jobs = await asyncio.gather(*(client.submit(["echo", str(n)]) for n in range(50)))

    assert [job.cmd for job in jobs] == [("echo", str(n)) for n in range(50)]
    assert len({job.id for job in jobs}) == 50
    assert all(job.state is JobState.PENDING and job.org_id == "default" for job in jobs)
    assert calls[BATCH] >= 1
    assert calls[BATCH] + calls[SUBMIT] < 50
    stored = await client.get(jobs[7].id)
    assert stored.cmd == ("echo", "7")


async def test_a_lone_submit_goes_as_a_plain_submit(counted: tuple[Client, Counter[str]]) -> None:
    client, calls = counted
    await client.submit(["true"])
    await client.submit(["true"])

    assert calls == Counter({SUBMIT: 2})


async def test_an_invalid_submit_fails_alone_and_the_others_are_stored(
    counted: tuple[Client, Counter[str]],
) -> None:
    client, _ = counted
    outcomes = await asyncio.gather(
        client.submit(["true"]),
        client.submit([]),  # no program: refused by the server
        client.submit(["true"], env={"BAD NAME": "1"}),
        client.submit(["false"]),
        return_exceptions=True,
    )

    first, no_cmd, bad_env, last = outcomes
    assert isinstance(first, Job) and isinstance(last, Job)
    assert isinstance(no_cmd, InvalidArgumentError)
    assert [v.field for v in no_cmd.violations] == ["job.cmd"]
    assert isinstance(bad_env, InvalidArgumentError)
    assert [v.field for v in bad_env.violations] == ["job.env['BAD NAME']"]
    assert [(await client.get(job.id)).cmd for job in (first, last)] == [("true",), ("false",)]
    assert len([job async for job in client.list()]) == 2


async def test_concurrent_submits_with_one_request_id_make_one_job(
    counted: tuple[Client, Counter[str]],
) -> None:
    client, _ = counted
    earlier = await client.submit(["true"], request_id="order-1")
    jobs = await asyncio.gather(
        client.submit(["true"], request_id="order-2"),
        client.submit(["false"], request_id="order-2"),
        client.submit(["echo"], request_id="order-1"),
        client.submit(["echo"]),
    )

    assert jobs[0].id == jobs[1].id
    assert jobs[1].cmd == jobs[0].cmd
    assert jobs[2].id == earlier.id and jobs[2].cmd == ("true",)
    assert len({job.id for job in jobs}) == 3
    assert len([job async for job in client.list()]) == 3


async def test_without_coalescing_each_submit_is_a_call(server) -> None:
    counter = CountCalls()
    channel = grpc.aio.insecure_channel(server.address, interceptors=[counter])
    async with Client.from_channel(channel, target=server.address, coalesce=False) as client:
        await asyncio.gather(*(client.submit(["true"]) for _ in range(10)))
    assert counter.calls == Counter({SUBMIT: 10})


async def test_submit_batch_answers_each_job_as_submit_would(server) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        first = await stub.SubmitBatch(
            job_service_pb2.SubmitBatchRequest(
                jobs=[job_pb2.JobSpec(cmd=["true"])] * 2, request_ids=["a", ""], return_jobs=True
            )
        )
        again = await stub.SubmitBatch(
            job_service_pb2.SubmitBatchRequest(
                jobs=[job_pb2.JobSpec(cmd=["false"])] * 2, request_ids=["b", "a"], return_jobs=True
            )
        )
        plain = await stub.SubmitBatch(
            job_service_pb2.SubmitBatchRequest(jobs=[job_pb2.JobSpec(cmd=["true"])])
        )

    assert [answer.job.id for answer in first.submitted] == list(first.job_ids)
    assert [answer.deduplicated for answer in again.submitted] == [False, True]
    assert again.job_ids[1] == first.job_ids[0]
    assert list(again.submitted[1].job.cmd) == ["true"]
    assert again.submitted[0].job.state == job_pb2.JOB_STATE_PENDING
    assert len(plain.job_ids) == 1 and not plain.submitted


@pytest.mark.parametrize(
    ("request_ids", "field"),
    [(["a"], "request_ids"), (["a", "a"], "request_ids[1]"), (["", "x" * 200], "request_ids[1]")],
)
async def test_bad_request_ids_of_a_batch_are_named(
    server, request_ids: list[str], field: str
) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.SubmitBatch(
                job_service_pb2.SubmitBatchRequest(
                    jobs=[job_pb2.JobSpec(cmd=["true"])] * 2, request_ids=request_ids
                )
            )
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)
