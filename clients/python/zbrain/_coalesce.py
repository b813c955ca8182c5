"""Concurrent `Client.submit` calls sent as one SubmitBatch.

gRPC costs the server about as much per call as a durable insert costs per
job, so a client with many submits in flight spends most of the server's
time on calls rather than jobs. Submits made while the client is busy are
gathered, as a producer's linger gathers messages, and sent as one
`SubmitBatch(return_jobs=True)`; a lone submit still goes as a plain Submit.
Nothing waits on a timer: what was submitted before the event loop's next
turn, or while `max_inflight` calls are already on their way, travels
together, so a sequential caller sees no added latency.

Each caller still gets its own answer:

* its own job, deduplicated or not (the batch carries every request_id, and
  the server answers each job as Submit would);
* its own error: a batch is stored whole or not at all, so when the server
  refuses one for a reason that may concern only some of its jobs (an
  invalid spec, an org over its quota or not the caller's), each job is sent
  again alone and answered for itself. A failure that leaves it unknown
  whether the batch was stored (the server unreachable, the deadline passed)
  is every caller's, exactly as it would be for a Submit of its own: nothing
  is sent twice behind anyone's back.

Two submits with one request_id never share a batch (the later one waits for
the next), and a submit is batched only with others made under the same
trace context, which the batch's call carries for all of its jobs.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from .errors import ZBrainError
from .telemetry import trace_metadata
from .v1 import job_service_pb2, job_service_pb2_grpc

# Refusals of a batch that may concern some of its jobs only; nothing was
# stored, so each job is sent again alone.
_PER_JOB = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)

MAX_BATCH_JOBS = 1000
"""Jobs per batch, well under a server's default max_batch_jobs (10,000)."""
MAX_BATCH_BYTES = 4 << 20
"""Encoded bytes per batch, well under a server's default message limit (16 MiB)."""
MAX_INFLIGHT = 4
"""Calls of this client's submits on their way at once; more wait and join a batch."""


@dataclass(eq=False, slots=True)
class _Pending:
    request: job_service_pb2.SubmitRequest
    future: asyncio.Future[job_service_pb2.SubmitResponse]


@dataclass(eq=False, slots=True)
class _Lane:
    """Submits waiting under one trace context, and that context to send them in."""

    context: contextvars.Context
    waiting: list[_Pending] = field(default_factory=list)


class SubmitCoalescer:
    """Sends `SubmitRequest`s, gathering concurrent ones into SubmitBatch calls.

    Args:
        stub: The JobService stub to call.
        timeout: Gives the deadline of each call, in seconds (None: none).
        error: Turns a failed call into the ZBrainError its caller sees.
    """

    def __init__(
        self,
        stub: job_service_pb2_grpc.JobServiceStub,
        timeout: Callable[[], float | None],
        error: Callable[[grpc.aio.AioRpcError], ZBrainError],
    ) -> None:
        self._stub = stub
        self._timeout = timeout
        self._error = error
        self._lanes: dict[tuple[tuple[str, str], ...], _Lane] = {}
        self._inflight = 0
        self._flush_scheduled = False

    async def submit(
        self, request: job_service_pb2.SubmitRequest
    ) -> job_service_pb2.SubmitResponse:
        """Submit one job, alone or in a batch with concurrent ones."""
        spec = request.job
        if spec.ref or spec.depends_on:
            # A ref names a job within one batch; other callers' jobs must not see it.
            return await self._alone(request)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[job_service_pb2.SubmitResponse] = loop.create_future()
        trace = tuple(trace_metadata())
        lane = self._lanes.get(trace)
        if lane is None:
            lane = self._lanes[trace] = _Lane(contextvars.copy_context())
        lane.waiting.append(_Pending(request, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Send what waits, as long as fewer than MAX_INFLIGHT calls are out."""
        self._flush_scheduled = False
        while self._lanes and self._inflight < MAX_INFLIGHT:
            trace, lane = next(iter(self._lanes.items()))
            batch = self._take(lane)
            if not lane.waiting:
                del self._lanes[trace]
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch), context=lane.context)
            task.add_done_callback(self._sent)

    @staticmethod
    def _take(lane: _Lane) -> list[_Pending]:
        """The next batch of a lane: in order, within the limits, one job per request id."""
        batch: list[_Pending] = []
        left: list[_Pending] = []
        keys: set[tuple[str, str]] = set()
        size = 0
        for pending in lane.waiting:
            if pending.future.done():  # its caller gave up before it was sent
                continue
            request = pending.request
            key = (request.job.org_id, request.request_id)
            size += request.ByteSize()
            full = len(batch) >= MAX_BATCH_JOBS or (batch and size > MAX_BATCH_BYTES)
            if full or (request.request_id and key in keys):
                left.append(pending)
                continue
            keys.add(key)
            batch.append(pending)
        lane.waiting = left
        return batch

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._inflight -= 1
        if self._lanes and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                await self._answer_alone(batch[0])
            elif batch:
                await self._send_batch(batch)
        finally:
            # Canceled (the client closing), say: no caller is left waiting.
            _fail(batch, ZBrainError("the client stopped before the server answered this submit"))

    async def _send_batch(self, batch: list[_Pending]) -> None:
        request = job_service_pb2.SubmitBatchRequest(
            jobs=[pending.request.job for pending in batch], return_jobs=True
        )
        if any(pending.request.request_id for pending in batch):
            request.request_ids.extend(pending.request.request_id for pending in batch)
        try:
            response = await self._stub.SubmitBatch(request, timeout=self._timeout())
        except grpc.aio.AioRpcError as failure:
            if failure.code() in _PER_JOB:
                await asyncio.gather(*(self._answer_alone(pending) for pending in batch))
            else:
                _fail(batch, self._error(failure))
            return
        if len(response.submitted) != len(batch):
            _fail(
                batch,
                ZBrainError(
                    "the server stored the batch but did not answer each job (it predates "
                    "SubmitBatch's return_jobs); upgrade it, or connect with coalesce=False"
                ),
            )
            return
        for pending, answer in zip(batch, response.submitted, strict=True):
            if not pending.future.done():
                pending.future.set_result(answer)

    async def _answer_alone(self, pending: _Pending) -> None:
        try:
            answer = await self._alone(pending.request)
        except ZBrainError as error:
            if not pending.future.done():
                pending.future.set_exception(error)
            return
        if not pending.future.done():
            pending.future.set_result(answer)

    async def _alone(
        self, request: job_service_pb2.SubmitRequest
    ) -> job_service_pb2.SubmitResponse:
        try:
            response: job_service_pb2.SubmitResponse = await self._stub.Submit(
                request, timeout=self._timeout()
            )
        except grpc.aio.AioRpcError as failure:
            raise self._error(failure) from None
        return response


def _fail(batch: list[_Pending], error: ZBrainError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
