"""One WorkerService.Connect stream: hello, welcome, then reading what the
server pushes while the outbox writes what the worker owes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from ..connection import Connection
from ..v1 import worker_service_pb2 as wpb
from ..v1 import worker_service_pb2_grpc
from ._outbox import LeaseKey, Outbox

log = logging.getLogger("zbrain.worker")

CLOSE_TIMEOUT_S = 5.0
# What grpc.aio raises for a write or read on a call that has already ended
# (its own words: "RPC already finished"), as when the server restarts.
_ENDED_CALL = (asyncio.InvalidStateError, grpc.aio.UsageError, grpc.aio.InternalError)

# Statuses that no reconnect can fix: the worker stops and says why.
FATAL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)


class SessionEnded(Exception):
    """The stream to the server ended; the worker reconnects."""

    def __init__(self, reason: str, *, welcomed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.welcomed = welcomed  # the server had accepted us: reconnect quickly


@dataclass(frozen=True)
class Hello:
    """Who the worker says it is on every stream it opens."""

    worker_id: str
    orgs: tuple[str, ...]
    concurrency: int
    labels: dict[str, str] = field(default_factory=dict)
    # New for each Worker, kept through its reconnects: the server tells this
    # worker's leases from those of an earlier process under the same id
    # (WorkerHello.incarnation_id).
    incarnation_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def message(self, held: Sequence[LeaseKey], *, draining: bool) -> wpb.ConnectRequest:
        return wpb.ConnectRequest(
            hello=wpb.WorkerHello(
                worker_id=self.worker_id,
                org_ids=list(self.orgs),
                # Draining, it comes back only to report: no free slots.
                concurrency=max(1, len(held)) if draining else self.concurrency,
                labels=self.labels,
                leases=[wpb.LeaseRef(job_id=job_id, lease_epoch=epoch) for job_id, epoch in held],
                accepts_lease_batches=True,
                incarnation_id=self.incarnation_id,
            )
        )


class Requests:
    """What the worker writes on one Connect stream: the call's request
    iterator, which `write` feeds one message at a time.

    grpc.aio has a call with a client interceptor (ours add metadata) carry
    `call.write()` through a request iterator of its own, and when the server
    ends the call it leaves the task reading that iterator pending
    (grpc/grpc#29518): every lost stream then logged "Task was destroyed but
    it is pending" and "aclose(): asynchronous generator is already running".
    This iterator is ours, so `end` finishes it, and that task with it.
    """

    _END = object()

    def __init__(self) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._call_ended: asyncio.Future[Any] | None = None

    async def messages(self) -> AsyncIterator[wpb.ConnectRequest]:
        while (message := await self._queue.get()) is not Requests._END:
            assert isinstance(message, wpb.ConnectRequest)
            yield message
            # gRPC asks for the next message once it has sent this one.
            self._queue.task_done()

    def watch(self, call: Any) -> None:
        """The call reading `messages`: a write stops waiting when it ends."""
        self._call_ended = asyncio.ensure_future(call.code())

    async def write(self, message: wpb.ConnectRequest) -> None:
        """Send a message, returning once gRPC has sent it, as `call.write()`
        does; InvalidStateError, as from `call.write()`, when the call ended."""
        ended = self._call_ended
        if ended is None or ended.done():
            raise asyncio.InvalidStateError("RPC already finished")
        self._queue.put_nowait(message)
        sent = asyncio.ensure_future(self._queue.join())
        try:
            await asyncio.wait((sent, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sent.cancel()
        if ended.done():
            raise asyncio.InvalidStateError("RPC already finished")

    def end(self) -> None:
        """No more messages: gRPC half-closes the stream after those queued,
        or, when the call has ended, simply stops reading."""
        self._queue.put_nowait(Requests._END)
        if self._call_ended is not None:
            self._call_ended.cancel()


class Session:
    """One stream. `run` returns only by raising: SessionEnded when the stream
    breaks, or the ZBrainError of a status no reconnect fixes."""

    def __init__(
        self,
        connection: Connection,
        stub: worker_service_pb2_grpc.WorkerServiceStub,
        outbox: Outbox,
        *,
        on_welcome: Callable[[], None],
        on_message: Callable[[wpb.ConnectResponse], None],
        heartbeat: Callable[[], wpb.ConnectRequest | None],
    ) -> None:
        self._connection = connection
        self._stub = stub
        self._outbox = outbox
        self._on_welcome = on_welcome
        self._on_message = on_message
        self._heartbeat = heartbeat
        self._call: Any = None
        self._requests = Requests()  # those of the open call
        self._tasks: list[asyncio.Task[None]] = []
        self.ended = asyncio.Event()
        self.drain_acknowledged = asyncio.Event()
        self.stopping = False  # set by close(): an end is expected, not a loss

    @property
    def open(self) -> bool:
        return self._call is not None

    async def run(self, hello: wpb.ConnectRequest) -> None:
        requests = Requests()
        call = self._stub.Connect(requests.messages())
        requests.watch(call)
        self._call = call
        self._requests = requests
        welcomed = False
        try:
            await requests.write(hello)
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise SessionEnded("the server did not welcome the worker", welcomed=False)
            welcomed = True
            welcome = first.welcome
            self._outbox.lease_ttl_s = welcome.lease_ttl.ToTimedelta().total_seconds() or 30.0
            self._outbox.batch_results = welcome.accepts_result_batches
            interval = welcome.heartbeat_interval.ToTimedelta().total_seconds() or 10.0
            self._on_welcome()
            self._tasks = [
                asyncio.create_task(self._outbox.pump(requests), name="zbrain-worker-writer"),
                asyncio.create_task(self._beat(interval), name="zbrain-worker-heartbeat"),
            ]
            async for message in _messages(call):
                if message.HasField("drain_acknowledged"):
                    self.drain_acknowledged.set()
                self._on_message(message)
            if not self.stopping:
                raise SessionEnded("the server closed the stream", welcomed=True)
        except grpc.aio.AioRpcError as error:
            if error.code() in FATAL:
                raise self._connection.error(error) from None
            if not self.stopping:
                raise SessionEnded(
                    error.details() or error.code().name, welcomed=welcomed
                ) from None
        except _ENDED_CALL:
            # A write or read on a call that had already ended (the server went
            # away): what ended it is the call's own status.
            if not self.stopping:
                raise SessionEnded(await _why_ended(call), welcomed=welcomed) from None
        except asyncio.CancelledError:
            # close() cancels a call the server does not end in time; only a
            # cancellation of this task itself goes on.
            current = asyncio.current_task()
            if not self.stopping or (current is not None and current.cancelling()):
                raise
        finally:
            self._call = None
            self.drain_acknowledged.set()  # nothing more can arrive on this stream
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                # The writer meets the same end of the stream as the reader: what
                # ended it is told above, once.
                with contextlib.suppress(
                    asyncio.CancelledError, grpc.aio.AioRpcError, *_ENDED_CALL
                ):
                    await task
            requests.end()
            call.cancel()
            self.ended.set()

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            message = self._heartbeat()
            if message is not None:
                self._outbox.send(message)

    async def close(self) -> None:
        """Half-close the stream once everything queued is written, and wait for
        the server to end it: cancelling at once could drop the last results in
        flight."""
        call = self._call
        if call is None:
            return
        self.stopping = True
        if not self._tasks:  # not welcomed yet: nothing was or will be written
            call.cancel()
            return
        await self._outbox.flush()
        for task in self._tasks:
            task.cancel()
        self._requests.end()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ended.wait()
        except TimeoutError:
            call.cancel()


async def _why_ended(call: Any) -> str:
    """The status details of a call that has ended."""
    try:
        return str(await call.details() or (await call.code()).name)
    except Exception:  # the call object knows nothing more to say
        return "the stream ended"


async def _messages(call: Any) -> AsyncIterator[wpb.ConnectResponse]:
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        yield message
