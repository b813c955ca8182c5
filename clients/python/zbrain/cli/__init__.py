"""The `zbrain` command line: run a server or a worker, and submit, inspect
and cancel jobs, graphs, schedules and templates (docs/cli.md).

Human-readable output by default, `--json` for scripts (one JSON
representation, docs/cli.md). Errors are one line on stderr with a non-zero
exit status: 1 for a failed operation, 2 for a usage error; never a
traceback for something the user can fix.

argparse, not click or typer: it is in the standard library, loads in a few
milliseconds, and with the global flags, one-line errors and completion
written here it does all the command line needs (docs/cli.md says more).
Modules are imported by the command that needs them, so `zbrain --help`
never loads gRPC.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ..errors import ZBrainError
from ._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    UsageError,
    future_time,
    key_value,
    moment,
    not_negative,
    parameter,
    positive_duration,
    positive_int,
    requirement,
    size,
)

if TYPE_CHECKING:
    from ..models import JobState

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "SERVER_MISSING", "build_parser", "main", "server_plugin"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

SHORT_HELP = """\
ZBrain: distributed job orchestration over gRPC.

usage: zbrain [GLOBAL OPTIONS] COMMAND [OPTIONS]

Examples:
  zbrain serve                          run a server on 127.0.0.1:50051
  zbrain submit -- echo hello           submit a job; prints its id
  zbrain list                           the newest jobs, with short ids
  zbrain get 3f9c2a1b                   one job, by its short (or full) id
  zbrain logs -f 3f9c2a1b               follow its output
  zbrain run-graph pipeline.yaml        submit jobs that wait for each other
  zbrain --server host:50051 list       global options go before or after COMMAND

Every command: zbrain --help. One command: zbrain COMMAND --help.
"""

SERVER_MISSING = (
    "needs the ZBrain server, which is not installed here: pip install zbrain-server "
    "(from a ZBrain checkout: pip install ./clients/python ./server)"
)

LOG_FORMATS = ("text", "json")


def server_plugin() -> Any | None:
    """The server distribution's command-line plugin, if it is installed: it adds
    `zbrain serve` and works on a store directly for the token commands."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="zbrain.commands"):
        return entry.load()
    return None


# -- commands defined here -------------------------------------------------------------


async def cmd_server_missing(args: argparse.Namespace) -> int:
    raise ZBrainError(f"zbrain {args.command} {SERVER_MISSING}")


async def cmd_token(args: argparse.Namespace) -> int:
    from ..tokens import run_token_command

    return await run_token_command(args)


async def cmd_worker(args: argparse.Namespace) -> int:
    from ..worker_command import run_worker_command

    return await run_worker_command(args)


def _lazy(module: str, name: str) -> Command:
    """A command whose module is imported only when it runs."""

    async def run(args: argparse.Namespace) -> int:
        import importlib

        handler: Command = getattr(importlib.import_module(module, __name__), name)
        return await handler(args)

    return run


# -- the parser ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, naming where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """--version, looked up only when asked for (it reads package metadata)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import version

        print(f"zbrain {version('zbrain')}")
        parser.exit()


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every client command takes, before or after its name. The
    top-level parser holds their defaults; a command's copies leave a value
    alone unless given there (SUPPRESS), so either position works."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--server",
        default=default(None),
        metavar="HOST:PORT",
        help="server address (default: $ZBRAIN_SERVER or 127.0.0.1:50051; a host alone "
        "means port 50051)",
    )
    group.add_argument("--token", default=default(None), help="API token (default: $ZBRAIN_TOKEN)")
    group.add_argument(
        "--tls-ca",
        type=Path,
        default=default(None),
        help="CA certificate to trust; turns on TLS ($ZBRAIN_TLS_CA)",
    )
    group.add_argument(
        "--tls-cert",
        type=Path,
        default=default(None),
        help="client certificate for mutual TLS ($ZBRAIN_TLS_CERT)",
    )
    group.add_argument(
        "--tls-key",
        type=Path,
        default=default(None),
        help="client key for mutual TLS ($ZBRAIN_TLS_KEY)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON, one object a line (docs/cli.md)",
    )
    group.add_argument(
        "--utc",
        action="store_true",
        default=default(False),
        help="show exact UTC times instead of relative ones",
    )
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default(None),
        help="text (default) or json lines, for logs and banners ($ZBRAIN_LOG_FORMAT)",
    )


