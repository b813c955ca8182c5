"""zbrain.v1.TemplateService's operations (see `api` for how operations are
defined and called)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from zbrain.v1 import job_pb2
from zbrain.v1 import template_pb2 as pb

from ..core.access import Caller, request_org
from ..core.model import NewJob, now_us
from ..core.templates import Template
from ..store import JobStore
from . import codec, pages, validation, validation_workflows
from .telemetry import current_trace_context

if TYPE_CHECKING:
    from .api import Api


class TemplateApi:
    """Named, versioned job templates, and submitting from them."""

    def __init__(self, api: Api, store: JobStore) -> None:
        self._api = api
        self._store = store

    async def create_template(
        self, caller: Caller, request: pb.CreateTemplateRequest
    ) -> pb.CreateTemplateResponse:
        config = self._api.config
        org_id = request_org(caller, request.template.org_id, config.default_org)
        template = validation_workflows.new_template(
            request.template, org_id, config.limits, now_us()
        )
        # The job must be one that could be submitted (placeholders are text).
        self._api.new_job(caller, _in_org(request.template.job, org_id), "template.job", {})
        stored = await self._store.templates.create(template)
        return pb.CreateTemplateResponse(template=codec.template_to_proto(stored))

    async def get_template(
        self, caller: Caller, request: pb.GetTemplateRequest
    ) -> pb.GetTemplateResponse:
        template = await self._find(caller, request.org_id, request.name, request.version)
        return pb.GetTemplateResponse(template=codec.template_to_proto(template))

    async def list_templates(
        self, caller: Caller, request: pb.ListTemplatesRequest
    ) -> pb.ListTemplatesResponse:
        org_id = self._org(caller, request.org_id)
        wanted = pages.requested(request.page_size, request.page_token, self._api.config.limits)
        found = await self._store.templates.list(org_id, wanted.after, wanted.read_limit)
        page, token = wanted.answer(
            found, codec.template_to_proto, lambda t: t.name, self._api.answer_bytes
        )
        return pb.ListTemplatesResponse(templates=page, next_page_token=token)

    async def delete_template(
        self, caller: Caller, request: pb.DeleteTemplateRequest
    ) -> pb.DeleteTemplateResponse:
        org_id = self._org(caller, request.org_id)
        name = validation_workflows.template_name(request.name)
        deleted = await self._store.templates.delete(org_id, name)
        return pb.DeleteTemplateResponse(deleted_versions=deleted)

    async def submit_template(
        self, caller: Caller, request: pb.SubmitTemplateRequest
    ) -> pb.SubmitTemplateResponse:
        template = await self._find(caller, request.org_id, request.name, request.version)
        new = self.job(caller, template, request.parameters, request.request_id)
        [(job, _)] = await self._api.jobs.submit([new])
        return pb.SubmitTemplateResponse(
            job=codec.job_to_proto(job), template_version=template.version
        )

    def job(
        self, caller: Caller, template: Template, parameters: Mapping[str, str], request_id: str
    ) -> NewJob:
        """The job a template makes with these parameters, validated as any
        submission (INVALID_ARGUMENT naming a bad parameter first)."""
        spec = validation_workflows.rendered_spec(template, parameters, self._api.config.limits)
        return self._api.new_job(
            caller,
            _in_org(spec, template.org_id),
            "job",
            current_trace_context(),
            request_id=request_id,
        )

    async def find(self, org_id: str, name: str, version: int) -> Template:
        """A template by name and version (0: the latest) in an org already checked."""
        return await self._store.templates.get(org_id, name, version)

    async def _find(self, caller: Caller, org: str, name: str, version: int) -> Template:
        org_id = self._org(caller, org)
        name = validation_workflows.template_name(name)
        return await self.find(org_id, name, validation_workflows.version(version))

    def _org(self, caller: Caller, requested: str) -> str:
        org_id = request_org(caller, requested, self._api.config.default_org)
        return validation.valid_org(org_id, "org_id")


def _in_org(spec: job_pb2.JobSpec, org_id: str) -> job_pb2.JobSpec:
    """The spec with its org set: a template's jobs go to the template's org."""
    copy = job_pb2.JobSpec()
    copy.CopyFrom(spec)
    copy.org_id = org_id
    return copy
