"""Conformance: template versions, and schedules firing each tick once."""

from __future__ import annotations

import asyncio

import pytest

from tests.store.support import SECOND, SHARED_BACKENDS, T0, Databases, Reopen, new_job
from zbrain.errors import AlreadyExistsError, NotFoundError, ResourceExhaustedError
from zbrain.models import CatchUpPolicy, OverlapPolicy, ParameterType
from zbrain_server.core import schedules
from zbrain_server.core.model import JobQuery, JobState
from zbrain_server.core.schedules import Firing, Schedule, TemplateRef
from zbrain_server.core.templates import Parameter, Template
from zbrain_server.store import JobStore


def template(name: str = "report", spec: bytes = b"\x0a\x04echo") -> Template:
    return Template(
        org_id="acme",
        name=name,
        version=0,
        job_spec=spec,
        parameters=(Parameter("day", ParameterType.STRING, required=True),),
        description="nightly report",
        create_time_us=T0,
    )


def schedule(schedule_id: str = "nightly", **overrides: object) -> Schedule:
    fields: dict[str, object] = dict(
        org_id="acme",
        id=schedule_id,
        cron="",
        time_zone="",
        interval_us=2 * SECOND,
        job_spec=b"\x0a\x04echo",
        template=None,
        overlap=OverlapPolicy.ALLOW,
        catch_up=CatchUpPolicy.SKIP,
        paused=False,
        next_fire_time_us=T0 + 2 * SECOND,
        last_fire_time_us=None,
        last_job_id="",
        create_time_us=T0,
        update_time_us=T0,
    )
    fields.update(overrides)
    return Schedule(**fields)  # type: ignore[arg-type]


async def test_template_versions_count_up_and_never_change(store: JobStore, reopen: Reopen) -> None:
    first = await store.templates.create(template(spec=b"one"))
    second = await store.templates.create(template(spec=b"two"))

    reopened = await reopen(store)

    assert (first.version, second.version) == (1, 2)
    assert (await reopened.templates.get("acme", "report")).job_spec == b"two"
    old = await reopened.templates.get("acme", "report", 1)
    assert old.job_spec == b"one"
    assert old.parameters == (Parameter("day", ParameterType.STRING, required=True),)


async def test_templates_list_their_latest_versions_by_name_in_pages(store: JobStore) -> None:
    for name in ("b", "a", "c", "a"):
        await store.templates.create(template(name))

    page = await store.templates.list("acme", "", 2)
    rest = await store.templates.list("acme", page[-1].name, 2)

    assert [(t.name, t.version) for t in page + rest] == [("a", 2), ("b", 1), ("c", 1)]


async def test_a_deleted_template_is_gone_with_every_version(store: JobStore) -> None:
    await store.templates.create(template())
    await store.templates.create(template())

    assert await store.templates.delete("acme", "report") == 2
    with pytest.raises(NotFoundError):
        await store.templates.get("acme", "report")
    with pytest.raises(NotFoundError):
        await store.templates.delete("acme", "report")


async def test_schedules_are_stored_listed_updated_and_deleted(
    store: JobStore, reopen: Reopen
) -> None:
    await store.schedules.create(schedule("b"))
    await store.schedules.create(
        schedule("a", template=TemplateRef("report", 2, {"day": '"mon"'}), job_spec=b"")
    )
    with pytest.raises(AlreadyExistsError):
        await store.schedules.create(schedule("a"))

    reopened = await reopen(store)
    listed = await reopened.schedules.list("acme", "", 10)
    assert [s.id for s in listed] == ["a", "b"]
    assert listed[0].template == TemplateRef("report", 2, {"day": '"mon"'})

    paused = await reopened.schedules.change(
        "acme", "b", lambda stored: schedules.paused(stored, T0 + 1)
    )
    assert (paused.paused, paused.next_fire_time_us, paused.update_time_us) == (True, None, T0 + 1)
    assert (await reopened.schedules.get("acme", "b")) == paused
    await reopened.schedules.delete("acme", "b")
    with pytest.raises(NotFoundError):
        await reopened.schedules.get("acme", "b")


async def test_pausing_twice_or_resuming_a_running_schedule_changes_nothing(
    store: JobStore,
) -> None:
    due = await store.schedules.create(schedule(next_fire_time_us=T0))  # due, not yet fired

    resumed = await store.schedules.change(
        "acme", "nightly", lambda s: schedules.resumed(s, T0 + 5 * SECOND)
    )
    paused = await store.schedules.change(
        "acme", "nightly", lambda s: schedules.paused(s, T0 + 6 * SECOND)
    )
    again = await store.schedules.change(
        "acme", "nightly", lambda s: schedules.paused(s, T0 + 7 * SECOND)
    )

    assert resumed == due  # the due tick is still to fire: nothing skipped
    assert again == paused == await store.schedules.get("acme", "nightly")
    assert (paused.next_fire_time_us, paused.update_time_us) == (None, T0 + 6 * SECOND)


