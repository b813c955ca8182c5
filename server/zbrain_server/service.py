"""The RPC handlers of zbrain.v1.JobService.

Handlers are thin: validate and translate the request (`protocol`), make one
domain call (`Dispatcher`, `JobStore`, `BlobStore`), translate the answer.
Domain errors become gRPC statuses in one place, `rpc_errors`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from zbrain.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    ZBrainError,
    to_status,
)
from zbrain.v1 import job_service_pb2 as pb
from zbrain.v1 import job_service_pb2_grpc

from . import auth, events, protocol
from .artifacts import BlobStore, check_artifact_name
from .config import ServerConfig
from .dispatch import Dispatcher
from .events import EventBus, SubscriberTooSlow
from .lifecycle import check_lease
from .model import Artifact, EventRecord, Job
from .notify import JobSignals, wait_for
from .store import JobStore
from .telemetry import current_trace_context

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])

LOG_PAGE = 1000
EVENT_PAGE = 1000
# A follower re-reads the store at least this often even without a nudge.
FOLLOW_RECHECK_S = 1.0
MAX_WAIT_TIMEOUT_S = 60.0


async def abort_with(context: grpc.aio.ServicerContext, error: ZBrainError) -> None:
    """End the call with the status (and details) that `error` stands for."""
    await context.abort_with_status(to_status(error))


def rpc_errors(handler: Handler) -> Handler:
    """Map domain errors raised by a unary handler to gRPC statuses."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except ZBrainError as error:
            await abort_with(context, error)

    return wrapper  # type: ignore[return-value]


