"""How the command line shows things: JSON for scripts, tables and job
details for people.

One JSON representation everywhere (docs/cli.md): the `to_dict` of the
models, so enums are short names (`FAILED`), numbers are numbers and times
are RFC 3339 in UTC. Tables show short ids, relative times ("2m ago") and
durations; `--utc` shows exact UTC times instead. Colours only on a
terminal, and never with NO_COLOR set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from ..models import Job, JobState, Resources
from ..sizes import format_size

INLINE_LIMIT = 200
"""Input or output JSON longer than this many characters is summarised (`--full` shows it)."""

_STATE_COLOURS = {
    JobState.SUCCEEDED: "32",  # green
    JobState.FAILED: "31",  # red
    JobState.CANCELED: "33",  # yellow
    JobState.RUNNING: "36",  # cyan
    JobState.RETRYING: "35",  # magenta
    JobState.BLOCKED: "2",  # dim
    JobState.SCHEDULED: "2",
}


def wants_colour(stream: TextIO) -> bool:
    """Colour (and a spinner) only for a person at a terminal: not when piped,
    not with NO_COLOR set (https://no-color.org), not on a dumb terminal."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def duration(seconds: float) -> str:
    """A span as people read it: 850ms, 2s, 4.25s, 3m04s, 2h05m, 3d04h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def exact(value: datetime) -> str:
    """A time in UTC to the second, RFC 3339: 2026-12-02T06:40:12Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarise(value: Any, full: bool = False) -> str:
    """JSON for a detail row: whole when short or with `full`, else its size
    and its first characters."""
    text = json.dumps(value, ensure_ascii=False)
    if full or len(text) <= INLINE_LIMIT:
        return text
    size = format_size(len(text.encode()))
    return f"{size}: {text[:80]}… (--full shows all)"


def short_command(cmd: Sequence[str], width: int = 48) -> str:
    text = " ".join(cmd)
    return text if len(text) <= width else text[: width - 1] + "…"


def key_values(mapping: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def requirements(requires: Mapping[str, str]) -> str:
    """Worker labels a job requires: `gpu=a100 region` (a key alone: any value)."""
    return " ".join(f"{k}={v}" if v else k for k, v in sorted(requires.items()))


def resources(limits: Resources, network: bool) -> str:
    """A job's resource limits in words: `memory 64 MiB, cpu 30s, network`."""
    parts = []
    if limits.memory_bytes:
        parts.append(f"memory {format_size(limits.memory_bytes)}")
    if limits.cpu_seconds:
        parts.append(f"cpu {limits.cpu_seconds}s")
    if limits.processes:
        parts.append(f"processes {limits.processes}")
    if limits.open_files:
        parts.append(f"open files {limits.open_files}")
    if limits.file_size_bytes:
        parts.append(f"file size {format_size(limits.file_size_bytes)}")
    if network:
        parts.append("network")
    return ", ".join(parts)


@dataclass
class Output:
    """Where and how a command prints: chosen once from the global flags."""

    json: bool = False
    utc: bool = False
    colour: bool = False
    # Relative times are read against the clock when printed, not when the
    # command began: `submit --wait` and `logs -f` print long after. Fixed in tests.
    now: datetime | None = None

    @classmethod
    def from_args(cls, args: Any) -> Output:
        return cls(
            json=bool(getattr(args, "json", False)),
            utc=bool(getattr(args, "utc", False)),
            colour=wants_colour(sys.stdout),
        )

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)

    def json_line(self, value: Any) -> None:
        """One JSON value on one line (every --json output is such lines)."""
        print(json.dumps(value, ensure_ascii=False), flush=True)

    def when(self, value: datetime | None) -> str:
        """`2m ago` / `in 5m`, or with --utc the exact time; `-` for none."""
        if value is None:
            return "-"
        if self.utc:
            return exact(value)
        seconds = (self._now() - value).total_seconds()
        if -1 < seconds < 1:
            return "now"
        return f"{_ago(seconds)} ago" if seconds > 0 else f"in {_ago(-seconds)}"

    def both(self, value: datetime | None) -> str:
        """A detail row's time: relative and exact, `2m ago (2026-12-02T06:40:12Z)`."""
        if value is None:
            return "-"
        return exact(value) if self.utc else f"{self.when(value)} ({exact(value)})"

    def paint(self, text: str, code: str | None) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text

    def state(self, state: JobState, text: str | None = None) -> str:
        return self.paint(text if text is not None else state.name, _STATE_COLOURS.get(state))

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        paint: Mapping[int, Callable[[str], str]] | None = None,
        header: bool = True,
    ) -> None:
        """Columns padded to their widest cell; `paint` colours a column's cells
        after padding, so colour codes never upset the alignment. Without
        `header`, a table continues one printed before."""
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
        if header:
            print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        for row in rows:
            cells = []
            for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
                padded = cell.ljust(width)
                cells.append(paint[i](padded) if paint and i in paint else padded)
            print("  ".join(cells).rstrip())

    def details(self, rows: Sequence[tuple[str, str]]) -> None:
        width = max(len(key) for key, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")

    def job(self, job: Job, full: bool = False) -> None:
        """A job's details, then its attempts as a table."""
        state = job.state.name
        if job.cancel_requested and job.state is JobState.RUNNING:
            state += " (cancel requested)"
        rows = [
            ("id", job.id),
            ("short id", job.short_id),
            ("org", job.org_id),
            ("state", self.state(job.state, state)),
            ("attempt", f"{job.attempt} of {job.max_retries + 1}"),
            ("cmd", json.dumps(list(job.cmd), ensure_ascii=False)),
            ("input", "-" if job.input is None else summarise(job.input, full)),
            ("timeout", duration(job.timeout.total_seconds())),
            ("priority", str(job.priority)),
            ("created", self.both(job.create_time)),
            ("started", self.both(job.start_time)),
            ("finished", self.both(job.finish_time)),
        ]
        if job.start_time is not None:
            end = job.finish_time or self._now()
            rows.append(("ran for", duration((end - job.start_time).total_seconds())))
        if job.last_transition is not None and job.last_transition.reason:
            change = job.last_transition
            rows.append(("why", f"{change.reason} ({change.cause.name}, {self.when(change.time)})"))
        if job.state in (JobState.RETRYING, JobState.SCHEDULED):
            rows.append(("next run", self.both(job.next_run_time)))
        if job.waiting_reason:
            rows.append(("waiting", job.waiting_reason.removeprefix("waiting: ")))
        if job.concurrency_key:
            at_most = job.concurrency_limit or 1
            rows.append(("key", f"{job.concurrency_key} (at most {at_most} at once)"))
        if job.requires:
            rows.append(("requires", requirements(job.requires)))
        if job.worker_id:
            rows.append(("worker", job.worker_id))
        if job.env:
            rows.append(("env", key_values(job.env)))
        if job.labels:
            rows.append(("labels", key_values(job.labels)))
        if job.resources or job.network:
            rows.append(("limits", resources(job.resources, job.network)))
        if job.depends_on:
            after = [f"{d.job_id[-8:]} ({d.condition.name.lower()})" for d in job.depends_on]
            rows.append(("after", ", ".join(after)))
        if job.child_ids:
            rows.append(("children", ", ".join(c[-8:] for c in job.child_ids)))
        if job.rerun_of:
            rows.append(("rerun of", job.rerun_of))
        if job.rerun_ids:
            rows.append(("reruns", ", ".join(job.rerun_ids)))
        if job.last_error:
            rows.append(("error", job.last_error))
        if job.output is not None:
            rows.append(("output", summarise(job.output, full)))
        for artifact in job.artifacts:
            size = format_size(artifact.size_bytes)
            rows.append(("artifact", f"{artifact.name} ({size}, sha256 {artifact.sha256[:12]})"))
        self.details(rows)
        if job.attempts:
            print()
            self.table(
                ["ATTEMPT", "WORKER", "STARTED", "DURATION", "OUTCOME", "ERROR"],
                [
                    [
                        str(a.number),
                        a.worker_id or "-",
                        self.when(a.start_time),
                        duration(((a.end_time or self._now()) - a.start_time).total_seconds())
                        if a.start_time
                        else "-",
                        a.cause.name if a.end_time else "RUNNING",
                        a.error,
                    ]
                    for a in job.attempts
                ],
            )

    def jobs(self, jobs: Sequence[Job], wide: bool = False, header: bool = True) -> None:
        """The job table of `list`."""
        rows = [
            [
                job.short_id,
                job.org_id,
                job.state.name,
                str(job.attempt),
                self.when(job.create_time),
                self._ran(job),
                short_command(job.cmd, 1000 if wide else 48),
            ]
            for job in jobs
        ]
        self.table(
            ["ID", "ORG", "STATE", "ATTEMPT", "CREATED", "DURATION", "COMMAND"],
            rows,
            {2: lambda cell: self.state(JobState[cell.strip()], cell)} if self.colour else None,
            header,
        )

    def _ran(self, job: Job) -> str:
        if job.start_time is None:
            return "-"
        return duration(((job.finish_time or self._now()) - job.start_time).total_seconds())