@functools.cache
def _command_globals() -> argparse.ArgumentParser:
    """Every command's copy of the global options, made once and shared as a
    parent: cheaper than adding them anew to each of some forty parsers."""
    parent = argparse.ArgumentParser(add_help=False)
    _global_options(parent, top=False)
    return parent


EXAMPLES = {
    "submit": """\
  zbrain submit -- echo hello
  zbrain submit --input '{"n": 1}' --timeout 30s --retries 2 --wait -- python3 job.py
  zbrain submit --after 3f9c2a1b --after 7d01e4aa:finished -- make report
  zbrain submit --delay 10m -- ./cleanup.sh
  zbrain submit --memory 512M --cpu 30s --open-files 256 -- ./crunch
  zbrain submit --concurrency-key customer-42 --concurrency-limit 2 -- ./sync.sh 42
  zbrain submit --requires gpu=a100 --requires region -- ./train.sh
  zbrain submit --batch jobs.jsonl        # one JSON job a line; - reads stdin""",
    "get": "  zbrain get 3f9c2a1b\n  zbrain get 3f9c2a1b --full --utc",
    "wait": "  zbrain wait 3f9c2a1b --timeout 5m",
    "list": """\
  zbrain list
  zbrain list --state failed --since 1h
  zbrain list --label team=data --limit 200
  zbrain list --unmatched                 # runnable jobs no connected worker can take
  zbrain list --all --json""",
    "cancel": "  zbrain cancel 3f9c2a1b",
    "rerun": """\
  zbrain rerun 3f9c2a1b
  zbrain rerun 3f9c2a1b --input '{"day": "2026-12-01"}' --wait""",
    "logs": """\
  zbrain logs 3f9c2a1b
  zbrain logs -f 3f9c2a1b
  zbrain logs 3f9c2a1b --tail 20 --timestamps
  zbrain logs 3f9c2a1b --attempt 2 --since 5m""",
    "events": "  zbrain events --follow\n  zbrain events --from 42 --topic jobs/",
    "watch": "  zbrain watch 3f9c2a1b",
    "artifacts": "  zbrain artifacts 3f9c2a1b",
    "download": "  zbrain download 3f9c2a1b report.pdf -o /tmp/",
    "run-graph": "  zbrain run-graph pipeline.yaml\n  zbrain run-graph pipeline.yaml --wait",
    "graph": "  zbrain graph 3f9c2a1b",
    "schedule": """\
  zbrain schedule create nightly --cron '0 2 * * *' --tz Europe/Paris -- ./nightly.sh
  zbrain schedule create heartbeat --every 30s -- echo alive
  zbrain schedule create report --every 1h --template report --param day=today
  zbrain schedule list
  zbrain schedule get nightly                # with its next fire times
  zbrain schedule pause nightly
  zbrain schedule resume nightly
  zbrain schedule trigger nightly            # submit its job now
  zbrain schedule delete nightly""",
    "template": """\
  zbrain template create greet --param who --param times:integer=1 -- echo '{{ who }}'
  zbrain template submit greet --param who=Ada --wait
  zbrain template list
  zbrain template get greet --version 1
  zbrain template delete greet""",
    "token": """\
  zbrain token create --data-dir zbrain-data --org ops --role admin
  export ZBRAIN_TOKEN=$(zbrain token create --org team-a --role client)
  zbrain token list --org team-a
  zbrain token revoke 3f9c2a1b7d""",
    "worker": """\
  zbrain worker --server 127.0.0.1:50051 --concurrency 8 --org default
  zbrain worker --label gpu=a100 --label region=eu
  zbrain worker --mode sandbox --max-memory 2G --max-cpu 10m --allow-network""",
    "workers": "  zbrain workers\n  zbrain workers --org team-a --json",
    "org": """\
  zbrain org get team-a
  zbrain org set team-a --max-running 20 --max-starts-per-second 5 --retention-days 30
  zbrain org set team-a --max-running 0      # back to none of its own
  zbrain org pause team-a
  zbrain org pause team-a --selector pipeline=nightly
  zbrain org resume team-a --selector pipeline=nightly
  zbrain org resume team-a""",
    "completion": """\
  source <(zbrain completion bash)        # in ~/.bashrc
  source <(zbrain completion zsh)         # in ~/.zshrc
  zbrain completion fish | source         # in ~/.config/fish/config.fish""",
}


