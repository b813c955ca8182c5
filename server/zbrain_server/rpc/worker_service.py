"""The RPC handler of zbrain.v1.WorkerService: one bidirectional stream per worker.

The stream is a session: the worker's hello registers it with the
Dispatcher, which pushes leases while it has free slots; the worker's
heartbeats, log lines and results are applied as they arrive. When the stream
ends, the session's leases run on until their TTL, for the worker to claim
back when it reconnects (see Dispatcher.connect).

gRPC costs per message, not per byte, so both sides batch when the other
says it can: a worker whose hello sets `accepts_lease_batches` gets each
dispatch pass's leases in one LeaseBatch, and the welcome's
`accepts_result_batches` lets a worker report several outcomes in one
WorkerResults. Peers that do not say so get and send one message per lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import grpc

from zbrain.errors import InvalidArgumentError, ZBrainError
from zbrain.protocol import BATCH_BYTES
from zbrain.v1 import job_service_pb2 as jpb
from zbrain.v1 import worker_service_pb2 as wpb
from zbrain.v1 import worker_service_pb2_grpc

from ..config import ServerConfig
from ..core.access import request_orgs
from ..core.model import AttemptResult, Lease, now_us
from ..dispatch.dispatcher import Dispatcher
from ..dispatch.sessions import CancelNotice, DrainAcknowledgement, WorkerSession
from . import codec, validation
from .auth import current_caller
from .errors import abort_with

log = logging.getLogger(__name__)


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    """zbrain.v1.WorkerService over a Dispatcher."""

    def __init__(self, config: ServerConfig, dispatcher: Dispatcher) -> None:
        self._config = config
        self._dispatcher = dispatcher

    async def Connect(
        self,
        request_iterator: AsyncIterator[wpb.ConnectRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[wpb.ConnectResponse]:
        try:
            session, held = await self._hello(request_iterator, context.peer())
            rejected = await self._dispatcher.connect(session, held)
        except ZBrainError as error:
            await abort_with(context, error)
            return
        for job_id, epoch, why in rejected:
            ref = wpb.LeaseRef(job_id=job_id, lease_epoch=epoch)
            session.outbox.put_nowait(
                wpb.ConnectResponse(rejected=wpb.LeaseRejected(lease=ref, reason=why))
            )
        log.info(
            "worker %s connected (orgs %s, %d slots)",
            session.worker_id,
            ",".join(session.org_ids),
            session.capacity,
        )
        reader = asyncio.create_task(self._read(session, request_iterator))
        reason = "connection lost"
        try:
            yield wpb.ConnectResponse(
                welcome=wpb.ServerWelcome(
                    lease_ttl=codec.duration(self._dispatcher.lease_ttl_us),
                    heartbeat_interval=codec.duration(self._dispatcher.lease_ttl_us // 3),
                    accepts_result_batches=True,
                )
            )
            while True:
                message = await session.outbox.get()
                if message is None:  # the reader finished, or a newer session replaced this one
                    break
                for response in _to_responses(message):
                    yield response
            failure = reader.exception() if reader.done() and not reader.cancelled() else None
            if isinstance(failure, ZBrainError):
                reason = f"protocol error: {failure}"
                await abort_with(context, failure)
            elif failure is not None:
                reason = f"internal error: {failure!r}"
                log.error("worker %s stream failed", session.worker_id, exc_info=failure)
            else:
                reason = "replaced by a newer connection" if session.closed else "stream closed"
        except asyncio.CancelledError:
            reason = "connection lost"
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self._dispatcher.disconnect(session)
            log.info("worker %s disconnected: %s", session.worker_id, reason)

    async def _hello(
        self, requests: AsyncIterator[wpb.ConnectRequest], peer: str
    ) -> tuple[WorkerSession, list[tuple[str, int]]]:
        first = await anext(requests, None)
        if first is None or not first.HasField("hello"):
            raise validation.missing_hello()
        hello = first.hello
        orgs = request_orgs(current_caller(), list(hello.org_ids), self._config.default_org)
        worker_id, org_ids, concurrency, held = validation.hello(hello, orgs, self._config.limits)
        session = WorkerSession(worker_id, org_ids, concurrency)
        session.takes_batches = hello.accepts_lease_batches
        session.address = peer
        session.labels = dict(hello.labels)
        session.incarnation = hello.incarnation_id
        return session, held

    async def _read(
        self, session: WorkerSession, requests: AsyncIterator[wpb.ConnectRequest]
    ) -> None:
        """Apply the worker's messages until its stream ends, then close the session.

        Reports about different leases do not wait for each other: a
        heartbeat's renewals and the results of consecutive messages are
        applied concurrently, so they share the store's group commits instead
        of each waiting for one of its own. A lease's log lines are applied
        before the next message is read, so they always precede its result.
        """
        results: set[asyncio.Task[None]] = set()
        try:
            async for request in requests:
                if session.closed:
                    break
                session.last_heard_at_us = now_us()
                if session.silent:
                    session.heard_from()
                    self._dispatcher.kick()
                kind = request.WhichOneof("message")
                if kind == "heartbeat":
                    refs = [
                        _checked(ref, f"heartbeat.leases[{i}]")
                        for i, ref in enumerate(request.heartbeat.leases)
                    ]
                    await asyncio.gather(
                        *(self._report(session, ref, self._dispatcher.renew) for ref in refs)
                    )
                elif kind == "logs":
                    ref = _checked(request.logs.lease, "logs.lease")
                    records = validation.log_records(
                        request.logs.lines, "logs.lines", self._config.limits
                    )
                    append = functools.partial(self._dispatcher.append_logs, records=records)
                    await self._report(session, ref, append)
                elif kind in ("result", "results"):
                    named = (
                        [("result", request.result)]
                        if kind == "result"
                        else [
                            (f"results.results[{i}]", report)
                            for i, report in enumerate(request.results.results)
                        ]
                    )
                    # All checked before any is applied: a malformed one ends the stream.
                    reports = [
                        (
                            _checked(report.lease, f"{field}.lease"),
                            validation.attempt_result(report.result, f"{field}.result"),
                        )
                        for field, report in named
                    ]
                    task = asyncio.create_task(self._complete(session, reports))
                    results.add(task)
                    task.add_done_callback(functools.partial(_applied, results))
                elif kind == "drain":
                    log.info("worker %s is draining: %s", session.worker_id, request.drain.reason)
                    self._dispatcher.drain(session)
                else:
                    raise InvalidArgumentError(
                        f"unexpected {kind or 'empty'} message after the hello"
                    )
        finally:
            if results:  # every result read is applied before the session ends
                await asyncio.gather(*results, return_exceptions=True)
            session.outbox.put_nowait(None)

    async def _complete(
        self, session: WorkerSession, reports: Sequence[tuple[wpb.LeaseRef, AttemptResult]]
    ) -> None:
        """Record results in one store call; each refused one (a lease not held
        here, or stale in the store) is answered with LeaseRejected."""
        held = []
        for ref, result in reports:
            if _holds(session, ref):
                held.append((ref, result))
        if not held:
            return
        try:
            outcomes: Sequence[object] = await self._dispatcher.complete_all(
                [(ref.job_id, ref.lease_epoch, result) for ref, result in held]
            )
        except ZBrainError as error:  # the store failed the whole batch
            outcomes = [error] * len(held)
        for (ref, _), outcome in zip(held, outcomes, strict=True):
            if isinstance(outcome, ZBrainError):
                _reject(session, ref, str(outcome))

    async def _report(
        self,
        session: WorkerSession,
        ref: wpb.LeaseRef,
        apply: Callable[..., Awaitable[object]],
    ) -> None:
        """Apply one report about a lease (its id already checked by `_checked`);
        a stale lease is answered with LeaseRejected.

        Rejection is not an error of the stream: the worker stops that attempt
        and carries on with its others (a failure of one lease never costs the
        worker its connection and its other attempts).
        """
        if not _holds(session, ref):
            return
        try:
            await apply(job_id=ref.job_id, lease_epoch=ref.lease_epoch)
        except InvalidArgumentError:
            raise  # a malformed message is a protocol error: it ends the stream
        except ZBrainError as error:  # stale, unknown, or failed for this lease only
            _reject(session, ref, str(error))


def _holds(session: WorkerSession, ref: wpb.LeaseRef) -> bool:
    """Whether the session holds the lease; if not, the worker is told so."""
    if session.active.get(ref.job_id) == ref.lease_epoch:
        return True
    _reject(session, ref, f"lease {ref.lease_epoch} of job {ref.job_id} is not held here")
    return False


def _reject(session: WorkerSession, ref: wpb.LeaseRef, reason: str) -> None:
    session.outbox.put_nowait(
        wpb.ConnectResponse(rejected=wpb.LeaseRejected(lease=ref, reason=reason))
    )


def _checked(ref: wpb.LeaseRef, field: str) -> wpb.LeaseRef:
    """The lease reference itself; INVALID_ARGUMENT (which ends the stream)
    when its job id is malformed."""
    validation.lease_ref(ref, field)
    return ref


def _applied(pending: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
    """A result's task ended: forget it, and log a failure no rejection covered."""
    pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("applying a worker's result failed", exc_info=task.exception())


