"""The workflow commands (docs/workflows.md): run-graph, graph, and the
schedule and template families."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..models import (
    CatchUpPolicy,
    Job,
    JobState,
    OverlapPolicy,
    Schedule,
    Template,
)
from ._common import (
    EXIT_FAILED,
    UsageError,
    command_after_dashes,
    connect,
    job_id,
    read_json,
    spinner,
)
from ._output import Output, duration, key_values, short_command, summarise

if TYPE_CHECKING:
    from ..v1 import job_pb2

WAIT_STREAMS = 16
"""Jobs `run-graph --wait` waits for at once."""

# -- graphs ---------------------------------------------------------------------------


async def cmd_run_graph(args: argparse.Namespace) -> int:
    """Submit a graph file in one SubmitBatch (all or nothing); print each job's
    name and id; with --wait, wait for all and exit 1 unless all succeeded."""
    from ..graphs import read_graph

    out = Output.from_args(args)
    graph = read_graph(Path(args.file))
    if args.org:
        for spec in graph.specs:
            spec.org_id = spec.org_id or args.org
    async with await connect(args) as client:
        ids = await client.submit_batch(graph.specs)
        by_name = dict(zip(graph.names, ids, strict=True))
        if not args.wait:
            if out.json:
                out.json_line({"jobs": by_name})
            else:
                out.table(["NAME", "ID"], [[name, ident] for name, ident in by_name.items()])
            return 0
        # A few waits at a time: each holds a stream, and the server caps a
        # client's streams (max_streams_per_client, 100 by default).
        streams = asyncio.Semaphore(WAIT_STREAMS)

        async def wait(ident: str) -> Job:
            async with streams:
                return await client.wait(ident)

        async with spinner(f"waiting for {len(ids)} jobs"):
            jobs = await asyncio.gather(*(wait(ident) for ident in ids))
    states = {name: job for name, job in zip(graph.names, jobs, strict=True)}
    if out.json:
        out.json_line({"jobs": by_name, "states": {n: j.state.name for n, j in states.items()}})
    else:
        out.table(
            ["NAME", "ID", "STATE", "ERROR"],
            [[n, j.id, j.state.name, j.last_error] for n, j in states.items()],
            {2: lambda cell: out.state(JobState[cell.strip()], cell)} if out.colour else None,
        )
    return 0 if all(j.state is JobState.SUCCEEDED for j in jobs) else EXIT_FAILED


async def cmd_graph(args: argparse.Namespace) -> int:
    """The jobs linked to one (its ancestors and descendants), parents first."""
    from ..graphs import graph_json, in_order, walk

    out = Output.from_args(args)
    async with await connect(args) as client:
        root = await job_id(client, args)
        jobs, partial = await walk(client, root)
    if out.json:
        out.json_line(graph_json(jobs, partial))
        return 0
    rows = [
        [
            ("*" if job.id == root else " ") + job.short_id,
            job.state.name,
            ", ".join(
                d.job_id[-8:] + ("" if d.condition.name == "SUCCEEDED" else " (finished)")
                for d in job.depends_on
            )
            or "-",
            out.when(job.create_time),
            short_command(job.cmd),
        ]
        for job in in_order(jobs)
    ]
    out.table(
        ["ID", "STATE", "AFTER", "CREATED", "COMMAND"],
        rows,
        {1: lambda cell: out.state(JobState[cell.strip()], cell)} if out.colour else None,
    )
    if partial:
        print(f"(the graph has more than {len(jobs)} jobs; only these are shown)")
    return 0


# -- the job of a template or a schedule ---------------------------------------------


def _spec_from_flags(args: argparse.Namespace, example: str) -> job_pb2.JobSpec:
    from ..client import job_spec

    return job_spec(
        command_after_dashes(list(args.cmd), example),
        input=read_json(args.input),
        env=dict(args.env),
        timeout=args.timeout,
        max_retries=args.retries,
        priority=args.priority,
        labels=dict(args.label),
    )


def _params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """--param K=V values as given: the server types them as declared."""
    return dict(pairs)


# -- templates ------------------------------------------------------------------------


def _print_template(out: Output, template: Template) -> None:
    rows = [
        ("name", template.name),
        ("org", template.org_id),
        ("version", str(template.version)),
        ("created", out.both(template.create_time)),
        ("cmd", json.dumps(list(template.job.cmd), ensure_ascii=False)),
    ]
    if template.description:
        rows.append(("description", template.description))
    if template.job.input is not None:
        rows.append(("input", summarise(template.job.input)))
    if template.job.env:
        rows.append(("env", key_values(template.job.env)))
    if template.job.labels:
        rows.append(("labels", key_values(template.job.labels)))
    for p in template.parameters:
        how = "required" if p.required else f"default {json.dumps(p.default)}"
        rows.append(("parameter", f"{p.name} ({p.type.name.lower()}, {how})"))
    out.details(rows)


async def cmd_template(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        templates = client.templates
        if args.action == "create":
            spec = _spec_from_flags(args, "zbrain template create NAME -- echo {{ who }}")
            template = await templates.create(
                args.name,
                spec,
                parameters=args.param,
                description=args.description,
                org=args.org,
            )
            if out.json:
                out.json_line(template.to_dict())
            else:
                print(f"template {template.name} version {template.version} created")
        elif args.action == "list":
            found = await templates.list(org=args.org)
            if out.json:
                for template in found:
                    out.json_line(template.to_dict())
            else:
                out.table(
                    ["NAME", "VERSION", "PARAMETERS", "CREATED", "COMMAND"],
                    [
                        [
                            t.name,
                            str(t.version),
                            ", ".join(p.name for p in t.parameters) or "-",
                            out.when(t.create_time),
                            short_command(t.job.cmd),
                        ]
                        for t in found
                    ],
                )
        elif args.action == "get":
            template = await templates.get(args.name, version=args.version, org=args.org)
            out.json_line(template.to_dict()) if out.json else _print_template(out, template)
        elif args.action == "delete":
            count = await templates.delete(args.name, org=args.org)
            if out.json:
                out.json_line({"name": args.name, "deleted_versions": count})
            else:
                print(f"template {args.name} deleted ({count} versions)")
        else:  # submit
            job = await templates.submit(
                args.name,
                _params(args.param),
                version=args.version,
                org=args.org,
                request_id=args.request_id,
            )
            if args.wait:
                async with spinner(f"waiting for job {job.short_id}"):
                    job = await client.wait(job.id)
            if out.json:
                out.json_line(job.to_dict())
            elif args.wait:
                out.job(job)
            else:
                print(job.id)
            if args.wait and job.state is not JobState.SUCCEEDED:
                return EXIT_FAILED
    return 0


# -- schedules ------------------------------------------------------------------------


def _when_it_ticks(schedule: Schedule) -> str:
    if schedule.cron:
        return f"{schedule.cron} ({schedule.time_zone or 'UTC'})"
    if schedule.interval is not None:
        return f"every {duration(schedule.interval.total_seconds())}"
    return "-"


def _what_it_runs(schedule: Schedule) -> str:
    if schedule.template is not None:
        params = key_values({k: str(v) for k, v in schedule.template.params.items()})
        return f"template {schedule.template.name} {params}".rstrip()
    if schedule.job is not None:
        return short_command(schedule.job.cmd)
    return "-"


def _print_schedule(out: Output, schedule: Schedule) -> None:
    rows = [
        ("id", schedule.id),
        ("org", schedule.org_id),
        ("ticks", _when_it_ticks(schedule)),
        ("runs", _what_it_runs(schedule)),
        ("overlap", schedule.overlap.name.lower()),
        ("catch up", schedule.catch_up.name.lower()),
        ("paused", "yes" if schedule.paused else "no"),
        ("next fire", out.both(schedule.next_fire_time)),
        ("last fire", out.both(schedule.last_fire_time)),
        ("last job", schedule.last_job_id or "-"),
        ("created", out.both(schedule.create_time)),
    ]
    rows += [("upcoming", out.both(t)) for t in schedule.upcoming]
    out.details(rows)


async def cmd_schedule(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        schedules = client.schedules
        action = args.action
        if action == "create":
            if bool(args.cron) == (args.every is not None):
                raise UsageError("give --cron EXPR or --every DURATION (one of them)")
            if args.template is not None and args.cmd and args.cmd != ["--"]:
                raise UsageError("give --template NAME or a command after --, not both")
            schedule = await schedules.create(
                args.schedule_id,
                cron=args.cron or "",
                time_zone=args.tz or "",
                every=args.every,
                job=None
                if args.template is not None
                else _spec_from_flags(args, "zbrain schedule create ID --every 1h -- echo hi"),
                template=args.template,
                params=_params(args.param),
                overlap=OverlapPolicy[args.overlap.upper().replace("-", "_")],
                catch_up=CatchUpPolicy[args.catch_up.upper().replace("-", "_")],
                paused=args.paused,
                org=args.org,
            )
        elif action == "list":
            found = await schedules.list(org=args.org)
            if out.json:
                for schedule in found:
                    out.json_line(schedule.to_dict())
                return 0
            out.table(
                ["ID", "TICKS", "RUNS", "PAUSED", "NEXT", "LAST JOB"],
                [
                    [
                        s.id,
                        _when_it_ticks(s),
                        _what_it_runs(s),
                        "yes" if s.paused else "no",
                        out.when(s.next_fire_time),
                        s.last_job_id[-8:] or "-",
                    ]
                    for s in found
                ],
            )
            return 0
        elif action == "get":
            schedule = await schedules.get(args.schedule_id, org=args.org)
        elif action == "pause":
            schedule = await schedules.pause(args.schedule_id, org=args.org)
        elif action == "resume":
            schedule = await schedules.resume(args.schedule_id, org=args.org)
        elif action == "trigger":
            job = await schedules.trigger(args.schedule_id, org=args.org)
            out.json_line(job.to_dict()) if out.json else print(job.id)
            return 0
        else:  # delete
            await schedules.delete(args.schedule_id, org=args.org)
            if out.json:
                out.json_line({"id": args.schedule_id, "deleted": True})
            else:
                print(f"schedule {args.schedule_id} deleted")
            return 0
    if out.json:
        out.json_line(schedule.to_dict())
    elif action == "get":
        _print_schedule(out, schedule)
    else:
        verb = {"create": "created", "pause": "paused", "resume": "resumed"}[action]
        nxt = "" if schedule.paused else f"; next fire {out.both(schedule.next_fire_time)}"
        print(f"schedule {schedule.id} {verb}{nxt}")
    return 0
