"""A fake grpc.aio channel for unit tests of the client and the worker SDK.

`Client.from_channel(FakeChannel())` gives a client whose calls are answered
by the test: each unary or server-streaming call takes the next answer the
test queued for its method, and every request is recorded. Each
WorkerService.Connect call opens a `FakeStream` on which the test plays the
server: it pushes `ConnectResponse` messages and reads what the worker wrote.

The fake stands in for the wire only. What the server does is tested against
real servers (tests/integration), never against this.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from zbrain.errors import Code, FieldViolation, ZBrainError
from zbrain.status import to_status
from zbrain.v1 import job_pb2
from zbrain.v1 import worker_service_pb2 as wpb

WAIT_S = 2.0
"""How long a test waits for a condition before it fails."""


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Wait until `condition()` holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.001)


def rpc_error(
    code: grpc.StatusCode, message: str = "", violations: Sequence[FieldViolation] = ()
) -> grpc.aio.AioRpcError:
    """A failed call as grpc.aio raises it, carrying the status the server's
    edge sends (`zbrain.status.to_status`, BadRequest details included)."""
    error = ZBrainError(message, violations=violations)
    error.code = Code(code.value[0])
    status = to_status(error)
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        status.details,
    )


def job_message(
    job_id: str,
    state: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_RUNNING,
    *,
    output_json: str = "",
    last_error: str = "",
) -> job_pb2.Job:
    """A job as the server sends it, with a 60 second timeout."""
    job = job_pb2.Job(
        id=job_id,
        org_id="default",
        cmd=["true"],
        state=state,
        attempt=1,
        output_json=output_json,
        last_error=last_error,
    )
    job.timeout.FromSeconds(60)
    return job


STAY_OPEN = object()
"""Ends a scripted server stream without ending the call: it stays open,
as a followed stream does, until the client cancels it."""


class FakeChannel:
    """A grpc.aio.Channel stand-in whose answers the test scripts per method.

    Methods are named without their service ("List", "StreamLogs"): the
    names of JobService and WorkerService do not collide.
    """

    def __init__(self) -> None:
        self._answers: dict[str, collections.deque[Any]] = collections.defaultdict(
            collections.deque
        )
        self._requests: dict[str, list[Any]] = collections.defaultdict(list)
        self._timeouts: dict[str, list[float | None]] = collections.defaultdict(list)
        self.server_streams: list[FakeServerStream] = []  # every server-streaming call
        self.streams: list[FakeStream] = []  # every Connect stream, oldest first
        self.closed = False

    # -- what the test does ------------------------------------------------------

    def answer(self, method: str, *answers: Any) -> None:
        """Queue the answers to the next calls of `method`, one per call.

        A unary answer is a response message or a `grpc.aio.AioRpcError`; a
        server-streaming answer is a list of response messages, which may end
        with an `AioRpcError` (the call fails there) or `STAY_OPEN`.
        """
        self._answers[method].extend(answers)

    def requests(self, method: str) -> list[Any]:
        """The requests of every call of `method` so far, as they were sent."""
        return self._requests[method]

    def timeouts(self, method: str) -> list[float | None]:
        """The timeout of every call of `method` so far (None: no deadline)."""
        return self._timeouts[method]

    async def stream(self, index: int) -> FakeStream:
        """The `index`th Connect stream (0 is the first), once the worker opened it."""
        await until(lambda: len(self.streams) > index, f"the worker opens stream {index}")
        return self.streams[index]

    # -- what the generated stubs call ------------------------------------------

    def unary_unary(self, method: str, **_: Any) -> Any:
        name = _name(method)

        def call(request: Message, *, timeout: float | None = None, **_: Any) -> Any:
            self._record(name, request, timeout)
            return _respond(self._next_answer(name))

        return call

    def unary_stream(self, method: str, **_: Any) -> Any:
        name = _name(method)

        def call(request: Message, *, timeout: float | None = None, **_: Any) -> FakeServerStream:
            self._record(name, request, timeout)
            stream = FakeServerStream(self._next_answer(name))
            self.server_streams.append(stream)
            return stream

        return call

    def stream_unary(self, method: str, **_: Any) -> Any:
        name = _name(method)

        async def call(
            requests: AsyncIterator[Message], *, timeout: float | None = None, **_: Any
        ) -> Any:
            async for request in requests:
                self._record(name, request, timeout)
            return await _respond(self._next_answer(name))

        return call

    def stream_stream(self, method: str, **_: Any) -> Any:
        def call(requests: Any = None, **_: Any) -> FakeStream:
            stream = FakeStream(requests)
            self.streams.append(stream)
            return stream

        return call

    async def close(self, grace: float | None = None) -> None:
        self.closed = True

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """Always connected: a worker between streams waits out its own delay."""
        return grpc.ChannelConnectivity.READY

    def _record(self, name: str, request: Message, timeout: float | None) -> None:
        # A copy: the client may reuse a request object for the next call.
        sent = type(request)()
        sent.CopyFrom(request)
        self._requests[name].append(sent)
        self._timeouts[name].append(timeout)

    def _next_answer(self, name: str) -> Any:
        if not self._answers[name]:
            raise AssertionError(f"the test scripted no answer for a call of {name}")
        return self._answers[name].popleft()


def _name(method: str) -> str:
    return method.rsplit("/", 1)[-1]


async def _respond(answer: Any) -> Any:
    if isinstance(answer, grpc.aio.AioRpcError):
        raise answer
    return answer


class FakeServerStream:
    """A server-streaming call: its scripted messages, then its end."""

    def __init__(self, script: Sequence[Any]) -> None:
        self._script = list(script)
        self._cancel = asyncio.Event()
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        for item in self._script:
            if isinstance(item, grpc.aio.AioRpcError):
                raise item
            if item is STAY_OPEN:
                await self._cancel.wait()
                raise asyncio.CancelledError
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        self._cancel.set()
        return True


class _Cancelled:
    """What a read meets once the call was cancelled."""


class FakeStream:
    """One WorkerService.Connect call: the worker writes and reads it as a
    grpc.aio call; the test plays the server with `push`, `end` and `fail`.

    Like the real server, it ends the stream once the worker half-closes.
    Given a request iterator, it reads it as grpc.aio does: each message
    written in turn, until a write fails, and a half-close at its end.
    """

    def __init__(self, requests: AsyncIterator[wpb.ConnectRequest] | None = None) -> None:
        self.written: list[wpb.ConnectRequest] = []
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._reader_waiting = False
        self._failure: grpc.aio.AioRpcError | None = None
        self._ended = asyncio.Event()
        self.half_closed = False
        self.cancelled = False
        self._consumer = (
            asyncio.ensure_future(self._consume(requests)) if requests is not None else None
        )

    async def _consume(self, requests: AsyncIterator[wpb.ConnectRequest]) -> None:
        async for message in requests:
            try:
                await self.write(message)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return
        await self.done_writing()

    # -- the call, as the worker uses it -----------------------------------------

    async def code(self) -> grpc.StatusCode:
        """Once the call has ended, its status."""
        await self._ended.wait()
        if self._failure is not None:
            return self._failure.code()
        return grpc.StatusCode.CANCELLED if self.cancelled else grpc.StatusCode.OK

    async def write(self, message: wpb.ConnectRequest) -> None:
        if self._failure is not None:
            raise self._failure
        if self.half_closed or self.cancelled:
            raise asyncio.InvalidStateError("the call has finished")
        sent = wpb.ConnectRequest()
        sent.CopyFrom(message)
        self.written.append(sent)

    async def read(self) -> Any:
        self._reader_waiting = self._inbox.empty()
        try:
            item = await self._inbox.get()
        finally:
            self._reader_waiting = False
        if item is grpc.aio.EOF or isinstance(item, grpc.aio.AioRpcError | _Cancelled):
            self._inbox.put_nowait(item)  # the end is final: later reads meet it too
        if isinstance(item, grpc.aio.AioRpcError):
            raise item
        if isinstance(item, _Cancelled):
            raise asyncio.CancelledError
        return item

    async def done_writing(self) -> None:
        self.half_closed = True
        self.end()

    def cancel(self) -> bool:
        if self.cancelled:
            return False
        self.cancelled = True
        self._ended.set()
        if self._consumer is not None:
            self._consumer.cancel()
        self._inbox.put_nowait(_Cancelled())
        return True

    # -- the server's side, played by the test -----------------------------------

    def push(self, *messages: wpb.ConnectResponse) -> None:
        """Send messages to the worker, in order."""
        for message in messages:
            self._inbox.put_nowait(message)

    def end(self) -> None:
        """End the stream as a server does: the worker reads EOF."""
        self._ended.set()
        self._inbox.put_nowait(grpc.aio.EOF)

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        """Break the stream: the worker's next read and write raise `error`."""
        self._failure = error
        self._ended.set()
        self._inbox.put_nowait(error)

    def kinds(self) -> list[str]:
        """What the worker wrote, by kind ("hello", "logs", "result", ...)."""
        return [message.WhichOneof("message") or "" for message in self.written]

    async def wrote(self, kind: str, count: int = 1) -> list[wpb.ConnectRequest]:
        """Wait until the worker wrote `count` messages of `kind`; return all of them."""
        await until(
            lambda: self.kinds().count(kind) >= count,
            f"the worker writes {count} {kind} message(s); it wrote {self.kinds()}",
        )
        return [m for m in self.written if m.WhichOneof("message") == kind]

    async def consumed(self) -> None:
        """Wait until the worker has read and handled every message pushed so far."""
        await until(
            lambda: self._reader_waiting and self._inbox.empty(),
            "the worker reads everything pushed",
        )

    def results(self) -> list[wpb.WorkerResult]:
        """Every result written, whether alone (`result`) or batched (`results`)."""
        found: list[wpb.WorkerResult] = []
        for message in self.written:
            if message.HasField("result"):
                found.append(message.result)
            elif message.HasField("results"):
                found.extend(message.results.results)
        return found

    async def result_of(self, job_id: str) -> wpb.WorkerResult:
        """Wait for the result of `job_id` and return it."""
        await until(
            lambda: any(r.lease.job_id == job_id for r in self.results()),
            f"the worker reports {job_id}; it wrote {self.kinds()}",
        )
        return next(r for r in self.results() if r.lease.job_id == job_id)
