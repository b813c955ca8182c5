"""OpenTelemetry: RPC and attempt spans in the submitter's trace, metrics, Prometheus, health."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import Processes, eventually
from zbrain import Client, Job
from zbrain.worker import FunctionExecutor, Worker
from zbrain_server.dispatch.metrics import Telemetry


class Recorded:
    """Providers whose spans and metrics the test can read."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def span(self, name: str) -> ReadableSpan:
        [found] = [s for s in self.spans.get_finished_spans() if s.name == name]
        return found

    def attributes(self, name: str) -> dict[str, Any]:
        return dict(self.span(name).attributes or {})

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    providers = Recorded()
    yield providers
    providers.tracer_provider.shutdown()
    providers.meter_provider.shutdown()


@pytest.fixture
async def observed(start_server, recorded: Recorded):
    return await start_server(
        telemetry=Telemetry(recorded.tracer_provider, recorded.meter_provider)
    )


async def run_in_a_trace(server: Any, recorded: Recorded) -> str:
    """Submit a job inside a "submitter" span, let an SDK worker run it; the job's id."""

    async def work(job: Job) -> Any:
        return "ok"

    tracer = recorded.tracer_provider.get_tracer("test")
    async with await Client.connect(server.address) as client:
        worker = Worker(client, FunctionExecutor(work), tracer_provider=recorded.tracer_provider)
        async with worker:
            with tracer.start_as_current_span("submitter"):
                job = await client.submit(["work"])
            await client.wait(job.id, timeout=20)
            await eventually(lambda: _has(recorded, "zbrain.job.execute"))
    return job.id


async def test_the_worker_span_joins_the_submitters_trace(observed, recorded: Recorded) -> None:
    job_id = await run_in_a_trace(observed, recorded)

    submitter = recorded.span("submitter")
    submit = recorded.span("zbrain.v1.JobService/Submit")
    attempt = recorded.span("zbrain.job.attempt")
    execute = recorded.span("zbrain.job.execute")
    trace_id = submitter.context.trace_id
    assert {s.context.trace_id for s in (submit, attempt, execute)} == {trace_id}
    assert submit.parent is not None and submit.parent.span_id == submitter.context.span_id
    assert attempt.parent is not None and attempt.parent.span_id == submit.context.span_id
    assert execute.parent is not None and execute.parent.span_id == submit.context.span_id
    rpc = recorded.attributes("zbrain.v1.JobService/Submit")
    assert (rpc["rpc.system"], rpc["rpc.method"], rpc["rpc.grpc.status_code"]) == (
        "grpc",
        "Submit",
        "OK",
    )
    assert recorded.attributes("zbrain.job.attempt")["zbrain.job_id"] == job_id
    assert recorded.attributes("zbrain.job.attempt")["zbrain.state"] == "SUCCEEDED"
    assert recorded.attributes("zbrain.job.execute")["zbrain.outcome"] == "SUCCEEDED"


async def test_without_recorded_spans_the_worker_still_joins_the_trace(
    start_server, recorded: Recorded
) -> None:
    server = await start_server(
        telemetry=Telemetry(recorded.tracer_provider, recorded.meter_provider, record_spans=False)
    )
    await run_in_a_trace(server, recorded)

    submitter = recorded.span("submitter")
    execute = recorded.span("zbrain.job.execute")
    assert {s.name for s in recorded.spans.get_finished_spans()} == {
        "submitter",
        "zbrain.job.execute",
    }
    assert execute.context.trace_id == submitter.context.trace_id
    # Its parent is the Submit call's span, which exists only as a context.
    assert execute.parent is not None and execute.parent.span_id != submitter.context.span_id
    assert recorded.points("rpc.server.duration")


async def test_a_worker_recording_no_spans_still_runs_jobs_in_the_submitters_trace(
    observed, recorded: Recorded
) -> None:
    async def current_trace(job: Job) -> str:
        return format(trace.get_current_span().get_span_context().trace_id, "032x")

    tracer = recorded.tracer_provider.get_tracer("test")
    # No tracer provider given and none installed: the worker records no span.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    async with (
        await Client.connect(observed.address) as client,
        Worker(client, FunctionExecutor(current_trace), concurrency=2),
    ):
        with tracer.start_as_current_span("first"):
            [first, first_again] = [await client.submit(["work"]) for _ in range(2)]
        with tracer.start_as_current_span("second"):
            second = await client.submit(["work"])
        done = [await client.wait(job.id, timeout=20) for job in (first, first_again, second)]

    def trace_of(name: str) -> str:
        return format(recorded.span(name).context.trace_id, "032x")

    assert [job.output for job in done] == [trace_of("first")] * 2 + [trace_of("second")]
    assert not await _has(recorded, "zbrain.job.execute")


async def _has(recorded: Recorded, name: str) -> bool:
    return any(s.name == name for s in recorded.spans.get_finished_spans())


