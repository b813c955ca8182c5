"""zbrain.v1.JobService on gRPC: each RPC hands its request to its operation
(`api.Api`) with the caller the auth interceptor found (`current_caller`);
domain errors become gRPC statuses in one place (`errors`). No logic lives
here: the HTTP edge calls the same operations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from zbrain.errors import ZBrainError
from zbrain.v1 import job_service_pb2 as pb
from zbrain.v1 import job_service_pb2_grpc

from .api import Api
from .auth import current_caller
from .errors import abort_with, rpc_errors, rpc_stream_errors


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    """zbrain.v1.JobService over the API's operations."""

    def __init__(self, api: Api) -> None:
        self._api = api

    @rpc_errors
    async def Submit(
        self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitResponse:
        return await self._api.submit(current_caller(), request)

    @rpc_errors
    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitBatchResponse:
        return await self._api.submit_batch(current_caller(), request)

    @rpc_errors
    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        return await self._api.get(current_caller(), request)

    @rpc_errors
    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResponse:
        return await self._api.list(current_caller(), request)

    @rpc_errors
    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        return await self._api.cancel(current_caller(), request)

    @rpc_errors
    async def Rerun(
        self, request: pb.RerunRequest, context: grpc.aio.ServicerContext
    ) -> pb.RerunResponse:
        return await self._api.rerun(current_caller(), request)

    @rpc_stream_errors
    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        async for response in self._api.stream_logs(current_caller(), request):
            yield response

    @rpc_stream_errors
    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        async for response in self._api.stream_events(current_caller(), request):
            yield response

    @rpc_errors
    async def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListArtifactsResponse:
        return await self._api.list_artifacts(current_caller(), request)

    @rpc_stream_errors
    async def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        async for response in self._api.download_artifact(current_caller(), request):
            yield response

    @rpc_errors
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkersResponse:
        return await self._api.list_workers(current_caller(), request)

    @rpc_errors
    async def AcquireLease(
        self, request: pb.AcquireLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcquireLeaseResponse:
        return await self._api.acquire_lease(
            current_caller(), request, time_remaining_s=context.time_remaining()
        )

    @rpc_errors
    async def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewLeaseResponse:
        return await self._api.renew_lease(current_caller(), request)

    @rpc_errors
    async def ReportLogs(
        self, request: pb.ReportLogsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportLogsResponse:
        return await self._api.report_logs(current_caller(), request)

    @rpc_errors
    async def CompleteLease(
        self, request: pb.CompleteLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteLeaseResponse:
        return await self._api.complete_lease(current_caller(), request)

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[pb.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadArtifactResponse:
        try:
            return await self._api.upload_artifact(current_caller(), request_iterator)
        except ZBrainError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from error
