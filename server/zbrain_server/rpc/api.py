"""Every operation of the zbrain.v1 API, defined once, on its protobuf messages.

Each RPC is one method here, named as the RPC in snake case (`Submit` is
`submit`, `ListWorkers` is `list_workers`): it takes the `Caller` explicitly
and the request message, and returns the response message; a server-streaming
RPC is an async generator of response messages. Nothing here knows a
transport: the gRPC servicers (`job_service`, `token_service`) and the HTTP
edge (`zbrain_server.http`) are thin adapters that find the operation of a
method with `Api.operation`, hand it the caller their authentication made,
and turn a raised `ZBrainError` into their own status.

An operation validates and translates its request (`validation`), makes the
one organisation check it needs (`core.access`), calls the operations on
jobs (`dispatch.jobs.Jobs`), and translates the answer (`codec`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from zbrain.errors import InvalidArgumentError
from zbrain.v1 import job_pb2
from zbrain.v1 import job_service_pb2 as pb
from zbrain.v1 import token_service_pb2 as tpb

from ..config import ServerConfig
from ..core.access import Caller, check_every_org, request_org, request_orgs
from ..core.model import NewJob, now_us
from ..dispatch.jobs import Jobs
from ..dispatch.tokens import create_token
from ..store import JobStore
from . import codec, pages, validation
from .orgs import OrgApi
from .schedules import ScheduleApi
from .telemetry import current_trace_context
from .templates import TemplateApi

Operation = Callable[..., Any]
"""`async (caller, request) -> response`, or for a server-streaming RPC an
async generator `(caller, request) -> response messages`."""

_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")
RESPONSE_MARGIN_BYTES = 64 << 10
"""Room kept in an answer of max_message_bytes for what frames it."""


def operation_name(method: str) -> str:
    """The name of the operation of a full method name:
    "/zbrain.v1.JobService/SubmitBatch" is "submit_batch"."""
    return _CAMEL_HUMP.sub("_", method.rsplit("/", 1)[-1]).lower()


class Api:
    """zbrain.v1's operations, transport-neutral: JobService and TokenService
    here, TemplateService, ScheduleService and OrgService in their parts
    (`templates`, `schedules`, `orgs`)."""

    def __init__(self, config: ServerConfig, jobs: Jobs, store: JobStore) -> None:
        self._config = config
        self._jobs = jobs
        self._store = store
        self.templates = TemplateApi(self, store)
        self.schedules = ScheduleApi(self, store)
        self.orgs = OrgApi(self, store)

    @property
    def config(self) -> ServerConfig:
        return self._config

    @property
    def jobs(self) -> Jobs:
        return self._jobs

    @property
    def answer_bytes(self) -> int:
        """What the items of one answer may hold in all (leases, a page of
        templates or schedules): past the message limit the answer would fail."""
        return self._config.limits.max_message_bytes - RESPONSE_MARGIN_BYTES

    def operation(self, method: str) -> Operation | None:
        """The operation of a full method name, or None when there is none
        (WorkerService.Connect, a session rather than an operation, lives in
        `worker_service`)."""
        name = operation_name(method)
        if name.startswith("_"):
            return None
        for part in (self, self.templates, self.schedules, self.orgs):
            found = getattr(part, name, None)
            if callable(found):
                return cast(Operation, found)
        return None

    def new_job(
        self,
        caller: Caller,
        spec: job_pb2.JobSpec,
        field: str,
        trace: dict[str, str],
        request_id: str = "",
        refs: dict[str, int] | None = None,
        request_id_field: str = "request_id",
    ) -> NewJob:
        """A JobSpec validated into the job to submit, in the org the caller
        may act on (for templates and schedules too)."""
        config = self._config
        return validation.new_job(
            spec,
            field=field,
            org_id=request_org(caller, spec.org_id, config.default_org),
            default_timeout_s=config.default_timeout_s,
            default_max_retries=config.default_max_retries,
            limits=config.limits,
            request_id=request_id,
            trace_context=trace,
            refs=refs,
            request_id_field=request_id_field,
        )

    # -- clients ---------------------------------------------------------------------

    async def submit(self, caller: Caller, request: pb.SubmitRequest) -> pb.SubmitResponse:
        # The job remembers the submitting call's trace, so its attempts join it.
        new = self.new_job(caller, request.job, "job", current_trace_context(), request.request_id)
        [(job, deduplicated)] = await self._jobs.submit([new])
        return pb.SubmitResponse(job=codec.job_to_proto(job), deduplicated=deduplicated)

    async def submit_batch(
        self, caller: Caller, request: pb.SubmitBatchRequest
    ) -> pb.SubmitBatchResponse:
        request_ids = validation.batch(request.jobs, request.request_ids, self._config.limits)
        refs = validation.batch_refs(request.jobs)
        trace = current_trace_context()
        new = [
            self.new_job(
                caller,
                spec,
                f"jobs[{i}]",
                trace,
                request_id,
                refs=refs,
                request_id_field=f"request_ids[{i}]",
            )
            for i, (spec, request_id) in enumerate(zip(request.jobs, request_ids, strict=True))
        ]
        validation.distinct_request_ids(new)
        created = await self._jobs.submit(new)
        response = pb.SubmitBatchResponse(job_ids=[job.id for job, _ in created])
        if request.return_jobs:
            response.submitted.extend(
                pb.SubmitResponse(job=codec.job_to_proto(job), deduplicated=deduplicated)
                for job, deduplicated in created
            )
        return response

    async def get(self, caller: Caller, request: pb.GetRequest) -> pb.GetResponse:
        job = await self._jobs.get(caller, validation.check_job_id(request.job_id))
        message = codec.job_to_proto(job)
        cause, message.waiting_reason = await self._jobs.waiting(job)
        message.waiting_cause = cast(job_pb2.WaitingCause.ValueType, cause)
        children, reruns = await self._jobs.links(job)
        message.child_ids.extend(children)
        message.rerun_ids.extend(reruns)
        return pb.GetResponse(job=message)

    async def list(self, caller: Caller, request: pb.ListRequest) -> pb.ListResponse:
        org_id: str | None = None  # every organisation, with all_orgs
        if request.all_orgs:
            check_every_org(caller)
        else:
            org_id = request_org(caller, request.org_id, self._config.default_org)
        query = validation.list_query(request, org_id, self._config.limits)
        jobs = await self._jobs.list_jobs(query)
        token = validation.next_page_token(query, jobs)  # the page as read, before filtering
        if query.unmatched:
            jobs = [job for job in jobs if not self._jobs.has_worker_for(job)]
        messages = [codec.job_to_proto(job) for job in jobs]
        page = pages.fitting(messages, self.answer_bytes)
        if len(page) < len(messages):  # large jobs: the next page goes on after the last kept
            token = validation.next_page_token(query, jobs[: len(page)], cut=True)
        return pb.ListResponse(jobs=page, next_page_token=token)

    async def cancel(self, caller: Caller, request: pb.CancelRequest) -> pb.CancelResponse:
        job, outcome = await self._jobs.cancel(caller, validation.check_job_id(request.job_id))
        return pb.CancelResponse(
            job=codec.job_to_proto(job), outcome=pb.CancelOutcome.ValueType(outcome.value)
        )

    async def rerun(self, caller: Caller, request: pb.RerunRequest) -> pb.RerunResponse:
        job_id = validation.check_job_id(request.job_id)
        input_json = (
            validation.input_json(request.input_json, "input_json", self._config.limits)
            if request.HasField("input_json")
            else None
        )
        job = await self._jobs.rerun(caller, job_id, input_json, current_trace_context())
        return pb.RerunResponse(job=codec.job_to_proto(job))

    async def stream_logs(
        self, caller: Caller, request: pb.StreamLogsRequest
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        job_id = validation.check_job_id(request.job_id)
        after = validation.after_sequence(request.after_sequence)
        async for lines in self._jobs.logs(caller, job_id, after, follow=request.follow):
            yield pb.StreamLogsResponse(lines=codec.log_lines_to_proto(lines))

    def events_org(self, caller: Caller, request: pb.StreamEventsRequest) -> str:
        """The organisation whose events a StreamEvents request reads, checked
        (the HTTP edge shares one live feed among the sockets that read it)."""
        return validation.valid_org(
            request_org(caller, request.org_id, self._config.default_org), "org_id"
        )

    async def stream_events(
        self, caller: Caller, request: pb.StreamEventsRequest
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        org_id = self.events_org(caller, request)
        after = validation.events_start(request)
        async for records in self._jobs.events(
            org_id, request.topic_prefix, after, follow=request.follow
        ):
            yield pb.StreamEventsResponse(events=[codec.event_to_proto(r) for r in records])

    async def events_resolved(
        self, caller: Caller, request: pb.StreamEventsRequest
    ) -> pb.StreamEventsRequest:
        """`request` checked, with `from_end` turned into the sequence it starts
        after: the HTTP edge's sockets share feeds and name where to resume by
        sequence. Streaming from it misses nothing: an event committed after the
        read is stored above that sequence."""
        self.events_org(caller, request)
        if validation.events_start(request) is not None:
            return request
        resolved = pb.StreamEventsRequest()
        resolved.CopyFrom(request)
        resolved.from_end = False
        resolved.after_sequence = await self._jobs.last_event_sequence()
        return resolved

    async def list_artifacts(
        self, caller: Caller, request: pb.ListArtifactsRequest
    ) -> pb.ListArtifactsResponse:
        job = await self._jobs.get(caller, validation.check_job_id(request.job_id))
        return pb.ListArtifactsResponse(
            artifacts=[codec.artifact_to_proto(a) for a in job.artifacts]
        )

    async def download_artifact(
        self, caller: Caller, request: pb.DownloadArtifactRequest
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        """The artifact's metadata first, then its content in chunks."""
        job_id = validation.check_job_id(request.job_id)
        name = validation.artifact_name(request.name, self._config.limits)
        artifact, content = await self._jobs.artifact(caller, job_id, name)
        yield pb.DownloadArtifactResponse(artifact=codec.artifact_to_proto(artifact))
        async for chunk in content:
            yield pb.DownloadArtifactResponse(chunk=chunk)

    async def list_workers(
        self, caller: Caller, request: pb.ListWorkersRequest
    ) -> pb.ListWorkersResponse:
        if request.org_id:
            request_org(caller, request.org_id, self._config.default_org)  # may it look?
            validation.valid_org(request.org_id, "org_id")
        wanted = pages.requested(
            request.page_size,
            request.page_token,
            self._config.limits,
            is_key=lambda key: bool(validation.WORKER_ID_PATTERN.match(key)),
        )
        connected = self._jobs.workers(caller, request.org_id)  # by worker id
        found = [w for w in connected if w.worker_id > wanted.after][: wanted.read_limit]
        workers, token = wanted.answer(
            found, codec.worker_to_proto, lambda w: w.worker_id, self.answer_bytes
        )
        return pb.ListWorkersResponse(workers=workers, next_page_token=token)

    # -- workers on the unary API -------------------------------------------------------

    async def acquire_lease(
        self,
        caller: Caller,
        request: pb.AcquireLeaseRequest,
        *,
        time_remaining_s: float | None = None,
    ) -> pb.AcquireLeaseResponse:
        """Leases for a worker; the wait ends half a second before the call's
        deadline (`time_remaining_s`), if it has one, so its answer arrives."""
        config = self._config
        orgs = request_orgs(caller, list(request.org_ids), config.default_org)
        worker_id, org_ids = validation.worker_identity(request.worker_id, orgs, config.limits)
        max_jobs, wait_s = validation.acquire(request, config.limits)
        if time_remaining_s is not None:
            wait_s = min(wait_s, max(0.0, time_remaining_s - 0.5))
        leases = await self._jobs.acquire(worker_id, org_ids, max_jobs, wait_s)
        response = pb.AcquireLeaseResponse()
        messages = [codec.lease_to_proto(lease) for lease in leases]
        response.leases.extend(pages.fitting(messages, self.answer_bytes))
        if len(response.leases) < len(leases):
            # Past what one answer may carry (large inputs, or parents'
            # outputs): the rest go back to the queue, not to waste.
            await self._jobs.give_back(leases[len(response.leases) :])
        return response

    async def renew_lease(
        self, caller: Caller, request: pb.RenewLeaseRequest
    ) -> pb.RenewLeaseResponse:
        job_id = validation.check_job_id(request.job_id)
        job = await self._jobs.renew(caller, job_id, request.lease_epoch)
        return pb.RenewLeaseResponse(
            expire_time=codec.timestamp(job.lease_expire_time_us),
            cancel_requested=job.cancel_requested,
        )

    async def report_logs(
        self, caller: Caller, request: pb.ReportLogsRequest
    ) -> pb.ReportLogsResponse:
        records = validation.log_records(request.lines, "lines", self._config.limits)
        job_id = validation.check_job_id(request.job_id)
        lines = await self._jobs.append_logs(caller, job_id, request.lease_epoch, records)
        return pb.ReportLogsResponse(last_sequence=lines[-1].sequence if lines else 0)

    async def complete_lease(
        self, caller: Caller, request: pb.CompleteLeaseRequest
    ) -> pb.CompleteLeaseResponse:
        result = validation.attempt_result(request.result)
        job_id = validation.check_job_id(request.job_id)
        job = await self._jobs.complete(caller, job_id, request.lease_epoch, result)
        return pb.CompleteLeaseResponse(job=codec.job_to_proto(job))

    async def upload_artifact(
        self, caller: Caller, requests: AsyncIterator[pb.UploadArtifactRequest]
    ) -> pb.UploadArtifactResponse:
        """A client-streaming RPC: a header, then the content in chunks."""
        first = await anext(requests, None)
        if first is None or not first.HasField("header"):
            raise validation.missing_header()
        job_id, lease_epoch, announced = validation.artifact_header(
            first.header, self._config.limits
        )

        async def chunks() -> AsyncIterator[bytes]:
            async for part in requests:
                if part.HasField("header"):
                    raise InvalidArgumentError("only the first message may be a header")
                yield part.chunk

        stored = await self._jobs.upload(caller, job_id, lease_epoch, announced, chunks())
        return pb.UploadArtifactResponse(artifact=codec.artifact_to_proto(stored))

    # -- tokens (admins only: auth.REQUIRED_ROLE) --------------------------------------

    async def create_token(
        self, caller: Caller, request: tpb.CreateTokenRequest
    ) -> tpb.CreateTokenResponse:
        org_id, role, description = validation.new_token(request, self._config.limits)
        token, bearer = await create_token(self._store, org_id, role, description)
        return tpb.CreateTokenResponse(token=codec.token_to_proto(token), secret=bearer)

    async def list_tokens(
        self, caller: Caller, request: tpb.ListTokensRequest
    ) -> tpb.ListTokensResponse:
        tokens = await self._store.list_tokens(request.org_id or None)
        return tpb.ListTokensResponse(tokens=[codec.token_to_proto(t) for t in tokens])

    async def revoke_token(
        self, caller: Caller, request: tpb.RevokeTokenRequest
    ) -> tpb.RevokeTokenResponse:
        token = await self._store.revoke_token(validation.token_id(request.token_id), now_us())
        return tpb.RevokeTokenResponse(token=codec.token_to_proto(token))
