"""How a `Worker` reacts to each message of its WorkerService.Connect stream.

The test plays the server on a fake channel (`tests.unit.fakes`): it pushes
`ConnectResponse` messages and checks the `ConnectRequest` messages the
worker wrote. Only the SDK's public API is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.unit.fakes import WAIT_S, FakeChannel, FakeStream, job_message, rpc_error, until
from zbrain import Client
from zbrain.errors import UnauthenticatedError
from zbrain.models import Job, LogStream
from zbrain.v1 import job_pb2, job_service_pb2
from zbrain.v1 import worker_service_pb2 as wpb
from zbrain.worker import AttemptEvents, Cancellation, Executor, FunctionExecutor, Outcome, Worker

SUCCEEDED = job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED


# -- what the server sends ---------------------------------------------------------


def seconds(value: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(value), nanos=round(value % 1 * 1e9))


def welcome(*, heartbeat_s: float = 10.0) -> wpb.ConnectResponse:
    """A server's welcome: it reads batched results, as ours does."""
    return wpb.ConnectResponse(
        welcome=wpb.ServerWelcome(
            lease_ttl=seconds(30),
            heartbeat_interval=seconds(heartbeat_s),
            accepts_result_batches=True,
        )
    )


def lease(job_id: str, epoch: int = 1, *, input: Any = None) -> job_service_pb2.Lease:
    job = job_message(job_id)
    job.lease_epoch = epoch
    if input is not None:
        job.input_json = json.dumps(input)
    return job_service_pb2.Lease(job=job, lease_epoch=epoch)


def leased(job_id: str, epoch: int = 1, *, input: Any = None) -> wpb.ConnectResponse:
    return wpb.ConnectResponse(lease=lease(job_id, epoch, input=input))


def ref(job_id: str, epoch: int) -> wpb.LeaseRef:
    return wpb.LeaseRef(job_id=job_id, lease_epoch=epoch)


DRAIN_ACKNOWLEDGED = wpb.ConnectResponse(drain_acknowledged=wpb.DrainAcknowledged())


# -- what the worker runs ----------------------------------------------------------


async def echo(job: Job) -> Any:
    """Finish at once, with the job's input as its output."""
    return job.input


