"""`Worker`: keeps a stream to the server open, runs the leases it is pushed,
reconnects when the server goes away, and drains on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Mapping, Sequence

import grpc
from opentelemetry import trace

from .. import _convert
from ..client import Client
from ..connection import RECONNECT_FIRST_S, RECONNECT_MAX_S
from ..logs import ensure_handler
from ..v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc
from ..v1 import worker_service_pb2 as wpb
from ._attempt import Attempt, Runner
from ._executor import Executor, Outcome, StopReason
from ._outbox import Outbox
from ._session import Hello, Session, SessionEnded

log = logging.getLogger("zbrain.worker")


class _Unhealthy(Exception):
    """The executor's health check failed; the worker tries again later."""


class Worker:
    """Runs the jobs a ZBrain server leases to it with `executor`.

        async with await Client.connect("127.0.0.1:50051") as client:
            await Worker(client, Greeter(), orgs=["greetings"]).run()

    The worker uses the client's connection (address, token, TLS); one client
    may serve a worker and ordinary calls at once.
    """

    def __init__(
        self,
        client: Client,
        executor: Executor,
        *,
        worker_id: str | None = None,
        orgs: Sequence[str] = (),
        concurrency: int = 1,
        labels: Mapping[str, str] | None = None,
        reconnect_max_s: float = RECONNECT_MAX_S,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.executor = executor
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.hello = Hello(self.worker_id, tuple(orgs), concurrency, dict(labels or {}))
        self.reconnect_max_s = reconnect_max_s
        self._outbox = Outbox(concurrency)
        self._runner = Runner(
            executor,
            self._outbox,
            client.connection,
            job_service_pb2_grpc.JobServiceStub(client.channel),
            self.worker_id,
            tracer_provider,
        )
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(client.channel)
        self._attempts: dict[str, Attempt] = {}
        self._session: Session | None = None
        self._disconnected_at: float | None = None
        self._stopping = asyncio.Event()
        self._draining = False
        self._runner_task: asyncio.Task[None] | None = None
        self.completed = 0  # attempts reported, for tests and burst mode

    @property
    def running(self) -> int:
        """How many attempts run now."""
        return len(self._attempts)

    # -- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `shutdown()`; reconnect with backoff whenever the stream breaks.

        Raises the ZBrainError of a refusal no reconnect can fix (a bad token,
        a role that may not run workers, an invalid hello).
        """
        delay = RECONNECT_FIRST_S
        loop = asyncio.get_running_loop()
        ensure_handler()  # a program that set up no logging still sees these lines
        log.info(
            "worker %s (%s, %d slots, orgs %s) connecting to %s",
            self.worker_id,
            self.executor.id,
            self.hello.concurrency,
            ",".join(self.hello.orgs) or "the server's default",
            self.client.target,
        )
        # A draining worker comes back only to report what it still owes.
        while not self._stopping.is_set() and (not self._draining or self._owes_server()):
            try:
                if not self._draining:
                    await self._check_executor()
                await self._connect()
            except SessionEnded as ended:
                if self._stopping.is_set():
                    break
                if self._disconnected_at is None:
                    self._disconnected_at = loop.time()
                if ended.welcomed:
                    delay = RECONNECT_FIRST_S
                log.warning(
                    "lost the server at %s (%s); reconnecting in %.1fs",
                    self.client.target,
                    ended.reason,
                    delay,
                )
            except _Unhealthy as unhealthy:
                log.warning(
                    "executor %s is unhealthy (%s); retrying in %.1fs",
                    self.executor.id,
                    unhealthy,
                    delay,
                )
            self._abandon_if_reaped(loop.time())
            await self._pause(delay * (0.5 + random.random() / 2))
            delay = min(self.reconnect_max_s, delay * 2)

    async def _pause(self, delay_s: float) -> None:
        """Wait before the next connection: `delay_s`, or less when the worker
        is stopped, or when the server could not be reached and now can.

        A call on a channel that is backing off between connection attempts
        fails at once with the last connection error, so a worker retrying on
        a timer of its own may miss a restarted server by a whole delay; the
        channel's own attempts (whose backoff `channel_options` sets to the
        worker's) notice it first, and the worker follows at once.
        """
        waits = [asyncio.ensure_future(self._stopping.wait())]
        channel = self.client.channel
        if channel.get_state(try_to_connect=True) is not grpc.ChannelConnectivity.READY:
            waits.append(asyncio.ensure_future(channel.channel_ready()))
        try:
            await asyncio.wait(waits, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Drain: take no new jobs, let running ones finish for grace_s, then
        stop them (they are reported INTERRUPTED and retried by the server)."""
        if self._draining:
            return
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        session = self._session
        if session is not None and session.open:
            self._outbox.send(wpb.ConnectRequest(drain=wpb.WorkerDrain(reason="shutdown")))
            # Leases the server sent before it saw the drain may still be on
            # the way; its acknowledgement comes after the last of them.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(grace_s, 10.0)):
                    await session.drain_acknowledged.wait()
        log.info("draining: %d running job(s), grace %.0fs", len(self._attempts), grace_s)
        tasks = [a.task for a in self._attempts.values() if a.task is not None]
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            for attempt in list(self._attempts.values()):
                attempt.cancel.set(StopReason.SHUTDOWN)
            if still_running:
                await asyncio.wait(still_running)
        self._stopping.set()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Worker:
        self._runner_task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
        if self._runner_task is not None:
            await self._runner_task

    async def _check_executor(self) -> None:
        """The executor's health check; _Unhealthy with what it raised."""
        try:
            await self.executor.health_check()
        except Exception as error:  # an executor's check may raise anything
            raise _Unhealthy(f"{type(error).__name__}: {error}") from error

    def _owes_server(self) -> bool:
        """Whether attempts run, or lines or results wait to be reported."""
        return bool(self._attempts) or self._outbox.owes()

    def _abandon_if_reaped(self, now: float) -> None:
        """Away for longer than a lease lives, the worker has lost every lease it
        held to the server's reaper: stop those attempts (reporting nothing) and
        drop what they queued, rather than run them on and buffer their output."""
        if self._disconnected_at is None or now - self._disconnected_at < self._outbox.lease_ttl_s:
            return
        for attempt in list(self._attempts.values()):
            attempt.cancel.set(StopReason.LEASE_LOST, "disconnected for longer than a lease")
        self._outbox.clear()

    # -- one connection ---------------------------------------------------------

    async def _connect(self) -> None:
        session = Session(
            self.client.connection,
            self._stub,
            self._outbox,
            on_welcome=self._welcomed,
            on_message=self._handle,
            heartbeat=self._heartbeat,
        )
        self._session = session
        held = sorted({a.key for a in self._attempts.values()} | self._outbox.leases())
        try:
            await session.run(self.hello.message(held, draining=self._draining))
        finally:
            if self._stopping.is_set():
                # Shutting down: whatever still runs is stopped and not reported.
                for attempt in list(self._attempts.values()):
                    attempt.cancel.set(StopReason.LEASE_LOST, "the worker stopped")
                running = [a.task for a in self._attempts.values() if a.task is not None]
                if running:
                    await asyncio.wait(running)
                self._outbox.clear()
            else:
                # A lease is the job's, not the connection's: attempts run on, and
                # their logs and results wait for the next connection (to this
                # server or another replica), whose hello claims the leases back.
                self._outbox.after_break()

    def _welcomed(self) -> None:
        reconnected = self._disconnected_at is not None
        self._disconnected_at = None
        if self._draining:
            self._outbox.send(wpb.ConnectRequest(drain=wpb.WorkerDrain(reason="shutdown")))
        log.info(
            "%s %s as %s (%d slots)",
            "reconnected to" if reconnected else "connected to",
            self.client.target,
            self.worker_id,
            self.hello.concurrency,
        )

    def _heartbeat(self) -> wpb.ConnectRequest | None:
        leases = [a.ref for a in self._attempts.values()]
        if not leases:
            return None
        return wpb.ConnectRequest(heartbeat=wpb.WorkerHeartbeat(leases=leases))

    def _handle(self, message: wpb.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "lease":
            self._start(message.lease)
        elif kind == "leases":
            for lease in message.leases.leases:
                self._start(lease)
        elif kind in ("cancel", "rejected"):
            body = message.cancel if kind == "cancel" else message.rejected
            if kind == "rejected":
                # The work done under a lost lease is discarded: say so, since
                # nothing else on this side shows it (the attempt may be over).
                log.warning(
                    "the server refused lease %d of job %s: %s",
                    body.lease.lease_epoch,
                    body.lease.job_id,
                    body.reason,
                )
            attempt = self._attempts.get(body.lease.job_id)
            if attempt is not None and attempt.key[1] == body.lease.lease_epoch:
                reason = StopReason.CANCELED if kind == "cancel" else StopReason.LEASE_LOST
                attempt.cancel.set(reason, body.reason)

    def _start(self, lease: job_service_pb2.Lease) -> None:
        attempt = Attempt(lease, _convert.leased_job(lease))
        self._attempts[attempt.job.id] = attempt
        attempt.task = asyncio.create_task(
            self._runner.run(attempt, self._finished), name=f"job-{attempt.job.id}"
        )

    def _finished(self, attempt: Attempt, outcome: Outcome | None) -> None:
        if outcome is not None:
            self.completed += 1
        if self._attempts.get(attempt.job.id) is attempt:
            del self._attempts[attempt.job.id]
