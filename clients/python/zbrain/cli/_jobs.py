"""The job commands: submit (one job or a batch), get, wait, list, cancel,
rerun, logs, events, watch, artifacts and download."""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UnavailableError
from ..models import (
    Dependency,
    DependencyCondition,
    Event,
    Job,
    JobState,
    LogLine,
    Resources,
    rfc3339,
)
from ..sizes import format_size
from ._common import (
    EXIT_FAILED,
    UsageError,
    command_after_dashes,
    connect,
    job_id,
    read_json,
    spinner,
)
from ._output import Output

if TYPE_CHECKING:
    from ..client import Client

BATCH_CHUNK = 1000
"""Jobs of `submit --batch` sent in one SubmitBatch: each chunk is atomic."""
LIST_PAGE = 1000
"""Jobs `list` reads per call and prints per table (columns sized per table)."""


def _exit_status(jobs: Iterable[Job]) -> int:
    return 0 if all(job.state is JobState.SUCCEEDED for job in jobs) else EXIT_FAILED


async def _wait(client: Client, job: Job) -> Job:
    """The job once finished. Stopped by Ctrl-C, say that the job goes on and
    how to reach it: it was submitted, and its id not printed yet."""
    try:
        async with spinner(f"waiting for job {job.short_id}"):
            return await client.wait(job.id)
    except asyncio.CancelledError:  # how asyncio.run delivers Ctrl-C to this task
        print(
            f"stopped waiting; job {job.short_id} goes on: zbrain get {job.short_id} "
            f"(or zbrain cancel {job.short_id}); its full id is {job.id}",
            file=sys.stderr,
        )
        raise


async def _dependencies(client: Client, args: argparse.Namespace) -> list[Dependency]:
    """--after ID[:succeeded|finished], each id full or short."""
    found = []
    for text in args.after:
        ident, _, condition = text.rpartition(":") if ":" in text else (text, "", "succeeded")
        try:
            chosen = DependencyCondition[condition.upper()]
        except KeyError:
            raise UsageError(
                f"--after {text}: the condition must be succeeded or finished"
            ) from None
        found.append(Dependency(await job_id(client, args, ident), chosen))
    return found


