"""The RPC handlers of zbrain.v1.JobService.

Handlers are thin: validate and translate the request (`validation`), make
one call to the operations on jobs (`dispatch.jobs.Jobs`) for the caller
(`auth.current_caller`), translate the answer (`codec`). Domain errors become
gRPC statuses in one place (`errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from zbrain.errors import InvalidArgumentError, ZBrainError
from zbrain.v1 import job_pb2, job_service_pb2_grpc
from zbrain.v1 import job_service_pb2 as pb

from ..config import ServerConfig
from ..core.access import request_org, request_orgs
from ..core.model import NewJob
from ..dispatch.jobs import Jobs
from . import codec, validation
from .auth import current_caller
from .errors import abort_with, rpc_errors, rpc_stream_errors
from .telemetry import current_trace_context


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    """zbrain.v1.JobService over the operations on jobs."""

    def __init__(self, config: ServerConfig, jobs: Jobs) -> None:
        self._config = config
        self._jobs = jobs

    def _new_job(
        self, spec: job_pb2.JobSpec, field: str, trace: dict[str, str], request_id: str = ""
    ) -> NewJob:
        config = self._config
        return validation.new_job(
            spec,
            field=field,
            org_id=request_org(current_caller(), spec.org_id, config.default_org),
            default_timeout_s=config.default_timeout_s,
            default_max_retries=config.default_max_retries,
            limits=config.limits,
            request_id=request_id,
            trace_context=trace,
        )

    # -- clients ---------------------------------------------------------------

    @rpc_errors
    async def Submit(
        self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitResponse:
        # The job remembers the submitting call's trace, so its attempts join it.
        new = self._new_job(request.job, "job", current_trace_context(), request.request_id)
        [(job, deduplicated)] = await self._jobs.submit([new])
        return pb.SubmitResponse(job=codec.job_to_proto(job), deduplicated=deduplicated)

    @rpc_errors
    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitBatchResponse:
        validation.batch(request.jobs, self._config.limits)
        trace = current_trace_context()
        new = [self._new_job(spec, f"jobs[{i}]", trace) for i, spec in enumerate(request.jobs)]
        created = await self._jobs.submit(new)
        return pb.SubmitBatchResponse(job_ids=[job.id for job, _ in created])

    @rpc_errors
    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        job_id = validation.check_job_id(request.job_id)
        job = await self._jobs.get(current_caller(), job_id)
        return pb.GetResponse(job=codec.job_to_proto(job))

    @rpc_errors
    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        org_id = request_org(current_caller(), request.org_id, self._config.default_org)
        query = validation.list_query(request, org_id, self._config.limits)
        jobs = await self._jobs.list_jobs(query)
        return pb.ListResponse(
            jobs=[codec.job_to_proto(job) for job in jobs],
            next_page_token=validation.next_page_token(query, jobs),
        )

    @rpc_errors
    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        job_id = validation.check_job_id(request.job_id)
        job, outcome = await self._jobs.cancel(current_caller(), job_id)
        return pb.CancelResponse(
            job=codec.job_to_proto(job), outcome=pb.CancelOutcome.ValueType(outcome.value)
        )

    @rpc_stream_errors
    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        job_id = validation.check_job_id(request.job_id)
        after = validation.after_sequence(request.after_sequence)
        async for lines in self._jobs.logs(current_caller(), job_id, after, follow=request.follow):
            yield pb.StreamLogsResponse(lines=codec.log_lines_to_proto(lines))

    @rpc_stream_errors
    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        org_id = validation.valid_org(
            request_org(current_caller(), request.org_id, self._config.default_org), "org_id"
        )
        after = validation.after_sequence(request.after_sequence)
        async for records in self._jobs.events(
            org_id, request.topic_prefix, after, follow=request.follow
        ):
            yield pb.StreamEventsResponse(events=[codec.event_to_proto(r) for r in records])

    @rpc_errors
    async def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListArtifactsResponse:
        job = await self._jobs.get(current_caller(), validation.check_job_id(request.job_id))
        return pb.ListArtifactsResponse(
            artifacts=[codec.artifact_to_proto(a) for a in job.artifacts]
        )

    @rpc_stream_errors
    async def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        job_id = validation.check_job_id(request.job_id)
        name = validation.artifact_name(request.name, self._config.limits)
        artifact, content = await self._jobs.artifact(current_caller(), job_id, name)
        yield pb.DownloadArtifactResponse(artifact=codec.artifact_to_proto(artifact))
        async for chunk in content:
            yield pb.DownloadArtifactResponse(chunk=chunk)

    # -- unary workers ---------------------------------------------------------

    @rpc_errors
    async def AcquireLease(
        self, request: pb.AcquireLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcquireLeaseResponse:
        orgs = request_orgs(current_caller(), list(request.org_ids), self._config.default_org)
        worker_id, org_ids = validation.worker_identity(
            request.worker_id, orgs, self._config.limits
        )
        max_jobs, wait_s = validation.acquire(request, self._config.limits)
        if context.time_remaining() is not None:
            wait_s = min(wait_s, max(0.0, context.time_remaining() - 0.5))
        leases = await self._jobs.acquire(worker_id, org_ids, max_jobs, wait_s)
        return pb.AcquireLeaseResponse(leases=[codec.lease_to_proto(lease) for lease in leases])

    @rpc_errors
    async def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewLeaseResponse:
        job_id = validation.check_job_id(request.job_id)
        job = await self._jobs.renew(current_caller(), job_id, request.lease_epoch)
        return pb.RenewLeaseResponse(
            expire_time=codec.timestamp(job.lease_expire_time_us),
            cancel_requested=job.cancel_requested,
        )

    @rpc_errors
    async def ReportLogs(
        self, request: pb.ReportLogsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportLogsResponse:
        records = validation.log_records(request.lines, "lines", self._config.limits)
        job_id = validation.check_job_id(request.job_id)
        lines = await self._jobs.append_logs(current_caller(), job_id, request.lease_epoch, records)
        return pb.ReportLogsResponse(last_sequence=lines[-1].sequence if lines else 0)

    @rpc_errors
    async def CompleteLease(
        self, request: pb.CompleteLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteLeaseResponse:
        result = validation.attempt_result(request.result)
        job_id = validation.check_job_id(request.job_id)
        job = await self._jobs.complete(current_caller(), job_id, request.lease_epoch, result)
        return pb.CompleteLeaseResponse(job=codec.job_to_proto(job))

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[pb.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadArtifactResponse:
        try:
            first = await anext(request_iterator, None)
            if first is None or not first.HasField("header"):
                raise validation.missing_header()
            job_id, lease_epoch, announced = validation.artifact_header(
                first.header, self._config.limits
            )

            async def chunks() -> AsyncIterator[bytes]:
                async for part in request_iterator:
                    if part.HasField("header"):
                        raise InvalidArgumentError("only the first message may be a header")
                    yield part.chunk

            stored = await self._jobs.upload(
                current_caller(), job_id, lease_epoch, announced, chunks()
            )
            return pb.UploadArtifactResponse(artifact=codec.artifact_to_proto(stored))
        except ZBrainError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from error
