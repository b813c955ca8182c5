"""Schedules: when they tick, and what a tick does.

A schedule ticks on a 5-field cron expression in an IANA time zone (parsed
and stepped by `cronsim`, whose daylight-saving rules apply: a time skipped
by a spring-forward change fires at the first minute after the gap; a time
repeated by a fall-back change fires once, at its first occurrence), or every
fixed interval counted from the Unix epoch (every hour ticks on the hour,
every 2 s on even seconds). Times are microseconds since the epoch.

Firing is decided here (`plan_fire`) and carried out by the store in one
transaction that also moves the schedule on to its next tick, under a
compare-and-set on the tick it fired: however many servers share the store,
a tick fires once. A tick the scheduler reaches more than `grace` late was
missed (no server ran, say) and follows the schedule's catch-up policy;
every other tick follows its overlap policy.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from cronsim import CronSim, CronSimError

from zbrain.models import CatchUpPolicy, OverlapPolicy

from .model import ORG_ID_PATTERN

SCHEDULE_ID_PATTERN = ORG_ID_PATTERN
SCHEDULE_ID_RULE = (
    "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
)
MIN_INTERVAL_US = 1_000_000
MAX_INTERVAL_US = 366 * 86_400_000_000
"""Intervals run from one second to a year (366 days, as far as a delayed job waits)."""
MAX_CRON_CHARS = 256
MISSED_COUNTED = 1000
"""Missed cron ticks are counted one by one up to this many (for the record
of what was skipped); past it the count says "at least". Counting is stepping
cronsim on the event loop (about 20 us a tick on a busy machine): a
minute-by-minute schedule missed for months would otherwise hold the server
for seconds, for each such schedule."""
SCHEDULE_LABEL = "zbrain.schedule"
TICK_LABEL = "zbrain.tick"


@dataclass(slots=True, frozen=True)
class TemplateRef:
    """A template a schedule submits, with the parameters to submit it with."""

    name: str
    version: int = 0  # 0: the latest at each tick
    parameters: Mapping[str, str] = field(default_factory=dict)  # JSON texts


@dataclass(slots=True)
class Schedule:
    """A stored schedule. `next_fire_time_us` is None while paused."""

    org_id: str
    id: str
    cron: str
    time_zone: str
    interval_us: int  # 0 with a cron expression
    job_spec: bytes  # a serialized zbrain.v1.JobSpec; empty with a template
    template: TemplateRef | None
    overlap: OverlapPolicy
    catch_up: CatchUpPolicy
    paused: bool
    next_fire_time_us: int | None
    last_fire_time_us: int | None
    last_job_id: str
    create_time_us: int
    update_time_us: int


class TimingError(ValueError):
    """A cron expression, time zone or interval that cannot make ticks;
    `field` names which (cron, time_zone or interval)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_timing(cron: str, time_zone: str, interval_us: int) -> None:
    """TimingError saying what is wrong, unless exactly one of a valid
    5-field cron expression (with a known time zone) and an interval of at
    least one second is given."""
    if bool(cron) == bool(interval_us):
        raise TimingError(
            "cron", "give either a cron expression or an interval, not both or neither"
        )
    if interval_us:
        if interval_us < MIN_INTERVAL_US:
            raise TimingError("interval", "the interval must be at least one second")
        if interval_us > MAX_INTERVAL_US:
            raise TimingError("interval", "the interval must be at most 366 days")
        if time_zone:
            raise TimingError("time_zone", "a time zone applies to cron expressions only")
        return
    if len(cron) > MAX_CRON_CHARS:
        raise TimingError("cron", f"a cron expression is at most {MAX_CRON_CHARS} characters")
    if len(cron.split()) != 5:
        raise TimingError(
            "cron", f"{cron!r} is not a 5-field cron expression (minute hour day month weekday)"
        )
    zone = _zone(time_zone)
    try:
        CronSim(cron, datetime.now(zone))
    except CronSimError as exc:
        raise TimingError("cron", f"{cron!r} is not a valid cron expression: {exc}") from None


def _zone(name: str) -> ZoneInfo:
    """The zone of an IANA name; TimingError for anything else. Only names
    of the time zone database's list are opened: ZoneInfo itself would try
    to read any relative path as a zone file ("America" is a folder, so an
    OSError; "zone.tab" is no zone)."""
    if not name:
        return ZoneInfo("UTC")
    if name not in _known_zones():
        raise TimingError(
            "time_zone", f"{name[:80]!r} is not a known time zone (such as Europe/Paris)"
        )
    return ZoneInfo(name)


MACHINE_ZONES = frozenset({"localtime", "posixrules"})
"""Names in some zone lists that stand for a machine's own settings: replicas
on two machines would tick a schedule in two zones."""


@functools.cache
def _known_zones() -> frozenset[str]:
    """The IANA time zone names this machine knows (read once: it scans the
    zone files), but for those that mean the machine's own zone."""
    return frozenset(available_timezones()) - MACHINE_ZONES


def describe(schedule: Schedule) -> str:
    """The timing in words, for people."""
    if schedule.interval_us:
        return f"every {timedelta(microseconds=schedule.interval_us)}"
    text = CronSim(schedule.cron, datetime.now(_zone(schedule.time_zone))).explain()
    return f"{text} ({schedule.time_zone or 'UTC'})"