def rpc_stream_errors(handler: Handler) -> Handler:
    """Map domain errors raised by a server-streaming handler to gRPC statuses."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for message in handler(self, request, context):
                yield message
        except ZBrainError as error:
            await abort_with(context, error)

    return wrapper  # type: ignore[return-value]


def _events_response(records: list[EventRecord]) -> pb.StreamEventsResponse:
    return pb.StreamEventsResponse(events=[events.to_proto(record) for record in records])


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    """zbrain.v1.JobService over a Dispatcher and a JobStore."""

    def __init__(
        self,
        config: ServerConfig,
        store: JobStore,
        dispatcher: Dispatcher,
        blobs: BlobStore,
        signals: JobSignals,
        bus: EventBus,
    ) -> None:
        self._config = config
        self._store = store
        self._dispatcher = dispatcher
        self._blobs = blobs
        self._signals = signals
        self._bus = bus

    def _new_job(
        self, spec: Any, field: str, trace_context: dict[str, str], request_id: str = ""
    ) -> Any:
        return protocol.new_job(
            spec,
            field=field,
            default_org=auth.request_org(spec.org_id, self._config.default_org),
            default_timeout_s=self._config.default_timeout_s,
            default_max_retries=self._config.default_max_retries,
            limits=self._config.limits,
            request_id=request_id,
            trace_context=trace_context,
        )

    async def _visible_job(self, job_id: str) -> Job:
        """The job, or NOT_FOUND when it does not exist or belongs to another org."""
        job = await self._store.get_job(protocol.check_job_id(job_id))
        auth.visible(job.org_id, f"job {job_id}")
        return job

    def _check_artifact_room(self, job: Job, announced: Artifact) -> None:
        """RESOURCE_EXHAUSTED when the job may hold no more (or no larger) artifacts."""
        limits = self._config.limits
        others = [a for a in job.artifacts if a.name != announced.name]
        if len(others) >= limits.max_artifacts_per_job:
            raise ResourceExhaustedError(
                f"job {job.id} has {len(others)} artifacts; the limit "
                f"(max_artifacts_per_job) is {limits.max_artifacts_per_job}"
            )
        total = sum(a.size_bytes for a in others) + announced.size_bytes
        if total > limits.max_artifacts_bytes_per_job:
            raise ResourceExhaustedError(
                f"job {job.id}'s artifacts would total {total} bytes; the limit "
                f"(max_artifacts_bytes_per_job) is {limits.max_artifacts_bytes_per_job}"
            )

    async def _own_lease(self, job_id: str) -> None:
        """A worker bound to an org may report only on that org's jobs."""
        protocol.check_job_id(job_id)
        if auth.caller().org_id is not None:  # unrestricted callers need no extra read
            await self._visible_job(job_id)

    # -- clients ---------------------------------------------------------------

    @rpc_errors
    async def Submit(
        self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitResponse:
        # The job remembers the submitting call's trace, so its attempts join it.
        new = self._new_job(request.job, "job", current_trace_context(), request.request_id)
        [(job, deduplicated)] = await self._dispatcher.submit([new])
        return pb.SubmitResponse(job=protocol.job_to_proto(job), deduplicated=deduplicated)

    @rpc_errors
    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitBatchResponse:
        limit = self._config.limits.max_batch_jobs
        if not request.jobs:
            raise InvalidArgumentError(
                "empty batch", violations=[FieldViolation("jobs", "must hold at least one job")]
            )
        if len(request.jobs) > limit:
            raise InvalidArgumentError(
                "batch too large",
                violations=[
                    FieldViolation("jobs", f"holds {len(request.jobs)} jobs; the limit is {limit}")
                ],
            )
        trace = current_trace_context()
        new = [self._new_job(spec, f"jobs[{i}]", trace) for i, spec in enumerate(request.jobs)]
        created = await self._dispatcher.submit(new)
        return pb.SubmitBatchResponse(job_ids=[job.id for job, _ in created])

    @rpc_errors
    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        job = await self._visible_job(request.job_id)
        return pb.GetResponse(job=protocol.job_to_proto(job))

    @rpc_errors
    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        org_id = auth.request_org(request.org_id, self._config.default_org)
        query = protocol.list_query(request, org_id, self._config.limits)
        jobs = await self._store.list_jobs(query)
        return pb.ListResponse(
            jobs=[protocol.job_to_proto(job) for job in jobs],
            next_page_token=protocol.next_page_token(query, jobs),
        )

    @rpc_errors
    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        await self._visible_job(request.job_id)
        job, outcome = await self._dispatcher.cancel(request.job_id)
        return pb.CancelResponse(
            job=protocol.job_to_proto(job), outcome=pb.CancelOutcome.ValueType(outcome.value)
        )

    @rpc_stream_errors
    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        job_id = protocol.check_job_id(request.job_id)
        if request.after_sequence < 0:
            raise InvalidArgumentError(
                "invalid sequence",
                violations=[FieldViolation("after_sequence", "must not be negative")],
            )
        await self._visible_job(job_id)  # NOT_FOUND before any streaming
        after = request.after_sequence
        with self._signals.follow(job_id) as changed:
            while True:
                # Read the job's state before the lines: if it was finished then,
                # every line it will ever have is already stored.
                finished = (await self._store.get_job(job_id)).state.is_terminal
                lines = await self._store.read_logs(job_id, after, LOG_PAGE)
                if lines:
                    after = lines[-1].sequence
                    yield pb.StreamLogsResponse(lines=protocol.log_lines_to_proto(lines))
                    if len(lines) == LOG_PAGE:
                        continue
                if not request.follow or finished:
                    return
                await wait_for(changed, FOLLOW_RECHECK_S)

    @rpc_stream_errors
    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        org_id = protocol.valid_org(
            auth.request_org(request.org_id, self._config.default_org), "org_id"
        )
        if request.after_sequence < 0:
            raise InvalidArgumentError(
                "invalid sequence",
                violations=[FieldViolation("after_sequence", "must not be negative")],
            )
        purged = await self._store.events_purged_through()
        if request.after_sequence < purged:
            raise OutOfRangeError(
                f"events up to sequence {purged} were removed by retention; "
                f"the oldest available is {purged + 1} (ask for after_sequence >= {purged})"
            )
        last = request.after_sequence
        # Subscribe before reading the backlog: an event committed meanwhile is in
        # one or both, and the sequence check below drops the copy.
        with self._bus.subscribe(org_id, request.topic_prefix) as live:
            while True:
                backlog = await self._store.read_events(
                    org_id, request.topic_prefix, last, EVENT_PAGE
                )
                if backlog:
                    last = backlog[-1].sequence
                    yield _events_response(backlog)
                if len(backlog) < EVENT_PAGE:
                    break
            while request.follow:
                try:
                    batch = [r for r in await live.next_batch() if r.sequence > last]
                except SubscriberTooSlow:
                    raise ResourceExhaustedError(
                        f"subscriber too slow: more than {self._bus.buffer_size} events behind; "
                        f"resume with after_sequence={last}"
                    ) from None
                if batch:
                    last = batch[-1].sequence
                    yield _events_response(batch)

    @rpc_errors
    async def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListArtifactsResponse:
        job = await self._visible_job(request.job_id)
        return pb.ListArtifactsResponse(
            artifacts=[protocol.artifact_to_proto(a) for a in job.artifacts]
        )

    @rpc_stream_errors
    async def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        job = await self._visible_job(request.job_id)
        name = check_artifact_name(request.name)
        artifact = next((a for a in job.artifacts if a.name == name), None)
        if artifact is None:
            raise NotFoundError(f"job {job.id} has no artifact named {name!r}")
        yield pb.DownloadArtifactResponse(artifact=protocol.artifact_to_proto(artifact))
        async for chunk in self._blobs.read(artifact.sha256):
            yield pb.DownloadArtifactResponse(chunk=chunk)

    # -- unary workers ---------------------------------------------------------

    @rpc_errors
    async def AcquireLease(
        self, request: pb.AcquireLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcquireLeaseResponse:
        worker_id, org_ids = protocol.worker_identity(
            request.worker_id,
            auth.request_orgs(list(request.org_ids), self._config.default_org),
            self._config.default_org,
        )
        max_jobs = request.max_jobs or 1
        if not 0 < max_jobs <= 1000:
            raise InvalidArgumentError(
                "invalid max_jobs",
                violations=[FieldViolation("max_jobs", "must be between 1 and 1000")],
            )
        wait_s = protocol.duration_us(request.wait_timeout) / 1e6
        if not 0 <= wait_s <= MAX_WAIT_TIMEOUT_S:
            raise InvalidArgumentError(
                "invalid wait_timeout",
                violations=[
                    FieldViolation(
                        "wait_timeout", f"must be between 0 and {MAX_WAIT_TIMEOUT_S:.0f}s"
                    )
                ],
            )
        if context.time_remaining() is not None:
            wait_s = min(wait_s, max(0.0, context.time_remaining() - 0.5))
        leases = await self._dispatcher.acquire(worker_id, org_ids, max_jobs, wait_s)
        return pb.AcquireLeaseResponse(leases=[protocol.lease_to_proto(lease) for lease in leases])

    @rpc_errors
    async def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewLeaseResponse:
        await self._own_lease(request.job_id)
        job = await self._dispatcher.renew(request.job_id, request.lease_epoch)
        return pb.RenewLeaseResponse(
            expire_time=protocol.timestamp(job.lease_expire_time_us),
            cancel_requested=job.cancel_requested,
        )

    @rpc_errors
    async def ReportLogs(
        self, request: pb.ReportLogsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportLogsResponse:
        records = protocol.log_records(request.lines, "lines", self._config.limits)
        await self._own_lease(request.job_id)
        lines = await self._dispatcher.append_logs(request.job_id, request.lease_epoch, records)
        return pb.ReportLogsResponse(last_sequence=lines[-1].sequence if lines else 0)

    @rpc_errors
    async def CompleteLease(
        self, request: pb.CompleteLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteLeaseResponse:
        result = protocol.attempt_result(request.result)
        await self._own_lease(request.job_id)
        job = await self._dispatcher.complete(request.job_id, request.lease_epoch, result)
        return pb.CompleteLeaseResponse(job=protocol.job_to_proto(job))

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[pb.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadArtifactResponse:
        try:
            first = await anext(request_iterator, None)
            if first is None or not first.HasField("header"):
                raise InvalidArgumentError(
                    "an upload must start with a header",
                    violations=[FieldViolation("header", "must be the first message")],
                )
            header = first.header
            job_id = protocol.check_job_id(header.job_id, "header.job_id")
            name = check_artifact_name(header.artifact.name, "header.artifact.name")
            job = await self._visible_job(job_id)
            # Check the lease before reading content, so a stale worker wastes nothing.
            check_lease(job, header.lease_epoch)
            announced = Artifact(name, header.artifact.sha256, header.artifact.size_bytes)
            self._check_artifact_room(job, announced)

            async def chunks() -> AsyncIterator[bytes]:
                async for part in request_iterator:
                    if not part.HasField("chunk") and part.HasField("header"):
                        raise InvalidArgumentError("only the first message may be a header")
                    yield part.chunk

            stored = await self._blobs.write(
                chunks(), announced, self._config.limits.max_artifact_bytes
            )
            await self._store.add_artifact(job_id, header.lease_epoch, stored)
            self._signals.changed(job_id)
            return pb.UploadArtifactResponse(artifact=protocol.artifact_to_proto(stored))
        except ZBrainError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from error
