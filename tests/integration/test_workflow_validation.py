"""What a careless or hostile client sends to the workflow RPCs (templates,
schedules, delayed jobs) is refused with INVALID_ARGUMENT naming the field,
with details a client can always read, and the server stays whole."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from tests.conftest import field_violations
from zbrain import Client
from zbrain.client import job_spec, ref
from zbrain.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    schedule_pb2,
    schedule_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
)
from zbrain_server.app import ZBrainServer
from zbrain_server.config import Limits

TRAILERS_LIMIT = 8 << 10  # what a gRPC peer accepts by default
DAY_S = 86_400


async def refused_fields(call: grpc.aio.UnaryUnaryCall) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    return field_violations(refused.value)


def schedule(**fields: object) -> schedule_pb2.CreateScheduleRequest:
    message = schedule_pb2.Schedule(id="s", job=job_spec(["true"]), **fields)  # type: ignore[arg-type]
    return schedule_pb2.CreateScheduleRequest(schedule=message)


async def test_unknown_time_zones_and_zone_folders_are_refused(
    server: ZBrainServer, client: Client
) -> None:
    stub = schedule_pb2_grpc.ScheduleServiceStub(client.channel)
    for zone in (
        "America/",
        "America",
        "../etc",
        "/etc/localtime",
        "localtime",
        "zone.tab",
        "x" * 300,
        "\x00",
    ):
        fields = await refused_fields(
            stub.CreateSchedule(schedule(cron="0 2 * * *", time_zone=zone))
        )
        assert "schedule.time_zone" in fields, zone

    assert await client.schedules.list() == []


async def test_intervals_outside_a_second_to_a_year_and_bad_durations_are_refused(
    server: ZBrainServer, client: Client
) -> None:
    stub = schedule_pb2_grpc.ScheduleServiceStub(client.channel)
    for interval in (
        duration_pb2.Duration(nanos=999_999_999),
        duration_pb2.Duration(seconds=367 * DAY_S),
        duration_pb2.Duration(seconds=2**62),
        duration_pb2.Duration(seconds=-5),
        duration_pb2.Duration(seconds=5, nanos=-1),
        duration_pb2.Duration(seconds=5, nanos=2_000_000_000),
    ):
        fields = await refused_fields(stub.CreateSchedule(schedule(interval=interval)))
        assert "schedule.interval" in fields, interval

    made = await client.schedules.create("yearly", every=366 * DAY_S, job=job_spec(["true"]))
    assert made.next_fire_time is not None


async def test_malformed_cron_expressions_are_refused(server: ZBrainServer, client: Client) -> None:
    stub = schedule_pb2_grpc.ScheduleServiceStub(client.channel)
    for cron in (
        "61 * * * *",
        "* * * * * *",
        "0 0 30 2 *",
        "*/0 * * * *",
        "1," * 2000 + "2 * * * *",
    ):
        fields = await refused_fields(stub.CreateSchedule(schedule(cron=cron)))
        assert "schedule.cron" in fields, cron[:40]


async def test_delays_and_times_outside_their_types_are_refused(
    server: ZBrainServer, client: Client
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(client.channel)
    for field, spec in (
        (
            "job.run_at",
            job_pb2.JobSpec(cmd=["true"], run_at=timestamp_pb2.Timestamp(seconds=-(2**62))),
        ),
        ("job.run_at", job_pb2.JobSpec(cmd=["true"], run_at=timestamp_pb2.Timestamp(nanos=-1))),
        (
            "job.delay",
            job_pb2.JobSpec(cmd=["true"], delay=duration_pb2.Duration(seconds=1, nanos=-1)),
        ),
        ("job.delay", job_pb2.JobSpec(cmd=["true"], delay=duration_pb2.Duration(nanos=2**31 - 1))),
    ):
        fields = await refused_fields(stub.Submit(job_service_pb2.SubmitRequest(job=spec)))
        assert field in fields, spec

    assert [job async for job in client.list()] == []


async def test_nested_and_ill_typed_template_parameters_are_refused_naming_them(
    server: ZBrainServer, client: Client
) -> None:
    stub = template_pb2_grpc.TemplateServiceStub(client.channel)
    deep = "[" * 100_000 + "]" * 100_000

    def template(*parameters: template_pb2.Parameter) -> template_pb2.CreateTemplateRequest:
        job = job_spec(["echo", "{{ cfg }}"], input={"cfg": "{{ cfg }}"})
        return template_pb2.CreateTemplateRequest(
            template=template_pb2.Template(name="t", job=job, parameters=parameters)
        )

    json_type = template_pb2.PARAMETER_TYPE_JSON
    for parameter, field in (
        (template_pb2.Parameter(name="cfg", type=json_type, default_json=deep), "default_json"),
        (template_pb2.Parameter(name="cfg", type=json_type, default_json="NaN"), "default_json"),
        (template_pb2.Parameter(name="cfg", type=99), "type"),  # type: ignore[arg-type]
        (template_pb2.Parameter(name="cfg", type=-1), "type"),  # type: ignore[arg-type]
    ):
        fields = await refused_fields(stub.CreateTemplate(template(parameter)))
        assert f"template.parameters[0].{field}" in fields, parameter

    await stub.CreateTemplate(template(template_pb2.Parameter(name="cfg", type=json_type)))
    for value in (deep, "[NaN]", '{"a": Infinity}', "{"):
        submit = template_pb2.SubmitTemplateRequest(name="t", parameters={"cfg": value})
        fields = await refused_fields(stub.SubmitTemplate(submit))
        assert "parameters[cfg]" in fields, value[:20]

    assert [job async for job in client.list()] == []


async def test_a_value_repeated_by_a_template_cannot_blow_up_the_job(
    server: ZBrainServer, client: Client
) -> None:
    stub = template_pb2_grpc.TemplateServiceStub(client.channel)
    job = job_spec(["echo", "{{v}}" * 1000], env={"V": "{{v}}" * 1000}, input=["{{v}}"] * 1000)
    parameter = template_pb2.Parameter(name="v")
    await stub.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            template=template_pb2.Template(name="t", job=job, parameters=[parameter])
        )
    )

    # 100 KB put in 3,000 times would be 300 MB of job.
    submit = template_pb2.SubmitTemplateRequest(name="t", parameters={"v": "x" * 100_000})
    fields = await refused_fields(stub.SubmitTemplate(submit))

    assert "bytes" in fields["parameters"]
    made = await stub.SubmitTemplate(
        template_pb2.SubmitTemplateRequest(name="t", parameters={"v": "x"})
    )
    submitted = await client.get(made.job.id)
    assert (submitted.cmd[1], submitted.env["V"], submitted.input) == (
        "x" * 1000,
        "x" * 1000,
        ["x"] * 1000,
    )


async def test_error_details_stay_under_the_trailers_limit_however_many_violations(
    server: ZBrainServer, client: Client
) -> None:
    stub = template_pb2_grpc.TemplateServiceStub(client.channel)
    await stub.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            template=template_pb2.Template(name="t", job=job_spec(["true"]))
        )
    )
    unknown = {f"p{i:04}" + "é" * 200: "1" for i in range(3000)}

    call = stub.SubmitTemplate(template_pb2.SubmitTemplateRequest(name="t", parameters=unknown))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call

    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    trailers = await call.trailing_metadata()
    size = sum(len(key) + len(value) + 32 for key, value in trailers)
    size += len((refused.value.details() or "").encode()) + 32
    assert size < TRAILERS_LIMIT
    violations = field_violations(refused.value)
    assert 1 < len(violations) < 3000
    assert "more problems not listed" in violations[""]


async def test_a_graph_with_more_edges_than_the_limit_is_refused_before_anything_else(
    start_server: Callable[..., Awaitable[ZBrainServer]],
) -> None:
    server = await start_server(limits=Limits(max_batch_dependencies=100))
    async with await Client.connect(server.address, timeout=10) as client:
        stub = job_service_pb2_grpc.JobServiceStub(client.channel)
        roots = [job_spec(["true"], ref=f"r{i}") for i in range(20)]
        fan_in = [job_spec(["true"], depends_on=[ref(f"r{i}") for i in range(20)])] * 6

        fields = await refused_fields(
            stub.SubmitBatch(job_service_pb2.SubmitBatchRequest(jobs=roots + fan_in))
        )

        assert "120 dependencies" in fields["jobs"]
        assert [job async for job in client.list()] == []
        await client.submit_batch(roots + fan_in[:5])  # 100 is allowed


async def test_an_acquire_answers_the_leases_that_fit_and_returns_the_rest(
    start_server: Callable[..., Awaitable[ZBrainServer]],
) -> None:
    server = await start_server(limits=Limits(max_message_bytes=2 << 20))
    async with await Client.connect(server.address, timeout=10) as client:
        stub = job_service_pb2_grpc.JobServiceStub(client.channel)
        acquire = job_service_pb2.AcquireLeaseRequest(worker_id="w", org_ids=["default"])
        parent = await client.submit(["true"])
        acquire.max_jobs = 1
        [lease] = (await stub.AcquireLease(acquire)).leases
        output = job_service_pb2.AttemptResult(
            outcome=job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED, output_json='"' + "x" * 600_000 + '"'
        )
        await stub.CompleteLease(
            job_service_pb2.CompleteLeaseRequest(
                job_id=parent.id, lease_epoch=lease.lease_epoch, result=output
            )
        )
        # Each child's lease carries the parent's 600 kB: five do not fit in 2 MiB.
        children = await client.submit_batch([job_spec(["true"], depends_on=[parent.id])] * 5)

        acquire.max_jobs = 5
        first = (await stub.AcquireLease(acquire)).leases
        second = (await stub.AcquireLease(acquire)).leases

        assert 1 <= len(first) < 5
        assert sorted(lease.job.id for lease in [*first, *second]) == sorted(children)
        assert all(lease.job.attempt == 1 for lease in second)  # given back unspent


async def test_pages_of_large_templates_and_schedules_are_cut_to_fit(
    start_server: Callable[..., Awaitable[ZBrainServer]],
) -> None:
    server = await start_server(limits=Limits(max_message_bytes=2 << 20))
    async with await Client.connect(server.address, timeout=10) as client:
        large = job_spec(["true"], input="x" * 600_000)  # five do not fit in one answer
        names = [f"t{i}" for i in range(5)]
        for name in names:
            await client.templates.create(name, large)
            await client.schedules.create(name, every=3600, job=large, paused=True)

        assert [t.name for t in await client.templates.list()] == names
        assert [s.id for s in await client.schedules.list()] == names


async def test_a_page_of_large_jobs_is_cut_to_fit_and_the_next_goes_on_after_it(
    start_server: Callable[..., Awaitable[ZBrainServer]],
) -> None:
    server = await start_server(limits=Limits(max_message_bytes=2 << 20))
    async with await Client.connect(server.address, timeout=10) as client:
        large = job_spec(["true"], input="x" * 600_000)  # five do not fit in one answer
        ids = [(await client.submit_batch([large]))[0] for _ in range(5)]
        stub = job_service_pb2_grpc.JobServiceStub(client.channel)
        request = job_service_pb2.ListRequest(
            order=job_service_pb2.LIST_ORDER_OLDEST_FIRST, page_size=100
        )
        first = await stub.List(request)

        assert 1 <= len(first.jobs) < 5 and first.next_page_token
        assert [job.id async for job in client.list(oldest_first=True)] == ids
