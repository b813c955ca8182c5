"""`ScheduleStore`: schedules, and the one transaction that fires a tick.

A tick is fired by `fire`: under the schedule's row lock it checks that the
schedule still waits for that very tick (a compare-and-set on its next fire
time), then in the same transaction cancels the last tick's job if the
overlap policy says so, submits the tick's job (its request id is the tick,
so even a second submission would find the first job), moves the schedule
on to its next tick and records the firing. Any number of servers may try a
tick at once: one fires it, the others find it fired.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from zbrain.errors import AlreadyExistsError, NotFoundError, ResourceExhaustedError
from zbrain.models import CatchUpPolicy, OverlapPolicy

from ..core import events
from ..core.model import Job, NewJob
from ..core.schedules import Firing, Schedule, TemplateRef
from .driver import Driver
from .engine import Tx, WriteEngine
from .ops import Execute, FetchOne, Params, Program, Row

if TYPE_CHECKING:
    from .jobs import JobStore


class ScheduleStore:
    """Schedules of every org, in the job store's database and transactions."""

    def __init__(self, driver: Driver, engine: WriteEngine, jobs: JobStore) -> None:
        self._driver = driver
        self._engine = engine
        self._jobs = jobs

    async def create(self, schedule: Schedule, max_per_org: int | None = None) -> Schedule:
        """Store a new schedule; AlreadyExistsError when its id is taken, and
        ResourceExhaustedError past `max_per_org` schedules in its org."""

        def program(tx: Tx) -> Program[Schedule]:
            if max_per_org is not None:
                row = yield FetchOne("count_schedules", {"org_id": schedule.org_id})
                if row is not None and row["schedules"] >= max_per_org:
                    raise ResourceExhaustedError(
                        f"organisation {schedule.org_id!r} has {row['schedules']} schedules; "
                        f"the limit (max_schedules_per_org) is {max_per_org}"
                    )
            if not (yield Execute("insert_schedule", _params(schedule))):
                raise AlreadyExistsError(
                    f"schedule {schedule.id!r} already exists in organisation {schedule.org_id!r}"
                )
            return schedule

        return await self._engine.write(program)

    async def get(self, org_id: str, schedule_id: str) -> Schedule:
        """One schedule; NotFoundError when there is none."""
        row = await self._driver.fetch_one("select_schedule", {"org_id": org_id, "id": schedule_id})
        if row is None:
            raise _not_found(org_id, schedule_id)
        return _schedule(row)

    async def list(self, org_id: str, after_id: str, limit: int) -> builtins.list[Schedule]:
        """Schedules of an org with ids after `after_id`, by id."""
        rows = await self._driver.fetch(
            "list_schedules", {"org_id": org_id, "after": after_id, "limit": limit}
        )
        return [_schedule(row) for row in rows]

    async def change(
        self, org_id: str, schedule_id: str, change: Callable[[Schedule], Schedule | None]
    ) -> Schedule:
        """Change a schedule (update, pause, resume) as `change` makes it from
        the stored one, read under its row lock in the same transaction: a
        tick fired meanwhile (its job, its next tick) is never written over
        with what a caller read before. `change` returning None leaves the
        schedule as it is (pausing a paused one). Returns the schedule as
        stored after; NotFoundError when there is none."""

        def program(tx: Tx) -> Program[Schedule]:
            row = yield FetchOne("lock_schedule", {"org_id": org_id, "id": schedule_id})
            if row is None:
                raise _not_found(org_id, schedule_id)
            stored = _schedule(row)
            changed = change(stored)
            if changed is None:
                return stored
            yield Execute("save_schedule", _params(changed))
            return changed

        return await self._engine.write(program)

    async def delete(self, org_id: str, schedule_id: str) -> None:
        """Delete a schedule (its jobs stay); NotFoundError if there is none."""

        def program(tx: Tx) -> Program[None]:
            if not (yield Execute("delete_schedule", {"org_id": org_id, "id": schedule_id})):
                raise _not_found(org_id, schedule_id)

        await self._engine.write(program)

    async def due(self, now_us: int, limit: int) -> builtins.list[tuple[str, str, int]]:
        """(org, id, next fire time) of schedules whose next tick has come."""
        rows = await self._driver.fetch("due_schedules", {"now": now_us, "limit": limit})
        return [(row["org_id"], row["id"], row["next_fire_time"]) for row in rows]

    async def next_fire_time(self) -> int | None:
        """The earliest next tick of any schedule, if any ticks."""
        row = await self._driver.fetch_one("next_fire_time", {})
        earliest = row["next_fire_time"] if row is not None else None
        return int(earliest) if earliest is not None else None

    async def fire(
        self,
        org_id: str,
        schedule_id: str,
        firing: Firing,
        job: NewJob | None,
        now_us: int,
        *,
        expected_tick_us: int | None,
        pending_limit: int | None = None,
    ) -> Job | None:
        """Fire a tick as planned (see the module's docstring): the job it
        submitted, or None. With `expected_tick_us` None this is a trigger,
        outside the ticks: the schedule's next tick stays as it is. Returns
        None as well when the tick was fired already, by another server."""
        skipped = firing.skipped_reason if job is None else ""

        def program(tx: Tx) -> Program[Job | None]:
            row = yield FetchOne("lock_schedule", {"org_id": org_id, "id": schedule_id})
            if row is None:
                return None
            schedule = _schedule(row)
            if expected_tick_us is not None and schedule.next_fire_time_us != expected_tick_us:
                return None  # fired (or paused, or changed) meanwhile
            if firing.cancel_previous and schedule.last_job_id:
                yield from self._jobs.cancel_program(tx, schedule.last_job_id, now_us)
            submitted = None
            if job is not None:
                [(submitted, _)] = yield from self._jobs.submit_program(
                    tx, [job], now_us, pending_limit, None
                )
            fired = replace(schedule, update_time_us=now_us)
            if expected_tick_us is not None:  # a trigger leaves the ticks as they are
                fired.next_fire_time_us = firing.next_fire_time_us
            if submitted is not None:
                fired.last_fire_time_us = firing.tick_us
                fired.last_job_id = submitted.id
            yield Execute("save_schedule", _params(fired))
            body = events.ScheduleFired(
                schedule_id,
                firing.tick_us,
                submitted.id if submitted is not None else "",
                skipped,
                triggered=expected_tick_us is None,
                missed_ticks=firing.missed_ticks,
            )
            tx.record([events.schedule_fired(org_id, body, now_us)])
            return submitted

        quota = [job.org_id] if job is not None else []
        return await self._engine.write(program, quota_orgs=quota)