async def cmd_submit(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    if args.batch is not None:
        if args.cmd and args.cmd != ["--"]:
            raise UsageError("--batch reads the jobs from its file; give no command after --")
        return await _submit_batch(args, out)
    cmd = command_after_dashes(list(args.cmd), "zbrain submit -- echo hello")
    if args.at is not None and args.delay is not None:
        raise UsageError("give --at or --delay, not both")
    async with await connect(args) as client:
        job = await client.submit(
            cmd,
            org=args.org,
            input=read_json(args.input),
            env=dict(args.env),
            timeout=args.timeout,
            max_retries=args.retries,
            priority=args.priority,
            labels=dict(args.label),
            request_id=args.request_id,
            depends_on=await _dependencies(client, args),
            run_at=args.at,
            delay=args.delay,
            concurrency_key=args.concurrency_key or "",
            concurrency_limit=args.concurrency_limit,
            requires=dict(args.requires),
            resources=Resources(
                memory_bytes=args.memory or 0,
                cpu_seconds=math.ceil(args.cpu or 0),  # limited in whole seconds
                processes=args.processes or 0,
                open_files=args.open_files or 0,
                file_size_bytes=args.file_size or 0,
            ),
            network=args.network,
        )
        if args.wait:
            job = await _wait(client, job)
    if out.json:
        out.json_line(job.to_dict())
    elif args.wait:
        out.job(job)
    else:
        print(job.id)
    return _exit_status([job]) if args.wait else 0


def _batch_lines(source: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of a JSON-lines file, or stdin for `-`."""
    import json

    try:
        stream = sys.stdin if source == "-" else Path(source).open()  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read --batch file {source}: {exc.strerror}") from None
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{source} line {number} is not JSON: {exc}") from None


async def _submit_batch(args: argparse.Namespace, out: Output) -> int:
    """Every line a job (the fields of a graph file's job, docs/cli.md), sent
    BATCH_CHUNK at a time with SubmitBatch; the ids printed in line order."""
    from ..graphs import batch_spec

    where = "stdin" if args.batch == "-" else args.batch
    specs = [
        batch_spec(body, f"{where} line {number}") for number, body in _batch_lines(args.batch)
    ]
    if not specs:
        raise UsageError(f"{where} holds no jobs: give one JSON object a line")
    for spec in specs:
        spec.org_id = spec.org_id or args.org or ""
    async with await connect(args) as client:
        for start in range(0, len(specs), BATCH_CHUNK):
            ids = await client.submit_batch(specs[start : start + BATCH_CHUNK])
            for ident in ids:
                out.json_line({"id": ident}) if out.json else print(ident)
    return 0


async def cmd_get(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        job = await client.get(await job_id(client, args))
    out.json_line(job.to_dict()) if out.json else out.job(job, full=args.full)
    return 0


async def cmd_wait(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        ident = await job_id(client, args)
        try:
            async with spinner(f"waiting for job {ident[-8:]}"):
                job = await client.wait(ident, timeout=args.timeout)
        except TimeoutError:
            print(
                f"zbrain: error: job {ident} did not finish within {args.timeout:g}s",
                file=sys.stderr,
            )
            return EXIT_FAILED
    out.json_line(job.to_dict()) if out.json else out.job(job)
    return _exit_status([job])


async def cmd_list(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    if args.all_orgs and args.org:
        raise UsageError("give --org or --all-orgs, not both")
    limit = None if args.all else args.limit
    shown, more = 0, False
    page: list[Job] = []
    async with await connect(args) as client:
        # One more than shown says whether more exist. Jobs are printed a
        # table page at a time, so memory stays bounded even with --all.
        async for job in client.list(
            org=args.org,
            states=args.state,
            oldest_first=args.oldest_first,
            limit=None if limit is None else limit + 1,
            page_size=min(LIST_PAGE, limit + 1) if limit else LIST_PAGE,
            labels=dict(args.label),
            created_after=args.since,
            all_orgs=args.all_orgs,
            unmatched=args.unmatched,
        ):
            if limit is not None and shown == limit:
                more = True
                break
            shown += 1
            if out.json:
                out.json_line(job.to_dict())
                continue
            page.append(job)
            if len(page) == LIST_PAGE:
                out.jobs(page, wide=args.wide, header=shown == LIST_PAGE)
                page = []
    if not out.json and (page or shown == 0):
        out.jobs(page, wide=args.wide, header=shown <= LIST_PAGE)
    if more:
        print(
            f"zbrain: showing the {'oldest' if args.oldest_first else 'newest'} {limit} jobs; "
            f"more exist: --limit N for more, --all for every one",
            file=sys.stderr,
        )
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        job, outcome = await client.cancel(await job_id(client, args))
    if out.json:
        out.json_line({"outcome": outcome.name, "job": job.to_dict()})
        return 0
    messages = {
        "CANCELED": f"job {job.id} canceled",
        "CANCEL_REQUESTED": f"job {job.id} is running; its worker was told to stop it",
        "ALREADY_TERMINAL": (
            f"job {job.id} had already finished ({job.state.name}); nothing to cancel"
        ),
    }
    print(messages[outcome.name])
    return 0


async def cmd_rerun(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        original = await job_id(client, args)
        if args.input is not None:
            job = await client.rerun(original, input=read_json(args.input))
        else:
            job = await client.rerun(original)
        if args.wait:
            job = await _wait(client, job)
    if out.json:
        out.json_line(job.to_dict())
    elif args.wait:
        out.job(job)
    else:
        print(job.id)
    return _exit_status([job]) if args.wait else 0


# -- logs and events ------------------------------------------------------------------


async def cmd_logs(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    if args.tail is not None and args.tail < 0:
        raise UsageError("--tail must not be negative")
    async with await connect(args) as client:
        ident = await job_id(client, args)
        printer = _LogPrinter(out, args)
        after = args.after
        if args.tail is not None:
            # What is stored, keeping only the last N lines in memory; then,
            # with --follow, what comes after it.
            tail: collections.deque[LogLine] = collections.deque(maxlen=args.tail)
            async for line in _matching(client.logs(ident, after=after), args):
                tail.append(line)
            for line in tail:
                printer.line(line)
            after = tail[-1].sequence if tail else after
            if not args.follow:
                return 0
        try:
            async for line in _matching(client.logs(ident, follow=args.follow, after=after), args):
                printer.line(line)
                after = line.sequence
        except UnavailableError as lost:
            if not args.follow:
                raise
            shown = [
                *(["--attempt", str(args.attempt)] if args.attempt is not None else []),
                *(["--timestamps"] if args.timestamps else []),
            ]
            raise _go_on(lost, ["logs", "-f", ident, *shown, "--from", str(after)]) from None
    return 0


def _go_on(lost: UnavailableError, command: list[str]) -> UnavailableError:
    """A follow cut short by a lost server, saying how to go on from the last
    thing shown once it is back (nothing shown is shown twice)."""
    return UnavailableError(f"{lost.message}; to go on from there: zbrain {' '.join(command)}")


async def _matching(
    lines: AsyncIterator[LogLine], args: argparse.Namespace
) -> AsyncIterator[LogLine]:
    async for line in lines:
        if args.attempt is not None and line.attempt != args.attempt:
            continue
        if args.since is not None and line.time is not None and line.time < args.since:
            continue
        yield line


class _LogPrinter:
    """Lines as text (with --timestamps, their time first), and a separator
    where one attempt's lines end and the next one's begin."""

    def __init__(self, out: Output, args: argparse.Namespace) -> None:
        self.out = out
        self.timestamps = args.timestamps
        self.separators = args.attempt is None
        self.attempt: int | None = None

    def line(self, line: LogLine) -> None:
        if self.out.json:
            self.out.json_line(line.to_dict())
            return
        if (
            self.separators
            and line.attempt != self.attempt
            and (self.attempt is not None or line.attempt > 1)
        ):
            print(self.out.paint(f"--- attempt {line.attempt} ---", "2"))
        self.attempt = line.attempt
        stamp = f"{rfc3339(line.time)} " if self.timestamps and line.time else ""
        print(f"{stamp}{line.text}", flush=True)


def describe(event: Event) -> str:
    """An event in words, for the events and watch commands."""
    data = event.data
    if event.type == "job_submitted":
        text = f"submitted: {' '.join(data.get('cmd', []))}"
        if data.get("state") in ("BLOCKED", "SCHEDULED"):
            text += f" ({data['state'].lower()})"
        return text
    if event.type == "job_state_changed":
        from_state, to_state = data.get("from_state", ""), data.get("to_state", "")
        reason = data.get("reason", "")
        if from_state == to_state:  # no move: a cancel asked of a running job
            text = f"{to_state}: {reason}"
        else:
            text = f"{from_state} -> {to_state}: {reason}"
        if data.get("next_run_time"):
            text += f" (next run {data['next_run_time']})"
        return text
    if event.type == "job_logged":
        return "\n".join(
            f"{line.get('stream', '').lower()}: {line.get('text', '')}"
            for line in data.get("lines", [])
        )
    if event.type == "worker_presence":
        return f"worker {data.get('worker_id')} {'connected' if data.get('connected') else 'left'}"
    if event.type == "schedule_fired":
        what = f"submitted job {data['job_id']}" if data.get("job_id") else "submitted nothing"
        if data.get("skipped_reason"):
            what += f" ({data['skipped_reason']})"
        return f"schedule {data.get('schedule_id')} fired for {data.get('tick_time')}: {what}"
    return event.type


async def cmd_events(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    start = "the last one stored" if args.after is None else f"sequence {args.after}"
    if args.follow:
        print(f"zbrain: following events after {start}; Ctrl-C stops", file=sys.stderr)
    printed = 0
    last = args.after  # the sequence of the last event shown, once known
    async with await connect(args) as client:
        try:
            async for event in client.events(
                org=args.org,
                topic_prefix=args.topic or "",
                after=args.after or 0,
                follow=args.follow,
                from_end=args.after is None,
            ):
                printed += 1
                last = event.sequence
                if out.json:
                    out.json_line(event.to_dict())
                else:
                    print(
                        f"{event.sequence:>8}  {out.when(event.time):>8}  {event.topic}  "
                        f"{describe(event)}",
                        flush=True,
                    )
        except UnavailableError as lost:
            if not args.follow or last is None:
                raise
            scope = [
                *(["--org", args.org] if args.org else []),
                *(["--topic", args.topic] if args.topic else []),
            ]
            raise _go_on(lost, ["events", "-f", *scope, "--from", str(last)]) from None
    if not printed and not args.follow:
        print(f"zbrain: no events after {start}", file=sys.stderr)
    return 0


async def cmd_watch(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        job = await client.get(await job_id(client, args))
        async for event in client.events(
            org=job.org_id, topic_prefix=f"jobs/{job.id}/", follow=not job.state.is_terminal
        ):
            if event.type == "job_logged":
                for line in event.data.get("lines", []):
                    print(line.get("text", ""), flush=True)
                continue
            print(f"[{out.when(event.time)}] {describe(event)}", flush=True)
            if event.type == "job_state_changed":
                state = JobState[event.data["to_state"]]
                if state.is_terminal:
                    return 0 if state is JobState.SUCCEEDED else EXIT_FAILED
        final = await client.get(job.id)
    return _exit_status([final])


# -- artifacts ------------------------------------------------------------------------


async def cmd_artifacts(args: argparse.Namespace) -> int:
    out = Output.from_args(args)
    async with await connect(args) as client:
        artifacts = await client.artifacts(await job_id(client, args))
    if out.json:
        for artifact in artifacts:
            out.json_line(artifact.to_dict())
    else:
        out.table(
            ["NAME", "SIZE", "SHA256"],
            [[a.name, format_size(a.size_bytes), a.sha256] for a in artifacts],
        )
    return 0


async def cmd_download(args: argparse.Namespace) -> int:
    destination = Path(args.output or Path(args.name).name)
    if destination.is_dir():
        destination = destination / Path(args.name).name
    async with await connect(args) as client:
        artifact = await client.download(await job_id(client, args), args.name, destination)
    print(f"{destination} ({artifact.size_bytes} bytes, sha256 {artifact.sha256})")
    return 0