def next_tick(schedule: Schedule, after_us: int) -> int:
    """The first tick strictly after a time."""
    if schedule.interval_us:
        return (after_us // schedule.interval_us + 1) * schedule.interval_us
    return _us(next(CronSim(schedule.cron, _datetime(after_us, schedule.time_zone))))


def last_tick(schedule: Schedule, at_or_before_us: int) -> int:
    """The last tick at or before a time."""
    if schedule.interval_us:
        return at_or_before_us // schedule.interval_us * schedule.interval_us
    after = _datetime(at_or_before_us + 1, schedule.time_zone)
    return _us(next(CronSim(schedule.cron, after, reverse=True)))


def paused(schedule: Schedule, now_us: int) -> Schedule | None:
    """The schedule paused (no next tick); None when it is paused already:
    pausing twice changes nothing."""
    if schedule.paused:
        return None
    return replace(schedule, paused=True, next_fire_time_us=None, update_time_us=now_us)


def resumed(schedule: Schedule, now_us: int) -> Schedule | None:
    """The schedule ticking again from the first tick after now, without
    catching up; None when it is not paused: resuming a running schedule
    changes nothing (its next tick, even a due one, stays)."""
    if not schedule.paused:
        return None
    return replace(
        schedule, paused=False, next_fire_time_us=next_tick(schedule, now_us), update_time_us=now_us
    )


def updated(stored: Schedule, new: Schedule) -> Schedule:
    """A stored schedule replaced by `new` (timing, job, policies, paused),
    keeping what belongs to its history: when it was made, its last tick and
    that tick's job (which CANCEL_PREVIOUS cancels)."""
    return replace(
        new,
        create_time_us=stored.create_time_us,
        last_fire_time_us=stored.last_fire_time_us,
        last_job_id=stored.last_job_id,
    )


def upcoming(schedule: Schedule, count: int) -> list[int]:
    """The next `count` ticks from the schedule's next fire time (none while paused)."""
    first = schedule.next_fire_time_us
    if first is None:
        return []
    ticks = [first]
    while len(ticks) < count:
        ticks.append(next_tick(schedule, ticks[-1]))
    return ticks


def _count_ticks(schedule: Schedule, first_us: int, last_us: int) -> int:
    """How many ticks fall in [first, last] (first being one), up to MISSED_COUNTED."""
    if schedule.interval_us:
        return (last_us - first_us) // schedule.interval_us + 1
    ticks = CronSim(schedule.cron, _datetime(first_us, schedule.time_zone))
    later = itertools.takewhile(
        lambda t: _us(t) <= last_us, itertools.islice(ticks, MISSED_COUNTED - 1)
    )
    return 1 + sum(1 for _ in later)


def _datetime(time_us: int, zone: str) -> datetime:
    seconds, micros = divmod(time_us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    return moment.astimezone(_zone(zone))


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


@dataclass(slots=True, frozen=True)
class Firing:
    """What one turn of a due schedule does: submit a job for `tick_us` (and
    first cancel the last tick's job), or record why it submits nothing; then
    wait for `next_fire_time_us`."""

    tick_us: int
    submit: bool
    cancel_previous: bool
    skipped_reason: str
    next_fire_time_us: int
    missed_ticks: int = 0  # missed before this one (skipped, or folded into it)


def plan_fire(schedule: Schedule, now_us: int, previous_running: bool, grace_us: int) -> Firing:
    """The firing of a schedule whose next tick has come (see the module's
    docstring for missed ticks and the policies)."""
    tick = schedule.next_fire_time_us
    assert tick is not None and tick <= now_us, "only a due schedule fires"
    if now_us - tick > grace_us:
        latest = last_tick(schedule, now_us - grace_us)
        missed = _count_ticks(schedule, tick, latest)
        more = "at least " if not schedule.interval_us and missed >= MISSED_COUNTED else ""
        plural = "s" if missed > 1 else ""
        if schedule.catch_up is not CatchUpPolicy.RUN_ONCE:
            return Firing(
                latest,
                submit=False,
                cancel_previous=False,
                skipped_reason=f"{more}{missed} tick{plural} missed while no server ran "
                "(catch-up policy SKIP)",
                next_fire_time_us=next_tick(schedule, latest),
                missed_ticks=missed,
            )
        tick = latest  # RUN_ONCE: one job, for the latest missed tick
    else:
        missed = 0
    following = next_tick(schedule, tick)
    if previous_running and schedule.overlap is OverlapPolicy.SKIP:
        return Firing(
            tick,
            submit=False,
            cancel_previous=False,
            skipped_reason=f"job {schedule.last_job_id} of the last tick still runs "
            "(overlap policy SKIP)",
            next_fire_time_us=following,
            missed_ticks=missed,
        )
    cancel = previous_running and schedule.overlap is OverlapPolicy.CANCEL_PREVIOUS
    return Firing(tick, True, cancel, "", following, missed)


def tick_request_id(schedule_id: str, tick_us: int) -> str:
    """The idempotency key of a tick's job: a second submission for the same
    tick, by any server, finds the first job instead."""
    return f"schedule:{schedule_id}:{tick_us}"


def tick_labels(schedule_id: str, tick_us: int) -> dict[str, str]:
    """The labels every job a schedule submits carries."""
    moment = _datetime(tick_us, "UTC")
    return {SCHEDULE_LABEL: schedule_id, TICK_LABEL: moment.isoformat().replace("+00:00", "Z")}
