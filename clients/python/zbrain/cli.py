"""The `zbrain` command line: run a server or a worker, and submit, inspect and cancel jobs.

Human-readable output by default, `--json` for scripts. Errors are one line
on stderr with a non-zero exit status: 1 for a failed operation, 2 for a
usage error; never a traceback for something the user can fix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from . import logs
from .client import Client
from .connection import TlsFiles, default_server
from .durations import parse_duration
from .errors import ZBrainError
from .models import Event, Job, JobState, Resources
from .sizes import format_size, parse_size

EXIT_FAILED = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class UsageError(Exception):
    """A flag value the parser accepted but that makes no sense."""


# -- output ----------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False))


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _short_cmd(cmd: Sequence[str], width: int = 48) -> str:
    text = " ".join(cmd)
    return text if len(text) <= width else text[: width - 1] + "…"


def _stopping(job: Job) -> bool:
    return job.cancel_requested and job.state is JobState.RUNNING


def _describe_resources(resources: Resources, network: bool) -> str:
    parts = []
    if resources.memory_bytes:
        parts.append(f"memory {format_size(resources.memory_bytes)}")
    if resources.cpu_seconds:
        parts.append(f"cpu {resources.cpu_seconds}s")
    if resources.processes:
        parts.append(f"processes {resources.processes}")
    if resources.open_files:
        parts.append(f"open files {resources.open_files}")
    if resources.file_size_bytes:
        parts.append(f"file size {format_size(resources.file_size_bytes)}")
    if network:
        parts.append("network")
    return ", ".join(parts)


def _print_job(job: Job) -> None:
    rows = [
        ("id", job.id),
        ("org", job.org_id),
        ("state", job.state.name + (" (cancel requested)" if _stopping(job) else "")),
        ("attempt", f"{job.attempt} of {job.max_retries + 1}"),
        ("cmd", json.dumps(list(job.cmd))),
        ("input", json.dumps(job.input)),
        ("timeout", f"{job.timeout.total_seconds():g}s"),
        ("priority", str(job.priority)),
        ("created", _when(job.create_time)),
        ("started", _when(job.start_time)),
        ("finished", _when(job.finish_time)),
    ]
    if job.last_transition is not None and job.last_transition.reason:
        change = job.last_transition
        rows.append(("why", f"{change.reason} ({change.cause.name}, {_when(change.time)})"))
    if job.state is JobState.RETRYING:
        rows.append(("next run", _when(job.next_run_time)))
    if job.waiting_reason:
        rows.append(("waiting", job.waiting_reason.removeprefix("waiting: ")))
    if job.concurrency_key:
        rows.append(
            ("key", f"{job.concurrency_key} (at most {job.concurrency_limit or 1} at once)")
        )
    if job.requires:
        rows.append(
            ("requires", " ".join(f"{k}={v}" if v else k for k, v in sorted(job.requires.items())))
        )
    if job.worker_id:
        rows.append(("worker", job.worker_id))
    if job.env:
        rows.append(("env", " ".join(f"{k}={v}" for k, v in sorted(job.env.items()))))
    if job.labels:
        rows.append(("labels", " ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))))
    if job.resources or job.network:
        rows.append(("limits", _describe_resources(job.resources, job.network)))
    if job.last_error:
        rows.append(("error", job.last_error))
    if job.output is not None:
        rows.append(("output", json.dumps(job.output)))
    for artifact in job.artifacts:
        rows.append(
            (
                "artifact",
                f"{artifact.name} ({artifact.size_bytes} bytes, sha256 {artifact.sha256[:12]})",
            )
        )
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows under headers, in columns as wide as their widest cell."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    for row in (headers, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- argument helpers -------------------------------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _requirement(text: str) -> tuple[str, str]:
    """KEY=VALUE (the worker label must equal it) or KEY (it must be present)."""
    key, _, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or KEY, got {text!r}")
    return key, value


def _not_negative(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError("must be 0 (none of its own) or more")
        return value

    return parse


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _state(text: str) -> JobState:
    try:
        return JobState[text.upper()]
    except KeyError:
        names = ", ".join(s.name.lower() for s in JobState)
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; choose from {names}") from None


def _read_input(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = sys.stdin.read() if text == "@-" else path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read --input file {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from None


# -- commands ---------------------------------------------------------------------


async def connect_from_args(args: argparse.Namespace) -> Client:
    """A client for the --server, --token and --tls-* flags."""
    return await Client.connect(
        args.server, token=args.token, tls=TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
    )


async def cmd_submit(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError(
            "nothing to run: give the command after --, e.g. zbrain submit -- echo hello"
        )
    async with await connect_from_args(args) as client:
        job = await client.submit(
            cmd,
            org=args.org,
            input=_read_input(args.input),
            env=dict(args.env),
            timeout=args.timeout,
            max_retries=args.retries,
            priority=args.priority,
            labels=dict(args.label),
            request_id=args.request_id,
            concurrency_key=args.concurrency_key or "",
            concurrency_limit=args.concurrency_limit,
            requires=dict(args.requires),
            resources=Resources(
                memory_bytes=args.memory or 0,
                cpu_seconds=math.ceil(args.cpu or 0),
                processes=args.processes or 0,
                open_files=args.open_files or 0,
                file_size_bytes=args.file_size or 0,
            ),
            network=args.network,
        )
        if args.wait:
            job = await client.wait(job.id)
    if args.json:
        _print_json(job.to_dict())
    elif args.wait:
        _print_job(job)
    else:
        print(job.id)
    return 0 if not args.wait or job.state is JobState.SUCCEEDED else EXIT_FAILED


async def cmd_get(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        job = await client.get(args.id)
    _print_json(job.to_dict()) if args.json else _print_job(job)
    return 0


async def cmd_wait(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        try:
            job = await client.wait(args.id, timeout=args.timeout)
        except TimeoutError:
            print(
                f"zbrain: error: job {args.id} did not finish within {args.timeout:g}s",
                file=sys.stderr,
            )
            return EXIT_FAILED
    _print_json(job.to_dict()) if args.json else _print_job(job)
    return 0 if job.state is JobState.SUCCEEDED else EXIT_FAILED


async def cmd_list(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        jobs = [
            job
            async for job in client.list(
                org=args.org,
                states=args.state,
                oldest_first=args.oldest_first,
                limit=args.limit,
                unmatched=args.unmatched,
            )
        ]
    if args.json:
        for job in jobs:
            _print_json(job.to_dict())
        return 0
    rows = [
        [job.id, job.state.name, str(job.attempt), _when(job.create_time), _short_cmd(job.cmd)]
        for job in jobs
    ]
    print_table(["ID", "STATE", "ATTEMPT", "CREATED", "COMMAND"], rows)
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        job, outcome = await client.cancel(args.id)
    if args.json:
        _print_json({"outcome": outcome.name, "job": job.to_dict()})
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


async def cmd_logs(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        async for line in client.logs(args.id, follow=args.follow, after=args.after):
            if args.json:
                _print_json(
                    {
                        "seq": line.sequence,
                        "stream": line.stream.name,
                        "attempt": line.attempt,
                        "text": line.text,
                    }
                )
            else:
                print(line.text, flush=True)
    return 0


def _describe(event: Event) -> str:
    data = event.data
    if event.type == "job_submitted":
        return f"submitted: {' '.join(data.get('cmd', []))}"
    if event.type == "job_state_changed":
        to_state = data.get("to_state", "").removeprefix("JOB_STATE_")
        from_state = data.get("from_state", "").removeprefix("JOB_STATE_")
        text = f"{from_state} -> {to_state}: {data.get('reason', '')}"
        if data.get("next_run_time"):
            text += f" (next run {data['next_run_time']})"
        return text
    if event.type == "job_logged":
        return "\n".join(
            f"{line.get('stream', '').removeprefix('LOG_STREAM_').lower()}: {line.get('text', '')}"
            for line in data.get("lines", [])
        )
    if event.type == "worker_presence":
        return f"worker {data.get('worker_id')} {'connected' if data.get('connected') else 'left'}"
    return event.type


async def cmd_events(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        async for event in client.events(
            org=args.org, topic_prefix=args.topic or "", after=args.after, follow=args.follow
        ):
            if args.json:
                _print_json(event.to_dict())
            else:
                print(
                    f"{event.sequence:>8}  {_when(event.time)}  {event.topic}  {_describe(event)}"
                )
            sys.stdout.flush()
    return 0


async def cmd_watch(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        job = await client.get(args.id)
        async for event in client.events(
            org=job.org_id, topic_prefix=f"jobs/{job.id}/", follow=not job.state.is_terminal
        ):
            if event.type == "job_logged":
                for line in event.data.get("lines", []):
                    print(line.get("text", ""), flush=True)
                continue
            print(f"[{_when(event.time)}] {_describe(event)}", flush=True)
            if event.type == "job_state_changed":
                state = JobState[event.data["to_state"].removeprefix("JOB_STATE_")]
                if state.is_terminal:
                    return 0 if state is JobState.SUCCEEDED else EXIT_FAILED
        final = await client.get(args.id)
    return 0 if final.state is JobState.SUCCEEDED else EXIT_FAILED


async def cmd_artifacts(args: argparse.Namespace) -> int:
    async with await connect_from_args(args) as client:
        artifacts = await client.artifacts(args.id)
    if args.json:
        for artifact in artifacts:
            _print_json(vars(artifact))
    else:
        print_table(
            ["NAME", "SIZE", "SHA256"], [[a.name, str(a.size_bytes), a.sha256] for a in artifacts]
        )
    return 0


async def cmd_download(args: argparse.Namespace) -> int:
    destination = Path(args.output or Path(args.name).name)
    if destination.is_dir():
        destination = destination / Path(args.name).name
    async with await connect_from_args(args) as client:
        artifact = await client.download(args.id, args.name, destination)
    print(f"{destination} ({artifact.size_bytes} bytes, sha256 {artifact.sha256})")
    return 0


SERVER_MISSING = (
    "needs the ZBrain server, which is not installed here: pip install zbrain-server "
    "(from a ZBrain checkout: pip install ./clients/python ./server)"
)


def server_plugin() -> Any | None:
    """The server distribution's command-line plugin, if it is installed: it adds
    `zbrain serve` and works on a store directly for the token commands."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="zbrain.commands"):
        return entry.load()
    return None


