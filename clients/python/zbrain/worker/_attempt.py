"""One attempt of a job on this worker: run it with the executor, within its
timeout and in the submitter's trace, and report how it ended."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _convert
from ..connection import Connection
from ..logs import job_fields
from ..models import Artifact, AttemptOutcome, Job
from ..v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from ..v1 import worker_service_pb2 as wpb
from ._executor import AttemptEvents, Cancellation, Executor, Outcome, StopReason
from ._outbox import Outbox

log = logging.getLogger("zbrain.worker")

EXECUTE_SPAN = "zbrain.job.execute"
UPLOAD_CHUNK_BYTES = 256 << 10
GET_TIMEOUT_S = 30.0


class Attempt:
    """A leased attempt: the job, its lease, and what stops it."""

    def __init__(self, lease: job_service_pb2.Lease, job: Job) -> None:
        self.key = (lease.job.id, lease.lease_epoch)
        # Parents whose outputs the lease left out, read with Get before the run.
        self.omitted_parents = tuple(p.job_id for p in lease.parents if p.output_omitted)
        self.job = job
        self.trace_context = dict(lease.trace_context)
        self.cancel = Cancellation()
        self.task: asyncio.Task[None] | None = None

    @property
    def ref(self) -> wpb.LeaseRef:
        return wpb.LeaseRef(job_id=self.key[0], lease_epoch=self.key[1])


class Runner:
    """Runs attempts for one worker: the executor, the trace, the report."""

    def __init__(
        self,
        executor: Executor,
        outbox: Outbox,
        connection: Connection,
        jobs: job_service_pb2_grpc.JobServiceStub,
        worker_id: str,
        tracer_provider: trace.TracerProvider | None,
    ) -> None:
        self._executor = executor
        self._outbox = outbox
        self._connection = connection
        self._jobs = jobs
        self._worker_id = worker_id
        self._tracer_provider = tracer_provider
        self._tracer = trace.get_tracer("zbrain.worker", tracer_provider=tracer_provider)
        self._parent: tuple[dict[str, str], Context] | None = None  # see _parent_context

    async def run(self, attempt: Attempt, done: Callable[[Attempt, Outcome | None], None]) -> None:
        """Run and report the attempt, then call `done` with its outcome (None
        when its lease was lost and nothing was reported)."""
        # The attempt runs in the trace of the call that submitted the job: its
        # log lines carry that trace id, and calls it makes join that trace.
        parent = self._parent_context(attempt.trace_context)
        outcome: Outcome | None = None
        try:
            if not self._records_spans():
                # A span would record nothing, and its context would be the
                # parent's: attach that alone (a tenth of the worker's CPU per job).
                token = context.attach(parent)
                try:
                    outcome = await self._execute(attempt)
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
                    "zbrain.worker_id": self._worker_id,
                    "zbrain.executor": self._executor.id,
                },
            ) as span:
                outcome = await self._execute(attempt)
                span.set_attribute("zbrain.outcome", outcome.kind.name if outcome else "LEASE_LOST")
                if outcome is not None and outcome.kind is not AttemptOutcome.SUCCEEDED:
                    span.set_status(Status(StatusCode.ERROR, outcome.error))
        finally:
            done(attempt, outcome)

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

    async def _execute(self, attempt: Attempt) -> Outcome | None:
        """Run one attempt and queue its result; None when the lease was lost."""
        if attempt.omitted_parents:
            attempt.job = await self._with_parent_outputs(attempt)
        job, cancel = attempt.job, attempt.cancel
        events = AttemptEvents(job, _Reporter(self, attempt))
        timeout_s = job.timeout.total_seconds()
        # A job without a timeout (a server never sends one, but a message may
        # lack it) runs until it ends or is stopped.
        timer = (
            asyncio.get_running_loop().call_later(
                timeout_s, cancel.set, StopReason.TIMED_OUT, f"after {timeout_s:g}s"
            )
            if timeout_s > 0
            else None
        )
        try:
            outcome = await self._executor.execute(job, events, cancel)
        except Exception as error:
            log.exception(
                "executor %s crashed",
                self._executor.id,
                extra=job_fields(job.id, job.org_id, self._worker_id),
            )
            outcome = Outcome.failed(f"executor crashed: {type(error).__name__}: {error}")
        finally:
            if timer is not None:
                timer.cancel()
        if cancel.reason is StopReason.LEASE_LOST:
            return None  # a newer attempt (or nobody) owns the job now: report nothing
        if cancel.reason is StopReason.TIMED_OUT:
            outcome = Outcome(
                AttemptOutcome.TIMED_OUT,
                error=f"timed out after {timeout_s:g}s",
                exit_code=outcome.exit_code,
            )
        elif cancel.reason is StopReason.CANCELED:
            outcome = Outcome(AttemptOutcome.CANCELED, error=cancel.reason_text)
        elif cancel.reason is StopReason.SHUTDOWN:
            outcome = Outcome(
                AttemptOutcome.INTERRUPTED, error="the worker shut down before the job finished"
            )
        self._outbox.send(
            wpb.ConnectRequest(
                result=wpb.WorkerResult(lease=attempt.ref, result=outcome.to_proto())
            )
        )
        return outcome

    async def _with_parent_outputs(self, attempt: Attempt) -> Job:
        """The job with the outputs its lease left out (past the server's
        budget for one lease) read from the server, one parent at a time."""
        outputs = {}
        for job_id in attempt.omitted_parents:
            request = job_service_pb2.GetRequest(job_id=job_id)
            try:
                response = await self._jobs.Get(request, timeout=GET_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                log.warning("could not read the output of parent %s: %s", job_id, error.details())
                continue
            outputs[job_id] = _convert.job(response.job).output
        parents = tuple(
            dataclasses.replace(p, output=outputs[p.job_id]) if p.job_id in outputs else p
            for p in attempt.job.parents
        )
        return dataclasses.replace(attempt.job, parents=parents)

    def log(self, attempt: Attempt, line: job_pb2.LogLine) -> None:
        self._outbox.log(attempt.key, line)

    async def upload(self, attempt: Attempt, name: str, path: Path) -> Artifact:
        sha256, size = await asyncio.to_thread(_file_sha256, path)
        header = job_service_pb2.ArtifactHeader(
            job_id=attempt.key[0],
            lease_epoch=attempt.key[1],
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
            raise self._connection.error(error) from None
        return Artifact(
            response.artifact.name, response.artifact.sha256, response.artifact.size_bytes
        )


class _Reporter:
    """An attempt's `AttemptEvents` backend: lines to the outbox, files uploaded."""

    def __init__(self, runner: Runner, attempt: Attempt) -> None:
        self._runner = runner
        self._attempt = attempt

    def log(self, line: job_pb2.LogLine) -> None:
        self._runner.log(self._attempt, line)

    async def upload(self, name: str, path: Path) -> Artifact:
        return await self._runner.upload(self._attempt, name, path)


def _file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
