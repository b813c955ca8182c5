"""End to end: job graphs, delayed jobs, templates, schedules and reruns
with a real server and real `zbrain worker` processes."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from tests.conftest import ON_EVERY_STORE, Processes, eventually, field_violations
from tests.integration.test_workers import raw_worker
from zbrain import Client
from zbrain.client import job_spec, ref
from zbrain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from zbrain.models import (
    Cause,
    Dependency,
    DependencyCondition,
    Job,
    JobState,
    OverlapPolicy,
    ParameterType,
    TemplateParameter,
)
from zbrain.v1 import job_service_pb2, job_service_pb2_grpc
from zbrain_server.app import ZBrainServer
from zbrain_server.config import Limits

StartServer = Callable[..., Awaitable[ZBrainServer]]

pytestmark = ON_EVERY_STORE

PY = sys.executable
WRITE_ARGS = "import json,os,sys; json.dump(sys.argv[1:], open(os.environ['ZBRAIN_OUTPUT'],'w'))"
# A job that records its parents' results (ZBRAIN_PARENTS) as its output.
ECHO_PARENTS = (
    "import json, os; "
    "path = os.environ.get('ZBRAIN_PARENTS'); "
    "parents = json.load(open(path)) if path else None; "
    "json.dump({'parents': parents}, open(os.environ['ZBRAIN_OUTPUT'], 'w'))"
)


async def finished(client: Client, *job_ids: str, timeout: float = 30.0) -> list[Job]:
    return [await client.wait(job_id, timeout=timeout) for job_id in job_ids]


def ran(job: Job) -> tuple[datetime, datetime]:
    """When a finished job's last attempt started and when the job finished."""
    assert job.start_time is not None and job.finish_time is not None
    return job.start_time, job.finish_time


def cause(job: Job) -> Cause:
    assert job.last_transition is not None
    return job.last_transition.cause


async def test_a_chain_runs_in_order(server: ZBrainServer, client: Client, processes: Processes):
    processes.worker(server.address, "--concurrency", "4")
    ids = await client.submit_batch(
        [
            job_spec(["true"], ref="a"),
            job_spec(["true"], ref="b", depends_on=[ref("a")]),
            job_spec(["true"], ref="c", depends_on=[ref("b")]),
        ]
    )

    a, b, c = await finished(client, *ids)

    assert [job.state for job in (a, b, c)] == [JobState.SUCCEEDED] * 3
    assert ran(a)[1] <= ran(b)[0] and ran(b)[1] <= ran(c)[0]
    assert b.depends_on == (Dependency(a.id),)
    assert (await client.get(a.id)).child_ids == (b.id,)


async def test_a_failed_parent_cancels_its_descendants_with_the_cause(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address)
    ids = await client.submit_batch(
        [
            job_spec(["false"], ref="a", max_retries=0),
            job_spec(["true"], ref="b", depends_on=[ref("a")]),
            job_spec(["true"], ref="c", depends_on=[ref("b")]),
            job_spec(["true"], ref="cleanup", depends_on=[ref("a", DependencyCondition.FINISHED)]),
        ]
    )

    a, b, c, cleanup = await finished(client, *ids)

    assert a.state is JobState.FAILED
    for child, parent in ((b, a), (c, b)):
        assert child.state is JobState.CANCELED
        assert cause(child) is Cause.DEPENDENCY_FAILED
        assert child.last_transition is not None and parent.id in child.last_transition.reason
        assert child.attempt == 0  # never ran
    assert cleanup.state is JobState.SUCCEEDED


async def test_a_started_child_reads_its_parents_results(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address, "--concurrency", "2")
    ids = await client.submit_batch(
        [
            job_spec(
                [
                    PY,
                    "-c",
                    "import json,os; json.dump({'rows': 3}, open(os.environ['ZBRAIN_OUTPUT'],'w'))",
                ],
                ref="extract",
            ),
            job_spec(["false"], ref="flaky", max_retries=0),
            job_spec(
                [PY, "-c", ECHO_PARENTS],
                depends_on=[ref("extract"), ref("flaky", DependencyCondition.FINISHED)],
            ),
        ]
    )

    extract, flaky, child = await finished(client, *ids)

    assert child.state is JobState.SUCCEEDED, child.last_error
    assert child.output == {
        "parents": [
            {"job_id": extract.id, "state": "SUCCEEDED", "output": {"rows": 3}},
            {"job_id": flaky.id, "state": "FAILED", "output": None},
        ]
    }


def parents_of(lease: job_service_pb2.Lease) -> list[tuple[str, str, bool]]:
    return [(p.job_id, p.output_json, p.output_omitted) for p in lease.parents]