def _not_found(org_id: str, schedule_id: str) -> NotFoundError:
    return NotFoundError(f"there is no schedule {schedule_id!r} in organisation {org_id!r}")


def _params(schedule: Schedule) -> Params:
    template = schedule.template
    return {
        "org_id": schedule.org_id,
        "id": schedule.id,
        "cron": schedule.cron,
        "time_zone": schedule.time_zone,
        "interval_us": schedule.interval_us,
        "job_spec": schedule.job_spec,
        "template_name": template.name if template else "",
        "template_version": template.version if template else 0,
        "template_parameters": json.dumps(dict(template.parameters) if template else {}),
        "overlap": schedule.overlap.name,
        "catch_up": schedule.catch_up.name,
        "paused": int(schedule.paused),
        "next_fire_time": schedule.next_fire_time_us,
        "last_fire_time": schedule.last_fire_time_us,
        "last_job_id": schedule.last_job_id,
        "create_time": schedule.create_time_us,
        "update_time": schedule.update_time_us,
    }


def _schedule(row: Row) -> Schedule:
    template = None
    if row["template_name"]:
        template = TemplateRef(
            row["template_name"], row["template_version"], json.loads(row["template_parameters"])
        )
    return Schedule(
        org_id=row["org_id"],
        id=row["id"],
        cron=row["cron"],
        time_zone=row["time_zone"],
        interval_us=row["interval_us"],
        job_spec=bytes(row["job_spec"]),
        template=template,
        overlap=OverlapPolicy[row["overlap"]],
        catch_up=CatchUpPolicy[row["catch_up"]],
        paused=bool(row["paused"]),
        next_fire_time_us=row["next_fire_time"],
        last_fire_time_us=row["last_fire_time"],
        last_job_id=row["last_job_id"],
        create_time_us=row["create_time"],
        update_time_us=row["update_time"],
    )
