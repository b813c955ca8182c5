"""The sharing commands (docs/limits.md): `zbrain org get|set|pause|resume ORG`
for an organisation's limits, quotas (with what its jobs store against
them) and pauses, and `zbrain workers` for the workers connected to every
replica."""

from __future__ import annotations

import argparse

from ..models import OrgSettings, WorkerInfo
from ._common import UsageError, connect
from ._output import Output, key_values

SETTINGS_FLAGS = {
    "max_running": "max_running_jobs",
    "max_starts_per_second": "max_starts_per_second",
    "max_waiting": "max_waiting_jobs",
    "max_log_bytes": "max_log_bytes",
    "max_artifact_bytes": "max_artifact_bytes",
    "retention_days": "retention_days",
}
"""The flags of `zbrain org set`, by the OrgSettings field each one sets."""


def _limit(value: float, unit: str = "", *, default: str = "") -> str:
    """A limit as set: whole numbers in full (`:g` would print a byte limit
    of 10000000 as 1e+07), a rate as short as it goes."""
    if value:
        return f"{value}{unit}" if isinstance(value, int) else f"{value:g}{unit}"
    return f"none of its own ({default})" if default else "none"


def _usage(used: int, quota: int) -> str:
    """Storage used against the org's quota on it, e.g. "1200 of 4096 (29%)"."""
    if not quota:
        return f"{used} stored, no quota"
    return f"{used} of {quota} ({100 * used // quota}%)"


def _settings(out: Output, settings: OrgSettings) -> None:
    """An org's settings as `zbrain org get` shows them; 0 reads as none of its own."""
    selectors = [key_values(selector).replace(" ", ",") for selector in settings.paused_selectors]
    server = "the server's"
    out.details(
        [
            ("org", settings.org_id),
            ("paused", "yes" if settings.paused else "no"),
            ("paused selectors", " ".join(selectors) or "none"),
            ("max running", _limit(settings.max_running_jobs)),
            ("max starts/s", _limit(settings.max_starts_per_second)),
            ("max waiting", _limit(settings.max_waiting_jobs, default=server)),
            ("log bytes", _usage(settings.log_bytes_used, settings.max_log_bytes)),
            ("artifact bytes", _usage(settings.artifact_bytes_used, settings.max_artifact_bytes)),
            ("retention", _limit(settings.retention_days, " days", default=server)),
            ("updated", out.both(settings.update_time) if settings.update_time else "never"),
        ]
    )


async def cmd_org(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    changes = {
        field: getattr(args, flag)
        for flag, field in SETTINGS_FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    if args.action == "set" and not changes:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in SETTINGS_FLAGS)
        raise UsageError(f"nothing to set: give one of {flags}")
    async with await connect(args) as client:
        if args.action == "get":
            settings = await client.orgs.get(args.org)
        elif args.action == "set":
            settings = await client.orgs.update(args.org, **changes)
        elif args.action == "pause":
            settings = await client.orgs.pause(args.org, dict(args.selector) or None)
        else:
            settings = await client.orgs.resume(args.org, dict(args.selector) or None)
    out.json_line(settings.to_dict()) if out.json else _settings(out, settings)
    return 0


WORKER_COLUMNS = [
    "ID",
    "ADDRESS",
    "ORGS",
    "LABELS",
    "SLOTS",
    "LEASES",
    "CONNECTED",
    "LAST HEARD",
    "REPLICA",
]


def _workers(out: Output, workers: list[WorkerInfo]) -> None:
    out.table(
        WORKER_COLUMNS,
        [
            [
                worker.id + (" (draining)" if worker.draining else ""),
                worker.address,
                ",".join(worker.org_ids),
                key_values(worker.labels).replace(" ", ",") or "-",
                f"{worker.slots_used}/{worker.slots}",
                " ".join(job_id[-8:] for job_id in worker.lease_job_ids) or "-",
                out.when(worker.connect_time),
                out.when(worker.last_heard_time),
                worker.replica_id or "-",
            ]
            for worker in workers
        ],
    )


async def cmd_workers(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        workers = await client.workers(org=args.org)
    if out.json:
        for worker in workers:
            out.json_line(worker.to_dict())
    else:
        _workers(out, workers)
    return 0