async def test_a_failed_rpc_span_carries_its_status(observed, recorded: Recorded) -> None:
    async with await Client.connect(observed.address) as client:
        with pytest.raises(Exception, match="not found"):
            await client.get("01939a4e-8b2c-7def-8123-456789abcdef")
    assert recorded.attributes("zbrain.v1.JobService/Get")["rpc.grpc.status_code"] == "NOT_FOUND"
    assert not recorded.span("zbrain.v1.JobService/Get").status.is_ok


async def test_job_metrics_count_by_org(observed, recorded: Recorded) -> None:
    async def work(job: Job) -> Any:
        if job.input == "fail":
            raise RuntimeError("boom")
        return None

    async with (
        await Client.connect(observed.address) as client,
        Worker(client, FunctionExecutor(work), orgs=["acme"]),
    ):
        ok = await client.submit(["x"], org="acme")
        bad = await client.submit(["x"], org="acme", input="fail", max_retries=1)
        waiting = await client.submit(["x"], org="nobody")
        await client.cancel(waiting.id)
        await client.wait(ok.id, timeout=20)
        await client.wait(bad.id, timeout=20)
        connected = recorded.points("zbrain.workers.connected")

    def total(metric: str, org: str) -> float:
        return float(
            sum(p.value for p in recorded.points(metric) if p.attributes.get("org") == org)
        )

    assert total("zbrain.jobs.submitted", "acme") == 2
    assert total("zbrain.jobs.submitted", "nobody") == 1
    assert total("zbrain.jobs.succeeded", "acme") == 1
    assert total("zbrain.jobs.retried", "acme") == 1
    assert total("zbrain.jobs.failed", "acme") == 1
    assert total("zbrain.jobs.canceled", "nobody") == 1
    [latency] = [
        p for p in recorded.points("zbrain.dispatch.latency") if p.attributes["org"] == "acme"
    ]
    assert latency.count == 2
    durations = recorded.points("zbrain.attempt.duration")
    assert sum(p.count for p in durations) == 3
    assert [p.value for p in connected] == [1]
    methods = {p.attributes["rpc.method"] for p in recorded.points("rpc.server.duration")}
    assert {"zbrain.v1.JobService/Submit", "zbrain.v1.JobService/Cancel"} <= methods


async def test_queue_depth_is_reported_by_org_and_state(observed, recorded: Recorded) -> None:
    async with await Client.connect(observed.address) as client:
        for _ in range(3):
            await client.submit(["x"], org="queued")
    await observed.measure_queue()  # now, rather than at the next refresh in 5 s

    points = recorded.points("zbrain.queue.depth")
    assert [(p.attributes, p.value) for p in points] == [({"org": "queued", "state": "PENDING"}, 3)]


async def test_unmatched_jobs_are_counted_by_org_with_and_without_requirements(
    observed, recorded: Recorded
) -> None:
    async def work(job: Job) -> Any:
        return None

    async def connected() -> bool:
        return bool(observed._dispatcher.has_worker_for("served", {}))

    async with await Client.connect(observed.address) as client:
        await client.submit(["x"], org="served", requires={"gpu": "a100"})  # no such worker
        await client.submit(["x"], org="served", requires={"gpu": ""})  # no such worker
        await client.submit(["x"], org="unserved")  # no worker for the org
        await client.submit(["x"], org="unserved", requires={"gpu": ""})
        async with Worker(client, FunctionExecutor(work), orgs=["served"], concurrency=1):
            await eventually(connected)
            await observed.measure_queue()
            unmatched = {
                p.attributes["org"]: p.value for p in recorded.points("zbrain.jobs.unmatched")
            }
    assert unmatched == {"served": 2, "unserved": 2}


def test_prometheus_endpoint_shows_counters_moving(processes: Processes, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, address = processes.server(tmp_path / "data", "--metrics-listen", f"127.0.0.1:{port}")

    def submitted() -> float:
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        lines = [
            line for line in body.splitlines() if line.startswith("zbrain_jobs_submitted_total")
        ]
        return float(sum(float(line.rsplit(" ", 1)[1]) for line in lines))

    assert submitted() == 0
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-m", "zbrain", "submit", "--server", address, "--", "true"],
            check=True,
        )
    assert submitted() == 2


async def test_health_watch_reports_serving_then_not_serving(start_server) -> None:
    server = await start_server()
    channel = grpc.aio.insecure_channel(server.address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="zbrain.v1.JobService")
    )
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING

    stopping = asyncio.ensure_future(server.stop(grace_s=1.0))
    second = await watch.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping
    await channel.close()


async def test_zbrain_worker_exports_its_execute_span_when_an_exporter_is_set(
    server, client: Client, processes: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = processes.worker(
        server.address, "--id", "traced", env={"ZBRAIN_OTEL_EXPORTER": "console"}, log=log
    )
    job = await client.submit(["true"])
    await client.wait(job.id, timeout=30)
    worker.terminate()  # a stopping worker flushes the spans it holds
    await asyncio.to_thread(worker.wait, 30)

    exported = log.read_text()
    assert '"name": "zbrain.job.execute"' in exported
    assert job.id in exported
