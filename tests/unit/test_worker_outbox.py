"""The worker SDK's outbox (what a worker owes its server) and its stream writer,
driven with a recording stand-in for the gRPC call."""

from __future__ import annotations

import asyncio

from zbrain.v1 import job_pb2, job_service_pb2
from zbrain.v1 import worker_service_pb2 as wpb
from zbrain.worker._outbox import Outbox


class RecordingCall:
    """Records what is written. While `held` is clear, a write waits inside
    the call, as a write does on a busy stream."""

    def __init__(self) -> None:
        self.written: list[wpb.ConnectRequest] = []
        self.held = asyncio.Event()
        self.held.set()
        self.writing = asyncio.Event()  # set when a write has begun
        self._wrote = asyncio.Event()

    async def write(self, message: wpb.ConnectRequest) -> None:
        self.writing.set()
        await self.held.wait()
        self.written.append(message)
        self._wrote.set()

    async def until_written(self, count: int) -> list[str]:
        """The kinds of the first `count` messages, once they are written."""
        while len(self.written) < count:
            self._wrote.clear()
            await asyncio.wait_for(self._wrote.wait(), 5)
        return [message.WhichOneof("message") or "" for message in self.written]


def outbox(*, batch_results: bool) -> Outbox:
    made = Outbox(concurrency=4)
    made.batch_results = batch_results
    return made


def result(job_id: str) -> wpb.ConnectRequest:
    outcome = job_service_pb2.AttemptResult(outcome=job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED)
    ref = wpb.LeaseRef(job_id=job_id, lease_epoch=1)
    return wpb.ConnectRequest(result=wpb.WorkerResult(lease=ref, result=outcome))


async def test_a_new_streams_writer_sends_what_the_last_one_left_without_a_wake_up() -> None:
    made = outbox(batch_results=True)
    made.send(result("a"))  # left by a stream that broke before writing them
    made.send(result("b"))
    call = RecordingCall()

    writer = asyncio.create_task(made.pump(call))
    kinds = await call.until_written(1)
    writer.cancel()

    assert kinds == ["results"]
    assert [r.lease.job_id for r in call.written[0].results.results] == ["a", "b"]


async def test_lines_queued_while_a_control_message_is_written_go_before_the_next() -> None:
    made = outbox(batch_results=False)
    call = RecordingCall()
    call.held.clear()
    writer = asyncio.create_task(made.pump(call))
    made.send(wpb.ConnectRequest(heartbeat=wpb.WorkerHeartbeat()))
    await call.writing.wait()  # the heartbeat's write is under way, held
    # Meanwhile an attempt logs a line and finishes.
    made.log(("a", 1), job_pb2.LogLine(text="last words"))
    made.send(result("a"))

    call.held.set()
    kinds = await call.until_written(3)
    writer.cancel()

    assert kinds == ["heartbeat", "logs", "result"]


async def test_results_without_batching_go_one_per_message() -> None:
    made = outbox(batch_results=False)
    made.send(result("a"))
    made.send(result("b"))
    call = RecordingCall()

    writer = asyncio.create_task(made.pump(call))
    kinds = await call.until_written(2)
    writer.cancel()

    assert kinds == ["result", "result"]


async def test_results_written_on_a_broken_stream_are_sent_again_on_the_next() -> None:
    made = outbox(batch_results=False)
    first = RecordingCall()
    writer = asyncio.create_task(made.pump(first))
    made.send(result("a"))
    await first.until_written(1)
    writer.cancel()
    made.send(wpb.ConnectRequest(heartbeat=wpb.WorkerHeartbeat()))

    made.after_break()
    second = RecordingCall()
    writer = asyncio.create_task(made.pump(second))
    kinds = await second.until_written(1)
    writer.cancel()

    assert kinds == ["result"], "the heartbeat is dropped; the next hello claims the lease"
    assert second.written[0].result.lease.job_id == "a"


def test_the_outbox_names_the_leases_it_still_owes_reports_on() -> None:
    made = outbox(batch_results=False)
    made.log(("a", 1), job_pb2.LogLine(text="x"))
    made.send(result("b"))

    assert made.owes()
    assert made.leases() == {("a", 1), ("b", 1)}
    made.clear()
    assert not made.owes()
