"""JobService through a real grpc.aio server on a loopback port, without workers."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import field_violations
from zbrain import CancelOutcome, Client, JobState
from zbrain.errors import InvalidArgumentError, NotFoundError
from zbrain.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from zbrain.v1.job_service_pb2 import SubmitRequest


async def test_submit_returns_a_durable_pending_job(client: Client) -> None:
    job = await client.submit(
        ["echo", "hello"], input={"n": 1}, env={"A": "b"}, timeout=5, max_retries=2
    )

    stored = await client.get(job.id)
    assert stored.state is JobState.PENDING
    assert stored.cmd == ("echo", "hello")
    assert stored.input == {"n": 1}
    assert stored.env == {"A": "b"}
    assert stored.timeout.total_seconds() == 5
    assert stored.max_retries == 2
    assert stored.attempt == 0
    assert stored.org_id == "default"


async def test_submit_applies_server_defaults(start_server) -> None:
    server = await start_server(default_timeout_s=42.0, default_max_retries=7, default_org="acme")
    async with await Client.connect(server.address) as client:
        job = await client.submit(["true"])
    assert job.timeout.total_seconds() == 42
    assert job.max_retries == 7
    assert job.org_id == "acme"


async def test_job_ids_are_uuid7_and_increase(client: Client) -> None:
    ids = [(await client.submit(["true"])).id for _ in range(20)]
    assert ids == sorted(ids)
    assert all(job_id[14] == "7" for job_id in ids)  # the UUID version nibble


async def test_request_id_makes_submit_idempotent(client: Client) -> None:
    first = await client.submit(["true"], request_id="order-42")
    again = await client.submit(["false"], request_id="order-42")
    other_org = await client.submit(["true"], request_id="order-42", org="other")

    assert again.id == first.id
    assert again.cmd == ("true",)
    assert other_org.id != first.id


async def test_get_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError):
        await client.get("01939a4e-8b2c-7def-8123-456789abcdef")


async def test_get_malformed_id_is_invalid_argument(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        await client.get("not-a-uuid")
    assert error.value.violations[0].field == "job_id"


async def test_list_filters_by_org_and_state_newest_first(client: Client) -> None:
    a = await client.submit(["true"], org="a")
    b = await client.submit(["true"], org="a")
    await client.submit(["true"], org="b")
    await client.cancel(b.id)

    assert [j.id async for j in client.list(org="a")] == [b.id, a.id]
    assert [j.id async for j in client.list(org="a", oldest_first=True)] == [a.id, b.id]
    assert [j.id async for j in client.list(org="a", states=[JobState.CANCELED])] == [b.id]
    assert [j.id async for j in client.list(org="a", states=[JobState.PENDING])] == [a.id]


async def test_list_pages_are_stable_while_jobs_arrive(client: Client, server) -> None:
    ids = [(await client.submit(["true"])).id for _ in range(7)]
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    request = job_service_pb2.ListRequest(
        page_size=3, order=job_service_pb2.LIST_ORDER_OLDEST_FIRST
    )
    seen: list[str] = []
    while True:
        page = await stub.List(request)
        seen += [job.id for job in page.jobs]
        await client.submit(["true"])  # arrivals must not shift the pages already read
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen[:7] == ids
    assert len(seen) == len(set(seen))


async def test_list_iterates_across_pages(client: Client) -> None:
    ids = [(await client.submit(["true"])).id for _ in range(12)]
    listed = [j.id async for j in client.list(page_size=5)]
    assert listed == ids[::-1]


@pytest.mark.parametrize("token", ["garbage", "eyJhZnRlciI6MX0", "%%%"])
async def test_malformed_page_token_is_invalid_argument(client: Client, token: str, server) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.List(job_service_pb2.ListRequest(page_token=token))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in error.value.details()


async def test_page_token_cannot_be_reused_with_other_filters(client: Client, server) -> None:
    for _ in range(3):
        await client.submit(["true"])
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    page = await stub.List(job_service_pb2.ListRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.List(
            job_service_pb2.ListRequest(
                page_size=1, page_token=page.next_page_token, org_id="other"
            )
        )
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_pending_job_cancels_at_once(client: Client) -> None:
    job = await client.submit(["sleep", "60"])
    canceled, outcome = await client.cancel(job.id)
    assert outcome is CancelOutcome.CANCELED
    assert canceled.state is JobState.CANCELED
    assert canceled.finish_time is not None


async def test_cancel_terminal_job_changes_nothing(client: Client) -> None:
    job = await client.submit(["true"])
    first, _ = await client.cancel(job.id)
    again, outcome = await client.cancel(job.id)
    assert outcome is CancelOutcome.ALREADY_TERMINAL
    assert again.update_time == first.update_time


async def test_cancel_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError):
        await client.cancel("01939a4e-8b2c-7def-8123-456789abcdef")


async def test_submit_batch_is_atomic(client: Client, server) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    good = job_pb2.JobSpec(cmd=["true"])
    response = await stub.SubmitBatch(job_service_pb2.SubmitBatchRequest(jobs=[good] * 5))
    assert len(response.job_ids) == 5
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.SubmitBatch(
            job_service_pb2.SubmitBatchRequest(jobs=[good, job_pb2.JobSpec(cmd=[])])
        )
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "jobs[1].cmd" in error.value.details()
    assert len([j async for j in client.list()]) == 5


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (job_pb2.JobSpec(cmd=[]), "job.cmd"),
        (job_pb2.JobSpec(cmd=[""]), "job.cmd[0]"),
        (job_pb2.JobSpec(cmd=["echo", "a\x00b"]), "job.cmd[1]"),
        (job_pb2.JobSpec(cmd=["echo"] * 2000), "job.cmd"),
        (job_pb2.JobSpec(cmd=["echo", "x" * 200_000]), "job.cmd"),
        (job_pb2.JobSpec(cmd=["true"], input_json="{not json"), "job.input_json"),
        (job_pb2.JobSpec(cmd=["true"], input_json='"' + "x" * (1 << 20) + '"'), "job.input_json"),
        (job_pb2.JobSpec(cmd=["true"], env={"BAD NAME": "1"}), "job.env['BAD NAME']"),
        (job_pb2.JobSpec(cmd=["true"], env={"A": "x\x00"}), "job.env['A']"),
        (job_pb2.JobSpec(cmd=["true"], env={"ZBRAIN_JOB_ID": "x"}), "job.env['ZBRAIN_JOB_ID']"),
        (job_pb2.JobSpec(cmd=["true"], org_id="bad org!"), "job.org_id"),
        (job_pb2.JobSpec(cmd=["true"], max_retries=-1), "job.max_retries"),
        (job_pb2.JobSpec(cmd=["true"], max_retries=1000), "job.max_retries"),
    ],
)
async def test_bad_job_is_rejected_naming_the_field(
    server, spec: job_pb2.JobSpec, field: str
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Submit(SubmitRequest(job=spec))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)
    listed = await stub.List(job_service_pb2.ListRequest())
    assert len(listed.jobs) == 0, "a rejected job must not be half-written"


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-5, 0), (0, 0), (0, -1), (8 * 86400, 0), (10**11, 0)],
)
async def test_bad_timeout_is_rejected(server, seconds: int, nanos: int) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    spec = job_pb2.JobSpec(cmd=["true"])
    spec.timeout.seconds, spec.timeout.nanos = seconds, nanos
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Submit(SubmitRequest(job=spec))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "job.timeout" in field_violations(error.value)


async def test_health_and_reflection_answer(server) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.aio.insecure_channel(server.address)
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="zbrain.v1.JobService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = [s.name async for r in responses for s in r.list_services_response.service]
    assert "zbrain.v1.JobService" in services
    assert "zbrain.v1.WorkerService" in services
    await channel.close()
