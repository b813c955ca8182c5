"""The worker SDK: a connection loop that runs jobs with a pluggable `Executor`.

A `Worker` keeps one WorkerService.Connect stream open to the server, takes
the leases the server pushes while it has free slots, runs each attempt with
its executor, and reports log lines (batched), heartbeats and the result, all
fenced by the lease epoch. It reconnects with backoff when the server goes
away and drains on shutdown: no new jobs, running ones finish within a grace
period, then they are stopped.

    class Hello(Executor):
        id = "hello"
        async def execute(self, job, events, cancel):
            events.log("hi")
            return Outcome.succeeded({"greeting": "hello"})

    await Worker(Hello(), server="127.0.0.1:50051").run()
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import collections
import contextlib
import enum
import hashlib
import json
import logging
import os
import random
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import telemetry
from .client import TlsFiles, default_server, open_channel
from .errors import ZBrainError, from_rpc_error
from .logs import job_fields
from .models import Artifact, Job, LogStream
from .telemetry import exporter_from_env
from .v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc
from .v1 import worker_service_pb2 as wpb

log = logging.getLogger("zbrain.worker")

UPLOAD_CHUNK_BYTES = 256 << 10
EXECUTE_SPAN = "zbrain.job.execute"
MAX_LINES_PER_MESSAGE = 5000
MAX_RESULTS_PER_MESSAGE = 500
BATCH_BYTES = 1 << 20  # results sent together stay far below any server's message limit


class StopReason(enum.Enum):
    """Why an attempt must stop before it finishes by itself."""

    CANCELED = "canceled by user"
    TIMED_OUT = "timed out"
    SHUTDOWN = "worker shutting down"
    LEASE_LOST = "lease lost"


class Cancellation:
    """Tells an executor to stop; the first reason given wins."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None  # made by the first wait(): most never wait
        self._callbacks: list[Callable[[], object]] = []
        self.reason: StopReason | None = None
        self.detail = ""

    def set(self, reason: StopReason, detail: str = "") -> None:
        if self.reason is None:
            self.reason, self.detail = reason, detail
            if self._event is not None:
                self._event.set()
            for callback in self._callbacks:
                callback()

    def on_set(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call `callback` once a reason is set (at once if one is); return a
        function that forgets it. Cheaper than a task waiting on `wait()`."""
        if self.reason is not None:
            callback()
            return lambda: None
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def is_set(self) -> bool:
        return self.reason is not None

    async def wait(self) -> None:
        if self.reason is not None:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    @property
    def reason_text(self) -> str:
        if self.reason is None:
            return ""
        return f"{self.reason.value} ({self.detail})" if self.detail else self.reason.value


class OutcomeKind(enum.IntEnum):
    """How an attempt ended (zbrain.v1.AttemptOutcome)."""

    SUCCEEDED = 1
    FAILED = 2
    CANCELED = 3
    TIMED_OUT = 4


@dataclass(frozen=True)
class Outcome:
    """What an executor returns: success with output, or failure with an error."""

    kind: OutcomeKind
    output: Any = None
    error: str = ""
    exit_code: int | None = None

    @classmethod
    def succeeded(cls, output: Any = None) -> Outcome:
        return cls(OutcomeKind.SUCCEEDED, output=output, exit_code=0)

    @classmethod
    def failed(cls, error: str, exit_code: int | None = None) -> Outcome:
        return cls(OutcomeKind.FAILED, error=error, exit_code=exit_code)

    def to_proto(self) -> job_service_pb2.AttemptResult:
        result = job_service_pb2.AttemptResult(
            outcome=job_service_pb2.AttemptOutcome.ValueType(self.kind.value),
            output_json=json.dumps(self.output) if self.output is not None else "",
            error=self.error,
        )
        if self.exit_code is not None:
            result.exit_code = self.exit_code
        return result


class AttemptEvents:
    """What an executor reports while it runs: log lines and artifact files."""

    def __init__(self, worker: Worker, lease: wpb.LeaseRef, job: Job) -> None:
        self._worker = worker
        self._lease = lease
        self._job = job

    def log(self, text: str, stream: LogStream = LogStream.STDOUT) -> None:
        """Queue one line; lines are sent in batches as soon as the stream is free."""
        line = job_pb2.LogLine(
            stream=job_pb2.LogStream.ValueType(stream.value), attempt=self._job.attempt, text=text
        )
        line.time.GetCurrentTime()
        self._worker._queue_log(self._lease, line)

    async def upload(self, name: str, path: Path) -> Artifact:
        """Upload a file as the artifact `name`, with the checksum the server verifies."""
        return await self._worker._upload(self._lease, name, path)


class Executor(abc.ABC):
    """Runs jobs. The local process executor is one; `FunctionExecutor` wraps a function.

    `execute` must return promptly once `cancel` is set; the worker then
    reports the attempt as canceled, timed out or stopped by shutdown,
    whatever the executor returns.
    """

    id: str = "executor"

    @abc.abstractmethod
    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        """Run one attempt of `job`."""

    async def health_check(self) -> None:  # noqa: B027 - healthy unless overridden
        """Raise if this executor cannot take jobs; the worker then reconnects later."""


class FunctionExecutor(Executor):
    """Runs jobs with an async Python function of the job; its return value is the output."""

    def __init__(
        self, handler: Callable[[Job], Awaitable[Any]], executor_id: str = "function"
    ) -> None:
        self.id = executor_id
        self._handler = handler

    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        task = asyncio.ensure_future(self._handler(job))
        forget = cancel.on_set(task.cancel)
        try:
            output = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this attempt itself is being cancelled, not just the handler
            if not cancel.is_set():
                return Outcome.failed("the handler was cancelled")
        except Exception as error:
            if not cancel.is_set():
                return Outcome.failed(f"{type(error).__name__}: {error}")
        finally:
            forget()
        if cancel.is_set():  # however the handler ended once told to stop
            return Outcome.failed(f"stopped: {cancel.reason_text}")
        return Outcome.succeeded(output)


@dataclass(eq=False)
class _Attempt:
    lease: wpb.LeaseRef
    job: Job
    trace_context: dict[str, str]
    cancel: Cancellation = field(default_factory=Cancellation)
    task: asyncio.Task[None] | None = None


class SessionEnded(Exception):
    """The stream to the server ended; the worker reconnects."""

    def __init__(self, reason: str, *, welcomed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.welcomed = welcomed  # the server had accepted us: reconnect quickly


class Worker:
    """Connects to a ZBrain server and runs the jobs it is given with `executor`."""

    def __init__(
        self,
        executor: Executor,
        *,
        server: str | None = None,
        worker_id: str | None = None,
        orgs: Sequence[str] = (),
        concurrency: int = 1,
        labels: dict[str, str] | None = None,
        reconnect_max_s: float = 10.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        tracer_provider: trace.TracerProvider | None = None,
        token: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.executor = executor
        self.server = server or default_server()
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.orgs = tuple(orgs)
        self.concurrency = concurrency
        self.labels = dict(labels or {})
        self.reconnect_max_s = reconnect_max_s
        self._channel_options = list(channel_options)
        self._token = token
        self._tls = tls
        self._tracer_provider = tracer_provider
        self._tracer = trace.get_tracer("zbrain.worker", tracer_provider=tracer_provider)
        self._parent: tuple[dict[str, str], Context] | None = None  # see _parent_context
        self._attempts: dict[str, _Attempt] = {}
        self._pending_logs: dict[tuple[str, int], list[job_pb2.LogLine]] = {}
        self._control: list[wpb.ConnectRequest] = []
        # The last results written on the current stream (at most a lease TTL
        # old, and a few per slot): a write is not a delivery, so when the
        # stream breaks they are sent again; the lease epoch makes a repeat
        # harmless. An older result lost with a dying server costs a retry.
        self._sent_results: collections.deque[tuple[float, wpb.ConnectRequest]] = (
            collections.deque()
        )
        self._lease_ttl_s = 30.0  # the server's, from its welcome
        self._batch_results = False  # the server's welcome says it reads WorkerResults
        self._disconnected_at: float | None = None
        self._wake_writer = asyncio.Event()
        self._idle = asyncio.Event()  # set when the writer has sent all it was given
        self._session_tasks: list[asyncio.Task[None]] = []  # the writer and the heartbeat
        self._session_ended = asyncio.Event()
        self._stopping = asyncio.Event()
        self._draining = False
        self._drain_acknowledged = asyncio.Event()
        self._call: Any = None
        self.completed = 0  # attempts reported, for tests and burst mode

    # -- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `shutdown()`; reconnect with backoff whenever the stream breaks."""
        # The channel belongs to the running event loop, so it is made here, not in
        # __init__ (which may run before the loop does, as in asyncio.run(w.run())).
        channel = open_channel(
            self.server, token=self._token, tls=self._tls, options=self._channel_options
        )
        self._jobs = job_service_pb2_grpc.JobServiceStub(channel)
        self._workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        delay = 0.1
        loop = asyncio.get_running_loop()
        try:
            # A draining worker comes back only to report what it still owes.
            while not self._stopping.is_set() and (not self._draining or self._owes_server()):
                try:
                    if not self._draining:
                        await self.executor.health_check()
                    await self._session()
                except SessionEnded as ended:
                    if self._stopping.is_set():
                        break
                    if self._disconnected_at is None:
                        self._disconnected_at = loop.time()
                    if ended.welcomed:
                        delay = 0.1
                    log.warning(
                        "lost the server at %s: %s; reconnecting in %.1fs",
                        self.server,
                        ended.reason,
                        delay,
                    )
                except ZBrainError as error:
                    log.warning("cannot run: %s; retrying in %.1fs", error, delay)
                except Exception as error:  # an executor's health check may raise anything
                    log.warning(
                        "executor %s is unhealthy: %s; retrying in %.1fs",
                        self.executor.id,
                        error,
                        delay,
                    )
                self._abandon_if_reaped(loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), delay * (0.5 + random.random() / 2)
                    )
                delay = min(self.reconnect_max_s, delay * 2)
        finally:
            await channel.close()

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Drain: take no new jobs, let running ones finish for grace_s, then stop them."""
        if self._draining:
            return
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self._call is not None:
            self._send(wpb.ConnectRequest(drain=wpb.WorkerDrain(reason="shutdown")))
            # Leases the server sent before it saw the drain may still be on
            # the way; its acknowledgement comes after the last of them.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_acknowledged.wait(), min(grace_s, 10.0))
        log.info("draining: %d running job(s), grace %.0fs", len(self._attempts), grace_s)
        tasks = [a.task for a in self._attempts.values() if a.task is not None]
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            for attempt in list(self._attempts.values()):
                attempt.cancel.set(StopReason.SHUTDOWN)
            if still_running:
                await asyncio.wait(still_running)
        self._stopping.set()
        await self._close_stream()

    def _owes_server(self) -> bool:
        """Whether attempts run, or lines or results wait to be reported."""
        return bool(self._attempts or self._pending_logs or self._control)

    def _abandon_if_reaped(self, now: float) -> None:
        """Away for longer than a lease lives, the worker has lost every lease it
        held to the server's reaper: stop those attempts (reporting nothing) and
        drop what they queued, rather than run them on and buffer their output."""
        if self._disconnected_at is None or now - self._disconnected_at < self._lease_ttl_s:
            return
        for attempt in list(self._attempts.values()):
            attempt.cancel.set(StopReason.LEASE_LOST, "disconnected for longer than a lease")
        self._pending_logs.clear()
        self._control.clear()
        self._sent_results.clear()

    async def _close_stream(self) -> None:
        """Half-close the stream once everything queued is written, and wait for the
        server to end it: cancelling at once could drop the last results in flight."""
        call = self._call
        if call is None:
            return
        await self._flush()
        for task in self._session_tasks:
            task.cancel()
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.done_writing()
        try:
            await asyncio.wait_for(self._session_ended.wait(), 5.0)
        except TimeoutError:
            call.cancel()

    async def __aenter__(self) -> Worker:
        self._runner = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
        await self._runner

    # -- one connection ---------------------------------------------------------

    async def _session(self) -> None:
        self._drain_acknowledged.clear()
        call = self._workers.Connect()
        self._call = call
        welcomed = False
        self._session_ended.clear()
        self._session_tasks = []
        try:
            held = self._held_leases()
            await call.write(
                wpb.ConnectRequest(
                    hello=wpb.WorkerHello(
                        worker_id=self.worker_id,
                        org_ids=list(self.orgs),
                        # Draining, it comes back only to report: no free slots.
                        concurrency=(max(1, len(held)) if self._draining else self.concurrency),
                        labels=self.labels,
                        leases=held,
                        accepts_lease_batches=True,
                    )
                )
            )
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise SessionEnded("the server did not welcome the worker", welcomed=False)
            welcomed = True
            self._disconnected_at = None
            self._lease_ttl_s = first.welcome.lease_ttl.ToTimedelta().total_seconds() or 30.0
            self._batch_results = first.welcome.accepts_result_batches
            if self._draining:
                self._send(wpb.ConnectRequest(drain=wpb.WorkerDrain(reason="shutdown")))
            interval = first.welcome.heartbeat_interval.ToTimedelta().total_seconds() or 10.0
            log.info(
                "connected to %s as %s (%d slots)", self.server, self.worker_id, self.concurrency
            )
            self._session_tasks = [
                asyncio.create_task(self._write_loop(call)),
                asyncio.create_task(self._heartbeat_loop(interval)),
            ]
            async for message in _messages(call):
                self._handle(message)
            if not self._stopping.is_set():
                raise SessionEnded("the server closed the stream", welcomed=True)
        except grpc.aio.AioRpcError as error:
            if error.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                raise from_rpc_error(error) from None
            reason = error.details() or error.code().name
            raise SessionEnded(reason, welcomed=welcomed) from None
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
        finally:
            self._call = None
            self._drain_acknowledged.set()  # nothing more can arrive on this stream
            for task in self._session_tasks:
                task.cancel()
            if self._stopping.is_set():
                # Shutting down: whatever still runs is stopped and not reported.
                for attempt in list(self._attempts.values()):
                    attempt.cancel.set(StopReason.LEASE_LOST, "the worker stopped")
                running = [a.task for a in self._attempts.values() if a.task is not None]
                if running:
                    await asyncio.wait(running)
                self._pending_logs.clear()
                self._control.clear()
            else:
                # A lease is the job's, not the connection's: attempts run on, and
                # their logs and results wait for the next connection (to this
                # server or another replica), whose hello claims the leases back.
                replay = [message for _, message in self._sent_results]
                self._sent_results.clear()
                self._control = replay + [m for m in self._control if not m.HasField("heartbeat")]
            call.cancel()
            self._session_ended.set()

    def _held_leases(self) -> list[wpb.LeaseRef]:
        """Leases of attempts still running or with logs or a result not yet sent."""
        held = {(a.lease.job_id, a.lease.lease_epoch) for a in self._attempts.values()}
        held.update(self._pending_logs)
        held.update(
            (m.result.lease.job_id, m.result.lease.lease_epoch)
            for m in self._control
            if m.HasField("result")
        )
        return [wpb.LeaseRef(job_id=job_id, lease_epoch=epoch) for job_id, epoch in sorted(held)]

    def _handle(self, message: wpb.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "lease":
            self._start(message.lease)
        elif kind == "leases":
            for lease in message.leases.leases:
                self._start(lease)
        elif kind == "drain_acknowledged":
            self._drain_acknowledged.set()
        elif kind in ("cancel", "rejected"):
            body = message.cancel if kind == "cancel" else message.rejected
            attempt = self._attempts.get(body.lease.job_id)
            if attempt is not None and attempt.lease.lease_epoch == body.lease.lease_epoch:
                reason = StopReason.CANCELED if kind == "cancel" else StopReason.LEASE_LOST
                attempt.cancel.set(reason, body.reason)

    def _start(self, lease: job_service_pb2.Lease) -> None:
        ref = wpb.LeaseRef(job_id=lease.job.id, lease_epoch=lease.lease_epoch)
        attempt = _Attempt(ref, Job.from_proto(lease.job), dict(lease.trace_context))
        self._attempts[ref.job_id] = attempt
        attempt.task = asyncio.create_task(self._run_attempt(attempt), name=f"job-{ref.job_id}")

    async def _run_attempt(self, attempt: _Attempt) -> None:
        # The attempt runs in the trace of the call that submitted the job: its
        # log lines carry that trace id, and calls it makes join that trace.
        parent = self._parent_context(attempt.trace_context)
        if not self._records_spans():
            # A span would record nothing, and its context would be the
            # parent's: attach that alone (a tenth of the worker's CPU per job).
            token = context.attach(parent)
            try:
                await self._execute(attempt)
            finally:
                context.detach(token)
            return
        with self._tracer.start_as_current_span(
            EXECUTE_SPAN,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "zbrain.job_id": attempt.job.id,
                "zbrain.attempt": attempt.job.attempt,
                "zbrain.worker_id": self.worker_id,
                "zbrain.executor": self.executor.id,
            },
        ) as span:
            outcome = await self._execute(attempt)
            span.set_attribute("zbrain.outcome", outcome.kind.name if outcome else "LEASE_LOST")
            if outcome is not None and outcome.kind is not OutcomeKind.SUCCEEDED:
                span.set_status(Status(StatusCode.ERROR, outcome.error))

    def _records_spans(self) -> bool:
        """Whether spans are recorded: a tracer provider was given or installed.
        The API's own providers (the default) make spans that record nothing."""
        provider = self._tracer_provider or trace.get_tracer_provider()
        return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)

    def _parent_context(self, carrier: dict[str, str]) -> Context:
        """The trace context of a lease. The jobs of one batch submit share
        theirs, so the last one extracted is kept and reused."""
        if self._parent is None or self._parent[0] != carrier:
            self._parent = (carrier, propagate.extract(carrier))
        return self._parent[1]

    async def _execute(self, attempt: _Attempt) -> Outcome | None:
        """Run one attempt and report it; None when the lease was lost (nothing reported)."""
        job, cancel = attempt.job, attempt.cancel
        events = AttemptEvents(self, attempt.lease, job)
        timeout_s = job.timeout.total_seconds()
        timer = asyncio.get_running_loop().call_later(
            timeout_s, cancel.set, StopReason.TIMED_OUT, f"after {timeout_s:g}s"
        )
        try:
            outcome = await self.executor.execute(job, events, cancel)
        except Exception as error:
            log.exception(
                "executor %s crashed",
                self.executor.id,
                extra=job_fields(job.id, job.org_id, self.worker_id),
            )
            outcome = Outcome.failed(f"executor crashed: {type(error).__name__}: {error}")
        finally:
            timer.cancel()
        try:
            if cancel.reason is StopReason.LEASE_LOST:
                return None  # a newer attempt (or nobody) owns the job now: report nothing
            if cancel.reason is StopReason.TIMED_OUT:
                outcome = Outcome(
                    OutcomeKind.TIMED_OUT,
                    error=f"timed out after {timeout_s:g}s",
                    exit_code=outcome.exit_code,
                )
            elif cancel.reason is StopReason.CANCELED:
                outcome = Outcome(OutcomeKind.CANCELED, error=cancel.reason_text)
            elif cancel.reason is StopReason.SHUTDOWN:
                outcome = Outcome.failed("the worker shut down before the job finished")
            self._send(
                wpb.ConnectRequest(
                    result=wpb.WorkerResult(lease=attempt.lease, result=outcome.to_proto())
                )
            )
            self.completed += 1
            return outcome
        finally:
            self._attempts.pop(job.id, None)

    # -- sending ------------------------------------------------------------------

    def _queue_log(self, lease: wpb.LeaseRef, line: job_pb2.LogLine) -> None:
        self._pending_logs.setdefault((lease.job_id, lease.lease_epoch), []).append(line)
        self._wake_writer.set()

    def _send(self, message: wpb.ConnectRequest) -> None:
        self._control.append(message)
        self._wake_writer.set()

    async def _write_loop(self, call: Any) -> None:
        """The only writer of the stream. Every log line queued so far goes out
        before the next control message, so an attempt's lines always reach
        the server before its result. A message leaves its queue only once
        written, so when the stream breaks mid-way the rest waits for the next
        connection, whose writer sends it at once."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake_writer.clear()
            while self._pending_logs or self._control:
                while self._pending_logs:
                    (job_id, epoch), lines = next(iter(self._pending_logs.items()))
                    batch = lines[:MAX_LINES_PER_MESSAGE]
                    ref = wpb.LeaseRef(job_id=job_id, lease_epoch=epoch)
                    await call.write(
                        wpb.ConnectRequest(logs=wpb.WorkerLogs(lease=ref, lines=batch))
                    )
                    del lines[: len(batch)]
                    if not lines:
                        del self._pending_logs[(job_id, epoch)]
                if self._control:
                    sent = self._next_control()
                    if len(sent) > 1:
                        outcomes = [message.result for message in sent]
                        await call.write(
                            wpb.ConnectRequest(results=wpb.WorkerResults(results=outcomes))
                        )
                    else:
                        await call.write(sent[0])
                    del self._control[: len(sent)]
                    for message in sent:
                        if message.HasField("result"):
                            self._remember_sent(loop.time(), message)
            self._idle.set()
            await self._wake_writer.wait()

    def _next_control(self) -> list[wpb.ConnectRequest]:
        """What to write next from the control queue: its first message or,
        when the server reads WorkerResults, the run of results heading it,
        up to about BATCH_BYTES (a bigger result goes alone)."""
        batch = self._control[:1]
        if not self._batch_results or not batch[0].HasField("result"):
            return batch
        size = batch[0].ByteSize()
        for message in self._control[1:MAX_RESULTS_PER_MESSAGE]:
            size += message.ByteSize()
            if not message.HasField("result") or size > BATCH_BYTES:
                break
            batch.append(message)
        return batch

    def _remember_sent(self, now: float, result: wpb.ConnectRequest) -> None:
        self._sent_results.append((now, result))
        while self._sent_results and (
            now - self._sent_results[0][0] > self._lease_ttl_s
            or len(self._sent_results) > 4 * self.concurrency
        ):
            self._sent_results.popleft()

    async def _flush(self) -> None:
        """Wait until everything queued was written (or the stream is gone)."""
        if self._call is None:
            return
        self._idle.clear()
        self._wake_writer.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5.0)

    async def _heartbeat_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            leases = [a.lease for a in self._attempts.values()]
            if leases:
                self._send(wpb.ConnectRequest(heartbeat=wpb.WorkerHeartbeat(leases=leases)))

    async def _upload(self, lease: wpb.LeaseRef, name: str, path: Path) -> Artifact:
        sha256, size = await asyncio.to_thread(_file_sha256, path)
        header = job_service_pb2.ArtifactHeader(
            job_id=lease.job_id,
            lease_epoch=lease.lease_epoch,
            artifact=job_pb2.Artifact(name=name, sha256=sha256, size_bytes=size),
        )

        async def parts() -> AsyncIterator[job_service_pb2.UploadArtifactRequest]:
            yield job_service_pb2.UploadArtifactRequest(header=header)
            with path.open("rb") as handle:
                while chunk := await asyncio.to_thread(handle.read, UPLOAD_CHUNK_BYTES):
                    yield job_service_pb2.UploadArtifactRequest(chunk=chunk)

        try:
            response = await self._jobs.UploadArtifact(parts())
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return Artifact.from_proto(response.artifact)


async def _messages(call: Any) -> AsyncIterator[wpb.ConnectResponse]:
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        yield message


def _file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# -- the `zbrain worker` command --------------------------------------------------


def _echo_executor() -> Executor:
    async def echo(job: Job) -> Any:
        return job.input

    return FunctionExecutor(echo, executor_id="echo")


async def run_worker_command(args: argparse.Namespace) -> int:
    """`zbrain worker`: run a worker until SIGTERM or SIGINT, then drain."""
    from .process import ProcessExecutor

    mode = (args.mode or os.environ.get("ZWORKER_MODE") or "process").lower()
    concurrency = args.concurrency or int(
        os.environ.get("ZWORKER_CONCURRENCY") or os.cpu_count() or 1
    )
    temp_dir = args.temp_dir or (
        Path(os.environ["ZWORKER_TEMP_DIR"]) if os.environ.get("ZWORKER_TEMP_DIR") else None
    )
    executors: dict[str, Callable[[], Executor]] = {
        "process": lambda: ProcessExecutor(temp_dir),
        "echo": _echo_executor,
    }
    if mode not in executors:
        raise ZBrainError(f"unknown worker mode {mode!r}; choose from {', '.join(executors)}")
    worker = Worker(
        executors[mode](),
        server=args.server,
        token=args.token,
        tls=TlsFiles(args.tls_ca, args.tls_cert, args.tls_key),
        worker_id=args.worker_id,
        orgs=args.org,
        concurrency=concurrency,
        labels=dict(args.label),
    )
    providers = telemetry.configure(
        f"zbrain-worker-{worker.worker_id}", exporter=exporter_from_env()
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.shutdown(args.grace)))
    log.info(
        "worker %s (%s mode, %d slots) serving %s",
        worker.worker_id,
        mode,
        concurrency,
        worker.server,
    )
    try:
        await worker.run()
    finally:
        telemetry.shutdown(providers)
    return 0