async def test_leases_carry_the_parents_outputs_that_fit_and_the_worker_reads_the_rest(
    start_server: StartServer, processes: Processes
):
    server = await start_server(limits=Limits(max_parent_outputs_bytes=1000))
    async with await Client.connect(server.address, timeout=10) as client:
        stub = job_service_pb2_grpc.JobServiceStub(client.channel)
        acquire = job_service_pb2.AcquireLeaseRequest(worker_id="by-hand", org_ids=["default"])
        big, small = json.dumps("x" * 2000), '{"n": 1}'
        a, b, c = await client.submit_batch(
            [
                job_spec(["true"], ref="a"),
                job_spec(["true"], ref="b"),
                job_spec(["true"], depends_on=[ref("a"), ref("b")]),
            ]
        )
        acquire.max_jobs = 2
        for lease in (await stub.AcquireLease(acquire)).leases:
            output = big if lease.job.id == a else small
            result = job_service_pb2.AttemptResult(
                outcome=job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED, output_json=output
            )
            await stub.CompleteLease(
                job_service_pb2.CompleteLeaseRequest(
                    job_id=lease.job.id, lease_epoch=lease.lease_epoch, result=result
                )
            )

        # Leased by a dispatch pass, once the last parent's end released it.
        acquire.max_jobs = 1
        [leased] = (await stub.AcquireLease(acquire)).leases
        assert leased.job.id == c
        assert parents_of(leased) == [(a, "", True), (b, small, False)]

        # Leased to a connected worker in the commit that stores it.
        async with raw_worker(server, worker_id="w", org_ids=["default"], concurrency=1) as (
            call,
            _,
        ):
            d = await client.submit(["true"], depends_on=[a, b])
            response = await call.read()
            [pushed] = response.leases.leases if response.HasField("leases") else [response.lease]
        assert pushed.job.id == d.id
        assert parents_of(pushed) == parents_of(leased)

        # A worker reads the omitted output before the job starts.
        processes.worker(server.address)
        e = await client.submit([PY, "-c", ECHO_PARENTS], depends_on=[a, b])
        done = await client.wait(e.id, timeout=30)
        assert done.state is JobState.SUCCEEDED, done.last_error
        assert done.output == {
            "parents": [
                {"job_id": a, "state": "SUCCEEDED", "output": "x" * 2000},
                {"job_id": b, "state": "SUCCEEDED", "output": {"n": 1}},
            ]
        }


async def test_a_graph_is_refused_whole_naming_the_job_and_the_edge(
    server: ZBrainServer, client: Client
):
    stub = job_service_pb2_grpc.JobServiceStub(client.channel)
    cases = [
        (
            "jobs[2].depends_on[0].ref",
            "cycle",
            [
                job_spec(["true"], ref="a"),
                job_spec(["true"], ref="b", depends_on=[ref("a"), ref("c")]),
                job_spec(["true"], ref="c", depends_on=[ref("b")]),
            ],
        ),
        ("jobs[0].depends_on[0].ref", "nowhere", [job_spec(["true"], depends_on=[ref("nowhere")])]),
        (
            "jobs[0].depends_on[0].job_id",
            "no job",
            [job_spec(["true"], depends_on=["01a2351e-0000-7000-8000-000000000000"])],
        ),
        (
            "jobs[0].depends_on[0].ref",
            "itself",
            [job_spec(["true"], ref="me", depends_on=[ref("me")])],
        ),
    ]
    for field, words, specs in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitBatch(job_service_pb2.SubmitBatchRequest(jobs=specs))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        violations = field_violations(refused.value)
        assert field in violations or words == "cycle", violations
        assert words in " ".join(violations.values()), violations

    assert [job async for job in client.list()] == []


async def test_a_job_of_another_org_cannot_be_depended_on(server: ZBrainServer, client: Client):
    other = await client.submit(["true"], org="other")

    with pytest.raises(InvalidArgumentError) as refused:
        await client.submit(["true"], depends_on=[other.id])

    assert refused.value.violations[0].field == "jobs[0].depends_on[0].job_id"


async def test_a_graph_crossing_organisations_is_refused_whole(
    server: ZBrainServer, client: Client
):
    stub = job_service_pb2_grpc.JobServiceStub(client.channel)
    theirs = await client.submit(["true"], org="other")
    cases = [
        (  # a job of the default org waiting for an existing job of "other"
            "jobs[1].depends_on[0].job_id",
            [job_spec(["true"], ref="a"), job_spec(["true"], depends_on=[theirs.id, ref("a")])],
        ),
        (  # refs between jobs of two organisations in one batch
            "jobs[1].depends_on[0].ref",
            [
                job_spec(["true"], ref="a", org="other"),
                job_spec(["true"], ref="b", depends_on=[ref("a")]),
            ],
        ),
    ]
    for field, specs in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitBatch(job_service_pb2.SubmitBatchRequest(jobs=specs))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(refused.value)

    assert [job async for job in client.list()] == []
    assert [job.id async for job in client.list(org="other")] == [theirs.id]


