"""Job templates and schedules from Python: `client.templates` and
`client.schedules` of a `zbrain.Client` (docs/workflows.md)."""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from google.protobuf import duration_pb2

from . import _convert
from .models import (
    CatchUpPolicy,
    Job,
    OverlapPolicy,
    Schedule,
    Template,
    TemplateParameter,
)
from .v1 import job_pb2, schedule_pb2, schedule_pb2_grpc, template_pb2, template_pb2_grpc

if TYPE_CHECKING:
    from .client import Client

PAGE_SIZE = 200


class Templates:
    """Named, versioned job templates of an organisation."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = template_pb2_grpc.TemplateServiceStub(client.channel)

    async def create(
        self,
        name: str,
        job: job_pb2.JobSpec,
        *,
        parameters: Sequence[TemplateParameter] = (),
        description: str = "",
        org: str | None = None,
    ) -> Template:
        """Store a new version of template `name` (version 1 if it is new).

        `job` is built with `zbrain.client.job_spec`; `{{ name }}` in its
        arguments, environment values and input strings are parameters, each
        declared in `parameters`.
        """
        message = template_pb2.Template(
            org_id=org or "",
            name=name,
            job=job,
            description=description,
            parameters=[
                template_pb2.Parameter(
                    name=p.name,
                    type=cast(template_pb2.ParameterType.ValueType, p.type),
                    required=p.required,
                    default_json=json.dumps(p.default) if p.default is not None else "",
                    description=p.description,
                )
                for p in parameters
            ],
        )
        response = await self._client._call(
            self._stub.CreateTemplate(
                template_pb2.CreateTemplateRequest(template=message), timeout=self._client.timeout
            )
        )
        return _convert.template(response.template)

    async def get(self, name: str, *, version: int = 0, org: str | None = None) -> Template:
        """One version of a template (0: the latest)."""
        request = template_pb2.GetTemplateRequest(org_id=org or "", name=name, version=version)
        response = await self._client._call(
            self._stub.GetTemplate(request, timeout=self._client.timeout)
        )
        return _convert.template(response.template)

    async def list(self, *, org: str | None = None) -> builtins.list[Template]:
        """The latest version of every template, by name."""
        return [template async for template in self._all(org)]

    async def _all(self, org: str | None) -> AsyncIterator[Template]:
        token = ""
        while True:
            request = template_pb2.ListTemplatesRequest(
                org_id=org or "", page_size=PAGE_SIZE, page_token=token
            )
            response = await self._client._call(
                self._stub.ListTemplates(request, timeout=self._client.timeout)
            )
            for message in response.templates:
                yield _convert.template(message)
            token = response.next_page_token
            if not token:
                return

    async def delete(self, name: str, *, org: str | None = None) -> int:
        """Delete every version of a template; how many there were."""
        request = template_pb2.DeleteTemplateRequest(org_id=org or "", name=name)
        response = await self._client._call(
            self._stub.DeleteTemplate(request, timeout=self._client.timeout)
        )
        return int(response.deleted_versions)

    async def submit(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        version: int = 0,
        org: str | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Submit a job from a template (its latest version unless `version`);
        `params` are Python values (text as it is, others as JSON)."""
        request = template_pb2.SubmitTemplateRequest(
            org_id=org or "",
            name=name,
            version=version,
            parameters={key: _convert.param_text(value) for key, value in (params or {}).items()},
            request_id=request_id or "",
        )
        response = await self._client._call(
            self._stub.SubmitTemplate(request, timeout=self._client.timeout)
        )
        return _convert.job(response.job)