class _Skipped:
    """A command left out of the tree: what is added to it is dropped.

    argparse spends its time per parser and per argument (each looks its
    help words up in gettext's catalogues), so building the ~40 commands
    took more time than a `zbrain get` spends on its RPC. A command line
    naming a client command builds only that one (see `main`)."""

    def __getattr__(self, name: str) -> Callable[..., _Skipped]:
        return lambda *args, **kwargs: self


def build_parser(with_plugin: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command tree, or with `only` the tree with just that command;
    `with_plugin` adds the server's commands when the server distribution is
    installed."""
    parser = _Parser(
        prog="zbrain",
        description="ZBrain: distributed job orchestration over gRPC.",
        epilog="Examples: zbrain (alone) prints some; docs/cli.md has every command.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    _global_options(parser, top=True)
    sub: Any = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(
        name: str, handler: Command, help: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        """A command without the client's global options (the server plugin's)."""
        if only not in (None, name):
            return cast(argparse.ArgumentParser, _Skipped())
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help, description=help, parents=list(parents)
        )
        p.set_defaults(handler=handler)
        return p

    def client_command(
        name: str, handler: Command, help: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        if only not in (None, name):
            return cast(argparse.ArgumentParser, _Skipped())
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[*parents, _command_globals()],
            epilog=f"examples:\n{EXAMPLES[name]}" if name in EXAMPLES else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    plugin = server_plugin() if with_plugin else None
    if plugin is not None:
        plugin.register(command)
    else:
        command("serve", cmd_server_missing, "run the ZBrain server (needs zbrain-server)")

    jobs = "._jobs"
    workflows = "._workflows"
    org = _parent(lambda p: p.add_argument("--org", help="organisation (default: your own)"))
    id_org = _parent(
        lambda p: p.add_argument(
            "--org", help="organisation to look a short id up in (default: your own)"
        )
    )

    p = client_command(
        "submit",
        _lazy(jobs, "cmd_submit"),
        "submit a job: zbrain submit [OPTIONS] -- CMD [ARGS...]",
        org,
        _job_flags(),
        _sharing_flags(),
    )
    p.add_argument(
        "--request-id", help="idempotency key: resubmitting with it returns the first job"
    )
    p.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="ID[:succeeded|finished]",
        help="wait for this job (repeatable): until it succeeds (default), or just finishes",
    )
    p.add_argument(
        "--at", type=future_time, metavar="TIME", help="run at this time (RFC 3339; UTC if no zone)"
    )
    p.add_argument("--delay", type=positive_duration, metavar="DUR", help="run after this long")
    p.add_argument(
        "--batch",
        metavar="FILE.jsonl",
        help="submit every job of a JSON-lines file (- for stdin) with SubmitBatch; prints the ids",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for the job to finish; exit 1 unless it succeeded"
    )
    _command_words(p)

    p = client_command("get", _lazy(jobs, "cmd_get"), "show one job and its attempts", id_org)
    p.add_argument("id", help="job id, full or short")
    p.add_argument("--full", action="store_true", help="show large input and output whole")

    p = client_command(
        "wait",
        _lazy(jobs, "cmd_wait"),
        "wait for a job to finish; exit 1 unless it succeeded",
        id_org,
    )
    p.add_argument("id", help="job id, full or short")
    p.add_argument("--timeout", type=positive_duration, help="give up after this long")

    p = client_command("list", _lazy(jobs, "cmd_list"), "list jobs, newest first", org)
    p.add_argument(
        "--state",
        type=_state,
        action="append",
        default=[],
        help="only jobs in this state (repeatable)",
    )
    p.add_argument(
        "--label",
        type=key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="only jobs with this label (repeatable: all of them)",
    )
    p.add_argument(
        "--since",
        type=moment,
        metavar="DUR|TIME",
        help="only jobs submitted since then: 1h (ago) or an RFC 3339 time",
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50)")
    p.add_argument("--all", action="store_true", help="every job, however many")
    p.add_argument(
        "--all-orgs", action="store_true", help="jobs of every organisation (admin tokens)"
    )
    p.add_argument("--oldest-first", action="store_true", help="oldest first (queue order)")
    p.add_argument(
        "--unmatched",
        action="store_true",
        help="only runnable jobs no connected worker can take (org or labels)",
    )
    p.add_argument("--wide", action="store_true", help="do not shorten commands")

    p = client_command("cancel", _lazy(jobs, "cmd_cancel"), "cancel a job", id_org)
    p.add_argument("id", help="job id, full or short")

    p = client_command(
        "rerun", _lazy(jobs, "cmd_rerun"), "submit a finished job again, as a new job", id_org
    )
    p.add_argument("id", help="job id, full or short")
    p.add_argument("--input", metavar="JSON|@FILE", help="replace the input")
    p.add_argument("--wait", action="store_true", help="wait for the new job to finish")

    p = client_command("logs", _lazy(jobs, "cmd_logs"), "print a job's output", id_org)
    p.add_argument("id", help="job id, full or short")
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the job ends"
    )
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines (then follow)")
    p.add_argument(
        "--since", type=moment, metavar="DUR|TIME", help="only lines since then: 5m or a time"
    )
    p.add_argument("--timestamps", action="store_true", help="start each line with its time")
    p.add_argument("--attempt", type=int, metavar="N", help="only the lines of attempt N")
    p.add_argument(
        "--from", dest="after", type=int, default=0, metavar="N", help="start after line sequence N"
    )

    p = client_command(
        "events", _lazy(jobs, "cmd_events"), "print recorded events, oldest first", org
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument(
        "--from",
        dest="after",
        type=_sequence_or_end,
        default=0,
        metavar="SEQ",
        help="start after sequence SEQ; 'end' for only events from now on (with --follow)",
    )
    p.add_argument(
        "--topic", metavar="PREFIX", help="only topics starting with PREFIX, e.g. jobs/ID/"
    )

    p = client_command(
        "watch",
        _lazy(jobs, "cmd_watch"),
        "follow one job's state changes and logs until it ends",
        id_org,
    )
    p.add_argument("id", help="job id, full or short")

    p = client_command("artifacts", _lazy(jobs, "cmd_artifacts"), "list a job's artifacts", id_org)
    p.add_argument("id", help="job id, full or short")

    p = client_command("download", _lazy(jobs, "cmd_download"), "download an artifact", id_org)
    p.add_argument("id", help="job id, full or short")
    p.add_argument("name", help="artifact name")
    p.add_argument(
        "-o", "--output", help="file or folder to write to (default: the artifact's file name)"
    )

    p = client_command(
        "run-graph",
        _lazy(workflows, "cmd_run_graph"),
        "submit a graph file (YAML or JSON) atomically; print each job's id",
        org,
    )
    p.add_argument("file", help="the graph file (docs/workflows.md)")
    p.add_argument(
        "--wait", action="store_true", help="wait for every job; exit 1 unless all succeeded"
    )

    p = client_command(
        "graph",
        _lazy(workflows, "cmd_graph"),
        "show the jobs a job waits for and that wait for it, with their states",
        id_org,
    )
    p.add_argument("id", help="job id, full or short")

    _schedule_commands(client_command, _lazy(workflows, "cmd_schedule"), org)
    _template_commands(client_command, _lazy(workflows, "cmd_template"), org)
    _token_commands(client_command)
    _org_commands(client_command, _lazy("._orgs", "cmd_org"))

    p = client_command(
        "workers", _lazy("._orgs", "cmd_workers"), "list the workers connected to the server"
    )
    p.add_argument("--org", help="only workers serving this organisation (admins)")

    p = client_command("worker", cmd_worker, "run a worker that executes jobs")
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
    # The maxima stay text here: the worker reads each from its flag or else
    # its variable with one parser (worker_command.MAXIMA).
    for flag, metavar, what in (
        ("--max-memory", "SIZE", "most resident memory a job may use, e.g. 512M"),
        ("--max-cpu", "DURATION", "most CPU time each process of a job may use, e.g. 5m"),
        ("--max-processes", "N", "most processes of the job's user at once"),
        ("--max-open-files", "N", "most open files of each process of a job"),
        ("--max-file-size", "SIZE", "largest file a job may write, e.g. 1G"),
    ):
        variable = "ZWORKER_" + flag[2:].upper().replace("-", "_")
        p.add_argument(flag, metavar=metavar, help=f"{what} (${variable})")
    p.add_argument(
        "--temp-dir",
        type=Path,
        help="where job folders are made (default: $ZWORKER_TEMP_DIR or the system temp dir)",
    )
    p.add_argument(
        "--label",
        type=key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="worker label (repeatable)",
    )
    p.add_argument(
        "--grace",
        type=positive_duration,
        default=30.0,
        help="on SIGTERM, how long running jobs may finish (default 30s)",
    )

    p = client_command(
        "completion", cmd_completion, "print a shell completion script: bash, zsh or fish"
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    return parser


def _parent(add: Callable[[argparse.ArgumentParser], object]) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add(parent)
    return parent


def _state(text: str) -> JobState:
    from ..models import JobState

    try:
        return JobState[text.upper()]
    except KeyError:
        names = ", ".join(s.name.lower() for s in JobState if s is not JobState.UNSPECIFIED)
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; choose from {names}") from None


def _sequence_or_end(text: str) -> int | None:
    """An event sequence, or None for `end` (after the last event stored)."""
    if text == "end":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a sequence number nor 'end'"
        ) from None


def _job_flags() -> argparse.ArgumentParser:
    """What a job takes besides its command: submit, template create, schedule create."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--timeout",
        type=positive_duration,
        help="time limit per attempt, e.g. 30s, 5m (default: server's)",
    )
    p.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="retries after a failed attempt (default: server's)",
    )
    p.add_argument(
        "--env",
        type=key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="environment variable (repeatable)",
    )
    p.add_argument(
        "--label",
        type=key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="label (repeatable)",
    )
    p.add_argument(
        "--input", metavar="JSON|@FILE", help="JSON input, inline or from a file (@- for stdin)"
    )
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    return p