async def test_canceling_a_job_cancels_everything_downstream(server: ZBrainServer, client: Client):
    ids = await client.submit_batch(
        [
            job_spec(["true"], ref="a"),
            job_spec(["true"], ref="b", depends_on=[ref("a", DependencyCondition.FINISHED)]),
        ]
    )

    await client.cancel(ids[0])

    b = await client.get(ids[1])
    assert (b.state, cause(b)) == (JobState.CANCELED, Cause.CANCELED)


async def test_submit_after_a_stored_job(server: ZBrainServer, client: Client, processes):
    processes.worker(server.address)
    first = await client.submit(["true"])
    second = await client.submit(["true"], depends_on=[first.id])

    assert second.state in (JobState.BLOCKED, JobState.PENDING)
    assert (await client.wait(second.id, timeout=30)).state is JobState.SUCCEEDED


async def test_a_delayed_job_waits_scheduled_and_starts_on_time(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address)
    run_at = datetime.now(UTC) + timedelta(seconds=2)

    job = await client.submit(["true"], run_at=run_at)

    assert job.state is JobState.SCHEDULED
    assert job.next_run_time == run_at.replace(microsecond=run_at.microsecond)
    done = await client.wait(job.id, timeout=30)
    assert ran(done)[0] >= run_at
    with pytest.raises(InvalidArgumentError):
        await client.submit(["true"], delay=timedelta(days=400))


async def test_a_delayed_job_starts_on_time_after_a_server_restart(
    store_url: str | None, processes: Processes, tmp_path: Path
):
    store = ("--store", store_url) if store_url else ()
    first, address = processes.server(tmp_path / "data", *store)
    async with await Client.connect(address, timeout=10) as client:
        job = await client.submit(["true"], delay=3)
    first.kill()
    first.wait()

    _, address = processes.server(tmp_path / "data", *store)
    processes.worker(address)
    async with await Client.connect(address, timeout=10) as client:
        done = await client.wait(job.id, timeout=30)

    assert done.state is JobState.SUCCEEDED
    assert job.next_run_time is not None and ran(done)[0] >= job.next_run_time
    assert done.attempt == 1


