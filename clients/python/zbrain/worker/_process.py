"""The local process executor: runs a job's argv as a child process.

The command never passes through a shell. Each attempt gets a fresh working
directory in the worker process's own folder under the temp dir (`_folders`
says why one of its own), holding the input (also on stdin), the path where
the job may write its JSON output, and a folder whose files become the
job's artifacts. stdout and stderr are streamed line by line while the
process runs. Stopping (cancel, timeout, shutdown) sends SIGTERM to the
whole process group, then SIGKILL after a grace period.

A job's resource limits (bounded by the executor's maxima) are applied as
`_limits` explains: rlimits set before the program runs, and the resident
memory of its process tree watched; a job stopped by one reports
RESOURCE_LIMIT_EXCEEDED with the limit named.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import NO_RESOURCES, Job, LogStream, Resources
from ..protocol import TRUNCATION_MARK
from ._executor import AttemptEvents, Cancellation, Executor, Outcome
from ._folders import Home, remove_abandoned
from ._limits import (
    MEMORY_SAMPLE_INTERVAL_S,
    MemoryWatch,
    effective,
    exceeded,
    rlimit_prefix,
    tree,
)

# Variables of the worker's own environment that jobs inherit; everything else
# of the worker's environment (tokens, credentials) stays out of the job.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")
STDERR_TAIL_BYTES = 2048


@dataclass(frozen=True)
class ProcessLimits:
    """Bounds on what one attempt may print and write."""

    max_line_bytes: int = 16 << 10
    max_log_bytes: int = 16 << 20
    max_output_bytes: int = 1 << 20
    kill_grace_s: float = 5.0


class ProcessExecutor(Executor):
    """Runs `job.cmd` as a process; exit status 0 is success.

    `maxima` bounds every job's resource limits, and applies to jobs that
    set none (`zbrain worker --max-memory` and the like).
    """

    def __init__(
        self,
        temp_dir: Path | None = None,
        limits: ProcessLimits | None = None,
        executor_id: str = "process",
        *,
        maxima: Resources = NO_RESOURCES,
    ) -> None:
        self.id = executor_id
        self.temp_dir = Path(temp_dir or tempfile.gettempdir())
        self.limits = limits or ProcessLimits()
        self.maxima = maxima
        self._home = Home(self.temp_dir)  # this process's own folder of job folders
        # One thread removes finished job folders in order; the interpreter
        # waits for it at exit, so none is left behind.
        self._remover = ThreadPoolExecutor(1, thread_name_prefix="zbrain-folder-remover")

    def _command(self, job: Job, workdir: Path, limits: Resources) -> list[str]:
        """The argv that runs the job in `workdir` within `limits`."""
        return [*rlimit_prefix(limits), *job.cmd]

    def _exit_status(self, returncode: int) -> int:
        """The job's exit status from that of the process started (the same here)."""
        return returncode

    async def health_check(self) -> None:
        """Fail unless job folders can be made in the temp dir; then, in the
        background, remove those of worker processes that died (`_folders`)."""
        os.rmdir(self._home.mkdtemp("zbrain-health-"))
        self._remover.submit(remove_abandoned, self.temp_dir)

    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        prefix = f"zbrain-{job.id}-{job.attempt}-"
        workdir = self._home.mkdtemp(prefix)
        try:
            return await self._run(job, workdir, events, cancel)
        finally:
            # Off the event loop and after the result: removing a folder costs
            # a millisecond of the filesystem's time the next job need not wait for.
            self._remover.submit(shutil.rmtree, workdir, ignore_errors=True)

    async def _run(
        self, job: Job, workdir: Path, events: AttemptEvents, cancel: Cancellation
    ) -> Outcome:
        input_path, output_path, artifacts_dir = (
            workdir / "input.json",
            workdir / "output.json",
            workdir / "artifacts",
        )
        _write_new(input_path, json.dumps(job.input).encode())
        os.mkdir(artifacts_dir)
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env.update(job.env)
        env.update(
            ZBRAIN_JOB_ID=job.id,
            ZBRAIN_ORG_ID=job.org_id,
            ZBRAIN_ATTEMPT=str(job.attempt),
            ZBRAIN_INPUT=str(input_path),
            ZBRAIN_OUTPUT=str(output_path),
            ZBRAIN_ARTIFACTS_DIR=str(artifacts_dir),
        )
        if job.parents:  # how the jobs it depended on ended, with their outputs
            parents_path = workdir / "parents.json"
            _write_new(parents_path, json.dumps([p.to_dict() for p in job.parents]).encode())
            env["ZBRAIN_PARENTS"] = str(parents_path)
        limits = effective(job.resources, self.maxima)
        argv = self._command(job, workdir, limits)
        if len(argv) > len(job.cmd):  # behind a wrapper, whose own error would say less
            missing = _missing_program(job.cmd[0], env.get("PATH", os.defpath), workdir)
            if missing is not None:
                return missing
        # The input file itself is the process's stdin: no pipe to feed. The
        # child gets a copy as its fd 0; this one is not inherited (PEP 446).
        stdin = os.open(input_path, os.O_RDONLY)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=env,
                start_new_session=True,  # its own process group: a stop reaches its children
            )
        except FileNotFoundError:
            return Outcome.failed(f"program not found: {job.cmd[0]}", exit_code=127)
        except PermissionError:
            return Outcome.failed(f"program not executable: {job.cmd[0]}", exit_code=126)
        except OSError as exc:
            return Outcome.failed(f"cannot start {job.cmd[0]}: {exc.strerror}")
        finally:
            os.close(stdin)

        budget = _LogBudget(self.limits.max_log_bytes, events)
        stderr_tail: deque[str] = deque(maxlen=64)
        readers = [
            asyncio.create_task(self._pump(process.stdout, LogStream.STDOUT, budget, None)),
            asyncio.create_task(self._pump(process.stderr, LogStream.STDERR, budget, stderr_tail)),
        ]
        waiting = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(cancel.wait())
        watch = MemoryWatch(process.pid, limits.memory_bytes) if limits.memory_bytes else None
        watching = asyncio.create_task(_watch_memory(watch)) if watch is not None else None
        await asyncio.wait(
            {waiting, stopping, *([watching] if watching else [])},
            return_when=asyncio.FIRST_COMPLETED,
        )
        over_memory = watching is not None and watching.done() and not waiting.done()
        if over_memory:
            _kill_tree(process.pid)
            await waiting
        elif not waiting.done():
            await self._stop(process, waiting)
        stopping.cancel()
        if watching is not None:
            watching.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        code = self._exit_status(process.returncode or 0)
        if cancel.is_set():
            return Outcome.failed(f"stopped: {cancel.reason_text}", exit_code=code)
        if over_memory and watch is not None:
            return Outcome.limit_exceeded(watch.describe(), exit_code=code)
        if over := exceeded(code, limits):
            return Outcome.limit_exceeded(over, exit_code=code)
        if code != 0:
            tail = "".join(stderr_tail).strip()[-STDERR_TAIL_BYTES:]
            status = (
                f"exited with status {code}"
                if code and code > 0
                else f"killed by signal {-(code or 0)}"
            )
            return Outcome.failed(f"{status}: {tail}" if tail else status, exit_code=code)
        output = self._read_output(output_path)
        if isinstance(output, Outcome):
            return output
        await self._upload_artifacts(artifacts_dir, events)
        return Outcome.succeeded(output)

    async def _stop(self, process: asyncio.subprocess.Process, waiting: asyncio.Task[int]) -> None:
        """SIGTERM the process group, then SIGKILL it after the grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.limits.kill_grace_s):
                await asyncio.shield(waiting)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await waiting
        # Children that ignored SIGTERM may outlive the leader; take them down too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    async def _pump(
        self,
        stream: asyncio.StreamReader | None,
        kind: LogStream,
        budget: _LogBudget,
        tail: deque[str] | None,
    ) -> None:
        """Forward a pipe line by line, cutting over-long lines with a marker."""
        if stream is None:
            return
        limit = self.limits.max_line_bytes
        pending = b""
        skipping = False  # inside an over-long line whose head was already sent
        while chunk := await stream.read(64 << 10):
            pending += chunk
            while True:
                newline = pending.find(b"\n")
                if newline < 0:
                    if len(pending) > limit:
                        if not skipping:
                            budget.emit(_decode(pending[:limit]) + TRUNCATION_MARK, kind, tail)
                        skipping, pending = True, b""
                    break
                line, pending = pending[:newline], pending[newline + 1 :]
                if skipping:
                    skipping = False
                elif len(line) > limit:
                    budget.emit(_decode(line[:limit]) + TRUNCATION_MARK, kind, tail)
                else:
                    budget.emit(_decode(line), kind, tail)
        if pending and not skipping:
            budget.emit(_decode(pending[:limit]), kind, tail)

    def _read_output(self, path: Path) -> Any:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        if size > self.limits.max_output_bytes:
            return Outcome.failed(
                f"$ZBRAIN_OUTPUT is {size} bytes; the limit is {self.limits.max_output_bytes}"
            )
        text = path.read_text(errors="replace")
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            return Outcome.failed(f"$ZBRAIN_OUTPUT is not valid JSON: {exc}")

    async def _upload_artifacts(self, folder: Path, events: AttemptEvents) -> None:
        """Upload every regular file under the artifact folder; symlinks are skipped."""
        try:
            if not os.listdir(folder):  # most jobs leave none: no walk
                return
        except OSError:  # the job removed the folder (or made it something else)
            return
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            await events.upload(path.relative_to(folder).as_posix(), path)


class _LogBudget:
    """Caps the bytes of log one attempt may send; past it, one marker line."""

    def __init__(self, max_bytes: int, events: AttemptEvents) -> None:
        self.left = max_bytes
        self.events = events
        self.exhausted = False

    def emit(self, text: str, kind: LogStream, tail: deque[str] | None) -> None:
        if tail is not None:
            tail.append(text + "\n")
        if self.exhausted:
            return
        self.left -= len(text) + 1
        if self.left < 0:
            self.exhausted = True
            self.events.log(
                "[log limit reached: further output of this attempt is discarded]", LogStream.SYSTEM
            )
            return
        self.events.log(text, kind)


async def _watch_memory(watch: MemoryWatch) -> None:
    """Return once the job's processes are over their memory limit. Sampling
    is the point: the kernel tells nobody how much memory a tree holds."""
    while not watch.over_limit():  # noqa: ASYNC110 - no event to wait for
        await asyncio.sleep(MEMORY_SAMPLE_INTERVAL_S)


def _kill_tree(pid: int) -> None:
    """SIGKILL a job's process group and every process of its tree (one that
    left the group included): a job over its memory limit gets no grace."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for member in tree(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)


def _missing_program(program: str, search_path: str, workdir: Path) -> Outcome | None:
    """The failure to report when `program` cannot be run (as a direct spawn
    would say it), or None when it can."""
    if "/" in program:
        path = workdir / program  # an absolute program stays itself
        if not path.exists():
            return Outcome.failed(f"program not found: {program}", exit_code=127)
        if not os.access(path, os.X_OK) or path.is_dir():
            return Outcome.failed(f"program not executable: {program}", exit_code=126)
        return None
    if shutil.which(program, path=search_path) is None:
        return Outcome.failed(f"program not found: {program}", exit_code=127)
    return None


def _write_new(path: Path, data: bytes) -> None:
    """Write a file of the job folder, which must not exist yet, with the
    mode `open` would give it: plain system calls, as a short command pays
    for every layer around them."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _decode(data: bytes) -> str:
    return data.decode(errors="replace").rstrip("\r")
