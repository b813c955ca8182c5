"""The worker SDK's stream writer, driven with a recording stand-in for the gRPC call."""

from __future__ import annotations

import asyncio

from zbrain.v1 import job_pb2, job_service_pb2
from zbrain.v1 import worker_service_pb2 as wpb
from zbrain.worker import FunctionExecutor, Worker


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


def worker(*, batch_results: bool) -> Worker:
    async def noop(job: object) -> None:
        return None

    made = Worker(FunctionExecutor(noop), server="127.0.0.1:1")
    made._batch_results = batch_results
    return made


def result(job_id: str) -> wpb.ConnectRequest:
    outcome = job_service_pb2.AttemptResult(outcome=job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED)
    ref = wpb.LeaseRef(job_id=job_id, lease_epoch=1)
    return wpb.ConnectRequest(result=wpb.WorkerResult(lease=ref, result=outcome))


async def test_a_new_streams_writer_sends_what_the_last_one_left_without_a_wake_up() -> None:
    made = worker(batch_results=True)
    made._control = [result("a"), result("b")]  # left by a stream that broke mid-write
    made._wake_writer.clear()
    call = RecordingCall()

    writer = asyncio.create_task(made._write_loop(call))
    kinds = await call.until_written(1)
    writer.cancel()

    assert kinds == ["results"]
    assert [r.lease.job_id for r in call.written[0].results.results] == ["a", "b"]


async def test_lines_queued_while_a_control_message_is_written_go_before_the_next() -> None:
    made = worker(batch_results=False)
    call = RecordingCall()
    call.held.clear()
    writer = asyncio.create_task(made._write_loop(call))
    made._send(wpb.ConnectRequest(heartbeat=wpb.WorkerHeartbeat()))
    await call.writing.wait()  # the heartbeat's write is under way, held
    # Meanwhile an attempt logs a line and finishes.
    made._queue_log(wpb.LeaseRef(job_id="a", lease_epoch=1), job_pb2.LogLine(text="last words"))
    made._send(result("a"))

    call.held.set()
    kinds = await call.until_written(3)
    writer.cancel()

    assert kinds == ["heartbeat", "logs", "result"]


async def test_results_without_batching_go_one_per_message() -> None:
    made = worker(batch_results=False)
    made._control = [result("a"), result("b")]
    call = RecordingCall()

    writer = asyncio.create_task(made._write_loop(call))
    kinds = await call.until_written(2)
    writer.cancel()

    assert kinds == ["result", "result"]
