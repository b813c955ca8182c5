"""`zbrain org get|set|pause|resume` and `zbrain workers`: sharing a server
between teams from the command line (docs/limits.md)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from .cli import UsageError, connect_from_args, print_table
from .models import OrgSettings, WorkerInfo

# The flags of `zbrain org set`, by the OrgSettings field each one sets.
SETTINGS_FLAGS = {
    "max_running": "max_running_jobs",
    "max_starts_per_second": "max_starts_per_second",
    "max_waiting": "max_waiting_jobs",
    "max_log_bytes": "max_log_bytes",
    "max_artifact_bytes": "max_artifact_bytes",
    "retention_days": "retention_days",
}


def _limit(value: float, unit: str = "", *, default: str = "") -> str:
    """A limit as set: whole numbers in full (`:g` would print a byte limit
    of 10000000 as 1e+07), a rate as short as it goes."""
    if value:
        return f"{value}{unit}" if isinstance(value, int) else f"{value:g}{unit}"
    return f"none of its own ({default})" if default else "none"


def print_settings(settings: OrgSettings) -> None:
    """An org's settings as `zbrain org get` shows them."""
    selectors = [
        ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        for selector in settings.paused_selectors
    ]
    updated = settings.update_time
    rows = [
        ("org", settings.org_id),
        ("paused", "yes" if settings.paused else "no"),
        ("paused selectors", " ".join(selectors) or "none"),
        ("max running", _limit(settings.max_running_jobs)),
        ("max starts/s", _limit(settings.max_starts_per_second)),
        ("max waiting", _limit(settings.max_waiting_jobs, default="the server's")),
        ("max log bytes", _limit(settings.max_log_bytes, " per job", default="the server's")),
        (
            "max artifact bytes",
            _limit(settings.max_artifact_bytes, " per job", default="the server's"),
        ),
        ("retention", _limit(settings.retention_days, " days", default="the server's")),
        ("updated", updated.isoformat(timespec="seconds") if updated else "never"),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


async def run_org_command(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        if args.action == "get":
            settings = await client.orgs.get(args.org)
        elif args.action == "set":
            limits = {
                field: getattr(args, flag)
                for flag, field in SETTINGS_FLAGS.items()
                if getattr(args, flag) is not None
            }
            if not limits:
                flags = ", ".join("--" + flag.replace("_", "-") for flag in SETTINGS_FLAGS)
                raise UsageError(f"nothing to set: give one of {flags}")
            settings = await client.orgs.update(args.org, **limits)
        elif args.action == "pause":
            settings = await client.orgs.pause(args.org, dict(args.selector) or None)
        else:
            settings = await client.orgs.resume(args.org, dict(args.selector) or None)
    if args.json:
        print(json.dumps(settings.to_dict(), indent=2))
    else:
        print_settings(settings)
    return 0


def _ago(time: datetime | None) -> str:
    return time.isoformat(timespec="seconds") if time else "-"


def print_workers(workers: list[WorkerInfo]) -> None:
    print_table(
        ["ID", "ADDRESS", "ORGS", "LABELS", "SLOTS", "LEASES", "CONNECTED", "LAST HEARD"],
        [
            [
                worker.id + (" (draining)" if worker.draining else ""),
                worker.address,
                ",".join(worker.org_ids),
                ",".join(f"{k}={v}" for k, v in sorted(worker.labels.items())) or "-",
                f"{worker.slots_used}/{worker.slots}",
                " ".join(worker.lease_job_ids) or "-",
                _ago(worker.connect_time),
                _ago(worker.last_heard_time),
            ]
            for worker in workers
        ],
    )


async def run_workers_command(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        workers = await client.workers(org=args.org)
    if args.json:
        for worker in workers:
            print(json.dumps(worker.to_dict()))
    else:
        print_workers(workers)
    return 0