async def cmd_server_missing(args: argparse.Namespace) -> int:
    raise ZBrainError(f"zbrain {args.command} {SERVER_MISSING}")


async def cmd_token(args: argparse.Namespace) -> int:
    from .tokens import run_token_command

    return await run_token_command(args)


async def cmd_org(args: argparse.Namespace) -> int:
    from .orgs_command import run_org_command

    return await run_org_command(args)


async def cmd_workers(args: argparse.Namespace) -> int:
    from .orgs_command import run_workers_command

    return await run_workers_command(args)


async def cmd_worker(args: argparse.Namespace) -> int:
    from .worker_command import run_worker_command

    return await run_worker_command(args)


# -- the parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zbrain", description="ZBrain: distributed job orchestration over gRPC."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--server",
        default=default_server(),
        help="server address HOST:PORT (default: $ZBRAIN_SERVER or 127.0.0.1:50051)",
    )
    remote.add_argument("--token", help="API token (default: $ZBRAIN_TOKEN)")
    remote.add_argument(
        "--tls-ca", type=Path, help="CA certificate to trust; turns on TLS ($ZBRAIN_TLS_CA)"
    )
    remote.add_argument(
        "--tls-cert", type=Path, help="client certificate for mutual TLS ($ZBRAIN_TLS_CERT)"
    )
    remote.add_argument("--tls-key", type=Path, help="client key for mutual TLS ($ZBRAIN_TLS_KEY)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts")

    def command(
        name: str, handler: Command, help: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=list(parents))
        p.set_defaults(handler=handler)
        return p

    plugin = server_plugin()
    if plugin is not None:
        plugin.register(command)
    else:
        command("serve", cmd_server_missing, "run the ZBrain server (needs zbrain-server)")

    p = command(
        "submit",
        cmd_submit,
        "submit a job: zbrain submit [OPTIONS] -- CMD [ARGS...]",
        remote,
        as_json,
    )
    p.add_argument("--org", help="organisation (default: the server's default org)")
    p.add_argument(
        "--timeout", type=_duration, help="time limit per attempt, e.g. 30s, 5m (default: server's)"
    )
    p.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="retries after a failed attempt (default: server's)",
    )
    p.add_argument(
        "--env",
        type=_key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="environment variable (repeatable)",
    )
    p.add_argument(
        "--label",
        type=_key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="label (repeatable)",
    )
    p.add_argument(
        "--input", metavar="JSON|@FILE", help="JSON input, inline or from a file (@- for stdin)"
    )
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    p.add_argument(
        "--request-id", help="idempotency key: resubmitting with it returns the first job"
    )
    p.add_argument("--memory", type=_size, metavar="SIZE", help="memory limit, e.g. 512M")
    p.add_argument(
        "--cpu", type=_duration, metavar="DURATION", help="CPU time limit of each process, e.g. 30s"
    )
    p.add_argument("--processes", type=int, metavar="N", help="process limit (RLIMIT_NPROC)")
    p.add_argument("--open-files", type=int, metavar="N", help="open files limit per process")
    p.add_argument("--file-size", type=_size, metavar="SIZE", help="largest file it may write")
    p.add_argument("--network", action="store_true", help="ask a sandboxed worker for the network")
    p.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="jobs of the org with this key run at most --concurrency-limit at once, in order",
    )
    p.add_argument(
        "--concurrency-limit",
        type=int,
        default=0,
        metavar="N",
        help="how many jobs of the key may run at once (default 1)",
    )
    p.add_argument(
        "--requires",
        type=_requirement,
        action="append",
        default=[],
        metavar="K=V|K",
        help="only a worker with this label (or label key) runs it (repeatable)",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for the job to finish; exit 1 unless it succeeded"
    )
    p.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run, after --"
    )

    p = command("get", cmd_get, "show one job", remote, as_json)
    p.add_argument("id", help="job id")

    p = command(
        "wait", cmd_wait, "wait for a job to finish; exit 1 unless it succeeded", remote, as_json
    )
    p.add_argument("id", help="job id")
    p.add_argument("--timeout", type=_duration, help="give up after this long")

    p = command("list", cmd_list, "list jobs, newest first", remote, as_json)
    p.add_argument("--org", help="organisation (default: the server's default org)")
    p.add_argument(
        "--state",
        type=_state,
        action="append",
        default=[],
        help="only jobs in this state (repeatable)",
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50)")
    p.add_argument("--oldest-first", action="store_true", help="oldest first (queue order)")
    p.add_argument(
        "--unmatched",
        action="store_true",
        help="only runnable jobs no connected worker can take (org or labels)",
    )

    p = command("workers", cmd_workers, "list the workers connected to the server", remote, as_json)
    p.add_argument("--org", help="only workers serving this organisation (admins)")

    p = command("org", cmd_org, "an organisation's limits and pauses: get, set, pause, resume")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("get", help="show an organisation's settings", parents=[remote, as_json])
    a.add_argument("org", help="the organisation")
    a = actions.add_parser(
        "set", help="change limits (admins); 0 removes the org's own", parents=[remote, as_json]
    )
    a.add_argument("org", help="the organisation")
    a.add_argument(
        "--max-running", type=_not_negative(int), metavar="N", help="running jobs at once"
    )
    a.add_argument(
        "--max-starts-per-second",
        type=_not_negative(float),
        metavar="R",
        help="job starts per second",
    )
    a.add_argument("--max-waiting", type=_not_negative(int), metavar="N", help="waiting jobs")
    a.add_argument(
        "--max-log-bytes", type=_not_negative(int), metavar="B", help="log bytes stored per job"
    )
    a.add_argument(
        "--max-artifact-bytes", type=_not_negative(int), metavar="B", help="artifact bytes per job"
    )
    a.add_argument(
        "--retention-days", type=_not_negative(int), metavar="D", help="days finished jobs are kept"
    )
    for action, what in (("pause", "start none of its jobs (admins)"), ("resume", "lift a pause")):
        a = actions.add_parser(action, help=what, parents=[remote, as_json])
        a.add_argument("org", help="the organisation")
        a.add_argument(
            "--selector",
            type=_key_value,
            action="append",
            default=[],
            metavar="K=V",
            help="only the jobs carrying this label (repeatable: all of them)",
        )

    p = command("cancel", cmd_cancel, "cancel a job", remote, as_json)
    p.add_argument("id", help="job id")

    p = command("logs", cmd_logs, "print a job's output", remote, as_json)
    p.add_argument("id", help="job id")
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the job ends"
    )
    p.add_argument(
        "--from", dest="after", type=int, default=0, metavar="N", help="start after line sequence N"
    )

    p = command("events", cmd_events, "print recorded events, oldest first", remote, as_json)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument(
        "--from", dest="after", type=int, default=0, metavar="SEQ", help="start after sequence SEQ"
    )
    p.add_argument(
        "--topic", metavar="PREFIX", help="only topics starting with PREFIX, e.g. jobs/ID/"
    )
    p.add_argument("--org", help="organisation (default: the server's default org)")

    p = command("watch", cmd_watch, "follow one job's state changes and logs until it ends", remote)
    p.add_argument("id", help="job id")

    p = command("artifacts", cmd_artifacts, "list a job's artifacts", remote, as_json)
    p.add_argument("id", help="job id")

    p = command("download", cmd_download, "download an artifact", remote)
    p.add_argument("id", help="job id")
    p.add_argument("name", help="artifact name")
    p.add_argument(
        "-o", "--output", help="file or folder to write to (default: the artifact's file name)"
    )

    p = command("token", cmd_token, "manage API tokens: create, list, revoke")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    store_dir = argparse.ArgumentParser(add_help=False)
    store_dir.add_argument(
        "--data-dir",
        type=Path,
        help="work on this server's store directly instead of --server (bootstrap on its host)",
    )
    store_dir.add_argument(
        "--store",
        metavar="URL",
        help="work on this PostgreSQL store directly instead of --server",
    )
    a = actions.add_parser(
        "create", help="make a token; prints it once", parents=[remote, store_dir]
    )
    a.add_argument("--org", required=True, help="organisation the token is bound to")
    a.add_argument(
        "--role", required=True, choices=("client", "worker", "admin"), help="what it may do"
    )
    a.add_argument("--description", default="", help="what the token is for")
    a = actions.add_parser("list", help="list tokens", parents=[remote, store_dir, as_json])
    a.add_argument("--org", help="only tokens of this organisation")
    a = actions.add_parser("revoke", help="revoke a token at once", parents=[remote, store_dir])
    a.add_argument("token_id", help="the token's id (the part after zbt_)")

    p = command("worker", cmd_worker, "run a worker that executes jobs", remote)
    p.add_argument(
        "--concurrency",
        type=int,
        help="jobs at once (default: $ZWORKER_CONCURRENCY or the CPU count)",
    )
    p.add_argument(
        "--org",
        action="append",
        default=[],
        help="organisation to serve (repeatable; default: the server's default)",
    )
    p.add_argument("--id", dest="worker_id", help="worker id (default: HOST-PID)")
    p.add_argument(
        "--mode",
        help="how jobs run: process (default; $ZWORKER_MODE), sandbox (process isolated "
        "with bubblewrap) or echo",
    )
    p.add_argument(
        "--allow-network",
        action="store_true",
        help="in sandbox mode, give jobs that ask for it the network ($ZWORKER_ALLOW_NETWORK)",
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="most resident memory a job may use, e.g. 512M ($ZWORKER_MAX_MEMORY)",
    )
    p.add_argument(
        "--max-cpu",
        metavar="DURATION",
        help="most CPU time each process of a job may use, e.g. 5m ($ZWORKER_MAX_CPU)",
    )
    p.add_argument(
        "--max-processes",
        metavar="N",
        help="most processes of the job's user at once ($ZWORKER_MAX_PROCESSES)",
    )
    p.add_argument(
        "--max-open-files",
        metavar="N",
        help="most open files of each process of a job ($ZWORKER_MAX_OPEN_FILES)",
    )
    p.add_argument(
        "--max-file-size",
        metavar="SIZE",
        help="largest file a job may write, e.g. 1G ($ZWORKER_MAX_FILE_SIZE)",
    )
    p.add_argument(
        "--temp-dir",
        type=Path,
        help="where job folders are made (default: $ZWORKER_TEMP_DIR or the system temp dir)",
    )
    p.add_argument(
        "--label",
        type=_key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="worker label (repeatable)",
    )
    p.add_argument(
        "--grace",
        type=_duration,
        default=30.0,
        help="on SIGTERM, how long running jobs may finish (default 30s)",
    )
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="text (default) or json lines ($ZBRAIN_LOG_FORMAT)",
    )
    return parser


def _positive(args: argparse.Namespace) -> None:
    for name in ("limit", "workers", "concurrency"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "workers" else 1):
            raise UsageError(
                f"--{name} must be {'zero or more' if name == 'workers' else 'at least 1'}"
            )
    if getattr(args, "retries", None) is not None and args.retries < 0:
        raise UsageError("--retries must not be negative")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.handler is not cmd_server_missing:  # that one explains itself
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        logs.configure(
            os.environ.get("ZBRAIN_LOG_LEVEL") or "INFO",
            getattr(args, "log_format", None) or os.environ.get("ZBRAIN_LOG_FORMAT") or "text",
        )
        _positive(args)
        handler: Command = args.handler
        return asyncio.run(handler(args))
    except (UsageError, ValueError) as exc:
        parser.exit(EXIT_USAGE, f"zbrain {args.command}: error: {exc}\n")
    except ZBrainError as exc:
        print(f"zbrain: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
