"""Schedules at run time: firing each due tick once, and triggering by hand.

Every server runs a scheduler. It sleeps until the earliest next tick of any
schedule (an index on it), then for each due schedule decides the firing
(`core.schedules.plan_fire`: overlap and catch-up policies) and has the store
carry it out in one transaction under a compare-and-set on the tick (see
`store.schedules`): with several replicas on one PostgreSQL, each tick makes
one job whichever replica gets there first, and a restart resumes from the
stored next tick, its missed ticks following the catch-up policy.

The job of a tick is made by the edge that defines job specs (`JobFactory`):
a schedule keeps its job as a serialized JobSpec, or names a template, and
the tick's job goes through the same validation as any submission.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from zbrain.errors import NotFoundError, ZBrainError

from ..config import ServerConfig
from ..core import schedules
from ..core.model import Job, NewJob, now_us
from ..core.schedules import Firing, Schedule
from ..store import JobStore
from .alarm import Alarm

log = logging.getLogger(__name__)

DUE_BATCH = 100

JobFactory = Callable[[Schedule], Awaitable[NewJob]]
"""The job a schedule submits (from its JobSpec or its template), without
the tick's request id and labels; a ZBrainError when it cannot be made."""


class Scheduler:
    """Fires the ticks of every schedule in the store."""

    def __init__(self, store: JobStore, config: ServerConfig, job_for: JobFactory) -> None:
        self._store = store
        self._config = config
        self._job_for = job_for
        self._grace_us = int(config.schedule_grace_s * 1e6)
        self._alarm = Alarm("scheduler", self._fire_due, config.poll_interval_s)
        # Ticks that failed unexpectedly (a bug, or a stored time zone this
        # machine cannot open), by schedule: passed over until the schedule
        # moves on (another replica fired it, or it was updated).
        self._broken: dict[tuple[str, str], int] = {}

    def start(self) -> None:
        self._alarm.start()

    async def stop(self) -> None:
        await self._alarm.stop()

    def nudge(self, due_us: int | None) -> None:
        """A schedule was stored or resumed here: its next tick is at `due_us`."""
        self._alarm.nudge(due_us)

    async def trigger(self, schedule: Schedule) -> Job:
        """Submit the schedule's job now, outside its ticks (its next tick
        stays); the schedule's overlap policy does not apply."""
        now = now_us()
        job = _for_tick(await self._job_for(schedule), schedule.id, now, request_id="")
        firing = Firing(now, True, False, "", schedule.next_fire_time_us or now)
        submitted = await self._store.schedules.fire(
            schedule.org_id,
            schedule.id,
            firing,
            job,
            now,
            expected_tick_us=None,
            pending_limit=self._config.limits.max_pending_per_org,
        )
        if submitted is None:
            raise NotFoundError(
                f"there is no schedule {schedule.id!r} in organisation {schedule.org_id!r}"
            )
        return submitted

    async def _fire_due(self) -> int | None:
        """Fire every due tick; one schedule that fails stops no other."""
        now = now_us()
        due = await self._store.schedules.due(now, DUE_BATCH + len(self._broken))
        self._broken = {key: tick for key, tick in self._broken.items() if (*key, tick) in due}
        for org_id, schedule_id, tick in due:
            if self._broken.get((org_id, schedule_id)) == tick:
                continue
            try:
                await self._fire(org_id, schedule_id, tick, now)
            except ZBrainError as error:  # the store is busy or down, say: tried again
                log.warning("schedule %s of %s: tick failed: %s", schedule_id, org_id, error)
            except Exception:
                log.exception(
                    "schedule %s of %s: tick failed; passed over until the schedule changes",
                    schedule_id,
                    org_id,
                )
                self._broken[(org_id, schedule_id)] = tick
        if self._broken:
            return None  # the earliest due may be a broken one: wake at the next poll
        return await self._store.schedules.next_fire_time()

    async def _fire(self, org_id: str, schedule_id: str, tick: int, now: int) -> None:
        try:
            schedule = await self._store.schedules.get(org_id, schedule_id)
        except NotFoundError:
            return  # deleted since
        if schedule.next_fire_time_us != tick:
            return  # fired by another replica since
        running = await self._still_runs(schedule.last_job_id)
        firing = schedules.plan_fire(schedule, now, running, self._grace_us)
        job = None
        if firing.submit:
            try:
                made = await self._job_for(schedule)
                job = _for_tick(made, schedule_id, firing.tick_us)
            except ZBrainError as error:
                firing = _skipped(firing, f"the tick's job could not be made: {error}")
        try:
            await self._fire_firing(schedule, firing, job, now, tick)
        except ZBrainError as error:
            if job is None:
                raise
            # Refused (the org's quota, say): the tick passes without a job,
            # recorded, rather than being tried again and again.
            await self._fire_firing(
                schedule, _skipped(firing, f"the tick's job was refused: {error}"), None, now, tick
            )

    async def _fire_firing(
        self, schedule: Schedule, firing: Firing, job: NewJob | None, now: int, tick: int
    ) -> None:
        submitted = await self._store.schedules.fire(
            schedule.org_id,
            schedule.id,
            firing,
            job,
            now,
            expected_tick_us=tick,
            pending_limit=self._config.limits.max_pending_per_org,
        )
        if firing.skipped_reason:
            log.info("schedule %s of %s: %s", schedule.id, schedule.org_id, firing.skipped_reason)
        elif submitted is not None:
            log.debug("schedule %s of %s fired job %s", schedule.id, schedule.org_id, submitted.id)

    async def _still_runs(self, job_id: str) -> bool:
        if not job_id:
            return False
        try:
            return not (await self._store.get_job(job_id)).state.is_terminal
        except NotFoundError:  # purged by retention
            return False


def _for_tick(job: NewJob, schedule_id: str, tick_us: int, request_id: str | None = None) -> NewJob:
    """The tick's job: labelled with the schedule and the tick, and keyed by
    them (a second submission for the tick finds the first job)."""
    return replace(
        job,
        request_id=schedules.tick_request_id(schedule_id, tick_us)
        if request_id is None
        else request_id,
        labels={**job.labels, **schedules.tick_labels(schedule_id, tick_us)},
    )


def _skipped(firing: Firing, reason: str) -> Firing:
    return replace(firing, submit=False, cancel_previous=False, skipped_reason=reason)