async def test_a_template_submits_with_parameters_and_refuses_a_missing_one(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address)
    template = await client.templates.create(
        "greet",
        job_spec(
            [
                PY,
                "-c",
                WRITE_ARGS,
                "hello {{ who }}",
                "{{ times }}",
            ],
            input={"who": "{{ who }}", "times": "{{ times }}"},
        ),
        parameters=[
            TemplateParameter("who", required=True),
            TemplateParameter("times", ParameterType.INTEGER, default=2),
        ],
    )
    assert template.version == 1

    job = await client.templates.submit("greet", {"who": "world; rm -rf /"})
    done = await client.wait(job.id, timeout=30)

    assert done.output == ["hello world; rm -rf /", "2"]  # one argument, never a shell
    assert done.input == {"who": "world; rm -rf /", "times": 2}
    for params, field in (
        ({}, "parameters[who]"),
        ({"who": "x", "times": "lots"}, "parameters[times]"),
        ({"who": "x", "extra": 1}, "parameters[extra]"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            await client.templates.submit("greet", params)
        assert refused.value.violations[0].field == field
    with pytest.raises(InvalidArgumentError) as undeclared:
        await client.templates.create("bad", job_spec(["echo", "{{ nobody }}"]))
    assert "nobody" in str(undeclared.value)


async def test_template_versions_are_kept_and_a_named_one_can_be_submitted(
    server: ZBrainServer, client: Client
):
    await client.templates.create("t", job_spec(["echo", "one"]))
    await client.templates.create("t", job_spec(["echo", "two"]))

    latest = await client.templates.submit("t")
    first = await client.templates.submit("t", version=1)

    assert (latest.cmd, first.cmd) == (("echo", "two"), ("echo", "one"))
    assert [t.version for t in await client.templates.list()] == [2]
    assert await client.templates.delete("t") == 2
    with pytest.raises(NotFoundError):
        await client.templates.get("t")


async def test_a_schedule_fires_once_per_tick_with_its_labels(server: ZBrainServer, client: Client):
    schedule = await client.schedules.create(
        "every-second", every=1, job=job_spec(["true"]), overlap=OverlapPolicy.ALLOW
    )
    assert schedule.next_fire_time is not None and len(schedule.upcoming) == 5

    async def ticks() -> list[str]:
        return [
            job.labels["zbrain.tick"]
            async for job in client.list(labels={"zbrain.schedule": "every-second"})
        ]

    await eventually(lambda: _at_least(ticks, 3), timeout=20)
    await client.schedules.pause("every-second")
    fired = await ticks()

    assert len(fired) == len(set(fired))
    assert (await client.schedules.get("every-second")).upcoming == ()
    triggered = await client.schedules.trigger("every-second")
    assert triggered.labels["zbrain.schedule"] == "every-second"


async def test_pausing_twice_or_resuming_a_running_schedule_changes_nothing(
    server: ZBrainServer, client: Client
):
    running = await client.schedules.create("hourly", every=3600, job=job_spec(["true"]))

    assert await client.schedules.resume("hourly") == replace(running, upcoming=())
    paused = await client.schedules.pause("hourly")
    assert paused.paused and paused.next_fire_time is None
    assert await client.schedules.pause("hourly") == paused
    resumed = await client.schedules.resume("hourly")
    assert resumed.next_fire_time == running.next_fire_time
    assert [job async for job in client.list()] == []  # no tick fired along the way


async def test_a_schedule_whose_template_is_deleted_skips_its_ticks_saying_why(
    server: ZBrainServer, client: Client
):
    await client.templates.create("nightly", job_spec(["true"]))
    for schedule_id, on in (
        ("on-template", {"template": "nightly"}),
        ("on-job", {"job": job_spec(["true"])}),
    ):
        await client.schedules.create(schedule_id, every=1, overlap=OverlapPolicy.ALLOW, **on)
    await client.templates.delete("nightly")

    async def skipped() -> bool:
        reasons = [
            event.data.get("skipped_reason", "")
            async for event in client.events(topic_prefix="schedules/on-template")
        ]
        return any("could not be made" in reason for reason in reasons)

    async def fired_after(count: int) -> bool:
        return len([job async for job in client.list(labels={"zbrain.schedule": "on-job"})]) > count

    await eventually(skipped, timeout=20)
    fired = len([job async for job in client.list(labels={"zbrain.schedule": "on-job"})])
    await eventually(lambda: fired_after(fired), timeout=20)  # the other schedule goes on


async def test_a_schedule_on_a_template_and_a_bad_schedule(server: ZBrainServer, client: Client):
    await client.templates.create(
        "report",
        job_spec(["echo", "{{ day }}"]),
        parameters=[TemplateParameter("day", required=True)],
    )
    with pytest.raises(InvalidArgumentError) as missing:
        await client.schedules.create("r", every=60, template="report")
    assert missing.value.violations[0].field == "parameters[day]"
    for kwargs, field in (
        ({"cron": "61 * * * *", "job": job_spec(["true"])}, "schedule.cron"),
        ({"cron": "* * * *", "job": job_spec(["true"])}, "schedule.cron"),
        (
            {"cron": "0 2 * * *", "time_zone": "Mars/Base", "job": job_spec(["true"])},
            "schedule.time_zone",
        ),
        ({"every": 0.5, "job": job_spec(["true"])}, "schedule.interval"),
        ({"every": 5}, "schedule.job"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            await client.schedules.create("bad", **kwargs)
        assert refused.value.violations[0].field == field

    schedule = await client.schedules.create(
        "nightly",
        cron="30 2 * * *",
        time_zone="Europe/Paris",
        template="report",
        params={"day": "mon"},
    )
    assert schedule.upcoming[0].astimezone(datetime.now().astimezone().tzinfo) > datetime.now(UTC)
    assert all(t.minute == 30 for t in schedule.upcoming)
    assert schedule.template is not None and schedule.template.params == {"day": "mon"}


async def test_a_rerun_is_linked_both_ways(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address)
    job = await client.submit([PY, "-c", "print('hi')"], input={"n": 1})
    await client.wait(job.id, timeout=30)

    rerun = await client.rerun(job.id, input={"n": 2})

    assert (rerun.rerun_of, rerun.input, rerun.cmd) == (job.id, {"n": 2}, job.cmd)
    assert (await client.get(job.id)).rerun_ids == (rerun.id,)
    assert (await client.wait(rerun.id, timeout=30)).state is JobState.SUCCEEDED
    waiting = await client.submit(["true"], delay=60)
    with pytest.raises(FailedPreconditionError):
        await client.rerun(waiting.id)


async def _at_least(ticks, count: int) -> bool:
    return len(await ticks()) >= count


async def test_the_parents_file_is_absent_for_a_job_without_parents(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address)
    job = await client.submit([PY, "-c", ECHO_PARENTS])

    assert (await client.wait(job.id, timeout=30)).output == {"parents": None}