class Gate:
    """A job handler that runs until released, noting the jobs it started
    and the ones it was stopped in."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, job: Job) -> Any:
        self.started.append(job.id)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.stopped.append(job.id)
            raise
        return job.input

    async def running(self, *job_ids: str) -> None:
        await until(lambda: set(job_ids) <= set(self.started), f"{job_ids} start")


class Chatty(Executor):
    """Logs two lines, then succeeds."""

    id = "chatty"

    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        events.log("starting")
        events.log("warming up", LogStream.STDERR)
        return Outcome.succeeded()


class Broken(Executor):
    """Raises instead of returning an outcome."""

    id = "broken"

    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        raise RuntimeError("disk on fire")


# -- a worker on a fake channel ----------------------------------------------------


@dataclass
class Running:
    """A worker whose `run()` is under way on a fake channel."""

    worker: Worker
    channel: FakeChannel
    task: asyncio.Task[None]

    async def welcomed(self, **options: Any) -> FakeStream:
        """Its first stream, once it said hello and was welcomed."""
        stream = await self.channel.stream(0)
        await stream.wrote("hello")
        stream.push(welcome(**options))
        return stream


StartWorker = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_worker() -> AsyncIterator[StartWorker]:
    """Start workers (id "w-1") on fake channels; each is stopped at teardown."""
    started: list[Running] = []

    async def start(executor: Executor, **options: Any) -> Running:
        channel = FakeChannel()
        client = Client.from_channel(channel, target="fake-server:50051")
        worker = Worker(client, executor, **{"worker_id": "w-1", **options})
        running = Running(worker, channel, asyncio.create_task(worker.run()))
        started.append(running)
        return running

    yield start
    for running in started:
        if running.task.done():
            running.task.result()  # a run that ended must have ended cleanly
        else:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
        await asyncio.wait_for(running.worker.shutdown(grace_s=0), WAIT_S)


# -- hello and leases --------------------------------------------------------------


async def test_the_hello_says_who_the_worker_is(start_worker: StartWorker) -> None:
    running = await start_worker(
        FunctionExecutor(echo), orgs=["lab", "ops"], concurrency=3, labels={"gpu": "a100"}
    )
    stream = await running.channel.stream(0)

    [hello] = await stream.wrote("hello")

    assert hello.hello == wpb.WorkerHello(
        worker_id="w-1",
        org_ids=["lab", "ops"],
        concurrency=3,
        labels={"gpu": "a100"},
        accepts_lease_batches=True,
        incarnation_id=running.worker.hello.incarnation_id,
    )
    assert re.fullmatch("[0-9a-f]{32}", hello.hello.incarnation_id)


async def test_a_lease_runs_the_executor_and_its_result_is_written(
    start_worker: StartWorker,
) -> None:
    running = await start_worker(FunctionExecutor(echo))
    stream = await running.welcomed()

    stream.push(leased("j1", 3, input={"n": 1}))

    result = await stream.result_of("j1")
    assert result.lease == ref("j1", 3)
    assert result.result.outcome == SUCCEEDED
    assert json.loads(result.result.output_json) == {"n": 1}


async def test_log_lines_are_written_before_the_result(start_worker: StartWorker) -> None:
    running = await start_worker(Chatty())
    stream = await running.welcomed()

    stream.push(leased("j1", 2))

    await stream.result_of("j1")
    batches = [message.logs for message in stream.written if message.HasField("logs")]
    assert [(line.text, line.stream) for batch in batches for line in batch.lines] == [
        ("starting", job_pb2.LOG_STREAM_STDOUT),
        ("warming up", job_pb2.LOG_STREAM_STDERR),
    ]
    assert all(batch.lease == ref("j1", 2) for batch in batches)
    kinds = stream.kinds()
    assert "logs" not in kinds[kinds.index("result") :]


async def test_an_executor_that_raises_is_reported_as_a_failed_attempt(
    start_worker: StartWorker,
) -> None:
    running = await start_worker(Broken())
    stream = await running.welcomed()

    stream.push(leased("j1"))

    result = await stream.result_of("j1")
    assert result.result.outcome == job_service_pb2.ATTEMPT_OUTCOME_FAILED
    assert result.result.error == "executor crashed: RuntimeError: disk on fire"


async def test_every_lease_of_a_batch_is_started(start_worker: StartWorker) -> None:
    running = await start_worker(FunctionExecutor(echo), concurrency=2)
    stream = await running.welcomed()

    stream.push(wpb.ConnectResponse(leases=wpb.LeaseBatch(leases=[lease("j1"), lease("j2")])))

    assert (await stream.result_of("j1")).result.outcome == SUCCEEDED
    assert (await stream.result_of("j2")).result.outcome == SUCCEEDED


# -- cancel and rejected -----------------------------------------------------------


async def test_a_cancel_for_the_live_epoch_stops_the_attempt_and_reports_it_canceled(
    start_worker: StartWorker,
) -> None:
    gate = Gate()
    running = await start_worker(FunctionExecutor(gate))
    stream = await running.welcomed()
    stream.push(leased("j1", 5))
    await gate.running("j1")

    stream.push(wpb.ConnectResponse(cancel=wpb.CancelLease(lease=ref("j1", 5), reason="by ann")))

    result = await stream.result_of("j1")
    assert result.result.outcome == job_service_pb2.ATTEMPT_OUTCOME_CANCELED
    assert result.result.error == "canceled by user (by ann)"
    assert gate.stopped == ["j1"]


async def test_a_cancel_for_another_epoch_is_ignored(start_worker: StartWorker) -> None:
    gate = Gate()
    running = await start_worker(FunctionExecutor(gate))
    stream = await running.welcomed()
    stream.push(leased("j1", 5))
    await gate.running("j1")

    stream.push(wpb.ConnectResponse(cancel=wpb.CancelLease(lease=ref("j1", 4))))
    await stream.consumed()
    gate.release.set()

    assert (await stream.result_of("j1")).result.outcome == SUCCEEDED
    assert gate.stopped == []


async def test_a_rejected_lease_is_stopped_and_nothing_is_reported_on_it(
    start_worker: StartWorker,
) -> None:
    gate = Gate()
    running = await start_worker(FunctionExecutor(gate))
    stream = await running.welcomed()
    stream.push(leased("j1", 5))
    await gate.running("j1")

    stream.push(wpb.ConnectResponse(rejected=wpb.LeaseRejected(lease=ref("j1", 5))))
    await until(lambda: running.worker.running == 0, "the rejected attempt stops")
    # What the worker owes goes out in order: once a later job's result is
    # written, a result for j1 would have been written before it.
    gate.release.set()
    stream.push(leased("j2"))
    await stream.result_of("j2")

    assert gate.stopped == ["j1"]
    assert [result.lease.job_id for result in stream.results()] == ["j2"]


# -- heartbeats --------------------------------------------------------------------


async def test_heartbeats_carry_the_running_leases(start_worker: StartWorker) -> None:
    gate = Gate()
    running = await start_worker(FunctionExecutor(gate), concurrency=2)
    stream = await running.welcomed(heartbeat_s=0.01)

    stream.push(wpb.ConnectResponse(leases=wpb.LeaseBatch(leases=[lease("j1", 1), lease("j2", 7)])))

    [heartbeat, *_] = await stream.wrote("heartbeat")
    assert list(heartbeat.heartbeat.leases) == [ref("j1", 1), ref("j2", 7)]


# -- shutdown ----------------------------------------------------------------------


async def test_shutdown_sends_a_drain_and_runs_leases_sent_before_its_acknowledgement(
    start_worker: StartWorker,
) -> None:
    running = await start_worker(FunctionExecutor(echo))
    stream = await running.welcomed()

    shutdown = asyncio.create_task(running.worker.shutdown(grace_s=5))
    await stream.wrote("drain")
    stream.push(leased("j1"), DRAIN_ACKNOWLEDGED)
    await asyncio.wait_for(shutdown, WAIT_S)

    assert [(r.lease.job_id, r.result.outcome) for r in stream.results()] == [("j1", SUCCEEDED)]


async def test_an_attempt_that_finishes_within_the_grace_is_reported_as_it_ended(
    start_worker: StartWorker,
) -> None:
    gate = Gate()
    running = await start_worker(FunctionExecutor(gate))
    stream = await running.welcomed()
    stream.push(leased("j1"))
    await gate.running("j1")

    shutdown = asyncio.create_task(running.worker.shutdown(grace_s=5))
    await stream.wrote("drain")
    stream.push(DRAIN_ACKNOWLEDGED)
    await stream.consumed()
    gate.release.set()
    await asyncio.wait_for(shutdown, WAIT_S)

    assert [(r.lease.job_id, r.result.outcome) for r in stream.results()] == [("j1", SUCCEEDED)]


async def test_an_attempt_still_running_after_the_grace_is_reported_interrupted(
    start_worker: StartWorker,
) -> None:
    gate = Gate()
    running = await start_worker(FunctionExecutor(gate))
    stream = await running.welcomed()
    stream.push(leased("j1"))
    await gate.running("j1")

    shutdown = asyncio.create_task(running.worker.shutdown(grace_s=0.05))
    await stream.wrote("drain")
    stream.push(DRAIN_ACKNOWLEDGED)
    await asyncio.wait_for(shutdown, WAIT_S)

    [result] = stream.results()
    assert result.result.outcome == job_service_pb2.ATTEMPT_OUTCOME_INTERRUPTED
    assert gate.stopped == ["j1"]


# -- broken streams ----------------------------------------------------------------


async def test_after_a_break_the_next_hello_claims_the_running_lease(
    start_worker: StartWorker,
) -> None:
    gate = Gate()
    running = await start_worker(FunctionExecutor(gate))
    first = await running.welcomed()
    first.push(leased("j1", 4))
    await gate.running("j1")

    first.fail(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset by peer"))

    second = await running.channel.stream(1)
    [hello] = await second.wrote("hello")
    [before] = await first.wrote("hello")
    assert list(hello.hello.leases) == [ref("j1", 4)]
    assert hello.hello.incarnation_id == before.hello.incarnation_id, "the same process"
    assert gate.stopped == []


async def test_a_result_written_on_a_broken_stream_is_written_again_on_the_next(
    start_worker: StartWorker,
) -> None:
    running = await start_worker(FunctionExecutor(echo))
    first = await running.welcomed()
    first.push(leased("j1", 4, input="out"))
    written = await first.result_of("j1")

    first.fail(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset by peer"))
    second = await running.channel.stream(1)
    await second.wrote("hello")
    second.push(welcome())

    assert await second.result_of("j1") == written


async def test_an_unauthenticated_stream_makes_run_raise_without_retrying() -> None:
    channel = FakeChannel()
    worker = Worker(Client.from_channel(channel), FunctionExecutor(echo))
    run = asyncio.create_task(worker.run())
    stream = await channel.stream(0)
    await stream.wrote("hello")

    stream.fail(rpc_error(grpc.StatusCode.UNAUTHENTICATED, "the token is not valid"))

    with pytest.raises(UnauthenticatedError, match="the token is not valid"):
        await asyncio.wait_for(run, WAIT_S)
    assert len(channel.streams) == 1