class Schedules:
    """Schedules of an organisation: a job (or a template) at every tick."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = schedule_pb2_grpc.ScheduleServiceStub(client.channel)

    async def create(
        self,
        schedule_id: str,
        *,
        cron: str = "",
        time_zone: str = "",
        every: float | timedelta | None = None,
        job: job_pb2.JobSpec | None = None,
        template: str | None = None,
        template_version: int = 0,
        params: Mapping[str, Any] | None = None,
        overlap: OverlapPolicy = OverlapPolicy.SKIP,
        catch_up: CatchUpPolicy = CatchUpPolicy.SKIP,
        paused: bool = False,
        org: str | None = None,
    ) -> Schedule:
        """Create a schedule ticking on `cron` (5 fields, in `time_zone`) or
        `every` so long, submitting `job` (from `job_spec`) or `template`."""
        message = _schedule_message(
            schedule_id, cron, time_zone, every, job, template, template_version, params,
            overlap, catch_up, paused, org,
        )  # fmt: skip
        response = await self._client._call(
            self._stub.CreateSchedule(
                schedule_pb2.CreateScheduleRequest(schedule=message), timeout=self._client.timeout
            )
        )
        return _convert.schedule(response.schedule, response.upcoming)

    async def update(
        self,
        schedule_id: str,
        *,
        cron: str = "",
        time_zone: str = "",
        every: float | timedelta | None = None,
        job: job_pb2.JobSpec | None = None,
        template: str | None = None,
        template_version: int = 0,
        params: Mapping[str, Any] | None = None,
        overlap: OverlapPolicy = OverlapPolicy.SKIP,
        catch_up: CatchUpPolicy = CatchUpPolicy.SKIP,
        paused: bool = False,
        org: str | None = None,
    ) -> Schedule:
        """Replace a schedule's timing, job and policies (as `create` takes them)."""
        message = _schedule_message(
            schedule_id, cron, time_zone, every, job, template, template_version, params,
            overlap, catch_up, paused, org,
        )  # fmt: skip
        response = await self._client._call(
            self._stub.UpdateSchedule(
                schedule_pb2.UpdateScheduleRequest(schedule=message), timeout=self._client.timeout
            )
        )
        return _convert.schedule(response.schedule)

    async def get(self, schedule_id: str, *, org: str | None = None) -> Schedule:
        """A schedule, with its next fire times (`upcoming`)."""
        request = schedule_pb2.GetScheduleRequest(org_id=org or "", schedule_id=schedule_id)
        response = await self._client._call(
            self._stub.GetSchedule(request, timeout=self._client.timeout)
        )
        return _convert.schedule(response.schedule, response.upcoming)

    async def list(self, *, org: str | None = None) -> builtins.list[Schedule]:
        """Every schedule of the organisation, by id."""
        found: builtins.list[Schedule] = []
        token = ""
        while True:
            request = schedule_pb2.ListSchedulesRequest(
                org_id=org or "", page_size=PAGE_SIZE, page_token=token
            )
            response = await self._client._call(
                self._stub.ListSchedules(request, timeout=self._client.timeout)
            )
            found += [_convert.schedule(message) for message in response.schedules]
            token = response.next_page_token
            if not token:
                return found

    async def delete(self, schedule_id: str, *, org: str | None = None) -> None:
        """Delete a schedule; the jobs it submitted stay."""
        request = schedule_pb2.DeleteScheduleRequest(org_id=org or "", schedule_id=schedule_id)
        await self._client._call(self._stub.DeleteSchedule(request, timeout=self._client.timeout))

    async def pause(self, schedule_id: str, *, org: str | None = None) -> Schedule:
        """Stop a schedule's ticks until it is resumed."""
        request = schedule_pb2.PauseScheduleRequest(org_id=org or "", schedule_id=schedule_id)
        response = await self._client._call(
            self._stub.PauseSchedule(request, timeout=self._client.timeout)
        )
        return _convert.schedule(response.schedule)

    async def resume(self, schedule_id: str, *, org: str | None = None) -> Schedule:
        """Tick again, from the next tick after now."""
        request = schedule_pb2.ResumeScheduleRequest(org_id=org or "", schedule_id=schedule_id)
        response = await self._client._call(
            self._stub.ResumeSchedule(request, timeout=self._client.timeout)
        )
        return _convert.schedule(response.schedule)

    async def trigger(self, schedule_id: str, *, org: str | None = None) -> Job:
        """Submit the schedule's job now, outside its ticks."""
        request = schedule_pb2.TriggerScheduleRequest(org_id=org or "", schedule_id=schedule_id)
        response = await self._client._call(
            self._stub.TriggerSchedule(request, timeout=self._client.timeout)
        )
        return _convert.job(response.job)


def _schedule_message(
    schedule_id: str,
    cron: str,
    time_zone: str,
    every: float | timedelta | None,
    job: job_pb2.JobSpec | None,
    template: str | None,
    template_version: int,
    params: Mapping[str, Any] | None,
    overlap: OverlapPolicy,
    catch_up: CatchUpPolicy,
    paused: bool,
    org: str | None,
) -> schedule_pb2.Schedule:
    message = schedule_pb2.Schedule(
        id=schedule_id,
        org_id=org or "",
        cron=cron,
        time_zone=time_zone,
        overlap=cast(schedule_pb2.OverlapPolicy.ValueType, overlap),
        catch_up=cast(schedule_pb2.CatchUpPolicy.ValueType, catch_up),
        paused=paused,
    )
    if every is not None:
        interval = duration_pb2.Duration()
        interval.FromTimedelta(every if isinstance(every, timedelta) else timedelta(seconds=every))
        message.interval.CopyFrom(interval)
    if job is not None:
        message.job.CopyFrom(job)
    if template is not None:
        message.template.name = template
        message.template.version = template_version
        message.template.parameters.update(
            {key: _convert.param_text(value) for key, value in (params or {}).items()}
        )
    return message