def _to_responses(message: object) -> Iterator[wpb.ConnectResponse]:
    """The stream messages for one outbox item."""
    if isinstance(message, list):  # a dispatch pass's leases, for a worker taking batches
        yield from _lease_batches([codec.lease_to_proto(lease) for lease in message])
    elif isinstance(message, wpb.ConnectResponse):
        yield message
    elif isinstance(message, Lease):
        yield wpb.ConnectResponse(lease=codec.lease_to_proto(message))
    elif isinstance(message, DrainAcknowledgement):
        yield wpb.ConnectResponse(drain_acknowledged=wpb.DrainAcknowledged())
    elif isinstance(message, CancelNotice):
        yield wpb.ConnectResponse(
            cancel=wpb.CancelLease(
                lease=wpb.LeaseRef(job_id=message.job_id, lease_epoch=message.lease_epoch),
                reason=message.reason,
            )
        )
    else:
        raise TypeError(f"cannot send {type(message).__name__} to a worker")


def _lease_batches(leases: list[jpb.Lease]) -> Iterator[wpb.ConnectResponse]:
    """LeaseBatch messages of at most about BATCH_BYTES each, in order."""
    batch: list[jpb.Lease] = []
    size = 0
    for lease in leases:
        lease_size = lease.ByteSize()
        if batch and size + lease_size > BATCH_BYTES:
            yield wpb.ConnectResponse(leases=wpb.LeaseBatch(leases=batch))
            batch, size = [], 0
        batch.append(lease)
        size += lease_size
    if batch:
        yield wpb.ConnectResponse(leases=wpb.LeaseBatch(leases=batch))