def _sharing_flags() -> argparse.ArgumentParser:
    """What a submitted job may use and where it may run (docs/limits.md,
    docs/sandbox.md): its resource limits, its concurrency key, the worker
    labels it requires."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--memory", type=size, metavar="SIZE", help="memory limit, e.g. 512M")
    p.add_argument(
        "--cpu",
        type=positive_duration,
        metavar="DUR",
        help="CPU time limit of each process, e.g. 30s",
    )
    p.add_argument(
        "--processes", type=positive_int, metavar="N", help="process limit (RLIMIT_NPROC)"
    )
    p.add_argument(
        "--open-files", type=positive_int, metavar="N", help="open files limit per process"
    )
    p.add_argument("--file-size", type=size, metavar="SIZE", help="largest file it may write")
    p.add_argument("--network", action="store_true", help="ask a sandboxed worker for the network")
    p.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="jobs of the org with this key run at most --concurrency-limit at once, in order",
    )
    p.add_argument(
        "--concurrency-limit",
        type=not_negative(int),
        default=0,
        metavar="N",
        help="how many jobs of the key may run at once (default 1)",
    )
    p.add_argument(
        "--requires",
        type=requirement,
        action="append",
        default=[],
        metavar="K=V|K",
        help="only a worker with this label (or label key) runs it (repeatable)",
    )
    return p


def _command_words(p: argparse.ArgumentParser, after_dashes_only: bool = False) -> None:
    """The job's command: the words after `--` (main takes them apart before
    parsing, so a name before them cannot swallow the options between)."""
    if after_dashes_only:
        p.set_defaults(cmd=[])
        p.usage = f"{p.prog} [OPTIONS] -- CMD [ARGS...]"
        return
    p.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run, after --"
    )


ClientCommand = Callable[..., argparse.ArgumentParser]


def _actions(parent: argparse.ArgumentParser) -> Any:
    return parent.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_Parser
    )


def _action(
    actions: Any, name: str, help: str, *parents: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    if isinstance(actions, _Skipped):
        return cast(argparse.ArgumentParser, actions)
    command = actions._prog_prefix.removeprefix("zbrain ")
    examples = [
        line for line in EXAMPLES[command].splitlines() if f"zbrain {command} {name}" in line
    ]
    p: argparse.ArgumentParser = actions.add_parser(
        name,
        help=help,
        description=help,
        parents=[*parents, _command_globals()],
        epilog="examples:\n" + "\n".join(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return p


def _schedule_commands(
    client_command: ClientCommand, handler: Command, org: argparse.ArgumentParser
) -> None:
    p = client_command(
        "schedule",
        handler,
        "manage schedules: create, list, get, pause, resume, trigger, delete",
    )
    actions = _actions(p)
    a = _action(actions, "create", "create a schedule: a job (or template) at every tick", org)
    a.add_argument("schedule_id", metavar="ID", help="the schedule's name, unique in its org")
    a.add_argument("--cron", metavar="EXPR", help="a 5-field cron expression, e.g. '0 2 * * *'")
    a.add_argument("--tz", metavar="ZONE", help="the cron's time zone, e.g. Europe/Paris (UTC)")
    a.add_argument(
        "--every", type=positive_duration, metavar="DUR", help="or a fixed interval, e.g. 30s"
    )
    a.add_argument("--template", metavar="NAME", help="submit this template instead of a command")
    a.add_argument(
        "--param",
        type=key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="a template parameter (repeatable)",
    )
    a.add_argument(
        "--overlap",
        choices=("allow", "skip", "cancel-previous"),
        default="skip",
        help="while the last tick's job runs: skip the tick (default), allow, cancel-previous",
    )
    a.add_argument(
        "--catch-up",
        choices=("skip", "run-once"),
        default="skip",
        help="ticks missed while no server ran: skip (default) or run-once",
    )
    a.add_argument("--paused", action="store_true", help="create it paused")
    for flag in _job_flags()._actions:
        a._add_action(flag)
    _command_words(a, after_dashes_only=True)
    _action(actions, "list", "list schedules", org)
    for name, help in (
        ("get", "show a schedule and its next fire times"),
        ("pause", "stop a schedule's ticks"),
        ("resume", "tick again, from the next tick after now"),
        ("trigger", "submit the schedule's job now"),
        ("delete", "delete a schedule (its jobs stay)"),
    ):
        a = _action(actions, name, help, org)
        a.add_argument("schedule_id", metavar="ID")


def _template_commands(
    client_command: ClientCommand, handler: Command, org: argparse.ArgumentParser
) -> None:
    p = client_command(
        "template", handler, "manage job templates: create, list, get, submit, delete"
    )
    actions = _actions(p)
    a = _action(
        actions,
        "create",
        "store a new version of a template; {{ name }} in its command, env or input is a parameter",
        org,
    )
    a.add_argument("name")
    a.add_argument(
        "--param",
        type=parameter,
        action="append",
        default=[],
        metavar="NAME[:TYPE][=DEFAULT]",
        help="declare a parameter (repeatable); TYPE string (default), integer, number, "
        "boolean or json; without a default it is required",
    )
    a.add_argument("--description", default="", help="what the template is for")
    for flag in _job_flags()._actions:
        a._add_action(flag)
    _command_words(a, after_dashes_only=True)
    _action(actions, "list", "list templates (latest versions)", org)
    for name, help in (
        ("get", "show a template"),
        ("submit", "submit a job from a template"),
        ("delete", "delete every version of a template"),
    ):
        a = _action(actions, name, help, org)
        a.add_argument("name")
        if name != "delete":
            a.add_argument("--version", type=int, default=0, help="a version (default: latest)")
        if name == "submit":
            a.add_argument(
                "--param",
                type=key_value,
                action="append",
                default=[],
                metavar="K=V",
                help="a parameter's value (repeatable)",
            )
            a.add_argument("--request-id", help="idempotency key")
            a.add_argument("--wait", action="store_true", help="wait for the job to finish")


def _token_commands(client_command: ClientCommand) -> None:
    p = client_command("token", cmd_token, "manage API tokens: create, list, revoke")
    actions = _actions(p)
    store_dir = argparse.ArgumentParser(add_help=False)
    store_dir.add_argument(
        "--data-dir",
        type=Path,
        help="work on this server's store directly instead of --server (bootstrap on its host)",
    )
    store_dir.add_argument(
        "--store", metavar="URL", help="work on this PostgreSQL store directly instead of --server"
    )
    a = _action(actions, "create", "make a token; prints only the token on stdout, once", store_dir)
    a.add_argument("--org", required=True, help="organisation the token is bound to")
    a.add_argument(
        "--role", required=True, choices=("client", "worker", "admin"), help="what it may do"
    )
    a.add_argument("--description", default="", help="what the token is for")
    a = _action(actions, "list", "list tokens", store_dir)
    a.add_argument("--org", help="only tokens of this organisation")
    a = _action(actions, "revoke", "revoke a token at once", store_dir)
    a.add_argument("token_id", help="the token's id (the part after zbt_)")


def _org_commands(client_command: ClientCommand, handler: Command) -> None:
    p = client_command(
        "org", handler, "an organisation's limits and pauses: get, set, pause, resume"
    )
    actions = _actions(p)
    a = _action(actions, "get", "show an organisation's limits and pauses")
    a.add_argument("org", help="the organisation")
    a = _action(actions, "set", "change an organisation's limits (admins); 0 removes its own")
    a.add_argument("org", help="the organisation")
    for flag, parse, metavar, what in (
        ("--max-running", not_negative(int), "N", "running jobs at once"),
        ("--max-starts-per-second", not_negative(float), "R", "job starts per second"),
        ("--max-waiting", not_negative(int), "N", "waiting jobs"),
        ("--max-log-bytes", size, "SIZE", "log bytes stored per job (e.g. 512M)"),
        ("--max-artifact-bytes", size, "SIZE", "artifact bytes per job (e.g. 2G)"),
        ("--retention-days", not_negative(int), "D", "days finished jobs are kept"),
    ):
        a.add_argument(flag, type=parse, metavar=metavar, help=what)
    for name, help in (
        ("pause", "start none of an organisation's jobs (admins); running jobs finish"),
        ("resume", "lift a pause (admins)"),
    ):
        a = _action(actions, name, help)
        a.add_argument("org", help="the organisation")
        a.add_argument(
            "--selector",
            type=key_value,
            action="append",
            default=[],
            metavar="K=V",
            help="only the jobs carrying this label (repeatable: all of them)",
        )


async def cmd_completion(args: argparse.Namespace) -> int:
    from ._completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return 0


# -- running a command ----------------------------------------------------------------


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string, in the whole tree, that takes one value."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _value_options(sub)
        elif action.option_strings and action.nargs is None:
            found.update(action.option_strings)
    return found


def _attach_dashed_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`--timeout -5s` as `--timeout=-5s`: argparse takes a value that starts
    with a dash and a digit for an option, and says only "expected one
    argument"; attached, the value reaches its check, which says what is
    wrong with it."""
    options = _value_options(parser)
    joined: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if word in options and following[:1] == "-" and following[1:2].isdigit():
            joined.append(f"{word}={following}")
            i += 2
            continue
        joined.append(word)
        i += 1
    return joined