async def test_a_change_keeps_the_tick_fired_since_the_caller_read_the_schedule(
    store: JobStore,
) -> None:
    read = await store.schedules.create(schedule(overlap=OverlapPolicy.CANCEL_PREVIOUS))
    tick = T0 + 2 * SECOND
    firing = Firing(tick, True, False, "", T0 + 4 * SECOND)
    job = new_job(request_id=schedules.tick_request_id("nightly", tick))
    fired = await store.schedules.fire("acme", "nightly", firing, job, tick, expected_tick_us=tick)
    assert fired is not None

    updated = await store.schedules.change(
        "acme", "nightly", lambda stored: schedules.updated(stored, read)
    )

    assert (updated.last_fire_time_us, updated.last_job_id) == (tick, fired.id)


async def test_the_schedules_of_an_org_are_limited(store: JobStore) -> None:
    await store.schedules.create(schedule("a"), max_per_org=1)

    with pytest.raises(ResourceExhaustedError):
        await store.schedules.create(schedule("b"), max_per_org=1)


async def test_a_due_schedule_fires_its_tick_once_and_moves_on(store: JobStore) -> None:
    await store.schedules.create(schedule())
    tick = T0 + 2 * SECOND
    assert await store.schedules.due(tick - 1, 10) == []
    assert await store.schedules.due(tick, 10) == [("acme", "nightly", tick)]
    firing = Firing(tick, True, False, "", T0 + 4 * SECOND)
    job = new_job(request_id=schedules.tick_request_id("nightly", tick))

    fired = await store.schedules.fire("acme", "nightly", firing, job, tick, expected_tick_us=tick)
    again = await store.schedules.fire("acme", "nightly", firing, job, tick, expected_tick_us=tick)

    assert fired is not None and again is None
    stored = await store.schedules.get("acme", "nightly")
    assert (stored.next_fire_time_us, stored.last_fire_time_us, stored.last_job_id) == (
        T0 + 4 * SECOND,
        tick,
        fired.id,
    )
    assert await store.schedules.next_fire_time() == T0 + 4 * SECOND
    assert len(await store.list_jobs(JobQuery(org_id="acme"))) == 1


async def test_a_skipped_tick_moves_on_without_a_job(store: JobStore) -> None:
    await store.schedules.create(schedule())
    tick = T0 + 2 * SECOND
    firing = Firing(tick, False, False, "the last job still runs", T0 + 4 * SECOND)

    assert (
        await store.schedules.fire("acme", "nightly", firing, None, tick, expected_tick_us=tick)
        is None
    )

    stored = await store.schedules.get("acme", "nightly")
    assert (stored.next_fire_time_us, stored.last_job_id) == (T0 + 4 * SECOND, "")
    assert await store.list_jobs(JobQuery(org_id="acme")) == []


async def test_cancel_previous_cancels_the_last_ticks_job_with_the_new_one(
    store: JobStore,
) -> None:
    await store.schedules.create(schedule())
    first_tick, second_tick = T0 + 2 * SECOND, T0 + 4 * SECOND
    first = await store.schedules.fire(
        "acme",
        "nightly",
        Firing(first_tick, True, False, "", second_tick),
        new_job(),
        first_tick,
        expected_tick_us=first_tick,
    )
    assert first is not None

    second = await store.schedules.fire(
        "acme",
        "nightly",
        Firing(second_tick, True, True, "", T0 + 6 * SECOND),
        new_job(),
        second_tick,
        expected_tick_us=second_tick,
    )

    assert second is not None
    assert (await store.get_job(first.id)).state is JobState.CANCELED
    assert (await store.schedules.get("acme", "nightly")).last_job_id == second.id


@pytest.mark.parametrize("databases", SHARED_BACKENDS, indirect=True)
async def test_replicas_firing_one_tick_at_once_make_one_job(databases: Databases) -> None:
    stores = [await databases.open() for _ in range(3)]
    await stores[0].schedules.create(schedule())
    tick = T0 + 2 * SECOND
    firing = Firing(tick, True, False, "", T0 + 4 * SECOND)

    fired = await asyncio.gather(
        *(
            replica.schedules.fire(
                "acme",
                "nightly",
                firing,
                new_job(request_id=schedules.tick_request_id("nightly", tick)),
                tick,
                expected_tick_us=tick,
            )
            for replica in stores
        )
    )

    assert len([job for job in fired if job is not None]) == 1
    assert len(await stores[0].list_jobs(JobQuery(org_id="acme"))) == 1
