"""`OrgStore`: each organisation's settings, and the part of the lease
program that applies them (`runnable_of_org`), checked in the lease
transaction itself so that a limit holds exactly, across replicas.

An org with a limit on running jobs or starts is leased under a lock of its
own (`try_lock_limit`: PostgreSQL's transaction advisory lock, nothing on
SQLite, whose writer holds the whole database): the count read under it
cannot change before the transaction commits. A concurrency key is locked
and counted the same way. The lock is only tried, never waited for: a
replica finding it held skips that org or key this pass and asks the
dispatcher to try again soon (`JobStore.take_limit_wakeup`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from zbrain.errors import ResourceExhaustedError

from ..core.limits import (
    MAX_PAUSED_SELECTORS,
    Bucket,
    OrgSettings,
    OrgUsage,
    full_bucket,
    key_limit,
    with_selector,
)
from ..core.model import Job
from .driver import Driver
from .engine import Tx, WriteEngine
from .ops import Execute, Fetch, FetchOne, Params, Program, Row
from .rows import job_from_row

KEY_PASSES = 4
"""How many times one org's turn reads runnable jobs again past the jobs of
concurrency keys at their limit, before leaving the rest to the next pass."""

MAX_LISTED_KEYS = 64
"""How many of an org's concurrency keys with runnable jobs a lease lists to
rotate among (by name); keys past it wait until the listed ones run dry."""

MAX_ROTATED_KEYS = 8
"""How many of those groups one lease reads jobs of, from the one whose turn
it is; the next lease goes on from the last served."""

CONTENDED_RETRY_US = 20_000
"""How soon the dispatcher tries again an org or key another replica was
leasing (its lock was held)."""


@dataclass(eq=False)
class OrgTurn:
    """What one org's turn in a lease transaction found: the jobs it may lease
    (in leasing order), and its token bucket to charge for those leased."""

    settings: OrgSettings
    jobs: list[Job] = field(default_factory=list)
    bucket: Bucket | None = None
    retry_at_us: int | None = None  # when leasing may find more (a rate, a lock)


def settings_from_row(row: Row) -> OrgSettings:
    return OrgSettings(
        org_id=row["org_id"],
        max_running_jobs=row["max_running_jobs"],
        max_starts_per_second=float(row["max_starts_per_second"]),
        max_waiting_jobs=row["max_waiting_jobs"],
        max_log_bytes=row["max_log_bytes"],
        max_artifact_bytes=row["max_artifact_bytes"],
        retention_days=row["retention_days"],
        paused=bool(row["paused"]),
        paused_selectors=tuple(json.loads(row["paused_selectors"])),
        update_time_us=row["update_time"],
    )


def settings_params(settings: OrgSettings) -> Params:
    return {
        "org_id": settings.org_id,
        "max_running_jobs": settings.max_running_jobs,
        "max_starts_per_second": settings.max_starts_per_second,
        "max_waiting_jobs": settings.max_waiting_jobs,
        "max_log_bytes": settings.max_log_bytes,
        "max_artifact_bytes": settings.max_artifact_bytes,
        "retention_days": settings.retention_days,
        "paused": int(settings.paused),
        "paused_selectors": _selectors_json(settings.paused_selectors),
        "update_time": settings.update_time_us,
    }


def _selectors_json(selectors: Sequence[Mapping[str, str]]) -> str:
    return json.dumps([dict(selector) for selector in selectors]) if selectors else "[]"


def runnable_of_org(
    settings: OrgSettings,
    worker_labels: Mapping[str, str],
    wanted: int,
    now_us: int,
    rotation: dict[str, int] | None = None,
    *,
    skips_locked_rows: bool = False,
) -> Program[OrgTurn]:
    """Lock and return up to `wanted` jobs of one org that a worker with these
    labels may lease now, within the org's limits and its keys' limits; when
    they include jobs of a concurrency key and other keys have jobs waiting,
    the slots rotate among the keys (`_rotate_keys`; `rotation`, org -> the
    next key's turn, is kept by the caller across leases). With
    `skips_locked_rows` (the driver's), a turn that found fewer than it may
    take asks to be tried again soon when rows it skipped as held are
    runnable all the same (`count_runnable`)."""
    turn = OrgTurn(settings)
    if settings.paused:
        return turn
    org_id = settings.org_id
    room = wanted
    if settings.limits_leasing:
        if not (yield from _try_lock(f"org:{org_id}")):
            turn.retry_at_us = now_us + CONTENDED_RETRY_US
            return turn
        if settings.max_running_jobs:
            row = yield FetchOne("count_running", {"org_id": org_id})
            room = min(room, settings.max_running_jobs - row["running"])
        rate = settings.max_starts_per_second
        if rate:
            row = yield FetchOne("select_bucket", {"org_id": org_id})
            stored = Bucket(row["tokens"], row["refill_time"]) if row else full_bucket(rate, now_us)
            turn.bucket = stored.refilled(rate, now_us)
            room = min(room, turn.bucket.starts())
            if turn.bucket.starts() < wanted:
                turn.retry_at_us = now_us + turn.bucket.until_next_us(rate)
    if room <= 0:
        return turn
    params: dict[str, object] = {
        "org_id": org_id,
        "now": now_us,
        "worker_labels": json.dumps(dict(worker_labels)) if worker_labels else "{}",
        "paused_selectors": _selectors_json(settings.paused_selectors),
    }
    skipped_keys: list[str] = []
    key_room: dict[str, int] = {}
    key_cap: dict[str, int] = {}  # each key's room before this lease took any
    chosen: dict[str, Job] = {}
    for _ in range(KEY_PASSES):
        # The jobs chosen already come first again (the rows read past the
        # skipped keys' jobs all come after them), then as many new ones.
        limit = room
        rows = yield Fetch(
            "lock_runnable", {**params, "limit": limit, "skipped_keys": list(skipped_keys)}
        )
        skipped = False
        for job in map(job_from_row, rows):
            if len(chosen) == room:
                break
            if job.id in chosen:
                continue
            key = job.concurrency_key
            if key:
                if key not in key_room:
                    key_room[key] = key_cap[key] = yield from _key_room(job, params)
                    if key_room[key] < 0:  # held elsewhere: its lock, or its first job
                        turn.retry_at_us = now_us + CONTENDED_RETRY_US
                if key_room[key] <= 0:
                    # The key's later jobs wait too, so it keeps its order.
                    if key not in skipped_keys:
                        skipped_keys.append(key)
                    skipped = True
                    continue
                key_room[key] -= 1
            chosen[job.id] = job
        if len(chosen) >= room or not skipped or len(rows) < limit:
            break
    # Only when the last read came back short: rows it never reached (keys
    # past KEY_PASSES) are not hidden, they wait for the keys' room.
    short = len(rows) < limit
    if skips_locked_rows and short and len(chosen) < room and turn.retry_at_us is None:
        row = yield FetchOne(
            "count_runnable", {**params, "limit": room, "skipped_keys": list(skipped_keys)}
        )
        seen = sum(job.concurrency_key not in skipped_keys for job in chosen.values())
        if row["runnable"] > seen:
            turn.retry_at_us = now_us + CONTENDED_RETRY_US
    turn.jobs = list(chosen.values())
    if rotation is not None and any(job.concurrency_key for job in turn.jobs):
        turn.jobs = yield from _rotate_keys(turn, room, params, key_cap, rotation, now_us)
    return turn


def _rotate_keys(
    turn: OrgTurn,
    room: int,
    params: Mapping[str, object],
    key_cap: dict[str, int],
    rotation: dict[str, int],
    now_us: int,
) -> Program[list[Job]]:
    """The org's jobs to lease, the slots going round-robin among its groups
    (each concurrency key with runnable jobs, and the jobs without a key),
    starting with the group whose turn it is: a key with a large backlog then
    cannot hold every slot while another key's one job waits. Each group
    keeps its own order (its first jobs, read in leasing order) and its
    limit; at most MAX_ROTATED_KEYS groups are read per lease, and the turn
    moves on past the last group served."""
    org_id = turn.settings.org_id
    listed = yield Fetch("runnable_keys", {"org_id": org_id, "limit": MAX_LISTED_KEYS})
    unkeyed = [job for job in turn.jobs if not job.concurrency_key]
    groups = ([""] if unkeyed else []) + [row["key"] for row in listed]
    if len(groups) < 2:
        return turn.jobs
    start = rotation.get(org_id, 0) % len(groups)
    order = (groups[start:] + groups[:start])[:MAX_ROTATED_KEYS]
    pools: dict[str, list[Job]] = {"": unkeyed}
    for group in order:
        if group:
            pools[group] = yield from _key_jobs(group, room, params, key_cap, turn, now_us)
    picked: list[Job] = []
    served = 0
    for depth in range(room):  # one job of each group per round
        for position, group in enumerate(order):
            if len(picked) == room:
                break
            if depth < len(pools[group]):
                picked.append(pools[group][depth])
                served = max(served, position + 1)
    rotation[org_id] = start + served
    return picked


def _key_jobs(
    key: str,
    limit: int,
    params: Mapping[str, object],
    key_cap: dict[str, int],
    turn: OrgTurn,
    now_us: int,
) -> Program[list[Job]]:
    """The first jobs of one key the lease may take (its limit, its order)."""
    rows = yield Fetch("lock_runnable_of_key", {**params, "concurrency_key": key, "limit": limit})
    jobs = [job_from_row(row) for row in rows]
    if not jobs:
        return jobs
    if key not in key_cap:
        key_cap[key] = yield from _key_room(jobs[0], params)
        if key_cap[key] < 0:
            turn.retry_at_us = now_us + CONTENDED_RETRY_US
    return jobs[: max(key_cap[key], 0)]


def _try_lock(name: str) -> Program[bool]:
    row = yield FetchOne("try_lock_limit", {"name": name})
    return bool(row["locked"])


def _key_room(job: Job, params: Mapping[str, object]) -> Program[int]:
    """How many more jobs of `job`'s key may start now, `job` first; -1 when
    another replica holds the key's lock, or the key's first job (a job read
    past, locked, ahead of `job`: leasing `job` would break the key's order)."""
    org_id, key = job.org_id, job.concurrency_key
    if not (yield from _try_lock(f"key:{org_id}:{key}")):
        return -1
    head = yield FetchOne("key_head", {**params, "concurrency_key": key})
    if head is not None and head["id"] != job.id:
        return -1
    row = yield FetchOne("count_running_key", {"org_id": org_id, "concurrency_key": key})
    return key_limit(job.concurrency_limit) - int(row["running"])


def charge(turn: OrgTurn, leased: int) -> Program[None]:
    """Take the starts leased out of the org's bucket."""
    bucket = turn.bucket
    if bucket is None:
        return
    yield Execute(
        "save_bucket",
        {
            "org_id": turn.settings.org_id,
            "tokens": bucket.tokens - leased,
            "refill_time": bucket.refill_time_us,
        },
    )


class OrgStore:
    """Org settings in the job store's database and transactions.

    It remembers which orgs have settings stored at all (`all_set`, read at
    open and on every dispatcher tick, and every change made here), so that
    the writes on the hot path (submit, lease) of an org that never had any
    skip reading them. An org's first settings made on another replica
    therefore apply here from the next read of `all_set` (a tick, a second),
    and every later change from its commit on.
    """

    def __init__(self, driver: Driver, engine: WriteEngine) -> None:
        self._driver = driver
        self._engine = engine
        self._known: frozenset[str] = frozenset()
        # Whose turn it is among each org's concurrency keys (`_rotate_keys`),
        # this replica's own: one int per org that leased keyed jobs.
        self.key_turns: dict[str, int] = {}

    def has_settings(self, org_id: str) -> bool:
        """Whether the org has settings stored (as last read: see the class)."""
        return org_id in self._known

    def settings_of(self, org_ids: Sequence[str]) -> Program[dict[str, OrgSettings]]:
        """The settings of these orgs, in a write; defaults for those never set."""
        found: dict[str, OrgSettings] = {}
        stored = [org_id for org_id in org_ids if org_id in self._known]
        if stored:
            rows = yield Fetch("org_settings_of", {"org_ids": stored})
            found = {row["org_id"]: settings_from_row(row) for row in rows}
        return {org_id: found.get(org_id) or OrgSettings(org_id) for org_id in org_ids}

    async def get(self, org_id: str) -> OrgSettings:
        """An org's settings; defaults (update_time_us None) when never set."""
        rows = await self._driver.fetch("org_settings_of", {"org_ids": [org_id]})
        return settings_from_row(rows[0]) if rows else OrgSettings(org_id)

    async def usage(self, org_id: str) -> OrgUsage:
        """The storage the org's stored jobs hold, as last committed."""
        row = await self._driver.fetch_one("select_org_usage", {"org_id": org_id})
        return OrgUsage(int(row["log_bytes"]), int(row["artifact_bytes"])) if row else OrgUsage()

    async def running(self, org_id: str, concurrency_key: str) -> tuple[int, int]:
        """How many jobs of an org run now, and of those, how many with a key."""
        row = await self._driver.fetch_one("count_running", {"org_id": org_id})
        params = {"org_id": org_id, "concurrency_key": concurrency_key}
        keyed = (
            await self._driver.fetch_one("count_running_key", params) if concurrency_key else None
        )
        return int(row["running"]) if row else 0, int(keyed["running"]) if keyed else 0

    async def starts_left(self, settings: OrgSettings, now_us: int) -> int | None:
        """How many starts an org's rate allows now; None without a rate."""
        rate = settings.max_starts_per_second
        if not rate:
            return None
        row = await self._driver.fetch_one("select_bucket", {"org_id": settings.org_id})
        stored = Bucket(row["tokens"], row["refill_time"]) if row else full_bucket(rate, now_us)
        return stored.refilled(rate, now_us).starts()

    async def all_set(self) -> list[OrgSettings]:
        """The settings of every org whose settings were ever changed."""
        stored = [
            settings_from_row(row) for row in await self._driver.fetch("all_org_settings", {})
        ]
        self._known = frozenset(settings.org_id for settings in stored)
        return stored

    async def update(self, org_id: str, now_us: int, limits: Mapping[str, Any]) -> OrgSettings:
        """Set some limits (by OrgSettings field name), keeping the others."""
        return await self._change(org_id, now_us, lambda current: replace(current, **limits))

    async def pause(
        self, org_id: str, now_us: int, selector: Mapping[str, str] | None, *, paused: bool
    ) -> OrgSettings:
        """Pause (or resume) the org, or one label selector within it; a new
        selector past MAX_PAUSED_SELECTORS is refused, counted in the
        transaction that adds it."""

        def change(settings: OrgSettings) -> OrgSettings:
            if not selector:
                return replace(settings, paused=paused)
            selectors = with_selector(settings.paused_selectors, selector, present=paused)
            if len(selectors) > max(MAX_PAUSED_SELECTORS, len(settings.paused_selectors)):
                raise ResourceExhaustedError(
                    f"organisation {org_id!r} has {len(settings.paused_selectors)} label "
                    f"selectors paused; the limit is {MAX_PAUSED_SELECTORS}: resume some first"
                )
            return replace(settings, paused_selectors=selectors)

        return await self._change(org_id, now_us, change)

    async def _change(
        self, org_id: str, now_us: int, change: Callable[[OrgSettings], OrgSettings]
    ) -> OrgSettings:
        def program(tx: Tx) -> Program[OrgSettings]:
            row = yield FetchOne("lock_org_settings", {"org_id": org_id})
            current = settings_from_row(row) if row else OrgSettings(org_id)
            updated = replace(change(current), update_time_us=now_us)
            yield Execute("save_org_settings", settings_params(updated))
            return updated

        settings = await self._engine.write(program)
        self._known |= {org_id}
        return settings