CLIENT_COMMANDS = frozenset(
    {
        "submit", "get", "wait", "list", "cancel", "rerun", "logs", "events", "watch",
        "artifacts", "download", "run-graph", "graph", "schedule", "template", "worker",
        "workers", "org", "completion",
    }
)  # fmt: skip
"""Commands of this distribution (not `token`: it may need the server's plugin)."""

_GLOBAL_VALUES = frozenset({"--server", "--token", "--tls-ca", "--tls-cert", "--tls-key"})


def _command_word(words: list[str]) -> str | None:
    """The command named in `words`: the first word that is neither an option
    nor a global option's value."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in _GLOBAL_VALUES or word == "--log-format":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("limit", "workers", "concurrency"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "workers" else 1):
            raise UsageError(
                f"--{name} must be {'zero or more' if name == 'workers' else 'at least 1'}"
            )
    if getattr(args, "retries", None) is not None and args.retries < 0:
        raise UsageError("--retries must not be negative")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if not words:
        print(SHORT_HELP, end="")
        return 0
    # Looking the server's plugin up reads every installed package's metadata:
    # a client command, the usual case, skips it, and builds its own parser
    # alone (help lists every command, so it needs the whole tree).
    word = _command_word(words)
    client = word in CLIENT_COMMANDS
    whole = not client or any(w in ("-h", "--help", "--version") for w in words)
    parser = build_parser(with_plugin=not client, only=None if whole else word)
    # The words after `--` are a job's command, never options of ours.
    head, command_words = (
        (words[: words.index("--")], words[words.index("--") + 1 :])
        if "--" in words
        else (words, None)
    )
    args, unknown = parser.parse_known_args(_attach_dashed_values(head, parser))
    if command_words is not None:
        if hasattr(args, "cmd"):
            args.cmd = [*args.cmd, *command_words]
        else:
            unknown += ["--", *command_words]
    handler: Command | None = getattr(args, "handler", None)
    if handler is None:
        print(SHORT_HELP, end="")
        return 0
    if unknown and handler is not cmd_server_missing:  # that one explains itself
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    try:
        log_format = args.log_format or os.environ.get("ZBRAIN_LOG_FORMAT") or "text"
        # Processes this one starts (the local worker of `serve`) log alike.
        os.environ["ZBRAIN_LOG_FORMAT"] = log_format
        from .. import logs

        logs.configure(os.environ.get("ZBRAIN_LOG_LEVEL") or "INFO", log_format)
        _check_numbers(args)
        import asyncio

        return asyncio.run(handler(args))
    except (UsageError, ValueError) as exc:
        parser.exit(EXIT_USAGE, f"zbrain {command}: error: {exc}\n")
    except ZBrainError as exc:
        print(f"zbrain {command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
