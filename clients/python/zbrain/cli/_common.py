"""What every command shares: the connection made from the global flags,
job ids resolved from what a person typed, flag values checked beyond what
argparse checks (sizes and durations through zbrain.sizes and
zbrain.durations, as the SDK reads them), and the spinner of `--wait`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..durations import parse_duration
from ..sizes import parse_size

if TYPE_CHECKING:
    from ..client import Client
    from ..models import TemplateParameter

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A flag value the parser accepted but that makes no sense (exit status 2)."""


async def connect(args: argparse.Namespace) -> Client:
    """A client for the global --server, --token and --tls-* flags. Imported
    here, not at the top: commands that never call a server (help,
    completion) do not pay for loading gRPC."""
    from ..client import Client
    from ..connection import TlsFiles

    return await Client.connect(
        args.server, token=args.token, tls=TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
    )


async def job_id(client: Client, args: argparse.Namespace, text: str | None = None) -> str:
    """The full id of the job a command names (args.id, or `text`): a full
    id in any case, or a short id looked up in --org."""
    from ._ids import resolve

    return await resolve(client, text if text is not None else args.id, getattr(args, "org", None))


# -- flag values --------------------------------------------------------------------


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def requirement(text: str) -> tuple[str, str]:
    """--requires KEY=VALUE (the worker label must equal it) or KEY (it must be present)."""
    key, _, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or KEY, got {text!r}")
    return key, value


def not_negative(kind: type[int] | type[float]) -> Callable[[str], float]:
    """A count or rate where 0 means none of its own (the server's default)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be 0 (none of its own) or more")
        return value

    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def size(text: str) -> int:
    """A size as zbrain.sizes reads it: 512M, 2G, 64KiB or bytes."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be more than zero")
    return value


def moment(text: str) -> datetime:
    """A time: RFC 3339 (`2026-12-03T02:00:00Z`; no zone means UTC), or a
    duration back from now (`10m` means ten minutes ago), as --since takes it."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    return future_time(text)


def future_time(text: str) -> datetime:
    """An RFC 3339 time (`2026-12-03T02:00:00Z`, `2026-12-03 02:00+01:00`);
    without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time; use RFC 3339, e.g. 2026-12-03T02:00:00Z"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parameter(text: str) -> TemplateParameter:
    """--param NAME[:TYPE][=DEFAULT]: without a default the parameter is required."""
    from ..models import ParameterType, TemplateParameter

    declared, has_default, default_text = text.partition("=")
    name, _, type_name = declared.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME[:TYPE][=DEFAULT], got {text!r}")
    try:
        kind = ParameterType[(type_name or "string").upper()]
    except KeyError:
        kinds = ", ".join(t.name.lower() for t in ParameterType)
        raise argparse.ArgumentTypeError(
            f"parameter {name!r}: unknown type {type_name!r}; choose from {kinds}"
        ) from None
    default: Any = None
    if has_default:
        if kind is ParameterType.STRING:
            default = default_text
        else:
            try:
                default = json.loads(default_text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"parameter {name!r}: default {default_text!r} is not a {kind.name.lower()}"
                ) from None
    return TemplateParameter(name, kind, required=not has_default, default=default)


def read_json(text: str | None, flag: str = "--input") -> Any:
    """A JSON value given inline, or from a file with @FILE (@- for stdin)."""
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = sys.stdin.read() if text == "@-" else path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {flag} file {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc}") from None


def command_after_dashes(cmd: list[str], example: str) -> list[str]:
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError(f"nothing to run: give the command after --, e.g. {example}")
    return cmd


# -- the spinner --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def spinner(what: str) -> AsyncIterator[None]:
    """A spinner on stderr while a --wait waits, for a person at a terminal
    only (never when stderr is piped, nor with NO_COLOR)."""
    import asyncio

    from ._output import wants_colour

    if not wants_colour(sys.stderr):
        yield
        return

    async def spin() -> None:
        frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
        started = asyncio.get_running_loop().time()
        for n in range(1 << 30):
            waited = asyncio.get_running_loop().time() - started
            sys.stderr.write(f"\r{frames[n % len(frames)]} {what} ({waited:.0f}s)")
            sys.stderr.flush()
            await asyncio.sleep(0.1)

    task = asyncio.create_task(spin())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
