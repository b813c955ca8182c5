"""zbrain.v1.ScheduleService's operations (see `api` for how operations are
defined and called), and the job of a schedule's tick (`job_for`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zbrain.models import Role
from zbrain.v1 import job_pb2
from zbrain.v1 import schedule_pb2 as pb

from ..core import schedules
from ..core.access import Caller, request_org
from ..core.model import NewJob, now_us
from ..core.schedules import Schedule, TimingError
from ..dispatch.scheduler import Scheduler
from ..store import JobStore
from . import codec, pages, validation, validation_workflows

if TYPE_CHECKING:
    from .api import Api

UPCOMING = 5
"""Next fire times shown with a schedule."""


class ScheduleApi:
    """Schedules: their resource operations, and triggering one by hand."""

    def __init__(self, api: Api, store: JobStore) -> None:
        self._api = api
        self._store = store
        self._scheduler: Scheduler | None = None

    def attach(self, scheduler: Scheduler) -> None:
        """The scheduler to tell of new timing and to trigger through."""
        self._scheduler = scheduler

    async def job_for(self, schedule: Schedule) -> NewJob:
        """The job a schedule submits: its JobSpec, or its template with its
        parameters, validated as any submission in the schedule's org."""
        caller = Caller(schedule.org_id, Role.CLIENT, f"schedule:{schedule.id}")
        if schedule.template is None:
            spec = job_pb2.JobSpec.FromString(schedule.job_spec)
            spec.org_id = schedule.org_id
            return self._api.new_job(caller, spec, "schedule.job", {})
        ref = schedule.template
        template = await self._api.templates.find(schedule.org_id, ref.name, ref.version)
        return self._api.templates.job(caller, template, ref.parameters, "")

    async def create_schedule(
        self, caller: Caller, request: pb.CreateScheduleRequest
    ) -> pb.CreateScheduleResponse:
        schedule = await self._checked(caller, request.schedule)
        limit = self._api.config.limits.max_schedules_per_org
        stored = await self._store.schedules.create(schedule, max_per_org=limit)
        self._nudge(stored)
        return pb.CreateScheduleResponse(
            schedule=codec.schedule_to_proto(stored),
            upcoming=codec.timestamps(_upcoming(stored)),
        )

    async def get_schedule(
        self, caller: Caller, request: pb.GetScheduleRequest
    ) -> pb.GetScheduleResponse:
        schedule = await self._find(caller, request.org_id, request.schedule_id)
        return pb.GetScheduleResponse(
            schedule=codec.schedule_to_proto(schedule),
            upcoming=codec.timestamps(_upcoming(schedule)),
        )

    async def list_schedules(
        self, caller: Caller, request: pb.ListSchedulesRequest
    ) -> pb.ListSchedulesResponse:
        org_id = self._org(caller, request.org_id)
        wanted = pages.requested(request.page_size, request.page_token, self._api.config.limits)
        found = await self._store.schedules.list(org_id, wanted.after, wanted.read_limit)
        page, token = wanted.answer(
            found, codec.schedule_to_proto, lambda s: s.id, self._api.answer_bytes
        )
        return pb.ListSchedulesResponse(schedules=page, next_page_token=token)

    async def update_schedule(
        self, caller: Caller, request: pb.UpdateScheduleRequest
    ) -> pb.UpdateScheduleResponse:
        changed = await self._checked(caller, request.schedule)
        stored = await self._store.schedules.change(
            changed.org_id, changed.id, lambda before: schedules.updated(before, changed)
        )
        self._nudge(stored)
        return pb.UpdateScheduleResponse(schedule=codec.schedule_to_proto(stored))

    async def delete_schedule(
        self, caller: Caller, request: pb.DeleteScheduleRequest
    ) -> pb.DeleteScheduleResponse:
        org_id = self._org(caller, request.org_id)
        await self._store.schedules.delete(
            org_id, validation_workflows.schedule_id(request.schedule_id)
        )
        return pb.DeleteScheduleResponse()

    async def pause_schedule(
        self, caller: Caller, request: pb.PauseScheduleRequest
    ) -> pb.PauseScheduleResponse:
        org_id, schedule_id = self._key(caller, request.org_id, request.schedule_id)
        now = now_us()
        stored = await self._store.schedules.change(
            org_id, schedule_id, lambda schedule: schedules.paused(schedule, now)
        )
        return pb.PauseScheduleResponse(schedule=codec.schedule_to_proto(stored))

    async def resume_schedule(
        self, caller: Caller, request: pb.ResumeScheduleRequest
    ) -> pb.ResumeScheduleResponse:
        org_id, schedule_id = self._key(caller, request.org_id, request.schedule_id)
        now = now_us()
        stored = await self._store.schedules.change(
            org_id, schedule_id, lambda schedule: schedules.resumed(schedule, now)
        )
        self._nudge(stored)
        return pb.ResumeScheduleResponse(schedule=codec.schedule_to_proto(stored))

    async def trigger_schedule(
        self, caller: Caller, request: pb.TriggerScheduleRequest
    ) -> pb.TriggerScheduleResponse:
        schedule = await self._find(caller, request.org_id, request.schedule_id)
        assert self._scheduler is not None, "the server attaches its scheduler at start"
        job = await self._scheduler.trigger(schedule)
        return pb.TriggerScheduleResponse(job=codec.job_to_proto(job))

    async def _checked(self, caller: Caller, message: pb.Schedule) -> Schedule:
        """The schedule a request describes, its job (or template) checked as
        a tick would make it, so a bad one is refused now, not at its tick."""
        org_id = self._org(caller, message.org_id)
        schedule = validation_workflows.new_schedule(
            message, org_id, self._api.config.limits, now_us(), "schedule"
        )
        await self.job_for(schedule)
        return schedule

    async def _find(self, caller: Caller, org: str, schedule_id: str) -> Schedule:
        return await self._store.schedules.get(*self._key(caller, org, schedule_id))

    def _key(self, caller: Caller, org: str, schedule_id: str) -> tuple[str, str]:
        """The org and id a request names, validated."""
        return self._org(caller, org), validation_workflows.schedule_id(schedule_id)

    def _org(self, caller: Caller, requested: str) -> str:
        org_id = request_org(caller, requested, self._api.config.default_org)
        return validation.valid_org(org_id, "org_id")

    def _nudge(self, schedule: Schedule) -> None:
        if self._scheduler is not None:
            self._scheduler.nudge(schedule.next_fire_time_us)


def _upcoming(schedule: Schedule) -> list[int]:
    """The next fire times to show; none when this server cannot step the
    schedule (a stored time zone its zone list lacks, as on a replica of
    another machine), which is still shown."""
    try:
        return schedules.upcoming(schedule, UPCOMING)
    except TimingError:
        return []
